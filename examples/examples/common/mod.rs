//! What the axum examples share: the visit counter with login and logout, and the server
//! loop. Each example keeps what is its own: the store, and the `SessionManager` over it.
// Each example uses only part of this module.
#![allow(dead_code)]

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_store::SessionManager;
use session_store_tower::{Session, SessionLayer};

/// The visit counter plus login/logout, with sessions from `manager`:
/// `GET /`, `POST /login?user=…`, `POST /logout`.
pub fn counter_app(manager: SessionManager) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(manager))
}

async fn index(session: Session) -> Result<String, StatusCode> {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    session
        .insert("visits", visits)
        .map_err(|e| e.status_code())?;
    Ok(format!(
        "In this session, you have visited this website {visits} time(s)."
    ))
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, Query(login): Query<Login>) -> Result<String, StatusCode> {
    session
        .insert("user", &login.user)
        .map_err(|e| e.status_code())?;
    // A new id at login keeps a planted session id from being promoted (session fixation).
    session.regenerate();
    Ok(format!("Logged in as {}.", login.user))
}

async fn logout(session: Session) -> &'static str {
    session.destroy();
    "Logged out."
}

/// Serves `app` on `LISTEN` (default `127.0.0.1:3000`) until the process is stopped.
pub async fn serve(app: Router) -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
