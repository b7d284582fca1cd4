//! Session lifecycle through pgcloak: cancel (tokio-postgres, raw CancelRequest, psql
//! SIGINT), the connection limit and its env override, upstream failures (killed backend,
//! unreachable, unix socket), disconnect propagation, and SIGTERM drain.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::raw::{fe, RawConn};
use common::{
    cluster, eventually_async, expect_sqlstate, fresh_db, Proxy, APP_PASSWORD, APP_USER,
    HANG_TIMEOUT, TRUST_USER,
};
use serde_json::json;
use tokio_postgres::NoTls;

/// The cancel deadline from the issue: 57014 within a second of the cancel being sent.
const CANCEL_DEADLINE: Duration = Duration::from_secs(1);

/// Waits until a backend in `db` is running exactly `query`.
async fn wait_until_running(db: &str, query: &str) {
    let admin = &cluster().admin("postgres").await;
    let what = format!("{query} started running in {db}");
    eventually_async(HANG_TIMEOUT, &what, || async move {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query = $2",
                &[&db, &query],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cancel_token_cancels_a_running_query_within_a_second() {
    let db = fresh_db("s_cancel").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let token = client.cancel_token();
    let running = tokio::spawn(async move {
        let result = client.query("SELECT pg_sleep(30)", &[]).await;
        (result, Instant::now())
    });
    wait_until_running(&db, "SELECT pg_sleep(30)").await;
    let sent = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let (result, done) = tokio::time::timeout(HANG_TIMEOUT, running)
        .await
        .expect("query was not cancelled")
        .unwrap();
    assert_eq!(expect_sqlstate(result), "57014");
    assert!(
        done - sent < CANCEL_DEADLINE,
        "cancel took {:?}",
        done - sent
    );
}

#[tokio::test]
async fn raw_cancel_with_wrong_key_is_ignored_and_right_key_cancels() {
    let db = fresh_db("s_cancel_raw").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    let startup = conn.startup_trust(TRUST_USER, &db).await;
    let (pid, key) = RawConn::backend_key(&startup);

    // Clients see the real upstream backend pid (drivers use it for pg_terminate_backend
    // and to recognise their own NOTIFYs); pgcloak issues its own secret key.
    conn.send(&fe::query("SELECT pg_backend_pid()")).await;
    let msgs = conn.recv_until(b'Z').await;
    let upstream_pid: i32 = msgs.iter().find(|m| m.tag == b'D').unwrap().data_row()[0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        pid, upstream_pid,
        "BackendKeyData must carry the real upstream backend pid"
    );

    // A wrong secret must not cancel anything.
    conn.send(&fe::query("SELECT pg_sleep(1.5)")).await;
    wait_until_running(&db, "SELECT pg_sleep(1.5)").await;
    let mut canceller = RawConn::connect(proxy.port()).await;
    canceller.send(&fe::cancel_request(pid, key ^ 0x5a5a)).await;
    assert!(canceller
        .read_to_eof(HANG_TIMEOUT)
        .await
        .unwrap()
        .is_empty());
    let msgs = conn.recv_until(b'Z').await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "a wrong cancel key cancelled the query"
    );

    // The right one does, within the deadline.
    conn.send(&fe::query("SELECT pg_sleep(30)")).await;
    wait_until_running(&db, "SELECT pg_sleep(30)").await;
    let sent = Instant::now();
    let mut canceller = RawConn::connect(proxy.port()).await;
    canceller.send(&fe::cancel_request(pid, key)).await;
    let msgs = conn.recv_until(b'E').await;
    let err = msgs.last().unwrap();
    assert!(
        sent.elapsed() < CANCEL_DEADLINE,
        "cancel took {:?}",
        sent.elapsed()
    );
    assert_eq!(err.sqlstate().as_deref(), Some("57014"));
    conn.expect(b'Z').await;
}

#[tokio::test]
async fn psql_sigint_cancels_the_query_through_the_proxy() {
    let db = fresh_db("s_cancel_psql").await;
    let proxy = Proxy::start(json!({}));
    let child = Command::new(cluster().client_bin("psql"))
        .arg(proxy.conninfo(&db, APP_USER))
        .args(["-X", "-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", APP_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_running(&db, "SELECT pg_sleep(30)").await;
    let sent = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = tokio::time::timeout(
        HANG_TIMEOUT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("psql did not exit after SIGINT")
    .unwrap()
    .unwrap();
    assert!(
        sent.elapsed() < CANCEL_DEADLINE,
        "psql cancel took {:?}",
        sent.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql stderr: {stderr}"
    );
}

#[tokio::test]
async fn max_connections_refuses_the_extra_client_with_53300() {
    let db = fresh_db("s_maxconn").await;
    let proxy = Proxy::start(json!({ "max_connections": 2 }));
    // Let the readiness probe's connection be released first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = proxy.connect(&db).await;
    let second = proxy.connect(&db).await;
    let third = common::try_connect(&proxy.app_config(&db)).await;
    assert_eq!(expect_sqlstate(third), "53300");
    first.simple_query("SELECT 1").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
    drop(first);
    // The freed slot becomes available again promptly.
    let config = &proxy.app_config(&db);
    let client = eventually_async(
        Duration::from_secs(2),
        "slot released after disconnect",
        || async move { common::try_connect(config).await.ok() },
    )
    .await;
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn env_override_sets_max_connections() {
    let db = fresh_db("s_env").await;
    let proxy = Proxy::start_with_env(
        json!({ "max_connections": 1000 }),
        &[("PGCLOAK_MAX_CONNECTIONS", "1")],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _only = proxy.connect(&db).await;
    assert_eq!(
        expect_sqlstate(common::try_connect(&proxy.app_config(&db)).await),
        "53300"
    );
}

#[tokio::test]
async fn upstream_killed_mid_session_errors_the_client_and_proxy_keeps_serving() {
    let db = fresh_db("s_upstream_killed").await;
    let proxy = Proxy::start(json!({}));
    let client = proxy.connect(&db).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = cluster().admin("postgres").await;
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    let result = tokio::time::timeout(HANG_TIMEOUT, client.simple_query("SELECT 1"))
        .await
        .expect("client hung after its upstream backend was terminated");
    assert!(result.is_err(), "query succeeded on a terminated backend");
    let client = &client;
    eventually_async(
        Duration::from_secs(2),
        "client connection closed after upstream died",
        || async move { client.is_closed().then_some(()) },
    )
    .await;
    let fresh = proxy.connect(&db).await;
    assert_eq!(
        fresh
            .query_one("SELECT 5::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
}

#[tokio::test]
async fn unreachable_upstream_gives_a_clear_fatal_error() {
    let db = fresh_db("s_unreachable").await;
    let dead_port = common::cluster::free_port();
    let proxy = Proxy::start(json!({ "upstream": { "port": dead_port } }));
    for _ in 0..2 {
        let err = common::try_connect(&proxy.app_config(&db))
            .await
            .expect_err("connected to a dead upstream");
        let code = common::sqlstate(&err).unwrap_or_else(|| panic!("no SQLSTATE: {err:?}"));
        assert!(
            code == "08001" || code == "08006",
            "unexpected SQLSTATE {code}"
        );
        let text = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(
            text.contains(&dead_port.to_string()),
            "error does not name the upstream: {text}"
        );
    }
}

#[tokio::test]
async fn sigterm_stops_accepting_drains_sessions_and_exits() {
    let db = fresh_db("s_sigterm").await;
    let mut proxy = Proxy::start(json!({ "shutdown_timeout_secs": 2 }));
    let client = proxy.connect(&db).await;
    let pid = proxy.pid().expect("needs a real proxy") as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // New clients are refused while the open session drains.
    let config = &proxy.app_config(&db);
    eventually_async(
        Duration::from_secs(1),
        "new sessions refused after SIGTERM",
        || async move { common::try_connect(config).await.is_err().then_some(()) },
    )
    .await;
    let row = client
        .query_one("SELECT 9::int4", &[])
        .await
        .expect("the open session was not drained gracefully");
    assert_eq!(row.get::<_, i32>(0), 9);
    // The idle session is closed at the latest after the shutdown timeout, then the proxy exits.
    let status = proxy.terminate(Duration::from_secs(5));
    let status = status.expect("proxy did not exit within shutdown_timeout_secs + 3 s");
    assert!(status.success(), "proxy exited with {status}");
}

/// Waits until upstream backend `pid` has gone.
async fn wait_backend_gone(pid: i32) {
    let admin = &cluster().admin("postgres").await;
    let what = format!("upstream backend {pid} gone within 2 s of its client");
    eventually_async(Duration::from_secs(2), &what, || async move {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn client_disconnect_ends_the_upstream_backend_promptly() {
    let db = fresh_db("s_disconnect").await;
    let proxy = Proxy::start(json!({}));
    // Graceful: Terminate.
    let client = proxy.connect(&db).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    wait_backend_gone(pid).await;
    // Abrupt: the socket just closes, idle and in the middle of a query.
    for sql in [
        "SELECT pg_backend_pid()",
        "SELECT pg_backend_pid(), pg_sleep(30)",
    ] {
        let mut conn = RawConn::connect(proxy.port()).await;
        conn.startup_trust(TRUST_USER, &db).await;
        conn.send(&fe::query("SELECT pg_backend_pid()")).await;
        let msgs = conn.recv_until(b'Z').await;
        let pid: i32 = msgs.iter().find(|m| m.tag == b'D').unwrap().data_row()[0]
            .as_ref()
            .unwrap()
            .parse()
            .unwrap();
        conn.send(&fe::query(sql)).await;
        drop(conn);
        wait_backend_gone(pid).await;
    }
}

#[tokio::test]
async fn upstream_over_unix_socket_serves_queries() {
    let db = fresh_db("s_unix").await;
    let c = cluster();
    let proxy = Proxy::start(json!({ "upstream": { "host": c.socket_dir } }));
    let client = proxy.connect(&db).await;
    // Over the unix socket there is no client address.
    let addr: Option<String> = client
        .query_one("SELECT inet_client_addr()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(addr, None);
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_startup_timeout() {
    let proxy = Proxy::start(json!({ "limits": { "startup_timeout_secs": 1 } }));
    let mut conn = RawConn::connect(proxy.port()).await;
    let started = Instant::now();
    let bytes = conn
        .read_to_eof(Duration::from_secs(4))
        .await
        .expect("a silent client was kept past the startup timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "dropped before the timeout"
    );
    if !bytes.is_empty() {
        assert_eq!(bytes[0], b'E', "unexpected bytes: {bytes:?}");
    }
}

#[tokio::test]
async fn message_over_max_message_bytes_is_refused_and_smaller_ones_pass() {
    let db = fresh_db("l_max_message").await;
    let proxy = Proxy::start(json!({ "limits": { "max_message_bytes": 1 << 20 } }));
    let client = proxy.connect(&db).await;
    let small = "x".repeat(512 * 1024);
    let n: i32 = client
        .query_one("SELECT length($1::text)", &[&small])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 512 * 1024);
    let big = "x".repeat(2 << 20);
    let result = tokio::time::timeout(
        HANG_TIMEOUT,
        client.query_one("SELECT length($1::text)", &[&big]),
    )
    .await
    .expect("oversized message hung the session");
    assert!(result.is_err(), "a 2 MiB message passed a 1 MiB limit");
    // Other sessions are unaffected.
    let other = proxy.connect(&db).await;
    other.simple_query("SELECT 1").await.unwrap();
}
