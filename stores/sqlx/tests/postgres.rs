//! `PostgresStore` against a real PostgreSQL (`POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Fails when the server is unreachable.
#![cfg(feature = "postgres")]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::*;
use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::OffsetDateTime;
use session_store::{Capabilities, Error, SessionStore};
use session_store_sqlx::PostgresStore;
use session_store_sqlx::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
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
    let store = PostgresStore::connect(&url())
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL")
        .with_table_name(&random_table())
        .unwrap();
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
    let store = PostgresStore::connect(&url())
        .await
        .unwrap()
        .with_table_name(&random_table())
        .unwrap();
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
    assert_eq!(count(store.pool(), &store).await, 0);
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
