//! Session setup through pgcloak: startup negotiation (protocol 3.2, GSSENCRequest,
//! forwarded startup parameters), authentication relay (SCRAM, MD5, cleartext, wrong
//! passwords), session logs, and `pgcloak check`.

mod common;

use std::time::Duration;

use bytes::Buf;
use common::raw::{fe, RawConn};
use common::{cluster, eventually, expect_sqlstate, fresh_db, Proxy, APP_USER, TRUST_USER};
use serde_json::json;

#[tokio::test]
async fn wrong_password_is_refused_with_28p01() {
    let db = fresh_db("s_password").await;
    let proxy = Proxy::start(json!({}));
    let bad = common::try_connect(&proxy.config(&db, APP_USER, "not-the-password")).await;
    assert_eq!(expect_sqlstate(bad), "28P01");
    let unknown = common::try_connect(&proxy.config(&db, "no_such_role", "whatever")).await;
    assert_eq!(expect_sqlstate(unknown), "28P01");
    // The proxy still serves a correct login afterwards.
    let client = proxy.connect(&db).await;
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn protocol_3_2_startup_gets_negotiate_protocol_version() {
    let db = fresh_db("s_protocol").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.send(&fe::startup(
        fe::PROTOCOL_3_2,
        &[("user", TRUST_USER), ("database", &db)],
    ))
    .await;
    let first = conn.expect(b'v').await;
    let mut body = first.body.clone();
    // PostgreSQL sends the full version number here (3.0), and libpq reads it that way.
    assert_eq!(
        body.get_u32(),
        fe::PROTOCOL_3_0,
        "the proxy must offer protocol 3.0"
    );
    assert_eq!(body.get_i32(), 0, "no unrecognized options were sent");
    let msgs = conn.expect_startup_ok().await;
    let key = msgs
        .iter()
        .find(|m| m.tag == b'K')
        .expect("no BackendKeyData");
    assert_eq!(key.body.len(), 8, "a 3.0 session has a 4-byte cancel key");
    conn.send(&fe::query("SELECT 1")).await;
    assert_eq!(common::raw::tags(&conn.recv_until(b'Z').await), "TDCZ");
}

#[tokio::test]
async fn gssenc_request_is_answered_n_and_startup_continues() {
    let db = fresh_db("s_gssenc").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.send(&fe::gssenc_request()).await;
    assert_eq!(conn.recv_byte().await, Some(b'N'));
    conn.startup_trust(TRUST_USER, &db).await;
    conn.send(&fe::query("SELECT 1")).await;
    assert_eq!(common::raw::tags(&conn.recv_until(b'Z').await), "TDCZ");
}

#[tokio::test]
async fn startup_parameters_are_forwarded_untouched() {
    let db = fresh_db("s_params").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.send(&fe::startup(
        fe::PROTOCOL_3_0,
        &[
            ("user", TRUST_USER),
            ("database", &db),
            ("application_name", "startup-app"),
            ("options", "-c work_mem=7MB"),
            ("DateStyle", "SQL, DMY"),
            ("TimeZone", "Asia/Tokyo"),
            ("client_encoding", "LATIN1"),
        ],
    ))
    .await;
    let msgs = conn.expect_startup_ok().await;
    let status: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| String::from_utf8_lossy(&m.body).replace('\0', "="))
        .collect();
    for expected in [
        "application_name=startup-app=",
        "DateStyle=SQL, DMY=",
        "TimeZone=Asia/Tokyo=",
        "client_encoding=LATIN1=",
    ] {
        assert!(
            status.iter().any(|s| s == expected),
            "missing ParameterStatus {expected}: {status:?}"
        );
    }
    conn.send(&fe::query(
        "SELECT current_setting('work_mem'), current_setting('application_name')",
    ))
    .await;
    let rows = conn.recv_until(b'Z').await;
    let row = rows.iter().find(|m| m.tag == b'D').unwrap().data_row();
    assert_eq!(
        row,
        vec![Some("7MB".to_string()), Some("startup-app".to_string())]
    );
}

#[tokio::test]
async fn session_log_names_role_and_database_but_never_message_bytes() {
    let db = fresh_db("s_log").await;
    cluster()
        .create_role("log_role_q7", Some("Log-Password-q7"))
        .await;
    let proxy = Proxy::start(json!({}));
    let client = common::connect(&proxy.config(&db, "log_role_q7", "Log-Password-q7")).await;
    client
        .simple_query("SELECT 'literal-q7-never-logged'")
        .await
        .unwrap();
    drop(client);
    eventually(
        Duration::from_secs(2),
        "session open/close lines naming role and database",
        || {
            let log = proxy.log();
            (log.contains("log_role_q7")
                && log.contains("s_log")
                && log.lines().filter(|l| l.contains("log_role_q7")).count() >= 2)
                .then_some(())
        },
    );
    let log = proxy.log();
    assert!(
        !log.contains("literal-q7-never-logged"),
        "query text leaked into the log:\n{log}"
    );
    assert!(
        !log.contains("Log-Password-q7"),
        "password leaked into the log:\n{log}"
    );
}

#[test]
fn check_accepts_a_valid_config_and_rejects_unknown_keys_with_a_line() {
    let ok = common::proxy::check(json!({}));
    assert!(
        ok.status.success(),
        "check rejected the harness config: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = common::proxy::check(json!({ "upstream": { "hots": "127.0.0.1" } }));
    assert!(!bad.status.success(), "check accepted an unknown key");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        text.contains("hots"),
        "error does not name the unknown key: {text}"
    );
    assert!(
        text.contains("pgcloak.yaml:"),
        "error has no file:line: {text}"
    );
}

#[tokio::test]
async fn md5_and_cleartext_password_auth_are_relayed() {
    use common::{CLEARTEXT_USER, LEGACY_PASSWORD, MD5_USER};
    let db = fresh_db("s_legacy_auth").await;
    let proxy = Proxy::start(json!({}));
    for user in [MD5_USER, CLEARTEXT_USER] {
        let client = common::connect(&proxy.config(&db, user, LEGACY_PASSWORD)).await;
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
        let bad = common::try_connect(&proxy.config(&db, user, "wrong-password")).await;
        assert_eq!(expect_sqlstate(bad), "28P01", "{user}");
    }
}

#[test]
fn check_warns_that_relay_scram_fails_with_tls_on_both_legs() {
    let both = Proxy::overrides(&[
        Proxy::client_tls("required"),
        Proxy::upstream_tls("verify-full"),
    ]);
    let out = common::proxy::check(both);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "a warning must not fail check: {text}"
    );
    assert!(
        text.contains("SCRAM") && text.contains("relay"),
        "no relay/SCRAM warning: {text}"
    );
    let one_leg = common::proxy::check(Proxy::client_tls("required"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&one_leg.stdout),
        String::from_utf8_lossy(&one_leg.stderr)
    );
    assert!(
        !text.contains("SCRAM"),
        "warning without TLS on both legs: {text}"
    );
}

#[tokio::test]
async fn json_log_lines_are_json_objects() {
    let db = fresh_db("s_json_log").await;
    let proxy = Proxy::start(json!({ "log": { "format": "json" } }));
    let client = proxy.connect(&db).await;
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    eventually(
        Duration::from_secs(2),
        "a session line in the JSON log",
        || proxy.log().contains("s_json_log").then_some(()),
    );
    for line in proxy.log().lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "not a JSON object: {line}");
    }
}

#[tokio::test]
async fn unknown_protocol_options_are_listed_once_in_negotiate_protocol_version() {
    let db = fresh_db("s_pq_options").await;
    let proxy = Proxy::start(json!({}));
    for version in [fe::PROTOCOL_3_0, fe::PROTOCOL_3_2] {
        let mut conn = RawConn::connect(proxy.port()).await;
        conn.send(&fe::startup(
            version,
            &[
                ("user", TRUST_USER),
                ("database", &db),
                ("_pq_.pgcloak_test_option", "on"),
            ],
        ))
        .await;
        let first = conn.expect(b'v').await;
        let mut body = first.body.clone();
        assert_eq!(body.get_u32(), fe::PROTOCOL_3_0);
        assert_eq!(body.get_i32(), 1, "one unrecognized option");
        assert_eq!(&body[..], b"_pq_.pgcloak_test_option\0");
        let msgs = conn.expect_startup_ok().await;
        assert!(
            msgs.iter().all(|m| m.tag != b'v'),
            "a second NegotiateProtocolVersion: {msgs:?}"
        );
    }
}

#[tokio::test]
async fn long_but_legal_startup_packet_is_accepted() {
    let db = fresh_db("s_long_startup").await;
    let proxy = Proxy::start(json!({}));
    let mut conn = RawConn::connect(proxy.port()).await;
    let long_name = "n".repeat(4000);
    let options = format!("-c search_path={}", "s".repeat(4000));
    conn.send(&fe::startup(
        fe::PROTOCOL_3_0,
        &[
            ("user", TRUST_USER),
            ("database", &db),
            ("application_name", &long_name),
            ("options", &options),
        ],
    ))
    .await;
    conn.expect_startup_ok().await;
    conn.send(&fe::query("SELECT length(current_setting('search_path'))"))
        .await;
    let msgs = conn.recv_until(b'Z').await;
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap().data_row();
    assert_eq!(row, vec![Some("4000".to_string())]);
}
