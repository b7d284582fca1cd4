//! Decryption rights follow authenticated identity and role usage, never what the
//! client claims: group roles, NOINHERIT, SET ROLE and trust-admitted roles.

mod common;

use common::{cluster, eventually_async, ProtectedProxy, TRUST_USER};
use serde_json::json;
use tokio_postgres::Client;

/// `secrets.ssn` readable in plaintext by the group `{name}_readers` and by the trust role;
/// logins `member` (INHERIT), `noinherit` (NOINHERIT member) and `outsider`. The catalog
/// is re-read every second. One row written by a plaintext reader.
async fn setup(name: &str, trust_identity: bool) -> ProtectedProxy {
    let p = ProtectedProxy::builder(name)
        .roles(&["member", "noinherit", "outsider"])
        .setup(&format!(
            "DO $$ BEGIN CREATE ROLE {{p}}_readers NOLOGIN; \
               EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {{p}}_member INHERIT;
             ALTER ROLE {{p}}_noinherit NOINHERIT;
             ALTER ROLE {{p}}_outsider INHERIT;
             GRANT {{p}}_readers TO {{p}}_member;
             GRANT {{p}}_readers TO {{p}}_noinherit;
             CREATE TABLE secrets (id int PRIMARY KEY, ssn bytea);
             GRANT ALL ON secrets TO PUBLIC;
             GRANT {{p}}_readers TO {TRUST_USER};"
        ))
        .policy(&format!(
            "version: 1\ntables:\n  secrets:\n    ssn:\n      type: text\n      access: {{ {{p}}_readers: plaintext, {TRUST_USER}: plaintext }}\n"
        ))
        .overrides(json!({
            "catalog": { "refresh_secs": 1 },
            "trust_upstream_identity": trust_identity,
        }))
        .start()
        .await;
    // Write a value as a plaintext reader.
    let writer = p.client("member").await;
    writer
        .batch_execute("INSERT INTO secrets VALUES (1, '123-45-6789')")
        .await
        .unwrap();
    p
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
    let p = setup("ar_groups", false).await;
    let member = p.client("member").await;
    assert_eq!(ssn(&member).await.as_deref(), Some("123-45-6789"));
    let noinherit = p.client("noinherit").await;
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
    let outsider = p.client("outsider").await;
    let err = outsider.batch_execute("SET ROLE ar_groups_readers").await;
    assert_eq!(common::expect_sqlstate(err), "42501");
    assert_eq!(ssn(&outsider).await, None);
    // application_name claims nothing either.
    let mut cfg = p.config("outsider");
    cfg.application_name("ar_groups_readers");
    let named = common::connect(&cfg).await;
    assert_eq!(ssn(&named).await, None);
}

#[tokio::test]
async fn a_role_admitted_by_trust_is_public_unless_configured() {
    let p = setup("ar_trust", false).await;
    let trusty = common::connect(&p.proxy.config(&p.db, TRUST_USER, "")).await;
    assert_eq!(
        ssn(&trusty).await,
        None,
        "a trust-admitted role got plaintext"
    );
    drop(p);
    let p = setup("ar_trust2", true).await;
    let trusty = common::connect(&p.proxy.config(&p.db, TRUST_USER, "")).await;
    assert_eq!(ssn(&trusty).await.as_deref(), Some("123-45-6789"));
}

#[tokio::test]
async fn membership_changes_reach_open_sessions_on_the_catalog_ttl() {
    let p = setup("ar_ttl", false).await;
    let outsider = p.client("outsider").await;
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
