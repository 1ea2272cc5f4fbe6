//! The app under test: axum behind `session-store-tower`, served on a free loopback port.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use session_store::SessionManager;
use session_store_tower::{Session, SessionLayer};

/// A running app; stops when dropped.
pub struct App {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl App {
    /// Whether the server task is still running (it never ends by itself: a finished task
    /// means it failed or panicked).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `GET /count`: increments `count` in the session and answers the new value.
async fn count(session: Session) -> (StatusCode, String) {
    let current = match session.get::<u64>("count") {
        Ok(value) => value.unwrap_or(0),
        Err(error) => return (error.status_code(), "bad count".into()),
    };
    match session.insert("count", current + 1) {
        Ok(()) => (StatusCode::OK, (current + 1).to_string()),
        Err(error) => (error.status_code(), "session error".into()),
    }
}

/// `GET /update`: increments `count` with [`session_store::Session::update`], which
/// applies the increment again when a parallel request of the session stored meanwhile, and
/// answers the new value.
async fn update(session: Session) -> (StatusCode, String) {
    match session.update("count", |count: Option<u64>| count.unwrap_or(0) + 1) {
        Ok(count) => (StatusCode::OK, count.to_string()),
        Err(error) => (error.status_code(), "session error".into()),
    }
}

/// `GET /read`: answers `count` (0 when absent) without changing the session.
async fn read(session: Session) -> (StatusCode, String) {
    match session.get::<u64>("count") {
        Ok(value) => (StatusCode::OK, value.unwrap_or(0).to_string()),
        Err(error) => (error.status_code(), "bad count".into()),
    }
}

/// `GET /login/{user}`: logs `user` in: a new session id (the data is kept), the session
/// bound to `user` as its owner, `user` stored in it.
async fn login(session: Session, Path(user): Path<String>) -> (StatusCode, String) {
    session.regenerate();
    let bound = session
        .set_owner(user.as_str())
        .and_then(|()| session.insert("user", &user));
    match bound {
        Ok(()) => (StatusCode::OK, user),
        Err(error) => (error.status_code(), "session error".into()),
    }
}

/// `GET /logout`: destroys the session (its record, and the cookie on the answer).
async fn logout(session: Session) -> StatusCode {
    session.destroy();
    StatusCode::OK
}

/// Serves `/count`, `/update`, `/read`, `/login/{user}` and `/logout` over `manager` on a
/// free loopback port.
pub async fn serve(manager: SessionManager) -> App {
    let app = Router::new()
        .route("/count", get(count))
        .route("/update", get(update))
        .route("/read", get(read))
        .route("/login/{user}", get(login))
        .route("/logout", get(logout))
        .layer(SessionLayer::new(manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("axum server");
    });
    App { addr, task }
}
