//! Step 5 and what follows from it: the platform's account JWT (`[account] source = "jwt"`),
//! verified once and remembered by its hash, the link found for its account, whether a
//! session made from a JWT still follows the one the request carries, and a session made
//! from the JWT when a browser's next step needs one.

use std::sync::Arc;

use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use super::Found;
use crate::app::App;
use crate::identity::{to_hex, Identity, OpaqueId};
use crate::oidc::OidcError;
use crate::passport::{Evidence, Passport, Via};
use crate::respond::Refusal;
use crate::session::{now, AccountPass, JwtBinding, SessionRecord};

/// Why a platform JWT gave no account.
#[derive(Debug, Clone)]
pub(super) enum JwtError {
    /// It did not verify (or the request carried two).
    Invalid(String),
    /// Its keys could not be fetched.
    Provider(crate::oidc::Unreachable),
    /// The link registry could not be read.
    Store(crate::store::StoreError),
}

impl JwtError {
    pub(super) fn refusal(self) -> Refusal {
        match self {
            JwtError::Invalid(e) => Refusal::InvalidToken(e),
            JwtError::Provider(e) => Refusal::ProviderUnavailable(e.to_string()),
            JwtError::Store(e) => e.into(),
        }
    }
}

/// The platform JWT a request carries, and (computed at most once per request) what it
/// verified to.
pub(super) struct Platform<'a> {
    /// `None`: not configured, or no JWT. `Some(Err)`: two different ones.
    token: Option<Result<(&'a str, [u8; 32]), String>>,
    verdict: Option<Result<Arc<AccountPass>, JwtError>>,
}

impl<'a> Platform<'a> {
    pub(super) fn of(app: &App, req: &'a RequestHeader) -> Self {
        let token = app
            .linking
            .jwt()
            .and_then(|source| match source.token_of(req) {
                Ok(token) => token.map(|t| Ok((t, Sha256::digest(t.as_bytes()).into()))),
                Err(e) => Some(Err(e.to_string())),
            });
        Self {
            token,
            verdict: None,
        }
    }

    /// What the JWT verified to (remembered for the rest of the request).
    pub(super) async fn verdict(
        &mut self,
        app: &App,
    ) -> Option<Result<Arc<AccountPass>, JwtError>> {
        if self.verdict.is_none() {
            self.verdict = Some(match self.token.as_ref()? {
                Ok((token, sha256)) => account_pass(app, token, sha256).await,
                Err(e) => Err(JwtError::Invalid(e.clone())),
            });
        }
        self.verdict.clone()
    }

    /// Whether a session's passport may still be used: it does not follow a JWT, or the
    /// JWT the request carries names the same account. `Err` when that cannot be told (the
    /// keys or the store are unreachable).
    pub(super) async fn keeps(&mut self, app: &App, passport: &Passport) -> Result<bool, Found> {
        let Some(follows) = passport.follows() else {
            return Ok(true);
        };
        if let Some(Ok((_, sha256))) = &self.token {
            if *sha256 == follows.sha256 && follows.valid_until > now() {
                return Ok(true);
            }
        }
        match self.verdict(app).await {
            None => Ok(false),
            Some(Ok(pass)) => Ok(pass.account.key() == follows.account_key),
            Some(Err(JwtError::Invalid(_))) => Ok(false),
            Some(Err(e)) => Err(Found::Unavailable(e.refusal())),
        }
    }

    /// Step 5: what a request without a usable session gets from its JWT.
    pub(super) async fn step_5(mut self, app: &App, stale_cookie: bool) -> Found {
        match self.verdict(app).await {
            None => Found::Nobody { stale_cookie },
            Some(Ok(pass)) => {
                let clear = stale_cookie
                    .then(|| app.sessions.as_ref().map(|s| s.clear_session_cookie()))
                    .flatten();
                Found::Passport(match clear {
                    // The session this request came with ended: its cookie goes.
                    Some(cookie) => Arc::new((*pass.passport).clone().with_cookie(cookie)),
                    None => pass.passport.clone(),
                })
            }
            Some(Err(JwtError::Invalid(e))) => {
                tracing::info!(error = %e, "account JWT refused");
                Found::InvalidAccountJwt {
                    refusal: Refusal::InvalidToken(e),
                    stale_cookie,
                }
            }
            Some(Err(e)) => Found::Unavailable(e.refusal()),
        }
    }
}

/// A session for a browser that came with the platform's JWT alone and whose next step
/// needs one (connecting its account, the account page). Its account follows the JWT, and
/// its id is derived from the JWT (one record per JWT, however often it is asked for).
/// `Ok(None)` when the request carries no JWT that verifies.
pub async fn session_from_jwt(
    app: &App,
    req: &RequestHeader,
) -> Result<Option<(OpaqueId, SessionRecord)>, Refusal> {
    let Some(sessions) = &app.sessions else {
        return Ok(None);
    };
    let mut platform = Platform::of(app, req);
    let pass = match platform.verdict(app).await {
        None | Some(Err(JwtError::Invalid(_))) => return Ok(None),
        Some(Err(e)) => return Err(e.refusal()),
        Some(Ok(pass)) => pass,
    };
    let Some(Ok((_, sha256))) = platform.token else {
        return Ok(None);
    };
    let binding = JwtBinding {
        sha256: to_hex(&sha256),
        valid_until: pass.valid_until,
    };
    let id = sessions.jwt_session_id(&sha256);
    // Asked again with the same JWT (a browser that dropped the cookie, a client repeating a
    // navigation): the session is there already, unless the link changed since.
    let sso_key = |sso: Option<&Identity>| sso.map(Identity::key);
    if let Some(record) = sessions.load(&id).await? {
        if record.account_jwt.as_ref() == Some(&binding)
            && sso_key(record.sso.as_ref()) == sso_key(pass.sso.as_ref())
        {
            return Ok(Some((id, record)));
        }
    }
    sessions
        .create_as(
            id,
            pass.sso.clone(),
            Some(pass.account.clone()),
            None,
            Some(binding),
        )
        .await
        .map(Some)
        .map_err(Refusal::from)
}

/// The account the platform's JWT in `req` names, with the binding a session made from it
/// records (for `link/connect`). `Ok(None)`: no JWT.
pub async fn account_of_jwt(
    app: &App,
    req: &RequestHeader,
) -> Result<Option<(Identity, JwtBinding)>, Refusal> {
    let mut platform = Platform::of(app, req);
    let pass = match platform.verdict(app).await {
        None => return Ok(None),
        Some(Err(e)) => return Err(e.refusal()),
        Some(Ok(pass)) => pass,
    };
    let Some(Ok((_, sha256))) = platform.token else {
        return Ok(None);
    };
    let binding = JwtBinding {
        sha256: to_hex(&sha256),
        valid_until: pass.valid_until,
    };
    Ok(Some((pass.account.clone(), binding)))
}

/// A platform JWT's account, link and passport: remembered (see the module comment), else
/// verified, its link read, and remembered. A JWT verified while a link changed is not
/// remembered (it may hold the old link).
async fn account_pass(
    app: &App,
    token: &str,
    sha256: &[u8; 32],
) -> Result<Arc<AccountPass>, JwtError> {
    let source = app
        .linking
        .jwt()
        .ok_or_else(|| JwtError::Invalid("no account JWT is configured".into()))?;
    let sessions = app.sessions.as_ref();
    let cache = sessions.and_then(|s| s.account_jwts());
    if let Some(cache) = cache {
        if let Some(hit) = cache.get(sha256) {
            if hit.valid_until > now() {
                app.metrics.token_cache_hit.inc();
                return Ok(hit);
            }
            cache.remove(sha256);
        }
        app.metrics.token_cache_miss.inc();
    }
    let generation = sessions.map(|s| s.links_generation());
    let account = match source.verify(token).await {
        Ok(account) => account,
        Err(OidcError::Unavailable(e)) => return Err(JwtError::Provider(e)),
        Err(e) => return Err(JwtError::Invalid(e.to_string())),
    };
    let valid_until = crate::oidc::unverified_expiry(token)
        .map_or(i64::MAX, |exp| exp.saturating_add(source.leeway_secs()));
    let sso = match app.linking.registry() {
        Some(registry) => registry
            .by_account(&account.key())
            .await
            .map_err(JwtError::Store)?
            .map(|l| l.sso),
        None => None,
    };
    let proof = Evidence {
        via: Via::AccountJwt,
        session: None,
        sso: sso.as_ref(),
        account: Some(&account),
        access_token: None,
        id_token: None,
        expires_at: valid_until,
    };
    let passport = Arc::new(Passport::new(&app.rules(), proof));
    let pass = Arc::new(AccountPass {
        account,
        sso,
        valid_until,
        passport,
    });
    if let (Some(cache), Some(sessions)) = (cache, sessions) {
        if valid_until != i64::MAX
            && valid_until > now()
            && generation == Some(sessions.links_generation())
        {
            cache.insert(*sha256, pass.clone());
        }
    }
    Ok(pass)
}
