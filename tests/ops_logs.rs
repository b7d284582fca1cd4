//! No leaks: a workload over encrypted columns with every log target at trace, in
//! text and JSON formats; no sentinel value may appear in the logs, the audit
//! stream or /metrics. Also pins the JSON log shape and the audit events.

mod common;
mod ops_support;

use common::expect_sqlstate;
use ops_support::OpsFixture;
use serde_json::{json, Value};

const SENTINEL_PHONE: &str = "SENTINEL-PHONE-5f2d9a7b3c1e4f60aa";
const SENTINEL_NID: &str = "SENTINEL-NID-0c8e71d4b92a6f35bb";
const SENTINEL_LITERAL: &str = "SENTINEL-LIKE-93ad5e0f7b14c2e8cc";
const SENTINELS: [&str; 3] = [SENTINEL_PHONE, SENTINEL_NID, SENTINEL_LITERAL];

async fn workload(f: &OpsFixture) {
    let app = f.client("app").await;
    app.batch_execute(&format!(
        "INSERT INTO customers (id, phone, national_id) VALUES (1, '{SENTINEL_PHONE}', '{SENTINEL_NID}')"
    ))
    .await
    .unwrap();
    let p2 = format!("{SENTINEL_PHONE}-2");
    app.execute(
        "INSERT INTO customers (id, phone, national_id) VALUES ($1, $2, $3)",
        &[&2i32, &p2, &SENTINEL_NID],
    )
    .await
    .unwrap();
    let rows = app
        .query("SELECT phone, national_id FROM customers ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), SENTINEL_PHONE);
    let found = app
        .query(
            "SELECT id FROM customers WHERE phone = $1",
            &[&SENTINEL_PHONE],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let agent = f.client("agent").await;
    agent
        .simple_query("SELECT phone FROM customers")
        .await
        .unwrap();
    // Denied column, and a refused statement carrying a sentinel literal.
    expect_sqlstate(
        agent
            .simple_query("SELECT national_id FROM customers")
            .await,
    );
    expect_sqlstate(
        agent
            .simple_query(&format!(
                "SELECT id FROM customers WHERE phone LIKE '{SENTINEL_LITERAL}'"
            ))
            .await,
    );
    // A duplicate key: upstream's detail would carry the value.
    expect_sqlstate(
        app.batch_execute(&format!(
            "INSERT INTO plain (id, note) VALUES (1, 'x'); INSERT INTO customers (id, phone) VALUES (1, '{SENTINEL_PHONE}')"
        ))
        .await,
    );
}

fn assert_no_sentinel(what: &str, text: &str) {
    for s in SENTINELS {
        // Any 16-character window of the sentinel counts as a leak.
        for start in 0..=(s.len() - 16) {
            let window = &s[start..start + 16];
            assert!(!text.contains(window), "{what} leaks `{window}`:\n{text}");
        }
    }
}

async fn run_in(format: &str, name: &str) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut extra = json!({
        "log": {
            "format": format,
            "level": "trace",
            "levels": { "pgcloak::sql": "trace", "pgcloak::audit": "trace" },
            "statements": "redacted",
        },
        "slow_statement_ms": 0,
    });
    if format == "json" {
        extra["audit"] = json!({ "file": audit_path });
    }
    let f = OpsFixture::new(name, extra).await;
    workload(&f).await;
    let (_, metrics) = f.get("/metrics");
    // Let session-end events land.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let audit = std::fs::read_to_string(&audit_path).unwrap_or_default();
    let log = f.proxy.log();
    (log, audit, metrics)
}

#[tokio::test]
async fn trace_text_logs_and_metrics_never_carry_a_value() {
    let (log, _, metrics) = run_in("text", "ops_leak_text").await;
    assert_no_sentinel("text log", &log);
    assert_no_sentinel("/metrics", &metrics);
    // The statement log and slow log ran, redacted.
    assert!(log.contains("pgcloak::sql"), "{log}");
    assert!(log.contains("slow statement"), "{log}");
    assert!(
        log.contains("LIKE ?"),
        "redacted statements are logged: {log}"
    );
    assert!(log.contains("\"event\":\"rejected\""), "{log}");
    assert!(log.contains("\"event\":\"withheld\""), "{log}");
    assert!(metrics.contains("pgcloak_values_out_total"), "{metrics}");
}

#[tokio::test]
async fn trace_json_logs_and_audit_file_never_carry_a_value() {
    let (log, audit, metrics) = run_in("json", "ops_leak_json").await;
    assert_no_sentinel("JSON log", &log);
    assert_no_sentinel("audit file", &audit);
    assert_no_sentinel("/metrics", &metrics);
    // One JSON object per line with stable field names.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(v.get(field).is_some(), "no `{field}` in {line}");
        }
    }
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for k in ["session", "withheld", "rejected", "session_end"] {
        assert!(kinds.contains(&k), "no {k} event in {audit}");
    }
    let session = events.iter().find(|e| e["event"] == "session").unwrap();
    assert_eq!(session["verified"], true);
    assert_eq!(session["auth_method"], "scram-sha-256");
    assert!(session["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let denied = events
        .iter()
        .find(|e| e["event"] == "rejected" && e["reason"] == "denied")
        .unwrap_or_else(|| panic!("no deny decision: {audit}"));
    assert_eq!(denied["sqlstate"], "42501");
    assert_eq!(denied["role"], "ops_leak_json_agent");
    let masked = events
        .iter()
        .find(|e| e["event"] == "withheld" && e["view"] == "masked")
        .unwrap_or_else(|| panic!("no masking decision: {audit}"));
    assert_eq!(masked["column"], "public.customers.phone");
    assert_eq!(masked["values"], 2);
    assert_eq!(denied["fingerprint"].as_str().unwrap().len(), 16);
    // Decryption counts: the app received 2 phones and 2 national ids in plaintext,
    // then 1 phone in the lookup by equality.
    let app_end = events
        .iter()
        .find(|e| e["event"] == "session_end" && e["role"] == "ops_leak_json_app")
        .unwrap();
    let values = app_end["values_out"].as_array().unwrap();
    let count = |col: &str| {
        values
            .iter()
            .find(|v| v["column"] == col && v["view"] == "plaintext")
            .map(|v| v["values"].as_u64().unwrap())
    };
    assert_eq!(count("public.customers.phone"), Some(2));
    assert_eq!(count("public.customers.national_id"), Some(2));
}

/// One event is one line, in both formats: a reload refused for a policy with two errors
/// (whose message lists both, one per line) is written on the line of its event, never
/// continued on lines of its own.
async fn multi_line_event(format: &str, name: &str) -> String {
    let f = OpsFixture::new(name, json!({ "log": { "format": format } })).await;
    let broken = "version: 1\ncolour: red\ntables:\n  t:\n    a:\n      type: strin\n      access: { x: plaintext }\n";
    std::fs::write(&f.policy_path, broken).unwrap();
    let proxy = &f.proxy;
    common::eventually_async_with(
        std::time::Duration::from_secs(15),
        || async move {
            let log = proxy.log();
            // The whole event, not a read in the middle of its write.
            (log.contains("invalid policy or keyring") && log.ends_with('\n')).then_some(log)
        },
        || format!("no reload error:\n{}", proxy.log()),
    )
    .await
}

#[tokio::test]
async fn a_multi_line_message_stays_one_text_line() {
    let log = multi_line_event("text", "ops_oneline_text").await;
    let line = log
        .lines()
        .find(|l| l.contains("invalid policy or keyring"))
        .unwrap();
    assert!(line.contains("colour"), "{log}");
    assert!(line.contains("strin"), "{log}");
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.starts_with(|c: char| c.is_ascii_digit()),
            "a line that is not an event of its own: `{l}`\n{log}"
        );
    }
}

#[tokio::test]
async fn a_multi_line_message_stays_one_json_line() {
    let log = multi_line_event("json", "ops_oneline_json").await;
    let mut seen = false;
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: `{l}`\n{log}"));
        if v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid policy or keyring"))
        {
            let err = v["error"].as_str().unwrap();
            assert!(err.contains("colour") && err.contains("strin"), "{l}");
            seen = true;
        }
    }
    assert!(seen, "{log}");
}

/// A statement pgcloak refuses (or passes) without resolving a protected table is
/// logged without an empty `tables=""`.
#[tokio::test]
async fn refused_statements_carry_no_empty_tables_field() {
    let f = OpsFixture::new(
        "ops_tables_field",
        json!({ "log": { "format": "text", "level": "info", "levels": { "pgcloak::sql": "debug" }, "statements": "redacted" } }),
    )
    .await;
    let agent = f.client("agent").await;
    expect_sqlstate(
        agent
            .simple_query("SELECT id FROM customers WHERE phone LIKE 'x%'")
            .await,
    );
    agent.simple_query("SELECT 1").await.unwrap();
    let app = f.client("app").await;
    app.simple_query("SELECT phone FROM customers")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = f.proxy.log();
    assert!(
        log.contains("LIKE ?"),
        "the refused statement is logged:\n{log}"
    );
    assert!(!log.contains("tables=\"\""), "{log}");
    assert!(log.contains("tables=\"public.customers\""), "{log}");
}
