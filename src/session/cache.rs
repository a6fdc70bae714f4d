//! The in-process session cache: session id → what a request of that session needs (and,
//! keyed by a token's SHA-256, the bearer tokens already verified).
//!
//! Built for this one job rather than taken from a general-purpose cache crate, because the
//! job is narrow and the numbers matter: keys are random 128-bit ids that only linkgate
//! issues (a cookie must carry a valid tag before its id is looked up, and an id is inserted
//! only after the store returned its session), every entry lives at most `cache_ttl`, and an
//! eviction costs one store read later. So: a fixed number of shards, each a `HashMap` under
//! its own mutex, an expiry per entry checked on read, and, when a shard is full, expired
//! entries dropped first and then arbitrary ones (ids are random, so a map's order is as good
//! as a random choice). About 40 bytes per entry on top of the value, against ~360 for moka
//! with a TTL and a capacity (measured with 100k entries); a hit is a hash of the key's own
//! bytes, a lock and an `Arc` clone.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cookie::OpaqueId;

/// Shards: enough that the proxy's threads rarely meet on one lock.
const SHARDS: usize = 32;

type Shard<K, V> = Mutex<Map<K, V>>;

/// A key that is random already (an id linkgate made, a SHA-256): its last byte picks the
/// shard, its first eight bytes are its hash (see [`KeyHasher`]), so the two never correlate.
pub trait RandomKey: Hash + Eq + Copy {
    /// The key's last byte.
    fn last_byte(&self) -> u8;
}

impl RandomKey for OpaqueId {
    fn last_byte(&self) -> u8 {
        self.as_bytes()[self.as_bytes().len() - 1]
    }
}

impl RandomKey for [u8; 32] {
    fn last_byte(&self) -> u8 {
        self[31]
    }
}

struct Entry<V> {
    value: Arc<V>,
    /// Milliseconds after the cache's `epoch` when the entry expires (8 bytes, not the 16 of
    /// an `Instant`: with 100k entries that is most of a MiB).
    until: u64,
}

/// Hashes a random key by its first eight bytes. Keys are linkgate's own random ids, or
/// SHA-256 digests inserted only for tokens that verified, so no client can choose keys that
/// collide; SipHash would only cost time on every request.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }

    fn write_usize(&mut self, _len: usize) {
        // The length prefix of a fixed-size key says nothing.
    }
}

type Map<K, V> = HashMap<K, Entry<V>, BuildHasherDefault<KeyHasher>>;

/// A bounded cache of `Arc<V>` by session id (or another random key), each entry valid for
/// at most `ttl`, and kept `grace` longer for [`SessionCache::stale`]: what a request may be
/// served while the store cannot be read.
pub struct SessionCache<V, K: RandomKey = OpaqueId> {
    shards: Box<[Shard<K, V>]>,
    per_shard: usize,
    ttl: Duration,
    /// How long past its TTL an entry stays for [`SessionCache::stale`], in milliseconds.
    grace: u64,
    /// Where entry expiries count from.
    epoch: Instant,
}

impl<V, K: RandomKey> std::fmt::Debug for SessionCache<V, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("entries", &self.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl<V, K: RandomKey> SessionCache<V, K> {
    /// A cache of at most `capacity` entries (at least one per shard), each kept `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self::with_grace(capacity, ttl, Duration::ZERO)
    }

    /// A cache like [`SessionCache::new`] whose entries stay `grace` past their TTL for
    /// [`SessionCache::stale`] (never for [`SessionCache::get`]).
    pub fn with_grace(capacity: u64, ttl: Duration, grace: Duration) -> Self {
        let per_shard = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .div_ceil(SHARDS)
            .max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard,
            ttl,
            grace: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the epoch.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn shard(&self, id: &K) -> MutexGuard<'_, Map<K, V>> {
        let index = usize::from(id.last_byte()) % SHARDS;
        // A poisoned shard only means a panic elsewhere while it was held; its map is
        // still a valid map, so keep serving it.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The entry of `id`, unless absent or older than the TTL (then it is dropped, unless it
    /// is still within the grace of [`SessionCache::stale`]).
    pub fn get(&self, id: &K) -> Option<Arc<V>> {
        let now = self.now();
        let mut shard = self.shard(id);
        match shard.get(id) {
            Some(entry) if entry.until > now => Some(entry.value.clone()),
            Some(entry) => {
                if entry.until.saturating_add(self.grace) <= now {
                    shard.remove(id);
                }
                None
            }
            None => None,
        }
    }

    /// The entry of `id` even if its TTL has passed, as long as it passed less than the
    /// grace ago: for a request the store cannot answer. An entry removed (a sign-out, a
    /// change announced by another instance, [`SessionCache::clear`]) is never stale, it is
    /// gone.
    pub fn stale(&self, id: &K) -> Option<Arc<V>> {
        let now = self.now();
        let shard = self.shard(id);
        shard
            .get(id)
            .filter(|entry| entry.until.saturating_add(self.grace) > now)
            .map(|entry| entry.value.clone())
    }

    /// Caches `value` for `id` for the TTL, making room if the shard is full.
    pub fn insert(&self, id: K, value: Arc<V>) {
        let now = self.now();
        let mut shard = self.shard(&id);
        if shard.len() >= self.per_shard && !shard.contains_key(&id) {
            shard.retain(|_, e| e.until > now);
            if shard.len() >= self.per_shard {
                // Still full of live entries: drop an eighth of them (at least one), so that
                // a full cache does not pay this on every insert.
                let excess = shard.len() + 1 - self.per_shard;
                let drop = excess.max(self.per_shard / 8).max(1);
                let doomed: Vec<K> = shard.keys().take(drop).copied().collect();
                for key in &doomed {
                    shard.remove(key);
                }
            }
        }
        shard.insert(
            id,
            Entry {
                value,
                until: now.saturating_add(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)),
            },
        );
    }

    /// Drops the entry of `id`.
    pub fn remove(&self, id: &K) {
        self.shard(id).remove(id);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            *shard = Map::default();
        }
    }

    /// How many entries are held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_inserted_until_removed_or_cleared() {
        let cache: SessionCache<i32> = SessionCache::new(100, Duration::from_secs(60));
        let (a, b) = (OpaqueId::random(), OpaqueId::random());
        assert!(cache.get(&a).is_none());
        cache.insert(a, Arc::new(1));
        cache.insert(b, Arc::new(2));
        assert_eq!(cache.get(&a).as_deref(), Some(&1));
        cache.insert(a, Arc::new(3));
        assert_eq!(cache.get(&a).as_deref(), Some(&3), "an insert replaces");
        cache.remove(&a);
        assert!(cache.get(&a).is_none());
        assert_eq!(cache.get(&b).as_deref(), Some(&2));
        cache.clear();
        assert!(cache.get(&b).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn keys_of_one_shard_spread_over_its_buckets() {
        // The shard is the key's last byte, the hash its first eight: within a shard the
        // low bits of the hash (hashbrown's bucket index) must still vary.
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<KeyHasher>::default();
        let buckets: std::collections::HashSet<u64> = std::iter::repeat_with(OpaqueId::random)
            .filter(|id| usize::from(id.last_byte()) % SHARDS == 7)
            .take(4096)
            .map(|id| build.hash_one(id) & 4095)
            .collect();
        // 4096 random keys in 4096 buckets fill ~2589 of them (1 - 1/e).
        assert!(buckets.len() > 2300, "{} buckets", buckets.len());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache: SessionCache<()> = SessionCache::new(100, Duration::from_millis(30));
        let id = OpaqueId::random();
        cache.insert(id, Arc::new(()));
        assert!(cache.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&id).is_none(), "expired");
        assert_eq!(cache.len(), 0, "and dropped on that read");
    }

    #[test]
    fn past_its_ttl_an_entry_is_only_stale_and_only_for_the_grace() {
        let cache: SessionCache<i32> =
            SessionCache::with_grace(100, Duration::from_millis(30), Duration::from_millis(200));
        let (kept, removed, never) = (OpaqueId::random(), OpaqueId::random(), OpaqueId::random());
        cache.insert(kept, Arc::new(1));
        cache.insert(removed, Arc::new(2));
        assert_eq!(
            cache.stale(&kept).as_deref(),
            Some(&1),
            "a live entry is also stale"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&kept).is_none(), "past the TTL a read misses");
        assert_eq!(
            cache.stale(&kept).as_deref(),
            Some(&1),
            "but the entry stays for a store outage"
        );
        cache.remove(&removed);
        assert!(cache.stale(&removed).is_none(), "a removed entry is gone");
        assert!(cache.stale(&never).is_none());
        std::thread::sleep(Duration::from_millis(200));
        assert!(cache.stale(&kept).is_none(), "past the grace: nothing");
        assert!(cache.get(&kept).is_none());
        assert_eq!(cache.len(), 0, "and dropped on that read");
        cache.insert(kept, Arc::new(3));
        cache.clear();
        assert!(
            cache.stale(&kept).is_none(),
            "a cleared cache has nothing stale"
        );
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let capacity = 1000;
        let cache: SessionCache<usize> = SessionCache::new(capacity, Duration::from_secs(60));
        let ids: Vec<OpaqueId> = (0..10 * capacity).map(|_| OpaqueId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            cache.insert(*id, Arc::new(i));
            assert!(cache.len() as u64 <= capacity + SHARDS as u64);
        }
        // The newest entry of each insert is always kept.
        assert!(cache.get(ids.last().unwrap()).is_some());
        assert!(cache.len() as u64 > capacity / 2, "evicts in small steps");
    }

    #[test]
    fn a_full_shard_drops_expired_entries_before_live_ones() {
        // One entry per shard: inserting a second id into a shard must first drop the
        // expired one, not the live one.
        let cache: SessionCache<&str> =
            SessionCache::new(SHARDS as u64 * 2, Duration::from_millis(30));
        let mut same_shard = (0..)
            .map(|_| OpaqueId::random())
            .filter(|id| usize::from(id.as_bytes()[0]) % SHARDS == 0);
        let old = same_shard.next().unwrap();
        cache.insert(old, Arc::new("old"));
        std::thread::sleep(Duration::from_millis(40));
        let live = same_shard.next().unwrap();
        cache.insert(live, Arc::new("live"));
        let newer = same_shard.next().unwrap();
        cache.insert(newer, Arc::new("newer"));
        assert!(cache.get(&live).is_some(), "the live entry stayed");
        assert!(cache.get(&newer).is_some());
    }

    #[test]
    fn hashes_are_keys_too() {
        let cache: SessionCache<&str, [u8; 32]> = SessionCache::new(10, Duration::from_secs(60));
        cache.insert([7; 32], Arc::new("seven"));
        assert_eq!(cache.get(&[7; 32]).as_deref(), Some(&"seven"));
        assert!(cache.get(&[8; 32]).is_none());
    }

    #[test]
    fn concurrent_readers_and_writers_agree() {
        let cache: Arc<SessionCache<usize>> =
            Arc::new(SessionCache::new(10_000, Duration::from_secs(60)));
        let ids: Arc<Vec<OpaqueId>> = Arc::new((0..512).map(|_| OpaqueId::random()).collect());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (cache, ids) = (cache.clone(), ids.clone());
                std::thread::spawn(move || {
                    for round in 0..200 {
                        for (i, id) in ids.iter().enumerate() {
                            if (i + round + t) % 3 == 0 {
                                cache.insert(*id, Arc::new(i));
                            } else if let Some(v) = cache.get(id) {
                                assert_eq!(*v, i, "a value is only ever its own id's");
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
