//! Through Sentinel, the store follows the master across a failover: a master, a replica
//! and a sentinel of this test's own, on free ports.

mod common;

use std::time::{Duration, Instant};

use session_store::SessionStore;
use session_store::testing::{new_id, now_ms, sample_record};
use session_store_redis::RedisStore;

/// Polls `check` every 50 ms until it is true; panics naming `what` after `secs`.
fn wait_until(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn master_port_by_sentinel(sentinel: u16, name: &str) -> Option<u16> {
    let reply = common::raw_command(
        sentinel,
        &format!("SENTINEL get-master-addr-by-name {name}"),
    )
    .ok()?;
    // *2 $9 127.0.0.1 $4 7000
    reply.split("\r\n").nth(4)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_follows_the_master_across_a_failover() {
    let name = "failover";
    let master = common::OwnServer::start();
    let replica = common::OwnServer::replica_of(&master);
    let sentinel = common::OwnServer::sentinel(name, master.port);
    wait_until("sentinel sees the replica", 60, || {
        common::raw_command(sentinel.port, &format!("SENTINEL replicas {name}"))
            .is_ok_and(|r| r.contains(&replica.port.to_string()))
    });

    let store = RedisStore::sentinel_from_urls([sentinel.url()], name)
        .unwrap()
        .with_prefix(common::random_prefix("failover"));
    store.connect().await.unwrap();
    let id = new_id();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    store.set(&id, &record).await.unwrap();
    // The write reached the replica before it is promoted.
    let synced = common::raw_command(master.port, "WAIT 1 10000").unwrap();
    assert_eq!(synced.trim(), ":1", "replica did not acknowledge the write");

    // Sentinel refuses (NOGOODSLAVE) until it has fresh INFO from the replica: poll.
    wait_until("sentinel accepts the failover", 60, || {
        common::raw_command(sentinel.port, &format!("SENTINEL FAILOVER {name}"))
            .is_ok_and(|r| r.starts_with("+OK"))
    });
    let started = Instant::now();
    wait_until("sentinel names the replica as master", 60, || {
        master_port_by_sentinel(sentinel.port, name) == Some(replica.port)
    });
    // Until Sentinel turns the old master into a replica, it still accepts writes (that
    // Redis will drop): wait for the demotion, then writes must reach the new master.
    wait_until("the old master is demoted", 60, || {
        common::raw_command(master.port, "INFO replication").is_ok_and(|r| r.contains("role:slave"))
    });
    let demoted = Instant::now();
    let deadline = demoted + Duration::from_secs(60);
    let mut attempts = 0;
    let second = new_id();
    loop {
        attempts += 1;
        match store.set(&second, &record).await {
            Ok(()) => break,
            Err(e) => assert!(e.is_unavailable(), "{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "store never wrote to the new master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "old master demoted {:?} after SENTINEL FAILOVER; next write on the new master after \
         {:?} ({attempts} attempt(s))",
        demoted - started,
        demoted.elapsed()
    );
    // Sentinel closed the store's connection when it demoted the old master: the store took
    // a new one (asking Sentinel for the master) and resent the write, so it never failed.
    assert_eq!(attempts, 1, "the first write after the demotion failed");
    let key = format!("{}{}", store.prefix(), second.as_str());
    let on_new_master = common::raw_command(replica.port, &format!("EXISTS {key}")).unwrap();
    assert_eq!(
        on_new_master.trim(),
        ":1",
        "the write did not land on the new master"
    );
    let before = store
        .get(&id)
        .await
        .unwrap()
        .expect("session lost in the failover");
    assert_eq!(before.data, record.data);
    assert_eq!(before.expires, record.expires);
    store.destroy(&id).await.unwrap();
    store.destroy(&second).await.unwrap();
}
