//! Refreshed tokens the store would not take.
//!
//! With rotating refresh tokens (Adobe IMS, Keycloak, Okta and Auth0 with rotation) a refresh
//! spends the session's refresh token at the provider. If the store then fails to save the
//! new tokens (Redis down, timing out or refusing writes at that moment), dropping them would
//! leave the store with a spent token, and the session would die at its next refresh. So
//! this instance keeps them:
//!
//! - the refreshed record stays in memory here ([`Sessions::load`] reads it before the
//!   store), and its passport replaces the cached one: the request that refreshed, and every
//!   later one on this instance, use the new access token, and a later refresh here spends
//!   the newest refresh token;
//! - a task saves it again with backoff (100 ms doubling to 2 s) until the store takes it,
//!   the session ends, or its tokens are superseded in the store. It writes only the tokens
//!   into the record as stored now (a link made meanwhile is kept), only while the store
//!   still holds the tokens that were refreshed (else someone saved newer ones), and only if
//!   the record still exists (`SET XX`: a sign-out meanwhile is not undone). Then the other
//!   instances are told to drop their cached copy, and the refresh lock is released;
//! - the refresh lock (30 s) stays held until then, so that no instance refreshes with the
//!   spent token meanwhile.
//!
//! What remains: until the save succeeds, other instances do not know the new tokens. They
//! serve their cached passports, and their reads from the store (once it answers) get the
//! old tokens, whose access token is still valid for a while. If the store stays unwritable
//! longer than the refresh lock (30 s) and another instance then refreshes with the spent
//! token, the provider refuses it and that instance ends the session; and if this instance
//! stops before the save, the new tokens are lost with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{now, OpaqueId, SessionRecord, Sessions, INVALIDATION_CHANNEL};
use crate::oidc::Tokens;
use crate::store::keys as store_keys;

/// A refreshed record not yet in the store.
#[derive(Debug, Clone)]
pub struct Unsaved {
    /// The record with the new tokens.
    record: SessionRecord,
    /// The tokens the refresh started from (what the store still holds).
    spent: Option<Tokens>,
    /// The refresh lock's token, released once saved.
    lock: String,
}

/// Sessions whose refreshed tokens wait to be saved, by id.
pub type UnsavedMap = Arc<Mutex<HashMap<OpaqueId, Unsaved>>>;

/// The first retry's delay; each retry doubles it, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Whether two token sets are the same (by their tokens; times follow).
fn same_tokens(a: Option<&Tokens>, b: Option<&Tokens>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.access_token == b.access_token
                && a.refresh_token == b.refresh_token
                && a.id_token == b.id_token
        }
        (None, None) => true,
        _ => false,
    }
}

impl Sessions {
    fn unsaved_map(&self) -> std::sync::MutexGuard<'_, HashMap<OpaqueId, Unsaved>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `stored` (a store read of session `id`) with the refreshed tokens that wait to be
    /// saved here, if any: put into the stored record while it still holds the tokens they
    /// replaced; the kept record alone while the store fails.
    pub(super) fn with_unsaved(
        &self,
        id: &OpaqueId,
        stored: Result<Option<SessionRecord>, crate::store::StoreError>,
    ) -> Result<Option<SessionRecord>, crate::store::StoreError> {
        let entry = {
            let mut map = self.unsaved_map();
            match map.get(id) {
                Some(u) if u.record.expires_at > now() => Some(u.clone()),
                Some(_) => {
                    map.remove(id);
                    None
                }
                None => None,
            }
        };
        let Some(entry) = entry else {
            return stored;
        };
        match stored {
            Ok(Some(mut record)) if same_tokens(record.tokens.as_ref(), entry.spent.as_ref()) => {
                record.tokens = entry.record.tokens;
                Ok(Some(record))
            }
            Err(_) => Ok(Some(entry.record)),
            other => other,
        }
    }

    /// Forgets what waits to be saved for session `id` (it ended).
    pub(super) fn forget_unsaved(&self, id: &OpaqueId) {
        self.unsaved_map().remove(id);
    }

    /// How many refreshed records wait to be saved on this instance.
    pub fn unsaved_count(&self) -> usize {
        self.unsaved_map().len()
    }

    /// Saves a refreshed session record (its tokens refreshed from `spent`, under the refresh
    /// lock taken with `lock`) and caches its passport here, as
    /// [`Sessions::save_refreshed`]. When the store fails, the record is kept here and saved
    /// again in the background (see the module's documentation): the passport is returned
    /// all the same, and `kept` is true — the caller must then leave the refresh lock held
    /// (the background save releases it).
    pub async fn save_refreshed_or_keep(
        &self,
        id: &OpaqueId,
        record: SessionRecord,
        spent: Option<Tokens>,
        lock: &str,
        passport: impl Fn(SessionRecord) -> crate::passport::Passport,
    ) -> (Arc<crate::passport::Passport>, bool) {
        let kept = record.clone();
        let saved = self.save_refreshed(id, record, &passport).await;
        match saved {
            Ok(resident) => {
                // Saved: tokens kept from an earlier refresh are older still.
                self.forget_unsaved(id);
                (resident, false)
            }
            Err(e) => {
                tracing::warn!(session = ?id, error = %e, "refreshed tokens could not be saved; keeping them here and saving them again in the background");
                self.count_unsaved("kept");
                let mut map = self.unsaved_map();
                // Refreshed again from tokens that were themselves kept: the store still
                // holds the ones those replaced.
                let spent = map.get(id).map_or(spent, |earlier| earlier.spent.clone());
                map.insert(
                    *id,
                    Unsaved {
                        record: kept.clone(),
                        spent,
                        lock: lock.to_string(),
                    },
                );
                drop(map);
                let resident = self.cache_refreshed(id, kept, passport);
                let sessions = self.clone();
                let id = *id;
                tokio::spawn(async move { sessions.save_unsaved(id).await });
                (resident, true)
            }
        }
    }

    /// Saves session `id`'s kept record, retrying with backoff, until done or moot.
    async fn save_unsaved(&self, id: OpaqueId) {
        let mut delay = FIRST_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
            let Some(entry) = self.unsaved_map().get(&id).cloned() else {
                return; // ended here, or saved by a later attempt
            };
            if entry.record.expires_at <= now() {
                self.forget_unsaved(&id);
                return;
            }
            match self.try_save_unsaved(&id, &entry).await {
                Ok(outcome) => {
                    let mut map = self.unsaved_map();
                    // A newer refresh here may have replaced the entry meanwhile.
                    if map.get(&id).is_some_and(|u| {
                        same_tokens(u.record.tokens.as_ref(), entry.record.tokens.as_ref())
                    }) {
                        map.remove(&id);
                    }
                    drop(map);
                    self.count_unsaved(if outcome.contains("saved") {
                        "saved"
                    } else {
                        "dropped"
                    });
                    tracing::info!(session = ?id, outcome, "kept refreshed tokens: done");
                    return;
                }
                Err(e) => {
                    tracing::debug!(session = ?id, error = %e, "kept refreshed tokens: the store still fails");
                }
            }
        }
    }

    /// One attempt; `Ok` with what came of it, `Err` to try again.
    async fn try_save_unsaved(
        &self,
        id: &OpaqueId,
        entry: &Unsaved,
    ) -> Result<&'static str, crate::store::StoreError> {
        let Some(mut stored) = self.load_stored(id).await? else {
            // Ended (signed out, unlinked, expired) meanwhile: nothing to save.
            self.drop_cached(id);
            return Ok("the session ended");
        };
        if same_tokens(stored.tokens.as_ref(), entry.record.tokens.as_ref()) {
            // The failed write landed after all (a command the store ran late).
            self.announce_saved(id, &entry.lock).await;
            return Ok("found saved");
        }
        if !same_tokens(stored.tokens.as_ref(), entry.spent.as_ref()) {
            // Someone saved other tokens meanwhile (this instance's own later save, or,
            // with a provider that does not rotate, another refresher): the store's win.
            self.drop_cached(id);
            return Ok("superseded in the store");
        }
        stored.tokens = entry.record.tokens.clone();
        let key = store_keys::session(&id.to_hex());
        let plain = serde_json::to_vec(&stored).unwrap_or_default();
        let sealed = super::seal::seal(&self.keys, key.as_bytes(), &plain);
        let remaining = (stored.expires_at - now()).max(1) as u64;
        if !self
            .store
            .replace(&key, &sealed, Duration::from_secs(remaining))
            .await?
        {
            self.drop_cached(id);
            return Ok("the session ended");
        }
        self.announce_saved(id, &entry.lock).await;
        Ok("saved")
    }

    /// The kept tokens are in the store: the other instances drop their copy (holding the
    /// old tokens) and read them, and the refresh lock is released.
    async fn announce_saved(&self, id: &OpaqueId, lock: &str) {
        let message = format!("{}:{}", self.instance, id.to_hex());
        if let Err(e) = self.store.publish(INVALIDATION_CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not publish a session invalidation");
        }
        let _ = self.unlock_refresh(id, lock).await;
    }

    fn count_unsaved(&self, event: &str) {
        self.store
            .metrics()
            .unsaved_tokens
            .with_label_values(&[event])
            .inc();
    }

    /// Drops session `id` from this instance's cache (the next request reads the store).
    fn drop_cached(&self, id: &OpaqueId) {
        self.forget_unsaved(id);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::config::Config;
    use crate::oidc::Identity;
    use crate::passport::Passport;

    fn sessions() -> Sessions {
        let config = Config::parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [session]\nstore = \"memory\"\n\
             cookie_secret = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n",
            "test.toml",
            &|_| None,
        )
        .unwrap();
        App::new(config).unwrap().sessions.unwrap()
    }

    fn tokens(name: &str) -> Tokens {
        Tokens {
            access_token: format!("at-{name}"),
            refresh_token: Some(format!("rt-{name}")),
            id_token: None,
            expires_at: Some(now() + 3600),
            issued_at: Some(now()),
        }
    }

    fn keep(sessions: &Sessions, id: &OpaqueId, record: &SessionRecord, new: &str, old: &str) {
        sessions.unsaved_map().insert(
            *id,
            Unsaved {
                record: SessionRecord {
                    tokens: Some(tokens(new)),
                    ..record.clone()
                },
                spent: Some(tokens(old)),
                lock: "lock".into(),
            },
        );
    }

    fn access(record: Option<SessionRecord>) -> String {
        record.unwrap().tokens.unwrap().access_token
    }

    #[tokio::test]
    async fn kept_tokens_are_the_sessions_until_the_store_has_newer_or_the_session_ends() {
        let sessions = sessions();
        let sso = Identity::sample("https://sso.example", "u");
        let (id, record) = sessions
            .create(Some(sso), None, Some(tokens("1")))
            .await
            .unwrap();
        // Refreshed to 2, not saved: a read gives 2, in the record as stored now.
        keep(&sessions, &id, &record, "2", "1");
        assert_eq!(access(sessions.load(&id).await.unwrap()), "at-2");
        // Saved meanwhile (by this instance, through the account page...): the store's.
        sessions
            .save(
                &id,
                &SessionRecord {
                    tokens: Some(tokens("3")),
                    ..record.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(access(sessions.load(&id).await.unwrap()), "at-3");
        // The background save then leaves the store alone and forgets them.
        let entry = sessions.unsaved_map().get(&id).cloned().unwrap();
        assert_eq!(
            sessions.try_save_unsaved(&id, &entry).await.unwrap(),
            "superseded in the store"
        );
        assert_eq!(sessions.unsaved_count(), 0);
        assert_eq!(access(sessions.load(&id).await.unwrap()), "at-3");
        // Kept again, then saved: only the tokens change in the stored record.
        keep(&sessions, &id, &record, "4", "3");
        let entry = sessions.unsaved_map().get(&id).cloned().unwrap();
        assert_eq!(
            sessions.try_save_unsaved(&id, &entry).await.unwrap(),
            "saved"
        );
        sessions.forget_unsaved(&id);
        let stored = sessions.load(&id).await.unwrap().unwrap();
        assert_eq!(stored.tokens.unwrap().access_token, "at-4");
        assert!(stored.sso.is_some());
        // A session ended meanwhile is not brought back.
        keep(&sessions, &id, &record, "5", "4");
        sessions.destroy(&id, None).await.unwrap();
        assert_eq!(sessions.unsaved_count(), 0, "destroy forgets them");
        keep(&sessions, &id, &record, "5", "4");
        assert!(sessions.load(&id).await.unwrap().is_none());
        let entry = sessions.unsaved_map().get(&id).cloned().unwrap();
        assert_eq!(
            sessions.try_save_unsaved(&id, &entry).await.unwrap(),
            "the session ended"
        );
        assert!(sessions.load(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_successful_save_drops_older_kept_tokens() {
        // The memory store does not fail (a failing store is tests/refresh.rs's, with a real
        // redis-server): what is checked here is that a later refresh saved in full leaves no
        // older kept tokens behind to be written over it.
        let sessions = sessions();
        let sso = Identity::sample("https://sso.example", "u");
        let (id, record) = sessions
            .create(Some(sso), None, Some(tokens("1")))
            .await
            .unwrap();
        keep(&sessions, &id, &record, "2", "1");
        let updated = SessionRecord {
            tokens: Some(tokens("3")),
            ..record
        };
        let (_, kept) = sessions
            .save_refreshed_or_keep(&id, updated, Some(tokens("2")), "lock", |r| {
                Passport::sample(r.sso.as_ref(), r.account.as_ref())
            })
            .await;
        assert!(!kept);
        assert_eq!(sessions.unsaved_count(), 0, "older kept tokens are dropped");
        assert_eq!(access(sessions.load(&id).await.unwrap()), "at-3");
    }
}
