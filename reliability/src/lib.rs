//! Reliability harness for session-store: servers of a test's own that can be killed and
//! restarted on the same port with the same data directory, an axum app behind
//! `session-store-tower`, a raw HTTP/1.1 client (it writes the request bytes itself, so it
//! can send headers that [`axum::http::HeaderValue`] cannot hold), a load driver that kills
//! the backend under load and checks that no acknowledged session is lost, and the
//! hostile-cookie corpus. Store calls are counted with `session_store::testing::CountingStore`.
//!
//! The tests live in `tests/`: `faults_*.rs` (a backend killed under HTTP load) and
//! `hostile.rs` (hostile cookies and garbage records through HTTP against every store).
//! The soak ([`soak`], binary `soak`) runs for half an hour and is not a test.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod hostile;
pub mod load;
pub mod raw_http;
pub mod servers;
pub mod soak;

/// A name no other run uses (for key prefixes, collections, tables).
pub fn unique(what: &str) -> String {
    format!(
        "rel_{what}_{}",
        nanoid::nanoid!(10, &nanoid::alphabet::SAFE[2..])
    )
}
