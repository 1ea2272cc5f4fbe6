//! `MySqlStore` against a real MySQL/MariaDB (`MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`). Fails when the server is unreachable.
#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::*;
use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::time::{PrimitiveDateTime, UtcOffset};
use session_store::{Capabilities, Error, Record, SessionId, SessionStore};
use session_store_sqlx::MySqlStore;
use session_store_sqlx::sqlx::mysql::MySqlPoolOptions;
use session_store_sqlx::sqlx::{self, Row};

fn url() -> String {
    env_url("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

async fn store() -> MySqlStore {
    let store = MySqlStore::connect(&url())
        .await
        .expect("MySQL/MariaDB unreachable: set MYSQL_URL")
        .with_table_name(&random_table())
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrate is idempotent");
    store
}

async fn count(store: &MySqlStore) -> i64 {
    scalar(
        store.pool(),
        &format!("SELECT count(*) FROM `{}`", store.table_name()),
    )
    .await
}

async fn drop_table(store: &MySqlStore) {
    execute(
        store.pool(),
        &format!("DROP TABLE `{}`", store.table_name()),
    )
    .await;
}

#[tokio::test]
async fn conformance() {
    let store = store().await;
    run(&store, &SuiteOptions::new(Capabilities::ALL)).await;
    let other = MySqlStore::connect(&url())
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
    assert_eq!(count(&store).await, 0, "suite left rows behind");
    drop_table(&store).await;
}

#[tokio::test]
async fn schema_has_the_required_columns_and_index() {
    let store = store().await;
    let sql = format!("SHOW CREATE TABLE `{}`", store.table_name());
    let ddl: String = sqlx::query(&sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(1);
    let ddl = ddl.to_lowercase();
    for part in [
        "`id` varbinary(256) not null",
        "`data` longblob not null",
        "`expires` datetime(6) not null",
        "`owner` varbinary(256) default null",
        "primary key (`id`)",
        "_expires_idx` (`expires`)",
        "_owner_idx` (`owner`)",
    ] {
        assert!(ddl.contains(part), "missing {part:?} in\n{ddl}");
    }
    // MariaDB shows `bigint(20) ... default 0`, MySQL 8 `bigint ... default '0'`.
    let version = ddl
        .lines()
        .find(|l| l.contains("`version` bigint"))
        .expect(&ddl);
    assert!(version.contains("not null default"), "{version}");
    drop_table(&store).await;
}

#[tokio::test]
async fn hostile_ids() {
    let store = store().await;
    hostile_ids_are_bound(&store).await;
    nul_id(&store, true).await;
    nul_owner(&store, true).await;
    assert_eq!(count(&store).await, 0);
    drop_table(&store).await;
}

/// `t` as a `DATETIME(6)` value in UTC.
fn utc(t: session_store::time::OffsetDateTime) -> PrimitiveDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    PrimitiveDateTime::new(t.date(), t.time())
}

/// The table as the previous release created it, without `owner`, and one session written
/// as that release wrote it.
async fn previous_release_table(store: &MySqlStore) -> (SessionId, Record) {
    let table = store.table_name();
    execute(
        store.pool(),
        &format!(
            "CREATE TABLE IF NOT EXISTS `{table}` (id VARBINARY(256) NOT NULL PRIMARY KEY, \
             data LONGBLOB NOT NULL, expires DATETIME(6) NOT NULL, \
             version BIGINT NOT NULL DEFAULT 0, INDEX `{table}_expires_idx` (expires))"
        ),
    )
    .await;
    let id = new_id();
    let mut record = sample_record(now_ms() + Duration::from_secs(600));
    record.version = 3;
    let sql = format!("INSERT INTO `{table}` (id, data, expires, version) VALUES (?, ?, ?, ?)");
    sqlx::query(&sql)
        .bind(id.as_str())
        .bind(record.encode_payload())
        .bind(utc(record.expires))
        .bind(3i64)
        .execute(store.pool())
        .await
        .unwrap();
    (id, record)
}

#[tokio::test]
async fn migrate_adds_owners_to_a_table_of_the_previous_release() {
    let store = MySqlStore::connect(&url())
        .await
        .unwrap()
        .with_table_name(&random_table())
        .unwrap();
    let (old, record) = previous_release_table(&store).await;
    // Several processes starting at once (DDL is not transactional here: the loser of
    // each race finds the change made), then a restart.
    for result in futures::future::join_all((0..4).map(|_| store.migrate())).await {
        result.unwrap();
    }
    store.migrate().await.unwrap();
    let sql = format!("SHOW CREATE TABLE `{}`", store.table_name());
    let ddl: String = sqlx::query(&sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(1);
    let ddl = ddl.to_lowercase();
    for part in [
        "`owner` varbinary(256) default null",
        "_owner_idx` (`owner`)",
    ] {
        assert!(ddl.contains(part), "missing {part:?} in\n{ddl}");
    }
    assert_eq!(count(&store).await, 1, "the old session was kept");
    old_session_gets_an_owner(&store, &old, &record).await;
    drop_table(&store).await;
}

#[tokio::test]
async fn listing_an_owner_is_one_index_lookup() {
    let store = store().await;
    let table = store.table_name().to_owned();
    StatementCounter::prepare();
    // Sessions of 2,000 other owners, five each, written in one statement (numbers from a
    // cross join of digits: MySQL 8 caps recursive CTEs at 1,000 rows by default).
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let fill = format!(
        "INSERT INTO `{table}` (id, data, expires, version, owner) \
         SELECT CONCAT('other-', n), ?, ?, 0, CONCAT('other-owner-', n % 2000) FROM \
         (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d AS n \
         FROM {digits} a, {digits} b, {digits} c, {digits} e) g"
    );
    sqlx::query(&fill)
        .bind(sample_record(now_ms()).encode_payload())
        .bind(utc(now_ms() + Duration::from_secs(600)))
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(count(&store).await, OTHER_OWNERS_SESSIONS as i64);
    let owner = test_owner();
    owned_is_exact_and_one_statement(&store, &table, &owner).await;

    // The plan, with statistics as InnoDB gathers them in the background.
    sqlx::query(&format!("ANALYZE TABLE `{table}`"))
        .fetch_all(store.pool())
        .await
        .unwrap();
    let sql = store.owned_sql().expect("MySQL lists owners");
    let rows = sqlx::query(&format!("EXPLAIN {sql}"))
        .bind(&owner)
        .bind(utc(now_ms()))
        .fetch_all(store.pool())
        .await
        .unwrap();
    let index = format!("{table}_owner_idx");
    let plan: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|row| {
            let access: String = row.try_get_unchecked("type").unwrap();
            let key: Option<String> = row.try_get_unchecked("key").unwrap();
            (access, key)
        })
        .collect();
    assert_eq!(plan.len(), 1, "{plan:?}");
    let (access, key) = &plan[0];
    assert_eq!(key.as_deref(), Some(index.as_str()), "{plan:?}");
    assert!(
        matches!(access.as_str(), "ref" | "range"),
        "the listing is no index lookup: {plan:?}"
    );
    drop_table(&store).await;
}

#[tokio::test]
async fn delete_expired_removes_exactly_the_expired_rows() {
    let (clock, shared) = manual_clock();
    let store = store().await.with_clock(shared);
    delete_expired_is_exact(&store, &clock, || store.delete_expired()).await;
    assert_eq!(count(&store).await, 0);
    drop_table(&store).await;
}

#[tokio::test]
async fn expiry_is_utc_whatever_the_session_time_zone() {
    let table = random_table();
    let pool = MySqlPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET time_zone = '+09:00'")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect(&url())
        .await
        .unwrap();
    let store = MySqlStore::new(pool).with_table_name(&table).unwrap();
    store.migrate().await.unwrap();
    let id = new_id();
    let expires = now_ms() + Duration::from_secs(90);
    store.set(&id, &sample_record(expires)).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().expires, expires);
    let sql = format!("SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6), expires) FROM `{table}`");
    let ahead: i64 = sqlx::query(&sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(
        (80..=100).contains(&ahead),
        "stored expiry is {ahead} s ahead of UTC now"
    );
    drop_table(&store).await;
}

#[tokio::test]
async fn cleanup_task_deletes_and_ends_with_the_store() {
    let store = store().await;
    let owner = same_table(&store);
    let task = store.spawn_cleanup(Duration::from_millis(100));
    expired_records(&owner, 3).await;
    eventually(Duration::from_secs(20), "expired rows deleted", || async {
        count(&owner).await == 0
    })
    .await;
    // The counter moves right after the statement returns.
    eventually(Duration::from_secs(10), "deletions counted", || async {
        task.rows_deleted() == 3
    })
    .await;
    drop(store);
    task_ends(&task).await;
    drop_table(&owner).await;
}

#[tokio::test]
async fn names_are_validated() {
    let store = MySqlStore::new(MySqlPoolOptions::new().connect_lazy(&url()).unwrap());
    for bad in ["", "a`b", "x; DROP TABLE y", "1st", "db.t"] {
        assert!(matches!(
            store.clone().with_table_name(bad),
            Err(Error::Config(_))
        ));
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let pool = MySqlPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("mysql://root@127.0.0.1:1/test")
        .unwrap();
    let err = MySqlStore::new(pool).get(&new_id()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    // `connect` names the address and the reason, not only the pool's timeout.
    let err = MySqlStore::connect("mysql://root@127.0.0.1:1/test")
        .await
        .unwrap_err();
    // The pool's timeout is replaced by what happened, and where.
    assert_refused_at(&err, "127.0.0.1:1");
}

#[tokio::test]
async fn garbage_rows_are_corrupt() {
    let store = store().await;
    let update = format!(
        "UPDATE `{}` SET data = x'00ff' WHERE id = ?",
        store.table_name()
    );
    garbage_payload_is_corrupt(&store, store.pool(), &update).await;
    drop_table(&store).await;
}
