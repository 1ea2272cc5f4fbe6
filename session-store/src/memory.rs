//! [`MemoryStore`]: a complete in-process backend.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::HashTable;
use time::OffsetDateTime;

use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::id::SessionId;
use crate::payload::shaped_owner;
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
/// - Each record is one allocation holding its id and its encoded payload (see
///   [`Record::encode_payload`]), in shards with their own lock, so concurrent requests
///   rarely wait on each other. A read shares that allocation instead of copying it: values
///   are decoded only when the session asks for them.
/// - Owners ([`Record::owner`]) are indexed exactly: every write, destroy and sweep keeps an
///   owner → ids map in step, so [`SessionStore::owned`] reads only that owner's sessions.
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
    /// Owner → ids of its records. Locked after a shard's lock, never before.
    owners: Mutex<Owners>,
}

/// The owner index of [`MemoryStore`].
#[derive(Default)]
struct Owners(HashMap<Arc<str>, HashSet<Box<str>>>);

impl Owners {
    /// Moves `id` from `old`'s ids to `new`'s.
    fn reindex(&mut self, id: &[u8], old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        let id = String::from_utf8_lossy(id);
        if let Some(old) = old
            && let Some(ids) = self.0.get_mut(old)
        {
            ids.remove(&*id);
            if ids.is_empty() {
                self.0.remove(old);
            }
        }
        if let Some(new) = new {
            match self.0.get_mut(new) {
                Some(ids) => ids.insert(id.into()),
                None => self.0.entry(Arc::from(new)).or_default().insert(id.into()),
            };
        }
    }
}

struct Shard {
    /// Entries by the hash of their id (one hash per operation: its high bits chose the
    /// shard, its low bits the bucket).
    entries: HashTable<Entry>,
    /// Unix nanoseconds.
    next_sweep: i64,
}

/// One record: `bytes` holds the id's length (2 bytes, big-endian), the id, then the
/// payload envelope with its shape ([`Record::encode_shaped`]). Hashed and compared by id.
struct Entry {
    bytes: Arc<[u8]>,
    /// Unix time in nanoseconds (exact for expiries until the year 2262; later ones are
    /// kept as that year, long after any session ends).
    expires: i64,
    version: u64,
}

impl Entry {
    fn new(id: &SessionId, record: &Record) -> Self {
        let id = id.as_str().as_bytes();
        // Ids longer than MAX_ID_LEN never reach a store through the manager; the length
        // still fits the 2-byte prefix for any id up to 64 KiB.
        let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        let id = &id[..usize::from(id_len)];
        // The prefix is assembled on the stack for ids of usual lengths.
        let mut stack = [0u8; 2 + 64];
        let mut heap = Vec::new();
        let prefix: &mut [u8] = if id.len() <= 64 {
            &mut stack[..2 + id.len()]
        } else {
            heap.resize(2 + id.len(), 0);
            &mut heap
        };
        prefix[..2].copy_from_slice(&id_len.to_be_bytes());
        prefix[2..].copy_from_slice(id);
        Self {
            bytes: record.encode_shaped(prefix),
            expires: to_nanos(record.expires),
            version: record.version,
        }
    }

    fn id_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[0], self.bytes[1]]))
    }

    /// The id's bytes.
    fn id(&self) -> &[u8] {
        &self.bytes[2..2 + self.id_len()]
    }

    /// The record's owner, read from the payload (entries keep no copy: at a million
    /// sessions, every byte of an entry costs about two).
    fn owner(&self) -> Option<&str> {
        shaped_owner(&self.bytes, 2 + self.id_len())
    }

    fn live(&self, now: i64) -> bool {
        self.expires > now
    }

    fn record(&self) -> Result<Record> {
        let start = 2 + self.id_len();
        Record::decode_shaped(
            self.bytes.clone(),
            start,
            from_nanos(self.expires),
            self.version,
        )
        .map_err(|e| crate::Error::corrupt("memory", e))
    }
}

/// The bytes an id is hashed and compared by.
fn key(id: &SessionId) -> &[u8] {
    id.as_str().as_bytes()
}

fn now_nanos(clock: &dyn Clock) -> i64 {
    let nanos = clock.now_unix_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

fn interval_nanos(interval: Duration) -> i64 {
    i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX)
}

fn to_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn from_nanos(nanos: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
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
        let first_sweep = now_nanos(&*clock).saturating_add(interval_nanos(sweep_interval));
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashTable::new(),
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
                owners: Mutex::default(),
            }),
        }
    }

    /// Number of records held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| lock(s).entries.len())
            .sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every expired record now; returns how many were removed.
    pub fn sweep(&self) -> usize {
        let now = now_nanos(&*self.inner.clock);
        self.inner
            .shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let before = shard.entries.len();
                retain_live(&mut shard, now, &self.inner.owners);
                shard.next_sweep = now.saturating_add(interval_nanos(self.inner.sweep_interval));
                before - shard.entries.len()
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
    fn shard(&self, id: &SessionId, now: i64) -> Slot<'_> {
        let hash = self.inner.hasher.hash_one(key(id));
        // Bits 32 and up choose the shard; the table of a shard indexes its buckets with the
        // low bits, so the two never correlate.
        let index = ((hash >> 32) as usize) % SHARDS;
        let mut shard = lock(&self.inner.shards[index]);
        if now >= shard.next_sweep {
            retain_live(&mut shard, now, &self.inner.owners);
            shard.next_sweep = now.saturating_add(interval_nanos(self.inner.sweep_interval));
        }
        Slot {
            shard,
            hash,
            hasher: &self.inner.hasher,
            owners: &self.inner.owners,
        }
    }
}

/// Drops the expired entries of `shard`, and their ids from the owner index.
fn retain_live(shard: &mut Shard, now: i64, owners: &Mutex<Owners>) {
    let mut index = None;
    shard.entries.retain(|e| {
        let live = e.live(now);
        if let Some(owner) = e.owner().filter(|_| !live) {
            let index = index.get_or_insert_with(|| lock(owners));
            index.reindex(e.id(), Some(owner), None);
        }
        live
    });
}

/// A locked shard and the hash of the id being worked on.
struct Slot<'a> {
    shard: MutexGuard<'a, Shard>,
    hash: u64,
    hasher: &'a std::collections::hash_map::RandomState,
    owners: &'a Mutex<Owners>,
}

impl Slot<'_> {
    /// The live entry of `id`.
    fn live(&mut self, id: &SessionId, now: i64) -> Option<&mut Entry> {
        let key = key(id);
        self.shard
            .entries
            .find_mut(self.hash, |e| e.id() == key)
            .filter(|e| e.live(now))
    }

    /// Stores `entry` in place of any entry of the same id.
    fn put(&mut self, entry: Entry) {
        let hasher = self.hasher;
        let owners = self.owners;
        match self.shard.entries.entry(
            self.hash,
            |e| e.id() == entry.id(),
            |e| hasher.hash_one(e.id()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                replace(owners, slot.get_mut(), entry);
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                if let Some(owner) = entry.owner() {
                    lock(owners).reindex(entry.id(), None, Some(owner));
                }
                slot.insert(entry);
            }
        }
    }

    /// Removes the entry of `id`, if any.
    fn remove(&mut self, id: &SessionId) {
        let key = key(id);
        if let Ok(slot) = self.shard.entries.find_entry(self.hash, |e| e.id() == key) {
            let (gone, _) = slot.remove();
            if let Some(owner) = gone.owner() {
                lock(self.owners).reindex(gone.id(), Some(owner), None);
            }
        }
    }
}

/// Overwrites the entry `old` with `new` (same id), keeping the owner index in step.
fn replace(owners: &Mutex<Owners>, old: &mut Entry, new: Entry) {
    let (was, is) = (old.owner(), new.owner());
    if was != is {
        lock(owners).reindex(new.id(), was, is);
    }
    *old = new;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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

    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        let ids: Vec<Box<str>> = match lock(&self.inner.owners).0.get(owner) {
            Some(ids) => ids.iter().cloned().collect(),
            None => return Ok(Vec::new()),
        };
        let mut owned = Vec::with_capacity(ids.len());
        for id in ids {
            let id = SessionId::new(String::from(id));
            if let Some(record) = self.get(&id).await?
                && record.owner.as_deref() == Some(owner)
            {
                owned.push((id, record));
            }
        }
        Ok(owned)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let now = now_nanos(&*self.inner.clock);
        let mut slot = self.shard(id, now);
        let entry = match slot.live(id, now) {
            Some(e) => Entry {
                bytes: e.bytes.clone(),
                expires: e.expires,
                version: e.version,
            },
            None => return Ok(None),
        };
        drop(slot);
        entry.record().map(Some)
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let entry = Entry::new(id, record);
        let now = now_nanos(&*self.inner.clock);
        self.shard(id, now).put(entry);
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let now = now_nanos(&*self.inner.clock);
        self.shard(id, now).remove(id);
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let now = now_nanos(&*self.inner.clock);
        match self.shard(id, now).live(id, now) {
            Some(e) => {
                e.expires = to_nanos(expires);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let entry = Entry::new(id, record);
        let now = now_nanos(&*self.inner.clock);
        let mut slot = self.shard(id, now);
        if slot.live(id, now).is_some() {
            return Ok(false);
        }
        slot.put(entry);
        Ok(true)
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let entry = Entry::new(id, record);
        let now = now_nanos(&*self.inner.clock);
        let mut slot = self.shard(id, now);
        let owners = slot.owners;
        match slot.live(id, now) {
            Some(e) => {
                replace(owners, e, entry);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let entry = Entry::new(id, record);
        let now = now_nanos(&*self.inner.clock);
        let mut slot = self.shard(id, now);
        let owners = slot.owners;
        match slot.live(id, now) {
            Some(e) if e.version != expected => Ok(CasOutcome::Conflict),
            Some(e) => {
                replace(owners, e, entry);
                Ok(CasOutcome::Written)
            }
            None => Ok(CasOutcome::Missing),
        }
    }
}
