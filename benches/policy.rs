//! Policy hot-path costs: access decisions, column lookup and masks.
//!
//! Target: these run per result column (access, find) and per masked value (masks),
//! so each should stay well under the 2 µs budget of an analysis-cache hit;
//! aim for tens of nanoseconds for lookups and well under 1 µs for masks.
//! Run: `cargo bench --bench policy`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use pgcloak::policy::{apply_mask, Mask, Policy, RoleName, TableName};

fn example() -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.yaml");
    match Policy::load(&path, 1) {
        Ok(p) => p,
        Err(e) => panic!("config/policy.yaml must load:\n{e}"),
    }
}

fn lookups(c: &mut Criterion) {
    let p = example();
    let customers = TableName::new("public", "customers");
    let orders = TableName::new("public", "orders");
    let phone = p.find(&customers, "phone").expect("phone");
    let session: Vec<RoleName> = ["app_login", "marketing", "support_agent"]
        .iter()
        .map(|r| RoleName::from_sql(r))
        .collect();
    let outsider = vec![RoleName::from_sql("nobody")];

    c.bench_function("access_for/3_roles_listed", |b| {
        b.iter(|| p.access_for(black_box(&session), black_box(phone)))
    });
    c.bench_function("access_for/public_fallback", |b| {
        b.iter(|| p.access_for(black_box(&outsider), black_box(phone)))
    });
    c.bench_function("may_search/granted", |b| {
        b.iter(|| p.may_search(black_box(&session), black_box(phone)))
    });
    c.bench_function("find/hit", |b| {
        b.iter(|| p.find(black_box(&customers), black_box("national_id")))
    });
    c.bench_function("find/miss_unprotected_table", |b| {
        b.iter(|| p.find(black_box(&orders), black_box("id")))
    });
}

fn masks(c: &mut Criterion) {
    let token = |v: &str| format!("{:016x}", v.len());
    let cases = [
        (
            "keep_first/vietnamese_name",
            Mask::KeepFirst { n: 2, fill: '*' },
            "Nguyễn Văn An",
        ),
        (
            "keep_last/phone",
            Mask::KeepLast { n: 3, fill: '*' },
            "0912345567",
        ),
        ("email", Mask::Email, "alice.nguyen@example.com"),
        ("fixed", Mask::Fixed("REDACTED".into()), "anything at all"),
        (
            "pseudonym/closure_only",
            Mask::Pseudonym,
            "12 Lý Thường Kiệt",
        ),
    ];
    for (name, mask, value) in cases {
        c.bench_function(&format!("mask/{name}"), |b| {
            b.iter(|| apply_mask(black_box(&mask), black_box(value), token))
        });
    }
}

fn loading(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy.yaml");
    let text = std::fs::read_to_string(path).expect("read example");
    c.bench_function("load_str/example_policy", |b| {
        b.iter(|| Policy::load_str(black_box(&text), "policy.yaml", 1).is_ok())
    });
}

criterion_group!(benches, lookups, masks, loading);
criterion_main!(benches);
