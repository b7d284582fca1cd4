//! Hostile clients (issue 17): slowloris startups, a client that never reads its results,
//! oversized and malformed lengths, and connect/disconnect churn. pgcloak's memory (RSS of
//! its process, from /proc) stays bounded and other sessions keep being served quickly.
//!
//! Scaled to be quick under `cargo test`; the full scale with
//! `PGCLOAK_HOSTILE_FULL=1` (500 slowloris connections, 10,000 connect/disconnect cycles),
//! or set `PGCLOAK_SLOWLORIS_CONNS` / `PGCLOAK_CHURN_CYCLES` directly.

mod common;

use std::time::{Duration, Instant};

use common::raw::{fe, RawConn};
use common::{ProtectedProxy, HANG_TIMEOUT, TRUST_USER};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const SETUP: &str = "CREATE TABLE secrets (id int PRIMARY KEY, s bytea);
GRANT ALL ON secrets TO {p}_app, PUBLIC;";

const POLICY: &str = "version: 1
tables:
  public.secrets:
    s: { type: text, mask: { keep_last: 2 }, access: { {p}_app: plaintext, PUBLIC: masked } }
";

fn full() -> bool {
    std::env::var_os("PGCLOAK_HOSTILE_FULL").is_some()
}

fn scale(var: &str, quick: usize, full_scale: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full() { full_scale } else { quick })
}

async fn fixture(name: &str, overrides: serde_json::Value) -> ProtectedProxy {
    let p = ProtectedProxy::builder(name)
        .roles(&["app"])
        .setup(SETUP)
        .policy(POLICY)
        .overrides(overrides)
        .start()
        .await;
    let app = p.client("app").await;
    app.execute(
        "INSERT INTO secrets (id, s) VALUES (1, 'hostile-secret-42')",
        &[],
    )
    .await
    .unwrap();
    p
}

/// Resident set size of pgcloak, in KiB.
fn rss_kib(p: &ProtectedProxy) -> u64 {
    let pid = p.proxy.pid().expect("a real proxy");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Open file descriptors of pgcloak.
fn fds(p: &ProtectedProxy) -> usize {
    let pid = p.proxy.pid().expect("a real proxy");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One served statement through a fresh session: its latency (connect + query).
async fn served_latency(p: &ProtectedProxy) -> Duration {
    let started = Instant::now();
    let app = p.client("app").await;
    let v: String = app
        .query_one("SELECT s FROM secrets WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "hostile-secret-42");
    started.elapsed()
}

/// One statement on an open session: its latency.
async fn statement_latency(app: &tokio_postgres::Client) -> Duration {
    let started = Instant::now();
    let v: String = app
        .query_one("SELECT s FROM secrets WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "hostile-secret-42");
    started.elapsed()
}

#[tokio::test]
async fn slowloris_startups_are_dropped_at_the_timeout_while_others_are_served() {
    let n = scale("PGCLOAK_SLOWLORIS_CONNS", 40, 500);
    let p = fixture(
        "h_slowloris",
        json!({ "limits": { "startup_timeout_secs": 3 } }),
    )
    .await;
    let rss_before = rss_kib(&p);
    let packet = fe::startup(fe::PROTOCOL_3_0, &[("user", TRUST_USER), ("database", "x")]);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let port = p.proxy.port();
        let packet = packet.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            // One byte per second until the proxy closes the connection.
            for b in packet {
                if s.write_all(&[b]).await.is_err() {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // The whole packet went out: the proxy never closed on us.
            Duration::MAX
        }));
    }
    // Meanwhile, other clients connect and are served with a bounded latency.
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        worst = worst.max(served_latency(&p).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_secs(2),
        "a session took {worst:?} beside {n} slowloris connections"
    );
    let rss_during = rss_kib(&p);
    for t in tasks {
        let closed_after = t.await.unwrap();
        assert!(
            closed_after < Duration::from_secs(7),
            "a slowloris connection was kept {closed_after:?} (startup timeout 3 s)"
        );
    }
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB with {n} slowloris connections"
    );
    eprintln!("slowloris n={n}: worst latency {worst:?}, RSS {rss_before} -> {rss_during} KiB");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn a_client_that_never_reads_a_large_result_does_not_slow_the_others_or_grow_memory() {
    let p = fixture("h_no_reader", json!({})).await;
    let app = p.client("app").await;
    let mut before = Vec::new();
    for _ in 0..30 {
        before.push(statement_latency(&app).await);
    }
    let baseline = median(before);
    let rss_before = rss_kib(&p);
    // The hostile client: a large SELECT through the data path (masked values), never read.
    let mut hog = RawConn::connect(p.proxy.port()).await;
    let msgs = hog.startup_trust(TRUST_USER, &p.db).await;
    let (hog_pid, _) = RawConn::backend_key(&msgs);
    hog.send(&fe::query(
        "SELECT s, g, repeat('y', 200) FROM secrets, generate_series(1, 5000000) g",
    ))
    .await;
    let mut during = Vec::new();
    let mut rss_max = rss_before;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        during.push(statement_latency(&app).await);
        rss_max = rss_max.max(rss_kib(&p));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worst = *during.iter().max().unwrap();
    let typical = median(during);
    // Backpressure reaches PostgreSQL: the hog's backend waits to write, pgcloak buffers
    // no more than a bounded amount.
    let admin = common::cluster().admin("postgres").await;
    common::eventually_async(
        Duration::from_secs(10),
        "the hog's backend blocks on ClientWrite",
        || async {
            let row = admin
                .query_one(
                    "SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1",
                    &[&hog_pid],
                )
                .await
                .ok()?;
            (row.get::<_, String>(0) == "ClientWrite").then_some(())
        },
    )
    .await;
    assert!(
        typical < (baseline * 5).max(Duration::from_millis(100)),
        "median statement latency {typical:?} beside a client that never reads (baseline {baseline:?})"
    );
    assert!(
        rss_max < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_max} KiB: the unread result is being buffered"
    );
    // New sessions are served too.
    assert!(served_latency(&p).await < Duration::from_secs(2));
    eprintln!(
        "no-reader: median {typical:?}, worst {worst:?} (baseline median {baseline:?}), RSS {rss_before} -> {rss_max} KiB"
    );
    drop(hog);
}

#[tokio::test]
async fn oversized_and_malformed_lengths_are_refused_without_allocating_them() {
    let p = fixture(
        "h_oversized",
        json!({ "limits": { "max_message_bytes": 1 << 20 } }),
    )
    .await;
    let rss_before = rss_kib(&p);
    // 1. A startup packet that declares 1 GiB.
    for declared in [1u32 << 30, u32::MAX, 3, 0] {
        let mut conn = RawConn::connect(p.proxy.port()).await;
        let mut bytes = declared.to_be_bytes().to_vec();
        bytes.extend_from_slice(&196608u32.to_be_bytes());
        let _ = conn.try_send(&bytes).await;
        let answer = conn
            .read_to_eof(HANG_TIMEOUT)
            .await
            .unwrap_or_else(|_| panic!("startup length {declared} hung the connection"));
        if !answer.is_empty() {
            assert_eq!(answer[0], b'E', "startup length {declared}: {answer:?}");
        }
    }
    // 2. In a session: messages that declare 1 GiB, 2 MiB (over the 1 MiB limit), and
    //    lengths below the minimum of 4.
    for declared in [1u32 << 30, 2 << 20, u32::MAX, 3, 0] {
        let mut conn = RawConn::connect(p.proxy.port()).await;
        conn.startup_trust(TRUST_USER, &p.db).await;
        let mut bytes = vec![b'Q'];
        bytes.extend_from_slice(&declared.to_be_bytes());
        bytes.extend_from_slice(b"SELECT 1");
        let _ = conn.try_send(&bytes).await;
        let answer = conn
            .read_to_eof(HANG_TIMEOUT)
            .await
            .unwrap_or_else(|_| panic!("message length {declared} hung the session"));
        assert!(
            !answer.is_empty() && answer[0] == b'E',
            "message length {declared}: no ErrorResponse before the close: {answer:?}"
        );
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("08P01") || text.contains("54000"),
            "message length {declared}: unexpected error {text}"
        );
    }
    // 3. Sending a real 8 MiB message: refused, and its bytes are not kept.
    let mut conn = RawConn::connect(p.proxy.port()).await;
    conn.startup_trust(TRUST_USER, &p.db).await;
    let big = "x".repeat(8 << 20);
    let _ = conn.try_send(&fe::query(&format!("SELECT '{big}'"))).await;
    let _ = conn.read_to_eof(HANG_TIMEOUT).await;
    let rss_after = rss_kib(&p);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(served_latency(&p).await < Duration::from_secs(2));
}

#[tokio::test]
async fn connect_disconnect_cycles_leak_neither_memory_nor_descriptors() {
    let cycles = scale("PGCLOAK_CHURN_CYCLES", 1000, 10_000);
    let p = fixture("h_churn", json!({})).await;
    // Warm up, then take the baseline.
    for _ in 0..50 {
        let mut c = RawConn::connect(p.proxy.port()).await;
        c.startup_trust(TRUST_USER, &p.db).await;
        c.send(&fe::terminate()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_before, fds_before) = (rss_kib(&p), fds(&p));
    let started = Instant::now();
    for i in 0..cycles {
        let mut c = RawConn::connect(p.proxy.port()).await;
        match i % 4 {
            // A whole session, ended politely.
            0 | 1 => {
                c.startup_trust(TRUST_USER, &p.db).await;
                c.send(&fe::query("SELECT s FROM secrets")).await;
                c.recv_until(b'Z').await;
                c.send(&fe::terminate()).await;
            }
            // A session dropped without Terminate.
            2 => {
                c.startup_trust(TRUST_USER, &p.db).await;
            }
            // Connect and close before the startup packet.
            _ => {}
        }
        drop(c);
    }
    let elapsed = started.elapsed();
    let (rss_after, fds_after) = common::eventually_async(
        Duration::from_secs(10),
        "descriptors back to the baseline",
        || async {
            let f = fds(&p);
            (f <= fds_before + 2).then(|| (rss_kib(&p), f))
        },
    )
    .await;
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over {cycles} cycles"
    );
    assert!(served_latency(&p).await < Duration::from_secs(2));
    eprintln!(
        "churn: {cycles} cycles in {elapsed:?}; RSS {rss_before} -> {rss_after} KiB; fds {fds_before} -> {fds_after}"
    );
}
