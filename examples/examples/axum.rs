//! The smallest axum app with sessions: a visit counter.
//!
//! ```text
//! cargo run -p session-demo --example axum
//! curl -c jar -b jar http://127.0.0.1:3000/
//! ```

mod common;

use std::time::Duration;

use axum::{Router, routing::get};
use session_store::{MemoryStore, SessionManager};
use session_store_tower::{Session, SessionLayer};

async fn index(session: Session) -> String {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    if session.insert("visits", visits).is_err() {
        return "could not count this visit".into();
    }
    format!("In this session, you have visited this website {visits} time(s).")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let manager = SessionManager::builder(MemoryStore::new())
        .max_age(Duration::from_secs(24 * 60 * 60))
        .touch_after(Duration::from_secs(60 * 60))
        .build()?;
    let app = Router::new()
        .route("/", get(index))
        .layer(SessionLayer::new(manager));
    // Serves on `LISTEN` (default 127.0.0.1:3000): `common/mod.rs`.
    common::serve(app).await
}
