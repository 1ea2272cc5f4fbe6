//! `PostgresStore` in connect-pg-simple's layout (`PostgresLayout::ConnectPgSimple`): the
//! store contract with JSON records, the table exactly as connect-pg-simple creates it, and
//! rows written the way connect-pg-simple writes them. Against a real PostgreSQL
//! (`POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! The shared conformance suite writes MessagePack records with versions, which this layout
//! cannot hold; the suite's checks that do not depend on them run as is, the others are
//! restated with JSON records.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use session_store::testing::{self, SuiteOptions, now_ms};
use session_store::time::OffsetDateTime;
use session_store::{
    Capabilities, Codec, CookieOptions, Error, IdGenerator, Record, SessionId, SessionStore,
};
use session_store_sqlx::sqlx::postgres::{PgPool, PgPoolOptions};
use session_store_sqlx::sqlx::{self, Row};
use session_store_sqlx::{PostgresLayout, PostgresStore};

const CAPS: Capabilities = Capabilities::ALL
    .with_compare_and_set(false)
    .with_owners(false);

fn url() -> String {
    env_url("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
}

async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&url())
        .await
        .expect("PostgreSQL unreachable: set POSTGRES_URL")
}

fn layout() -> PostgresLayout {
    PostgresLayout::connect_pg_simple(CookieOptions {
        max_age: Some(Duration::from_secs(3600)),
        ..CookieOptions::default()
    })
}

/// A migrated store in a fresh connect-pg-simple table.
async fn store() -> PostgresStore {
    let store = PostgresStore::new(pool().await)
        .with_layout(layout())
        .with_table_name(&random_table())
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn drop_table(store: &PostgresStore) {
    let sql = format!("DROP TABLE \"{}\"", store.table_name());
    sqlx::query(&sql).execute(store.pool()).await.unwrap();
}

fn express_id() -> SessionId {
    IdGenerator::express_compatible().generate()
}

fn json_record(expires: OffsetDateTime) -> Record {
    let mut record = Record::new(expires, Codec::Json);
    record
        .data
        .insert("user".into(), Codec::Json.encode("alice").unwrap());
    record
        .data
        .insert("visits".into(), Codec::Json.encode(&7u32).unwrap());
    record
}

/// The raw `sess` text and `expire` of a row.
async fn raw_row(store: &PostgresStore, id: &SessionId) -> Option<(String, OffsetDateTime)> {
    let sql = format!(
        "SELECT sess::text, expire FROM \"{}\" WHERE sid = $1",
        store.table_name()
    );
    sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(store.pool())
        .await
        .unwrap()
        .map(|row| {
            let expire: session_store::time::PrimitiveDateTime = row.get(1);
            (row.get(0), expire.assume_utc())
        })
}

#[tokio::test]
async fn keeps_the_contract_with_json_records() {
    let store = store().await;
    assert_eq!(store.capabilities(), CAPS);
    let options = SuiteOptions::new(CAPS);
    testing::capabilities_are_honest(&store, &options).await;
    testing::missing_id(&store).await;
    testing::destroy_missing(&store).await;
    testing::expired_never_returned(&store).await;

    // Round trip: data, codec, expiry to the ms; no version.
    let id = express_id();
    let mut record = json_record(now_ms() + Duration::from_secs(3600));
    record.version = 41;
    store.set(&id, &record).await.unwrap();
    let got = store.get(&id).await.unwrap().expect("record after set");
    assert_eq!(got.data, record.data);
    assert_eq!(got.codec, Codec::Json);
    assert_eq!(got.expires, record.expires);
    assert_eq!(got.version, 0, "this layout keeps no version");

    // Overwrite to an earlier expiry.
    let mut second = Record::new(now_ms() + Duration::from_secs(600), Codec::Json);
    second.data.insert("only".into(), b"true".to_vec());
    store.set(&id, &second).await.unwrap();
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (got.data, got.expires),
        (second.data.clone(), second.expires)
    );

    // touch moves `expire` only: `sess` is byte for byte the same.
    let (sess_before, _) = raw_row(&store, &id).await.unwrap();
    for later in [Duration::from_secs(7200), Duration::from_secs(1800)] {
        let new_expiry = now_ms() + later;
        assert!(store.touch(&id, new_expiry).await.unwrap());
        assert_eq!(store.get(&id).await.unwrap().unwrap().expires, new_expiry);
        let (sess, expire) = raw_row(&store, &id).await.unwrap();
        assert_eq!(sess, sess_before, "touch rewrote sess");
        assert_eq!(expire, new_expiry);
    }

    // destroy, touch of missing / expired ids.
    let other = express_id();
    store.set(&other, &record).await.unwrap();
    store.destroy(&id).await.unwrap();
    assert!(store.get(&id).await.unwrap().is_none());
    assert!(store.get(&other).await.unwrap().is_some());
    store.destroy(&other).await.unwrap();
    let later = now_ms() + Duration::from_secs(600);
    assert!(!store.touch(&id, later).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());
    let expired = express_id();
    store
        .set(&expired, &json_record(now_ms() - Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(!store.touch(&expired, later).await.unwrap());
    assert!(store.get(&expired).await.unwrap().is_none());

    // create never overwrites a live row; an expired row counts as absent.
    let first = json_record(later);
    let mut intruder = first.clone();
    intruder.data.insert("intruder".into(), b"1".to_vec());
    assert!(store.create(&id, &first).await.unwrap());
    assert!(!store.create(&id, &intruder).await.unwrap());
    assert_eq!(store.get(&id).await.unwrap().unwrap().data, first.data);
    assert!(store.create(&expired, &first).await.unwrap());
    store.destroy(&expired).await.unwrap();
    store.destroy(&id).await.unwrap();

    // update never recreates.
    assert!(!store.update(&id, &first).await.unwrap());
    store.set(&id, &first).await.unwrap();
    assert!(store.update(&id, &intruder).await.unwrap());
    assert_eq!(store.get(&id).await.unwrap().unwrap().data, intruder.data);
    store.destroy(&id).await.unwrap();
    assert!(!store.update(&id, &intruder).await.unwrap());
    assert!(store.get(&id).await.unwrap().is_none());

    // compare-and-set is unsupported.
    assert!(matches!(
        store.compare_and_set(&id, &first, 0).await,
        Err(Error::Unsupported { .. })
    ));

    // JSON values of every shape, odd keys, NUL inside strings (fine in `json`).
    let mut rich = Record::new(later, Codec::Json);
    let values = json!({
        "max": u64::MAX, "min": i64::MIN, "float": 1.5,
        "text": "naïve café — 日本語 — \u{0} \"quoted\" 'single' \\ ; -- $gt",
        "nested": {"ключ 🔑": [true, null, false]}, "empty": "",
    });
    rich.data
        .insert("values".into(), Codec::Json.encode(&values).unwrap());
    for key in ["", "a.b", "'; DROP TABLE x; --", "ключ"] {
        rich.data.insert(key.into(), b"1".to_vec());
    }
    store.set(&id, &rich).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().data, rich.data);
    store.destroy(&id).await.unwrap();

    // What the layout cannot express fails to save and writes nothing.
    let mut binary = Record::new(later, Codec::MessagePack);
    binary
        .data
        .insert("n".into(), Codec::MessagePack.encode(&1u8).unwrap());
    let mut reserved = Record::new(later, Codec::Json);
    reserved.data.insert("cookie".into(), b"1".to_vec());
    for bad in [&binary, &reserved] {
        assert!(matches!(
            store.set(&id, bad).await,
            Err(Error::Serialization { .. })
        ));
        assert!(matches!(
            store.create(&id, bad).await,
            Err(Error::Serialization { .. })
        ));
        assert!(store.get(&id).await.unwrap().is_none());
    }

    // Concurrent sessions do not mix up.
    let store_ref = &store;
    let tasks = (0..16u32).map(|task| async move {
        let id = express_id();
        for round in 0..3u32 {
            let mut record = Record::new(now_ms() + Duration::from_secs(600), Codec::Json);
            record
                .data
                .insert("task".into(), Codec::Json.encode(&(task, round)).unwrap());
            store_ref.set(&id, &record).await.unwrap();
            let got = store_ref.get(&id).await.unwrap().unwrap();
            let seen: (u32, u32) = Codec::Json.decode(&got.data["task"]).unwrap();
            assert_eq!(seen, (task, round));
        }
        store_ref.destroy(&id).await.unwrap();
    });
    futures::future::join_all(tasks).await;
    drop_table(&store).await;
}

#[tokio::test]
async fn the_table_is_connect_pg_simple_own() {
    let store = store().await;
    store.migrate().await.expect("migrate is idempotent");
    let columns: Vec<(String, String, String)> = sqlx::query(
        "SELECT column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
    )
    .bind(store.table_name())
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let expected = [
        ("sid", "character varying", "NO"),
        ("sess", "json", "NO"),
        ("expire", "timestamp without time zone", "NO"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(columns, expected);
    let precision: Option<i32> = sqlx::query(
        "SELECT datetime_precision FROM information_schema.columns \
         WHERE table_name = $1 AND column_name = 'expire'",
    )
    .bind(store.table_name())
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(precision, Some(6));
    let indexes: Vec<String> = sqlx::query(
        "SELECT indexdef::text FROM pg_indexes WHERE tablename = $1 ORDER BY indexname",
    )
    .bind(store.table_name())
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        indexes.iter().any(|i| i.contains("(expire)")),
        "no index on expire: {indexes:?}"
    );
    assert!(
        indexes
            .iter()
            .any(|i| i.contains("UNIQUE") && i.contains("(sid)")),
        "sid is not the primary key: {indexes:?}"
    );

    // Default table names follow the layout; an explicit name wins in either order.
    let lazy = PostgresStore::new(PgPoolOptions::new().connect_lazy(&url()).unwrap());
    assert_eq!(lazy.table_name(), "sessions");
    assert_eq!(lazy.clone().with_layout(layout()).table_name(), "session");
    assert_eq!(
        lazy.clone()
            .with_table_name("t1")
            .unwrap()
            .with_layout(layout())
            .table_name(),
        "t1"
    );
    let debug = format!("{:?}", lazy.with_layout(layout()));
    assert!(debug.contains("connect-pg-simple"), "{debug}");
    drop_table(&store).await;
}

#[tokio::test]
async fn reads_and_rewrites_rows_written_by_connect_pg_simple() {
    let store = store().await;
    let id = express_id();
    // What connect-pg-simple 10 runs for `set`: the expiry in whole seconds through
    // `to_timestamp`, the session object as JSON.
    let node = r#"{"cookie":{"originalMaxAge":60000,"expires":"2026-11-26T19:58:41.066Z","httpOnly":true,"path":"/","priority":"high"},"views":2,"flash":{}}"#;
    let expire_s = OffsetDateTime::now_utc().unix_timestamp() + 60;
    let insert = format!(
        "INSERT INTO \"{}\" (sess, expire, sid) SELECT $1::json, to_timestamp($2), $3 \
         ON CONFLICT (sid) DO UPDATE SET sess=$1::json, expire=to_timestamp($2) RETURNING sid",
        store.table_name()
    );
    sqlx::query(&insert)
        .bind(node)
        .bind(expire_s as f64)
        .bind(id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    let record = store.get(&id).await.unwrap().expect("Node's session");
    assert_eq!(
        record.expires.unix_timestamp(),
        expire_s,
        "expiry from `expire`"
    );
    assert_eq!(Codec::Json.decode::<u32>(&record.data["views"]).unwrap(), 2);

    let mut changed = record.clone();
    changed.data.insert("views".into(), b"3".to_vec());
    assert!(store.update(&id, &changed).await.unwrap());
    let (sess, _) = raw_row(&store, &id).await.unwrap();
    let stored: serde_json::Value = serde_json::from_str(&sess).unwrap();
    assert_eq!(stored["views"], 3);
    assert_eq!(stored["flash"], json!({}));
    assert_eq!(stored["cookie"]["priority"], "high");

    // A row connect-pg-simple would consider expired (`expire` in the past) is gone here too.
    sqlx::query(&insert)
        .bind(node)
        .bind((OffsetDateTime::now_utc().unix_timestamp() - 5) as f64)
        .bind(id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(store.get(&id).await.unwrap().is_none());

    // Garbage JSON in `sess` (valid `json`, not an object) is corrupt, not a panic.
    let garbage = format!(
        "UPDATE \"{}\" SET sess = '[1,2]'::json, expire = now() + interval '1 hour' \
         WHERE sid = $1",
        store.table_name()
    );
    sqlx::query(&garbage)
        .bind(id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(matches!(store.get(&id).await, Err(Error::Corrupt { .. })));
    drop_table(&store).await;
}

#[tokio::test]
async fn expiry_filters_bind_the_app_clock() {
    let (clock, shared) = manual_clock();
    let store = PostgresStore::new(pool().await)
        .with_layout(layout())
        .with_table_name(&random_table())
        .unwrap()
        .with_clock(Arc::clone(&shared));
    store.migrate().await.unwrap();
    delete_expired_is_exact_json(&store, &clock).await;
    drop_table(&store).await;
}

/// `get` and `delete_expired` use the store's clock, not the server's: rows expiring at
/// or before the clock are hidden and deleted, the others kept.
async fn delete_expired_is_exact_json(store: &PostgresStore, clock: &session_store::ManualClock) {
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    clock.set(now);
    let ms = Duration::from_millis(1);
    let expired = [now - Duration::from_secs(86_400), now - ms, now];
    let live = [now + ms, now + Duration::from_secs(86_400)];
    let mut gone = Vec::new();
    for expires in expired {
        let id = express_id();
        store.set(&id, &json_record(expires)).await.unwrap();
        assert!(
            store.get(&id).await.unwrap().is_none(),
            "expired row returned"
        );
        gone.push(id);
    }
    let mut kept = Vec::new();
    for expires in live {
        let id = express_id();
        store.set(&id, &json_record(expires)).await.unwrap();
        assert!(store.get(&id).await.unwrap().is_some(), "live row hidden");
        kept.push(id);
    }
    assert_eq!(store.delete_expired().await.unwrap(), expired.len() as u64);
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    clock.set(now - Duration::from_secs(2 * 86_400));
    for id in &gone {
        assert!(store.get(id).await.unwrap().is_none(), "expired row kept");
    }
    for id in &kept {
        assert!(store.get(id).await.unwrap().is_some(), "live row deleted");
    }
}

/// The shared conformance suite, in its express-session mode (JSON records, no version).
#[tokio::test]
async fn passes_the_conformance_suite_in_express_mode() {
    let store = store().await;
    testing::run(&store, &SuiteOptions::new(CAPS).express_layout()).await;
    drop_table(&store).await;
}
