//! Splicing ciphertext into the client's SQL: only the marked literals change, the
//! result parses, and a plan cached for one set of literal values fits another.

mod sql_support;

use pgcloak::policy::ColumnRef;
use pgcloak::sql::rewrite::{rewrite, RewriteError};
use pgcloak::sql::{fingerprint, StatementPlan};
use sql_support::*;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A stand-in cipher: the column number and the plaintext bytes, reversed.
fn fake(c: ColumnRef, plain: &str) -> Result<Vec<u8>, String> {
    let mut v = vec![c.0 as u8];
    v.extend(plain.bytes().rev());
    Ok(v)
}

fn hex(c: ColumnRef, plain: &str) -> String {
    fake(c, plain)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rewrite_with(sql: &str, plans: &[StatementPlan]) -> String {
    let fp = fingerprint(sql);
    let actions = plans.iter().flat_map(|p| p.literals.iter());
    rewrite(sql, &fp, actions, &mut fake).unwrap()
}

fn assert_parses(sql: &str) {
    Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[test]
fn rewrite_replaces_only_sensitive_literals() {
    let f = fixture();
    let sql = "INSERT INTO customers (id, name, phone) VALUES (1, 'Ann', '555')  -- keep\n";
    let out = rewrite_with(sql, &f.plans(sql));
    assert_eq!(
        out,
        format!(
            "INSERT INTO customers (id, name, phone) VALUES (1, 'Ann', '\\x{}'::bytea)  -- keep\n",
            hex(PHONE, "555")
        )
    );
    assert_parses(&out);
}

#[test]
fn rewritten_sql_parses_for_every_supported_form() {
    let f = fixture();
    for sql in [
        "insert into accounts (id, balance, active) values (1, -42, true), (2, 7, FALSE)",
        "select id from customers where phone in ('1', E'2\\n', U&'\\0033') and national_id <> '4'",
        "select id from customers where phone = any(array['1','2'])",
        "update customers set phone = '1', notes = 'long note with ''quotes''' where phone = '2'",
        "PREPARE p AS select id from customers where phone = '9'; select 1; delete from orders where phone = '3'",
        "insert into customers (phone) values ('a') on conflict (id) do update set phone = 'b'",
    ] {
        let plans = f.plans(sql);
        assert!(plans.iter().all(|p| p.rejection.is_none()), "{sql}");
        let out = rewrite_with(sql, &plans);
        assert_parses(&out);
        let n: usize = plans.iter().map(|p| p.literals.len()).sum();
        assert_eq!(out.matches("::bytea").count(), n, "{out}");
    }
}

#[test]
fn negative_and_boolean_literals_are_replaced_whole() {
    let f = fixture();
    let sql = "insert into accounts (id, balance, active) values (1, -  42, true)";
    let out = rewrite_with(sql, &f.plans(sql));
    assert_eq!(
        out,
        format!(
            "insert into accounts (id, balance, active) values (1, '\\x{}'::bytea, '\\x{}'::bytea)",
            hex(BALANCE, "-42"),
            hex(ACTIVE, "true")
        )
    );
}

#[test]
fn cached_plan_applies_to_other_literal_values() {
    let f = fixture();
    let first = "select id from customers where phone = '1' and name = 'a' and national_id = '22'";
    let plans = f.plans(first);
    let second =
        "select id from customers where phone = '1234567' and name = 'bob''s' and national_id = ''";
    assert_eq!(fingerprint(first).text, fingerprint(second).text);
    let out = rewrite_with(second, &plans);
    assert_eq!(
        out,
        format!(
            "select id from customers where phone = '\\x{}'::bytea and name = 'bob''s' and national_id = '\\x{}'::bytea",
            hex(PHONE, "1234567"),
            hex(NATIONAL_ID, "")
        )
    );
    let fp = fingerprint(second);
    assert_eq!(plans[0].range(&fp), Some(0..second.len()));
}

#[test]
fn execute_arguments_are_encrypted_through_the_prepared_plan() {
    let f = fixture();
    let prep = f.plan("prepare ins as insert into customers (id, phone) values ($1, $2)");
    let sql = "execute ins(5, '555-0100')";
    let exec = f.plan(sql).execute.unwrap();
    let (lits, _) = exec.bind(&prep.prepare.unwrap().statement).unwrap();
    let out = rewrite(sql, &fingerprint(sql), &lits, &mut fake).unwrap();
    assert_eq!(
        out,
        format!("execute ins(5, '\\x{}'::bytea)", hex(PHONE, "555-0100"))
    );
}

#[test]
fn encryption_failure_names_the_column() {
    let f = fixture();
    let sql = "insert into customers (phone) values ('x')";
    let plans = f.plans(sql);
    let err = rewrite(sql, &fingerprint(sql), &plans[0].literals, &mut |_, _| {
        Err::<Vec<u8>, _>("no key")
    })
    .unwrap_err();
    assert!(matches!(err, RewriteError::Encrypt { column, .. } if column == PHONE));
}

#[test]
fn plan_that_does_not_fit_the_text_is_an_error_not_a_panic() {
    let f = fixture();
    let sql = "insert into customers (phone) values ('x')";
    let plans = f.plans(sql);
    let other = "select 1";
    let err = rewrite(other, &fingerprint(other), &plans[0].literals, &mut fake).unwrap_err();
    assert!(matches!(err, RewriteError::Sql(_)));
}
