//! An axum app with sessions in Redis: a visit counter plus login/logout.
//!
//! ```text
//! cargo run -p session-demo --example axum_redis                 # REDIS_URL, default redis://127.0.0.1:6379
//! curl -c jar -b jar http://127.0.0.1:3000/
//! curl -c jar -b jar -X POST 'http://127.0.0.1:3000/login?user=ann'
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use session_store::SessionManager;
use session_store_redis::RedisStore;
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
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Keys `myapp:session:<id>`; the key's TTL is the session's expiry.
    let store = RedisStore::from_url(&url)?.with_prefix("myapp:session:");
    store.connect().await?;
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
