//! The caching and tracing wrappers: conformance, cache coherence, and what traces show.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::OffsetDateTime;
use session_store::time::macros::datetime;
use session_store::wrappers::{CacheOptions, CachingStore, TracingStore};
use session_store::{
    Capabilities, CasOutcome, Error, ManualClock, MemoryStore, Record, Result, SessionId,
    SessionStore, async_trait,
};

#[tokio::test]
async fn caching_store_passes_the_suite() {
    run(
        &CachingStore::new(MemoryStore::new()),
        &SuiteOptions::new(Capabilities::ALL),
    )
    .await;
}

#[tokio::test]
async fn tracing_store_passes_the_suite() {
    run(
        &TracingStore::new(MemoryStore::new()),
        &SuiteOptions::new(Capabilities::ALL),
    )
    .await;
}

/// A remote store that counts reads and fails on demand.
#[derive(Clone, Default)]
struct Remote {
    inner: MemoryStore,
    gets: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Remote {
    fn on(clock: &ManualClock) -> Self {
        Self {
            inner: MemoryStore::with_clock(Arc::new(clock.clone())),
            ..Default::default()
        }
    }
    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::unavailable("remote", std::io::Error::other("down")))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for Remote {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.get(id).await
    }
    async fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.check()?;
        self.inner.set(id, record).await
    }
    async fn destroy(&self, id: &SessionId) -> Result<()> {
        self.check()?;
        self.inner.destroy(id).await
    }
    async fn touch(&self, id: &SessionId, expires: OffsetDateTime) -> Result<bool> {
        self.check()?;
        self.inner.touch(id, expires).await
    }
    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.check()?;
        self.inner.create(id, record).await
    }
    async fn update(&self, id: &SessionId, record: &Record) -> Result<bool> {
        self.check()?;
        self.inner.update(id, record).await
    }
    async fn compare_and_set(&self, id: &SessionId, r: &Record, v: u64) -> Result<CasOutcome> {
        self.check()?;
        self.inner.compare_and_set(id, r, v).await
    }
}

const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

fn cache_over(remote: &Remote, clock: &ManualClock, options: CacheOptions) -> CachingStore<Remote> {
    CachingStore::with_options(remote.clone(), options).with_clock(Arc::new(clock.clone()))
}

fn record(version: u64) -> Record {
    let mut r = sample_record(T0 + Duration::from_secs(3600));
    r.version = version;
    r
}

#[tokio::test]
async fn reads_are_served_from_the_cache_and_writes_go_through() {
    let clock = ManualClock::new(T0);
    let remote = Remote::on(&clock);
    let cache = cache_over(&remote, &clock, CacheOptions::default());
    let id = new_id();
    cache.set(&id, &record(1)).await.unwrap();
    assert_eq!(remote.inner.get(&id).await.unwrap().unwrap().version, 1);
    for _ in 0..5 {
        assert_eq!(cache.get(&id).await.unwrap().unwrap().version, 1);
    }
    assert_eq!(
        remote.gets.load(Ordering::SeqCst),
        0,
        "all reads from the cache"
    );
    cache.destroy(&id).await.unwrap();
    assert!(remote.inner.get(&id).await.unwrap().is_none());
    assert!(cache.get(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_failed_remote_write_evicts_the_entry() {
    let clock = ManualClock::new(T0);
    let remote = Remote::on(&clock);
    let cache = cache_over(&remote, &clock, CacheOptions::default());
    let id = new_id();
    cache.set(&id, &record(1)).await.unwrap();
    remote.failing.store(true, Ordering::SeqCst);
    assert!(cache.set(&id, &record(2)).await.is_err());
    assert!(
        cache
            .touch(&id, T0 + Duration::from_secs(9000))
            .await
            .is_err()
    );
    assert_eq!(cache.cached(), 0, "evicted");
    remote.failing.store(false, Ordering::SeqCst);
    let before = remote.gets.load(Ordering::SeqCst);
    assert_eq!(
        cache.get(&id).await.unwrap().unwrap().version,
        1,
        "the remote truth"
    );
    assert_eq!(
        remote.gets.load(Ordering::SeqCst),
        before + 1,
        "read went remote"
    );
}

#[tokio::test]
async fn another_process_write_is_visible_within_the_cache_lifetime() {
    let clock = ManualClock::new(T0);
    let remote = Remote::on(&clock);
    let options = CacheOptions::default().lifetime(Duration::from_secs(5));
    let (a, b) = (
        cache_over(&remote, &clock, options),
        cache_over(&remote, &clock, options),
    );
    let id = new_id();
    a.set(&id, &record(1)).await.unwrap();
    b.set(&id, &record(2)).await.unwrap();
    assert_eq!(
        a.get(&id).await.unwrap().unwrap().version,
        1,
        "stale within the lifetime"
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        a.get(&id).await.unwrap().unwrap().version,
        2,
        "fresh after it"
    );
    b.destroy(&id).await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert!(
        a.get(&id).await.unwrap().is_none(),
        "destroy seen after the lifetime"
    );
}

#[tokio::test]
async fn a_conflicting_compare_and_set_sends_the_reread_to_the_remote() {
    let clock = ManualClock::new(T0);
    let remote = Remote::on(&clock);
    let (a, b) = (
        cache_over(&remote, &clock, CacheOptions::default()),
        cache_over(&remote, &clock, CacheOptions::default()),
    );
    let id = new_id();
    a.set(&id, &record(0)).await.unwrap();
    assert_eq!(
        b.compare_and_set(&id, &record(1), 0).await.unwrap(),
        CasOutcome::Written
    );
    assert_eq!(
        a.compare_and_set(&id, &record(1), 0).await.unwrap(),
        CasOutcome::Conflict
    );
    assert_eq!(
        a.get(&id).await.unwrap().unwrap().version,
        1,
        "not the stale cached 0"
    );
}

#[tokio::test]
async fn the_cache_is_bounded_and_never_outlives_the_session() {
    let clock = ManualClock::new(T0);
    let remote = Remote::on(&clock);
    let cache = cache_over(
        &remote,
        &clock,
        CacheOptions::default()
            .capacity(100)
            .lifetime(Duration::from_secs(600)),
    );
    for _ in 0..1000 {
        cache.set(&new_id(), &record(1)).await.unwrap();
    }
    assert!(cache.cached() <= 112, "{}", cache.cached());
    let id = new_id();
    cache
        .set(&id, &sample_record(T0 + Duration::from_secs(2)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(cache.get(&id).await.unwrap().is_none());
}

/// Collects everything the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn traces_name_every_operation_and_never_the_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let store = TracingStore::new(MemoryStore::new());
    let id = new_id();
    let r = sample_record(now_ms() + Duration::from_secs(60));
    store.get(&id).await.unwrap();
    store.create(&id, &r).await.unwrap();
    store.set(&id, &r).await.unwrap();
    store.update(&id, &r).await.unwrap();
    store.compare_and_set(&id, &r, 0).await.unwrap();
    store
        .touch(&id, now_ms() + Duration::from_secs(90))
        .await
        .unwrap();
    store.get(&id).await.unwrap();
    store.destroy(&id).await.unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for operation in [
        "get",
        "create",
        "set",
        "update",
        "compare_and_set",
        "touch",
        "destroy",
    ] {
        assert!(
            text.contains(&format!("operation=\"{operation}\"")),
            "{operation}: {text}"
        );
    }
    for outcome in ["hit", "miss", "ok"] {
        assert!(
            text.contains(&format!("outcome=\"{outcome}\"")),
            "{outcome}: {text}"
        );
    }
    assert!(text.contains("store=\"memory\"") && text.contains("duration_us="));
    assert!(!text.contains(id.as_str()), "the id leaked: {text}");
    assert!(!text.contains("alice"), "data leaked: {text}");
}
