//! [`MySqlStore`]: sessions in a MySQL or MariaDB table.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_store::{
    Capabilities, CasOutcome, Clock, Error, Record, Result, SessionId, SessionStore, SystemClock,
    async_trait,
};
use sqlx::mysql::MySqlPool;
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::common::{
    CleanupTask, DEFAULT_TABLE_NAME, map_sqlx_error, spawn_cleanup, validate_identifier,
    version_from_db, version_to_db,
};

const NAME: &str = "mysql";

/// Sessions in a MySQL or MariaDB table (feature `mysql`).
///
/// Layout, created by [`MySqlStore::migrate`]:
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS `sessions` (
///     id      VARBINARY(256) NOT NULL PRIMARY KEY,  -- exact, case-sensitive match
///     data    LONGBLOB       NOT NULL,              -- Record::encode_payload
///     expires DATETIME(6)    NOT NULL,              -- UTC, microseconds
///     version BIGINT         NOT NULL DEFAULT 0,
///     INDEX `sessions_expires_idx` (expires)
/// );
/// ```
///
/// - Implements every optional operation ([`Capabilities::ALL`]). `create` is a plain
///   `INSERT`, one statement when the id is free; on a duplicate key it deletes the row if
///   it has expired and inserts once more (a duplicate key then means a live row). No
///   `INSERT IGNORE`, which would also hide truncation errors.
///   `compare_and_set` adds a `SELECT` only when it wrote nothing.
/// - The id column is binary, so ids compare exactly (a case-insensitive collation would
///   let `abc` and `ABC` share a row). Ids longer than 256 bytes cannot be stored.
/// - The expiry is stored in UTC with microsecond precision (rounded down) and compared
///   against the application's clock ([`MySqlStore::with_clock`]), never the server's
///   `NOW()`, whatever the session time zone.
/// - Works on MySQL 8 and MariaDB 10.5+ (tested on MariaDB 10.11).
/// - `Clone` is cheap; clones share the pool.
///
/// ```no_run
/// # async fn demo() -> session_store::Result<()> {
/// use session_store_sqlx::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://app:secret@127.0.0.1:3306/app").await?;
/// store.migrate().await?;
/// let _cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let manager = session_store::SessionManager::new(store);
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: MySqlPool,
    table: String,
    clock: Arc<dyn Clock>,
    sql: Queries,
}

/// Every statement, built once from a validated, quoted table name.
struct Queries {
    create_table: SqlStr,
    delete_expired_one: SqlStr,
    get: SqlStr,
    set: SqlStr,
    insert: SqlStr,
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
        let t = format!("`{table}`");
        let index = format!("`{table}_expires_idx`");
        Self {
            create_table: sql(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id VARBINARY(256) NOT NULL PRIMARY KEY, \
                 data LONGBLOB NOT NULL, \
                 expires DATETIME(6) NOT NULL, \
                 version BIGINT NOT NULL DEFAULT 0, \
                 INDEX {index} (expires))"
            )),
            delete_expired_one: sql(format!("DELETE FROM {t} WHERE id = ? AND expires <= ?")),
            get: sql(format!(
                "SELECT data, expires, version FROM {t} WHERE id = ? AND expires > ?"
            )),
            set: sql(format!(
                "INSERT INTO {t} (id, data, expires, version) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE data = VALUES(data), \
                 expires = VALUES(expires), version = VALUES(version)"
            )),
            insert: sql(format!(
                "INSERT INTO {t} (id, data, expires, version) VALUES (?, ?, ?, ?)"
            )),
            update: sql(format!(
                "UPDATE {t} SET data = ?, expires = ?, version = ? \
                 WHERE id = ? AND expires > ?"
            )),
            cas: sql(format!(
                "UPDATE {t} SET data = ?, expires = ?, version = ? \
                 WHERE id = ? AND version = ? AND expires > ?"
            )),
            exists: sql(format!("SELECT 1 FROM {t} WHERE id = ? AND expires > ?")),
            touch: sql(format!(
                "UPDATE {t} SET expires = ? WHERE id = ? AND expires > ?"
            )),
            destroy: sql(format!("DELETE FROM {t} WHERE id = ?")),
            delete_expired: sql(format!("DELETE FROM {t} WHERE expires <= ?")),
        }
    }
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

fn err(e: sqlx::Error) -> Error {
    map_sqlx_error(NAME, e)
}

/// UTC wall time, rounded down to whole microseconds (what `DATETIME(6)` keeps; MySQL would
/// otherwise round, possibly up, past the real expiry).
fn to_db(t: OffsetDateTime) -> PrimitiveDateTime {
    let utc = t.to_offset(UtcOffset::UTC);
    let time = utc
        .time()
        .replace_microsecond(utc.microsecond())
        .unwrap_or(utc.time());
    PrimitiveDateTime::new(utc.date(), time)
}

fn from_db(t: PrimitiveDateTime) -> OffsetDateTime {
    t.assume_utc()
}

fn is_duplicate_key(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl MySqlStore {
    /// A store on `pool`, table `sessions`, on the system clock. Call
    /// [`MySqlStore::migrate`] once to create the table.
    pub fn new(pool: MySqlPool) -> Self {
        Self::build(pool, DEFAULT_TABLE_NAME.to_owned(), Arc::new(SystemClock))
    }

    /// Connects a new pool to `url` (sqlx's default options, except a 5 s acquire timeout
    /// and a ping before use only for connections idle for 5 s or more, not before every
    /// statement: one round trip per session operation instead of two), e.g.
    /// `mysql://user:pass@host:3306/db` (`mariadb://` works too). Fails with
    /// [`Error::Unavailable`] when the server cannot be reached and [`Error::Backend`] for a
    /// malformed URL.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = crate::common::network_pool_options()
            .connect(url)
            .await
            .map_err(err)?;
        Ok(Self::new(pool))
    }

    fn build(pool: MySqlPool, table: String, clock: Arc<dyn Clock>) -> Self {
        let sql = Queries::new(&table);
        Self {
            inner: Arc::new(Inner {
                pool,
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
            name.to_owned(),
            i.clock.clone(),
        ))
    }

    /// Reads the time from `clock` (the one the session manager uses) for every expiry
    /// comparison.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let i = &self.inner;
        Self::build(i.pool.clone(), i.table.clone(), clock)
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    /// The table name.
    pub fn table_name(&self) -> &str {
        &self.inner.table
    }

    /// The statement [`MySqlStore::delete_expired`] runs, with `?` the current UTC time (for
    /// `EXPLAIN`).
    pub fn delete_expired_sql(&self) -> &str {
        self.inner.sql.delete_expired.as_str()
    }

    /// Creates the table and its expiry index when missing. Safe to call on every start.
    pub async fn migrate(&self) -> Result<()> {
        let q = &self.inner.sql;
        // DDL commits implicitly in MySQL, so no transaction; the index is part of the
        // table definition, which keeps the whole thing idempotent.
        sqlx::query(q.create_table.clone())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Deletes every expired row (expiry at or before now); returns how many.
    pub async fn delete_expired(&self) -> Result<u64> {
        Inner::delete_expired(&self.inner).await
    }

    /// Spawns a tokio task that runs [`MySqlStore::delete_expired`] now and then every
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

    fn now(&self) -> PrimitiveDateTime {
        to_db(self.inner.clock.now())
    }
}

impl Inner {
    async fn delete_expired(&self) -> Result<u64> {
        let done = sqlx::query(self.sql.delete_expired.clone())
            .bind(to_db(self.clock.now()))
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl SessionStore for MySqlStore {
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
        let expires: PrimitiveDateTime = row.try_get(1).map_err(err)?;
        let version: i64 = row.try_get(2).map_err(err)?;
        Record::decode_payload(&data, from_db(expires), version_from_db(version))
            .map(Some)
            .map_err(|e| Error::corrupt(NAME, e))
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        sqlx::query(self.inner.sql.set.clone())
            .bind(id.as_str())
            .bind(record.encode_payload())
            .bind(to_db(record.expires))
            .bind(version_to_db(record.version))
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        sqlx::query(self.inner.sql.destroy.clone())
            .bind(id.as_str())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let done = sqlx::query(self.inner.sql.touch.clone())
            .bind(to_db(expires))
            .bind(id.as_str())
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        // sqlx connects with CLIENT_FOUND_ROWS: matched rows count even when unchanged.
        Ok(done.rows_affected() > 0)
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let payload = record.encode_payload();
        let insert = || {
            sqlx::query(self.inner.sql.insert.clone())
                .bind(id.as_str())
                .bind(payload.as_slice())
                .bind(to_db(record.expires))
                .bind(version_to_db(record.version))
                .execute(&self.inner.pool)
        };
        // One statement when the id is free, as it nearly always is.
        match insert().await {
            Ok(_) => return Ok(true),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(err(e)),
        }
        // Taken: an expired row must not block the id. Remove it (only if still expired)
        // and try once more; a duplicate key now means a live row.
        sqlx::query(self.inner.sql.delete_expired_one.clone())
            .bind(id.as_str())
            .bind(self.now())
            .execute(&self.inner.pool)
            .await
            .map_err(err)?;
        match insert().await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let done = sqlx::query(self.inner.sql.update.clone())
            .bind(record.encode_payload())
            .bind(to_db(record.expires))
            .bind(version_to_db(record.version))
            .bind(id.as_str())
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
        let now = self.now();
        let done = sqlx::query(self.inner.sql.cas.clone())
            .bind(record.encode_payload())
            .bind(to_db(record.expires))
            .bind(version_to_db(record.version))
            .bind(id.as_str())
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
    fn utc_micros_round_down() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_999)
            .unwrap()
            .to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        let db = to_db(t);
        assert_eq!(db.nanosecond(), 123_456_000);
        assert_eq!(from_db(db).unix_timestamp(), 1_700_000_000);
    }
}
