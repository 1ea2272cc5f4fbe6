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
use session_store::express::CREATED_KEY;
use session_store::time::format_description::well_known::Rfc3339;
use session_store::time::{OffsetDateTime, PrimitiveDateTime, format_description};
use session_store_redis::redis;
use session_store_sqlx::sqlx;
use session_tests::Client;

/// A short `maxAge` for the expiry and touch scenarios: whole seconds, long enough that a
/// slow request on a loaded machine does not matter.
pub const SHORT: Duration = Duration::from_secs(4);
/// The `maxAge` of the sharing scenarios: nothing expires during them.
pub const LONG: Duration = Duration::from_secs(3600);
/// How long a poll for an expiry may take.
pub const EXPIRY_DEADLINE: Duration = Duration::from_secs(40);
/// The "remember me" lifetime of the lifetime scenarios: 30 days, far from [`LONG`] and
/// from [`BROWSER_SESSION_TTL`].
pub const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the store keeps a browser-session cookie's record from its last extension:
/// connect-redis's default `ttl`, connect-pg-simple's one day, session-store's default idle
/// lifetime.
pub const BROWSER_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far an expiry may be from the one expected: requests on a loaded machine, whole
/// seconds in cookies and in connect-pg-simple's `expire`. Far below the differences the
/// lifetime scenarios look for (an hour at least).
pub const EXPIRY_SLACK: Duration = Duration::from_secs(30);
/// How far below its `originalMaxAge` express-session may store it after a request: each
/// of its touches (`resetMaxAge`) sets `expires = Date.now() + originalMaxAge` and then
/// `originalMaxAge = expires - Date.now()`, a millisecond less whenever the clock ticks
/// between the two calls.
pub const NODE_MAX_AGE_DRIFT_MS: u64 = 1000;

/// Lower-case letters and digits, for table names.
pub const LOWER: [char; 36] = [
    'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's',
    't', 'u', 'v', 'w', 'x', 'y', 'z', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9',
];

/// A random secret shared by both apps.
pub fn secret() -> String {
    format!("interop secret {}", nanoid::nanoid!(16))
}

/// The two apps of one scenario, over one store, and that store read directly.
pub struct Pair {
    pub node: NodeApp,
    pub rust: RustApp,
    pub raw: RawStore,
}

/// The shared store, read around both apps: what is stored for a session and its expiry.
pub enum RawStore {
    /// connect-redis: key `prefix + id`, the key's expiry.
    Redis {
        connection: redis::aio::MultiplexedConnection,
        prefix: String,
    },
    /// connect-pg-simple: table `table`, columns `sess` and `expire` (UTC).
    Postgres { pool: sqlx::PgPool, table: String },
}

/// One session as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The express-session JSON.
    pub sess: Value,
    /// The store's own expiry (the key's expiry, the `expire` column).
    pub expires: OffsetDateTime,
}

impl Stored {
    /// `cookie.originalMaxAge`.
    pub fn original_max_age(&self) -> &Value {
        &self.sess["cookie"]["originalMaxAge"]
    }

    /// `cookie.expires`.
    pub fn cookie_expires(&self) -> &Value {
        &self.sess["cookie"]["expires"]
    }

    /// The creation time the Rust side keeps (`__created`), if any.
    pub fn created(&self) -> Option<OffsetDateTime> {
        let text = self.sess.get(CREATED_KEY)?;
        let text = text
            .as_str()
            .unwrap_or_else(|| panic!("{CREATED_KEY} is not a string: {}", self.sess));
        Some(
            OffsetDateTime::parse(text, &Rfc3339)
                .unwrap_or_else(|e| panic!("{CREATED_KEY} is not ISO-8601 ({e}): {text}")),
        )
    }
}

impl RawStore {
    /// What the store holds for session `id`, read past both apps; `None` if nothing.
    pub async fn read(&self, id: &str) -> Option<Stored> {
        let (json, expires_ms) = match self {
            Self::Redis { connection, prefix } => {
                let key = format!("{prefix}{id}");
                let mut connection = connection.clone();
                let (value, expires_ms): (Option<String>, i64) = redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PEXPIRETIME")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_else(|e| panic!("read {key} from Redis: {e}"));
                let value = value?;
                assert!(expires_ms > 0, "{key} has no expiry ({expires_ms})");
                (value, i128::from(expires_ms))
            }
            Self::Postgres { pool, table } => {
                let sql = format!(
                    "SELECT sess::text, (extract(epoch FROM expire) * 1000)::float8 \
                     FROM \"{table}\" WHERE sid = $1"
                );
                let row: Option<(String, f64)> = sqlx::query_as(&sql)
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .unwrap_or_else(|e| panic!("read from table {table}: {e}"));
                let (value, expires_ms) = row?;
                (value, expires_ms.round() as i128)
            }
        };
        let sess = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("stored session is not JSON ({e}): {json}"));
        let expires = OffsetDateTime::from_unix_timestamp_nanos(expires_ms * 1_000_000)
            .expect("expiry in range");
        Some(Stored { sess, expires })
    }

    /// Like [`RawStore::read`], for a session that must be there.
    pub async fn expect(&self, id: &str) -> Stored {
        self.read(id)
            .await
            .unwrap_or_else(|| panic!("no stored session under the browser's id"))
    }
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
        self.exchange(app, method, path).await.body
    }

    /// Like [`Browser::call`], also returning the answer's `Set-Cookie` headers for
    /// `connect.sid`.
    pub async fn exchange(&self, app: App, method: Method, path: &str) -> Answer {
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
        let prefix = format!("{COOKIE_NAME}=");
        let set_cookies: Vec<String> = reply
            .set_cookies()
            .into_iter()
            .filter(|c| c.starts_with(&prefix))
            .collect();
        if !set_cookies.is_empty() {
            self.set_cookie(client.cookie(COOKIE_NAME));
        }
        let body = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{app:?} {path}: body is not JSON ({e}): {}", reply.body));
        Answer { body, set_cookies }
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

/// One answer: its JSON body and its `connect.sid` cookies.
#[derive(Debug)]
pub struct Answer {
    pub body: Value,
    pub set_cookies: Vec<String>,
}

impl Answer {
    /// The only `connect.sid` cookie set; fails the test if there is none or several.
    pub fn set_cookie(&self, what: &str) -> &str {
        match self.set_cookies.as_slice() {
            [one] => one,
            other => panic!("{what}: expected one Set-Cookie for connect.sid, got {other:?}"),
        }
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

// ---------------------------------------------------------------------------------------
// Per-session lifetimes ("remember me", browser-session cookies)

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The `?ms=` of `/remember` for `lifetime` (`None`: a browser-session cookie).
fn ms_of(lifetime: Option<Duration>) -> Value {
    lifetime.map_or(Value::Null, |d| json!(d.as_millis() as u64))
}

/// How long the store keeps a session of `lifetime` from its last extension.
fn store_ttl(lifetime: Option<Duration>) -> Duration {
    lifetime.unwrap_or(BROWSER_SESSION_TTL)
}

/// `at` lies between `from` and `to`, give or take [`EXPIRY_SLACK`].
fn assert_between(at: OffsetDateTime, from: OffsetDateTime, to: OffsetDateTime, what: &str) {
    assert!(
        at >= from - EXPIRY_SLACK && at <= to + EXPIRY_SLACK,
        "{what}: {at} is not between {from} and {to} (± {EXPIRY_SLACK:?})"
    );
}

/// The value of the cookie attribute `name` (case-insensitive), if present.
fn attribute<'c>(set_cookie: &'c str, name: &str) -> Option<&'c str> {
    set_cookie.split(';').skip(1).find_map(|part| {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// An HTTP date (`Thu, 01 Jan 2026 00:00:00 GMT`), as both apps write `Expires`.
fn http_date(text: &str) -> OffsetDateTime {
    let format = format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .expect("a valid format description");
    PrimitiveDateTime::parse(text, &format)
        .unwrap_or_else(|e| panic!("not an HTTP date ({e}): {text}"))
        .assume_utc()
}

/// A cookie of `lifetime`: with `Expires` between `from` and `to` plus the lifetime (and,
/// if `max_age`, a `Max-Age` of the lifetime in whole seconds, ±1); or, for a
/// browser-session cookie, neither attribute.
fn assert_cookie_lifetime(
    set_cookie: &str,
    lifetime: Option<Duration>,
    (from, to): (OffsetDateTime, OffsetDateTime),
    max_age: bool,
    what: &str,
) {
    let Some(d) = lifetime else {
        assert!(
            attribute(set_cookie, "Max-Age").is_none()
                && attribute(set_cookie, "Expires").is_none(),
            "{what}: a browser-session cookie has no Max-Age and no Expires: {set_cookie}"
        );
        return;
    };
    let expires = attribute(set_cookie, "Expires")
        .unwrap_or_else(|| panic!("{what}: no Expires in {set_cookie}"));
    assert_between(
        http_date(expires),
        from + d,
        to + d,
        &format!("{what}: Expires"),
    );
    if max_age {
        let seconds: u64 = attribute(set_cookie, "Max-Age")
            .unwrap_or_else(|| panic!("{what}: no Max-Age in {set_cookie}"))
            .parse()
            .unwrap_or_else(|e| panic!("{what}: Max-Age is not a number ({e}): {set_cookie}"));
        assert!(
            seconds.abs_diff(d.as_secs()) <= 1,
            "{what}: Max-Age={seconds}, expected {} (±1): {set_cookie}",
            d.as_secs()
        );
    }
}

/// `cookie.originalMaxAge` as express-session stored it after a request of its own: the
/// lifetime in ms (up to [`NODE_MAX_AGE_DRIFT_MS`] below, see there), or `null`.
fn assert_node_original_max_age(stored: &Stored, lifetime: Option<Duration>, what: &str) {
    let original = stored.original_max_age();
    match lifetime {
        None => assert_eq!(original, &Value::Null, "{what}: {}", stored.sess),
        Some(d) => {
            let ms = d.as_millis() as u64;
            let got = original
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: originalMaxAge is no number: {}", stored.sess));
            assert!(
                got <= ms && got > ms - NODE_MAX_AGE_DRIFT_MS,
                "{what}: originalMaxAge {got}, expected {ms}: {}",
                stored.sess
            );
        }
    }
}

/// `cookie.expires` as this lifetime wants it: between `from` and `to` plus the lifetime,
/// or `null` for a browser-session cookie.
fn assert_cookie_expires(
    stored: &Stored,
    lifetime: Option<Duration>,
    (from, to): (OffsetDateTime, OffsetDateTime),
    what: &str,
) {
    let expires = stored.cookie_expires();
    match lifetime {
        None => assert_eq!(expires, &Value::Null, "{what}: {}", stored.sess),
        Some(d) => {
            let text = expires.as_str().unwrap_or_else(|| {
                panic!("{what}: cookie.expires is not a string: {}", stored.sess)
            });
            let at = OffsetDateTime::parse(text, &Rfc3339)
                .unwrap_or_else(|e| panic!("{what}: cookie.expires ({e}): {text}"));
            assert_between(at, from + d, to + d, &format!("{what}: cookie.expires"));
        }
    }
}

/// The store's expiry is the lifetime (or the browser-session TTL) from the window.
fn assert_store_expiry(
    stored: &Stored,
    lifetime: Option<Duration>,
    (from, to): (OffsetDateTime, OffsetDateTime),
    what: &str,
) {
    let ttl = store_ttl(lifetime);
    assert_between(
        stored.expires,
        from + ttl,
        to + ttl,
        &format!("{what}: the store's expiry"),
    );
}

/// Node chooses a session's lifetime (`req.session.cookie.maxAge = N`, or `null` for a
/// browser-session cookie; `lifetime` here); Rust modifies and touches the session and keeps
/// that lifetime: its cookie's `Max-Age`, the store's expiry, and `cookie.originalMaxAge`
/// exactly as Node stored it. Node then reads the session with Rust's creation time hidden.
pub async fn node_lifetime_is_kept_by_rust(pair: &Pair, lifetime: Option<Duration>) {
    let ms = ms_of(lifetime);
    let browser = Browser::new(pair);

    // Node creates the session with its own lifetime.
    let from = now();
    let answer = browser
        .exchange(App::Node, Method::POST, &format!("/remember?ms={ms}"))
        .await;
    let window = (from, now());
    assert_eq!(answer.body["data"], json!({"remember": ms}));
    // express-session computes `originalMaxAge` from the clock (NODE_MAX_AGE_DRIFT_MS).
    let node_max_age = &answer.body["maxAge"];
    match lifetime {
        None => assert_eq!(node_max_age, &Value::Null),
        Some(d) => assert!(
            node_max_age
                .as_u64()
                .is_some_and(|n| n.abs_diff(d.as_millis() as u64) < NODE_MAX_AGE_DRIFT_MS),
            "Node's maxAge: {node_max_age}"
        ),
    }
    assert_cookie_lifetime(
        answer.set_cookie("Node POST /remember"),
        lifetime,
        window,
        false,
        "Node's cookie",
    );
    let id = id_of(&browser.cookie().expect("Node set connect.sid"));
    let stored = pair.raw.expect(&id).await;
    assert_node_original_max_age(&stored, lifetime, "stored by Node");
    assert_cookie_expires(&stored, lifetime, window, "stored by Node");
    assert_store_expiry(&stored, lifetime, window, "stored by Node");
    assert_eq!(stored.created(), None, "Node wrote no creation time");
    let original = stored.original_max_age().clone();

    // Rust reads and modifies it: the lifetime is kept as Node stored it.
    assert_eq!(
        browser.read(App::Rust).await,
        json!({"exists": true, "data": {"remember": ms}})
    );
    let from = now();
    let answer = browser.exchange(App::Rust, Method::GET, "/count").await;
    let written = (from, now());
    assert_eq!(answer.body, json!({"views": 1}));
    for set_cookie in &answer.set_cookies {
        // A modification need not send the cookie; if it does, with the session's lifetime.
        assert_cookie_lifetime(set_cookie, lifetime, written, true, "Rust's /count cookie");
    }
    let stored = pair.raw.expect(&id).await;
    assert_eq!(
        stored.original_max_age(),
        &original,
        "Rust's write changed Node's originalMaxAge: {}",
        stored.sess
    );
    // Not extended by the write: still Node's expiry.
    assert_cookie_expires(&stored, lifetime, window, "written by Rust");
    assert_store_expiry(&stored, lifetime, window, "written by Rust");
    let created = stored
        .created()
        .unwrap_or_else(|| panic!("Rust's write keeps a creation time: {}", stored.sess));
    assert_between(created, window.0, written.1, "the creation time");
    assert_eq!(stored.sess["remember"], ms);
    assert_eq!(stored.sess["views"], 1);

    // Rust touches it: extended by the session's own lifetime, not the app's maxAge.
    let from = now();
    let answer = browser.exchange(App::Rust, Method::GET, "/touch").await;
    let touched = (from, now());
    assert_eq!(
        answer.body,
        json!({"exists": true, "data": {"remember": ms, "views": 1}})
    );
    if lifetime.is_some() {
        assert_cookie_lifetime(
            answer.set_cookie("Rust GET /touch"),
            lifetime,
            touched,
            true,
            "Rust's touch cookie",
        );
    }
    for set_cookie in &answer.set_cookies {
        assert_cookie_lifetime(set_cookie, lifetime, touched, true, "Rust's touch cookie");
    }
    let stored = pair.raw.expect(&id).await;
    assert_eq!(
        stored.original_max_age(),
        &original,
        "Rust's touch changed originalMaxAge: {}",
        stored.sess
    );
    assert_store_expiry(&stored, lifetime, touched, "touched by Rust");
    assert_eq!(stored.created(), Some(created));

    // Node sees Rust's change, not the creation time; its own write keeps both.
    assert_eq!(
        browser.read(App::Node).await,
        json!({"exists": true, "data": {"remember": ms, "views": 1}}),
    );
    let from = now();
    assert_eq!(browser.get(App::Node, "/count").await, json!({"views": 2}));
    let window = (from, now());
    let stored = pair.raw.expect(&id).await;
    assert_node_original_max_age(&stored, lifetime, "written by Node again");
    assert_cookie_expires(&stored, lifetime, window, "written by Node again");
    assert_store_expiry(&stored, lifetime, window, "written by Node again");
    assert_eq!(
        stored.created(),
        Some(created),
        "Node kept the creation time"
    );
    assert_eq!(
        browser.read(App::Rust).await,
        json!({"exists": true, "data": {"remember": ms, "views": 2}})
    );
}

/// Rust chooses a session's lifetime (`Session::set_max_age`, `None` for a browser-session
/// cookie); Node reads and modifies the session and keeps that lifetime: its cookie's
/// `Expires`, the store's expiry, `cookie.originalMaxAge`; the data round-trips without the
/// creation time.
pub async fn rust_lifetime_is_kept_by_node(pair: &Pair, lifetime: Option<Duration>) {
    let ms = ms_of(lifetime);
    let browser = Browser::new(pair);

    // Rust creates the session with its own lifetime.
    let from = now();
    let answer = browser
        .exchange(App::Rust, Method::POST, &format!("/remember?ms={ms}"))
        .await;
    let window = (from, now());
    assert_eq!(
        answer.body,
        json!({"exists": false, "data": {"remember": ms}, "maxAge": ms})
    );
    assert_cookie_lifetime(
        answer.set_cookie("Rust POST /remember"),
        lifetime,
        window,
        true,
        "Rust's cookie",
    );
    let id = id_of(&browser.cookie().expect("Rust set connect.sid"));
    let stored = pair.raw.expect(&id).await;
    assert_eq!(stored.original_max_age(), &ms, "{}", stored.sess);
    assert_cookie_expires(&stored, lifetime, window, "stored by Rust");
    assert_store_expiry(&stored, lifetime, window, "stored by Rust");
    let created = stored
        .created()
        .unwrap_or_else(|| panic!("Rust stores a creation time: {}", stored.sess));
    assert_between(created, window.0, window.1, "the creation time");

    // Node reads and modifies it with that lifetime.
    assert_eq!(
        browser.read(App::Node).await,
        json!({"exists": true, "data": {"remember": ms}})
    );
    let from = now();
    let answer = browser.exchange(App::Node, Method::GET, "/count").await;
    let window = (from, now());
    assert_eq!(answer.body, json!({"views": 1}));
    if lifetime.is_some() {
        // express-session sends the cookie of a modified session that has an expiry.
        assert_cookie_lifetime(
            answer.set_cookie("Node GET /count"),
            lifetime,
            window,
            false,
            "Node's cookie",
        );
    }
    for set_cookie in &answer.set_cookies {
        assert_cookie_lifetime(set_cookie, lifetime, window, false, "Node's cookie");
    }
    let stored = pair.raw.expect(&id).await;
    assert_node_original_max_age(&stored, lifetime, "written by Node");
    assert_cookie_expires(&stored, lifetime, window, "written by Node");
    assert_store_expiry(&stored, lifetime, window, "written by Node");
    assert_eq!(
        stored.created(),
        Some(created),
        "Node kept the creation time"
    );
    assert_eq!(stored.sess["remember"], ms);
    assert_eq!(stored.sess["views"], 1);

    // Rust sees Node's change.
    assert_eq!(
        browser.read(App::Rust).await,
        json!({"exists": true, "data": {"remember": ms, "views": 1}})
    );
    assert_eq!(
        browser.read(App::Node).await,
        json!({"exists": true, "data": {"remember": ms, "views": 1}})
    );
}

/// Each app changes the lifetime of a session the other one chose it for: Rust turns Node's
/// "remember me" session into a browser-session one, which Node keeps; Node then chooses
/// another lifetime, which Rust keeps.
pub async fn lifetime_changes_are_kept_by_the_other(pair: &Pair) {
    let week = Duration::from_secs(7 * 24 * 3600);
    let browser = Browser::new(pair);
    let answer = browser
        .exchange(
            App::Node,
            Method::POST,
            &format!("/remember?ms={}", ms_of(Some(REMEMBER))),
        )
        .await;
    assert_eq!(
        answer.body["data"],
        json!({"remember": ms_of(Some(REMEMBER))})
    );
    let id = id_of(&browser.cookie().expect("Node set connect.sid"));

    // Rust: a browser-session cookie from now on.
    let from = now();
    let answer = browser
        .exchange(App::Rust, Method::POST, "/remember?ms=null")
        .await;
    let window = (from, now());
    assert_eq!(
        answer.body,
        json!({"exists": true, "data": {"remember": null}, "maxAge": null})
    );
    assert_cookie_lifetime(
        answer.set_cookie("Rust POST /remember on Node's session"),
        None,
        window,
        true,
        "Rust's cookie",
    );
    let stored = pair.raw.expect(&id).await;
    assert_eq!(stored.original_max_age(), &Value::Null, "{}", stored.sess);
    assert_cookie_expires(&stored, None, window, "changed by Rust");
    assert_store_expiry(&stored, None, window, "changed by Rust");

    // Node keeps it: no expiry on its cookie, one day in the store.
    let from = now();
    let answer = browser.exchange(App::Node, Method::GET, "/count").await;
    let window = (from, now());
    assert_eq!(answer.body, json!({"views": 1}));
    for set_cookie in &answer.set_cookies {
        assert_cookie_lifetime(set_cookie, None, window, false, "Node's cookie");
    }
    let stored = pair.raw.expect(&id).await;
    assert_node_original_max_age(&stored, None, "written by Node");
    assert_store_expiry(&stored, None, window, "written by Node");

    // Node: a week.
    let from = now();
    let answer = browser
        .exchange(
            App::Node,
            Method::POST,
            &format!("/remember?ms={}", ms_of(Some(week))),
        )
        .await;
    let window = (from, now());
    assert_eq!(
        answer.body["data"],
        json!({"remember": ms_of(Some(week)), "views": 1})
    );
    assert_cookie_lifetime(
        answer.set_cookie("Node POST /remember on a stored session"),
        Some(week),
        window,
        false,
        "Node's cookie",
    );
    let stored = pair.raw.expect(&id).await;
    assert_node_original_max_age(&stored, Some(week), "changed by Node");
    let original = stored.original_max_age().clone();

    // Rust keeps it on its touch.
    let from = now();
    let answer = browser.exchange(App::Rust, Method::GET, "/touch").await;
    let touched = (from, now());
    assert_eq!(
        answer.body,
        json!({"exists": true, "data": {"remember": ms_of(Some(week)), "views": 1}})
    );
    assert_cookie_lifetime(
        answer.set_cookie("Rust GET /touch"),
        Some(week),
        touched,
        true,
        "Rust's touch cookie",
    );
    let stored = pair.raw.expect(&id).await;
    assert_eq!(stored.original_max_age(), &original, "{}", stored.sess);
    assert_store_expiry(&stored, Some(week), touched, "touched by Rust");
}
