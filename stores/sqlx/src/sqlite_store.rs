//! [`SqliteStore`]: sessions in a SQLite table.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use session_store::{
    Capabilities, CasOutcome, Clock, Error, Record, Result, SessionId, SessionStore, SystemClock,
    async_trait,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};
use time::OffsetDateTime;

use crate::common::{
    CleanupTask, DEFAULT_TABLE_NAME, map_sqlx_error, spawn_cleanup, validate_identifier,
    version_from_db, version_to_db,
};

const NAME: &str = "sqlite";

/// Sessions in a SQLite table (feature `sqlite`).
///
/// Layout, created by [`SqliteStore::migrate`]:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS "sessions" (
///     id      TEXT    PRIMARY KEY NOT NULL,
///     data    BLOB    NOT NULL,            -- Record::encode_payload
///     expires INTEGER NOT NULL,            -- Unix time in milliseconds
///     version BIGINT  NOT NULL DEFAULT 0
/// );
/// CREATE INDEX IF NOT EXISTS "sessions_expires_idx" ON "sessions" (expires);
/// ```
///
/// - Implements every optional operation ([`Capabilities::ALL`]), each as one statement
///   (`compare_and_set` adds a `SELECT` only when it wrote nothing).
/// - The expiry is kept as whole Unix milliseconds (rounded down), compared against the
///   application's clock ([`SqliteStore::with_clock`]).
/// - [`SqliteStore::connect`] creates a missing database file and opens it in WAL mode with
///   `synchronous = NORMAL` (readers never block the writer; a power loss may lose the last
///   commits but never corrupts the file); build your own pool and use
///   [`SqliteStore::new`] for other settings. For `sqlite::memory:` it keeps exactly one
///   connection open for the life of the pool, since an in-memory database disappears with
///   its last connection.
/// - Writes from this process queue in a fair in-process lock before reaching SQLite (which
///   takes one writer at a time), so concurrent requests do not starve in SQLite's busy
///   handler; reads run in parallel. Writers in other processes still meet the connection's
///   busy timeout (sqlx default 5 s).
/// - `Clone` is cheap; clones share the pool.
///
/// ```no_run
/// # async fn demo() -> session_store::Result<()> {
/// use session_store_sqlx::SqliteStore;
///
/// let store = SqliteStore::connect("sqlite://sessions.db").await?;
/// store.migrate().await?;
/// let _cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let manager = session_store::SessionManager::new(store);
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    /// Serializes this process's writes (shared by every store built from one `new` or
    /// `connect`): SQLite has one writer at a time anyway, and its busy handler is not fair,
    /// so under concurrent writes some would wait out the busy timeout and fail. Waiting in
    /// a FIFO lock instead keeps them in order. Reads are not serialized.
    writes: Arc<tokio::sync::Mutex<()>>,
    table: String,
    clock: Arc<dyn Clock>,
    sql: Queries,
}

/// Every statement, built once from a validated, quoted table name.
struct Queries {
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
    fn new(table: &str) -> Self {
        let t = format!("\"{table}\"");
        let index = format!("\"{table}_expires_idx\"");
        Self {
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id TEXT PRIMARY KEY NOT NULL, \
                 data BLOB NOT NULL, \
                 expires INTEGER NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0)"
            )),
            create_index: sql(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {t} (expires)"
            )),
            get: sql(format!(
                "SELECT data, expires, version FROM {t} WHERE id = ?1 AND expires > ?2"
            )),
            set: sql(format!(
                "INSERT INTO {t} (id, data, expires, version) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires = excluded.expires, version = excluded.version"
            )),
            // Inserts, or replaces a row that has expired; a live row is left alone and
            // counts 0 changes.
            create: sql(format!(
                "INSERT INTO {t} (id, data, expires, version) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                 expires = excluded.expires, version = excluded.version \
                 WHERE {t}.expires <= ?5"
            )),
            update: sql(format!(
                "UPDATE {t} SET data = ?2, expires = ?3, version = ?4 \
                 WHERE id = ?1 AND expires > ?5"
            )),
            cas: sql(format!(
                "UPDATE {t} SET data = ?2, expires = ?3, version = ?4 \
                 WHERE id = ?1 AND version = ?5 AND expires > ?6"
            )),
            exists: sql(format!("SELECT 1 FROM {t} WHERE id = ?1 AND expires > ?2")),
            touch: sql(format!(
                "UPDATE {t} SET expires = ?2 WHERE id = ?1 AND expires > ?3"
            )),
            destroy: sql(format!("DELETE FROM {t} WHERE id = ?1")),
            delete_expired: sql(format!("DELETE FROM {t} WHERE expires <= ?1")),
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

fn err(e: sqlx::Error) -> Error {
    map_sqlx_error(NAME, e)
}

/// Unix milliseconds, rounded down (so a stored expiry is never later than the real one).
fn to_millis(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

fn from_millis(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| Error::corrupt(NAME, e))
}

impl SqliteStore {
    /// A store on `pool`, table `sessions`, on the system clock. Call
    /// [`SqliteStore::migrate`] once to create the table.
    pub fn new(pool: SqlitePool) -> Self {
        Self::build(
            pool,
            Arc::default(),
            DEFAULT_TABLE_NAME.to_owned(),
            Arc::new(SystemClock),
        )
    }

    /// Opens a pool on `url`: `sqlite://path/to/file.db` (relative) or
    /// `sqlite:///abs/path.db` (created if missing, unless the URL sets `mode=`), or
    /// `sqlite::memory:` (one connection kept open, so the data lives as long as the pool).
    /// A malformed URL is [`Error::Backend`]; a file that cannot be opened is
    /// [`Error::Unavailable`].
    pub async fn connect(url: &str) -> Result<Self> {
        let mut options = SqliteConnectOptions::from_str(url).map_err(err)?;
        // An explicit `mode=` (e.g. `ro`) in the URL wins over creating the file.
        if !url.contains("mode=") {
            options = options.create_if_missing(true);
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            // Readers do not block the writer and commits skip most fsyncs; a power loss
            // may lose the last commits, never corrupt the file.
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
        }
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .acquire_timeout(crate::common::ACQUIRE_TIMEOUT)
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().acquire_timeout(crate::common::ACQUIRE_TIMEOUT)
        }
        .connect_with(options)
        .await
        .map_err(err)?;
        Ok(Self::new(pool))
    }

    fn build(
        pool: SqlitePool,
        writes: Arc<tokio::sync::Mutex<()>>,
        table: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let sql = Queries::new(&table);
        Self {
            inner: Arc::new(Inner {
                pool,
                writes,
                table,
                clock,
                sql,
            }),
        }
    }

    /// Uses table `name` (default `sessions`). It must be a plain identifier (see
    /// [`MAX_IDENTIFIER_LEN`](crate::MAX_IDENTIFIER_LEN)); anything else is
    /// [`Error::Config`].
    pub fn with_table_name(self, name: &str) -> Result<Self> {
        validate_identifier("table name", name)?;
        let i = &self.inner;
        Ok(Self::build(
            i.pool.clone(),
            i.writes.clone(),
            name.to_owned(),
            i.clock.clone(),
        ))
    }

    /// Reads the time from `clock` (the one the session manager uses) for every expiry
    /// comparison.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let i = &self.inner;
        Self::build(i.pool.clone(), i.writes.clone(), i.table.clone(), clock)
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The statement [`SqliteStore::delete_expired`] runs, with `?1` the current Unix time in
    /// milliseconds (for `EXPLAIN QUERY PLAN`).
    pub fn delete_expired_sql(&self) -> &str {
        self.inner.sql.delete_expired.as_str()
    }

    /// Creates the table and its expiry index when missing. Safe to call on every start.
    pub async fn migrate(&self) -> Result<()> {
        let q = &self.inner.sql;
        let _write = self.inner.writes.lock().await;
        let mut tx = self.inner.pool.begin().await.map_err(err)?;
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

    /// Spawns a tokio task that runs [`SqliteStore::delete_expired`] now and then every
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

    fn now(&self) -> i64 {
        to_millis(self.inner.clock.now())
    }
}

impl Inner {
    async fn delete_expired(&self) -> Result<u64> {
        let _write = self.writes.lock().await;
        let done = sqlx::query(self.sql.delete_expired.clone())
            .bind(to_millis(self.clock.now()))
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let row = sqlx::query(self.inner.sql.get.clone())
            .bind(id.as_str())
            .bind(self.now())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(err)?;
        let Some(row) = row else { return Ok(None) };
        let data: Vec<u8> = row.try_get(0).map_err(err)?;
        let expires: i64 = row.try_get(1).map_err(err)?;
        let version: i64 = row.try_get(2).map_err(err)?;
        Record::decode_payload(&data, from_millis(expires)?, version_from_db(version))
            .map(Some)
            .map_err(|e| Error::corrupt(NAME, e))
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let _write = self.inner.writes.lock().await;
        sqlx::query(self.inner.sql.set.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(to_millis(record.expires))
            .bind(version_to_db(record.version))
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let _write = self.inner.writes.lock().await;
        sqlx::query(self.inner.sql.destroy.clone())
            .bind(id.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let _write = self.inner.writes.lock().await;
        let done = sqlx::query(self.inner.sql.touch.clone())
            .bind(id.as_str())
            .bind(to_millis(expires))
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let _write = self.inner.writes.lock().await;
        let done = sqlx::query(self.inner.sql.create.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(to_millis(record.expires))
            .bind(version_to_db(record.version))
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let _write = self.inner.writes.lock().await;
        let done = sqlx::query(self.inner.sql.update.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(to_millis(record.expires))
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
        let _write = self.inner.writes.lock().await;
        let now = self.now();
        let done = sqlx::query(self.inner.sql.cas.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(to_millis(record.expires))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_down() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(to_millis(t), 1_700_000_000_123);
        let before = OffsetDateTime::from_unix_timestamp_nanos(-1).unwrap();
        assert_eq!(to_millis(before), -1);
        assert_eq!(
            from_millis(1_700_000_000_123).unwrap(),
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).unwrap()
        );
        assert!(matches!(from_millis(i64::MAX), Err(Error::Corrupt { .. })));
    }
}
