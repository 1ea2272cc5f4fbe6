//! Shared pieces of the peer benchmarks (`benches/peers.rs`): the session data every
//! library stores, the workloads, and a fixed-duration concurrent load loop.
//!
//! Absolute times on a shared machine are noisy; the benchmark reports ratios between
//! libraries measured back to back in one process.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod plain;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The four request shapes of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// An existing session; the handler reads one key; nothing changes.
    Read,
    /// An existing session; the handler increments a counter.
    Write,
    /// No cookie; the handler sets one key, which creates a session.
    New,
    /// An existing, unmodified session whose expiry extension is due on every request.
    Touch,
    /// An existing, unmodified session with rolling expiry whose extension is not due yet
    /// (round-trip table only).
    NotDue,
}

impl Workload {
    /// The four throughput workloads.
    pub const MAIN: [Workload; 4] = [
        Workload::Read,
        Workload::Write,
        Workload::New,
        Workload::Touch,
    ];

    /// Lower-case name used in tables and URLs.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::New => "new",
            Workload::Touch => "touch",
            Workload::NotDue => "not-due",
        }
    }
}

/// The ten small keys every seeded session holds (`n`, the counter, is the tenth).
pub fn small_keys() -> Vec<(String, String)> {
    (0..9)
        .map(|i| (format!("k{i}"), format!("value-{i}")))
        .collect()
}

/// The 1 KB value every seeded session holds under `blob`.
pub fn blob() -> String {
    "x".repeat(1024)
}

/// Result of one fixed-duration run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Operations that returned an error.
    pub errors: u64,
}

/// Runs `op(task, iteration)` in `tasks` concurrent tasks for `duration` and returns the
/// completed operations per second (an `Err` counts as an error, not as an operation).
pub async fn run_for<F, Fut, E>(tasks: usize, duration: Duration, op: F) -> Rate
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Warm-up: one operation per task before the clock starts.
    for t in 0..tasks {
        let _ = op(t, u64::MAX - t as u64).await;
    }
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (op, stop, done, errors) = (op.clone(), stop.clone(), done.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match op(t, i).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("    first error: {e}");
                        }
                    }
                }
                i += 1;
                // In-memory operations never wait: yield now and then so the timer that
                // ends the run (and the other tasks) get the worker threads.
                if i.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for h in handles {
        let _ = h.await;
    }
    Rate {
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
