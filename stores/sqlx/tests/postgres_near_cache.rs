//! `PostgresStore` with the near-cache on, against a real PostgreSQL (`POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`): the conformance suite, round trips
//! counted on the wire, coherence between two stores (two "processes") on one table,
//! compare-and-set against stale copies, a lost listening connection, a table without the
//! announcing trigger, and the layout that has no near-cache.
#![cfg(feature = "postgres")]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::*;
use session_store::testing::{Relay, SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::{Capabilities, CasOutcome, Error, Record, SessionStore};
use session_store_sqlx::sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use session_store_sqlx::{NearCacheConfig, NearCacheStats, PostgresLayout, PostgresStore};

/// Long enough for a loaded 2-core machine; announcements arrive in milliseconds.
const DEADLINE: Duration = Duration::from_secs(15);

fn url() -> String {
    env_url("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
}

fn options() -> PgConnectOptions {
    PgConnectOptions::from_str(&url()).expect("a valid POSTGRES_URL")
}

/// A store on `options` with the near-cache named `name` on, in table `table` (migrated
/// with the trigger), its cache armed; its pool holds up to `connections`.
async fn cached_on(
    options: PgConnectOptions,
    table: &str,
    name: &str,
    connections: u32,
) -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL");
    let store = PostgresStore::new(pool)
        .with_table_name(table)
        .unwrap()
        .with_near_cache(NearCacheConfig::new().client_name(name))
        .unwrap();
    store.migrate().await.unwrap();
    armed(&store).await;
    store
}

async fn cached(table: &str) -> PostgresStore {
    cached_on(options(), table, "near-cache-test", 4).await
}

fn stats(store: &PostgresStore) -> NearCacheStats {
    store.near_cache_stats().expect("the near-cache is on")
}

/// Waits until the store's cache is armed (its listening task starts on first use).
async fn armed(store: &PostgresStore) {
    let _ = store.get(&new_id()).await.unwrap();
    eventually(DEADLINE, "the near-cache is armed", || async {
        stats(store).armed
    })
    .await;
}

fn later() -> session_store::time::OffsetDateTime {
    now_ms() + Duration::from_secs(600)
}

async fn drop_table(store: &PostgresStore) {
    execute(
        store.pool(),
        &format!("DROP TABLE \"{}\"", store.table_name()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_store_passes_the_suite() {
    let table = random_table();
    let a = cached(&table).await;
    let b = cached(&table).await;
    let options = SuiteOptions::new(Capabilities::ALL).propagation(DEADLINE);
    run(&a, &options).await;
    session_store::testing::kept_across_instances(&a, &b, &options).await;
    session_store::testing::kept_across_instances(&b, &a, &options).await;
    assert!(
        stats(&a).hits > 0,
        "the suite's reads were served: {:?}",
        stats(&a)
    );
    // The heartbeat's checks came back all along: never taken for a lost connection.
    assert_eq!((stats(&a).flushes, stats(&b).flushes), (0, 0));
    drop_table(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_cost_no_round_trip_and_commits_one() {
    let target = options();
    // Not counted: the cache's own connections, and the check (a lone `Sync` message) that
    // sqlx makes of every connection it takes back into its pool, after the operation.
    let relay = Relay::filtered(
        target.get_port(),
        Some(b"near-cache-counted".to_vec()),
        |burst| burst != b"S\0\0\0\x04",
    );
    let relayed = target
        .clone()
        .host("127.0.0.1")
        .port(relay.port)
        .ssl_mode(PgSslMode::Disable);
    let table = random_table();
    // One connection, each statement run once first: sqlx prepares a statement on its
    // first use on a connection (one more round trip), then reuses it.
    let store = cached_on(relayed, &table, "near-cache-counted", 1).await;
    let warm = new_id();
    let mut record = sample_record(later());
    store.create(&warm, &record).await.unwrap();
    store.set(&warm, &record).await.unwrap();
    record.version = 1;
    store.compare_and_set(&warm, &record, 0).await.unwrap();
    store.touch(&warm, later()).await.unwrap();
    store.destroy(&warm).await.unwrap();
    store.get(&warm).await.unwrap();
    let trips = |what: &str, before: usize, expected: usize| {
        let trips = relay.count() - before;
        assert_eq!(trips, expected, "{what}: {trips} round trips");
    };
    let id = new_id();
    let mut record = sample_record(later());
    let before = relay.count();
    assert!(store.create(&id, &record).await.unwrap());
    trips("create", before, 1);
    let before = relay.count();
    for _ in 0..10 {
        assert_eq!(store.get(&id).await.unwrap().unwrap().data, record.data);
    }
    trips("ten reads of a created session", before, 0);
    record.data.insert("k".into(), b"v".to_vec());
    record.version = 1;
    let before = relay.count();
    assert_eq!(
        store.compare_and_set(&id, &record, 0).await.unwrap(),
        CasOutcome::Written
    );
    trips("compare-and-set", before, 1);
    let before = relay.count();
    assert_eq!(store.get(&id).await.unwrap().unwrap(), record);
    trips("a read after the commit", before, 0);
    let extended = later() + Duration::from_secs(60);
    let before = relay.count();
    assert!(store.touch(&id, extended).await.unwrap());
    trips("touch", before, 1);
    let before = relay.count();
    let touched = store.get(&id).await.unwrap().unwrap();
    trips("a read after the touch", before, 0);
    assert_eq!(touched.expires, extended);
    // A destroyed session: one statement each time, nothing cached.
    let other = new_id();
    store.set(&other, &sample_record(later())).await.unwrap();
    store.destroy(&other).await.unwrap();
    let before = relay.count();
    assert!(store.get(&other).await.unwrap().is_none());
    trips("a read of a destroyed session", before, 1);
    let s = stats(&store);
    println!("{s:?}");
    assert!(s.hits >= 12 && s.armed, "{s:?}");
    drop_table(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_elsewhere_is_never_served_after_its_announcement() {
    // The writer is another near-cached store (it announces its writes after they commit)
    // or a store without the near-cache (the table's trigger announces them).
    let table = random_table();
    let cached_writer = cached(&table).await;
    let plain_writer = PostgresStore::new(cached_writer.pool().clone())
        .with_table_name(&table)
        .unwrap();
    let b = cached(&table).await;
    for round in 0..40_u64 {
        let a = if round % 4 < 2 {
            &cached_writer
        } else {
            &plain_writer
        };
        let id = new_id();
        let mut record = sample_record(later());
        a.set(&id, &record).await.unwrap();
        assert!(b.get(&id).await.unwrap().is_some());
        // Cached on B now; A changes it.
        if round % 2 == 0 {
            record.version = 1;
            record.data.insert("round".into(), vec![round as u8]);
            assert_eq!(
                a.compare_and_set(&id, &record, 0).await.unwrap(),
                CasOutcome::Written
            );
            eventually(DEADLINE, "B sees A's write", || async {
                b.get(&id)
                    .await
                    .unwrap()
                    .is_some_and(|got| got.version == 1)
            })
            .await;
            // Never the old version again.
            for _ in 0..20 {
                assert_eq!(b.get(&id).await.unwrap().unwrap().version, 1);
            }
        } else {
            a.destroy(&id).await.unwrap();
            eventually(DEADLINE, "B sees A's destroy", || async {
                b.get(&id).await.unwrap().is_none()
            })
            .await;
            for _ in 0..20 {
                assert!(b.get(&id).await.unwrap().is_none(), "resurrected");
            }
        }
    }
    assert!(stats(&b).invalidations >= 40, "{:?}", stats(&b));
    drop_table(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_a_stale_copy_is_refused_by_the_server() {
    let table = random_table();
    let a = cached(&table).await;
    let b = cached(&table).await;
    let id = new_id();
    let record = sample_record(later());
    a.set(&id, &record).await.unwrap();
    let stale = b.get(&id).await.unwrap().unwrap();
    let mut newer = record.clone();
    newer.version = 1;
    assert_eq!(
        a.compare_and_set(&id, &newer, 0).await.unwrap(),
        CasOutcome::Written
    );
    let mut from_stale = stale.clone();
    from_stale.version = 1;
    from_stale.data.insert("stale".into(), b"1".to_vec());
    assert_eq!(
        b.compare_and_set(&id, &from_stale, stale.version)
            .await
            .unwrap(),
        CasOutcome::Conflict
    );
    a.destroy(&id).await.unwrap();
    assert_eq!(
        b.compare_and_set(&id, &from_stale, 1).await.unwrap(),
        CasOutcome::Missing,
        "a destroyed session is never written back"
    );
    drop_table(&a).await;
}

/// A store with the near-cache on in a fresh table, its connections named after the table,
/// holding one cached session; the session's id and the listening backend's pid.
async fn with_one_cached_session() -> (PostgresStore, session_store::SessionId, i64) {
    let table = random_table();
    let name = format!("near-cache-{}", &table[5..15]);
    let store = cached_on(options(), &table, &name, 4).await;
    let id = new_id();
    store.set(&id, &sample_record(later())).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    assert_eq!(stats(&store).entries, 1);
    let pid = scalar(
        store.pool(),
        &format!(
            "SELECT pid::bigint FROM pg_stat_activity \
             WHERE application_name = '{name}' AND query ILIKE 'LISTEN%'"
        ),
    )
    .await;
    (store, id, pid)
}

/// Deletes `id`'s row behind the store's back.
async fn delete_row(store: &PostgresStore, id: &session_store::SessionId) {
    execute(
        store.pool(),
        &format!(
            "DELETE FROM \"{}\" WHERE id = '{}'",
            store.table_name(),
            id.as_str()
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_empties_and_bypasses_the_cache_until_rearmed() {
    let (store, id, pid) = with_one_cached_session().await;
    let flushes = stats(&store).flushes;
    // The listening connection dies; changes made meanwhile are announced to nobody.
    let killed = scalar(
        store.pool(),
        &format!("SELECT pg_terminate_backend({pid})::int::bigint"),
    )
    .await;
    assert_eq!(killed, 1, "the listening connection is terminated");
    delete_row(&store, &id).await;
    eventually(
        DEADLINE,
        "the lost connection empties the cache",
        || async { stats(&store).flushes > flushes },
    )
    .await;
    assert!(
        store.get(&id).await.unwrap().is_none(),
        "a change made while nobody listened is not hidden by the cache"
    );
    eventually(DEADLINE, "the cache is armed again", || async {
        stats(&store).armed
    })
    .await;
    let again = new_id();
    store.set(&again, &sample_record(later())).await.unwrap();
    let hits = stats(&store).hits;
    assert!(store.get(&again).await.unwrap().is_some());
    assert_eq!(stats(&store).hits, hits + 1, "served from the cache again");
    drop_table(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_trigger_the_cache_stays_off() {
    let plain = PostgresStore::connect(&url())
        .await
        .unwrap()
        .with_table_name(&random_table())
        .unwrap();
    plain.migrate().await.unwrap();
    let store = plain
        .clone()
        .with_near_cache(NearCacheConfig::new())
        .unwrap();
    let id = new_id();
    store.set(&id, &sample_record(later())).await.unwrap();
    for _ in 0..3 {
        assert!(store.get(&id).await.unwrap().is_some());
    }
    let s = stats(&store);
    assert_eq!((s.hits, s.armed), (0, false), "{s:?}");
    // A change by another process is seen at once.
    plain.destroy(&id).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_none());
    drop_table(&plain).await;
}

#[tokio::test]
async fn the_connect_pg_simple_layout_has_no_near_cache() {
    let store = PostgresStore::connect(&url()).await.unwrap();
    let refused = store
        .clone()
        .with_layout(PostgresLayout::connect_pg_simple(Default::default()))
        .with_near_cache(NearCacheConfig::new());
    match refused {
        Err(Error::Config(message)) => assert!(message.contains("native layout"), "{message}"),
        other => panic!("expected a configuration error: {other:?}"),
    }
    let later_layout = store
        .with_near_cache(NearCacheConfig::new())
        .unwrap()
        .with_layout(PostgresLayout::connect_pg_simple(Default::default()));
    assert!(later_layout.near_cache_stats().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_cached_as_the_table_holds_it() {
    // Expiries in nanoseconds are stored in microseconds: the cached copy must be the
    // stored one, as a read from the table would return it.
    let table = random_table();
    let store = cached(&table).await;
    let id = new_id();
    let record = Record::new(
        session_store::time::OffsetDateTime::now_utc() + Duration::from_nanos(600_000_000_123),
        session_store::Codec::MessagePack,
    );
    store.set(&id, &record).await.unwrap();
    let cached = store.get(&id).await.unwrap().unwrap();
    let plain = PostgresStore::new(store.pool().clone())
        .with_table_name(&table)
        .unwrap();
    assert_eq!(plain.get(&id).await.unwrap().unwrap(), cached);
    drop_table(&store).await;
}

/// Sends `signal` to a server process of this machine's PostgreSQL.
fn signal(pid: i64, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Resumes the stopped backend however the test ends.
struct Resume(i64);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_disarms_the_cache_within_the_heartbeat() {
    // The listening backend stops (as in a partition: its connection stays open but
    // delivers nothing); the cache's checks stop coming back.
    let (store, id, pid) = with_one_cached_session().await;
    let flushes = stats(&store).flushes;
    signal(pid, "-STOP");
    let resume = Resume(pid);
    let stopped = std::time::Instant::now();
    // Disarmed and emptied (then armed again on a new connection).
    eventually(
        DEADLINE,
        "the silent listener disarms the cache",
        || async { stats(&store).flushes > flushes },
    )
    .await;
    println!(
        "disarmed {:?} after the listener stopped",
        stopped.elapsed()
    );
    // A change made meanwhile is seen at once: the cache is bypassed.
    delete_row(&store, &id).await;
    assert!(store.get(&id).await.unwrap().is_none());
    drop(resume);
    eventually(DEADLINE, "the cache is armed again", || async {
        stats(&store).armed
    })
    .await;
    drop_table(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_too_long_for_a_notification_empties_every_cache() {
    // Only possible outside the manager (it bounds ids): the write still succeeds, on the
    // near-cached store and through the trigger alike.
    let table = random_table();
    let a = cached(&table).await;
    let b = cached(&table).await;
    let plain = PostgresStore::new(a.pool().clone())
        .with_table_name(&table)
        .unwrap();
    let id = new_id();
    a.set(&id, &sample_record(later())).await.unwrap();
    assert!(b.get(&id).await.unwrap().is_some());
    for writer in [&a, &plain] {
        let flushes = stats(&b).flushes;
        let long = session_store::SessionId::new("x".repeat(9000));
        writer.set(&long, &sample_record(later())).await.unwrap();
        eventually(DEADLINE, "every cache is emptied", || async {
            stats(&b).flushes > flushes
        })
        .await;
    }
    drop_table(&a).await;
}
