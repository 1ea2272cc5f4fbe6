//! `RedisStore::with_replica_ack`: a write waits for its replicas, and a write too few
//! replicas acknowledged in time is reported as an error. A master and a replica of this
//! test's own, on free ports; Redis Cluster from `REDIS_CLUSTER_URLS`
//! (`scripts/redis-cluster.sh start`).

mod common;

use std::time::Duration;

use session_store::testing::{new_id, now_ms, sample_record};
use session_store::{Error, SessionStore};
use session_store_redis::RedisStore;

#[test]
fn zero_replicas_or_zero_timeout_is_a_config_error() {
    let store = || RedisStore::from_url("redis://127.0.0.1:1").unwrap();
    let zero = store().with_replica_ack(0, Duration::from_millis(100));
    assert!(matches!(zero, Err(Error::Config(_))), "{zero:?}");
    let forever = store().with_replica_ack(1, Duration::ZERO);
    assert!(matches!(forever, Err(Error::Config(_))), "{forever:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_replica_and_fail_without_it() {
    let master = common::OwnServer::start();
    let replica = common::OwnServer::replica_of(&master);
    let prefix = common::random_prefix("ack");
    let acked = RedisStore::from_url(&master.url())
        .unwrap()
        .with_prefix(prefix.clone())
        .with_replica_ack(1, Duration::from_millis(1500))
        .unwrap();
    acked.connect().await.unwrap();

    // Acknowledged: the replica holds the session as soon as the write returns.
    let id = new_id();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    acked.set(&id, &record).await.unwrap();
    assert!(acked.create(&new_id(), &record).await.unwrap());
    let on_replica =
        common::raw_command(replica.port, &format!("EXISTS {prefix}{}", id.as_str())).unwrap();
    assert_eq!(
        on_replica.trim(),
        ":1",
        "the acknowledged write is not on the replica"
    );

    // More replicas than there are: the write lands on the master, the caller gets an error.
    let too_many = RedisStore::from_url(&master.url())
        .unwrap()
        .with_prefix(prefix.clone())
        .with_replica_ack(2, Duration::from_millis(100))
        .unwrap();
    let failed = too_many.set(&new_id(), &record).await;
    assert!(
        matches!(failed, Err(Error::Unavailable { .. })),
        "{failed:?}"
    );

    // A frozen replica acknowledges nothing: the save is reported as failed, not swallowed.
    let short = RedisStore::from_url(&master.url())
        .unwrap()
        .with_prefix(prefix)
        .with_replica_ack(1, Duration::from_millis(200))
        .unwrap();
    replica.signal("-STOP");
    let failed = short.set(&id, &record).await;
    replica.signal("-CONT");
    assert!(
        matches!(failed, Err(Error::Unavailable { .. })),
        "{failed:?}"
    );
    // Thawed, it catches up and acknowledges again.
    short.set(&id, &record).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_writes_wait_for_the_replica_of_the_key_owner() {
    let urls = common::cluster_urls();
    let store = RedisStore::cluster_from_urls(urls.clone())
        .unwrap()
        .with_prefix(common::random_prefix("cluster-ack"))
        .with_replica_ack(1, Duration::from_millis(1500))
        .unwrap();
    store.connect().await.unwrap_or_else(|e| {
        panic!("Redis Cluster at {urls:?} unreachable (scripts/redis-cluster.sh start): {e:?}")
    });
    // Keys spread over the three masters: each write's WAIT is answered by its own node.
    let record = sample_record(now_ms() + Duration::from_secs(60));
    for _ in 0..20 {
        let id = new_id();
        store.set(&id, &record).await.unwrap();
        assert!(store.update(&id, &record).await.unwrap());
        store.destroy(&id).await.unwrap();
    }
}
