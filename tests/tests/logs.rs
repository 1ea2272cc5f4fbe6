//! Store failures are logged as `tracing` error events, without the session id. Alone in
//! its test binary so that the captured log holds only this test's events.

use std::sync::Arc;

use http::StatusCode;
use session_store::{SessionManager, SystemClock};
use session_tests::{Failure, Framework, TestStore, capture_logs, captured_logs, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_are_logged_without_the_session_id() {
    capture_logs();
    for framework in [Framework::Axum, Framework::Actix, Framework::Hyper] {
        let store = TestStore::new(Arc::new(SystemClock));
        let server = spawn(framework, SessionManager::builder(store.store())).await;
        let c = server.client();
        assert_eq!(c.get("/count").await.status, StatusCode::OK);
        let id = c.cookie("sid").expect("a session cookie");

        for (failure, status, path) in [
            (
                Failure::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "/read",
            ),
            (Failure::Backend, StatusCode::INTERNAL_SERVER_ERROR, "/read"),
            (
                Failure::WritesUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "/count",
            ),
            (
                Failure::WritesBackend,
                StatusCode::INTERNAL_SERVER_ERROR,
                "/count",
            ),
        ] {
            let before = captured_logs().len();
            store.fail(failure);
            let r = c.get(path).await;
            store.fail(Failure::None);
            assert_eq!(r.status, status, "{framework:?} {failure:?}");
            let logs = captured_logs();
            let new = &logs[before..];
            let event = new
                .lines()
                .find(|line| line.contains("ERROR") && line.contains("session store failed"))
                .unwrap_or_else(|| panic!("{framework:?} {failure:?}: no error event in {new:?}"));
            assert!(
                event.contains(&format!("status={}", status.as_u16())),
                "{event}"
            );
            assert!(event.contains("session store `test`"), "the error: {event}");
            assert!(
                event.contains("error.sources=["),
                "the source chain: {event}"
            );
            assert!(
                !logs.contains(&id),
                "{framework:?}: the session id was logged"
            );
        }
    }
}
