//! psql and pgbench as subprocesses through pgcloak: psql scripts with \copy and errors, and
//! `pgbench -i` followed by `-S` in the simple, extended and prepared protocols with zero
//! failed transactions.

mod common;

use std::process::{Command, Output, Stdio};

use common::{cluster, fresh_db, Proxy, APP_PASSWORD, APP_USER};
use serde_json::json;

fn client_command(bin: &str) -> Command {
    let mut cmd = Command::new(cluster().client_bin(bin));
    cmd.env("PGPASSWORD", APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    cmd
}

fn assert_ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn psql_runs_a_script_with_copy_and_recovers_from_errors() {
    let db = fresh_db("c_psql").await;
    let proxy = Proxy::start(json!({}));
    let script = r"
CREATE TABLE t (id int, name text);
\copy t FROM STDIN
0	zero
\.
\copy (SELECT g, 'n' || g FROM generate_series(1, 1000) g) TO '/dev/null'
SELECT no_such_column FROM t;
INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 1000) g;
SELECT count(*), sum(id) FROM t;
";
    let script_path = proxy.dir().join("script.sql");
    std::fs::write(&script_path, script).unwrap();
    let out = client_command("psql")
        .arg(proxy.conninfo(&db, APP_USER))
        .args(["-X", "-A", "-t", "-f"])
        .arg(&script_path)
        .output()
        .unwrap();
    let stdout = assert_ok(&out, "psql script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no_such_column"),
        "the failing statement was not reported: {stderr}"
    );
    assert!(
        stdout.lines().any(|l| l == "1001|500500"),
        "unexpected psql output: {stdout}"
    );
}

fn pgbench(proxy: &Proxy, db: &str, args: &[&str]) -> String {
    let out = client_command("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy.port().to_string(),
            "-U",
            APP_USER,
        ])
        .args(args)
        .arg(db)
        .output()
        .unwrap();
    let stdout = assert_ok(&out, &format!("pgbench {args:?}"));
    format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
}

/// `pgbench -i -s 1`, then `-S` in `mode`: every transaction processed, none failed, tps > 0.
async fn pgbench_select_only(mode: &str) {
    let db = fresh_db(&format!("c_pgbench_{mode}")).await;
    // pgbench traffic would flood the statement log of the shared cluster.
    cluster().psql_admin(
        "postgres",
        &format!("ALTER DATABASE {db} SET log_statement = 'none'"),
    );
    let proxy = Proxy::start(json!({}));
    pgbench(&proxy, &db, &["-i", "-s", "1", "-q"]);
    let report = pgbench(
        &proxy,
        &db,
        &["-S", "-M", mode, "-c", "4", "-j", "2", "-t", "300", "-n"],
    );
    assert!(
        report.contains("number of transactions actually processed: 1200/1200"),
        "not every transaction ran: {report}"
    );
    let failed = report
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or_else(|| panic!("no failed-transactions line: {report}"));
    assert!(failed.contains(": 0 ("), "failed transactions: {report}");
    let tps: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps line: {report}"));
    assert!(tps > 0.0, "tps {tps}: {report}");
}

#[tokio::test]
async fn pgbench_select_only_simple_protocol() {
    pgbench_select_only("simple").await;
}

#[tokio::test]
async fn pgbench_select_only_extended_protocol() {
    pgbench_select_only("extended").await;
}

#[tokio::test]
async fn pgbench_select_only_prepared_statements() {
    pgbench_select_only("prepared").await;
}
