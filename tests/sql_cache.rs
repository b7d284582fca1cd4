//! The analysis cache: hits across literal values, misses whenever anything in the key
//! changes, and cached plans still rewrite the new text correctly.

mod sql_support;

use pgcloak::policy::Policy;
use pgcloak::sql::rewrite::rewrite;
use pgcloak::sql::{AnalysisCache, AnalysisContext};
use sql_support::*;

#[test]
fn pgbench_simple_statements_with_new_literals_hit_the_cache() {
    let f = fixture();
    let cache = AnalysisCache::new(16);
    let a = cache
        .analyze(
            "UPDATE pgbench_accounts SET abalance = abalance + 12 WHERE aid = 3",
            &[],
            &f.ctx(),
        )
        .unwrap();
    assert!(!a.hit);
    let b = cache
        .analyze(
            "UPDATE pgbench_accounts SET abalance = abalance + 4711 WHERE aid = 99999",
            &[],
            &f.ctx(),
        )
        .unwrap();
    assert!(b.hit);
    assert_eq!(cache.stats(), (1, 1));
}

#[test]
fn cached_plan_encrypts_the_new_literal() {
    let f = fixture();
    let cache = AnalysisCache::new(16);
    cache
        .analyze("select id from customers where phone = '1'", &[], &f.ctx())
        .unwrap();
    let sql = "select id from customers where phone = '98765'";
    let a = cache.analyze(sql, &[], &f.ctx()).unwrap();
    assert!(a.hit);
    let out = rewrite(
        sql,
        &a.fingerprint,
        a.plans[0].literals.iter(),
        &mut |_, v| Ok::<_, ()>(v.as_bytes().to_vec()),
    )
    .unwrap();
    assert_eq!(
        out,
        "select id from customers where phone = '\\x3938373635'::bytea"
    );
}

#[test]
fn any_key_change_misses() {
    let mut f = fixture();
    let cache = AnalysisCache::new(16);
    let sql = "select phone from customers where phone = $1";
    assert!(!cache.analyze(sql, &[], &f.ctx()).unwrap().hit);
    assert!(cache.analyze(sql, &[], &f.ctx()).unwrap().hit);
    assert!(!cache.analyze(sql, &[25], &f.ctx()).unwrap().hit);
    f.search_path = vec!["app".into(), "public".into()];
    let a = cache.analyze(sql, &[], &f.ctx()).unwrap();
    assert!(!a.hit);
    assert!(a.plans[0].params.is_empty(), "app.customers has no policy");
    let empty = Policy::empty(8);
    let ctx = AnalysisContext {
        policy: &empty,
        ..f.ctx()
    };
    assert!(!cache.analyze(sql, &[], &ctx).unwrap().hit);
    f.schema.generation += 1;
    assert!(!cache.analyze(sql, &[], &f.ctx()).unwrap().hit);
}

#[test]
fn do_blocks_are_keyed_by_their_full_text() {
    let f = fixture();
    let cache = AnalysisCache::new(16);
    let ok = cache
        .analyze("do 'begin perform 1; end'", &[], &f.ctx())
        .unwrap();
    assert!(ok.plans[0].rejection.is_none());
    let bad = cache
        .analyze(
            "do 'begin update customers set phone = null; end'",
            &[],
            &f.ctx(),
        )
        .unwrap();
    assert!(!bad.hit);
    assert!(bad.plans[0].rejection.is_some());
}

#[test]
fn capacity_bounds_the_cache() {
    let f = fixture();
    let cache = AnalysisCache::new(2);
    for t in ["a", "b", "c", "d"] {
        cache
            .analyze(&format!("select 1 from {t}"), &[], &f.ctx())
            .unwrap();
    }
    assert_eq!(cache.len(), 2);
}
