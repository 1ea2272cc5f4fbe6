//! Starts the demo binary as a process on a free port and drives it over HTTP.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{StatusCode, header};
use session_store::SessionStore;
use session_store_mongodb::MongoStore;
use session_store_redis::RedisStore;
use session_store_sqlx::{MySqlStore, PostgresStore, SqliteStore};
use session_tests::{Client, Reply};

const DEMO: &str = env!("CARGO_BIN_EXE_session-demo");

/// The running demo; killed when dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo with `args` (plus `--listen 127.0.0.1:0`) and waits for its
    /// `listening on http://ADDR` line.
    fn start(args: &[&str]) -> Demo {
        Self::start_with(args, Stdio::inherit())
    }

    fn start_with(args: &[&str], stderr: Stdio) -> Demo {
        let mut child = Command::new(DEMO)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("SESSION_STORE")
            .env_remove("SESSION_SECRET")
            .env_remove("SESSION_MAX_AGE")
            .env_remove("SESSION_TOUCH_AFTER")
            .env_remove("SESSION_ABSOLUTE_LIFETIME")
            .env_remove("SESSION_COOKIE_NAME")
            .env_remove("SESSION_SECURE")
            .env_remove("SESSION_SAME_SITE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the demo binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("the demo did not start within 120 s");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("a socket address");
        Demo { child, addr }
    }
}

fn visited(n: u64) -> String {
    format!("In this session, you have visited this website {n} time(s).")
}

/// The `Max-Age` of a `Set-Cookie` value, if it has one.
fn max_age_of(set_cookie: &str) -> Option<u64> {
    set_cookie.split(';').find_map(|attr| {
        let (name, value) = attr.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| value.parse().expect("a numeric Max-Age"))
    })
}

/// Whether a `Set-Cookie` value makes a browser-session cookie (no `Max-Age`, no `Expires`).
fn is_browser_session(set_cookie: &str) -> bool {
    let lower = set_cookie.to_ascii_lowercase();
    !lower.contains("max-age") && !lower.contains("expires")
}

/// The demo's whole flow. `revocable`: whether a stale cookie stops working (every store; not
/// cookie-only sessions, whose old cookies stay valid until they expire).
async fn counter_login_whoami_logout(args: &[&str], revocable: bool) {
    let demo = Demo::start(args);
    let c = Client::new(demo.addr);
    let r = c.get("/").await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, visited(1)));
    let first = c.cookie("sid").expect("a session cookie");
    assert!(
        r.set_cookie()
            .starts_with(&format!("sid={first}; HttpOnly; Path=/")),
        "{}",
        r.set_cookie()
    );
    assert_eq!(c.get("/").await.body, visited(2));
    assert_eq!(c.get("/").await.body, visited(3));

    let r = c.get("/whoami").await;
    assert_eq!(r.body, "You are not logged in. Visits in this session: 3.");
    assert!(r.set_cookies().is_empty(), "whoami modifies nothing");

    let r = c.post("/login?user=alice").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            StatusCode::OK,
            "Logged in as alice, until the browser is closed."
        )
    );
    assert!(is_browser_session(&r.set_cookie()), "{}", r.set_cookie());
    let second = c.cookie("sid").expect("a session cookie");
    assert_ne!(second, first, "login regenerates the id");
    assert_eq!(
        c.get("/whoami").await.body,
        "You are alice. Visits in this session: 3.",
        "the data stayed"
    );
    // The pre-login id is dead.
    if revocable {
        let stale = Client::new(demo.addr);
        stale.set_cookie("sid", &first);
        assert_eq!(
            stale.get("/whoami").await.body,
            "You are not logged in. Visits in this session: 0."
        );
    }
    assert_eq!(c.get("/").await.body, visited(4));

    // "Remember me": the store keeps the session's own lifetime with its record.
    let r = c.post("/login?user=bob&remember=1").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::OK, "Logged in as bob, remembered for 30 days.")
    );
    assert_eq!(
        max_age_of(&r.set_cookie()),
        Some(2_592_000),
        "{}",
        r.set_cookie()
    );
    let third = c.cookie("sid").expect("a session cookie");
    assert_ne!(third, second, "login regenerates the id");
    assert_eq!(
        c.get("/whoami").await.body,
        "You are bob. Visits in this session: 4."
    );
    assert_eq!(c.get("/").await.body, visited(5));
    let second = third;

    let r = c.post("/logout").await;
    assert_eq!(r.body, "Logged out.");
    assert!(
        r.set_cookie().contains("Max-Age=0"),
        "the cookie is cleared"
    );
    assert!(c.cookie("sid").is_none());
    if revocable {
        let gone = Client::new(demo.addr);
        gone.set_cookie("sid", &second);
        assert_eq!(
            gone.get("/whoami").await.body,
            "You are not logged in. Visits in this session: 0."
        );
    }
    assert_eq!(c.get("/").await.body, visited(1));
    assert_ne!(c.cookie("sid").expect("a new session"), second);
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test]
async fn memory_store() {
    counter_login_whoami_logout(&[], true).await;
}

#[tokio::test]
async fn redis_store() {
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    counter_login_whoami_logout(&["--store", &url], true).await;
}

#[tokio::test]
async fn redis_store_with_the_near_cache() {
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    counter_login_whoami_logout(&["--store", &url, "--near-cache"], true).await;
}

#[tokio::test]
async fn redis_cluster_store() {
    let urls = env_or(
        "REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002",
    );
    let nodes: Vec<&str> = urls
        .split(',')
        .map(|u| u.trim_start_matches("redis://"))
        .collect();
    let url = format!("redis+cluster://{}", nodes.join(","));
    counter_login_whoami_logout(&["--store", &url], true).await;
}

#[tokio::test]
async fn mongodb_store() {
    let url = env_or(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27917/?directConnection=true",
    );
    counter_login_whoami_logout(&["--store", &url], true).await;
}

#[tokio::test]
async fn postgres_store() {
    let url = env_or("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    counter_login_whoami_logout(&["--store", &url], true).await;
}

#[tokio::test]
async fn postgres_store_with_the_near_cache() {
    let url = env_or("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    counter_login_whoami_logout(&["--store", &url, "--near-cache"], true).await;
}

#[tokio::test]
async fn mysql_store() {
    let url = env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    counter_login_whoami_logout(&["--store", &url], true).await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = std::env::temp_dir().join(format!("session-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    counter_login_whoami_logout(&["--store", &url], true).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cookie_only_sessions() {
    counter_login_whoami_logout(&["--store", "cookie", "--secret", &"k".repeat(32)], false).await;
}

// ---------------------------------------------------------------------------------------
// A user's sessions: listing, revoking one, logging out everywhere.

/// A user name no other test (or earlier run against a shared store) has used.
fn unique_user(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// One entry of `GET /sessions`.
#[derive(Debug, serde::Deserialize)]
struct Listed {
    handle: String,
    created: Option<String>,
    last_seen: String,
    expires: String,
    label: Option<String>,
    current: bool,
}

/// `GET /sessions` as `client`: its list, which must mark exactly one session current.
async fn list(client: &Client) -> Vec<Listed> {
    let r = client.get("/sessions").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let list: Vec<Listed> =
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(
        list.iter().filter(|s| s.current).count(),
        1,
        "one current session: {list:?}"
    );
    list
}

/// Logs `client` in as `user` with `User-Agent: agent` (none if `None`).
async fn login_as(client: &Client, user: &str, agent: Option<&str>) {
    let path = format!("/login?user={user}&remember=1");
    let r = match agent {
        Some(agent) => {
            client
                .request_with(http::Method::POST, &path, &[(header::USER_AGENT, agent)])
                .await
        }
        None => client.post(&path).await,
    };
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn whoami(client: &Client) -> String {
    client.get("/whoami").await.body
}

fn logged_out(r: &Reply) -> bool {
    r.set_cookies().iter().any(|c| c.contains("Max-Age=0"))
}

/// Two devices ("phone", "laptop": two cookie jars) of one user, on the demo started with
/// `args`: each lists both sessions with its own marked current; one revokes the other by
/// handle; logging out everywhere ends both; another user's handle revokes nothing.
async fn two_devices(args: &[&str]) {
    let demo = Demo::start(args);
    let user = unique_user("ann");
    let (phone, laptop) = (Client::new(demo.addr), Client::new(demo.addr));

    // Not logged in (with or without a session): 401.
    assert_eq!(
        phone.get("/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(phone.get("/").await.body, visited(1));
    for r in [
        phone.get("/sessions").await,
        phone.post("/sessions/revoke?handle=x").await,
        phone.post("/logout-everywhere").await,
    ] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }

    login_as(&phone, &user, Some("Phone/1.0")).await;
    login_as(&laptop, &user, Some("Laptop/2.0")).await;
    let (on_phone, on_laptop) = (list(&phone).await, list(&laptop).await);
    assert_eq!(on_phone.len(), 2, "{on_phone:?}");
    assert_eq!(on_laptop.len(), 2, "{on_laptop:?}");
    let label_of_current = |list: &[Listed]| {
        list.iter()
            .find(|s| s.current)
            .and_then(|s| s.label.clone())
    };
    assert_eq!(label_of_current(&on_phone).as_deref(), Some("Phone/1.0"));
    assert_eq!(label_of_current(&on_laptop).as_deref(), Some("Laptop/2.0"));
    let handle_of = |list: &[Listed], label: &str| {
        list.iter()
            .find(|s| s.label.as_deref() == Some(label))
            .map(|s| s.handle.clone())
            .unwrap_or_else(|| panic!("no {label} in {list:?}"))
    };
    // Both devices see the same two sessions, each its own as current.
    let laptop_handle = handle_of(&on_phone, "Laptop/2.0");
    assert_eq!(laptop_handle, handle_of(&on_laptop, "Laptop/2.0"));
    assert_eq!(
        handle_of(&on_phone, "Phone/1.0"),
        handle_of(&on_laptop, "Phone/1.0")
    );
    for s in &on_phone {
        assert!(s.created.is_some(), "{s:?}");
        assert!(
            s.last_seen.ends_with('Z') && s.expires.ends_with('Z'),
            "{s:?}"
        );
        assert!(s.last_seen < s.expires, "{s:?}");
        assert!(
            !s.handle.is_empty()
                && phone
                    .cookie("sid")
                    .is_some_and(|id| !id.contains(&s.handle)),
            "a handle is not the id"
        );
    }

    // Another user (no User-Agent: labelled "unknown") cannot revoke ann's session.
    let other = Client::new(demo.addr);
    login_as(&other, &unique_user("bob"), None).await;
    let theirs = list(&other).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].label.as_deref(), Some("unknown"));
    let r = other
        .post(&format!("/sessions/revoke?handle={laptop_handle}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(
        whoami(&laptop)
            .await
            .starts_with(&format!("You are {user}."))
    );
    let r = phone.post("/sessions/revoke?handle=no-such-handle").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(
        phone.post("/sessions/revoke").await.status,
        StatusCode::BAD_REQUEST
    );

    // The phone revokes the laptop: the laptop's next request is logged out.
    let r = phone
        .post(&format!("/sessions/revoke?handle={laptop_handle}"))
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "Revoked."));
    assert!(r.set_cookies().is_empty(), "the phone stays logged in");
    assert!(whoami(&laptop).await.starts_with("You are not logged in."));
    assert!(
        whoami(&phone)
            .await
            .starts_with(&format!("You are {user}."))
    );
    let on_phone = list(&phone).await;
    assert_eq!(on_phone.len(), 1, "{on_phone:?}");
    // A revoked handle is gone.
    let r = phone
        .post(&format!("/sessions/revoke?handle={laptop_handle}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // Logging out everywhere ends both devices' sessions and clears the caller's cookie.
    login_as(&laptop, &user, Some("Laptop/2.0")).await;
    assert_eq!(list(&phone).await.len(), 2);
    let r = laptop.post("/logout-everywhere").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            StatusCode::OK,
            "Logged out 2 session(s), this one included."
        )
    );
    assert!(logged_out(&r), "{:?}", r.set_cookies());
    assert!(laptop.cookie("sid").is_none());
    assert!(whoami(&phone).await.starts_with("You are not logged in."));
    assert!(whoami(&laptop).await.starts_with("You are not logged in."));
    assert_eq!(
        laptop.get("/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );

    // `?others=1` keeps the caller's session.
    login_as(&phone, &user, Some("Phone/1.0")).await;
    login_as(&laptop, &user, Some("Laptop/2.0")).await;
    let r = phone.post("/logout-everywhere?others=1").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            StatusCode::OK,
            "Logged out 1 other session(s); this one stays."
        )
    );
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    assert!(whoami(&laptop).await.starts_with("You are not logged in."));
    let on_phone = list(&phone).await;
    assert_eq!(on_phone.len(), 1, "{on_phone:?}");
    // Revoking one's own session by handle logs out too.
    let r = phone
        .post(&format!("/sessions/revoke?handle={}", on_phone[0].handle))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(logged_out(&r), "{:?}", r.set_cookies());
    assert!(whoami(&phone).await.starts_with("You are not logged in."));
    // The other user was never touched.
    assert_eq!(list(&other).await.len(), 1);
}

/// A store that cannot find a user's sessions answers 501 with a reason, never an empty
/// list, and logging out everywhere changes nothing.
async fn sessions_not_implemented(args: &[&str], reason: &str) {
    let demo = Demo::start(args);
    let c = Client::new(demo.addr);
    let user = unique_user("ann");
    login_as(&c, &user, Some("Phone/1.0")).await;
    for r in [
        c.get("/sessions").await,
        c.post("/sessions/revoke?handle=x").await,
        c.post("/logout-everywhere").await,
        c.post("/logout-everywhere?others=1").await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{}", r.body);
        assert!(r.body.contains(reason), "{}", r.body);
        assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    }
    assert!(whoami(&c).await.starts_with(&format!("You are {user}.")));
}

/// Runs [`two_devices`] if the store claims the owners capability now, else checks that the
/// demo answers 501 (stores gain the capability one by one).
async fn sessions_of_a_user(store: &dyn SessionStore, args: &[&str]) {
    if store.capabilities().owners {
        two_devices(args).await;
    } else {
        eprintln!(
            "the `{}` store does not index sessions by user yet: checking the 501 answer only",
            store.name()
        );
        sessions_not_implemented(args, "keeps no index of sessions by user").await;
    }
}

#[tokio::test]
async fn sessions_of_a_user_memory() {
    two_devices(&[]).await;
}

#[tokio::test]
async fn sessions_of_a_user_mongodb() {
    let url = env_or(
        "MONGODB_URL",
        "mongodb://127.0.0.1:27917/?directConnection=true",
    );
    let store = MongoStore::from_url(&url).await.unwrap();
    assert!(store.capabilities().owners);
    two_devices(&["--store", &url]).await;
}

#[tokio::test]
async fn sessions_of_a_user_redis() {
    let url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let store = RedisStore::from_url(&url).unwrap();
    sessions_of_a_user(&store, &["--store", &url]).await;
}

#[tokio::test]
async fn sessions_of_a_user_redis_cluster() {
    let urls = env_or(
        "REDIS_CLUSTER_URLS",
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002",
    );
    let store = RedisStore::cluster_from_urls(urls.split(',')).unwrap();
    let nodes: Vec<&str> = urls
        .split(',')
        .map(|u| u.trim_start_matches("redis://"))
        .collect();
    let url = format!("redis+cluster://{}", nodes.join(","));
    sessions_of_a_user(&store, &["--store", &url]).await;
}

#[tokio::test]
async fn sessions_of_a_user_postgres() {
    let url = env_or("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    let store = PostgresStore::connect(&url).await.unwrap();
    sessions_of_a_user(&store, &["--store", &url]).await;
}

#[tokio::test]
async fn sessions_of_a_user_mysql() {
    let url = env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    let store = MySqlStore::connect(&url).await.unwrap();
    sessions_of_a_user(&store, &["--store", &url]).await;
}

#[tokio::test]
async fn sessions_of_a_user_sqlite() {
    let dir = std::env::temp_dir().join(format!("session-demo-owners-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("sessions.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    sessions_of_a_user(&store, &["--store", &url]).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cookie_only_sessions_cannot_be_listed() {
    sessions_not_implemented(
        &["--store", "cookie", "--secret", &"k".repeat(32)],
        "Cookie-only sessions live in the browser",
    )
    .await;
}

#[tokio::test]
async fn signed_cookies_and_max_age() {
    let demo = Demo::start(&[
        "--secret",
        "keyboard cat",
        "--max-age",
        "1h",
        "--touch-after",
        "0",
    ]);
    let c = Client::new(demo.addr);
    let r = c.get("/").await;
    assert_eq!(r.body, visited(1));
    let cookie = r.set_cookie();
    assert!(cookie.starts_with("sid=s%3A"), "{cookie}");
    assert!(cookie.contains("; Max-Age=3600; Expires="), "{cookie}");
    let r = c.get("/").await;
    assert_eq!(r.body, visited(2));
    assert!(
        r.set_cookie().contains("Max-Age=3600"),
        "touchAfter 0 rolls the expiry"
    );
    // A tampered signature is no session.
    let value = c.cookie("sid").expect("a session cookie");
    c.set_cookie("sid", &value.replace("s%3A", "s%3AX"));
    assert_eq!(c.get("/").await.body, visited(1));
}

#[test]
fn unreachable_or_unbuilt_stores_fail_at_start_up() {
    for (url, expected) in [
        (
            "redis://:hunter2@127.0.0.1:1",
            "cannot open the `redis` store",
        ),
        (
            "mysql://root:hunter2@127.0.0.1:1/test",
            "cannot open the `mysql` store: session store `mysql` is unavailable: \
             connection refused at 127.0.0.1:1",
        ),
        (
            "postgres://postgres:hunter2@127.0.0.1:1/test",
            "cannot open the `postgres` store: session store `postgres` is unavailable: \
             connection refused at 127.0.0.1:1",
        ),
    ] {
        let mut child = Command::new(DEMO)
            .args(["--store", url, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the demo binary");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        let status = child.wait().expect("the demo exits");
        assert!(!status.success());
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    let output = Command::new(DEMO)
        .arg("--bogus")
        .output()
        .expect("run the demo");
    assert_eq!(output.status.code(), Some(2));
}

/// A `redis-server` of this test's own on a free port; killed when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/services.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, port }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once_a_second_not_once_a_request() {
    let mut redis = OwnRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut demo = Demo::start_with(&["--store", &url], Stdio::piped());
    let stderr = demo.child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let c = Client::new(demo.addr);
    assert_eq!(c.get("/").await.body, visited(1));

    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let started = std::time::Instant::now();
    let requests = 60;
    for _ in 0..requests {
        let r = c.get("/").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers.get("retry-after").map(|v| v.to_str().unwrap()),
            Some("1")
        );
    }
    let seconds = started.elapsed().as_secs() + 1;
    drop(demo);
    let log = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo's stderr");
    let failures = log
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("session store failed"))
        .count();
    assert!(failures >= 1, "the outage was not logged: {log}");
    assert!(
        failures as u64 <= seconds + 1,
        "{failures} error lines for {requests} failed requests in {seconds} s: {log}"
    );
}

#[tokio::test]
async fn login_with_and_without_remember_me() {
    let demo = Demo::start(&[]);
    let c = Client::new(demo.addr);
    assert_eq!(c.get("/").await.body, visited(1));
    let anonymous = c.cookie("sid").expect("a session cookie");

    let r = c.post("/login?user=alice&remember=1").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            StatusCode::OK,
            "Logged in as alice, remembered for 30 days."
        )
    );
    let cookie = r.set_cookie();
    assert_eq!(max_age_of(&cookie), Some(2_592_000), "{cookie}");
    assert!(cookie.contains("; Expires="), "{cookie}");
    assert_ne!(c.cookie("sid").expect("a session cookie"), anonymous);
    assert_eq!(c.get("/").await.body, visited(2), "the counter goes on");
    assert_eq!(
        c.get("/whoami").await.body,
        "You are alice. Visits in this session: 2."
    );

    // Logging in again without remember=1 makes it a browser-session cookie.
    let r = c.post("/login?user=alice&remember=0").await;
    assert_eq!(r.body, "Logged in as alice, until the browser is closed.");
    assert!(is_browser_session(&r.set_cookie()), "{}", r.set_cookie());
    assert_eq!(c.get("/").await.body, visited(3));

    let fresh = Client::new(demo.addr);
    let r = fresh.post("/login?user=bob").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            StatusCode::OK,
            "Logged in as bob, until the browser is closed."
        )
    );
    let cookie = r.set_cookie();
    assert!(cookie.starts_with("sid="), "{cookie}");
    assert!(is_browser_session(&cookie), "{cookie}");
    assert_eq!(
        fresh.get("/whoami").await.body,
        "You are bob. Visits in this session: 0."
    );

    // Bad input is refused and changes nothing.
    let long = format!("/login?user={}", "x".repeat(33));
    for path in [
        "/login?user=",
        "/login?user=a%20b",
        long.as_str(),
        "/login?user=carol&remember=maybe",
    ] {
        let r = c.post(path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert!(r.set_cookies().is_empty(), "{path}: {:?}", r.set_cookies());
    }
    assert_eq!(
        c.get("/whoami").await.body,
        "You are alice. Visits in this session: 3."
    );
}

#[tokio::test]
async fn login_without_remember_me_overrides_max_age() {
    let demo = Demo::start(&["--max-age", "1h"]);
    let c = Client::new(demo.addr);
    let r = c.get("/").await;
    assert_eq!(max_age_of(&r.set_cookie()), Some(3600));
    let r = c.post("/login?user=alice").await;
    assert!(is_browser_session(&r.set_cookie()), "{}", r.set_cookie());
    let r = c.post("/login?user=alice&remember=1").await;
    assert_eq!(max_age_of(&r.set_cookie()), Some(2_592_000));
}

#[test]
fn a_bad_absolute_lifetime_is_refused_at_start_up() {
    let run = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(DEMO);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("SESSION_ABSOLUTE_LIFETIME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(value) = env {
            command.env("SESSION_ABSOLUTE_LIFETIME", value);
        }
        // A refused value exits before listening; an accepted one would serve until killed.
        let mut child = command.spawn().expect("start the demo binary");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the demo") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the demo accepted {args:?} {env:?} and kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        (status.code(), stderr)
    };
    for value in [
        "0",
        "0s",
        "soon",
        "5w",
        "401d",
        "-1s",
        "99999999999999999999d",
    ] {
        for (args, env) in [
            (vec!["--absolute-lifetime", value], None),
            (vec![], Some(value)),
        ] {
            let (code, stderr) = run(&args, env);
            assert_eq!(code, Some(2), "{value:?}: {stderr}");
            assert!(
                stderr.contains("session-demo: --absolute-lifetime: "),
                "{value:?}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{value:?}: {stderr}");
        }
    }
    let (code, stderr) = run(&["--absolute-lifetime"], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("`--absolute-lifetime` needs a value"),
        "{stderr}"
    );
}

/// A session stops being recognised once its absolute lifetime has passed, although every
/// request extends it (`--touch-after 0`) and it is remembered for 30 days.
#[tokio::test]
async fn absolute_lifetime_ends_even_active_sessions() {
    const LIFETIME: Duration = Duration::from_secs(2);
    let demo = Demo::start(&["--absolute-lifetime", "2s", "--touch-after", "0"]);
    let c = Client::new(demo.addr);
    // The session starts no earlier than this.
    let started = Instant::now();
    assert_eq!(c.get("/").await.body, visited(1));
    let r = c.post("/login?user=alice&remember=1").await;
    assert_eq!(r.body, "Logged in as alice, remembered for 30 days.");
    // The cookie never outlives the absolute lifetime.
    let max_age = max_age_of(&r.set_cookie()).expect("a Max-Age");
    assert!(max_age <= LIFETIME.as_secs(), "{}", r.set_cookie());
    // From the header, not the jar: a cookie answered with `Max-Age=0` (possible on a slow
    // machine) leaves the jar at once.
    let logged_in = r
        .set_cookie()
        .strip_prefix("sid=")
        .and_then(|rest| rest.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let r = c.get("/whoami").await;
    if started.elapsed() < LIFETIME / 2 {
        // Answered well within the lifetime (not guaranteed on a loaded machine, hence the
        // condition): the session was still there.
        assert_eq!(r.body, "You are alice. Visits in this session: 1.");
    }

    // Keep using it until it is gone: the counter goes on, then starts again.
    let deadline = started + Duration::from_secs(60);
    let mut visits = 1;
    loop {
        let body = c.get("/").await.body;
        if body == visited(1) {
            break;
        }
        visits += 1;
        assert_eq!(body, visited(visits));
        assert!(
            Instant::now() < deadline,
            "the session outlived its absolute lifetime by far ({visits} visits)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Never before its time (less one second for the rounding of cookie lifetimes).
    assert!(
        started.elapsed() >= LIFETIME - Duration::from_secs(1),
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.get("/whoami").await.body,
        "You are not logged in. Visits in this session: 1."
    );
    assert_ne!(c.cookie("sid"), Some(logged_in.clone()));
    let stale = Client::new(demo.addr);
    stale.set_cookie("sid", &logged_in);
    assert_eq!(
        stale.get("/whoami").await.body,
        "You are not logged in. Visits in this session: 0."
    );
}
