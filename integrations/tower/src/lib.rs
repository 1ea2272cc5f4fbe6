//! tower and axum integration for [`session_store`].
//!
//! [`SessionLayer`] wraps any tower [`Service`] over [`http::Request`]s (axum, hyper-util,
//! tonic). For each request it puts a [`SessionHandle`] into the request extensions; the
//! session is loaded from the store only when a handler asks for it, so a request that
//! never uses its session never touches the store. When the inner service has answered
//! (before the response head is sent) the layer runs auto commit and appends the
//! `Set-Cookie` header.
//!
//! A store failure while loading (through the [`Session`] extractor) or committing replaces
//! the response with `503 Service Unavailable` when the store is unavailable or timed out,
//! `500 Internal Server Error` otherwise (or with the response of a handler given to
//! [`SessionLayer::on_error`]), and emits a `tracing` error event that never contains the
//! session id.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use session_store::{MemoryStore, SessionManager};
//! use session_store_tower::{Session, SessionLayer};
//!
//! async fn index(session: Session) -> String {
//!     let visits: u64 = session.get("visits").ok().flatten().unwrap_or(0) + 1;
//!     let _ = session.insert("visits", visits);
//!     format!("In this session, you have visited this website {visits} time(s).")
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! let app = Router::new()
//!     .route("/", get(index))
//!     .layer(SessionLayer::new(manager));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, StatusCode};
use session_store::{Error, LazySession, Result, SessionManager};
use tower_layer::Layer;
use tower_service::Service;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{Session, SessionRejection};

pub use session_store;

/// The session of one request, as the [`SessionLayer`] puts it into the request extensions.
///
/// Cheap to clone. [`SessionHandle::get`] loads the session on its first call; every call
/// in the request returns the same [`session_store::Session`]. Handlers that do not use the
/// axum extractors can take it from the extensions:
/// `request.extensions().get::<SessionHandle>()`.
#[derive(Clone)]
pub struct SessionHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    lazy: LazySession,
    /// A load failure the extractor turned into a rejection, for the layer to answer.
    load_error: Mutex<Option<Error>>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("session", &self.inner.lazy)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    /// The handle of a request with these headers (reads only the session cookie).
    pub fn new(manager: SessionManager, request_headers: &HeaderMap) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                lazy: LazySession::new(manager, request_headers),
                load_error: Mutex::new(None),
            }),
        }
    }

    /// The request's session, loaded from the store on the first call. The error is the
    /// caller's to handle (the [`Session`] extractor hands it to the layer instead).
    pub async fn get(&self) -> Result<session_store::Session> {
        self.inner.lazy.get().await
    }

    /// The session if it has been loaded.
    pub fn loaded(&self) -> Option<&session_store::Session> {
        self.inner.lazy.loaded()
    }

    /// The manager.
    pub fn manager(&self) -> &SessionManager {
        self.inner.lazy.manager()
    }

    /// Loads the session; on failure, remembers the error so that the layer answers with
    /// the error response, and returns the status the rejection should carry.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) async fn get_or_report(&self) -> Result<session_store::Session, StatusCode> {
        match self.get().await {
            Ok(session) => Ok(session),
            Err(error) => {
                let status = error.status_code();
                *lock(&self.inner.load_error) = Some(error);
                Err(status)
            }
        }
    }

    fn take_load_error(&self) -> Option<Error> {
        lock(&self.inner.load_error).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds the response that replaces the handler's when the session store fails.
///
/// Implemented by [`DefaultErrorResponse`] and by every
/// `Fn(&session_store::Error) -> http::Response<B> + Clone + Send + Sync + 'static`.
pub trait ErrorResponse<B>: Clone + Send + Sync + 'static {
    /// The response for `error`.
    fn response(&self, error: &Error) -> Response<B>;
}

/// The default error response: [`Error::status_code`] (503 when the store is unavailable
/// or timed out or a commit kept conflicting, else 500) with an empty body, and
/// `Retry-After` ([`Error::retry_after`]) on the 503.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultErrorResponse;

impl<B: Default> ErrorResponse<B> for DefaultErrorResponse {
    fn response(&self, error: &Error) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = error.status_code();
        if let Some(after) = error.retry_after() {
            let seconds = http::HeaderValue::from(after.as_secs().max(1));
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, seconds);
        }
        response
    }
}

impl<B, F> ErrorResponse<B> for F
where
    F: Fn(&Error) -> Response<B> + Clone + Send + Sync + 'static,
{
    fn response(&self, error: &Error) -> Response<B> {
        self(error)
    }
}

/// A tower [`Layer`] that gives every request a lazily loaded session and commits it after
/// the inner service has answered.
#[derive(Clone)]
pub struct SessionLayer<E = DefaultErrorResponse> {
    manager: SessionManager,
    on_error: E,
}

impl<E> fmt::Debug for SessionLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer over `manager`, answering store failures with [`DefaultErrorResponse`].
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            on_error: DefaultErrorResponse,
        }
    }
}

impl<E> SessionLayer<E> {
    /// Answers store failures with `on_error`'s response instead (the failure is still
    /// logged).
    pub fn on_error<F>(self, on_error: F) -> SessionLayer<F> {
        SessionLayer {
            manager: self.manager,
            on_error,
        }
    }

    /// The manager.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }
}

impl<S, E: Clone> Layer<S> for SessionLayer<E> {
    type Service = SessionService<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
            on_error: self.on_error.clone(),
        }
    }
}

/// The [`Service`] made by [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S, E = DefaultErrorResponse> {
    inner: S,
    manager: SessionManager,
    on_error: E,
}

impl<S: fmt::Debug, E> fmt::Debug for SessionService<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

/// The boxed future of [`SessionService`].
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, E, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, E>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    E: ErrorResponse<ResBody>,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let handle = SessionHandle::new(self.manager.clone(), request.headers());
        request.extensions_mut().insert(handle.clone());
        let on_error = self.on_error.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if let Some(error) = handle.take_load_error() {
                log_failure(&error, "loading");
                return Ok(on_error.response(&error));
            }
            let status = response.status();
            match handle
                .inner
                .lazy
                .finish(status, response.headers_mut())
                .await
            {
                Ok(()) => Ok(response),
                Err(error) => {
                    log_failure(&error, "committing");
                    Ok(on_error.response(&error))
                }
            }
        })
    }
}

/// The one place the integration logs store failures: the error and its source chain,
/// never the session id.
fn log_failure(error: &Error, while_: &'static str) {
    tracing::error!(
        error = error as &dyn std::error::Error,
        status = error.status_code().as_u16(),
        "session store failed while {while_} the session"
    );
}
