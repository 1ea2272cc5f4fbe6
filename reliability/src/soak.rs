//! The soak: clients log in, count and log out for a long time, with a short session
//! lifetime, while the app's memory, the store's record count and the latencies are sampled
//! every minute. What it shows is that nothing grows without bound: the sessions that users
//! abandon expire and the store reclaims them, the owner indexes shed their dead members,
//! and the process's memory levels off.
//!
//! A client's round (a "visit"):
//! 1. a fresh cookie jar: `GET /count` gives an anonymous session with count 1;
//! 2. `GET /login/{user}`: a new session id, the data kept (the next count is 2), the session
//!    bound to one of [`Plan::users`] users;
//! 3. a few more `GET /count`, each answering one more than the last;
//! 4. `GET /logout` (the session is destroyed, and `GET /read` with the old cookie then
//!    answers 0: it is never served again), except every [`Plan::abandon_every`]-th visit,
//!    which just forgets its cookie: that session stays in the store until it expires.
//!
//! Each client starts a visit every [`Plan::visit_every`] (250 ms: 128 visits and about
//! 1,500 requests a second for 32 clients), so the records held settle at a level set by
//! the load and the lifetimes: the abandoned sessions of the last session lifetime, the
//! regenerations' tombstones of the last minute, and (SQL) the rows expired since the last
//! cleanup.
//!
//! Anything else (a status other than 200, a count out of step, a logged-out session served,
//! a transport error) is counted as an error of the minute it happened in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::raw_http::KeepAliveClient;

/// How the soak runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrent clients.
    pub clients: usize,
    /// How long the load runs.
    pub duration: Duration,
    /// Time between two samples.
    pub sample_every: Duration,
    /// Users the clients log in as (their sessions share these owner indexes).
    pub users: usize,
    /// `GET /count` requests after the login, per visit.
    pub counts_per_visit: u64,
    /// Every this-many-th visit of a client is abandoned instead of logged out.
    pub abandon_every: u64,
    /// Pause between two requests of one client.
    pub think: Duration,
    /// A client starts a visit at most this often (a visit that takes longer starts the
    /// next one late, not two at once): the load is the same whatever else the machine
    /// does, so the counts have a steady state to level off at.
    pub visit_every: Duration,
    /// A request not answered within this is an error (and the client starts over).
    pub request_timeout: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            clients: 32,
            duration: Duration::from_secs(30 * 60),
            sample_every: Duration::from_secs(60),
            users: 1000,
            counts_per_visit: 8,
            abandon_every: 4,
            think: Duration::from_millis(2),
            visit_every: Duration::from_millis(250),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The store's own count of what it holds, read at each sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Session records (Redis keys, table rows).
    pub sessions: u64,
    /// Other records the store keeps for them: owner indexes (Redis), or rows past their
    /// expiry that the cleanup has not deleted yet (SQL).
    pub other: u64,
}

/// One sample: what happened since the previous one, and the state at its end.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Time since the load began.
    pub at: Duration,
    /// Requests answered in the interval.
    pub requests: u64,
    /// Visits that ended (logged out or abandoned) in the interval.
    pub visits: u64,
    /// Errors in the interval (the first few are in [`Report::errors`]).
    pub errors: u64,
    /// Latency percentiles of the interval's requests: p50, p99, p99.9 and max.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Slowest request.
    pub max: Duration,
    /// The process's resident memory (`VmRSS`), in KiB; 0 where `/proc` is not readable.
    pub rss_kib: u64,
    /// What the store holds.
    pub held: Held,
}

/// What a soak measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// One sample per interval.
    pub samples: Vec<Sample>,
    /// The first errors seen (at most 20).
    pub errors: Vec<String>,
}

impl Report {
    /// Errors over the whole run.
    pub fn error_count(&self) -> u64 {
        self.samples.iter().map(|s| s.errors).sum()
    }

    /// The samples as a Markdown table (for RELIABILITY.md).
    pub fn table(&self) -> String {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let mut out = String::from(
            "| minute | requests/s | visits | errors | p50 ms | p99 ms | p99.9 ms | max ms | RSS MiB | sessions held | other records |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        let mut previous = Duration::ZERO;
        for s in &self.samples {
            let seconds = (s.at - previous).as_secs_f64().max(0.001);
            previous = s.at;
            out.push_str(&format!(
                "| {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} |\n",
                s.at.as_secs_f64() / 60.0,
                s.requests as f64 / seconds,
                s.visits,
                s.errors,
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                ms(s.max),
                s.rss_kib as f64 / 1024.0,
                s.held.sessions,
                s.held.other,
            ));
        }
        out
    }

    /// Whether memory and counts levelled off: over the last third of the samples, the
    /// resident memory and the records held stay within `tolerance` (e.g. 0.2 = 20 %) of
    /// the highest value of the middle third (plus 4 MiB of slack for the memory, which
    /// moves by allocator pages). `Err` says what grew. Needs at least 6 samples.
    pub fn levelled(&self, tolerance: f64) -> Result<(), String> {
        let n = self.samples.len();
        if n < 6 {
            return Err(format!("{n} samples: too few to judge (6 or more)"));
        }
        let middle = &self.samples[n / 3..2 * n / 3];
        let last = &self.samples[2 * n / 3..];
        let peak = |part: &[Sample], f: &dyn Fn(&Sample) -> u64| {
            part.iter().map(f).max().unwrap_or(0) as f64
        };
        let mut grew = Vec::new();
        type Check<'a> = (&'a str, &'a dyn Fn(&Sample) -> u64, f64);
        let checks: [Check; 3] = [
            ("resident memory (KiB)", &|s| s.rss_kib, 4096.0),
            ("sessions held", &|s| s.held.sessions, 0.0),
            ("other records", &|s| s.held.other, 16.0),
        ];
        for (what, f, slack) in checks {
            let (before, after) = (peak(middle, f), peak(last, f));
            if after > before * (1.0 + tolerance) + slack {
                grew.push(format!(
                    "{what}: middle third's peak {before:.0}, last third's {after:.0}"
                ));
            }
        }
        if grew.is_empty() {
            Ok(())
        } else {
            Err(grew.join("; "))
        }
    }
}

/// The process's resident memory in KiB (`VmRSS` of `/proc/self/status`); 0 if unreadable.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Counters the clients add to, drained at each sample.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    visits: AtomicU64,
    errors: AtomicU64,
    latencies_micros: Mutex<Vec<u32>>,
    first_errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 20 {
            first.push(text);
        }
    }
}

/// One request: the answer's status and body, or the error already counted.
async fn request(
    http: &mut KeepAliveClient,
    path: &str,
    shared: &Shared,
    plan: &Plan,
) -> Option<(u16, String)> {
    let started = Instant::now();
    let result = tokio::time::timeout(plan.request_timeout, http.get(path)).await;
    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    shared.requests.fetch_add(1, Ordering::Relaxed);
    shared
        .latencies_micros
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(micros);
    if !plan.think.is_zero() {
        tokio::time::sleep(plan.think).await;
    }
    match result {
        Ok(Ok(reply)) if reply.status == 200 => Some((200, reply.text())),
        Ok(Ok(reply)) => {
            shared.error(format!(
                "{path}: status {}: {:?}",
                reply.status,
                reply.text()
            ));
            None
        }
        Ok(Err(error)) => {
            shared.error(format!("{path}: transport error: {error}"));
            None
        }
        Err(_) => {
            shared.error(format!(
                "{path}: no answer within {:?}",
                plan.request_timeout
            ));
            None
        }
    }
}

/// One visit; `None` when it went wrong (the error is counted).
async fn visit(
    addr: SocketAddr,
    user: usize,
    abandon: bool,
    shared: &Shared,
    plan: &Plan,
) -> Option<()> {
    let mut http = KeepAliveClient::new(addr, "sid");
    let expect = |what: &str, got: String, want: String| {
        if got.trim() == want {
            Some(())
        } else {
            shared.error(format!("{what}: answered {got:?}, expected {want:?}"));
            None
        }
    };
    let (_, body) = request(&mut http, "/count", shared, plan).await?;
    expect("first count", body, "1".into())?;
    let anonymous = http.cookie.clone();
    let (_, body) = request(&mut http, &format!("/login/user{user}"), shared, plan).await?;
    expect("login", body, format!("user{user}"))?;
    if http.cookie.is_none() || http.cookie == anonymous {
        shared.error("login kept the anonymous session's id".into());
        return None;
    }
    for n in 2..2 + plan.counts_per_visit {
        let (_, body) = request(&mut http, "/count", shared, plan).await?;
        expect("count", body, n.to_string())?;
    }
    if abandon {
        return Some(());
    }
    let session = http.cookie.clone();
    request(&mut http, "/logout", shared, plan).await?;
    if http.cookie.is_some() {
        shared.error("logout left the cookie".into());
        return None;
    }
    // The logged-out session is never served again.
    http.cookie = session;
    let (_, body) = request(&mut http, "/read", shared, plan).await?;
    expect("read after logout", body, "0".into())
}

async fn client(index: usize, addr: SocketAddr, shared: Arc<Shared>, plan: Plan) {
    let mut visits = 0u64;
    // Clients start spread over one period, not in step.
    let offset = plan
        .visit_every
        .mul_f64(index as f64 / plan.clients.max(1) as f64);
    let mut pace = tokio::time::interval_at(tokio::time::Instant::now() + offset, plan.visit_every);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::Relaxed) {
        pace.tick().await;
        visits += 1;
        let user = (index * 7919 + visits as usize * 104_729) % plan.users.max(1);
        let abandon = plan.abandon_every > 0 && visits.is_multiple_of(plan.abandon_every);
        let _ = visit(addr, user, abandon, &shared, &plan).await;
        shared.visits.fetch_add(1, Ordering::Relaxed);
    }
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    Duration::from_micros(u64::from(sorted[rank - 1]))
}

/// Runs `plan` against the app at `addr` (served by [`crate::app::serve`]); at each sample
/// it calls `held` for the store's counts and `on_sample` with the sample (to print it as
/// it comes).
pub async fn run<H>(
    addr: SocketAddr,
    plan: Plan,
    mut held: impl FnMut() -> H,
    mut on_sample: impl FnMut(&Sample),
) -> Report
where
    H: std::future::Future<Output = Held>,
{
    let shared = Arc::new(Shared::default());
    let tasks: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(client(i, addr, shared.clone(), plan.clone())))
        .collect();
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut next = began;
    loop {
        next += plan.sample_every;
        let end = next.min(began + plan.duration);
        tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
        let mut latencies = std::mem::take(
            &mut *shared
                .latencies_micros
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        latencies.sort_unstable();
        let sample = Sample {
            at: began.elapsed(),
            requests: shared.requests.swap(0, Ordering::Relaxed),
            visits: shared.visits.swap(0, Ordering::Relaxed),
            errors: shared.errors.swap(0, Ordering::Relaxed),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            p999: percentile(&latencies, 0.999),
            max: percentile(&latencies, 1.0),
            rss_kib: rss_kib(),
            held: held().await,
        };
        on_sample(&sample);
        samples.push(sample);
        if end >= began + plan.duration {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let errors = shared
        .first_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Report { samples, errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: u64, rss_kib: u64, sessions: u64) -> Sample {
        Sample {
            at: Duration::from_secs(minute * 60),
            requests: 1,
            visits: 1,
            errors: 0,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            p999: Duration::ZERO,
            max: Duration::ZERO,
            rss_kib,
            held: Held { sessions, other: 0 },
        }
    }

    #[test]
    fn a_plateau_is_level_and_a_climb_is_not() {
        let flat = Report {
            samples: (1..=9).map(|m| sample(m, 50_000, 6_000 + m)).collect(),
            errors: Vec::new(),
        };
        assert_eq!(flat.levelled(0.2), Ok(()));
        let climbing = Report {
            samples: (1..=9).map(|m| sample(m, 50_000, 1_000 * m)).collect(),
            errors: Vec::new(),
        };
        let why = climbing.levelled(0.2).unwrap_err();
        assert!(why.contains("sessions held"), "{why}");
        let leaking = Report {
            samples: (1..=9)
                .map(|m| sample(m, 50_000 + 10_000 * m, 10))
                .collect(),
            errors: Vec::new(),
        };
        assert!(leaking.levelled(0.2).unwrap_err().contains("memory"));
        assert!(
            Report {
                samples: Vec::new(),
                errors: Vec::new()
            }
            .levelled(0.2)
            .is_err()
        );
    }

    #[test]
    fn percentiles_of_a_sorted_list() {
        let list: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&list, 0.5), Duration::from_micros(500));
        assert_eq!(percentile(&list, 0.99), Duration::from_micros(990));
        assert_eq!(percentile(&list, 1.0), Duration::from_micros(1000));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(rss_kib() > 0);
    }
}
