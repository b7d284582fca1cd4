//! The fault catalogue (issue 17): what production does to a proxy, each fault with its
//! exact expected outcome, against this binary's own PostgreSQL cluster, which the tests
//! stop, restart and kill themselves.
//!
//! For every fault the test pins down what the client sees, that nothing is half-written
//! (PostgreSQL's own transaction semantics: a statement or transaction that did not
//! complete left no row), that no plaintext of a protected value reached the server's
//! statement log, and that pgcloak keeps serving new sessions afterwards.
//!
//! The tests take one lock in turn: a restarted cluster would break any test running
//! beside them. The policy reload under pgbench in all three modes is in tests/ops_reload.rs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, eventually_async, ProtectedProxy, CATALOG_ROLE, HANG_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_postgres::{Client, Config, NoTls};

/// Serialises the tests of this binary: several of them restart the cluster.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SETUP: &str = "CREATE TABLE secrets (id int PRIMARY KEY, s bytea, note text);
CREATE TABLE plain_t (id int PRIMARY KEY, v text);
GRANT ALL ON secrets, plain_t TO {p}_app;
ALTER TABLE plain_t OWNER TO {p}_app;";

const POLICY: &str = "version: 1
tables:
  public.secrets:
    s: { type: text, access: { {p}_app: plaintext } }
";

async fn fixture(name: &str) -> ProtectedProxy {
    ProtectedProxy::start(name, &["app"], SETUP, POLICY).await
}

async fn fixture_with(name: &str, overrides: serde_json::Value) -> ProtectedProxy {
    ProtectedProxy::builder(name)
        .roles(&["app"])
        .setup(SETUP)
        .policy(POLICY)
        .overrides(overrides)
        .start()
        .await
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the cluster's pg_ctl (as the postgres user when we are root).
fn pg_ctl(args: &[&str]) -> Output {
    let c = cluster();
    let exe = c.bin_dir.join("pg_ctl");
    let mut cmd = if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(exe);
        cmd
    } else {
        Command::new(exe)
    };
    cmd.args(args).arg("-D").arg(&c.data_dir);
    cmd.output().expect("pg_ctl runs")
}

fn pg_ctl_ok(args: &[&str]) {
    let out = pg_ctl(args);
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restarts the cluster with shutdown mode `mode` (fast | immediate).
fn restart_cluster(mode: &str) {
    let log = cluster().log_path.display().to_string();
    pg_ctl_ok(&["restart", "-m", mode, "-w", "-t", "60", "-s", "-l", &log]);
}

fn stop_cluster(mode: &str) {
    pg_ctl_ok(&["stop", "-m", mode, "-w", "-t", "60", "-s"]);
}

fn start_cluster() {
    let log = cluster().log_path.display().to_string();
    pg_ctl_ok(&["start", "-w", "-t", "60", "-s", "-l", &log]);
}

/// Makes sure the cluster runs (a test that failed with it stopped must not break the rest).
fn ensure_cluster_up() {
    if !pg_ctl(&["status"]).status.success() {
        start_cluster();
    }
}

/// A new session through the proxy that reads `id`'s protected value, once pgcloak serves
/// again (its catalog connection reconnects after an upstream restart).
async fn served_again(p: &ProtectedProxy, id: i32) -> Option<String> {
    eventually_async(
        Duration::from_secs(15),
        "pgcloak serves a new session",
        || async {
            let client = common::try_connect(&p.config("app")).await.ok()?;
            let row = client
                .query_opt("SELECT s FROM secrets WHERE id = $1", &[&id])
                .await
                .ok()?;
            Some(row.map(|r| r.get::<_, Option<String>>(0)))
        },
    )
    .await
    .flatten()
}

fn assert_proxy_alive(p: &ProtectedProxy) {
    let pid = p.proxy.pid().expect("a real proxy");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "pgcloak exited:\n{}",
        p.proxy.log()
    );
}

/// No plaintext marker reached PostgreSQL (its log has every statement and parameter).
fn assert_no_plaintext_upstream(since: u64, marker: &str) {
    let log = cluster().log_since(since);
    assert!(
        !log.contains(marker),
        "plaintext {marker:?} reached PostgreSQL"
    );
}

async fn count(admin: &Client, sql: &str) -> i64 {
    admin.query_one(sql, &[]).await.unwrap().get(0)
}

/// A session whose socket closes with a TCP reset (SO_LINGER 0) when its task is aborted.
async fn connect_resettable(cfg: &Config) -> (Client, tokio::task::JoinHandle<()>) {
    let port = cfg.get_ports()[0];
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    let (client, conn) = cfg.connect_raw(stream, NoTls).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

/// The upstream backend pid of a session through pgcloak (pgcloak shows the real one).
async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until upstream backend `pid` has gone (pgcloak closed the upstream leg).
async fn wait_backend_gone(pid: i32) {
    let admin = &cluster().admin("postgres").await;
    eventually_async(
        Duration::from_secs(10),
        &format!("upstream backend {pid} outlived the client's reset by 10 s"),
        || async move {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            (n == 0).then_some(())
        },
    )
    .await
}

/// Waits until a backend in `db` runs a statement containing `text`.
async fn wait_running(db: &str, text: &str) {
    let admin = &cluster().admin("postgres").await;
    eventually_async(
        Duration::from_secs(10),
        &format!("{text} never started running in {db}"),
        || async move {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND state = 'active' AND strpos(query, $2) > 0",
                    &[&db, &text],
                )
                .await
                .unwrap()
                .get(0);
            (n > 0).then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn upstream_restart_mid_transaction_rolls_it_back_and_new_sessions_are_served() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_restart_tx").await;
    for (i, mode) in ["fast", "immediate"].into_iter().enumerate() {
        let since = cluster().log_offset();
        let id = i as i32 + 1;
        let marker = format!("tx-secret-{mode}-71");
        let app = p.client("app").await;
        app.batch_execute("BEGIN").await.unwrap();
        app.execute(
            "INSERT INTO secrets (id, s) VALUES ($1, $2)",
            &[&id, &marker],
        )
        .await
        .unwrap();
        app.execute("INSERT INTO plain_t VALUES ($1, 'x')", &[&id])
            .await
            .unwrap();
        restart_cluster(mode);
        // The client sees an error for its COMMIT, never a success nor a hang.
        let commit = tokio::time::timeout(HANG_TIMEOUT, app.batch_execute("COMMIT"))
            .await
            .unwrap_or_else(|_| panic!("COMMIT hung after a {mode} restart"));
        assert!(commit.is_err(), "COMMIT succeeded across a {mode} restart");
        assert_proxy_alive(&p);
        // Nothing of the transaction survived, and pgcloak serves new sessions.
        assert_eq!(served_again(&p, id).await, None, "{mode}: row survived");
        let admin = p.admin().await;
        let sql = format!("SELECT count(*) FROM secrets WHERE id = {id}");
        assert_eq!(count(&admin, &sql).await, 0, "{mode}: half a transaction");
        let sql = format!("SELECT count(*) FROM plain_t WHERE id = {id}");
        assert_eq!(count(&admin, &sql).await, 0, "{mode}: half a transaction");
        assert_no_plaintext_upstream(since, &marker);
        // A new session writes and reads the protected column as before.
        let fresh = p.client("app").await;
        fresh
            .execute(
                "INSERT INTO secrets (id, s) VALUES ($1, $2)",
                &[&(id + 10), &marker],
            )
            .await
            .unwrap();
        assert_eq!(served_again(&p, id + 10).await, Some(marker.clone()));
        assert_no_plaintext_upstream(since, &marker);
    }
}

#[tokio::test]
async fn upstream_restart_mid_copy_from_commits_no_row() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_restart_copy").await;
    for mode in ["fast", "immediate"] {
        let since = cluster().log_offset();
        let app = p.client("app").await;
        let sink = app
            .copy_in("COPY secrets (id, s) FROM STDIN")
            .await
            .unwrap();
        let mut sink = Box::pin(sink);
        let mut batch = String::new();
        for i in 0..500 {
            batch.push_str(&format!("{i}\tcopy-secret-{mode}-{i}\n"));
        }
        sink.send(bytes::Bytes::from(batch)).await.unwrap();
        sink.flush().await.unwrap();
        // The rows reached the server (it is processing the COPY) before the restart.
        let db = p.db.clone();
        eventually_async(Duration::from_secs(10), "COPY in progress", || async {
            let admin = cluster().admin("postgres").await;
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_progress_copy c JOIN pg_database d ON d.oid = c.datid WHERE d.datname = $1",
                    &[&db],
                )
                .await
                .ok()?
                .get(0);
            (n > 0).then_some(())
        })
        .await;
        restart_cluster(mode);
        let rest = async {
            sink.send(bytes::Bytes::from_static(b"9999\tlate-row\n"))
                .await?;
            sink.as_mut().finish().await
        };
        let finished = tokio::time::timeout(HANG_TIMEOUT, rest)
            .await
            .unwrap_or_else(|_| panic!("COPY hung after a {mode} restart"));
        assert!(finished.is_err(), "COPY reported success across a restart");
        assert_proxy_alive(&p);
        assert_eq!(served_again(&p, 0).await, None);
        let admin = p.admin().await;
        assert_eq!(count(&admin, "SELECT count(*) FROM secrets").await, 0);
        assert_no_plaintext_upstream(since, "copy-secret-");
    }
}

#[tokio::test]
async fn upstream_restart_mid_large_result_ends_in_an_error_never_a_short_success() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_restart_result").await;
    let app = p.client("app").await;
    app.execute(
        "INSERT INTO secrets (id, s) VALUES (1, $1)",
        &[&"large-result-secret"],
    )
    .await
    .unwrap();
    let stream = app
        .query_raw(
            "SELECT g, s FROM generate_series(1, 3000000) g, secrets",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    let mut rows = 0u64;
    while rows < 2000 {
        let row = stream.next().await.expect("rows").expect("a row");
        assert_eq!(row.get::<_, String>(1), "large-result-secret");
        rows += 1;
    }
    restart_cluster("immediate");
    let tail = async {
        while let Some(r) = stream.next().await {
            match r {
                Ok(row) => {
                    // Every row the client gets is a whole, decrypted row.
                    assert_eq!(row.get::<_, String>(1), "large-result-secret");
                    rows += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let end = tokio::time::timeout(Duration::from_secs(30), tail)
        .await
        .expect("the result stream hung after the restart");
    assert!(
        end.is_err(),
        "the result ended as a success after {rows} of 3000000 rows"
    );
    assert!(rows < 3_000_000);
    assert_proxy_alive(&p);
    assert_eq!(
        served_again(&p, 1).await.as_deref(),
        Some("large-result-secret")
    );
}

#[tokio::test]
async fn upstream_unreachable_at_connect_then_reachable_again() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_unreachable").await;
    let app = p.client("app").await;
    app.execute(
        "INSERT INTO secrets (id, s) VALUES (1, 'reach-secret')",
        &[],
    )
    .await
    .unwrap();
    drop(app);
    stop_cluster("fast");
    for _ in 0..3 {
        let started = Instant::now();
        let err = common::try_connect(&p.config("app"))
            .await
            .expect_err("connected while PostgreSQL is down");
        let code = common::sqlstate(&err).unwrap_or_else(|| panic!("no SQLSTATE: {err:?}"));
        assert!(
            code == "08001" || code == "08006",
            "unexpected SQLSTATE {code}"
        );
        assert!(
            started.elapsed() < HANG_TIMEOUT,
            "the refusal took too long"
        );
    }
    assert_proxy_alive(&p);
    start_cluster();
    assert_eq!(served_again(&p, 1).await.as_deref(), Some("reach-secret"));
}

#[tokio::test]
async fn client_reset_mid_copy_from_stdin_into_an_encrypted_table_commits_zero_rows() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_reset_copy").await;
    let since = cluster().log_offset();
    let (client, task) = connect_resettable(&p.config("app")).await;
    let pid = backend_pid(&client).await;
    let sink = client
        .copy_in("COPY secrets (id, s) FROM STDIN")
        .await
        .unwrap();
    let mut sink = Box::pin(sink);
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("{i}\treset-secret-{i}\n"));
    }
    sink.send(bytes::Bytes::from(batch)).await.unwrap();
    sink.flush().await.unwrap();
    let db = p.db.clone();
    eventually_async(Duration::from_secs(10), "COPY rows reached the server", || async {
        let admin = cluster().admin("postgres").await;
        let n: i64 = admin
            .query_one(
                "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy c JOIN pg_database d ON d.oid = c.datid WHERE d.datname = $1",
                &[&db],
            )
            .await
            .ok()?
            .get(0);
        (n > 0).then_some(())
    })
    .await;
    task.abort();
    drop(sink);
    drop(client);
    wait_backend_gone(pid).await;
    let admin = p.admin().await;
    assert_eq!(count(&admin, "SELECT count(*) FROM secrets").await, 0);
    assert_no_plaintext_upstream(since, "reset-secret-");
    assert_proxy_alive(&p);
    assert_eq!(served_again(&p, 1).await, None);
}

#[tokio::test]
async fn client_reset_mid_pipeline_keeps_exactly_the_statements_that_completed() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_reset_pipeline").await;
    let (client, task) = connect_resettable(&p.config("app")).await;
    let pid = backend_pid(&client).await;
    // Prepared first, so the three executions go out in order, each with its own Sync:
    // the first completes, the second runs when the client dies, the third never starts.
    let insert = client
        .prepare("INSERT INTO secrets (id, s) VALUES ($1, $2)")
        .await
        .unwrap();
    let sleep = client.prepare("SELECT pg_sleep(30)").await.unwrap();
    let client = Arc::new(client);
    let c = client.clone();
    let pipeline = tokio::spawn(async move {
        let first = c.execute(&insert, &[&1i32, &"pipeline-secret-1"]);
        let second = c.execute(&sleep, &[]);
        let third = c.execute(&insert, &[&2i32, &"pipeline-secret-2"]);
        let _ = tokio::join!(first, second, third);
    });
    wait_running(&p.db, "pg_sleep(30)").await;
    task.abort();
    pipeline.abort();
    drop(client);
    wait_backend_gone(pid).await;
    let admin = p.admin().await;
    let rows = admin
        .query(
            "SELECT id, substring(s from 1 for 3) FROM secrets ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1], "only the completed statement's row is there");
    assert_eq!(
        rows[0].get::<_, Vec<u8>>(1),
        b"pc\x01",
        "stored as an envelope"
    );
    assert_proxy_alive(&p);
    assert_eq!(
        served_again(&p, 1).await.as_deref(),
        Some("pipeline-secret-1")
    );
}

#[tokio::test]
async fn client_reset_with_a_portal_open_rolls_its_transaction_back() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_reset_portal").await;
    let app = p.client("app").await;
    app.execute(
        "INSERT INTO secrets (id, s) VALUES (1, 'portal-secret')",
        &[],
    )
    .await
    .unwrap();
    drop(app);
    let (mut client, task) = connect_resettable(&p.config("app")).await;
    let pid = backend_pid(&client).await;
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO secrets (id, s) VALUES (2, $1)",
        &[&"portal-uncommitted"],
    )
    .await
    .unwrap();
    let stmt = tx
        .prepare("SELECT g, s FROM generate_series(1, 100000) g, secrets WHERE secrets.id = 1")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let first = tx.query_portal(&portal, 10).await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].get::<_, String>(1), "portal-secret");
    // The portal is open (suspended) when the client's connection is reset.
    task.abort();
    std::mem::forget(portal);
    std::mem::forget(tx);
    wait_backend_gone(pid).await;
    let admin = p.admin().await;
    assert_eq!(
        count(&admin, "SELECT count(*) FROM secrets WHERE id = 2").await,
        0
    );
    assert_proxy_alive(&p);
    assert_eq!(served_again(&p, 1).await.as_deref(), Some("portal-secret"));
}

/// pgcloak's catalog connections are opened per read and closed 250 ms after it
/// (docs/operations.md): the fault is a catalog backend terminated while it is in use, so a
/// killer terminates every one it sees, every 20 ms, while sessions start, run DDL (which
/// makes pgcloak re-read the catalog) and query.
#[tokio::test]
async fn catalog_connection_terminated_while_sessions_run_loses_nothing() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_catalog_lost").await;
    let app = p.client("app").await;
    app.execute(
        "INSERT INTO secrets (id, s) VALUES (1, 'catalog-secret')",
        &[],
    )
    .await
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let client = p.client("app").await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .query_one("SELECT s FROM secrets WHERE id = 1", &[])
                    .await
                {
                    Ok(r) if r.get::<_, String>(0) == "catalog-secret" => ok += 1,
                    Ok(r) => {
                        errors.push(format!("wrong value {:?}", r.get::<_, Option<String>>(0)))
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        }));
    }
    let killer_stop = stop.clone();
    let killer = tokio::spawn(async move {
        let admin = cluster().admin("postgres").await;
        let mut terminated = 0i64;
        while !killer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE usename = $1 AND pid <> pg_backend_pid()) t",
                    &[&CATALOG_ROLE],
                )
                .await
                .unwrap()
                .get(0);
            terminated += n;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        terminated
    });
    // New sessions and DDL while the catalog connections are being killed: a new session
    // is either served correctly or refused with 58000 (pgcloak cannot read the schema:
    // fail closed), never served without its schema; DDL on a running session succeeds.
    let (mut opened, mut refused, mut failures) = (0, 0, Vec::new());
    for i in 0..15 {
        match common::try_connect(&p.config("app")).await {
            Ok(c) => match c.query_one("SELECT s FROM secrets WHERE id = 1", &[]).await {
                Ok(r) if r.get::<_, String>(0) == "catalog-secret" => opened += 1,
                Ok(_) => failures.push("wrong value".to_string()),
                Err(e) => failures.push(e.to_string()),
            },
            Err(e) if common::sqlstate(&e).as_deref() == Some("58000") => refused += 1,
            Err(e) => failures.push(format!("connect: {e:?}")),
        }
        if let Err(e) = app
            .batch_execute(&format!("ALTER TABLE plain_t ADD COLUMN c{i} int"))
            .await
        {
            failures.push(format!("ddl: {e:?}"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let terminated = killer.await.unwrap();
    for w in workers {
        let (ok, errors) = w.await.unwrap();
        assert!(ok > 0, "a session made no progress");
        assert!(errors.is_empty(), "running sessions saw errors: {errors:?}");
    }
    assert!(terminated >= 1, "no catalog connection was caught in use");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(opened + refused, 15);
    assert_proxy_alive(&p);
    // Once the catalog can be read again, every new session is served.
    for _ in 0..10 {
        let c = p.client("app").await;
        let v: String = c
            .query_one("SELECT s FROM secrets WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "catalog-secret");
    }
    eprintln!(
        "catalog backends terminated while in use: {terminated}; new sessions meanwhile: \
         {opened} served, {refused} refused with 58000"
    );
}

#[tokio::test]
async fn keyring_replaced_by_an_invalid_one_under_load_keeps_the_current_generation() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let p = fixture("f_bad_keyring").await;
    let app = p.client("app").await;
    app.execute(
        "INSERT INTO secrets (id, s) VALUES (0, 'keyring-secret')",
        &[],
    )
    .await
    .unwrap();
    let good = std::fs::read_to_string(&p.keys_path).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4i32 {
        let client = p.client("app").await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut n, mut errors) = (0i32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = 1000 * (w + 1) + n;
                if let Err(e) = client
                    .execute(
                        "INSERT INTO secrets (id, s) VALUES ($1, $2)",
                        &[&id, &format!("kr-{id}")],
                    )
                    .await
                {
                    errors.push(e.to_string());
                }
                match client
                    .query_one("SELECT s FROM secrets WHERE id = $1", &[&id])
                    .await
                {
                    Ok(r) if r.get::<_, String>(0) == format!("kr-{id}") => {}
                    Ok(_) => errors.push("wrong value".into()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (n, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An invalid keyring that still holds the key material: a truncated edit.
    let bad = format!("{good}\nthis line: [is not valid\n");
    std::fs::write(&p.keys_path, &bad).unwrap();
    std::fs::set_permissions(&p.keys_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pid = p.proxy.pid().unwrap() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    common::eventually(
        Duration::from_secs(10),
        "the invalid keyring is refused",
        || {
            p.proxy
                .log()
                .contains("invalid policy or keyring: keeping the current generation")
                .then_some(())
        },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New sessions read the old rows with the generation in force.
    assert_eq!(served_again(&p, 0).await.as_deref(), Some("keyring-secret"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let (n, errors) = w.await.unwrap();
        assert!(n > 1, "a session made no progress");
        assert!(errors.is_empty(), "sessions saw errors: {errors:?}");
    }
    // No key material in the log.
    let log = p.proxy.log();
    let keys: Vec<&str> = good
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(!keys.is_empty(), "no key found in the keyring text");
    for key in keys {
        assert!(!log.contains(key), "key material in the log");
    }
    // The good keyring back, reloaded: still serving.
    std::fs::write(&p.keys_path, &good).unwrap();
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
    }
    common::eventually(
        Duration::from_secs(10),
        "the good keyring is reloaded",
        || {
            p.proxy
                .log()
                .contains("policy and keyring reloaded")
                .then_some(())
        },
    );
    assert_eq!(served_again(&p, 0).await.as_deref(), Some("keyring-secret"));
    assert_proxy_alive(&p);
}

/// A directory on a tiny tmpfs (we are root), or None where mounting is not permitted.
fn tiny_tmpfs(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn audit_file_on_a_full_disk_keeps_serving_and_writes_no_half_line() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let dir = cluster().scratch_dir("audit_full");
    let mounted = tiny_tmpfs(&dir);
    let audit = if mounted {
        dir.join("audit.jsonl")
    } else {
        // No tmpfs: /dev/full fails every write with ENOSPC.
        let link = dir.join("audit.jsonl");
        std::os::unix::fs::symlink("/dev/full", &link).unwrap();
        link
    };
    let p = fixture_with("f_audit_full", json!({ "audit": { "file": audit } })).await;
    if mounted {
        // Fill the file system up to its last few bytes.
        let filler = dir.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        use std::io::Write;
        let chunk = vec![b'x'; 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        let _ = f.write_all(b"xxxxxxxxxxxxxxxx");
        let _ = f.write_all(b"x");
    }
    for i in 0..20 {
        let app = p.client("app").await;
        app.execute(
            "INSERT INTO secrets (id, s) VALUES ($1, 'audit-secret')",
            &[&i],
        )
        .await
        .unwrap();
        // A refused statement is an audit event too.
        assert!(app
            .simple_query("SELECT 1 FROM secrets WHERE s LIKE 'a%'")
            .await
            .is_err());
        assert_eq!(
            app.query_one("SELECT s FROM secrets WHERE id = $1", &[&i])
                .await
                .unwrap()
                .get::<_, String>(0),
            "audit-secret"
        );
    }
    assert_proxy_alive(&p);
    // Lost audit records are never silent: an ERROR naming the fix (the first failure
    // and every 1,000th), and pgcloak_audit_write_errors_total.
    let log = common::eventually(
        Duration::from_secs(10),
        "the audit write failure's log line",
        || {
            let log = p.proxy.log();
            log.contains("audit file").then_some(log)
        },
    );
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("pgcloak_audit_write_errors_total"), "{log}");
    assert!(!log.contains("audit-secret"), "a value in the log: {log}");
    if mounted {
        let text = std::fs::read(&audit).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        for line in text.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "a half-written audit line: {line:?}"
            );
        }
        assert!(!text.contains("audit-secret"));
        drop(p);
        let _ = Command::new("umount").arg("-l").arg(&dir).status();
    }
}

#[tokio::test]
async fn sigterm_drains_a_short_query_and_ends_a_long_one_at_the_timeout() {
    let _serial = SERIAL.lock().await;
    ensure_cluster_up();
    let mut p = fixture_with("f_sigterm", json!({ "shutdown_timeout_secs": 3 })).await;
    let short = p.client("app").await;
    let long = p.client("app").await;
    let long_pid = backend_pid(&long).await;
    let long_task = tokio::spawn(async move {
        let started = Instant::now();
        let r = long.simple_query("SELECT pg_sleep(60)").await;
        (r.is_ok(), started.elapsed())
    });
    let short_task = tokio::spawn(async move {
        short
            .query_one("SELECT pg_sleep(1.5)::text, 7::int4", &[])
            .await
            .map(|r| r.get::<_, i32>(1))
    });
    wait_running(&p.db, "pg_sleep(1.5)").await;
    wait_running(&p.db, "pg_sleep(60)").await;
    let pid = p.proxy.pid().unwrap() as libc::pid_t;
    let signalled = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // New sessions are refused during the drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(common::try_connect(&p.config("app")).await.is_err());
    // The short query completes normally.
    assert_eq!(short_task.await.unwrap().expect("short query drained"), 7);
    // The long one is ended at the timeout: an error, not a hang and not a success.
    let (ok, took) = long_task.await.unwrap();
    assert!(!ok, "the 60 s query reported success");
    assert!(
        took < Duration::from_secs(10),
        "the long query was not ended at the shutdown timeout ({took:?})"
    );
    let status = p
        .proxy
        .terminate(Duration::from_secs(6))
        .expect("pgcloak exited after the drain");
    assert!(signalled.elapsed() < Duration::from_secs(8));
    assert!(status.success() || status.code().is_some(), "{status}");
    // No orphaned query keeps running upstream.
    wait_backend_gone(long_pid).await;
}
