//! A near-cache for stores whose server announces changes: sessions kept in this process
//! and served without a round trip until the server says another client changed them.
//!
//! This module is the part every such store shares; the store brings the announcements.
//! The Redis store feeds it from client tracking (RESP3 invalidation pushes), the PostgreSQL
//! store from `LISTEN`/`NOTIFY` (a trigger announces every changed row).
//!
//! How a store uses it:
//! - A connection that delivers the announcements is up: [`NearCache::arm`] with that
//!   connection's generation. It is lost, or can no longer be trusted:
//!   [`NearCache::disarm`] (the cache is emptied and not used until armed again).
//! - A read: [`NearCache::get`]; on a miss, [`NearCache::begin`] before sending the request
//!   and [`NearCache::end`] with what came back. A write: the same, with `local_change`.
//! - An announcement: [`NearCache::invalidate`] with the key and, where the server names
//!   the row version that caused it, that version's token.
//!
//! Why a read never caches data older than an announcement the store received: a request
//! is a [`Flight`] from before it is sent until its reply is cached. An announcement of its
//! key that arrives in between stops the caching (unless it names the very row version
//! the reply holds), one that arrives after drops the cached copy (unless it names the
//! cached version). So the store must call `begin` before its request can reach the server,
//! and announcements must be delivered no earlier than the change they announce.
//! Replies are cached only while the generation that armed the cache is still armed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::record::Record;

/// The bounds of a store's near-cache (the Redis store's `with_near_cache`, the PostgreSQL
/// store's `with_near_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearCacheConfig {
    max_entries: usize,
    max_bytes: usize,
    max_age: Duration,
    client_name: String,
}

impl Default for NearCacheConfig {
    /// 10,000 sessions and 16 MiB of session data, each kept at most 60 seconds;
    /// connections named `session-store-near-cache`.
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 16 << 20,
            max_age: Duration::from_secs(60),
            client_name: "session-store-near-cache".to_owned(),
        }
    }
}

impl NearCacheConfig {
    /// The default bounds: 10,000 sessions, 16 MiB, 60 seconds.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many sessions (at least 1); the oldest cached are dropped first.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// At most this many bytes of keys and session data (estimated per entry as the key,
    /// the data's keys and values, and 128 bytes of bookkeeping).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// A cached session is read from the server again once it has been cached this long,
    /// even if no invalidation came (at least 1 ms).
    ///
    /// A backstop, not the coherence mechanism: it bounds how long a change the server did
    /// not announce can go unseen (each store's docs say what its server may leave
    /// unannounced, e.g. Redis's evictions under `maxmemory` during the store's own
    /// commands).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age.max(Duration::from_millis(1));
        self
    }

    /// The name the cache's connections give themselves (Redis `CLIENT SETNAME`,
    /// PostgreSQL `application_name`), so operators can tell them apart; spaces and control
    /// characters become `_`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name
            .into()
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect();
        self
    }

    /// The name set by [`NearCacheConfig::client_name`].
    pub fn name(&self) -> &str {
        &self.client_name
    }
}

/// Counters of a store's near-cache ([`NearCache::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Reads answered from the cache, without the network.
    pub hits: u64,
    /// Reads that went to the server (not cached, expired, or the cache not armed).
    pub misses: u64,
    /// Sessions dropped because the server said another client changed them.
    pub invalidations: u64,
    /// Times the whole cache was emptied: the invalidation channel was lost, the server
    /// flushed its database, or its counters showed keys dropped without notice.
    pub flushes: u64,
    /// Sessions dropped to stay within the bounds.
    pub evictions: u64,
    /// Sessions cached now.
    pub entries: u64,
    /// Estimated bytes cached now.
    pub bytes: u64,
    /// Whether the cache is in use now (the connection that delivers the server's
    /// announcements is up).
    pub armed: bool,
}

/// [`NearCache::armed`] when no connection feeds the cache.
const NO_GENERATION: u64 = u64::MAX;

/// Bookkeeping bytes counted per entry.
const ENTRY_OVERHEAD: usize = 128;

/// Older tags remembered per key ([`Cached::superseded`]).
const MAX_SUPERSEDED: usize = 8;

/// The cache of one store (shared by its clones). See the [module docs](self).
pub struct NearCache {
    config: NearCacheConfig,
    state: Mutex<State>,
    /// The generation in `state.armed`, readable without the lock ([`NO_GENERATION`]: none).
    armed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The generation of the connection whose tracking feeds the cache; `None`: not armed.
    armed: Option<u64>,
    entries: HashMap<Key, Cached>,
    /// Keys in insertion order with the stamp they were inserted with; an entry replaced or
    /// removed since leaves a stale pair, skipped when evicting.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    stamp: u64,
    /// Requests in flight per key.
    flights: HashMap<Key, Flights>,
}

/// A session's key, shared by the maps that name it.
type Key = Arc<[u8]>;

struct Cached {
    record: Record,
    /// The row version's tag, where the server names versions ([`NearCache::end_tagged`]).
    tag: Option<u64>,
    /// Tags of older versions of the row, written over by this process: their late
    /// announcements do not drop the copy.
    superseded: Vec<u64>,
    bytes: usize,
    stamp: u64,
    /// When it was cached, for [`NearCacheConfig::max_age`].
    at: Instant,
}

/// Which row version a cached record is, where the server names versions.
struct Version {
    tag: Option<u64>,
    superseded: Vec<u64>,
}

#[derive(Default)]
struct Flights {
    count: u32,
    /// Bumped by every change of the key (an announcement, a local change, a flush); a
    /// request caches its reply only if the count did not move while it was in flight, or
    /// if every change since was an announcement of the row version the reply holds.
    changes: u64,
    /// The announcements that named a row version: the change number each one took, and
    /// the version's tag. Kept while requests of the key are in flight.
    announced: Vec<(u64, u64)>,
    /// Tags of the versions a local change in flight writes over (the one cached when it
    /// began, and those that one had written over): announcements of them are late news.
    superseded: Vec<u64>,
}

impl Flights {
    /// Whether the changes after number `since` leave a reply of row version `tag` good to
    /// cache: there were none, or each announced that very version.
    fn settled(&self, since: u64, tag: Option<u64>) -> bool {
        let later = self.changes - since;
        later == 0
            || tag.is_some_and(|tag| {
                let same = self
                    .announced
                    .iter()
                    .filter(|&&(n, t)| n > since && t == tag)
                    .count();
                same as u64 == later
            })
    }
}

/// A request in flight for one key, begun by [`NearCache::begin`].
///
/// Ended by [`NearCache::end`]; a flight dropped without it (its request's future was
/// cancelled, e.g. by the manager's store timeout) is ended as a request whose outcome is
/// unknown.
pub struct Flight<'a> {
    cache: &'a NearCache,
    /// Set by [`NearCache::end`].
    ended: bool,
    key: Key,
    armed: Option<u64>,
    changes: u64,
    /// The request changes the key: requests of the key still in flight when it ends
    /// must not cache what they read either (they may have read before it).
    local_change: bool,
    /// The copy a local change took out of the cache.
    replaced: Option<Record>,
}

impl Flight<'_> {
    /// The copy of the key this local change took out of the cache when it began, if the
    /// cache held one: a store whose write does not return the whole record (a touch) can
    /// cache this copy, changed as the write changed it.
    pub fn replaced(&self) -> Option<&Record> {
        self.replaced.as_ref()
    }
}

impl NearCache {
    /// An empty cache, unarmed.
    pub fn new(config: NearCacheConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            armed: AtomicU64::new(NO_GENERATION),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change below leaves the state consistent between statements that can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached record of `key`, if the cache is armed and holds it unexpired.
    pub fn get(&self, key: &str, now: OffsetDateTime) -> Option<Record> {
        let mut state = self.state();
        let found = match state.armed {
            Some(_) => match state.entries.get(key.as_bytes()) {
                Some(cached)
                    if !cached.record.is_expired(now)
                        && cached.at.elapsed() < self.config.max_age =>
                {
                    Some(cached.record.clone())
                }
                Some(_) => {
                    state.remove(key.as_bytes());
                    None
                }
                None => None,
            },
            None => None,
        };
        drop(state);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Notes a request for `key` about to be sent. `local_change`: the request changes the
    /// key, so what the other requests of the key in flight at its start or at its end bring
    /// back is not cached (their replies may come from before the change, and be handled
    /// after it).
    pub fn begin(&self, key: &str, local_change: bool) -> Flight<'_> {
        let mut state = self.state();
        let key: Key = key.as_bytes().into();
        let replaced = if local_change { state.take(&key) } else { None };
        let armed = state.armed;
        let flights = state.flights.entry(key.clone()).or_default();
        let mut replaced_record = None;
        if local_change {
            flights.changes += 1;
            if let Some(cached) = replaced {
                // The change is sent after the cached version was committed: it writes over
                // it.
                if let Some(tag) = cached.tag {
                    flights.superseded.extend(cached.superseded);
                    flights.superseded.push(tag);
                    let excess = flights.superseded.len().saturating_sub(MAX_SUPERSEDED);
                    flights.superseded.drain(..excess);
                }
                replaced_record = Some(cached.record);
            }
        }
        flights.count += 1;
        let changes = flights.changes;
        Flight {
            cache: self,
            ended: false,
            key,
            armed,
            changes,
            local_change,
            replaced: replaced_record,
        }
    }

    /// Ends `flight`: caches `record` if nothing changed the key meanwhile and the same
    /// channel is still armed; with `None`, drops whatever is cached for the key.
    pub fn end(&self, flight: Flight<'_>, record: Option<&Record>) {
        self.end_tagged(flight, record.map(|record| (record, None)));
    }

    /// [`NearCache::end`] for a server that names row versions: `tag` identifies the row
    /// version `record` was read from or written as (PostgreSQL: the id of the transaction
    /// that wrote it). Announcements that name that same version, such as the echo of the
    /// store's own write, neither stop the caching nor drop the copy.
    pub fn end_tagged(&self, mut flight: Flight<'_>, record: Option<(&Record, Option<u64>)>) {
        flight.ended = true;
        let mut state = self.state();
        let tag = record.and_then(|(_, tag)| tag);
        let superseded = match (tag, state.flights.get(&flight.key)) {
            (Some(_), Some(flights)) => flights.superseded.clone(),
            _ => Vec::new(),
        };
        let unchanged = state.land(&flight, tag);
        match record {
            Some((record, tag))
                if unchanged && flight.armed.is_some() && state.armed == flight.armed =>
            {
                let bytes = flight.key.len() + record.data_size() + ENTRY_OVERHEAD;
                if bytes <= self.config.max_bytes {
                    let version = Version { tag, superseded };
                    state.insert(flight.key.clone(), record.clone(), version, bytes);
                    let evicted = state.evict(&self.config);
                    self.evictions.fetch_add(evicted, Ordering::Relaxed);
                } else {
                    state.remove(&flight.key);
                }
            }
            // A read overtaken by a change: whatever the cache holds now came after it (the
            // change's own reply, or nothing once invalidated).
            _ if !unchanged && !flight.local_change => {}
            _ => state.remove(&flight.key),
        }
    }

    /// The connection of `generation` announces that `key` changed; `tag`, where the server
    /// names it, identifies the row version the change left (`None`: unknown, or deleted).
    /// The cached copy is dropped unless it is that very version.
    pub fn invalidate(&self, generation: u64, key: &[u8], tag: Option<u64>) {
        let mut state = self.state();
        if state.armed != Some(generation) {
            return;
        }
        // The cached version itself, or one this process wrote over: nothing new.
        let current = state.entries.get(key).is_some_and(|cached| {
            tag.is_some_and(|tag| cached.tag == Some(tag) || cached.superseded.contains(&tag))
        });
        if !current && state.entries.contains_key(key) {
            state.remove(key);
            self.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(flights) = state.flights.get_mut(key) {
            if tag.is_some_and(|tag| flights.superseded.contains(&tag)) {
                return;
            }
            flights.changes += 1;
            if let Some(tag) = tag {
                let n = flights.changes;
                flights.announced.push((n, tag));
            }
        }
    }

    /// The server may have dropped keys without telling the connection of `generation`,
    /// or announces that everything changed (Redis `FLUSHDB`): the cache is emptied and
    /// stays armed.
    pub fn flush(&self, generation: u64) {
        let mut state = self.state();
        if state.armed == Some(generation) {
            state.flush();
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection of `generation` delivers the server's announcements from now on: the
    /// cache starts, empty, fed by it.
    pub fn arm(&self, generation: u64) {
        let mut state = self.state();
        state.flush();
        state.armed = Some(generation);
        self.armed.store(generation, Ordering::Relaxed);
    }

    /// Whether the connection of `generation` feeds the cache now.
    pub fn is_armed_by(&self, generation: u64) -> bool {
        self.armed.load(Ordering::Relaxed) == generation
    }

    /// The connection of `generation` is lost or discarded: if it fed the cache, the cache
    /// is emptied and unused until another connection arms it.
    pub fn disarm(&self, generation: u64) {
        let mut state = self.state();
        if state.armed == Some(generation) {
            state.armed = None;
            self.armed.store(NO_GENERATION, Ordering::Relaxed);
            state.flush();
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The name its connections give themselves.
    pub fn client_name(&self) -> &str {
        self.config.name()
    }

    /// Its counters.
    pub fn stats(&self) -> NearCacheStats {
        let state = self.state();
        NearCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: state.entries.len() as u64,
            bytes: state.bytes as u64,
            armed: state.armed.is_some(),
        }
    }
}

impl State {
    /// Takes `flight` off its key's requests in flight: whether its reply, of row version
    /// `tag`, is still good to cache ([`Flights::settled`]). A local change also marks the
    /// requests still in flight as changed.
    fn land(&mut self, flight: &Flight<'_>, tag: Option<u64>) -> bool {
        let (unchanged, last) = match self.flights.get_mut(&flight.key) {
            Some(flights) => {
                flights.count -= 1;
                let unchanged = flights.settled(flight.changes, tag);
                if flight.local_change {
                    flights.changes += 1;
                }
                (unchanged, flights.count == 0)
            }
            None => (false, false),
        };
        if last {
            self.flights.remove(&flight.key);
        }
        unchanged
    }

    fn remove(&mut self, key: &[u8]) {
        self.take(key);
    }

    fn take(&mut self, key: &[u8]) -> Option<Cached> {
        let cached = self.entries.remove(key)?;
        self.bytes -= cached.bytes;
        Some(cached)
    }

    fn insert(&mut self, key: Key, record: Record, version: Version, bytes: usize) {
        self.stamp += 1;
        let stamp = self.stamp;
        self.order.push_back((key.clone(), stamp));
        let cached = Cached {
            record,
            tag: version.tag,
            superseded: version.superseded,
            bytes,
            stamp,
            at: Instant::now(),
        };
        self.bytes += bytes;
        if let Some(old) = self.entries.insert(key, cached) {
            self.bytes -= old.bytes;
        }
    }

    /// Drops the oldest entries until the bounds hold; how many were dropped.
    fn evict(&mut self, config: &NearCacheConfig) -> u64 {
        let mut evicted = 0;
        while self.entries.len() > config.max_entries || self.bytes > config.max_bytes {
            let Some((key, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|c| c.stamp == stamp) {
                self.remove(&key);
                evicted += 1;
            }
        }
        // Stale pairs pile up when entries are replaced often: rebuild the order when it
        // holds many more pairs than entries.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(key, stamp)| entries.get(key).is_some_and(|c| c.stamp == *stamp));
        }
        evicted
    }

    fn flush(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
        for flights in self.flights.values_mut() {
            flights.changes += 1;
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Cancelled: a change may or may not have reached the server.
        let mut state = self.cache.state();
        state.land(self, None);
        if self.local_change {
            state.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::Codec;

    fn record(version: u64) -> Record {
        let mut record = Record::new(
            OffsetDateTime::now_utc() + Duration::from_secs(600),
            Codec::MessagePack,
        );
        record.version = version;
        record
    }

    fn cached_version(cache: &NearCache, key: &str) -> Option<u64> {
        cache.get(key, OffsetDateTime::now_utc()).map(|r| r.version)
    }

    fn armed() -> NearCache {
        let cache = NearCache::new(NearCacheConfig::new());
        cache.arm(0);
        cache
    }

    #[test]
    fn a_read_overlapping_a_local_write_is_not_cached() {
        // Read begun after the write, ended after it: its reply may predate the write.
        let cache = armed();
        let write = cache.begin("k", true);
        let read = cache.begin("k", false);
        cache.end(write, Some(&record(2)));
        cache.end(read, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), Some(2));
        // Read begun before the write, ended after it.
        let cache = armed();
        let read = cache.begin("k", false);
        let write = cache.begin("k", true);
        cache.end(write, Some(&record(2)));
        cache.end(read, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), Some(2));
        // Two local writes ending out of order: neither is trusted.
        let cache = armed();
        let first = cache.begin("k", true);
        let second = cache.begin("k", true);
        cache.end(second, Some(&record(3)));
        cache.end(first, Some(&record(2)));
        assert_ne!(cached_version(&cache, "k"), Some(2));
    }

    #[test]
    fn a_cancelled_request_leaves_no_flight_and_no_trusted_copy() {
        let cache = armed();
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        drop(cache.begin("k", false));
        assert_eq!(
            cached_version(&cache, "k"),
            Some(1),
            "a cancelled read changes nothing"
        );
        let reader = cache.begin("k", false);
        drop(cache.begin("k", true));
        assert_eq!(
            cached_version(&cache, "k"),
            None,
            "a cancelled write may have landed"
        );
        cache.end(reader, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), None);
        assert!(cache.state().flights.is_empty(), "no flight left behind");
    }

    #[test]
    fn an_invalidation_during_a_flight_stops_its_caching() {
        let cache = armed();
        let read = cache.begin("k", false);
        cache.invalidate(0, b"k", None);
        cache.end(read, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), None);
        // After it, the copy is dropped.
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), Some(1));
        cache.invalidate(0, b"k", None);
        assert_eq!(cached_version(&cache, "k"), None);
        // An invalidation from another connection's generation is not this cache's.
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        cache.invalidate(7, b"k", None);
        assert_eq!(cached_version(&cache, "k"), Some(1));
    }

    #[test]
    fn a_lost_channel_empties_the_cache_and_drops_what_was_in_flight() {
        let cache = armed();
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        let in_flight = cache.begin("j", false);
        cache.disarm(0);
        assert_eq!(cached_version(&cache, "k"), None);
        cache.arm(1);
        cache.end(in_flight, Some(&record(1)));
        assert_eq!(cached_version(&cache, "j"), None);
        // Begun while disarmed: not cached even if the cache is armed when it ends.
        cache.disarm(1);
        let unarmed = cache.begin("k", false);
        cache.arm(2);
        cache.end(unarmed, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), None);
        let stats = cache.stats();
        assert_eq!((stats.flushes, stats.armed), (2, true));
    }

    #[test]
    fn a_copy_older_than_the_max_age_is_read_again() {
        let cache = NearCache::new(NearCacheConfig::new().max_age(Duration::from_millis(1)));
        cache.arm(0);
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cached_version(&cache, "k"), None);
        assert_eq!(cache.stats().misses, 1);
        let cache = armed();
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), Some(1), "the default keeps it");
    }

    #[test]
    fn a_flush_empties_the_cache_and_keeps_it_armed() {
        let cache = armed();
        let read = cache.begin("k", false);
        cache.end(read, Some(&record(1)));
        let in_flight = cache.begin("j", false);
        cache.flush(0);
        cache.end(in_flight, Some(&record(1)));
        assert_eq!(cached_version(&cache, "k"), None);
        assert_eq!(cached_version(&cache, "j"), None, "read before the flush");
        let stats = cache.stats();
        assert_eq!((stats.flushes, stats.armed), (1, true));
        cache.flush(3);
        assert_eq!(
            cache.stats().flushes,
            1,
            "another connection's flush is ignored"
        );
    }

    fn end_tagged(cache: &NearCache, flight: Flight<'_>, version: u64, tag: u64) {
        cache.end_tagged(flight, Some((&record(version), Some(tag))));
    }

    #[test]
    fn an_announcement_of_the_cached_row_version_keeps_the_copy() {
        let cache = armed();
        // The echo of the store's own write, before its reply: the reply is still cached.
        let write = cache.begin("k", true);
        cache.invalidate(0, b"k", Some(10));
        end_tagged(&cache, write, 2, 10);
        assert_eq!(cached_version(&cache, "k"), Some(2));
        // ... or after it.
        cache.invalidate(0, b"k", Some(10));
        assert_eq!(cached_version(&cache, "k"), Some(2));
        // Another version, or a deletion, drops it.
        cache.invalidate(0, b"k", Some(11));
        assert_eq!(cached_version(&cache, "k"), None);
        let read = cache.begin("k", false);
        end_tagged(&cache, read, 3, 11);
        cache.invalidate(0, b"k", None);
        assert_eq!(cached_version(&cache, "k"), None);
        assert_eq!(cache.stats().invalidations, 2);
    }

    #[test]
    fn a_read_announced_to_be_overtaken_is_not_cached() {
        // A read of version 10 while the change to 11 is announced: not cached.
        let cache = armed();
        let read = cache.begin("k", false);
        cache.invalidate(0, b"k", Some(11));
        end_tagged(&cache, read, 1, 10);
        assert_eq!(cached_version(&cache, "k"), None);
        // Announcements of 10 and then 11 while reading 10: the second one wins.
        let read = cache.begin("k", false);
        cache.invalidate(0, b"k", Some(10));
        cache.invalidate(0, b"k", Some(11));
        end_tagged(&cache, read, 1, 10);
        assert_eq!(cached_version(&cache, "k"), None);
        // A tagged reply does not excuse an untagged change (a flush, a local write).
        let read = cache.begin("k", false);
        cache.flush(0);
        end_tagged(&cache, read, 1, 10);
        assert_eq!(cached_version(&cache, "k"), None);
        let read = cache.begin("k", false);
        cache.invalidate(0, b"k", Some(12));
        end_tagged(&cache, read, 4, 12);
        assert_eq!(cached_version(&cache, "k"), Some(4));
        assert!(cache.state().flights.is_empty());
    }

    #[test]
    fn a_late_announcement_of_a_version_this_process_wrote_over_keeps_the_copy() {
        let cache = armed();
        let write = cache.begin("k", true);
        end_tagged(&cache, write, 1, 10);
        // The next write is acknowledged before the first one's announcement arrives.
        let write = cache.begin("k", true);
        cache.invalidate(0, b"k", Some(10));
        end_tagged(&cache, write, 2, 11);
        assert_eq!(
            cached_version(&cache, "k"),
            Some(2),
            "late news during the flight"
        );
        cache.invalidate(0, b"k", Some(10));
        cache.invalidate(0, b"k", Some(11));
        assert_eq!(cached_version(&cache, "k"), Some(2), "late news after it");
        // Another process's version still drops it.
        cache.invalidate(0, b"k", Some(12));
        assert_eq!(cached_version(&cache, "k"), None);
        // A version read, not written over, is not known to be older.
        let read = cache.begin("k", false);
        end_tagged(&cache, read, 3, 12);
        cache.invalidate(0, b"k", Some(11));
        assert_eq!(cached_version(&cache, "k"), None);
    }
}
