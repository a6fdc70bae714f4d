//! Who sent a request: a bearer token (step 3 of the decision), a session cookie (step 4) or
//! a platform account JWT (step 5).
//!
//! A forged or altered cookie is refused by its tag before any store lookup. A valid cookie
//! costs one store read; a session near the end of its access token is refreshed here, by
//! one request at a time across instances (a lock in the store), while concurrent requests
//! carry on with the tokens they have. Whether the identity may pass is not decided here.

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use crate::app::{App, VerifiedToken};
use crate::oidc::{Identity, OidcError};
use crate::respond::Refusal;
use crate::session::cookie::OpaqueId;
use crate::session::{now, SessionRecord};

use crate::passport::Proof;
pub use crate::passport::{Passport, Via};

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
    /// A bearer token (or account JWT) that did not verify.
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

/// Identifies the sender of `req`: bearer token first (when enabled), then the session, then
/// the platform's account JWT.
pub async fn identify(app: &App, req: &RequestHeader) -> Found {
    if app.config.authz.bearer_tokens {
        if let Some(token) = bearer(req) {
            return from_bearer(app, token).await;
        }
    }
    let Some(sessions) = &app.sessions else {
        return Found::Nobody {
            stale_cookie: false,
        };
    };
    let stale_cookie = match sessions.id_of(req) {
        Some(id) => match sessions
            .resident(&id, |record| from_session(app, id, record))
            .await
        {
            Ok(Some(passport)) if !passport.refresh_due(now()) => return Found::Passport(passport),
            // Due for a refresh: the tokens are in the store, not in the cache.
            Ok(Some(_)) => match sessions.load(&id).await {
                Ok(Some(record)) => match refresh_if_due(app, &id, record).await {
                    Ok(Some(record)) => {
                        return Found::Passport(Arc::new(from_session(app, id, record)))
                    }
                    Ok(None) => true,
                    Err(refusal) => return Found::Unavailable(refusal),
                },
                Ok(None) => true,
                Err(_) => return Found::Unavailable(Refusal::StoreUnavailable),
            },
            Ok(None) => true,
            Err(_) => return Found::Unavailable(Refusal::StoreUnavailable),
        },
        None => sessions.has_cookie(req),
    };
    if let Some(found) = from_account_jwt(app, req).await {
        return found;
    }
    Found::Nobody { stale_cookie }
}

/// The passport of a session: its identities and, computed once, the headers it gives the
/// upstream. Its tokens go into those headers when the configuration forwards them and are
/// not kept otherwise (a cached passport holds no secret it never uses).
fn from_session(app: &App, id: OpaqueId, record: SessionRecord) -> Passport {
    let tokens = record.tokens.as_ref();
    let proof = Proof {
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
    Passport::new(&crate::proxy::rules(app), proof)
}

async fn from_bearer(app: &App, token: &str) -> Found {
    let (sso, account, expires_at) = match bearer_identities(app, token).await {
        Ok(found) => found,
        Err(found) => return found,
    };
    let proof = Proof {
        via: Via::Bearer,
        session: None,
        sso: Some(&sso),
        account: account.as_ref(),
        access_token: Some(token),
        id_token: None,
        expires_at,
    };
    Found::Passport(Arc::new(Passport::new(&crate::proxy::rules(app), proof)))
}

/// A bearer token's Magento.com identity, its linked account (looked up in the registry:
/// a bearer token has no session) and its `exp`.
async fn bearer_identities(
    app: &App,
    token: &str,
) -> Result<(Identity, Option<Identity>, i64), Found> {
    let (sso, expires_at) = match verify_bearer(app, token).await {
        Ok(verified) => verified,
        Err(OidcError::Unavailable(e)) => {
            return Err(Found::Unavailable(Refusal::ProviderUnavailable(e)))
        }
        Err(e) => {
            tracing::info!(error = %e, "bearer token refused");
            return Err(Found::Invalid(Refusal::InvalidToken(e.to_string())));
        }
    };
    let account = match (&app.registry, app.config.account.is_some()) {
        (Some(registry), true) => match registry.by_sso(&sso.key()).await {
            Ok(link) => link.map(|l| l.account),
            Err(_) => return Err(Found::Unavailable(Refusal::StoreUnavailable)),
        },
        _ => None,
    };
    Ok((sso, account, expires_at))
}

/// The identities in full behind a passport `identify` gave for `req` (for the endpoints
/// that show them; the passport itself keeps only what requests need): the session's from
/// the store, a bearer token's from the token (verified again, or found in the
/// verified-token cache).
pub async fn identities(
    app: &App,
    req: &RequestHeader,
    passport: &Passport,
) -> Result<(Option<Identity>, Option<Identity>), Refusal> {
    match (passport.via, passport.session, &app.sessions) {
        (Via::Session, Some(id), Some(sessions)) => match sessions.load(&id).await {
            Ok(Some(record)) => Ok((record.sso, record.account)),
            Ok(None) => Err(Refusal::Unauthenticated),
            Err(_) => Err(Refusal::StoreUnavailable),
        },
        (Via::Bearer, _, _) => {
            let token = bearer(req).ok_or(Refusal::Unauthenticated)?;
            match bearer_identities(app, token).await {
                Ok((sso, account, _)) => Ok((Some(sso), account)),
                Err(Found::Invalid(r) | Found::Unavailable(r)) => Err(r),
                Err(_) => Err(Refusal::Unauthenticated),
            }
        }
        _ => Err(Refusal::Unauthenticated),
    }
}

/// Step 5: no session, but the platform put a signed account JWT in a cookie or header. A
/// linked account gets a full session from its link record; an unlinked one an account-only
/// session (which the link policy then sends to connect, or lets pass in grace).
async fn from_account_jwt(app: &App, req: &RequestHeader) -> Option<Found> {
    let source = app.account_jwt.as_ref()?;
    let token = source.token_of(req)?;
    let account = match source.verify(&token).await {
        Ok(account) => account,
        Err(OidcError::Unavailable(e)) => {
            return Some(Found::Unavailable(Refusal::ProviderUnavailable(e)))
        }
        Err(e) => {
            tracing::info!(error = %e, "account JWT refused");
            return Some(Found::Invalid(Refusal::InvalidToken(e.to_string())));
        }
    };
    let (sessions, registry) = (app.sessions.as_ref()?, app.registry.as_ref()?);
    let link = match registry.by_account(&account.key()).await {
        Ok(link) => link,
        Err(_) => return Some(Found::Unavailable(Refusal::StoreUnavailable)),
    };
    let sso = link.map(|l| l.sso);
    let (id, record) = match sessions.create(sso, Some(account), None).await {
        Ok(created) => created,
        Err(_) => return Some(Found::Unavailable(Refusal::StoreUnavailable)),
    };
    let passport = from_session(app, id, record).with_cookie(sessions.session_cookie(&id));
    Some(Found::Passport(Arc::new(passport)))
}

/// A bearer token's identity: from the verified-token cache when this exact token verified
/// within `session.cache_ttl` and has not expired, else by verifying its signature and
/// claims (and then cached). Only successes are cached; a token is found by the SHA-256 of
/// all its bytes, so an altered token is never a hit. A token stays accepted until its
/// `exp` even if its key is rotated out meanwhile, for at most `cache_ttl`: what every JWT
/// verifier with a key cache does.
///
/// Returns the identity and the token's `exp` (`i64::MAX` when it has none).
async fn verify_bearer(app: &App, token: &str) -> Result<(Identity, i64), OidcError> {
    let expiry = |token| crate::oidc::unverified_expiry(token).unwrap_or(i64::MAX);
    let Some(cache) = &app.verified_tokens else {
        return Ok((verify_bearer_now(app, token).await?, expiry(token)));
    };
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(hit) = cache.get(&key) {
        if hit.expires_at > now() {
            app.metrics.token_cache_hit.inc();
            return Ok((hit.identity.clone(), hit.expires_at));
        }
        cache.remove(&key);
    }
    app.metrics.token_cache_miss.inc();
    let identity = verify_bearer_now(app, token).await?;
    let expires_at = expiry(token);
    if expires_at != i64::MAX && expires_at > now() {
        cache.insert(
            key,
            Arc::new(VerifiedToken {
                identity: identity.clone(),
                expires_at,
            }),
        );
    }
    Ok((identity, expires_at))
}

async fn verify_bearer_now(app: &App, token: &str) -> Result<Identity, OidcError> {
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
    let Some(tokens) = record.tokens.clone() else {
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
        let expired = tokens
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
    let result = match sso.refresh(&tokens).await {
        Ok(tokens) => {
            let updated = SessionRecord {
                tokens: Some(tokens),
                ..record
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn app(cache_ttl: &str) -> App {
        let config = Config::parse(
            &format!(
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                 [sso]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n\
                 client_secret = \"s\"\nhttp_timeout = \"200ms\"\n\
                 [session]\nstore = \"memory\"\ncache_ttl = \"{cache_ttl}\"\n\
                 cookie_secret = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n\
                 [authz]\nbearer_tokens = true\n"
            ),
            "t.toml",
            &|_| None,
        )
        .unwrap();
        App::new(config).unwrap()
    }

    fn remember(app: &App, token: &str, expires_at: i64) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let entry = VerifiedToken {
            identity: Identity::sample("http://127.0.0.1:1", "cached"),
            expires_at,
        };
        app.verified_tokens
            .as_ref()
            .unwrap()
            .insert(key, Arc::new(entry));
    }

    #[tokio::test]
    async fn a_verified_token_is_served_from_the_cache_until_its_exp() {
        let app = app("30s");
        remember(&app, "token-a", now() + 60);
        let (identity, exp) = verify_bearer(&app, "token-a").await.unwrap();
        assert_eq!(identity.subject, "cached");
        assert!(exp > now());
        assert_eq!(app.metrics.token_cache_hit.get(), 1);
        // Past its exp the entry is not used: the token is verified in full (and here fails:
        // it is no JWT, and the provider is unreachable).
        remember(&app, "token-b", now() - 1);
        assert!(verify_bearer(&app, "token-b").await.is_err());
        assert_eq!(app.metrics.token_cache_hit.get(), 1);
        assert_eq!(app.metrics.token_cache_miss.get(), 1);
        let key: [u8; 32] = Sha256::digest(b"token-b").into();
        assert!(app.verified_tokens.as_ref().unwrap().get(&key).is_none());
        // Another token, even one differing in a byte, is never a hit.
        assert!(verify_bearer(&app, "token-A").await.is_err());
    }

    #[tokio::test]
    async fn no_token_cache_without_a_session_cache() {
        assert!(app("0s").verified_tokens.is_none());
    }
}
