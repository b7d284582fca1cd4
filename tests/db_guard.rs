//! The second line of defence against a real cluster: `pgcloak check --database` reports
//! each way the database is looser than the policy (exit 1, with DDL), applying the
//! printed DDL makes it pass (exit 0), and afterwards PostgreSQL itself refuses what the
//! policy closes: a `null`/`deny` role gets permission denied on the column, pg_stats
//! holds no envelope, PUBLIC cannot run query_to_xml. `strict: true` refuses to serve
//! until then.

mod common;

use common::{cluster, Prepared, ProtectedBuilder, ProtectedProxy, SUPERUSER, SUPERUSER_PASSWORD};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

/// The DDL statements `check` printed (indented lines under a finding).
fn printed_ddl(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("    "))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A client logged in as `role` over the cluster's socket (trust), straight to PostgreSQL.
async fn as_role(db: &str, role: &str) -> Client {
    let c = cluster();
    let mut config = c.admin_config(db);
    config.user(role);
    let (client, conn) = config.connect(NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Roles are cluster-wide and these tests apply every printed statement (memberships
/// included): one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn sqlstate_of(client: &Client, sql: &str) -> Option<String> {
    match client.simple_query(sql).await {
        Ok(_) => None,
        Err(e) => Some(e.code().map(|c| c.code().to_string()).unwrap_or_default()),
    }
}

const POLICY: &str = "\
version: 1
tables:
  public.people:
    ssn:
      type: text
      access: { gd_plain: plaintext, gd_cipher: ciphertext }
    '\"Card\"':
      type: text
      access: { gd_plain: plaintext, gd_cipher: ciphertext, PUBLIC: deny }
";

/// Replaces the fixture's protected values with real envelopes under its keyring and
/// policy (the adoption check samples them against the keyring), then re-collects
/// statistics so that the statistics findings have something to find.
async fn seal_rows(f: &Prepared) {
    let db = &f.db;
    let keys = std::fs::read_to_string(&f.keys_path).unwrap();
    let keyring = pgcloak::crypto::Keyring::parse(&keys, "master.keys").unwrap();
    let policy_text = std::fs::read_to_string(&f.policy_path).unwrap();
    let policy = pgcloak::policy::Policy::load_str(&policy_text, "policy.yaml", 1).unwrap();
    let suite = pgcloak::crypto::CipherSuite::new(&keyring, &policy).unwrap();
    let table = pgcloak::policy::TableName::new("public", "people");
    let ssn = policy.find(&table, "ssn").unwrap();
    let card = policy.find(&table, "Card").unwrap();
    let a = cluster().admin(db).await;
    let update = a
        .prepare(r#"UPDATE people SET ssn = $1, "Card" = $2 WHERE id = $3"#)
        .await
        .unwrap();
    for id in 1..=300i32 {
        let s = suite.encrypt(ssn, format!("ssn-{id}").as_bytes()).unwrap();
        let c = suite
            .encrypt(card, format!("card-{}", id * 7).as_bytes())
            .unwrap();
        a.execute(&update, &[&s, &c, &id]).await.unwrap();
    }
    a.batch_execute("ANALYZE people").await.unwrap();
}

/// A database looser than [`POLICY`] in every way `check` knows; pgcloak reads the catalog
/// as the superuser unless the caller picks another login.
fn looser_database(name: &str) -> ProtectedBuilder {
    ProtectedProxy::builder(name)
        .setup(
            r#"DO $$ BEGIN
                 CREATE ROLE gd_plain LOGIN; CREATE ROLE gd_cipher LOGIN; CREATE ROLE gd_null LOGIN;
                 CREATE ROLE gd_grp NOLOGIN; CREATE ROLE gd_member LOGIN IN ROLE gd_grp;
                 CREATE ROLE gd_col LOGIN; CREATE ROLE gd_nobody LOGIN;
               EXCEPTION WHEN duplicate_object THEN NULL; END $$;
               CREATE TABLE people (id int PRIMARY KEY, name text, ssn bytea, "Card" bytea);
               INSERT INTO people
                 SELECT g, 'n' || g, ('\x706301' || md5(g::text))::bytea,
                        ('\x706301' || md5((g * 7)::text))::bytea
                 FROM generate_series(1, 300) g;
               ANALYZE people;
               CREATE TABLE untouched (id int, x text);
               GRANT SELECT ON people TO gd_plain, gd_cipher, gd_null, gd_grp;
               GRANT SELECT (id, ssn) ON people TO gd_col;
               GRANT SELECT ON people TO PUBLIC;
               GRANT SELECT ON untouched TO PUBLIC;"#,
        )
        .policy(POLICY)
        .catalog_login(SUPERUSER, SUPERUSER_PASSWORD)
}

#[tokio::test]
async fn check_reports_each_looseness_and_the_printed_ddl_closes_it_in_postgres() {
    let _serial = SERIAL.lock().await;
    let f = looser_database("guard_all").prepare().await;
    let db = f.db.clone();
    seal_rows(&f).await;
    let (code, out) = f.check();
    assert_eq!(code, 1, "{out}");
    for expected in [
        // privileges: table-level grants become column grants without the closed columns
        "REVOKE SELECT ON \"public\".people FROM gd_null;",
        "GRANT SELECT (\"id\", \"name\") ON \"public\".people TO gd_null;",
        "REVOKE SELECT ON \"public\".people FROM gd_grp;",
        "REVOKE SELECT ON \"public\".people FROM PUBLIC;",
        "GRANT SELECT (\"id\", \"name\") ON \"public\".people TO PUBLIC;",
        // a column-level grant is revoked at column level
        "REVOKE SELECT (ssn) ON \"public\".people FROM gd_col;",
        // statistics
        "ALTER TABLE \"public\".people ALTER COLUMN ssn SET STATISTICS 0;",
        "ALTER TABLE \"public\".people ALTER COLUMN \"Card\" SET STATISTICS 0;",
        "DELETE FROM pg_catalog.pg_statistic WHERE starelid = '\"public\".people'::regclass",
        // built-ins
        "REVOKE EXECUTE ON FUNCTION pg_catalog.query_to_xml(text, boolean, boolean, text) FROM PUBLIC;",
        "REVOKE EXECUTE ON FUNCTION pg_catalog.table_to_xml(regclass, boolean, boolean, text) FROM PUBLIC;",
        // the envelope constraint, as before
        "ADD CONSTRAINT pgcloak_envelope_ssn",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // Roles whose view is open keep their grants; nothing about the untouched table.
    for not_expected in ["FROM gd_plain", "FROM gd_cipher", "untouched"] {
        assert!(!out.contains(not_expected), "{not_expected:?} in:\n{out}");
    }
    // The superuser is named (it can always read), as a note, not as DDL.
    assert!(out.contains("superuser(s)"), "{out}");

    // Before: a null role reads envelopes straight from PostgreSQL, and pg_stats has them.
    let null_role = as_role(&db, "gd_null").await;
    assert_eq!(
        sqlstate_of(&null_role, "SELECT ssn FROM people").await,
        None
    );
    let admin = cluster().admin(&db).await;
    let stats = |admin: Client| async move {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE tablename = 'people' \
                 AND attname IN ('ssn', 'Card') \
                 AND (histogram_bounds IS NOT NULL OR most_common_vals IS NOT NULL)",
                &[],
            )
            .await
            .unwrap();
        (admin, row.get::<_, i64>(0))
    };
    let (admin, before) = stats(admin).await;
    assert!(before > 0, "the test needs statistics to clear");

    for ddl in printed_ddl(&out) {
        admin
            .batch_execute(&ddl)
            .await
            .unwrap_or_else(|e| panic!("{ddl}: {e:?}"));
    }
    admin.batch_execute("ANALYZE people").await.unwrap();
    let (code, out) = f.check();
    assert_eq!(code, 0, "{out}");

    // PostgreSQL itself now refuses the closed columns, in several spellings.
    for (role, sql) in [
        ("gd_null", "SELECT ssn FROM people"),
        ("gd_null", "SELECT * FROM people"),
        ("gd_null", "SELECT count(DISTINCT ssn) FROM public.people"),
        ("gd_null", "SELECT p.\"Card\" FROM people p"),
        ("gd_null", "SELECT (p.*)::text FROM people p"),
        ("gd_member", "SELECT ssn FROM people"),
        ("gd_col", "SELECT ssn FROM people"),
        ("gd_nobody", "SELECT \"Card\" FROM people"),
        (
            "gd_nobody",
            "SELECT query_to_xml('select 1', true, false, '')",
        ),
        (
            "gd_nobody",
            "SELECT table_to_xml('people'::regclass, true, false, '')",
        ),
    ] {
        let client = as_role(&db, role).await;
        assert_eq!(
            sqlstate_of(&client, sql).await.as_deref(),
            Some("42501"),
            "{role}: {sql}"
        );
    }
    // What stays open still works.
    for (role, sql) in [
        ("gd_null", "SELECT id, name FROM people"),
        ("gd_nobody", "SELECT id, name FROM people"),
        ("gd_plain", "SELECT ssn, \"Card\" FROM people"),
        ("gd_cipher", "SELECT ssn FROM people"),
        ("gd_col", "SELECT id FROM people"),
        ("gd_nobody", "SELECT * FROM untouched"),
    ] {
        let client = as_role(&db, role).await;
        assert_eq!(sqlstate_of(&client, sql).await, None, "{role}: {sql}");
    }
    // pg_stats holds no envelope after SET STATISTICS 0 + clearing + ANALYZE.
    let (admin, after) = stats(admin).await;
    assert_eq!(after, 0);
    let row = admin
        .query_one(
            "SELECT has_function_privilege('public', \
             'pg_catalog.query_to_xml(text, boolean, boolean, text)', 'EXECUTE')",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
}

#[tokio::test]
async fn strict_refuses_to_serve_while_the_database_is_looser_and_serves_once_fixed() {
    let _serial = SERIAL.lock().await;
    let f = looser_database("guard_strict")
        .overrides(json!({ "strict": true }))
        .prepare()
        .await;
    seal_rows(&f).await;
    let log = match f.try_serve() {
        Ok(_) => panic!("strict pgcloak served a database looser than the policy"),
        Err(log) => log,
    };
    for named in ["strict", "gd_null", "statistics", "query_to_xml"] {
        assert!(log.contains(named), "{named:?} not named in:\n{log}");
    }
    let (code, out) = f.check();
    assert_eq!(code, 1, "{out}");
    let admin = cluster().admin(&f.db).await;
    for ddl in printed_ddl(&out) {
        admin.batch_execute(&ddl).await.unwrap();
    }
    let _proxy = f.start();
}

#[tokio::test]
async fn looseness_no_ddl_can_express_is_still_reported() {
    let _serial = SERIAL.lock().await;
    // Staff (unlisted) fall back to PUBLIC: ciphertext; the intern is listed as null but
    // inherits staff's SELECT; the reader reads everything through pg_read_all_data.
    let f = ProtectedProxy::builder("guard_member")
        .setup(
            "DO $$ BEGIN
               CREATE ROLE gm_staff NOLOGIN; CREATE ROLE gm_intern LOGIN IN ROLE gm_staff;
               CREATE ROLE gm_reader LOGIN IN ROLE pg_read_all_data;
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             GRANT pg_read_all_data TO gm_reader;
             CREATE TABLE people (id int, ssn bytea);
             GRANT SELECT ON people TO gm_staff;",
        )
        .policy(
            "version: 1\ntables:\n  public.people:\n    ssn:\n      type: text\n      \
             access: { gm_intern: \"null\", gm_reader: deny, PUBLIC: ciphertext }\n",
        )
        .catalog_login(SUPERUSER, SUPERUSER_PASSWORD)
        .prepare()
        .await;
    let (code, out) = f.check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "role gm_intern (view null) can SELECT \"public\".people.ssn through gm_staff"
        ),
        "{out}"
    );
    assert!(
        out.contains("REVOKE pg_read_all_data FROM gm_reader;"),
        "{out}"
    );
    assert!(!out.contains("FROM gm_staff"), "staff may read: {out}");
}

#[tokio::test]
async fn a_catalog_role_that_cannot_see_statistics_says_so_and_prints_the_statements() {
    let _serial = SERIAL.lock().await;
    let f = looser_database("guard_nonsuper")
        .catalog_login("gd_catalog", "gd-Catalog-pw1")
        .prepare()
        .await;
    seal_rows(&f).await;
    // PUBLIC (so the catalog role) may read the columns: pg_stats shows their statistics.
    let (code, out) = f.check();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("has stored statistics"), "{out}");
    assert!(!out.contains("cannot tell"), "{out}");
    // Without any privilege on them, it cannot tell: a note with the statements, no error.
    let admin = cluster().admin(&f.db).await;
    admin
        .batch_execute("REVOKE SELECT ON people FROM PUBLIC")
        .await
        .unwrap();
    let (code, out) = f.check();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot tell whether statistics are stored"),
        "{out}"
    );
    assert!(!out.contains("has stored statistics"), "{out}");
    assert!(
        out.contains("DELETE FROM pg_catalog.pg_statistic WHERE starelid = '\"public\".people'"),
        "{out}"
    );
    assert!(
        out.contains("REVOKE SELECT ON \"public\".people FROM gd_null;"),
        "{out}"
    );
}
