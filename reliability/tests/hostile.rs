//! The hostile-cookie corpus and garbage records, through HTTP, against every store.
//!
//! Services (loopback defaults, a missing one fails the test): `REDIS_URL`,
//! `REDIS_CLUSTER_URLS` (`scripts/redis-cluster.sh start`), `MONGODB_URL`
//! (`scripts/mongo.sh start`). Run with `--nocapture` to see the `FIGURES` lines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use session_reliability::hostile::{self, Backend};
use session_reliability::unique;
use session_store::MemoryStore;
use session_store_mongodb::MongoStore;
use session_store_mongodb::mongodb::bson::spec::BinarySubtype;
use session_store_mongodb::mongodb::bson::{Binary, DateTime, Document, doc};
use session_store_mongodb::mongodb::{Client, Collection};
use session_store_redis::RedisStore;
use session_store_redis::redis;

type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn redis_url() -> String {
    env_or("REDIS_URL", "redis://127.0.0.1:6379")
}

fn cluster_urls() -> Vec<String> {
    let default = (7000..7006)
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    env_or("REDIS_CLUSTER_URLS", &default)
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

fn mongodb_url() -> String {
    env_or(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27917/?directConnection=true",
    )
}

fn assert_clean(outcome: &hostile::Outcome) {
    println!("{}", outcome.figures());
    assert!(outcome.cases >= 40, "corpus of {} cases", outcome.cases);
    assert!(
        outcome.violations.is_empty(),
        "{} violation(s):\n{}",
        outcome.violations.len(),
        outcome.violations.join("\n")
    );
    assert!(outcome.fresh > 0);
}

// ---- memory ----

struct MemoryBackend(MemoryStore);

impl Backend for MemoryBackend {
    fn count(&self) -> Fut<'_, usize> {
        Box::pin(async move { self.0.len() })
    }
    fn garbage_kinds(&self) -> Vec<&'static str> {
        // Holds records, not bytes: nothing can be garbled.
        Vec::new()
    }
    fn write_garbage<'a>(&'a self, _: &'a str, _: usize) -> Fut<'a, ()> {
        Box::pin(async {})
    }
    fn raw<'a>(&'a self, _: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async { None })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_survives_the_hostile_corpus() {
    let store = MemoryStore::new();
    let backend = MemoryBackend(store.clone());
    let outcome = hostile::run(Arc::new(store), &backend).await;
    assert_clean(&outcome);
}

// ---- redis (single node and cluster) ----

/// Garbage values written with `SET`, and keys of other Redis types.
const REDIS_GARBAGE: [&str; 10] = [
    "empty string",
    "random bytes",
    "version only",
    "version + wrong magic",
    "version + truncated envelope",
    "version + unknown payload format",
    "express-session JSON",
    "a list (WRONGTYPE)",
    "a hash (WRONGTYPE)",
    "256 KiB of noise",
];

fn redis_garbage(kind: usize) -> Option<Vec<u8>> {
    let version = 7u64.to_be_bytes().to_vec();
    Some(match kind {
        0 => Vec::new(),
        1 => vec![0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x80],
        2 => version,
        3 => [version, vec![0x00, 1, 0]].concat(),
        4 => [version, vec![0xA5, 1, 0, 0x83, 0xa1]].concat(),
        5 => [version, vec![0xA5, 99, 0, 0x80, 0x80]].concat(),
        6 => {
            br#"{"cookie":{"originalMaxAge":60000,"httpOnly":true,"path":"/"},"views":2}"#.to_vec()
        }
        9 => (0..256 * 1024)
            .map(|i: usize| (i * 31 % 251) as u8)
            .collect(),
        _ => return None,
    })
}

enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

struct RedisBackend {
    prefix: String,
    conn: RedisConn,
    /// For a cluster: every master's connection (keys are counted on masters only).
    masters: Vec<redis::aio::MultiplexedConnection>,
}

impl RedisBackend {
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        match &self.conn {
            RedisConn::Single(c) => cmd.query_async(&mut c.clone()).await,
            RedisConn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
        .expect("redis command")
    }

    async fn count_on(&self, conn: &redis::aio::MultiplexedConnection) -> usize {
        let mut conn = conn.clone();
        let mut cursor = 0u64;
        let mut total = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            total += keys.len();
            if next == 0 {
                return total;
            }
            cursor = next;
        }
    }
}

impl Backend for RedisBackend {
    fn count(&self) -> Fut<'_, usize> {
        Box::pin(async move {
            match &self.conn {
                RedisConn::Single(c) => self.count_on(c).await,
                _ => {
                    let mut total = 0;
                    for master in &self.masters {
                        total += self.count_on(master).await;
                    }
                    total
                }
            }
        })
    }

    fn garbage_kinds(&self) -> Vec<&'static str> {
        REDIS_GARBAGE.to_vec()
    }

    fn write_garbage<'a>(&'a self, id: &'a str, kind: usize) -> Fut<'a, ()> {
        Box::pin(async move {
            let key = format!("{}{id}", self.prefix);
            match redis_garbage(kind) {
                Some(bytes) => {
                    self.query::<()>(
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(bytes)
                            .arg("PX")
                            .arg(600_000),
                    )
                    .await
                }
                None if kind == 7 => {
                    self.query::<()>(redis::cmd("RPUSH").arg(&key).arg("a").arg("b"))
                        .await;
                    self.query::<()>(redis::cmd("PEXPIRE").arg(&key).arg(600_000))
                        .await;
                }
                None => {
                    self.query::<()>(redis::cmd("HSET").arg(&key).arg("data").arg("x"))
                        .await;
                    self.query::<()>(redis::cmd("PEXPIRE").arg(&key).arg(600_000))
                        .await;
                }
            }
        })
    }

    fn raw<'a>(&'a self, id: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move {
            let key = format!("{}{id}", self.prefix);
            let dump: Option<Vec<u8>> = self.query(redis::cmd("DUMP").arg(&key)).await;
            dump.map(|bytes| format!("{bytes:?}"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_survives_the_hostile_corpus() {
    let prefix = format!("{}:", unique("hostile"));
    let store = RedisStore::from_url(&redis_url())
        .expect("store")
        .with_prefix(prefix.clone());
    store
        .connect()
        .await
        .expect("Redis must run at REDIS_URL (default redis://127.0.0.1:6379)");
    let conn = redis::Client::open(redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let backend = RedisBackend {
        prefix,
        conn: RedisConn::Single(conn),
        masters: Vec::new(),
    };
    let outcome = hostile::run(Arc::new(store), &backend).await;
    assert_clean(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_survives_the_hostile_corpus() {
    let prefix = format!("{}:", unique("hostile"));
    let urls = cluster_urls();
    let store = RedisStore::cluster_from_urls(urls.clone())
        .expect("store")
        .with_prefix(prefix.clone());
    store
        .connect()
        .await
        .expect("a Redis Cluster must run at REDIS_CLUSTER_URLS (scripts/redis-cluster.sh start)");
    let cluster = redis::cluster::ClusterClient::new(urls.clone())
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("connect to the cluster");
    let mut masters = Vec::new();
    for url in &urls {
        let mut node = redis::Client::open(url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a cluster node");
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut node)
            .await
            .expect("ROLE");
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            masters.push(node);
        }
    }
    assert!(!masters.is_empty(), "no master among {urls:?}");
    let backend = RedisBackend {
        prefix,
        conn: RedisConn::Cluster(cluster),
        masters,
    };
    let mut outcome = hostile::run(Arc::new(store), &backend).await;
    outcome.store = "redis-cluster".into();
    assert_clean(&outcome);
}

// ---- mongodb ----

const MONGO_GARBAGE: [&str; 9] = [
    "data is a string",
    "data is three random bytes",
    "version is a string",
    "connect-mongo shape (session JSON string)",
    "version missing",
    "only an expiry",
    "data is an operator document",
    "256 KiB of noise",
    "data holds a valid header and garbage",
];

struct MongoBackend(Collection<Document>);

impl Backend for MongoBackend {
    fn count(&self) -> Fut<'_, usize> {
        Box::pin(async move { self.0.count_documents(doc! {}).await.expect("count") as usize })
    }

    fn garbage_kinds(&self) -> Vec<&'static str> {
        MONGO_GARBAGE.to_vec()
    }

    fn write_garbage<'a>(&'a self, id: &'a str, kind: usize) -> Fut<'a, ()> {
        Box::pin(async move {
            let expires = DateTime::from_millis(DateTime::now().timestamp_millis() + 600_000);
            let bin = |bytes: Vec<u8>| Binary {
                subtype: BinarySubtype::Generic,
                bytes,
            };
            let document = match kind {
                0 => doc! { "_id": id, "data": "text", "v": 1_i64, "expires": expires },
                1 => doc! { "_id": id, "data": bin(vec![1, 2, 3]), "v": 1_i64, "expires": expires },
                2 => {
                    doc! { "_id": id, "data": bin(vec![0xA5, 1, 0, 0x80, 0x80]), "v": "1", "expires": expires }
                }
                3 => {
                    doc! { "_id": id, "session": "{\"cookie\":{},\"views\":2}", "expires": expires }
                }
                4 => {
                    doc! { "_id": id, "data": bin(vec![0xA5, 1, 0, 0x80, 0x80]), "expires": expires }
                }
                5 => doc! { "_id": id, "expires": expires },
                6 => doc! { "_id": id, "data": { "$gt": "" }, "v": 1_i64, "expires": expires },
                7 => {
                    doc! { "_id": id, "data": bin((0..256 * 1024).map(|i: usize| (i * 31 % 251) as u8).collect()), "v": 1_i64, "expires": expires }
                }
                _ => {
                    doc! { "_id": id, "data": bin(vec![0xA5, 1, 0, 0x81, 0xc1, 0xff]), "v": 1_i64, "expires": expires }
                }
            };
            self.0.insert_one(document).await.expect("insert garbage");
        })
    }

    fn raw<'a>(&'a self, id: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move {
            self.0
                .find_one(doc! { "_id": id })
                .await
                .expect("find")
                .map(|d| format!("{d:?}"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_survives_the_hostile_corpus() {
    let name = unique("hostile");
    let store = MongoStore::connect(&mongodb_url(), "reliability", &name)
        .await
        .expect("a MongoDB-compatible server must run at MONGODB_URL (scripts/mongo.sh start)");
    let client = Client::with_uri_str(mongodb_url()).await.expect("client");
    let collection = client.database("reliability").collection::<Document>(&name);
    let backend = MongoBackend(collection.clone());
    let outcome = hostile::run(Arc::new(store), &backend).await;
    let _ = collection.drop().await;
    assert_clean(&outcome);
}

// ---- SQL (Postgres, MySQL/MariaDB, SQLite) ----

use session_store::time::{Duration as TimeDuration, OffsetDateTime, PrimitiveDateTime};
use session_store_sqlx::sqlx;
use session_store_sqlx::{MySqlStore, PostgresStore, SqliteStore};

fn postgres_url() -> String {
    env_or("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
}

fn mysql_url() -> String {
    env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

const SQL_GARBAGE: [&str; 10] = [
    "empty data",
    "random bytes",
    "wrong magic",
    "truncated envelope",
    "unknown payload format",
    "express-session JSON",
    "256 KiB of noise",
    "extra field that is not JSON",
    "negative version",
    "SQLite only: expiry stored as text",
];

fn sql_garbage(kind: usize) -> Vec<u8> {
    match kind {
        0 => Vec::new(),
        1 => vec![0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x80],
        2 => vec![0x00, 1, 0, 0x80, 0x80],
        3 => vec![0xA5, 1, 0, 0x83, 0xa1],
        4 => vec![0xA5, 99, 0, 0x80, 0x80],
        5 => {
            br#"{"cookie":{"originalMaxAge":60000,"httpOnly":true,"path":"/"},"views":2}"#.to_vec()
        }
        6 => (0..256 * 1024)
            .map(|i: usize| (i * 31 % 251) as u8)
            .collect(),
        7 => vec![
            0xA5, 1, 0, 0x80, 0x81, 0xa1, b'k', 0xc4, 3, b'{', b'{', b'{',
        ],
        // A valid empty envelope: the version column is the garbage.
        _ => vec![0xA5, 1, 0, 0x80, 0x80],
    }
}

enum SqlPool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

struct SqlBackend {
    pool: SqlPool,
    table: String,
}

impl SqlBackend {
    fn quoted(&self) -> String {
        match self.pool {
            SqlPool::MySql(_) => format!("`{}`", self.table),
            _ => format!("\"{}\"", self.table),
        }
    }
}

impl Backend for SqlBackend {
    fn count(&self) -> Fut<'_, usize> {
        Box::pin(async move {
            let sql = &format!("SELECT COUNT(*) FROM {}", self.quoted());
            let n: i64 = match &self.pool {
                SqlPool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
                SqlPool::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await,
                SqlPool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            }
            .expect("count rows");
            n as usize
        })
    }

    fn garbage_kinds(&self) -> Vec<&'static str> {
        match self.pool {
            SqlPool::Sqlite(_) => SQL_GARBAGE.to_vec(),
            _ => SQL_GARBAGE[..9].to_vec(),
        }
    }

    fn write_garbage<'a>(&'a self, id: &'a str, kind: usize) -> Fut<'a, ()> {
        Box::pin(async move {
            let data = sql_garbage(kind);
            let version: i64 = if kind == 8 { -5 } else { 1 };
            let expires = OffsetDateTime::now_utc() + TimeDuration::minutes(10);
            let t = self.quoted();
            match &self.pool {
                SqlPool::Postgres(p) => {
                    let sql = format!(
                        "INSERT INTO {t} (id, data, expires, version) VALUES ($1, $2, $3, $4)"
                    );
                    sqlx::query(&sql)
                        .bind(id)
                        .bind(data)
                        .bind(expires)
                        .bind(version)
                        .execute(p)
                        .await
                        .map(drop)
                }
                SqlPool::MySql(p) => {
                    let sql =
                        format!("INSERT INTO {t} (id, data, expires, version) VALUES (?, ?, ?, ?)");
                    sqlx::query(&sql)
                        .bind(id.as_bytes())
                        .bind(data)
                        .bind(PrimitiveDateTime::new(expires.date(), expires.time()))
                        .bind(version)
                        .execute(p)
                        .await
                        .map(drop)
                }
                SqlPool::Sqlite(p) => {
                    let sql =
                        format!("INSERT INTO {t} (id, data, expires, version) VALUES (?, ?, ?, ?)");
                    let query = sqlx::query(&sql).bind(id).bind(data);
                    let millis = (expires.unix_timestamp_nanos() / 1_000_000) as i64;
                    let query = if kind == 9 {
                        query.bind("soon")
                    } else {
                        query.bind(millis)
                    };
                    query.bind(version).execute(p).await.map(drop)
                }
            }
            .expect("insert garbage");
        })
    }

    fn raw<'a>(&'a self, id: &'a str) -> Fut<'a, Option<String>> {
        Box::pin(async move {
            let t = self.quoted();
            match &self.pool {
                SqlPool::Postgres(p) => {
                    sqlx::query_scalar(&format!(
                        "SELECT encode(data, 'hex') || '|' || version || '|' || expires::text \
                     FROM {t} WHERE id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(p)
                    .await
                }
                SqlPool::MySql(p) => {
                    sqlx::query_scalar(&format!(
                        "SELECT CONCAT(HEX(data), '|', version, '|', expires) FROM {t} WHERE id = ?"
                    ))
                    .bind(id.as_bytes())
                    .fetch_optional(p)
                    .await
                }
                SqlPool::Sqlite(p) => {
                    sqlx::query_scalar(&format!(
                        "SELECT quote(data) || '|' || quote(version) || '|' || quote(expires) \
                     FROM {t} WHERE id = ?"
                    ))
                    .bind(id)
                    .fetch_optional(p)
                    .await
                }
            }
            .expect("read the raw row")
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_survives_the_hostile_corpus() {
    let table = unique("hostile");
    let store = PostgresStore::connect(&postgres_url())
        .await
        .expect("PostgreSQL must run at POSTGRES_URL (scripts/services.sh postgres)")
        .with_table_name(&table)
        .expect("table name");
    store.migrate().await.expect("migrate");
    let backend = SqlBackend {
        pool: SqlPool::Postgres(store.pool().clone()),
        table: table.clone(),
    };
    let outcome = hostile::run(Arc::new(store), &backend).await;
    let _ = sqlx::query(&format!("DROP TABLE {}", backend.quoted()))
        .execute(match &backend.pool {
            SqlPool::Postgres(p) => p,
            _ => unreachable!(),
        })
        .await;
    assert_clean(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_survives_the_hostile_corpus() {
    let table = unique("hostile");
    let store = MySqlStore::connect(&mysql_url())
        .await
        .expect("MySQL/MariaDB must run at MYSQL_URL (scripts/services.sh mariadb)")
        .with_table_name(&table)
        .expect("table name");
    store.migrate().await.expect("migrate");
    let pool = store.pool().clone();
    let backend = SqlBackend {
        pool: SqlPool::MySql(pool.clone()),
        table: table.clone(),
    };
    let outcome = hostile::run(Arc::new(store), &backend).await;
    let _ = sqlx::query(&format!("DROP TABLE {}", backend.quoted()))
        .execute(&pool)
        .await;
    assert_clean(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_survives_the_hostile_corpus() {
    let dir = std::env::temp_dir().join(unique("sqlite"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    let store = SqliteStore::connect(&url).await.expect("open SQLite");
    store.migrate().await.expect("migrate");
    let backend = SqlBackend {
        pool: SqlPool::Sqlite(store.pool().clone()),
        table: store.table_name().to_owned(),
    };
    let outcome = hostile::run(Arc::new(store), &backend).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_clean(&outcome);
}
