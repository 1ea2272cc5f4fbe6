//! The one place where driver and pool errors become [`session_store::Error`]s.

use deadpool_redis::PoolError;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use session_store::Error;

/// The store's name in errors and traces.
pub(crate) const NAME: &str = "redis";

/// Maps an error of the `redis` driver, keeping it as the source.
///
/// - The server cannot be reached or answered too late (refused, reset, I/O, timeout, cluster
///   or sentinel cannot find a node, replica loading or read-only during a failover):
///   [`Error::Unavailable`].
/// - The key holds a value of another Redis type (`WRONGTYPE`): [`Error::Corrupt`], since
///   the record under the key cannot be decoded.
/// - Anything else: [`Error::Backend`].
pub(crate) fn from_redis(error: RedisError) -> Error {
    if is_unavailable(&error) {
        Error::unavailable(NAME, error)
    } else if is_wrong_type(&error) {
        Error::corrupt(NAME, error)
    } else {
        Error::backend(NAME, error)
    }
}

/// Maps an error of a deadpool-redis pool (single node, cluster and sentinel pools share the
/// type). Pool timeouts (waiting for a slot, creating or recycling a connection) and a closed
/// pool are [`Error::Unavailable`], with deadpool's message ("Timeout occurred while waiting
/// for a slot to become available", ...) as the source.
pub(crate) fn from_pool(error: PoolError) -> Error {
    match error {
        PoolError::Backend(error) => from_redis(error),
        PoolError::Timeout(_) | PoolError::Closed => Error::unavailable(NAME, error),
        other => Error::backend(NAME, other),
    }
}

/// Whether the server answered `WRONGTYPE` (also inside a pipeline's errors).
fn is_wrong_type(error: &RedisError) -> bool {
    error.code() == Some("WRONGTYPE")
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| e.code() == "WRONGTYPE"))
}

/// Whether the error means the server is unreachable or unhealthy right now.
fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// Whether the connection that returned `error` should be replaced by a fresh one from the
/// pool: it is broken, timed out, or points at a node that is no longer the master.
pub(crate) fn replace_connection(error: &RedisError) -> bool {
    error.is_unrecoverable_error()
        || error.is_io_error()
        || error.is_timeout()
        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// Whether a request that failed with `error` may be sent once more on a fresh connection,
/// for operations that are idempotent: the connection was lost or the node was demoted.
pub(crate) fn worth_retrying(error: &RedisError) -> bool {
    error.is_connection_dropped() || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_unavailable() {
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let error = from_redis(RedisError::from(std::io::Error::from(kind)));
            assert!(matches!(error, Error::Unavailable { .. }), "{kind:?}");
            assert!(std::error::Error::source(&error).is_some());
        }
    }

    #[test]
    fn pool_timeouts_are_unavailable_and_say_so() {
        let error = from_pool(PoolError::Timeout(deadpool_redis::TimeoutType::Wait));
        assert!(matches!(error, Error::Unavailable { .. }));
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert!(source.contains("Timeout"), "{source}");
    }
}
