//! Envelope encrypt/decrypt throughput for both schemes.
//!
//! Target (DESIGN.md): encrypt + decrypt of a 64-byte value under 1 µs on the dev machine.
//! Run: `cargo bench --bench crypto -- --warm-up-time 1 --measurement-time 2`

#[path = "../tests/support/crypto_fixture.rs"]
mod fixture;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pgcloak::crypto::CipherSuite;

fn envelopes(c: &mut Criterion) {
    let suite = CipherSuite::new(&fixture::keyring(), &fixture::policy()).unwrap();
    for (scheme, col) in [
        ("randomized", fixture::EMAIL),
        ("deterministic", fixture::PHONE),
    ] {
        let mut g = c.benchmark_group(format!("envelope/{scheme}"));
        for size in [16usize, 64, 1024, 16 * 1024] {
            let pt = vec![0x5au8; size];
            let env = suite.encrypt(col, &pt).unwrap();
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_with_input(BenchmarkId::new("encrypt", size), &pt, |b, pt| {
                b.iter(|| suite.encrypt(col, black_box(pt)).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("decrypt", size), &env, |b, env| {
                b.iter(|| suite.decrypt(col, black_box(env)).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("encrypt+decrypt", size), &pt, |b, pt| {
                b.iter(|| {
                    let e = suite.encrypt(col, black_box(pt)).unwrap();
                    suite.decrypt(col, &e).unwrap()
                })
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("pseudonym");
    g.bench_function("64", |b| {
        b.iter(|| {
            suite
                .pseudonym(fixture::PHONE, black_box(&[7u8; 64]))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, envelopes);
criterion_main!(benches);
