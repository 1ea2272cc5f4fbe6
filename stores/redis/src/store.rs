//! [`RedisStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Pipeline, Script, ScriptInvocation, Value};
use session_store::time::OffsetDateTime;
use session_store::{
    Capabilities, CasOutcome, Error, Record, Result, SessionId, SessionStore, async_trait,
};

use crate::connection::{Connector, Pools};
use crate::error::{self, NAME};
use crate::layout::{Layout, expiry_ms};

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

/// Compare-and-set in one `EVALSHA`: 0 = missing, 1 = conflict, 2 = written. Only the
/// 8-byte version header is read into the script (`GETRANGE`; a missing key reads as empty),
/// never the payload.
const CAS_SCRIPT: &str = r"
local current = redis.call('GETRANGE', KEYS[1], 0, 7)
if current == '' then
  return 0
end
if current ~= ARGV[1] then
  return 1
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 2
";

/// Touch in one `EVALSHA`: 0 = missing, 1 = touched. Rewrites the 8-byte expiry inside the
/// value (`SETRANGE`, which keeps the key's TTL) and the key's TTL (`PEXPIREAT`, which
/// removes the key if the time has passed), never the payload.
const TOUCH_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SETRANGE', KEYS[1], 8, ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

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
/// | `set` | `SET key value PXAT ms` |
/// | `touch` | `EVALSHA` of a script that rewrites the 8-byte expiry and the TTL, no payload (connect-redis layout: `PEXPIREAT key ms`) |
/// | `destroy` | `DEL` |
/// | `create` | `SET … NX PXAT ms` |
/// | `update` | `SET … XX PXAT ms` (never recreates a destroyed key) |
/// | `compare_and_set` | `EVALSHA` of a script loaded by [`RedisStore::connect`] (reloaded on `NOSCRIPT`) |
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
    cas: Arc<Script>,
    touch: Arc<Script>,
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
            cas: Arc::new(Script::new(CAS_SCRIPT)),
            touch: Arc::new(Script::new(TOUCH_SCRIPT)),
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
        Ok(Self::from_pool(pool))
    }

    /// A store on a pool built from a deadpool-redis [`Config`](deadpool_redis::Config)
    /// (tokio runtime, so the pool's timeouts apply). Connections get the `redis` crate's
    /// defaults: 1 s to connect, 500 ms per response.
    pub fn from_config(config: &deadpool_redis::Config) -> Result<Self> {
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|e| Error::backend(NAME, e))?;
        Ok(Self::from_pool(pool))
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
    /// same cookie options as the layout. Compare-and-set is unavailable in that layout.
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

    /// Connects now and loads the compare-and-set script, so that an unreachable server or a
    /// wrong URL shows at start-up rather than on the first request. Optional: every
    /// operation connects on demand.
    pub async fn connect(&self) -> Result<()> {
        let (generation, mut conn) = self.connector.get().await?;
        for script in [&self.cas, &self.touch] {
            if let Err(e) = script.load_async(&mut conn).await {
                if error::replace_connection(&e) {
                    self.connector.discard(generation);
                }
                return Err(error::from_redis(e));
            }
        }
        Ok(())
    }

    fn key(&self, id: &SessionId) -> String {
        let prefix = self.prefix();
        let mut key = String::with_capacity(prefix.len() + id.as_str().len());
        key.push_str(prefix);
        key.push_str(id.as_str());
        key
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
        let mut retried = false;
        loop {
            let (generation, mut conn) = self.connector.get().await?;
            let result = match &request {
                Request::Cmd(cmd) => cmd.query_async(&mut conn).await,
                Request::Pipe(pipe) => pipe.query_async(&mut conn).await,
                Request::Script(script) => script.invoke_async(&mut conn).await,
            };
            let e = match result {
                Ok(value) => return Ok((value, retried)),
                Err(e) => e,
            };
            if error::replace_connection(&e) {
                tracing::debug!(kind = self.connector.kind(), error = %e, "replacing the redis connection");
                self.connector.discard(generation);
                if !retried && error::worth_retrying(&e) {
                    retried = true;
                    continue;
                }
            }
            return Err(error::from_redis(e));
        }
    }

    /// `SET key value PXAT ms [NX|XX]`: whether the key was written.
    async fn write(
        &self,
        id: &SessionId,
        record: &Record,
        condition: Option<&str>,
    ) -> Result<bool> {
        let value = self.layout.encode(record)?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(id))
            .arg(&value)
            .arg("PXAT")
            .arg(expiry_ms(record.expires));
        if let Some(condition) = condition {
            cmd.arg(condition);
        }
        let (reply, retried): (Value, bool) = self.send_noting_retry(Request::Cmd(&cmd)).await?;
        let written = !matches!(reply, Value::Nil);
        if !written && retried && condition == Some("NX") {
            // The lost first `SET NX` may have been carried out: then the key holds exactly
            // this value (a fresh random id, so no one else wrote it).
            return self.holds(id, &value).await;
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
            Layout::ConnectRedis(_) => Capabilities::ALL.with_compare_and_set(false),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let key = self.key(id);
        let now = OffsetDateTime::now_utc();
        match &*self.layout {
            Layout::Native => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(&key);
                let value: Option<Vec<u8>> = self.send(Request::Cmd(&cmd)).await?;
                match value {
                    Some(value) => Layout::decode_native(&value, now),
                    None => Ok(None),
                }
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
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(id));
        let _: i64 = self.send(Request::Cmd(&cmd)).await?;
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let ms = expiry_ms(expires);
        let found: i64 = if let Layout::Native = *self.layout {
            let mut invocation = self.touch.prepare_invoke();
            invocation
                .key(self.key(id))
                .arg(&ms.to_be_bytes()[..])
                .arg(ms);
            self.send(Request::Script(&invocation)).await?
        } else {
            let mut cmd = redis::cmd("PEXPIREAT");
            cmd.arg(self.key(id)).arg(ms);
            self.send(Request::Cmd(&cmd)).await?
        };
        Ok(found == 1)
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
        if !matches!(*self.layout, Layout::Native) {
            return Err(Error::Unsupported {
                store: NAME,
                operation: "compare_and_set",
            });
        }
        let value = self.layout.encode(record)?;
        let mut invocation = self.cas.prepare_invoke();
        invocation
            .key(self.key(id))
            .arg(&expected.to_be_bytes()[..])
            .arg(&value)
            .arg(expiry_ms(record.expires));
        let (outcome, retried): (i64, bool) =
            self.send_noting_retry(Request::Script(&invocation)).await?;
        match outcome {
            0 => Ok(CasOutcome::Missing),
            // A lost first attempt may have written: then the key holds exactly this value
            // (its version is the one this write set).
            1 if retried && self.holds(id, &value).await? => Ok(CasOutcome::Written),
            1 => Ok(CasOutcome::Conflict),
            2 => Ok(CasOutcome::Written),
            _ => Err(Error::backend(
                NAME,
                "compare-and-set script returned an unknown outcome",
            )),
        }
    }
}
