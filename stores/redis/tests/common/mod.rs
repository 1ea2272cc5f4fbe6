//! Helpers shared by the integration tests: service URLs, random prefixes, and a
//! `redis-server` of a test's own on a free port.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `REDIS_CLUSTER_URLS` (comma separated), default the ports of `scripts/redis-cluster.sh`.
pub fn cluster_urls() -> Vec<String> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_else(|_| {
        (7000..7006)
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    urls.split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

/// `REDIS_SENTINEL_URLS` (comma separated), default the sentinels of
/// `scripts/redis-sentinel.sh`.
pub fn sentinel_urls() -> Vec<String> {
    let urls = std::env::var("REDIS_SENTINEL_URLS").unwrap_or_else(|_| {
        (26390..26393)
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    urls.split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

/// `REDIS_SENTINEL_MASTER`, default `mymaster`.
pub fn sentinel_master() -> String {
    std::env::var("REDIS_SENTINEL_MASTER").unwrap_or_else(|_| "mymaster".to_owned())
}

/// A key prefix no other run uses.
pub fn random_prefix(what: &str) -> String {
    format!("test:{what}:{}:", nanoid::nanoid!(12))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one inline command over a fresh TCP connection and returns the raw reply.
pub fn raw_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A `redis-server` owned by one test, killed when dropped.
pub struct OwnServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments after the port: data-node options, or the sentinel's config file.
    args: Vec<String>,
}

impl OwnServer {
    /// Starts `redis-server --port <free port> --save '' --appendonly no` and waits (deadline
    /// 20 s) until it answers `PING`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`OwnServer::start`], with more `redis-server` options (e.g. `--replicaof`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut args: Vec<String> = ["--save", "", "--appendonly", "no"]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        let port = free_port();
        let dir = Self::folder(port);
        args.push("--dir".to_owned());
        args.push(dir.display().to_string());
        let mut server = Self {
            port,
            dir,
            child: None,
            args,
        };
        server.restart();
        server
    }

    /// A replica of `master` on a free port, once its link to the master is up (deadline
    /// 30 s).
    pub fn replica_of(master: &OwnServer) -> Self {
        let replica = Self::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !raw_command(replica.port, "INFO replication")
            .is_ok_and(|r| r.contains("master_link_status:up"))
        {
            assert!(Instant::now() < deadline, "replica in sync within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        replica
    }

    /// A sentinel on a free port that monitors `master_port` as `name` (quorum 1). Its
    /// config file is its own and writable, as sentinel requires.
    pub fn sentinel(name: &str, master_port: u16) -> Self {
        let port = free_port();
        let dir = Self::folder(port);
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "dir {dir}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 5000\n\
                 sentinel failover-timeout {name} 10000\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let args = vec!["--sentinel".to_owned()];
        let mut server = Self {
            port,
            dir,
            child: None,
            args,
        };
        server.args.insert(0, config.display().to_string());
        server.restart();
        server
    }

    fn folder(port: u16) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "session-store-redis-test-{port}-{}",
            nanoid::nanoid!(6)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        dir
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        // A sentinel's config file must come first.
        let (config, rest) = match self.args.first() {
            Some(first) if first.ends_with(".conf") => (vec![first.clone()], &self.args[1..]),
            _ => (vec![], &self.args[..]),
        };
        let child = Command::new("redis-server")
            .args(config)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if raw_command(self.port, "PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
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

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: it keeps its connections but
    /// answers nothing while frozen.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server not running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Kills the server (SIGKILL, like a crash) and waits until the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {} still open after kill",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
