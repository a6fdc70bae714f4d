//! The sessions and platform JWTs this process keeps in memory, and how they stay true:
//! every instance drops its copy of a changed session, and every remembered JWT when a link
//! changes, on the store's `invalidate` channel; a read that raced an invalidation is not
//! kept.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{cache, now, AccountPass, SessionRecord, Sessions};
use crate::identity::OpaqueId;
use crate::passport::Passport;
use crate::store::StoreError;

/// The channel on which instances tell each other which cached sessions to drop.
pub const INVALIDATION_CHANNEL: &str = "invalidate";

/// The invalidation message (after `{instance}:`) that says a link was made or removed.
const LINKS_CHANGED: &str = "links";

impl Sessions {
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
    pub(super) async fn invalidate(&self, id: &OpaqueId) {
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
        let record = match self.load(id).await {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(e) => return self.stale(id, e),
        };
        Ok(Some(self.remember(id, record, generation, passport)))
    }

    /// A session the store cannot be read for: served as it was cached, when its entry
    /// expired less than `cache_stale_if_error` ago (a Redis failover, a restart) and the
    /// session itself has not. An entry a sign-out or another instance's change removed is
    /// not there to serve. Otherwise the store's error.
    fn stale(&self, id: &OpaqueId, error: StoreError) -> Result<Option<Arc<Passport>>, StoreError> {
        let resident = self
            .cache
            .as_ref()
            .and_then(|cache| cache.stale(id))
            .filter(|resident| resident.expires_at > now());
        match resident {
            Some(resident) => {
                self.store.metrics().session_cache_stale.inc();
                tracing::debug!(session = ?id, error = %error, "store unreadable: the session is served from its expired cache entry");
                Ok(Some(resident))
            }
            None => Err(error),
        }
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
    pub(super) fn cache_refreshed(
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
}
