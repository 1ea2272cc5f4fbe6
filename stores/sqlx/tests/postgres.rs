//! `PostgresStore` against a real PostgreSQL (`POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Fails when the server is unreachable.
#![cfg(feature = "postgres")]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::*;
use session_store::testing::{Relay, SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{Capabilities, Error, Record, SessionId, SessionStore};
use session_store_sqlx::PostgresStore;
use session_store_sqlx::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use session_store_sqlx::sqlx::{self, Row};

fn url() -> String {
    env_url("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
}

async fn admin() -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&url())
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL")
}

/// A migrated store in a fresh table, on a small pool (tests run in parallel against a
/// server with a limited number of connections).
async fn store() -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url())
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL");
    let store = PostgresStore::new(pool)
        .with_table_name(&random_table())
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// A store from `connect` (its own pool, of sqlx's default size) on a fresh table, not yet
/// migrated.
async fn connected() -> PostgresStore {
    PostgresStore::connect(&url())
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL")
        .with_table_name(&random_table())
        .unwrap()
}

async fn drop_table(store: &PostgresStore) {
    let sql = match store.schema_name() {
        Some(schema) => format!("DROP SCHEMA \"{schema}\" CASCADE"),
        None => format!("DROP TABLE \"{}\"", store.table_name()),
    };
    sqlx::query(&sql).execute(store.pool()).await.unwrap();
}

async fn count(pool: &PgPool, store: &PostgresStore) -> i64 {
    let sql = format!("SELECT count(*) FROM \"{}\"", store.table_name());
    sqlx::query(&sql).fetch_one(pool).await.unwrap().get(0)
}

#[tokio::test]
async fn conformance() {
    let store = connected().await;
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrate is idempotent");
    run(&store, &SuiteOptions::new(Capabilities::ALL)).await;
    let other = PostgresStore::connect(&url())
        .await
        .unwrap()
        .with_table_name(store.table_name())
        .unwrap();
    session_store::testing::kept_across_instances(
        &store,
        &other,
        &SuiteOptions::new(Capabilities::ALL),
    )
    .await;
    assert_eq!(
        count(store.pool(), &store).await,
        0,
        "suite left rows behind"
    );
    drop_table(&store).await;
}

#[tokio::test]
async fn conformance_in_own_schema() {
    let store = PostgresStore::connect(&url())
        .await
        .unwrap()
        .with_schema_name(&random_table())
        .unwrap()
        .with_table_name("sessions")
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    run(
        &store,
        &SuiteOptions::new(Capabilities::ALL).concurrency(16),
    )
    .await;
    drop_table(&store).await;
}

#[tokio::test]
async fn concurrent_migrations_do_not_collide() {
    let store = connected().await;
    let all = futures::future::join_all((0..6).map(|_| store.migrate())).await;
    for result in all {
        result.unwrap();
    }
    drop_table(&store).await;
}

#[tokio::test]
async fn names_are_validated() {
    let store = PostgresStore::new(PgPoolOptions::new().connect_lazy(&url()).unwrap());
    for bad in ["", "a\"b", "x; DROP TABLE y", "1st", "sp ace", "a.b"] {
        assert!(matches!(
            store.clone().with_table_name(bad),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            store.clone().with_schema_name(bad),
            Err(Error::Config(_))
        ));
    }
    assert_eq!(store.table_name(), "sessions");
    let debug = format!("{store:?}");
    assert!(
        debug.contains("sessions") && !debug.contains("postgres://"),
        "{debug}"
    );
}

#[tokio::test]
async fn hostile_ids() {
    let store = store().await;
    hostile_ids_are_bound(&store).await;
    nul_id(&store, false).await;
    nul_owner(&store, false).await;
    assert_eq!(count(store.pool(), &store).await, 0);
    drop_table(&store).await;
}

/// The table as the previous release created it, without `owner`.
async fn create_previous_release_table(pool: &PgPool, table: &str) {
    execute(
        pool,
        &format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (id TEXT PRIMARY KEY, data BYTEA NOT NULL, \
             expires TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL DEFAULT 0)"
        ),
    )
    .await;
    execute(
        pool,
        &format!("CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\" ON \"{table}\" (expires)"),
    )
    .await;
}

/// A session written as the previous release wrote it (its four columns).
async fn insert_previous_release_session(pool: &PgPool, table: &str) -> (SessionId, Record) {
    let id = new_id();
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = 3;
    let sql =
        format!("INSERT INTO \"{table}\" (id, data, expires, version) VALUES ($1, $2, $3, $4)");
    sqlx::query(&sql)
        .bind(id.as_str())
        .bind(record.encode_payload())
        .bind(record.expires)
        .bind(3i64)
        .execute(pool)
        .await
        .unwrap();
    (id, record)
}

#[tokio::test]
async fn migrate_adds_owners_to_a_table_of_the_previous_release() {
    let admin = admin().await;
    let table = random_table();
    create_previous_release_table(&admin, &table).await;
    let (old, record) = insert_previous_release_session(&admin, &table).await;
    let store = PostgresStore::new(admin.clone())
        .with_table_name(&table)
        .unwrap();
    // Several processes starting at once, then a restart: each finds the table as the
    // one before left it.
    for result in futures::future::join_all((0..4).map(|_| store.migrate())).await {
        result.unwrap();
    }
    store.migrate().await.unwrap();
    let column = format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = '{table}' \
         AND column_name = 'owner' AND is_nullable = 'YES' AND data_type = 'text'"
    );
    assert_eq!(scalar(&admin, &column).await, 1, "owner column added");
    let index = format!(
        "SELECT count(*) FROM pg_indexes WHERE tablename = '{table}' \
         AND indexname = '{table}_owner_idx' AND indexdef LIKE '%(owner, expires)%' \
         AND indexdef LIKE '%WHERE (owner IS NOT NULL)%'"
    );
    assert_eq!(scalar(&admin, &index).await, 1, "owner index built");
    assert_eq!(count(&admin, &store).await, 1, "the old session was kept");
    old_session_gets_an_owner(&store, &old, &record).await;

    // On an up-to-date table, `migrate` alters nothing: a reader's lock, which any
    // `ALTER TABLE` would wait for, does not hold it up.
    let mut reader = admin.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE \"{table}\" IN ACCESS SHARE MODE"))
        .execute(&mut *reader)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), store.migrate())
        .await
        .expect("migrate waited for a reader: it tried to alter the table")
        .unwrap();
    reader.rollback().await.unwrap();
    drop_table(&store).await;
}

/// Every plan node of an `EXPLAIN (FORMAT JSON)` result: (node type, index name).
fn plan_nodes(plan: &serde_json::Value, out: &mut Vec<(String, Option<String>)>) {
    match plan {
        serde_json::Value::Array(items) => items.iter().for_each(|p| plan_nodes(p, out)),
        serde_json::Value::Object(fields) => {
            if let Some(node) = fields.get("Node Type").and_then(|n| n.as_str()) {
                let index = fields.get("Index Name").and_then(|n| n.as_str());
                out.push((node.to_owned(), index.map(str::to_owned)));
            }
            fields.values().for_each(|v| plan_nodes(v, out));
        }
        _ => {}
    }
}

/// The nodes of the plan `explain` (an `EXPLAIN (FORMAT JSON) …`, with `owner` and now to
/// bind when `bind` is set) gets on `conn`.
async fn explain_json(
    conn: &mut sqlx::PgConnection,
    explain: &str,
    bind: Option<&str>,
) -> Vec<(String, Option<String>)> {
    let mut query = sqlx::query(explain);
    if let Some(owner) = bind {
        query = query.bind(owner).bind(OffsetDateTime::now_utc());
    }
    let row = query.fetch_one(conn).await.unwrap();
    // `json`, which sqlx (without its `json` feature) reads as the text it is.
    let text: String = row.try_get_unchecked(0).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut nodes = Vec::new();
    plan_nodes(&plan, &mut nodes);
    nodes
}

fn assert_owner_index(nodes: &[(String, Option<String>)], index: &str, what: &str) {
    assert!(
        nodes.iter().all(|(node, _)| node != "Seq Scan"),
        "{what}: the listing scans the table: {nodes:?}"
    );
    assert!(
        nodes.iter().any(|(node, name)| {
            matches!(node.as_str(), "Index Scan" | "Bitmap Index Scan")
                && name.as_deref() == Some(index)
        }),
        "{what}: the listing does not use {index}: {nodes:?}"
    );
}

#[tokio::test]
async fn listing_an_owner_is_one_index_lookup() {
    let store = store().await;
    let table = store.table_name().to_owned();
    StatementCounter::prepare();
    // Sessions of 2,000 other owners, five each, written in one statement.
    let fill = format!(
        "INSERT INTO \"{table}\" (id, data, expires, version, owner) \
         SELECT 'other-' || g, $1, $2, 0, 'other-owner-' || (g % 2000) \
         FROM generate_series(1, {OTHER_OWNERS_SESSIONS}) AS g"
    );
    let payload = sample_record(now_ms()).encode_payload();
    sqlx::query(&fill)
        .bind(payload)
        .bind(now_ms() + Duration::from_secs(600))
        .execute(store.pool())
        .await
        .unwrap();
    let owner = test_owner();
    owned_is_exact_and_one_statement(&store, &table, &owner).await;

    // The plans, with statistics as autovacuum would have gathered them.
    execute(store.pool(), &format!("ANALYZE \"{table}\"")).await;
    let index = format!("{table}_owner_idx");
    let sql = store.owned_sql().expect("the native layout lists owners");
    let mut conn = store.pool().acquire().await.unwrap();
    // As run: the parameters bound.
    let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
    let nodes = explain_json(&mut conn, &explain, Some(&owner)).await;
    assert_owner_index(&nodes, &index, "bound parameters");
    // The generic plan, which a prepared statement may switch to after five runs.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let name = format!("owned_{}", &table[5..]);
    sqlx::query(&format!("PREPARE {name} AS {sql}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let explain = format!("EXPLAIN (FORMAT JSON) EXECUTE {name}('{owner}', now())");
    let nodes = explain_json(&mut conn, &explain, None).await;
    assert_owner_index(&nodes, &index, "generic plan");
    for cleanup in [format!("DEALLOCATE {name}"), "RESET plan_cache_mode".into()] {
        sqlx::query(&cleanup).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    drop_table(&store).await;
}

#[tokio::test]
async fn delete_expired_removes_exactly_the_expired_rows() {
    let (clock, shared) = manual_clock();
    let store = store().await.with_clock(shared);
    delete_expired_is_exact(&store, &clock, || store.delete_expired()).await;
    assert_eq!(count(store.pool(), &store).await, 0);
    drop_table(&store).await;
}

#[tokio::test]
async fn expiry_filters_use_the_application_clock() {
    let (clock, shared) = manual_clock();
    let store = store().await.with_clock(shared);
    let id = new_id();
    // Valid for a minute by the server's clock, but the application's clock is an hour on.
    store
        .set(&id, &sample_record(now_ms() + Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(store.get(&id).await.unwrap().is_some());
    clock.set(OffsetDateTime::now_utc() + Duration::from_secs(3600));
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(!store.touch(&id, now_ms()).await.unwrap());
    assert!(store.create(&id, &sample_record(now_ms())).await.unwrap());
    drop_table(&store).await;
}

#[tokio::test]
async fn cleanup_query_uses_the_expiry_index() {
    let store = store().await;
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let explain = format!("EXPLAIN {}", store.delete_expired_sql());
    let plan: Vec<String> = sqlx::query(&explain)
        .bind(OffsetDateTime::now_utc())
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    tx.rollback().await.unwrap();
    let plan = plan.join("\n");
    let index = format!("{}_expires_idx", store.table_name());
    assert!(
        plan.contains(&index),
        "cleanup does not use {index}:\n{plan}"
    );
    drop_table(&store).await;
}

#[tokio::test]
async fn cleanup_task_survives_a_terminated_connection() {
    let admin = admin().await;
    let table = random_table();
    // One connection, not tested before use: the round after the kill hits the dead
    // connection and fails; the task must log it and recover.
    let app = format!("sqlx_cleanup_{}", &table[5..]);
    let options = PgConnectOptions::from_str(&url())
        .unwrap()
        .application_name(&app);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .unwrap();
    let store = PostgresStore::new(pool).with_table_name(&table).unwrap();
    store.migrate().await.unwrap();
    // Writes go through another pool, so only the cleanup task uses the store's connection.
    let writer = PostgresStore::new(admin.clone())
        .with_table_name(&table)
        .unwrap();
    let expired = sample_record(now_ms() - Duration::from_secs(5));

    let task = store.spawn_cleanup(Duration::from_millis(100));
    writer.set(&new_id(), &expired).await.unwrap();
    eventually(Duration::from_secs(20), "first cleanup", || async {
        count(&admin, &store).await == 0
    })
    .await;

    let failed_before = task.rounds_failed();
    let killed: Vec<bool> = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect();
    assert_eq!(
        killed,
        [true],
        "the store's one connection was not terminated"
    );

    writer.set(&new_id(), &expired).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "cleanup after the kill",
        || async { count(&admin, &store).await == 0 },
    )
    .await;
    assert!(
        task.rounds_failed() > failed_before,
        "no round saw the dead connection"
    );
    assert!(!task.is_finished());
    let ok_before = task.rounds_succeeded();
    eventually(Duration::from_secs(20), "more rounds", || async {
        task.rounds_succeeded() > ok_before + 1
    })
    .await;
    assert!(task.rows_deleted() >= 2);

    task.stop();
    task_ends(&task).await;
    drop_table(&writer).await;
}

#[tokio::test]
async fn cleanup_task_ends_with_the_store() {
    let store = store().await;
    let table_owner = same_table(&store);
    let task = store.spawn_cleanup(Duration::from_millis(50));
    eventually(Duration::from_secs(10), "a round", || async {
        task.rounds_succeeded() > 0
    })
    .await;
    let clone = store.clone();
    drop(store);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "a clone still holds the store");
    drop(clone);
    task_ends(&task).await;
    task.join().await;
    drop_table(&table_owner).await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .unwrap_err();
    // The pool's timeout is replaced by what happened, and where.
    assert_refused_at(&err, "127.0.0.1:1");

    // A pool whose server went away: calls fail as unavailable.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/test")
        .unwrap();
    let store = PostgresStore::new(pool);
    let err = store.get(&new_id()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn garbage_rows_are_corrupt() {
    let store = store().await;
    let update = format!(
        "UPDATE \"{}\" SET data = '\\x00ff'::bytea WHERE id = $1",
        store.table_name()
    );
    garbage_payload_is_corrupt(&store, store.pool(), &update).await;
    drop_table(&store).await;
}

/// sqlx tests every connection given back to its pool with one more round trip (a lone
/// `Sync`); the store keeps the connections it used instead, so a statement is one round
/// trip, counted on the wire by a relay.
#[tokio::test]
async fn a_statement_is_one_round_trip() {
    let target = PgConnectOptions::from_str(&url()).unwrap();
    let relay = Relay::filtered(target.get_port(), None, |_| true);
    let relayed = target
        .host("127.0.0.1")
        .port(relay.port)
        .ssl_mode(PgSslMode::Disable);
    // Two connections, of which the store holds one: every statement runs on it, and sqlx
    // prepares each statement once, on its first use there.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(relayed)
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL");
    let store = PostgresStore::new(pool)
        .with_table_name(&random_table())
        .unwrap();
    store.migrate().await.unwrap();
    let id = new_id();
    let later = now_ms() + Duration::from_secs(60);
    let record = sample_record(later);
    store.set(&id, &record).await.unwrap();
    store.get(&id).await.unwrap().unwrap();
    store.touch(&id, later).await.unwrap();
    let before = relay.count();
    for _ in 0..10 {
        assert_eq!(store.get(&id).await.unwrap().unwrap().data, record.data);
    }
    for _ in 0..10 {
        store.set(&id, &record).await.unwrap();
    }
    for _ in 0..10 {
        assert!(store.touch(&id, later).await.unwrap());
    }
    let trips = relay.count() - before;
    assert_eq!(trips, 30, "30 statements took {trips} round trips");
    drop_table(&store).await;
}

/// A statement whose future is dropped part way (a timeout) may leave its answer unread on
/// the connection: that connection goes back to sqlx's pool, which drains it, and no later
/// read is answered with another statement's row.
#[tokio::test]
async fn a_statement_cut_short_leaves_no_answer_behind() {
    let store = store().await;
    let later = now_ms() + Duration::from_secs(60);
    let mut ids = Vec::new();
    for n in 0..8u8 {
        let id = new_id();
        let mut record = sample_record(later);
        record.data.insert("n".into(), vec![n]);
        store.set(&id, &record).await.unwrap();
        ids.push(id);
    }
    let mut cut = 0;
    for round in 0..60u64 {
        let id = &ids[round as usize % ids.len()];
        // Polled once (the statement goes out), in odd rounds again after a while (its
        // answer may have come back in part or whole), then dropped.
        let mut read = Box::pin(store.get(id));
        let mut pending = true;
        let pauses: &[u64] = if round % 2 == 0 {
            &[0]
        } else {
            &[0, round * 25]
        };
        for &pause in pauses {
            tokio::time::sleep(Duration::from_micros(pause)).await;
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
            if polled.is_ready() {
                pending = false;
                break;
            }
        }
        drop(read);
        if pending {
            cut += 1;
        }
        for (n, id) in ids.iter().enumerate() {
            let record = store.get(id).await.unwrap().expect("a stored session");
            assert_eq!(record.data["n"], vec![n as u8], "round {round}");
        }
    }
    assert!(cut > 0, "no read was cut short");
    drop_table(&store).await;
}

/// The store holds all but one connection of the pool it opened, so a statement of the
/// application's own on `pool()` is served while the store is busy; once the store is
/// quiet, every connection it kept goes back to the pool.
#[tokio::test]
async fn kept_connections_leave_room_and_go_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let store = connected().await;
    store.migrate().await.unwrap();
    let id = new_id();
    store
        .set(&id, &sample_record(now_ms() + Duration::from_secs(60)))
        .await
        .unwrap();
    let max = store.pool().options().get_max_connections() as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = tokio::task::JoinSet::new();
    for _ in 0..(2 * max) {
        let (store, id, stop) = (store.clone(), id.clone(), stop.clone());
        busy.spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store.get(&id).await.unwrap().unwrap();
                reads += 1;
            }
            reads
        });
    }
    // Wait until the store holds every connection it may.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.pool().size() < (max - 1) as u32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the store never got busy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let one: i32 = sqlx::query("SELECT 1")
            .fetch_one(store.pool())
            .await
            .expect("the application's own statement got a connection")
            .get(0);
        assert_eq!(one, 1);
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(reads) = busy.join_next().await {
        assert!(reads.unwrap() > 0);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.pool().num_idle() < store.pool().size() as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "kept connections not back: {} idle of {}",
            store.pool().num_idle(),
            store.pool().size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop_table(&store).await;
}
