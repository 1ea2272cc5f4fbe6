//! The plain stores the benchmark compares `MemoryStore` with pass the same conformance
//! suite, so the comparison is between correct stores.

use session_peer_benches::plain::{EncodedMemoryStore, PlainMemoryStore};
use session_store::Clock as _;
use session_store::testing::{SuiteOptions, run};
use session_store::{Capabilities, SessionStore};

fn options() -> SuiteOptions {
    SuiteOptions::new(Capabilities::ALL)
}

#[tokio::test]
async fn plain_records() {
    run(&PlainMemoryStore::new(), &options()).await;
}

#[tokio::test]
async fn encoded_payloads() {
    run(&EncodedMemoryStore::new(), &options()).await;
}

#[tokio::test]
async fn plain_records_boxed() {
    let store: Box<dyn SessionStore> = Box::new(PlainMemoryStore::new());
    run(store.as_ref(), &options()).await;
}

/// An expired record is never returned, and `sweep` reclaims it and its owner's index entry.
#[tokio::test]
async fn plain_sweep_reclaims_expired() {
    use std::sync::Arc;
    use std::time::Duration;

    let clock = Arc::new(session_store::ManualClock::new(
        session_store::time::OffsetDateTime::now_utc(),
    ));
    // No sweep on access within the test: `sweep` below is the one that reclaims.
    let store = PlainMemoryStore::with_clock(clock.clone())
        .with_sweep_interval(Duration::from_secs(24 * 3600));
    let mut record = session_store::testing::sample_record(clock.now() + Duration::from_secs(60));
    record.owner = Some("ann".into());
    let id = session_store::testing::new_id();
    store.set(&id, &record).await.unwrap();
    assert_eq!(store.owned("ann").await.unwrap().len(), 1);
    clock.advance(Duration::from_secs(61));
    assert!(store.get(&id).await.unwrap().is_none());
    assert_eq!(store.sweep(), 1);
    assert!(store.is_empty());
    assert!(store.owned("ann").await.unwrap().is_empty());
}
