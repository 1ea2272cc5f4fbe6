//! `MemoryStore` passes the conformance suite directly, boxed and shared.

use std::sync::Arc;

use session_store::testing::{SuiteOptions, run};
use session_store::{Capabilities, MemoryStore, SessionStore};

fn options() -> SuiteOptions {
    SuiteOptions::new(Capabilities::ALL)
}

#[tokio::test]
async fn direct() {
    run(&MemoryStore::new(), &options()).await;
}

#[tokio::test]
async fn boxed() {
    let store: Box<dyn SessionStore> = Box::new(MemoryStore::new());
    run(store.as_ref(), &options()).await;
    run(&store, &options()).await;
}

#[tokio::test]
async fn shared() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    run(store.as_ref(), &options()).await;
    run(&store, &options()).await;
}
