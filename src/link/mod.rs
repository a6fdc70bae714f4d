//! The account link: one cloud account (accounts.magento.cloud) to one Magento.com SSO
//! identity, both directions (when a link is required is the policy's: [`crate::policy`]).
//!
//! The registry is the source of truth. Creating a link writes both directions and the index
//! in one atomic store operation: two browsers linking at the same moment get exactly one
//! winner and nothing half-written. A link record carries a snapshot of both identities, so
//! a session can be rebuilt from either side (primary login with Magento.com; an account JWT
//! from the platform).

pub mod admin;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::identity::Identity;
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
                    (None, None) => return Err(StoreError::Unreadable("a link record".into())),
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

    /// Removes a link, both directions at once. `true` when it was there to remove.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
