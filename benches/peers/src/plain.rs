//! The simplest in-memory stores that pass the conformance suite, to measure what
//! `session_store::MemoryStore`'s layout buys (issue #25): each shard is a
//! `Mutex<HashMap<String, _>>` and holds either a clone of the [`Record`]
//! ([`PlainMemoryStore`]) or its payload envelope in a box of its own
//! ([`EncodedMemoryStore`]). Same semantics as `MemoryStore`: expiry checked on every read,
//! each shard swept of expired records when an operation reaches it after the sweep interval,
//! every optional operation ([`Capabilities::ALL`]), an owner → ids index kept by every
//! write.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use session_store::time::OffsetDateTime;
use session_store::{
    Capabilities, CasOutcome, Clock, Error, Record, Result, SessionId, SessionStore, SystemClock,
};

const SHARDS: usize = 64;
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How a [`PlainStore`] keeps one record.
pub trait Kept: Send + Sync + 'static {
    /// What is kept of `record`.
    fn keep(record: &Record) -> Self;
    /// The record back.
    fn record(&self) -> Result<Record>;
    /// When the record expires.
    fn expires(&self) -> OffsetDateTime;
    /// Moves the expiry.
    fn set_expires(&mut self, expires: OffsetDateTime);
    /// The record's version.
    fn version(&self) -> u64;
    /// The record's owner.
    fn owner(&self) -> Option<&str>;
}

/// The record itself: a read clones it (its data shares the stored values until changed).
impl Kept for Record {
    fn keep(record: &Record) -> Self {
        record.clone()
    }
    fn record(&self) -> Result<Record> {
        Ok(self.clone())
    }
    fn expires(&self) -> OffsetDateTime {
        self.expires
    }
    fn set_expires(&mut self, expires: OffsetDateTime) {
        self.expires = expires;
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
}

/// The record's payload envelope ([`Record::encode_payload`]) in a box, beside its expiry,
/// version and owner; a read decodes a copy of it ([`Record::decode_payload`]).
pub struct Encoded {
    payload: Box<[u8]>,
    expires: OffsetDateTime,
    version: u64,
    owner: Option<Box<str>>,
}

impl Kept for Encoded {
    fn keep(record: &Record) -> Self {
        Self {
            payload: record.encode_payload().into_boxed_slice(),
            expires: record.expires,
            version: record.version,
            owner: record.owner.as_deref().map(Box::from),
        }
    }
    fn record(&self) -> Result<Record> {
        Record::decode_payload(&self.payload, self.expires, self.version)
            .map_err(|e| Error::corrupt("plain-encoded", e))
    }
    fn expires(&self) -> OffsetDateTime {
        self.expires
    }
    fn set_expires(&mut self, expires: OffsetDateTime) {
        self.expires = expires;
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
}

/// Sessions in 64 `Mutex<HashMap<String, K>>`s.
pub struct PlainStore<K> {
    inner: Arc<Inner<K>>,
}

/// [`PlainStore`] keeping [`Record`] clones.
pub type PlainMemoryStore = PlainStore<Record>;
/// [`PlainStore`] keeping payload envelopes ([`Encoded`]).
pub type EncodedMemoryStore = PlainStore<Encoded>;

struct Inner<K> {
    hasher: RandomState,
    shards: Box<[Mutex<Shard<K>>]>,
    /// Owner → ids of its records. Locked after a shard's lock, never before.
    owners: Mutex<HashMap<String, HashSet<String>>>,
    clock: Arc<dyn Clock>,
    sweep_interval: Duration,
}

struct Shard<K> {
    map: HashMap<String, K>,
    next_sweep: OffsetDateTime,
}

impl<K> Clone for PlainStore<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Kept> Default for PlainStore<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Kept> PlainStore<K> {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that reads time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::build(clock, SWEEP_INTERVAL)
    }

    /// Sets how often each shard is swept of expired records (default 60 s).
    pub fn with_sweep_interval(self, interval: Duration) -> Self {
        Self::build(self.inner.clock.clone(), interval)
    }

    fn build(clock: Arc<dyn Clock>, sweep_interval: Duration) -> Self {
        let next_sweep = clock.now() + sweep_interval;
        Self {
            inner: Arc::new(Inner {
                hasher: RandomState::new(),
                shards: (0..SHARDS)
                    .map(|_| {
                        Mutex::new(Shard {
                            map: HashMap::new(),
                            next_sweep,
                        })
                    })
                    .collect(),
                owners: Mutex::default(),
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
            .map(|shard| self.sweep_shard(&mut lock(shard), now))
            .sum()
    }

    fn sweep_shard(&self, shard: &mut Shard<K>, now: OffsetDateTime) -> usize {
        let before = shard.map.len();
        shard.map.retain(|id, kept| {
            let live = kept.expires() > now;
            if !live {
                self.reindex(id, kept.owner(), None);
            }
            live
        });
        shard.next_sweep = now + self.inner.sweep_interval;
        before - shard.map.len()
    }

    /// The time, and the locked shard of `id`, swept first if its sweep is due.
    fn shard(&self, id: &SessionId) -> (OffsetDateTime, MutexGuard<'_, Shard<K>>) {
        let now = self.inner.clock.now();
        let index = (self.inner.hasher.hash_one(id.as_str()) as usize) % SHARDS;
        let mut shard = lock(&self.inner.shards[index]);
        if now >= shard.next_sweep {
            self.sweep_shard(&mut shard, now);
        }
        (now, shard)
    }

    /// Moves `id` from `old`'s ids to `new`'s.
    fn reindex(&self, id: &str, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        let mut owners = lock(&self.inner.owners);
        if let Some(old) = old
            && let Some(ids) = owners.get_mut(old)
        {
            ids.remove(id);
            if ids.is_empty() {
                owners.remove(old);
            }
        }
        if let Some(new) = new {
            owners
                .entry(new.to_owned())
                .or_default()
                .insert(id.to_owned());
        }
    }

    /// Stores `record` under `id` in the locked `shard`, replacing whatever was there.
    fn put(&self, shard: &mut Shard<K>, id: &SessionId, record: &Record) {
        let old = shard.map.insert(id.as_str().to_owned(), K::keep(record));
        self.reindex(
            id.as_str(),
            old.as_ref().and_then(K::owner),
            record.owner.as_deref(),
        );
    }
}

fn live<'a, K: Kept>(
    shard: &'a mut Shard<K>,
    id: &SessionId,
    now: OffsetDateTime,
) -> Option<&'a mut K> {
    shard
        .map
        .get_mut(id.as_str())
        .filter(|kept| kept.expires() > now)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl<K: Kept> SessionStore for PlainStore<K> {
    fn name(&self) -> &'static str {
        "plain-memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let (now, mut shard) = self.shard(id);
        live(&mut shard, id, now).map(|k| k.record()).transpose()
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let (_, mut shard) = self.shard(id);
        self.put(&mut shard, id, record);
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let (_, mut shard) = self.shard(id);
        if let Some(old) = shard.map.remove(id.as_str()) {
            self.reindex(id.as_str(), old.owner(), None);
        }
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let (now, mut shard) = self.shard(id);
        Ok(live(&mut shard, id, now)
            .map(|k| k.set_expires(expires))
            .is_some())
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let (now, mut shard) = self.shard(id);
        if live(&mut shard, id, now).is_some() {
            return Ok(false);
        }
        self.put(&mut shard, id, record);
        Ok(true)
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let (now, mut shard) = self.shard(id);
        if live(&mut shard, id, now).is_none() {
            return Ok(false);
        }
        self.put(&mut shard, id, record);
        Ok(true)
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let (now, mut shard) = self.shard(id);
        let Some(version) = live(&mut shard, id, now).map(|k| k.version()) else {
            return Ok(CasOutcome::Missing);
        };
        if version != expected {
            return Ok(CasOutcome::Conflict);
        }
        self.put(&mut shard, id, record);
        Ok(CasOutcome::Written)
    }

    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        let ids: Vec<String> = match lock(&self.inner.owners).get(owner) {
            Some(ids) => ids.iter().cloned().collect(),
            None => return Ok(Vec::new()),
        };
        let mut owned = Vec::with_capacity(ids.len());
        for id in ids {
            let id = SessionId::new(id);
            if let Some(record) = self.get(&id).await?
                && record.owner.as_deref() == Some(owner)
            {
                owned.push((id, record));
            }
        }
        Ok(owned)
    }
}
