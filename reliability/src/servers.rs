//! Database servers owned by one test: started on a free port with a data directory of
//! their own, killed with `SIGKILL` (a crash), restarted on the same port over the same
//! data. Each is stopped and its directory removed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start (generous: the machine is small and shared).
pub const START_DEADLINE: Duration = Duration::from_secs(120);

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

/// Whether something accepts connections on `port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// A fresh directory under the system temp dir.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::unique(what));
    std::fs::create_dir_all(&dir).expect("create a temp directory");
    dir
}

/// Waits until nothing accepts connections on `port` any more.
fn wait_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepts(port) {
        assert!(
            Instant::now() < deadline,
            "port {port} still open after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `SIGKILL` to `pid` (a process this test started).
fn sigkill(pid: u32) {
    quiet_signal(pid, "-KILL");
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
fn quiet_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Something a fault test can crash and bring back.
pub trait Crashable: Send {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Kills the server with `SIGKILL` and waits until its port refuses connections.
    fn kill(&mut self);
    /// Starts the server again on the same port over the same data, and returns once it
    /// accepts connections.
    fn restart(&mut self);
    /// The server's process id, while it runs.
    fn pid(&self) -> Option<u32>;
    /// Freezes the server with `SIGSTOP`: it keeps its connections and answers nothing.
    fn freeze(&mut self) {
        signal(self.pid().expect("server not running"), "-STOP");
    }
    /// Thaws a frozen server with `SIGCONT`.
    fn thaw(&mut self) {
        signal(self.pid().expect("server not running"), "-CONT");
    }
}

/// Sends `signal` (e.g. `-STOP`) to `pid` (a process this test started).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

// ---------------------------------------------------------------------------------------
// Redis

/// A `redis-server` with an append-only file fsynced on every write
/// (`--appendonly yes --appendfsync always`), so an acknowledged write survives `SIGKILL`.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            dir: temp_dir("redis"),
            child: None,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }
}

impl Crashable for RedisServer {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_closed(self.port);
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while !self.ping() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            quiet_signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// SecantusDB (MongoDB wire protocol)

/// The server, launched through SecantusDB's Python API with an on-disk storage path
/// (WiredTiger with its journal on: a commit's log record is written before the server
/// answers, so it survives `SIGKILL` of the process).
const SECANTUS_LAUNCHER: &str = r#"
import sys
from secantus.server import SecantusDBServer

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = SecantusDBServer(
    host=host,
    port=port,
    storage_path=path,
    replica_set_name=None,
    enable_test_commands=False,
    ttl_sweep_seconds=1.0,
)
server.start()
print(f"secantus listening on {host}:{port} with storage {path}", flush=True)
server.wait()
"#;

/// The SecantusDB virtualenv that `scripts/mongo.sh start` creates: `SECANTUS_VENV`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/session-store/secantus-venv`.
pub fn secantus_venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("SECANTUS_VENV").filter(|v| !v.is_empty()) {
        return PathBuf::from(venv);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    cache.join("session-store").join("secantus-venv")
}

/// A SecantusDB server with its data in a directory of its own.
pub struct MongoServer {
    /// Its port.
    pub port: u16,
    python: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl MongoServer {
    /// Starts one on a free port; panics with instructions when the virtualenv is missing.
    pub fn start() -> Self {
        let python = secantus_venv().join("bin").join("python");
        assert!(
            python.exists(),
            "no SecantusDB virtualenv at {}: run `bash scripts/mongo.sh start` once to create \
             it (or set SECANTUS_VENV)",
            python.display()
        );
        let dir = temp_dir("secantus");
        let mut server = Self {
            port: free_port(),
            python,
            log: dir.join("server.log"),
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// `mongodb://127.0.0.1:<port>/?directConnection=true`.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Crashable for MongoServer {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_closed(self.port);
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "SecantusDB already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let child = Command::new(&self.python)
            .arg("-c")
            .arg(SECANTUS_LAUNCHER)
            .args(["127.0.0.1", &self.port.to_string()])
            .arg(self.data())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start SecantusDB");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while !accepts(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "SecantusDB on port {} exited: {status}\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "SecantusDB on port {} never accepted connections\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            quiet_signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// The PostgreSQL binaries: `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PG_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; set PG_BIN)")
}

/// A throwaway PostgreSQL cluster (`initdb` into a temp directory, run as the `postgres`
/// user because PostgreSQL refuses root), `fsync` and `synchronous_commit` on, trust auth,
/// listening on 127.0.0.1 only. The postmaster is this process's child (through
/// `setpriv`, which execs), so `SIGKILL` hits it directly; its backends are killed too,
/// as in a machine crash.
pub struct PostgresServer {
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

/// Runs `program args…` as the `postgres` user and returns its status and output.
fn as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)")
}

impl PostgresServer {
    /// `initdb` a new cluster and start it on a free port.
    pub fn start() -> Self {
        let bin = postgres_bin();
        let dir = temp_dir("pg");
        // The cluster directory must belong to `postgres`.
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown of {} failed", dir.display());
        let data = dir.join("data");
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("UTF-8 temp path"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            port: free_port(),
            bin,
            dir,
            child: None,
        };
        server.restart();
        server
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Pids of the postmaster's children (its backends and helpers).
    fn children_of(pid: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let child: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // `pid (comm) state ppid …`; comm may hold spaces, so split after `)`.
                let after = stat.rsplit_once(')')?.1;
                let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == pid).then_some(child)
            })
            .collect()
    }

    fn ready(&self) -> bool {
        let port = self.port.to_string();
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-t", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Crashable for PostgresServer {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the postmaster and every backend (each connection has its own process).
    fn freeze(&mut self) {
        let pid = self.pid().expect("server not running");
        signal(pid, "-STOP");
        for backend in Self::children_of(pid) {
            signal(backend, "-STOP");
        }
    }

    fn thaw(&mut self) {
        let pid = self.pid().expect("server not running");
        for backend in Self::children_of(pid) {
            signal(backend, "-CONT");
        }
        signal(pid, "-CONT");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let children = Self::children_of(pid);
            let _ = child.kill();
            for backend in children {
                sigkill(backend);
            }
            let _ = child.wait();
            // Backends notice the postmaster's death; wait until none is left.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = Self::children_of(1)
                    .into_iter()
                    .chain(Self::children_of(pid))
                    .filter(|p| {
                        std::fs::read_link(format!("/proc/{p}/cwd"))
                            .is_ok_and(|cwd| cwd.starts_with(&self.dir))
                    })
                    .collect::<Vec<_>>();
                if left.is_empty() {
                    break;
                }
                for p in left {
                    sigkill(p);
                }
                assert!(
                    Instant::now() < deadline,
                    "postgres backends outlived the kill"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        wait_closed(self.port);
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "postgres already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("open the server log");
        let port = self.port.to_string();
        let data = self.data();
        let child = Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--reset-env",
            ])
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port, "-h", "127.0.0.1", "-k", ""])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "max_connections=100", "-c", "shared_buffers=16MB"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start postgres through setpriv");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while !self.ready() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "postgres on port {} exited: {status}\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} never became ready\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // No assertions here: a panic while unwinding would abort.
        if let Some(mut child) = self.child.take() {
            let children = Self::children_of(child.id());
            for backend in &children {
                quiet_signal(*backend, "-CONT");
            }
            let _ = child.kill();
            for backend in children {
                sigkill(backend);
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
