//! The one error type of the library.

use std::time::Duration;

/// A boxed error from a backend driver or a codec, kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What [`Error::retry_after`] suggests: one second, the smallest `Retry-After` can say.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a store, a codec or the session manager.
///
/// Messages never contain a session id, session data or a secret. The driver's own error is
/// kept as [`std::error::Error::source`], so the whole chain can be logged.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be reached (connection refused, reset, pool exhausted).
    /// Middleware answers `503 Service Unavailable`.
    #[error("session store `{store}` is unavailable")]
    Unavailable {
        /// Name of the store, e.g. `"redis"`.
        store: &'static str,
        /// What the driver reported.
        #[source]
        source: BoxError,
    },

    /// A store call took longer than the manager's per-call timeout.
    /// Middleware answers `503 Service Unavailable`.
    #[error("session store `{store}` did not answer within {after:?}")]
    Timeout {
        /// Name of the store.
        store: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// Any other failure reported by the backend. Middleware answers `500`.
    #[error("session store `{store}` failed")]
    Backend {
        /// Name of the store.
        store: &'static str,
        /// What the driver reported.
        #[source]
        source: BoxError,
    },

    /// A stored record could not be decoded (garbage, or another writer's format).
    ///
    /// The manager logs it (without the id) and starts a fresh session under a new id; the
    /// stored record is left alone.
    #[error("a record in session store `{store}` could not be decoded")]
    Corrupt {
        /// Name of the store.
        store: &'static str,
        /// Why decoding failed.
        #[source]
        source: BoxError,
    },

    /// A session value could not be serialized or deserialized with the value codec.
    #[error("session value could not be (de)serialized")]
    Serialization {
        /// The codec's error.
        #[source]
        source: BoxError,
    },

    /// The store does not implement an optional operation.
    #[error("session store `{store}` does not support `{operation}`")]
    Unsupported {
        /// Name of the store.
        store: &'static str,
        /// The operation, e.g. `"compare_and_set"`.
        operation: &'static str,
    },

    /// The encoded session would exceed the configured maximum size.
    #[error("session of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size the session would have.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// Concurrent writers of one session kept conflicting until the manager's commit
    /// attempts ([`SessionManagerBuilder::commit_attempts`](crate::SessionManagerBuilder::commit_attempts))
    /// ran out. Nothing was written; the request may simply be retried. Middleware answers
    /// `503 Service Unavailable` with `Retry-After`.
    #[error("session update still conflicted after {attempts} attempts")]
    Conflict {
        /// How many writes were tried.
        attempts: u32,
    },

    /// The session manager was configured inconsistently.
    #[error("invalid session configuration: {0}")]
    Config(String),
}

impl Error {
    /// Wraps a driver error as [`Error::Backend`].
    pub fn backend(store: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            store,
            source: source.into(),
        }
    }

    /// Wraps a driver error as [`Error::Unavailable`].
    pub fn unavailable(store: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            store,
            source: source.into(),
        }
    }

    /// Wraps a decoding failure as [`Error::Corrupt`].
    pub fn corrupt(store: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Corrupt {
            store,
            source: source.into(),
        }
    }

    /// Wraps a codec failure as [`Error::Serialization`].
    pub fn serialization(source: impl Into<BoxError>) -> Self {
        Error::Serialization {
            source: source.into(),
        }
    }

    /// `true` when the store is unreachable or timed out: the request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// The HTTP status a middleware should answer with: `503` when the store is unavailable
    /// or timed out, or when a commit kept conflicting ([`Error::Conflict`]): the same request
    /// can succeed when retried; `500` otherwise.
    pub fn status_code(&self) -> http::StatusCode {
        if self.retry_after().is_some() {
            http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            http::StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    /// How long a client should wait before retrying, for errors that a retry can fix
    /// (unavailable, timed out, conflicted): the integrations send it as `Retry-After`
    /// with their `503`. `None` for the others.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Conflict { .. } => {
                Some(RETRY_AFTER)
            }
            _ => None,
        }
    }
}
