//! An axum app with sessions in PostgreSQL: a visit counter plus login/logout.
//!
//! ```text
//! cargo run -p session-demo --example axum_postgres   # DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test
//! curl -c jar -b jar http://127.0.0.1:3000/
//! curl -c jar -b jar -X POST 'http://127.0.0.1:3000/login?user=ann'
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_store::SessionManager;
use session_store_sqlx::PostgresStore;
use session_store_tower::{Session, SessionLayer};

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    // Table `sessions` (id, data, expires, version) with an index on `expires`.
    let store = PostgresStore::connect(&url).await?;
    store.migrate().await?;
    // Expired rows are filtered on every read; this removes them every 10 minutes.
    store.spawn_cleanup(Duration::from_secs(600));
    let manager = SessionManager::builder(store)
        .max_age(Duration::from_secs(24 * 60 * 60))
        .touch_after(Duration::from_secs(60 * 60))
        .build()?;
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(manager));
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
