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
fn update_set_literal_and_param() {
    let f = fixture();
    let sql = "UPDATE customers SET phone = '555', notes = $1, name = 'n' WHERE id = $2";
    let p = f.accepted(sql);
    assert_eq!(literal_texts(sql, &p), vec![(PHONE, "555".to_string())]);
    assert_eq!(p.params.len(), 1);
    assert_eq!(p.params[0].column, NOTES);
}

#[test]
fn insert_select_from_same_key_group_is_allowed() {
    let f = fixture();
    f.accepted("insert into orders (id, phone) select id, phone from customers");
}

#[test]
fn update_from_same_key_group_is_allowed() {
    let f = fixture();
    let p = f.accepted(
        "update orders o set phone = c.phone from customers c where c.id = o.customer_id",
    );
    assert!(p.touches_policy);
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
fn in_list_up_to_the_cap_is_accepted() {
    let f = fixture();
    let list: Vec<String> = (0..100).map(|i| format!("'{i}'")).collect();
    f.accepted(&format!(
        "select id from customers where phone in ({})",
        list.join(",")
    ));
}

#[test]
fn order_by_position_of_a_plain_column_is_accepted() {
    let f = fixture();
    f.accepted("select id, phone from customers order by 1");
}

#[test]
fn is_null_and_count_work_on_every_column() {
    let f = fixture();
    f.accepted("select count(notes), count(*) from customers where notes is null and birth_date is not null");
    let p = f.accepted("select count(distinct phone) from customers");
    assert_eq!(p.searched, vec![PHONE]);
}

#[test]
fn group_by_and_distinct_need_deterministic_columns() {
    let f = fixture();
    let p = f.accepted("select phone, count(*) from customers group by phone");
    assert_eq!(p.searched, vec![PHONE]);
    f.accepted("select distinct phone from customers");
    f.accepted("select phone, count(*) from customers group by 1");
}

#[test]
fn join_within_key_group_is_allowed() {
    let f = fixture();
    let p = f.accepted("select c.id, o.total from customers c join orders o on o.phone = c.phone");
    assert_eq!(p.searched, vec![PHONE, ORDER_PHONE]);
    f.accepted("select * from customers join orders using (phone)");
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
fn union_branches_that_agree_keep_lineage() {
    let f = fixture();
    let p = f.accepted("select phone from customers union all select phone from orders");
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
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
fn unicode_escaped_column_name_is_resolved() {
    let f = fixture();
    let p = f.accepted(r#"select U&"\0070hone" from customers"#);
    assert_eq!(
        p.result.unwrap().columns[0].lineage,
        Lineage::Encrypted(PHONE)
    );
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
fn do_block_with_dynamic_sql_is_refused_per_session() {
    let f = fixture();
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
fn garbage_sql_naming_no_policy_column_passes() {
    let f = fixture();
    let plans = f.plans("SELEKT 1 FROM elsewhere; select 2");
    assert_eq!(plans.len(), 2);
    assert!(plans.iter().all(|p| p.rejection.is_none()));
}

#[test]
fn an_unsupported_statement_is_named_in_the_singular() {
    let f = fixture();
    let (state, msg) = f.rejection("ALTER TABLE customers ALTER COLUMN phone SET DEFAULT 'x'");
    assert_eq!(state, "0A000");
    // One statement, in the singular (it used to read "statements that refers to").
    assert!(
        msg.starts_with("ALTER TABLE statement that refers to \"customers\""),
        "{msg}"
    );
    assert!(!msg.contains("statements that"), "{msg}");
}

#[test]
fn truncate_of_a_protected_table_passes() {
    let f = fixture();
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
fn copy_of_an_unprotected_table_from_a_file_passes() {
    let f = fixture();
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
fn whole_row_reference_to_an_unprotected_table_passes() {
    let f = fixture();
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
}

// ------------------------------------------------------------------ refusal matrix
//
// One table per row of README's "SQL on encrypted columns" table that pgcloak refuses.
// Each case: the statement, the SQLSTATE it must get, and fragments its message must
// contain (a fragment starting with `^` must start the message). Every case runs in one
// test per table; all failures of a table are reported together.

/// A statement pgcloak must refuse, and how.
struct Refused {
    sql: String,
    sqlstate: &'static str,
    says: &'static [&'static str],
}

fn refused(
    sql: impl Into<String>,
    sqlstate: &'static str,
    says: &'static [&'static str],
) -> Refused {
    Refused {
        sql: sql.into(),
        sqlstate,
        says,
    }
}

/// Runs a table of refusals against the fixture policy and reports every mismatch.
fn assert_refused(row: &str, cases: &[Refused]) {
    let f = fixture();
    let mut failures = Vec::new();
    for case in cases {
        let plans = f.plans(&case.sql);
        let [plan] = plans.as_slice() else {
            failures.push(format!(
                "{}: {} statements, expected one",
                case.sql,
                plans.len()
            ));
            continue;
        };
        let Some(e) = &plan.rejection else {
            failures.push(format!(
                "{}: accepted, expected {}",
                case.sql, case.sqlstate
            ));
            continue;
        };
        let (state, msg) = (e.sqlstate(), e.message());
        if state != case.sqlstate {
            failures.push(format!(
                "{}: got {state}, expected {} ({msg})",
                case.sql, case.sqlstate
            ));
        }
        for fragment in case.says {
            let found = match fragment.strip_prefix('^') {
                Some(prefix) => msg.starts_with(prefix),
                None => msg.contains(fragment),
            };
            if !found {
                failures.push(format!("{}: message lacks `{fragment}`: {msg}", case.sql));
            }
        }
    }
    assert!(failures.is_empty(), "{row}:\n  {}", failures.join("\n  "));
}

#[test]
fn refused_select_through_union_whose_branches_disagree() {
    assert_refused(
        "SELECT col through UNION",
        &[
            refused(
                "select phone from customers union all select name from customers",
                "0A000",
                &["UNION"],
            ),
            refused(
                "select phone from customers union select national_id from customers",
                "0A000",
                &[],
            ),
            refused(
                "select notes from customers union select notes from customers",
                "0A000",
                &[],
            ),
        ],
    );
}

#[test]
fn refused_equality_on_randomized_columns_and_its_limits() {
    let long_in_list: Vec<String> = (0..101).map(|i| format!("'{i}'")).collect();
    assert_refused(
        "col = value, <>, IN (...), = ANY($1), IS [NOT] DISTINCT FROM",
        &[
            refused(
                "select id from customers where notes = 'x'",
                "0A000",
                &["randomized column public.customers.notes", "deterministic"],
            ),
            refused(
                "select id from customers where notes <> 'x'",
                "0A000",
                &["public.customers.notes"],
            ),
            refused(
                "select id from customers where notes in ('a', 'b')",
                "0A000",
                &["public.customers.notes"],
            ),
            refused(
                "select id from customers where notes = any($1)",
                "0A000",
                &["public.customers.notes"],
            ),
            refused(
                "select id from customers where notes is distinct from 'x'",
                "0A000",
                &["public.customers.notes"],
            ),
            refused(
                format!(
                    "select id from customers where phone in ({})",
                    long_in_list.join(",")
                ),
                "0A000",
                &["limit of 100"],
            ),
            refused(
                "select id from customers where phone = '5'::text",
                "0A000",
                &["literal", "public.customers.phone"],
            ),
        ],
    );
}

#[test]
fn refused_grouping_and_joins_outside_a_key_group() {
    assert_refused(
        "GROUP BY col, DISTINCT, equality joins",
        &[
            refused(
                "select count(distinct notes) from customers",
                "0A000",
                &["randomized"],
            ),
            refused(
                "select notes, count(*) from customers group by notes",
                "0A000",
                &["public.customers.notes"],
            ),
            refused(
                "select distinct birth_date from customers",
                "0A000",
                &["public.customers.birth_date"],
            ),
            refused(
                "select 1 from customers c join orders o on o.phone = c.national_id",
                "0A000",
                &["key_group"],
            ),
            refused(
                "select 1 from customers c join orders o on o.phone = c.name",
                "0A000",
                &[],
            ),
        ],
    );
}

#[test]
fn refused_copying_a_protected_value_elsewhere() {
    assert_refused(
        "INSERT ... SELECT / UPDATE ... FROM copying a protected value",
        &[
            refused("UPDATE customers SET name = phone", "0A000", &["public.customers.phone"]),
            refused(
                "insert into orders (id, phone) select id, name from customers",
                "0A000",
                &["public.orders.phone"],
            ),
            refused(
                "insert into orders (id, phone) select id, national_id from customers",
                "0A000",
                &["public.orders.phone"],
            ),
            refused(
                "update orders o set phone = c.national_id from customers c where c.id = o.customer_id",
                "0A000",
                &["public.orders.phone"],
            ),
        ],
    );
}

#[test]
fn refused_on_conflict_assigning_another_column() {
    assert_refused(
        "ON CONFLICT (col) DO UPDATE SET col = EXCLUDED.col",
        &[refused(
            "INSERT INTO customers (id, phone) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.name",
            "0A000",
            &["public.customers.phone"],
        )],
    );
}

#[test]
fn refused_pattern_range_order_and_aggregate_operations() {
    assert_refused(
        "LIKE, ILIKE, SIMILAR TO, <, >, BETWEEN, ORDER BY col, min/max/sum",
        &[
            refused(
                "select id from customers where notes like '%x%'",
                "0A000",
                &["LIKE", "public.customers.notes"],
            ),
            refused(
                "select id from customers where phone like '5%'",
                "0A000",
                &["LIKE", "public.customers.phone"],
            ),
            refused(
                "select id from customers where phone ilike '5%'",
                "0A000",
                &["ILIKE", "public.customers.phone"],
            ),
            refused(
                "select id from customers where phone < '5'",
                "0A000",
                &["<", "public.customers.phone"],
            ),
            refused(
                "select id from customers where phone >= $1",
                "0A000",
                &[">=", "public.customers.phone"],
            ),
            refused(
                "select id from customers where phone between '1' and '2'",
                "0A000",
                &["BETWEEN", "public.customers.phone"],
            ),
            refused(
                "select id from customers where phone similar to '5%'",
                "0A000",
                &["public.customers.phone"],
            ),
            refused(
                r#"select id from customers where U&"\0070hone" like '5%'"#,
                "0A000",
                &["public.customers.phone"],
            ),
            refused(
                "select id, phone from customers order by phone",
                "0A000",
                &["ORDER BY", "public.customers.phone"],
            ),
            refused(
                "select id, phone from customers order by 2",
                "0A000",
                &["public.customers.phone"],
            ),
            refused(
                "select id, phone as p from customers order by p",
                "0A000",
                &["public.customers.phone"],
            ),
            refused("select max(phone) from customers", "0A000", &["max"]),
            refused("select min(phone) from customers", "0A000", &["min"]),
            refused("select sum(balance) from accounts", "0A000", &["sum"]),
        ],
    );
}

#[test]
fn refused_functions_casts_and_operators_on_the_column() {
    assert_refused(
        "functions, casts, operators on the column",
        &[
            refused("select upper(phone) from customers", "0A000", &["upper"]),
            refused(
                "select id from customers where lower(phone) = 'x'",
                "0A000",
                &["lower"],
            ),
            refused("select phone::text from customers", "0A000", &["cast"]),
            refused("select balance + 1 from accounts", "0A000", &["+"]),
            refused(
                "select id from accounts where balance * 2 = 4",
                "0A000",
                &["*"],
            ),
            refused(
                "select phone || 'x' from customers",
                "0A000",
                &["public.customers.phone"],
            ),
            refused(
                "select u from customers c cross join lateral unnest(array[c.phone]) u",
                "0A000",
                &["public.customers.phone"],
            ),
        ],
    );
}

#[test]
fn refused_expressions_stored_into_the_column_and_select_into() {
    assert_refused(
        "an expression stored into the column, SELECT ... INTO copying ciphertext",
        &[
            refused(
                "insert into customers (phone) values (upper('abc'))",
                "0A000",
                &["public.customers.phone"],
            ),
            refused(
                "insert into customers (birth_date) values (date '2020-01-01')",
                "0A000",
                &["public.customers.birth_date"],
            ),
            refused(
                "select phone into newtab from customers",
                "0A000",
                &["SELECT INTO", "ciphertext"],
            ),
            refused(
                "create table t2 as select * from customers",
                "0A000",
                &["\"customers\"", "protected columns"],
            ),
        ],
    );
}

#[test]
fn refused_whole_row_references() {
    assert_refused(
        "whole-row references",
        &[
            refused(
                "select to_jsonb(c) from customers c",
                "0A000",
                &["public.customers"],
            ),
            refused(
                "select row_to_json(c.*) from customers c",
                "0A000",
                &["public.customers"],
            ),
            refused(
                "select (c.*)::text from customers c",
                "0A000",
                &["public.customers"],
            ),
            refused(
                "select row(c.*) from customers c",
                "0A000",
                &["public.customers"],
            ),
        ],
    );
}

#[test]
fn refused_parameter_used_for_a_protected_column_and_elsewhere() {
    assert_refused(
        "one $n used for a protected column and anywhere else",
        &[
            // $2 is used for phone (deterministic) and notes (randomized): different keys.
            refused(
                "insert into customers (id, phone, notes) values ($1, $2, DEFAULT), (2, NULL, 'x'), (3, $4, $2)",
                "0A000",
                &["$2"],
            ),
            refused("insert into customers (phone, name) values ($1, $1)", "0A000", &["$1"]),
            refused("select $1, id from customers where phone = $1", "0A000", &["$1"]),
        ],
    );
}

#[test]
fn refused_bodies_and_statements_pgcloak_cannot_see_into() {
    assert_refused(
        "DO blocks, function bodies and unparsable statements naming a protected relation",
        &[
            refused("DO $$ BEGIN UPDATE customers SET phone = 'x'; END $$", "0A000", &["DO block"]),
            refused(
                "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $f$ select phone from customers $f$",
                "0A000",
                &[],
            ),
            refused(
                "create or replace function f() returns text language sql as 'select national_id from x'",
                "0A000",
                &[],
            ),
            refused(r"create procedure p() language sql as E'select \x70hone from t'", "0A000", &[]),
            refused("SELEKT phone FROM customers WHERE", "42601", &["phone"]),
            refused("select phone from customers where name = 'abc", "42601", &[]),
            // An invalid escape character is still an error.
            refused(r#"select U&"a0070hone" UESCAPE 'a' from customers"#, "42601", &[]),
            refused(
                "ALTER TABLE customers ALTER COLUMN phone SET DEFAULT 'x'",
                "0A000",
                &["^ALTER TABLE"],
            ),
        ],
    );
}

#[test]
fn refused_copy_from_a_file_or_in_binary() {
    assert_refused(
        "COPY ... FROM a file or in binary format on a protected table",
        &[
            refused(
                "COPY customers FROM '/tmp/x.csv'",
                "0A000",
                &["public.customers"],
            ),
            refused(
                "COPY customers TO PROGRAM 'cat'",
                "0A000",
                &["public.customers"],
            ),
            refused(
                "COPY customers (id, phone) FROM STDIN WITH (FORMAT binary)",
                "0A000",
                &["binary"],
            ),
        ],
    );
}

// ------------------------------------------------------------------ typed refusals
//
// The refusal is data: its operation, reason and the policy column it names are
// asserted as values, not only as text.

#[test]
fn refusals_carry_their_operation_reason_and_column() {
    use pgcloak::sql::refusal::{Operation, Reason};
    use pgcloak::sql::Refusal;
    let f = fixture();
    let refusal = |sql: &str| -> Refusal {
        let p = f.plan(sql);
        p.rejection
            .unwrap_or_else(|| panic!("expected a rejection for {sql}"))
            .refusal()
            .clone()
    };
    let column = |r: &Refusal| r.column().map(|c| c.as_str().to_string());

    let r = refusal("select id from customers where notes = 'x'");
    assert_eq!(r.operation(), Operation::Equal);
    assert!(matches!(r.reason(), Reason::RandomizedColumn(_)), "{r:?}");
    assert_eq!(column(&r).as_deref(), Some("public.customers.notes"));

    let r = refusal("select id, phone from customers order by phone");
    assert!(matches!(r.reason(), Reason::OrderByEncrypted(_)), "{r:?}");
    assert_eq!(column(&r).as_deref(), Some("public.customers.phone"));

    let r = refusal("select id from customers where phone like '5%'");
    assert_eq!(r.operation(), Operation::Like);
    assert!(matches!(r.reason(), Reason::EncryptedOperand(_)), "{r:?}");

    let r = refusal("insert into customers (phone) values (upper('abc'))");
    assert_eq!(r.operation(), Operation::Insert);
    assert!(
        matches!(r.reason(), Reason::ExpressionIntoEncrypted(_)),
        "{r:?}"
    );

    let r = refusal("select to_jsonb(c) from customers c");
    assert!(matches!(r.reason(), Reason::OverWholeRow(_)), "{r:?}");
    assert_eq!(column(&r).as_deref(), Some("public.customers.phone"));

    let r = refusal("SELEKT phone FROM customers WHERE");
    assert!(matches!(r.reason(), Reason::Unparsed(_)), "{r:?}");
    assert_eq!((r.sqlstate(), column(&r)), ("42601", None));

    // A function outside the built-ins table is not named: its name is client text.
    let r = refusal("select my_own_fn(phone) from customers");
    assert_eq!(r.operation(), Operation::Function(None));
    assert!(
        r.to_string()
            .starts_with("a function over encrypted column public.customers.phone"),
        "{r}"
    );
}
