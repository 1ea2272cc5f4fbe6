//! SQLite: expiries as Unix milliseconds, writes queued in process.

use std::str::FromStr;

use session_store::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;

use super::Arg::{Data, Expected, Expires, Id, Now, Version};
use super::sealed::{self, Dialect as _};
use super::{Statement, Statements};
use crate::SqlStore;
use crate::common::{ACQUIRE_TIMEOUT, map_sqlx_error};

/// The SQLite dialect (feature `sqlite`): see [`SqliteStore`].
#[derive(Debug, Clone, Copy)]
pub struct Sqlite;

/// Sessions in a SQLite table (feature `sqlite`).
///
/// Layout, created by [`SqlStore::migrate`]:
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
/// - Everything [`SqlStore`] promises. The expiry is kept as whole Unix milliseconds
///   (rounded down).
/// - [`SqliteStore::connect`] creates a missing database file and opens it in WAL mode with
///   `synchronous = NORMAL` (readers never block the writer; a power loss may lose the last
///   commits but never corrupts the file); build your own pool and use
///   [`SqlStore::new`] for other settings. For `sqlite::memory:` it keeps exactly one
///   connection open for the life of the pool, since an in-memory database disappears with
///   its last connection.
/// - Writes from this process queue in a fair in-process lock before reaching SQLite (which
///   takes one writer at a time), so concurrent requests do not starve in SQLite's busy
///   handler; reads run in parallel. Writers in other processes still meet the connection's
///   busy timeout (sqlx default 5 s).
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
pub type SqliteStore = SqlStore<Sqlite>;

impl sealed::Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    type Time = i64;
    type Layout = ();
    const NAME: &'static str = "sqlite";
    const SERIALIZE_WRITES: bool = true;

    fn statements(_schema: Option<&str>, table: &str, _layout: &()) -> Statements {
        let t = format!("\"{table}\"");
        let write = &[Id, Data, Expires, Version, Now];
        Statements {
            migrate: vec![
                Statement::new(
                    format!(
                        "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY NOT NULL, \
                         data BLOB NOT NULL, expires INTEGER NOT NULL, \
                         version BIGINT NOT NULL DEFAULT 0)"
                    ),
                    &[],
                ),
                Statement::new(
                    format!("CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\" ON {t} (expires)"),
                    &[],
                ),
            ],
            get: Statement::new(
                format!("SELECT data, expires, version FROM {t} WHERE id = ?1 AND expires > ?2"),
                &[Id, Now],
            ),
            set: Statement::new(
                format!(
                    "INSERT INTO {t} (id, data, expires, version) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                     expires = excluded.expires, version = excluded.version"
                ),
                &[Id, Data, Expires, Version],
            ),
            // Inserts, or replaces a row that has expired; a live row is left alone.
            create: Statement::new(
                format!(
                    "INSERT INTO {t} (id, data, expires, version) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                     expires = excluded.expires, version = excluded.version \
                     WHERE {t}.expires <= ?5"
                ),
                write,
            ),
            reclaim: None,
            update: Statement::new(
                format!(
                    "UPDATE {t} SET data = ?2, expires = ?3, version = ?4 \
                     WHERE id = ?1 AND expires > ?5"
                ),
                write,
            ),
            cas: Some(Statement::new(
                format!(
                    "UPDATE {t} SET data = ?2, expires = ?3, version = ?4 \
                     WHERE id = ?1 AND version = ?5 AND expires > ?6"
                ),
                &[Id, Data, Expires, Version, Expected, Now],
            )),
            exists: Statement::new(
                format!("SELECT 1 FROM {t} WHERE id = ?1 AND expires > ?2"),
                &[Id, Now],
            ),
            touch: Statement::new(
                format!("UPDATE {t} SET expires = ?2 WHERE id = ?1 AND expires > ?3"),
                &[Id, Expires, Now],
            ),
            destroy: Statement::new(format!("DELETE FROM {t} WHERE id = ?1"), &[Id]),
            delete_expired: Statement::new(format!("DELETE FROM {t} WHERE expires <= ?1"), &[Now]),
        }
    }

    /// Unix milliseconds, rounded down (a stored expiry is never later than the real one).
    fn time_to_db(t: OffsetDateTime) -> i64 {
        let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
    }

    fn time_from_db(ms: i64) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// `SQLITE_BUSY` (5, still locked after the busy timeout), `SQLITE_LOCKED` (6),
    /// `SQLITE_IOERR` (10), `SQLITE_CANTOPEN` (14): try again later. SQLite reports extended
    /// codes; the primary code is the low byte.
    fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
        use sqlx::error::DatabaseError as _;
        db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
            .and_then(|e| e.code())
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 14))
    }
}

impl SqliteStore {
    /// Opens a pool on `url`: `sqlite://path/to/file.db` (relative) or
    /// `sqlite:///abs/path.db` (created if missing, unless the URL sets `mode=`), or
    /// `sqlite::memory:` (one connection kept open, so the data lives as long as the pool).
    /// A malformed URL is [`Error::Backend`](session_store::Error::Backend); a file that
    /// cannot be opened is [`Error::Unavailable`](session_store::Error::Unavailable).
    pub async fn connect(url: &str) -> Result<Self> {
        let err = |e| map_sqlx_error(Sqlite::NAME, e, Sqlite::is_unavailable);
        let mut options = SqliteConnectOptions::from_str(url).map_err(err)?;
        // An explicit `mode=` (e.g. `ro`) in the URL wins over creating the file.
        if !url.contains("mode=") {
            options = options.create_if_missing(true);
        }
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            SqlitePoolOptions::new()
        }
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(err)?;
        Ok(Self::new(pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_down() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(Sqlite::time_to_db(t), 1_700_000_000_123);
        let before = OffsetDateTime::from_unix_timestamp_nanos(-1).unwrap();
        assert_eq!(Sqlite::time_to_db(before), -1);
        assert_eq!(
            Sqlite::time_from_db(1_700_000_000_123),
            OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).ok()
        );
        assert_eq!(Sqlite::time_from_db(i64::MAX), None);
    }
}
