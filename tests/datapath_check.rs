//! `pgcloak check --database` and startup checks against the live schema.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{cluster, fresh_db, Proxy, SUPERUSER, SUPERUSER_PASSWORD};
use serde_json::json;

fn write_config(dir: &std::path::Path, db: &str, policy: &str) -> std::path::PathBuf {
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, policy).unwrap();
    let keys_path = dir.join("master.keys");
    let keys = pgcloak::crypto::keygen(None).unwrap();
    std::fs::write(&keys_path, keys.as_bytes()).unwrap();
    std::fs::set_permissions(&keys_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = cluster();
    let yaml = format!(
        "listen: 127.0.0.1:{}\nupstream: {{ host: 127.0.0.1, port: {}, tls: disable }}\n\
         policy: {}\nkeys: {{ file: {} }}\n\
         catalog: {{ user: {SUPERUSER}, password_env: PGCLOAK_CATALOG_PASSWORD, databases: [{db}] }}\n",
        common::cluster::free_port(),
        c.port,
        policy_path.display(),
        keys_path.display()
    );
    let path = dir.join("pgcloak.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn check(config: &std::path::Path, db: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .args(["check", "--config"])
        .arg(config)
        .args(["--database", db])
        .env("PGCLOAK_CATALOG_PASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

const POLICY: &str = "version: 1\ntables:\n  public.people:\n    ssn:\n      type: text\n      access: { PUBLIC: masked }\n      mask: { keep_last: 2 }\n";

#[tokio::test]
async fn check_database_prints_the_missing_constraint_ddl_and_passes_once_applied() {
    let db = fresh_db("chk_ddl").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute("CREATE TABLE people (id int PRIMARY KEY, ssn bytea)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db, POLICY);
    let (code, out) = check(&config, &db);
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
    let (code, out) = check(&config, &db);
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
    let db = fresh_db("chk_missing").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute("CREATE TABLE people (id int PRIMARY KEY, ssn text)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db, POLICY);
    let (code, out) = check(&config, &db);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ssn"), "{out}");
    // serve refuses to start with the same problem.
    let started = Proxy::try_start_with_env(
        json!({
            "policy": dir.path().join("policy.yaml"),
            "keys": { "file": dir.path().join("master.keys") },
            "catalog": { "user": SUPERUSER, "password_env": "PGCLOAK_CATALOG_PASSWORD", "databases": [db] },
        }),
        &[("PGCLOAK_CATALOG_PASSWORD", SUPERUSER_PASSWORD)],
    );
    let log = match started {
        Ok(_) => panic!("pgcloak started with a policy column that is not bytea"),
        Err(log) => log,
    };
    assert!(log.contains("ssn"), "{log}");
}
