//! A fixed number of manager requests on `MemoryStore`, for counting instructions with
//! `perf stat -e instructions:u` (steady where timings on a shared machine are not):
//!
//! `cargo run --release -p session-benches --example ops -- read 200000`
//!
//! Workloads: `read`, `write`, `new`, `touch`, or `none` (set-up only, to subtract).
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, StatusCode};
use session_store::{MemoryStore, SessionManager};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().map_or("read", String::as_str).to_owned();
    let n: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = MemoryStore::new();
        let manager = SessionManager::builder(store.clone())
            .idle_lifetime(Duration::from_secs(3600))
            .build()
            .expect("manager");
        let touching = SessionManager::builder(store)
            .idle_lifetime(Duration::from_secs(3600))
            .touch_after(Duration::ZERO)
            .build()
            .expect("manager");
        // Ten small keys, a counter and a 1 KB string.
        let session = manager.new_session();
        for i in 0..10 {
            session
                .insert(format!("k{i}"), format!("value {i}"))
                .expect("insert");
        }
        session.insert("n", 0u64).expect("insert");
        session.insert("blob", "x".repeat(1024)).expect("insert");
        let mut out = HeaderMap::new();
        manager
            .finish(&session, StatusCode::OK, &mut out)
            .await
            .expect("commit");
        let pair = out[http::header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&pair).expect("header"));
        let empty = HeaderMap::new();
        for _ in 0..n {
            let (m, h) = match workload.as_str() {
                "touch" => (&touching, &headers),
                "new" => (&manager, &empty),
                "none" => break,
                _ => (&manager, &headers),
            };
            let session = m.load(h).await.expect("load");
            match workload.as_str() {
                "write" => {
                    let v: u64 = session.get("n").expect("get").expect("n");
                    session.insert("n", v + 1).expect("insert");
                }
                "new" => session.insert("user", "alice").expect("insert"),
                _ => {
                    let v: Option<String> = session.get("k3").expect("get");
                    assert!(v.is_some());
                }
            }
            let mut out = HeaderMap::new();
            m.finish(&session, StatusCode::OK, &mut out)
                .await
                .expect("commit");
            std::hint::black_box(out);
        }
    });
}
