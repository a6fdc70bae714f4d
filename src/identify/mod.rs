//! Who sent a request: a bearer token (step 3 of the decision), a session cookie (step 4) or
//! a platform account JWT (step 5).
//!
//! A forged or altered cookie is refused by its tag before any store lookup. A valid cookie
//! costs one store read; a session near the end of its access token is refreshed here, by
//! one request at a time across instances (a lock in the store), while concurrent requests
//! carry on with the tokens they have. Whether the identity may pass is not decided here.
//!
//! The platform's account JWT (`[account] source = "jwt"`):
//! - Alone (no session), a JWT that verifies is remembered by its SHA-256 until its `exp`
//!   (plus leeway), for at most `session.cache_ttl`, with the link found for its account and
//!   the passport built from both ([`Via::AccountJwt`]). No session is written: a client
//!   repeating the JWT (an API client, forward-auth, a browser) costs a hash and a lookup.
//!   Only a browser navigation whose next step needs a session (connecting the account, the
//!   account page and its CSRF tokens) gets one, see [`session_from_jwt`]; its id is
//!   derived from the JWT, so repeating it rewrites one record instead of adding one.
//! - A session whose account came from a JWT ([`SessionRecord::account_jwt`]) follows the
//!   platform's current JWT on every request, cache hits included: the same JWT (by hash)
//!   while valid passes; another JWT passes only if it verifies and names the same account
//!   (a platform refreshing its JWT); a JWT naming another account, no JWT, or one that does
//!   not verify ends the session, at once and whole (its Magento.com side too: it was linked
//!   for the old account), its cookie is cleared, and the request goes on as one without a
//!   session (step 5 with the JWT it carries, or step 6).
//! - Sessions whose account came from elsewhere (a Magento.com sign-in finding the link) do
//!   not follow the JWT: the link speaks for them.

mod bearer;
mod platform;
mod refresh;

use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::app::App;
use crate::credentials;
use crate::identity::{from_hex, Identity, OpaqueId};
use crate::passport::{Evidence, FollowsJwt};
pub use crate::passport::{Passport, Via};
use crate::policy::{Proof, Proven};
use crate::respond::Refusal;
use crate::session::{now, SessionRecord};
use platform::Platform;
pub use platform::{account_of_jwt, session_from_jwt};

/// What [`identify`] found.
#[derive(Debug)]
pub enum Found {
    /// No credentials, or a session that no longer exists. `stale_cookie` when the request
    /// carried a session cookie that should be cleared.
    Nobody {
        /// Whether a session cookie was present but useless.
        stale_cookie: bool,
    },
    /// A proven identity.
    Passport(Arc<Passport>),
    /// A bearer token that did not verify.
    Invalid(Refusal),
    /// A platform account JWT that did not verify (expired, another key, another audience,
    /// two of them...): a browser is sent to sign in, anything else refused.
    InvalidAccountJwt {
        /// Why, for API clients.
        refusal: Refusal,
        /// Whether a session cookie was present but useless (or its session just ended).
        stale_cookie: bool,
    },
    /// The store or provider is unreachable: nothing can be decided.
    Unavailable(Refusal),
}

impl Found {
    /// What this proves, for the policy core ([`crate::policy::decide`]) under the route
    /// policy `policy` (its verdict on the identity was decided when the passport was
    /// made). A failure's refusal is handed through.
    pub fn proof(&self, policy: usize) -> Proof<'_, &Refusal> {
        match self {
            Found::Nobody { .. } => Proof::Nothing,
            Found::Passport(p) => Proof::Identity(Proven {
                via: p.via,
                sso: p.sso,
                account: p.account,
                forbidden: p.forbidden_under(policy),
            }),
            Found::Invalid(r) => Proof::InvalidBearer(r),
            Found::InvalidAccountJwt { refusal, .. } => Proof::InvalidAccountJwt(refusal),
            Found::Unavailable(r) => Proof::Unavailable(r),
        }
    }

    /// The `Set-Cookie` an answer that does not forward carries: the passport's (a session
    /// that ended on the way), or the clearing of a session cookie that was of no use.
    pub fn cookie(&self, app: &App) -> Option<String> {
        match self {
            Found::Passport(p) => p.set_cookie().map(str::to_string),
            Found::Nobody { stale_cookie } | Found::InvalidAccountJwt { stale_cookie, .. } => {
                stale_cookie
                    .then(|| app.sessions.as_ref().map(|s| s.clear_session_cookie()))
                    .flatten()
            }
            Found::Invalid(_) | Found::Unavailable(_) => None,
        }
    }
}

/// Identifies the sender of `req`: bearer token first (when enabled), then the session
/// (which, when its account came from the platform's JWT, must still agree with it), then
/// the platform's account JWT.
pub async fn identify(app: &App, req: &RequestHeader) -> Found {
    if app.config.authz.bearer_tokens {
        if let Some(token) = credentials::bearer(req) {
            return bearer::from_bearer(app, token).await;
        }
    }
    let Some(sessions) = &app.sessions else {
        return Found::Nobody {
            stale_cookie: false,
        };
    };
    let mut platform = Platform::of(app, req);
    let stale_cookie = match sessions.id_of(req) {
        Some(id) => match sessions
            .resident(&id, |record| from_session(app, id, record))
            .await
        {
            Ok(Some(passport)) => match platform.keeps(app, &passport).await {
                Err(found) => return found,
                Ok(false) => {
                    tracing::info!(session = ?id, "the platform's account JWT changed or is gone; ending the session made from it");
                    if sessions.destroy(&id, None).await.is_err() {
                        return Found::Unavailable(Refusal::StoreUnavailable);
                    }
                    true
                }
                Ok(true) if !passport.refresh_due(now()) => return Found::Passport(passport),
                // Due for a refresh: one request of this process claims it; the others (and
                // every request while a failed refresh backs off) are served from the cache.
                Ok(true) if !sessions.claim_refresh(&id) => return Found::Passport(passport),
                Ok(true) => match refresh::refresh_bounded(app, &id).await {
                    Some(Ok(Some(passport))) => return Found::Passport(passport),
                    Some(Ok(None)) => true,
                    // The store is unreachable: the session is served from the cache as
                    // through any store outage; the next request tries again. Or the
                    // provider is slow: the refresh goes on without this request.
                    Some(Err(_)) | None => return Found::Passport(passport),
                },
            },
            Ok(None) => true,
            Err(_) => return Found::Unavailable(Refusal::StoreUnavailable),
        },
        None => sessions.has_cookie(req),
    };
    platform.step_5(app, stale_cookie).await
}

/// The passport of a session: its identities and, computed once, the headers it gives the
/// upstream. Its tokens go into those headers when the configuration forwards them and are
/// not kept otherwise (a cached passport holds no secret it never uses).
pub(super) fn from_session(app: &App, id: OpaqueId, record: SessionRecord) -> Passport {
    let tokens = record.tokens.as_ref();
    let proof = Evidence {
        via: Via::Session,
        session: Some(id),
        sso: record.sso.as_ref(),
        account: record.account.as_ref(),
        access_token: tokens.map(|t| t.access_token.as_str()),
        id_token: tokens.and_then(|t| t.id_token.as_deref()),
        expires_at: record.expires_at,
    };
    // `refresh_at` is set by `Sessions::resident` for the passports it caches; the others
    // are used once.
    let passport = Passport::new(&app.rules(), proof);
    match (&record.account_jwt, &record.account) {
        (Some(binding), Some(account)) => passport.following(FollowsJwt {
            // A hash that does not parse never matches: every JWT is then verified.
            sha256: from_hex::<32>(&binding.sha256).unwrap_or([0; 32]),
            valid_until: binding.valid_until,
            account_key: account.key(),
        }),
        _ => passport,
    }
}

/// Whether a session record loaded from the store (the account page, connect, a callback)
/// may still be used with the JWT `req` carries: as [`identify`] decides for a request.
/// `Ok(false)`: the session followed another JWT and has been ended.
pub async fn session_keeps(
    app: &App,
    req: &RequestHeader,
    id: &OpaqueId,
    record: &SessionRecord,
) -> Result<bool, Refusal> {
    if record.account_jwt.is_none() {
        return Ok(true);
    }
    let passport = from_session(app, *id, record.clone());
    let mut platform = Platform::of(app, req);
    match platform.keeps(app, &passport).await {
        Ok(true) => Ok(true),
        Ok(false) => {
            if let Some(sessions) = &app.sessions {
                sessions.destroy(id, Some(record)).await?;
            }
            Ok(false)
        }
        Err(Found::Unavailable(r)) => Err(r),
        Err(_) => Err(Refusal::Unauthenticated),
    }
}

/// The identities in full behind a passport `identify` gave for `req` (for the endpoints
/// that show them; the passport itself keeps only what requests need): the session's from
/// the store, a bearer token's from the token (verified again, or found in the
/// verified-token cache), an account JWT's from the remembered JWT.
pub async fn identities(
    app: &App,
    req: &RequestHeader,
    passport: &Passport,
) -> Result<(Option<Identity>, Option<Identity>), Refusal> {
    match (passport.via, passport.session, &app.sessions) {
        (Via::Session, Some(id), Some(sessions)) => match sessions.load(&id).await? {
            Some(record) => Ok((record.sso, record.account)),
            None => Err(Refusal::Unauthenticated),
        },
        (Via::Bearer, _, _) => {
            let token = credentials::bearer(req).ok_or(Refusal::Unauthenticated)?;
            match bearer::bearer_identities(app, token).await {
                Ok((sso, account, _)) => Ok((Some(sso), account)),
                Err(Found::Invalid(r) | Found::Unavailable(r)) => Err(r),
                Err(_) => Err(Refusal::Unauthenticated),
            }
        }
        (Via::AccountJwt, _, _) => match Platform::of(app, req).verdict(app).await {
            Some(Ok(pass)) => Ok((pass.sso.clone(), Some(pass.account.clone()))),
            Some(Err(e)) => Err(e.refusal()),
            None => Err(Refusal::Unauthenticated),
        },
        _ => Err(Refusal::Unauthenticated),
    }
}

#[cfg(test)]
mod tests;
