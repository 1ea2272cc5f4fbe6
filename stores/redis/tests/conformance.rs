//! The shared conformance suite against a real Redis server, a 6-node Redis Cluster and a
//! Sentinel setup, plus the Redis-specific layout and error mapping.
//!
//! Services: `REDIS_URL` (default `redis://127.0.0.1:6379`), `REDIS_CLUSTER_URLS`
//! (`scripts/redis-cluster.sh start`), `REDIS_SENTINEL_URLS` + `REDIS_SENTINEL_MASTER`
//! (`scripts/redis-sentinel.sh start`). A missing service fails the test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use session_store::testing::{self, SuiteOptions, new_id, now_ms, sample_record};
use session_store::{Capabilities, Error, SessionStore};
use session_store_redis::redis::AsyncCommands;
use session_store_redis::{RedisStore, deadpool_redis, redis};

fn options() -> SuiteOptions {
    // Expiries are exact (`PEXPIRETIME`): no tolerance.
    SuiteOptions::new(Capabilities::ALL)
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_passes_the_suite() {
    let store = RedisStore::from_url(&common::redis_url())
        .unwrap()
        .with_prefix(common::random_prefix("single"));
    store
        .connect()
        .await
        .expect("Redis at REDIS_URL must be reachable");
    testing::run(&store, &options()).await;
    let other = RedisStore::from_url(&common::redis_url())
        .unwrap()
        .with_prefix(store.prefix().to_owned());
    testing::kept_across_instances(&store, &other, &options()).await;
    // Also as a trait object, the way a manager holds it.
    let shared: Arc<dyn SessionStore> = Arc::new(store);
    testing::round_trip(&*shared, &options()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_passes_the_suite() {
    let urls = common::cluster_urls();
    let store = RedisStore::cluster_from_urls(urls.clone())
        .unwrap()
        .with_prefix(common::random_prefix("cluster"));
    store.connect().await.unwrap_or_else(|e| {
        panic!("Redis Cluster at {urls:?} unreachable (scripts/redis-cluster.sh start): {e:?}")
    });
    testing::run(&store, &options()).await;

    // The sessions really are spread over the masters (no hash tag pins them to one slot).
    let cluster = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut conn = cluster.get_async_connection().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..30 {
        let id = new_id();
        store
            .set(&id, &sample_record(now_ms() + Duration::from_secs(60)))
            .await
            .unwrap();
        ids.push(id);
    }
    let mut slots = std::collections::BTreeSet::new();
    for id in &ids {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{}{}", store.prefix(), id.as_str()))
            .query_async(&mut conn)
            .await
            .unwrap();
        slots.insert(slot / 5462); // three masters own ~5461 slots each
        store.destroy(id).await.unwrap();
    }
    assert!(slots.len() > 1, "all sessions landed on one master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_passes_the_suite() {
    let urls = common::sentinel_urls();
    let master = common::sentinel_master();
    let store = RedisStore::sentinel_from_urls(urls.clone(), &master)
        .unwrap()
        .with_prefix(common::random_prefix("sentinel"));
    store.connect().await.unwrap_or_else(|e| {
        panic!(
            "Sentinel at {urls:?} ({master}) unreachable (scripts/redis-sentinel.sh start): {e:?}"
        )
    });
    testing::run(&store, &options()).await;
}

#[tokio::test]
async fn key_layout_and_expiry_are_redis_own() {
    let url = common::redis_url();
    let store = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix(common::random_prefix("layout"));
    let mut conn = raw(&url).await;
    let id = new_id();
    let key = format!("{}{}", store.prefix(), id.as_str());
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = 9;
    store.set(&id, &record).await.unwrap();

    let value: Vec<u8> = conn.get(&key).await.unwrap();
    let expires_ms = record.expires.unix_timestamp_nanos() / 1_000_000;
    assert_eq!(value[..8], 9u64.to_be_bytes(), "version header");
    assert_eq!(
        value[8..16],
        (expires_ms as i64).to_be_bytes(),
        "expiry header"
    );
    assert_eq!(value[16..], record.encode_payload()[..], "payload envelope");
    let ttl: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(i128::from(ttl), expires_ms, "key expiry = session expiry");

    // touch moves the key's expiry and the expiry header; the rest of the value is byte
    // for byte the same.
    let later = now_ms() + Duration::from_secs(3600);
    assert!(store.touch(&id, later).await.unwrap());
    let ttl: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(i128::from(ttl), later.unix_timestamp_nanos() / 1_000_000);
    let after: Vec<u8> = conn.get(&key).await.unwrap();
    let later_ms = (later.unix_timestamp_nanos() / 1_000_000) as i64;
    assert_eq!(after[8..16], later_ms.to_be_bytes(), "expiry header");
    assert_eq!(after[..8], value[..8], "touch rewrote the version");
    assert_eq!(after[16..], value[16..], "touch rewrote the payload");
    assert_eq!(store.get(&id).await.unwrap().unwrap().expires, later);

    // The default prefix is documented and used.
    let plain = RedisStore::from_url(&url).unwrap();
    assert_eq!(plain.prefix(), "session:");
    assert_eq!(RedisStore::DEFAULT_PREFIX, "session:");
    // Another prefix never sees these sessions.
    let other = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix(common::random_prefix("other"));
    assert!(other.get(&id).await.unwrap().is_none());
    store.destroy(&id).await.unwrap();
    let exists: bool = conn.exists(&key).await.unwrap();
    assert!(!exists, "destroy left the key");
}

#[tokio::test]
async fn garbage_under_a_key_is_corrupt() {
    let url = common::redis_url();
    let store = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix(common::random_prefix("garbage"));
    let mut conn = raw(&url).await;
    let id = new_id();
    let key = format!("{}{}", store.prefix(), id.as_str());
    for garbage in [
        &b"not a session"[..],
        b"\x00\x00\x00\x00\x00\x00\x00\x01\xA5\x01\x09",
        b"",
    ] {
        let _: () = conn.set_ex(&key, garbage, 60).await.unwrap();
        let got = store.get(&id).await;
        assert!(
            matches!(got, Err(Error::Corrupt { .. })),
            "{garbage:?}: {got:?}"
        );
    }
    // A key without expiry was not written by this store.
    let _: () = conn.set(&key, b"12345678").await.unwrap();
    assert!(matches!(store.get(&id).await, Err(Error::Corrupt { .. })));
    // A key of another Redis type.
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn.hset(&key, "f", "v").await.unwrap();
    let got = store.get(&id).await;
    assert!(matches!(got, Err(Error::Corrupt { .. })), "{got:?}");
    // The message names neither the key nor the id.
    let message = format!("{}", got.unwrap_err());
    assert!(!message.contains(id.as_str()), "{message}");
    let _: () = conn.del(&key).await.unwrap();
}

#[tokio::test]
async fn other_constructors_work() {
    let url = common::redis_url();
    let config = deadpool_redis::Config::from_url(url.clone());
    let pool = config
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let stores = [
        RedisStore::from_config(&config).unwrap(),
        RedisStore::from_pool(pool),
        RedisStore::from_cluster_config(&deadpool_redis::cluster::Config::from_urls(
            common::cluster_urls(),
        ))
        .unwrap(),
        RedisStore::from_sentinel_config(&deadpool_redis::sentinel::Config::from_urls(
            common::sentinel_urls(),
            common::sentinel_master(),
            deadpool_redis::sentinel::SentinelServerType::Master,
        ))
        .unwrap(),
    ];
    for store in stores {
        let store = store.with_prefix(common::random_prefix("ctor"));
        let id = new_id();
        let record = sample_record(now_ms() + Duration::from_secs(60));
        assert!(store.create(&id, &record).await.unwrap(), "{store:?}");
        assert_eq!(store.get(&id).await.unwrap().unwrap().data, record.data);
        store.destroy(&id).await.unwrap();
        // Debug shows the kind and prefix, never a URL.
        assert!(!format!("{store:?}").contains("redis://"));
    }
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let port = common::free_port();
    let store = RedisStore::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
    let err = store.get(&new_id()).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    let err = store.connect().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(RedisStore::from_url("not a url").is_err());
}

#[tokio::test]
async fn pool_exhaustion_is_a_clear_unavailable_error() {
    // A pool of one connection that the application keeps checked out: the store cannot get
    // one and says so after the pool's wait timeout.
    let pool = deadpool_redis::Config::from_url(common::redis_url())
        .builder()
        .unwrap()
        .max_size(1)
        .wait_timeout(Some(Duration::from_millis(200)))
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .unwrap();
    let held = pool
        .get()
        .await
        .expect("Redis at REDIS_URL must be reachable");
    let store = RedisStore::from_pool(pool.clone());
    let err = store.get(&new_id()).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("Timeout") && source.contains("slot"),
        "{source}"
    );
    drop(held);
    // With the connection back in the pool, the store works.
    assert!(store.get(&new_id()).await.unwrap().is_none());
}
