//! [`RedisStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Pipeline, Script, ScriptInvocation, Value};
use session_store::time::OffsetDateTime;
use session_store::{
    Capabilities, CasOutcome, Error, Record, Result, SessionId, SessionStore, async_trait,
};

use crate::connection::{Connector, Pools, Tracked};
use crate::error::{self, NAME};
use crate::layout::{Layout, OwnerDigest, expiry_ms};
use crate::near_cache::{NearCache, NearCacheConfig, NearCacheStats};

/// Pool and connection timeouts of the `from_url` style constructors.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(2);
const POOL_SIZE: usize = 4;

/// The pool of the `from_url` style constructors: [`POOL_SIZE`] connections and the
/// timeouts above.
fn pool_config() -> deadpool_redis::PoolConfig {
    deadpool_redis::PoolConfig {
        max_size: POOL_SIZE,
        timeouts: deadpool_redis::Timeouts {
            wait: Some(POOL_WAIT_TIMEOUT),
            create: Some(CONNECT_TIMEOUT + RESPONSE_TIMEOUT),
            recycle: Some(RESPONSE_TIMEOUT),
        },
        ..deadpool_redis::PoolConfig::default()
    }
}

/// The Lua function that adds a session to an owner index, shared by the scripts below.
///
/// `index(key, id, ms, now)`: member `id` gets score `ms` (the session's expiry) unless its
/// score is higher already (`ZADD GT`): a member's score never falls below the expiry of the
/// session while the owner has it, so listing the members scored after now misses no live
/// session. Members whose score has passed (`now`, in Unix milliseconds) are dropped, and
/// the index key lives at least as long as its latest member.
macro_rules! index_lua {
    () => {
        r"
local function index(key, id, ms, now)
  if tonumber(ms) > tonumber(now) then
    redis.call('ZADD', key, 'GT', ms, id)
    if redis.call('PEXPIRETIME', key) < tonumber(ms) then
      redis.call('PEXPIREAT', key, ms)
    end
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end
"
    };
}

/// The body of [`WRITE_SCRIPT`], up to its final `return 2`.
macro_rules! write_lua {
    () => {
        concat!(
            index_lua!(),
            r"
local key, mode, value, ms = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if mode == 'cas' then
  local current = redis.call('GETRANGE', key, 0, 7)
  if current == '' then
    return 0
  end
  if current ~= ARGV[4] then
    return 1
  end
  redis.call('SET', key, value, 'PXAT', ms)
elseif mode == 'set' then
  redis.call('SET', key, value, 'PXAT', ms)
elseif not redis.call('SET', key, value, 'PXAT', ms, mode) then
  return 0
end
if KEYS[2] then
  index(KEYS[2], ARGV[5], ms, ARGV[6])
end
"
        )
    };
}

/// A write in one `EVALSHA`: compare-and-set, and every write of a session with an owner
/// on one node (the session and its owner index in one atomic step).
///
/// `KEYS[1]` the session, `KEYS[2]` (optional) its owner index; `ARGV`: mode (`cas`, `set`,
/// `NX` or `XX`), value, expiry ms, expected version (8 bytes, `cas` only), then with an
/// index the id and now (ms). Returns 2 = written; 0 = not written (`NX`/`XX`) or missing
/// (`cas`); 1 = conflict (`cas`). Compare-and-set reads only the 8-byte version header
/// (`GETRANGE`; a missing key reads as empty), never the payload.
const WRITE_SCRIPT: &str = concat!(write_lua!(), "return 2\n");

/// [`WRITE_SCRIPT`] for the near-cache's connection: a write ends the connection's tracking
/// of the key, so the script reads the key again (`EXISTS`, read-only: the server tracks it
/// for the caller) in the same atomic step. No other client's write can come in between,
/// so the value written is what the cache keeps.
const WRITE_TRACKED_SCRIPT: &str = concat!(write_lua!(), "redis.call('EXISTS', key)\nreturn 2\n");

/// The body of [`TOUCH_SCRIPT`], up to its final `return 1`.
macro_rules! touch_lua {
    () => {
        concat!(
            index_lua!(),
            r"
local section = redis.call('GETRANGE', KEYS[1], 16, 80)
if section == '' then
  return 0
end
local owned = #section == 65 and string.byte(section, 1) == 111
local mode = string.sub(ARGV[3], 1, 1)
if owned and mode == 'c' and string.sub(ARGV[3], 2) ~= section then
  return section
end
redis.call('SETRANGE', KEYS[1], 8, ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
if owned and mode == 'i' then
  index(string.sub(ARGV[3], 2) .. string.sub(section, 2), ARGV[4], ARGV[2], ARGV[5])
end
"
        )
    };
}

/// Touch in one `EVALSHA`: 0 = missing, 1 = touched. Rewrites the 8-byte expiry inside the
/// value (`SETRANGE`, which keeps the key's TTL) and the key's TTL (`PEXPIREAT`, which
/// removes the key if the time has passed), never the payload. The `GETRANGE` that finds
/// the key also reads the owner section, if any.
///
/// `KEYS[1]` the session; `ARGV`: expiry (8 bytes), expiry ms, mode, id, now (ms). Mode
/// `i<index key prefix>` (one node): an owned session's index is updated in the same
/// script, under the key named by the section (not in `KEYS`: one node only). Mode
/// `c<section>` (Cluster, where the index is on another node): an owned session whose
/// section differs is not touched and its section is returned, for the caller to update the
/// index first and touch again with that section.
const TOUCH_SCRIPT: &str = concat!(touch_lua!(), "return 1\n");

/// [`TOUCH_SCRIPT`] for the near-cache's connection, which reads the key again in the same
/// atomic step (as [`WRITE_TRACKED_SCRIPT`]).
const TOUCH_TRACKED_SCRIPT: &str =
    concat!(touch_lua!(), "redis.call('EXISTS', KEYS[1])\nreturn 1\n");

/// The owner index update alone, for Redis Cluster: `KEYS[1]` the index; `ARGV`: id,
/// expiry ms, now (ms).
const INDEX_SCRIPT: &str = concat!(
    index_lua!(),
    r"
index(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
"
);

/// Lists an owner's sessions: drops the members whose score has passed, then returns the
/// others. `KEYS[1]` the index; `ARGV`: now (ms), mode, session key prefix, owner section.
///
/// Mode `ids` (Cluster): returns the ids. Mode `read` (one node): also reads the sessions
/// (`MGET`, 512 keys at a time; keys not in `KEYS`: one node only), returns id, value, id,
/// value, ... of those whose value carries the owner's section, and removes the other
/// members (session gone or given to another owner or to none) from the index. Atomic, so
/// a member removed here cannot belong to a write that happened in between.
const LIST_SCRIPT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if ARGV[2] ~= 'read' then
  return ids
end
local found, stale = {}, {}
for first = 1, #ids, 512 do
  local keys = {}
  for i = first, math.min(first + 511, #ids) do
    keys[#keys + 1] = ARGV[3] .. ids[i]
  end
  local values = redis.call('MGET', unpack(keys))
  for j = 1, #keys do
    local id, value = ids[first + j - 1], values[j]
    if value and string.sub(value, 17, 81) == ARGV[4] then
      found[#found + 1] = id
      found[#found + 1] = value
    else
      stale[#stale + 1] = id
    end
  end
end
for first = 1, #stale, 512 do
  redis.call('ZREM', KEYS[1], unpack(stale, first, math.min(first + 511, #stale)))
end
return found
";

/// The segment after the prefix that names owner index keys: `<prefix>owner:<digest>`.
/// Session ids of the built-in generators never contain `:`, so no session key looks like
/// an index key.
const OWNER_SEGMENT: &str = "owner:";

/// How many times a touch on Redis Cluster updates the owner index and tries again when
/// the session changed owner in between.
const TOUCH_ATTEMPTS: usize = 4;

/// Sessions in Redis: a single server, a Redis Cluster or the master named by Redis
/// Sentinel, over a [`deadpool_redis`] pool.
///
/// # Layout
///
/// One string key per session, `prefix + id` (default prefix [`RedisStore::DEFAULT_PREFIX`],
/// `session:`), holding the record version and the expiry in Unix milliseconds (8 bytes
/// each, big-endian), followed by the core's payload envelope ([`Record::encode_payload`]).
/// Every write also sets the key's TTL to that expiry with `PXAT`, so Redis removes expired
/// sessions by itself, and a read is a single `GET`. Requires Redis 7.0 or later
/// (`PEXPIRETIME`, used by connect-redis's layout).
///
/// [`RedisStore::with_layout`] with [`Layout::ConnectRedis`] selects connect-redis's layout
/// instead, to share sessions with Node's express-session: key `sess:` + id, value the
/// session JSON, the same commands except that compare-and-set is unsupported.
///
/// # Commands (one round trip each)
///
/// | operation | commands |
/// |---|---|
/// | `get` | `GET` (connect-redis layout: `GET`, `PEXPIRETIME` pipelined) |
/// | `set` | `SET key value PXAT ms` (with an owner: `EVALSHA`, see below) |
/// | `touch` | `EVALSHA` of a script that rewrites the 8-byte expiry and the TTL, no payload (connect-redis layout: `PEXPIREAT key ms`) |
/// | `destroy` | `DEL` |
/// | `create` | `SET … NX PXAT ms` (with an owner: `EVALSHA`) |
/// | `update` | `SET … XX PXAT ms`, never recreates a destroyed key (with an owner: `EVALSHA`) |
/// | `compare_and_set` | `EVALSHA` |
/// | `owned` | `EVALSHA` (Cluster: `EVALSHA`, then `MGET` split by slot) |
///
/// Scripts are loaded by [`RedisStore::connect`] and reloaded on `NOSCRIPT`.
///
/// # Owners
///
/// In the native layout the store indexes [`Record::owner`]
/// ([`Capabilities::owners`]): each owner has a sorted set `<prefix>owner:<hex SHA-256 of
/// the owner>` whose members are the ids of its sessions, scored by their expiry in Unix
/// milliseconds. A score never drops (`ZADD GT`), so it is at least the expiry of a session
/// the owner still has; members scored before now are dropped on every index update and
/// listing, and the key's own TTL is its latest member's score, so an index never outlives
/// its sessions. The value of an owned session carries the owner's digest after its header
/// (see [`Layout::Native`]), so that a touch finds the index without decoding the payload.
/// Sessions without owner are written, touched and destroyed exactly as before, and cost
/// nothing extra.
///
/// - **One node, Sentinel**: a write of an owned session (`set`, `create`, `update`,
///   `compare_and_set`) is one `EVALSHA` that writes the session and updates its index
///   atomically; `touch` updates the index in its own script. [`owned`](SessionStore::owned)
///   is one `EVALSHA` that drops passed members, reads the owner's sessions (`MGET`), returns
///   those that still carry the owner's digest and removes the other members (sessions
///   destroyed or given to another owner or to none). These scripts reach keys they compute
///   (the index named in a session's value, the sessions named in an index) besides their
///   `KEYS`, as a single node allows.
/// - **Cluster**: an index and its sessions sit in different slots, so no script can
///   update both. A write of an owned session first updates the index (`EVALSHA` on the
///   index's node), then writes the session: two round trips, so a session stored with an
///   owner is always in the index (a write that fails after its index update leaves a
///   member that listing skips). A `touch` of an owned session takes three: the first
///   attempt finds the owner without touching, the index is updated, then the session is
///   touched if its owner is still the same. Listing is an `EVALSHA` for the ids, then an
///   `MGET` that the cluster connection splits by slot and sends to the nodes concurrently.
///   Members of destroyed or moved sessions are not removed at listing (a removal there
///   could race with a write whose index update came first); they leave when their score
///   passes, at the latest expiry their session had while it was this owner's.
///
/// `destroy` stays a `DEL` everywhere: it does not know the owner. On one node the next
/// listing drops the member; on a cluster, its score.
///
/// # Connections
///
/// The store takes one multiplexed connection (a `ClusterConnection` for a cluster) out of
/// the pool and shares it between all requests; it returns to the pool for a new one only
/// when that connection fails. So no request pays deadpool's per-checkout health check
/// (`UNWATCH` + `PING`). After a connection loss (e.g. a pooled connection that a server
/// restart left dead), every operation is sent once more on a fresh connection. `create`
/// and `compare_and_set`, whose lost first attempt may have written, then tell their own
/// write from another's by reading the key back: it holds exactly the value they sent.
///
/// `Clone` is cheap; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    connector: Arc<Connector>,
    /// `None`: the layout's default prefix.
    prefix: Option<Arc<str>>,
    layout: Arc<Layout>,
    scripts: Arc<Scripts>,
    /// The server's URL, where the store was built from one: the near-cache opens its own
    /// connections.
    url: Option<Arc<str>>,
    /// The near-cache, once [`RedisStore::with_near_cache`] turned it on.
    near: Option<Near>,
    /// Replicas that must acknowledge a write, and how long to wait for them, once
    /// [`RedisStore::with_replica_ack`] asked for it.
    replica_ack: Option<(u32, Duration)>,
}

/// A store's near-cache.
#[derive(Clone)]
struct Near {
    cache: Arc<NearCache>,
    /// The connector the store had before the cache: creates new sessions (not cached), and
    /// is restored if a later setting rules the cache out.
    uncached: Arc<Connector>,
}

/// The store's Lua scripts, loaded by [`RedisStore::connect`] (and on `NOSCRIPT`).
struct Scripts {
    write: Script,
    write_tracked: Script,
    touch: Script,
    touch_tracked: Script,
    index: Script,
    list: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("kind", &self.connector.kind())
            .field("prefix", &self.prefix())
            .field("layout", &self.layout_name())
            .finish_non_exhaustive()
    }
}

/// One request to Redis.
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
    Script(&'a ScriptInvocation<'a>),
}

impl RedisStore {
    /// The key prefix unless [`RedisStore::with_prefix`] sets another: `session:`.
    pub const DEFAULT_PREFIX: &'static str = "session:";
    /// connect-redis's key prefix, the default in [`Layout::ConnectRedis`]: `sess:`.
    pub const CONNECT_REDIS_PREFIX: &'static str = "sess:";

    fn new(pools: Pools) -> Self {
        #[cfg(feature = "tls-rustls")]
        {
            // rustls needs a process-wide crypto provider; keep one that is already installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Self {
            connector: Arc::new(Connector::new(pools)),
            prefix: None,
            layout: Arc::new(Layout::Native),
            scripts: Arc::new(Scripts {
                write: Script::new(WRITE_SCRIPT),
                write_tracked: Script::new(WRITE_TRACKED_SCRIPT),
                touch: Script::new(TOUCH_SCRIPT),
                touch_tracked: Script::new(TOUCH_TRACKED_SCRIPT),
                index: Script::new(INDEX_SCRIPT),
                list: Script::new(LIST_SCRIPT),
            }),
            url: None,
            near: None,
            replica_ack: None,
        }
    }

    /// A store on the Redis server at `url` (`redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` with the `tls-rustls` feature).
    ///
    /// Builds a small deadpool-redis pool with timeouts: 2 s to connect, 2 s per response,
    /// 2 s to wait for a pool slot. Nothing is connected yet: see [`RedisStore::connect`].
    pub fn from_url(url: &str) -> Result<Self> {
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = deadpool_redis::Manager::new_with_config(url, connection)
            .map_err(|e| Error::backend(NAME, e))?;
        let pool = deadpool_redis::Pool::builder(manager)
            .config(pool_config())
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::backend(NAME, e))?;
        let mut store = Self::from_pool(pool);
        store.url = Some(Arc::from(url));
        Ok(store)
    }

    /// A store on a pool built from a deadpool-redis [`Config`](deadpool_redis::Config)
    /// (tokio runtime, so the pool's timeouts apply). Connections get the `redis` crate's
    /// defaults: 1 s to connect, 500 ms per response.
    pub fn from_config(config: &deadpool_redis::Config) -> Result<Self> {
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| Error::backend(NAME, e))?;
        let mut store = Self::from_pool(pool);
        store.url = config.url.as_deref().map(Arc::from);
        Ok(store)
    }

    /// A store on an existing deadpool-redis pool. The store takes one connection out of it
    /// (see [Connections](RedisStore#connections)); the rest of the pool stays the
    /// caller's.
    pub fn from_pool(pool: deadpool_redis::Pool) -> Self {
        Self::new(Pools::Single(pool))
    }

    /// A store on the Redis Cluster reachable through any of `urls` (seed nodes).
    pub fn cluster_from_urls<I, S>(urls: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        let pool = deadpool_redis::cluster::Config::from_urls(urls)
            .builder()
            .map_err(|e| Error::backend(NAME, e))?
            .config(pool_config())
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::backend(NAME, e))?;
        Ok(Self::from_cluster_pool(pool))
    }

    /// A store on a Redis Cluster pool built from a deadpool-redis cluster
    /// [`Config`](deadpool_redis::cluster::Config).
    pub fn from_cluster_config(config: &deadpool_redis::cluster::Config) -> Result<Self> {
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| Error::backend(NAME, e))?;
        Ok(Self::from_cluster_pool(pool))
    }

    /// A store on an existing deadpool-redis cluster pool.
    pub fn from_cluster_pool(pool: deadpool_redis::cluster::Pool) -> Self {
        Self::new(Pools::Cluster(pool))
    }

    /// A store on the master that the sentinels at `urls` name `master_name`.
    ///
    /// The data nodes are reached without password and on database 0; use
    /// [`RedisStore::from_sentinel_config`] with
    /// [`with_node_connection_info`](deadpool_redis::sentinel::Config::with_node_connection_info)
    /// for anything else.
    pub fn sentinel_from_urls<I, S>(urls: I, master_name: &str) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        let pool = deadpool_redis::sentinel::Config::from_urls(
            urls,
            master_name.to_owned(),
            deadpool_redis::sentinel::SentinelServerType::Master,
        )
        .builder()
        .map_err(|e| Error::backend(NAME, e))?
        .config(pool_config())
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::backend(NAME, e))?;
        Ok(Self::from_sentinel_pool(pool))
    }

    /// A store on a Sentinel pool built from a deadpool-redis sentinel
    /// [`Config`](deadpool_redis::sentinel::Config). Its server type must be `Master`.
    pub fn from_sentinel_config(config: &deadpool_redis::sentinel::Config) -> Result<Self> {
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| Error::backend(NAME, e))?;
        Ok(Self::from_sentinel_pool(pool))
    }

    /// A store on an existing deadpool-redis sentinel pool (server type `Master`).
    pub fn from_sentinel_pool(pool: deadpool_redis::sentinel::Pool) -> Self {
        Self::new(Pools::Sentinel(pool))
    }

    /// Sets the prefix of every key (default [`RedisStore::DEFAULT_PREFIX`], or
    /// [`RedisStore::CONNECT_REDIS_PREFIX`] in connect-redis's layout). Stores with different
    /// prefixes on one server never see each other's sessions. To share sessions with a Node
    /// app, use the `prefix` option of its `RedisStore`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(Arc::from(prefix.into()));
        self
    }

    /// Turns on the near-cache: sessions this process read or wrote are kept in its memory
    /// (within `config`'s bounds) and served from there, with no round trip, until the
    /// server says another client changed them. A commit of a cached session is then one
    /// conditional write.
    ///
    /// How it stays coherent: the store's connection uses RESP3 and
    /// `CLIENT TRACKING ON NOLOOP` (Redis 7 or later), so the server pushes the key of every
    /// session this process read that another client then writes, touches, deletes or lets
    /// expire, and the cached copy is dropped when the push arrives. A read started before
    /// such a push is not cached. The store's own writes are scripts that read the key again
    /// in the same atomic step, so the key stays tracked and what is cached is what the
    /// server holds. A new session is the exception: it is created with a plain `SET` on an
    /// ordinary connection and cached by its first read, since many new sessions are never
    /// seen again (one-shot clients, bots) and would only evict those that come back. When
    /// the connection is lost or replaced, the cache is emptied and
    /// bypassed until a new connection has tracking on. The guarantee: once this
    /// process has received the server's invalidation of a session, it never serves the
    /// older data; between another process's write and that push (a loopback round trip,
    /// see RELIABILITY.md) this process may still serve the data it had, as it would had
    /// its read come a moment earlier. Compare-and-set still checks every commit against
    /// the server, so a write based on stale data is refused and merged, never lost.
    ///
    /// Available on a single Redis server in the native layout, for a store built with
    /// [`RedisStore::from_url`] or [`RedisStore::from_config`] with a URL (the cache opens
    /// its own connection). Refused with [`Error::Config`] on Redis Cluster (invalidations
    /// come per node and would have to be re-armed on every node after each failover) and on
    /// Sentinel (tracking is not re-armed on a promoted replica in this release). A later
    /// [`RedisStore::with_layout`] with another layout turns the cache off again.
    ///
    /// What the server does not announce: keys it drops on its own while running this
    /// store's commands (evictions under `maxmemory`, keys leaving a full tracking table).
    /// A heartbeat reads the server's counters every second and empties the cache when they
    /// show either; [`NearCacheConfig::max_age`] bounds the rest. Prefer
    /// `maxmemory-policy noeviction` (or `volatile-*` with room to spare) and a
    /// `tracking-table-max-keys` above the sessions read in a TTL: near that limit the cache
    /// is emptied at every beat.
    ///
    /// ```
    /// use session_store_redis::{NearCacheConfig, RedisStore};
    ///
    /// # fn main() -> Result<(), session_store::Error> {
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379")?
    ///     .with_near_cache(NearCacheConfig::new().max_entries(50_000))?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_near_cache(mut self, config: NearCacheConfig) -> Result<Self> {
        let refuse = |why: &str| Err(Error::Config(format!("redis near-cache: {why}")));
        match self.connector.kind() {
            "cluster" => {
                return refuse(
                    "not available on Redis Cluster: invalidations come per node and would \
                     have to be re-armed on every node after each failover",
                );
            }
            "sentinel" => {
                return refuse(
                    "not available with Sentinel: tracking is not re-armed on a promoted \
                     replica in this release",
                );
            }
            _ => {}
        }
        if !matches!(*self.layout, Layout::Native) {
            return refuse("available in the native layout only");
        }
        let Some(url) = self.url.clone() else {
            return refuse(
                "the store must be built with from_url or from_config with a url, so the \
                 cache can open its own connections",
            );
        };
        let info = redis::IntoConnectionInfo::into_connection_info(&*url)
            .map_err(|e| Error::backend(NAME, e))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| Error::backend(NAME, e))?;
        let cache = Arc::new(NearCache::new(config));
        let tracked = Arc::new(Connector::new(Pools::Tracked(Box::new(Tracked {
            client,
            cache: cache.clone(),
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
        }))));
        // Called again, the new bounds replace the old cache.
        let uncached = match self.near.take() {
            Some(near) => near.uncached,
            None => self.connector.clone(),
        };
        self.connector = tracked;
        self.near = Some(Near { cache, uncached });
        Ok(self)
    }

    /// Makes every write of a session's value (`set`, `create`, `update`,
    /// `compare_and_set`, and `touch` outside Redis Cluster) wait until at least `replicas`
    /// replicas acknowledged it, for at most `timeout`: the write is followed by
    /// `WAIT replicas timeout` in the same pipeline, on the same connection. On Redis Cluster
    /// the pipeline goes to the node that owns the session's key, so the `WAIT` counts that
    /// node's replicas. When fewer replicas acknowledge in time the operation fails with
    /// [`Error::Unavailable`] (the middleware answers 503 with `Retry-After`): the write is
    /// on the master but may be lost if the master dies before a replica has it, and the
    /// caller is told so rather than told it is safe. After a Cluster failover the promoted
    /// master has no replica until one joins it, so its sessions' writes answer 503 until
    /// then: the price of not acknowledging what one more failure would lose.
    ///
    /// What it buys: a write acknowledged to the app survives the loss of the master when a
    /// replica that acknowledged it is promoted (RELIABILITY.md has the failover figures).
    /// What it costs: one replication round trip per write (BENCHMARKS.md). It does not
    /// cover `destroy` nor, on Redis Cluster, the owner index (a separate key on another
    /// node); Redis replication stays asynchronous, so a promoted replica that had not
    /// acknowledged can still miss writes.
    ///
    /// `timeout` must stay below the store's response timeout (2 s for the stores built by
    /// this crate), or a slow acknowledgement reads as a lost connection. Refused with
    /// [`Error::Config`] for 0 replicas or a zero timeout (`WAIT` with 0 ms would block
    /// forever). Works with the near-cache ([`RedisStore::with_near_cache`]): a write is
    /// cached once its acknowledgement came, and a write too few replicas acknowledged is
    /// not cached.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_store_redis::RedisStore;
    ///
    /// # fn main() -> Result<(), session_store::Error> {
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379")?
    ///     .with_replica_ack(1, Duration::from_millis(500))?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_replica_ack(mut self, replicas: u32, timeout: Duration) -> Result<Self> {
        if replicas == 0 {
            return Err(Error::Config(
                "redis replica ack: at least one replica must acknowledge".into(),
            ));
        }
        if timeout.as_millis() == 0 {
            return Err(Error::Config(
                "redis replica ack: the timeout must be at least 1 ms (WAIT 0 blocks forever)"
                    .into(),
            ));
        }
        self.replica_ack = Some((replicas, timeout));
        Ok(self)
    }

    /// The near-cache's counters, if [`RedisStore::with_near_cache`] turned it on.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.near.as_ref().map(|near| near.cache.stats())
    }

    fn cache(&self) -> Option<&NearCache> {
        self.near.as_ref().map(|near| &*near.cache)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.prefix
            .as_deref()
            .unwrap_or_else(|| self.layout.default_prefix())
    }

    /// Selects what is stored under each key (default [`Layout::Native`]).
    ///
    /// [`Layout::ConnectRedis`] shares sessions with a Node app using express-session and
    /// connect-redis on the same Redis: configure the manager with `Codec::Json`, the cookie
    /// name `connect.sid`, a [`SignedCodec`](session_store::SignedCodec) with the app's
    /// secret and [`IdGenerator::express_compatible`](session_store::IdGenerator), and the
    /// same cookie options as the layout. Compare-and-set is unavailable in that layout, and
    /// so is the near-cache: a store whose near-cache is on turns it off (with a warning in
    /// the log, and [`RedisStore::near_cache_stats`] then gives `None`).
    ///
    /// ```
    /// use session_store::{Codec, CookieOptions, IdGenerator, SessionManager, SignedCodec};
    /// use session_store_redis::{Layout, RedisStore};
    /// # use std::time::Duration;
    ///
    /// # fn main() -> Result<(), session_store::Error> {
    /// let cookie = CookieOptions { max_age: Some(Duration::from_secs(3600)), ..Default::default() };
    /// let store = RedisStore::from_url("redis://127.0.0.1:6379")?
    ///     .with_layout(Layout::connect_redis(cookie.clone())); // keys `sess:<id>`
    /// let manager = SessionManager::builder(store)
    ///     .cookie_name("connect.sid")
    ///     .cookie(cookie)
    ///     .codec(Codec::Json)
    ///     .cookie_codec(SignedCodec::new(["keyboard cat"])?)
    ///     .id_generator(IdGenerator::express_compatible())
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_layout(mut self, layout: Layout) -> Self {
        if !matches!(layout, Layout::Native)
            && let Some(near) = self.near.take()
        {
            tracing::warn!(
                "redis near-cache turned off: it is available in the native layout only"
            );
            self.connector = near.uncached;
        }
        self.layout = Arc::new(layout);
        self
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn layout_name(&self) -> &'static str {
        match *self.layout {
            Layout::Native => "native",
            Layout::ConnectRedis(_) => "connect-redis",
        }
    }

    /// Connects now and loads the store's scripts, so that an unreachable server or a wrong
    /// URL shows at start-up rather than on the first request. Optional: every operation
    /// connects on demand.
    pub async fn connect(&self) -> Result<()> {
        self.connect_via(&self.connector).await?;
        // With the near-cache, new sessions are written on an ordinary connection.
        if let Some(near) = &self.near {
            self.connect_via(&near.uncached).await?;
        }
        Ok(())
    }

    async fn connect_via(&self, connector: &Connector) -> Result<()> {
        let (generation, mut conn) = connector.get().await?;
        if let Err(e) = self.load_scripts(&mut conn).await {
            if error::replace_connection(&e) {
                connector.discard(generation);
            }
            return Err(error::from_redis(e));
        }
        Ok(())
    }

    /// Loads the store's scripts on `conn`'s server.
    async fn load_scripts(&self, conn: &mut crate::connection::Live) -> redis::RedisResult<()> {
        let scripts = &self.scripts;
        for script in [
            &scripts.write,
            &scripts.write_tracked,
            &scripts.touch,
            &scripts.touch_tracked,
            &scripts.index,
            &scripts.list,
        ] {
            script.load_async(conn).await?;
        }
        Ok(())
    }

    fn key(&self, id: &SessionId) -> String {
        self.key_of(id.as_str())
    }

    fn key_of(&self, id: &str) -> String {
        let prefix = self.prefix();
        let mut key = String::with_capacity(prefix.len() + id.len());
        key.push_str(prefix);
        key.push_str(id);
        key
    }

    /// The key of an owner's index: `<prefix>owner:<digest>`.
    fn index_key(&self, owner: &OwnerDigest) -> String {
        let mut key = self.index_prefix();
        key.push_str(owner.as_str());
        key
    }

    /// `<prefix>owner:`.
    fn index_prefix(&self) -> String {
        let prefix = self.prefix();
        let mut key = String::with_capacity(prefix.len() + OWNER_SEGMENT.len() + OwnerDigest::LEN);
        key.push_str(prefix);
        key.push_str(OWNER_SEGMENT);
        key
    }

    /// The digest of `record`'s owner when the layout indexes owners.
    fn owner_of(&self, record: &Record) -> Option<OwnerDigest> {
        match (&*self.layout, &record.owner) {
            (Layout::Native, Some(owner)) => Some(OwnerDigest::of(owner)),
            _ => None,
        }
    }

    /// On Redis Cluster, where the owner index lives in another slot than the session: adds
    /// the session to its owner's index (one `EVALSHA` of [`INDEX_SCRIPT`] on the index's
    /// node) before the session is written or its expiry moved, so a session stored with
    /// an owner is always in the index; a write that then fails leaves a member that listing
    /// skips and that leaves the index when its score passes.
    async fn index_on_cluster(&self, id: &SessionId, owner: &OwnerDigest, ms: i64) -> Result<()> {
        let now = expiry_ms(OffsetDateTime::now_utc());
        let mut invocation = self.scripts.index.prepare_invoke();
        invocation
            .key(self.index_key(owner))
            .arg(id.as_str())
            .arg(ms)
            .arg(now);
        let _: i64 = self.send(Request::Script(&invocation)).await?;
        Ok(())
    }

    /// Sends one request on the shared connection; replaces the connection when it broke
    /// and sends the request once more on the new one.
    async fn send<T: FromRedisValue>(&self, request: Request<'_>) -> Result<T> {
        self.send_noting_retry(request)
            .await
            .map(|(value, _)| value)
    }

    /// [`RedisStore::send`], also saying whether the request was sent a second time (so
    /// the first may have been carried out too).
    async fn send_noting_retry<T: FromRedisValue>(
        &self,
        request: Request<'_>,
    ) -> Result<(T, bool)> {
        self.send_noting_retry_via(&self.connector, request).await
    }

    /// [`RedisStore::send_noting_retry`] on `connector`.
    async fn send_noting_retry_via<T: FromRedisValue>(
        &self,
        connector: &Connector,
        request: Request<'_>,
    ) -> Result<(T, bool)> {
        let mut retried = false;
        let mut reloaded = false;
        loop {
            let (generation, mut conn) = connector.get().await?;
            let result = match &request {
                Request::Cmd(cmd) => cmd.query_async(&mut conn).await,
                Request::Pipe(pipe) => pipe.query_async(&mut conn).await,
                Request::Script(script) => script.invoke_async(&mut conn).await,
            };
            let e = match result {
                Ok(value) => return Ok((value, retried)),
                Err(e) => e,
            };
            // A pipelined script the server does not know (restarted, or `SCRIPT FLUSH`): it
            // did not run; load the scripts and send the request again.
            if e.code() == Some("NOSCRIPT") && !reloaded {
                reloaded = true;
                if self.load_scripts(&mut conn).await.is_ok() {
                    continue;
                }
                // Right after a failover (Redis 7 does not replicate the script cache) the
                // load can fail while the client still counts the dead node among the
                // masters: transient, so the caller gets a 503, and the next request loads
                // them again.
                return Err(Error::unavailable(NAME, e));
            }
            if error::replace_connection(&e) {
                tracing::debug!(kind = connector.kind(), error = %e, "replacing the redis connection");
                connector.discard(generation);
                if !retried && error::worth_retrying(&e) {
                    retried = true;
                    continue;
                }
            }
            return Err(error::from_redis(e));
        }
    }

    /// The write script: on the near-cache's connection (`tracked`), the one that reads
    /// the key again in the same atomic step, so the connection keeps tracking it.
    fn write_script(&self, tracked: bool) -> &Script {
        if tracked {
            &self.scripts.write_tracked
        } else {
            &self.scripts.write
        }
    }

    /// Sends a write of a session's value. With [`RedisStore::with_replica_ack`], sends
    /// `WAIT` behind it in the same pipeline (on a cluster the pipeline goes to the node of
    /// the write's key) and fails when too few replicas acknowledged.
    async fn send_write<T: FromRedisValue>(
        &self,
        connector: &Connector,
        request: Request<'_>,
    ) -> Result<(T, bool)> {
        let Some((replicas, timeout)) = self.replica_ack else {
            return self.send_noting_retry_via(connector, request).await;
        };
        let mut pipe = redis::pipe();
        match request {
            Request::Cmd(cmd) => pipe.add_command(cmd.clone()),
            Request::Script(invocation) => pipe.invoke_script(invocation),
            Request::Pipe(_) => unreachable!("writes are one command or one script"),
        };
        pipe.cmd("WAIT")
            .arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let ((reply, acked), retried): ((T, i64), bool) = self
            .send_noting_retry_via(connector, Request::Pipe(&pipe))
            .await?;
        if acked < i64::from(replicas) {
            // Unavailable, not a backend failure: the durability asked for cannot be had right
            // now (a replica lags, or a failover left the master without one), and a retry
            // may succeed; the middleware answers 503 with Retry-After.
            return Err(Error::unavailable(
                NAME,
                format!(
                    "write acknowledged by {acked} of the {replicas} replicas required within \
                     {timeout:?}"
                ),
            ));
        }
        Ok((reply, retried))
    }

    /// `SET key value PXAT ms [NX|XX]`: whether the key was written. A session with an owner
    /// is written with its index: in one [`WRITE_SCRIPT`] on one node, after
    /// [`RedisStore::index_on_cluster`] on a cluster.
    async fn write(
        &self,
        id: &SessionId,
        record: &Record,
        condition: Option<&str>,
    ) -> Result<bool> {
        let Some(near) = &self.near else {
            return self
                .write_key(&self.connector, id, record, condition, None)
                .await;
        };
        let key = self.key(id);
        let flight = near.cache.begin(&key, true);
        let mut after = None;
        let written = if condition == Some("NX") {
            // A new session is written on an ordinary connection and not cached: many are
            // never seen again (one-shot clients, bots), and caching them would evict the
            // sessions that come back. Its first read caches it.
            self.write_key(&near.uncached, id, record, condition, None)
                .await
        } else {
            self.write_key(&self.connector, id, record, condition, Some(&mut after))
                .await
        };
        near.cache.end(flight, after.as_ref());
        written
    }

    /// [`RedisStore::write`] on `connector`, without the near-cache; with `after` (the
    /// near-cache's connection), writes through [`WRITE_TRACKED_SCRIPT`] and sets `after` to
    /// the record, if it was written.
    async fn write_key(
        &self,
        connector: &Connector,
        id: &SessionId,
        record: &Record,
        condition: Option<&str>,
        after: Option<&mut Option<Record>>,
    ) -> Result<bool> {
        let owner = self.owner_of(record);
        let value = self.layout.encode(record, owner.as_ref())?;
        let ms = expiry_ms(record.expires);
        let tracked = after.is_some();
        let (written, retried) = match owner {
            // The near-cache's connection writes through the script even without an owner:
            // the script keeps the key tracked.
            owner if tracked || (owner.is_some() && !self.connector.is_cluster()) => {
                let mut invocation = self.write_script(tracked).prepare_invoke();
                invocation.key(self.key(id));
                if let Some(owner) = &owner {
                    invocation.key(self.index_key(owner));
                }
                invocation
                    .arg(condition.unwrap_or("set"))
                    .arg(&value)
                    .arg(ms);
                if owner.is_some() {
                    invocation
                        .arg("")
                        .arg(id.as_str())
                        .arg(expiry_ms(OffsetDateTime::now_utc()));
                }
                let (outcome, retried): (i64, bool) = self
                    .send_write(connector, Request::Script(&invocation))
                    .await?;
                (outcome == 2, retried)
            }
            owner => {
                if let Some(owner) = owner {
                    self.index_on_cluster(id, &owner, ms).await?;
                }
                let mut cmd = redis::cmd("SET");
                cmd.arg(self.key(id)).arg(&value).arg("PXAT").arg(ms);
                if let Some(condition) = condition {
                    cmd.arg(condition);
                }
                let (reply, retried): (Value, bool) =
                    self.send_write(connector, Request::Cmd(&cmd)).await?;
                (!matches!(reply, Value::Nil), retried)
            }
        };
        // The lost first `SET NX` may have been carried out: then the key holds exactly this
        // value (a fresh random id, so no one else wrote it).
        let written =
            written || (retried && condition == Some("NX") && self.holds(id, &value).await?);
        if let Some(after) = after {
            *after = written.then(|| record.clone());
        }
        Ok(written)
    }

    /// Whether the key of `id` holds exactly `value`: after a retried write whose first
    /// attempt may have landed, tells this request's own write from another's.
    async fn holds(&self, id: &SessionId, value: &[u8]) -> Result<bool> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(id));
        let stored: Option<Vec<u8>> = self.send(Request::Cmd(&cmd)).await?;
        Ok(stored.as_deref() == Some(value))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        match *self.layout {
            Layout::Native => Capabilities::ALL,
            Layout::ConnectRedis(_) => Capabilities::ALL
                .with_compare_and_set(false)
                .with_owners(false),
        }
    }

    /// connect-redis's layout: Node finds sessions by the cookie's id.
    fn needs_raw_ids(&self) -> bool {
        matches!(*self.layout, Layout::ConnectRedis(_))
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let key = self.key(id);
        let now = OffsetDateTime::now_utc();
        match &*self.layout {
            Layout::Native => {
                let Some(cache) = self.cache() else {
                    return self.get_native(&key, now).await;
                };
                if let Some(record) = cache.get(&key, now) {
                    return Ok(Some(record));
                }
                let flight = cache.begin(&key, false);
                let found = self.get_native(&key, now).await;
                cache.end(flight, found.as_ref().ok().and_then(Option::as_ref));
                found
            }
            Layout::ConnectRedis(express) => {
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(&key).cmd("PEXPIRETIME").arg(&key);
                let (value, expires_ms): (Option<Vec<u8>>, i64) =
                    self.send(Request::Pipe(&pipe)).await?;
                match value {
                    None => Ok(None),
                    Some(value) => Layout::decode_connect_redis(express, &value, expires_ms, now),
                }
            }
        }
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.write(id, record, None).await.map(drop)
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let key = self.key(id);
        let flight = self.cache().map(|cache| cache.begin(&key, true));
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&key);
        let result: Result<i64> = self.send(Request::Cmd(&cmd)).await;
        if let (Some(cache), Some(flight)) = (self.cache(), flight) {
            cache.end(flight, None);
        }
        result.map(drop)
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let Some(cache) = self.cache() else {
            return self.touch_key(id, expires, None).await;
        };
        let flight = cache.begin(&self.key(id), true);
        let mut after = flight.replaced().cloned();
        let found = self.touch_key(id, expires, Some(&mut after)).await;
        cache.end(flight, after.as_ref());
        found
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.write(id, record, Some("NX")).await
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.write(id, record, Some("XX")).await
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let Some(cache) = self.cache() else {
            return self.compare_and_set_key(id, record, expected, None).await;
        };
        let flight = cache.begin(&self.key(id), true);
        let mut after = None;
        let outcome = self
            .compare_and_set_key(id, record, expected, Some(&mut after))
            .await;
        cache.end(flight, after.as_ref());
        outcome
    }

    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        self.owned_by(owner).await
    }
}

impl RedisStore {
    /// `GET` of a native session.
    async fn get_native(&self, key: &str, now: OffsetDateTime) -> Result<Option<Record>> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let value: Option<Vec<u8>> = self.send(Request::Cmd(&cmd)).await?;
        match value {
            Some(value) => Layout::decode_native(&value, now),
            None => Ok(None),
        }
    }

    /// [`SessionStore::touch`] without the near-cache; with `after` (the near-cache's
    /// connection, holding the copy the cache had), touches through
    /// [`TOUCH_TRACKED_SCRIPT`] and leaves in `after` that copy with its new expiry, if the
    /// session was touched.
    async fn touch_key(
        &self,
        id: &SessionId,
        expires: OffsetDateTime,
        after: Option<&mut Option<Record>>,
    ) -> Result<bool> {
        let ms = expiry_ms(expires);
        if !matches!(*self.layout, Layout::Native) {
            let mut cmd = redis::cmd("PEXPIREAT");
            cmd.arg(self.key(id)).arg(ms);
            let found: i64 = self.send(Request::Cmd(&cmd)).await?;
            return Ok(found == 1);
        }
        let key = self.key(id);
        if !self.connector.is_cluster() {
            let mut mode = self.index_prefix();
            mode.insert(0, 'i');
            let script = match after {
                Some(_) => &self.scripts.touch_tracked,
                None => &self.scripts.touch,
            };
            let mut invocation = script.prepare_invoke();
            invocation
                .key(&key)
                .arg(&ms.to_be_bytes()[..])
                .arg(ms)
                .arg(mode)
                .arg(id.as_str())
                .arg(expiry_ms(OffsetDateTime::now_utc()));
            let (found, _): (i64, bool) = self
                .send_write(&self.connector, Request::Script(&invocation))
                .await?;
            if let Some(after) = after {
                // What a read would now return: the copy this process had, with the new
                // expiry as the value keeps it (milliseconds).
                let touched = after.take().filter(|_| found == 1);
                *after = touched.map(|record| Record {
                    expires: expires
                        .replace_millisecond(expires.millisecond())
                        .unwrap_or(expires),
                    ..record
                });
            }
            return Ok(found == 1);
        }
        if let Some(after) = after {
            // Not near-cached (the near-cache is refused on Redis Cluster).
            *after = None;
        }
        // Cluster: an owned session's index is updated before its expiry moves, with the
        // owner read by a first attempt that touches only sessions without owner.
        let mut expected = vec![b'c'];
        for _ in 0..TOUCH_ATTEMPTS {
            let mut invocation = self.scripts.touch.prepare_invoke();
            invocation
                .key(&key)
                .arg(&ms.to_be_bytes()[..])
                .arg(ms)
                .arg(&expected);
            let reply: Value = self.send(Request::Script(&invocation)).await?;
            let section = match reply {
                Value::Int(found) => return Ok(found == 1),
                Value::BulkString(section) => section,
                _ => return Err(Error::backend(NAME, "touch script gave an unknown reply")),
            };
            let owner = OwnerDigest::from_section(&section)
                .ok_or_else(|| Error::corrupt(NAME, "owner section of a session is malformed"))?;
            self.index_on_cluster(id, &owner, ms).await?;
            expected.truncate(1);
            expected.extend_from_slice(&section);
        }
        Err(Error::backend(
            NAME,
            "the session changed owner during every touch attempt",
        ))
    }

    /// [`SessionStore::compare_and_set`] without the near-cache; with `after` (the
    /// near-cache's connection), writes through [`WRITE_TRACKED_SCRIPT`] and sets `after`
    /// to the record, if it was written.
    async fn compare_and_set_key(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
        after: Option<&mut Option<Record>>,
    ) -> Result<CasOutcome> {
        if !matches!(*self.layout, Layout::Native) {
            return Err(Error::Unsupported {
                store: NAME,
                operation: "compare_and_set",
            });
        }
        let owner = self.owner_of(record);
        let value = self.layout.encode(record, owner.as_ref())?;
        let ms = expiry_ms(record.expires);
        let mut invocation = self.write_script(after.is_some()).prepare_invoke();
        invocation.key(self.key(id));
        let owner = match owner {
            Some(owner) if self.connector.is_cluster() => {
                self.index_on_cluster(id, &owner, ms).await?;
                None
            }
            owner => owner,
        };
        if let Some(owner) = &owner {
            invocation.key(self.index_key(owner));
        }
        invocation
            .arg("cas")
            .arg(&value)
            .arg(ms)
            .arg(&expected.to_be_bytes()[..]);
        if owner.is_some() {
            invocation
                .arg(id.as_str())
                .arg(expiry_ms(OffsetDateTime::now_utc()));
        }
        let (outcome, retried): (i64, bool) = self
            .send_write(&self.connector, Request::Script(&invocation))
            .await?;
        let outcome = match outcome {
            0 => CasOutcome::Missing,
            // A lost first attempt may have written: then the key holds exactly this value
            // (its version is the one this write set).
            1 if retried && self.holds(id, &value).await? => CasOutcome::Written,
            1 => CasOutcome::Conflict,
            2 => CasOutcome::Written,
            _ => {
                return Err(Error::backend(
                    NAME,
                    "compare-and-set script returned an unknown outcome",
                ));
            }
        };
        if let Some(after) = after {
            *after = (outcome == CasOutcome::Written).then(|| record.clone());
        }
        Ok(outcome)
    }

    /// [`SessionStore::owned`].
    async fn owned_by(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        if !matches!(*self.layout, Layout::Native) {
            return Err(Error::Unsupported {
                store: NAME,
                operation: "owned",
            });
        }
        let digest = OwnerDigest::of(owner);
        let now = OffsetDateTime::now_utc();
        let cluster = self.connector.is_cluster();
        let mut invocation = self.scripts.list.prepare_invoke();
        invocation
            .key(self.index_key(&digest))
            .arg(expiry_ms(now))
            .arg(if cluster { "ids" } else { "read" })
            .arg(self.prefix())
            .arg(&digest.section()[..]);
        let found: Vec<(String, Vec<u8>)> = if cluster {
            let ids: Vec<String> = self.send(Request::Script(&invocation)).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // The sessions sit in many slots: the cluster connection splits the `MGET` by
            // slot and sends the parts to their nodes concurrently.
            let mut mget = redis::cmd("MGET");
            for id in &ids {
                mget.arg(self.key_of(id));
            }
            let values: Vec<Option<Vec<u8>>> = self.send(Request::Cmd(&mget)).await?;
            ids.into_iter()
                .zip(values)
                .filter_map(|(id, value)| Some((id, value?)))
                .collect()
        } else {
            let flat: Vec<Vec<u8>> = self.send(Request::Script(&invocation)).await?;
            let mut flat = flat.into_iter();
            let mut found = Vec::with_capacity(flat.len() / 2);
            while let (Some(id), Some(value)) = (flat.next(), flat.next()) {
                let id = String::from_utf8(id)
                    .map_err(|_| Error::corrupt(NAME, "owner index member is not UTF-8"))?;
                found.push((id, value));
            }
            found
        };
        let mut owned = Vec::with_capacity(found.len());
        for (id, value) in found {
            match Layout::decode_native(&value, now) {
                Ok(Some(record)) if record.owner.as_deref() == Some(owner) => {
                    owned.push((SessionId::new(id), record));
                }
                // Expired, or given to another owner or to none.
                Ok(_) => {}
                // A session that cannot be read cannot be loaded either; listing the others
                // matters more (e.g. to sign them out).
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable session of an owner"),
            }
        }
        Ok(owned)
    }
}
