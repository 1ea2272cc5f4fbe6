//! A fixed number of manager-level requests on each library's in-memory store, for counting
//! instructions under `valgrind --tool=cachegrind` (steady where timings on a shared
//! machine are not). `bash scripts/bench.sh instructions` runs it for every workload.
//!
//! `cargo run --release --manifest-path benches/peers/Cargo.toml --example ops -- ours read 20000`
//!
//! Libraries: `ours`, `tower-sessions` (in-memory stores), `plain` and `plain-encoded` (our
//! manager on the plain stores of `src/plain.rs`: `Record` clones, payload envelopes), `ours-redis`, `near-redis` (with the near-cache) and `floor-redis`
//! (the raw `redis` client) against `REDIS_URL` (default `redis://127.0.0.1:6379`), and
//! `ours-pg`, `near-pg` (with the near-cache), `tower-pg` (tower-sessions-sqlx-store) and `floor-pg` (raw sqlx) against
//! `POSTGRES_URL`, whose counts are the client's side only; `axum-ours` and `axum-none` (the HTTP bench's axum app
//! with our `SessionLayer` on MemoryStore, and without a session layer), called in process
//! with a request carrying the session cookie, so that their difference is everything the
//! layer adds to a request apart from the network; `axum-noop` is the app without sessions
//! behind a layer that does nothing, for what axum charges for any layer. Workloads: `read`, `write`, `new`,
//! `touch`, or `none` (set-up only, to subtract).
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use session_peer_benches::plain::{EncodedMemoryStore, PlainMemoryStore};
use session_peer_benches::{blob, small_keys};
use session_store::{MemoryStore, SessionManager};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lib = args.first().map_or("ours", String::as_str).to_owned();
    let workload = args.get(1).map_or("read", String::as_str).to_owned();
    let n: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match lib.as_str() {
            "ours" => ours(MemoryStore::new(), &workload, n).await,
            "plain" => ours(PlainMemoryStore::new(), &workload, n).await,
            "plain-encoded" => ours(EncodedMemoryStore::new(), &workload, n).await,
            "ours-redis" => {
                let store = session_store_redis::RedisStore::from_url(&redis_url())
                    .expect("redis url")
                    .with_prefix("ops:");
                store.connect().await.expect("redis");
                ours(store, &workload, n).await
            }
            "near-redis" => {
                let store = session_store_redis::RedisStore::from_url(&redis_url())
                    .expect("redis url")
                    .with_prefix("ops:")
                    .with_near_cache(session_store_redis::NearCacheConfig::new())
                    .expect("near-cache");
                store.connect().await.expect("redis");
                ours(store, &workload, n).await
            }
            "floor-redis" => floor_redis(&workload, n).await,
            "ours-pg" => {
                let store = session_store_sqlx::PostgresStore::connect(&postgres_url())
                    .await
                    .expect("postgres")
                    .with_table_name("ops_sessions")
                    .expect("table name");
                store.migrate().await.expect("migrate");
                ours(store, &workload, n).await
            }
            "near-pg" => {
                let store = session_store_sqlx::PostgresStore::connect(&postgres_url())
                    .await
                    .expect("postgres")
                    .with_table_name("ops_sessions_near")
                    .expect("table name")
                    .with_near_cache(session_store_sqlx::NearCacheConfig::new())
                    .expect("near-cache");
                store.migrate().await.expect("migrate");
                ours(store, &workload, n).await
            }
            "tower-pg" => {
                let pool = sqlx::PgPool::connect(&postgres_url())
                    .await
                    .expect("postgres");
                let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
                store.migrate().await.expect("migrate");
                tower(Arc::new(store), &workload, n).await
            }
            "floor-pg" => floor_pg(&workload, n).await,
            "tower-sessions" => {
                tower(
                    Arc::new(tower_sessions::MemoryStore::default()),
                    &workload,
                    n,
                )
                .await
            }
            "axum-ours" => app(App::Ours, &workload, n).await,
            "axum-none" => app(App::Plain, &workload, n).await,
            "axum-noop" => app(App::Noop, &workload, n).await,
            other => panic!("unknown library {other}"),
        }
    });
}

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The raw sqlx client doing what the bench's raw floor does per request, on a connection
/// acquired for each statement as the floor does: `SELECT` (read), `SELECT` + upsert
/// (write), with a 1.3 KB payload.
async fn floor_pg(workload: &str, n: u64) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .test_before_acquire(false)
        .connect(&postgres_url())
        .await
        .expect("postgres");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS raw_sessions (id TEXT PRIMARY KEY, \
         data BYTEA NOT NULL, expires TIMESTAMPTZ NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("table");
    let upsert = "INSERT INTO raw_sessions (id, data, expires) \
                  VALUES ($1, $2, now() + interval '1 hour') ON CONFLICT (id) \
                  DO UPDATE SET data = EXCLUDED.data, expires = EXCLUDED.expires";
    let payload = vec![7u8; 1300];
    let key = "ops:floor";
    let mut conn = pool.acquire().await.expect("acquire");
    sqlx::query(upsert)
        .bind(key)
        .bind(&payload)
        .execute(&mut *conn)
        .await
        .expect("seed");
    drop(conn);
    for _ in 0..n {
        if workload == "none" {
            break;
        }
        let mut conn = pool.acquire().await.expect("acquire");
        let (data,): (Vec<u8>,) =
            sqlx::query_as("SELECT data FROM raw_sessions WHERE id = $1 AND expires > now()")
                .bind(key)
                .fetch_one(&mut *conn)
                .await
                .expect("select");
        drop(conn);
        if workload == "write" {
            let mut conn = pool.acquire().await.expect("acquire");
            sqlx::query(upsert)
                .bind(key)
                .bind(&data)
                .execute(&mut *conn)
                .await
                .expect("upsert");
        }
        std::hint::black_box(data);
    }
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The raw `redis` client doing what the bench's raw floor does per request: `GET` (read),
/// `GET` + `SET … PXAT` (write), with the same 1 KB payload.
async fn floor_redis(workload: &str, n: u64) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let payload = vec![7u8; 1300];
    let key = "ops:floor";
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(&payload)
        .query_async(&mut conn)
        .await
        .expect("seed");
    for _ in 0..n {
        match workload {
            "none" => break,
            "write" => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .expect("get");
                let _: () = redis::cmd("SET")
                    .arg(key)
                    .arg(&v)
                    .arg("PX")
                    .arg(3_600_000)
                    .query_async(&mut conn)
                    .await
                    .expect("set");
            }
            _ => {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .expect("get");
                std::hint::black_box(v);
            }
        }
    }
}

/// Stores the bench's session (the small keys, the counter `n`, the 1 KB `blob`); returns
/// its id.
async fn seed(manager: &SessionManager) -> String {
    let seed = manager.new_session();
    for (k, v) in small_keys() {
        seed.insert(k, v).expect("insert");
    }
    seed.insert("n", 0u64).expect("insert");
    seed.insert("blob", blob()).expect("insert");
    seed.commit().await.expect("commit");
    seed.id().as_str().to_owned()
}

async fn ours(store: impl session_store::SessionStore + Clone, workload: &str, n: u64) {
    let build = |touch: Option<Duration>| {
        let mut b = SessionManager::builder(store.clone())
            .cookie_name("sid")
            .idle_lifetime(Duration::from_secs(3600));
        if let Some(t) = touch {
            b = b.touch_after(t);
        }
        b.build().expect("manager")
    };
    let (plain, touching) = (build(None), build(Some(Duration::ZERO)));
    let cookie = seed(&plain).await;
    for _ in 0..n {
        let manager = if workload == "touch" {
            &touching
        } else {
            &plain
        };
        let session = match workload {
            "none" => break,
            "new" => manager.load_value(None).await,
            _ => manager.load_value(Some(&cookie)).await,
        }
        .expect("load");
        match workload {
            "write" => {
                let v: u64 = session.get("n").expect("get").expect("n");
                session.insert("n", v + 1).expect("insert");
            }
            "new" => session.insert("user", "alice").expect("insert"),
            _ => {
                let v: Option<String> = session.get("k3").expect("get");
                assert!(v.is_some());
            }
        }
        let mut headers = HeaderMap::new();
        manager
            .finish(&session, StatusCode::OK, &mut headers)
            .await
            .expect("finish");
        std::hint::black_box(headers);
    }
}

/// What `SessionManagerLayer` does around a handler (as in the `peers` bench): a session
/// loaded on first use, saved when modified (always, for the rolling expiry of `touch`),
/// then its cookie.
async fn tower(store: Arc<impl tower_sessions::SessionStore>, workload: &str, n: u64) {
    use tower_sessions::{Expiry, Session};
    let seed = Session::new(None, store.clone(), None);
    for (k, v) in small_keys() {
        seed.insert(&k, v).await.expect("insert");
    }
    seed.insert("n", 0u64).await.expect("insert");
    seed.insert("blob", blob()).await.expect("insert");
    seed.save().await.expect("save");
    let cookie = seed.id().expect("id").to_string();
    for _ in 0..n {
        let (id, expiry) = match workload {
            "none" => break,
            "new" => (None, None),
            "touch" => (
                Some(cookie.parse().expect("id")),
                Some(Expiry::OnInactivity(time::Duration::hours(1))),
            ),
            _ => (Some(cookie.parse().expect("id")), None),
        };
        let session = Session::new(id, store.clone(), expiry);
        match workload {
            "write" => {
                let v: u64 = session.get("n").await.expect("get").expect("n");
                session.insert("n", v + 1).await.expect("insert");
            }
            "new" => session.insert("user", "alice").await.expect("insert"),
            _ => {
                let v: Option<String> = session.get("k3").await.expect("get");
                assert!(v.is_some());
            }
        }
        let always_save = workload == "touch";
        if (session.is_modified() || always_save) && !session.is_empty().await {
            session.save().await.expect("save");
            let id = session.id().expect("id");
            let mut cookie = tower_sessions::cookie::Cookie::build(("id", id.to_string()))
                .http_only(true)
                .same_site(tower_sessions::cookie::SameSite::Strict)
                .secure(true)
                .path("/");
            if let Some(Expiry::OnInactivity(d)) = session.expiry() {
                cookie = cookie.max_age(d);
            }
            let mut headers = HeaderMap::new();
            headers.append(
                http::header::SET_COOKIE,
                http::HeaderValue::from_str(&cookie.build().encoded().to_string()).expect("header"),
            );
            std::hint::black_box(headers);
        }
    }
}

/// The HTTP bench's axum apps.
#[derive(Clone, Copy, PartialEq)]
enum App {
    /// No session layer.
    Plain,
    /// No session layer, behind a layer that does nothing
    /// (`tower::util::MapRequestLayer` with the identity): what any layer costs in axum.
    Noop,
    /// Our `SessionLayer` on MemoryStore.
    Ours,
}

/// One of the HTTP bench's apps called in process, `n` times, with the session cookie
/// (except for `new`).
async fn app(kind: App, workload: &str, n: u64) {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use session_store_tower::{Session, SessionLayer};
    use tower::ServiceExt as _;

    let plain = || Router::new().route("/", get(|| async { "value-3" }));
    let (app, cookie) = match kind {
        App::Plain => (plain(), format!("sid={}", "x".repeat(21))),
        App::Noop => (
            plain().layer(tower::util::MapRequestLayer::new(
                |r: http::Request<Body>| r,
            )),
            format!("sid={}", "x".repeat(21)),
        ),
        App::Ours => {
            let mut builder = SessionManager::builder(MemoryStore::new())
                .cookie_name("sid")
                .idle_lifetime(Duration::from_secs(3600));
            if workload == "touch" {
                builder = builder.touch_after(Duration::ZERO);
            }
            let manager = builder.build().expect("manager");
            let cookie = format!("sid={}", seed(&manager).await);
            let route = match workload {
                "write" => get(|Session(s): Session| async move {
                    let n: u64 = s.get("n").ok().flatten().unwrap_or(0);
                    let _ = s.insert("n", n + 1);
                    "ok"
                }),
                "new" => get(|Session(s): Session| async move {
                    let _ = s.insert("user", "alice");
                    "ok"
                }),
                _ => get(|Session(s): Session| async move {
                    s.get::<String>("k3").ok().flatten().unwrap_or_default()
                }),
            };
            let app = Router::new()
                .route("/", route)
                .layer(SessionLayer::new(manager));
            (app, cookie)
        }
    };
    for _ in 0..n {
        if workload == "none" {
            break;
        }
        let mut request = http::Request::get("/");
        if workload != "new" {
            request = request.header(http::header::COOKIE, &cookie);
        }
        let request = request.body(Body::empty()).expect("request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert!(response.status().is_success());
        std::hint::black_box(response);
    }
}
