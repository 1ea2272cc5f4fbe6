//! The owner index: what listing and revoking one owner's sessions cost among many other
//! sessions (counted by the server), the index's key layout and expiry, touched sessions
//! staying listed on every topology, and values written before owners existed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use session_store::testing::{new_id, now_ms, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{CasOutcome, Record, SessionId, SessionManager, SessionStore};
use session_store_redis::redis::AsyncCommands;
use session_store_redis::{RedisStore, redis};

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable: {e}"))
}

/// The SHA-256 of `text` in lower-case hex.
fn hex_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A sample record bound to `owner`, expiring in `ttl`.
fn owned_by(owner: Option<&str>, ttl: Duration) -> Record {
    let mut record = sample_record(now_ms() + ttl);
    record.owner = owner.map(str::to_owned);
    record
}

/// What one private server has executed so far, from `INFO commandstats` and `INFO stats`.
#[derive(Clone, Default)]
struct Counts {
    /// Command (lower case) → calls, commands run inside scripts included.
    calls: BTreeMap<String, u64>,
    /// Server-side microseconds per command.
    usec: BTreeMap<String, u64>,
    /// Requests read from clients (`total_reads_processed`): round trips.
    reads: u64,
}

impl Counts {
    async fn now(conn: &mut redis::aio::MultiplexedConnection) -> Self {
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("stats")
            .query_async(conn)
            .await
            .unwrap();
        let mut counts = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                let (name, fields) = rest.split_once(':').unwrap();
                for field in fields.split(',') {
                    let (key, value) = field.split_once('=').unwrap();
                    match key {
                        "calls" => counts.calls.insert(name.to_owned(), value.parse().unwrap()),
                        "usec" => counts.usec.insert(name.to_owned(), value.parse().unwrap()),
                        _ => None,
                    };
                }
            } else if let Some(reads) = line.strip_prefix("total_reads_processed:") {
                counts.reads = reads.trim().parse().unwrap();
            }
        }
        counts
    }

    /// Commands and round trips since `before`, without this counter's own `INFO`.
    fn since(&self, before: &Self) -> (BTreeMap<String, u64>, u64) {
        let mut calls = BTreeMap::new();
        for (name, &n) in &self.calls {
            let delta = n - before.calls.get(name).copied().unwrap_or(0);
            if delta > 0 && name != "info" {
                calls.insert(name.clone(), delta);
            }
        }
        (calls, self.reads - before.reads - 1)
    }

    fn usec_since(&self, before: &Self, name: &str) -> u64 {
        self.usec.get(name).copied().unwrap_or(0) - before.usec.get(name).copied().unwrap_or(0)
    }
}

/// Counts what `$what` makes the server do: (commands, round trips).
macro_rules! measure {
    ($conn:expr, $what:expr) => {{
        let before = Counts::now(&mut $conn).await;
        let out = $what;
        let (calls, trips) = Counts::now(&mut $conn).await.since(&before);
        (out, calls, trips)
    }};
}

fn calls(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_revoking_one_owner_costs_the_same_among_10000_sessions() {
    let server = common::OwnServer::start();
    let store = RedisStore::from_url(&server.url())
        .unwrap()
        .with_prefix("cost:");
    store.connect().await.unwrap();
    let mut conn = raw(&server.url()).await;

    // 10,000 sessions: 8,000 of 1,600 other owners (5 each) and 2,000 without owner.
    futures::stream::iter(0..10_000u32)
        .map(|i| {
            let store = &store;
            async move {
                let owner = (i % 5 != 0).then(|| format!("user {}", i % 2_000));
                let record = owned_by(owner.as_deref(), Duration::from_secs(600));
                store.set(&new_id(), &record).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
        .unwrap();
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(keys, 10_000 + 1_600, "sessions and owner indexes");

    // Writes: a session with an owner is one EVALSHA (everything else runs inside it);
    // one without owner is a plain SET, as before owners existed.
    let ann = "ann@example.com";
    let [a1, a2, a3] = [(); 3].map(|()| new_id());
    let write = |first: bool| {
        let mut list = vec![
            ("evalsha", 1),
            ("set", 1),
            ("zadd", 1),
            ("pexpiretime", 1),
            ("zremrangebyscore", 1),
        ];
        if first {
            list.push(("pexpireat", 1));
        }
        calls(&list)
    };
    let record = owned_by(Some(ann), Duration::from_secs(600));
    let (created, cmds, trips) = measure!(conn, store.create(&a1, &record).await.unwrap());
    assert!(created);
    assert_eq!((cmds, trips), (write(true), 1), "create with owner");
    let (_, cmds, trips) = measure!(conn, store.set(&a2, &record).await.unwrap());
    assert_eq!((cmds, trips), (write(false), 1), "set with owner");
    let (_, cmds, trips) = measure!(conn, store.create(&a3, &record).await.unwrap());
    assert_eq!((cmds, trips), (write(false), 1), "create with owner");
    let mut next = store.get(&a3).await.unwrap().unwrap();
    next.version += 1;
    let (outcome, cmds, trips) = measure!(conn, store.compare_and_set(&a3, &next, 0).await);
    assert_eq!(outcome.unwrap(), CasOutcome::Written);
    let mut cas = write(false);
    cas.insert("getrange".into(), 1);
    assert_eq!((cmds, trips), (cas, 1), "compare-and-set with owner");
    let later = now_ms() + Duration::from_secs(1200);
    let (touched, cmds, trips) = measure!(conn, store.touch(&a2, later).await.unwrap());
    assert!(touched);
    let mut touch = write(true);
    touch.remove("set");
    touch.insert("getrange".into(), 1);
    touch.insert("setrange".into(), 1);
    touch.insert("pexpireat".into(), 2);
    assert_eq!((cmds, trips), (touch, 1), "touch with owner");
    let unowned = owned_by(None, Duration::from_secs(600));
    let (_, cmds, trips) = measure!(conn, store.set(&new_id(), &unowned).await.unwrap());
    assert_eq!(
        (cmds, trips),
        (calls(&[("set", 1)]), 1),
        "set without owner"
    );

    // Listing reads the index and these 3 sessions, whatever else the server holds.
    let manager = SessionManager::new(store.clone());
    let (listed, cmds, trips) = measure!(conn, manager.sessions_of(ann).await.unwrap());
    assert_eq!(listed.len(), 3);
    let listing = calls(&[
        ("evalsha", 1),
        ("zremrangebyscore", 1),
        ("zrange", 1),
        ("mget", 1),
    ]);
    assert_eq!((cmds, trips), (listing.clone(), 1), "listing");

    // Revoking all: the listing, then one DEL per session.
    let (revoked, cmds, trips) = measure!(conn, manager.revoke_all(ann).await.unwrap());
    assert_eq!(revoked, 3);
    let mut revoking = listing.clone();
    revoking.insert("del".into(), 3);
    assert_eq!((cmds, trips), (revoking, 4), "revoking");
    for id in [&a1, &a2, &a3] {
        assert!(store.get(id).await.unwrap().is_none());
    }

    // The next listing drops the members of the revoked sessions (one ZREM), and with them
    // the index key; after that, a listing is three commands inside one EVALSHA.
    let (listed, cmds, trips) = measure!(conn, manager.sessions_of(ann).await.unwrap());
    assert!(listed.is_empty());
    let mut cleaning = listing.clone();
    cleaning.insert("zrem".into(), 1);
    assert_eq!((cmds, trips), (cleaning, 1), "listing after revoking");
    let index = format!("cost:owner:{}", hex_sha256(ann));
    let exists: bool = conn.exists(&index).await.unwrap();
    assert!(!exists, "the emptied index key is gone");
    let (listed, cmds, trips) = measure!(conn, manager.sessions_of(ann).await.unwrap());
    assert!(listed.is_empty());
    let empty = calls(&[("evalsha", 1), ("zremrangebyscore", 1), ("zrange", 1)]);
    assert_eq!(
        (cmds, trips),
        (empty, 1),
        "listing an owner without sessions"
    );

    // Another owner among the 10,000: its 5 sessions, the same four commands.
    let (listed, cmds, trips) = measure!(conn, manager.sessions_of("user 7").await.unwrap());
    assert_eq!(listed.len(), 5);
    assert_eq!((cmds, trips), (listing, 1), "listing another owner");

    // What an owner costs a write, on the server and end to end (a debug build of the
    // client; printed, not asserted: timings on a shared machine vary).
    const N: u32 = 2_000;
    let mut cost = Vec::new();
    for owner in [None, Some("bench owner")] {
        let record = owned_by(owner, Duration::from_secs(600));
        let before = Counts::now(&mut conn).await;
        let started = Instant::now();
        for _ in 0..N {
            store.set(&new_id(), &record).await.unwrap();
        }
        let elapsed = started.elapsed();
        let after = Counts::now(&mut conn).await;
        // An EVALSHA's time includes the commands it runs (which are also counted under
        // their own names).
        let server_usec =
            after.usec_since(&before, if owner.is_some() { "evalsha" } else { "set" });
        cost.push((elapsed / N, server_usec as f64 / f64::from(N)));
    }
    println!(
        "set without owner: {:?} per write, server {:.2} µs; with owner: {:?} per write, \
         server {:.2} µs (end to end ×{:.2}, server ×{:.2})",
        cost[0].0,
        cost[0].1,
        cost[1].0,
        cost[1].1,
        cost[1].0.as_secs_f64() / cost[0].0.as_secs_f64(),
        cost[1].1 / cost[0].1,
    );
}

#[tokio::test]
async fn the_index_is_a_sorted_set_that_expires_with_its_sessions() {
    let url = common::redis_url();
    let store = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix(common::random_prefix("owner-index"));
    let mut conn = raw(&url).await;
    let owner = format!("ann {} / ü", new_id().as_str());
    let index = format!("{}owner:{}", store.prefix(), hex_sha256(&owner));

    let id = new_id();
    let key = format!("{}{}", store.prefix(), id.as_str());
    let record = owned_by(Some(&owner), Duration::from_secs(600));
    store.set(&id, &record).await.unwrap();
    // The value: header, owner section (`o` + the digest), then the payload envelope.
    let value: Vec<u8> = conn.get(&key).await.unwrap();
    assert_eq!(value[16], b'o');
    assert_eq!(value[17..81], *hex_sha256(&owner).as_bytes());
    assert_eq!(value[81..], record.encode_payload()[..]);
    // The index: the id scored by the expiry; the key expires with its latest session.
    let kind: String = redis::cmd("TYPE")
        .arg(&index)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "zset");
    let score: f64 = conn.zscore(&index, id.as_str()).await.unwrap();
    assert_eq!(score as i64, ms(record.expires));
    assert_eq!(pexpiretime(&mut conn, &index).await, ms(record.expires));

    // A touch moves score and key expiry along.
    let later = now_ms() + Duration::from_secs(3600);
    assert!(store.touch(&id, later).await.unwrap());
    let score: f64 = conn.zscore(&index, id.as_str()).await.unwrap();
    assert_eq!(score as i64, ms(later));
    assert_eq!(pexpiretime(&mut conn, &index).await, ms(later));
    // A shorter second session leaves the key's expiry at the latest one.
    let short = new_id();
    store
        .set(&short, &owned_by(Some(&owner), Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(pexpiretime(&mut conn, &index).await, ms(later));
    let members: i64 = conn.zcard(&index).await.unwrap();
    assert_eq!(members, 2);
    // Destroyed sessions stay members until a listing (or their score) drops them.
    store.destroy(&id).await.unwrap();
    store.destroy(&short).await.unwrap();
    let members: i64 = conn.zcard(&index).await.unwrap();
    assert_eq!(members, 2);
    assert!(store.owned(&owner).await.unwrap().is_empty());
    let exists: bool = conn.exists(&index).await.unwrap();
    assert!(!exists, "the emptied index key is gone");

    // Sessions that expire take the index with them (Redis drops the key), without a
    // listing or any other call.
    let brief = new_id();
    store
        .set(&brief, &owned_by(Some(&owner), Duration::from_millis(1500)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let exists: bool = conn.exists(&index).await.unwrap();
        if !exists {
            break;
        }
        assert!(Instant::now() < deadline, "the index outlived its sessions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.owned(&owner).await.unwrap().is_empty());
}

async fn pexpiretime(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn records_written_before_owners_still_load() {
    let url = common::redis_url();
    let store = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix(common::random_prefix("before-owners"));
    let mut conn = raw(&url).await;
    // The value every earlier release wrote: version, expiry (8 bytes each, big-endian),
    // then the payload envelope; the key's TTL at the expiry.
    let id = new_id();
    let key = format!("{}{}", store.prefix(), id.as_str());
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = 5;
    let old = [
        &record.version.to_be_bytes()[..],
        &ms(record.expires).to_be_bytes()[..],
        &record.encode_payload()[..],
    ]
    .concat();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&old)
        .arg("PXAT")
        .arg(ms(record.expires))
        .query_async(&mut conn)
        .await
        .unwrap();

    let got = store
        .get(&id)
        .await
        .unwrap()
        .expect("an earlier value loads");
    assert_eq!(got.data, record.data);
    assert_eq!(got.version, 5);
    assert_eq!(got.expires, record.expires);
    assert_eq!(got.owner, None);
    let later = now_ms() + Duration::from_secs(1200);
    assert!(store.touch(&id, later).await.unwrap());
    assert_eq!(store.get(&id).await.unwrap().unwrap().expires, later);
    // A session without owner is the same bytes it always was.
    store.set(&id, &got).await.unwrap();
    let value: Vec<u8> = conn.get(&key).await.unwrap();
    assert_eq!(value[16..], old[16..]);

    // Bound to an owner by its next write (as at login), it is listed.
    let owner = format!("owner {}", new_id().as_str());
    let mut bound = store.get(&id).await.unwrap().unwrap();
    bound.owner = Some(owner.clone());
    bound.version += 1;
    assert_eq!(
        store.compare_and_set(&id, &bound, 5).await.unwrap(),
        CasOutcome::Written
    );
    let listed = store.owned(&owner).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, id);
    assert_eq!(listed[0].1.data, record.data);
    store.destroy(&id).await.unwrap();
}

/// A session touched past its first expiry is still listed after that expiry has passed:
/// the index follows the touch.
async fn a_touched_session_stays_listed(store: &RedisStore) {
    let owner = format!("touch {}", new_id().as_str());
    let id = new_id();
    let record = owned_by(Some(&owner), Duration::from_millis(1500));
    store.set(&id, &record).await.unwrap();
    assert!(
        store
            .touch(&id, now_ms() + Duration::from_secs(600))
            .await
            .unwrap()
    );
    while OffsetDateTime::now_utc() < record.expires + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed: Vec<SessionId> = store
        .owned(&owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&id), "{store:?}");
    store.destroy(&id).await.unwrap();
    assert!(store.owned(&owner).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touched_session_stays_listed_on_one_node() {
    let store = RedisStore::from_url(&common::redis_url())
        .unwrap()
        .with_prefix(common::random_prefix("owner-touch"));
    a_touched_session_stays_listed(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touched_session_stays_listed_on_sentinel() {
    let store = RedisStore::sentinel_from_urls(common::sentinel_urls(), &common::sentinel_master())
        .unwrap()
        .with_prefix(common::random_prefix("owner-touch"));
    a_touched_session_stays_listed(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touched_session_stays_listed_on_cluster() {
    let store = RedisStore::cluster_from_urls(common::cluster_urls())
        .unwrap()
        .with_prefix(common::random_prefix("owner-touch"));
    a_touched_session_stays_listed(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lists_and_revokes_an_owner_across_masters() {
    let urls = common::cluster_urls();
    let store = RedisStore::cluster_from_urls(urls.clone())
        .unwrap()
        .with_prefix(common::random_prefix("owner-cluster"));
    store.connect().await.unwrap();
    let owner = format!("cluster {}", new_id().as_str());
    let ids: Vec<SessionId> = (0..20).map(|_| new_id()).collect();
    for id in &ids {
        let record = owned_by(Some(&owner), Duration::from_secs(600));
        assert!(store.create(id, &record).await.unwrap());
    }
    // Another owner's session and one without owner are never listed.
    let other = new_id();
    store
        .set(
            &other,
            &owned_by(Some("someone else"), Duration::from_secs(600)),
        )
        .await
        .unwrap();
    let unowned = new_id();
    store
        .set(&unowned, &owned_by(None, Duration::from_secs(600)))
        .await
        .unwrap();

    // The sessions sit on several masters; one listing finds them all.
    let cluster = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut conn = cluster.get_async_connection().await.unwrap();
    let mut masters = std::collections::BTreeSet::new();
    for id in &ids {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{}{}", store.prefix(), id.as_str()))
            .query_async(&mut conn)
            .await
            .unwrap();
        masters.insert(slot / 5462);
    }
    assert!(masters.len() > 1, "all sessions landed on one master");
    let mut listed: Vec<String> = store
        .owned(&owner)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, record)| {
            assert_eq!(record.owner.as_deref(), Some(owner.as_str()));
            id.as_str().to_owned()
        })
        .collect();
    listed.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected);

    // Moved to another owner by compare-and-set, a session leaves this owner's list.
    let mut moved = store.get(&ids[0]).await.unwrap().unwrap();
    moved.owner = Some("someone else".into());
    moved.version += 1;
    assert_eq!(
        store.compare_and_set(&ids[0], &moved, 0).await.unwrap(),
        CasOutcome::Written
    );
    assert_eq!(store.owned(&owner).await.unwrap().len(), 19);

    let manager = SessionManager::new(store.clone());
    assert_eq!(manager.revoke_all(&owner).await.unwrap(), 19);
    assert!(store.owned(&owner).await.unwrap().is_empty());
    for id in &ids[1..] {
        assert!(store.get(id).await.unwrap().is_none());
    }
    assert!(store.get(&unowned).await.unwrap().is_some());
    for id in [&ids[0], &other, &unowned] {
        store.destroy(id).await.unwrap();
    }
}
