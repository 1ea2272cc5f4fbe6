//! [`PostgresStore`]: sessions in a PostgreSQL table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_store::express::ExpressLayout;
use session_store::{
    Capabilities, CasOutcome, Clock, CookieOptions, Error, Record, Result, SessionId, SessionStore,
    SystemClock, async_trait,
};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::common::{
    CleanupTask, DEFAULT_TABLE_NAME, map_sqlx_error, spawn_cleanup, validate_identifier,
    version_from_db, version_to_db,
};

const NAME: &str = "postgres";

/// connect-pg-simple's default table name, the default in [`PostgresLayout::ConnectPgSimple`].
pub const CONNECT_PG_SIMPLE_TABLE_NAME: &str = "session";

/// What a [`PostgresStore`] keeps in its table. Select it with
/// [`PostgresStore::with_layout`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum PostgresLayout {
    /// This library's table (the default): `id`, `data BYTEA` (the payload envelope),
    /// `expires TIMESTAMPTZ`, `version BIGINT`. Every codec, every capability. Default table
    /// `sessions`.
    #[default]
    Native,
    /// connect-pg-simple's table, shared with Node services running express-session:
    ///
    /// ```sql
    /// CREATE TABLE IF NOT EXISTS "session" (
    ///     sid    varchar      NOT NULL COLLATE "default" PRIMARY KEY,
    ///     sess   json         NOT NULL,   -- express-session's JSON (ExpressLayout)
    ///     expire timestamp(6) NOT NULL    -- UTC
    /// );
    /// CREATE INDEX IF NOT EXISTS "IDX_session_expire" ON "session" (expire);
    /// ```
    ///
    /// Default table `session` (connect-pg-simple's). `migrate` creates exactly that table
    /// (connect-pg-simple's `table.sql`, `IF NOT EXISTS`), so either side may create it.
    ///
    /// - Values must use [`Codec::Json`](session_store::Codec::Json); anything else fails
    ///   to save with [`Error::Serialization`]. No data key may be named `cookie`.
    /// - The `expire` column is authoritative: `cookie.expires` inside `sess` is written on
    ///   every save and ignored on read, so `touch` is `UPDATE … SET expire` only.
    /// - `expire` is a `timestamp` without time zone; this store reads and writes it as UTC.
    ///   connect-pg-simple writes `to_timestamp(…)`, which PostgreSQL converts with the
    ///   connection's `TimeZone`: keep the Node side's `TimeZone` at UTC (the server's
    ///   default `timezone`, or `options: "-c TimeZone=UTC"` for `pg`).
    /// - There is no version column: `get` returns version 0 and `compare_and_set` is
    ///   [`Error::Unsupported`] (`create`, `update` and native `touch` remain).
    ConnectPgSimple(ExpressLayout),
}

impl PostgresLayout {
    /// connect-pg-simple's layout, writing the `cookie` object of new sessions from `cookie`
    /// (pass the manager's cookie options).
    pub fn connect_pg_simple(cookie: CookieOptions) -> Self {
        Self::ConnectPgSimple(ExpressLayout::new(cookie))
    }

    /// The table name used when none is set: `sessions`, or connect-pg-simple's `session`.
    pub fn default_table_name(&self) -> &'static str {
        match self {
            Self::Native => DEFAULT_TABLE_NAME,
            Self::ConnectPgSimple(_) => CONNECT_PG_SIMPLE_TABLE_NAME,
        }
    }
}

/// `expires` as a UTC `timestamp` (the connect-pg-simple layout's `expire` column).
fn utc_timestamp(expires: OffsetDateTime) -> PrimitiveDateTime {
    let utc = expires.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(utc.date(), utc.time())
}

/// Sessions in a PostgreSQL table (feature `postgres`).
///
/// Layout, created by [`PostgresStore::migrate`]:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "sessions" (
///     id      TEXT        PRIMARY KEY,
///     data    BYTEA       NOT NULL,      -- Record::encode_payload
///     expires TIMESTAMPTZ NOT NULL,
///     version BIGINT      NOT NULL DEFAULT 0
/// );
/// CREATE INDEX IF NOT EXISTS "sessions_expires_idx" ON "sessions" (expires);
/// ```
///
/// - Implements every optional operation ([`Capabilities::ALL`]), each as one statement
///   (`compare_and_set` adds a `SELECT` only when it wrote nothing, to tell a conflict from a
///   missing record).
/// - Expiry filters bind the application's clock ([`PostgresStore::with_clock`]), never the
///   server's `now()`, so the server's clock does not matter.
/// - Expired rows are never returned; [`PostgresStore::delete_expired`] or the task from
///   [`PostgresStore::spawn_cleanup`] reclaim them.
/// - Postgres text cannot hold NUL: an id containing NUL is never found by reads, and
///   `set`/`create` reject it with [`Error::Backend`].
/// - `Clone` is cheap; clones share the pool.
///
/// ```no_run
/// # async fn demo() -> session_store::Result<()> {
/// use session_store_sqlx::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
///     .await?
///     .with_schema_name("auth")?
///     .with_table_name("sessions")?;
/// store.migrate().await?;
/// let cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let manager = session_store::SessionManager::new(store);
/// # let _ = (cleanup, manager);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: Option<String>,
    /// `None`: the layout's default table name.
    table: Option<String>,
    clock: Arc<dyn Clock>,
    layout: PostgresLayout,
    sql: Queries,
}

/// Every statement, built once from validated, quoted identifiers.
struct Queries {
    qualified: String,
    create_schema: Option<SqlStr>,
    create_table: SqlStr,
    create_index: SqlStr,
    get: SqlStr,
    set: SqlStr,
    create: SqlStr,
    update: SqlStr,
    cas: SqlStr,
    exists: SqlStr,
    touch: SqlStr,
    destroy: SqlStr,
    delete_expired: SqlStr,
}

fn sql(text: String) -> SqlStr {
    // Only validated identifiers are formatted into statements; values are bound.
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}

impl Queries {
    fn new(schema: Option<&str>, table: &str, layout: &PostgresLayout) -> Self {
        match layout {
            PostgresLayout::Native => Self::native(schema, table),
            PostgresLayout::ConnectPgSimple(_) => Self::connect_pg_simple(schema, table),
        }
    }

    /// connect-pg-simple's table; `$n` bind UTC `timestamp`s for `expire`, `sess` as text.
    fn connect_pg_simple(schema: Option<&str>, table: &str) -> Self {
        let t = match schema {
            Some(s) => format!("\"{s}\".\"{table}\""),
            None => format!("\"{table}\""),
        };
        let index = format!("\"IDX_{table}_expire\"");
        let unsupported = sql("SELECT NULL WHERE FALSE".to_owned());
        Self {
            qualified: t.clone(),
            create_schema: schema.map(|s| sql(format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))),
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 sid varchar NOT NULL COLLATE \"default\" PRIMARY KEY, \
                 sess json NOT NULL, \
                 expire timestamp(6) NOT NULL)"
            )),
            create_index: sql(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (expire)"
            )),
            get: sql(format!(
                "SELECT sess::text, expire FROM {t} WHERE sid = $1 AND expire > $2"
            )),
            set: sql(format!(
                "INSERT INTO {t} (sid, sess, expire) VALUES ($1, $2::json, $3) \
                 ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire"
            )),
            create: sql(format!(
                "INSERT INTO {t} AS s (sid, sess, expire) VALUES ($1, $2::json, $3) \
                 ON CONFLICT (sid) DO UPDATE SET sess = EXCLUDED.sess, expire = EXCLUDED.expire \
                 WHERE s.expire <= $4"
            )),
            update: sql(format!(
                "UPDATE {t} SET sess = $2::json, expire = $3 WHERE sid = $1 AND expire > $4"
            )),
            cas: unsupported.clone(),
            exists: unsupported,
            touch: sql(format!(
                "UPDATE {t} SET expire = $2 WHERE sid = $1 AND expire > $3"
            )),
            destroy: sql(format!("DELETE FROM {t} WHERE sid = $1")),
            delete_expired: sql(format!("DELETE FROM {t} WHERE expire <= $1")),
        }
    }

    fn native(schema: Option<&str>, table: &str) -> Self {
        let t = match schema {
            Some(s) => format!("\"{s}\".\"{table}\""),
            None => format!("\"{table}\""),
        };
        let index = format!("\"{table}_expires_idx\"");
        Self {
            qualified: t.clone(),
            create_schema: schema.map(|s| sql(format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))),
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id TEXT PRIMARY KEY, \
                 data BYTEA NOT NULL, \
                 expires TIMESTAMPTZ NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0)"
            )),
            create_index: sql(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (expires)"
            )),
            get: sql(format!(
                "SELECT data, expires, version FROM {t} WHERE id = $1 AND expires > $2"
            )),
            set: sql(format!(
                "INSERT INTO {t} (id, data, expires, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, \
                 expires = EXCLUDED.expires, version = EXCLUDED.version"
            )),
            // Inserts, or replaces a row that has expired; a live row is left alone and
            // counts 0 rows.
            create: sql(format!(
                "INSERT INTO {t} AS s (id, data, expires, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, \
                 expires = EXCLUDED.expires, version = EXCLUDED.version \
                 WHERE s.expires <= $5"
            )),
            update: sql(format!(
                "UPDATE {t} SET data = $2, expires = $3, version = $4 \
                 WHERE id = $1 AND expires > $5"
            )),
            cas: sql(format!(
                "UPDATE {t} SET data = $2, expires = $3, version = $4 \
                 WHERE id = $1 AND version = $5 AND expires > $6"
            )),
            exists: sql(format!("SELECT 1 FROM {t} WHERE id = $1 AND expires > $2")),
            touch: sql(format!(
                "UPDATE {t} SET expires = $2 WHERE id = $1 AND expires > $3"
            )),
            destroy: sql(format!("DELETE FROM {t} WHERE id = $1")),
            delete_expired: sql(format!("DELETE FROM {t} WHERE expires <= $1")),
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("table", &self.table_name())
            .field("layout", &self.layout_name())
            .finish_non_exhaustive()
    }
}

fn err(e: sqlx::Error) -> Error {
    map_sqlx_error(NAME, e)
}

/// Postgres `text` cannot hold NUL, so no stored id contains one.
fn storable(id: &SessionId) -> bool {
    !id.as_str().contains('\0')
}

#[derive(Debug)]
struct NulInId;

impl fmt::Display for NulInId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("session id contains a NUL character, which Postgres text cannot store")
    }
}

impl std::error::Error for NulInId {}

impl PostgresStore {
    /// A store on `pool`, table `sessions` in the connection's `search_path` (usually
    /// `public`), on the system clock. Call [`PostgresStore::migrate`] once to create the
    /// table.
    pub fn new(pool: PgPool) -> Self {
        Self::build(
            pool,
            None,
            None,
            Arc::new(SystemClock),
            PostgresLayout::Native,
        )
    }

    /// Connects a new pool to `url` (sqlx's default options, except a 5 s acquire timeout
    /// and a ping before use only for connections idle for 5 s or more, not before every
    /// statement: one round trip per session operation instead of two), e.g.
    /// `postgres://user:pass@host:5432/db`. Fails with [`Error::Unavailable`] when the
    /// server cannot be reached and [`Error::Backend`] for a malformed URL.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = crate::common::network_pool_options()
            .connect(url)
            .await
            .map_err(err)?;
        Ok(Self::new(pool))
    }

    fn build(
        pool: PgPool,
        schema: Option<String>,
        table: Option<String>,
        clock: Arc<dyn Clock>,
        layout: PostgresLayout,
    ) -> Self {
        let name = table
            .as_deref()
            .unwrap_or_else(|| layout.default_table_name());
        let sql = Queries::new(schema.as_deref(), name, &layout);
        Self {
            inner: Arc::new(Inner {
                pool,
                schema,
                table,
                clock,
                layout,
                sql,
            }),
        }
    }

    /// Selects what the table holds (default [`PostgresLayout::Native`]).
    ///
    /// [`PostgresLayout::ConnectPgSimple`] shares sessions with a Node app using
    /// express-session and connect-pg-simple on the same database: configure the manager
    /// with `Codec::Json`, the cookie name `connect.sid`, a
    /// [`SignedCodec`](session_store::SignedCodec) with the app's secret and
    /// [`IdGenerator::express_compatible`](session_store::IdGenerator), and the same cookie
    /// options as the layout. Compare-and-set is unavailable in that layout.
    ///
    /// ```no_run
    /// # async fn demo() -> session_store::Result<()> {
    /// use session_store::{Codec, CookieOptions, IdGenerator, SessionManager, SignedCodec};
    /// use session_store_sqlx::{PostgresLayout, PostgresStore};
    ///
    /// let cookie = CookieOptions::default();
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
    ///     .await?
    ///     .with_layout(PostgresLayout::connect_pg_simple(cookie.clone())); // table `session`
    /// store.migrate().await?;
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
    pub fn with_layout(self, layout: PostgresLayout) -> Self {
        let i = &self.inner;
        Self::build(
            i.pool.clone(),
            i.schema.clone(),
            i.table.clone(),
            i.clock.clone(),
            layout,
        )
    }

    /// The layout.
    pub fn layout(&self) -> &PostgresLayout {
        &self.inner.layout
    }

    fn layout_name(&self) -> &'static str {
        match self.inner.layout {
            PostgresLayout::Native => "native",
            PostgresLayout::ConnectPgSimple(_) => "connect-pg-simple",
        }
    }

    /// The express layout, if the table is connect-pg-simple's.
    fn express(&self) -> Option<&ExpressLayout> {
        match &self.inner.layout {
            PostgresLayout::Native => None,
            PostgresLayout::ConnectPgSimple(express) => Some(express),
        }
    }

    /// Uses table `name` (default `sessions`, or `session` in connect-pg-simple's layout).
    /// It must be a plain identifier (see
    /// [`MAX_IDENTIFIER_LEN`](crate::MAX_IDENTIFIER_LEN)); anything else is
    /// [`Error::Config`].
    pub fn with_table_name(self, name: &str) -> Result<Self> {
        validate_identifier("table name", name)?;
        let i = &self.inner;
        Ok(Self::build(
            i.pool.clone(),
            i.schema.clone(),
            Some(name.to_owned()),
            i.clock.clone(),
            i.layout.clone(),
        ))
    }

    /// Puts the table in schema `name` (default: none, so the `search_path` decides);
    /// [`PostgresStore::migrate`] creates the schema if needed. It must be a plain identifier;
    /// anything else is [`Error::Config`].
    pub fn with_schema_name(self, name: &str) -> Result<Self> {
        validate_identifier("schema name", name)?;
        let i = &self.inner;
        Ok(Self::build(
            i.pool.clone(),
            Some(name.to_owned()),
            i.table.clone(),
            i.clock.clone(),
            i.layout.clone(),
        ))
    }

    /// Reads the time from `clock` (the one the session manager uses) for every expiry
    /// comparison.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let i = &self.inner;
        Self::build(
            i.pool.clone(),
            i.schema.clone(),
            i.table.clone(),
            clock,
            i.layout.clone(),
        )
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        self.inner
            .table
            .as_deref()
            .unwrap_or_else(|| self.inner.layout.default_table_name())
    }

    /// The schema name, if one was set.
    pub fn schema_name(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// The statement [`PostgresStore::delete_expired`] runs, with `$1` the current time (for
    /// `EXPLAIN`).
    pub fn delete_expired_sql(&self) -> &str {
        self.inner.sql.delete_expired.as_str()
    }

    /// Creates the schema (if set), the table and its expiry index when missing. Safe to call
    /// on every start, also from several processes at once (serialized by an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        let q = &self.inner.sql;
        let mut tx = self.inner.pool.begin().await.map_err(err)?;
        // Concurrent `CREATE ... IF NOT EXISTS` can still collide in the catalog; take a
        // transaction-scoped lock keyed by the table's name first.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(q.qualified.as_str())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        if let Some(create_schema) = &q.create_schema {
            sqlx::query(create_schema.clone())
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        sqlx::query(q.create_table.clone())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        sqlx::query(q.create_index.clone())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// Deletes every expired row (expiry at or before now); returns how many.
    pub async fn delete_expired(&self) -> Result<u64> {
        Inner::delete_expired(&self.inner).await
    }

    /// Spawns a tokio task that runs [`PostgresStore::delete_expired`] now and then every
    /// `period`, until the store (every clone of it) is dropped or the returned handle's
    /// [`stop`](CleanupTask::stop) is called. Failed rounds are logged and retried next
    /// period. Must be called within a tokio runtime.
    ///
    /// The task follows this store value and its clones: call it after the `with_*`
    /// configuration methods, which return a new store.
    pub fn spawn_cleanup(&self, period: Duration) -> CleanupTask {
        spawn_cleanup(
            NAME,
            Arc::downgrade(&self.inner),
            period,
            |inner: Arc<Inner>| async move { Inner::delete_expired(&inner).await },
        )
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    fn check_storable(id: &SessionId) -> Result<()> {
        if storable(id) {
            Ok(())
        } else {
            Err(Error::backend(NAME, NulInId))
        }
    }
}

impl PostgresStore {
    /// `get` in connect-pg-simple's layout: `sess` as text, `expire` as a UTC timestamp.
    async fn get_express(&self, express: &ExpressLayout, id: &SessionId) -> Result<Option<Record>> {
        let row = sqlx::query(self.inner.sql.get.clone())
            .bind(id.as_str())
            .bind(utc_timestamp(self.now()))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(err)?;
        let Some(row) = row else { return Ok(None) };
        let sess: String = row.try_get(0).map_err(err)?;
        let expire: PrimitiveDateTime = row.try_get(1).map_err(err)?;
        express
            .decode(sess.as_bytes(), expire.assume_utc(), 0)
            .map(Some)
            .map_err(|e| Error::corrupt(NAME, e))
    }
}

/// The `sess` column's text for `record` (bound as text, cast to `json` in SQL).
fn express_json(express: &ExpressLayout, record: &Record) -> Result<String> {
    let json = express.encode(record)?;
    String::from_utf8(json).map_err(Error::serialization)
}

impl Inner {
    async fn delete_expired(&self) -> Result<u64> {
        let query = sqlx::query(self.sql.delete_expired.clone());
        let query = match self.layout {
            PostgresLayout::Native => query.bind(self.clock.now()),
            PostgresLayout::ConnectPgSimple(_) => query.bind(utc_timestamp(self.clock.now())),
        };
        let done = query.execute(&self.pool).await.map_err(err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        match self.inner.layout {
            PostgresLayout::Native => Capabilities::ALL,
            PostgresLayout::ConnectPgSimple(_) => Capabilities::ALL.with_compare_and_set(false),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        if !storable(id) {
            return Ok(None);
        }
        if let Some(express) = self.express() {
            return self.get_express(express, id).await;
        }
        let row = sqlx::query(self.inner.sql.get.clone())
            .bind(id.as_str())
            .bind(self.now())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(err)?;
        let Some(row) = row else { return Ok(None) };
        let data: Vec<u8> = row.try_get(0).map_err(err)?;
        let expires: OffsetDateTime = row.try_get(1).map_err(err)?;
        let version: i64 = row.try_get(2).map_err(err)?;
        Record::decode_payload(&data, expires, version_from_db(version))
            .map(Some)
            .map_err(|e| Error::corrupt(NAME, e))
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        Self::check_storable(id)?;
        if let Some(express) = self.express() {
            let sess = express_json(express, record)?;
            sqlx::query(self.inner.sql.set.clone())
                .bind(id.as_str())
                .bind(sess)
                .bind(utc_timestamp(record.expires))
                .execute(&self.inner.pool)
                .await
                .map_err(err)?;
            return Ok(());
        }
        sqlx::query(self.inner.sql.set.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(record.expires)
            .bind(version_to_db(record.version))
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        if !storable(id) {
            return Ok(());
        }
        sqlx::query(self.inner.sql.destroy.clone())
            .bind(id.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let query = sqlx::query(self.inner.sql.touch.clone()).bind(id.as_str());
        let query = match self.inner.layout {
            PostgresLayout::Native => query.bind(expires).bind(self.now()),
            PostgresLayout::ConnectPgSimple(_) => query
                .bind(utc_timestamp(expires))
                .bind(utc_timestamp(self.now())),
        };
        let done = query.execute(&self.inner.pool).await.map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        Self::check_storable(id)?;
        if let Some(express) = self.express() {
            let sess = express_json(express, record)?;
            let done = sqlx::query(self.inner.sql.create.clone())
                .bind(id.as_str())
                .bind(sess)
                .bind(utc_timestamp(record.expires))
                .bind(utc_timestamp(self.now()))
                .execute(&self.inner.pool)
                .await
                .map_err(err)?;
            return Ok(done.rows_affected() > 0);
        }
        let done = sqlx::query(self.inner.sql.create.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(record.expires)
            .bind(version_to_db(record.version))
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        if !storable(id) {
            return Ok(false);
        }
        if let Some(express) = self.express() {
            let sess = express_json(express, record)?;
            let done = sqlx::query(self.inner.sql.update.clone())
                .bind(id.as_str())
                .bind(sess)
                .bind(utc_timestamp(record.expires))
                .bind(utc_timestamp(self.now()))
                .execute(&self.inner.pool)
                .await
                .map_err(err)?;
            return Ok(done.rows_affected() > 0);
        }
        let done = sqlx::query(self.inner.sql.update.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(record.expires)
            .bind(version_to_db(record.version))
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        if self.express().is_some() {
            return Err(Error::Unsupported {
                store: NAME,
                operation: "compare_and_set",
            });
        }
        if !storable(id) {
            return Ok(CasOutcome::Missing);
        }
        let now = self.now();
        let done = sqlx::query(self.inner.sql.cas.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(record.expires)
            .bind(version_to_db(record.version))
            .bind(version_to_db(expected))
            .bind(now)
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        if done.rows_affected() > 0 {
            return Ok(CasOutcome::Written);
        }
        let live = sqlx::query(self.inner.sql.exists.clone())
            .bind(id.as_str())
            .bind(now)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(if live.is_some() {
            CasOutcome::Conflict
        } else {
            CasOutcome::Missing
        })
    }
}
