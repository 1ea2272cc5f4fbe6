//! Redis Sentinel, then Redis Cluster, loses a master under the 32-client HTTP load:
//! `SIGKILL` of the master, a replica is promoted, the store follows without a restart of
//! the app. Then the old master is started again: it rejoins as a replica of the new master
//! and holds what the new master holds (nothing stale is served from it).
//!
//! Each setup runs with plain writes and with `with_replica_ack`. The Sentinel setup also
//! runs with lagging replicas ([`Lag`]): plain writes then lose the increments acknowledged
//! while the replicas lagged (the test checks that some were lost), and replica
//! acknowledgement loses none (those requests were answered 503 instead).
//!
//! The setups are `scripts/redis-sentinel.sh` on private ports (master 6590, replicas 6591
//! and 6592, sentinels 26590-26592, `down-after-milliseconds` 1000) and
//! `scripts/redis-cluster.sh` (7200-7205, `cluster-node-timeout` 1000), started and stopped
//! by the tests. Run with `--nocapture` to see the `FIGURES` lines (RELIABILITY.md).
//! Marked ignored because of the fixed ports: `scripts/test.sh` runs them one at a time
//! after the other tests (about a minute each).
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_reliability::app::serve;
use session_reliability::load::{self, Plan};
use session_reliability::servers::Crashable;
use session_reliability::unique;
use session_store::{SessionManager, SessionStore};
use session_store_redis::RedisStore;

const DATA_PORT: u16 = 6590;
const SENTINEL_PORT: u16 = 26590;
const MASTER: &str = "mymaster";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-sentinel.sh")
}

fn dir() -> String {
    std::env::temp_dir()
        .join("session-store-failover-sentinel")
        .display()
        .to_string()
}

/// Runs `scripts/redis-sentinel.sh` with the private ports and `down_after_ms` as the
/// sentinels' `down-after-milliseconds`.
fn sentinel_script(args: &[&str], down_after_ms: u32) {
    let status = Command::new("bash")
        .arg(script())
        .args(args)
        .env("REDIS_SENTINEL_DATA_PORT", DATA_PORT.to_string())
        .env("REDIS_SENTINEL_PORT", SENTINEL_PORT.to_string())
        .env("REDIS_SENTINEL_REPLICAS", "2")
        .env("REDIS_SENTINEL_DOWN_AFTER", down_after_ms.to_string())
        .env("REDIS_SENTINEL_DIR", dir())
        .status()
        .expect("run redis-sentinel.sh");
    assert!(status.success(), "redis-sentinel.sh {args:?} failed");
}

/// `redis-cli -p port args…`, its output trimmed (empty when the server does not answer).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn master_port() -> Option<u16> {
    let reply = cli(
        SENTINEL_PORT,
        &["SENTINEL", "get-master-addr-by-name", MASTER],
    );
    reply.lines().nth(1)?.trim().parse().ok()
}

fn wait_until(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A master seen as a server to crash: `kill` is a `SIGKILL` of its process, `restart`
/// waits until `promoted` says a replica took over from the old master's port (the old
/// master stays down; the test revives it afterwards).
struct Master {
    name: &'static str,
    port: u16,
    pid: Option<u32>,
    promoted: fn(u16) -> bool,
    killed_at: Option<Instant>,
    promoted_after: Option<Duration>,
    /// Replicas to stall before the kill ([`Lag`]).
    lag: Option<Lag>,
    /// Brings the old master back (as a replica) once the promotion is seen, before the
    /// load's recovery phase: with replica acknowledgement on Cluster, the promoted master
    /// has no replica, and its sessions' writes answer 503 until one joins it.
    revive_at_promotion: Option<fn(u16)>,
}

/// Replicas that fall behind before the master dies: they are stopped (`SIGSTOP`), the
/// master takes a burst of writes larger than the kernel's socket buffers can hold for
/// them (so the rest waits in the master's own memory), the load goes on for `hold`, then
/// the master is killed and the replicas continue. What they had not received is gone:
/// the writes of the load acknowledged during `hold` are exactly what asynchronous
/// replication loses, and what `with_replica_ack` refuses to acknowledge.
struct Lag {
    replica_pids: Vec<u32>,
    hold: Duration,
}

/// Bytes of the write burst: more than the largest receive buffer (`tcp_rmem` reaches
/// 32 MiB here) and send buffer (4 MiB) of one replication connection together.
const BURST_BYTES: usize = 64 << 20;

fn signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// Writes `BURST_BYTES` to the master at `port`, in 16 MiB values.
fn write_burst(port: u16) {
    let chunk = "x".repeat(16 << 20);
    for i in 0..BURST_BYTES / chunk.len() {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-x", "SET"])
            .arg(format!("burst:{i}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(chunk.as_bytes())
            .expect("burst written");
        assert!(child.wait().expect("redis-cli ends").success(), "burst SET");
    }
}

impl Crashable for Master {
    fn name(&self) -> &'static str {
        self.name
    }

    fn kill(&mut self) {
        let pid = self.pid.take().expect("master running");
        if let Some(lag) = &self.lag {
            for replica in &lag.replica_pids {
                signal("-STOP", *replica);
            }
            write_burst(self.port);
            std::thread::sleep(lag.hold);
        }
        signal("-KILL", pid);
        self.killed_at = Some(Instant::now());
        if let Some(lag) = &self.lag {
            for replica in &lag.replica_pids {
                signal("-CONT", *replica);
            }
        }
        let port = self.port;
        wait_until("the killed master's port closes", 30, || {
            cli(port, &["PING"]) != "PONG"
        });
    }

    fn restart(&mut self) {
        let (old, promoted) = (self.port, self.promoted);
        wait_until("a replica takes over", 60, || promoted(old));
        self.promoted_after = self.killed_at.map(|at| at.elapsed());
        if let Some(revive) = self.revive_at_promotion {
            revive(old);
        }
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// Serves the reliability app on `store` and runs `plan`'s load while `master` is killed
/// and a replica promoted; prints the figures (with `label`), checks that only the allowed
/// statuses were seen and the app lives on.
async fn kill_under_load(
    store: Arc<dyn SessionStore>,
    mut master: Master,
    plan: Plan,
    label: &str,
) -> load::Report {
    let manager = SessionManager::builder_arc(store.clone())
        .store_timeout(Duration::from_secs(2))
        .build()
        .expect("manager");
    let app = serve(manager).await;
    let report = load::run(app.addr, &mut master, store, plan).await;
    println!(
        "{} {label} promoted_after={:?}",
        report.figures(),
        master.promoted_after
    );
    assert!(
        report.violations.is_empty(),
        "{} violation(s):\n{}",
        report.violations.len(),
        report.violations.join("\n")
    );
    assert!(app.is_alive(), "the app's server task ended");
    report
}

/// Waits until the revived old master at `port` is a replica, in sync, of the master that
/// `current_master` names (asked again at every check: on a loaded machine the sentinels may
/// fail over a second time meanwhile), and returns that master's port.
fn rejoins_as_replica(port: u16, current_master: impl Fn() -> Option<u16>) -> u16 {
    let mut joined = 0;
    wait_until("the old master rejoins as a replica", 60, || {
        let Some(master) = current_master().filter(|m| *m != port) else {
            return false;
        };
        let info = cli(port, &["INFO", "replication"]);
        joined = master;
        info.contains("role:slave")
            && info.contains(&format!("master_port:{master}"))
            && info.contains("master_link_status:up")
    });
    joined
}

fn node_name(port: u16) -> String {
    match port - DATA_PORT {
        0 => "master".to_owned(),
        1 => "replica".to_owned(),
        n => format!("replica{n}"),
    }
}

/// The test's store: a prefix of its own, replica acknowledgement (1 replica, 500 ms) if
/// asked, connected.
async fn connected(built: session_store::Result<RedisStore>, replica_ack: bool) -> RedisStore {
    let mut store = built
        .expect("store")
        .with_prefix(format!("{}:", unique("failover")));
    if replica_ack {
        store = store
            .with_replica_ack(1, Duration::from_millis(500))
            .expect("replica ack");
    }
    store.connect().await.expect("connect");
    store
}

/// The pid in a server's pid file.
fn pid_in(file: &str) -> u32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("pid file {file}: {e}"))
        .trim()
        .parse()
        .expect("pid")
}

/// Sentinel's master killed under load, with or without replica acknowledgement, with the
/// replicas in step or lagging ([`Lag`]).
async fn failover_under_load(replica_ack: bool, lagging: bool) {
    // Lagging replicas are stopped for about three seconds: with the usual 1 s the sentinels
    // mark them down meanwhile, and on this loaded machine one of them then failed over a
    // second time, from the freshly promoted replica it had not heard from since. 5 s keeps
    // the stopped replicas up in the sentinels' eyes; the failover then takes 5 s more.
    let down_after = if lagging { 5000 } else { 1000 };
    sentinel_script(&["stop"], down_after);
    sentinel_script(&["start"], down_after);
    let port = master_port().expect("sentinel names a master");
    let pid = pid_in(&format!("{}/{}/pid", dir(), node_name(port)));
    let lag = lagging.then(|| Lag {
        replica_pids: (DATA_PORT..DATA_PORT + 3)
            .filter(|p| *p != port)
            .map(|p| pid_in(&format!("{}/{}/pid", dir(), node_name(p))))
            .collect(),
        hold: Duration::from_secs(2),
    });
    let store = connected(
        RedisStore::sentinel_from_urls(
            (0..3).map(|i| format!("redis://127.0.0.1:{}", SENTINEL_PORT + i)),
            MASTER,
        ),
        replica_ack,
    )
    .await;
    let master = Master {
        name: "redis-sentinel",
        port,
        pid: Some(pid),
        promoted: |old| master_port().is_some_and(|p| p != old),
        killed_at: None,
        promoted_after: None,
        lag,
        revive_at_promotion: None,
    };
    let plan = Plan {
        cycles: 1,
        count_losses: true,
        ..Plan::default()
    };
    let label = format!("replica_ack={replica_ack} lagging={lagging}");
    let report = kill_under_load(Arc::new(store), master, plan, &label).await;
    assert_eq!(report.sessions_replaced, 0, "a session was lost");
    if replica_ack {
        assert_eq!(report.acks_lost, 0, "an acknowledged write was lost");
    } else if lagging {
        // What the replicas never received is gone: the writes acknowledged while they
        // lagged. (The assertion makes sure the run did lose them, so the run with replica
        // acknowledgement is a real comparison.)
        assert!(
            report.acks_lost > 0,
            "lagging replicas lost no acknowledged write: the lag was not reproduced"
        );
    }

    // The old master comes back: the sentinels make it a replica of the new master, and it
    // holds the same sessions as the new master once in sync.
    sentinel_script(&["revive", &node_name(port)], down_after);
    let new = rejoins_as_replica(port, master_port);
    // The sentinels move the other replica to the new master on their own schedule, and it
    // may still be in its full sync: wait until the new master lists both as online.
    wait_until("both replicas online at the new master", 60, || {
        cli(new, &["INFO", "replication"])
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count()
            == 2
    });
    let synced = cli(new, &["WAIT", "2", "10000"]);
    assert_eq!(synced, "2", "both replicas acknowledge the new master");
    assert_eq!(
        cli(port, &["DBSIZE"]),
        cli(new, &["DBSIZE"]),
        "the old master holds what the new master holds"
    );
    let written = cli(port, &["SET", "probe", "1"]);
    assert!(
        written.starts_with("READONLY"),
        "old master accepts writes: {written}"
    );
    sentinel_script(&["stop"], down_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fixed private ports 6590-6592 / 26590-26592: scripts/test.sh runs it alone, after the rest"]
async fn sentinel_master_killed_under_load() {
    failover_under_load(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fixed private ports 6590-6592 / 26590-26592: scripts/test.sh runs it alone, after the rest"]
async fn sentinel_master_killed_under_load_with_replica_ack() {
    failover_under_load(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fixed private ports 6590-6592 / 26590-26592: scripts/test.sh runs it alone, after the rest"]
async fn sentinel_master_killed_with_lagging_replicas_loses_acknowledged_writes() {
    failover_under_load(false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fixed private ports 6590-6592 / 26590-26592: scripts/test.sh runs it alone, after the rest"]
async fn sentinel_master_killed_with_lagging_replicas_and_replica_ack_loses_nothing() {
    failover_under_load(true, true).await;
}

// ---------------------------------------------------------------------------------------
// Redis Cluster: 3 masters and 3 replicas from `scripts/redis-cluster.sh` on ports
// 7200-7205 with `cluster-node-timeout` 1000 ms.

const CLUSTER_PORT: u16 = 7200;

fn cluster_dir() -> String {
    std::env::temp_dir()
        .join("session-store-failover-cluster")
        .display()
        .to_string()
}

fn cluster_script(args: &[&str]) {
    let status = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-cluster.sh"))
        .args(args)
        .env("REDIS_CLUSTER_BASE_PORT", CLUSTER_PORT.to_string())
        .env("REDIS_CLUSTER_NODE_TIMEOUT", "1000")
        .env("REDIS_CLUSTER_DIR", cluster_dir())
        .status()
        .expect("run redis-cluster.sh");
    assert!(status.success(), "redis-cluster.sh {args:?} failed");
}

/// Starts the cluster node of `port` again over its folder.
fn revive_cluster_node(port: u16) {
    cluster_script(&["revive", &port.to_string()]);
}

/// The port of the master that owns slot 0, asked of node `from`.
fn owner_of_slot_zero(from: u16) -> Option<u16> {
    cli(from, &["CLUSTER", "NODES"]).lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let owns = fields.iter().skip(8).any(|r| r.starts_with("0-"));
        let live = fields.get(2)?.contains("master") && !fields.get(2)?.contains("fail");
        (owns && live).then(|| fields[1].split([':', '@']).nth(1)?.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fixed private ports 7200-7205: scripts/test.sh runs it alone, after the rest"]
async fn cluster_master_killed_under_load() {
    cluster_failover_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fixed private ports 7200-7205: scripts/test.sh runs it alone, after the rest"]
async fn cluster_master_killed_under_load_with_replica_ack() {
    cluster_failover_under_load(true).await;
}

async fn cluster_failover_under_load(replica_ack: bool) {
    cluster_script(&["stop"]);
    cluster_script(&["start"]);
    // `start` returns once every replica has synced (one that never did refuses to take over).
    let port = owner_of_slot_zero(CLUSTER_PORT).expect("slot 0 has an owner");
    let pid = pid_in(&format!("{}/{port}/redis.pid", cluster_dir()));
    let store = connected(
        RedisStore::cluster_from_urls(
            (0..6).map(|i| format!("redis://127.0.0.1:{}", CLUSTER_PORT + i)),
        ),
        replica_ack,
    )
    .await;
    let master = Master {
        name: "redis-cluster",
        port,
        pid: Some(pid),
        promoted: |old| {
            let other = CLUSTER_PORT + u16::from(old == CLUSTER_PORT);
            owner_of_slot_zero(other).is_some_and(|p| p != old)
                && cli(other, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        },
        killed_at: None,
        promoted_after: None,
        lag: None,
        revive_at_promotion: replica_ack.then_some(revive_cluster_node as fn(u16)),
    };
    // Only the clients whose sessions live on the killed master see the outage.
    let plan = Plan {
        cycles: 1,
        count_losses: true,
        outage_answers: 0,
        ..Plan::default()
    };
    let label = format!("cluster replica_ack={replica_ack}");
    let report = kill_under_load(Arc::new(store), master, plan, &label).await;
    assert_eq!(report.sessions_replaced, 0, "a session was lost");
    if replica_ack {
        assert_eq!(report.acks_lost, 0, "an acknowledged write was lost");
    }

    // The old master comes back over its folder and rejoins as a replica of the node that
    // took over its slots, holding what that node holds.
    if !replica_ack {
        revive_cluster_node(port);
    }
    let new = rejoins_as_replica(port, || {
        owner_of_slot_zero(CLUSTER_PORT + u16::from(port == CLUSTER_PORT))
    });
    assert_eq!(
        cli(new, &["WAIT", "1", "10000"]),
        "1",
        "the replica acknowledges"
    );
    assert_eq!(
        cli(port, &["DBSIZE"]),
        cli(new, &["DBSIZE"]),
        "the old master holds what the new master holds"
    );
    cluster_script(&["stop"]);
}
