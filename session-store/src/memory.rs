//! [`MemoryStore`]: a complete in-process backend.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::id::SessionId;
use crate::record::Record;
use crate::store::{Capabilities, CasOutcome, SessionStore};

const SHARDS: usize = 64;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Sessions in this process's memory: for development, tests, and single-process services.
///
/// - Implements every optional operation ([`Capabilities::ALL`]) atomically.
/// - Expiry is checked on every read, and expired records are reclaimed without being read:
///   each of the 64 shards is swept whenever an operation reaches it more than the sweep
///   interval (default 60 s) after its last sweep, and [`MemoryStore::spawn_sweeper`] adds a
///   background sweep for processes that may go idle.
/// - Records are kept as one compact encoded payload each (see
///   [`Record::encode_payload`]), in shards with their own lock, so concurrent requests
///   rarely wait on each other.
/// - `Clone` is cheap and clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Mutex<Shard>]>,
    clock: Arc<dyn Clock>,
    sweep_interval: Duration,
}

struct Shard {
    map: HashMap<Box<str>, Entry>,
    next_sweep: OffsetDateTime,
}

struct Entry {
    payload: Box<[u8]>,
    expires: OffsetDateTime,
    version: u64,
}

impl Entry {
    fn new(record: &Record) -> Self {
        Self {
            payload: record.encode_payload().into_boxed_slice(),
            expires: record.expires,
            version: record.version,
        }
    }

    fn live(&self, now: OffsetDateTime) -> bool {
        self.expires > now
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sweep_interval", &self.inner.sweep_interval)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that reads time from `clock` (share it with the manager in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::build(clock, DEFAULT_SWEEP_INTERVAL)
    }

    /// Sets how often each shard is swept of expired records (default 60 s; at most a day).
    pub fn with_sweep_interval(self, interval: Duration) -> Self {
        let interval = interval.min(Duration::from_secs(24 * 3600));
        Self::build(self.inner.clock.clone(), interval)
    }

    fn build(clock: Arc<dyn Clock>, sweep_interval: Duration) -> Self {
        let first_sweep = clock.now() + sweep_interval;
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    next_sweep: first_sweep,
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                hasher: Default::default(),
                shards,
                clock,
                sweep_interval,
            }),
        }
    }

    /// Number of records held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired record now; returns how many were removed.
    pub fn sweep(&self) -> usize {
        let now = self.inner.clock.now();
        self.inner
            .shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let before = shard.map.len();
                shard.map.retain(|_, e| e.live(now));
                shard.next_sweep = now + self.inner.sweep_interval;
                before - shard.map.len()
            })
            .sum()
    }

    /// Spawns a tokio task that calls [`MemoryStore::sweep`] every `period` until the last
    /// clone of the store is dropped. Needs a tokio runtime with timers enabled.
    pub fn spawn_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                MemoryStore { inner }.sweep();
            }
        })
    }

    /// Locks the shard of `id`, sweeping it first if its sweep is due.
    fn shard(&self, id: &SessionId, now: OffsetDateTime) -> MutexGuard<'_, Shard> {
        let index = (self.inner.hasher.hash_one(id.as_str()) as usize) % SHARDS;
        let mut shard = lock(&self.inner.shards[index]);
        if now >= shard.next_sweep {
            shard.map.retain(|_, e| e.live(now));
            shard.next_sweep = now + self.inner.sweep_interval;
        }
        shard
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard lock cannot leave a map half-updated (every mutation is a
    // single insert or remove), so a poisoned lock is safe to keep using.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let now = self.inner.clock.now();
        let shard = self.shard(id, now);
        match shard.map.get(id.as_str()) {
            Some(e) if e.live(now) => Record::decode_payload(&e.payload, e.expires, e.version)
                .map(Some)
                .map_err(|e| crate::Error::corrupt("memory", e)),
            _ => Ok(None),
        }
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let entry = Entry::new(record);
        let now = self.inner.clock.now();
        self.shard(id, now).map.insert(id.as_str().into(), entry);
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let now = self.inner.clock.now();
        self.shard(id, now).map.remove(id.as_str());
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let now = self.inner.clock.now();
        let mut shard = self.shard(id, now);
        match shard.map.get_mut(id.as_str()) {
            Some(e) if e.live(now) => {
                e.expires = expires;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let entry = Entry::new(record);
        let now = self.inner.clock.now();
        let mut shard = self.shard(id, now);
        match shard.map.get(id.as_str()) {
            Some(e) if e.live(now) => Ok(false),
            _ => {
                shard.map.insert(id.as_str().into(), entry);
                Ok(true)
            }
        }
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let entry = Entry::new(record);
        let now = self.inner.clock.now();
        let mut shard = self.shard(id, now);
        match shard.map.get_mut(id.as_str()) {
            Some(e) if e.live(now) => {
                *e = entry;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let entry = Entry::new(record);
        let now = self.inner.clock.now();
        let mut shard = self.shard(id, now);
        match shard.map.get_mut(id.as_str()) {
            Some(e) if e.live(now) => {
                if e.version != expected {
                    return Ok(CasOutcome::Conflict);
                }
                *e = entry;
                Ok(CasOutcome::Written)
            }
            _ => Ok(CasOutcome::Missing),
        }
    }
}
