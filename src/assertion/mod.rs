//! The signed identity assertion: a short-lived JWT the upstream can verify instead of
//! trusting `X-Forwarded-User` (`[assertion]`).
//!
//! Owns the signing keys, the JWKS that publishes them, and the assertions themselves. It
//! only signs what a passport already carries (an identity the gate has proven and admitted);
//! it never decides who passes.
//!
//! Keys: the operator's (`key_file`, one key, never rotated here), or generated and kept in
//! the store under `assertion:keys`, sealed under the cookie secret, so every instance signs
//! with the same key set. Rotation, by whichever instance sees it due first (under a store
//! lock): a new key is written with `signs_from` = now + `publish_ahead`, so every instance
//! (re-reading the set every `publish_ahead / 4`, at most 30 s) publishes it before any signs
//! with it; a key no longer signing stays in the set until its last assertion has expired
//! (`signs_from` of its successor + `lifetime` + a minute of clock skew).
//!
//! Cost (bench/hot_path.rs, `assertion/*`): a fresh ES256 signature costs several times a
//! cached request, so a signed assertion is reused for the same claims, upstream and link
//! status until half its lifetime has passed: a reused assertion keeps its `jti`, and the
//! upstream always gets one with at least `lifetime / 2` left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderValue;
use openssl::pkey::PKey;

use crate::config::Assertion;
pub use crate::passport::claims_fragment;
use crate::session::keys::Keys;
use crate::store::{Store, StoreError};
use keys::{generate, thumbprint, Loaded, SigningKey, StoredKey, StoredSet};

mod keys;

/// The store key of the key set (after `key_prefix`).
pub const KEYS_KEY: &str = "assertion:keys";
const LOCK_KEY: &str = "lock:assertion:keys";
/// Allowed clock difference between instances and verifiers.
const SKEW: i64 = 60;

fn now() -> i64 {
    crate::session::clock::now()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    claims: Bytes,
    audience: usize,
    status: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Cached {
    value: HeaderValue,
    reuse_until: i64,
}

/// Signs assertions and publishes their keys.
#[derive(Debug)]
pub struct Signer {
    config: Assertion,
    issuer: String,
    /// Every `[[upstreams]]` audience, by route index.
    audiences: Vec<String>,
    loaded: RwLock<Arc<Loaded>>,
    cache: Mutex<HashMap<CacheKey, Cached>>,
    capacity: usize,
    store: Store,
    seal: Option<Keys>,
}

/// Why no assertion could be made.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// No key is loaded yet (the store has not answered since start).
    #[error("no assertion key loaded yet")]
    NoKey,
    /// Signing failed.
    #[error("signing the assertion failed: {0}")]
    Sign(String),
}

impl Signer {
    /// A signer for `config`; its keys are loaded by [`Signer::maintain`] (or at once from
    /// `key_file`).
    pub fn new(
        config: &Assertion,
        issuer: &str,
        audiences: Vec<String>,
        store: Store,
        cookie_secret: Option<&[u8; 32]>,
        capacity: usize,
    ) -> Result<Self, String> {
        let signer = Signer {
            config: config.clone(),
            issuer: issuer.trim_end_matches('/').to_string(),
            audiences,
            loaded: RwLock::new(Arc::new(Loaded::default())),
            cache: Mutex::new(HashMap::new()),
            capacity: capacity.max(16),
            store,
            seal: cookie_secret.map(Keys::derive),
        };
        if let Some(path) = &config.key_file {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("assertion.key_file {}: {e}", path.display()))?;
            let key = PKey::private_key_from_pem(pem.as_bytes())
                .map_err(|e| format!("assertion.key_file {}: {e}", path.display()))?;
            let stored = StoredKey {
                kid: thumbprint(&key, config.algorithm)?,
                alg: config.algorithm,
                pem,
                created: 0,
                signs_from: 0,
            };
            signer.install(vec![SigningKey::new(&stored)?]);
        }
        Ok(signer)
    }

    /// The header the assertion goes in.
    pub fn header(&self) -> &http::HeaderName {
        &self.config.header
    }

    /// The JWKS document (`{"keys":[...]}`) of every key published now.
    pub fn jwks(&self) -> Bytes {
        self.current().jwks.clone()
    }

    /// Whether a key is loaded (readiness).
    pub fn ready(&self) -> bool {
        !self.current().keys.is_empty()
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn install(&self, keys: Vec<SigningKey>) {
        let loaded = Arc::new(Loaded::new(keys));
        match self.loaded.write() {
            Ok(mut l) => *l = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
    }

    /// The assertion for a passport's claims going to the upstream of route `audience`
    /// with `status`: a cached one while it has more than half its lifetime left, else a
    /// fresh signature.
    pub fn assertion(
        &self,
        claims: Bytes,
        audience: usize,
        status: Option<&'static str>,
    ) -> Result<HeaderValue, AssertionError> {
        let now = now();
        let key = CacheKey {
            claims,
            audience,
            status,
        };
        if let Ok(cache) = self.cache.lock() {
            if let Some(hit) = cache.get(&key).filter(|c| c.reuse_until > now) {
                return Ok(hit.value.clone());
            }
        }
        let lifetime = self.config.lifetime.as_secs() as i64;
        let value = self.sign(&key.claims, audience, status, now, lifetime)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.capacity {
                cache.retain(|_, c| c.reuse_until > now);
                if cache.len() >= self.capacity {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    value: value.clone(),
                    reuse_until: now + lifetime / 2,
                },
            );
        }
        Ok(value)
    }

    /// A freshly signed assertion (no cache): what [`Signer::assertion`] does on a miss.
    pub fn sign(
        &self,
        claims: &[u8],
        audience: usize,
        status: Option<&'static str>,
        now: i64,
        lifetime: i64,
    ) -> Result<HeaderValue, AssertionError> {
        let loaded = self.current();
        let key = loaded.active(now).ok_or(AssertionError::NoKey)?;
        let aud = self.audiences.get(audience).map_or("", String::as_str);
        let jti = B64.encode(rand::random::<[u8; 16]>());
        let mut payload = format!(
            r#"{{"iss":{},"aud":{},"iat":{now},"nbf":{now},"exp":{},"jti":"{jti}""#,
            json_str(&self.issuer),
            json_str(aud),
            now + lifetime,
        );
        if let Some(status) = status {
            payload.push_str(&format!(r#","link_status":"{status}""#));
        }
        if !claims.is_empty() {
            payload.push(',');
            payload.push_str(&String::from_utf8_lossy(claims));
        }
        payload.push('}');
        let mut token = String::with_capacity(key.header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&key.header);
        B64.encode_string(payload.as_bytes(), &mut token);
        let signature = key.sign(token.as_bytes()).map_err(AssertionError::Sign)?;
        token.push('.');
        token.push_str(&signature);
        HeaderValue::from_str(&token).map_err(|e| AssertionError::Sign(e.to_string()))
    }

    /// Loads the key set from the store, creating or rotating it when due, then re-reads it
    /// every `publish_ahead / 4` (at most 30 s) until the future is dropped. A key from
    /// `key_file` needs none of this.
    pub async fn maintain(&self) {
        if self.config.key_file.is_some() {
            return std::future::pending().await;
        }
        let every = (self.config.publish_ahead / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            match self.refresh().await {
                Ok(()) => tokio::time::sleep(every).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not load the assertion keys; retrying");
                    tokio::time::sleep(every.min(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// One round of [`Signer::maintain`].
    pub async fn refresh(&self) -> Result<(), String> {
        let set = self.read_set().await?;
        let set = if self.needs_write(&set, now()) {
            self.rotate().await?.unwrap_or(set)
        } else {
            set
        };
        let keys = set
            .keys
            .iter()
            .filter(|k| k.alg == self.config.algorithm)
            .map(SigningKey::new)
            .collect::<Result<Vec<_>, _>>()?;
        let before: Vec<String> = self.current().keys.iter().map(|k| k.kid.clone()).collect();
        let after: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
        if before != after {
            tracing::info!(keys = ?after, "assertion keys loaded");
        }
        self.install(keys);
        Ok(())
    }

    fn needs_write(&self, set: &StoredSet, now: i64) -> bool {
        let usable: Vec<&StoredKey> = set
            .keys
            .iter()
            .filter(|k| k.alg == self.config.algorithm)
            .collect();
        let Some(newest) = usable.iter().max_by_key(|k| k.signs_from) else {
            return true;
        };
        let rotate = self.config.rotate_every.as_secs() as i64;
        let ahead = self.config.publish_ahead.as_secs() as i64;
        let due =
            rotate > 0 && newest.signs_from <= now && newest.signs_from + rotate - ahead <= now;
        due || usable.len() != set.keys.len() || !self.retired(set, now).is_empty()
    }

    /// The kids of keys whose last assertion has expired: superseded (a newer key signs)
    /// for longer than `lifetime` plus the skew.
    fn retired(&self, set: &StoredSet, now: i64) -> Vec<String> {
        let lifetime = self.config.lifetime.as_secs() as i64;
        let successor_start = |k: &StoredKey| {
            set.keys
                .iter()
                .filter(|n| n.alg == k.alg && n.signs_from > k.signs_from && n.signs_from <= now)
                .map(|n| n.signs_from)
                .min()
        };
        set.keys
            .iter()
            .filter(|k| {
                k.alg != self.config.algorithm
                    || successor_start(k).is_some_and(|s| s + lifetime + SKEW < now)
            })
            .map(|k| k.kid.clone())
            .collect()
    }

    /// Under the store lock: prunes retired keys and adds a new one when due. `None` when
    /// another instance holds the lock (it does the same).
    async fn rotate(&self) -> Result<Option<StoredSet>, String> {
        let token = B64.encode(rand::random::<[u8; 16]>());
        let locked = self
            .store
            .try_lock(LOCK_KEY, &token, Duration::from_secs(10))
            .await
            .map_err(store_error)?;
        if !locked {
            return Ok(None);
        }
        let result = self.rotate_locked().await;
        let _ = self.store.unlock(LOCK_KEY, &token).await;
        result.map(Some)
    }

    async fn rotate_locked(&self) -> Result<StoredSet, String> {
        let mut set = self.read_set().await?;
        let now = now();
        if !self.needs_write(&set, now) {
            return Ok(set);
        }
        let retired = self.retired(&set, now);
        set.keys.retain(|k| !retired.contains(&k.kid));
        let newest = set.keys.iter().map(|k| k.signs_from).max();
        let rotate = self.config.rotate_every.as_secs() as i64;
        let ahead = self.config.publish_ahead.as_secs() as i64;
        let pending = newest.is_some_and(|s| s > now);
        let due = match newest {
            None => true,
            Some(s) => rotate > 0 && !pending && s + rotate - ahead <= now,
        };
        if due {
            let (pem, kid) = generate(self.config.algorithm)?;
            // The first key signs at once: nobody can have cached an older JWKS. A later one
            // waits `publish_ahead` and the rest of the current second.
            let signs_from = match newest {
                None => now,
                Some(_) => now + ahead + 1,
            };
            tracing::info!(kid, signs_from, "new assertion key published");
            set.keys.push(StoredKey {
                kid,
                alg: self.config.algorithm,
                pem,
                created: now,
                signs_from,
            });
        }
        let plain = serde_json::to_vec(&set).map_err(|e| e.to_string())?;
        let value = match &self.seal {
            Some(keys) => crate::session::seal::seal(keys, KEYS_KEY.as_bytes(), &plain),
            None => plain,
        };
        let keep = (self.config.rotate_every * 3).max(Duration::from_secs(365 * 24 * 3600));
        self.store
            .put(KEYS_KEY, &value, keep)
            .await
            .map_err(store_error)?;
        Ok(set)
    }

    async fn read_set(&self) -> Result<StoredSet, String> {
        let Some(raw) = self.store.get(KEYS_KEY).await.map_err(store_error)? else {
            return Ok(StoredSet::default());
        };
        let plain = match &self.seal {
            Some(keys) => crate::session::seal::open(keys, KEYS_KEY.as_bytes(), &raw)
                .ok_or("the stored assertion keys do not open with this cookie secret")?,
            None => raw,
        };
        serde_json::from_slice(&plain).map_err(|e| format!("stored assertion keys: {e}"))
    }
}

fn store_error(e: StoreError) -> String {
    e.to_string()
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests;
