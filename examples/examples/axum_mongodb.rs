//! An axum app with sessions in MongoDB: a visit counter plus login/logout.
//!
//! ```text
//! cargo run -p session-demo --example axum_mongodb   # MONGODB_URL, default mongodb://127.0.0.1:27017
//! curl -c jar -b jar http://127.0.0.1:3000/
//! curl -c jar -b jar -X POST 'http://127.0.0.1:3000/login?user=ann'
//! ```

mod common;

use std::time::Duration;

use session_store::SessionManager;
use session_store_mongodb::MongoStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let url = std::env::var("MONGODB_URL").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    // Collection `sessions` in database `myapp`, with a TTL index on `expires`.
    let store = MongoStore::connect(&url, "myapp", "sessions").await?;
    let manager = SessionManager::builder(store)
        .max_age(Duration::from_secs(24 * 60 * 60))
        .touch_after(Duration::from_secs(60 * 60))
        .build()?;
    // The handlers (`/`, `/login`, `/logout`) and the server loop: `common/mod.rs`.
    common::serve(common::counter_app(manager)).await
}
