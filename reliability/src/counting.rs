//! A store wrapper that counts every call before forwarding it to the real store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use session_store::time::OffsetDateTime;
use session_store::{
    Capabilities, CasOutcome, Record, Result, SessionId, SessionStore, async_trait,
};

/// How many times each store method was called.
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
}

impl Calls {
    /// Every call.
    pub fn total(&self) -> usize {
        self.get
            + self.set
            + self.destroy
            + self.touch
            + self.create
            + self.update
            + self.compare_and_set
    }
}

/// Forwards to a real store and counts the calls (a counter around the real backend, not
/// a mock).
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn SessionStore>,
    counters: Arc<[AtomicUsize; 7]>,
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner.name())
            .field("calls", &self.calls())
            .finish()
    }
}

impl CountingStore {
    /// Counts the calls made to `inner`.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        Self {
            inner,
            counters: Arc::new(Default::default()),
        }
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
        }
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        for counter in self.counters.iter() {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// The real store.
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }

    fn count(&self, i: usize) {
        self.counters[i].fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        self.count(0);
        self.inner.get(id).await
    }

    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.count(1);
        self.inner.set(id, record).await
    }

    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.count(2);
        self.inner.destroy(id).await
    }

    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.count(3);
        self.inner.touch(id, expires).await
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.count(4);
        self.inner.create(id, record).await
    }

    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.count(5);
        self.inner.update(id, record).await
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        record: &Record,
        expected: u64,
    ) -> Result<CasOutcome> {
        self.count(6);
        self.inner.compare_and_set(id, record, expected).await
    }
}
