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

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use crate::app::{App, VerifiedToken};
use crate::oidc::{Identity, OidcError};
use crate::respond::Refusal;
use crate::session::cookie::OpaqueId;
use crate::session::{now, AccountPass, JwtBinding, SessionRecord};

use crate::passport::{FollowsJwt, Proof};
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

/// Why a platform JWT gave no account.
#[derive(Debug, Clone)]
enum JwtError {
    /// It did not verify (or the request carried two).
    Invalid(String),
    /// Its keys could not be fetched.
    Provider(String),
    /// The link registry could not be read.
    Store,
}

impl JwtError {
    fn refusal(self) -> Refusal {
        match self {
            JwtError::Invalid(e) => Refusal::InvalidToken(e),
            JwtError::Provider(e) => Refusal::ProviderUnavailable(e),
            JwtError::Store => Refusal::StoreUnavailable,
        }
    }
}

/// The platform JWT a request carries, and (computed at most once per request) what it
/// verified to.
struct Platform<'a> {
    /// `None`: not configured, or no JWT. `Some(Err)`: two different ones.
    token: Option<Result<(&'a str, [u8; 32]), String>>,
    verdict: Option<Result<Arc<AccountPass>, JwtError>>,
}

impl<'a> Platform<'a> {
    fn of(app: &App, req: &'a RequestHeader) -> Self {
        let token = app
            .account_jwt
            .as_ref()
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
    async fn verdict(&mut self, app: &App) -> Option<Result<Arc<AccountPass>, JwtError>> {
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
    async fn keeps(&mut self, app: &App, passport: &Passport) -> Result<bool, Found> {
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
    async fn step_5(mut self, app: &App, stale_cookie: bool) -> Found {
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

/// Identifies the sender of `req`: bearer token first (when enabled), then the session
/// (which, when its account came from the platform's JWT, must still agree with it), then
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
                Ok(true) => match refresh_bounded(app, &id).await {
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
    let passport = Passport::new(&app.rules(), proof);
    match (&record.account_jwt, &record.account) {
        (Some(binding), Some(account)) => passport.following(FollowsJwt {
            // A hash that does not parse never matches: every JWT is then verified.
            sha256: from_hex(&binding.sha256).unwrap_or([0; 32]),
            valid_until: binding.valid_until,
            account_key: account.key(),
        }),
        _ => passport,
    }
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
                sessions
                    .destroy(id, Some(record))
                    .await
                    .map_err(|_| Refusal::StoreUnavailable)?;
            }
            Ok(false)
        }
        Err(Found::Unavailable(r)) => Err(r),
        Err(_) => Err(Refusal::Unauthenticated),
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
    match sessions.load(&id).await {
        Ok(Some(record))
            if record.account_jwt.as_ref() == Some(&binding)
                && sso_key(record.sso.as_ref()) == sso_key(pass.sso.as_ref()) =>
        {
            return Ok(Some((id, record)))
        }
        Ok(_) => {}
        Err(_) => return Err(Refusal::StoreUnavailable),
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
        .map_err(|_| Refusal::StoreUnavailable)
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
        .account_jwt
        .as_ref()
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
    let sso = match &app.registry {
        Some(registry) => registry
            .by_account(&account.key())
            .await
            .map_err(|_| JwtError::Store)?
            .map(|l| l.sso),
        None => None,
    };
    let proof = Proof {
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
    Found::Passport(Arc::new(Passport::new(&app.rules(), proof)))
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
/// verified-token cache), an account JWT's from the remembered JWT.
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
        (Via::AccountJwt, _, _) => match Platform::of(app, req).verdict(app).await {
            Some(Ok(pass)) => Ok((pass.sso.clone(), Some(pass.account.clone()))),
            Some(Err(e)) => Err(e.refusal()),
            None => Err(Refusal::Unauthenticated),
        },
        _ => Err(Refusal::Unauthenticated),
    }
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

/// How long the request that claimed a refresh waits for it at most. A provider answers a
/// refresh in milliseconds; one that hangs (down, overloaded) would otherwise hold that
/// request for the provider's whole `http_timeout`, once per session and backoff.
const REFRESH_WAIT: Duration = Duration::from_millis(500);

/// [`refresh`] in a task of its own when the server's state can be shared with one: the
/// request waits for it [`REFRESH_WAIT`] at most, then goes on with the session's current
/// tokens (`None`) while the refresh finishes, succeeds or backs off without it.
async fn refresh_bounded(
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
    let record = match sessions.load(id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(Refreshed::Ended),
        Err(_) => return Err(Refusal::StoreUnavailable),
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
                Err(_) => return Err(Refusal::StoreUnavailable),
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
    let mut record = match sessions.load(id).await {
        Ok(record) => record,
        Err(_) => return Err(Refusal::StoreUnavailable),
    };
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
        record = sessions
            .load(id)
            .await
            .map_err(|_| Refusal::StoreUnavailable)?;
    }
    Ok(record)
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

    fn jwt_app() -> App {
        let config = Config::parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [sso]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nhttp_timeout = \"200ms\"\n\
             [account]\nsource = \"jwt\"\ncookie = \"pjwt\"\nissuer = \"http://127.0.0.1:1\"\n\
             audience = \"x\"\njwks_url = \"http://127.0.0.1:1/jwks\"\nhttp_timeout = \"200ms\"\n\
             [session]\nstore = \"memory\"\n\
             cookie_secret = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        App::new(config).unwrap()
    }

    fn request(cookie: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(cookie) = cookie {
            req.insert_header("cookie", cookie).unwrap();
        }
        req
    }

    #[tokio::test]
    async fn a_session_following_a_jwt_checks_it_by_hash_and_verifies_only_a_changed_one() {
        let app = jwt_app();
        let account = Identity::sample("http://127.0.0.1:1", "acct");
        let follows = |valid_until| FollowsJwt {
            sha256: Sha256::digest(b"jwt-one").into(),
            valid_until,
            account_key: account.key(),
        };
        let passport = Passport::sample(None, Some(&account)).following(follows(now() + 60));
        // The same JWT, still valid: kept for a hash, nothing verified (the JWKS is
        // unreachable, so any verification would fail as unavailable).
        let same = request(Some("pjwt=jwt-one"));
        assert!(matches!(
            Platform::of(&app, &same).keeps(&app, &passport).await,
            Ok(true)
        ));
        // No JWT, or two different ones: the session's account is not used.
        for req in [request(None), request(Some("pjwt=jwt-one; pjwt=jwt-two"))] {
            assert!(matches!(
                Platform::of(&app, &req).keeps(&app, &passport).await,
                Ok(false)
            ));
        }
        // Another JWT, or the same one past its validity: verified again.
        let expired = Passport::sample(None, Some(&account)).following(follows(now() - 1));
        for (req, passport) in [
            (request(Some("pjwt=jwt-two")), &passport),
            (request(Some("pjwt=jwt-one")), &expired),
        ] {
            let kept = Platform::of(&app, &req).keeps(&app, passport).await;
            assert!(
                matches!(kept, Ok(false) | Err(Found::Unavailable(_))),
                "{kept:?}"
            );
        }
        // A passport that follows nothing is kept whatever the request carries.
        let plain = Passport::sample(None, Some(&account));
        assert!(matches!(
            Platform::of(&app, &request(None)).keeps(&app, &plain).await,
            Ok(true)
        ));
    }

    #[test]
    fn hashes_go_to_hex_and_back() {
        let digest: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(from_hex(&to_hex(&digest)), Some(digest));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }

    #[tokio::test]
    async fn no_token_cache_without_a_session_cache() {
        assert!(app("0s").verified_tokens.is_none());
    }
}
