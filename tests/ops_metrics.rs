//! The admin endpoint end to end: exact metric deltas for a known workload,
//! liveness, and readiness following upstream.

mod common;
mod ops_support;

use std::time::Duration;

use common::{eventually, eventually_async, expect_sqlstate};
use ops_support::{http_get, Metrics, OpsFixture};
use serde_json::json;

const PHONE: &str = "public.customers.phone";

fn key(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

#[tokio::test]
async fn scrape_deltas_match_a_known_workload() {
    let f = OpsFixture::new("ops_metrics", json!({})).await;
    assert_eq!(f.get("/healthz").0, 200);
    // The harness's readiness probe is a connection too: let pgcloak count it (its accept
    // may come after the probe's connect returned) and finish it before the baseline.
    let fixture = &f;
    let before = eventually_async(
        Duration::from_secs(5),
        "the readiness probe's connection counted and closed",
        || async move {
            let m = fixture.scrape();
            let counted = m.get("pgcloak_connections_total") >= 1.0;
            (counted && m.get("pgcloak_connections_active") == 0.0).then_some(m)
        },
    )
    .await;
    {
        let app = f.client("app").await;
        for (id, phone) in [(1, "0911000001"), (2, "0911000002"), (3, "0911000003")] {
            app.batch_execute(&format!(
                "INSERT INTO customers (id, phone) VALUES ({id}, '{phone}')"
            ))
            .await
            .unwrap();
        }
        let rows = app
            .simple_query("SELECT phone FROM customers")
            .await
            .unwrap();
        let n = rows
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(n, 3);
        let agent = f.client("agent").await;
        agent
            .simple_query("SELECT phone FROM customers")
            .await
            .unwrap();
        // Fail closed: LIKE on an encrypted column is refused before the server.
        let state = expect_sqlstate(
            agent
                .simple_query("SELECT id FROM customers WHERE phone LIKE '%1'")
                .await,
        );
        assert!(!state.is_empty());
        // A statement that cannot name a protected column.
        agent.simple_query("SELECT 1").await.unwrap();
    }
    // Sessions end asynchronously: wait for the active gauge to come back.
    let (fixture, baseline) = (&f, &before);
    let after = eventually_async(
        Duration::from_secs(5),
        "the active-connections gauge back at its baseline",
        || async move {
            let m = fixture.scrape();
            (m.get("pgcloak_connections_active") == baseline.get("pgcloak_connections_active"))
                .then_some(m)
        },
    )
    .await;
    let d = |k: &str| Metrics::delta(&before, &after, k);
    assert_eq!(d("pgcloak_connections_total"), 2.0);
    assert_eq!(d("pgcloak_connections_active"), 0.0);
    assert_eq!(
        d(&key(
            "pgcloak_values_encrypted_total",
            &format!("column=\"{PHONE}\"")
        )),
        3.0
    );
    assert_eq!(
        d(&key(
            "pgcloak_values_out_total",
            &format!("column=\"{PHONE}\",view=\"plaintext\"")
        )),
        3.0
    );
    assert_eq!(
        d(&key(
            "pgcloak_values_out_total",
            &format!("column=\"{PHONE}\",view=\"masked\"")
        )),
        3.0
    );
    assert_eq!(
        d(&key(
            "pgcloak_statements_total",
            "kind=\"insert\",outcome=\"analysed\""
        )),
        3.0
    );
    assert_eq!(
        d(&key(
            "pgcloak_statements_total",
            "kind=\"select\",outcome=\"analysed\""
        )),
        3.0
    );
    assert_eq!(
        d(&key(
            "pgcloak_statements_total",
            "kind=\"unanalysed\",outcome=\"passthrough\""
        )),
        1.0
    );
    assert_eq!(
        d(&key(
            "pgcloak_rejections_total",
            "reason=\"unsupported_sql\""
        )),
        1.0,
        "{:?}",
        after.0
    );
    // 3 inserts + 2 selects + the refused one: at least one miss, and every lookup counted.
    let lookups = d("pgcloak_analysis_cache_hits_total") + d("pgcloak_analysis_cache_misses_total");
    assert_eq!(lookups, 6.0, "{:?}", after.0);
    assert_eq!(after.get("pgcloak_policy_generation"), 1.0);
    assert_eq!(after.get("pgcloak_ready"), 1.0);
    assert!(
        after.get("pgcloak_upstream_seconds_count") > before.get("pgcloak_upstream_seconds_count")
    );
    assert!(after.get("pgcloak_proxy_seconds_count") >= 6.0);
    assert!(
        after
            .0
            .keys()
            .any(|k| k.starts_with("pgcloak_key_columns{key_id=")),
        "{:?}",
        after.0
    );
}

#[tokio::test]
async fn readyz_follows_upstream_reachability() {
    // Upstream is a port this test controls: a listener that only accepts.
    let port = common::cluster::free_port();
    let admin_port = common::cluster::free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let proxy = common::Proxy::start(json!({
        "upstream": { "port": port },
        "admin": { "listen": format!("127.0.0.1:{admin_port}") },
    }));
    let wait_for = |want: u16| {
        eventually(
            Duration::from_secs(5),
            &format!("/readyz answers {want}"),
            || {
                let (status, body) = http_get(admin_port, "/readyz");
                (status == want).then_some((status, body))
            },
        )
    };
    assert_eq!(wait_for(200).0, 200);
    assert_eq!(http_get(admin_port, "/healthz").0, 200);
    drop(listener);
    let (status, body) = wait_for(503);
    assert_eq!(status, 503);
    assert!(body.contains("upstream unreachable"), "{body}");
    assert_eq!(
        http_get(admin_port, "/healthz").0,
        200,
        "liveness does not follow upstream"
    );
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert_eq!(wait_for(200).0, 200);
    assert_eq!(http_get(admin_port, "/nope").0, 404);
    drop(proxy);
}

#[tokio::test]
async fn readyz_is_false_while_draining() {
    let admin_port = common::cluster::free_port();
    let db = common::fresh_db("ops_drain").await;
    let mut proxy = common::Proxy::start(json!({
        "admin": { "listen": format!("127.0.0.1:{admin_port}") },
        "shutdown_timeout_secs": 5,
    }));
    let client = proxy.connect(&db).await;
    assert_eq!(http_get(admin_port, "/readyz").0, 200);
    let pid = proxy.pid().unwrap();
    // SAFETY: signalling our own child process by pid.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let (status, body) = eventually(
        Duration::from_secs(3),
        "/readyz not ready while draining",
        || {
            let r = http_get(admin_port, "/readyz");
            (r.0 != 200).then_some(r)
        },
    );
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(http_get(admin_port, "/healthz").0, 200);
    drop(client);
    assert!(proxy.terminate(Duration::from_secs(10)).is_some());
}
