//! [`CountingStore`]: a store wrapper for tests that counts every call and can be told to
//! fail. The one call-counting store of the workspace: the manager's tests, the HTTP suite
//! and the reliability tests use it over a real store (a counter and a switch, not a mock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::record::Record;
use crate::store::{Capabilities, CasOutcome, SessionStore};

/// How a [`CountingStore`] fails, switched at run time with [`CountingStore::fail`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Failure {
    /// It works.
    #[default]
    None = 0,
    /// Every call fails with [`Error::Unavailable`] (connection refused).
    Unavailable = 1,
    /// Every call fails with [`Error::Backend`].
    Backend = 2,
    /// Every call fails with [`Error::Corrupt`].
    Corrupt = 3,
    /// Reads work; writes fail with [`Error::Unavailable`].
    WritesUnavailable = 4,
    /// Reads work; writes fail with [`Error::Backend`].
    WritesBackend = 5,
}

impl Failure {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Unavailable,
            2 => Self::Backend,
            3 => Self::Corrupt,
            4 => Self::WritesUnavailable,
            5 => Self::WritesBackend,
            _ => Self::None,
        }
    }
}

/// How many times each store operation was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// `get`
    pub get: usize,
    /// `set`
    pub set: usize,
    /// `destroy`
    pub destroy: usize,
    /// `touch`
    pub touch: usize,
    /// `create`
    pub create: usize,
    /// `update`
    pub update: usize,
    /// `compare_and_set`
    pub compare_and_set: usize,
    /// `owned`
    pub owned: usize,
}

impl Calls {
    /// Every call.
    pub fn total(&self) -> usize {
        self.get + self.writes() + self.destroy + self.touch + self.create + self.owned
    }

    /// Writes of an existing session's data (`set`, `update`, `compare_and_set`).
    pub fn writes(&self) -> usize {
        self.set + self.update + self.compare_and_set
    }
}

/// Forwards to a real store, counting every call; [`CountingStore::fail`] makes calls fail
/// as a broken or unreachable store would (after counting them).
///
/// Clones share the counters and the failure switch.
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn SessionStore>,
    name: &'static str,
    caps: Capabilities,
    counters: Arc<[AtomicUsize; 8]>,
    failure: Arc<AtomicU8>,
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("name", &self.name)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl CountingStore {
    /// Counts the calls made to `inner`, under `inner`'s name and capabilities.
    pub fn new(inner: impl SessionStore) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    /// [`CountingStore::new`] over a store that is already shared.
    pub fn from_arc(inner: Arc<dyn SessionStore>) -> Self {
        Self {
            name: inner.name(),
            caps: inner.capabilities(),
            inner,
            counters: Arc::default(),
            failure: Arc::default(),
        }
    }

    /// Reports `name` (in [`SessionStore::name`] and in the errors of [`Failure`]).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Claims `caps` instead of the inner store's (they must be a subset of its own). Without
    /// `native_touch`, `touch` reads and rewrites the record, as the trait's default does.
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }

    /// The calls so far.
    pub fn calls(&self) -> Calls {
        let c = |i: usize| self.counters[i].load(Ordering::SeqCst);
        Calls {
            get: c(0),
            set: c(1),
            destroy: c(2),
            touch: c(3),
            create: c(4),
            update: c(5),
            compare_and_set: c(6),
            owned: c(7),
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        for counter in self.counters.iter() {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// Switches failures on (or off, with [`Failure::None`]).
    pub fn fail(&self, failure: Failure) {
        self.failure.store(failure as u8, Ordering::SeqCst);
    }

    /// The store the calls go to, for reading it without counting.
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }

    /// Counts a call of operation `i`; the error the failure switch asks for, if any.
    fn enter(&self, i: usize, write: bool) -> Result<()> {
        self.counters[i].fetch_add(1, Ordering::SeqCst);
        let refused = || {
            let io =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            Error::unavailable(self.name, io)
        };
        let broken = || Error::backend(self.name, "the test broke the store");
        match Failure::from_u8(self.failure.load(Ordering::SeqCst)) {
            Failure::None => Ok(()),
            Failure::Unavailable => Err(refused()),
            Failure::Backend => Err(broken()),
            Failure::Corrupt => Err(Error::corrupt(self.name, "garbage")),
            Failure::WritesUnavailable if write => Err(refused()),
            Failure::WritesBackend if write => Err(broken()),
            Failure::WritesUnavailable | Failure::WritesBackend => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for CountingStore {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn needs_raw_ids(&self) -> bool {
        self.inner.needs_raw_ids()
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        self.enter(0, false)?;
        self.inner.get(id).await
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.enter(1, true)?;
        self.inner.set(id, record).await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.enter(2, true)?;
        self.inner.destroy(id).await
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.enter(3, true)?;
        if self.caps.native_touch {
            return self.inner.touch(id, expires).await;
        }
        // What the trait's default does: read, then write the whole record.
        let Some(mut record) = self.inner.get(id).await? else {
            return Ok(false);
        };
        record.expires = expires;
        self.inner.update(id, &record).await
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.enter(4, true)?;
        self.inner.create(id, record).await
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.enter(5, true)?;
        self.inner.update(id, record).await
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        self.enter(6, true)?;
        self.inner.compare_and_set(id, record, expected).await
    }

    async fn owned(&self, owner: &str) -> Result<Vec<(SessionId, Record)>> {
        self.enter(7, false)?;
        if !self.caps.owners {
            return Err(Error::Unsupported {
                store: self.name,
                operation: "owned",
            });
        }
        self.inner.owned(owner).await
    }
}
