//! An axum app whose sessions live in a legacy synchronous file store, served through
//! [`BlockingAdapter`] so that file I/O never blocks the async runtime.
//!
//! ```text
//! cargo run -p session-store-compat --example axum_file_store
//! curl -c jar -b jar http://127.0.0.1:3000/      # visits: 1, 2, 3, ...
//! curl -c jar -b jar http://127.0.0.1:3000/logout
//! ```
//!
//! Environment: `SESSION_DIR` (default: `sessions` under the system temp directory),
//! `ADDR` (default `127.0.0.1:3000`).

pub mod file_store;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use session_store::{LazySession, SessionManager};
use session_store_compat::BlockingAdapter;

use self::file_store::FileStore;

/// Runs `handler` with the request's session and commits it into the response, the way a
/// framework integration would.
async fn with_session<F, Fut>(manager: SessionManager, headers: &HeaderMap, handler: F) -> Response
where
    F: FnOnce(session_store::Session) -> Fut,
    Fut: std::future::Future<Output = session_store::Result<Response>>,
{
    let lazy = LazySession::new(manager, headers);
    let result = match lazy.get().await {
        Ok(session) => handler(session).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(e) => return error_response(&e),
    };
    let status = response.status();
    match lazy.finish(status, response.headers_mut()).await {
        Ok(()) => response,
        Err(e) => error_response(&e),
    }
}

fn error_response(error: &session_store::Error) -> Response {
    eprintln!("session error: {error}");
    (error.status_code(), "session store error\n").into_response()
}

/// The app: `/` counts visits in the session, `/logout` destroys it.
pub fn app(manager: SessionManager) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/logout", get(logout))
        .with_state(manager)
}

async fn index(State(manager): State<SessionManager>, headers: HeaderMap) -> Response {
    with_session(manager, &headers, |session| async move {
        let visits: u64 = session.get("visits")?.unwrap_or(0) + 1;
        session.insert("visits", visits)?;
        Ok(format!("visits: {visits}\n").into_response())
    })
    .await
}

async fn logout(State(manager): State<SessionManager>, headers: HeaderMap) -> Response {
    with_session(manager, &headers, |session| async move {
        session.destroy();
        Ok((StatusCode::OK, "logged out\n").into_response())
    })
    .await
}

#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("SESSION_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("sessions"));
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());

    let files = std::sync::Arc::new(FileStore::open(&dir)?);
    let store = BlockingAdapter::from_arc(files.clone()).with_max_concurrency(16);
    let manager = SessionManager::builder(store)
        .max_age(Duration::from_secs(3600))
        .touch_after(Duration::from_secs(60))
        .build()?;

    // Reclaim expired session files every minute, off the async threads.
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(60));
        loop {
            ticks.tick().await;
            let files = files.clone();
            match tokio::task::spawn_blocking(move || files.sweep()).await {
                Ok(Ok(removed)) if removed > 0 => eprintln!("swept {removed} expired sessions"),
                Ok(Err(e)) => eprintln!("sweep failed: {e}"),
                _ => {}
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{addr}, sessions in {}", dir.display());
    axum::serve(listener, app(manager)).await?;
    Ok(())
}
