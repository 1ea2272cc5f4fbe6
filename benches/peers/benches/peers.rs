//! session-store against tower-sessions, actix-session and the raw drivers, in one run.
//!
//! `cargo bench --manifest-path benches/peers/Cargo.toml --bench peers -- OUT.jsonl [SECTIONS]`
//! writes one JSON object per measurement to `OUT.jsonl`; `scripts/bench.sh` turns them into
//! `BENCHMARKS.md` and `benches/chart.svg`. Sections: `store`, `manager`, `cost`, `http`,
//! `trips`, `memory` (default: all), and, only when named, `memory-plain` and
//! `memory-encoded` (the plain stores of `src/plain.rs`, which the memory backend's
//! throughput and cost sections also run as `plain` and `plain-encoded`). Environment: `REDIS_URL` (a Redis whose counters may be
//! reset: the script starts a private one), `POSTGRES_URL` (a database of its own, for
//! clean `pg_stat_database` counters), `MONGODB_URL`, `BENCH_SECS` (per in-process run,
//! default 3), `WRK_SECS` (per wrk run, default 2), `HTTP_ROUNDS` (wrk runs per variant and
//! workload, interleaved, default 9), `BENCH_SESSIONS` (memory section, default 1000000),
//! to profile one case, `BENCH_WORKLOADS` and `BENCH_HTTP` (comma lists of workloads and
//! HTTP variants), and `BENCH_FLOOR_UNINDEXED` (the raw SQL floors without their index on
//! `expires`).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use session_peer_benches::plain::{EncodedMemoryStore, PlainMemoryStore};
use session_peer_benches::{Rate, Workload, blob, rss_bytes, run_for, small_keys};
use session_store::{Clock as _, IdGenerator, Record, SessionId, SessionManager, SessionStore};

type Res<T = ()> = Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

const TTL_SECS: i64 = 3600;
const SEEDS: usize = 1024;

/// One library (or raw driver) on one backend.
#[async_trait]
trait Lib: Send + Sync + 'static {
    /// Creates a session holding the standard data; returns its cookie value.
    async fn seed(&self) -> Res<String>;
    /// One request at the manager level: load, handler work, commit.
    async fn manager(&self, w: Workload, cookie: &str, i: u64) -> Res;
    /// The store operations alone (read = get, write = set, new = create, touch = touch).
    async fn store(&self, w: Workload, cookie: &str, i: u64) -> Res;
}

// ---------------------------------------------------------------- ours

struct Ours {
    plain: SessionManager,
    touching: SessionManager,
    not_due: SessionManager,
    store: Arc<dyn SessionStore>,
    record: Mutex<Option<Record>>,
    ids: IdGenerator,
}

impl Ours {
    fn new(store: Arc<dyn SessionStore>) -> Res<Self> {
        let build = |touch: Option<Duration>| {
            let mut b = SessionManager::builder_arc(store.clone())
                .cookie_name("sid")
                .idle_lifetime(Duration::from_secs(TTL_SECS as u64));
            if let Some(t) = touch {
                b = b.touch_after(t);
            }
            b.build().map_err(s)
        };
        Ok(Self {
            plain: build(None)?,
            touching: build(Some(Duration::ZERO))?,
            not_due: build(Some(Duration::from_secs(600)))?,
            store,
            record: Mutex::new(None),
            ids: IdGenerator::nanoid(),
        })
    }

    fn record(&self) -> Record {
        self.record.lock().unwrap().clone().expect("seeded")
    }
}

#[async_trait]
impl Lib for Ours {
    async fn seed(&self) -> Res<String> {
        let session = self.plain.new_session();
        for (k, v) in small_keys() {
            session.insert(k, v).map_err(s)?;
        }
        session.insert("n", 0u64).map_err(s)?;
        session.insert("blob", blob()).map_err(s)?;
        session.commit().await.map_err(s)?;
        let id = session.id();
        let need = self.record.lock().unwrap().is_none();
        if need {
            // The store keeps the session under the digest of its id (hashed ids, the default).
            let record = self
                .store
                .get(&self.plain.store_key(&id))
                .await
                .map_err(s)?
                .ok_or("seed missing")?;
            *self.record.lock().unwrap() = Some(record);
        }
        Ok(id.as_str().to_owned())
    }

    async fn manager(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        let manager = match w {
            Workload::Touch => &self.touching,
            Workload::NotDue => &self.not_due,
            _ => &self.plain,
        };
        let session = match w {
            Workload::New => manager.load_value(None).await,
            _ => manager.load_value(Some(cookie)).await,
        }
        .map_err(s)?;
        match w {
            Workload::Read | Workload::Touch | Workload::NotDue => {
                let v: Option<String> = session.get("k3").map_err(s)?;
                v.ok_or("k3 missing")?;
            }
            Workload::Write => {
                let n: u64 = session.get("n").map_err(s)?.ok_or("n missing")?;
                session.insert("n", n + 1).map_err(s)?;
            }
            Workload::New => session.insert("user", "alice").map_err(s)?,
        }
        let mut headers = HeaderMap::new();
        manager
            .finish(&session, StatusCode::OK, &mut headers)
            .await
            .map_err(s)
    }

    async fn store(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        // The key the manager would hand the store (one SHA-256, as in every manager request;
        // the same for every library on our manager).
        let id = self.plain.store_key(&SessionId::new(cookie));
        // Through the store's own vtable, as the manager calls it (not the `Arc` impl).
        let store: &dyn SessionStore = &*self.store;
        match w {
            Workload::Read | Workload::NotDue => {
                store.get(&id).await.map_err(s)?.ok_or("missing")?;
            }
            Workload::Write => {
                let mut record = self.record();
                record.expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                store.set(&id, &record).await.map_err(s)?;
            }
            Workload::New => {
                let mut record = self.record();
                record.expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                let created = store
                    .create(&self.ids.generate(), &record)
                    .await
                    .map_err(s)?;
                if !created {
                    return Err("collision".into());
                }
            }
            Workload::Touch => {
                let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                if !store.touch(&id, expires).await.map_err(s)? {
                    return Err("touch missed".into());
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- tower-sessions

struct Tower<S: tower_sessions::SessionStore> {
    store: Arc<S>,
    record: Mutex<Option<tower_sessions::session::Record>>,
}

impl<S: tower_sessions::SessionStore> Tower<S> {
    fn new(store: S) -> Self {
        Self {
            store: Arc::new(store),
            record: Mutex::new(None),
        }
    }
}

fn parse_tower_id(cookie: &str) -> Res<tower_sessions::session::Id> {
    cookie.parse().map_err(s)
}

#[async_trait]
impl<S: tower_sessions::SessionStore> Lib for Tower<S> {
    async fn seed(&self) -> Res<String> {
        let session = tower_sessions::Session::new(None, self.store.clone(), None);
        for (k, v) in small_keys() {
            session.insert(&k, v).await.map_err(s)?;
        }
        session.insert("n", 0u64).await.map_err(s)?;
        session.insert("blob", blob()).await.map_err(s)?;
        session.save().await.map_err(s)?;
        let id = session.id().ok_or("no id after save")?;
        let need = self.record.lock().unwrap().is_none();
        if need {
            let record = self
                .store
                .load(&id)
                .await
                .map_err(s)?
                .ok_or("seed missing")?;
            *self.record.lock().unwrap() = Some(record);
        }
        Ok(id.to_string())
    }

    /// What `SessionManagerLayer` does around a handler: a lazily loaded session, saved when
    /// modified (or always, with `with_always_save(true)`, tower-sessions' rolling expiry).
    async fn manager(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        let (id, expiry) = match w {
            Workload::New => (None, None),
            Workload::Touch | Workload::NotDue => (
                Some(parse_tower_id(cookie)?),
                Some(tower_sessions::Expiry::OnInactivity(time::Duration::hours(
                    1,
                ))),
            ),
            _ => (Some(parse_tower_id(cookie)?), None),
        };
        let session = tower_sessions::Session::new(id, self.store.clone(), expiry);
        match w {
            Workload::Read | Workload::Touch | Workload::NotDue => {
                let v: Option<String> = session.get("k3").await.map_err(s)?;
                v.ok_or("k3 missing")?;
            }
            Workload::Write => {
                let n: u64 = session.get("n").await.map_err(s)?.ok_or("n missing")?;
                session.insert("n", n + 1).await.map_err(s)?;
            }
            Workload::New => session.insert("user", "alice").await.map_err(s)?,
        }
        let always_save = matches!(w, Workload::Touch | Workload::NotDue);
        let empty = session.is_empty().await;
        if (session.is_modified() || always_save) && !empty {
            session.save().await.map_err(s)?;
            // What `SessionManagerLayer` then does: the cookie with its default attributes
            // (its `CookieManagerLayer` writes it as a `Set-Cookie` header).
            let id = session.id().ok_or("no id after save")?;
            let mut cookie = tower_sessions::cookie::Cookie::build(("id", id.to_string()))
                .http_only(true)
                .same_site(tower_sessions::cookie::SameSite::Strict)
                .secure(true)
                .path("/");
            if let Some(tower_sessions::Expiry::OnInactivity(d)) = session.expiry() {
                cookie = cookie.max_age(d);
            }
            let mut headers = HeaderMap::new();
            headers.append(
                http::header::SET_COOKIE,
                http::HeaderValue::from_str(&cookie.build().encoded().to_string()).map_err(s)?,
            );
        }
        Ok(())
    }

    async fn store(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        match w {
            Workload::Read | Workload::NotDue => {
                self.store
                    .load(&parse_tower_id(cookie)?)
                    .await
                    .map_err(s)?
                    .ok_or("missing")?;
            }
            Workload::Write | Workload::Touch => {
                let mut record = self.record.lock().unwrap().clone().ok_or("unseeded")?;
                record.id = parse_tower_id(cookie)?;
                record.expiry_date = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                self.store.save(&record).await.map_err(s)?;
            }
            Workload::New => {
                let mut record = self.record.lock().unwrap().clone().ok_or("unseeded")?;
                record.id = tower_sessions::session::Id::default();
                record.expiry_date = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                self.store.create(&mut record).await.map_err(s)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- actix-session (Redis)

struct Actix {
    store: actix_session::storage::RedisSessionStore,
}

fn actix_ttl() -> time::Duration {
    time::Duration::seconds(TTL_SECS)
}

fn actix_state() -> HashMap<String, String> {
    let mut state: HashMap<String, String> = small_keys()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_string(&v).unwrap()))
        .collect();
    state.insert("n".into(), "0".into());
    state.insert("blob".into(), serde_json::to_string(&blob()).unwrap());
    state
}

fn actix_key(cookie: &str) -> Res<actix_session::storage::SessionKey> {
    cookie.to_owned().try_into().map_err(s)
}

#[async_trait]
impl Lib for Actix {
    async fn seed(&self) -> Res<String> {
        use actix_session::storage::SessionStore as _;
        let key = self
            .store
            .save(actix_state(), &actix_ttl())
            .await
            .map_err(s)?;
        Ok(key.as_ref().to_owned())
    }

    /// What actix-session's middleware does: load the state map, deserialize the value the
    /// handler asks for; `update` when changed, `save` for a new session, `update_ttl` for
    /// an unchanged session under `TtlExtensionPolicy::OnEveryRequest`.
    async fn manager(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        use actix_session::storage::SessionStore as _;
        if w == Workload::New {
            let mut state = HashMap::new();
            state.insert("user".to_owned(), "\"alice\"".to_owned());
            self.store.save(state, &actix_ttl()).await.map_err(s)?;
            return Ok(());
        }
        let key = actix_key(cookie)?;
        let mut state = self.store.load(&key).await.map_err(s)?.ok_or("missing")?;
        match w {
            Workload::Read | Workload::Touch | Workload::NotDue => {
                let v: String =
                    serde_json::from_str(state.get("k3").ok_or("k3 missing")?).map_err(s)?;
                drop(v);
                if w != Workload::Read {
                    self.store.update_ttl(&key, &actix_ttl()).await.map_err(s)?;
                }
            }
            Workload::Write => {
                let n: u64 = serde_json::from_str(state.get("n").ok_or("n missing")?).map_err(s)?;
                state.insert("n".into(), (n + 1).to_string());
                self.store
                    .update(key, state, &actix_ttl())
                    .await
                    .map_err(s)?;
            }
            Workload::New => unreachable!(),
        }
        Ok(())
    }

    async fn store(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        use actix_session::storage::SessionStore as _;
        match w {
            Workload::Read | Workload::NotDue => {
                self.store
                    .load(&actix_key(cookie)?)
                    .await
                    .map_err(s)?
                    .ok_or("missing")?;
            }
            Workload::Write => {
                self.store
                    .update(actix_key(cookie)?, actix_state(), &actix_ttl())
                    .await
                    .map_err(s)?;
            }
            Workload::New => {
                self.store
                    .save(actix_state(), &actix_ttl())
                    .await
                    .map_err(s)?;
            }
            Workload::Touch => {
                self.store
                    .update_ttl(&actix_key(cookie)?, &actix_ttl())
                    .await
                    .map_err(s)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- raw redis

/// The driver alone, used as redis-rs recommends: one multiplexed connection shared by all
/// tasks (our store does the same).
struct RawRedis {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
    payload: Vec<u8>,
    ids: IdGenerator,
}

impl RawRedis {
    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Res<T> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(s)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    async fn get(&self, cookie: &str) -> Res {
        let v: Option<Vec<u8>> = self.cmd(redis::cmd("GET").arg(self.key(cookie))).await?;
        v.ok_or("missing")?;
        Ok(())
    }

    async fn set(&self, key: String, nx: bool) -> Res {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(&self.payload)
            .arg("PX")
            .arg(TTL_SECS * 1000);
        if nx {
            cmd.arg("NX");
        }
        self.cmd::<redis::Value>(&cmd).await?;
        Ok(())
    }

    async fn expire(&self, cookie: &str) -> Res {
        let n: i64 = self
            .cmd(
                redis::cmd("PEXPIRE")
                    .arg(self.key(cookie))
                    .arg(TTL_SECS * 1000),
            )
            .await?;
        if n != 1 {
            return Err("missing".into());
        }
        Ok(())
    }
}

#[async_trait]
impl Lib for RawRedis {
    async fn seed(&self) -> Res<String> {
        let id = self.ids.generate().as_str().to_owned();
        self.set(self.key(&id), false).await?;
        Ok(id)
    }

    /// The floor: read = GET; write = GET + SET; new = SET NX; touch = GET + PEXPIRE.
    async fn manager(&self, w: Workload, cookie: &str, _i: u64) -> Res {
        match w {
            Workload::Read | Workload::NotDue => self.get(cookie).await,
            Workload::Write => {
                self.get(cookie).await?;
                self.set(self.key(cookie), false).await
            }
            Workload::New => {
                let id = self.ids.generate();
                self.set(self.key(id.as_str()), true).await
            }
            Workload::Touch => {
                self.get(cookie).await?;
                self.expire(cookie).await
            }
        }
    }

    async fn store(&self, w: Workload, cookie: &str, i: u64) -> Res {
        match w {
            Workload::Read | Workload::NotDue => self.get(cookie).await,
            Workload::Write => self.set(self.key(cookie), false).await,
            Workload::New => self.manager(w, cookie, i).await,
            Workload::Touch => self.expire(cookie).await,
        }
    }
}

// ---------------------------------------------------------------- raw SQL

/// The raw SQL floors, on the sqlx that our store and tower-sessions-sqlx-store share: the
/// same work per request in the fewest statements, neither encoding nor decoding a session.
/// Each floor's table has the index on `expires` that ours has (it keeps the removal of
/// expired rows from scanning the table), so that ours ÷ floor measures the client's cost,
/// not the layout's: the index's upkeep on every write is the server's work (on SQLite the
/// larger part of a write under load; see BENCHMARKS.md).
/// Each statement runs on an explicitly acquired connection, the cheapest way to use the
/// driver's pool (executing on `&Pool` boxes the pool's acquire future into the
/// statement's).
#[cfg(feature = "sql")]
mod raw_sql {
    use sqlx::pool::PoolConnection;

    use super::{IdGenerator, Lib, Res, Workload, async_trait, s};

    /// The floor's index on `expires` (PostgreSQL and SQLite spell it alike): created, or,
    /// with `BENCH_FLOOR_UNINDEXED` set, dropped, to measure what its upkeep costs.
    const EXPIRES_INDEX: [&str; 2] = [
        "CREATE INDEX IF NOT EXISTS raw_sessions_expires_idx ON raw_sessions (expires)",
        "DROP INDEX IF EXISTS raw_sessions_expires_idx",
    ];

    fn unindexed() -> bool {
        std::env::var_os("BENCH_FLOOR_UNINDEXED").is_some()
    }

    /// One floor: its pool, its statements (`select`, `upsert`, `touch`, each binding the
    /// id first and `upsert` the payload second) and, for SQLite, a lock that serializes
    /// writes as our store does (concurrent writers would otherwise wait out
    /// `SQLITE_BUSY`).
    macro_rules! raw_floor {
        ($name:ident, $db:ty, select: $select:expr, upsert: $upsert:expr, touch: $touch:expr) => {
            pub(crate) struct $name {
                pool: sqlx::Pool<$db>,
                payload: Vec<u8>,
                ids: IdGenerator,
                writes: Option<tokio::sync::Mutex<()>>,
                /// `select`, `upsert` and `touch` on this floor's table.
                sql: [String; 3],
            }

            impl $name {
                fn with(
                    pool: sqlx::Pool<$db>,
                    payload: Vec<u8>,
                    writes: Option<tokio::sync::Mutex<()>>,
                    table: &str,
                ) -> Self {
                    Self {
                        pool,
                        payload,
                        ids: IdGenerator::nanoid(),
                        writes,
                        sql: [
                            format!($select, t = table),
                            format!($upsert, t = table),
                            format!($touch, t = table),
                        ],
                    }
                }

                async fn conn(&self) -> Res<PoolConnection<$db>> {
                    self.pool.acquire().await.map_err(s)
                }

                async fn select(&self, id: &str) -> Res {
                    let row: Option<(Vec<u8>,)> = sqlx::query_as(&self.sql[0])
                        .bind(id)
                        .fetch_optional(&mut *self.conn().await?)
                        .await
                        .map_err(s)?;
                    row.ok_or("missing")?;
                    Ok(())
                }

                async fn upsert(&self, id: &str) -> Res {
                    self.write(&self.sql[1], id, Some(&self.payload)).await
                }

                async fn touch(&self, id: &str) -> Res {
                    self.write(&self.sql[2], id, None).await
                }

                /// Runs the write `sql`, binding the id and, where given, the payload (in
                /// the write queue, where there is one).
                async fn write(&self, sql: &str, id: &str, payload: Option<&[u8]>) -> Res {
                    let _write = match &self.writes {
                        Some(lock) => Some(lock.lock().await),
                        None => None,
                    };
                    let mut query = sqlx::query(sql).bind(id);
                    if let Some(payload) = payload {
                        query = query.bind(payload);
                    }
                    query.execute(&mut *self.conn().await?).await.map_err(s)?;
                    Ok(())
                }
            }

            #[async_trait]
            impl Lib for $name {
                async fn seed(&self) -> Res<String> {
                    let id = self.ids.generate().as_str().to_owned();
                    self.upsert(&id).await?;
                    Ok(id)
                }

                /// The floor: read = SELECT; write = SELECT + upsert; new = upsert; touch =
                /// SELECT + UPDATE expires.
                async fn manager(&self, w: Workload, cookie: &str, _i: u64) -> Res {
                    match w {
                        Workload::Read | Workload::NotDue => self.select(cookie).await,
                        Workload::Write => {
                            self.select(cookie).await?;
                            self.upsert(cookie).await
                        }
                        Workload::New => self.upsert(self.ids.generate().as_str()).await,
                        Workload::Touch => {
                            self.select(cookie).await?;
                            self.touch(cookie).await
                        }
                    }
                }

                async fn store(&self, w: Workload, cookie: &str, i: u64) -> Res {
                    match w {
                        Workload::Read | Workload::NotDue => self.select(cookie).await,
                        Workload::Write => self.upsert(cookie).await,
                        Workload::New => self.manager(w, cookie, i).await,
                        Workload::Touch => self.touch(cookie).await,
                    }
                }
            }
        };
    }

    raw_floor!(
        RawPg,
        sqlx::Postgres,
        select: "SELECT data FROM {t} WHERE id = $1 AND expires > now()",
        upsert: "INSERT INTO {t} (id, data, expires) VALUES ($1, $2, now() + interval '1 hour') \
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires",
        touch: "UPDATE {t} SET expires = now() + interval '1 hour' WHERE id = $1"
    );

    raw_floor!(
        RawSqlite,
        sqlx::Sqlite,
        select: "SELECT data FROM {t} WHERE id = ?1 AND expires > unixepoch()",
        upsert: "INSERT INTO {t} (id, data, expires) VALUES (?1, ?2, unixepoch() + 3600) \
                 ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires = excluded.expires",
        touch: "UPDATE {t} SET expires = unixepoch() + 3600 WHERE id = ?1"
    );

    raw_floor!(
        RawMySql,
        sqlx::MySql,
        select: "SELECT data FROM {t} WHERE id = ? AND expires > NOW(6)",
        upsert: "INSERT INTO {t} (id, data, expires) VALUES (?, ?, NOW(6) + INTERVAL 1 HOUR) \
                 ON DUPLICATE KEY UPDATE data = VALUES(data), expires = VALUES(expires)",
        touch: "UPDATE {t} SET expires = NOW(6) + INTERVAL 1 HOUR WHERE id = ?"
    );

    impl RawPg {
        pub(crate) async fn new(url: &str, payload: Vec<u8>) -> Res<Self> {
            // No ping before each statement, like our store's `connect` pool: the floor must
            // not pay a round trip that ours does not.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .test_before_acquire(false)
                .connect(url)
                .await
                .map_err(s)?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS raw_sessions (id TEXT PRIMARY KEY, \
                 data BYTEA NOT NULL, expires TIMESTAMPTZ NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(s)?;
            sqlx::query(EXPIRES_INDEX[usize::from(unindexed())])
            .execute(&pool)
            .await
            .map_err(s)?;
            Ok(Self::with(pool, payload, None, "raw_sessions"))
        }
    }

    impl RawSqlite {
        /// On the database file `url` names, in WAL mode with `synchronous = NORMAL`, as
        /// our store opens it.
        pub(crate) async fn new(url: &str, payload: Vec<u8>) -> Res<Self> {
            use std::str::FromStr;

            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
            let options = SqliteConnectOptions::from_str(url)
                .map_err(s)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .map_err(s)?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS raw_sessions (id TEXT PRIMARY KEY NOT NULL, \
                 data BLOB NOT NULL, expires INTEGER NOT NULL)",
            )
            .execute(&pool)
            .await
            .map_err(s)?;
            sqlx::query(EXPIRES_INDEX[usize::from(unindexed())])
            .execute(&pool)
            .await
            .map_err(s)?;
            Ok(Self::with(
                pool,
                payload,
                Some(tokio::sync::Mutex::new(())),
                "raw_sessions",
            ))
        }
    }

    impl RawMySql {
        /// In a table of this process's own (`table`).
        pub(crate) async fn new(url: &str, table: &str, payload: Vec<u8>) -> Res<Self> {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .test_before_acquire(false)
                .connect(url)
                .await
                .map_err(s)?;
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (id VARBINARY(256) NOT NULL PRIMARY KEY, \
                 data LONGBLOB NOT NULL, expires DATETIME(6) NOT NULL{index})",
                index = if unindexed() {
                    String::new()
                } else {
                    format!(", INDEX {table}_expires_idx (expires)")
                }
            ))
            .execute(&pool)
            .await
            .map_err(s)?;
            Ok(Self::with(pool, payload, None, table))
        }
    }
}

// ---------------------------------------------------------------- the run

struct Out {
    file: std::fs::File,
}

impl Out {
    fn emit(&mut self, value: serde_json::Value) {
        println!("{value}");
        writeln!(self.file, "{value}").expect("write results");
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env(name, &default.to_string()).parse().unwrap_or(default))
}

/// Backends listed in `BENCH_SKIP` (comma-separated: memory, redis, postgres, mongo).
fn skipped(backend: &str) -> bool {
    env("BENCH_SKIP", "")
        .split(',')
        .any(|s| s.trim() == backend)
}

/// Whether `name` is in the comma-separated list `var` (an unset or empty list keeps all):
/// `BENCH_WORKLOADS` (read, write, new, touch) and `BENCH_HTTP` (HTTP variants such as
/// `none,ours/memory`), to profile one case alone.
fn kept(var: &str, name: &str) -> bool {
    let list = env(var, "");
    list.trim().is_empty() || list.split(',').any(|s| s.trim() == name)
}

fn prefix() -> String {
    format!("bench:{}:", nanoid::nanoid!(8))
}

/// The standard payload as our blob stores write it, for the raw floors.
async fn standard_payload() -> Res<Vec<u8>> {
    let ours = Ours::new(Arc::new(session_store::MemoryStore::new()))?;
    ours.seed().await?;
    Ok(ours.record().encode_payload())
}

/// Adds the library `setup` builds to `out`, or says why it is skipped.
async fn add<L: Lib + 'static>(
    out: &mut Vec<(String, String, Arc<dyn Lib>)>,
    backend: &str,
    name: &str,
    setup: impl std::future::Future<Output = Res<L>>,
) {
    match setup.await {
        Ok(lib) => out.push((backend.into(), name.into(), Arc::new(lib))),
        Err(e) => eprintln!("{name}/{backend} skipped: {e}"),
    }
}

async fn libraries(names: &[&str]) -> Vec<(String, String, Arc<dyn Lib>)> {
    let redis_url = env("REDIS_URL", "redis://127.0.0.1:6399");
    let mut out: Vec<(String, String, Arc<dyn Lib>)> = Vec::new();
    let want = |n: &str| (names.is_empty() || names.contains(&n)) && !skipped(n);
    let payload = standard_payload().await.expect("payload");
    if want("memory") {
        let store = Arc::new(session_store::MemoryStore::new());
        out.push((
            "memory".into(),
            "ours".into(),
            Arc::new(Ours::new(store).expect("ours")),
        ));
        out.push((
            "memory".into(),
            "tower-sessions".into(),
            Arc::new(Tower::new(tower_sessions::MemoryStore::default())),
        ));
        // The simplest stores (issue #25), our manager on each: what MemoryStore's layout buys.
        out.push((
            "memory".into(),
            "plain".into(),
            Arc::new(Ours::new(Arc::new(PlainMemoryStore::new())).expect("plain")),
        ));
        out.push((
            "memory".into(),
            "plain-encoded".into(),
            Arc::new(Ours::new(Arc::new(EncodedMemoryStore::new())).expect("plain-encoded")),
        ));
    }
    if want("redis") {
        add(&mut out, "redis", "ours", async {
            let store = session_store_redis::RedisStore::from_url(&redis_url)
                .map_err(s)?
                .with_prefix(prefix());
            store.connect().await.map_err(s)?;
            Ours::new(Arc::new(store))
        })
        .await;
        // The same store with the near-cache on (issue #21): reads of sessions it holds
        // cost no round trip, writes one.
        add(&mut out, "redis", "ours near-cache", async {
            let store = session_store_redis::RedisStore::from_url(&redis_url)
                .map_err(s)?
                .with_prefix(prefix())
                .with_near_cache(session_store_redis::NearCacheConfig::new().max_entries(200_000))
                .map_err(s)?;
            store.connect().await.map_err(s)?;
            let store = Arc::new(store);
            let _ = NEAR_CACHED.set(store.clone());
            Ours::new(store)
        })
        .await;
        add(&mut out, "redis", "tower-sessions", async {
            use tower_sessions_redis_store::fred::prelude::*;
            let config = Config::from_url(&redis_url).map_err(s)?;
            let pool = Pool::new(config, None, None, None, 8).map_err(s)?;
            pool.init().await.map_err(s)?;
            Res::Ok(Tower::new(tower_sessions_redis_store::RedisStore::new(
                pool,
            )))
        })
        .await;
        add(&mut out, "redis", "actix-session", async {
            let p = prefix();
            let store = actix_session::storage::RedisSessionStore::builder(redis_url.clone())
                .cache_keygen(move |k| format!("{p}{k}"))
                .build()
                .await
                .map_err(s)?;
            Res::Ok(Actix { store })
        })
        .await;
        add(&mut out, "redis", "raw floor", async {
            Res::Ok(RawRedis {
                conn: redis_admin(&redis_url).await?,
                prefix: prefix(),
                payload: payload.clone(),
                ids: IdGenerator::nanoid(),
            })
        })
        .await;
    }
    #[cfg(feature = "sql")]
    if want("postgres") {
        let url = env(
            "POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/session_bench",
        );
        add(&mut out, "postgres", "ours", async {
            let store = session_store_sqlx::PostgresStore::connect(&url)
                .await
                .map_err(s)?;
            store.migrate().await.map_err(s)?;
            Ours::new(Arc::new(store))
        })
        .await;
        // The same store with the near-cache on (issue #21), in a table of its own (its
        // announcing trigger would otherwise make the plain store's writes announce too).
        add(&mut out, "postgres", "ours near-cache", async {
            let store = session_store_sqlx::PostgresStore::connect(&url)
                .await
                .map_err(s)?
                .with_table_name("sessions_near")
                .map_err(s)?
                .with_near_cache(session_store_sqlx::NearCacheConfig::new().max_entries(200_000))
                .map_err(s)?;
            store.migrate().await.map_err(s)?;
            let store = Arc::new(store);
            let _ = NEAR_CACHED_PG.set(store.clone());
            Ours::new(store)
        })
        .await;
        add(&mut out, "postgres", "tower-sessions", async {
            let pool = tower_sessions_sqlx_store::sqlx::PgPool::connect(&url)
                .await
                .map_err(s)?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
            store.migrate().await.map_err(s)?;
            Res::Ok(Tower::new(store))
        })
        .await;
        add(
            &mut out,
            "postgres",
            "raw floor",
            raw_sql::RawPg::new(&url, payload.clone()),
        )
        .await;
    }
    #[cfg(feature = "sql")]
    if want("sqlite") {
        // A file of its own (WAL mode, as our store sets it up), fresh for every run.
        let dir = sqlite_dir();
        let _ = std::fs::create_dir_all(&dir);
        let url = |name: &str| format!("sqlite://{}?mode=rwc", dir.join(name).display());
        add(&mut out, "sqlite", "ours", async {
            let store = session_store_sqlx::SqliteStore::connect(&url("ours.db"))
                .await
                .map_err(s)?;
            store.migrate().await.map_err(s)?;
            Ours::new(Arc::new(store))
        })
        .await;
        add(&mut out, "sqlite", "tower-sessions", async {
            let pool = tower_sessions_sqlx_store::sqlx::SqlitePool::connect(&url("tower.db"))
                .await
                .map_err(s)?;
            let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
            store.migrate().await.map_err(s)?;
            Res::Ok(Tower::new(store))
        })
        .await;
        add(
            &mut out,
            "sqlite",
            "raw floor",
            raw_sql::RawSqlite::new(&url("raw.db"), payload.clone()),
        )
        .await;
    }
    #[cfg(feature = "sql")]
    if want("mysql") {
        let url = env("MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
        add(&mut out, "mysql", "ours", async {
            let store = session_store_sqlx::MySqlStore::connect(&url)
                .await
                .map_err(s)?
                .with_table_name(&format!("bench_{}", std::process::id()))
                .map_err(s)?;
            store.migrate().await.map_err(s)?;
            Ours::new(Arc::new(store))
        })
        .await;
        add(&mut out, "mysql", "tower-sessions", async {
            let pool = tower_sessions_sqlx_store::sqlx::MySqlPool::connect(&url)
                .await
                .map_err(s)?;
            let store = tower_sessions_sqlx_store::MySqlStore::new(pool)
                .with_table_name(format!("tower_bench_{}", std::process::id()))
                .map_err(s)?;
            store.migrate().await.map_err(s)?;
            Res::Ok(Tower::new(store))
        })
        .await;
        add(
            &mut out,
            "mysql",
            "raw floor",
            raw_sql::RawMySql::new(
                &url,
                &format!("raw_bench_{}", std::process::id()),
                payload.clone(),
            ),
        )
        .await;
    }
    if want("mongo") {
        let url = env(
            "MONGODB_URL",
            "mongodb://127.0.0.1:27917/?directConnection=true",
        );
        add(&mut out, "mongo", "ours", async {
            let coll = format!("bench_{}", nanoid::nanoid!(8, &nanoid::alphabet::SAFE[2..]));
            let store = session_store_mongodb::MongoStore::connect(&url, "session_bench", &coll)
                .await
                .map_err(s)?;
            Ours::new(Arc::new(store))
        })
        .await;
    }
    out
}

/// Where this run's SQLite files live (removed at the end of the run).
fn sqlite_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("session-bench-{}", std::process::id()))
}

/// The near-cached Redis store of the run, whose hit counters are reported at the end.
static NEAR_CACHED: std::sync::OnceLock<Arc<session_store_redis::RedisStore>> =
    std::sync::OnceLock::new();

/// The near-cached PostgreSQL store of the run, likewise.
#[cfg(feature = "sql")]
static NEAR_CACHED_PG: std::sync::OnceLock<Arc<session_store_sqlx::PostgresStore>> =
    std::sync::OnceLock::new();

async fn seed(lib: &Arc<dyn Lib>, n: usize) -> Res<Arc<Vec<String>>> {
    let mut cookies = Vec::with_capacity(n);
    for _ in 0..n {
        cookies.push(lib.seed().await?);
    }
    Ok(Arc::new(cookies))
}

/// Throughput at 64 concurrent tasks. The libraries of one backend take turns in `rounds`
/// rounds of one slice each per workload, each round starting with the next library (so a
/// change of machine load hits all of them alike); each reports its median slice and every
/// slice, in round order, for per-round ratios.
async fn throughput(
    out: &mut Out,
    level: &str,
    tasks: usize,
    rounds: usize,
    slice: Duration,
    libs: &[(String, String, Arc<dyn Lib>)],
) {
    let mut seeded = Vec::new();
    for (backend, name, lib) in libs {
        match seed(lib, SEEDS).await {
            Ok(cookies) => seeded.push((backend, name, lib, cookies)),
            Err(e) => eprintln!("{backend}/{name}: seeding failed: {e}"),
        }
    }
    let by_store = level == "store";
    // Libraries are listed backend by backend.
    for group in seeded.chunk_by(|a, b| a.0 == b.0) {
        for w in Workload::MAIN {
            if !kept("BENCH_WORKLOADS", w.name()) {
                continue;
            }
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); group.len()];
            let mut errors = vec![0u64; group.len()];
            for round in 0..rounds {
                // Each round starts with another library, so no one always goes first.
                for k in 0..group.len() {
                    let at = (round + k) % group.len();
                    let (_, _, lib, cookies) = &group[at];
                    let (lib, cookies) = ((*lib).clone(), cookies.clone());
                    let rate: Rate = run_for(tasks, slice, move |t, i| {
                        let (lib, cookies) = (lib.clone(), cookies.clone());
                        async move {
                            let cookie = &cookies[t % cookies.len()];
                            if by_store {
                                lib.store(w, cookie, i).await
                            } else {
                                lib.manager(w, cookie, i).await
                            }
                        }
                    })
                    .await;
                    samples[at].push(rate.ops_per_sec);
                    errors[at] += rate.errors;
                }
            }
            for (at, (backend, name, _, _)) in group.iter().enumerate() {
                let mut sorted = samples[at].clone();
                sorted.sort_by(f64::total_cmp);
                out.emit(json!({
                    "section": level, "backend": backend, "lib": name, "workload": w.name(),
                    "tasks": tasks, "ops_per_sec": sorted[sorted.len() / 2],
                    "samples": samples[at], "errors": errors[at],
                }));
            }
        }
    }
}

/// Manager cost per request, one task, run inline: the libraries take turns in `rounds`
/// rounds of one short slice each per workload (starting with the next library each round,
/// so a change of machine load hits both alike); each reports its median slice and every
/// slice, in round order.
async fn cost(
    out: &mut Out,
    rounds: usize,
    slice: Duration,
    libs: &[(String, String, Arc<dyn Lib>)],
) {
    let mut seeded = Vec::new();
    for (backend, name, lib) in libs {
        match seed(lib, SEEDS).await {
            Ok(cookies) => seeded.push((backend, name, lib, cookies)),
            Err(e) => eprintln!("{backend}/{name}: seeding failed: {e}"),
        }
    }
    for w in Workload::MAIN {
        if !kept("BENCH_WORKLOADS", w.name()) {
            continue;
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); seeded.len()];
        let mut errors = vec![0u64; seeded.len()];
        for round in 0..rounds {
            for k in 0..seeded.len() {
                let at = (round + k) % seeded.len();
                let (_, _, lib, cookies) = &seeded[at];
                // Inline on this task: no spawn, no cross-thread wake-ups in the measurement.
                let start = std::time::Instant::now();
                let mut done = 0u64;
                while start.elapsed() < slice {
                    for _ in 0..64 {
                        let cookie = &cookies[(done as usize) % cookies.len()];
                        if lib.manager(w, cookie, done).await.is_err() {
                            errors[at] += 1;
                        }
                        done += 1;
                    }
                }
                samples[at].push(done as f64 / start.elapsed().as_secs_f64());
            }
        }
        for (at, (backend, name, _, _)) in seeded.iter().enumerate() {
            let mut s = samples[at].clone();
            s.sort_by(f64::total_cmp);
            out.emit(json!({
                "section": "cost", "backend": backend, "lib": name, "workload": w.name(),
                "tasks": 1, "ops_per_sec": s[s.len() / 2], "samples": samples[at],
                "errors": errors[at],
            }));
        }
    }
}

// ---------------------------------------------------------------- round trips

async fn redis_admin(url: &str) -> Res<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).map_err(s)?;
    client.get_multiplexed_async_connection().await.map_err(s)
}

/// Counters after a run: (round trips, command -> calls). Round trips are the server's
/// `total_writes_processed` (one write event per reply batch, so a pipeline counts once),
/// less the reply to our `CONFIG RESETSTAT` and the deadpool health-check `PING`s (each a
/// round trip of its own). Commands come from `INFO commandstats`, which also counts the
/// commands a script runs inside `EVALSHA`.
async fn redis_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Res<(u64, Vec<(String, u64)>)> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .arg("commandstats")
        .query_async(conn)
        .await
        .map_err(s)?;
    let mut calls = Vec::new();
    let mut writes = 0u64;
    let mut pings = 0u64;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("total_writes_processed:") {
            writes = v.trim().parse().unwrap_or(0);
        }
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((cmd, stats)) = rest.split_once(':') else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if cmd == "ping" {
            pings += n;
        }
        if matches!(
            cmd,
            "info"
                | "config|resetstat"
                | "config"
                | "ping"
                | "client|setinfo"
                | "client|setname"
                | "hello"
                | "select"
        ) {
            continue;
        }
        calls.push((cmd.to_owned(), n));
    }
    Ok((writes.saturating_sub(1 + pings), calls))
}

async fn trips(out: &mut Out, rounds: usize) {
    let redis_url = env("REDIS_URL", "redis://127.0.0.1:6399");
    let mut workloads = Workload::MAIN.to_vec();
    workloads.push(Workload::NotDue);
    match redis_admin(&redis_url).await {
        Ok(mut admin) => {
            for (backend, name, lib) in libraries(&["redis"]).await {
                let Ok(cookies) = seed(&lib, rounds).await else {
                    continue;
                };
                for &w in &workloads {
                    let _: Res<()> = redis::cmd("CONFIG")
                        .arg("RESETSTAT")
                        .query_async(&mut admin)
                        .await
                        .map_err(s);
                    let errors = serve(&*lib, w, &cookies).await;
                    let (total, calls) = redis_calls(&mut admin).await.unwrap_or_default();
                    let detail: Vec<String> = calls
                        .iter()
                        .map(|(c, n)| format!("{c} {:.2}", *n as f64 / rounds as f64))
                        .collect();
                    out.emit(json!({
                        "section": "trips", "backend": backend, "lib": name, "workload": w.name(),
                        "per_request": total as f64 / rounds as f64, "detail": detail.join(", "),
                        "errors": errors,
                    }));
                }
            }
        }
        Err(e) => eprintln!("redis round trips skipped: {e}"),
    }
    #[cfg(feature = "sql")]
    pg_trips(out, rounds, &workloads).await;
    #[cfg(feature = "sql")]
    mysql_trips(out, rounds, &workloads).await;
    mongo_trips(out, rounds, &workloads).await;
}

/// The server's `network.numRequests` (`serverStatus`): every message a client sent,
/// whatever the operation. The reading counts itself.
async fn mongo_requests(client: &session_store_mongodb::mongodb::Client) -> Res<i64> {
    use session_store_mongodb::mongodb::bson::doc;
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .map_err(s)?;
    let network = status.get_document("network").map_err(s)?;
    match network.get("numRequests") {
        Some(session_store_mongodb::mongodb::bson::Bson::Int64(n)) => Ok(*n),
        Some(session_store_mongodb::mongodb::bson::Bson::Int32(n)) => Ok(i64::from(*n)),
        Some(session_store_mongodb::mongodb::bson::Bson::Double(n)) => Ok(*n as i64),
        _ => Err("serverStatus has no network.numRequests".into()),
    }
}

/// MongoDB requests per request, from the server's request counter: each library instance
/// seeds its sessions, serves 20 warm-up requests (connections open), then 200 counted
/// ones. The driver's own monitoring (a heartbeat every 10 s) may add one now and then.
async fn mongo_trips(out: &mut Out, rounds: usize, workloads: &[Workload]) {
    if skipped("mongo") {
        return;
    }
    let url = env(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27917/?directConnection=true",
    );
    let Ok(admin) = session_store_mongodb::mongodb::Client::with_uri_str(&url).await else {
        eprintln!("mongo round trips skipped: no admin connection");
        return;
    };
    for &w in workloads {
        let libs = libraries(&["mongo"]).await;
        let Some((_, name, lib)) = libs.into_iter().next() else {
            return;
        };
        let Ok(seeded) = seed(&lib, rounds + WARM_UP).await else {
            continue;
        };
        let mut cookies = seeded.to_vec();
        warm_up(&*lib, w, &mut cookies).await;
        let Ok(before) = mongo_requests(&admin).await else {
            continue;
        };
        let errors = serve(&*lib, w, &cookies).await;
        let after = mongo_requests(&admin).await.unwrap_or(before);
        out.emit(json!({
            "section": "trips", "backend": "mongo", "lib": name, "workload": w.name(),
            "per_request": (after - before - 1) as f64 / rounds as f64,
            "detail": "requests (serverStatus network.numRequests)", "errors": errors,
        }));
    }
}

/// Serves one manager-level request of `w` per cookie, in order; returns how many failed.
async fn serve(lib: &dyn Lib, w: Workload, cookies: &[String]) -> u64 {
    let mut errors = 0;
    for (i, cookie) in cookies.iter().enumerate() {
        if lib.manager(w, cookie, i as u64).await.is_err() {
            errors += 1;
        }
    }
    errors
}

/// Requests a library serves before its round trips are counted: its pool's connections
/// are open and its statements prepared, as in a running service.
const WARM_UP: usize = 20;

/// Serves [`WARM_UP`] requests of workload `w` on the first seeded sessions, and leaves the
/// others for counting.
async fn warm_up(lib: &dyn Lib, w: Workload, cookies: &mut Vec<String>) {
    let rest = cookies.split_off(WARM_UP.min(cookies.len()));
    serve(lib, w, cookies).await;
    *cookies = rest;
}

/// MariaDB/MySQL `Questions`: statements clients sent (pings and prepares excluded),
/// server-wide. The `SHOW` reading it counts itself.
#[cfg(feature = "sql")]
async fn mysql_questions(admin: &sqlx::MySqlPool) -> Res<i64> {
    let (_, value): (String, String) = sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
        .fetch_one(admin)
        .await
        .map_err(s)?;
    value.parse::<i64>().map_err(s)
}

/// MySQL statements per request, from the server's `Questions` counter (nothing else uses
/// the server during a bench run). As for Postgres, each cell counts with a fresh library
/// instance, seeded by another, so its connection set-up is included, amortised over the
/// requests.
#[cfg(feature = "sql")]
async fn mysql_trips(out: &mut Out, rounds: usize, workloads: &[Workload]) {
    if skipped("mysql") {
        return;
    }
    let url = env("MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let Ok(admin) = sqlx::MySqlPool::connect(&url).await else {
        eprintln!("mysql round trips skipped: no admin connection");
        return;
    };
    for lib_name in ["ours", "tower-sessions"] {
        for &w in workloads {
            let seeded = {
                let libs = libraries(&["mysql"]).await;
                let Some((_, _, lib)) = libs.into_iter().find(|l| l.1 == lib_name) else {
                    continue;
                };
                seed(&lib, rounds + WARM_UP).await
            };
            let Ok(seeded) = seeded else { continue };
            let mut cookies = seeded.to_vec();
            let libs = libraries(&["mysql"]).await;
            let Some((_, _, lib)) = libs.into_iter().find(|l| l.1 == lib_name) else {
                continue;
            };
            warm_up(&*lib, w, &mut cookies).await;
            let Ok(before) = mysql_questions(&admin).await else {
                continue;
            };
            let errors = serve(&*lib, w, &cookies).await;
            let after = mysql_questions(&admin).await.unwrap_or(before);
            drop(lib);
            out.emit(json!({
                "section": "trips", "backend": "mysql", "lib": lib_name, "workload": w.name(),
                "per_request": (after - before - 1) as f64 / rounds as f64,
                "detail": "statements (Questions)", "errors": errors,
            }));
        }
    }
}

#[cfg(feature = "sql")]
async fn pg_xacts(admin: &sqlx::PgPool, db: &str) -> Res<i64> {
    let mut last = -1;
    // Backends publish their counters when they exit or go idle; wait until stable.
    for _ in 0..20 {
        let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(admin)
            .await;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1",
        )
        .bind(db)
        .fetch_one(admin)
        .await
        .map_err(s)?;
        if n == last {
            return Ok(n);
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Ok(last)
}

/// Postgres statements per request, from `pg_stat_database` transaction counts of a
/// database nothing else uses (every autocommit statement is one transaction). Each cell
/// uses a fresh library instance whose pool is closed before counting, so backends exit
/// and flush their counters.
#[cfg(feature = "sql")]
async fn pg_trips(out: &mut Out, rounds: usize, workloads: &[Workload]) {
    if skipped("postgres") {
        return;
    }
    let url = env(
        "POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/session_bench",
    );
    let db = url
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    let admin_url = format!(
        "{}/postgres",
        url.rsplit_once('/').map(|p| p.0).unwrap_or("")
    );
    let Ok(admin) = sqlx::PgPool::connect(&admin_url).await else {
        eprintln!("postgres round trips skipped: no admin connection");
        return;
    };
    for lib_name in ["ours", "tower-sessions", "raw floor"] {
        for &w in workloads {
            // Seed with one instance; count with two others, one serving WARM_UP requests and
            // one WARM_UP + rounds: the difference is `rounds` requests, without connection
            // set-up or statement preparation.
            let seeded = {
                let libs = libraries(&["postgres"]).await;
                let Some((_, _, lib)) = libs.into_iter().find(|l| l.1 == lib_name) else {
                    continue;
                };
                let c = seed(&lib, rounds + 2 * WARM_UP).await;
                drop(lib);
                c
            };
            let Ok(seeded) = seeded else { continue };
            let (short, long) = seeded.split_at(WARM_UP);
            let mut errors = 0;
            let mut counts = Vec::new();
            for cookies in [short, long] {
                let Some(n) = pg_count(&admin, &db, lib_name, w, cookies, &mut errors).await else {
                    break;
                };
                counts.push(n);
            }
            let [a, b] = counts[..] else { continue };
            out.emit(json!({
                "section": "trips", "backend": "postgres", "lib": lib_name, "workload": w.name(),
                "per_request": (b - a) as f64 / rounds as f64,
                "detail": "statements (xacts)", "errors": errors,
            }));
        }
    }
}

/// Transactions in `db` while a fresh instance of `lib_name` serves one request of `w` per
/// cookie and is dropped (its backends exit and flush their counters).
#[cfg(feature = "sql")]
async fn pg_count(
    admin: &sqlx::PgPool,
    db: &str,
    lib_name: &str,
    w: Workload,
    cookies: &[String],
    errors: &mut u64,
) -> Option<i64> {
    let libs = libraries(&["postgres"]).await;
    let (_, _, lib) = libs.into_iter().find(|l| l.1 == lib_name)?;
    let before = pg_xacts(admin, db).await.ok()?;
    *errors += serve(&*lib, w, cookies).await;
    drop(lib);
    // Pools close when dropped; give the backends time to exit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pg_xacts(admin, db).await.ok()?;
    Some(after - before)
}

// ---------------------------------------------------------------- memory

/// A copy of `record` whose data is its own, as each session's is (not shared with `record`:
/// a store keeping `Record` clones would otherwise hold one map for all sessions).
fn own_data(record: &Record) -> Record {
    let mut copy = record.clone();
    copy.data = session_store::Data::new();
    for (k, v) in record.data.iter() {
        copy.data.insert(k.to_owned(), v.to_vec());
    }
    copy
}

/// RSS per session in the store `build` makes holding `n` sessions of one small key, against
/// the bytes the session itself needs; then the records expire and are swept (`sweep`), and
/// the same number is inserted again to show the memory is reused. Emits a `memory` row for
/// `lib`.
async fn memory_of<S: SessionStore + Clone>(
    out: &mut Out,
    lib: &str,
    n: usize,
    build: impl FnOnce(Arc<session_store::ManualClock>) -> S,
    sweep: impl Fn(&S) -> usize,
    len: impl Fn(&S) -> usize,
) -> usize {
    let clock = Arc::new(session_store::ManualClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let store = build(clock.clone());
    let manager = SessionManager::builder(store.clone())
        .clock(clock.clone())
        .build()
        .expect("manager");
    let session = manager.new_session();
    session.insert("user", 42u64).expect("insert");
    session.commit().await.expect("commit");
    let mut record = store
        .get(&manager.store_key(&session.id()))
        .await
        .expect("get")
        .expect("seeded");
    let user_bytes: usize = record.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    let ids: Vec<SessionId> = (0..n).map(|_| IdGenerator::nanoid().generate()).collect();
    let id_len = ids[0].as_str().len();
    let encoded = record.encode_payload().len();
    let fill = |record: &Record| {
        let store = store.clone();
        let record = record.clone();
        let ids = &ids;
        async move {
            for id in ids {
                store.set(id, &own_data(&record)).await.expect("set");
            }
        }
    };
    let before = rss_bytes().unwrap_or(0);
    fill(&record).await;
    let filled = rss_bytes().unwrap_or(0);
    let per = (filled - before) as f64 / n as f64;
    clock.advance(Duration::from_secs(3600 * 24 * 30));
    let swept = sweep(&store);
    let after_sweep = rss_bytes().unwrap_or(0);
    let left = len(&store);
    record.expires = clock.now() + time::Duration::hours(1);
    fill(&record).await;
    let refilled = rss_bytes().unwrap_or(0);
    out.emit(json!({
        "section": "memory", "lib": lib, "sessions": n,
        "rss_per_session": per,
        "id_bytes": id_len, "user_bytes": user_bytes, "encoded_payload_bytes": encoded,
        "overhead_beyond_id_and_user_data": per - (id_len + user_bytes) as f64,
        "overhead_beyond_id_and_encoded_payload": per - (id_len + encoded) as f64,
        "swept": swept, "left_after_sweep": left,
        "rss_after_sweep_mb": after_sweep as f64 / 1e6,
        "rss_growth_on_refill_per_session": (refilled as f64 - after_sweep as f64) / n as f64,
    }));
    user_bytes
}

/// MemoryStore's memory per session ([`memory_of`]), then tower-sessions' MemoryStore's.
async fn memory(out: &mut Out, n: usize) {
    let user_bytes = memory_of(
        out,
        "ours",
        n,
        |clock| {
            session_store::MemoryStore::with_clock(clock)
                .with_sweep_interval(Duration::from_secs(3600 * 24 * 365))
        },
        session_store::MemoryStore::sweep,
        session_store::MemoryStore::len,
    )
    .await;
    // tower-sessions' MemoryStore for comparison (one process, so measured after ours was
    // dropped; freed memory may be reused, which only flatters the second measurement).
    let tstore = Arc::new(tower_sessions::MemoryStore::default());
    let tsession = tower_sessions::Session::new(None, tstore.clone(), None);
    tsession.insert("user", 42u64).await.expect("insert");
    tsession.save().await.expect("save");
    let base = {
        use tower_sessions::SessionStore as _;
        tstore
            .load(&tsession.id().expect("id"))
            .await
            .expect("load")
            .expect("saved")
    };
    let before = rss_bytes().unwrap_or(0);
    for _ in 0..n {
        use tower_sessions::SessionStore as _;
        let mut r = base.clone();
        r.id = tower_sessions::session::Id::default();
        tstore.save(&r).await.expect("save");
    }
    let filled = rss_bytes().unwrap_or(0);
    let per = (filled.saturating_sub(before)) as f64 / n as f64;
    out.emit(json!({
        "section": "memory", "lib": "tower-sessions", "sessions": n,
        "rss_per_session": per, "user_bytes": user_bytes,
        "overhead_beyond_id_and_user_data": per - (16 + user_bytes) as f64,
    }));
}

// ---------------------------------------------------------------- HTTP

mod web {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    async fn plain() -> &'static str {
        "value-3"
    }

    fn ours_app(manager: SessionManager, w: Workload) -> Router {
        use session_store_tower::{Session, SessionLayer};
        let route = match w {
            Workload::Write => get(|Session(s): Session| async move {
                let n: u64 = s.get("n").ok().flatten().unwrap_or(0);
                let _ = s.insert("n", n + 1);
                "ok"
            }),
            Workload::New => get(|Session(s): Session| async move {
                let _ = s.insert("user", "alice");
                "ok"
            }),
            _ => get(|Session(s): Session| async move {
                s.get::<String>("k3").ok().flatten().unwrap_or_default()
            }),
        };
        Router::new()
            .route("/", route)
            .layer(SessionLayer::new(manager))
    }

    fn tower_app<S: tower_sessions::SessionStore + Clone>(store: S, w: Workload) -> Router {
        use tower_sessions::{Expiry, Session, SessionManagerLayer};
        let mut layer = SessionManagerLayer::new(store)
            .with_name("sid")
            .with_secure(false);
        if w == Workload::Touch {
            layer = layer
                .with_expiry(Expiry::OnInactivity(time::Duration::hours(1)))
                .with_always_save(true);
        }
        let route = match w {
            Workload::Write => get(|s: Session| async move {
                let n: u64 = s.get("n").await.ok().flatten().unwrap_or(0);
                let _ = s.insert("n", n + 1).await;
                "ok"
            }),
            Workload::New => get(|s: Session| async move {
                let _ = s.insert("user", "alice").await;
                "ok"
            }),
            _ => get(|s: Session| async move {
                s.get::<String>("k3")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }),
        };
        Router::new().route("/", route).layer(layer)
    }

    /// Runs `wrk` against `app` with the session cookies in rotation; returns requests/s
    /// and the non-2xx count.
    async fn wrk(app: Router, cookies: &[String], secs: Duration) -> Res<(f64, u64)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(s)?;
        let addr = listener.local_addr().map_err(s)?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let script = std::env::temp_dir().join(format!("peers-{}.lua", nanoid::nanoid!(6)));
        let list: Vec<String> = cookies.iter().map(|c| format!("\"sid={c}\"")).collect();
        std::fs::write(
            &script,
            format!(
                "local cookies = {{{}}}\nlocal n = #cookies\nlocal i = 0\n\
                 request = function()\n  i = i + 1\n  if n == 0 then return wrk.format(\"GET\", \"/\") end\n  \
                 return wrk.format(\"GET\", \"/\", {{[\"Cookie\"] = cookies[(i % n) + 1]}})\nend\n",
                list.join(",")
            ),
        )
        .map_err(s)?;
        let url = format!("http://{addr}/");
        let secs_arg = format!("{}s", secs.as_secs());
        let script_arg = script.display().to_string();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("wrk")
                .args(["-t2", "-c64", "-d", &secs_arg, "-s", &script_arg, &url])
                .output()
        })
        .await
        .map_err(s)?
        .map_err(|e| format!("wrk: {e}"))?;
        server.abort();
        let _ = std::fs::remove_file(&script);
        let text = String::from_utf8_lossy(&output.stdout);
        let rps = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("no Requests/sec in wrk output: {text}"))?;
        let bad = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok((rps, bad))
    }

    /// Per workload: builds every variant's app once, then runs `wrk` on each in `rounds`
    /// rounds (each round starting with the next variant, so drift in machine load hits all
    /// of them alike); each variant reports its median run and every run, in round order.
    pub async fn run(out: &mut Out, secs: Duration, rounds: usize) {
        let redis_url = env("REDIS_URL", "redis://127.0.0.1:6399");
        let mut variants: Vec<&str> =
            vec!["none", "noop-layer", "ours/memory", "tower-sessions/memory"];
        variants.extend([
            "ours/redis",
            "ours near-cache/redis",
            "tower-sessions/redis",
        ]);
        #[cfg(feature = "sql")]
        variants.extend([
            "ours/postgres",
            "ours near-cache/postgres",
            "tower-sessions/postgres",
        ]);
        variants.retain(|v| !v.split_once('/').is_some_and(|(_, b)| skipped(b)));
        variants.retain(|v| kept("BENCH_HTTP", v));
        for w in Workload::MAIN {
            if !kept("BENCH_WORKLOADS", w.name()) {
                continue;
            }
            let mut apps = Vec::new();
            for &variant in &variants {
                let built: Res<(Router, Vec<String>)> = async {
                    Ok(match variant {
                        // The same requests (a session cookie each) to an app without a
                        // session layer.
                        "none" => (Router::new().route("/", get(plain)), random_cookies()),
                        // The same app behind a layer that does nothing: what axum charges
                        // for any layer (routing through it, boxing), session or not.
                        "noop-layer" => (
                            Router::new().route("/", get(plain)).layer(
                                tower::util::MapRequestLayer::new(
                                    |r: http::Request<axum::body::Body>| r,
                                ),
                            ),
                            random_cookies(),
                        ),
                        v if v.starts_with("ours") => {
                            let store: Arc<dyn SessionStore> = match v {
                                "ours/memory" => Arc::new(session_store::MemoryStore::new()),
                                "ours/redis" => {
                                    let st = session_store_redis::RedisStore::from_url(&redis_url)
                                        .map_err(s)?
                                        .with_prefix(prefix());
                                    st.connect().await.map_err(s)?;
                                    Arc::new(st)
                                }
                                "ours near-cache/redis" => {
                                    let st = session_store_redis::RedisStore::from_url(&redis_url)
                                        .map_err(s)?
                                        .with_prefix(prefix())
                                        .with_near_cache(
                                            session_store_redis::NearCacheConfig::new()
                                                .max_entries(200_000),
                                        )
                                        .map_err(s)?;
                                    st.connect().await.map_err(s)?;
                                    Arc::new(st)
                                }
                                #[cfg(feature = "sql")]
                                "ours near-cache/postgres" => {
                                    let st = session_store_sqlx::PostgresStore::connect(&env(
                                        "POSTGRES_URL",
                                        "postgres://postgres@127.0.0.1:5432/session_bench",
                                    ))
                                    .await
                                    .map_err(s)?
                                    .with_table_name("sessions_near")
                                    .map_err(s)?
                                    .with_near_cache(
                                        session_store_sqlx::NearCacheConfig::new()
                                            .max_entries(200_000),
                                    )
                                    .map_err(s)?;
                                    st.migrate().await.map_err(s)?;
                                    Arc::new(st)
                                }
                                #[cfg(feature = "sql")]
                                _ => {
                                    let st = session_store_sqlx::PostgresStore::connect(&env(
                                        "POSTGRES_URL",
                                        "postgres://postgres@127.0.0.1:5432/session_bench",
                                    ))
                                    .await
                                    .map_err(s)?;
                                    st.migrate().await.map_err(s)?;
                                    Arc::new(st)
                                }
                                #[cfg(not(feature = "sql"))]
                                _ => return Err("no sql".into()),
                            };
                            let lib = Ours::new(store)?;
                            let cookies = if w == Workload::New {
                                Vec::new()
                            } else {
                                let mut c = Vec::new();
                                for _ in 0..SEEDS {
                                    c.push(lib.seed().await?);
                                }
                                c
                            };
                            let manager = if w == Workload::Touch {
                                lib.touching.clone()
                            } else {
                                lib.plain.clone()
                            };
                            (ours_app(manager, w), cookies)
                        }
                        "tower-sessions/memory" => {
                            let store = tower_sessions::MemoryStore::default();
                            let lib = Tower::new(store.clone());
                            let cookies = seed_n(&lib, w).await?;
                            (tower_app(store, w), cookies)
                        }
                        "tower-sessions/redis" => {
                            use tower_sessions_redis_store::fred::prelude::*;
                            let config = Config::from_url(&redis_url).map_err(s)?;
                            let pool = Pool::new(config, None, None, None, 8).map_err(s)?;
                            pool.init().await.map_err(s)?;
                            let store = tower_sessions_redis_store::RedisStore::new(pool);
                            let lib = Tower::new(store.clone());
                            let cookies = seed_n(&lib, w).await?;
                            (tower_app(store, w), cookies)
                        }
                        #[cfg(feature = "sql")]
                        "tower-sessions/postgres" => {
                            let pool = tower_sessions_sqlx_store::sqlx::PgPool::connect(&env(
                                "POSTGRES_URL",
                                "postgres://postgres@127.0.0.1:5432/session_bench",
                            ))
                            .await
                            .map_err(s)?;
                            let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
                            store.migrate().await.map_err(s)?;
                            let lib = Tower::new(store.clone());
                            let cookies = seed_n(&lib, w).await?;
                            (tower_app(store, w), cookies)
                        }
                        other => return Err(format!("unknown variant {other}")),
                    })
                }
                .await;
                match built {
                    Ok((app, cookies)) => apps.push((variant, app, cookies)),
                    Err(e) => eprintln!("http {variant}/{}: {e}", w.name()),
                }
            }
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); apps.len()];
            let mut bad = vec![0u64; apps.len()];
            for round in 0..rounds {
                for k in 0..apps.len() {
                    let at = (round + k) % apps.len();
                    let (variant, app, cookies) = &apps[at];
                    match wrk(app.clone(), cookies, secs).await {
                        Ok((rps, b)) => {
                            samples[at].push(rps);
                            bad[at] += b;
                        }
                        Err(e) => eprintln!("http {variant}/{}: {e}", w.name()),
                    }
                }
            }
            for (at, (variant, _, _)) in apps.iter().enumerate() {
                let mut sorted = samples[at].clone();
                if sorted.is_empty() {
                    continue;
                }
                sorted.sort_by(f64::total_cmp);
                out.emit(json!({
                    "section": "http", "variant": variant, "workload": w.name(),
                    "requests_per_sec": sorted[sorted.len() / 2], "samples": samples[at],
                    "non_2xx": bad[at],
                }));
            }
        }
    }

    /// Cookies of sessions that exist nowhere, for the apps without sessions.
    fn random_cookies() -> Vec<String> {
        (0..SEEDS)
            .map(|_| IdGenerator::nanoid().generate().as_str().to_owned())
            .collect()
    }

    async fn seed_n<S: tower_sessions::SessionStore>(
        lib: &Tower<S>,
        w: Workload,
    ) -> Res<Vec<String>> {
        let mut c = Vec::new();
        if w != Workload::New {
            for _ in 0..SEEDS {
                c.push(lib.seed().await?);
            }
        }
        Ok(c)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(path) = args.first() else {
        eprintln!("usage: peers OUT.jsonl [store|manager|cost|http|trips|memory]...");
        return;
    };
    let sections: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    let want = |s: &str| sections.is_empty() || sections.contains(&s);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open output");
    let mut out = Out { file };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let run_secs = secs("BENCH_SECS", 1);
        if want("memory") {
            let n = env("BENCH_SESSIONS", "1000000")
                .parse()
                .unwrap_or(1_000_000);
            memory(&mut out, n).await;
        }
        // The plain stores' memory per session (issue #25), each in a process of its own as
        // `memory` is: `bash scripts/bench.sh memory memory-plain memory-encoded` runs each
        // section in its own process.
        let n: usize = env("BENCH_SESSIONS", "1000000")
            .parse()
            .unwrap_or(1_000_000);
        if sections.contains(&"memory-plain") {
            memory_of(
                &mut out,
                "plain",
                n,
                |clock| {
                    PlainMemoryStore::with_clock(clock)
                        .with_sweep_interval(Duration::from_secs(3600 * 24 * 365))
                },
                PlainMemoryStore::sweep,
                PlainMemoryStore::len,
            )
            .await;
        }
        if sections.contains(&"memory-encoded") {
            memory_of(
                &mut out,
                "plain-encoded",
                n,
                |clock| {
                    EncodedMemoryStore::with_clock(clock)
                        .with_sweep_interval(Duration::from_secs(3600 * 24 * 365))
                },
                EncodedMemoryStore::sweep,
                EncodedMemoryStore::len,
            )
            .await;
        }
        if want("cost") {
            let libs = libraries(&["memory"]).await;
            cost(&mut out, 7, Duration::from_secs(1), &libs).await;
        }
        if want("store") || want("manager") {
            let libs = libraries(&[]).await;
            let rounds = secs("BENCH_ROUNDS", 7).as_secs().max(1) as usize;
            if want("store") {
                throughput(&mut out, "store", 64, rounds, run_secs, &libs).await;
            }
            if want("manager") {
                throughput(&mut out, "manager", 64, rounds, run_secs, &libs).await;
            }
        }
        let redis = NEAR_CACHED.get().and_then(|s| s.near_cache_stats());
        #[cfg(feature = "sql")]
        let postgres = NEAR_CACHED_PG.get().and_then(|s| s.near_cache_stats());
        #[cfg(not(feature = "sql"))]
        let postgres = None;
        for (backend, stats) in [("redis", redis), ("postgres", postgres)] {
            let Some(stats) = stats else { continue };
            out.emit(json!({
                "section": "near-cache", "backend": backend, "hits": stats.hits,
                "misses": stats.misses, "invalidations": stats.invalidations,
                "flushes": stats.flushes, "evictions": stats.evictions,
            }));
        }
        if want("trips") {
            trips(&mut out, 200).await;
        }
        if want("http") {
            let rounds = secs("HTTP_ROUNDS", 9).as_secs().max(1) as usize;
            web::run(&mut out, secs("WRK_SECS", 2), rounds).await;
        }
    });
    let _ = std::fs::remove_dir_all(sqlite_dir());
}
