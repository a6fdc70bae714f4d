//! Sessions and login flows: what a browser's cookie stands for.
//!
//! A session record lives in the store under `session:{id}`, sealed (see [`seal`]) and
//! expiring after `session.ttl`; the cookie carries only the tagged id (see [`cookie`]). A
//! login flow's state (PKCE verifier, nonce, `rd`) lives in a sealed cookie of its own for
//! at most ten minutes (see [`flow`]): an anonymous sign-in writes nothing to the store.
//! A request carrying two cookies of one of linkgate's names is never resolved by picking
//! one (a sibling subdomain or a plain-HTTP man in the middle may have planted the other):
//! it counts as carrying none. This module never decides who may pass: it only loads, saves
//! and forgets.

pub mod cache;
pub mod clock;
pub mod cookie;
pub mod flow;
pub mod keys;
pub mod seal;
mod signed_out;
mod unsaved;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};

use crate::config::{SameSite, Session as SessionConfig};
use crate::oidc::{Identity, Tokens};
use crate::passport::Passport;
use crate::store::{keys as store_keys, Store, StoreError};
use cookie::{OpaqueId, Purpose};
use keys::Keys;

/// How long a login may take from `start` to `callback`.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// What a session knows: the SSO identity, the cloud account, or both (linked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The SSO (Magento.com) identity, once signed in there.
    #[serde(default)]
    pub sso: Option<Identity>,
    /// The cloud account, once known (its own sign-in, an account JWT, or the link).
    #[serde(default)]
    pub account: Option<Identity>,
    /// The SSO tokens (absent for a session built from a link record or an account JWT).
    #[serde(default)]
    pub tokens: Option<Tokens>,
    /// Unix seconds of the sign-in.
    pub created_at: i64,
    /// Unix seconds when the session ends.
    pub expires_at: i64,
    /// Set when `account` came from the platform's account JWT (`[account] source = "jwt"`):
    /// the session then follows that JWT. Every request compares the JWT it carries with this
    /// one; another account, no JWT, or an invalid or expired one ends the session (see
    /// `proxy::identify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_jwt: Option<JwtBinding>,
    /// The accounts provider's id_token, when this browser signed in there through linkgate
    /// (`[account] source = "oauth2"`): sign-out ends that provider's session too, with it
    /// as `id_token_hint` (src/sign_out_chain.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id_token: Option<String>,
}

/// The platform JWT a session's account identity came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtBinding {
    /// Lower-case hex SHA-256 of the JWT that was verified (a request carrying exactly this
    /// JWT needs no verification).
    pub sha256: String,
    /// Unix seconds until which that JWT verifies (its `exp` plus the configured leeway).
    pub valid_until: i64,
}

/// A verified platform account JWT, remembered by the SHA-256 of the token (see
/// [`Sessions::account_jwts`]): who it names, the link found for that account when it was
/// verified, and the passport a request carrying it gets (no session is written for it).
#[derive(Debug)]
pub struct AccountPass {
    /// The cloud account the JWT names.
    pub account: Identity,
    /// The Magento.com identity linked to it, if any.
    pub sso: Option<Identity>,
    /// Unix seconds until which the JWT verifies (`exp` plus the leeway).
    pub valid_until: i64,
    /// What a request carrying this JWT (and no session) gets.
    pub passport: Arc<Passport>,
}

/// Why a sign-in was started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Intent {
    /// Sign in.
    #[default]
    Login,
    /// Sign in to connect the session's other identity (Method 1 and 2).
    Connect,
}

pub use clock::now;
pub use cookie::{all_cookies, cookies};
pub use flow::Flow;

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

/// The channel on which instances tell each other which cached sessions to drop.
pub const INVALIDATION_CHANNEL: &str = "invalidate";

/// Sessions over a store, with an in-process cache in front of it.
#[derive(Clone)]
pub struct Sessions {
    keys: Keys,
    store: Store,
    config: SessionConfig,
    /// Recently used sessions: a hit costs no store round trip. Entries live at most
    /// `session.cache_ttl` and are dropped at once when any instance changes the session.
    /// An entry is the session's passport (a few hundred bytes: header values and verdicts,
    /// no record, no token the configuration does not forward).
    cache: Option<Arc<cache::SessionCache<Passport>>>,
    /// Counts invalidations (this instance's and the others'). A miss inserts what it read
    /// only if none happened meanwhile, so a sign-out racing a read cannot leave the ended
    /// session cached.
    generation: Arc<AtomicU64>,
    /// This process, so that it ignores its own invalidation messages.
    instance: String,
    /// Platform account JWTs verified recently, by SHA-256 of the token, each until its
    /// `exp` (plus leeway) and for at most `cache_ttl`: a request repeating a JWT costs a
    /// hash and a lookup, no signature check and no store command. Emptied on every
    /// instance whenever a link is made or removed (an entry holds the link it found).
    account_jwts: Option<Arc<cache::SessionCache<AccountPass, [u8; 32]>>>,
    /// Counts link changes (this instance's and the others'): a JWT verified while one
    /// happened is not remembered, as for sessions.
    links_generation: Arc<AtomicU64>,
    /// Sessions whose refresh a request of this process has claimed, or whose failed
    /// refresh backs off: id to the unix second until which no other request here tries.
    refreshes: Arc<std::sync::Mutex<std::collections::HashMap<OpaqueId, i64>>>,
    /// Refreshed tokens the store would not take, kept here until saved (see `unsaved`).
    unsaved: unsaved::UnsavedMap,
}

/// The invalidation message (after `{instance}:`) that says a link was made or removed.
const LINKS_CHANGED: &str = "links";

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("store", &self.store)
            .field("cache", &self.cache)
            .finish()
    }
}

// === impl Sessions ===

impl Sessions {
    /// Sessions under the configured cookie secret.
    pub fn new(secret: &[u8; 32], store: Store, config: SessionConfig) -> Self {
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            Arc::new(cache::SessionCache::new(
                config.cache_capacity,
                config.cache_ttl,
            ))
        });
        let account_jwts = (!config.cache_ttl.is_zero()).then(|| {
            Arc::new(cache::SessionCache::new(
                config.cache_capacity,
                config.cache_ttl,
            ))
        });
        Self {
            keys: Keys::derive(secret),
            store,
            config,
            cache,
            generation: Arc::new(AtomicU64::new(0)),
            instance: OpaqueId::random().to_hex(),
            account_jwts,
            links_generation: Arc::new(AtomicU64::new(0)),
            refreshes: Arc::default(),
            unsaved: Arc::default(),
        }
    }

    /// Listens for other instances' invalidations and drops those sessions from the cache.
    /// Runs until the process ends; reconnects by itself. Each (re)subscription drops the
    /// whole cache, since messages may have been missed meanwhile. While the store is down
    /// nobody can sign out (that needs the store too), so cached sessions keep being served
    /// through an outage.
    pub async fn invalidation_listener(&self) {
        let Some(cache) = &self.cache else {
            return;
        };
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let store = self.store.clone();
            let listener = tokio::spawn(async move {
                let result = store.listen(INVALIDATION_CHANNEL, &tx).await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "session invalidation listener disconnected");
                }
            });
            // Messages may have been missed while (re)subscribing.
            self.forget_account_jwts();
            while let Some(message) = rx.recv().await {
                let from_here = message
                    .split_once(':')
                    .is_some_and(|(from, _)| from == self.instance);
                // This instance's own changes counted when they were made (`invalidate`): the
                // echo must not keep what it cached since (a refresh's new passport) out.
                if !from_here {
                    self.generation.fetch_add(1, Ordering::SeqCst);
                }
                match message.split_once(':') {
                    None => {
                        cache.clear();
                        self.forget_account_jwts();
                    }
                    Some((from, _)) if from == self.instance => {}
                    Some((_, LINKS_CHANGED)) => self.forget_account_jwts(),
                    Some((_, id)) => {
                        if let Some(id) = OpaqueId::from_hex(id) {
                            cache.remove(&id);
                        }
                    }
                }
            }
            listener.abort();
            self.generation.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Drops a session from this cache and tells the other instances to do the same.
    async fn invalidate(&self, id: &OpaqueId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.remove(id);
        }
        let message = format!("{}:{}", self.instance, id.to_hex());
        if let Err(e) = self.store.publish(INVALIDATION_CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not publish a session invalidation");
        }
    }

    /// The remembered account JWTs (none when `cache_ttl` is zero).
    pub fn account_jwts(&self) -> Option<&cache::SessionCache<AccountPass, [u8; 32]>> {
        self.account_jwts.as_deref()
    }

    /// The link generation, read before a lookup whose result is to be remembered.
    pub fn links_generation(&self) -> u64 {
        self.links_generation.load(Ordering::SeqCst)
    }

    fn forget_account_jwts(&self) {
        self.links_generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.account_jwts {
            cache.clear();
        }
    }

    /// A link was made or removed: the remembered account JWTs (which hold the link they
    /// found) are dropped here and on every other instance.
    pub async fn links_changed(&self) {
        self.forget_account_jwts();
        let message = format!("{}:{LINKS_CHANGED}", self.instance);
        if let Err(e) = self.store.publish(INVALIDATION_CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not publish a link change");
        }
    }

    /// The id of the session made from the platform JWT whose SHA-256 is `sha256`: derived
    /// from it under the cookie key, so that the same JWT always makes the same session (a
    /// client repeating a JWT overwrites one record instead of adding one per request), and
    /// nobody without the cookie secret can tell the id from the JWT.
    pub fn jwt_session_id(&self, sha256: &[u8; 32]) -> OpaqueId {
        use hmac::Mac;
        let mut mac = self.keys.cookie_mac();
        mac.update(b"jwt-session");
        mac.update(sha256);
        let tag = mac.finalize().into_bytes();
        let mut id = [0u8; 16];
        id.copy_from_slice(&tag[..16]);
        OpaqueId::from_bytes(id)
    }

    /// The store (readiness probe).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.config.cookie_name
    }

    /// The prefix of flow cookie names (`{cookie_name}_bind`, the browser-binding cookie of
    /// earlier versions): a flow cookie is `{cookie_name}_bind_{short state}`.
    fn flow_cookie_prefix(&self) -> String {
        format!("{}_bind", self.config.cookie_name)
    }

    /// The session id of a request, if it carries exactly one session cookie and its tag is
    /// valid. Two or more cookies of the name are refused, never tried in turn: which one a
    /// browser sends first is the planter's choice (a longer `Path`, an earlier creation).
    pub fn id_of(&self, req: &RequestHeader) -> Option<OpaqueId> {
        let value = only(cookies(req, &self.config.cookie_name))?;
        cookie::decode(&self.keys, Purpose::Session, value)
    }

    /// Whether the request carries a session cookie at all (valid or not).
    pub fn has_cookie(&self, req: &RequestHeader) -> bool {
        cookies(req, &self.config.cookie_name).next().is_some()
    }

    /// The flow of `state` that this request's flow cookie carries, with the cookie's name.
    /// `Err` names the cookie to clear when the request carries it but it cannot be used:
    /// twice (planted), forged, for another state, or expired. `Ok(None)` when the request
    /// does not carry it at all (another browser, or already used).
    pub fn flow_of(
        &self,
        req: &RequestHeader,
        state: &str,
    ) -> Result<Option<(String, Flow)>, FlowRefusal> {
        if !flow::is_state(state) {
            return Ok(None);
        }
        let name = flow::cookie_name(&self.flow_cookie_prefix(), state);
        let (first, twice) = {
            let mut values = cookies(req, &name);
            (values.next().map(str::to_owned), values.next().is_some())
        };
        let Some(value) = first else {
            return Ok(None);
        };
        if twice {
            return Err(FlowRefusal::Duplicate(name));
        }
        match Flow::open(&self.keys, &value, state) {
            Some(f) if !f.expired(flow::now_ms()) => Ok(Some((name, f))),
            Some(_) => Err(FlowRefusal::Expired(name)),
            None => Err(FlowRefusal::Invalid(name)),
        }
    }

    /// The name of the flow cookie of `state` when the request carries it (to clear it).
    pub fn carried_flow_cookie(&self, req: &RequestHeader, state: &str) -> Option<String> {
        if !flow::is_state(state) {
            return None;
        }
        let name = flow::cookie_name(&self.flow_cookie_prefix(), state);
        let carried = cookies(req, &name).next().is_some();
        carried.then_some(name)
    }

    /// `Set-Cookie` lines for a new flow of `state`: the flow's own cookie first, then a
    /// clearing line for each older flow cookie of this browser that must go to keep within
    /// [`flow::MAX_FLOWS`] and [`flow::BUDGET`] (unreadable ones first, then the oldest).
    /// `None` when the flow does not fit in a cookie.
    pub fn flow_cookies(&self, req: &RequestHeader, state: &str, f: &Flow) -> Option<Vec<String>> {
        let value = f.seal(&self.keys, state)?;
        let name = flow::cookie_name(&self.flow_cookie_prefix(), state);
        let prefix = format!("{}_", self.flow_cookie_prefix());
        let mut held: Vec<(i64, &str, usize)> = all_cookies(req)
            .filter(|(k, _)| k.starts_with(&prefix) && *k != name)
            .map(|(k, v)| {
                let expires = Flow::open_any(&self.keys, v)
                    .filter(|f| !f.expired(flow::now_ms()))
                    .map_or(i64::MIN, |f| f.expires_at_ms);
                (expires, k, k.len() + v.len())
            })
            .collect();
        held.sort_unstable();
        held.dedup_by(|a, b| a.1 == b.1);
        let mut total: usize =
            held.iter().map(|(_, _, n)| n).sum::<usize>() + name.len() + value.len();
        let mut lines = vec![format!(
            "{name}={value}{}",
            self.flow_attributes(flow_max_age())
        )];
        let mut kept = held.len();
        // At most a few clearing lines per answer: a client that sends hundreds of fake flow
        // cookies gets them cleared a few at a time, not an answer as large as its request.
        for (expires, old, size) in held.into_iter().take(MAX_FLOW_CLEARS) {
            if expires != i64::MIN && kept < flow::MAX_FLOWS && total <= flow::BUDGET {
                break;
            }
            lines.push(self.clear_flow_cookie(old));
            kept -= 1;
            total -= size;
        }
        Some(lines)
    }

    /// `Set-Cookie` that removes the flow cookie `name`.
    pub fn clear_flow_cookie(&self, name: &str) -> String {
        format!("{name}={}", self.flow_attributes(0))
    }

    /// Flow cookies are host-only whatever `cookie_domain` says (a flow belongs to the host
    /// that started it), `Path=/`, `Secure` with `cookie_secure`, and `SameSite=Lax` so that
    /// the provider's redirect back (a top-level GET navigation) carries them.
    fn flow_attributes(&self, max_age: i64) -> String {
        let mut attrs = String::from("; Path=/; HttpOnly; SameSite=Lax");
        if self.config.cookie_secure {
            attrs.push_str("; Secure");
        }
        attrs.push_str(&format!("; Max-Age={max_age}"));
        attrs
    }

    /// Marks the flow of `state` used, after its code was exchanged: `false` when it
    /// already was (a replay). The mark expires with the flow. The only store write of a
    /// sign-in before its session, and it comes after the provider vouched for the code.
    pub async fn mark_flow_used(&self, state: &str, f: &Flow) -> Result<bool, StoreError> {
        let remaining = (f.expires_at_ms - flow::now_ms()).clamp(1, FLOW_TTL.as_millis() as i64);
        self.store
            .try_lock(
                &store_keys::flow(state),
                "used",
                Duration::from_millis(remaining as u64),
            )
            .await
    }

    /// What a request of session `id` carries: from the cache (no store round trip), or
    /// read from the store (one `GET`) and turned into a passport by `passport`, then cached.
    /// The passport's `expires_at` and `refresh_at` are the session's, set here: they send
    /// the next request back to the store. `None` when the session does not exist, cannot be
    /// opened, or has expired.
    pub async fn resident(
        &self,
        id: &OpaqueId,
        passport: impl FnOnce(SessionRecord) -> Passport,
    ) -> Result<Option<Arc<Passport>>, StoreError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            let metrics = self.store.metrics();
            if let Some(resident) = cache.get(id) {
                if resident.expires_at > now() {
                    metrics.session_cache_hit.inc();
                    return Ok(Some(resident));
                }
                cache.remove(id);
            }
            metrics.session_cache_miss.inc();
        }
        let Some(record) = self.load(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.remember(id, record, generation, passport)))
    }

    /// The change counter, read before a store read whose result [`Sessions::remember`]
    /// is to cache.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The passport of a record read from the store, cached (replacing what was) unless a
    /// change happened since `generation` was read before the read.
    pub fn remember(
        &self,
        id: &OpaqueId,
        record: SessionRecord,
        generation: u64,
        passport: impl FnOnce(SessionRecord) -> Passport,
    ) -> Arc<Passport> {
        let (expires_at, refresh_at) = (record.expires_at, self.refresh_at(&record));
        let mut resident = passport(record);
        resident.expires_at = expires_at;
        resident.refresh_at = refresh_at.unwrap_or(i64::MAX);
        let resident = Arc::new(resident);
        if let Some(cache) = &self.cache {
            if self.generation.load(Ordering::SeqCst) == generation {
                cache.insert(*id, resident.clone());
            }
        }
        resident
    }

    /// Writes a refreshed session record back and caches its passport here at once (built
    /// by `passport`), so that the requests after a refresh need no store read on this
    /// instance; the other instances drop theirs, as after any save. Returns the passport.
    pub async fn save_refreshed(
        &self,
        id: &OpaqueId,
        record: SessionRecord,
        passport: impl FnOnce(SessionRecord) -> Passport,
    ) -> Result<Arc<Passport>, StoreError> {
        self.write(id, &record).await?;
        let resident = self.cache_refreshed(id, record, passport);
        let message = format!("{}:{}", self.instance, id.to_hex());
        if let Err(e) = self.store.publish(INVALIDATION_CHANNEL, &message).await {
            tracing::warn!(error = %e, "could not publish a session invalidation");
        }
        Ok(resident)
    }

    /// Caches the passport of a refreshed record here (replacing the entry) and returns it.
    fn cache_refreshed(
        &self,
        id: &OpaqueId,
        record: SessionRecord,
        passport: impl FnOnce(SessionRecord) -> Passport,
    ) -> Arc<Passport> {
        let (expires_at, refresh_at) = (record.expires_at, self.refresh_at(&record));
        let mut resident = passport(record);
        resident.expires_at = expires_at;
        resident.refresh_at = refresh_at.unwrap_or(i64::MAX);
        let resident = Arc::new(resident);
        // A read that began before the write must not cache the old record after this one:
        // the generation moves first. The entry is replaced, never removed, so that the
        // requests meanwhile hit the old passport or the new one, not the store.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(cache) = &self.cache {
            cache.insert(*id, resident.clone());
        }
        resident
    }

    /// Loads a whole session record (tokens included) from the store; `None` when it does
    /// not exist, cannot be opened, or has expired. Always one store round trip: the cache
    /// keeps passports, not records, and the endpoints that need a record (sign-out, the
    /// account page, a refresh) are not the hot path.
    ///
    /// Refreshed tokens this instance could not save yet (see `unsaved`) are the record's:
    /// put into the stored record while it still holds the tokens they replaced, or served
    /// alone while the store fails.
    pub async fn load(&self, id: &OpaqueId) -> Result<Option<SessionRecord>, StoreError> {
        let stored = self.load_stored(id).await;
        self.with_unsaved(id, stored)
    }

    /// The session record as stored (one `GET`).
    async fn load_stored(&self, id: &OpaqueId) -> Result<Option<SessionRecord>, StoreError> {
        let key = store_keys::session(&id.to_hex());
        let Some(sealed) = self.store.get(&key).await? else {
            return Ok(None);
        };
        Ok(seal::open(&self.keys, key.as_bytes(), &sealed)
            .and_then(|plain| serde_json::from_slice::<SessionRecord>(&plain).ok())
            .filter(|r| r.expires_at > now()))
    }

    /// Stores a new session and returns its id. The record expires with the session; a
    /// session with an SSO identity is indexed under it (to end them all at once).
    pub async fn create(
        &self,
        sso: Option<Identity>,
        account: Option<Identity>,
        tokens: Option<Tokens>,
    ) -> Result<(OpaqueId, SessionRecord), StoreError> {
        self.create_as(OpaqueId::random(), sso, account, tokens, None)
            .await
    }

    /// Stores a session under `id` (a fresh random id, or the id of a platform JWT), with
    /// the platform JWT its account came from, if it did.
    pub async fn create_as(
        &self,
        id: OpaqueId,
        sso: Option<Identity>,
        account: Option<Identity>,
        tokens: Option<Tokens>,
        account_jwt: Option<JwtBinding>,
    ) -> Result<(OpaqueId, SessionRecord), StoreError> {
        self.create_with(id, sso, account, tokens, account_jwt, None)
            .await
    }

    /// [`Sessions::create_as`], with the accounts provider's id_token of the account (kept
    /// for its sign-out).
    pub async fn create_with(
        &self,
        id: OpaqueId,
        sso: Option<Identity>,
        account: Option<Identity>,
        tokens: Option<Tokens>,
        account_jwt: Option<JwtBinding>,
        account_id_token: Option<String>,
    ) -> Result<(OpaqueId, SessionRecord), StoreError> {
        let created_at = now();
        let account_jwt = account.as_ref().and(account_jwt);
        let account_id_token = account.as_ref().and(account_id_token);
        let record = SessionRecord {
            sso,
            account,
            tokens,
            created_at,
            expires_at: created_at + self.ttl_secs(),
            account_jwt,
            account_id_token,
        };
        if let Some(sso) = &record.sso {
            // Index first: a failure between the two leaves an index entry without a
            // session (harmless), never a session that sign-out-everywhere would miss.
            self.store
                .set_add(
                    &store_keys::sso_sessions(&sso.key()),
                    &id.to_hex(),
                    self.config.ttl,
                )
                .await?;
        }
        self.save(&id, &record).await?;
        Ok((id, record))
    }

    /// Seals a short note into a URL-safe string (XChaCha20-Poly1305 under the record key,
    /// named by `purpose`): the details of a problem page travel in its own URL, so the page
    /// survives a reload without a store write, and only this deployment can make one.
    pub fn seal_note(&self, purpose: &str, plaintext: &[u8]) -> String {
        use base64::Engine as _;
        let sealed = seal::seal(&self.keys, purpose.as_bytes(), plaintext);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
    }

    /// Opens a note made by [`Sessions::seal_note`] for `purpose`; `None` if altered.
    pub fn open_note(&self, purpose: &str, sealed: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()?;
        seal::open(&self.keys, purpose.as_bytes(), &bytes)
    }

    /// The CSRF token of forms shown to the session `id`.
    pub fn csrf_token(&self, id: &OpaqueId) -> String {
        cookie::encode(&self.keys, Purpose::Csrf, id)
    }

    /// Whether `token` is the CSRF token of session `id`.
    pub fn csrf_ok(&self, id: &OpaqueId, token: &str) -> bool {
        cookie::decode(&self.keys, Purpose::Csrf, token).is_some_and(|t| t == *id)
    }

    /// Writes a session record back (after a refresh), keeping its expiry.
    pub async fn save(&self, id: &OpaqueId, record: &SessionRecord) -> Result<(), StoreError> {
        self.write(id, record).await?;
        self.invalidate(id).await;
        Ok(())
    }

    /// Puts a session record in the store (no cache change, no message).
    async fn write(&self, id: &OpaqueId, record: &SessionRecord) -> Result<(), StoreError> {
        let key = store_keys::session(&id.to_hex());
        let plain = serde_json::to_vec(record).unwrap_or_default();
        let sealed = seal::seal(&self.keys, key.as_bytes(), &plain);
        let remaining = (record.expires_at - now()).max(1) as u64;
        self.store
            .put(&key, &sealed, Duration::from_secs(remaining))
            .await
    }

    /// Deletes a session (and drops it from every instance's cache).
    pub async fn destroy(
        &self,
        id: &OpaqueId,
        record: Option<&SessionRecord>,
    ) -> Result<(), StoreError> {
        self.store
            .delete(&[
                &store_keys::session(&id.to_hex()),
                &store_keys::refresh_lock(&id.to_hex()),
            ])
            .await?;
        self.forget_unsaved(id);
        self.invalidate(id).await;
        if let Some(sso) = record.and_then(|r| r.sso.as_ref()) {
            self.store
                .set_remove(&store_keys::sso_sessions(&sso.key()), &id.to_hex())
                .await?;
        }
        Ok(())
    }

    /// Ends every session of an SSO identity (after its link was removed), and drops the
    /// remembered account JWTs everywhere (they hold the link they found); returns how many
    /// sessions there were.
    pub async fn destroy_all_for(&self, sso_key: &str) -> Result<usize, StoreError> {
        self.links_changed().await;
        let index = store_keys::sso_sessions(sso_key);
        let ids = self.store.set_members(&index).await?;
        for id in &ids {
            self.store
                .delete(&[&store_keys::session(id), &store_keys::refresh_lock(id)])
                .await?;
            if let Some(id) = OpaqueId::from_hex(id) {
                self.forget_unsaved(&id);
                self.invalidate(&id).await;
            }
        }
        self.store.delete(&[&index]).await?;
        Ok(ids.len())
    }

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

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.config.ttl.as_secs()).unwrap_or(i64::MAX / 4)
    }

    fn attributes(&self, max_age: Option<i64>) -> String {
        let mut attrs = String::from("; Path=/; HttpOnly");
        if self.config.cookie_secure {
            attrs.push_str("; Secure");
        }
        attrs.push_str(match self.config.cookie_samesite {
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
            SameSite::None => "; SameSite=None",
        });
        if let Some(domain) = &self.config.cookie_domain {
            attrs.push_str("; Domain=");
            attrs.push_str(domain);
        }
        if let Some(age) = max_age {
            attrs.push_str(&format!("; Max-Age={age}"));
        }
        attrs
    }

    /// `Set-Cookie` for a session.
    pub fn session_cookie(&self, id: &OpaqueId) -> String {
        format!(
            "{}={}{}",
            self.config.cookie_name,
            cookie::encode(&self.keys, Purpose::Session, id),
            self.attributes(Some(self.ttl_secs()))
        )
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_session_cookie(&self) -> String {
        format!("{}={}", self.config.cookie_name, self.attributes(Some(0)))
    }
}

/// Why the flow cookie of a callback cannot be used; each names the cookie to clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowRefusal {
    /// The request carries two cookies of the flow's name.
    Duplicate(String),
    /// Forged, altered, sealed under another secret or for another state.
    Invalid(String),
    /// Older than ten minutes.
    Expired(String),
}

impl FlowRefusal {
    /// The name of the cookie to clear.
    pub fn cookie(&self) -> &str {
        match self {
            FlowRefusal::Duplicate(n) | FlowRefusal::Invalid(n) | FlowRefusal::Expired(n) => n,
        }
    }
}

/// The most flow cookies one answer clears.
const MAX_FLOW_CLEARS: usize = 8;

fn flow_max_age() -> i64 {
    FLOW_TTL.as_secs() as i64
}

/// The single item of `items`; `None` for none or several.
fn only<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::passport::Field;
    use std::sync::atomic::AtomicUsize;

    const SECRET: &str = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng";

    fn sessions(cache_ttl: &str) -> (Sessions, Arc<Metrics>) {
        let config = Config::parse(
            &format!(
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                 [session]\nstore = \"memory\"\ncookie_secret = \"{SECRET}\"\n\
                 cache_ttl = \"{cache_ttl}\"\nrefresh_before = \"60s\"\n"
            ),
            "test.toml",
            &|_| None,
        )
        .unwrap();
        let app = App::new(config).unwrap();
        (app.sessions.unwrap(), app.metrics)
    }

    fn identity(sub: &str) -> Identity {
        Identity::sample("https://sso.example", sub)
    }

    fn passport(record: SessionRecord) -> Passport {
        Passport::sample(record.sso.as_ref(), record.account.as_ref())
    }

    /// Reads session `id` through the cache, counting the passports built (store reads).
    async fn read_counted(
        sessions: &Sessions,
        id: &OpaqueId,
        built: &AtomicUsize,
    ) -> Arc<Passport> {
        let resident = sessions.resident(id, |r| {
            built.fetch_add(1, Ordering::SeqCst);
            passport(r)
        });
        resident.await.unwrap().unwrap()
    }

    fn tokens(expires_in: i64) -> Tokens {
        Tokens {
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            id_token: Some("it".into()),
            expires_at: Some(now() + expires_in),
            issued_at: None,
        }
    }

    #[tokio::test]
    async fn a_miss_reads_the_store_once_then_every_request_hits() {
        let (sessions, metrics) = sessions("30s");
        let (id, _) = sessions
            .create(Some(identity("u1")), None, Some(tokens(3600)))
            .await
            .unwrap();
        let built = AtomicUsize::new(0);
        for _ in 0..5 {
            let resident = read_counted(&sessions, &id, &built).await;
            let user = resident.headers.get(Field::User).unwrap();
            assert_eq!(user, "u1");
            assert!(!resident.refresh_due(now()));
        }
        assert_eq!(
            built.load(Ordering::SeqCst),
            1,
            "one passport per cache entry"
        );
        assert_eq!(metrics.session_cache_miss.get(), 1);
        assert_eq!(metrics.session_cache_hit.get(), 4);
    }

    #[tokio::test]
    async fn a_session_keeps_the_platform_jwt_its_account_came_from() {
        let (sessions, _) = sessions("30s");
        let binding = JwtBinding {
            sha256: "ab".repeat(32),
            valid_until: now() + 300,
        };
        let id = sessions.jwt_session_id(&[1; 32]);
        let (_, record) = sessions
            .create_as(
                id,
                None,
                Some(identity("acct")),
                None,
                Some(binding.clone()),
            )
            .await
            .unwrap();
        assert_eq!(record.account_jwt.as_ref(), Some(&binding));
        let loaded = sessions.load(&id).await.unwrap().unwrap();
        assert_eq!(loaded.account_jwt, Some(binding.clone()));
        // No account, nothing to follow.
        let (_, record) = sessions
            .create_as(
                OpaqueId::random(),
                Some(identity("s")),
                None,
                None,
                Some(binding),
            )
            .await
            .unwrap();
        assert_eq!(record.account_jwt, None);
        // Records written before the field existed read as following nothing.
        let old: SessionRecord =
            serde_json::from_str(r#"{"account":null,"created_at":1,"expires_at":2}"#).unwrap();
        assert_eq!(old.account_jwt, None);
    }

    #[tokio::test]
    async fn a_jwt_session_id_is_one_per_jwt_and_secret() {
        let (a, _) = sessions("30s");
        let (b, _) = sessions("30s");
        assert_eq!(a.jwt_session_id(&[1; 32]), b.jwt_session_id(&[1; 32]));
        assert_ne!(a.jwt_session_id(&[1; 32]), a.jwt_session_id(&[2; 32]));
        let other = Sessions::new(&[9; 32], a.store.clone(), a.config.clone());
        assert_ne!(a.jwt_session_id(&[1; 32]), other.jwt_session_id(&[1; 32]));
    }

    #[tokio::test]
    async fn a_link_change_forgets_every_remembered_jwt() {
        let (sessions, _) = sessions("30s");
        let cache = sessions.account_jwts().unwrap();
        let pass = AccountPass {
            account: identity("acct"),
            sso: None,
            valid_until: now() + 60,
            passport: Arc::new(Passport::sample(None, Some(&identity("acct")))),
        };
        cache.insert([3; 32], Arc::new(pass));
        let generation = sessions.links_generation();
        sessions.links_changed().await;
        assert!(cache.get(&[3; 32]).is_none());
        assert_ne!(sessions.links_generation(), generation);
        let (no_cache, _) = self::sessions("0s");
        assert!(no_cache.account_jwts().is_none());
    }

    #[tokio::test]
    async fn without_a_cache_every_request_reads_the_store() {
        let (sessions, metrics) = sessions("0s");
        let (id, _) = sessions
            .create(Some(identity("u1")), None, None)
            .await
            .unwrap();
        let built = AtomicUsize::new(0);
        for _ in 0..3 {
            read_counted(&sessions, &id, &built).await;
        }
        assert_eq!(built.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.session_cache_hit.get(), 0);
    }

    #[tokio::test]
    async fn an_invalidation_during_a_read_keeps_that_read_out_of_the_cache() {
        let (sessions, _) = sessions("30s");
        let (id, _) = sessions
            .create(Some(identity("u1")), None, None)
            .await
            .unwrap();
        // A sign-out (here or on another instance) lands between the store read and the
        // insert: what was read may be the ended session, so it must not be cached.
        let resident = sessions
            .resident(&id, |r| {
                sessions.generation.fetch_add(1, Ordering::SeqCst);
                passport(r)
            })
            .await
            .unwrap();
        assert!(resident.is_some(), "this request still gets what it read");
        let cache = sessions.cache.as_ref().unwrap();
        assert!(cache.get(&id).is_none(), "nothing cached");
        // The next read, undisturbed, is cached.
        sessions.resident(&id, passport).await.unwrap().unwrap();
        assert!(cache.get(&id).is_some());
    }

    #[tokio::test]
    async fn a_destroyed_session_is_gone_from_the_cache_at_once() {
        let (sessions, _) = sessions("10m");
        let (id, record) = sessions
            .create(Some(identity("u1")), None, None)
            .await
            .unwrap();
        sessions.resident(&id, passport).await.unwrap().unwrap();
        sessions.destroy(&id, Some(&record)).await.unwrap();
        assert!(sessions.resident(&id, passport).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cached_session_is_due_for_refresh_refresh_before_its_token_expires() {
        let (sessions, _) = sessions("30s");
        let (fresh, _) = sessions
            .create(Some(identity("u1")), None, Some(tokens(3600)))
            .await
            .unwrap();
        let (due, _) = sessions
            .create(Some(identity("u2")), None, Some(tokens(30)))
            .await
            .unwrap();
        let mut no_refresh_token = tokens(30);
        no_refresh_token.refresh_token = None;
        let (never, _) = sessions
            .create(Some(identity("u3")), None, Some(no_refresh_token))
            .await
            .unwrap();
        let at = |id| {
            let sessions = sessions.clone();
            async move { sessions.resident(&id, passport).await.unwrap().unwrap() }
        };
        let fresh = at(fresh).await;
        assert!(!fresh.refresh_due(now()));
        assert!(fresh.refresh_due(now() + 3600 - 60));
        assert!(
            at(due).await.refresh_due(now()),
            "30 s left, refresh_before = 60 s"
        );
        assert_eq!(
            at(never).await.refresh_at,
            i64::MAX,
            "nothing to refresh with"
        );
    }

    #[test]
    fn a_refresh_waits_for_half_the_tokens_lifetime_and_the_floor() {
        let iat = 1_000_000;
        // 5-minute tokens under refresh_before = 5m: not due at once, but after 2.5 minutes.
        assert_eq!(refresh_at(Some(iat), iat + 300, 300), Some(iat + 150));
        // 1-hour tokens: refresh_before ahead of the expiry.
        assert_eq!(refresh_at(Some(iat), iat + 3600, 60), Some(iat + 3540));
        // 24-hour tokens (IMS) under the default.
        assert_eq!(refresh_at(Some(iat), iat + 86_400, 300), Some(iat + 86_100));
        // Short tokens: the floor, then the expiry bound it.
        assert_eq!(
            refresh_at(Some(iat), iat + 8, 6),
            Some(iat + MIN_REFRESH_INTERVAL)
        );
        assert_eq!(refresh_at(Some(iat), iat + 3, 1), Some(iat + 3));
        // Tokens stored without their issue time: refresh_before alone, as before.
        assert_eq!(refresh_at(None, iat + 300, 300), Some(iat));
        // The backoff after a failure: a tenth of the lifetime, 5 s to a minute.
        assert_eq!(refresh_backoff(Some(iat), Some(iat + 300)).as_secs(), 30);
        assert_eq!(refresh_backoff(Some(iat), Some(iat + 8)).as_secs(), 5);
        assert_eq!(refresh_backoff(Some(iat), Some(iat + 86_400)).as_secs(), 60);
        assert_eq!(refresh_backoff(None, None).as_secs(), 30);
    }

    #[tokio::test]
    async fn one_request_claims_a_refresh_and_a_failure_backs_off() {
        let (sessions, _) = sessions("30s");
        let id = OpaqueId::random();
        assert!(sessions.claim_refresh(&id), "the first request refreshes");
        assert!(
            !sessions.claim_refresh(&id),
            "the others are served meanwhile"
        );
        sessions.refresh_done(&id, None);
        assert!(
            sessions.claim_refresh(&id),
            "done: the next due request may"
        );
        sessions.refresh_done(&id, Some(now() + 60));
        assert!(!sessions.claim_refresh(&id), "backing off");
        sessions.refresh_done(&id, Some(now() - 1));
        assert!(sessions.claim_refresh(&id), "the backoff is over");
        // A session with tokens that carry their issue time follows the half-life rule.
        let mut t = tokens(300);
        t.issued_at = Some(now());
        let (id, record) = sessions
            .create(Some(identity("u9")), None, Some(t))
            .await
            .unwrap();
        assert!(
            !sessions.needs_refresh(&record),
            "refresh_before = 60 s, 300 s tokens"
        );
        let resident = sessions.resident(&id, passport).await.unwrap().unwrap();
        assert_eq!(resident.refresh_at, record.created_at + 240);
    }
}
