//! `MySqlStore` against a real MySQL/MariaDB (`MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`). Fails when the server is unreachable.
#![cfg(feature = "mysql")]

mod common;

use std::time::Duration;

use common::*;
use session_store::testing::{SuiteOptions, new_id, now_ms, run, sample_record};
use session_store::{Capabilities, Error, SessionStore};
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
        "primary key (`id`)",
        "_expires_idx` (`expires`)",
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
    assert_eq!(count(&store).await, 0);
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
