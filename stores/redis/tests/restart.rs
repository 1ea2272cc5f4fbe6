//! The server goes away while the store is in use and comes back on the same port.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use session_store::testing::{new_id, now_ms, sample_record};
use session_store::{Error, SessionStore};
use session_store_redis::RedisStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recovers_after_the_server_restarts() {
    let mut server = common::OwnServer::start();
    let store = Arc::new(
        RedisStore::from_url(&server.url())
            .unwrap()
            .with_prefix(common::random_prefix("restart")),
    );
    store.connect().await.unwrap();
    let id = new_id();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    store.set(&id, &record).await.unwrap();

    // Four tasks keep using the store while the server is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let id = new_id();
                    let record = sample_record(now_ms() + Duration::from_secs(60));
                    let result = async {
                        store.set(&id, &record).await?;
                        store.get(&id).await?;
                        store.destroy(&id).await
                    }
                    .await;
                    match result {
                        Ok(()) => ok += 1,
                        Err(e) => errors.push(e),
                    }
                    tokio::task::yield_now().await;
                }
                (ok, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();

    // While it is down, every operation fails as unavailable (or times out), never panics.
    let down = [
        store.get(&id).await.map(drop),
        store.set(&id, &record).await,
        store
            .touch(&id, now_ms() + Duration::from_secs(60))
            .await
            .map(drop),
        store.destroy(&id).await,
        store.create(&new_id(), &record).await.map(drop),
        store.compare_and_set(&id, &record, 0).await.map(drop),
    ];
    for result in down {
        let err = result.expect_err("an operation succeeded with the server down");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(matches!(
            err,
            Error::Unavailable { .. } | Error::Timeout { .. }
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for worker in workers {
        let (ok, errors) = worker.await.expect("a worker panicked");
        assert!(ok > 0, "no operation succeeded before the kill");
        for err in &errors {
            assert!(err.is_unavailable(), "{err:?}");
        }
        failures += errors.len();
    }
    assert!(
        failures > 0,
        "no operation failed while the server was down"
    );

    // Back on the same port (empty: no persistence). Measure until the store works again.
    server.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let probe = new_id();
        let works = async {
            store.set(&probe, &record).await?;
            store.get(&probe).await
        }
        .await;
        match works {
            Ok(Some(_)) => break,
            Ok(None) => panic!("record written after the restart is missing"),
            Err(e) => assert!(e.is_unavailable(), "{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "store still failing 30 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = restarted.elapsed();
    println!(
        "store working again {recovery:?} after the server answered PING ({attempts} attempt(s))"
    );
    assert!(
        recovery < Duration::from_secs(2),
        "recovery took {recovery:?}"
    );
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "the restarted server is empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_a_timely_unavailable_error() {
    let server = common::OwnServer::start();
    let store = RedisStore::from_url(&server.url())
        .unwrap()
        .with_prefix(common::random_prefix("hung"));
    store.connect().await.unwrap();
    let id = new_id();
    store
        .set(&id, &sample_record(now_ms() + Duration::from_secs(600)))
        .await
        .unwrap();

    server.signal("-STOP");
    let asked = Instant::now();
    // The store's own response timeout (2 s) answers, well before this generous guard.
    let result = tokio::time::timeout(Duration::from_secs(30), store.get(&id))
        .await
        .expect("the store hung on a frozen server");
    let waited = asked.elapsed();
    server.signal("-CONT");
    let err = result.expect_err("a frozen server answered");
    println!(
        "frozen server: {err} ({}) after {waited:?}",
        std::error::Error::source(&err).unwrap()
    );
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

    // Thawed, the store works again (on a fresh connection).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.get(&id).await {
            Ok(found) => {
                assert!(found.is_some());
                break;
            }
            Err(e) => assert!(e.is_unavailable(), "{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "store still failing after the thaw"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_writes_after_an_idle_restart_succeed() {
    let mut server = common::OwnServer::start();
    let store = RedisStore::from_url(&server.url())
        .unwrap()
        .with_prefix(common::random_prefix("idle-restart"));
    store.connect().await.unwrap();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    let id = new_id();
    assert!(store.create(&id, &record).await.unwrap());

    // The server restarts while the store is idle: its pooled connection is now dead, and
    // the first request of each kind finds out.
    server.kill();
    server.restart();
    let fresh = new_id();
    assert!(
        store.create(&fresh, &record).await.unwrap(),
        "the first create after the restart"
    );
    assert!(store.get(&fresh).await.unwrap().is_some());
    // A create of an id that is taken still says so after its retry.
    assert!(!store.create(&fresh, &record).await.unwrap());

    // The first compare-and-set after a restart is answered too (the server is empty).
    server.kill();
    server.restart();
    let mut next = record.clone();
    next.version = 1;
    assert_eq!(
        store.compare_and_set(&fresh, &next, 0).await.unwrap(),
        session_store::CasOutcome::Missing
    );
    assert!(store.create(&fresh, &record).await.unwrap());
    assert_eq!(
        store.compare_and_set(&fresh, &next, 0).await.unwrap(),
        session_store::CasOutcome::Written
    );
}
