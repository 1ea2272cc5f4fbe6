//! An axum app with sessions in Redis: a visit counter plus login/logout.
//!
//! ```text
//! cargo run -p session-demo --example axum_redis                 # REDIS_URL, default redis://127.0.0.1:6379
//! curl -c jar -b jar http://127.0.0.1:3000/
//! curl -c jar -b jar -X POST 'http://127.0.0.1:3000/login?user=ann'
//! ```

mod common;

use std::time::Duration;

use session_store::SessionManager;
use session_store_redis::RedisStore;

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
    // The handlers (`/`, `/login`, `/logout`) and the server loop: `common/mod.rs`.
    common::serve(common::counter_app(manager)).await
}
