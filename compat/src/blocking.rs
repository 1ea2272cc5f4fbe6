//! Blocking (synchronous) stores as async [`SessionStore`]s.
//!
//! A [`BlockingStore`] is a plain synchronous store: files, an embedded database, a legacy
//! client library. [`BlockingAdapter`] runs each call on tokio's blocking thread pool
//! ([`tokio::task::spawn_blocking`]), so the async runtime's threads never wait on it, and
//! bounds how many calls run at once with a semaphore, so a slow backend cannot take over
//! the whole blocking pool. A panic in the store becomes [`Error::Backend`].
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//!
//! use session_store::{Record, Result, SessionId, SessionStore};
//! use session_store_compat::{BlockingAdapter, BlockingStore};
//!
//! #[derive(Default)]
//! struct MapStore(Mutex<HashMap<String, Record>>);
//!
//! impl BlockingStore for MapStore {
//!     fn get(&self, id: &SessionId) -> Result<Option<Record>> {
//!         let now = time::OffsetDateTime::now_utc();
//!         let map = self.0.lock().unwrap();
//!         Ok(map.get(id.as_str()).filter(|r| !r.is_expired(now)).cloned())
//!     }
//!     fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
//!         self.0.lock().unwrap().insert(id.as_str().to_owned(), record.clone());
//!         Ok(())
//!     }
//!     fn destroy(&self, id: &SessionId) -> Result<()> {
//!         self.0.lock().unwrap().remove(id.as_str());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let store = BlockingAdapter::new(MapStore::default()).with_max_concurrency(8);
//! assert!(store.get(&SessionId::new("an-id")).await?.is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use session_store::{
    Capabilities, Error, Record, Result, SessionId, SessionStore, time::OffsetDateTime,
};
use tokio::sync::Semaphore;

use crate::callback::Panicked;

/// How many calls a [`BlockingAdapter`] runs at once unless told otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;

/// A synchronous session store. Its methods may block (disk, network, locks).
///
/// The contract of each method is that of the same method of [`SessionStore`] (the
/// conformance suite checks it through [`BlockingAdapter`]). Map the backend's errors to
/// [`Error::Unavailable`] (unreachable), [`Error::Corrupt`] (undecodable stored bytes) or
/// [`Error::Backend`] (anything else), keeping the backend's error as the source.
pub trait BlockingStore: Send + Sync + 'static {
    /// A short name for errors and traces.
    fn name(&self) -> &'static str {
        "blocking"
    }

    /// Loads the live record under `id`: `None` if it is missing or expired.
    fn get(&self, id: &SessionId) -> Result<Option<Record>>;

    /// Writes `record` under `id`, creating or overwriting it.
    fn set(&self, id: &SessionId, record: &Record) -> Result<()>;

    /// Removes the record under `id`; a missing record is a success.
    fn destroy(&self, id: &SessionId) -> Result<()>;

    /// Whether [`BlockingStore::touch`] is implemented. Default: `false`, and the adapter
    /// extends expiries by rewriting the record (read, then write with the new expiry, in
    /// one blocking call).
    fn supports_touch(&self) -> bool {
        false
    }

    /// Moves the expiry of the live record under `id` to `expires` without changing data or
    /// version; returns whether a live record was found (a missing one is never created).
    /// Called only when [`BlockingStore::supports_touch`] is `true`.
    fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let _ = (id, expires);
        Err(Error::Unsupported {
            store: self.name(),
            operation: "touch",
        })
    }
}

/// Runs a [`BlockingStore`] on tokio's blocking pool as an async [`SessionStore`].
///
/// - At most [`max_concurrency`](BlockingAdapter::with_max_concurrency) calls run at once
///   (default [`DEFAULT_MAX_CONCURRENCY`]); further calls wait asynchronously for a slot.
/// - A call whose future is dropped (e.g. by the manager's timeout) keeps its slot until the
///   blocking call really returns, so the bound holds for the threads actually busy.
/// - Capabilities: no `create`, `update` or `compare_and_set` ([`Error::Unsupported`]);
///   `native_touch` exactly when the store [supports touch](BlockingStore::supports_touch).
///
/// Needs a tokio runtime (any flavour).
pub struct BlockingAdapter<S> {
    store: Arc<S>,
    permits: Arc<Semaphore>,
    max_concurrency: usize,
}

impl<S> Clone for BlockingAdapter<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            permits: self.permits.clone(),
            max_concurrency: self.max_concurrency,
        }
    }
}

impl<S: BlockingStore> fmt::Debug for BlockingAdapter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingAdapter")
            .field("store", &self.store.name())
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// The blocking task was cancelled (its runtime is shutting down).
#[derive(Debug)]
struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the blocking store call was cancelled")
    }
}

impl std::error::Error for Cancelled {}

impl<S: BlockingStore> BlockingAdapter<S> {
    /// Wraps `store`, allowing [`DEFAULT_MAX_CONCURRENCY`] calls at once.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Wraps a shared store, allowing [`DEFAULT_MAX_CONCURRENCY`] calls at once.
    pub fn from_arc(store: Arc<S>) -> Self {
        Self {
            store,
            permits: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENCY)),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }

    /// Allows at most `limit` blocking calls at once (at least 1; `0` is taken as 1).
    /// Clones made before this call keep their own limit.
    pub fn with_max_concurrency(mut self, limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        self.permits = Arc::new(Semaphore::new(limit));
        self.max_concurrency = limit;
        self
    }

    /// The bound on concurrent blocking calls.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Runs `f` on the blocking pool once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let name = self.store.name();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::backend(name, e))?;
        let store = self.store.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&store)
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                Err(Error::backend(name, Panicked::from_payload(&*payload)))
            }
            Err(_) => Err(Error::backend(name, Cancelled)),
        }
    }
}

#[async_trait]
impl<S: BlockingStore> SessionStore for BlockingAdapter<S> {
    fn name(&self) -> &'static str {
        self.store.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_native_touch(self.store.supports_touch())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let id = id.clone();
        self.run(move |s| s.get(&id)).await
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let (id, record) = (id.clone(), record.clone());
        self.run(move |s| s.set(&id, &record)).await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let id = id.clone();
        self.run(move |s| s.destroy(&id)).await
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let id = id.clone();
        self.run(move |s| {
            if s.supports_touch() {
                return s.touch(&id, expires);
            }
            // The core's default for a store without `update`: read, then write back.
            let Some(mut record) = s.get(&id)? else {
                return Ok(false);
            };
            record.expires = expires;
            s.set(&id, &record).map(|()| true)
        })
        .await
    }
}

macro_rules! forward_blocking_store {
    ($($ty:ty),*) => {$(
        impl<S: BlockingStore + ?Sized> BlockingStore for $ty {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn get(&self, id: &SessionId) -> Result<Option<Record>> {
                (**self).get(id)
            }
            fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
                (**self).set(id, record)
            }
            fn destroy(&self, id: &SessionId) -> Result<()> {
                (**self).destroy(id)
            }
            fn supports_touch(&self) -> bool {
                (**self).supports_touch()
            }
            fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
                (**self).touch(id, expires)
            }
        }
    )*};
}

forward_blocking_store!(Arc<S>, Box<S>);
