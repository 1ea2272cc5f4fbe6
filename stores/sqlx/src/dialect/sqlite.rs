//! SQLite: expiries as Unix milliseconds, writes queued in process.

use std::str::FromStr;

use session_store::Result;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;

use super::Arg::{Data, Expected, Expires, Id, Now, Owner, Version};
use super::sealed::{self, Dialect as _};
use super::{Statement, Statements, Step};
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
///     version BIGINT  NOT NULL DEFAULT 0,
///     owner   TEXT                         -- Record::owner, NULL without one
/// );
/// CREATE INDEX IF NOT EXISTS "sessions_expires_idx" ON "sessions" (expires);
/// CREATE INDEX IF NOT EXISTS "sessions_owner_idx" ON "sessions" (owner, expires)
///     WHERE owner IS NOT NULL;
/// ```
///
/// - Everything [`SqlStore`] promises. The expiry is kept as whole Unix milliseconds
///   (rounded down).
/// - The owner index is partial: rows without an owner have no entry in it. `owned` is
///   `SELECT … WHERE owner = ?1 AND expires > ?2`, a search of that index.
/// - `migrate` on a table of an earlier release (without `owner`) adds the column
///   (`ALTER TABLE … ADD COLUMN`: a change of the schema only, no row is rewritten) and
///   the owner index; `pragma_table_info` is read first, so a table that has the column
///   is never altered.
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
        let write = &[Id, Data, Expires, Version, Owner, Now];
        Statements {
            migrate: vec![
                Step::always(Statement::new(
                    format!(
                        "CREATE TABLE IF NOT EXISTS {t} (id TEXT PRIMARY KEY NOT NULL, \
                         data BLOB NOT NULL, expires INTEGER NOT NULL, \
                         version BIGINT NOT NULL DEFAULT 0, owner TEXT)"
                    ),
                    &[],
                )),
                Step::always(Statement::new(
                    format!("CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\" ON {t} (expires)"),
                    &[],
                )),
                // A table of an earlier release has no `owner`; SQLite has no
                // `ADD COLUMN IF NOT EXISTS`. `table` is a validated identifier, so it is a
                // safe literal.
                Step::unless(
                    Statement::new(
                        format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'owner'"),
                        &[],
                    ),
                    Statement::new(format!("ALTER TABLE {t} ADD COLUMN owner TEXT"), &[]),
                ),
                // Partial: `owner = ?1` implies `owner IS NOT NULL`, so `owned` uses it.
                Step::always(Statement::new(
                    format!(
                        "CREATE INDEX IF NOT EXISTS \"{table}_owner_idx\" ON {t} \
                         (owner, expires) WHERE owner IS NOT NULL"
                    ),
                    &[],
                )),
            ],
            get: Statement::new(
                format!("SELECT data, expires, version FROM {t} WHERE id = ?1 AND expires > ?2"),
                &[Id, Now],
            ),
            set: Statement::new(
                format!(
                    "INSERT INTO {t} (id, data, expires, version, owner) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                     expires = excluded.expires, version = excluded.version, \
                     owner = excluded.owner"
                ),
                &[Id, Data, Expires, Version, Owner],
            ),
            // Inserts, or replaces a row that has expired; a live row is left alone.
            create: Statement::new(
                format!(
                    "INSERT INTO {t} (id, data, expires, version, owner) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, \
                     expires = excluded.expires, version = excluded.version, \
                     owner = excluded.owner WHERE {t}.expires <= ?6"
                ),
                write,
            ),
            reclaim: None,
            update: Statement::new(
                format!(
                    "UPDATE {t} SET data = ?2, expires = ?3, version = ?4, owner = ?5 \
                     WHERE id = ?1 AND expires > ?6"
                ),
                write,
            ),
            cas: Some(Statement::new(
                format!(
                    "UPDATE {t} SET data = ?2, expires = ?3, version = ?4, owner = ?5 \
                     WHERE id = ?1 AND version = ?6 AND expires > ?7"
                ),
                &[Id, Data, Expires, Version, Owner, Expected, Now],
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
            owned: Some(Statement::new(
                format!(
                    "SELECT CAST(id AS BLOB), data, expires, version FROM {t} \
                     WHERE owner = ?1 AND expires > ?2"
                ),
                &[Owner, Now],
            )),
            tagged: None,
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
        Ok(Self::on_own_pool(pool))
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
