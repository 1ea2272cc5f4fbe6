//! next-session's plain `http.createServer` example, in Rust: hyper 1, no framework,
//! auto commit off and a manual `commit`.
//!
//! ```text
//! cargo run -p session-store-hyper --example plain
//! curl -c jar -b jar http://127.0.0.1:3000/
//! ```

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use session_store::{LazySession, MemoryStore, SessionManager};
use session_store_hyper::{Body, error_response, text};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let manager = SessionManager::builder(MemoryStore::new())
        .auto_commit(false)
        .build()?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    session_store_hyper::serve(listener, manager, visit_counter).await;
    Ok(())
}

/// `GET /` counts visits in the session and commits by hand (run the
/// manager with `auto_commit(false)`); anything else is `404`.
pub async fn visit_counter(
    request: Request<Incoming>,
    session: Arc<LazySession>,
) -> Response<Body> {
    if request.method() != Method::GET || request.uri().path() != "/" {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let session = match session.get().await {
        Ok(session) => session,
        Err(error) => return error_response(&error),
    };
    let views = match session.update("views", |views: Option<u64>| views.unwrap_or(0) + 1) {
        Ok(views) => views,
        Err(error) => return error_response(&error),
    };
    // autoCommit is off: save now. `serve` then copies the queued `Set-Cookie`.
    if let Err(error) = session.commit().await {
        return error_response(&error);
    }
    text(
        StatusCode::OK,
        format!("In this session, you have visited this website {views} time(s)."),
    )
}
