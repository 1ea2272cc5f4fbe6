//! The throwaway PostgreSQL cluster the SQL fault test will use: `initdb` as `postgres`,
//! a committed row survives `SIGKILL` of the postmaster and its backends, the restart on
//! the same port and data directory recovers it.

use std::process::Command;

use session_reliability::servers::{Crashable, PostgresServer, postgres_bin};

fn psql(server: &PostgresServer, sql: &str) -> String {
    let out = Command::new(postgres_bin().join("psql"))
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(server.url())
        .args(["-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_committed_row_survives_sigkill_and_restart() {
    let mut server = PostgresServer::start();
    psql(&server, "CREATE TABLE t (n int PRIMARY KEY)");
    psql(&server, "INSERT INTO t SELECT generate_series(1, 100)");
    server.kill();
    assert!(
        !session_reliability::servers::accepts(server.port),
        "still accepting after the kill"
    );
    server.restart();
    assert_eq!(psql(&server, "SELECT count(*) FROM t"), "100");
}
