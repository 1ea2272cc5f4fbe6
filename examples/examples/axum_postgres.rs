//! An axum app with sessions in PostgreSQL: a visit counter plus login/logout.
//!
//! ```text
//! cargo run -p session-demo --example axum_postgres   # DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test
//! curl -c jar -b jar http://127.0.0.1:3000/
//! curl -c jar -b jar -X POST 'http://127.0.0.1:3000/login?user=ann'
//! ```

mod common;

use std::time::Duration;

use session_store::SessionManager;
use session_store_sqlx::PostgresStore;

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
    // The handlers (`/`, `/login`, `/logout`) and the server loop: `common/mod.rs`.
    common::serve(common::counter_app(manager)).await
}
