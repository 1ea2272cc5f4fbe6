//! The exact commands and round trips of each store operation, seen by a Redis server that
//! only this test uses.
//!
//! The store talks to the server through a pass-through TCP relay that counts round trips
//! (a round trip is a burst of client bytes after the server has answered), while
//! `redis-cli MONITOR` records which commands the server executed for the store's
//! connection. Connection setup (`connect`) happens before either starts counting, and the
//! store sends no per-request health check, so each operation must show exactly its own
//! commands in one round trip.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use session_store::testing::{Relay, new_id, now_ms, sample_record};
use session_store::{CasOutcome, SessionStore};
use session_store_redis::RedisStore;

/// `redis-cli MONITOR` on the test's server, plus a separate connection for markers.
struct Monitor {
    child: Child,
    lines: Receiver<String>,
    marker: TcpStream,
    marker_addr: SocketAddr,
    marks: usize,
}

impl Monitor {
    fn start(port: u16) -> Self {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli must be installed");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let marker = TcpStream::connect(("127.0.0.1", port)).unwrap();
        marker
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let marker_addr = marker.local_addr().unwrap();
        let mut monitor = Self {
            child,
            lines,
            marker,
            marker_addr,
            marks: 0,
        };
        // MONITOR answers OK once it is listening; then flush everything before now.
        let first = monitor.next_line().expect("MONITOR did not start");
        assert_eq!(first, "OK", "unexpected MONITOR greeting");
        monitor.commands_since_last_mark();
        monitor
    }

    fn next_line(&self) -> Option<String> {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => panic!("MONITOR went silent"),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Sends a marker and returns every command (args, `lua` ones prefixed with `lua:`) that
    /// other clients ran since the previous marker.
    fn commands_since_last_mark(&mut self) -> Vec<Vec<String>> {
        self.marks += 1;
        let mark = format!("mark-{}", self.marks);
        self.marker
            .write_all(format!("ECHO {mark}\r\n").as_bytes())
            .unwrap();
        let mut reply = [0u8; 64];
        let _ = self.marker.read(&mut reply).unwrap();
        let marker_addr = self.marker_addr.to_string();
        let mut commands = Vec::new();
        loop {
            let line = self.next_line().expect("MONITOR ended");
            let (source, args) = parse_monitor_line(&line);
            if source == marker_addr {
                if args.get(1).map(String::as_str) == Some(mark.as_str()) {
                    return commands;
                }
                continue;
            }
            if source == "lua" {
                commands.push(args.into_iter().map(|a| format!("lua:{a}")).collect());
            } else {
                commands.push(args);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `1700000000.123456 [0 127.0.0.1:5000] "SET" "k" "v"` → (`127.0.0.1:5000`, [SET, k, v]).
/// Arguments keep MONITOR's escapes (`\x00`, `\"`).
fn parse_monitor_line(line: &str) -> (String, Vec<String>) {
    let open = line.find('[').expect("monitor line without source");
    let close = open
        + line[open..]
            .find(']')
            .expect("monitor line without source end");
    let source = line[open + 1..close]
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut args = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    arg.push('\\');
                    arg.extend(chars.next());
                }
                '"' => break,
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    (source, args)
}

/// The SHA-256 of `text` in lower-case hex.
fn hex_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Command names (upper case) of a command list, `lua:` ones included.
fn names(commands: &[Vec<String>]) -> Vec<String> {
    commands.iter().map(|c| c[0].to_uppercase()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_one_round_trip_with_exact_commands() {
    let server = common::OwnServer::start();
    let relay = Relay::start(server.port);
    let store = RedisStore::from_url(&format!("redis://127.0.0.1:{}", relay.port))
        .unwrap()
        .with_prefix("rt:");
    // Connection setup (CLIENT SETINFO, SCRIPT LOAD) happens here, before counting.
    store.connect().await.unwrap();
    let mut monitor = Monitor::start(server.port);

    let id = new_id();
    let key = format!("rt:{}", id.as_str());
    let mut record = sample_record(now_ms() + std::time::Duration::from_secs(600));
    record.version = 1;
    let expiry = (record.expires.unix_timestamp_nanos() / 1_000_000).to_string();
    let later = now_ms() + std::time::Duration::from_secs(1200);
    let later_ms = (later.unix_timestamp_nanos() / 1_000_000).to_string();

    // Runs one operation; returns its commands after checking it took one round trip.
    macro_rules! op {
        ($name:literal, $call:expr) => {{
            let before = relay.count();
            let out = $call;
            let trips = relay.count() - before;
            let commands = monitor.commands_since_last_mark();
            println!(
                "{:<16} {} round trip(s): {:?}",
                $name,
                trips,
                names(&commands)
            );
            assert_eq!(trips, 1, "{} took {} round trips", $name, trips);
            (out, commands)
        }};
    }

    let (created, cmds) = op!("create", store.create(&id, &record).await.unwrap());
    assert!(created);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(
        [
            &cmds[0][0],
            &cmds[0][1],
            &cmds[0][3],
            &cmds[0][4],
            &cmds[0][5]
        ],
        ["SET", &key, "PXAT", &expiry, "NX"]
    );

    let (got, cmds) = op!("get", store.get(&id).await.unwrap());
    assert_eq!(got.unwrap().data, record.data);
    // One command: the expiry is in the value.
    assert_eq!(cmds, [vec!["GET".to_owned(), key.clone()]]);

    let ((), cmds) = op!("set", store.set(&id, &record).await.unwrap());
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(cmds[0].len(), 5, "{cmds:?}");
    assert_eq!(
        [&cmds[0][0], &cmds[0][1], &cmds[0][3], &cmds[0][4]],
        ["SET", &key, "PXAT", &expiry]
    );

    let (touched, cmds) = op!("touch", store.touch(&id, later).await.unwrap());
    assert!(touched);
    // No payload: one EVALSHA with the key and the new expiry (8 bytes for the value's
    // header, and as a number for the TTL), the owner index prefix, the id and now; inside,
    // a GETRANGE of the bytes after the header (finds the key and an owner section), the
    // 8-byte SETRANGE and the PEXPIREAT. No owner: nothing else.
    assert_eq!(
        names(&cmds),
        ["EVALSHA", "LUA:GETRANGE", "LUA:SETRANGE", "LUA:PEXPIREAT"],
        "{cmds:?}"
    );
    assert_eq!(cmds[0][2..4], ["1".to_owned(), key.clone()], "{cmds:?}");
    assert_eq!(cmds[0].len(), 9, "{cmds:?}");
    assert_eq!(cmds[0][5], later_ms, "{cmds:?}");
    assert_eq!(cmds[0][6], "irt:owner:", "{cmds:?}");
    assert_eq!(
        cmds[1][1..],
        [format!("lua:{key}"), "lua:16".into(), "lua:80".into()]
    );
    assert_eq!(cmds[2][2], "lua:8", "{cmds:?}");
    assert_eq!(cmds[3][2], format!("lua:{later_ms}"), "{cmds:?}");

    let (got, _) = op!("get after touch", store.get(&id).await.unwrap());
    assert_eq!(got.unwrap().expires, later);

    let mut next = record.clone();
    next.version = 2;
    let (updated, cmds) = op!("update", store.update(&id, &next).await.unwrap());
    assert!(updated);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!([&cmds[0][0], &cmds[0][5]], ["SET", "XX"]);

    let mut third = next.clone();
    third.version = 3;
    let (outcome, cmds) = op!(
        "compare_and_set",
        store.compare_and_set(&id, &third, 2).await.unwrap()
    );
    assert_eq!(outcome, CasOutcome::Written);
    // One EVALSHA from the client; inside, on the server, a GETRANGE of the 8-byte version
    // (never the payload) and the SET.
    assert_eq!(
        names(&cmds),
        ["EVALSHA", "LUA:GETRANGE", "LUA:SET"],
        "{cmds:?}"
    );
    assert_eq!(&cmds[1][2..], ["lua:0", "lua:7"], "{cmds:?}");

    let ((), cmds) = op!("destroy", store.destroy(&id).await.unwrap());
    assert_eq!(cmds, [vec!["DEL".to_owned(), key.clone()]]);

    let (got, _) = op!("get missing", store.get(&id).await.unwrap());
    assert!(got.is_none());
    let (touched, _) = op!("touch missing", store.touch(&id, later).await.unwrap());
    assert!(!touched);
    let (updated, _) = op!("update missing", store.update(&id, &next).await.unwrap());
    assert!(!updated);
    let (outcome, _) = op!(
        "cas missing",
        store.compare_and_set(&id, &third, 3).await.unwrap()
    );
    assert_eq!(outcome, CasOutcome::Missing);

    // A session with an owner: every write is still one EVALSHA, which writes the session
    // and adds it to the owner's index (`rt:owner:<sha256 hex>`, a sorted set scored by
    // expiry) in the same script.
    let owned_id = new_id();
    let owned_key = format!("rt:{}", owned_id.as_str());
    let index = format!("rt:owner:{}", hex_sha256("ann"));
    let mut owned = record.clone();
    owned.owner = Some("ann".into());
    let write_cmds = |cmds: &[Vec<String>], first: &[&str], stretched: bool| {
        let mut expected: Vec<&str> = vec!["EVALSHA"];
        expected.extend(first.iter().copied());
        expected.extend(["LUA:ZADD", "LUA:PEXPIRETIME"]);
        if stretched {
            expected.push("LUA:PEXPIREAT");
        }
        expected.push("LUA:ZREMRANGEBYSCORE");
        assert_eq!(names(cmds), expected, "{cmds:?}");
        assert_eq!(
            cmds[0][2..5],
            ["2".to_owned(), owned_key.clone(), index.clone()],
            "{cmds:?}"
        );
        let zadd = cmds.iter().find(|c| c[0] == "lua:ZADD").unwrap();
        assert_eq!(
            zadd[1..3],
            [format!("lua:{index}"), "lua:GT".into()],
            "{cmds:?}"
        );
        assert_eq!(zadd[4], format!("lua:{}", owned_id.as_str()), "{cmds:?}");
    };
    let (created, cmds) = op!(
        "create owned",
        store.create(&owned_id, &owned).await.unwrap()
    );
    assert!(created);
    // A new index key gets the session's expiry as its own.
    write_cmds(&cmds, &["LUA:SET"], true);
    assert_eq!(cmds[0][5], "NX", "{cmds:?}");
    let ((), cmds) = op!("set owned", store.set(&owned_id, &owned).await.unwrap());
    write_cmds(&cmds, &["LUA:SET"], false);
    let mut owned_next = owned.clone();
    owned_next.version = 2;
    let (updated, cmds) = op!(
        "update owned",
        store.update(&owned_id, &owned_next).await.unwrap()
    );
    assert!(updated);
    write_cmds(&cmds, &["LUA:SET"], false);
    let mut owned_third = owned_next.clone();
    owned_third.version = 3;
    let (outcome, cmds) = op!(
        "cas owned",
        store
            .compare_and_set(&owned_id, &owned_third, 2)
            .await
            .unwrap()
    );
    assert_eq!(outcome, CasOutcome::Written);
    write_cmds(&cmds, &["LUA:GETRANGE", "LUA:SET"], false);

    // A touch of an owned session moves its score in the index in the same script.
    let (touched, cmds) = op!("touch owned", store.touch(&owned_id, later).await.unwrap());
    assert!(touched);
    assert_eq!(
        names(&cmds),
        [
            "EVALSHA",
            "LUA:GETRANGE",
            "LUA:SETRANGE",
            "LUA:PEXPIREAT",
            "LUA:ZADD",
            "LUA:PEXPIRETIME",
            "LUA:PEXPIREAT",
            "LUA:ZREMRANGEBYSCORE"
        ],
        "{cmds:?}"
    );
    assert_eq!(
        cmds[4][1..4],
        [
            format!("lua:{index}"),
            "lua:GT".into(),
            format!("lua:{later_ms}")
        ]
    );

    // Listing: one EVALSHA that reads the index and the owner's sessions.
    let (listed, cmds) = op!("owned", store.owned("ann").await.unwrap());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, owned_id);
    assert_eq!(listed[0].1.version, 3);
    assert_eq!(listed[0].1.expires, later);
    assert_eq!(
        names(&cmds),
        ["EVALSHA", "LUA:ZREMRANGEBYSCORE", "LUA:ZRANGE", "LUA:MGET"],
        "{cmds:?}"
    );
    assert_eq!(cmds[3][1..], [format!("lua:{owned_key}")], "{cmds:?}");

    // Destroy is a DEL; the next listing drops the member of the gone session.
    let ((), cmds) = op!("destroy owned", store.destroy(&owned_id).await.unwrap());
    assert_eq!(cmds, [vec!["DEL".to_owned(), owned_key.clone()]]);
    let (listed, cmds) = op!("owned after destroy", store.owned("ann").await.unwrap());
    assert!(listed.is_empty());
    assert_eq!(
        names(&cmds),
        [
            "EVALSHA",
            "LUA:ZREMRANGEBYSCORE",
            "LUA:ZRANGE",
            "LUA:MGET",
            "LUA:ZREM"
        ],
        "{cmds:?}"
    );
    // The index was emptied, so Redis removed its key.
    let (listed, cmds) = op!("owned, no index", store.owned("ann").await.unwrap());
    assert!(listed.is_empty());
    assert_eq!(
        names(&cmds),
        ["EVALSHA", "LUA:ZREMRANGEBYSCORE", "LUA:ZRANGE"],
        "{cmds:?}"
    );

    // After SCRIPT FLUSH (or a failover to a node without the script) the store reloads it.
    common::raw_command(server.port, "SCRIPT FLUSH").unwrap();
    monitor.commands_since_last_mark();
    store.set(&id, &next).await.unwrap();
    assert_eq!(
        store.compare_and_set(&id, &third, 2).await.unwrap(),
        CasOutcome::Written
    );
    let cmds = monitor.commands_since_last_mark();
    let client_cmds: Vec<_> = names(&cmds)
        .into_iter()
        .filter(|n| !n.starts_with("LUA:"))
        .collect();
    assert_eq!(
        client_cmds,
        ["SET", "EVALSHA", "SCRIPT", "EVALSHA"],
        "{cmds:?}"
    );
    assert_eq!(store.get(&id).await.unwrap().unwrap().version, 3);
    monitor.commands_since_last_mark();

    // Nothing else ran meanwhile: no health checks between operations.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle = monitor.commands_since_last_mark();
    assert!(idle.is_empty(), "commands while idle: {idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_reads_cost_nothing_and_writes_one_round_trip() {
    let server = common::OwnServer::start();
    let relay = Relay::start(server.port);
    let store = RedisStore::from_url(&format!("redis://127.0.0.1:{}", relay.port))
        .unwrap()
        .with_prefix("nc:")
        .with_near_cache(session_store_redis::NearCacheConfig::new())
        .unwrap();
    // Connection setup (HELLO 3, CLIENT SETNAME, CLIENT TRACKING, SCRIPT LOAD) is not counted.
    store.connect().await.unwrap();
    let mut monitor = Monitor::start(server.port);

    let id = new_id();
    let key = format!("nc:{}", id.as_str());
    let mut record = sample_record(now_ms() + std::time::Duration::from_secs(600));
    record.version = 1;
    let later = now_ms() + std::time::Duration::from_secs(1200);

    // Runs one operation; checks its round trips and the names of the commands it sent.
    macro_rules! op {
        ($name:literal, $trips:expr, $commands:expr, $call:expr) => {{
            let before = relay.count();
            let out = $call;
            let trips = relay.count() - before;
            let commands = names(&monitor.commands_since_last_mark());
            println!("{:<16} {} round trip(s): {:?}", $name, trips, commands);
            assert_eq!(trips, $trips, "{} took {} round trips", $name, trips);
            let expected: &[&str] = &$commands;
            assert_eq!(commands, expected, "{}", $name);
            out
        }};
    }

    // A new session is written with a plain SET on an ordinary connection and not cached
    // (many are never seen again); its first read caches it.
    assert!(op!(
        "create",
        1,
        ["SET"],
        store.create(&id, &record).await.unwrap()
    ));
    let got = op!("first get", 1, ["GET"], store.get(&id).await.unwrap());
    assert_eq!(got.unwrap().data, record.data);
    // Later writes are a script that reads the key again (EXISTS) in the same atomic step:
    // the connection tracks the key again and the cache keeps the record written.
    for _ in 0..3 {
        let got = op!("cached get", 0, [], store.get(&id).await.unwrap());
        assert_eq!(got.unwrap().data, record.data);
    }
    let mut next = record.clone();
    next.version = 2;
    next.data.insert("k".into(), b"v".to_vec());
    let outcome = op!(
        "compare_and_set",
        1,
        ["EVALSHA", "LUA:GETRANGE", "LUA:SET", "LUA:EXISTS"],
        store.compare_and_set(&id, &next, 1).await.unwrap()
    );
    assert_eq!(outcome, CasOutcome::Written);
    let got = op!("cached get", 0, [], store.get(&id).await.unwrap()).unwrap();
    assert_eq!((got.data, got.version), (next.data.clone(), 2));
    assert!(op!(
        "touch",
        1,
        [
            "EVALSHA",
            "LUA:GETRANGE",
            "LUA:SETRANGE",
            "LUA:PEXPIREAT",
            "LUA:EXISTS"
        ],
        store.touch(&id, later).await.unwrap()
    ));
    let got = op!("cached get", 0, [], store.get(&id).await.unwrap()).unwrap();
    assert_eq!(got.expires, later);

    // Another client writes: the server pushes the invalidation; the next read goes out.
    let mut other = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    other
        .write_all(format!("DEL {key}\r\n").as_bytes())
        .unwrap();
    let mut reply = [0u8; 16];
    let _ = other.read(&mut reply).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.near_cache_stats().unwrap().invalidations == 0 {
        assert!(Instant::now() < deadline, "no invalidation within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = monitor.commands_since_last_mark();
    let got = op!("get after", 1, ["GET"], store.get(&id).await.unwrap());
    assert!(got.is_none());
    op!("destroy", 1, ["DEL"], store.destroy(&id).await.unwrap());
}
