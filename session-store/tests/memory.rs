//! `MemoryStore` specifics: reclaiming expired records without reads, sharing, load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_store::testing::{new_id, now_ms, sample_record};
use session_store::time::macros::datetime;
use session_store::{ManualClock, MemoryStore, SessionStore};

#[tokio::test]
async fn expired_records_are_reclaimed_without_being_read() {
    let clock = ManualClock::new(datetime!(2026-01-01 00:00:00 UTC));
    let store = MemoryStore::with_clock(Arc::new(clock.clone()))
        .with_sweep_interval(Duration::from_secs(60));
    let expires = datetime!(2026-01-01 00:00:30 UTC);
    for _ in 0..10_000 {
        store.set(&new_id(), &sample_record(expires)).await.unwrap();
    }
    assert_eq!(store.len(), 10_000);
    clock.advance(Duration::from_secs(31));
    assert_eq!(store.len(), 10_000, "nothing swept before the interval");
    // Writes after the sweep interval sweep the shards they reach.
    clock.advance(Duration::from_secs(30));
    let live = datetime!(2026-01-01 01:00:00 UTC);
    for _ in 0..2_000 {
        store.set(&new_id(), &sample_record(live)).await.unwrap();
    }
    assert_eq!(store.len(), 2_000, "every shard was swept by the writes");
    // An explicit sweep reclaims everything expired, at once.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(store.sweep(), 2_000);
    assert!(store.is_empty());
}

#[tokio::test]
async fn the_background_sweeper_reclaims_an_idle_store() {
    let store = MemoryStore::new();
    let expires = now_ms() + Duration::from_secs(1);
    for _ in 0..5_000 {
        store.set(&new_id(), &sample_record(expires)).await.unwrap();
    }
    let sweeper = store.spawn_sweeper(Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.is_empty() {
        assert!(
            Instant::now() < deadline,
            "sweeper never reclaimed the records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sweeper ends once the last clone of the store is gone.
    drop(store);
    tokio::time::timeout(Duration::from_secs(30), sweeper)
        .await
        .expect("sweeper stopped")
        .unwrap();
}

#[tokio::test]
async fn clones_share_sessions() {
    let a = MemoryStore::new();
    let b = a.clone();
    let id = new_id();
    a.set(&id, &sample_record(now_ms() + Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(b.get(&id).await.unwrap().is_some());
    b.destroy(&id).await.unwrap();
    assert!(a.get(&id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_many_threads() {
    let store = MemoryStore::new();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = new_id();
                for round in 0..200u64 {
                    let mut record = sample_record(now_ms() + Duration::from_secs(60));
                    record.version = round;
                    store.set(&id, &record).await.unwrap();
                    assert_eq!(store.get(&id).await.unwrap().unwrap().version, round);
                }
                id
            })
        })
        .collect();
    for task in tasks {
        let id = task.await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().unwrap().version, 199);
    }
    assert_eq!(store.len(), 64);
}
