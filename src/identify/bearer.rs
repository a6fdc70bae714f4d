//! Step 3: `Authorization: Bearer` JWTs, verified against the SSO issuer or an
//! `authz.extra_jwt_issuers` entry, remembered by their hash until their `exp` (at most
//! `session.cache_ttl`), with the link found for their identity.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Found;
use crate::app::{App, VerifiedToken};
use crate::identity::Identity;
use crate::oidc::OidcError;
use crate::passport::{Evidence, Passport, Via};
use crate::respond::Refusal;
use crate::session::now;

pub(super) async fn from_bearer(app: &App, token: &str) -> Found {
    let (sso, account, expires_at) = match bearer_identities(app, token).await {
        Ok(found) => found,
        Err(found) => return found,
    };
    let proof = Evidence {
        via: Via::Bearer,
        session: None,
        sso: Some(&sso),
        account: account.as_ref(),
        access_token: Some(token),
        id_token: None,
        expires_at,
    };
    Found::Passport(Arc::new(Passport::new(&app.rules(), proof)))
}

/// A bearer token's Magento.com identity, its linked account (looked up in the registry:
/// a bearer token has no session) and its `exp`.
pub(super) async fn bearer_identities(
    app: &App,
    token: &str,
) -> Result<(Identity, Option<Identity>, i64), Found> {
    let (sso, expires_at) = match verify_bearer(app, token).await {
        Ok(verified) => verified,
        Err(OidcError::Unavailable(e)) => {
            return Err(Found::Unavailable(Refusal::ProviderUnavailable(
                e.to_string(),
            )))
        }
        Err(e) => {
            tracing::info!(error = %e, "bearer token refused");
            return Err(Found::Invalid(Refusal::InvalidToken(e.to_string())));
        }
    };
    let account = match app.linking.registry() {
        Some(registry) => match registry.by_sso(&sso.key()).await {
            Ok(link) => link.map(|l| l.account),
            Err(_) => return Err(Found::Unavailable(Refusal::StoreUnavailable)),
        },
        None => None,
    };
    Ok((sso, account, expires_at))
}

/// A bearer token's identity: from the verified-token cache when this exact token verified
/// within `session.cache_ttl` and has not expired, else by verifying its signature and
/// claims (and then cached). Only successes are cached; a token is found by the SHA-256 of
/// all its bytes, so an altered token is never a hit. A token stays accepted until its
/// `exp` even if its key is rotated out meanwhile, for at most `cache_ttl`: what every JWT
/// verifier with a key cache does.
///
/// Returns the identity and the token's `exp` (`i64::MAX` when it has none).
pub(super) async fn verify_bearer(app: &App, token: &str) -> Result<(Identity, i64), OidcError> {
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
