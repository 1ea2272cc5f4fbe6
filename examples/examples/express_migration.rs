//! Migrating from express-session: a Rust service that shares its sessions with a running
//! Node app (express-session + connect-redis) through the same Redis, or (with
//! `DATABASE_URL`) with connect-pg-simple through the same PostgreSQL table.
//!
//! Both sides must agree on four things: the cookie name (`connect.sid`), the secret that
//! signs it, the Redis key prefix (connect-redis's `sess:`), and JSON values. Then a user
//! logged in on the Node side is logged in here, and the other way round.
//!
//! ```text
//! # The Node side, e.g. the app of interop/node:
//! #   SECRET='keyboard cat' STORE=redis PORT=3001 node interop/node/app.js
//! SESSION_SECRET='keyboard cat' cargo run -p session-demo --example express_migration
//! curl -c jar -b jar http://127.0.0.1:3001/count   # Node creates the session
//! curl -c jar -b jar http://127.0.0.1:3000/        # Rust reads and increments it
//! ```
//!
//! Environment: `REDIS_URL` (default `redis://127.0.0.1:6379`), `SESSION_SECRET` (required;
//! several comma-separated secrets rotate like express-session's `secret` array),
//! `SESSION_PREFIX` (default `sess:`), `LISTEN` (default `127.0.0.1:3000`);
//! `DATABASE_URL` (`postgres://…`) uses connect-pg-simple's table instead of Redis
//! (`SESSION_TABLE`, default `session`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use session_store::{Codec, CookieOptions, IdGenerator, SessionManager, SessionStore, SignedCodec};
use session_store_redis::{Layout, RedisStore};
use session_store_sqlx::{PostgresLayout, PostgresStore};
use session_store_tower::{Session, SessionLayer};

async fn index(session: Session) -> String {
    // Node wrote `req.session.views`; the same key, the same JSON number.
    let views = session.get::<u64>("views").ok().flatten().unwrap_or(0) + 1;
    if session.insert("views", views).is_err() {
        return "could not count this visit".into();
    }
    format!("{views} view(s) in this session, counted by Node and Rust together.")
}

async fn logout(session: Session) -> &'static str {
    // Deletes the stored session: the Node app sees the logout too.
    session.destroy();
    "logged out"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let secrets = std::env::var("SESSION_SECRET")
        .map_err(|_| "SESSION_SECRET must be set to express-session's `secret`")?;
    let secrets: Vec<&str> = secrets.split(',').collect();

    // express-session's `cookie` options: maxAge one day, HttpOnly, Path=/.
    let cookie = CookieOptions {
        max_age: Some(Duration::from_secs(24 * 60 * 60)),
        ..CookieOptions::default()
    };
    let store: Arc<dyn SessionStore> = match std::env::var("DATABASE_URL") {
        // connect-pg-simple's table: `session(sid, sess json, expire)`.
        Ok(url) => {
            let mut store = PostgresStore::connect(&url)
                .await?
                .with_layout(PostgresLayout::connect_pg_simple(cookie.clone()));
            if let Ok(table) = std::env::var("SESSION_TABLE") {
                store = store.with_table_name(&table)?;
            }
            store.migrate().await?;
            Arc::new(store)
        }
        // connect-redis's layout: key `sess:<id>`, value express-session's JSON, TTL = expiry.
        Err(_) => {
            let mut store = RedisStore::from_url(&redis_url)?
                .with_layout(Layout::connect_redis(cookie.clone()));
            if let Ok(prefix) = std::env::var("SESSION_PREFIX") {
                store = store.with_prefix(prefix);
            }
            store.connect().await?;
            Arc::new(store)
        }
    };
    let manager = SessionManager::builder_arc(store)
        .cookie_name("connect.sid")
        .cookie(cookie)
        .codec(Codec::Json)
        .cookie_codec(SignedCodec::new(&secrets)?)
        .id_generator(IdGenerator::express_compatible())
        .build()?;

    let app = Router::new()
        .route("/", get(index))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(manager));
    // Serves on `LISTEN` (default 127.0.0.1:3000): `common/mod.rs`.
    common::serve(app).await
}
