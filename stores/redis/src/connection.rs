//! One shared multiplexed connection per store, taken from a deadpool-redis pool.
//!
//! deadpool-redis hands out `MultiplexedConnection`s (single node, sentinel) and
//! `ClusterConnection`s, which already pipeline any number of concurrent requests over one
//! socket. Checking one out per request would add deadpool's health check (`UNWATCH` +
//! `PING`, one extra round trip) to every session operation, so the store takes one
//! connection out of the pool once, shares clones of it between requests, and goes back to
//! the pool only when that connection breaks. The pool stays in charge of creating
//! connections (its create and wait timeouts apply) and of health-checking idle ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use session_store::Result;

use crate::error;
use crate::near_cache::{NearCache, PushSink};

/// The pool a store takes its connection from.
pub(crate) enum Pools {
    /// One Redis server.
    Single(deadpool_redis::Pool),
    /// A Redis Cluster.
    Cluster(deadpool_redis::cluster::Pool),
    /// The master named by Redis Sentinel.
    Sentinel(deadpool_redis::sentinel::Pool),
    /// One Redis server, on connections opened by the store itself in RESP3 with client
    /// tracking on, feeding the near-cache.
    Tracked(Box<Tracked>),
}

/// How the near-cache's connections are opened.
pub(crate) struct Tracked {
    /// Set to RESP3.
    pub(crate) client: redis::Client,
    pub(crate) cache: Arc<NearCache>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
}

impl Tracked {
    /// Opens a connection whose push messages reach the cache as those of `generation`,
    /// turns tracking on, and arms the cache with it; within the connect and response
    /// timeouts (a server that accepts connections but does not answer is unavailable).
    async fn open(&self, generation: u64) -> Result<MultiplexedConnection> {
        let limit = self.connect_timeout + self.response_timeout;
        match tokio::time::timeout(limit, self.open_armed(generation)).await {
            Ok(result) => result,
            Err(_) => Err(session_store::Error::unavailable(
                error::NAME,
                format!("no answer within {limit:?} while connecting"),
            )),
        }
    }

    async fn open_armed(&self, generation: u64) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_push_sender(PushSink {
                cache: self.cache.clone(),
                generation,
            });
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(error::from_redis)?;
        let ((), server, stats): ((), String, String) = redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(self.cache.client_name())
            .ignore()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("NOLOOP")
            .cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .map_err(error::from_redis)?;
        check_version(&server)?;
        // Managed servers may refuse `CONFIG`: then the server's default limit is assumed.
        let limit = redis::cmd("CONFIG")
            .arg("GET")
            .arg("tracking-table-max-keys")
            .query_async::<HashMap<String, u64>>(&mut conn)
            .await
            .ok()
            .and_then(|found| found.into_values().next())
            .unwrap_or(DEFAULT_TRACKING_LIMIT);
        let watch = ServerWatch::new(&stats, limit);
        self.cache.arm(generation);
        tokio::spawn(heartbeat(
            conn.clone(),
            Arc::downgrade(&self.cache),
            generation,
            watch,
        ));
        Ok(conn)
    }
}

/// How often the near-cache's connection is checked while the cache serves reads without
/// the network.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a check may take before the connection counts as silent. Longer than the beat,
/// so that a check queued behind a burst of pipelined requests is not taken for a partition.
const HEARTBEAT_PATIENCE: Duration = Duration::from_secs(2);

/// Redis's default `tracking-table-max-keys`, assumed when `CONFIG GET` is refused.
const DEFAULT_TRACKING_LIMIT: u64 = 1_000_000;

/// Checks the connection of `generation` every [`HEARTBEAT`] while it feeds the cache,
/// with `INFO stats`:
/// - no answer within [`HEARTBEAT_PATIENCE`] disarms the cache (a connection that stops
///   answering without closing, as in a network partition, would otherwise let cached reads
///   go on unchecked); the store's next request opens a new connection;
/// - an answer whose counters say keys may have left without an invalidation empties the
///   cache ([`ServerWatch`]).
async fn heartbeat(
    mut conn: MultiplexedConnection,
    cache: std::sync::Weak<NearCache>,
    generation: u64,
    mut watch: ServerWatch,
) {
    let mut info = redis::cmd("INFO");
    info.arg("stats");
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(cache) = cache.upgrade() else { return };
        if !cache.is_armed_by(generation) {
            return;
        }
        let answer = info.query_async::<String>(&mut conn);
        match tokio::time::timeout(HEARTBEAT_PATIENCE, answer).await {
            Ok(Ok(stats)) => {
                if let Some(why) = watch.unannounced_drops(&stats) {
                    tracing::debug!("near-cache emptied: {why}");
                    cache.flush(generation);
                }
            }
            _ => {
                tracing::debug!("the near-cache connection stopped answering");
                cache.disarm(generation);
                return;
            }
        }
    }
}

/// What the server's `INFO stats` says about keys that may have left the cache's tracking
/// without an invalidation.
///
/// With `NOLOOP`, the server tells the connection nothing about keys it drops while running
/// the connection's own commands: a key evicted under `maxmemory`, or a key taken out of a
/// full tracking table (`tracking-table-max-keys`), which is then changed by others
/// unannounced. Both show in the counters: `evicted_keys` grows, and `tracking_total_keys`
/// reaches the limit.
#[derive(Debug)]
struct ServerWatch {
    evicted: Option<u64>,
    /// Tracked keys from which the table counts as full (0: no limit).
    nearly_full: u64,
}

impl ServerWatch {
    /// Starts from the counters of `stats` (the reply to `INFO stats`), with the server's
    /// `tracking-table-max-keys`.
    fn new(stats: &str, limit: u64) -> Self {
        Self {
            evicted: info_field(stats, "evicted_keys"),
            // Keys are taken out of the table when it goes over the limit; near it, a burst
            // of reads between two beats may already have gone over.
            nearly_full: limit - limit / 10,
        }
    }

    /// Why keys may have been dropped without notice since the last call, if they may.
    fn unannounced_drops(&mut self, stats: &str) -> Option<&'static str> {
        let evicted = info_field(stats, "evicted_keys");
        if evicted != self.evicted {
            // Also a reset of the counters (`CONFIG RESETSTAT`): evictions may hide in it.
            self.evicted = evicted;
            return Some("the server evicted keys");
        }
        let tracked = info_field(stats, "tracking_total_keys").unwrap_or(0);
        if self.nearly_full > 0 && tracked >= self.nearly_full {
            return Some("the server's tracking table is nearly full");
        }
        None
    }
}

/// Refuses a server older than Redis 7, which does not track the keys a script reads for
/// the script's caller (the near-cache's writes rely on it).
fn check_version(info: &str) -> Result<()> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("unknown");
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if major >= 7 => Ok(()),
        _ => Err(session_store::Error::Config(format!(
            "redis near-cache: needs Redis 7 or later, the server is {version}"
        ))),
    }
}

/// The value of `name` in an `INFO` reply (`name:value` lines).
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

impl Pools {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Pools::Single(_) => "single",
            Pools::Cluster(_) => "cluster",
            Pools::Sentinel(_) => "sentinel",
            Pools::Tracked(_) => "single, near-cached",
        }
    }
}

/// A live connection; clones share the socket(s).
#[derive(Clone)]
pub(crate) enum Live {
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Live {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Live::Plain(c) => c.req_packed_command(cmd),
            Live::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Live::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Live::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Live::Plain(c) => c.get_db(),
            Live::Cluster(c) => c.get_db(),
        }
    }
}

/// The pool plus the connection currently shared by all requests.
pub(crate) struct Connector {
    pools: Pools,
    /// The shared connection and its generation (to discard only the one that failed).
    current: Mutex<Option<(u64, Live)>>,
    /// Held while a new connection is taken, so a broken connection is replaced once, not
    /// once per waiting request.
    refill: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl Connector {
    pub(crate) fn new(pools: Pools) -> Self {
        Self {
            pools,
            current: Mutex::new(None),
            refill: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.pools.kind()
    }

    /// Whether the store talks to a Redis Cluster, where a script can reach the keys of one
    /// slot only.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.pools, Pools::Cluster(_))
    }

    fn current(&self) -> MutexGuard<'_, Option<(u64, Live)>> {
        // The guarded value is replaced in one assignment: a poisoned lock is still consistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared connection, taking a new one from the pool if there is none.
    ///
    /// The pool's futures (checkout, timeouts, the refill lock) take about 10 KB, which
    /// every request's future would carry and copy if they were inlined here; they are
    /// boxed, and only allocated when the shared connection has to be replaced.
    pub(crate) async fn get(&self) -> Result<(u64, Live)> {
        // The lock is released here, before `discard` takes it again.
        let current = self.current().clone();
        if let Some((generation, live)) = current {
            if self.serves(generation) {
                return Ok((generation, live));
            }
            self.discard(generation);
        }
        Box::pin(self.refill()).await
    }

    /// Whether the connection of `generation` may still be used: always, but for the
    /// near-cache's, which is replaced once it no longer feeds the cache (lost, or its
    /// heartbeat failed), so that the cache is armed again by the next request.
    fn serves(&self, generation: u64) -> bool {
        match &self.pools {
            Pools::Tracked(tracked) => tracked.cache.is_armed_by(generation),
            _ => true,
        }
    }

    /// Takes a new connection from the pool, once for all the requests waiting for one.
    async fn refill(&self) -> Result<(u64, Live)> {
        let _refill = self.refill.lock().await;
        if let Some(live) = self.current().clone() {
            return Ok(live);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let live = match &self.pools {
            Pools::Single(pool) => Live::Plain(deadpool_redis::Connection::take(
                pool.get().await.map_err(error::from_pool)?,
            )),
            Pools::Cluster(pool) => Live::Cluster(deadpool_redis::cluster::Connection::take(
                pool.get().await.map_err(error::from_pool)?,
            )),
            Pools::Sentinel(pool) => Live::Plain(deadpool_redis::sentinel::Connection::take(
                pool.get().await.map_err(error::from_pool)?,
            )),
            Pools::Tracked(tracked) => Live::Plain(tracked.open(generation).await?),
        };
        *self.current() = Some((generation, live.clone()));
        Ok((generation, live))
    }

    /// Forgets the shared connection if it is still the one of `generation`; the next request
    /// takes a new one from the pool.
    pub(crate) fn discard(&self, generation: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
        if let Pools::Tracked(tracked) = &self.pools {
            tracked.cache.disarm(generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(evicted: u64, tracked: u64) -> String {
        format!(
            "# Stats\r\ntotal_connections_received:3\r\nevicted_keys:{evicted}\r\n\
             evicted_clients:0\r\ntracking_total_keys:{tracked}\r\ntracking_total_items:{tracked}\r\n"
        )
    }

    #[test]
    fn servers_before_redis_7_are_refused() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:8.2.1\r\n").is_ok());
        let refused = check_version("redis_version:6.2.14\r\n").unwrap_err();
        assert!(refused.to_string().contains("6.2.14"), "{refused}");
        assert!(check_version("nothing").is_err());
    }

    #[test]
    fn info_fields_are_read_by_their_whole_name() {
        let info = stats(7, 12);
        assert_eq!(info_field(&info, "evicted_keys"), Some(7));
        assert_eq!(info_field(&info, "tracking_total_keys"), Some(12));
        assert_eq!(info_field(&info, "evicted"), None);
        assert_eq!(info_field(&info, "missing"), None);
    }

    #[test]
    fn evictions_and_a_nearly_full_tracking_table_are_noticed() {
        let mut watch = ServerWatch::new(&stats(5, 0), 1000);
        assert_eq!(watch.unannounced_drops(&stats(5, 100)), None);
        assert!(watch.unannounced_drops(&stats(6, 100)).is_some());
        assert_eq!(
            watch.unannounced_drops(&stats(6, 100)),
            None,
            "counted once"
        );
        assert!(
            watch.unannounced_drops(&stats(0, 100)).is_some(),
            "a reset may hide evictions"
        );
        assert!(watch.unannounced_drops(&stats(0, 900)).is_some());
        assert!(
            watch.unannounced_drops(&stats(0, 950)).is_some(),
            "every beat"
        );
        let mut unlimited = ServerWatch::new(&stats(0, 0), 0);
        assert_eq!(unlimited.unannounced_drops(&stats(0, 5_000_000)), None);
    }
}
