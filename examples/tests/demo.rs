//! Starts the demo binary as a process on a free port and drives it over HTTP.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::StatusCode;
use session_tests::Client;

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
