//! The interop scenarios, written once and run per store (`redis.rs`, `postgres.rs`): a Node
//! app (express-session) and a Rust app (session-store) on loopback share one store and one
//! secret; a browser-like client carries the `connect.sid` cookie between them (browsers
//! share cookies across ports of one host).
#![allow(dead_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use session_interop::{COOKIE_NAME, NodeApp, RustApp};
use session_tests::Client;

/// A short `maxAge` for the expiry and touch scenarios: whole seconds, long enough that a
/// slow request on a loaded machine does not matter.
pub const SHORT: Duration = Duration::from_secs(4);
/// The `maxAge` of the sharing scenarios: nothing expires during them.
pub const LONG: Duration = Duration::from_secs(3600);
/// How long a poll for an expiry may take.
pub const EXPIRY_DEADLINE: Duration = Duration::from_secs(40);

/// Lower-case letters and digits, for table names.
pub const LOWER: [char; 36] = [
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's',
    't', 'u', 'v', 'w', 'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
];

/// A random secret shared by both apps.
pub fn secret() -> String {
    format!("interop secret {}", nanoid::nanoid!(16))
}

/// The two apps of one scenario, over one store.
pub struct Pair {
    pub node: NodeApp,
    pub rust: RustApp,
}

/// Which app a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Node,
    Rust,
}

/// One browser: one jar, shared between the two apps.
pub struct Browser<'a> {
    pair: &'a Pair,
    cookie: Mutex<Option<String>>,
}

impl<'a> Browser<'a> {
    pub fn new(pair: &'a Pair) -> Self {
        Self {
            pair,
            cookie: Mutex::new(None),
        }
    }

    /// The `connect.sid` cookie value the browser holds.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    /// Replaces the cookie (to replay an old one).
    pub fn set_cookie(&self, value: Option<String>) {
        *self.cookie.lock().unwrap() = value;
    }

    /// Sends one request to `app` with the jar's cookie; keeps the answer's cookie. Returns
    /// the JSON body; fails the test on a non-2xx status.
    pub async fn call(&self, app: App, method: Method, path: &str) -> Value {
        let addr = match app {
            App::Node => self.pair.node.addr,
            App::Rust => self.pair.rust.addr,
        };
        let client = Client::new(addr);
        if let Some(cookie) = self.cookie() {
            client.set_cookie(COOKIE_NAME, &cookie);
        }
        let reply = client.request(method.clone(), path).await;
        assert!(
            reply.status.is_success(),
            "{app:?} {method} {path}: {} {}",
            reply.status,
            reply.body
        );
        // The client's jar applied Set-Cookie (a removal cookie empties it).
        if !reply.set_cookies().is_empty() {
            self.set_cookie(client.cookie(COOKIE_NAME));
        }
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{app:?} {path}: body is not JSON ({e}): {}", reply.body))
    }

    pub async fn get(&self, app: App, path: &str) -> Value {
        self.call(app, Method::GET, path).await
    }

    pub async fn post(&self, app: App, path: &str) -> Value {
        self.call(app, Method::POST, path).await
    }

    /// `/read` (Node: touches the session; Rust: never does).
    pub async fn read(&self, app: App) -> Value {
        self.get(app, "/read").await
    }

    /// `/peek`: like read, but never extends the session in either app.
    pub async fn peek(&self, app: App) -> Value {
        self.get(app, "/peek").await
    }
}

fn data(snapshot: &Value) -> &Value {
    &snapshot["data"]
}

/// The id inside a signed `connect.sid` value (`s%3A<id>.<signature>`).
fn id_of(cookie: &str) -> String {
    let unescaped = cookie.replace("%3A", ":");
    let signed = unescaped.strip_prefix("s:").expect("a signed cookie");
    signed.rsplit_once('.').expect("a signature").0.to_owned()
}

/// A session created by Node is read and modified by Rust, and Node sees the change;
/// Node's own keys survive Rust's write.
pub async fn node_session_is_read_and_modified_by_rust(pair: &Pair) {
    let browser = Browser::new(pair);
    assert_eq!(browser.get(App::Node, "/count").await, json!({"views": 1}));
    let node_cookie = browser.cookie().expect("Node set connect.sid");
    assert!(node_cookie.starts_with("s%3A"), "{node_cookie}");
    assert_eq!(id_of(&node_cookie).len(), 32, "express-session's id length");
    browser
        .post(
            App::Node,
            "/set?key=user&value=%7B%22name%22%3A%22ann%22%2C%22tags%22%3A%5B%22a%22%2Cnull%5D%7D",
        )
        .await;

    let seen = browser.read(App::Rust).await;
    assert_eq!(
        seen["exists"], true,
        "Rust did not find Node's session: {seen}"
    );
    assert_eq!(
        data(&seen),
        &json!({"views": 1, "user": {"name": "ann", "tags": ["a", null]}})
    );
    assert_eq!(browser.get(App::Rust, "/count").await, json!({"views": 2}));
    let rust_cookie = browser.cookie().expect("cookie kept");
    assert_eq!(id_of(&rust_cookie), id_of(&node_cookie), "same session id");

    let back = browser.read(App::Node).await;
    assert_eq!(
        data(&back),
        &json!({"views": 2, "user": {"name": "ann", "tags": ["a", null]}}),
        "Node does not see Rust's change"
    );
    assert_eq!(browser.get(App::Node, "/count").await, json!({"views": 3}));
    assert_eq!(data(&browser.read(App::Rust).await)["views"], 3);
}

/// A session created by Rust is read by Node (and Node's change by Rust).
pub async fn rust_session_is_read_by_node(pair: &Pair) {
    let browser = Browser::new(pair);
    assert_eq!(browser.get(App::Rust, "/count").await, json!({"views": 1}));
    let cookie = browser.cookie().expect("Rust set connect.sid");
    assert!(cookie.starts_with("s%3A"), "{cookie}");
    assert_eq!(id_of(&cookie).len(), 32);
    browser
        .post(
            App::Rust,
            "/set?key=cart&value=%5B1%2C2%2C%7B%22sku%22%3A%22x%22%7D%5D",
        )
        .await;

    let seen = browser.read(App::Node).await;
    assert_eq!(
        seen["exists"], true,
        "Node did not find Rust's session: {seen}"
    );
    assert_eq!(
        data(&seen),
        &json!({"views": 1, "cart": [1, 2, {"sku": "x"}]})
    );
    assert_eq!(browser.get(App::Node, "/count").await, json!({"views": 2}));
    assert_eq!(
        data(&browser.read(App::Rust).await),
        &json!({"views": 2, "cart": [1, 2, {"sku": "x"}]})
    );
    // A cookie whose signature does not match its id is no session for either app.
    let forged = cookie.replace(&id_of(&cookie), &"A".repeat(32));
    browser.set_cookie(Some(forged));
    assert_eq!(browser.read(App::Rust).await["exists"], false);
    assert_eq!(browser.peek(App::Node).await["exists"], false);
}

/// Logout in one app is logout in the other, both ways, even when the browser replays the
/// old cookie.
pub async fn logout_in_one_is_logout_in_the_other(pair: &Pair) {
    for (creator, other) in [(App::Node, App::Rust), (App::Rust, App::Node)] {
        for (logout_in, check_in) in [(creator, other), (other, creator)] {
            let browser = Browser::new(pair);
            browser.get(creator, "/count").await;
            let cookie = browser.cookie().expect("session cookie");
            assert_eq!(browser.peek(other).await["exists"], true);
            assert_eq!(
                browser.post(logout_in, "/logout").await,
                json!({"destroyed": true})
            );
            // The browser (or an attacker) still sends the old cookie.
            browser.set_cookie(Some(cookie));
            let after = browser.peek(check_in).await;
            assert_eq!(
                after,
                json!({"exists": false, "data": {}}),
                "created in {creator:?}, logged out in {logout_in:?}, still alive in {check_in:?}"
            );
            assert_eq!(browser.peek(logout_in).await["exists"], false);
        }
    }
}

/// Polls `/peek` of `app` until the session is gone; returns how long that took from
/// `since`. Fails after [`EXPIRY_DEADLINE`].
async fn wait_until_gone(browser: &Browser<'_>, app: App, since: Instant) -> Duration {
    loop {
        if browser.peek(app).await["exists"] == false {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < EXPIRY_DEADLINE,
            "the session never expired in {app:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The expiry one app sets is respected by the other (both apps run with `maxAge` =
/// [`SHORT`]); reading with `/peek` never extends it.
pub async fn expiry_in_one_is_respected_by_the_other(pair: &Pair) {
    for (creator, other) in [(App::Node, App::Rust), (App::Rust, App::Node)] {
        let browser = Browser::new(pair);
        let created = Instant::now();
        browser.get(creator, "/count").await;
        let alive = browser.peek(other).await;
        if created.elapsed() < SHORT - Duration::from_secs(1) {
            assert_eq!(
                alive["exists"], true,
                "{other:?} missed {creator:?}'s session"
            );
        }
        let gone_after = wait_until_gone(&browser, other, created).await;
        assert!(
            gone_after >= SHORT - Duration::from_secs(2),
            "{creator:?}'s session vanished from {other:?} after {gone_after:?}, before its maxAge"
        );
        // Gone for the creator too (connect-pg-simple rounds expiries up to whole seconds,
        // so Node may see the session up to a second longer than Rust).
        wait_until_gone(&browser, creator, created).await;
    }
}

/// A touch in one app extends the session for the other: one app touches every second for
/// more than twice `maxAge`, then the other still sees the session; without touches it
/// then expires.
pub async fn touch_in_one_is_respected_by_the_other(pair: &Pair) {
    for (creator, toucher) in [(App::Node, App::Rust), (App::Rust, App::Node)] {
        let other = if toucher == App::Node {
            App::Rust
        } else {
            App::Node
        };
        let browser = Browser::new(pair);
        browser.get(creator, "/count").await;
        let started = Instant::now();
        while started.elapsed() < SHORT * 2 + Duration::from_secs(2) {
            let seen = browser.get(toucher, "/touch").await;
            assert_eq!(
                seen["exists"], true,
                "{toucher:?} lost the session while touching it"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let seen = browser.peek(other).await;
        assert_eq!(
            seen,
            json!({"exists": true, "data": {"views": 1}}),
            "{toucher:?}'s touches were not respected by {other:?}"
        );
        let since = Instant::now();
        wait_until_gone(&browser, other, since).await;
    }
}
