//! A prepared statement meets a newer policy generation at Bind: accepted when
//! it means the same, refused (0A000 / 42501) otherwise, never run on a stale plan.

use bytes::Bytes;

use super::testkit::{contains, front, protection, schema, session};
use crate::policy::TableName;
use crate::wire::extended::{Bind, Parse};

const GEN1: &str = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
";

fn parse(name: &str, sql: &str) -> Bytes {
    Parse {
        name: name.into(),
        sql: sql.as_bytes().to_vec(),
        param_types: vec![],
    }
    .encode()
}

fn bind(statement: &str, params: &[&str]) -> Bytes {
    Bind {
        portal: String::new(),
        statement: statement.into(),
        param_formats: vec![],
        params: params
            .iter()
            .map(|p| Some(Bytes::copy_from_slice(p.as_bytes())))
            .collect(),
        result_formats: vec![],
    }
    .encode()
}

/// Parses `sql` under GEN1, swaps in `gen2`, binds `params`: what went upstream at Bind.
fn bind_after_reload(
    sql: &str,
    gen2: &str,
    params: &[&str],
) -> (Vec<(u8, Bytes)>, std::sync::Arc<super::Protection>) {
    let g1 = protection(GEN1, 1);
    let (mut dp, swap) = session(&g1, &["r"]);
    let parsed = front(&mut dp, &[parse("s1", sql)]);
    assert_eq!(parsed.len(), 1, "the Parse itself is accepted under GEN1");
    let g2 = protection(gen2, 2);
    swap.store(g2.clone());
    dp.set_schema(schema(&g2, 2));
    (front(&mut dp, &[bind("s1", params)]), g2)
}

fn assert_refused(upstream: &[(u8, Bytes)], sqlstate: &str, secret: &str) {
    let all: Vec<u8> = upstream.iter().flat_map(|(_, m)| m.to_vec()).collect();
    assert!(
        !contains(&all, secret.as_bytes()),
        "plaintext went upstream"
    );
    assert!(
        upstream
            .iter()
            .all(|(t, _)| *t != b'B' || contains(&all, b"$pgcloak$")),
        "the client's Bind went upstream"
    );
    assert!(contains(&all, b"DO $pgcloak$"), "no injected failure");
    assert!(
        contains(&all, format!("ERRCODE = '{sqlstate}'").as_bytes()),
        "wrong SQLSTATE"
    );
}

#[test]
fn prepared_insert_survives_a_reload_that_renumbers_columns() {
    let gen2 = "version: 1
tables:
  public.t:
    d: { type: int4, access: { r: plaintext } }
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
";
    let (upstream, g2) = bind_after_reload(
        "INSERT INTO t (id, a) VALUES ($1, $2)",
        gen2,
        &["1", "value-of-a-77"],
    );
    let t = TableName::new("public", "t");
    let a2 = g2.policy.find(&t, "a").unwrap();
    assert_ne!(
        a2.0, 0,
        "the reload must renumber the column for this test to mean anything"
    );
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].0, b'B');
    let sent = Bind::decode(&upstream[0].1).unwrap();
    let envelope = sent.params[1].as_ref().unwrap();
    assert_eq!(g2.suite.decrypt(a2, envelope).unwrap(), b"value-of-a-77");
    assert_eq!(sent.params[0].as_deref(), Some(&b"1"[..]));
}

#[test]
fn prepared_insert_is_refused_when_a_column_becomes_protected() {
    let gen2 = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
    b: { type: text, access: { r: plaintext } }
";
    let (upstream, _) = bind_after_reload(
        "INSERT INTO t (id, a, b) VALUES ($1, $2, $3)",
        gen2,
        &["1", "x", "now-secret-b-value"],
    );
    assert_refused(&upstream, "0A000", "now-secret-b-value");
    let all: Vec<u8> = upstream.iter().flat_map(|(_, m)| m.to_vec()).collect();
    assert!(contains(&all, b"cached plan must not change result type"));
}

#[test]
fn prepared_select_is_refused_when_the_result_type_changes() {
    let gen2 = "version: 1
tables:
  public.t:
    a: { type: int4, encryption: deterministic, access: { r: plaintext } }
";
    let (upstream, _) = bind_after_reload("SELECT a FROM t WHERE id = $1", gen2, &["1"]);
    assert_refused(&upstream, "0A000", "never-sent");
}

#[test]
fn prepared_select_is_refused_when_the_column_becomes_denied() {
    let gen2 = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: deny } }
";
    let (upstream, _) = bind_after_reload("SELECT a FROM t WHERE id = $1", gen2, &["1"]);
    assert_refused(&upstream, "42501", "never-sent");
}

#[test]
fn prepared_select_is_accepted_when_only_masks_change() {
    let gen2 = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, mask: { keep_last: 2 }, access: { r: masked }, search: [r] }
";
    let (upstream, g2) = bind_after_reload("SELECT a FROM t WHERE a = $1", gen2, &["needle-9"]);
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].0, b'B');
    let sent = Bind::decode(&upstream[0].1).unwrap();
    let a2 = g2.policy.find(&TableName::new("public", "t"), "a").unwrap();
    let envelope = sent.params[0].as_ref().unwrap();
    assert_eq!(g2.suite.decrypt(a2, envelope).unwrap(), b"needle-9");
}

#[test]
fn fast_path_statement_is_forwarded_after_a_reload() {
    let gen2 = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
    b: { type: text, access: { r: plaintext } }
";
    let msg = bind("s1", &["5"]);
    let (upstream, _) = bind_after_reload("SELECT $1::int + 1", gen2, &["5"]);
    assert_eq!(upstream, vec![(b'B', msg)]);
}

#[test]
fn a_schema_that_no_longer_fits_fails_closed() {
    let g1 = protection(GEN1, 1);
    let (mut dp, swap) = session(&g1, &["r"]);
    front(
        &mut dp,
        &[parse("s1", "INSERT INTO t (id, a) VALUES ($1, $2)")],
    );
    let gen2 = "version: 1
tables:
  public.t:
    b: { type: text, access: { r: plaintext } }
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
";
    swap.store(protection(gen2, 2));
    // The policy's column list changed and no snapshot for it was given: refuse
    // rather than resolve columns by stale indexes.
    let upstream = front(&mut dp, &[bind("s1", &["1", "stale-secret"])]);
    assert_refused(&upstream, "0A000", "stale-secret");
}

#[test]
fn a_reload_of_access_rights_follows_without_a_new_snapshot() {
    let g1 = protection(GEN1, 1);
    let (mut dp, swap) = session(&g1, &["r"]);
    front(
        &mut dp,
        &[parse("s1", "INSERT INTO t (id, a) VALUES ($1, $2)")],
    );
    let gen2 = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: plaintext, s: masked }, mask: { keep_last: 1 } }
";
    let g2 = protection(gen2, 2);
    swap.store(g2.clone());
    let upstream = front(&mut dp, &[bind("s1", &["1", "follow-me"])]);
    assert_eq!(upstream.len(), 1, "{upstream:?}");
    let sent = Bind::decode(&upstream[0].1).unwrap();
    let a2 = g2.policy.find(&TableName::new("public", "t"), "a").unwrap();
    assert_eq!(
        g2.suite
            .decrypt(a2, sent.params[1].as_ref().unwrap())
            .unwrap(),
        b"follow-me"
    );
}
