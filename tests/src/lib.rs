//! The harness of the HTTP behaviour suite: one small app served by every integration
//! (tower/axum, actix-web, plain hyper) on a loopback port, a cookie-keeping HTTP client,
//! and a store wrapper that counts calls and can be made to fail.
//!
//! The cases live in `tests/http.rs` and run once per [`Framework`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use session_store::testing::CountingStore;
use session_store::{MemoryStore, Record, Session, SessionId, SessionManagerBuilder, SessionStore};

/// How long one HTTP exchange may take before the test fails (generous: the machine is
/// small and shared).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The app

/// What the suite's app does for `/{action}` with the request's session: the same code for
/// every integration. Returns the status and the body.
///
/// - `count`: increments `count`, answers the new value
/// - `read`: answers `count` (0 if absent) without changing anything
/// - `empty`: loads the session and does nothing with it
/// - `same`: writes `count` back with the value it has (not a modification)
/// - `touch`: extends the expiry now
/// - `destroy`, `regenerate`: as named
/// - `commit`: increments `count` and commits by hand (auto commit must not write again)
/// - `fail`: increments `count` and answers 500 (the change must not be saved)
pub async fn act(action: &str, session: &Session) -> (StatusCode, String) {
    let count = match session.get::<u64>("count") {
        Ok(count) => count.unwrap_or(0),
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "bad count".into()),
    };
    let ok = |body: String| (StatusCode::OK, body);
    let result = match action {
        "count" => session
            .insert("count", count + 1)
            .map(|()| ok((count + 1).to_string())),
        "read" | "empty" => Ok(ok(count.to_string())),
        "same" => session
            .insert("count", count)
            .map(|()| ok(count.to_string())),
        "touch" => {
            session.touch();
            Ok(ok(count.to_string()))
        }
        "destroy" => {
            session.destroy();
            Ok(ok("destroyed".into()))
        }
        "regenerate" => {
            session.regenerate();
            Ok(ok(count.to_string()))
        }
        "commit" => match session.insert("count", count + 1) {
            Ok(()) => session.commit().await.map(|()| ok((count + 1).to_string())),
            Err(e) => Err(e),
        },
        "fail" => session
            .insert("count", count + 1)
            .map(|()| (StatusCode::INTERNAL_SERVER_ERROR, "handler failed".into())),
        _ => Ok((StatusCode::NOT_FOUND, "no such action".into())),
    };
    result.unwrap_or_else(|e| (e.status_code(), "session error".into()))
}

/// The integrations under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// `session-store-tower`'s layer and axum extractor.
    Axum,
    /// `session-store-actix`'s middleware and extractor.
    Actix,
    /// `session-store-hyper`'s accept loop, auto commit off, handlers commit by hand.
    Hyper,
}

/// A running app; stops when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Stop,
}

enum Stop {
    Task(tokio::task::JoinHandle<()>),
    Actix(actix_web::dev::ServerHandle),
}

impl Drop for Server {
    fn drop(&mut self) {
        match &self.stop {
            Stop::Task(task) => task.abort(),
            // `stop` sends the command at once; its future only waits for completion.
            Stop::Actix(handle) => drop(handle.stop(false)),
        }
    }
}

impl Server {
    /// A cookie-keeping client of this server.
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

/// Serves the suite's app with `framework` on a free loopback port. For [`Framework::Hyper`]
/// the manager is built with auto commit off (the handlers commit by hand).
pub async fn spawn(framework: Framework, builder: SessionManagerBuilder) -> Server {
    match framework {
        Framework::Axum => {
            spawn_axum(session_store_tower::SessionLayer::new(
                builder.build().expect("valid manager"),
            ))
            .await
        }
        Framework::Actix => spawn_actix(session_store_actix::SessionMiddleware::new(
            builder.build().expect("valid manager"),
        )),
        Framework::Hyper => spawn_hyper(builder.auto_commit(false)).await,
    }
}

async fn axum_action(
    axum::extract::Path(action): axum::extract::Path<String>,
    session: session_store_tower::Session,
) -> (StatusCode, String) {
    act(&action, &session).await
}

async fn no_session() -> &'static str {
    "no session"
}

/// Serves the app with axum behind `layer` (any error-response type).
pub async fn spawn_axum<E>(layer: session_store_tower::SessionLayer<E>) -> Server
where
    E: session_store_tower::ErrorResponse<axum::body::Body>,
{
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/none", get(no_session))
        .route("/{action}", get(axum_action).post(axum_action))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("axum server");
    });
    Server {
        addr,
        stop: Stop::Task(task),
    }
}

async fn actix_action(
    action: actix_web::web::Path<String>,
    session: session_store_actix::Session,
) -> actix_web::HttpResponse {
    let (status, body) = act(&action, &session).await;
    let status = actix_web::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    actix_web::HttpResponse::build(status).body(body)
}

/// Serves the app with actix-web behind `middleware`, on its own thread and actix system.
pub fn spawn_actix(middleware: session_store_actix::SessionMiddleware) -> Server {
    use actix_web::{App, HttpServer, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(middleware.clone())
                    .route("/none", web::get().to(no_session))
                    .route("/{action}", web::route().to(actix_action))
            })
            .workers(2)
            .disable_signals()
            .keep_alive(Duration::from_secs(120))
            .listen(listener)
            .expect("listen")
            .run();
            tx.send(server.handle()).expect("send the server handle");
            server.await
        })
    });
    let handle = rx.recv().expect("the actix server started");
    Server {
        addr,
        stop: Stop::Actix(handle),
    }
}

async fn hyper_app(
    request: Request<hyper::body::Incoming>,
    lazy: Arc<session_store::LazySession>,
) -> http::Response<session_store_hyper::Body> {
    let action = request.uri().path().trim_start_matches('/').to_owned();
    if action == "none" {
        return session_store_hyper::text(StatusCode::OK, "no session");
    }
    let session = match lazy.get().await {
        Ok(session) => session,
        Err(error) => return session_store_hyper::error_response(&error),
    };
    let (status, body) = act(&action, &session).await;
    // Auto commit is off: commit by hand, unless the handler failed.
    if !status.is_server_error()
        && let Err(error) = session.commit().await
    {
        return session_store_hyper::error_response(&error);
    }
    session_store_hyper::text(status, body)
}

async fn spawn_hyper(builder: SessionManagerBuilder) -> Server {
    let manager = builder.build().expect("valid manager");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(session_store_hyper::serve(listener, manager, hyper_app));
    Server {
        addr,
        stop: Stop::Task(task),
    }
}

// ---------------------------------------------------------------------------------------
// The client

/// One answer.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body, as text.
    pub body: String,
}

impl Reply {
    /// Every `Set-Cookie` header, in order.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The only `Set-Cookie` header; panics if there is none or several.
    pub fn set_cookie(&self) -> String {
        let all = self.set_cookies();
        assert_eq!(all.len(), 1, "expected exactly one Set-Cookie, got {all:?}");
        all.into_iter().next().unwrap_or_default()
    }
}

/// A small HTTP/1.1 client with a cookie jar, like a browser for one origin: it stores the
/// cookies servers set (a `Max-Age=0` cookie removes one) and sends them back. One TCP
/// connection per request, so idle keep-alive connections never race a server's timeout.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    jar: Mutex<BTreeMap<String, String>>,
}

impl Client {
    /// A client of the server at `addr` with an empty jar.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.jar.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cookie `name` in the jar.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar().get(name).cloned()
    }

    /// Puts a cookie into the jar (e.g. a tampered one).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar().insert(name.to_owned(), value.to_owned());
    }

    /// Empties the jar.
    pub fn clear_cookies(&self) {
        self.jar().clear();
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path).await
    }

    /// `POST path` with an empty body.
    pub async fn post(&self, path: &str) -> Reply {
        self.request(Method::POST, path).await
    }

    /// Sends one request with the jar's cookies and keeps the cookies of the answer.
    /// Panics (failing the test) on a transport error or after [`REQUEST_TIMEOUT`].
    pub async fn request(&self, method: Method, path: &str) -> Reply {
        self.request_with(method, path, &[]).await
    }

    /// As [`Client::request`], with extra header fields (sent after the jar's `Cookie`).
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        extra: &[(header::HeaderName, &str)],
    ) -> Reply {
        let what = format!("{method} {path} to {}", self.addr);
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, extra)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => panic!("{what} failed: {e}"),
            Err(_) => panic!("{what} got no answer within {REQUEST_TIMEOUT:?}"),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        extra: &[(header::HeaderName, &str)],
    ) -> std::result::Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        let cookies = self
            .jar()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookies.is_empty() {
            request = request.header(header::COOKIE, cookies);
        }
        for (name, value) in extra {
            request = request.header(name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::new()))?)
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for set in reply.set_cookies() {
            self.keep(&set);
        }
        Ok(reply)
    }

    fn keep(&self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let removal = parts.any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
        let mut jar = self.jar();
        if removal || value.is_empty() {
            jar.remove(name.trim());
        } else {
            jar.insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The store

pub use session_store::testing::{Calls, Failure};

/// A [`MemoryStore`] named `test` whose calls are counted and which can be switched to fail,
/// through the workspace's one counting store, [`CountingStore`] (it derefs to it for
/// `calls`, `fail` and `reset`); reads records back without counting.
#[derive(Clone)]
pub struct TestStore {
    counting: CountingStore,
    memory: MemoryStore,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore").finish_non_exhaustive()
    }
}

impl std::ops::Deref for TestStore {
    type Target = CountingStore;

    fn deref(&self) -> &CountingStore {
        &self.counting
    }
}

impl TestStore {
    /// Over a [`MemoryStore`] reading time from `clock` (share it with the manager).
    pub fn new(clock: Arc<dyn session_store::Clock>) -> Self {
        let memory = MemoryStore::with_clock(clock);
        Self {
            counting: CountingStore::new(memory.clone()).named("test"),
            memory,
        }
    }

    /// The store to give the manager: every call it makes is counted.
    pub fn store(&self) -> CountingStore {
        self.counting.clone()
    }

    /// Sets the counts back to zero.
    pub fn reset_calls(&self) {
        self.counting.reset();
    }

    /// The live record of the session whose cookie carries `id` (stored under the digest of
    /// the id, as the manager keeps it), read without counting.
    pub async fn record(&self, id: &str) -> Option<Record> {
        self.memory
            .get(&session_store::stored_key(&SessionId::new(id)))
            .await
            .expect("memory store get")
    }

    /// The value under `key` of the live record `id`, read without counting.
    pub async fn value(&self, id: &str, key: &str) -> Option<u64> {
        let record = self.record(id).await?;
        let bytes = record.data.get(key)?;
        Some(record.codec.decode(bytes).expect("decodable value"))
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Logs

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every `tracing` event of the process (all levels) into a buffer that
/// [`captured_logs`] reads. Safe to call many times.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

/// Everything logged since [`capture_logs`].
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
