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
///   closed, worker gone, SQLSTATE class `08` "connection exception", or what the dialect's
///   `unavailable` says, e.g. Postgres shutting down or SQLite busy): [`Error::Unavailable`].
/// - A stored column could not be decoded: [`Error::Corrupt`].
/// - Anything else: [`Error::Backend`].
///
/// The driver's error is kept as the source. None of these messages contain bound values.
pub(crate) fn map_sqlx_error(
    store: &'static str,
    err: sqlx::Error,
    unavailable: fn(&dyn sqlx::error::DatabaseError) -> bool,
) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable(store, err),
        sqlx::Error::Database(db)
            if db.code().is_some_and(|code| code.starts_with("08")) || unavailable(&**db) =>
        {
            Error::unavailable(store, err)
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Error::corrupt(store, err),
        _ => Error::backend(store, err),
    }
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

/// `host:port` of a database URL, for error messages (`default_port` where the URL names
/// none). Credentials are never part of it.
pub(crate) fn endpoint(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host.is_empty() { "localhost" } else { host };
    // A port follows the last `:`, unless that `:` is inside an IPv6 literal.
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        && !host.ends_with(']');
    if has_port {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

/// A connection that could not be opened at start-up: the address and the driver's reason.
#[derive(Debug)]
pub(crate) struct ConnectFailed {
    endpoint: String,
    cause: sqlx::Error,
}

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = &self.endpoint;
        match &self.cause {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                write!(f, "connection refused at {at}")
            }
            sqlx::Error::Io(io) => write!(f, "cannot connect to {at}: {io}"),
            other => write!(f, "cannot connect to {at}: {other}"),
        }
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// A pool on `url` with [`network_pool_options`], for the `connect` constructors.
///
/// sqlx's pool retries a refused connection until its acquire timeout and then reports only
/// "pool timed out"; here one direct attempt follows such a timeout, so the error says what
/// happened and where ("connection refused at 127.0.0.1:5432").
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn connect_network<D: crate::Dialect>(
    url: &str,
    default_port: u16,
) -> Result<sqlx::Pool<D::Db>> {
    use sqlx::{ConnectOptions as _, Connection};
    let err = |e| map_sqlx_error(D::NAME, e, D::is_unavailable);
    let options: <<D::Db as sqlx::Database>::Connection as Connection>::Options =
        url.parse().map_err(err)?;
    let cause = match network_pool_options().connect_with(options.clone()).await {
        Ok(pool) => return Ok(pool),
        Err(sqlx::Error::PoolTimedOut) => match options.connect().await {
            Ok(_) => sqlx::Error::PoolTimedOut,
            Err(cause) => cause,
        },
        Err(cause @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_))) => cause,
        Err(other) => return Err(err(other)),
    };
    let endpoint = endpoint(url, default_port);
    Err(Error::unavailable(
        D::NAME,
        ConnectFailed { endpoint, cause },
    ))
}

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
        let map = |e| map_sqlx_error("t", e, |_| false);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            map(sqlx::Error::Io(io)),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            map(sqlx::Error::PoolTimedOut),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            map(sqlx::Error::RowNotFound),
            Error::Backend { .. }
        ));
        assert!(matches!(
            map(sqlx::Error::Decode("bad".into())),
            Error::Corrupt { .. }
        ));
    }

    #[test]
    fn endpoints() {
        for (url, want) in [
            ("postgres://postgres@127.0.0.1:5999/test", "127.0.0.1:5999"),
            (
                "postgres://u:p@db.internal/test?sslmode=disable",
                "db.internal:5432",
            ),
            ("postgres://[::1]:6000/x", "[::1]:6000"),
            ("postgres://[::1]/x", "[::1]:5432"),
            ("postgres:///test", "localhost:5432"),
            ("not a url", "localhost:5432"),
        ] {
            assert_eq!(endpoint(url, 5432), want, "{url}");
        }
    }
}
