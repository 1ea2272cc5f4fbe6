//! actix-web integration for [`session_store`].
//!
//! [`SessionMiddleware`] gives every request a lazily loaded session: it puts a
//! [`SessionHandle`] into the request extensions, the [`Session`] extractor loads it on first
//! use (a request that never uses its session never touches the store), and once the handler
//! has answered (before the response head is sent) the middleware runs auto commit and
//! appends the `Set-Cookie` header.
//!
//! A store failure while loading (through the extractor) or committing replaces the response
//! with `503 Service Unavailable` when the store is unavailable or timed out, `500` otherwise
//! (or with the response of [`SessionMiddleware::on_error`]), and emits a `tracing` error
//! event that never contains the session id.
//!
//! actix-web 4 speaks `http` 0.2; the core speaks `http` 1. Headers are converted here, at
//! the edge, and no actix type reaches the core.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use session_store::{MemoryStore, SessionManager};
//! use session_store_actix::{Session, SessionMiddleware};
//!
//! async fn index(session: Session) -> String {
//!     let visits: u64 = session.get("visits").ok().flatten().unwrap_or(0) + 1;
//!     let _ = session.insert("visits", visits);
//!     format!("In this session, you have visited this website {visits} time(s).")
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! actix_web::rt::System::new().block_on(async move {
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(SessionMiddleware::new(manager.clone()))
//!             .route("/", web::get().to(index))
//!     })
//!     .bind(("127.0.0.1", 3000))?
//!     .run()
//!     .await
//! })?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::future::{Future, Ready, ready};
use std::ops::Deref;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use session_store::{Error, LazySession, Result, SessionManager};

pub use session_store;

/// A boxed, non-`Send` future (actix runs each worker on one thread).
type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// A user-supplied response for store failures.
type OnError = Arc<dyn Fn(&Error) -> HttpResponse + Send + Sync>;

/// The session of one request, as the [`SessionMiddleware`] puts it into the request
/// extensions. Cheap to clone; [`SessionHandle::get`] loads the session on first call.
#[derive(Clone)]
pub struct SessionHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    lazy: LazySession,
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
    fn new(manager: SessionManager, request_headers: &http::HeaderMap) -> Self {
        Self {
            inner: Arc::new(HandleInner {
                lazy: LazySession::new(manager, request_headers),
                load_error: Mutex::new(None),
            }),
        }
    }

    /// The request's session, loaded from the store on the first call; the error is the
    /// caller's to handle (the [`Session`] extractor hands it to the middleware instead).
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

    fn take_load_error(&self) -> Option<Error> {
        lock(&self.inner.load_error).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `Cookie` fields of an actix request, as the `http` 1 map the core reads.
fn cookie_headers(headers: &actix_web::http::header::HeaderMap) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for value in headers.get_all(actix_web::http::header::COOKIE) {
        if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
            map.append(http::header::COOKIE, value);
        }
    }
    map
}

fn to_actix_status(status: http::StatusCode) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
}

fn from_actix_status(status: actix_web::http::StatusCode) -> http::StatusCode {
    http::StatusCode::from_u16(status.as_u16()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// actix-web middleware: lazily loaded sessions with auto commit. See the crate docs.
#[derive(Clone)]
pub struct SessionMiddleware {
    manager: SessionManager,
    on_error: Option<OnError>,
}

impl fmt::Debug for SessionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddleware")
            .field("manager", &self.manager)
            .field("custom_error_response", &self.on_error.is_some())
            .finish()
    }
}

impl SessionMiddleware {
    /// Middleware over `manager`; store failures answer [`Error::status_code`].
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            on_error: None,
        }
    }

    /// Answers store failures with `on_error`'s response instead (the failure is still
    /// logged).
    pub fn on_error(
        mut self,
        on_error: impl Fn(&Error) -> HttpResponse + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Arc::new(on_error));
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionService {
            service: Rc::new(service),
            manager: self.manager.clone(),
            on_error: self.on_error.clone(),
        }))
    }
}

/// The service made by [`SessionMiddleware`].
pub struct SessionService<S> {
    service: Rc<S>,
    manager: SessionManager,
    on_error: Option<OnError>,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("manager", &self.manager)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalFuture<Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let handle = SessionHandle::new(self.manager.clone(), &cookie_headers(request.headers()));
        request.extensions_mut().insert(handle.clone());
        let service = Rc::clone(&self.service);
        let on_error = self.on_error.clone();
        Box::pin(async move {
            // An `Err` from inside is answered by actix later; this request's session is
            // then not committed, as for a 5xx.
            let mut response = service.call(request).await?;
            if let Some(error) = handle.take_load_error() {
                log_failure(&error, "loading");
                return Ok(error_response(response, &error, on_error.as_ref()));
            }
            let status = from_actix_status(response.status());
            let mut set_cookie = http::HeaderMap::new();
            if let Err(error) = handle.inner.lazy.finish(status, &mut set_cookie).await {
                log_failure(&error, "committing");
                return Ok(error_response(response, &error, on_error.as_ref()));
            }
            for value in set_cookie.get_all(http::header::SET_COOKIE) {
                if let Ok(value) =
                    actix_web::http::header::HeaderValue::from_bytes(value.as_bytes())
                {
                    response
                        .headers_mut()
                        .append(actix_web::http::header::SET_COOKIE, value);
                }
            }
            Ok(response.map_into_left_body())
        })
    }
}

fn error_response<B>(
    response: ServiceResponse<B>,
    error: &Error,
    on_error: Option<&OnError>,
) -> ServiceResponse<EitherBody<B>> {
    let (request, _) = response.into_parts();
    let replacement = match on_error {
        Some(on_error) => on_error(error),
        None => {
            let mut response = HttpResponse::build(to_actix_status(error.status_code()));
            if let Some(after) = error.retry_after() {
                response.insert_header(("Retry-After", after.as_secs().max(1).to_string()));
            }
            response.finish()
        }
    };
    ServiceResponse::new(request, replacement).map_into_right_body()
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

/// The request's session, as an actix-web extractor. Derefs to [`session_store::Session`].
///
/// Extracting it loads the session (once per request). If the store fails, the handler is
/// not run and the [`SessionMiddleware`] answers with its error response.
#[derive(Clone, Debug)]
pub struct Session(pub session_store::Session);

impl Session {
    /// The core session handle.
    pub fn into_inner(self) -> session_store::Session {
        self.0
    }
}

impl Deref for Session {
    type Target = session_store::Session;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Why the [`Session`] extractor failed: the store failed (the middleware replaces this
/// response with its error response), or the [`SessionMiddleware`] is missing.
#[derive(Debug, Clone, Copy)]
pub struct SessionRejection {
    status: http::StatusCode,
}

impl SessionRejection {
    /// The status of the rejection's response.
    pub fn status(&self) -> http::StatusCode {
        self.status
    }
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status == http::StatusCode::SERVICE_UNAVAILABLE {
            f.write_str("session store unavailable")
        } else {
            f.write_str("session error")
        }
    }
}

impl ResponseError for SessionRejection {
    fn status_code(&self) -> actix_web::http::StatusCode {
        to_actix_status(self.status)
    }
}

fn handle_of(request: &HttpRequest) -> Result<SessionHandle, SessionRejection> {
    request
        .extensions()
        .get::<SessionHandle>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("no SessionHandle in the request: is the SessionMiddleware installed?");
            SessionRejection {
                status: http::StatusCode::INTERNAL_SERVER_ERROR,
            }
        })
}

impl FromRequest for Session {
    type Error = SessionRejection;
    type Future = LocalFuture<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let handle = handle_of(request);
        Box::pin(async move {
            let handle = handle?;
            match handle.get().await {
                Ok(session) => Ok(Session(session)),
                Err(error) => {
                    let status = error.status_code();
                    *lock(&handle.inner.load_error) = Some(error);
                    Err(SessionRejection { status })
                }
            }
        })
    }
}

/// Takes the handle without loading the session (load it with [`SessionHandle::get`]).
impl FromRequest for SessionHandle {
    type Error = SessionRejection;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(handle_of(request))
    }
}
