//! Property: for random rows and random access maps, what a role reads through
//! the data path equals what the policy grants it (plaintext, mask, envelope,
//! NULL, or a 42501 refusal before the server), driven with synthetic
//! RowDescription/DataRow messages.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::testkit::{back, contains, front, protection, session, TABLE_OID};
use super::values::bytea_hex;
use crate::policy::TableName;
use crate::wire::extended::{
    begin_data_row, decode_data_row, decode_row_description, encode_query, encode_row_description,
    finish_message, put_value, FieldDescription,
};

const VIEWS: [&str; 6] = [
    "plaintext",
    "masked",
    "ciphertext",
    "null",
    "deny",
    "unlisted",
];
/// (column, policy type, scheme)
const COLS: [(&str, &str, &str); 4] = [
    ("a", "text", "deterministic"),
    ("b", "int4", "randomized"),
    ("c", "text", "randomized"),
    ("d", "int8", "deterministic"),
];

fn policy_yaml(views: &[usize]) -> String {
    let mut y = String::from("version: 1\ntables:\n  public.t:\n");
    for ((col, ty, scheme), &v) in COLS.iter().zip(views) {
        let access = match VIEWS[v] {
            "unlisted" => "{ other_role: plaintext }".to_string(),
            view => format!("{{ r: {view} }}"),
        };
        // A mask is only valid when someone reads it.
        let mask = if VIEWS[v] == "masked" {
            format!("mask: {{ fixed: \"MASK-{col}\" }}, ")
        } else {
            String::new()
        };
        y.push_str(&format!(
            "    {col}: {{ type: {ty}, encryption: {scheme}, {mask}access: {access} }}\n"
        ));
    }
    y
}

fn msg(tag: u8, body: &[u8]) -> Bytes {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    Bytes::from(m)
}

type Row = (Option<String>, Option<i32>, Option<String>, Option<i64>);

fn row_strategy() -> impl Strategy<Value = Row> {
    (
        proptest::option::of("[a-zA-Z0-9 éü-]{0,24}"),
        proptest::option::of(any::<i32>()),
        proptest::option::of("[a-z@.]{0,16}"),
        proptest::option::of(any::<i64>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn each_role_reads_exactly_what_the_policy_grants(
        views in proptest::collection::vec(0usize..VIEWS.len(), 4),
        rows in proptest::collection::vec(row_strategy(), 0..6),
    ) {
        let prot = protection(&policy_yaml(&views), 1);
        let (mut dp, _swap) = session(&prot, &["r"]);
        let upstream = front(&mut dp, &[encode_query(b"SELECT a, b, c, d FROM t")]);
        let all: Vec<u8> = upstream.iter().flat_map(|(_, m)| m.to_vec()).collect();
        if views.iter().any(|&v| VIEWS[v] == "deny") {
            // Refused before the server: a substituted statement raising 42501.
            prop_assert!(contains(&all, b"DO $pgcloak$"));
            prop_assert!(contains(&all, b"ERRCODE = '42501'"));
            return Ok(());
        }
        prop_assert!(!contains(&all, b"$pgcloak$"));
        let t = TableName::new("public", "t");
        let refs: Vec<_> = COLS.iter().map(|(c, _, _)| prot.policy.find(&t, c).unwrap()).collect();
        // The server's answer: bytea columns in text format, envelopes as hex.
        let fields: Vec<FieldDescription> = COLS
            .iter()
            .enumerate()
            .map(|(i, (c, _, _))| FieldDescription {
                name: Bytes::copy_from_slice(c.as_bytes()),
                table_oid: TABLE_OID,
                column_attr: i as i16 + 2,
                type_oid: 17,
                type_len: -1,
                type_mod: -1,
                format: 0,
            })
            .collect();
        let mut rd = BytesMut::new();
        encode_row_description(&fields, &mut rd);
        let mut server = vec![rd.freeze()];
        let mut envelopes = Vec::new();
        for (a, b, c, d) in &rows {
            let plain = [a.clone(), b.map(|x| x.to_string()), c.clone(), d.map(|x| x.to_string())];
            let env: Vec<Option<Vec<u8>>> = plain
                .iter()
                .zip(&refs)
                .map(|(p, &r)| p.as_ref().map(|p| prot.suite.encrypt(r, p.as_bytes()).unwrap()))
                .collect();
            let mut out = BytesMut::new();
            let start = begin_data_row(&mut out, 4);
            for e in &env {
                put_value(&mut out, e.as_ref().map(|e| bytea_hex(e)).as_deref());
            }
            finish_message(&mut out, start);
            server.push(out.freeze());
            envelopes.push((plain, env));
        }
        server.push(msg(b'C', b"SELECT 0\0"));
        server.push(msg(b'Z', b"I"));
        let client = back(&mut dp, &server);
        prop_assert_eq!(client.len(), rows.len() + 3);
        let described = decode_row_description(&client[0].1).unwrap();
        for (i, &v) in views.iter().enumerate() {
            let want_oid = match VIEWS[v] {
                "plaintext" | "null" | "unlisted" => match COLS[i].1 { "int4" => 23, "int8" => 20, _ => 25 },
                "masked" => 25,
                _ => 17,
            };
            prop_assert_eq!(described[i].type_oid, want_oid, "column {}", COLS[i].0);
        }
        for (k, (plain, env)) in envelopes.iter().enumerate() {
            let got = decode_data_row(&client[k + 1].1).unwrap();
            for (i, &v) in views.iter().enumerate() {
                let want: Option<Vec<u8>> = match (VIEWS[v], &plain[i]) {
                    (_, None) => None,
                    ("plaintext", Some(p)) => Some(p.as_bytes().to_vec()),
                    ("masked", Some(_)) => Some(format!("MASK-{}", COLS[i].0).into_bytes()),
                    ("ciphertext", Some(_)) => env[i].as_ref().map(|e| bytea_hex(e)),
                    _ => None,
                };
                prop_assert_eq!(got[i].map(<[u8]>::to_vec), want, "row {} column {} view {}", k, COLS[i].0, VIEWS[v]);
            }
        }
    }
}
