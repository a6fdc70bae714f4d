//! The in-memory backend: the embedded single-node default. Everything is lost on restart;
//! use Redis for more than one instance or for durable links.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Backend, Pair, PairOutcome, StoreError};

#[derive(Debug)]
enum Value {
    Bytes(Vec<u8>),
    Set(HashSet<String>),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Instant,
}

/// A map with per-key expiry behind a mutex. Expired entries are dropped when touched and
/// swept every few thousand writes.
#[derive(Debug, Default)]
pub struct Memory {
    map: Mutex<HashMap<String, Entry>>,
    writes: std::sync::atomic::AtomicU64,
}

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> Result<T, StoreError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))?;
        Ok(f(&mut map))
    }

    fn wrote(&self, map: &mut HashMap<String, Entry>) {
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 4096 == 0 {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
        }
    }
}

fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
    let now = Instant::now();
    if map.get(key).is_some_and(|e| e.expires <= now) {
        map.remove(key);
    }
    map.get_mut(key)
}

#[async_trait]
impl Backend for Memory {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|m| match live(m, key).map(|e| &e.value) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        })
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.with(|m| {
            m.insert(
                key.to_string(),
                Entry {
                    value: Value::Bytes(value.to_vec()),
                    expires: Instant::now() + ttl,
                },
            );
            self.wrote(m);
        })
    }

    async fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        self.with(|m| {
            let Some(entry) = live(m, key) else {
                return false;
            };
            *entry = Entry {
                value: Value::Bytes(value.to_vec()),
                expires: Instant::now() + ttl,
            };
            self.wrote(m);
            true
        })
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        self.with(|m| {
            for k in keys {
                m.remove(k);
            }
        })
    }

    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.with(|m| {
            if live(m, key).is_some() {
                return false;
            }
            m.insert(
                key.to_string(),
                Entry {
                    value: Value::Bytes(token.as_bytes().to_vec()),
                    expires: Instant::now() + ttl,
                },
            );
            true
        })
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.with(|m| {
            if matches!(live(m, key).map(|e| &e.value), Some(Value::Bytes(b)) if b == token.as_bytes())
            {
                m.remove(key);
            }
        })
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        self.with(|m| {
            let expires = Instant::now() + ttl;
            if live(m, key).is_none() {
                m.insert(
                    key.to_string(),
                    Entry {
                        value: Value::Set(HashSet::new()),
                        expires,
                    },
                );
            }
            if let Some(entry) = m.get_mut(key) {
                if let Value::Set(set) = &mut entry.value {
                    set.insert(member.to_string());
                }
                entry.expires = entry.expires.max(expires);
            }
            self.wrote(m);
        })
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.with(|m| {
            if let Some(Entry {
                value: Value::Set(set),
                ..
            }) = live(m, key)
            {
                set.remove(member);
            }
        })
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.with(|m| match live(m, key).map(|e| &e.value) {
            Some(Value::Set(set)) => set.iter().cloned().collect(),
            _ => Vec::new(),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|_| ())
    }

    async fn create_pair(&self, pair: &Pair<'_>) -> Result<PairOutcome, StoreError> {
        self.with(|m| {
            let bytes = |m: &mut HashMap<String, Entry>, k: &str| match live(m, k).map(|e| &e.value)
            {
                Some(Value::Bytes(b)) => Some(b.clone()),
                _ => None,
            };
            let (a, b) = (bytes(m, pair.a), bytes(m, pair.b));
            if a.is_some() || b.is_some() {
                return PairOutcome::Exists { a, b };
            }
            let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
            for (k, v) in [(pair.a, pair.va), (pair.b, pair.vb)] {
                m.insert(
                    k.to_string(),
                    Entry {
                        value: Value::Bytes(v.to_vec()),
                        expires: forever,
                    },
                );
            }
            let index = m.entry(pair.index.to_string()).or_insert(Entry {
                value: Value::Set(HashSet::new()),
                expires: forever,
            });
            if let Value::Set(set) = &mut index.value {
                set.insert(pair.member.to_string());
            }
            PairOutcome::Created
        })
    }

    async fn delete_pair(&self, pair: &Pair<'_>) -> Result<bool, StoreError> {
        self.with(|m| {
            let holds =
                matches!(live(m, pair.a).map(|e| &e.value), Some(Value::Bytes(v)) if v == pair.va);
            if !holds {
                return false;
            }
            m.remove(pair.a);
            m.remove(pair.b);
            if let Some(Entry {
                value: Value::Set(set),
                ..
            }) = live(m, pair.index)
            {
                set.remove(pair.member);
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn memory_backend_keeps_the_contract() {
        super::super::contract::exercise(Arc::new(Memory::new())).await;
    }
}
