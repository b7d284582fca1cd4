//! Terminated authentication end to end (`auth.mode: scram`): pgcloak verifies the client on
//! the role's verifier (from `auth.query` over its catalog connection, or `auth.file`), then
//! logs in upstream as the same role. Real PostgreSQL with SCRAM in pg_hba and TLS on.

mod common;

use std::process::{Command, Output};

use common::raw::{fe, Msg, RawConn};
use common::{
    cluster, expect_sqlstate, fresh_db, try_connect, try_connect_tls, Proxy, APP_PASSWORD,
    APP_USER, CLEARTEXT_USER, LEGACY_PASSWORD, MD5_USER, TRUST_USER,
};
use pgcloak::auth::{ChannelBinding, ChannelBindingMode, ClientSecret, ScramClient};
use serde_json::{json, Value};
use tokio_postgres::config::SslMode;
use zeroize::Zeroizing;

const CATALOG_ROLE: &str = "pgcloak_auth";
const CATALOG_PASSWORD: &str = "catalog-Secret-pw1";
const FAKE_SECRET: &str = "a-stable-fake-verifier-secret-for-tests";
const ENV: [(&str, &str); 2] = [
    ("PGCLOAK_CATALOG_PW", CATALOG_PASSWORD),
    ("PGCLOAK_FAKE_SECRET", FAKE_SECRET),
];

/// pgcloak's catalog role, allowed to read pg_authid (the documented explicit GRANT).
async fn ensure_catalog_role() {
    // Concurrent GRANTs on one catalog row fail ("tuple concurrently updated"): do it once.
    static DONE: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut done = DONE.lock().await;
    if *done {
        return;
    }
    cluster()
        .create_role(CATALOG_ROLE, Some(CATALOG_PASSWORD))
        .await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(&format!("GRANT SELECT ON pg_authid TO {CATALOG_ROLE}"))
        .await
        .unwrap();
    *done = true;
}

/// Overrides for terminated auth reading verifiers with the default auth.query.
fn scram_mode(extra: Value) -> Value {
    Proxy::overrides(&[
        json!({
            "auth": { "mode": "scram", "fake_secret_env": "PGCLOAK_FAKE_SECRET" },
            "catalog": { "user": CATALOG_ROLE, "password_env": "PGCLOAK_CATALOG_PW" },
        }),
        extra,
    ])
}

async fn start_scram(extra: Value) -> Proxy {
    ensure_catalog_role().await;
    Proxy::start_with_env(scram_mode(extra), &ENV)
}

fn psql(conninfo: &str, password: &str, sql: &str) -> Output {
    Command::new(cluster().client_bin("psql"))
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap()
}

/// The log without ANSI colour sequences.
fn plain_log(proxy: &Proxy) -> String {
    let raw = proxy.log();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `session opened` line of `role`.
fn session_line(proxy: &Proxy, role: &str) -> String {
    let log = plain_log(proxy);
    log.lines()
        .rev()
        .find(|l| l.contains("session opened") && l.contains(&format!("role=\"{role}\"")))
        .unwrap_or_else(|| panic!("no `session opened` line for {role}:\n{log}"))
        .to_string()
}

const UPSTREAM_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test]
async fn psql_channel_binding_require_works_with_tls_on_both_legs() {
    let db = fresh_db("t_auth_psql").await;
    let legs = [
        Proxy::client_tls("optional"),
        Proxy::upstream_tls("require"),
    ];
    let proxy = start_scram(Proxy::overrides(&legs)).await;
    let conninfo = format!(
        "{} sslmode=require channel_binding=require",
        proxy.conninfo(&db, APP_USER)
    );
    let out = psql(&conninfo, APP_PASSWORD, UPSTREAM_SSL);
    assert!(
        out.status.success(),
        "psql failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    let line = session_line(&proxy, APP_USER);
    assert!(line.contains("authenticated=true"), "{line}");
    assert!(line.contains("auth_method=\"scram-sha-256\""), "{line}");

    // The same legs in relay mode cannot do it: channel binding cannot cross a relay.
    let relay = Proxy::start(Proxy::overrides(&legs));
    let conninfo = format!(
        "{} sslmode=require channel_binding=require",
        relay.conninfo(&db, APP_USER)
    );
    assert!(!psql(&conninfo, APP_PASSWORD, "SELECT 1").status.success());
}

#[tokio::test]
async fn tokio_postgres_logs_in_over_plain_and_tls_with_channel_binding() {
    let db = fresh_db("t_auth_tokio").await;
    let proxy = start_scram(Proxy::overrides(&[
        Proxy::client_tls("optional"),
        Proxy::upstream_tls("require"),
    ]))
    .await;
    let plain = try_connect(&proxy.app_config(&db)).await.unwrap();
    let row = plain
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), APP_USER);

    // tokio-postgres-rustls 0.13 cannot compute tls-server-end-point (it parses the whole
    // certificate as a TBSCertificate), so it answers without binding; psql covers -PLUS.
    let mut config = proxy.app_config(&db);
    config.ssl_mode(SslMode::Require);
    let tls = try_connect_tls(&config, &cluster().tls.ca_cert)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.log()));
    let row = tls.query_one(UPSTREAM_SSL, &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "upstream leg must be TLS");
}

/// A raw SCRAM login; returns the server-first message (if the exchange got that far) and
/// every message after the client-final, until EOF. `after_final` is sent right behind
/// the client-final, as a client that ignores the outcome would.
async fn raw_scram_login(
    port: u16,
    role: &str,
    db: &str,
    password: &str,
    after_final: &[u8],
) -> (String, Vec<Msg>) {
    let mut conn = RawConn::connect(port).await;
    conn.send(&fe::startup(
        fe::PROTOCOL_3_0,
        &[("user", role), ("database", db)],
    ))
    .await;
    let sasl = conn.expect(b'R').await;
    assert_eq!(&sasl.body[..4], &10i32.to_be_bytes(), "expected SASL");
    let first = ScramClient::start(
        ClientSecret::Password(Zeroizing::new(password.as_bytes().to_vec())),
        &ChannelBinding::Plain,
        ChannelBindingMode::Disable,
        &["SCRAM-SHA-256"],
    )
    .unwrap();
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    initial.extend_from_slice(&(first.message().len() as i32).to_be_bytes());
    initial.extend_from_slice(first.message());
    conn.send(&fe::frame(b'p', &initial)).await;
    let cont = conn.expect(b'R').await;
    assert_eq!(
        &cont.body[..4],
        &11i32.to_be_bytes(),
        "expected SASLContinue"
    );
    let server_first = String::from_utf8(cont.body[4..].to_vec()).unwrap();
    let fin = first.server_first(&cont.body[4..]).unwrap();
    let mut out = fe::frame(b'p', fin.message());
    out.extend_from_slice(after_final);
    conn.send(&out).await;
    let mut msgs = Vec::new();
    while let Some(m) = conn.recv().await {
        msgs.push(m);
    }
    (server_first, msgs)
}

/// The full bytes of an ErrorResponse with `role` replaced by a placeholder of equal length.
fn error_bytes_without_role(msgs: &[Msg], role: &str) -> Vec<u8> {
    assert_eq!(msgs.len(), 1, "expected exactly one message, got {msgs:?}");
    let m = &msgs[0];
    assert_eq!(m.tag, b'E');
    let mut bytes = vec![m.tag];
    bytes.extend_from_slice(&((m.body.len() + 4) as i32).to_be_bytes());
    bytes.extend_from_slice(&m.body);
    let text = String::from_utf8(bytes).unwrap();
    text.replace(role, &"R".repeat(role.len())).into_bytes()
}

fn salt_and_iterations(server_first: &str) -> String {
    server_first
        .split(',')
        .filter(|p| p.starts_with("s=") || p.starts_with("i="))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn wrong_password_unknown_role_and_no_password_are_refused_identically() {
    let db = fresh_db("t_auth_enum").await;
    // Role names of equal length, so the errors can be compared byte for byte.
    cluster()
        .create_role("auth_real", Some("real-Secret-pw1"))
        .await;
    cluster().create_role("auth_none", None).await;
    // Five failures from one address: keep backoff out of this test.
    let proxy = start_scram(json!({ "auth": { "backoff": { "threshold": 0 } } })).await;
    let port = proxy.port();
    let leak = "SELECT 'refused_connection_leak_marker'";
    let query = fe::query(leak);

    let (real_first, real) = raw_scram_login(port, "auth_real", &db, "wrong-pw", &query).await;
    let (_, empty) = raw_scram_login(port, "auth_real", &db, "", &query).await;
    let (gone_first, gone) = raw_scram_login(port, "auth_gone", &db, "wrong-pw", &query).await;
    let (gone_again, _) = raw_scram_login(port, "auth_gone", &db, "other", &[]).await;
    let (none_first, none) = raw_scram_login(port, "auth_none", &db, "wrong-pw", &query).await;

    let expected = error_bytes_without_role(&real, "auth_real");
    assert_eq!(real[0].sqlstate().as_deref(), Some("28P01"));
    assert_eq!(error_bytes_without_role(&empty, "auth_real"), expected);
    assert_eq!(error_bytes_without_role(&gone, "auth_gone"), expected);
    assert_eq!(error_bytes_without_role(&none, "auth_none"), expected);
    // The same exchange shape; an unknown role keeps a stable salt.
    let shape = |s: &str| {
        let si = salt_and_iterations(s);
        (si.len(), si.ends_with("i=4096"))
    };
    assert_eq!(shape(&gone_first), shape(&real_first));
    assert_eq!(shape(&none_first), shape(&real_first));
    assert_eq!(
        salt_and_iterations(&gone_first),
        salt_and_iterations(&gone_again)
    );
    assert_ne!(
        salt_and_iterations(&gone_first),
        salt_and_iterations(&none_first)
    );
    // Nothing the refused clients sent reached PostgreSQL.
    assert!(!cluster().log().contains("refused_connection_leak_marker"));
    // Failed logins are logged with role and address, never with the proof.
    let log = plain_log(&proxy);
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pgcloak::auth") && l.contains("authentication failed"))
        .collect();
    assert!(failed
        .iter()
        .any(|l| l.contains("auth_gone") && l.contains("127.0.0.1")));
    assert!(!log.contains("p="), "a proof may have been logged:\n{log}");
    assert!(!log.contains("wrong-pw"));
}

#[tokio::test]
async fn oversized_sasl_message_ends_the_connection() {
    let db = fresh_db("t_auth_big").await;
    let proxy = start_scram(json!({})).await;
    let mut conn = RawConn::connect(proxy.port()).await;
    conn.send(&fe::startup(
        fe::PROTOCOL_3_0,
        &[("user", APP_USER), ("database", &db)],
    ))
    .await;
    conn.expect(b'R').await;
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    let data = vec![b'a'; 64 * 1024];
    initial.extend_from_slice(&(data.len() as i32).to_be_bytes());
    initial.extend_from_slice(&data);
    let _ = conn.try_send(&fe::frame(b'p', &initial)).await;
    let err = conn.expect(b'E').await;
    assert_eq!(err.severity().as_deref(), Some("FATAL"));
    assert!(conn.recv().await.is_none(), "connection must be closed");
}

#[tokio::test]
async fn auth_file_pins_identity_against_a_password_reset_in_postgres() {
    let db = fresh_db("t_auth_file").await;
    cluster()
        .create_role("pinned", Some("old-Secret-pw1"))
        .await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(&format!("GRANT CONNECT ON DATABASE {db} TO pinned"))
        .await
        .unwrap();
    let row = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'pinned'",
            &[],
        )
        .await
        .unwrap();
    let verifier: String = row.get(0);
    let dir = tempfile::tempdir().unwrap();
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(&userlist, format!("\"pinned\" \"{verifier}\"\n")).unwrap();
    let proxy = Proxy::start_with_env(
        json!({ "auth": { "mode": "scram", "file": userlist, "fake_secret_env": "PGCLOAK_FAKE_SECRET" } }),
        &ENV,
    );
    let old = proxy.config(&db, "pinned", "old-Secret-pw1");
    try_connect(&old).await.unwrap();

    admin
        .batch_execute("ALTER ROLE pinned PASSWORD 'new-Secret-pw1'")
        .await
        .unwrap();
    let new = proxy.config(&db, "pinned", "new-Secret-pw1");
    assert_eq!(expect_sqlstate(try_connect(&new).await), "28P01");
    // Direct PostgreSQL accepts the new password: only pgcloak's pinned verifier refuses it.
    try_connect(&cluster().direct_config(&db, "pinned", "new-Secret-pw1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn check_reports_userlist_problems_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(
        &userlist,
        "; comment\n\"ok\" \"md5aa50dc74f7a4b7c3a3658f986c8699a5\"\n\"bad\" \"hunter2\"\n",
    )
    .unwrap();
    let out = common::proxy::check(json!({ "auth": { "mode": "scram", "file": userlist } }));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("{}:3:", userlist.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test]
async fn md5_and_cleartext_upstreams_get_the_same_role() {
    let db = fresh_db("t_auth_legacy").await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {db} TO {MD5_USER}, {CLEARTEXT_USER}"
        ))
        .await
        .unwrap();
    // Without md5 allowed, a role holding only an md5 verifier cannot log in.
    let strict = start_scram(json!({})).await;
    let md5_cfg = strict.config(&db, MD5_USER, LEGACY_PASSWORD);
    assert_eq!(expect_sqlstate(try_connect(&md5_cfg).await), "28P01");
    // cleartext_user: pgcloak verifies SCRAM, upstream asks for a password it lacks.
    let ct = strict.config(&db, CLEARTEXT_USER, LEGACY_PASSWORD);
    let err = try_connect(&ct).await.unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("28000"));
    assert!(format!("{err:?}").contains("upstream_passwords"), "{err:?}");

    let proxy = Proxy::start_with_env(
        scram_mode(json!({ "auth": {
            "methods": ["scram-sha-256", "md5"],
            "upstream_passwords": { CLEARTEXT_USER: "PGCLOAK_CT_PW" },
        }})),
        &[ENV[0], ENV[1], ("PGCLOAK_CT_PW", LEGACY_PASSWORD)],
    );
    for role in [MD5_USER, CLEARTEXT_USER] {
        let client = try_connect(&proxy.config(&db, role, LEGACY_PASSWORD))
            .await
            .unwrap_or_else(|e| panic!("{role}: {e:?}\n{}", proxy.log()));
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), role);
    }
    let line = session_line(&proxy, MD5_USER);
    assert!(line.contains("auth_method=\"md5\""), "{line}");
    let wrong = proxy.config(&db, MD5_USER, "wrong");
    assert_eq!(expect_sqlstate(try_connect(&wrong).await), "28P01");
}

#[tokio::test]
async fn upstream_refusal_reaches_the_client() {
    let db = fresh_db("t_auth_upref").await;
    // NOLOGIN: pgcloak verifies the password, PostgreSQL refuses the login itself.
    cluster()
        .create_role("auth_nologin", Some("nl-Secret-pw1"))
        .await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute("ALTER ROLE auth_nologin NOLOGIN")
        .await
        .unwrap();
    let proxy = start_scram(json!({})).await;
    let err = try_connect(&proxy.config(&db, "auth_nologin", "nl-Secret-pw1"))
        .await
        .unwrap_err();
    let db_err = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db_err.code().code(), "28000");
    assert!(
        db_err.message().contains("not permitted to log in"),
        "{db_err:?}"
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_backed_off() {
    let db = fresh_db("t_auth_backoff").await;
    let proxy = start_scram(json!({ "auth": { "backoff": {
        "threshold": 2, "base_delay_ms": 60000, "max_delay_ms": 60000
    }}}))
    .await;
    for _ in 0..2 {
        let bad = proxy.config(&db, APP_USER, "wrong");
        assert_eq!(expect_sqlstate(try_connect(&bad).await), "28P01");
    }
    // Even the right password is refused from this address for a while.
    let good = proxy.app_config(&db);
    assert_eq!(expect_sqlstate(try_connect(&good).await), "53300");
}

#[tokio::test]
async fn trust_role_in_relay_mode_is_unauthenticated_unless_configured() {
    let db = fresh_db("t_auth_trust").await;
    for (trust, expected) in [(false, "authenticated=false"), (true, "authenticated=true")] {
        let proxy = Proxy::start(json!({ "trust_upstream_identity": trust }));
        let client = try_connect(&proxy.config(&db, TRUST_USER, "ignored"))
            .await
            .unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        let line = session_line(&proxy, TRUST_USER);
        assert!(line.contains(expected), "{line}");
        assert!(line.contains("auth_method=\"trust\""), "{line}");
    }
    // In scram mode a role without a password cannot get in at all.
    let proxy = start_scram(json!({})).await;
    let cfg = proxy.config(&db, TRUST_USER, "anything");
    assert_eq!(expect_sqlstate(try_connect(&cfg).await), "28P01");
}

/// Reads one backend message from `s`: (tag, body).
async fn read_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

#[tokio::test]
async fn tls_client_claiming_no_plus_support_is_refused_as_a_downgrade() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_db("t_auth_downgrade").await;
    let proxy = start_scram(Proxy::client_tls("optional")).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port()))
        .await
        .unwrap();
    tcp.write_all(&fe::ssl_request()).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S');
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(common::rustls_config(&cluster().tls.ca_cert)));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&fe::startup(
        fe::PROTOCOL_3_0,
        &[("user", APP_USER), ("database", &db)],
    ))
    .await
    .unwrap();
    let (tag, body) = read_message(&mut tls).await.unwrap();
    assert_eq!(tag, b'R');
    assert_eq!(&body[4..], b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    // "y": the client claims it supports binding but the server did not offer it.
    let data = b"y,,n=,r=downgradenonce123";
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    initial.extend_from_slice(&(data.len() as i32).to_be_bytes());
    initial.extend_from_slice(data);
    tls.write_all(&fe::frame(b'p', &initial)).await.unwrap();
    let (tag, body) = read_message(&mut tls).await.unwrap();
    assert_eq!(tag, b'E');
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("C28000"), "{text}");
    assert!(text.contains("downgrade"), "{text}");
    assert!(read_message(&mut tls).await.is_none(), "must be closed");
}

#[tokio::test]
async fn auth_query_through_a_security_definer_function() {
    let db = fresh_db("t_auth_definer").await;
    cluster()
        .create_role("pgcloak_fn", Some(CATALOG_PASSWORD))
        .await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pgcloak_lookup; \
             CREATE OR REPLACE FUNCTION pgcloak_lookup.user_lookup(IN i_username text, \
                 OUT uname text, OUT phash text) RETURNS record AS $$ \
                 SELECT rolname::text, rolpassword::text FROM pg_catalog.pg_authid \
                 WHERE rolname = i_username AND rolcanlogin $$ \
             LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog; \
             REVOKE ALL ON FUNCTION pgcloak_lookup.user_lookup(text) FROM public; \
             GRANT USAGE ON SCHEMA pgcloak_lookup TO pgcloak_fn; \
             GRANT EXECUTE ON FUNCTION pgcloak_lookup.user_lookup(text) TO pgcloak_fn;",
        )
        .await
        .unwrap();
    let proxy = Proxy::start_with_env(
        json!({
            "auth": {
                "mode": "scram",
                "query": "SELECT uname, phash FROM pgcloak_lookup.user_lookup($1)",
                "fake_secret_env": "PGCLOAK_FAKE_SECRET",
            },
            "catalog": { "user": "pgcloak_fn", "password_env": "PGCLOAK_CATALOG_PW" },
        }),
        &ENV,
    );
    let client = try_connect(&proxy.app_config(&db))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.log()));
    client.simple_query("SELECT 1").await.unwrap();
    let bad = proxy.config(&db, APP_USER, "wrong");
    assert_eq!(expect_sqlstate(try_connect(&bad).await), "28P01");
}

#[tokio::test]
async fn cancel_works_for_a_session_authenticated_by_pgcloak() {
    let db = fresh_db("t_auth_cancel").await;
    let proxy = start_scram(json!({})).await;
    let client = try_connect(&proxy.app_config(&db)).await.unwrap();
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), sleeper)
        .await
        .expect("cancel did not reach upstream")
        .unwrap();
    let err = result.expect_err("the query must be cancelled");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("57014"));
}

#[tokio::test]
async fn cleartext_is_asked_for_only_over_tls() {
    let db = fresh_db("t_auth_cleartext").await;
    let proxy = start_scram(Proxy::overrides(&[
        Proxy::client_tls("optional"),
        json!({ "auth": { "methods": ["password", "scram-sha-256"] } }),
    ]))
    .await;
    let mut config = proxy.app_config(&db);
    config.ssl_mode(SslMode::Require);
    let tls = try_connect_tls(&config, &cluster().tls.ca_cert)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.log()));
    // A round trip: the session's log line is written before its first query is relayed.
    tls.simple_query("SELECT 1").await.unwrap();
    let line = session_line(&proxy, APP_USER);
    assert!(line.contains("auth_method=\"password\""), "{line}");
    assert!(line.contains("tls=true"), "{line}");

    let plain = try_connect(&proxy.app_config(&db)).await.unwrap();
    plain.simple_query("SELECT 1").await.unwrap();
    let line = session_line(&proxy, APP_USER);
    assert!(line.contains("auth_method=\"scram-sha-256\""), "{line}");
    assert!(line.contains("tls=false"), "{line}");
}

#[tokio::test]
async fn auth_query_cache_is_dropped_when_upstream_refuses_a_stale_verifier() {
    let db = fresh_db("t_auth_stale").await;
    cluster()
        .create_role("auth_rotate", Some("first-Secret-pw1"))
        .await;
    let proxy = start_scram(json!({ "auth": { "cache_secs": 300 } })).await;
    let first = proxy.config(&db, "auth_rotate", "first-Secret-pw1");
    try_connect(&first).await.unwrap();
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute("ALTER ROLE auth_rotate PASSWORD 'second-Secret-pw1'")
        .await
        .unwrap();
    let second = proxy.config(&db, "auth_rotate", "second-Secret-pw1");
    // Within the TTL pgcloak still checks the cached (old) verifier...
    assert_eq!(expect_sqlstate(try_connect(&second).await), "28P01");
    // ...which upstream no longer holds: the login fails there, and the entry is dropped.
    let err = try_connect(&first).await.unwrap_err();
    assert_eq!(common::sqlstate(&err).as_deref(), Some("28000"), "{err:?}");
    try_connect(&second)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", proxy.log()));
}
