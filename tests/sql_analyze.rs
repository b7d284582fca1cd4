//! Behaviour of the SQL analysis against a small policy (issue 4: writes, predicates,
//! reads, multi-statement, fail-closed cases).

mod sql_support;

use pgcloak::sql::{
    fingerprint, CopyDirection, CopyFormat, ExecuteArg, Lineage, LiteralValue, StatementKind,
};
use sql_support::*;

fn literal_texts(
    sql: &str,
    plan: &pgcloak::sql::StatementPlan,
) -> Vec<(pgcloak::policy::ColumnRef, String)> {
    let fp = fingerprint(sql);
    plan.literals
        .iter()
        .map(|a| {
            (
                a.column,
                pgcloak::sql::rewrite::action_plaintext(sql, &fp, a).unwrap(),
            )
        })
        .collect()
}

// ------------------------------------------------------------------ writes

#[test]
fn insert_values_literals_are_marked_for_encryption() {
    let f = fixture();
    let sql = "INSERT INTO customers (id, name, phone, birth_date) VALUES (1, 'Ann', '555-0100', '1990-01-02')";
    let p = f.accepted(sql);
    assert_eq!(p.kind, StatementKind::Insert);
    assert!(p.touches_policy);
    assert_eq!(
        literal_texts(sql, &p),
        vec![
            (PHONE, "555-0100".to_string()),
            (BIRTH_DATE, "1990-01-02".to_string())
        ]
    );
}

#[test]
fn multi_row_insert_with_params_default_and_null() {
    let f = fixture();
    let sql = "insert into customers (id, phone, notes) values ($1, $2, DEFAULT), (2, NULL, 'x'), (3, $4, $2)";
    let p = f.plan(sql);
    // $2 is used for phone (deterministic) and notes (randomized): different keys.
    assert!(p.rejection.is_some());
    let sql = "insert into customers (id, phone, notes) values ($1, $2, DEFAULT), (2, NULL, 'x'), (3, $4, $5)";
    let p = f.accepted(sql);
    let params: Vec<_> = p.params.iter().map(|a| (a.index, a.column)).collect();
    assert_eq!(params, vec![(2, PHONE), (4, PHONE), (5, NOTES)]);
    assert_eq!(p.params[0].logical_type, pgcloak::policy::LogicalType::Text);
    assert_eq!(literal_texts(sql, &p), vec![(NOTES, "x".to_string())]);
}

#[test]
fn insert_without_column_list_uses_catalog_order() {
    let f = fixture();
    let sql = "insert into accounts values (1, 42, true)";
    let p = f.accepted(sql);
    assert_eq!(
        literal_texts(sql, &p),
        vec![(BALANCE, "42".to_string()), (ACTIVE, "true".to_string())]
    );
}

#[test]
fn negative_number_literal_includes_its_sign() {
    let f = fixture();
    let sql = "insert into accounts (id, balance) values (1, - 42)";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p), vec![(BALANCE, "-42".to_string())]);
}

#[test]
fn escape_string_literal_is_decoded_before_encryption() {
    let f = fixture();
    let sql = r"insert into customers (phone) values (E'O\'Brien\t1')";
    let p = f.accepted(sql);
    assert_eq!(
        literal_texts(sql, &p),
        vec![(PHONE, "O'Brien\t1".to_string())]
    );
}

#[test]
fn insert_of_expression_into_encrypted_column_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection("insert into customers (phone) values (upper('abc'))");
    assert_eq!(state, "0A000");
    assert!(msg.contains("public.customers.phone"), "{msg}");
}

#[test]
fn insert_on_conflict_excluded_same_column_is_allowed() {
    let f = fixture();
    let sql = "INSERT INTO customers (id, phone) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.phone RETURNING id, phone";
    let p = f.accepted(sql);
    assert_eq!(p.params.len(), 1);
    let r = p.result.unwrap();
    assert_eq!(r.columns[0].lineage, Lineage::Plain);
    assert_eq!(r.columns[1].lineage, Lineage::Encrypted(PHONE));
}

#[test]
fn on_conflict_assigning_other_column_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection(
        "INSERT INTO customers (id, phone) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.name",
    );
    assert_eq!(state, "0A000");
    assert!(msg.contains("public.customers.phone"), "{msg}");
}

#[test]
fn update_set_literal_and_param() {
    let f = fixture();
    let sql = "UPDATE customers SET phone = '555', notes = $1, name = 'n' WHERE id = $2";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p), vec![(PHONE, "555".to_string())]);
    assert_eq!(p.params.len(), 1);
    assert_eq!(p.params[0].column, NOTES);
}

#[test]
fn update_copying_encrypted_into_plain_column_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection("UPDATE customers SET name = phone");
    assert_eq!(state, "0A000");
    assert!(msg.contains("public.customers.phone"), "{msg}");
}

#[test]
fn insert_select_from_same_key_group_is_allowed() {
    let f = fixture();
    f.accepted("insert into orders (id, phone) select id, phone from customers");
    let (state, msg) = f.rejection("insert into orders (id, phone) select id, name from customers");
    assert_eq!(state, "0A000");
    assert!(msg.contains("public.orders.phone"), "{msg}");
    let (_, msg) =
        f.rejection("insert into orders (id, phone) select id, national_id from customers");
    assert!(msg.contains("public.orders.phone"), "{msg}");
}

#[test]
fn update_from_same_key_group_is_allowed() {
    let f = fixture();
    let p = f.accepted(
        "update orders o set phone = c.phone from customers c where c.id = o.customer_id",
    );
    assert!(p.touches_policy);
    f.rejection(
        "update orders o set phone = c.national_id from customers c where c.id = o.customer_id",
    );
}

// ------------------------------------------------------------------ predicates

#[test]
fn equality_literal_on_deterministic_column_is_encrypted() {
    let f = fixture();
    let sql = "SELECT id FROM customers WHERE phone = '555' AND name = 'Ann'";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p), vec![(PHONE, "555".to_string())]);
    assert_eq!(p.searched, vec![PHONE]);
}

#[test]
fn reversed_and_not_equal_comparisons_are_encrypted() {
    let f = fixture();
    let sql = "select id from customers where '1' = phone or phone <> $1 or phone IS NOT DISTINCT FROM '2'";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p).len(), 2);
    assert_eq!(p.params[0].column, PHONE);
}

#[test]
fn in_list_and_any_array_parameter_are_encrypted() {
    let f = fixture();
    let sql = "select id from customers where phone in ('1', '2', $1) and national_id = any($2)";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p).len(), 2);
    assert_eq!(p.params.len(), 2);
    assert!(!p.params[0].array);
    assert!(p.params[1].array);
    assert_eq!(p.params[1].column, NATIONAL_ID);
}

#[test]
fn in_list_longer_than_cap_is_rejected() {
    let f = fixture();
    let list: Vec<String> = (0..101).map(|i| format!("'{i}'")).collect();
    let sql = format!(
        "select id from customers where phone in ({})",
        list.join(",")
    );
    let (state, msg) = f.rejection(&sql);
    assert_eq!(state, "0A000");
    assert!(msg.contains("limit of 100"), "{msg}");
    let list: Vec<String> = (0..100).map(|i| format!("'{i}'")).collect();
    f.accepted(&format!(
        "select id from customers where phone in ({})",
        list.join(",")
    ));
}

#[test]
fn randomized_column_rejects_equality() {
    let f = fixture();
    let (state, msg) = f.rejection("select id from customers where notes = 'x'");
    assert_eq!(state, "0A000");
    assert!(
        msg.contains("randomized column public.customers.notes"),
        "{msg}"
    );
    assert!(msg.contains("deterministic"), "{msg}");
}

#[test]
fn randomized_column_rejects_like_predicate() {
    let f = fixture();
    let (state, msg) = f.rejection("select id from customers where notes like '%x%'");
    assert_eq!(state, "0A000");
    assert!(
        msg.contains("LIKE") && msg.contains("public.customers.notes"),
        "{msg}"
    );
}

#[test]
fn deterministic_column_rejects_like_range_and_between() {
    let f = fixture();
    for (sql, op) in [
        ("select id from customers where phone like '5%'", "LIKE"),
        ("select id from customers where phone ilike '5%'", "ILIKE"),
        ("select id from customers where phone < '5'", "<"),
        ("select id from customers where phone >= $1", ">="),
        (
            "select id from customers where phone between '1' and '2'",
            "BETWEEN",
        ),
    ] {
        let (state, msg) = f.rejection(sql);
        assert_eq!(state, "0A000", "{sql}");
        assert!(
            msg.contains(op) && msg.contains("public.customers.phone"),
            "{sql}: {msg}"
        );
    }
}

#[test]
fn functions_casts_and_arithmetic_over_encrypted_column_are_rejected() {
    let f = fixture();
    for (sql, op) in [
        ("select upper(phone) from customers", "upper"),
        ("select id from customers where lower(phone) = 'x'", "lower"),
        ("select phone::text from customers", "cast"),
        ("select balance + 1 from accounts", "+"),
        ("select id from accounts where balance * 2 = 4", "*"),
        ("select max(phone) from customers", "max"),
    ] {
        let (state, msg) = f.rejection(sql);
        assert_eq!(state, "0A000", "{sql}");
        assert!(msg.contains(op), "{sql}: {msg}");
    }
}

#[test]
fn order_by_encrypted_column_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection("select id, phone from customers order by phone");
    assert_eq!(state, "0A000");
    assert!(
        msg.contains("ORDER BY") && msg.contains("public.customers.phone"),
        "{msg}"
    );
    f.rejection("select id, phone from customers order by 2");
    f.rejection("select id, phone as p from customers order by p");
    f.accepted("select id, phone from customers order by 1");
}

#[test]
fn is_null_and_count_work_on_every_column() {
    let f = fixture();
    f.accepted("select count(notes), count(*) from customers where notes is null and birth_date is not null");
    let p = f.accepted("select count(distinct phone) from customers");
    assert_eq!(p.searched, vec![PHONE]);
    let (_, msg) = f.rejection("select count(distinct notes) from customers");
    assert!(msg.contains("randomized"), "{msg}");
}

#[test]
fn group_by_and_distinct_need_deterministic_columns() {
    let f = fixture();
    let p = f.accepted("select phone, count(*) from customers group by phone");
    assert_eq!(p.searched, vec![PHONE]);
    f.accepted("select distinct phone from customers");
    f.accepted("select phone, count(*) from customers group by 1");
    f.rejection("select notes, count(*) from customers group by notes");
    f.rejection("select distinct birth_date from customers");
}

#[test]
fn join_within_key_group_is_allowed() {
    let f = fixture();
    let p = f.accepted("select c.id, o.total from customers c join orders o on o.phone = c.phone");
    assert_eq!(p.searched, vec![PHONE, ORDER_PHONE]);
    f.accepted("select * from customers join orders using (phone)");
}

#[test]
fn join_across_different_keys_is_rejected() {
    let f = fixture();
    let (state, msg) =
        f.rejection("select 1 from customers c join orders o on o.phone = c.national_id");
    assert_eq!(state, "0A000");
    assert!(msg.contains("key_group"), "{msg}");
    f.rejection("select 1 from customers c join orders o on o.phone = c.name");
}

#[test]
fn role_without_search_right_gets_42501() {
    let f = fixture();
    let p = f.accepted("select id from customers where national_id = $1");
    let e = p.authorize(&f.policy, &roles(&["crm_app"])).unwrap_err();
    assert_eq!(e.sqlstate(), "42501");
    assert!(e.message().contains("public.customers.national_id"));
    p.authorize(&f.policy, &roles(&["compliance"])).unwrap();
    let p = f.accepted("select id from customers where phone = $1");
    p.authorize(&f.policy, &roles(&["support_agent"])).unwrap();
    p.authorize(&f.policy, &roles(&["crm_app"])).unwrap();
    assert_eq!(
        p.authorize(&f.policy, &roles(&["nobody"]))
            .unwrap_err()
            .sqlstate(),
        "42501"
    );
}

#[test]
fn deny_column_in_result_gets_42501() {
    let f = fixture();
    let p = f.accepted("select national_id from customers");
    assert_eq!(
        p.authorize(&f.policy, &roles(&["crm_app"]))
            .unwrap_err()
            .sqlstate(),
        "42501"
    );
    p.authorize(&f.policy, &roles(&["compliance"])).unwrap();
}

// ------------------------------------------------------------------ reads

#[test]
fn lineage_follows_aliases_subqueries_and_ctes() {
    let f = fixture();
    let p = f.accepted(
        "with c as (select id, phone as p from customers) \
         select x.p as q, x.id, (select phone from orders limit 1) from (select * from c) x",
    );
    let r = p.result.unwrap();
    let l: Vec<_> = r.columns.iter().map(|c| c.lineage).collect();
    assert_eq!(
        l,
        vec![
            Lineage::Encrypted(PHONE),
            Lineage::Plain,
            Lineage::Encrypted(ORDER_PHONE)
        ]
    );
    assert_eq!(r.columns[0].name.as_deref(), Some("q"));
}

#[test]
fn select_star_expands_with_lineage() {
    let f = fixture();
    let p = f.accepted("select * from customers");
    let l: Vec<_> = p
        .result
        .unwrap()
        .columns
        .iter()
        .map(|c| c.lineage)
        .collect();
    assert_eq!(
        l,
        vec![
            Lineage::Plain,
            Lineage::Plain,
            Lineage::Encrypted(PHONE),
            Lineage::Encrypted(NATIONAL_ID),
            Lineage::Encrypted(BIRTH_DATE),
            Lineage::Encrypted(NOTES)
        ]
    );
}

#[test]
fn union_branches_must_agree() {
    let f = fixture();
    let p = f.accepted("select phone from customers union all select phone from orders");
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
    let (state, msg) =
        f.rejection("select phone from customers union all select name from customers");
    assert_eq!(state, "0A000");
    assert!(msg.contains("UNION"), "{msg}");
    f.rejection("select phone from customers union select national_id from customers");
    f.rejection("select notes from customers union select notes from customers");
    f.accepted("select notes from customers union all select notes from customers");
}

#[test]
fn view_columns_carry_their_base_lineage() {
    let f = fixture();
    let p = f.accepted("select name, phone from customer_view where phone = '1'");
    let r = p.result.unwrap();
    assert_eq!(r.columns[1].lineage, Lineage::Encrypted(PHONE));
    assert_eq!(p.literals.len(), 1);
}

#[test]
fn unqualified_table_resolves_through_search_path() {
    let mut f = fixture();
    f.search_path = vec!["app".to_string(), "public".to_string()];
    let p = f.accepted("select phone from customers where phone = '1'");
    assert_eq!(p.result.unwrap().columns[0].lineage, Lineage::Plain);
    assert!(p.literals.is_empty());
    let p = f.accepted("select phone from public.customers");
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
    f.search_path = vec!["public".to_string(), "app".to_string()];
    let p = f.accepted("select phone from customers");
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
}

#[test]
fn statement_not_touching_policy_is_left_alone() {
    let f = fixture();
    let p = f.plan("SELECT abalance FROM pgbench_accounts WHERE aid = 42");
    assert_eq!(p.kind, StatementKind::Other);
    assert!(!p.touches_policy && p.is_untouched());
    let p = f.accepted("select name from customers where name = 'x' order by name");
    assert!(p.literals.is_empty());
}

// ------------------------------------------------------------------ fail closed

#[test]
fn unicode_escaped_column_name_is_caught() {
    let f = fixture();
    let p = f.accepted(r#"select U&"\0070hone" from customers"#);
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
    let (state, msg) = f.rejection(r#"select id from customers where U&"\0070hone" like '5%'"#);
    assert_eq!(state, "0A000");
    assert!(msg.contains("public.customers.phone"), "{msg}");
    let sql = r#"select id from customers where U&"\0070hone" = '5'"#;
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p), vec![(PHONE, "5".to_string())]);
}

#[test]
fn quoted_upper_case_name_is_a_different_column() {
    let f = fixture();
    let p = f.accepted(r#"select "PHONE" from customers"#);
    assert_eq!(p.result.unwrap().columns[0].lineage, Lineage::Plain);
    let p = f.accepted(r#"select PHONE from customers"#);
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
}

#[test]
fn do_block_naming_policy_column_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection("DO $$ BEGIN UPDATE customers SET phone = 'x'; END $$");
    assert_eq!(state, "0A000");
    assert!(msg.contains("DO block"), "{msg}");
    // Issue 11: dynamic SQL is opaque, refused per session (not by name in the text).
    let p = f.accepted("DO $$ BEGIN EXECUTE 'select ' || 'pho' || 'ne'; END $$");
    assert_eq!(p.opaque, vec![pgcloak::sql::Opaque::DynamicSql]);
    let reaching = pgcloak::sql::SessionReach {
        can_reach_protected: true,
    };
    let msg = p
        .authorize_opaque(&f.policy, reaching)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dynamic SQL"), "{msg}");
    let p = f.plan("DO $$ BEGIN RAISE NOTICE 'hello'; END $$");
    assert!(p.rejection.is_none());
    assert_eq!(p.kind, StatementKind::Body);
}

#[test]
fn function_body_naming_policy_column_is_rejected() {
    let f = fixture();
    f.rejection(
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $f$ select phone from customers $f$",
    );
    f.rejection(
        "create or replace function f() returns text language sql as 'select national_id from x'",
    );
    f.rejection(r"create procedure p() language sql as E'select \x70hone from t'");
}

#[test]
fn garbage_sql_naming_policy_column_is_rejected_as_syntax_error() {
    let f = fixture();
    let (state, msg) = f.rejection("SELEKT phone FROM customers WHERE");
    assert_eq!(state, "42601");
    assert!(msg.contains("phone"), "{msg}");
    let plans = f.plans("SELEKT 1 FROM elsewhere; select 2");
    assert_eq!(plans.len(), 2);
    assert!(plans.iter().all(|p| p.rejection.is_none()));
}

#[test]
fn unsupported_statement_on_policy_column_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection("ALTER TABLE customers ALTER COLUMN phone SET DEFAULT 'x'");
    assert_eq!(state, "0A000");
    assert!(msg.starts_with("ALTER TABLE"), "{msg}");
    // One statement, in the singular (it used to read "statements that refers to").
    assert!(
        msg.starts_with("ALTER TABLE statement that refers to \"customers\""),
        "{msg}"
    );
    assert!(!msg.contains("statements that"), "{msg}");
    assert!(f.plan("TRUNCATE customers").rejection.is_none());
}

#[test]
fn error_messages_never_contain_literals() {
    let f = fixture();
    for sql in [
        "select id from customers where notes = 'SENTINEL-4711'",
        "select id from customers where phone like 'SENTINEL-4711'",
        "insert into customers (phone) values (upper('SENTINEL-4711'))",
        "SELEKT phone FROM customers WHERE x = 'SENTINEL-4711'",
        "DO $$ BEGIN UPDATE customers SET phone = 'SENTINEL-4711'; END $$",
    ] {
        let (_, msg) = f.rejection(sql);
        assert!(!msg.contains("SENTINEL"), "{sql}: {msg}");
    }
    let p = f.accepted("insert into accounts (id, balance, active) values (1, 4711, true)");
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("4711") && !dbg.contains("true\""), "{dbg}");
}

// ------------------------------------------------------------------ COPY, PREPARE, multi

#[test]
fn copy_from_stdin_csv_lists_encrypted_fields() {
    let f = fixture();
    let p =
        f.accepted("COPY customers (id, phone, notes) FROM STDIN WITH (FORMAT csv, HEADER true)");
    let c = p.copy.unwrap();
    assert_eq!(c.direction, CopyDirection::FromStdin);
    assert_eq!(c.format, CopyFormat::Csv);
    assert!(c.header);
    assert_eq!(c.fields, vec![None, Some(PHONE), Some(NOTES)]);
    let p = f.accepted("copy accounts to stdout");
    assert_eq!(
        p.copy.unwrap().fields,
        vec![None, Some(BALANCE), Some(ACTIVE)]
    );
    let p = f.accepted("copy (select id, phone from customers) to stdout");
    assert_eq!(p.copy.unwrap().fields, vec![None, Some(PHONE)]);
}

#[test]
fn copy_of_protected_table_from_file_or_binary_is_rejected() {
    let f = fixture();
    let (state, msg) = f.rejection("COPY customers FROM '/tmp/x.csv'");
    assert_eq!(state, "0A000");
    assert!(msg.contains("public.customers"), "{msg}");
    f.rejection("COPY customers TO PROGRAM 'cat'");
    let (_, msg) = f.rejection("COPY customers (id, phone) FROM STDIN WITH (FORMAT binary)");
    assert!(msg.contains("binary"), "{msg}");
    assert!(f
        .plan("copy pgbench_accounts from '/tmp/x'")
        .rejection
        .is_none());
}

#[test]
fn prepare_and_execute_record_what_execute_needs() {
    let f = fixture();
    let p = f.accepted("PREPARE ins AS INSERT INTO customers (id, phone) VALUES ($1, $2)");
    assert_eq!(p.kind, StatementKind::Prepare);
    let prep = p.prepare.unwrap();
    assert_eq!(prep.name, "ins");
    assert_eq!(prep.statement.params[0].index, 2);
    let sql = "EXECUTE ins(1, '555-0199')";
    let e = f.accepted(sql);
    let exec = e.execute.unwrap();
    assert_eq!(exec.name, "ins");
    assert!(matches!(
        exec.args[1],
        ExecuteArg::Literal {
            value: LiteralValue::Literal { index: 1, .. },
            ..
        }
    ));
    let (lits, params) = exec.bind(&prep.statement).unwrap();
    assert!(params.is_empty());
    assert_eq!(lits.len(), 1);
    let fp = fingerprint(sql);
    assert_eq!(
        pgcloak::sql::rewrite::action_plaintext(sql, &fp, &lits[0]).unwrap(),
        "555-0199"
    );
    f.rejection("PREPARE ins2 (int, text) AS INSERT INTO customers (id, phone) VALUES ($1, $2)");
}

#[test]
fn multi_statement_rejection_applies_to_its_statement_only() {
    let f = fixture();
    let plans = f.plans("insert into customers (phone) values ('1'); select id from customers where notes = 'x'; select 1");
    assert_eq!(plans.len(), 3);
    assert!(plans[0].rejection.is_none());
    assert_eq!(plans[0].literals.len(), 1);
    assert!(plans[1].rejection.is_some());
    assert!(plans[2].rejection.is_none());
}

#[test]
fn explain_encrypts_its_statement_literals() {
    let f = fixture();
    let sql = "explain select id from customers where phone = '1'";
    let p = f.accepted(sql);
    assert_eq!(p.kind, StatementKind::Explain);
    assert_eq!(literal_texts(sql, &p).len(), 1);
}

#[test]
fn delete_where_encrypts_predicate_literal() {
    let f = fixture();
    let sql = "delete from customers where phone = '555' returning phone";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p).len(), 1);
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
}

#[test]
fn whole_row_reference_to_protected_table_is_rejected() {
    let f = fixture();
    let (state, _) = f.rejection("select to_jsonb(c) from customers c");
    assert_eq!(state, "0A000");
    f.rejection("select row_to_json(c.*) from customers c");
    f.accepted("select to_jsonb(a) from pgbench_accounts a");
}

#[test]
fn statement_after_search_path_change_in_same_string_is_rejected() {
    let f = fixture();
    let plans =
        f.plans("SET search_path = app; select id from customers where phone = 'x'; select 1");
    assert!(plans[0].rejection.is_none());
    assert!(plans[1].rejection.is_some());
    assert!(plans[1].literals.is_empty());
    assert!(plans[2].rejection.is_none());
    let plans =
        f.plans("select set_config('search_path', 'app', false); select phone from customers");
    assert!(plans[1].rejection.is_some());
}

#[test]
fn table_function_beside_protected_table_keeps_lineage() {
    let f = fixture();
    let p = f.accepted("select phone, g from customers, generate_series(1, 3) g");
    let l: Vec<_> = p
        .result
        .unwrap()
        .columns
        .iter()
        .map(|c| c.lineage)
        .collect();
    assert_eq!(l, vec![Lineage::Encrypted(PHONE), Lineage::Plain]);
    let (state, _) =
        f.rejection("select u from customers c cross join lateral unnest(array[c.phone]) u");
    assert_eq!(state, "0A000");
}

#[test]
fn correlated_exists_within_key_group_is_allowed() {
    let f = fixture();
    let p = f.accepted(
        "select c.id from customers c where exists (select 1 from orders o where o.phone = c.phone) \
         and c.phone in (select phone from orders where phone = $1)",
    );
    assert_eq!(p.params[0].column, ORDER_PHONE);
}

#[test]
fn data_modifying_cte_encrypts_and_returns_lineage() {
    let f = fixture();
    let sql = "with ins as (insert into customers (phone) values ('1') returning id, phone) select * from ins";
    let p = f.accepted(sql);
    assert_eq!(p.literals.len(), 1);
    let l: Vec<_> = p
        .result
        .unwrap()
        .columns
        .iter()
        .map(|c| c.lineage)
        .collect();
    assert_eq!(l, vec![Lineage::Plain, Lineage::Encrypted(PHONE)]);
}

#[test]
fn select_into_copying_ciphertext_is_rejected() {
    let f = fixture();
    f.rejection("select phone into newtab from customers");
    f.rejection("create table t2 as select * from customers");
}

#[test]
fn copy_to_stdout_of_deny_column_gets_42501() {
    let f = fixture();
    let p = f.accepted("copy customers (id, national_id) to stdout");
    assert_eq!(
        p.authorize(&f.policy, &roles(&["crm_app"]))
            .unwrap_err()
            .sqlstate(),
        "42501"
    );
    p.authorize(&f.policy, &roles(&["compliance"])).unwrap();
    let p = f.accepted("copy customers (id, national_id) from stdin");
    p.authorize(&f.policy, &roles(&["crm_app"])).unwrap();
}

#[test]
fn national_and_unicode_string_literals_are_located() {
    let f = fixture();
    let sql = r"insert into customers (phone, notes) values (N'12', U&'\0033x')";
    let p = f.accepted(sql);
    assert_eq!(
        literal_texts(sql, &p),
        vec![(PHONE, "12".to_string()), (NOTES, "3x".to_string())]
    );
}

#[test]
fn uescape_identifier_is_decoded_with_its_escape_character() {
    let f = fixture();
    let p = f.accepted(r#"select U&"!0070hone" UESCAPE '!' from customers"#);
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
    // An invalid escape character is still an error.
    let (state, _) = f.rejection(r#"select U&"a0070hone" UESCAPE 'a' from customers"#);
    assert_eq!(state, "42601");
}

#[test]
fn unterminated_statement_naming_policy_column_is_rejected() {
    let f = fixture();
    let (state, _) = f.rejection("select phone from customers where name = 'abc");
    assert_eq!(state, "42601");
}

#[test]
fn cast_or_typed_literal_operand_is_rejected_with_advice() {
    let f = fixture();
    let (state, msg) = f.rejection("select id from customers where phone = '5'::text");
    assert_eq!(state, "0A000");
    assert!(
        msg.contains("literal") && msg.contains("public.customers.phone"),
        "{msg}"
    );
    f.rejection("insert into customers (birth_date) values (date '2020-01-01')");
}
