//! The session store seam: short-lived records (sessions, login flows, locks, indexes) in
//! Redis in production or in memory on a single node.
//!
//! Backends implement the small [`Backend`] trait over raw keys and bytes. [`Store`] wraps
//! one with the key prefix, a command timeout and metrics, and is what the rest of linkgate
//! uses. A backend never interprets values: sealing and serialisation happen above it. A
//! failing backend returns [`StoreError::Unavailable`]; callers answer 503 and write nothing
//! half-way.

pub mod memory;
pub mod redis;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::metrics::Metrics;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Redis failed (the connection, or the command's answer).
    #[error("session store unavailable: {0}")]
    Redis(#[source] std::sync::Arc<::redis::RedisError>),
    /// A record in the store could not be read back.
    #[error("unreadable record in the store: {0}")]
    Unreadable(String),
}

/// A store backend over raw keys (already prefixed) and opaque values.
#[async_trait]
pub trait Backend: Send + Sync + Debug {
    /// The value at `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` to `value`, expiring after `ttl`.
    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// Sets `key` to `value`, expiring after `ttl`, only if `key` exists (a record deleted
    /// meanwhile stays deleted). True when written.
    async fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError>;
    /// Deletes keys; missing keys are fine.
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Sets `key` to `token` only if absent, expiring after `ttl`. True when acquired.
    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Deletes `key` only if it still holds `token` (never someone else's lock).
    async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError>;
    /// Adds `member` to the set at `key` and extends the set's expiry to at least `ttl`.
    async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Removes `member` from the set at `key`.
    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError>;
    /// Every member of the set at `key`.
    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError>;
    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The store's eviction policy (Redis' `maxmemory-policy`, from `INFO memory`, which
    /// needs no `CONFIG` permission); `None` for a store that never evicts. With several
    /// nodes, the first policy that could evict links, else any.
    async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Atomically: when neither `a` nor `b` exists, sets `a` to `va` and `b` to `vb` (no
    /// expiry) and adds `member` to the set `index`. Otherwise changes nothing and returns
    /// what `a` and `b` hold. Of two concurrent calls that touch a common key, one wins.
    async fn create_pair(&self, pair: &Pair<'_>) -> Result<PairOutcome, StoreError>;
    /// Atomically: when `a` still holds `va`, deletes `a` and `b` and removes `member` from
    /// `index`. Returns whether it did.
    async fn delete_pair(&self, pair: &Pair<'_>) -> Result<bool, StoreError>;
    /// Publishes `message` to every instance listening on `channel`. A single-node backend
    /// has nobody else to tell.
    async fn publish(&self, _channel: &str, _message: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// Subscribes to `channel` and sends every message to `tx`, first an empty message once
    /// subscribed (so the listener knows it may have missed some). Returns when the
    /// connection drops (the caller reconnects). A single-node backend never returns.
    async fn listen(
        &self,
        _channel: &str,
        _tx: &tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

/// Two keys written (or deleted) together, with an index set entry.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    /// First key.
    pub a: &'a str,
    /// Its value.
    pub va: &'a [u8],
    /// Second key.
    pub b: &'a str,
    /// Its value.
    pub vb: &'a [u8],
    /// The index set.
    pub index: &'a str,
    /// The index member.
    pub member: &'a str,
}

/// The result of [`Backend::create_pair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairOutcome {
    /// Both keys were written.
    Created,
    /// At least one key existed; nothing was written.
    Exists {
        /// What `a` holds.
        a: Option<Vec<u8>>,
        /// What `b` holds.
        b: Option<Vec<u8>>,
    },
}

/// The store as linkgate uses it: a backend with the key prefix, a deadline on every
/// operation, and `linkgate_store_*` metrics.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    prefix: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Whether a Redis `maxmemory-policy` may evict keys without a TTL (links).
pub fn policy_evicts_links(policy: &str) -> bool {
    policy.trim().to_ascii_lowercase().starts_with("allkeys-")
}

/// Logical keys, formatted once here so that the key layout (README, "Sessions, links and the
/// store") lives in one place. The part in braces is a Redis Cluster hash tag: keys that one
/// operation touches together share it.
pub mod keys {
    /// `session:{id}`.
    pub fn session(id_hex: &str) -> String {
        format!("session:{{{id_hex}}}")
    }
    /// `lock:refresh:{id}` (same slot as its session).
    pub fn refresh_lock(id_hex: &str) -> String {
        format!("lock:refresh:{{{id_hex}}}")
    }
    /// `flow:{state}`.
    pub fn flow(state: &str) -> String {
        format!("flow:{{{state}}}")
    }
    /// `sessions:sso:{S}`: the ids of every session of one SSO identity.
    pub fn sso_sessions(sso_key: &str) -> String {
        format!("sessions:sso:{{{sso_key}}}")
    }
    /// The hash tag every link key shares: creating a link writes both directions in one
    /// script, which Redis Cluster allows only within one slot.
    pub const LINKS_TAG: &str = "{links}";
    /// `link:account:{links}:A`.
    pub fn link_account(account_key: &str) -> String {
        format!("link:account:{LINKS_TAG}:{account_key}")
    }
    /// `link:sso:{links}:S`.
    pub fn link_sso(sso_key: &str) -> String {
        format!("link:sso:{LINKS_TAG}:{sso_key}")
    }
    /// `links:index:{links}`: every linked account key (for listing and export).
    pub fn links_index() -> String {
        format!("links:index:{LINKS_TAG}")
    }
}

impl Store {
    /// Wraps a backend.
    pub fn new(
        backend: Arc<dyn Backend>,
        prefix: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            backend,
            prefix: prefix.to_string(),
            timeout,
            metrics,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    async fn run<T, F>(&self, op: &'static str, fut: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "{op} took longer than {:?}",
                self.timeout
            ))),
        };
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics.store_ops.with_label_values(&[op, label]).inc();
        self.metrics
            .store_duration
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::warn!(op, error = %e, "store operation failed");
        }
        result
    }

    /// See [`Backend::get`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(key);
        self.run("get", self.backend.get(&key)).await
    }

    /// See [`Backend::put`].
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run("put", self.backend.put(&key, value, ttl)).await
    }

    /// See [`Backend::replace`].
    pub async fn replace(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.key(key);
        self.run("replace", self.backend.replace(&key, value, ttl))
            .await
    }

    /// See [`Backend::delete`].
    pub async fn delete(&self, keys: &[&str]) -> Result<(), StoreError> {
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        self.run("delete", self.backend.delete(&keys)).await
    }

    /// See [`Backend::try_lock`].
    pub async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.key(key);
        self.run("lock", self.backend.try_lock(&key, token, ttl))
            .await
    }

    /// See [`Backend::unlock`].
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run("unlock", self.backend.unlock(&key, token)).await
    }

    /// See [`Backend::set_add`].
    pub async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run("set_add", self.backend.set_add(&key, member, ttl))
            .await
    }

    /// See [`Backend::set_remove`].
    pub async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.run("set_remove", self.backend.set_remove(&key, member))
            .await
    }

    /// See [`Backend::set_members`].
    pub async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let key = self.key(key);
        self.run("set_members", self.backend.set_members(&key))
            .await
    }

    /// See [`Backend::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", self.backend.ping()).await
    }

    /// See [`Backend::eviction_policy`].
    pub async fn eviction_policy(&self) -> Result<Option<String>, StoreError> {
        self.run("eviction_policy", self.backend.eviction_policy())
            .await
    }

    /// A warning when the store may evict links: links have no TTL, so only an `allkeys-*`
    /// policy can evict them (`volatile-*` touches keys with a TTL only; `noeviction`
    /// refuses writes instead). `Ok(None)` when the policy is safe.
    pub async fn eviction_warning(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .eviction_policy()
            .await?
            .filter(|p| policy_evicts_links(p))
            .map(|p| {
                format!(
                    "Redis maxmemory-policy is {p}: under memory pressure Redis may evict links, which have no TTL; use noeviction or a volatile-* policy"
                )
            }))
    }

    /// The metrics this store reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// See [`Backend::publish`] (the channel is prefixed here).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let channel = self.key(channel);
        self.run("publish", self.backend.publish(&channel, message))
            .await
    }

    /// See [`Backend::listen`] (the channel is prefixed here; no deadline).
    pub async fn listen(
        &self,
        channel: &str,
        tx: &tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<(), StoreError> {
        let channel = self.key(channel);
        self.backend.listen(&channel, tx).await
    }

    /// See [`Backend::create_pair`] (keys are logical, prefixed here).
    pub async fn create_pair(&self, pair: &Pair<'_>) -> Result<PairOutcome, StoreError> {
        let (a, b, index) = (self.key(pair.a), self.key(pair.b), self.key(pair.index));
        let prefixed = Pair {
            a: &a,
            b: &b,
            index: &index,
            ..*pair
        };
        self.run("create_pair", self.backend.create_pair(&prefixed))
            .await
    }

    /// See [`Backend::delete_pair`] (keys are logical, prefixed here).
    pub async fn delete_pair(&self, pair: &Pair<'_>) -> Result<bool, StoreError> {
        let (a, b, index) = (self.key(pair.a), self.key(pair.b), self.key(pair.index));
        let prefixed = Pair {
            a: &a,
            b: &b,
            index: &index,
            ..*pair
        };
        self.run("delete_pair", self.backend.delete_pair(&prefixed))
            .await
    }
}

#[doc(hidden)]
#[allow(clippy::unwrap_used)]
pub mod contract {
    //! The behaviour every backend must show; run against memory in the unit tests and
    //! against a real redis-server in `tests/store.rs`. Test code, public only so the
    //! integration tests can run it.
    use super::*;

    /// Exercises every operation of a backend.
    pub async fn exercise(backend: Arc<dyn Backend>) {
        let ttl = Duration::from_secs(60);
        assert_eq!(backend.get("k").await.unwrap(), None);
        backend.put("k", b"v1", ttl).await.unwrap();
        assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
        backend.delete(&["k".to_string()]).await.unwrap();
        assert_eq!(backend.get("k").await.unwrap(), None, "deleted");
        assert!(
            !backend.replace("k", b"v2", ttl).await.unwrap(),
            "replace never creates"
        );
        assert_eq!(backend.get("k").await.unwrap(), None);
        backend.put("k", b"v1", ttl).await.unwrap();
        assert!(backend.replace("k", b"v2", ttl).await.unwrap());
        assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
        backend.delete(&["k".to_string()]).await.unwrap();

        backend
            .put("short", b"x", Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(backend.get("short").await.unwrap(), None, "expired");

        assert!(backend.try_lock("l", "a", ttl).await.unwrap());
        assert!(!backend.try_lock("l", "b", ttl).await.unwrap());
        backend.unlock("l", "b").await.unwrap();
        assert!(
            !backend.try_lock("l", "c", ttl).await.unwrap(),
            "b cannot unlock a's lock"
        );
        backend.unlock("l", "a").await.unwrap();
        assert!(backend.try_lock("l", "c", ttl).await.unwrap());

        backend.set_add("s", "m1", ttl).await.unwrap();
        backend.set_add("s", "m2", ttl).await.unwrap();
        let mut members = backend.set_members("s").await.unwrap();
        members.sort();
        assert_eq!(members, ["m1", "m2"]);
        backend.set_remove("s", "m1").await.unwrap();
        assert_eq!(backend.set_members("s").await.unwrap(), ["m2"]);

        backend.put("d1", b"1", ttl).await.unwrap();
        backend.put("d2", b"2", ttl).await.unwrap();
        backend
            .delete(&["d1".into(), "d2".into(), "nope".into()])
            .await
            .unwrap();
        assert_eq!(backend.get("d1").await.unwrap(), None);
        assert_eq!(backend.get("d2").await.unwrap(), None);
        backend.ping().await.unwrap();

        let pair = Pair {
            a: "{t}pa",
            va: b"1",
            b: "{t}pb",
            vb: b"2",
            index: "{t}pi",
            member: "m",
        };
        assert_eq!(
            backend.create_pair(&pair).await.unwrap(),
            PairOutcome::Created
        );
        let clash = Pair {
            a: "{t}pa",
            va: b"3",
            b: "{t}pc",
            vb: b"4",
            index: "{t}pi",
            member: "n",
        };
        assert_eq!(
            backend.create_pair(&clash).await.unwrap(),
            PairOutcome::Exists {
                a: Some(b"1".to_vec()),
                b: None
            }
        );
        assert_eq!(
            backend.get("{t}pc").await.unwrap(),
            None,
            "nothing half-written"
        );
        assert_eq!(backend.set_members("{t}pi").await.unwrap(), ["m"]);
        assert!(!backend
            .delete_pair(&Pair {
                va: b"other",
                ..pair
            })
            .await
            .unwrap());
        assert!(backend.delete_pair(&pair).await.unwrap());
        assert_eq!(backend.get("{t}pa").await.unwrap(), None);
        assert_eq!(backend.get("{t}pb").await.unwrap(), None);
        assert!(backend.set_members("{t}pi").await.unwrap().is_empty());
    }
}
