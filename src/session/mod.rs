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
mod flow_cookies;
pub mod keys;
mod record;
mod refresh;
mod resident;
pub mod seal;
mod signed_out;
mod unsaved;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;

use crate::config::{SameSite, Session as SessionConfig};
use crate::oidc::{Identity, Tokens};
use crate::passport::Passport;
use crate::store::{keys as store_keys, Store, StoreError};
use cookie::{OpaqueId, Purpose};
use keys::Keys;

pub use clock::now;
pub use cookie::{all_cookies, cookies};
pub use flow::Flow;
pub use flow_cookies::{FlowRefusal, FLOW_TTL};
pub use record::{AccountPass, Intent, JwtBinding, SessionRecord};
pub use refresh::{refresh_at, refresh_backoff, MIN_REFRESH_INTERVAL, REFRESH_CLAIM};
pub use resident::INVALIDATION_CHANNEL;

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
            Arc::new(cache::SessionCache::with_grace(
                config.cache_capacity,
                config.cache_ttl,
                config.cache_stale_if_error,
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

/// The single item of `items`; `None` for none or several.
fn only<T>(mut items: impl Iterator<Item = T>) -> Option<T> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests;
