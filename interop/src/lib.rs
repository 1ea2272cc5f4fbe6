#![doc = include_str!("../README.md")]
//!
//! ## This crate
//!
//! The Rust side of the end-to-end test, and the Node side's launcher:
//!
//! - [`rust_app`]: an axum app with the same routes as the Node app in `interop/node`
//!   (`/count`, `/read`, `/peek`, `/touch`, `/set`, `/remember`, `/logout`), over any
//!   [`SessionManager`].
//! - [`express_manager`]: a manager configured like express-session (cookie `connect.sid`,
//!   signed with the app's secrets, 32-character ids, JSON values).
//! - [`NodeApp`]: starts `interop/node/app.js` with the machine's Node.js on a free loopback
//!   port and stops it when dropped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use session_store::express::{COOKIE_KEY, CREATED_KEY};
use session_store::{
    Codec, CookieOptions, IdGenerator, Result, SessionManager, SessionStore, SignedCodec,
};
use session_store_tower::{Session, SessionLayer};

/// express-session's default cookie name.
pub const COOKIE_NAME: &str = "connect.sid";

/// A manager that shares sessions with express-session: cookie [`COOKIE_NAME`], the id
/// signed with `secrets` (the first signs, all verify) in cookie-signature's `s:` format,
/// 32-character ids, JSON values, cookie attributes `cookie` (use the same options for the
/// store's express layout). No `touchAfter`: a request that does not change the session
/// writes nothing, so reading never extends a session.
pub fn express_manager(
    store: impl SessionStore,
    cookie: CookieOptions,
    secrets: &[&str],
) -> Result<SessionManager> {
    SessionManager::builder(store)
        .cookie_name(COOKIE_NAME)
        .cookie(cookie)
        .codec(Codec::Json)
        .cookie_codec(SignedCodec::new(secrets)?)
        .id_generator(IdGenerator::express_compatible())
        .build()
}

/// The session's data as JSON: `{"exists": loaded from the store, "data": {key: value}}`.
/// The layout's reserved keys (`cookie`, the creation time `__created`) are not data: they
/// never appear among the session's keys.
fn snapshot(session: &Session) -> Json<Value> {
    Json(snapshot_value(session))
}

fn snapshot_value(session: &Session) -> Value {
    let mut data = BTreeMap::new();
    for key in session.keys() {
        if let Ok(Some(value)) = session.get::<Value>(&key) {
            data.insert(key, value);
        }
    }
    json!({ "exists": !session.is_new(), "data": data })
}

async fn count(session: Session) -> std::result::Result<Json<Value>, StatusCode> {
    let views = session.get::<u64>("views").ok().flatten().unwrap_or(0) + 1;
    session
        .insert("views", views)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(json!({ "views": views })))
}

async fn read(session: Session) -> Json<Value> {
    snapshot(&session)
}

async fn touch(session: Session) -> Json<Value> {
    if !session.is_new() {
        session.touch();
    }
    snapshot(&session)
}

async fn set(
    session: Session,
    Query(query): Query<BTreeMap<String, String>>,
) -> std::result::Result<Json<Value>, (StatusCode, &'static str)> {
    let key = query
        .get("key")
        .filter(|k| !k.is_empty() && *k != COOKIE_KEY && *k != CREATED_KEY);
    let Some(key) = key else {
        return Err((StatusCode::BAD_REQUEST, "bad key"));
    };
    let value: Value = serde_json::from_str(query.get("value").map_or("null", String::as_str))
        .map_err(|_| (StatusCode::BAD_REQUEST, "value is not JSON"))?;
    session.insert(key.clone(), value).map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not store the value",
        )
    })?;
    Ok(snapshot(&session))
}

/// `POST /remember?ms=N`: the session's own lifetime (`Session::set_max_age`), `ms=null` or
/// no `ms` for a browser-session cookie; also sets `remember` to N (or null), as the Node
/// app does.
async fn remember(
    session: Session,
    Query(query): Query<BTreeMap<String, String>>,
) -> std::result::Result<Json<Value>, (StatusCode, &'static str)> {
    let ms = match query.get("ms").map(String::as_str) {
        None | Some("null") => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| (StatusCode::BAD_REQUEST, "ms must be an integer or null"))?,
        ),
    };
    session
        .set_max_age(ms.map(Duration::from_millis))
        .map_err(|_| (StatusCode::BAD_REQUEST, "max age out of range"))?;
    session.insert("remember", ms).map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not store the value",
        )
    })?;
    let mut answer = snapshot_value(&session);
    answer["maxAge"] = json!(session.max_age().map(|d| d.as_millis() as u64));
    Ok(Json(answer))
}

async fn logout(session: Session) -> Json<Value> {
    session.destroy();
    Json(json!({ "destroyed": true }))
}

/// The Rust twin of `interop/node/app.js`:
///
/// | route | does |
/// |---|---|
/// | `GET /count` | `views += 1`, answers `{"views": n}` |
/// | `GET /read`, `GET /peek` | answers `{"exists": bool, "data": {...}}`, changes nothing |
/// | `GET /touch` | extends the session's expiry now (payload-free store touch) |
/// | `POST /set?key=K&value=JSON` | sets one key (not `cookie` or `__created`) |
/// | `POST /remember?ms=N` | the session's own lifetime (`ms=null` or none: browser session), and `remember = N` |
/// | `POST /logout` | destroys the session |
pub fn rust_app(manager: SessionManager) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/count", get(count))
        .route("/read", get(read))
        .route("/peek", get(read))
        .route("/touch", get(touch))
        .route("/set", post(set))
        .route("/remember", post(remember))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(manager))
}

/// A running [`rust_app`]; stops when dropped.
#[derive(Debug)]
pub struct RustApp {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RustApp {
    /// Serves [`rust_app`] over `manager` on a free loopback port.
    pub async fn start(manager: SessionManager) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = rust_app(manager);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the interop app stopped");
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for RustApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which store the Node app uses, with its settings.
#[derive(Debug, Clone)]
pub enum NodeStore {
    /// connect-redis on `url`, keys `prefix + id`.
    Redis {
        /// `redis://…`
        url: String,
        /// connect-redis's `prefix`.
        prefix: String,
    },
    /// connect-pg-simple on `url`, table `table` (which must exist).
    Postgres {
        /// `postgres://…`
        url: String,
        /// connect-pg-simple's `tableName`.
        table: String,
    },
}

/// How long [`NodeApp::start`] waits for the app to listen.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The Node app of `interop/node`, running with the machine's Node.js (`NODE`, default
/// `node`); killed when dropped. Its output is kept and printed if a test fails.
pub struct NodeApp {
    /// Where it listens (127.0.0.1, a port the app picked).
    pub addr: SocketAddr,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl std::fmt::Debug for NodeApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeApp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The Node project folder, `interop/node`.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

impl NodeApp {
    /// Starts `node app.js` with `store`, the session secret and the cookie's `maxAge`, and
    /// waits until it listens. Panics with a clear message when Node.js or the packages are
    /// missing (`bash scripts/node-interop.sh install`) or the app does not come up.
    pub fn start(store: &NodeStore, secret: &str, max_age: Duration) -> Self {
        let dir = node_dir();
        assert!(
            dir.join("node_modules/express-session/package.json")
                .is_file(),
            "the Node packages are not installed in {}: run `bash scripts/node-interop.sh install`",
            dir.display()
        );
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let mut command = Command::new(&node);
        command
            .arg("app.js")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("SECRET", secret)
            .env("MAX_AGE_MS", max_age.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match store {
            NodeStore::Redis { url, prefix } => {
                command
                    .env("STORE", "redis")
                    .env("REDIS_URL", url)
                    .env("PREFIX", prefix);
            }
            NodeStore::Postgres { url, table } => {
                command
                    .env("STORE", "pg")
                    .env("PG_URL", url)
                    .env("TABLE", table);
            }
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run `{node}` (Node.js >= 18 must be installed; NODE names it): {e}")
        });
        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = line.strip_prefix("listening on ") {
                        let _ = port_tx.send(port.trim().parse::<u16>().ok());
                    }
                    push_line(&output, &line);
                }
            });
        }
        if let Some(mut stderr) = child.stderr.take() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    push_line(&output, String::from_utf8_lossy(&buf[..n]).trim_end());
                }
            });
        }
        let port = port_rx.recv_timeout(NODE_START_TIMEOUT).ok().flatten();
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            // Give the reader threads a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the Node app did not start within {NODE_START_TIMEOUT:?}; its output:\n{}",
                lock(&output)
            );
        };
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            output,
        }
    }

    /// Everything the app printed so far.
    pub fn output(&self) -> String {
        lock(&self.output).clone()
    }
}

fn lock(output: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    output.lock().unwrap_or_else(|e| e.into_inner())
}

fn push_line(output: &Mutex<String>, line: &str) {
    let mut out = lock(output);
    // Bounded: a chatty app cannot eat the test's memory.
    if out.len() < 1 << 20 {
        out.push_str(line);
        out.push('\n');
    }
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- output of the Node app ---\n{}", self.output());
        }
    }
}
