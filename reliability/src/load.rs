//! The fault driver: clients, each with a session of its own, keep incrementing a counter
//! over HTTP while the backend is killed (`SIGKILL`) and restarted on the same port.
//!
//! What is checked, per client:
//! - every answer is 200 or 503 (never 500, never a dropped connection: a panic in the
//!   app drops the connection);
//! - a 503 comes only while the backend is down or coming back, and within
//!   [`Plan::outage_answer_limit`];
//! - the counters a client sees acknowledged (200) strictly increase: none goes backwards,
//!   none is lost;
//! - the session cookie is set once and never replaced (a lost session would come back as
//!   a fresh one under a new id);
//! - after the last recovery the stored counter is at least the last acknowledged value.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_store::{SessionId, SessionStore};

use crate::raw_http::KeepAliveClient;
use crate::servers::Crashable;

/// What happens to the backend in each cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `SIGKILL`, then a restart on the same port over the same data.
    Kill,
    /// `SIGSTOP` (the server holds its connections and answers nothing), then `SIGCONT`.
    Freeze,
}

/// How the load and the faults go.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrent clients, one session each.
    pub clients: usize,
    /// Kill/restart (or freeze/thaw) cycles.
    pub cycles: usize,
    /// The fault.
    pub fault: Fault,
    /// Acknowledged requests every client must see before each kill (and after the last
    /// recovery).
    pub acks_between_faults: u64,
    /// 503 answers every client must see during each outage before the restart.
    pub outage_answers: u64,
    /// The shortest outage (the restart waits at least this long after the kill).
    pub min_outage: Duration,
    /// Pause between two requests of one client.
    pub think: Duration,
    /// A 503 must arrive within this (generous: the store timeout is 2 s).
    pub outage_answer_limit: Duration,
    /// Deadline for progress and for the outage to be seen.
    pub deadline: Duration,
    /// Deadline for every client to get a 200 after the restart (or thaw).
    pub recovery_deadline: Duration,
    /// Counts acknowledged increments that went missing (a counter lower than acknowledged,
    /// a session replaced by a fresh one) in [`Report::acks_lost`] and
    /// [`Report::sessions_replaced`] instead of failing the run: for failovers, where
    /// asynchronous replication may lose the last writes.
    pub count_losses: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            clients: 32,
            cycles: 2,
            fault: Fault::Kill,
            acks_between_faults: 30,
            outage_answers: 2,
            min_outage: Duration::from_secs(3),
            think: Duration::from_millis(5),
            outage_answer_limit: Duration::from_secs(10),
            deadline: Duration::from_secs(120),
            recovery_deadline: Duration::from_secs(60),
            count_losses: false,
        }
    }
}

/// Healthy: any 503 is a failure.
const HEALTHY: u8 = 0;
/// Killed.
const DOWN: u8 = 1;
/// Restarted, not every client recovered yet.
const RECOVERING: u8 = 2;
/// Clients stop.
const STOP: u8 = 3;

/// One kill/restart cycle.
#[derive(Debug, Clone)]
pub struct Cycle {
    /// From the kill to the restart command.
    pub outage: Duration,
    /// 503 answers during the cycle.
    pub unavailable: u64,
    /// Slowest 503.
    pub slowest_503: Duration,
    /// From the restart command until the server accepted connections.
    pub server_start: Duration,
    /// From the restart command to the first 200 through HTTP (includes `server_start`).
    pub first_recovery: Duration,
    /// From the restart command until every client had a 200.
    pub full_recovery: Duration,
    /// Clients that saw a 503 in the cycle (those whose sessions the fault reached).
    pub affected: usize,
    /// From the kill (when `kill` returned) to the first 200 that ended an affected
    /// client's 503s, timed as the answers came (also during the outage phase, so not
    /// bounded below by [`Plan::min_outage`]); zero when none was affected.
    pub first_served_again: Duration,
    /// From the kill to the last affected client's first 200 after its last 503.
    pub all_served_again: Duration,
}

/// What a fault run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The backend.
    pub store: &'static str,
    /// Clients (= sessions).
    pub clients: usize,
    /// Requests answered.
    pub requests: u64,
    /// 200 answers.
    pub ok: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Wall time of the load.
    pub duration: Duration,
    /// The fault.
    pub fault: Fault,
    /// Per cycle.
    pub cycles: Vec<Cycle>,
    /// Sessions whose acknowledged counter was lost or went backwards (the test asserts 0).
    pub sessions_lost: usize,
    /// Acknowledged increments seen lost by the clients ([`Plan::count_losses`]).
    pub acks_lost: u64,
    /// Sessions a client saw replaced by a fresh one ([`Plan::count_losses`]).
    pub sessions_replaced: u64,
    /// Problems found (the test asserts none).
    pub violations: Vec<String>,
}

impl Report {
    /// One line with every figure, for the logs and RELIABILITY.md.
    pub fn figures(&self) -> String {
        let ms = |d: Duration| format!("{:.0}ms", d.as_secs_f64() * 1000.0);
        let list = |f: &dyn Fn(&Cycle) -> Duration| {
            self.cycles
                .iter()
                .map(|c| ms(f(c)))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "FIGURES store={} fault={:?} clients={} requests={} ok={} 503={} duration={:.1}s \
             rate={:.0}/s faults={} outage=[{}] slowest_503=[{}] server_start=[{}] first_recovery=[{}] \
             full_recovery=[{}] affected=[{}] served_again_first=[{}] served_again_all=[{}] sessions_lost={} acks_lost={} sessions_replaced={} violations={}",
            self.store,
            self.fault,
            self.clients,
            self.requests,
            self.ok,
            self.unavailable,
            self.duration.as_secs_f64(),
            self.requests as f64 / self.duration.as_secs_f64().max(0.001),
            self.cycles.len(),
            list(&|c| c.outage),
            list(&|c| c.slowest_503),
            list(&|c| c.server_start),
            list(&|c| c.first_recovery),
            list(&|c| c.full_recovery),
            self.cycles
                .iter()
                .map(|c| c.affected.to_string())
                .collect::<Vec<_>>()
                .join(","),
            list(&|c| c.first_served_again),
            list(&|c| c.all_served_again),
            self.sessions_lost,
            self.acks_lost,
            self.sessions_replaced,
            self.violations.len(),
        )
    }
}

/// Progress of one client, read by the coordinator.
#[derive(Default)]
struct Progress {
    acks: AtomicU64,
    unavailable: AtomicU64,
    /// Microseconds since the run began of the first 200 while recovering (0: none yet).
    recovered_at: AtomicU64,
    last_ack: AtomicU64,
    slowest_503_micros: AtomicU64,
    requests: AtomicU64,
    acks_lost: AtomicU64,
    sessions_replaced: AtomicU64,
    /// A 503 came in this cycle.
    saw_503: AtomicBool,
    /// Microseconds since the run began of the first 200 after the client's latest 503 of
    /// this cycle (0: none since).
    served_again_at: AtomicU64,
}

struct Shared {
    phase: AtomicU8,
    failed: AtomicBool,
    origin: Instant,
    progress: Vec<Progress>,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, text: String) {
        self.failed.store(true, Ordering::SeqCst);
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text);
    }

    fn micros(&self) -> u64 {
        (self.origin.elapsed().as_micros() as u64).max(1)
    }
}

/// What a client ends with.
struct ClientEnd {
    cookie: Option<String>,
    last_ack: u64,
}

async fn client(index: usize, addr: SocketAddr, shared: Arc<Shared>, plan: Plan) -> ClientEnd {
    let mut http = KeepAliveClient::new(addr, "sid");
    let me = &shared.progress[index];
    let mut last_ack = 0u64;
    let mut first_cookie: Option<String> = None;
    loop {
        let sent_phase = shared.phase.load(Ordering::SeqCst);
        if sent_phase == STOP || shared.failed.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(plan.deadline, http.get("/count")).await;
        let took = started.elapsed();
        let received_phase = shared.phase.load(Ordering::SeqCst);
        me.requests.fetch_add(1, Ordering::SeqCst);
        let reply = match result {
            Err(_) => {
                shared.violation(format!(
                    "client {index}: no answer within {:?}",
                    plan.deadline
                ));
                break;
            }
            Ok(Err(error)) => {
                shared.violation(format!(
                    "client {index}: transport error (a panic drops the connection): {error}"
                ));
                break;
            }
            Ok(Ok(reply)) => reply,
        };
        match reply.status {
            200 => {
                let Ok(value) = reply.text().trim().parse::<u64>() else {
                    shared.violation(format!("client {index}: 200 with body {:?}", reply.text()));
                    break;
                };
                if value <= last_ack && plan.count_losses {
                    me.acks_lost
                        .fetch_add(last_ack + 1 - value, Ordering::SeqCst);
                } else if value <= last_ack {
                    shared.violation(format!(
                        "client {index}: counter went from {last_ack} to {value} (lost update)"
                    ));
                }
                last_ack = value;
                me.last_ack.store(value, Ordering::SeqCst);
                match (&first_cookie, &http.cookie) {
                    (None, Some(cookie)) => first_cookie = Some(cookie.clone()),
                    (Some(first), Some(now)) if first != now && plan.count_losses => {
                        me.sessions_replaced.fetch_add(1, Ordering::SeqCst);
                        first_cookie = Some(now.clone());
                    }
                    (Some(first), Some(now)) if first != now => shared.violation(format!(
                        "client {index}: the session cookie was replaced (session lost)"
                    )),
                    (Some(_), None) => {
                        shared.violation(format!("client {index}: the session cookie was removed"))
                    }
                    _ => {}
                }
                if me.saw_503.load(Ordering::SeqCst) {
                    let _ = me.served_again_at.compare_exchange(
                        0,
                        shared.micros(),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                if received_phase == RECOVERING {
                    let _ = me.recovered_at.compare_exchange(
                        0,
                        shared.micros(),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                me.acks.fetch_add(1, Ordering::SeqCst);
            }
            503 => {
                if sent_phase == HEALTHY && received_phase == HEALTHY {
                    shared.violation(format!(
                        "client {index}: 503 while the backend was healthy (after {took:?})"
                    ));
                }
                if took > plan.outage_answer_limit {
                    shared.violation(format!(
                        "client {index}: 503 took {took:?} (limit {:?})",
                        plan.outage_answer_limit
                    ));
                }
                me.slowest_503_micros
                    .fetch_max(took.as_micros() as u64, Ordering::SeqCst);
                me.saw_503.store(true, Ordering::SeqCst);
                me.served_again_at.store(0, Ordering::SeqCst);
                me.unavailable.fetch_add(1, Ordering::SeqCst);
            }
            other => {
                shared.violation(format!(
                    "client {index}: status {other} (only 200 or 503 are acceptable): {:?}",
                    reply.text()
                ));
            }
        }
        if !plan.think.is_zero() {
            tokio::time::sleep(plan.think).await;
        }
    }
    ClientEnd {
        cookie: first_cookie,
        last_ack,
    }
}

/// Waits until `done` holds, failing on a violation or after `deadline`.
async fn wait_until(
    shared: &Shared,
    what: &str,
    deadline: Duration,
    done: impl Fn() -> bool,
) -> Result<(), String> {
    let until = Instant::now() + deadline;
    loop {
        if shared.failed.load(Ordering::SeqCst) {
            return Err(format!("stopped waiting for {what}: a client failed"));
        }
        if done() {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("{what}: not within {deadline:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `plan` against the app at `addr`, crashing `server` in each cycle; `store` is the
/// app's store, read directly at the end to check every session's counter.
///
/// Must run on a multi-threaded tokio runtime (kill and restart block).
pub async fn run(
    addr: SocketAddr,
    server: &mut dyn Crashable,
    store: Arc<dyn SessionStore>,
    plan: Plan,
) -> Report {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(HEALTHY),
        failed: AtomicBool::new(false),
        origin: Instant::now(),
        progress: (0..plan.clients).map(|_| Progress::default()).collect(),
        violations: Mutex::new(Vec::new()),
    });
    let tasks: Vec<_> = (0..plan.clients)
        .map(|i| tokio::spawn(client(i, addr, shared.clone(), plan.clone())))
        .collect();
    let began = Instant::now();
    let mut cycles = Vec::new();
    let acks_of = |s: &Shared| -> Vec<u64> {
        s.progress
            .iter()
            .map(|p| p.acks.load(Ordering::SeqCst))
            .collect()
    };
    let result: Result<(), String> = async {
        for cycle in 0..plan.cycles {
            let base = acks_of(&shared);
            wait_until(&shared, "progress before the kill", plan.deadline, || {
                acks_of(&shared)
                    .iter()
                    .zip(&base)
                    .all(|(now, then)| *now >= then + plan.acks_between_faults)
            })
            .await?;
            let base_503: Vec<u64> = shared
                .progress
                .iter()
                .map(|p| p.unavailable.load(Ordering::SeqCst))
                .collect();
            for p in &shared.progress {
                p.recovered_at.store(0, Ordering::SeqCst);
                p.slowest_503_micros.store(0, Ordering::SeqCst);
                p.saw_503.store(false, Ordering::SeqCst);
                p.served_again_at.store(0, Ordering::SeqCst);
            }
            shared.phase.store(DOWN, Ordering::SeqCst);
            match plan.fault {
                Fault::Kill => tokio::task::block_in_place(|| server.kill()),
                Fault::Freeze => server.freeze(),
            }
            let killed = Instant::now();
            let killed_micros = shared.micros();
            wait_until(
                &shared,
                "503 answers during the outage",
                plan.deadline,
                || {
                    shared.progress.iter().zip(&base_503).all(|(p, then)| {
                        p.unavailable.load(Ordering::SeqCst) >= then + plan.outage_answers
                    })
                },
            )
            .await?;
            let rest = plan.min_outage.saturating_sub(killed.elapsed());
            tokio::time::sleep(rest).await;
            shared.phase.store(RECOVERING, Ordering::SeqCst);
            let restart_micros = shared.micros();
            let restart = Instant::now();
            let outage = restart - killed;
            match plan.fault {
                Fault::Kill => tokio::task::block_in_place(|| server.restart()),
                Fault::Freeze => server.thaw(),
            }
            let ready = Instant::now();
            wait_until(
                &shared,
                "recovery of every client",
                plan.recovery_deadline,
                || {
                    shared
                        .progress
                        .iter()
                        .all(|p| p.recovered_at.load(Ordering::SeqCst) != 0)
                },
            )
            .await?;
            shared.phase.store(HEALTHY, Ordering::SeqCst);
            let times: Vec<u64> = shared
                .progress
                .iter()
                .map(|p| p.recovered_at.load(Ordering::SeqCst))
                .collect();
            let since_restart = |t: u64| Duration::from_micros(t.saturating_sub(restart_micros));
            let unavailable: u64 = shared
                .progress
                .iter()
                .zip(&base_503)
                .map(|(p, then)| p.unavailable.load(Ordering::SeqCst) - then)
                .sum();
            let slowest = shared
                .progress
                .iter()
                .map(|p| p.slowest_503_micros.load(Ordering::SeqCst))
                .max()
                .unwrap_or(0);
            let served_again: Vec<u64> = shared
                .progress
                .iter()
                .filter(|p| p.saw_503.load(Ordering::SeqCst))
                .map(|p| p.served_again_at.load(Ordering::SeqCst))
                .collect();
            let since_kill = |t: Option<&u64>| {
                Duration::from_micros(t.map_or(0, |t| t.saturating_sub(killed_micros)))
            };
            let c = Cycle {
                outage,
                unavailable,
                slowest_503: Duration::from_micros(slowest),
                server_start: ready - restart,
                first_recovery: since_restart(*times.iter().min().unwrap_or(&0)),
                full_recovery: since_restart(*times.iter().max().unwrap_or(&0)),
                affected: served_again.len(),
                first_served_again: since_kill(served_again.iter().min()),
                all_served_again: since_kill(served_again.iter().max()),
            };
            println!("{} cycle {}: {c:?}", server.name(), cycle + 1);
            cycles.push(c);
        }
        let base = acks_of(&shared);
        wait_until(
            &shared,
            "progress after the last recovery",
            plan.deadline,
            || {
                acks_of(&shared)
                    .iter()
                    .zip(&base)
                    .all(|(now, then)| *now >= then + plan.acks_between_faults)
            },
        )
        .await
    }
    .await;
    if let Err(error) = result {
        shared.violation(error);
    }
    shared.phase.store(STOP, Ordering::SeqCst);
    let mut ends = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(end) => ends.push(end),
            Err(error) => shared.violation(format!("client {i} task failed: {error}")),
        }
    }
    let duration = began.elapsed();

    // Every session is still there, with at least the last acknowledged counter.
    let mut lost = 0;
    for (i, end) in ends.iter().enumerate() {
        let Some(id) = &end.cookie else {
            shared.violation(format!("client {i} never got a session"));
            lost += 1;
            continue;
        };
        // The app's manager keeps sessions under the digests of their ids.
        let key = session_store::stored_key(&SessionId::new(id.as_str()));
        let stored = match store.get(&key).await {
            Ok(Some(record)) => record
                .data
                .get("count")
                .and_then(|bytes| record.codec.decode::<u64>(bytes).ok()),
            Ok(None) => None,
            Err(error) => {
                shared.violation(format!(
                    "client {i}: reading the session back failed: {error}"
                ));
                None
            }
        };
        match stored {
            Some(count) if count >= end.last_ack => {}
            other => {
                lost += 1;
                shared.violation(format!(
                    "client {i}: stored counter {other:?} below the last acknowledged {}",
                    end.last_ack
                ));
            }
        }
    }
    let sum = |f: &dyn Fn(&Progress) -> u64| shared.progress.iter().map(f).sum::<u64>();
    let violations = shared
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Report {
        store: server.name(),
        clients: plan.clients,
        requests: sum(&|p| p.requests.load(Ordering::SeqCst)),
        ok: sum(&|p| p.acks.load(Ordering::SeqCst)),
        unavailable: sum(&|p| p.unavailable.load(Ordering::SeqCst)),
        duration,
        fault: plan.fault,
        cycles,
        sessions_lost: lost,
        acks_lost: sum(&|p| p.acks_lost.load(Ordering::SeqCst)),
        sessions_replaced: sum(&|p| p.sessions_replaced.load(Ordering::SeqCst)),
        violations,
    }
}
