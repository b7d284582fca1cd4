//! TLS on both legs of pgcloak: the client leg (psql and tokio-postgres with rustls, required
//! and optional modes, direct TLS negotiation, cancel over TLS) and the upstream leg (require,
//! prefer, verify-full against the right CA, and refusals for a wrong CA or server name).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{
    cluster, eventually_async, expect_sqlstate, fresh_db, Proxy, APP_PASSWORD, APP_USER,
    HANG_TIMEOUT, TRUST_USER,
};
use serde_json::json;
use tokio_postgres::config::{SslMode, SslNegotiation};
use tokio_postgres_rustls::MakeRustlsConnect;

fn psql(conninfo: &str, sql: &str) -> Output {
    Command::new(cluster().client_bin("psql"))
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap()
}

const UPSTREAM_SSL: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test]
async fn psql_sslmode_require_and_verify_full_work_on_the_client_leg() {
    let db = fresh_db("t_psql").await;
    let proxy = Proxy::start(Proxy::client_tls("required"));
    let ca = cluster().tls.ca_cert.display().to_string();
    for extra in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full sslrootcert={ca}"),
    ] {
        let out = psql(
            &format!("{} {extra}", proxy.conninfo(&db, APP_USER)),
            "SELECT 40 + 2",
        );
        assert!(
            out.status.success(),
            "psql {extra} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    }
}

#[tokio::test]
async fn client_leg_required_refuses_plaintext_clients() {
    let db = fresh_db("t_required").await;
    let proxy = Proxy::start(Proxy::client_tls("required"));
    let out = psql(
        &format!("{} sslmode=disable", proxy.conninfo(&db, APP_USER)),
        "SELECT 1",
    );
    assert!(
        !out.status.success(),
        "a plaintext psql got through a TLS-required proxy"
    );
    let plain = common::try_connect(&proxy.app_config(&db)).await;
    assert!(
        plain.is_err(),
        "a plaintext tokio-postgres client got through"
    );
    // The proxy still serves TLS clients afterwards.
    let mut config = proxy.app_config(&db);
    config.ssl_mode(SslMode::Require);
    let client = common::try_connect_tls(&config, &cluster().tls.ca_cert)
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn client_leg_optional_serves_tls_and_plaintext() {
    let db = fresh_db("t_optional").await;
    let proxy = Proxy::start(Proxy::client_tls("optional"));
    let plain = proxy.connect(&db).await;
    plain.simple_query("SELECT 1").await.unwrap();
    let mut config = proxy.app_config(&db);
    config.ssl_mode(SslMode::Require);
    let tls = common::try_connect_tls(&config, &cluster().tls.ca_cert)
        .await
        .unwrap();
    assert_eq!(
        tls.query_one("SELECT 3::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[tokio::test]
async fn client_leg_tls_is_verified_against_the_ca() {
    let db = fresh_db("t_wrong_ca").await;
    let proxy = Proxy::start(Proxy::client_tls("required"));
    let mut config = proxy.app_config(&db);
    config.ssl_mode(SslMode::Require);
    // A client trusting another CA must not complete the handshake.
    let refused = common::try_connect_tls(&config, &cluster().tls.other_ca_cert).await;
    assert!(
        refused.is_err(),
        "handshake succeeded with an untrusted certificate"
    );
}

#[tokio::test]
async fn cancel_over_tls_cancels_the_query() {
    let db = fresh_db("t_cancel").await;
    let proxy = Proxy::start(Proxy::client_tls("required"));
    let mut config = proxy.app_config(&db);
    config.ssl_mode(SslMode::Require);
    let client = common::try_connect_tls(&config, &cluster().tls.ca_cert)
        .await
        .unwrap();
    let token = client.cancel_token();
    let running = tokio::spawn(async move { client.query("SELECT pg_sleep(30)", &[]).await });
    let (admin, db_name) = (&cluster().admin("postgres").await, &db);
    eventually_async(HANG_TIMEOUT, "the query started", || async move {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query = 'SELECT pg_sleep(30)' AND state = 'active'",
                &[db_name],
            )
            .await
            .unwrap()
            .get(0);
        (n > 0).then_some(())
    })
    .await;
    let sent = Instant::now();
    token
        .cancel_query(common::rustls_connector(&cluster().tls.ca_cert))
        .await
        .unwrap();
    let result = tokio::time::timeout(HANG_TIMEOUT, running)
        .await
        .expect("not cancelled")
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "cancel over TLS took {:?}",
        sent.elapsed()
    );
    assert_eq!(expect_sqlstate(result), "57014");
}

#[tokio::test]
async fn direct_tls_negotiation_with_alpn_is_accepted() {
    let db = fresh_db("t_direct").await;
    let proxy = Proxy::start(Proxy::client_tls("required"));
    let mut tls = common::rustls_config(&cluster().tls.ca_cert);
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    let mut config = proxy.app_config(&db);
    config
        .ssl_mode(SslMode::Require)
        .ssl_negotiation(SslNegotiation::Direct);
    let (client, conn) = config
        .connect(MakeRustlsConnect::new(tls))
        .await
        .expect("direct TLS refused");
    tokio::spawn(conn);
    assert_eq!(
        client
            .query_one("SELECT 8::int4", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        8
    );
}

#[tokio::test]
async fn upstream_tls_require_and_prefer_encrypt_the_upstream_leg() {
    let db = fresh_db("t_up_require").await;
    for mode in ["require", "prefer"] {
        let proxy = Proxy::start(Proxy::upstream_tls(mode));
        let client = proxy.connect(&db).await;
        let ssl: bool = client.query_one(UPSTREAM_SSL, &[]).await.unwrap().get(0);
        assert!(ssl, "upstream leg not encrypted with upstream.tls = {mode}");
    }
    let proxy = Proxy::start(Proxy::upstream_tls("disable"));
    let ssl: bool = proxy
        .connect(&db)
        .await
        .query_one(UPSTREAM_SSL, &[])
        .await
        .unwrap()
        .get(0);
    assert!(!ssl, "upstream.tls = disable still used TLS");
}

#[tokio::test]
async fn upstream_verify_full_accepts_the_right_ca() {
    let db = fresh_db("t_up_verify").await;
    let proxy = Proxy::start(Proxy::upstream_tls("verify-full"));
    let client = proxy.connect(&db).await;
    let ssl: bool = client.query_one(UPSTREAM_SSL, &[]).await.unwrap().get(0);
    assert!(ssl);
}

#[tokio::test]
async fn upstream_verify_full_refuses_an_unknown_ca_or_wrong_name() {
    let db = fresh_db("t_up_refuse").await;
    let wrong_ca = Proxy::overrides(&[
        Proxy::upstream_tls("verify-full"),
        json!({ "upstream": { "ca_file": cluster().tls.other_ca_cert } }),
    ]);
    let wrong_name = Proxy::overrides(&[
        Proxy::upstream_tls("verify-full"),
        json!({ "upstream": { "server_name": "not-the-server.invalid" } }),
    ]);
    for overrides in [wrong_ca, wrong_name] {
        let proxy = Proxy::start(overrides.clone());
        let err = common::try_connect(&proxy.app_config(&db))
            .await
            .expect_err("verify-full accepted a bad certificate");
        let code = common::sqlstate(&err)
            .unwrap_or_else(|| panic!("no SQLSTATE: {err:?} for {overrides}"));
        assert!(
            code.starts_with("08"),
            "unexpected SQLSTATE {code} for {overrides}"
        );
    }
}

#[tokio::test]
async fn both_legs_tls_work_for_a_role_without_password_exchange() {
    let db = fresh_db("t_both").await;
    let proxy = Proxy::start(Proxy::overrides(&[
        Proxy::client_tls("required"),
        Proxy::upstream_tls("verify-full"),
    ]));
    let mut config = proxy.config(&db, TRUST_USER, "");
    config.ssl_mode(SslMode::Require);
    let client = common::try_connect_tls(&config, &cluster().tls.ca_cert)
        .await
        .unwrap();
    let ssl: bool = client.query_one(UPSTREAM_SSL, &[]).await.unwrap().get(0);
    assert!(ssl);
}
