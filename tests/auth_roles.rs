//! Decryption rights follow authenticated identity and role usage, never what the
//! client claims: group roles, NOINHERIT, SET ROLE and trust-admitted roles.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{
    cluster, eventually_async, fresh_db, Proxy, SUPERUSER, SUPERUSER_PASSWORD, TRUST_USER,
};
use serde_json::json;
use tokio_postgres::Client;

const PW: &str = "Role-Secret-pw1";

async fn setup(name: &str, trust_identity: bool) -> (String, Proxy, tempfile::TempDir) {
    let db = fresh_db(name).await;
    let c = cluster();
    let admin = c.admin("postgres").await;
    let g = format!("{name}_readers");
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {g} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        ))
        .await
        .unwrap();
    for (r, inherit) in [
        ("member", "INHERIT"),
        ("noinherit", "NOINHERIT"),
        ("outsider", "INHERIT"),
    ] {
        let role = format!("{name}_{r}");
        c.create_role(&role, Some(PW)).await;
        admin
            .batch_execute(&format!("ALTER ROLE {role} {inherit}"))
            .await
            .unwrap();
    }
    admin
        .batch_execute(&format!(
            "GRANT {g} TO {name}_member; GRANT {g} TO {name}_noinherit;"
        ))
        .await
        .unwrap();
    let dba = c.admin(&db).await;
    dba.batch_execute(&format!(
        "CREATE TABLE secrets (id int PRIMARY KEY, ssn bytea);
         GRANT ALL ON secrets TO PUBLIC;
         GRANT {g} TO {TRUST_USER};"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "version: 1\ntables:\n  secrets:\n    ssn:\n      type: text\n      access: {{ {g}: plaintext, {TRUST_USER}: plaintext }}\n"
    );
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let keys = pgcloak::crypto::keygen(None).unwrap();
    std::fs::write(dir.path().join("master.keys"), keys.as_bytes()).unwrap();
    std::fs::set_permissions(
        dir.path().join("master.keys"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let proxy = Proxy::start_with_env(
        json!({
            "policy": dir.path().join("policy.yaml"),
            "keys": { "file": dir.path().join("master.keys") },
            "catalog": { "user": SUPERUSER, "password_env": "PGCLOAK_CATALOG_PASSWORD", "refresh_secs": 1 },
            "trust_upstream_identity": trust_identity,
        }),
        &[("PGCLOAK_CATALOG_PASSWORD", SUPERUSER_PASSWORD)],
    );
    // Write a value as a plaintext reader.
    let writer = common::connect(&proxy.config(&db, &format!("{name}_member"), PW)).await;
    writer
        .batch_execute("INSERT INTO secrets VALUES (1, '123-45-6789')")
        .await
        .unwrap();
    (db, proxy, dir)
}

async fn ssn(client: &Client) -> Option<String> {
    client
        .query_one("SELECT ssn FROM secrets WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn group_membership_grants_plaintext_but_noinherit_does_not() {
    let (db, proxy, _dir) = setup("ar_groups", false).await;
    let member = common::connect(&proxy.config(&db, "ar_groups_member", PW)).await;
    assert_eq!(ssn(&member).await.as_deref(), Some("123-45-6789"));
    let noinherit = common::connect(&proxy.config(&db, "ar_groups_noinherit", PW)).await;
    assert_eq!(
        ssn(&noinherit).await,
        None,
        "NOINHERIT membership granted plaintext"
    );
    // SET ROLE to the group is allowed by PostgreSQL for a member, but pgcloak's
    // rights come from the login, not from SET ROLE.
    noinherit
        .batch_execute("SET ROLE ar_groups_readers")
        .await
        .unwrap();
    assert_eq!(
        ssn(&noinherit).await,
        None,
        "SET ROLE added decryption rights"
    );
    // A role that cannot use the group: PostgreSQL refuses SET ROLE, pgcloak grants nothing.
    let outsider = common::connect(&proxy.config(&db, "ar_groups_outsider", PW)).await;
    let err = outsider.batch_execute("SET ROLE ar_groups_readers").await;
    assert_eq!(common::expect_sqlstate(err), "42501");
    assert_eq!(ssn(&outsider).await, None);
    // application_name claims nothing either.
    let mut cfg = proxy.config(&db, "ar_groups_outsider", PW);
    cfg.application_name("ar_groups_readers");
    let named = common::connect(&cfg).await;
    assert_eq!(ssn(&named).await, None);
}

#[tokio::test]
async fn a_role_admitted_by_trust_is_public_unless_configured() {
    let (db, proxy, _dir) = setup("ar_trust", false).await;
    let trusty = common::connect(&proxy.config(&db, TRUST_USER, "")).await;
    assert_eq!(
        ssn(&trusty).await,
        None,
        "a trust-admitted role got plaintext"
    );
    drop(proxy);
    let (db, proxy, _dir) = setup("ar_trust2", true).await;
    let trusty = common::connect(&proxy.config(&db, TRUST_USER, "")).await;
    assert_eq!(ssn(&trusty).await.as_deref(), Some("123-45-6789"));
}

#[tokio::test]
async fn membership_changes_reach_open_sessions_on_the_catalog_ttl() {
    let (db, proxy, _dir) = setup("ar_ttl", false).await;
    let outsider = common::connect(&proxy.config(&db, "ar_ttl_outsider", PW)).await;
    assert_eq!(ssn(&outsider).await, None);
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute("GRANT ar_ttl_readers TO ar_ttl_outsider")
        .await
        .unwrap();
    // refresh_secs is 1: the open session picks the grant up without reconnecting.
    let outsider = &outsider;
    eventually_async(
        std::time::Duration::from_secs(10),
        "the grant reached the open session",
        || async move { (ssn(outsider).await.as_deref() == Some("123-45-6789")).then_some(()) },
    )
    .await;
    admin
        .batch_execute("REVOKE ar_ttl_readers FROM ar_ttl_outsider")
        .await
        .unwrap();
    eventually_async(
        std::time::Duration::from_secs(10),
        "the revoke reached the open session",
        || async move { ssn(outsider).await.is_none().then_some(()) },
    )
    .await;
}
