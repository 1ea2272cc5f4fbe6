//! The near-cache on a real Redis server: the conformance suite with the cache on, reads
//! served without the network, coherence between two stores (two "processes") on one
//! server, compare-and-set against stale copies, a killed invalidation channel, bounds, and
//! the deployments it refuses.
//!
//! Service: `REDIS_URL` (default `redis://127.0.0.1:6379`). Each test uses its own prefix.

mod common;

use std::time::{Duration, Instant};

use session_store::testing::{self, SuiteOptions, new_id, now_ms, sample_record};
use session_store::{Capabilities, CasOutcome, Error, Record, SessionStore};
use session_store_redis::{Layout, NearCacheConfig, RedisStore, redis};

/// Long enough for a loaded 2-core machine; a coherent cache answers in milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// A connected store with the near-cache on, its connection named `name`.
async fn cached_named(prefix: &str, name: &str, config: NearCacheConfig) -> RedisStore {
    let store = RedisStore::from_url(&common::redis_url())
        .unwrap()
        .with_prefix(prefix)
        .with_near_cache(config.client_name(name))
        .unwrap();
    store
        .connect()
        .await
        .expect("Redis at REDIS_URL must be reachable");
    assert!(stats(&store).armed);
    store
}

async fn cached(prefix: &str) -> RedisStore {
    cached_named(prefix, "near-cache-test", NearCacheConfig::new()).await
}

fn later() -> session_store::time::OffsetDateTime {
    now_ms() + Duration::from_secs(600)
}

fn stats(store: &RedisStore) -> session_store_redis::NearCacheStats {
    store.near_cache_stats().expect("the near-cache is on")
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis at REDIS_URL must be reachable")
}

/// Polls `check` until it holds or [`DEADLINE`] passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_store_passes_the_suite() {
    let prefix = common::random_prefix("near-suite");
    let store = cached(&prefix).await;
    // Another instance's change reaches a cached copy by the server's push: allow what a
    // loaded machine may take.
    let options = SuiteOptions::new(Capabilities::ALL).propagation(DEADLINE);
    testing::run(&store, &options).await;
    // Two cached stores on one prefix: what one writes, the other reads.
    let other = cached(&prefix).await;
    testing::kept_across_instances(&store, &other, &options).await;
    assert!(stats(&store).hits > 0, "the suite's reads hit the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_cached_session_send_nothing() {
    let store = cached(&common::random_prefix("near-hits")).await;
    let id = new_id();
    let record = sample_record(later());
    store.set(&id, &record).await.unwrap();
    let before = stats(&store);
    for _ in 0..5 {
        let got = store.get(&id).await.unwrap().expect("the session is there");
        assert_eq!(got.data, record.data);
        assert_eq!(got.version, record.version);
    }
    let after = stats(&store);
    assert_eq!(after.hits - before.hits, 5, "{after:?}");
    assert_eq!(after.misses, before.misses, "{after:?}");
    // The server's view of the same (round trips and commands) is in `round_trips.rs`.
    // A commit of the cached session: one conditional write (read back in the same
    // pipeline), and the session stays cached.
    let mut next = record.clone();
    next.version += 1;
    next.data.insert("k".into(), b"v".to_vec());
    assert_eq!(
        store
            .compare_and_set(&id, &next, record.version)
            .await
            .unwrap(),
        CasOutcome::Written
    );
    let hits = stats(&store).hits;
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!((got.data, got.version), (next.data.clone(), next.version));
    assert_eq!(stats(&store).hits, hits + 1, "{:?}", stats(&store));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_or_destroy_elsewhere_is_never_served_after_its_invalidation() {
    let prefix = common::random_prefix("near-coherent");
    let (a, b) = (cached(&prefix).await, cached(&prefix).await);
    let id = new_id();
    let first = sample_record(later());
    a.set(&id, &first).await.unwrap();
    // B caches the session.
    assert!(b.get(&id).await.unwrap().is_some());
    assert!(b.get(&id).await.unwrap().is_some());
    assert!(stats(&b).hits >= 1);

    // A changes it: B serves the new data once the invalidation is in, never the old
    // after that.
    let mut second = first.clone();
    second.version += 1;
    second.data.insert("changed".into(), b"yes".to_vec());
    assert_eq!(
        a.compare_and_set(&id, &second, first.version)
            .await
            .unwrap(),
        CasOutcome::Written
    );
    eventually("B drops its copy", || async {
        stats(&b).invalidations >= 1
    })
    .await;
    let got = b.get(&id).await.unwrap().unwrap();
    assert_eq!(got.data, second.data);
    assert_eq!(got.version, second.version);

    // A destroys it: B stops serving it.
    assert!(b.get(&id).await.unwrap().is_some());
    a.destroy(&id).await.unwrap();
    eventually("B forgets the destroyed session", || async {
        b.get(&id).await.unwrap().is_none()
    })
    .await;
    // ... for good: a write from B's stale view cannot bring it back.
    assert_eq!(
        b.compare_and_set(&id, &second, first.version)
            .await
            .unwrap(),
        CasOutcome::Missing
    );
    assert!(a.get(&id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_a_stale_copy_is_refused_by_the_server() {
    let prefix = common::random_prefix("near-cas");
    let (a, b) = (cached(&prefix).await, cached(&prefix).await);
    let id = new_id();
    let first = sample_record(later());
    a.set(&id, &first).await.unwrap();
    let seen_by_b = b.get(&id).await.unwrap().unwrap();
    let mut from_a = first.clone();
    from_a.version += 1;
    from_a.data.insert("a".into(), b"1".to_vec());
    assert_eq!(
        a.compare_and_set(&id, &from_a, first.version)
            .await
            .unwrap(),
        CasOutcome::Written
    );
    // Whether or not B's invalidation has arrived, its write based on the old version is
    // refused, and B then reads A's write.
    let mut from_b = seen_by_b.clone();
    from_b.version += 1;
    from_b.data.insert("b".into(), b"2".to_vec());
    assert_eq!(
        b.compare_and_set(&id, &from_b, seen_by_b.version)
            .await
            .unwrap(),
        CasOutcome::Conflict
    );
    let now_in_b = b.get(&id).await.unwrap().unwrap();
    assert_eq!(now_in_b.data, from_a.data);
}

/// The `CLIENT LIST` line of the near-cache connection named `name`.
async fn channel_line(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> String {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    let field = format!(" name={name} ");
    let lines: Vec<&str> = list.lines().filter(|line| line.contains(&field)).collect();
    assert_eq!(lines.len(), 1, "one connection named {name}");
    lines[0].to_owned()
}

/// Kills the near-cache connection named `name`.
async fn kill_channel(conn: &mut redis::aio::MultiplexedConnection, name: &str) {
    let line = channel_line(conn, name).await;
    let id = line
        .split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("an id");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_channel_flushes_and_bypasses_the_cache_until_rearmed() {
    let prefix = common::random_prefix("near-kill");
    let name = nanoid::nanoid!(12);
    let a = cached_named(&prefix, &name, NearCacheConfig::new()).await;
    let b = cached(&prefix).await;
    let id = new_id();
    let first = sample_record(later());
    b.set(&id, &first).await.unwrap();
    assert!(a.get(&id).await.unwrap().is_some());
    assert!(a.get(&id).await.unwrap().is_some());
    assert!(stats(&a).entries >= 1);
    let flushes = stats(&a).flushes;

    let mut admin = raw().await;
    kill_channel(&mut admin, &name).await;
    eventually("A notices the lost channel", || async { !stats(&a).armed }).await;
    let lost = stats(&a);
    assert_eq!(lost.entries, 0, "{lost:?}");
    assert!(lost.flushes > flushes, "{lost:?}");

    // B writes while A has no channel: A must not serve its old copy.
    let mut second = first.clone();
    second.version += 1;
    second.data.insert("while-down".into(), b"1".to_vec());
    b.set(&id, &second).await.unwrap();
    let got = a.get(&id).await.unwrap().unwrap();
    assert_eq!(got.data, second.data);
    // A's next request opened a new connection with tracking on: the cache is back.
    assert!(stats(&a).armed);
    assert!(a.get(&id).await.unwrap().is_some());
    let hits = stats(&a).hits;
    assert_eq!(a.get(&id).await.unwrap().unwrap().data, second.data);
    assert_eq!(stats(&a).hits, hits + 1);
    // ... and coherent again.
    let mut third = second.clone();
    third.version += 1;
    third.data.insert("after".into(), b"1".to_vec());
    b.set(&id, &third).await.unwrap();
    eventually("A drops its copy after re-arming", || async {
        a.get(&id).await.unwrap().unwrap().data == third.data
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_bounds() {
    let store = cached_named(
        &common::random_prefix("near-bounds"),
        "near-cache-test",
        NearCacheConfig::new().max_entries(3),
    )
    .await;
    let ids: Vec<_> = (0..10).map(|_| new_id()).collect();
    for id in &ids {
        store.set(id, &sample_record(later())).await.unwrap();
    }
    let s = stats(&store);
    assert!(s.entries <= 3, "{s:?}");
    assert!(s.evictions >= 7, "{s:?}");
    // Every session still loads, from the server when evicted.
    for id in &ids {
        assert!(store.get(id).await.unwrap().is_some());
    }

    let tiny = cached_named(
        &common::random_prefix("near-bytes"),
        "near-cache-test",
        NearCacheConfig::new().max_bytes(1000),
    )
    .await;
    let id = new_id();
    let mut big = Record::new(later(), session_store::Codec::MessagePack);
    big.data.insert("blob".into(), vec![7; 4000]);
    tiny.set(&id, &big).await.unwrap();
    assert_eq!(stats(&tiny).entries, 0, "larger than the cache: not kept");
    assert_eq!(tiny.get(&id).await.unwrap().unwrap().data, big.data);
}

#[tokio::test]
async fn deployments_without_coherent_tracking_are_refused() {
    let refused = |result: Result<RedisStore, Error>, what: &str| match result {
        Err(Error::Config(message)) => assert!(message.contains(what), "{message}"),
        other => panic!("expected a configuration error naming {what}: {other:?}"),
    };
    refused(
        RedisStore::cluster_from_urls(common::cluster_urls())
            .unwrap()
            .with_near_cache(NearCacheConfig::new()),
        "Cluster",
    );
    refused(
        RedisStore::sentinel_from_urls(common::sentinel_urls(), &common::sentinel_master())
            .unwrap()
            .with_near_cache(NearCacheConfig::new()),
        "Sentinel",
    );
    refused(
        RedisStore::from_url(&common::redis_url())
            .unwrap()
            .with_layout(Layout::connect_redis(Default::default()))
            .with_near_cache(NearCacheConfig::new()),
        "native layout",
    );
    // The layout set after the cache turns the cache off, rather than leaving it serving
    // a layout it does not understand.
    let later_layout = RedisStore::from_url(&common::redis_url())
        .unwrap()
        .with_near_cache(NearCacheConfig::new())
        .unwrap()
        .with_layout(Layout::connect_redis(Default::default()));
    assert!(later_layout.near_cache_stats().is_none());
    let pool = deadpool_redis_pool();
    refused(
        RedisStore::from_pool(pool).with_near_cache(NearCacheConfig::new()),
        "from_url",
    );
}

fn deadpool_redis_pool() -> session_store_redis::deadpool_redis::Pool {
    session_store_redis::deadpool_redis::Config::from_url(common::redis_url())
        .create_pool(Some(session_store_redis::deadpool_redis::Runtime::Tokio1))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_stops_cached_reads_within_the_heartbeat() {
    let server = common::OwnServer::start();
    let store = RedisStore::from_url(&server.url())
        .unwrap()
        .with_near_cache(NearCacheConfig::new())
        .unwrap();
    store.connect().await.unwrap();
    let id = new_id();
    store.set(&id, &sample_record(later())).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    let hits = stats(&store).hits;
    // Frozen: the connection stays open but nothing answers, as in a network partition.
    server.signal("-STOP");
    let frozen = Instant::now();
    eventually("the heartbeat notices", || async { !stats(&store).armed }).await;
    println!("disarmed {:?} after the freeze", frozen.elapsed());
    // No cached answer while the server is silent: the read goes out and fails.
    let err = store
        .get(&id)
        .await
        .expect_err("a read served while the server is silent");
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(stats(&store).hits, hits);
    server.signal("-CONT");
    eventually("the store serves again", || async {
        matches!(store.get(&id).await, Ok(Some(_)))
    })
    .await;
    assert!(stats(&store).armed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_from_before_a_server_restart_is_served_after_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let mut server = common::OwnServer::start();
    let reader = Arc::new(
        RedisStore::from_url(&server.url())
            .unwrap()
            .with_near_cache(NearCacheConfig::new())
            .unwrap(),
    );
    let writer = Arc::new(RedisStore::from_url(&server.url()).unwrap());
    reader.connect().await.unwrap();
    writer.connect().await.unwrap();
    let id = new_id();
    // The writer sets the session to version 1, 2, 3, ... in order, noting the last one
    // the server acknowledged; the reader reads it in a loop, noting when each read started
    // and what it got.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let (writer, acked, stop, id) = (writer.clone(), acked.clone(), stop.clone(), id.clone());
        tokio::spawn(async move {
            let mut record = sample_record(later());
            while !stop.load(Ordering::Relaxed) {
                record.version += 1;
                if writer.set(&id, &record).await.is_ok() {
                    acked.store(record.version, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let reading = {
        let (reader, stop, id) = (reader.clone(), stop.clone(), id.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let got = reader.get(&id).await;
                seen.push((started, got.map(|r| r.map(|r| r.version))));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    eventually("the reader hits its cache", || async {
        stats(&reader).hits > 0
    })
    .await;

    server.kill();
    // Every version up to this one was written (and the server's memory lost) before the
    // kill: the restarted server can hold none of them, so a read after the restart that
    // returns one is served from before the restart.
    let gone = acked.load(Ordering::SeqCst);
    assert!(gone > 0);
    eventually("the reader notices the lost channel", || async {
        !stats(&reader).armed
    })
    .await;
    let disarmed = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down_until = Instant::now();
    server.restart();
    let restarted = Instant::now();
    eventually("the reader serves from its cache again", || async {
        stats(&reader).armed && stats(&reader).hits > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    let seen = reading.await.unwrap();

    let mut served_while_down = 0;
    let mut stale_after_restart = 0;
    let mut after = 0;
    for (started, got) in &seen {
        if *started >= disarmed && *started < down_until && matches!(got, Ok(Some(_))) {
            served_while_down += 1;
        }
        if *started >= restarted {
            after += 1;
            if let Ok(Some(version)) = got
                && *version <= gone
            {
                stale_after_restart += 1;
            }
        }
    }
    println!(
        "reads: {} in all, {after} after the restart; {:?}",
        seen.len(),
        stats(&reader)
    );
    assert_eq!(
        served_while_down, 0,
        "reads served while the server was down"
    );
    assert_eq!(
        stale_after_restart, 0,
        "reads from before the restart served after it"
    );
    assert!(after > 0);
}

/// A connected near-cached store on `server`.
async fn cached_on(server: &common::OwnServer) -> RedisStore {
    let store = RedisStore::from_url(&server.url())
        .unwrap()
        .with_near_cache(NearCacheConfig::new())
        .unwrap();
    store.connect().await.unwrap();
    store
}

async fn raw_on(server: &common::OwnServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_evicted_by_the_stores_own_writes_is_not_served_for_long() {
    // The server evicts the least recently used keys; the cached session is the least
    // recently used on the server, as its reads are served from the cache. The evictions
    // happen while running the store's own writes, which the server does not announce to
    // it (NOLOOP).
    let server = common::OwnServer::start_with(&[
        "--maxmemory",
        "4mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--maxmemory-samples",
        "10",
    ]);
    let store = cached_on(&server).await;
    let mut conn = raw_on(&server).await;
    let id = new_id();
    store.set(&id, &sample_record(later())).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    let key = format!("{}{}", store.prefix(), id.as_str());
    let mut filler = Record::new(later(), session_store::Codec::MessagePack);
    filler.data.insert("blob".into(), vec![7; 8000]);
    let mut written = 0;
    loop {
        for _ in 0..50 {
            store.set(&new_id(), &filler).await.unwrap();
        }
        written += 50;
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !exists {
            break;
        }
        assert!(written < 20_000, "the session was never evicted");
    }
    let start = Instant::now();
    eventually("the evicted session is no longer served", || async {
        store.get(&id).await.unwrap().is_none()
    })
    .await;
    println!("evicted session served for {:?} at most", start.elapsed());
    assert!(stats(&store).flushes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_untracked_by_a_full_tracking_table_is_not_served_for_long() {
    // The server's tracking table holds 100 keys: reading 200 sessions takes about half
    // of them out of it, unannounced (NOLOOP), so a later change by another client would go
    // unseen. The table stays full, as it does on a server with more live sessions than
    // its limit.
    let server = common::OwnServer::start_with(&["--tracking-table-max-keys", "100"]);
    let store = cached_on(&server).await;
    let mut conn = raw_on(&server).await;
    let ids: Vec<_> = (0..200).map(|_| new_id()).collect();
    for id in &ids {
        store.set(id, &sample_record(later())).await.unwrap();
    }
    for id in &ids {
        store.get(id).await.unwrap();
    }
    // Another client destroys ten sessions; some of their invalidations are never sent.
    let ids = &ids[..10];
    let keys: Vec<String> = ids
        .iter()
        .map(|id| format!("{}{}", store.prefix(), id.as_str()))
        .collect();
    let () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let start = Instant::now();
    for id in ids {
        eventually(
            "a session destroyed elsewhere is no longer served",
            || async { store.get(id).await.unwrap().is_none() },
        )
        .await;
    }
    println!(
        "destroyed sessions served for {:?} at most",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_this_process_wrote_stays_tracked() {
    // The store's own writes end the server's tracking of the key; the write scripts read
    // the key again in the same step, so another client's later change is still announced.
    let store = cached(&common::random_prefix("near-own")).await;
    let mut conn = raw().await;
    let write_then_delete_elsewhere = |step: &'static str| {
        let store = store.clone();
        let mut conn = conn.clone();
        async move {
            let id = new_id();
            let mut record = sample_record(later());
            assert!(store.create(&id, &record).await.unwrap());
            match step {
                // A new session is not cached by its creation: its first read caches it.
                "create" => assert!(store.get(&id).await.unwrap().is_some()),
                "compare_and_set" => {
                    record.version = 1;
                    assert_eq!(
                        store.compare_and_set(&id, &record, 0).await.unwrap(),
                        CasOutcome::Written
                    );
                }
                "set" => store.set(&id, &record).await.unwrap(),
                // A touch caches the copy it extends: read (and cache) it first, as the
                // manager does.
                _ => {
                    assert!(store.get(&id).await.unwrap().is_some());
                    assert!(store.touch(&id, later()).await.unwrap());
                }
            }
            let hits = stats(&store).hits;
            assert!(store.get(&id).await.unwrap().is_some());
            assert_eq!(
                stats(&store).hits,
                hits + 1,
                "{step}: served from the cache"
            );
            let key = format!("{}{}", store.prefix(), id.as_str());
            let () = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            eventually(step, || async { store.get(&id).await.unwrap().is_none() }).await;
        }
    };
    for step in ["create", "compare_and_set", "set", "touch"] {
        write_then_delete_elsewhere(step).await;
    }
    let _ = &mut conn;
}
