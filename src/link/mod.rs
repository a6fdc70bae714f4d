//! The account link: one cloud account (accounts.magento.cloud) to one Magento.com SSO
//! identity, both directions, and the policy that says when a link is required.
//!
//! The registry is the source of truth. Creating a link writes both directions and the index
//! in one atomic store operation: two browsers linking at the same moment get exactly one
//! winner and nothing half-written. A link record carries a snapshot of both identities, so
//! a session can be rebuilt from either side (primary login with Magento.com; an account JWT
//! from the platform).

pub mod admin;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Link as LinkConfig, LinkMode};
use crate::oidc::Identity;
use crate::store::{keys, Pair, PairOutcome, Store, StoreError};

/// A link between a cloud account and an SSO identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkRecord {
    /// The cloud account.
    pub account: Identity,
    /// The Magento.com identity.
    pub sso: Identity,
    /// Unix seconds when the link was made.
    pub created_at: i64,
}

/// What creating a link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// A new link.
    Created(LinkRecord),
    /// These two were already linked to each other: nothing to do.
    AlreadyLinked(LinkRecord),
    /// The cloud account is linked to another Magento.com identity (typical after an email
    /// change). Nothing changed.
    AccountTaken(LinkRecord),
    /// The Magento.com identity is linked to another cloud account (typical after a project
    /// ownership transfer). Nothing changed.
    SsoTaken(LinkRecord),
}

/// The link registry over the store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
}

fn decode(bytes: &[u8]) -> Option<LinkRecord> {
    serde_json::from_slice(bytes).ok()
}

impl Registry {
    /// The registry in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Links `account` and `sso`, atomically, unless either side is already linked.
    pub async fn create(
        &self,
        account: &Identity,
        sso: &Identity,
    ) -> Result<LinkOutcome, StoreError> {
        let record = LinkRecord {
            account: account.clone(),
            sso: sso.clone(),
            created_at: OffsetDateTime::now_utc().unix_timestamp(),
        };
        self.insert(record).await
    }

    /// Inserts a record as given (import keeps `created_at`).
    pub async fn insert(&self, record: LinkRecord) -> Result<LinkOutcome, StoreError> {
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let (a, b) = (
            keys::link_account(&record.account.key()),
            keys::link_sso(&record.sso.key()),
        );
        let index = keys::links_index();
        let account_key = record.account.key();
        let pair = Pair {
            a: &a,
            va: &value,
            b: &b,
            vb: &value,
            index: &index,
            member: &account_key,
        };
        Ok(match self.store.create_pair(&pair).await? {
            PairOutcome::Created => LinkOutcome::Created(record),
            PairOutcome::Exists { a, b } => {
                let by_account = a.as_deref().and_then(decode);
                let by_sso = b.as_deref().and_then(decode);
                match (by_account, by_sso) {
                    (Some(x), _) if x.sso.key() == record.sso.key() => {
                        LinkOutcome::AlreadyLinked(x)
                    }
                    (Some(x), _) => LinkOutcome::AccountTaken(x),
                    (None, Some(y)) => LinkOutcome::SsoTaken(y),
                    (None, None) => {
                        return Err(StoreError::Unavailable("unreadable link record".into()))
                    }
                }
            }
        })
    }

    /// The link of an SSO identity (by its key), if any.
    pub async fn by_sso(&self, sso_key: &str) -> Result<Option<LinkRecord>, StoreError> {
        Ok(self
            .store
            .get(&keys::link_sso(sso_key))
            .await?
            .as_deref()
            .and_then(decode))
    }

    /// The link of a cloud account (by its key), if any.
    pub async fn by_account(&self, account_key: &str) -> Result<Option<LinkRecord>, StoreError> {
        Ok(self
            .store
            .get(&keys::link_account(account_key))
            .await?
            .as_deref()
            .and_then(decode))
    }

    /// Removes a link, both directions at once. Returns the removed record.
    pub async fn unlink(&self, record: &LinkRecord) -> Result<bool, StoreError> {
        let current = self
            .store
            .get(&keys::link_account(&record.account.key()))
            .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        let (a, b) = (
            keys::link_account(&record.account.key()),
            keys::link_sso(&record.sso.key()),
        );
        let index = keys::links_index();
        let member = record.account.key();
        self.store
            .delete_pair(&Pair {
                a: &a,
                va: &current,
                b: &b,
                vb: &[],
                index: &index,
                member: &member,
            })
            .await
    }

    /// Every link.
    pub async fn list(&self) -> Result<Vec<LinkRecord>, StoreError> {
        let mut members = self.store.set_members(&keys::links_index()).await?;
        members.sort();
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            if let Some(r) = self.by_account(&m).await? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// Whether linking is required for a session at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Unlinked sessions are refused (sent to link).
    Enforced,
    /// Unlinked sessions pass, marked `grace` (before `required_from`, or `mode = "warn"`).
    Grace,
    /// Linking is never asked.
    Off,
}

/// The requirement under `config` at `now`. `now` is a parameter so the rule is testable at
/// any instant.
pub fn requirement(config: &LinkConfig, now: OffsetDateTime) -> Requirement {
    match config.mode {
        LinkMode::Off => Requirement::Off,
        LinkMode::Warn => Requirement::Grace,
        LinkMode::Enforce if now < config.required_from => Requirement::Grace,
        LinkMode::Enforce => Requirement::Enforced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use time::macros::datetime;

    fn config(mode: LinkMode) -> LinkConfig {
        LinkConfig {
            mode,
            required_from: datetime!(2020-04-01 00:00 UTC),
            allow_disconnect: true,
        }
    }

    #[test]
    fn the_rule_starts_on_1_april_2020() {
        let enforce = config(LinkMode::Enforce);
        assert_eq!(
            requirement(&enforce, datetime!(2020-03-31 23:59:59 UTC)),
            Requirement::Grace
        );
        assert_eq!(
            requirement(&enforce, datetime!(2020-04-01 00:00 UTC)),
            Requirement::Enforced
        );
        assert_eq!(
            requirement(&enforce, datetime!(2026-11-25 12:00 UTC)),
            Requirement::Enforced
        );
        assert_eq!(
            requirement(&config(LinkMode::Warn), datetime!(2030-01-01 00:00 UTC)),
            Requirement::Grace
        );
        assert_eq!(
            requirement(&config(LinkMode::Off), datetime!(2030-01-01 00:00 UTC)),
            Requirement::Off
        );
    }

    fn who(issuer: &str, sub: &str) -> Identity {
        Identity::sample(issuer, sub)
    }

    #[tokio::test]
    async fn conflicts_leave_the_registry_unchanged() {
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let store = Store::new(
            Arc::new(crate::store::memory::Memory::new()),
            "t:",
            std::time::Duration::from_secs(1),
            metrics,
        );
        let r = Registry::new(store);
        let (a1, a2) = (who("acc", "a1"), who("acc", "a2"));
        let (s1, s2) = (who("sso", "s1"), who("sso", "s2"));
        assert!(matches!(
            r.create(&a1, &s1).await.unwrap(),
            LinkOutcome::Created(_)
        ));
        assert!(matches!(
            r.create(&a1, &s1).await.unwrap(),
            LinkOutcome::AlreadyLinked(_)
        ));
        match r.create(&a1, &s2).await.unwrap() {
            LinkOutcome::AccountTaken(x) => assert_eq!(x.sso, s1),
            other => panic!("{other:?}"),
        }
        match r.create(&a2, &s1).await.unwrap() {
            LinkOutcome::SsoTaken(x) => assert_eq!(x.account, a1),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.list().await.unwrap().len(), 1);
        assert!(r.by_sso(&s2.key()).await.unwrap().is_none());
        assert!(r.by_account(&a2.key()).await.unwrap().is_none());
        let link = r.by_sso(&s1.key()).await.unwrap().unwrap();
        assert!(r.unlink(&link).await.unwrap());
        assert!(r.list().await.unwrap().is_empty());
        assert!(r.by_sso(&s1.key()).await.unwrap().is_none());
        assert!(matches!(
            r.create(&a2, &s1).await.unwrap(),
            LinkOutcome::Created(_)
        ));
    }
}

/// What the link rule says about a signed-in request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward, with this `X-Linkgate-Link-Status` (none when linking is not in play).
    Pass(Option<&'static str>),
    /// Signed in with Magento.com but no linked cloud account, while enforcing: the page
    /// that explains the rule (browsers) or 401 `insufficient_user_authentication` (APIs).
    LinkRequired,
    /// The cloud account is known but not connected, while enforcing: sign in with
    /// Magento.com to connect (Method 1).
    Connect,
}

/// The rule for a request that has `sso` and/or `account`, when `[account]` is configured
/// (`linking`) under `requirement`.
pub fn verdict(linking: bool, sso: bool, account: bool, requirement: Requirement) -> Verdict {
    if !linking {
        return Verdict::Pass(None);
    }
    match (sso && account, requirement) {
        (true, _) => Verdict::Pass(Some("linked")),
        (false, Requirement::Off) => Verdict::Pass(None),
        (false, Requirement::Grace) => Verdict::Pass(Some("grace")),
        (false, Requirement::Enforced) if sso => Verdict::LinkRequired,
        (false, Requirement::Enforced) => Verdict::Connect,
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    #[test]
    fn the_rule_in_every_state() {
        use Requirement::*;
        assert_eq!(verdict(false, true, false, Enforced), Verdict::Pass(None));
        assert_eq!(
            verdict(true, true, true, Enforced),
            Verdict::Pass(Some("linked"))
        );
        assert_eq!(verdict(true, true, false, Enforced), Verdict::LinkRequired);
        assert_eq!(verdict(true, false, true, Enforced), Verdict::Connect);
        assert_eq!(
            verdict(true, true, false, Grace),
            Verdict::Pass(Some("grace"))
        );
        assert_eq!(
            verdict(true, false, true, Grace),
            Verdict::Pass(Some("grace"))
        );
        assert_eq!(verdict(true, true, false, Off), Verdict::Pass(None));
    }
}
