//! What the three dialects share: identifier checks, the one driver-error mapping, and the
//! background cleanup task.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use session_store::{Error, Result};

/// The table name used when none is configured.
pub const DEFAULT_TABLE_NAME: &str = "sessions";

/// Longest accepted table or schema name: the index name (`<table>_expires_idx`) must still
/// fit Postgres' 63-byte and MySQL's 64-byte identifier limits.
pub const MAX_IDENTIFIER_LEN: usize = 48;

/// Checks that `name` is a plain SQL identifier: an ASCII letter or `_`, then ASCII letters,
/// digits or `_`, at most [`MAX_IDENTIFIER_LEN`] bytes. Only names that pass are ever put
/// into SQL text (and then still quoted); everything else is a bound parameter.
pub(crate) fn validate_identifier(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && name.len() <= MAX_IDENTIFIER_LEN {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} {name:?} is not a valid identifier: use 1 to {MAX_IDENTIFIER_LEN} ASCII \
             letters, digits or `_`, not starting with a digit"
        )))
    }
}

/// Maps a driver error to the library's error, in one place for all dialects.
///
/// - The server cannot be reached or the connection broke (IO, TLS, pool timed out or
///   closed, worker gone, SQLSTATE class `08` "connection exception", `57P01`–`57P03`
///   "server shutting down", `53300` "too many connections"; SQLite busy, locked, I/O error
///   or cannot open): [`Error::Unavailable`].
/// - A stored column could not be decoded: [`Error::Corrupt`].
/// - Anything else: [`Error::Backend`].
///
/// The driver's error is kept as the source. None of these messages contain bound values.
pub(crate) fn map_sqlx_error(store: &'static str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable(store, err),
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_unavailable_code) => {
            Error::unavailable(store, err)
        }
        #[cfg(feature = "sqlite")]
        sqlx::Error::Database(db) if is_unavailable_sqlite(&**db) => Error::unavailable(store, err),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Error::corrupt(store, err),
        _ => Error::backend(store, err),
    }
}

/// SQLSTATE codes (Postgres, MySQL) that mean the server cannot serve us now.
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// SQLite result codes that mean "try again later": `SQLITE_BUSY` (5, still locked after
/// the busy timeout), `SQLITE_LOCKED` (6), `SQLITE_IOERR` (10), `SQLITE_CANTOPEN` (14).
/// SQLite reports extended codes; the primary code is the low byte.
#[cfg(feature = "sqlite")]
fn is_unavailable_sqlite(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::DatabaseError as _;
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 14))
}

/// Converts a stored `BIGINT` back to the record's `u64` version (the reverse of
/// [`version_to_db`]; every `u64` round-trips).
pub(crate) fn version_from_db(v: i64) -> u64 {
    v as u64
}

/// Converts the record's `u64` version to a `BIGINT` by reinterpreting the bits, so
/// `u64::MAX` is stored as `-1` and read back unchanged.
pub(crate) fn version_to_db(v: u64) -> i64 {
    v as i64
}

/// Handle of a background cleanup task started by a store's `spawn_cleanup`.
///
/// The task deletes expired rows once right away and then every period. A failed round is
/// logged with `tracing` (at `warn`) and the task carries on with the next one. It ends
/// when every clone of its store has been dropped, or when [`CleanupTask::stop`] is called.
/// Dropping the handle does **not** stop the task (like [`tokio::task::JoinHandle`]).
#[derive(Debug)]
pub struct CleanupTask {
    handle: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    ok: AtomicU64,
    failed: AtomicU64,
    deleted: AtomicU64,
}

impl CleanupTask {
    /// Stops the task. A round in progress is abandoned (its statement is cancelled or
    /// completes on the server; either way the table stays consistent).
    pub fn stop(&self) {
        self.handle.abort();
    }

    /// Whether the task has ended (stopped, or its store was dropped).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Rounds that completed successfully so far.
    pub fn rounds_succeeded(&self) -> u64 {
        self.stats.ok.load(Ordering::Relaxed)
    }

    /// Rounds that failed (and were logged) so far.
    pub fn rounds_failed(&self) -> u64 {
        self.stats.failed.load(Ordering::Relaxed)
    }

    /// Rows deleted by the task so far.
    pub fn rows_deleted(&self) -> u64 {
        self.stats.deleted.load(Ordering::Relaxed)
    }

    /// Waits for the task to end, e.g. after [`CleanupTask::stop`] or once the store is gone.
    pub async fn join(self) {
        // A cancelled or panicked task has ended too; nothing to report.
        let _ = self.handle.await;
    }
}

/// Spawns the cleanup loop on the current tokio runtime. `round` runs one
/// `delete_expired` on the store that `weak` still points to; the strong reference is
/// dropped again before the task sleeps, so the task never keeps the store alive.
pub(crate) fn spawn_cleanup<T, F, Fut>(
    store: &'static str,
    weak: Weak<T>,
    period: Duration,
    round: F,
) -> CleanupTask
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64>> + Send,
{
    let stats = Arc::new(Stats::default());
    let task_stats = stats.clone();
    // `interval` panics on a zero period.
    let period = period.max(Duration::from_millis(1));
    let handle = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            match round(inner).await {
                Ok(deleted) => {
                    task_stats.ok.fetch_add(1, Ordering::Relaxed);
                    task_stats.deleted.fetch_add(deleted, Ordering::Relaxed);
                    tracing::debug!(store, deleted, "deleted expired sessions");
                }
                Err(error) => {
                    task_stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        store,
                        error = &error as &(dyn std::error::Error + 'static),
                        "deleting expired sessions failed; retrying next period"
                    );
                }
            }
        }
        tracing::debug!(store, "session cleanup task ended: store dropped");
    });
    CleanupTask { handle, stats }
}

/// How long the `connect` constructors' pools wait for a connection (sqlx's default is
/// 30 s): a database that is down is reported within the manager's default store timeout.
pub(crate) const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection that sat idle in the pool for at least this long is pinged before use.
pub(crate) const PING_IF_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The pool options of the `connect` constructors (PostgreSQL, MySQL).
///
/// sqlx pings every connection it hands out by default (`test_before_acquire`): one more
/// round trip per statement, which doubles the latency of a session read. Here only a
/// connection idle for [`PING_IF_IDLE_FOR`] or longer is pinged (the case where the
/// server may have closed it, e.g. after a restart); a busy connection that breaks fails
/// its statement with [`Error::Unavailable`] and is then discarded by the pool.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn network_pool_options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    use sqlx::Connection as _;
    sqlx::pool::PoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn: &mut DB::Connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["sessions", "_x", "S1_2", &"a".repeat(MAX_IDENTIFIER_LEN)] {
            assert!(validate_identifier("table", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a\"b",
            "a`b",
            "a;drop",
            "a'--",
            "ä",
            "a\0",
            &"a".repeat(MAX_IDENTIFIER_LEN + 1),
        ] {
            assert!(
                matches!(validate_identifier("table", bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn versions_round_trip() {
        for v in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(version_from_db(version_to_db(v)), v);
        }
    }

    #[test]
    fn error_mapping() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            map_sqlx_error("t", sqlx::Error::Io(io)),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            map_sqlx_error("t", sqlx::Error::PoolTimedOut),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            map_sqlx_error("t", sqlx::Error::RowNotFound),
            Error::Backend { .. }
        ));
        assert!(matches!(
            map_sqlx_error("t", sqlx::Error::Decode("bad".into())),
            Error::Corrupt { .. }
        ));
        assert!(is_unavailable_code("08006") && is_unavailable_code("57P01"));
        assert!(!is_unavailable_code("23505") && !is_unavailable_code("42P01"));
    }
}
