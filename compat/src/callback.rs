//! Callback-style stores (the shape of express-session / next-session stores) as async
//! [`SessionStore`]s.
//!
//! A [`CallbackStore`] starts each operation and reports its outcome later through a
//! [`Completion`] handle, from any thread, the way a Node store calls `cb(err, value)`.
//! [`CallbackAdapter`] turns it into a [`SessionStore`]:
//!
//! - The first completion wins; later ones are ignored (and reported as ignored by
//!   [`Completion::complete`]'s return value).
//! - If every clone of the handle is dropped without being called, the operation fails with
//!   [`Error::Backend`] instead of hanging.
//! - A panic inside the store's method is caught and becomes [`Error::Backend`].
//! - A store that does not implement `touch` gets the core's default: read the record, write
//!   it back with the new expiry.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! use session_store::{Record, SessionId, SessionStore};
//! use session_store_compat::{CallbackAdapter, CallbackStore, Completion};
//!
//! /// A store whose operations finish on a background thread.
//! #[derive(Default)]
//! struct ThreadedStore(Arc<Mutex<HashMap<String, Record>>>);
//!
//! impl CallbackStore for ThreadedStore {
//!     fn get(&self, id: SessionId, done: Completion<Option<Record>>) {
//!         let map = self.0.clone();
//!         std::thread::spawn(move || {
//!             let now = time::OffsetDateTime::now_utc();
//!             let map = map.lock().unwrap();
//!             done.ok(map.get(id.as_str()).filter(|r| !r.is_expired(now)).cloned());
//!         });
//!     }
//!     fn set(&self, id: SessionId, record: Record, done: Completion<()>) {
//!         self.0.lock().unwrap().insert(id.as_str().to_owned(), record);
//!         done.ok(());
//!     }
//!     fn destroy(&self, id: SessionId, done: Completion<()>) {
//!         self.0.lock().unwrap().remove(id.as_str());
//!         done.ok(());
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> session_store::Result<()> {
//! let store = CallbackAdapter::new(ThreadedStore::default());
//! let id = SessionId::new("an-id");
//! assert!(store.get(&id).await?.is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use session_store::{
    BoxError, Capabilities, Error, Record, Result, SessionId, SessionStore, time::OffsetDateTime,
};
use tokio::sync::oneshot;

/// The completion callback of one operation of a [`CallbackStore`].
///
/// `Clone + Send + Sync`: move it into another thread, a timer or an event loop, and call
/// it from there. Only the first call counts; later calls return `false` and do nothing.
/// Dropping every clone without calling it fails the operation (it never hangs).
pub struct Completion<T> {
    store: &'static str,
    sender: Arc<Mutex<Option<oneshot::Sender<Result<T>>>>>,
}

impl<T> Clone for Completion<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store,
            sender: self.sender.clone(),
        }
    }
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("store", &self.store)
            .field("completed", &self.is_completed())
            .finish()
    }
}

impl<T> Completion<T> {
    /// A completion handle and the receiver its first call is delivered to.
    fn channel(store: &'static str) -> (Self, oneshot::Receiver<Result<T>>) {
        let (tx, rx) = oneshot::channel();
        let completion = Self {
            store,
            sender: Arc::new(Mutex::new(Some(tx))),
        };
        (completion, rx)
    }

    /// Completes the operation with `result`. Returns `true` if this was the first
    /// completion (the one that counts), `false` if the operation had already completed or
    /// its caller has gone away.
    pub fn complete(&self, result: Result<T>) -> bool {
        // A panic while holding this lock cannot leave the Option half-updated.
        let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        match sender {
            Some(sender) => sender.send(result).is_ok(),
            None => false,
        }
    }

    /// Completes the operation successfully with `value` (see [`Completion::complete`]).
    pub fn ok(&self, value: T) -> bool {
        self.complete(Ok(value))
    }

    /// Fails the operation with the store's own error, reported as [`Error::Backend`] with
    /// `error` as its source (see [`Completion::complete`]). To report the store as
    /// unreachable, call `complete(Err(Error::unavailable(..)))` instead.
    pub fn fail(&self, error: impl Into<BoxError>) -> bool {
        self.complete(Err(Error::backend(self.store, error)))
    }

    /// Whether the operation has already been completed.
    pub fn is_completed(&self) -> bool {
        self.sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

/// A session store whose operations report their outcome through a [`Completion`] callback.
///
/// Each method starts the operation and returns; it may call `done` before returning or
/// later from any thread. Methods must not block for long: a store that does blocking I/O
/// belongs behind [`BlockingAdapter`](crate::BlockingAdapter).
///
/// The contract of each operation is that of the same method of [`SessionStore`]: `get` of
/// a missing or expired id completes with `None`, `destroy` of a missing id succeeds, and so
/// on (the conformance suite checks it through [`CallbackAdapter`]).
pub trait CallbackStore: Send + Sync + 'static {
    /// A short name for errors and traces.
    fn name(&self) -> &'static str {
        "callback"
    }

    /// Loads the live record under `id`; completes with `None` if it is missing or expired.
    fn get(&self, id: SessionId, done: Completion<Option<Record>>);

    /// Writes `record` under `id`, creating or overwriting it.
    fn set(&self, id: SessionId, record: Record, done: Completion<()>);

    /// Removes the record under `id`; a missing record is a success.
    fn destroy(&self, id: SessionId, done: Completion<()>);

    /// Whether [`CallbackStore::touch`] is implemented. Default: `false`, and the adapter
    /// extends expiries by rewriting the record (read, then write with the new expiry).
    fn supports_touch(&self) -> bool {
        false
    }

    /// Moves the expiry of the live record under `id` to `expires` without changing its data
    /// or version; completes with whether a live record was found (a missing one is never
    /// created). Called only when [`CallbackStore::supports_touch`] is `true`.
    fn touch(&self, id: SessionId, expires: OffsetDateTime, done: Completion<bool>) {
        let _ = (id, expires);
        done.complete(Err(Error::Unsupported {
            store: self.name(),
            operation: "touch",
        }));
    }
}

/// Makes a [`CallbackStore`] an async [`SessionStore`].
///
/// Capabilities: no `create`, `update` or `compare_and_set` (they return
/// [`Error::Unsupported`]); `native_touch` exactly when the store
/// [supports touch](CallbackStore::supports_touch).
pub struct CallbackAdapter<S> {
    store: Arc<S>,
}

impl<S> Clone for CallbackAdapter<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
        }
    }
}

impl<S: CallbackStore> fmt::Debug for CallbackAdapter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackAdapter")
            .field("store", &self.store.name())
            .finish()
    }
}

/// The error of an operation whose every completion handle was dropped uncalled.
#[derive(Debug)]
struct Abandoned;

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store dropped the completion callback without calling it")
    }
}

impl std::error::Error for Abandoned {}

/// A panic caught in a store call, with its message when it had one.
#[derive(Debug)]
pub(crate) struct Panicked(pub(crate) String);

impl Panicked {
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        Self(message)
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the store panicked: {}", self.0)
    }
}

impl std::error::Error for Panicked {}

impl<S: CallbackStore> CallbackAdapter<S> {
    /// Wraps `store`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Wraps a shared store.
    pub fn from_arc(store: Arc<S>) -> Self {
        Self { store }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Starts one operation with `start` and waits for its first completion.
    ///
    /// A panic in `start` is an error even if the store had completed before panicking: a
    /// store that panics is broken, and its outcome is not trusted.
    async fn call<T>(&self, start: impl FnOnce(&S, Completion<T>)) -> Result<T> {
        let name = self.store.name();
        let (done, receiver) = Completion::channel(name);
        let store = &*self.store;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| start(store, done))) {
            return Err(Error::backend(name, Panicked::from_payload(&*payload)));
        }
        match receiver.await {
            Ok(result) => result,
            Err(_) => Err(Error::backend(name, Abandoned)),
        }
    }
}

#[async_trait]
impl<S: CallbackStore> SessionStore for CallbackAdapter<S> {
    fn name(&self) -> &'static str {
        self.store.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_native_touch(self.store.supports_touch())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let id = id.clone();
        self.call(move |s, done| s.get(id, done)).await
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        let (id, record) = (id.clone(), record.clone());
        self.call(move |s, done| s.set(id, record, done)).await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        let id = id.clone();
        self.call(move |s, done| s.destroy(id, done)).await
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        if self.store.supports_touch() {
            let id = id.clone();
            return self.call(move |s, done| s.touch(id, expires, done)).await;
        }
        // The core's default for a store without `update`: read, then write back.
        let Some(mut record) = self.get(id).await? else {
            return Ok(false);
        };
        record.expires = expires;
        self.set(id, &record).await.map(|()| true)
    }
}

macro_rules! forward_callback_store {
    ($($ty:ty),*) => {$(
        impl<S: CallbackStore + ?Sized> CallbackStore for $ty {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn get(&self, id: SessionId, done: Completion<Option<Record>>) {
                (**self).get(id, done)
            }
            fn set(&self, id: SessionId, record: Record, done: Completion<()>) {
                (**self).set(id, record, done)
            }
            fn destroy(&self, id: SessionId, done: Completion<()>) {
                (**self).destroy(id, done)
            }
            fn supports_touch(&self) -> bool {
                (**self).supports_touch()
            }
            fn touch(&self, id: SessionId, expires: OffsetDateTime, done: Completion<bool>) {
                (**self).touch(id, expires, done)
            }
        }
    )*};
}

forward_callback_store!(Arc<S>, Box<S>);
