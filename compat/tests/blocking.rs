//! The blocking adapter: conformance over an in-memory sync store and over the example's
//! file store, panics, the concurrency bound, and a runtime that stays responsive.

#[path = "../examples/axum_file_store/file_store.rs"]
mod file_store;

use std::collections::HashMap;
use std::error::Error as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{Capabilities, Error, Record, Result, SessionId, SessionStore};
use session_store_compat::{BlockingAdapter, BlockingStore};
use sha2::{Digest, Sha256};

use crate::file_store::FileStore;

/// An in-memory synchronous store without touch.
#[derive(Default)]
struct MapStore(Mutex<HashMap<String, Record>>);

impl BlockingStore for MapStore {
    fn name(&self) -> &'static str {
        "blocking-map"
    }
    fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        let map = self.0.lock().unwrap();
        Ok(map.get(id.as_str()).filter(|r| !r.is_expired(now)).cloned())
    }
    fn set(&self, id: &SessionId, record: &Record) -> Result<()> {
        self.0
            .lock()
            .unwrap()
            .insert(id.as_str().to_owned(), record.clone());
        Ok(())
    }
    fn destroy(&self, id: &SessionId) -> Result<()> {
        self.0.lock().unwrap().remove(id.as_str());
        Ok(())
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("compat-files-{}", new_id().as_str()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn conformance_memory_current_thread() {
    let store = BlockingAdapter::new(MapStore::default());
    assert!(!store.capabilities().native_touch);
    run(&store, &SuiteOptions::new(Capabilities::NONE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_memory_multi_thread_as_dyn() {
    let store: Arc<dyn SessionStore> =
        Arc::new(BlockingAdapter::new(MapStore::default()).with_max_concurrency(4));
    run(&store, &SuiteOptions::new(Capabilities::NONE)).await;
}

#[tokio::test]
async fn conformance_file_store() {
    let dir = TempDir::new();
    let store = BlockingAdapter::new(FileStore::open(&dir.0).unwrap());
    run(
        &store,
        &SuiteOptions::new(Capabilities::NONE.with_native_touch(true)),
    )
    .await;
    // Atomic writes leave no temporary files behind; the suite destroyed its records except
    // the expired ones, which a sweep reclaims.
    let names = || -> Vec<String> {
        std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        names().iter().all(|n| !n.starts_with(".tmp")),
        "{:?}",
        names()
    );
    store.inner().sweep().unwrap();
    assert_eq!(names(), Vec::<String>::new());
}

#[tokio::test]
async fn file_store_layout_and_errors() {
    let dir = TempDir::new();
    let store = BlockingAdapter::new(FileStore::open(&dir.0).unwrap());
    let (live, expired, garbage) = (new_id(), new_id(), new_id());
    store
        .set(&live, &sample_record(now_ms() + Duration::from_secs(600)))
        .await
        .unwrap();
    store
        .set(&expired, &sample_record(now_ms() - Duration::from_secs(1)))
        .await
        .unwrap();
    store
        .set(
            &garbage,
            &sample_record(now_ms() + Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        for id in [&live, &expired, &garbage] {
            assert!(
                !name.contains(id.as_str()),
                "an id is visible in a file name"
            );
        }
    }
    // Overwrite one record's file with garbage: a Corrupt error, not a panic.
    let digest = Sha256::digest(garbage.as_str().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let garbage_file = dir.0.join(format!("{hex}.session"));
    assert!(files.contains(&garbage_file));
    std::fs::write(&garbage_file, b"not a session").unwrap();
    assert!(matches!(
        store.get(&garbage).await,
        Err(Error::Corrupt { store: "file", .. })
    ));
    assert!(store.touch(&garbage, now_ms()).await.is_err());
    assert!(store.get(&live).await.unwrap().is_some());
    assert!(store.get(&expired).await.unwrap().is_none());
    assert!(
        !store
            .touch(&expired, now_ms() + Duration::from_secs(60))
            .await
            .unwrap()
    );
    // The sweep removes the expired record only: the live one stays, and so does the file it
    // cannot read.
    assert_eq!(store.inner().sweep().unwrap(), 1);
    assert!(store.get(&live).await.unwrap().is_some());
    assert!(matches!(
        store.get(&garbage).await,
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2);
}

/// A store whose `get` panics.
struct Panics;

impl BlockingStore for Panics {
    fn get(&self, _id: &SessionId) -> Result<Option<Record>> {
        panic!("legacy store exploded")
    }
    fn set(&self, _id: &SessionId, _record: &Record) -> Result<()> {
        Ok(())
    }
    fn destroy(&self, _id: &SessionId) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_is_an_error() {
    let store = BlockingAdapter::new(Panics).with_max_concurrency(1);
    for _ in 0..3 {
        let err = store.get(&new_id()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Backend {
                    store: "blocking",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = chain(&err);
        assert!(text.contains("panicked: legacy store exploded"), "{text}");
    }
    // The slot of the panicked calls was given back (limit 1).
    store
        .set(&new_id(), &sample_record(now_ms()))
        .await
        .unwrap();
    // Default touch goes through get, which panics: still an error.
    assert!(store.touch(&new_id(), now_ms()).await.is_err());
}

/// A store whose `get` sleeps until the test opens the gate.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    inside: AtomicUsize,
    most_inside: AtomicUsize,
}

impl BlockingStore for Gate {
    fn get(&self, _id: &SessionId) -> Result<Option<Record>> {
        let now_inside = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now_inside, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Ok(None)
    }
    fn set(&self, _id: &SessionId, _record: &Record) -> Result<()> {
        Ok(())
    }
    fn destroy(&self, _id: &SessionId) -> Result<()> {
        Ok(())
    }
}

/// Opens the gate after 30 s if the test has not, so a blocked runtime fails the test
/// instead of hanging it; reports whether it had to.
fn watchdog(gate: Arc<Gate>, finished: Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !finished.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                gate.open.store(true, Ordering::SeqCst);
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    })
}

/// Polls `condition` with async sleeps (so only a live runtime can get here) until it holds
/// or 20 s pass.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn runtime_stays_responsive_while_64_calls_sleep() {
    let gate = Arc::new(Gate::default());
    let finished = Arc::new(AtomicBool::new(false));
    let dog = watchdog(gate.clone(), finished.clone());
    let store = BlockingAdapter::from_arc(gate.clone()).with_max_concurrency(64);

    let calls: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(&new_id()).await })
        })
        .collect();
    eventually("all 64 calls sleep", || {
        gate.inside.load(Ordering::SeqCst) == 64
    })
    .await;

    // The only runtime thread keeps serving a timer while all 64 calls sleep.
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..50 {
        ticks.tick().await;
        assert_eq!(
            gate.inside.load(Ordering::SeqCst),
            64,
            "a call returned early"
        );
    }

    gate.open.store(true, Ordering::SeqCst);
    for call in calls {
        assert!(call.await.unwrap().unwrap().is_none());
    }
    finished.store(true, Ordering::SeqCst);
    assert!(!dog.join().unwrap(), "the watchdog had to open the gate");
    assert_eq!(gate.most_inside.load(Ordering::SeqCst), 64);
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_calls_are_bounded() {
    let gate = Arc::new(Gate::default());
    let finished = Arc::new(AtomicBool::new(false));
    let dog = watchdog(gate.clone(), finished.clone());
    let store = BlockingAdapter::from_arc(gate.clone()).with_max_concurrency(4);
    assert_eq!(store.max_concurrency(), 4);

    let calls: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(&new_id()).await })
        })
        .collect();
    eventually("4 calls sleep", || gate.inside.load(Ordering::SeqCst) == 4).await;
    // Give the other 28 every chance to start: none may.
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            gate.inside.load(Ordering::SeqCst),
            4,
            "the bound was exceeded"
        );
    }
    gate.open.store(true, Ordering::SeqCst);
    for call in calls {
        assert!(call.await.unwrap().unwrap().is_none());
    }
    finished.store(true, Ordering::SeqCst);
    assert!(!dog.join().unwrap(), "the watchdog had to open the gate");
    assert_eq!(gate.most_inside.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "current_thread")]
async fn an_abandoned_call_keeps_its_slot_until_it_returns() {
    let gate = Arc::new(Gate::default());
    let finished = Arc::new(AtomicBool::new(false));
    let dog = watchdog(gate.clone(), finished.clone());
    let store = BlockingAdapter::from_arc(gate.clone()).with_max_concurrency(1);

    // Start a call, wait until it sleeps, then drop its future (as a timeout would).
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.get(&new_id()).await }
    });
    eventually("the first call sleeps", || {
        gate.inside.load(Ordering::SeqCst) == 1
    })
    .await;
    first.abort();
    let _ = first.await;

    let second = tokio::spawn({
        let store = store.clone();
        async move { store.get(&new_id()).await }
    });
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            gate.inside.load(Ordering::SeqCst),
            1,
            "the bound was exceeded"
        );
    }
    gate.open.store(true, Ordering::SeqCst);
    assert!(second.await.unwrap().unwrap().is_none());
    finished.store(true, Ordering::SeqCst);
    assert!(!dog.join().unwrap(), "the watchdog had to open the gate");
    assert_eq!(gate.most_inside.load(Ordering::SeqCst), 1);
}
