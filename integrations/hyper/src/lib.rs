//! Sessions in a plain hyper 1 server, without a framework: the counterpart of
//! next-session's example for Node's `http.createServer`.
//!
//! There is no middleware here. [`serve`] is a small accept loop that gives each request a
//! [`LazySession`] and, after the handler has answered, calls
//! [`LazySession::finish`] (auto commit if the manager has it on, then the `Set-Cookie`
//! header). The handler is any `async fn(Request, Arc<LazySession>) -> Response`. With auto
//! commit **off** it commits by hand, as next-session's
//!
//! ```js
//! const getSession = nextSession({ autoCommit: false });
//! http.createServer(async (req, res) => {
//!   const session = await getSession(req, res);
//!   session.views = (session.views || 0) + 1;
//!   await session.commit();
//!   res.end(`In this session, you have visited this website ${session.views} time(s).`);
//! });
//! ```
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use http::{Request, Response, StatusCode};
//! use hyper::body::Incoming;
//! use session_store::{LazySession, MemoryStore, SessionManager};
//! use session_store_hyper::{Body, error_response, text};
//!
//! async fn counter(_request: Request<Incoming>, session: Arc<LazySession>) -> Response<Body> {
//!     let session = match session.get().await {
//!         Ok(session) => session,
//!         Err(error) => return error_response(&error),
//!     };
//!     let result = session.update("views", |views: Option<u64>| views.unwrap_or(0) + 1);
//!     let views = match result {
//!         Ok(views) => views,
//!         Err(error) => return error_response(&error),
//!     };
//!     // Auto commit is off: save now; `serve` then copies the queued `Set-Cookie`.
//!     if let Err(error) = session.commit().await {
//!         return error_response(&error);
//!     }
//!     text(StatusCode::OK, format!("You have visited this website {views} time(s)."))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(MemoryStore::new())
//!     .auto_commit(false)
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! session_store_hyper::serve(listener, manager, counter).await;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/plain.rs` is the same server, runnable.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use session_store::{Error, LazySession, SessionManager};
use tokio::net::TcpListener;

pub use session_store;

/// The response body used here.
pub type Body = Full<Bytes>;

/// Accepts connections on `listener` forever, serving each HTTP/1.1 request with `handler`.
///
/// Each request gets its own [`LazySession`] (loaded only if the handler asks for it). After
/// the handler has answered, [`LazySession::finish`] runs: with auto commit on it commits
/// (unless the handler answered 5xx); with it off it only copies the `Set-Cookie` header
/// that the handler's own `commit` queued. A failing commit is logged and answered with
/// [`error_response`].
pub async fn serve<H, F>(listener: TcpListener, manager: SessionManager, handler: H)
where
    H: Fn(Request<Incoming>, Arc<LazySession>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!(error = &error as &dyn std::error::Error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let manager = manager.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let manager = manager.clone();
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(&manager, request, handler).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "connection ended with an error"
                );
            }
        });
    }
}

/// One request: a lazy session for `request`, the handler, then
/// [`LazySession::finish`] into the response headers.
pub async fn respond<H, F>(
    manager: &SessionManager,
    request: Request<Incoming>,
    handler: H,
) -> Response<Body>
where
    H: FnOnce(Request<Incoming>, Arc<LazySession>) -> F,
    F: Future<Output = Response<Body>>,
{
    let session = Arc::new(LazySession::new(manager.clone(), request.headers()));
    let mut response = handler(request, Arc::clone(&session)).await;
    let status = response.status();
    match session.finish(status, response.headers_mut()).await {
        Ok(()) => response,
        Err(error) => error_response(&error),
    }
}

/// Logs a store failure (never with the session id) and answers it: `503` with
/// `Retry-After` when the store is unavailable or timed out or a commit kept conflicting,
/// else `500`.
pub fn error_response(error: &Error) -> Response<Body> {
    tracing::error!(
        error = error as &dyn std::error::Error,
        status = error.status_code().as_u16(),
        "session store failed"
    );
    let mut response = text(error.status_code(), "session store error");
    if let Some(after) = error.retry_after() {
        let seconds = http::HeaderValue::from(after.as_secs().max(1));
        response.headers_mut().insert(header::RETRY_AFTER, seconds);
    }
    response
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
