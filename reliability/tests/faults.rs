//! A backend killed (`SIGKILL`) and restarted under concurrent HTTP load: 503s during the
//! outage, service back after the restart, no acknowledged session lost.
//!
//! Each test starts its own server on a free port with its own data directory. Run with
//! `--nocapture` to see the `FIGURES` lines.

use std::sync::Arc;
use std::time::Duration;

use session_reliability::app::serve;
use session_reliability::load::{self, Fault, Plan};
use session_reliability::servers::{Crashable, MongoServer, PostgresServer, RedisServer};
use session_reliability::unique;
use session_store::{SessionManager, SessionStore};
use session_store_mongodb::MongoStore;
use session_store_mongodb::mongodb::Client;
use session_store_mongodb::mongodb::bson::Document;
use session_store_mongodb::mongodb::options::{CollectionOptions, WriteConcern};
use session_store_redis::RedisStore;
use session_store_sqlx::PostgresStore;

/// The manager's per-store-call timeout in these tests: a request during an outage must
/// answer 503 well within `Plan::outage_answer_limit` (10 s).
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

async fn crash_under_load(server: &mut dyn Crashable, store: Arc<dyn SessionStore>, plan: Plan) {
    let manager = SessionManager::builder_arc(store.clone())
        .store_timeout(STORE_TIMEOUT)
        .build()
        .expect("valid manager");
    let app = serve(manager).await;
    let report = load::run(app.addr, server, store, plan).await;
    println!("{}", report.figures());
    assert!(
        report.violations.is_empty(),
        "{} violation(s):\n{}",
        report.violations.len(),
        report.violations.join("\n")
    );
    assert_eq!(report.sessions_lost, 0);
    assert!(report.unavailable > 0, "no request saw the outage");
    assert!(report.ok > 0);
    assert!(app.is_alive(), "the app's server task ended");
}

async fn redis_store(server: &RedisServer) -> Arc<dyn SessionStore> {
    let store = RedisStore::from_url(&server.url())
        .expect("store")
        .with_prefix(format!("{}:", unique("faults")));
    store.connect().await.expect("connect");
    Arc::new(store)
}

/// The same store with the near-cache on: every read of a cached session is served from
/// memory, so the outage must still show (the cache is emptied and bypassed once its
/// connection is lost) and no read may go back to a value from before it.
async fn redis_near_cached_store(server: &RedisServer) -> Arc<dyn SessionStore> {
    let store = RedisStore::from_url(&server.url())
        .expect("store")
        .with_prefix(format!("{}:", unique("faults-near")))
        .with_near_cache(session_store_redis::NearCacheConfig::new())
        .expect("near-cache");
    store.connect().await.expect("connect");
    Arc::new(store)
}

/// Journaled writes (`j: true`): with the default write concern SecantusDB answers before
/// its journal record reaches the file, and a SIGKILL then loses acknowledged writes (seen
/// here: half of the sessions fell back by their last increment).
async fn mongo_store(server: &MongoServer) -> Arc<dyn SessionStore> {
    let client = Client::with_uri_str(server.url()).await.expect("client");
    let collection = client
        .database("reliability")
        .collection_with_options::<Document>(
            &unique("faults"),
            CollectionOptions::builder()
                .write_concern(WriteConcern::builder().journal(true).build())
                .build(),
        );
    Arc::new(
        MongoStore::from_collection(collection)
            .await
            .expect("store"),
    )
}

/// SecantusDB is a Python server: think time keeps 32 clients from starving the shared
/// 2-core machine.
fn mongo_plan(fault: Fault) -> Plan {
    Plan {
        think: Duration::from_millis(50),
        fault,
        ..Plan::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_loses_no_acknowledged_session() {
    let mut server = RedisServer::start();
    let store = redis_store(&server).await;
    crash_under_load(&mut server, store, Plan::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_frozen_under_load_answers_503_in_time() {
    let mut server = RedisServer::start();
    let store = redis_store(&server).await;
    let plan = Plan {
        fault: Fault::Freeze,
        ..Plan::default()
    };
    crash_under_load(&mut server, store, plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_near_cached_killed_under_load_loses_no_acknowledged_session() {
    let mut server = RedisServer::start();
    let store = redis_near_cached_store(&server).await;
    crash_under_load(&mut server, store, Plan::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_near_cached_frozen_under_load_answers_503_in_time() {
    let mut server = RedisServer::start();
    let store = redis_near_cached_store(&server).await;
    let plan = Plan {
        fault: Fault::Freeze,
        ..Plan::default()
    };
    crash_under_load(&mut server, store, plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_killed_under_load_loses_no_acknowledged_session() {
    let mut server = MongoServer::start();
    let store = mongo_store(&server).await;
    crash_under_load(&mut server, store, mongo_plan(Fault::Kill)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_frozen_under_load_answers_503_in_time() {
    let mut server = MongoServer::start();
    let store = mongo_store(&server).await;
    crash_under_load(&mut server, store, mongo_plan(Fault::Freeze)).await;
}

async fn postgres_store(server: &PostgresServer) -> Arc<dyn SessionStore> {
    let store = PostgresStore::connect(&server.url())
        .await
        .expect("connect")
        .with_table_name(&unique("faults"))
        .expect("table name");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// The same store with the near-cache on (the listening connection dies with the server,
/// so the cache is emptied and bypassed until a new one listens).
async fn postgres_near_cached_store(server: &PostgresServer) -> Arc<dyn SessionStore> {
    let store = PostgresStore::connect(&server.url())
        .await
        .expect("connect")
        .with_table_name(&unique("faults_near"))
        .expect("table name")
        .with_near_cache(session_store_sqlx::NearCacheConfig::new())
        .expect("near-cache");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_near_cached_killed_under_load_loses_no_acknowledged_session() {
    let mut server = PostgresServer::start();
    let store = postgres_near_cached_store(&server).await;
    crash_under_load(&mut server, store, Plan::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_near_cached_frozen_under_load_answers_503_in_time() {
    let mut server = PostgresServer::start();
    let store = postgres_near_cached_store(&server).await;
    let plan = Plan {
        fault: Fault::Freeze,
        ..Plan::default()
    };
    crash_under_load(&mut server, store, plan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_under_load_loses_no_acknowledged_session() {
    let mut server = PostgresServer::start();
    let store = postgres_store(&server).await;
    crash_under_load(&mut server, store, Plan::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_frozen_under_load_answers_503_in_time() {
    let mut server = PostgresServer::start();
    let store = postgres_store(&server).await;
    let plan = Plan {
        fault: Fault::Freeze,
        ..Plan::default()
    };
    crash_under_load(&mut server, store, plan).await;
}
