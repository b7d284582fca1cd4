//! The egress check (issue 11, item 7): the cost of proving a DataRow carries no
//! envelope a role may not see, added to every row of every result set while a
//! policy is in force.
//!
//! Target: within the pass-through budget of DESIGN.md (statements that touch
//! nothing protected within 5% of relay mode). A pgbench `-S` row is one int4; the
//! interesting cases are wide rows of text.
//! Run: `cargo bench --bench egress -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgcloak::crypto::{CipherSuite, Keyring, MasterKey};
use pgcloak::datapath::egress::EgressCheck;
use pgcloak::datapath::Protection;
use pgcloak::policy::{Policy, RoleName, TableName};
use pgcloak::wire::extended::{begin_data_row, finish_message, put_value};

const POLICY: &str = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { reader: plaintext, auditor: ciphertext } }
";

fn row(values: &[&[u8]]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let start = begin_data_row(&mut out, values.len());
    for v in values {
        put_value(&mut out, Some(v));
    }
    finish_message(&mut out, start);
    out.to_vec()
}

fn hex(b: &[u8]) -> Vec<u8> {
    let mut s = b"\\x".to_vec();
    for x in b {
        s.extend_from_slice(format!("{x:02x}").as_bytes());
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(1, MasterKey::from_bytes([7u8; 32]));
    let keyring = Keyring::from_parts(1, 1, std::collections::BTreeMap::new(), keys).unwrap();
    let policy = Arc::new(Policy::load_str(POLICY, "policy.yaml", 1).unwrap());
    let suite = CipherSuite::new(&keyring, &policy).unwrap();
    let col = policy.find(&TableName::new("public", "t"), "a").unwrap();
    let env = suite.encrypt(col, b"0912345678").unwrap();
    let prot = Protection::new(policy, suite, 100);
    let reader = [RoleName::from_sql("reader")];
    let auditor = [RoleName::from_sql("auditor")];

    let text = b"Nguyen Van An, 12 Le Loi, District 1, Ho Chi Minh City".as_slice();
    let int = b"123456".as_slice();
    let ts = b"2026-11-30 16:00:31.123456+00".as_slice();
    let env_hex = hex(&env);
    let cases: Vec<(&str, Vec<u8>, &[RoleName])> = vec![
        ("pgbench_one_int4", row(&[b"4711"]), &reader),
        (
            "10_text_columns_clean",
            row(&[text, text, text, text, text, text, text, text, text, text]),
            &reader,
        ),
        (
            "10_mixed_columns_clean",
            row(&[int, text, ts, int, text, ts, int, text, ts, text]),
            &reader,
        ),
        (
            "10_columns_one_envelope_ciphertext_reader",
            row(&[int, text, ts, int, &env_hex, ts, int, text, ts, text]),
            &auditor,
        ),
        (
            "10_columns_one_envelope_refused",
            row(&[int, text, ts, int, &env_hex, ts, int, text, ts, text]),
            &reader,
        ),
    ];
    let mut g = c.benchmark_group("egress/data_row");
    for (name, msg, roles) in &cases {
        let check = EgressCheck { prot: &prot, roles };
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(*name, |b| b.iter(|| check.data_row(black_box(msg))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
