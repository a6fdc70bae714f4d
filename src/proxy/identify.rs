//! Who sent a request: a bearer token (step 3 of the decision) or a session cookie (step 4).
//!
//! A forged or altered cookie is refused by its tag before any store lookup. A valid cookie
//! costs one store read; a session near the end of its access token is refreshed here, by
//! one request at a time across instances (a lock in the store), while concurrent requests
//! carry on with the tokens they have.

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;

use crate::app::App;
use crate::oidc::{Identity, OidcError};
use crate::respond::Refusal;
use crate::session::cookie::OpaqueId;
use crate::session::SessionRecord;

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A session cookie.
    Session,
    /// An `Authorization: Bearer` JWT.
    Bearer,
}

/// A proven identity and what the upstream may be given of it.
#[derive(Debug, Clone)]
pub struct Passport {
    /// The identity.
    pub identity: Identity,
    /// The access token (for `X-Forwarded-Access-Token`).
    pub access_token: Option<String>,
    /// The id_token (for `Authorization` when `set_authorization`).
    pub id_token: Option<String>,
    /// How it was proven.
    pub via: Via,
    /// The session id, for a session.
    pub session: Option<OpaqueId>,
}

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
    /// The store or provider is unreachable: nothing can be decided.
    Unavailable(Refusal),
}

/// The bearer token of a request, if any.
fn bearer(req: &RequestHeader) -> Option<&str> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Identifies the sender of `req`: bearer token first (when enabled), then the session.
pub async fn identify(app: &App, req: &RequestHeader) -> Found {
    if app.config.authz.bearer_tokens {
        if let Some(token) = bearer(req) {
            return match verify_bearer(app, token).await {
                Ok(identity) => Found::Passport(Arc::new(Passport {
                    identity,
                    access_token: Some(token.to_string()),
                    id_token: None,
                    via: Via::Bearer,
                    session: None,
                })),
                Err(OidcError::Unavailable(e)) => {
                    Found::Unavailable(Refusal::ProviderUnavailable(e))
                }
                Err(e) => {
                    tracing::info!(error = %e, "bearer token refused");
                    Found::Invalid(Refusal::InvalidToken(e.to_string()))
                }
            };
        }
    }
    let Some(sessions) = &app.sessions else {
        return Found::Nobody {
            stale_cookie: false,
        };
    };
    let Some(id) = sessions.id_of(req) else {
        return Found::Nobody {
            stale_cookie: sessions.has_cookie(req),
        };
    };
    let record = match sessions.load(&id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Found::Nobody { stale_cookie: true },
        Err(_) => return Found::Unavailable(Refusal::StoreUnavailable),
    };
    let record = match refresh_if_due(app, &id, record).await {
        Ok(Some(record)) => record,
        Ok(None) => return Found::Nobody { stale_cookie: true },
        Err(refusal) => return Found::Unavailable(refusal),
    };
    Found::Passport(Arc::new(Passport {
        identity: record.sso.clone(),
        access_token: Some(record.tokens.access_token.clone()),
        id_token: record.tokens.id_token.clone(),
        via: Via::Session,
        session: Some(id),
    }))
}

async fn verify_bearer(app: &App, token: &str) -> Result<Identity, OidcError> {
    let claimed = crate::oidc::unverified_issuer(token);
    if let Some(issuer) = app
        .issuers
        .iter()
        .find(|i| claimed.as_deref() == Some(i.issuer()))
    {
        return issuer.verify(token).await;
    }
    let sso = app
        .sso
        .as_ref()
        .ok_or_else(|| OidcError::Refused("no issuer is configured for bearer tokens".into()))?;
    sso.verify_bearer(token, &[sso.client_id().to_string()])
        .await
}

/// Refreshes the session's tokens when they are near expiry. `Ok(None)` when the provider
/// refused the refresh (the session is over and has been deleted).
async fn refresh_if_due(
    app: &App,
    id: &OpaqueId,
    record: SessionRecord,
) -> Result<Option<SessionRecord>, Refusal> {
    let (Some(sessions), Some(sso)) = (&app.sessions, &app.sso) else {
        return Ok(Some(record));
    };
    if !sessions.needs_refresh(&record) {
        return Ok(Some(record));
    }
    let token = OpaqueId::random().to_hex();
    let locked = sessions
        .lock_refresh(id, &token)
        .await
        .map_err(|_| Refusal::StoreUnavailable)?;
    if !locked {
        // Another request (here or on another instance) is refreshing. Until the access
        // token has actually expired the current one serves; past that, wait (bounded) for
        // the refresher's result.
        let expired = record
            .tokens
            .expires_at
            .is_some_and(|exp| exp <= time::OffsetDateTime::now_utc().unix_timestamp());
        if !expired {
            return Ok(Some(record));
        }
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match sessions.load(id).await {
                Ok(Some(newer)) if !sessions.needs_refresh(&newer) => return Ok(Some(newer)),
                Ok(None) => return Ok(None),
                Ok(Some(_)) => continue,
                Err(_) => return Err(Refusal::StoreUnavailable),
            }
        }
        return Ok(Some(record));
    }
    let outcome = sso.refresh(&record.tokens).await;
    let result = match outcome {
        Ok(tokens) => {
            let updated = SessionRecord { tokens, ..record };
            match sessions.save(id, &updated).await {
                Ok(()) => {
                    tracing::debug!(session = ?id, "tokens refreshed");
                    Ok(Some(updated))
                }
                Err(_) => Err(Refusal::StoreUnavailable),
            }
        }
        Err(OidcError::Unavailable(e)) => {
            // The provider is down: the session stays, with the tokens it has.
            tracing::warn!(error = %e, "token refresh failed; keeping the current tokens");
            Ok(Some(record))
        }
        Err(e) => {
            tracing::info!(error = %e, "token refresh refused; ending the session");
            let _ = sessions.destroy(id, Some(&record)).await;
            Ok(None)
        }
    };
    let _ = sessions.unlock_refresh(id, &token).await;
    result
}
