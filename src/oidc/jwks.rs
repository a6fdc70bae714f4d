//! A provider's signing keys (JWKS), cached.
//!
//! Keys are fetched on first use and kept. A token signed with an unknown `kid` triggers a
//! refetch, one at a time (single flight): the first unknown `kid` after a scheduled load may
//! refetch at once, so a key rotation at the provider never breaks a login, but a second
//! refetch triggered by unknown `kid`s waits out a cooldown, so a flood of forged `kid`s
//! cannot turn linkgate into a load generator against the provider. A failed fetch arms
//! the same cooldown: while the provider's JWKS endpoint fails, tokens (whatever their
//! `kid`) are refused without asking it again until [`COOLDOWN`] has passed. Keys older than
//! [`MAX_AGE`] are refreshed on next use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::DecodingKey;
use url::Url;

/// How long a fetched key set is used before it is fetched again.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// The least time between two refetches caused by unknown `kid`s.
pub const COOLDOWN: Duration = Duration::from_secs(10);

/// One usable key.
#[derive(Clone)]
pub struct Key {
    /// The JWK as published (its `alg`/`kty` constrain which algorithms may use it).
    pub jwk: Jwk,
    /// The decoding key built from it.
    pub key: DecodingKey,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Key>,
    /// Keys without a `kid` (usable only when the set has exactly one key).
    anonymous: Vec<Key>,
    fetched_at: Option<Instant>,
    /// Whether the last fetch was caused by an unknown `kid` (and so starts a cooldown).
    last_was_unknown_kid: bool,
    /// When the last fetch failed, if it did: the next one on a request's behalf waits
    /// out the cooldown from then.
    failed_at: Option<Instant>,
}

/// Why no key could be found.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    /// The key set could not be fetched or parsed.
    #[error("cannot load signing keys from {url}: {reason}")]
    Fetch {
        /// Where from.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No key with that `kid`, even after a refetch (or during the cooldown).
    #[error("no signing key with kid {0:?}")]
    UnknownKid(Option<String>),
}

/// A cached JWKS for one URL.
pub struct Jwks {
    url: Url,
    http: reqwest::Client,
    state: RwLock<State>,
    flight: tokio::sync::Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl Jwks {
    /// A cache for `url`; nothing is fetched yet.
    pub fn new(url: Url, http: reqwest::Client) -> Arc<Self> {
        Arc::new(Self {
            url,
            http,
            state: RwLock::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many times the key set was fetched (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether keys have been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.state
            .read()
            .map(|s| s.fetched_at.is_some())
            .unwrap_or(false)
    }

    fn lookup(&self, kid: Option<&str>) -> Option<Key> {
        let state = self.state.read().ok()?;
        match kid {
            Some(kid) => state.keys.get(kid).cloned(),
            None if state.keys.len() + state.anonymous.len() == 1 => state
                .keys
                .values()
                .next()
                .or(state.anonymous.first())
                .cloned(),
            None => None,
        }
    }

    fn fresh(&self) -> bool {
        self.state
            .read()
            .ok()
            .and_then(|s| s.fetched_at)
            .is_some_and(|t| t.elapsed() < MAX_AGE)
    }

    /// The key for `kid`, fetching or refetching the set as the policy above allows.
    pub async fn key(&self, kid: Option<&str>) -> Result<Key, JwksError> {
        if self.fresh() {
            if let Some(k) = self.lookup(kid) {
                return Ok(k);
            }
        }
        let _flight = self.flight.lock().await;
        // Someone else may have fetched while we waited.
        let (fetched_at, last_unknown, failed_at) = {
            let s = self.state.read().map_err(|_| JwksError::UnknownKid(None))?;
            (s.fetched_at, s.last_was_unknown_kid, s.failed_at)
        };
        let stale = fetched_at.is_none_or(|t| t.elapsed() >= MAX_AGE);
        if failed_at.is_some_and(|t| t.elapsed() < COOLDOWN) {
            // The provider failed us a moment ago: answer from the keys we have (even stale
            // ones), or refuse, but do not ask again yet.
            return self.lookup(kid).ok_or_else(|| JwksError::Fetch {
                url: self.url.to_string(),
                reason: "the last fetch failed; retrying after a cooldown".into(),
            });
        }
        if !stale {
            if let Some(k) = self.lookup(kid) {
                return Ok(k);
            }
            let cooling = last_unknown && fetched_at.is_some_and(|t| t.elapsed() < COOLDOWN);
            if cooling {
                return Err(JwksError::UnknownKid(kid.map(str::to_string)));
            }
        }
        self.fetch(!stale).await?;
        self.lookup(kid)
            .ok_or_else(|| JwksError::UnknownKid(kid.map(str::to_string)))
    }

    /// Loads the key set now (readiness, start-up). Errors leave the old keys in place.
    pub async fn load(&self) -> Result<(), JwksError> {
        let _flight = self.flight.lock().await;
        self.fetch(false).await
    }

    async fn fetch(&self, caused_by_unknown_kid: bool) -> Result<(), JwksError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fail = |reason: String| JwksError::Fetch {
            url: self.url.to_string(),
            reason,
        };
        let set: JwkSet = match super::get_json(self.http.get(self.url.clone())).await {
            Ok(set) => set,
            Err(reason) => {
                if let Ok(mut state) = self.state.write() {
                    state.failed_at = Some(Instant::now());
                }
                return Err(fail(reason.to_string()));
            }
        };
        let mut keys = HashMap::new();
        let mut anonymous = Vec::new();
        for jwk in set.keys {
            // Only signature keys; a key the library cannot use is skipped, not fatal.
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let entry = Key {
                jwk: jwk.clone(),
                key,
            };
            match jwk.common.key_id.clone() {
                Some(kid) => {
                    keys.insert(kid, entry);
                }
                None => anonymous.push(entry),
            }
        }
        let mut state = self
            .state
            .write()
            .map_err(|_| fail("lock poisoned".into()))?;
        state.keys = keys;
        state.anonymous = anonymous;
        state.fetched_at = Some(Instant::now());
        state.last_was_unknown_kid = caused_by_unknown_kid;
        state.failed_at = None;
        Ok(())
    }
}
