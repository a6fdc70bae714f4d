//! When a session's tokens are refreshed, and who refreshes them: one request of this process
//! claims a refresh, one instance holds the store's refresh lock, and a failed refresh backs
//! off everywhere.

use std::time::Duration;

use super::{now, SessionRecord, Sessions};
use crate::identity::OpaqueId;
use crate::store::{keys as store_keys, StoreError};

/// The shortest time between two refreshes of a session's tokens, whatever their lifetime
/// and `session.refresh_before` (see [`refresh_at`]).
pub const MIN_REFRESH_INTERVAL: i64 = 5;

/// How long a request's claim on a refresh holds at most in this process (the refresh lock
/// in the store holds as long).
pub const REFRESH_CLAIM: Duration = Duration::from_secs(30);

/// When a session's access token is due for a refresh: `refresh_before` ahead of its expiry,
/// but never before half its lifetime has passed, and never sooner than
/// [`MIN_REFRESH_INTERVAL`] after it was issued; at its expiry at the latest. A 5-minute token
/// is refreshed after 2.5 minutes (not at once under `refresh_before = "5m"`), a 1-hour one
/// `refresh_before` ahead of its expiry. Tokens stored before their issue time was recorded
/// (`issued_at` absent) follow `refresh_before` alone.
pub fn refresh_at(issued_at: Option<i64>, expires_at: i64, refresh_before: i64) -> Option<i64> {
    let by_margin = expires_at.saturating_sub(refresh_before);
    let Some(iat) = issued_at else {
        return Some(by_margin);
    };
    let lifetime = expires_at.saturating_sub(iat).max(0);
    let earliest = iat
        .saturating_add(lifetime / 2)
        .max(iat.saturating_add(MIN_REFRESH_INTERVAL));
    Some(by_margin.max(earliest).min(expires_at))
}

/// How long a failed refresh (the provider down or answering nonsense) is not tried again,
/// here and on every other instance: a tenth of the token's lifetime, between
/// [`MIN_REFRESH_INTERVAL`] and a minute. Meanwhile the session keeps its tokens.
pub fn refresh_backoff(issued_at: Option<i64>, expires_at: Option<i64>) -> Duration {
    let lifetime = match (issued_at, expires_at) {
        (Some(iat), Some(exp)) => exp.saturating_sub(iat),
        _ => 300,
    };
    Duration::from_secs((lifetime / 10).clamp(MIN_REFRESH_INTERVAL, 60) as u64)
}

impl Sessions {
    /// Whether the session's access token should be refreshed now.
    pub fn needs_refresh(&self, record: &SessionRecord) -> bool {
        self.refresh_at(record).is_some_and(|at| now() >= at)
    }

    /// From when the session's access token should be refreshed, when it can be (a refresh
    /// token and a known expiry): see [`refresh_at`].
    pub fn refresh_at(&self, record: &SessionRecord) -> Option<i64> {
        let tokens = record.tokens.as_ref()?;
        tokens.refresh_token.as_ref()?;
        let before = i64::try_from(self.config.refresh_before.as_secs()).unwrap_or(i64::MAX / 4);
        refresh_at(tokens.issued_at, tokens.expires_at?, before)
    }

    /// Claims the refresh of session `id` for the calling request: `true` when no other
    /// request of this process is refreshing it and no failed refresh is backing off. The
    /// claim holds until [`Sessions::refresh_done`] (or, should that never come, for
    /// [`REFRESH_CLAIM`]). Costs a mutex and a map lookup, no store command: the requests
    /// that do not get it are served from the cache.
    pub fn claim_refresh(&self, id: &OpaqueId) -> bool {
        let now = now();
        let mut claims = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        if claims.get(id).is_some_and(|until| *until > now) {
            return false;
        }
        if claims.len() >= 4096 {
            claims.retain(|_, until| *until > now);
        }
        claims.insert(*id, now + REFRESH_CLAIM.as_secs() as i64);
        true
    }

    /// Ends a claim: `None` after a refresh (or after finding one done), `Some(t)` to leave
    /// the session alone here until unix second `t` (the provider failed, or another
    /// instance holds the refresh lock).
    pub fn refresh_done(&self, id: &OpaqueId, retry_at: Option<i64>) {
        let mut claims = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        match retry_at {
            Some(at) => {
                claims.insert(*id, at);
            }
            None => {
                claims.remove(id);
            }
        }
    }

    /// Holds the refresh lock of session `id` (taken with `token`) for `ttl` more, from
    /// now: every instance leaves the session's refresh alone meanwhile (a backoff after
    /// the provider failed).
    pub async fn hold_refresh_lock(
        &self,
        id: &OpaqueId,
        token: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.store
            .put(
                &store_keys::refresh_lock(&id.to_hex()),
                token.as_bytes(),
                ttl,
            )
            .await
    }

    /// Takes the refresh lock of a session (one refresher at a time, across instances).
    pub async fn lock_refresh(&self, id: &OpaqueId, token: &str) -> Result<bool, StoreError> {
        self.store
            .try_lock(
                &store_keys::refresh_lock(&id.to_hex()),
                token,
                Duration::from_secs(30),
            )
            .await
    }

    /// Releases the refresh lock (only if still ours).
    pub async fn unlock_refresh(&self, id: &OpaqueId, token: &str) -> Result<(), StoreError> {
        self.store
            .unlock(&store_keys::refresh_lock(&id.to_hex()), token)
            .await
    }
}
