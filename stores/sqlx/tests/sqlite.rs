//! `SqliteStore` on a temporary file and in memory.
#![cfg(feature = "sqlite")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::{Capabilities, Error, Record, SessionId, SessionStore};
use session_store_sqlx::SqliteStore;
use session_store_sqlx::sqlx::{self, Row};

/// A database file in the temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("{}.db", random_table())))
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn file_store(db: &TempDb) -> SqliteStore {
    let store = SqliteStore::connect(&db.url())
        .await
        .unwrap()
        .with_table_name(&random_table())
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrate is idempotent");
    store
}

async fn memory_store() -> SqliteStore {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .unwrap()
        .with_table_name(&random_table())
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn count(store: &SqliteStore) -> i64 {
    scalar(
        store.pool(),
        &format!("SELECT count(*) FROM \"{}\"", store.table_name()),
    )
    .await
}

async fn drop_table(store: &SqliteStore) {
    execute(
        store.pool(),
        &format!("DROP TABLE \"{}\"", store.table_name()),
    )
    .await;
}

#[tokio::test]
async fn conformance_file() {
    let db = TempDb::new();
    let store = file_store(&db).await;
    assert!(db.0.exists(), "connect did not create the file");
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    run(&store, &SuiteOptions::new(Capabilities::ALL)).await;
    let other = SqliteStore::connect(&db.url())
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
    other.pool().close().await;
    assert_eq!(count(&store).await, 0, "suite left rows behind");
    drop_table(&store).await;
    store.pool().close().await;
}

#[tokio::test]
async fn conformance_memory() {
    let store = memory_store().await;
    run(&store, &SuiteOptions::new(Capabilities::ALL)).await;
    assert_eq!(count(&store).await, 0);
    drop_table(&store).await;
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let db = TempDb::new();
    let store = file_store(&db).await;
    let id = new_id();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    store.set(&id, &record).await.unwrap();
    let table = store.table_name().to_owned();
    store.pool().close().await;
    let reopened = SqliteStore::connect(&db.url())
        .await
        .unwrap()
        .with_table_name(&table)
        .unwrap();
    assert_eq!(reopened.get(&id).await.unwrap().unwrap(), record);
    reopened.pool().close().await;
}

#[tokio::test]
async fn hostile_ids() {
    let store = memory_store().await;
    hostile_ids_are_bound(&store).await;
    // SQLite binds text with its length: a NUL id is stored and matched exactly.
    nul_id(&store, true).await;
    nul_owner(&store, true).await;
    assert_eq!(count(&store).await, 0);
}

/// The table as the previous release created it, without `owner`, and one session written
/// as that release wrote it.
async fn previous_release_table(url: &str, table: &str) -> (SessionId, Record) {
    let old = SqliteStore::connect(url).await.unwrap();
    execute(
        old.pool(),
        &format!(
            "CREATE TABLE IF NOT EXISTS \"{table}\" (id TEXT PRIMARY KEY NOT NULL, \
             data BLOB NOT NULL, expires INTEGER NOT NULL, version BIGINT NOT NULL DEFAULT 0)"
        ),
    )
    .await;
    execute(
        old.pool(),
        &format!("CREATE INDEX IF NOT EXISTS \"{table}_expires_idx\" ON \"{table}\" (expires)"),
    )
    .await;
    let id = new_id();
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = 3;
    let millis = (record.expires.unix_timestamp_nanos() / 1_000_000) as i64;
    let sql =
        format!("INSERT INTO \"{table}\" (id, data, expires, version) VALUES (?1, ?2, ?3, ?4)");
    sqlx::query(&sql)
        .bind(id.as_str())
        .bind(record.encode_payload())
        .bind(millis)
        .bind(3i64)
        .execute(old.pool())
        .await
        .unwrap();
    old.pool().close().await;
    (id, record)
}

#[tokio::test]
async fn migrate_adds_owners_to_a_table_of_the_previous_release() {
    let db = TempDb::new();
    let table = random_table();
    let (old, record) = previous_release_table(&db.url(), &table).await;
    // The new release starts on the same file.
    let store = SqliteStore::connect(&db.url())
        .await
        .unwrap()
        .with_table_name(&table)
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrate is idempotent");
    let column = format!(
        "SELECT count(*) FROM pragma_table_info('{table}') WHERE name = 'owner' \
         AND type = 'TEXT' AND \"notnull\" = 0"
    );
    assert_eq!(scalar(store.pool(), &column).await, 1, "owner column added");
    let index = format!(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' \
         AND name = '{table}_owner_idx' AND sql LIKE '%(owner, expires) WHERE owner IS NOT NULL'"
    );
    assert_eq!(scalar(store.pool(), &index).await, 1, "owner index built");
    assert_eq!(count(&store).await, 1, "the old session was kept");
    old_session_gets_an_owner(&store, &old, &record).await;
    store.pool().close().await;
}

#[tokio::test]
async fn listing_an_owner_is_one_index_lookup() {
    let store = memory_store().await;
    let table = store.table_name().to_owned();
    StatementCounter::prepare();
    // Sessions of 2,000 other owners, five each, written in one statement.
    let fill = format!(
        "INSERT INTO \"{table}\" (id, data, expires, version, owner) \
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g \
         WHERE n < {OTHER_OWNERS_SESSIONS}) \
         SELECT 'other-' || n, ?1, ?2, 0, 'other-owner-' || (n % 2000) FROM g"
    );
    let later = now_ms() + Duration::from_secs(600);
    sqlx::query(&fill)
        .bind(sample_record(now_ms()).encode_payload())
        .bind((later.unix_timestamp_nanos() / 1_000_000) as i64)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(count(&store).await, OTHER_OWNERS_SESSIONS as i64);
    let owner = test_owner();
    owned_is_exact_and_one_statement(&store, &table, &owner).await;

    let sql = store.owned_sql().expect("SQLite lists owners");
    let now = (now_ms().unix_timestamp_nanos() / 1_000_000) as i64;
    let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .bind(&owner)
        .bind(now)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("detail"))
        .collect();
    let index = format!("{table}_owner_idx");
    assert!(
        plan.iter()
            .any(|step| step.starts_with("SEARCH") && step.contains(&format!("INDEX {index} "))),
        "the listing does not search {index}: {plan:?}"
    );
    assert!(
        plan.iter().all(|step| !step.starts_with("SCAN")),
        "the listing scans the table: {plan:?}"
    );
    drop_table(&store).await;
}

#[tokio::test]
async fn names_are_validated() {
    let store = memory_store().await;
    for bad in ["", "a\"b", "x; DROP TABLE y", "1st", "main.t"] {
        assert!(matches!(
            store.clone().with_table_name(bad),
            Err(Error::Config(_))
        ));
    }
}

#[tokio::test]
async fn delete_expired_removes_exactly_the_expired_rows() {
    let (clock, shared) = manual_clock();
    let store = memory_store().await.with_clock(shared);
    delete_expired_is_exact(&store, &clock, || store.delete_expired()).await;
    assert_eq!(count(&store).await, 0);
}

#[tokio::test]
async fn cleanup_query_uses_the_expiry_index() {
    let store = memory_store().await;
    let explain = format!("EXPLAIN QUERY PLAN {}", store.delete_expired_sql());
    let plan: Vec<String> = sqlx::query(&explain)
        .bind(0i64)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("detail"))
        .collect();
    let plan = plan.join("\n");
    let index = format!("{}_expires_idx", store.table_name());
    assert!(
        plan.contains(&index),
        "cleanup does not use {index}:\n{plan}"
    );
}

#[tokio::test]
async fn cleanup_task_deletes_and_ends_with_the_store() {
    let store = memory_store().await;
    let pool = store.pool().clone();
    let table = store.table_name().to_owned();
    let task = store.spawn_cleanup(Duration::from_millis(50));
    expired_records(&store, 3).await;
    let live = new_id();
    store
        .set(&live, &sample_record(now_ms() + Duration::from_secs(600)))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "expired rows deleted", || async {
        count(&store).await == 1
    })
    .await;
    assert!(store.get(&live).await.unwrap().is_some());
    // The counter moves right after the statement returns.
    eventually(Duration::from_secs(10), "deletions counted", || async {
        task.rows_deleted() == 3
    })
    .await;
    assert_eq!(task.rounds_failed(), 0);

    // A failing round (table gone) is counted and the task keeps running.
    drop_table(&store).await;
    eventually(Duration::from_secs(10), "a failed round", || async {
        task.rounds_failed() > 0
    })
    .await;
    assert!(!task.is_finished());
    store.migrate().await.unwrap();
    let ok = task.rounds_succeeded();
    eventually(Duration::from_secs(10), "recovery", || async {
        task.rounds_succeeded() > ok
    })
    .await;

    drop(store);
    task_ends(&task).await;
    let _ = (pool, table);
}

#[tokio::test]
async fn cleanup_task_stops_on_request() {
    let store = memory_store().await;
    let task = store.spawn_cleanup(Duration::from_millis(50));
    task.stop();
    task_ends(&task).await;
    let rounds = task.rounds_succeeded() + task.rounds_failed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(task.rounds_succeeded() + task.rounds_failed(), rounds);
}

#[tokio::test]
async fn a_locked_database_is_unavailable() {
    use session_store_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;

    let db = TempDb::new();
    let store = file_store(&db).await;
    let options = SqliteConnectOptions::from_str(&db.url())
        .unwrap()
        .busy_timeout(Duration::from_millis(100));
    let impatient = SqliteStore::new(
        SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap(),
    )
    .with_table_name(store.table_name())
    .unwrap();
    // Another connection holds the write lock.
    let mut holder = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let err = impatient
        .set(
            &new_id(),
            &sample_record(now_ms() + Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
    drop(holder);
    impatient
        .set(
            &new_id(),
            &sample_record(now_ms() + Duration::from_secs(60)),
        )
        .await
        .unwrap();
    impatient.pool().close().await;
    store.pool().close().await;
}

#[tokio::test]
async fn concurrent_writers_do_not_hit_the_busy_timeout() {
    use futures::StreamExt;
    use session_store_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use std::str::FromStr;

    let db = TempDb::new();
    let store = file_store(&db).await;
    // No busy waiting at all: any two writers meeting inside SQLite would fail at once.
    let options = SqliteConnectOptions::from_str(&db.url())
        .unwrap()
        .journal_mode(session_store_sqlx::sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::ZERO);
    let pool = SqlitePoolOptions::new()
        .min_connections(8)
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let eager = SqliteStore::new(pool)
        .with_table_name(store.table_name())
        .unwrap();
    let record = sample_record(now_ms() + Duration::from_secs(600));
    let results: Vec<_> = futures::stream::iter(0..400)
        .map(|_| {
            let (eager, record) = (&eager, &record);
            async move {
                let id = new_id();
                eager.set(&id, record).await?;
                eager.touch(&id, record.expires).await?;
                eager.get(&id).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in results {
        assert!(result.unwrap().is_some());
    }
    assert_eq!(count(&store).await, 400);
    eager.pool().close().await;
    store.pool().close().await;
}

#[tokio::test]
async fn garbage_rows_are_corrupt() {
    let store = memory_store().await;
    let update = format!(
        "UPDATE \"{}\" SET data = x'00ff' WHERE id = ?1",
        store.table_name()
    );
    garbage_payload_is_corrupt(&store, store.pool(), &update).await;
}

#[tokio::test]
async fn unopenable_file_is_unavailable() {
    let dir = std::env::temp_dir().join(random_table());
    let url = format!("sqlite://{}/sessions.db", dir.display());
    let err = SqliteStore::connect(&url).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

/// The write queue's holder writes on a connection of its own while reads run on the
/// others (a SQLite connection drops its page cache when another one wrote): the rows the
/// writes changed were changed on one connection, which goes back to the pool once the
/// store is quiet. (Two are allowed: on a stalled machine the writer's connection may sit
/// idle long enough to go back, and the next write keeps another.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_run_on_a_connection_of_their_own() {
    use std::sync::Arc;

    let db = TempDb::new();
    let store = Arc::new(file_store(&db).await);
    let record = Arc::new(sample_record(now_ms() + Duration::from_secs(600)));
    let ids: Arc<Vec<SessionId>> = Arc::new((0..8).map(|_| new_id()).collect());
    for id in ids.iter() {
        store.set(id, &record).await.unwrap();
    }
    let (tasks, rounds) = (16, 50);
    let mut busy = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (store, record, ids) = (store.clone(), record.clone(), ids.clone());
        busy.spawn(async move {
            for i in 0..rounds {
                let id = &ids[(t + i) % ids.len()];
                assert!(store.get(id).await.unwrap().is_some());
                if i % 2 == 0 {
                    store.set(id, &record).await.unwrap();
                } else {
                    assert!(store.touch(id, record.expires).await.unwrap());
                }
            }
        });
    }
    while let Some(done) = busy.join_next().await {
        done.unwrap();
    }
    let writes = (ids.len() + tasks * rounds) as i64;

    let pool = store.pool();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool.num_idle() < pool.size() as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "kept connections not back: {} idle of {}",
            pool.num_idle(),
            pool.size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every connection of the pool at once, each asked how many rows it changed.
    let mut conns = Vec::new();
    for _ in 0..pool.size() {
        conns.push(pool.acquire().await.unwrap());
    }
    let mut changed = Vec::new();
    for conn in &mut conns {
        let n: i64 = sqlx::query_scalar("SELECT total_changes()")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        changed.push(n);
    }
    assert_eq!(changed.iter().sum::<i64>(), writes, "{changed:?}");
    let writers = changed.iter().filter(|n| **n > 0).count();
    assert!(
        writers <= 2,
        "writes spread over {writers} connections: {changed:?}"
    );
    drop(conns);
    drop_table(&store).await;
}
