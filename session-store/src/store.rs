//! The [`SessionStore`] trait: where sessions live.
//!
//! # Implementing a custom store
//!
//! Three methods are required. Everything else has a correct default, and
//! [`SessionStore::capabilities`] tells the manager which optional operations the store
//! really implements, so it can fall back where a store cannot.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//!
//! use session_store::{async_trait, Record, Result, SessionId, SessionStore};
//! use time::OffsetDateTime;
//!
//! /// Sessions in a `HashMap`; expiry checked on read.
//! #[derive(Default)]
//! struct MapStore(Mutex<HashMap<String, Record>>);
//!
//! #[async_trait]
//! impl SessionStore for MapStore {
//!     async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
//!         let map = self.0.lock().unwrap();
//!         Ok(map
//!             .get(id.as_str())
//!             .filter(|r| !r.is_expired(OffsetDateTime::now_utc()))
//!             .cloned())
//!     }
//!
//!     async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
//!         self.0.lock().unwrap().insert(id.as_str().to_owned(), record.clone());
//!         Ok(())
//!     }
//!
//!     async fn destroy(&self, id: &SessionId) -> Result<()> {
//!         self.0.lock().unwrap().remove(id.as_str());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let manager = session_store::SessionManager::new(MapStore::default());
//! # let _ = manager;
//! # }
//! ```

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::record::Record;

/// Which optional operations a store implements natively.
///
/// The manager reads this once: it uses `create` for new sessions, `compare_and_set` (or
/// else `update`) for existing ones, and falls back to `get` + `set` where a store lacks
/// them. Each fallback is weaker, as the method docs of [`SessionStore`] say.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// [`SessionStore::create`] is implemented.
    pub create: bool,
    /// [`SessionStore::update`] is implemented.
    pub update: bool,
    /// [`SessionStore::compare_and_set`] is implemented.
    pub compare_and_set: bool,
    /// [`SessionStore::touch`] is overridden to change only the expiry (no data rewrite).
    pub native_touch: bool,
    /// [`SessionStore::owned`] is implemented: the store indexes [`Record::owner`].
    pub owners: bool,
}

impl Capabilities {
    /// No optional operation.
    pub const NONE: Self = Self {
        create: false,
        update: false,
        compare_and_set: false,
        native_touch: false,
        owners: false,
    };
    /// Every optional operation.
    pub const ALL: Self = Self {
        create: true,
        update: true,
        compare_and_set: true,
        native_touch: true,
        owners: true,
    };

    /// With [`Capabilities::create`] set.
    pub const fn with_create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }
    /// With [`Capabilities::update`] set.
    pub const fn with_update(mut self, yes: bool) -> Self {
        self.update = yes;
        self
    }
    /// With [`Capabilities::compare_and_set`] set.
    pub const fn with_compare_and_set(mut self, yes: bool) -> Self {
        self.compare_and_set = yes;
        self
    }
    /// With [`Capabilities::native_touch`] set.
    pub const fn with_native_touch(mut self, yes: bool) -> Self {
        self.native_touch = yes;
        self
    }

    /// With [`Capabilities::owners`] set.
    pub const fn with_owners(mut self, yes: bool) -> Self {
        self.owners = yes;
        self
    }
}

/// What [`SessionStore::compare_and_set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The stored version was the expected one; the record was written.
    Written,
    /// Another writer changed the record first; nothing was written.
    Conflict,
    /// There is no live record under the id (destroyed, expired or never created); nothing
    /// was written.
    Missing,
}

/// A session backend. Works as `Arc<dyn SessionStore>` and `Box<dyn SessionStore>`.
///
/// # Contract
///
/// Every store passes the conformance suite in `session_store::testing` (feature
/// `testing`), which checks each point below.
///
/// - [`get`](Self::get) of a missing **or expired** id is `Ok(None)`; an expired record is
///   never returned, even before the backend has reclaimed it. The returned record carries
///   the expiry of the last `set`/`touch` (millisecond precision) and the stored version.
/// - [`set`](Self::set) creates or overwrites, replacing data, expiry and version.
/// - [`destroy`](Self::destroy) of a missing id succeeds.
/// - [`touch`](Self::touch) changes only the expiry, never creates a record, and returns
///   whether a live record was found.
/// - Optional operations that a store does not implement return [`Error::Unsupported`] and
///   are reported `false` in [`capabilities`](Self::capabilities).
/// - Errors: unreachable backend → [`Error::Unavailable`], undecodable stored bytes →
///   [`Error::Corrupt`], anything else → [`Error::Backend`], each with the driver's error as
///   source. Error messages never contain the id.
/// - A store that claims [`Capabilities::owners`] keeps an index of [`Record::owner`] that
///   every write (`set`, `create`, `update`, `compare_and_set`) maintains:
///   [`owned`](Self::owned) lists exactly the live records bound to an owner, at a cost that
///   grows with that owner's sessions only (never a scan of all sessions), and the index's
///   entries expire with their sessions. Records without an owner pay nothing for it.
/// - Ids arrive validated by the manager, but may still contain any of `[A-Za-z0-9_-]` or
///   whatever a custom id generator makes: bind them as parameters, never splice them.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// A short name for errors and traces, e.g. `"redis"`.
    fn name(&self) -> &'static str {
        "custom"
    }

    /// The optional operations this store implements. Default: none.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// Whether this store must keep sessions under the ids cookies carry. Default `false`:
    /// the manager hands the store a one-way digest of each id instead
    /// ([`SessionManagerBuilder::hashed_ids`](crate::SessionManagerBuilder::hashed_ids)), so
    /// a dump of the store holds no usable session id. Layouts shared with another program
    /// that looks sessions up by the cookie's id (express-session's, for Node) answer
    /// `true`, and then receive raw ids.
    fn needs_raw_ids(&self) -> bool {
        false
    }

    /// Loads the record under `id`: `Ok(None)` if there is none or it has expired.
    async fn get(&self, id: &SessionId) -> Result<Option<Record>>;

    /// Writes `record` under `id`, creating or overwriting it; the expiry becomes
    /// `record.expires` and the version `record.version`.
    async fn set(&self, id: &SessionId, record: &Record) -> Result<()>;

    /// Removes the record under `id`. Removing a missing record succeeds.
    async fn destroy(&self, id: &SessionId) -> Result<()>;

    /// Moves the expiry of the live record under `id` to `expires`, leaving data and version
    /// alone, and returns `true`; returns `false` and creates nothing when there is no live
    /// record.
    ///
    /// The default reads the record and writes it back with the new expiry, through
    /// [`update`](Self::update) when the store has it (so a record destroyed in between is
    /// not recreated), else through [`set`](Self::set). Stores override it to change only the
    /// expiry (Redis: the 8 expiry bytes and the key TTL in one script; SQL `UPDATE … SET
    /// expires`).
    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        let Some(mut record) = self.get(id).await? else {
            return Ok(false);
        };
        record.expires = expires;
        if self.capabilities().update {
            self.update(id, &record).await
        } else {
            self.set(id, &record).await.map(|()| true)
        }
    }

    /// Writes `record` under `id` only if no live record exists there; returns `false` (and
    /// writes nothing) on a collision. An expired record counts as absent.
    ///
    /// Default: [`Error::Unsupported`]. The manager then checks with `get` and writes with
    /// `set`, which leaves a tiny race window (ids carry over 120 random bits, so a collision
    /// is practically impossible either way).
    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let _ = (id, record);
        Err(Error::Unsupported {
            store: self.name(),
            operation: "create",
        })
    }

    /// Overwrites the live record under `id` and returns `true`; returns `false` and writes
    /// nothing if there is none (destroyed or expired meanwhile). This is how a slow request
    /// is kept from resurrecting a session that another request destroyed.
    ///
    /// Default: [`Error::Unsupported`]. The manager then falls back to `set`, which can
    /// resurrect a session destroyed while the request ran.
    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        let _ = (id, record);
        Err(Error::Unsupported {
            store: self.name(),
            operation: "update",
        })
    }

    /// The live sessions bound to `owner` ([`Record::owner`]), each with its id and record, in
    /// no particular order; expired ones never. Costs O(sessions of that owner).
    ///
    /// Default: [`Error::Unsupported`] (and [`Capabilities::owners`] false): the manager then
    /// answers listing and revoking with that error, never with an empty list.
    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        let _ = owner;
        Err(Error::Unsupported {
            store: self.name(),
            operation: "owned",
        })
    }

    /// Writes `record` (whose `version` the caller has already advanced) only if the live
    /// record under `id` still has version `expected`.
    ///
    /// Default: [`Error::Unsupported`]. The manager then uses `update` or `set`, where two
    /// concurrent requests of one session may overwrite each other's changes.
    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        let _ = (id, record, expected);
        Err(Error::Unsupported {
            store: self.name(),
            operation: "compare_and_set",
        })
    }
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl<S: SessionStore + ?Sized> SessionStore for $ty {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn needs_raw_ids(&self) -> bool {
                (**self).needs_raw_ids()
            }
            async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
                (**self).get(id).await
            }
            async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
                (**self).set(id, record).await
            }
            async fn destroy(&self, id: &SessionId) -> Result<()> {
                (**self).destroy(id).await
            }
            async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
                (**self).touch(id, expires).await
            }
            async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
                (**self).create(id, record).await
            }
            async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
                (**self).update(id, record).await
            }
            async fn compare_and_set(
                &self,
                id: &SessionId,
                record: &Record,
                expected: u64,
            ) -> Result<CasOutcome> {
                (**self).compare_and_set(id, record, expected).await
            }
            async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
                (**self).owned(owner).await
            }
        }
    )*};
}

forward_store!(std::sync::Arc<S>, Box<S>);

impl fmt::Debug for dyn SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionStore")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}
