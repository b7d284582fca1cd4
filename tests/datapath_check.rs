//! `pgcloak check --database` and startup checks against the live schema.

mod common;

use common::{ProtectedProxy, SUPERUSER, SUPERUSER_PASSWORD};

const POLICY: &str = "version: 1\ntables:\n  public.people:\n    ssn:\n      type: text\n      access: { PUBLIC: masked }\n      mask: { keep_last: 2 }\n";

/// `people(id, ssn <ssn_type>)` under [`POLICY`], the catalog read as the superuser.
async fn fixture(name: &str, ssn_type: &str) -> common::Prepared {
    ProtectedProxy::builder(name)
        .setup(&format!(
            "CREATE TABLE people (id int PRIMARY KEY, ssn {ssn_type})"
        ))
        .policy(POLICY)
        .catalog_login(SUPERUSER, SUPERUSER_PASSWORD)
        .prepare()
        .await
}

#[tokio::test]
async fn check_database_prints_the_missing_constraint_ddl_and_passes_once_applied() {
    let f = fixture("chk_ddl", "bytea").await;
    let admin = common::cluster().admin(&f.db).await;
    let (code, out) = f.check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ADD CONSTRAINT pgcloak_envelope_ssn"),
        "no DDL printed: {out}"
    );
    // Every printed statement (the envelope constraint, and the rest of the database-side
    // guard: statistics, built-ins), as printed, one per indented line.
    for ddl in out.lines().filter(|l| l.starts_with("    ")).map(str::trim) {
        admin.batch_execute(ddl).await.unwrap();
    }
    let (code, out) = f.check();
    assert_eq!(code, 0, "{out}");
    // The constraint now keeps plaintext out even for writes that bypass pgcloak.
    let err = admin
        .execute("INSERT INTO people VALUES (1, 'plain'::bytea)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23514");
}

#[tokio::test]
async fn a_policy_column_missing_from_the_schema_fails_check_and_startup() {
    let f = fixture("chk_missing", "text").await;
    let (code, out) = f.check();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ssn"), "{out}");
    // serve refuses to start with the same problem.
    let log = match f.try_serve() {
        Ok(_) => panic!("pgcloak started with a policy column that is not bytea"),
        Err(log) => log,
    };
    assert!(log.contains("ssn"), "{log}");
}
