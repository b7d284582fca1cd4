//! The analyser decides by reachability: the fast path, relations by reach, schema
//! qualification edits and opaque SQL (issue 11, analysis side). Pure unit tests over
//! a `MemorySchema` with reach data.

mod sql_support;

use std::collections::BTreeSet;

use pgcloak::sql::rewrite::{rewrite_with_edits, EncryptFn};
use pgcloak::sql::{
    analyze, fingerprint, may_mention, AnalysisContext, Lineage, MemorySchema, NameSet, Opaque,
    RelationReach, SessionReach, StatementPlan, DEFAULT_IN_LIST_CAP,
};
use sql_support::*;

const REACHING: &[&str] = &[
    "customers",
    "orders",
    "accounts",
    "customer_view",
    "cv_renamed",
    "all_customers",
    "audit_log",
];

struct Reach {
    fx: Fixture,
}

fn reach_schema() -> MemorySchema {
    fixture()
        .schema
        .with_view(
            "public",
            "cv_renamed",
            &[("who", Lineage::Plain), ("tel", Lineage::Encrypted(PHONE))],
        )
        .with_table("public", "all_customers", &["id", "name"])
        .with_table("public", "audit_log", &["id", "note"])
        .with_table("public", "people", &["k", "name"])
        .with_reach("public", "customers", RelationReach::Protected)
        .with_reach("public", "orders", RelationReach::Protected)
        .with_reach("public", "accounts", RelationReach::Protected)
        .with_reach("public", "customer_view", RelationReach::View)
        .with_reach("public", "cv_renamed", RelationReach::View)
        .with_reach("public", "all_customers", RelationReach::Ancestor)
        .with_reach("public", "audit_log", RelationReach::Indirect)
        .with_reaching_function("public", "leak_fn")
}

fn reach() -> Reach {
    let mut fx = fixture();
    fx.schema = reach_schema();
    fx.names = NameSet::from_reach(&fx.policy, REACHING.iter().copied(), ["leak_fn"]);
    Reach { fx }
}

impl Reach {
    fn with_path(mut self, path: &[&str]) -> Reach {
        self.fx.search_path = path.iter().map(|s| s.to_string()).collect();
        self
    }
    fn with_schema(mut self, schema: MemorySchema) -> Reach {
        self.fx.schema = schema;
        self
    }
    fn plan(&self, sql: &str) -> StatementPlan {
        self.fx.plan(sql)
    }
    fn plans(&self, sql: &str) -> Vec<StatementPlan> {
        self.fx.plans(sql)
    }
    fn accepted(&self, sql: &str) -> StatementPlan {
        self.fx.accepted(sql)
    }
    fn rejection(&self, sql: &str) -> (String, String) {
        self.fx.rejection(sql)
    }
    /// The text sent upstream (literals "encrypted" as their length in bytes).
    fn upstream(&self, sql: &str) -> String {
        let plan = self.accepted(sql);
        apply(sql, &plan)
    }
}

fn apply(sql: &str, plan: &StatementPlan) -> String {
    let fp = fingerprint(sql);
    let mut enc = |_c, p: &str| -> Result<Vec<u8>, ()> { Ok(vec![p.len() as u8]) };
    let enc: &mut EncryptFn<'_, ()> = &mut enc;
    rewrite_with_edits(sql, &fp, &plan.literals, &plan.edits, enc).expect("rewrite")
}

const REACHES: SessionReach = SessionReach {
    can_reach_protected: true,
};
const CANNOT_REACH: SessionReach = SessionReach {
    can_reach_protected: false,
};

// ------------------------------------------------------------------ the fast path

#[test]
fn statements_reaching_nothing_pass_the_fast_path_whatever_they_name() {
    let r = reach();
    for sql in [
        "CREATE TABLE people2(k int, name text)",
        "create table t (phone text, national_id text, notes text)",
        "ALTER DATABASE d SET lc_messages TO 'C'",
        "alter database \"d\" set lc_monetary to 'customers'",
        "SELECT 'customers', 'phone' FROM pgbench_accounts",
        "insert into pgbench_accounts(filler) values ('select phone from customers')",
        "select E'\\x63ustomers', U&'\\0063ustomers' UESCAPE '!'",
        "SELECT phone, national_id FROM pgbench_accounts",
        "select $q$ customers $q$",
        "COMMENT ON TABLE pgbench_accounts IS 'copied from customers'",
    ] {
        assert!(!may_mention(sql, &r.fx.names), "fast path sent {sql}");
        let p = r.plan(sql);
        assert!(
            p.is_untouched() && !p.touches_policy && p.opaque.is_empty(),
            "{sql}"
        );
    }
}

#[test]
fn reaching_names_functions_and_hiding_words_go_to_the_analyser() {
    let r = reach();
    for sql in [
        "select * from Customers",
        "select * from \"customer_view\"",
        "select tel from cv_renamed",
        "select * from public.all_customers",
        "select query_to_xml('select 1', true, false, '')",
        "SELECT most_common_vals FROM pg_stats",
        "select leak_fn()",
        "DO 'begin perform 1; end'",
        "execute s1",
        "call p()",
        "create function f() returns bigint as 'select count(*) from customers' language sql",
        "create or replace procedure p() as $b$ delete from audit_log $b$ language sql",
        "select U&\"\\0063ustomers\" from t",
    ] {
        assert!(may_mention(sql, &r.fx.names), "fast path let {sql} through");
    }
}

#[test]
fn fallback_name_set_keeps_columns_and_an_empty_reach_set_is_empty() {
    let fx = fixture();
    let names = NameSet::from_policy(&fx.policy);
    assert!(may_mention("select phone from t", &names));
    assert!(!may_mention("select 'phone'", &names));
    let empty = pgcloak::policy::Policy::empty(1);
    assert!(NameSet::from_reach(&empty, [], ["f"]).is_empty());
}

// -------------------------------------------------------------- relations by reach

#[test]
fn a_view_with_renamed_columns_is_caught() {
    let r = reach();
    let p = r.accepted("SELECT who, tel FROM cv_renamed WHERE tel = '0912'");
    assert!(p.touches_policy);
    assert_eq!(p.literals.len(), 1);
    let shape = p.result.expect("result");
    assert_eq!(shape.columns[1].lineage, Lineage::Encrypted(PHONE));
    let p = r.accepted("select * from public.cv_renamed v where v.tel = $1");
    assert_eq!(p.params.len(), 1);
}

#[test]
fn a_reaching_view_without_known_lineage_is_refused() {
    let schema = reach_schema().with_reach("public", "secret_v", RelationReach::View);
    let mut r = reach().with_schema(schema);
    r.fx.names.insert("secret_v");
    let (_, msg) = r.rejection("select * from secret_v");
    assert!(msg.contains("public.secret_v"), "{msg}");
}

#[test]
fn an_ancestor_is_refused_without_only() {
    let r = reach();
    for sql in [
        "SELECT * FROM all_customers",
        "select count(*) from public.all_customers",
        "select 1 from pgbench_accounts a join all_customers c on c.id = a.aid",
        "UPDATE all_customers SET name = 'x'",
        "delete from all_customers where id = 1",
        "select * from (select * from all_customers) s",
    ] {
        let (code, msg) = r.rejection(sql);
        assert_eq!(code, "0A000", "{sql}");
        assert!(
            msg.contains("public.all_customers") && msg.contains("ONLY"),
            "{sql}: {msg}"
        );
    }
    for sql in [
        "SELECT * FROM ONLY all_customers",
        "select name from only public.all_customers where id = 3",
        "UPDATE ONLY all_customers SET name = 'x'",
        "DELETE FROM ONLY all_customers",
        "truncate all_customers",
    ] {
        r.accepted(sql);
    }
}

#[test]
fn an_indirect_relation_takes_reads_but_no_writes() {
    let r = reach();
    for sql in [
        "INSERT INTO audit_log VALUES (1, 'x')",
        "insert into public.audit_log(id) select aid from pgbench_accounts",
        "UPDATE audit_log SET note = 'n'",
        "DELETE FROM audit_log WHERE id = 1",
        "COPY audit_log FROM STDIN",
        "MERGE INTO audit_log a USING pgbench_accounts p ON a.id = p.aid WHEN MATCHED THEN DELETE",
    ] {
        let (_, msg) = r.rejection(sql);
        assert!(msg.contains("audit_log"), "{sql}: {msg}");
    }
    for sql in [
        "SELECT * FROM audit_log",
        "select note from public.audit_log where id = 2",
        "COPY audit_log TO STDOUT",
        "insert into pgbench_accounts(aid) select id from audit_log",
    ] {
        r.accepted(sql);
    }
}

#[test]
fn value_exposing_catalog_relations_are_opaque_builtins() {
    let r = reach();
    for sql in [
        "SELECT most_common_vals FROM pg_stats WHERE tablename = 'customers'",
        "select histogram_bounds from pg_catalog.pg_stats",
        "select * from PG_STATISTIC",
    ] {
        let p = r.accepted(sql);
        assert!(
            p.opaque.iter().any(|o| matches!(o, Opaque::Builtin(_))),
            "{sql}: {:?}",
            p.opaque
        );
        let e = p.authorize_opaque(&r.fx.policy, REACHES).unwrap_err();
        assert_eq!(e.sqlstate(), "42501");
        p.authorize_opaque(&r.fx.policy, CANNOT_REACH).unwrap();
    }
}

// ------------------------------------------------------- schema qualification edits

#[test]
fn unqualified_reaching_names_are_pinned_to_the_resolved_relation() {
    let r = reach();
    for (sql, want) in [
        (
            "SELECT name FROM customers WHERE id = 1",
            "SELECT name FROM \"public\".\"customers\" WHERE id = 1",
        ),
        (
            "select name from \"customers\" c",
            "select name from \"public\".\"customers\" c",
        ),
        (
            "select name from CuStOmErS",
            "select name from \"public\".\"customers\"",
        ),
        (
            "select customers.name from customers join orders o on o.customer_id = customers.id",
            "select customers.name from \"public\".\"customers\" join \"public\".\"orders\" o on o.customer_id = customers.id",
        ),
        (
            "update customers set name = 'x' where id in (select customer_id from orders)",
            "update \"public\".\"customers\" set name = 'x' where id in (select customer_id from \"public\".\"orders\")",
        ),
        (
            "delete from customers where id = 2",
            "delete from \"public\".\"customers\" where id = 2",
        ),
        ("truncate customers", "truncate \"public\".\"customers\""),
        (
            "select * from audit_log",
            "select * from \"public\".\"audit_log\"",
        ),
    ] {
        assert_eq!(r.upstream(sql), want, "{sql}");
    }
}

#[test]
fn qualification_and_encryption_apply_together_and_survive_caching() {
    let r = reach();
    let a = "SELECT 'abc' AS x, name FROM customers WHERE phone = '1'";
    let b = "SELECT 'a longer value' AS x, name FROM customers WHERE phone = '12345'";
    let plan = r.accepted(a);
    assert_eq!(plan.literals.len(), 1);
    assert_eq!(plan.edits.len(), 1);
    assert_eq!(fingerprint(a).text, fingerprint(b).text);
    // The plan of `a` applied to `b` (a cache hit for other literal values).
    assert_eq!(
        apply(b, &plan),
        "SELECT 'a longer value' AS x, name FROM \"public\".\"customers\" WHERE phone = '\\x05'::bytea"
    );
    assert_eq!(
        r.upstream("INSERT INTO customers(id, phone) VALUES (1, '0912')"),
        "INSERT INTO \"public\".\"customers\"(id, phone) VALUES (1, '\\x04'::bytea)"
    );
}

#[test]
fn qualified_and_unrelated_names_are_left_alone() {
    let r = reach();
    for sql in [
        "SELECT name FROM public.customers",
        "select * from \"public\".\"customers\"",
        "select abalance from pgbench_accounts where aid = 1",
        "select * from people",
    ] {
        let p = r.plan(sql);
        assert!(p.edits.is_empty(), "{sql}: {:?}", p.edits);
    }
}

#[test]
fn cte_names_shadow_relations_and_are_not_edited() {
    let r = reach();
    let p = r.accepted("WITH customers AS (SELECT 1 AS x) SELECT x FROM customers");
    assert!(p.edits.is_empty(), "{:?}", p.edits);
    assert!(!p.touches_policy);
    // The CTE's own body still reads the real table.
    let sql = "with c as (select name from customers) select name from c";
    assert_eq!(
        r.upstream(sql),
        "with c as (select name from \"public\".\"customers\") select name from c"
    );
}

#[test]
fn a_temp_table_first_in_the_path_is_what_gets_pinned() {
    let schema = reach_schema().with_table("pg_temp", "customers", &["id", "phone"]);
    let r = reach().with_schema(schema);
    let p = r.accepted("select phone from customers where phone = '1'");
    assert!(!p.touches_policy && p.literals.is_empty());
    assert_eq!(
        apply("select phone from customers where phone = '1'", &p),
        "select phone from \"pg_temp\".\"customers\" where phone = '1'"
    );
}

#[test]
fn a_same_named_table_earlier_in_the_path_is_pinned_and_not_protected() {
    for path in [
        &["app", "public"][..],
        &["app"][..],
        &["pg_catalog", "app", "public"][..],
    ] {
        let r = reach().with_path(path);
        let sql = "SELECT phone FROM customers WHERE phone = '0912'";
        let p = r.accepted(sql);
        assert!(p.literals.is_empty(), "{path:?}");
        assert_eq!(
            apply(sql, &p),
            "SELECT phone FROM \"app\".\"customers\" WHERE phone = '0912'"
        );
    }
    // Without app, the protected table is what PostgreSQL reads: encrypted and pinned.
    let r = reach().with_path(&["pg_catalog", "public"]);
    let p = r.accepted("SELECT phone FROM customers WHERE phone = '0912'");
    assert_eq!(p.literals.len(), 1);
}

#[test]
fn an_unresolvable_reaching_name_is_refused_as_undefined() {
    for path in [&["nowhere"][..], &[][..], &["app"][..]] {
        let r = reach().with_path(path);
        let (code, msg) = r.rejection("select * from orders");
        assert_eq!(code, "42P01", "{path:?}");
        assert!(msg.contains("\"orders\""), "{msg}");
    }
    // A name nothing reaching carries is PostgreSQL's to report.
    reach()
        .with_path(&["nowhere"])
        .accepted("select * from nothing_here");
}

#[test]
fn a_search_path_change_refuses_only_later_reaching_statements() {
    let r = reach();
    let plans =
        r.plans("SET search_path = app; SELECT 1 FROM pgbench_accounts; select 'customers'");
    assert!(plans.iter().all(|p| p.rejection.is_none()));
    let plans = r.plans("SET search_path = app; SELECT name FROM customers");
    assert!(plans[1].rejection.is_some());
    let plans = r.plans("select set_config('search_path', 'app', false); select leak_fn()");
    assert!(plans[1].rejection.is_some());
}

// ------------------------------------------------------------------- opaque SQL

fn allowing(r: &Reach, names: &[&str]) -> pgcloak::policy::Policy {
    r.fx.policy
        .clone()
        .with_allowed_functions(names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>())
}

#[test]
fn sql_executing_builtins_are_opaque() {
    let r = reach();
    for (sql, name) in [
        ("SELECT schema_to_xml('public', true, false, '')", "schema_to_xml"),
        ("select database_to_xml(true, false, '')", "database_to_xml"),
        ("select table_to_xml('customers', true, false, '')", "table_to_xml"),
        (
            "select query_to_xml('SELECT count(DISTINCT nation'||'al_id) FROM customers', true, false, '')",
            "query_to_xml",
        ),
        ("select * from ts_stat('select 1')", "ts_stat"),
        ("SELECT pg_catalog.QUERY_TO_XML('x', true, false, '')", "query_to_xml"),
        ("select length(cursor_to_xml('c', 1, true, false, ''))", "cursor_to_xml"),
        ("insert into pgbench_accounts(filler) values (query_to_xml('x', true, false, '')::text)", "query_to_xml"),
    ] {
        let p = r.accepted(sql);
        assert!(p.opaque.contains(&Opaque::Builtin(name)), "{sql}: {:?}", p.opaque);
        let e = p.authorize_opaque(&r.fx.policy, REACHES).unwrap_err();
        assert_eq!(e.sqlstate(), "42501");
        assert!(e.message().contains(name), "{}", e.message());
        p.authorize_opaque(&r.fx.policy, CANNOT_REACH).unwrap();
        p.authorize_opaque(&allowing(&r, &[name]), REACHES).unwrap();
    }
}

#[test]
fn a_reaching_user_function_is_opaque_wherever_it_is_called() {
    let r = reach();
    for sql in [
        "SELECT leak_fn()",
        "select * from leak_fn()",
        "select * from public.leak_fn(1) f",
        "CALL leak_fn()",
        "insert into pgbench_accounts(aid) values (leak_fn())",
        "select abalance from pgbench_accounts where aid = LEAK_FN(2)",
        "select 1 from pgbench_accounts order by leak_fn()",
    ] {
        let p = r.accepted(sql);
        // The function's name comes from the catalog (a `CatalogName`), never the text.
        let opaque: Vec<&str> = p
            .opaque
            .iter()
            .map(|o| match o {
                Opaque::Function(name) => name.as_str(),
                _ => "(not a function)",
            })
            .collect();
        assert_eq!(opaque, ["public.leak_fn"], "{sql}");
        let e = p.authorize_opaque(&r.fx.policy, REACHES).unwrap_err();
        assert!(e.message().contains("public.leak_fn"), "{}", e.message());
        p.authorize_opaque(&r.fx.policy, CANNOT_REACH).unwrap();
        p.authorize_opaque(&allowing(&r, &["public.leak_fn"]), REACHES)
            .unwrap();
        assert!(p
            .authorize_opaque(&allowing(&r, &["other.leak_fn"]), REACHES)
            .is_err());
    }
    let p = r.accepted("select harmless_fn(), lower('x')");
    assert!(p.opaque.is_empty());
}

#[test]
fn do_blocks_run_unless_they_reach() {
    let r = reach();
    for sql in [
        "DO $$ BEGIN PERFORM 1; END $$",
        "do language plpgsql 'begin raise notice ''name %'', 1; end'",
        "DO $do$ BEGIN CREATE TABLE people3(k int, phone text); END $do$",
        "do E'begin perform \\'x\\'; end'",
    ] {
        let p = r.accepted(sql);
        assert!(p.opaque.is_empty(), "{sql}");
        p.authorize_opaque(&r.fx.policy, REACHES).unwrap();
    }
    for sql in [
        "DO $$ BEGIN EXECUTE 'select 1'; END $$",
        "do $x$ begin execute format('select %s', 1); end $x$",
        "DO $$ BEGIN PERFORM leak_fn(); END $$",
        "DO $$ BEGIN PERFORM query_to_xml('x', true, false, ''); END $$",
    ] {
        let p = r.accepted(sql);
        assert_eq!(p.opaque, vec![Opaque::DynamicSql], "{sql}");
        assert!(p.authorize_opaque(&r.fx.policy, REACHES).is_err());
        p.authorize_opaque(&r.fx.policy, CANNOT_REACH).unwrap();
    }
    for sql in [
        "DO $$ BEGIN INSERT INTO customers(phone) VALUES ('0912'); END $$",
        "do 'begin delete from public.AUDIT_LOG; end'",
        "DO $$ BEGIN PERFORM * FROM U&\"\\0063ustomers\"; END $$",
        "do E'begin perform * from \\x63ustomers; end'",
    ] {
        let (_, msg) = r.rejection(sql);
        assert!(msg.contains("DO block"), "{sql}: {msg}");
    }
}

#[test]
fn function_definitions_are_refused_only_when_their_body_names_a_reaching_relation() {
    let r = reach();
    for sql in [
        "CREATE FUNCTION f() RETURNS text AS $$ BEGIN EXECUTE 'x'; RETURN E'a\\\\b'; END $$ LANGUAGE plpgsql",
        "create function g() returns text as 'select ''a\\b''' language sql",
        "create or replace function h(x text default 'customers') returns int as $$ select 1 $$ language sql",
        "CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT leak_fn() $$",
    ] {
        let p = r.accepted(sql);
        assert!(p.opaque.is_empty(), "{sql}");
    }
    for sql in [
        "CREATE FUNCTION f() RETURNS bigint AS $$ SELECT count(*) FROM customers $$ LANGUAGE sql",
        "create procedure p() as 'insert into orders(phone) values (''0912'')' language sql",
    ] {
        r.rejection(sql);
    }
}

#[test]
fn execute_of_an_unknown_prepared_statement_is_opaque() {
    let r = reach();
    let mut p = r.accepted("EXECUTE mystery(1, 'x')");
    p.authorize_opaque(&r.fx.policy, REACHES).unwrap();
    p.mark_unknown_prepared();
    assert_eq!(
        p.opaque,
        vec![Opaque::UnknownPrepared("mystery".to_string())]
    );
    let e = p.authorize_opaque(&r.fx.policy, REACHES).unwrap_err();
    // The prepared statement's name is the client's text, not a catalog name: not echoed.
    assert_eq!(e.sqlstate(), "42501");
    assert_eq!(
        e.message(),
        "permission denied: EXECUTE runs a statement pgcloak did not see prepared, so it was not \
         analysed; this session's roles can reach protected columns, so pgcloak refuses SQL it \
         cannot see into (a DBA can allow a named function in the policy's functions.allow)"
    );
    p.authorize_opaque(&r.fx.policy, CANNOT_REACH).unwrap();
}

#[test]
fn analysis_context_keeps_working_with_a_reach_name_set() {
    let r = reach();
    let ctx: AnalysisContext<'_> = AnalysisContext {
        policy: &r.fx.policy,
        schema: &r.fx.schema,
        search_path: &r.fx.search_path,
        names: &r.fx.names,
        in_list_cap: DEFAULT_IN_LIST_CAP,
        force_full_analysis: true,
    };
    let plans = analyze(
        "select 'phone'; CREATE TABLE people(k int, name text)",
        &ctx,
    )
    .unwrap();
    assert!(plans
        .iter()
        .all(|p| p.rejection.is_none() && p.is_untouched()));
}

#[test]
fn prepare_and_explain_are_pinned_and_checked_too() {
    let r = reach();
    assert_eq!(
        r.upstream("PREPARE q AS SELECT name FROM customers WHERE phone = $1"),
        "PREPARE q AS SELECT name FROM \"public\".\"customers\" WHERE phone = $1"
    );
    assert_eq!(
        r.upstream("explain select name from orders"),
        "explain select name from \"public\".\"orders\""
    );
    r.rejection("EXPLAIN SELECT * FROM all_customers");
    r.rejection("prepare w as insert into audit_log values (1, 'x')");
    let p = r.accepted("PREPARE z AS SELECT leak_fn()");
    assert!(p.authorize_opaque(&r.fx.policy, REACHES).is_err());
}

#[test]
fn the_table_shorthand_is_refused_only_on_reaching_names() {
    // sqlparser does not read `TABLE name` at the top level: refused when it reaches.
    let r = reach();
    r.rejection("TABLE customers");
    r.rejection("TABLE public.cv_renamed");
    let p = r.accepted("table pgbench_accounts");
    assert!(p.is_untouched());
}

#[test]
fn an_expanded_search_path_searches_the_temp_schema_where_it_is_listed() {
    // current_schemas(true) after `SET search_path = public, pg_temp`.
    let schema = reach_schema()
        .with_table("pg_temp_3", "customers", &["id", "phone"])
        .with_table("pg_temp", "customers", &["id", "phone"]);
    let r = reach()
        .with_schema(schema.clone())
        .with_path(&["pg_catalog", "public", "pg_temp_3"]);
    let sql = "select phone from customers where phone = '1'";
    let p = r.accepted(sql);
    assert_eq!(p.literals.len(), 1);
    assert_eq!(
        apply(sql, &p),
        "select phone from \"public\".\"customers\" where phone = '\\x01'::bytea"
    );
    // The default order: the session's temp schema first.
    let r = reach()
        .with_schema(schema)
        .with_path(&["pg_temp_3", "pg_catalog", "public"]);
    let p = r.accepted(sql);
    assert!(p.literals.is_empty());
    assert_eq!(
        apply(sql, &p),
        "select phone from \"pg_temp_3\".\"customers\" where phone = '1'"
    );
}
