//! A dump of the backend holds no session id a cookie carries: the manager hands every
//! store a digest of the id (`SessionManagerBuilder::hashed_ids`, on by default). Each test
//! writes sessions through a manager (data, owner, a regeneration with its tombstone), then
//! reads everything the backend holds for its own prefix, table or collection with the
//! driver, and searches it for the ids, as text and as hex.
//!
//! Services: `REDIS_URL`, `POSTGRES_URL`, `MYSQL_URL`, `MONGODB_URL` (loopback defaults;
//! `scripts/mongo.sh start`).

use std::sync::Arc;

use session_reliability::unique;
use session_store::{SessionId, SessionManager, SessionStore};
use session_store_mongodb::MongoStore;
use session_store_mongodb::mongodb::bson::{Bson, Document, doc};
use session_store_redis::{RedisStore, redis};
use session_store_sqlx::sqlx::{self, Row};
use session_store_sqlx::{MySqlStore, PostgresStore, SqliteStore};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sessions written through a manager over `store`: the ids their cookies carried, and the
/// key of the one still stored.
async fn write_sessions(store: Arc<dyn SessionStore>) -> (Vec<SessionId>, SessionId) {
    let owners = store.capabilities().owners;
    let manager = SessionManager::builder_arc(store).build().unwrap();
    let mut ids = Vec::new();
    let session = manager.new_session();
    session.insert("user", "ann").unwrap();
    session.set_label("a browser");
    if owners {
        session.set_owner("ann").unwrap();
    }
    session.commit().await.unwrap();
    ids.push(session.id());
    session.regenerate();
    session.commit().await.unwrap();
    ids.push(session.id());
    let other = manager.new_session();
    other.insert("n", 1).unwrap();
    other.commit().await.unwrap();
    ids.push(other.id());
    (ids, manager.store_key(&session.id()))
}

/// Fails if `dump` holds any of `ids` (as text or hex); checks it holds `key`, so the dump
/// read the right place.
fn assert_no_ids(dump: &str, ids: &[SessionId], key: &SessionId) {
    assert!(
        dump.contains(key.as_str()) || dump.contains(&hex(key.as_str().as_bytes())),
        "the dump does not hold the session's key: wrong place read?"
    );
    for id in ids {
        assert!(!dump.contains(id.as_str()), "an id in the backend");
        assert!(
            !dump.contains(&hex(id.as_str().as_bytes())),
            "an id (hex) in the backend"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_id() {
    let prefix = unique("atrest");
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let store = RedisStore::from_url(&url)
        .unwrap()
        .with_prefix(prefix.clone());
    store.connect().await.expect("Redis must run at REDIS_URL");
    let (ids, key) = write_sessions(Arc::new(store)).await;
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut dump = String::new();
    for k in &keys {
        dump.push_str(k);
        let kind: String = redis::cmd("TYPE")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(k)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
            ],
            "zset" => redis::cmd("ZRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "hash" => redis::cmd("HGETALL")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(k)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            other => panic!("a {other} under the store's prefix"),
        };
        for value in values {
            dump.push_str(&String::from_utf8_lossy(&value));
            dump.push_str(&hex(&value));
        }
        let _: () = redis::cmd("DEL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_no_ids(&dump, &ids, &key);
}

/// Every row of `table` as text: each column's text, and the hex of the `data` bytes.
async fn sql_dump<'c, DB>(pool: &sqlx::Pool<DB>, select: &str) -> String
where
    DB: sqlx::Database,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> &'r str: sqlx::ColumnIndex<DB::Row>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
{
    let rows = sqlx::query(select).fetch_all(pool).await.unwrap();
    let mut dump = String::new();
    for row in rows {
        dump.push_str(&row.get::<String, _>("t"));
        dump.push('\n');
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_no_id() {
    let table = unique("atrest");
    let url = env_or("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    let store = PostgresStore::connect(&url)
        .await
        .expect("PostgreSQL at POSTGRES_URL");
    let store = store.with_table_name(&table).unwrap();
    store.migrate().await.unwrap();
    let pool = store.pool().clone();
    let (ids, key) = write_sessions(Arc::new(store)).await;
    // Every column of every row as text (bytea as hex).
    let select = format!("SELECT CAST(s AS TEXT) AS t FROM \"{table}\" s");
    let dump = sql_dump(&pool, &select).await;
    sqlx::query(&format!("DROP TABLE \"{table}\""))
        .execute(&pool)
        .await
        .unwrap();
    assert_no_ids(&dump, &ids, &key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_holds_no_id() {
    let table = unique("atrest");
    let url = env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let store = MySqlStore::connect(&url)
        .await
        .expect("MariaDB at MYSQL_URL");
    let store = store.with_table_name(&table).unwrap();
    store.migrate().await.unwrap();
    let pool = store.pool().clone();
    let (ids, key) = write_sessions(Arc::new(store)).await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(&table)
    .fetch_all(&pool)
    .await
    .unwrap();
    let every = columns
        .iter()
        .map(|c| format!("IFNULL(CAST(`{c}` AS CHAR), ''), IFNULL(HEX(`{c}`), '')"))
        .collect::<Vec<_>>()
        .join(", ");
    let dump = sql_dump(
        &pool,
        &format!("SELECT CONCAT_WS('|', {every}) AS t FROM `{table}`"),
    )
    .await;
    sqlx::query(&format!("DROP TABLE `{table}`"))
        .execute(&pool)
        .await
        .unwrap();
    assert_no_ids(&dump, &ids, &key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holds_no_id() {
    let dir = std::env::temp_dir().join(unique("atrest"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessions.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let pool = store.pool().clone();
    let (ids, key) = write_sessions(Arc::new(store)).await;
    pool.close().await;
    // Everything in the write-ahead log into the database file first: the pool's last
    // connection may still be checkpointing as it closes, and a log read half-way through
    // that would miss rows.
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    // The database file itself, and its write-ahead log: every byte SQLite keeps.
    let mut dump = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        // The write-ahead log may be removed as the last connection closes.
        let Ok(bytes) = std::fs::read(entry.unwrap().path()) else {
            continue;
        };
        dump.push_str(&String::from_utf8_lossy(&bytes));
        dump.push_str(&hex(&bytes));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_no_ids(&dump, &ids, &key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_holds_no_id() {
    let url = env_or(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27917/?directConnection=true",
    );
    let collection = unique("atrest");
    let store = MongoStore::connect(&url, "session_store_test", &collection)
        .await
        .expect("MongoDB at MONGODB_URL (scripts/mongo.sh start)");
    let handle = store.collection().clone();
    let (ids, key) = write_sessions(Arc::new(store)).await;
    let mut cursor = handle.find(doc! {}).await.unwrap();
    let mut dump = String::new();
    while cursor.advance().await.unwrap() {
        let document: Document = cursor.deserialize_current().unwrap();
        for (name, value) in &document {
            dump.push_str(name);
            match value {
                Bson::Binary(b) => {
                    dump.push_str(&String::from_utf8_lossy(&b.bytes));
                    dump.push_str(&hex(&b.bytes));
                }
                other => dump.push_str(&other.to_string()),
            }
        }
    }
    handle.drop().await.unwrap();
    assert_no_ids(&dump, &ids, &key);
}
