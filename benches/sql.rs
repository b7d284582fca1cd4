//! SQL analysis benchmarks.
//!
//! Targets (DESIGN.md, "Performance design"): an analysis cache hit under 2 µs; the
//! fast-path scan of a typical pgbench statement well under 1 µs; full analysis of a
//! 200-character statement measured (parsing alone is about 17 µs, hence the cache).
//!
//! Run: `cargo bench --bench sql`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pgcloak::sql::rewrite::rewrite;
use pgcloak::sql::{analyze, fingerprint, may_mention, AnalysisCache};

#[path = "../tests/sql_support/mod.rs"]
mod sql_support;

const PGBENCH_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
const PGBENCH_UPDATE: &str =
    "UPDATE pgbench_accounts SET abalance = abalance + 3210 WHERE aid = 48213;";
/// About 200 characters, touching two encrypted columns.
const STATEMENT_200: &str = "SELECT c.id, c.name, c.phone, o.total FROM customers c JOIN orders o ON o.phone = c.phone \
     WHERE c.national_id = '19800101-1234' AND c.name <> 'nobody' AND o.total > 100 AND c.phone IN ('555-0100', $1)";

fn benches(c: &mut Criterion) {
    let f = sql_support::fixture();
    let ctx = f.ctx();
    assert!(!may_mention(PGBENCH_SELECT, &f.names));
    assert!(may_mention(STATEMENT_200, &f.names));

    c.bench_function("may_mention/pgbench_select", |b| {
        b.iter(|| may_mention(black_box(PGBENCH_SELECT), &f.names))
    });
    c.bench_function("may_mention/pgbench_update", |b| {
        b.iter(|| may_mention(black_box(PGBENCH_UPDATE), &f.names))
    });
    c.bench_function("fingerprint/pgbench_update", |b| {
        b.iter(|| fingerprint(black_box(PGBENCH_UPDATE)))
    });
    c.bench_function("analyze/full_200_chars", |b| {
        b.iter(|| analyze(black_box(STATEMENT_200), &ctx).unwrap())
    });
    let cache = AnalysisCache::new(1024);
    cache.analyze(STATEMENT_200, &[], &ctx).unwrap();
    c.bench_function("cache/hit_200_chars", |b| {
        b.iter(|| {
            let a = cache.analyze(black_box(STATEMENT_200), &[], &ctx).unwrap();
            debug_assert!(a.hit);
            a
        })
    });
    cache.analyze(PGBENCH_UPDATE, &[], &ctx).unwrap();
    c.bench_function("cache/hit_pgbench_update", |b| {
        b.iter(|| cache.analyze(black_box(PGBENCH_UPDATE), &[], &ctx).unwrap())
    });
    let a = cache.analyze(STATEMENT_200, &[], &ctx).unwrap();
    c.bench_function("rewrite/200_chars_two_literals", |b| {
        b.iter(|| {
            rewrite(
                black_box(STATEMENT_200),
                &a.fingerprint,
                a.plans[0].literals.iter(),
                &mut |_, v| Ok::<_, ()>(v.as_bytes().to_vec()),
            )
            .unwrap()
        })
    });
}

criterion_group!(sql, benches);
criterion_main!(sql);
