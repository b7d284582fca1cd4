//! The catalog against a real PostgreSQL: policy column resolution and its failures, views
//! over protected tables, partitions, search_path resolution, role usage (NOINHERIT),
//! envelope CHECK constraints, connection over TLS, and refresh on invalidate/reload/TTL.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{cluster, expect_sqlstate, fresh_db};
use pgcloak::catalog::{
    parse_search_path, CatalogCache, CatalogConfig, CatalogConn, CatalogError, ConstraintProblem,
    NameResolution, RelKind,
};
use pgcloak::config::{UpstreamConfig, UpstreamTlsMode};
use pgcloak::policy::{
    ColumnPolicy, ColumnRef, Encryption, LogicalType, Policy, RoleName, TableName, View,
};

fn column(schema: &str, table: &str, name: &str) -> ColumnPolicy {
    ColumnPolicy {
        table: TableName::new(schema, table),
        column: name.into(),
        id: format!("{schema}.{table}.{name}"),
        logical_type: LogicalType::Text,
        encryption: Encryption::Randomized,
        key_group: None,
        mask: None,
        access: BTreeMap::new(),
        public: View::Null,
        search: BTreeSet::new(),
    }
}

fn policy(generation: u64, columns: &[(&str, &str, &str)]) -> Policy {
    Policy::from_columns(
        generation,
        columns.iter().map(|(s, t, c)| column(s, t, c)).collect(),
    )
}

/// The cluster's unix socket, logging in as the superuser (trust).
fn socket_upstream() -> UpstreamConfig {
    let c = cluster();
    UpstreamConfig {
        host: c.socket_dir.display().to_string(),
        port: c.port,
        tls: UpstreamTlsMode::Disable,
        ca_file: None,
        server_name: None,
        connect_timeout_ms: 5000,
    }
}

fn superuser_catalog() -> CatalogConfig {
    CatalogConfig {
        user: common::SUPERUSER.into(),
        ..CatalogConfig::default()
    }
}

async fn catalog_conn(db: &str) -> CatalogConn {
    CatalogConn::connect(&socket_upstream(), &superuser_catalog(), None, db)
        .await
        .unwrap()
}

async fn oid_of(db: &str, relation: &str) -> u32 {
    let admin = cluster().admin(db).await;
    admin
        .query_one("SELECT $1::text::regclass::oid", &[&relation])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn policy_column_resolves_to_table_oid_and_attnum_both_ways() {
    let db = fresh_db("cat_resolve_ok").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, phone bytea, note text);
             ALTER TABLE customers DROP COLUMN name;
             CREATE SCHEMA \"Sales\"; CREATE TABLE \"Sales\".\"Orders\" (\"Card\" bytea);",
        )
        .await
        .unwrap();
    let p = policy(
        1,
        &[
            ("public", "customers", "phone"),
            ("Sales", "Orders", "Card"),
        ],
    );
    let conn = catalog_conn(&db).await;
    let snap = conn.resolve(&p).await.unwrap();
    let customers = oid_of(&db, "public.customers").await;
    let orders = oid_of(&db, "\"Sales\".\"Orders\"").await;

    let phone = snap.location(ColumnRef(0)).unwrap();
    assert_eq!((phone.table_oid, phone.attnum), (customers, 3));
    assert_eq!(snap.column_at(customers, 3), Some(ColumnRef(0)));
    assert_eq!(snap.column_at(customers, 1), None);
    let card = snap.location(ColumnRef(1)).unwrap();
    assert_eq!((card.table_oid, card.attnum), (orders, 1));
    assert_eq!(snap.column_at(orders, 1), Some(ColumnRef(1)));
    assert!(snap.problems().is_empty());

    // The table's live columns, in order, without the dropped one (what `*` expands to).
    let t = snap.table(customers).unwrap();
    let names: Vec<&str> = t.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["id", "phone", "note"]);
    assert_eq!(t.kind, RelKind::Table);
    assert!(snap.is_sensitive_relation(customers));
}

#[tokio::test]
async fn unresolvable_policy_columns_are_each_reported_with_reason_and_sqlstate() {
    let db = fresh_db("cat_resolve_bad").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, phone text, ssn bytea);
             CREATE VIEW customers_v AS SELECT * FROM customers;",
        )
        .await
        .unwrap();
    let p = policy(
        7,
        &[
            ("public", "missing_table", "x"),
            ("public", "customers", "no_such_column"),
            ("public", "customers", "phone"),
            ("public", "customers_v", "ssn"),
            ("public", "customers", "ssn"),
        ],
    );
    let conn = catalog_conn(&db).await;
    let errors = conn.resolve(&p).await.unwrap_err();
    assert_eq!(errors.len(), 4, "{errors:#?}");

    match &errors[0] {
        CatalogError::TableMissing { column, table, .. } => {
            assert_eq!(column, "public.missing_table.x");
            assert_eq!(table, "public.missing_table");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(errors[0].sqlstate(), "42P01");
    assert!(errors[0]
        .to_string()
        .contains("does not exist in database \"cat_resolve_bad\""));

    assert!(
        matches!(&errors[1], CatalogError::ColumnMissing { name, .. } if name == "no_such_column")
    );
    assert_eq!(errors[1].sqlstate(), "42703");
    assert!(errors[1]
        .to_string()
        .contains("public.customers.no_such_column"));

    match &errors[2] {
        CatalogError::NotBytea { column, actual, .. } => {
            assert_eq!(column, "public.customers.phone");
            assert_eq!(actual, "text");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(errors[2].sqlstate(), "42804");
    assert!(errors[2].to_string().contains("bytea"));

    assert!(matches!(
        &errors[3],
        CatalogError::NotATable { kind: "view", .. }
    ));
    assert_eq!(errors[3].column(), Some("public.customers_v.ssn"));

    // The snapshot itself keeps the good column and refuses the bad ones by ColumnRef.
    let snap = conn.load_snapshot(&p).await.unwrap();
    assert_eq!(snap.policy_generation(), 7);
    assert!(snap.location(ColumnRef(4)).is_ok());
    assert_eq!(snap.location(ColumnRef(2)).unwrap_err().sqlstate(), "42804");
    assert_eq!(snap.location(ColumnRef(0)).unwrap_err().sqlstate(), "42P01");
    assert!(snap.location(ColumnRef(99)).is_err());
}

#[tokio::test]
async fn views_over_protected_tables_are_listed_transitively_with_definitions() {
    let db = fresh_db("cat_views").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, phone bytea);
             CREATE TABLE other (id int, x text);
             CREATE SCHEMA rpt;
             CREATE VIEW v1 AS SELECT id, phone AS tel FROM customers;
             CREATE VIEW rpt.v2 AS SELECT v1.tel, o.x FROM v1 JOIN other o USING (id);
             CREATE MATERIALIZED VIEW rpt.m3 AS SELECT tel FROM rpt.v2;
             CREATE VIEW unrelated AS SELECT x FROM other;
             CREATE VIEW only_id AS SELECT id FROM customers;",
        )
        .await
        .unwrap();
    let p = policy(1, &[("public", "customers", "phone")]);
    let snap = catalog_conn(&db).await.resolve(&p).await.unwrap();
    let mut names: Vec<String> = snap.views().iter().map(|v| v.name.to_string()).collect();
    names.sort();
    // A view reading the table counts even without the protected column: `SELECT *` and
    // later ALTERs are the analyser's business, not a reason to forget the view.
    assert_eq!(names, ["public.only_id", "public.v1", "rpt.m3", "rpt.v2"]);

    let customers = oid_of(&db, "customers").await;
    let v1_oid = oid_of(&db, "v1").await;
    let v1 = snap.view(v1_oid).unwrap();
    assert_eq!(v1.kind, RelKind::View);
    assert_eq!(v1.reads, vec![customers]);
    let cols: Vec<&str> = v1.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(cols, ["id", "tel"]);
    // The catalog connection's search_path is pg_catalog alone, so every user relation in
    // a definition comes out schema-qualified: no search_path ambiguity for the analyser.
    assert!(
        v1.definition.contains("customers.phone AS tel"),
        "{}",
        v1.definition
    );
    assert!(
        v1.definition.contains("FROM public.customers"),
        "{}",
        v1.definition
    );

    let v2 = snap.view_by_name(&TableName::new("rpt", "v2")).unwrap();
    assert_eq!(
        v2.reads,
        vec![v1_oid],
        "only protected relations and listed views"
    );
    assert!(
        v2.definition.contains("FROM public.v1"),
        "{}",
        v2.definition
    );
    let m3 = snap.view_by_name(&TableName::new("rpt", "m3")).unwrap();
    assert_eq!(m3.kind, RelKind::MaterializedView);
    assert!(snap.is_sensitive_relation(m3.oid));
    assert!(!snap.is_sensitive_relation(oid_of(&db, "unrelated").await));
}

#[tokio::test]
async fn partitions_of_a_protected_table_map_to_the_same_policy_column() {
    let db = fresh_db("cat_partitions").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            "CREATE TABLE events (region text, secret bytea) PARTITION BY LIST (region);
             CREATE TABLE events_eu (extra int, region text, secret bytea);
             ALTER TABLE events_eu DROP COLUMN extra;
             ALTER TABLE events ATTACH PARTITION events_eu FOR VALUES IN ('eu');",
        )
        .await
        .unwrap();
    let p = policy(1, &[("public", "events", "secret")]);
    let snap = catalog_conn(&db).await.resolve(&p).await.unwrap();
    let parent = oid_of(&db, "events").await;
    let part = oid_of(&db, "events_eu").await;
    assert_eq!(snap.location(ColumnRef(0)).unwrap().table_oid, parent);
    assert_eq!(snap.table(parent).unwrap().kind, RelKind::PartitionedTable);
    // The partition's attnum differs (a dropped column precedes it): matched by name.
    assert_eq!(snap.column_at(part, 3), Some(ColumnRef(0)));
    assert_eq!(snap.table(part).unwrap().root, Some(parent));
}

#[tokio::test]
async fn unqualified_names_resolve_through_search_path_like_postgres() {
    let db = fresh_db("cat_search_path").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            "CREATE SCHEMA a; CREATE SCHEMA b; CREATE SCHEMA carol;
             CREATE TABLE a.t (secret bytea);
             CREATE TABLE b.t (secret text);
             CREATE TABLE carol.t (secret text);",
        )
        .await
        .unwrap();
    let p = policy(1, &[("a", "t", "secret")]);
    let snap = catalog_conn(&db).await.resolve(&p).await.unwrap();
    let a_t = oid_of(&db, "a.t").await;
    let b_t = oid_of(&db, "b.t").await;

    for (path, expected) in [("a, b", a_t), ("b, a", b_t), ("nope, a", a_t)] {
        let sp = parse_search_path(path).unwrap();
        match snap.resolve_unqualified("t", &sp, "bob") {
            NameResolution::Found(r) => assert_eq!(r.oid, expected, "{path}"),
            other => panic!("{path}: {other:?}"),
        }
        // Cross-check with PostgreSQL itself.
        admin
            .batch_execute(&format!("SET search_path = {path}"))
            .await
            .unwrap();
        let pg: u32 = admin
            .query_one("SELECT 't'::regclass::oid", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(pg, expected, "PostgreSQL disagrees for {path}");
    }
    assert!(snap.is_sensitive_relation(a_t));
    assert!(!snap.is_sensitive_relation(b_t));

    // "$user" is the schema named like the current user, if it exists.
    let sp = parse_search_path("\"$user\", a").unwrap();
    match snap.resolve_unqualified("t", &sp, "carol") {
        NameResolution::Found(r) => assert_eq!(r.schema, "carol"),
        other => panic!("{other:?}"),
    }
    match snap.resolve_unqualified("t", &sp, "dave") {
        NameResolution::Found(r) => assert_eq!(r.oid, a_t),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        snap.resolve_unqualified("t", &parse_search_path("public").unwrap(), "bob"),
        NameResolution::NotFound
    );
    assert_eq!(
        snap.resolve_unqualified("unrelated", &sp, "bob"),
        NameResolution::Untracked
    );
}

#[tokio::test]
async fn a_temporary_table_shadowing_a_protected_name_is_reported_as_uncertain() {
    let db = fresh_db("cat_temp").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute("CREATE TABLE t (secret bytea); CREATE TEMP TABLE t (secret text);")
        .await
        .unwrap();
    let p = policy(1, &[("public", "t", "secret")]);
    let snap = catalog_conn(&db).await.resolve(&p).await.unwrap();
    let sp = parse_search_path("public").unwrap();
    match snap.resolve_unqualified("t", &sp, "postgres") {
        NameResolution::MaybeTemporary {
            temporary,
            otherwise,
        } => {
            assert_eq!(temporary.len(), 1);
            assert!(temporary[0].schema.starts_with("pg_temp_"));
            assert_eq!(otherwise.map(|r| r.schema.as_str()), Some("public"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn session_roles_follow_usage_and_respect_noinherit() {
    let db = fresh_db("cat_roles").await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS cat_alice, cat_bob, cat_admin, cat_support, cat_leads, cat_other;
             CREATE ROLE cat_support NOLOGIN;
             CREATE ROLE cat_leads NOLOGIN IN ROLE cat_support;
             CREATE ROLE cat_other NOLOGIN;
             CREATE ROLE cat_alice LOGIN IN ROLE cat_leads;
             CREATE ROLE cat_bob LOGIN NOINHERIT IN ROLE cat_leads;
             CREATE ROLE cat_admin LOGIN SUPERUSER;
             GRANT cat_leads TO cat_admin;",
        )
        .await
        .unwrap();
    let conn = catalog_conn(&db).await;
    let names = |v: Vec<RoleName>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();

    // Through a group role, transitively.
    let alice = names(
        conn.session_roles(&RoleName("cat_alice".into()))
            .await
            .unwrap(),
    );
    assert_eq!(alice, ["cat_alice", "cat_leads", "cat_support"]);
    // NOINHERIT: bob could SET ROLE cat_leads, but has none of its privileges by default.
    let bob = names(
        conn.session_roles(&RoleName("cat_bob".into()))
            .await
            .unwrap(),
    );
    assert_eq!(bob, ["cat_bob"]);
    // A superuser gets what it is granted, not every role.
    let su = names(
        conn.session_roles(&RoleName("cat_admin".into()))
            .await
            .unwrap(),
    );
    assert!(su.contains(&"cat_leads".to_string()) && su.contains(&"cat_support".to_string()));
    assert!(!su.contains(&"cat_other".to_string()), "{su:?}");
    assert_eq!(su[0], "cat_admin");

    // Cross-check the non-superusers against PostgreSQL's own pg_has_role.
    for (login, got) in [("cat_alice", &alice), ("cat_bob", &bob)] {
        let rows = admin
            .query(
                "SELECT rolname::text FROM pg_roles WHERE pg_has_role($1::text::name, oid, 'USAGE') ORDER BY 1",
                &[&login],
            )
            .await
            .unwrap();
        let mut pg: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        pg.retain(|r| r != login);
        let mut ours: Vec<String> = got.iter().filter(|r| *r != login).cloned().collect();
        ours.sort();
        assert_eq!(ours, pg, "{login}");
    }

    let err = conn
        .session_roles(&RoleName("cat_nobody".into()))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::UnknownRole("cat_nobody".into()));
}

#[tokio::test]
async fn missing_envelope_constraints_are_detected_and_the_printed_ddl_fixes_them() {
    let db = fresh_db("cat_constraints").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            "CREATE SCHEMA \"Crm\";
             CREATE TABLE \"Crm\".\"Customers\" (id int, \"Phone No\" bytea, email bytea, ssn bytea);
             ALTER TABLE \"Crm\".\"Customers\" ADD CONSTRAINT some_other CHECK (length(email) > 0);
             ALTER TABLE \"Crm\".\"Customers\" ADD CONSTRAINT pgcloak_envelope_ssn CHECK (ssn IS NULL OR length(ssn) > 2);",
        )
        .await
        .unwrap();
    let p = policy(
        1,
        &[
            ("Crm", "Customers", "Phone No"),
            ("Crm", "Customers", "email"),
            ("Crm", "Customers", "ssn"),
            ("Crm", "absent_table", "x"),
        ],
    );
    let conn = catalog_conn(&db).await;
    let missing = conn.check_constraints(&p).await.unwrap();
    assert_eq!(missing.len(), 3, "{missing:#?}");
    assert_eq!(missing[0].column, ColumnRef(0));
    assert_eq!(missing[0].problem, ConstraintProblem::Absent);
    assert_eq!(
        missing[0].ddl(),
        "ALTER TABLE \"Crm\".\"Customers\" ADD CONSTRAINT \"pgcloak_envelope_Phone No\" CHECK \
         (\"Phone No\" IS NULL OR substring(\"Phone No\" from 1 for 3) = E'\\\\x706301'::bytea);"
    );
    assert_eq!(missing[1].problem, ConstraintProblem::Absent);
    assert_eq!(
        missing[2].problem,
        ConstraintProblem::Different {
            name: "pgcloak_envelope_ssn".into()
        }
    );

    // A plaintext write still succeeds directly in PostgreSQL before the fix.
    admin
        .execute(
            "INSERT INTO \"Crm\".\"Customers\" (\"Phone No\") VALUES ('555-0100-plain')",
            &[],
        )
        .await
        .unwrap();
    admin
        .batch_execute("DELETE FROM \"Crm\".\"Customers\"")
        .await
        .unwrap();

    for m in &missing {
        admin.batch_execute(&m.ddl()).await.unwrap();
    }
    assert!(conn.check_constraints(&p).await.unwrap().is_empty());

    // Now PostgreSQL itself refuses plaintext, and admits NULL and envelope-shaped bytes.
    for col in ["\"Phone No\"", "email", "ssn"] {
        let plain = admin
            .execute(
                &format!("INSERT INTO \"Crm\".\"Customers\" ({col}) VALUES ('555-0100-plain')"),
                &[],
            )
            .await;
        assert_eq!(expect_sqlstate(plain), "23514", "{col}");
    }
    admin
        .execute(
            "INSERT INTO \"Crm\".\"Customers\" (\"Phone No\", email, ssn) VALUES ($1, NULL, $1)",
            &[&b"pc\x01\x01rest-of-envelope".to_vec()],
        )
        .await
        .unwrap();
    let wrong_version = admin
        .execute(
            "INSERT INTO \"Crm\".\"Customers\" (email) VALUES ($1)",
            &[&b"pc\x02\x01rest".to_vec()],
        )
        .await;
    assert_eq!(expect_sqlstate(wrong_version), "23514");

    // A NOT VALID check is reported, and the printed VALIDATE completes it.
    admin
        .batch_execute(
            "ALTER TABLE \"Crm\".\"Customers\" DROP CONSTRAINT pgcloak_envelope_email;
             ALTER TABLE \"Crm\".\"Customers\" ADD CONSTRAINT pgcloak_envelope_email
               CHECK (email IS NULL OR substring(email from 1 for 3) = E'\\\\x706301'::bytea) NOT VALID;",
        )
        .await
        .unwrap();
    let missing = conn.check_constraints(&p).await.unwrap();
    assert_eq!(missing.len(), 1);
    assert!(
        matches!(missing[0].problem, ConstraintProblem::NotValidated { .. }),
        "{missing:#?}"
    );
    admin.batch_execute(&missing[0].ddl()).await.unwrap();
    assert!(conn.check_constraints(&p).await.unwrap().is_empty());
}

#[tokio::test]
async fn catalog_connects_over_tcp_with_tls_and_a_password_from_the_environment() {
    let db = fresh_db("cat_tls").await;
    cluster()
        .create_role("cat_reader", Some("cat-Reader-pw1"))
        .await;
    let c = cluster();
    let config = CatalogConfig {
        user: "cat_reader".into(),
        password_env: Some("CAT_TEST_PW".into()),
        ..CatalogConfig::default()
    };
    let password = config
        .resolve_password(|k| (k == "CAT_TEST_PW").then(|| "cat-Reader-pw1".to_string()))
        .unwrap();
    let mut upstream = UpstreamConfig {
        host: "127.0.0.1".into(),
        port: c.port,
        tls: UpstreamTlsMode::VerifyFull,
        ca_file: Some(c.tls.ca_cert.clone()),
        server_name: Some("localhost".into()),
        connect_timeout_ms: 5000,
    };
    let conn = CatalogConn::connect(&upstream, &config, password.as_deref(), &db)
        .await
        .unwrap();
    let roles = conn
        .session_roles(&RoleName("cat_reader".into()))
        .await
        .unwrap();
    assert_eq!(roles[0].0, "cat_reader");
    // An unprivileged login reads the schema (catalogs are world-readable), not the data.
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute("CREATE TABLE secret_t (a bytea); REVOKE ALL ON secret_t FROM PUBLIC;")
        .await
        .unwrap();
    let snap = conn
        .resolve(&policy(1, &[("public", "secret_t", "a")]))
        .await
        .unwrap();
    assert_eq!(snap.location(ColumnRef(0)).unwrap().attnum, 1);
    let ssl: bool = conn_ssl(&db, "cat_reader").await;
    assert!(ssl, "the catalog connection must use TLS under verify-full");

    // A CA that did not sign the server's certificate is refused.
    upstream.ca_file = Some(c.tls.other_ca_cert.clone());
    let err = CatalogConn::connect(&upstream, &config, password.as_deref(), &db)
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Connect { .. }), "{err:?}");
    assert_eq!(err.sqlstate(), "58000");

    // A wrong password is a connection error that does not echo the password.
    upstream.tls = UpstreamTlsMode::Require;
    upstream.ca_file = None;
    let err = CatalogConn::connect(&upstream, &config, Some("not-the-pw-xyz"), &db)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("not-the-pw-xyz"), "{err}");
    assert!(err.to_string().contains("28P01"), "{err}");

    // An unset password variable is refused before any connection is tried.
    let cache = CatalogCache::with_env(upstream, config, Arc::new(Policy::empty(1)), |_| None);
    assert!(cache.unwrap_err().to_string().contains("CAT_TEST_PW"));
}

/// Whether some backend of `user` in `db` is using SSL right now.
async fn conn_ssl(db: &str, user: &str) -> bool {
    let admin = cluster().admin("postgres").await;
    admin
        .query_one(
            "SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = $1 AND a.datname = $2",
            &[&user, &db],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn cache_sees_new_column_after_invalidate_reload_and_ttl() {
    let db = fresh_db("cat_refresh").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute("CREATE TABLE t (id int, a bytea)")
        .await
        .unwrap();
    let config = CatalogConfig {
        refresh_secs: 2,
        databases: vec![db.clone()],
        ..superuser_catalog()
    };
    let p1 = Arc::new(policy(1, &[("public", "t", "a"), ("public", "t", "b")]));
    let cache = CatalogCache::new(socket_upstream(), config, p1).unwrap();

    let errs = cache.resolve_configured().await.unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].column(), Some("public.t.b"));
    let first = cache.snapshot(&db).await.unwrap();
    assert!(first.location(ColumnRef(1)).is_err());

    admin
        .batch_execute("ALTER TABLE t ADD COLUMN b bytea")
        .await
        .unwrap();
    // Within the TTL and without invalidation the cached snapshot is served as is.
    let cached = cache.snapshot(&db).await.unwrap();
    assert!(Arc::ptr_eq(&first, &cached));

    cache.invalidate(&db);
    let fresh = cache.snapshot(&db).await.unwrap();
    let b = fresh.location(ColumnRef(1)).unwrap();
    assert_eq!(b.attnum, 3);
    cache.resolve_configured().await.unwrap();

    // A policy reload re-resolves under the new generation.
    admin
        .batch_execute("ALTER TABLE t ADD COLUMN c bytea")
        .await
        .unwrap();
    cache.reload(Arc::new(policy(2, &[("public", "t", "c")])));
    let reloaded = cache.snapshot(&db).await.unwrap();
    assert_eq!(reloaded.policy_generation(), 2);
    assert_eq!(reloaded.location(ColumnRef(0)).unwrap().attnum, 4);

    // The TTL alone also refreshes (DDL run directly against the database).
    admin
        .batch_execute("ALTER TABLE t DROP COLUMN c")
        .await
        .unwrap();
    let still = cache.snapshot(&db).await.unwrap();
    assert!(still.location(ColumnRef(0)).is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = cache.snapshot(&db).await.unwrap();
    assert_eq!(
        expired.location(ColumnRef(0)).unwrap_err().sqlstate(),
        "42703"
    );
}

#[tokio::test]
async fn cached_roles_refresh_after_invalidate_roles() {
    let db = fresh_db("cat_role_cache").await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS cat_carl, cat_grp;
             CREATE ROLE cat_grp NOLOGIN; CREATE ROLE cat_carl LOGIN;",
        )
        .await
        .unwrap();
    // A policy that protects a column: with none (`tables: {}`), no role matters and the
    // cache reads no memberships at all (see the next test).
    let cache = CatalogCache::new(
        socket_upstream(),
        superuser_catalog(),
        Arc::new(policy(1, &[("public", "t", "a")])),
    )
    .unwrap();
    let carl = RoleName("cat_carl".into());
    assert_eq!(cache.session_roles(&db, &carl).await.unwrap().len(), 1);
    admin
        .batch_execute("GRANT cat_grp TO cat_carl")
        .await
        .unwrap();
    assert_eq!(
        cache.session_roles(&db, &carl).await.unwrap().len(),
        1,
        "cached"
    );
    cache.invalidate_roles();
    let roles = cache.session_roles(&db, &carl).await.unwrap();
    assert_eq!(roles.len(), 2);
    assert_eq!(roles[1].0, "cat_grp");
}

/// With a policy that protects nothing, the cache answers without a catalog login:
/// here the catalog role does not exist, and nothing fails.
#[tokio::test]
async fn an_empty_policy_reads_nothing_from_the_catalog() {
    let db = fresh_db("cat_empty").await;
    let nobody = CatalogConfig {
        user: "cat_no_such_role".into(),
        ..CatalogConfig::default()
    };
    let cache = CatalogCache::new(socket_upstream(), nobody, Arc::new(Policy::empty(1))).unwrap();
    let login = RoleName("anyone".into());
    assert_eq!(cache.session_roles(&db, &login).await.unwrap().len(), 1);
    assert!(cache.snapshot(&db).await.unwrap().tables().is_empty());
    cache.session_reach(&db, &login).await.unwrap();
    assert!(cache.check_constraints(&db).await.unwrap().is_empty());
    assert!(cache.guard_check(&db).await.unwrap().findings.is_empty());
    assert!(!cache.has_open_connection(&db).await);
    assert!(!cache.protects_anything());
}

#[tokio::test]
async fn a_lost_catalog_connection_is_reopened_transparently() {
    let db = fresh_db("cat_reconnect").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute("CREATE TABLE t (a bytea)")
        .await
        .unwrap();
    let cache = CatalogCache::new(
        socket_upstream(),
        superuser_catalog(),
        Arc::new(policy(1, &[("public", "t", "a")])),
    )
    .unwrap();
    cache.snapshot(&db).await.unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'pgcloak-catalog' AND datname = $1",
            &[&db],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    cache.invalidate(&db);
    let snap = cache.snapshot(&db).await.unwrap();
    assert!(snap.location(ColumnRef(0)).is_ok());
    let roles = cache
        .session_roles(&db, &RoleName(common::SUPERUSER.into()))
        .await
        .unwrap();
    assert_eq!(roles[0].0, common::SUPERUSER);
}

#[tokio::test]
async fn concurrent_callers_after_invalidate_share_one_load_and_hits_are_cheap() {
    let db = fresh_db("cat_concurrent").await;
    let admin = cluster().admin(&db).await;
    // 10 tables x 3 protected columns, a view over each, a view over all of them.
    let mut ddl = String::new();
    let mut cols = Vec::new();
    for i in 0..10 {
        ddl.push_str(&format!(
            "CREATE TABLE t{i} (id int, a bytea, b bytea, c bytea, d text);
             CREATE VIEW v{i} AS SELECT id, a, b FROM t{i};"
        ));
        for c in ["a", "b", "c"] {
            cols.push(("public".to_string(), format!("t{i}"), c.to_string()));
        }
    }
    ddl.push_str("CREATE VIEW vall AS SELECT * FROM v0 UNION ALL SELECT * FROM v1;");
    admin.batch_execute(&ddl).await.unwrap();
    let refs: Vec<(&str, &str, &str)> = cols
        .iter()
        .map(|(s, t, c)| (s.as_str(), t.as_str(), c.as_str()))
        .collect();
    let cache = Arc::new(
        CatalogCache::new(
            socket_upstream(),
            superuser_catalog(),
            Arc::new(policy(1, &refs)),
        )
        .unwrap(),
    );

    let started = std::time::Instant::now();
    let cold = cache.snapshot(&db).await.unwrap();
    let cold_load = started.elapsed();
    assert_eq!(cold.views().len(), 11);
    assert!(cold.problems().is_empty());

    cache.invalidate(&db);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let cache = cache.clone();
            let db = db.clone();
            tokio::spawn(async move { cache.snapshot(&db).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    assert!(
        got.iter().all(|s| Arc::ptr_eq(s, &got[0])),
        "one load served everyone"
    );
    assert!(!Arc::ptr_eq(&got[0], &cold), "invalidate forced a new load");

    let n = 100_000u32;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let s = cache.snapshot(&db).await.unwrap();
        std::hint::black_box(s);
    }
    let per_hit = started.elapsed() / n;
    eprintln!("catalog: cold snapshot load (30 columns, 10 tables, 11 views) {cold_load:?}; cache hit {per_hit:?}");
    assert!(
        per_hit < Duration::from_micros(50),
        "cache hit took {per_hit:?}"
    );
}

#[tokio::test]
async fn a_server_that_accepts_and_stays_silent_is_an_error_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // never answers
        }
    });
    let upstream = UpstreamConfig {
        host: "127.0.0.1".into(),
        port,
        tls: UpstreamTlsMode::Disable,
        ca_file: None,
        server_name: None,
        connect_timeout_ms: 300,
    };
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        CatalogConn::connect(&upstream, &superuser_catalog(), None, "postgres"),
    )
    .await
    .expect("connect must give up on its own");
    let err = result.unwrap_err();
    assert!(matches!(err, CatalogError::Connect { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    holder.abort();
}

// ---- reachability: what can reach a protected column, computed from the catalog ----

fn reach_of(snap: &pgcloak::catalog::SchemaSnapshot, schema: &str, name: &str) -> Option<String> {
    snap.reach()
        .relation(schema, name)
        .map(|r| format!("{r:?}"))
}

#[tokio::test]
async fn every_kind_of_reach_is_found_in_several_spellings_and_unrelated_objects_are_not() {
    let db = fresh_db("cat_reach").await;
    let admin = cluster().admin(&db).await;
    admin
        .batch_execute(
            r#"CREATE SCHEMA "Sales";
             CREATE TABLE "Sales"."Clients" (id int, "Phone" bytea, note text);
             CREATE TABLE other (id int, x text);
             -- views over views, quoted names
             CREATE VIEW "Sales"."V_One" AS SELECT id, "Phone" FROM "Sales"."Clients";
             CREATE VIEW v_two AS SELECT id FROM "Sales"."V_One";
             CREATE MATERIALIZED VIEW m_three AS SELECT id FROM v_two;
             -- a SQL function reading the table, a view calling it
             CREATE FUNCTION read_clients() RETURNS SETOF bytea LANGUAGE sql
               AS $$ SELECT NULL::bytea $$;
             CREATE FUNCTION read_clients2() RETURNS SETOF bytea LANGUAGE sql
               AS $$ SELECT "Phone" FROM "Sales"."Clients" $$;
             CREATE VIEW v_fn AS SELECT x FROM read_clients2() AS x;
             CREATE VIEW v_over_v_fn AS SELECT * FROM v_fn;
             -- SQL-standard body
             CREATE FUNCTION std_body() RETURNS bigint LANGUAGE sql
               BEGIN ATOMIC SELECT count(*) FROM "Sales"."Clients"; END;
             -- function calling function, plpgsql
             CREATE FUNCTION calls_it() RETURNS bigint LANGUAGE plpgsql
               AS $$ BEGIN RETURN (SELECT count(*) FROM READ_CLIENTS2()); END $$;
             CREATE FUNCTION calls_calls_it() RETURNS bigint LANGUAGE sql
               AS $$ SELECT calls_it() $$;
             -- dynamic SQL
             CREATE FUNCTION dyn(q text) RETURNS void LANGUAGE plpgsql
               AS $$ BEGIN Execute q; END $$;
             -- a SQL-executing built-in
             CREATE FUNCTION xmlit() RETURNS xml LANGUAGE sql
               AS $$ SELECT query_to_xml('select 1', true, false, '') $$;
             CREATE VIEW v_xml AS SELECT query_to_xml('select 1', true, false, '') AS x;
             -- unrelated
             CREATE FUNCTION innocent(a int) RETURNS int LANGUAGE sql AS $$ SELECT a + 1 $$;
             CREATE FUNCTION innocent_pl() RETURNS bigint LANGUAGE plpgsql
               AS $$ BEGIN RETURN (SELECT count(*) FROM other); END $$;
             CREATE VIEW v_unrelated AS SELECT x, innocent(id) FROM other;
             -- partitions and inheritance
             CREATE TABLE ev (region text, secret bytea) PARTITION BY LIST (region);
             CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu')
               PARTITION BY LIST (region);
             CREATE TABLE ev_eu_1 PARTITION OF ev_eu FOR VALUES IN ('eu');
             CREATE TABLE base (id int);
             CREATE TABLE kid (secret bytea) INHERITS (base);
             CREATE TABLE unrelated_parent (id int);
             -- a trigger, a rule, a policy, a default
             CREATE FUNCTION copy_in() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN INSERT INTO "Sales"."Clients"(id) VALUES (NEW.id); RETURN NEW; END $$;
             CREATE TABLE trig_t (id int);
             CREATE TRIGGER t1 AFTER INSERT ON trig_t FOR EACH ROW EXECUTE FUNCTION copy_in();
             CREATE TABLE rule_t (id int);
             CREATE RULE r1 AS ON INSERT TO rule_t DO ALSO
               INSERT INTO "Sales"."Clients"(id) VALUES (NEW.id);
             CREATE TABLE pol_t (id int);
             ALTER TABLE pol_t ENABLE ROW LEVEL SECURITY;
             CREATE POLICY p1 ON pol_t USING (EXISTS (SELECT 1 FROM "Sales"."Clients" c
                                                     WHERE c.id = pol_t.id));
             CREATE TABLE def_t (id int, n bigint DEFAULT calls_calls_it());
             CREATE TABLE chk_t (id int CHECK (id < std_body()));
             CREATE TABLE plain_trig (id int);
             CREATE FUNCTION harmless() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN NEW.id := NEW.id + 1; RETURN NEW; END $$;
             CREATE TRIGGER t2 BEFORE INSERT ON plain_trig FOR EACH ROW EXECUTE FUNCTION harmless();
            "#,
        )
        .await
        .unwrap();
    let p = policy(
        1,
        &[
            ("Sales", "Clients", "Phone"),
            ("public", "ev", "secret"),
            ("public", "kid", "secret"),
        ],
    );
    let snap = catalog_conn(&db).await.resolve(&p).await.unwrap();
    let expect = [
        ("Sales", "Clients", "Protected"),
        ("public", "ev", "Protected"),
        ("public", "ev_eu", "Protected"),
        ("public", "ev_eu_1", "Protected"),
        ("public", "kid", "Protected"),
        ("public", "base", "Ancestor"),
        ("Sales", "V_One", "View"),
        ("public", "v_two", "View"),
        ("public", "m_three", "View"),
        ("public", "v_fn", "View"),
        ("public", "v_over_v_fn", "View"),
        ("public", "v_xml", "View"),
        ("public", "trig_t", "Indirect"),
        ("public", "rule_t", "Indirect"),
        ("public", "pol_t", "Indirect"),
        ("public", "def_t", "Indirect"),
        ("public", "chk_t", "Indirect"),
    ];
    for (s, n, kind) in expect {
        assert_eq!(reach_of(&snap, s, n).as_deref(), Some(kind), "{s}.{n}");
    }
    for n in ["other", "v_unrelated", "unrelated_parent", "plain_trig"] {
        assert_eq!(reach_of(&snap, "public", n), None, "{n}");
    }
    let reach = snap.reach();
    for f in [
        "read_clients2",
        "std_body",
        "calls_it",
        "calls_calls_it",
        "dyn",
        "xmlit",
        "copy_in",
    ] {
        assert!(reach.function(Some("public"), f), "{f}");
    }
    assert!(reach.function(None, "query_to_xml"));
    for f in ["innocent", "innocent_pl", "harmless", "read_clients"] {
        assert!(!reach.function(None, f), "{f}");
    }
    // search_path resolution knows every reaching relation's name.
    for n in ["base", "v_fn", "trig_t", "V_One"] {
        assert!(!snap.relations_named(n).is_empty(), "{n}");
    }
}

#[tokio::test]
async fn session_reach_follows_grants_groups_membership_ownership_and_superuser() {
    let db = fresh_db("cat_sreach").await;
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS sr_none, sr_col, sr_grp, sr_member, sr_noinh, sr_owner, sr_su,
                                 sr_view, sr_definer, sr_invoker, sr_other_col;
             CREATE ROLE sr_none LOGIN; CREATE ROLE sr_col LOGIN; CREATE ROLE sr_grp NOLOGIN;
             CREATE ROLE sr_member LOGIN IN ROLE sr_grp;
             CREATE ROLE sr_noinh LOGIN NOINHERIT IN ROLE sr_grp;
             CREATE ROLE sr_owner LOGIN; CREATE ROLE sr_su LOGIN SUPERUSER;
             CREATE ROLE sr_view LOGIN; CREATE ROLE sr_definer LOGIN; CREATE ROLE sr_invoker LOGIN;
             CREATE ROLE sr_other_col LOGIN;",
        )
        .await
        .unwrap();
    let a = cluster().admin(&db).await;
    a.batch_execute(
        "REVOKE ALL ON SCHEMA public FROM PUBLIC;
         CREATE TABLE customers (id int, phone bytea, note text);
         CREATE TABLE other (id int);
         CREATE VIEW v AS SELECT id FROM customers;
         CREATE FUNCTION sd() RETURNS bigint LANGUAGE sql SECURITY DEFINER
           AS $$ SELECT count(*) FROM customers $$;
         CREATE FUNCTION inv() RETURNS bigint LANGUAGE sql
           AS $$ SELECT count(*) FROM customers $$;
         REVOKE EXECUTE ON FUNCTION sd(), inv() FROM PUBLIC;
         GRANT SELECT (phone) ON customers TO sr_col;
         GRANT UPDATE (phone) ON customers TO sr_grp;
         GRANT SELECT (id, note) ON customers TO sr_other_col;
         GRANT SELECT ON other TO sr_none;
         CREATE TABLE owned (id int, phone bytea);
         ALTER TABLE owned OWNER TO sr_owner;
         GRANT SELECT ON v TO sr_view;
         GRANT EXECUTE ON FUNCTION sd() TO sr_definer;
         GRANT EXECUTE ON FUNCTION inv() TO sr_invoker;",
    )
    .await
    .unwrap();
    let p = policy(
        1,
        &[
            ("public", "customers", "phone"),
            ("public", "owned", "phone"),
        ],
    );
    let cache = CatalogCache::new(socket_upstream(), superuser_catalog(), Arc::new(p)).unwrap();
    let reach = |login: &'static str| {
        let cache = &cache;
        let db = db.clone();
        async move {
            cache
                .session_reach(&db, &RoleName(login.into()))
                .await
                .unwrap()
                .can_reach_protected
        }
    };
    for (login, expected) in [
        ("sr_none", false),
        ("sr_other_col", false),
        ("sr_invoker", false),
        ("sr_col", true),
        ("sr_member", true),
        ("sr_noinh", true),
        ("sr_owner", true),
        ("sr_su", true),
        ("sr_view", true),
        ("sr_definer", true),
    ] {
        assert_eq!(reach(login).await, expected, "{login}");
    }
    // A grant made later is seen after invalidate_roles (the same invalidation as roles).
    a.batch_execute("GRANT REFERENCES (phone) ON customers TO sr_none")
        .await
        .unwrap();
    assert!(!reach("sr_none").await, "cached until invalidated");
    cache.invalidate_roles();
    assert!(reach("sr_none").await);
    let err = cache
        .session_reach(&db, &RoleName("sr_nobody".into()))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::UnknownRole("sr_nobody".into()));
}
