//! Rough cost of each adapter per operation (ignored by default; prints a table):
//! `cargo test -p session-store-compat --test overhead -- --ignored --nocapture`.

#[allow(dead_code)]
#[path = "../examples/axum_file_store/file_store.rs"]
mod file_store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_store::testing::{new_id, now_ms, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{MemoryStore, Record, Result, SessionId, SessionStore};
use session_store_compat::{
    BlockingAdapter, BlockingStore, CallbackAdapter, CallbackStore, Completion,
};

#[derive(Default, Clone)]
struct Map(Arc<Mutex<HashMap<String, Record>>>);

impl Map {
    fn get_now(&self, id: &SessionId) -> Option<Record> {
        let now = OffsetDateTime::now_utc();
        let map = self.0.lock().unwrap();
        map.get(id.as_str()).filter(|r| !r.is_expired(now)).cloned()
    }
}

impl BlockingStore for Map {
    fn get(&self, id: &SessionId) -> Result<Option<Record>> {
        Ok(self.get_now(id))
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

impl CallbackStore for Map {
    fn get(&self, id: SessionId, done: Completion<Option<Record>>) {
        done.ok(self.get_now(&id));
    }
    fn set(&self, id: SessionId, record: Record, done: Completion<()>) {
        self.0
            .lock()
            .unwrap()
            .insert(id.as_str().to_owned(), record);
        done.ok(());
    }
    fn destroy(&self, id: SessionId, done: Completion<()>) {
        self.0.lock().unwrap().remove(id.as_str());
        done.ok(());
    }
}

async fn measure(name: &str, store: &dyn SessionStore) {
    const N: u32 = 2_000;
    let ids: Vec<SessionId> = (0..64).map(|_| new_id()).collect();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    let start = Instant::now();
    for i in 0..N {
        let id = &ids[i as usize % ids.len()];
        store.set(id, &record).await.unwrap();
        assert!(store.get(id).await.unwrap().is_some());
    }
    let per_op = start.elapsed() / (2 * N);
    println!("{name:<32} {per_op:>10.2?} per operation (set + get, sequential)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn adapter_overhead() {
    measure("MemoryStore (no adapter)", &MemoryStore::new()).await;
    measure(
        "CallbackAdapter (inline)",
        &CallbackAdapter::new(Map::default()),
    )
    .await;
    measure(
        "BlockingAdapter (spawn_blocking)",
        &BlockingAdapter::new(Map::default()),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("compat-overhead-{}", new_id().as_str()));
    let files = file_store::FileStore::open(&dir).unwrap();
    measure(
        "BlockingAdapter (file store, fsync)",
        &BlockingAdapter::new(files),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
