use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::id::SessionId;
use crate::record::Record;
use crate::store::{Capabilities, CasOutcome, SessionStore};

const SHARDS: usize = 16;

/// Settings of a [`CachingStore`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CacheOptions {
    /// Most records kept in the cache (default 10 000); beyond it, entries are evicted.
    pub capacity: usize,
    /// Longest time a cached record is served without asking the remote store (default 5 s).
    pub lifetime: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            lifetime: Duration::from_secs(5),
        }
    }
}

impl CacheOptions {
    /// Sets [`CacheOptions::capacity`].
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets [`CacheOptions::lifetime`].
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }
}

/// A bounded in-process cache in front of a remote store (Redis, SQL, Mongo).
///
/// - Reads are served from the cache while the entry is younger than the cache lifetime and
///   the session has not expired; otherwise they go to the remote store and fill the cache.
/// - Writes, touches and destroys go to the remote store first; the cache is updated only
///   when the remote call succeeded, and the entry is evicted when it failed, so the cache
///   never claims a write the remote store did not take.
/// - A compare-and-set that conflicts evicts the entry, so the manager's re-read goes to the
///   remote store.
///
/// **Trade-off.** With several processes sharing the remote store, another process's write
/// or destroy becomes visible here only when the cached entry's lifetime ends: a destroyed
/// session can be served for up to [`CacheOptions::lifetime`]. Use a short lifetime, or no
/// cache, where logout must take effect everywhere at once.
pub struct CachingStore<R> {
    remote: R,
    shards: Arc<[Mutex<Shard>]>,
    hasher: RandomState,
    options: CacheOptions,
    clock: Arc<dyn Clock>,
}

type Shard = HashMap<Box<str>, Cached>;

struct Cached {
    record: Record,
    /// Served until then: the earlier of the session's expiry and the cache lifetime.
    until: OffsetDateTime,
}

impl<R> fmt::Debug for CachingStore<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<R: SessionStore> CachingStore<R> {
    /// Caches `remote` with the default options.
    pub fn new(remote: R) -> Self {
        Self::with_options(remote, CacheOptions::default())
    }

    /// Caches `remote` with `options`.
    pub fn with_options(remote: R, options: CacheOptions) -> Self {
        Self {
            remote,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            options,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads time from `clock` (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The remote store.
    pub fn remote(&self) -> &R {
        &self.remote
    }

    /// Number of cached records.
    pub fn cached(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, id: &SessionId) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(self.hasher.hash_one(id.as_str()) as usize) % SHARDS])
    }

    fn remember(&self, id: &SessionId, record: &Record) {
        let now = self.clock.now();
        let until = record.expires.min(now + self.options.lifetime);
        if until <= now || self.options.capacity == 0 {
            self.forget(id);
            return;
        }
        let per_shard = self.options.capacity.div_ceil(SHARDS);
        let mut shard = self.shard(id);
        if shard.len() >= per_shard && !shard.contains_key(id.as_str()) {
            shard.retain(|_, c| c.until > now);
            if shard.len() >= per_shard {
                // Random eviction: the hash map's iteration order is randomly seeded.
                if let Some(victim) = shard.keys().next().cloned() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(
            id.as_str().into(),
            Cached {
                record: record.clone(),
                until,
            },
        );
    }

    fn forget(&self, id: &SessionId) {
        self.shard(id).remove(id.as_str());
    }

    fn lookup(&self, id: &SessionId) -> Option<Record> {
        let now = self.clock.now();
        let mut shard = self.shard(id);
        match shard.get(id.as_str()) {
            Some(c) if c.until > now && c.record.expires > now => Some(c.record.clone()),
            Some(_) => {
                shard.remove(id.as_str());
                None
            }
            None => None,
        }
    }

    /// Keeps the cache in step with a remote write: a write the remote store took is cached,
    /// anything else evicts.
    fn after_write(&self, id: &SessionId, record: &Record, written: bool) {
        if written {
            self.remember(id, record);
        } else {
            self.forget(id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl<R: SessionStore> SessionStore for CachingStore<R> {
    fn name(&self) -> &'static str {
        self.remote.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.remote.capabilities()
    }

    fn needs_raw_ids(&self) -> bool {
        self.remote.needs_raw_ids()
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        if let Some(record) = self.lookup(id) {
            return Ok(Some(record));
        }
        let fetched = self.remote.get(id).await;
        match &fetched {
            Ok(Some(record)) => self.remember(id, record),
            _ => self.forget(id),
        }
        fetched
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let result = self.remote.set(id, record).await;
        self.after_write(id, record, result.is_ok());
        result
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let result = self.remote.destroy(id).await;
        self.forget(id);
        result
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let result = self.remote.touch(id, expires).await;
        match (&result, self.lookup(id)) {
            (Ok(true), Some(mut record)) => {
                record.expires = expires;
                self.remember(id, &record);
            }
            _ => self.forget(id),
        }
        result
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let result = self.remote.create(id, record).await;
        self.after_write(id, record, matches!(result, Ok(true)));
        result
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let result = self.remote.update(id, record).await;
        self.after_write(id, record, matches!(result, Ok(true)));
        result
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let result = self.remote.compare_and_set(id, record, expected).await;
        self.after_write(id, record, matches!(result, Ok(CasOutcome::Written)));
        result
    }

    /// Always asks the remote store: a listing must not miss another instance's sessions.
    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        self.remote.owned(owner).await
    }
}
