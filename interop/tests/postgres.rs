//! Node (express-session + connect-pg-simple 10 + pg 8) and Rust (session-store with
//! `PostgresStore` in connect-pg-simple's layout) share sessions through one PostgreSQL
//! table.
//!
//! Needs PostgreSQL (`POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`),
//! Node.js (`NODE`, default `node`) and the Node packages
//! (`bash scripts/node-interop.sh install`). Each test uses its own random table and secret;
//! the Rust store creates the table (`migrate`), exactly as connect-pg-simple's `table.sql`.

mod common;

use std::time::Duration;

use common::{LONG, Pair, REMEMBER, RawStore, SHORT};
use session_interop::{NodeApp, NodeStore, RustApp, express_manager};
use session_store::CookieOptions;
use session_store_sqlx::sqlx;
use session_store_sqlx::sqlx::postgres::PgPoolOptions;
use session_store_sqlx::{PostgresLayout, PostgresStore};

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops the test's table when the test ends (also on failure).
struct Table {
    store: PostgresStore,
}

impl Drop for Table {
    fn drop(&mut self) {
        let sql = format!("DROP TABLE IF EXISTS \"{}\"", self.store.table_name());
        let pool = self.store.pool().clone();
        // The runtime may be shutting down: a blocking thread of its own does the cleanup.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    let _ = sqlx::query(&sql).execute(&pool).await;
                });
            }
        })
        .join();
    }
}

/// Both apps on one PostgreSQL table, one secret, cookies with `max_age`.
async fn start(max_age: Duration) -> (Pair, Table) {
    let url = postgres_url();
    let table = format!("interop_{}", nanoid::nanoid!(12, &common::LOWER));
    let secret = common::secret();
    let cookie = CookieOptions {
        max_age: Some(max_age),
        ..CookieOptions::default()
    };
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} must be reachable: {e}"));
    let store = PostgresStore::new(pool)
        .with_layout(PostgresLayout::connect_pg_simple(cookie.clone()))
        .with_table_name(&table)
        .expect("valid table name");
    store
        .migrate()
        .await
        .expect("create connect-pg-simple's table");
    let guard = Table {
        store: store.clone(),
    };
    let raw = RawStore::Postgres {
        pool: store.pool().clone(),
        table: table.clone(),
    };
    let manager = express_manager(store, cookie, &[&secret]).expect("valid manager");
    let rust = RustApp::start(manager).await.expect("serve the Rust app");
    let node = NodeApp::start(&NodeStore::Postgres { url, table }, &secret, max_age);
    (Pair { node, rust, raw }, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_session_is_read_and_modified_by_rust() {
    let (pair, _table) = start(LONG).await;
    common::node_session_is_read_and_modified_by_rust(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_session_is_read_by_node() {
    let (pair, _table) = start(LONG).await;
    common::rust_session_is_read_by_node(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_in_one_is_logout_in_the_other() {
    let (pair, _table) = start(LONG).await;
    common::logout_in_one_is_logout_in_the_other(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_in_one_is_respected_by_the_other() {
    let (pair, _table) = start(SHORT).await;
    common::expiry_in_one_is_respected_by_the_other(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_in_one_is_respected_by_the_other() {
    let (pair, _table) = start(SHORT).await;
    common::touch_in_one_is_respected_by_the_other(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_remember_me_is_kept_by_rust() {
    let (pair, _table) = start(LONG).await;
    common::node_lifetime_is_kept_by_rust(&pair, Some(REMEMBER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_browser_session_is_kept_by_rust() {
    let (pair, _table) = start(LONG).await;
    common::node_lifetime_is_kept_by_rust(&pair, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_remember_me_is_kept_by_node() {
    let (pair, _table) = start(LONG).await;
    common::rust_lifetime_is_kept_by_node(&pair, Some(REMEMBER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_browser_session_is_kept_by_node() {
    let (pair, _table) = start(LONG).await;
    common::rust_lifetime_is_kept_by_node(&pair, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_changes_are_kept_by_the_other() {
    let (pair, _table) = start(LONG).await;
    common::lifetime_changes_are_kept_by_the_other(&pair).await;
}
