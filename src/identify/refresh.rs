//! Refreshing a session's tokens when its passport says they are due: one request of this
//! process claims it, one instance holds the store's lock, the provider's answer (or its
//! absence) decides what the session keeps.

use std::sync::Arc;
use std::time::Duration;

use super::from_session;
use crate::app::App;
use crate::identity::OpaqueId;
use crate::oidc::OidcError;
use crate::passport::Passport;
use crate::respond::Refusal;
use crate::session::{now, SessionRecord};

/// How long the request that claimed a refresh waits for it at most. A provider answers a
/// refresh in milliseconds; one that hangs (down, overloaded) would otherwise hold that
/// request for the provider's whole `http_timeout`, once per session and backoff.
const REFRESH_WAIT: Duration = Duration::from_millis(500);

/// [`refresh`] in a task of its own when the server's state can be shared with one: the
/// request waits for it [`REFRESH_WAIT`] at most, then goes on with the session's current
/// tokens (`None`) while the refresh finishes, succeeds or backs off without it.
pub(super) async fn refresh_bounded(
    app: &App,
    id: &OpaqueId,
) -> Option<Result<Option<Arc<Passport>>, Refusal>> {
    let Some(owned) = app.this.get().and_then(std::sync::Weak::upgrade) else {
        return Some(refresh(app, id).await);
    };
    let id = *id;
    let mut task = tokio::spawn(async move { refresh(&owned, &id).await });
    match tokio::time::timeout(REFRESH_WAIT, &mut task).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "token refresh task failed");
            Some(Err(Refusal::Internal))
        }
        Err(_) => None,
    }
}

/// Refreshes the tokens of session `id`, whose refresh the caller has claimed in this
/// process ([`crate::session::Sessions::claim_refresh`]); ends the claim. Across instances
/// the refresh lock in the store picks one refresher, and the record is read again after
/// taking it (or failing to), so that:
/// - a request that finds the refresh done (here or elsewhere) uses the winner's tokens;
/// - one that loses the lock keeps the tokens it has (it waits, bounded, for the winner's
///   only when those have expired) and leaves the session alone here for a while;
/// - the provider down (or answering nonsense) keeps the session and its tokens and backs
///   off everywhere for [`crate::session::refresh_backoff`] (the lock is held that long);
/// - a refusal ends the session, unless the stored refresh token is no longer the one
///   refused (another refresher rotated it meanwhile: its tokens are used).
///
/// `Ok(None)` when the session is over (gone, or refused by the provider and deleted).
async fn refresh(app: &App, id: &OpaqueId) -> Result<Option<Arc<Passport>>, Refusal> {
    let Some(sessions) = &app.sessions else {
        return Ok(None);
    };
    let token = OpaqueId::random().to_hex();
    let locked = match sessions.lock_refresh(id, &token).await {
        Ok(locked) => locked,
        Err(_) => {
            sessions.refresh_done(id, Some(now() + crate::session::MIN_REFRESH_INTERVAL));
            return Err(Refusal::StoreUnavailable);
        }
    };
    let result = if locked {
        refresh_locked(app, id, &token).await
    } else {
        // Another instance is refreshing (or backing off): not before a while from here.
        sessions.refresh_done(id, Some(now() + crate::session::MIN_REFRESH_INTERVAL));
        let record = refreshed_elsewhere(app, id).await?;
        return Ok(record.map(|r| Arc::new(from_session(app, *id, r))));
    };
    match &result {
        Ok(Refreshed::BackOff(record)) => {
            let tokens = record.tokens.as_ref();
            let backoff = crate::session::refresh_backoff(
                tokens.and_then(|t| t.issued_at),
                tokens.and_then(|t| t.expires_at),
            );
            // Every instance backs off: the lock stays held that long.
            let _ = sessions.hold_refresh_lock(id, &token, backoff).await;
            sessions.refresh_done(id, Some(now() + backoff.as_secs() as i64));
        }
        // Refreshed, not yet saved: the lock stays held until the background save.
        Ok(Refreshed::Kept(_)) => sessions.refresh_done(id, None),
        Ok(_) => {
            let _ = sessions.unlock_refresh(id, &token).await;
            sessions.refresh_done(id, None);
        }
        // The store failed mid-way: not again from here for a moment.
        Err(_) => {
            let _ = sessions.unlock_refresh(id, &token).await;
            sessions.refresh_done(id, Some(now() + crate::session::MIN_REFRESH_INTERVAL));
        }
    }
    result.map(|r| r.into_passport(app, id))
}

/// What a refresh under the lock came to.
enum Refreshed {
    /// Refreshed and saved, or found refreshed: the passport (already in this instance's
    /// cache).
    Fresh(Arc<Passport>),
    /// Refreshed, but the store failed to save it: kept in this instance and saved again
    /// in the background, which then releases the refresh lock (`session::unsaved`).
    Kept(Arc<Passport>),
    /// The session's current record (refreshed, or found refreshed by someone else).
    Done(SessionRecord),
    /// The provider failed: the record as it was, to be tried again after a backoff.
    BackOff(SessionRecord),
    /// The session is over.
    Ended,
}

impl Refreshed {
    fn into_passport(self, app: &App, id: &OpaqueId) -> Option<Arc<Passport>> {
        match self {
            Refreshed::Fresh(p) | Refreshed::Kept(p) => Some(p),
            Refreshed::Done(r) | Refreshed::BackOff(r) => Some(Arc::new(from_session(app, *id, r))),
            Refreshed::Ended => None,
        }
    }
}

async fn refresh_locked(app: &App, id: &OpaqueId, lock: &str) -> Result<Refreshed, Refusal> {
    let (Some(sessions), Some(sso)) = (&app.sessions, &app.sso) else {
        return Ok(Refreshed::Ended);
    };
    // Read again under the lock: the refresh may have been done since the passport was
    // cached (a refresh token is single-use with rotation: never send a spent one).
    let generation = sessions.generation();
    let Some(record) = sessions.load(id).await? else {
        return Ok(Refreshed::Ended);
    };
    if !sessions.needs_refresh(&record) {
        // Done by someone else: what is cached here becomes the stored record's, so that the
        // requests after this one do not come back (should the invalidation not arrive).
        let passport = sessions.remember(id, record, generation, |r| from_session(app, *id, r));
        return Ok(Refreshed::Fresh(passport));
    }
    let Some(tokens) = record.tokens.clone() else {
        return Ok(Refreshed::Done(record));
    };
    let counted = |result: &str| {
        app.metrics
            .token_refreshes
            .with_label_values(&[result])
            .inc()
    };
    match sso.refresh(&tokens).await {
        Ok(fresh) => {
            counted("ok");
            let updated = SessionRecord {
                tokens: Some(fresh),
                ..record
            };
            // The refresh token may be spent at the provider now: a store that fails to take
            // the new tokens must not lose them.
            let (passport, kept) = sessions
                .save_refreshed_or_keep(id, updated, Some(tokens), lock, |r| {
                    from_session(app, *id, r)
                })
                .await;
            tracing::debug!(session = ?id, kept, "tokens refreshed");
            Ok(if kept {
                Refreshed::Kept(passport)
            } else {
                Refreshed::Fresh(passport)
            })
        }
        Err(OidcError::Unavailable(e)) => {
            counted("unavailable");
            tracing::warn!(error = %e, "token refresh failed; keeping the current tokens and backing off");
            Ok(Refreshed::BackOff(record))
        }
        Err(e) => {
            // Rotated meanwhile by a refresher that did not hold the lock (its lock expired
            // mid-call, or an older instance): its tokens are the session's now.
            match sessions.load(id).await {
                Ok(Some(now_stored))
                    if now_stored.tokens.as_ref().map(|t| &t.refresh_token)
                        != Some(&tokens.refresh_token) =>
                {
                    counted("superseded");
                    tracing::info!(error = %e, "token refresh refused, but the session was refreshed meanwhile; using its tokens");
                    return Ok(Refreshed::Done(now_stored));
                }
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            counted("refused");
            tracing::info!(error = %e, "token refresh refused; ending the session");
            let _ = sessions.destroy(id, Some(&record)).await;
            Ok(Refreshed::Ended)
        }
    }
}

/// The session after another instance took the refresh lock: its record as stored (the
/// winner's tokens once it has saved them). Only when the tokens read have expired does this
/// wait (bounded) for the winner's; otherwise they serve meanwhile.
async fn refreshed_elsewhere(app: &App, id: &OpaqueId) -> Result<Option<SessionRecord>, Refusal> {
    let Some(sessions) = &app.sessions else {
        return Ok(None);
    };
    let mut record = sessions.load(id).await?;
    for _ in 0..50 {
        let Some(current) = &record else {
            return Ok(None);
        };
        let expired = current
            .tokens
            .as_ref()
            .and_then(|t| t.expires_at)
            .is_some_and(|exp| exp <= now());
        if !expired || !sessions.needs_refresh(current) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        record = sessions.load(id).await?;
    }
    Ok(record)
}
