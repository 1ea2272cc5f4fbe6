//! Parallel requests of one session, as a page's parallel fetches send them: on a healthy
//! store none fails, and increments through `Session::update` all land. Every store.
//!
//! `cargo test -p session-reliability --test parallel -- --nocapture` prints a `FIGURES`
//! line per store; `PARALLEL_MATRIX=1` measures 6, 8, 16 and 50 parallel requests in 10
//! rounds each (RELIABILITY.md), instead of the test's 16 in 5 rounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_reliability::raw_http::{get_request, send_raw};
use session_reliability::{app, unique};
use session_store::{MemoryStore, SessionManager, SessionStore};
use session_store_mongodb::MongoStore;
use session_store_redis::RedisStore;
use session_store_sqlx::{MySqlStore, PostgresStore, SqliteStore};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `GET path` carrying the session cookie, on a connection of its own.
async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, String, Vec<String>) {
    let head = cookie.map_or_else(String::new, |c| format!("Cookie: sid={c}\r\n"));
    let reply = send_raw(
        addr,
        &get_request(path, head.as_bytes()),
        Duration::from_secs(30),
    )
    .await
    .expect("an answer");
    (reply.status, reply.text(), reply.set_cookies())
}

/// What `parallel` requests of one session did over `rounds` rounds, on one path.
#[derive(Debug, Default)]
struct Outcome {
    requests: usize,
    failed: usize,
    statuses: Vec<u16>,
    set_cookies: usize,
    slowest: Duration,
}

/// `rounds` rounds of `parallel` simultaneous `GET path` of the session `cookie`.
async fn rounds(
    addr: SocketAddr,
    path: &str,
    cookie: &str,
    parallel: usize,
    rounds: usize,
) -> Outcome {
    let mut out = Outcome::default();
    for _ in 0..rounds {
        let tasks: Vec<_> = (0..parallel)
            .map(|_| {
                let (path, cookie) = (path.to_owned(), cookie.to_owned());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let reply = get(addr, &path, Some(&cookie)).await;
                    (reply, started.elapsed())
                })
            })
            .collect();
        for task in tasks {
            let ((status, _, set_cookies), took) = task.await.expect("a request task");
            out.requests += 1;
            out.slowest = out.slowest.max(took);
            out.set_cookies += set_cookies.len();
            if status != 200 {
                out.failed += 1;
                if !out.statuses.contains(&status) {
                    out.statuses.push(status);
                }
            }
        }
    }
    out
}

/// Runs the parallel rounds against `store`; asserts no failure at 16 parallel and that
/// every acknowledged `update` landed.
async fn check(name: &str, store: Arc<dyn SessionStore>) {
    let manager = SessionManager::builder_arc(store).build().expect("manager");
    let app = app::serve(manager).await;
    let matrix = std::env::var("PARALLEL_MATRIX").is_ok_and(|v| v == "1");
    let (levels, per_level): (&[usize], usize) = if matrix {
        (&[6, 8, 16, 50], 10)
    } else {
        (&[16], 5)
    };
    for &parallel in levels {
        for path in ["/count", "/update"] {
            // A session of its own for each run: one request creates it.
            let (status, _, cookies) = get(app.addr, path, None).await;
            assert_eq!(status, 200, "{name}: creating the session");
            let cookie = cookies[0].split(';').next().unwrap();
            let cookie = cookie.strip_prefix("sid=").unwrap().to_owned();
            let outcome = rounds(app.addr, path, &cookie, parallel, per_level).await;
            let (_, count, _) = get(app.addr, "/read", Some(&cookie)).await;
            let count: usize = count.trim().parse().expect("a count");
            let acknowledged = 1 + outcome.requests - outcome.failed;
            println!(
                "FIGURES parallel store={name} path={path} parallel={parallel} rounds={per_level} \
                 requests={} failed={} ({:.1} %) statuses={:?} set_cookies={} slowest={:?} \
                 acknowledged={acknowledged} stored={count}",
                outcome.requests,
                outcome.failed,
                100.0 * outcome.failed as f64 / outcome.requests as f64,
                outcome.statuses,
                outcome.set_cookies,
                outcome.slowest,
            );
            assert!(
                outcome.statuses.iter().all(|s| *s == 503),
                "{name} {path}: only 503 may answer a commit that cannot land: {outcome:?}"
            );
            if parallel <= 16 {
                assert_eq!(outcome.failed, 0, "{name} {path} x{parallel}: {outcome:?}");
            }
            // An existing session's cookie is not sent again (no max-age, no touch).
            assert_eq!(outcome.set_cookies, 0, "{name} {path}: {outcome:?}");
            if path == "/update" {
                assert_eq!(
                    count, acknowledged,
                    "{name}: every acknowledged update landed"
                );
            } else {
                assert!(count >= 1 && count <= acknowledged, "{name}: {count}");
            }
        }
    }
    assert!(app.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    check("memory", Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    let store = RedisStore::from_url(&env_or("REDIS_URL", "redis://127.0.0.1:6379"))
        .expect("redis url")
        .with_prefix(format!("{}:", unique("parallel")));
    store.connect().await.expect("Redis must run at REDIS_URL");
    check("redis", Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let store = PostgresStore::connect(&env_or(
        "POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ))
    .await
    .expect("PostgreSQL must run at POSTGRES_URL")
    .with_table_name(&unique("parallel"))
    .expect("table name");
    store.migrate().await.expect("migrate");
    check("postgres", Arc::new(store.clone())).await;
    let sql = format!("DROP TABLE \"{}\"", store.table_name());
    let _ = session_store_sqlx::sqlx::query(&sql)
        .execute(store.pool())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    let store = MySqlStore::connect(&env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
        .await
        .expect("MySQL/MariaDB must run at MYSQL_URL")
        .with_table_name(&unique("parallel"))
        .expect("table name");
    store.migrate().await.expect("migrate");
    check("mysql", Arc::new(store.clone())).await;
    let sql = format!("DROP TABLE `{}`", store.table_name());
    let _ = session_store_sqlx::sqlx::query(&sql)
        .execute(store.pool())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = std::env::temp_dir().join(unique("parallel"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    let store = SqliteStore::connect(&url).await.expect("open SQLite");
    store.migrate().await.expect("migrate");
    check("sqlite", Arc::new(store)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb() {
    let url = env_or(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27917/?directConnection=true",
    );
    let store = MongoStore::connect(&url, "reliability", &unique("parallel"))
        .await
        .expect("a MongoDB-compatible server must run at MONGODB_URL (scripts/mongo.sh start)");
    check("mongodb", Arc::new(store)).await;
}
