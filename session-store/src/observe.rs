//! What the manager tells the application: lifecycle events ([`SessionEvent`], through
//! [`SessionManagerBuilder::on_event`](crate::SessionManagerBuilder::on_event)) and, with the
//! feature `metrics`, counters and latency histograms through the [`metrics`] facade.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `session_store_loads_total` | counter | `outcome`: `found`, `new`, `error` |
//! | `session_store_commits_total` | counter | `outcome`: `ok`, `error` |
//! | `session_store_conflicts_total` | counter | `store`: one per compare-and-set that met a concurrent write |
//! | `session_store_errors_total` | counter | `store`, `operation`, `kind` (`unavailable`, `timeout`, `backend`, `corrupt`, …) |
//! | `session_store_timeouts_total` | counter | `store`, `operation` |
//! | `session_store_call_seconds` | histogram | `store`, `operation` (`get`, `set`, `touch`, …) |
//!
//! Without the feature nothing is measured and nothing is compiled in; with it and no
//! recorder installed, each point costs the facade's no-op call.
//!
//! [`metrics`]: https://docs.rs/metrics

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

#[cfg(feature = "metrics")]
use crate::error::Error;

/// A change in a session's life, given to the hook of
/// [`SessionManagerBuilder::on_event`](crate::SessionManagerBuilder::on_event), e.g. for an
/// audit log or a count of who is online. Sessions are named by their handle
/// ([`Session::handle`](crate::Session::handle)), never by their id.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new session was stored for the first time.
    Created {
        /// The session's handle.
        handle: String,
    },
    /// A session moved to a new id ([`Session::regenerate`](crate::Session::regenerate)).
    Regenerated {
        /// The handle of the id it left.
        from: String,
        /// The handle of its new id.
        to: String,
    },
    /// A session was ended by [`Session::destroy`](crate::Session::destroy).
    Destroyed {
        /// The session's handle.
        handle: String,
    },
    /// A request found its session expired: past its absolute lifetime, or returned by the
    /// store past its expiry. (A session the store already dropped is indistinguishable from
    /// one that never existed, and gives no event.)
    Expired {
        /// The session's handle.
        handle: String,
    },
    /// A session was revoked ([`SessionManager::revoke`](crate::SessionManager::revoke) and
    /// its siblings).
    Revoked {
        /// The session's handle.
        handle: String,
        /// The owner it was revoked for.
        owner: String,
    },
}

impl SessionEvent {
    /// A short name of the event, for logs: `created`, `regenerated`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            SessionEvent::Created { .. } => "created",
            SessionEvent::Regenerated { .. } => "regenerated",
            SessionEvent::Destroyed { .. } => "destroyed",
            SessionEvent::Expired { .. } => "expired",
            SessionEvent::Revoked { .. } => "revoked",
        }
    }
}

/// The application's event hook.
pub(crate) type Hook = Arc<dyn Fn(&SessionEvent) + Send + Sync>;

/// Gives the event `make` builds to `hook`, if there is one (nothing is built otherwise). A
/// hook that panics is logged and the request goes on.
pub(crate) fn emit(hook: Option<&Hook>, make: impl FnOnce() -> SessionEvent) {
    let Some(hook) = hook else {
        return;
    };
    let event = make();
    if std::panic::catch_unwind(AssertUnwindSafe(|| hook(&event))).is_err() {
        tracing::warn!(
            event = event.kind(),
            "a session event hook panicked; the request goes on"
        );
    }
}

/// The `kind` label of an error.
#[cfg(feature = "metrics")]
fn kind(error: &Error) -> &'static str {
    match error {
        Error::Unavailable { .. } => "unavailable",
        Error::Timeout { .. } => "timeout",
        Error::Backend { .. } => "backend",
        Error::Corrupt { .. } => "corrupt",
        Error::Serialization { .. } => "serialization",
        Error::Unsupported { .. } => "unsupported",
        Error::TooLarge { .. } => "too_large",
        Error::Conflict { .. } => "conflict",
        Error::Config(_) => "config",
    }
}

/// A store call's end: its latency since `started`, and its error if any.
#[cfg(feature = "metrics")]
pub(crate) fn call<T>(
    store: &'static str,
    operation: &'static str,
    started: std::time::Instant,
    result: &Result<T, Error>,
) {
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!("session_store_call_seconds", "store" => store, "operation" => operation)
        .record(seconds);
    if let Err(error) = result {
        let kind = kind(error);
        metrics::counter!("session_store_errors_total", "store" => store, "operation" => operation, "kind" => kind)
            .increment(1);
        if matches!(error, Error::Timeout { .. }) {
            metrics::counter!("session_store_timeouts_total", "store" => store, "operation" => operation)
                .increment(1);
        }
    }
}

/// A request's session was loaded: `found`, `new` or `error`.
#[inline]
pub(crate) fn load(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("session_store_loads_total", "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// A commit that had something to write ended: `ok` or `error`.
#[inline]
pub(crate) fn commit(ok: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!("session_store_commits_total", "outcome" => if ok { "ok" } else { "error" })
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = ok;
}

/// A compare-and-set met a concurrent write.
#[inline]
pub(crate) fn conflict(store: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("session_store_conflicts_total", "store" => store).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = store;
}
