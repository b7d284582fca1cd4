//! Fuzz target: the data path's backend handler (`DataPath::on_backend`). A fixed client
//! prelude (chosen by the first byte) puts the session in a state where results must be
//! rewritten, then the input's records drive server (and client) messages. Tag 0x01
//! records are DataRows carrying valid envelopes of the body.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fn q(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    common::message(b'Q', &b)
}

fn extended(sql: &str) -> Vec<Vec<u8>> {
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    vec![
        common::message(b'P', &parse),
        common::message(b'B', &[0, 0, 0, 0, 0, 0, 0]),
        common::message(b'D', b"P\0"),
        common::message(b'E', &[0, 0, 0, 0, 0]),
        common::message(b'S', &[]),
    ]
}

const PRELUDES: [&str; 6] = [
    "SELECT * FROM t",
    "SELECT id, a, b, c, d, e FROM t WHERE a = 'x'",
    "COPY t TO STDOUT",
    "COPY t (id, a, b) FROM STDIN",
    "SELECT a FROM t UNION ALL SELECT a FROM t",
    "WITH x AS (SELECT * FROM t) SELECT * FROM x",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut dp = common::session(sel >> 4);
    let sql = PRELUDES[(sel as usize & 0x0f) % PRELUDES.len()];
    let mut recs = Vec::new();
    if sel & 0x08 == 0 {
        recs.push(common::Record::Client(q(sql)));
    } else {
        recs.extend(extended(sql).into_iter().map(common::Record::Client));
    }
    recs.extend(common::records(rest));
    common::drive(&mut dp, &recs);
});
