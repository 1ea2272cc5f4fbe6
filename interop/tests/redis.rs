//! Node (express-session + connect-redis 9 + redis 6) and Rust (session-store with
//! `RedisStore` in connect-redis's layout) share sessions through one Redis.
//!
//! Needs Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`), Node.js (`NODE`, default
//! `node`) and the Node packages (`bash scripts/node-interop.sh install`). Each test uses
//! its own random key prefix and secret.

mod common;

use std::time::Duration;

use common::{LONG, Pair, REMEMBER, RawStore, SHORT};
use session_interop::{NodeApp, NodeStore, RustApp, express_manager};
use session_store::CookieOptions;
use session_store_redis::{Layout, RedisStore, redis};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Both apps on one Redis, one random prefix, one secret, cookies with `max_age`.
async fn start(max_age: Duration) -> Pair {
    let url = redis_url();
    let prefix = format!("interop:{}:sess:", nanoid::nanoid!(10));
    let secret = common::secret();
    let cookie = CookieOptions {
        max_age: Some(max_age),
        ..CookieOptions::default()
    };
    let store = RedisStore::from_url(&url)
        .expect("valid REDIS_URL")
        .with_layout(Layout::connect_redis(cookie.clone()))
        .with_prefix(prefix.clone());
    store
        .connect()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} must be reachable: {e}"));
    let manager = express_manager(store, cookie, &[&secret]).expect("valid manager");
    let rust = RustApp::start(manager).await.expect("serve the Rust app");
    let connection = redis::Client::open(url.as_str())
        .expect("valid REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} must be reachable: {e}"));
    let raw = RawStore::Redis {
        connection,
        prefix: prefix.clone(),
    };
    let node = NodeApp::start(&NodeStore::Redis { url, prefix }, &secret, max_age);
    Pair { node, rust, raw }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_session_is_read_and_modified_by_rust() {
    common::node_session_is_read_and_modified_by_rust(&start(LONG).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_session_is_read_by_node() {
    common::rust_session_is_read_by_node(&start(LONG).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_in_one_is_logout_in_the_other() {
    common::logout_in_one_is_logout_in_the_other(&start(LONG).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_in_one_is_respected_by_the_other() {
    common::expiry_in_one_is_respected_by_the_other(&start(SHORT).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_in_one_is_respected_by_the_other() {
    common::touch_in_one_is_respected_by_the_other(&start(SHORT).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_remember_me_is_kept_by_rust() {
    common::node_lifetime_is_kept_by_rust(&start(LONG).await, Some(REMEMBER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_browser_session_is_kept_by_rust() {
    common::node_lifetime_is_kept_by_rust(&start(LONG).await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_remember_me_is_kept_by_node() {
    common::rust_lifetime_is_kept_by_node(&start(LONG).await, Some(REMEMBER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_browser_session_is_kept_by_node() {
    common::rust_lifetime_is_kept_by_node(&start(LONG).await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_changes_are_kept_by_the_other() {
    common::lifetime_changes_are_kept_by_the_other(&start(LONG).await).await;
}
