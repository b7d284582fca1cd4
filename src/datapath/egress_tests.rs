//! The egress check through the data path, with synthetic messages: an envelope
//! in any printed form reaches a client only where its roles see ciphertext.

use bytes::{Bytes, BytesMut};

use super::egress::{may_hold, EgressCheck};
use super::testkit::{back, contains, front, protection, session};
use super::values::bytea_hex;
use super::Protection;
use crate::policy::{RoleName, TableName};
use crate::wire::extended::{
    begin_data_row, encode_query, encode_row_description, finish_message, put_value,
    FieldDescription,
};

const POLICY: &str = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { reader: plaintext, auditor: ciphertext } }
    b: { type: text, access: { reader: plaintext, auditor: ciphertext } }
";

fn envelope(prot: &Protection, col: &str, value: &str) -> Vec<u8> {
    let c = prot
        .policy
        .find(&TableName::new("public", "t"), col)
        .unwrap();
    prot.suite.encrypt(c, value.as_bytes()).unwrap()
}

fn msg(tag: u8, body: &[u8]) -> Bytes {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    Bytes::from(m)
}

fn row_description(names: &[&str], type_oid: u32) -> Bytes {
    let fields: Vec<FieldDescription> = names
        .iter()
        .map(|n| FieldDescription {
            name: Bytes::copy_from_slice(n.as_bytes()),
            table_oid: 0,
            column_attr: 0,
            type_oid,
            type_len: -1,
            type_mod: -1,
            format: 0,
        })
        .collect();
    let mut out = BytesMut::new();
    encode_row_description(&fields, &mut out);
    out.freeze()
}

fn data_row(values: &[Option<&[u8]>]) -> Bytes {
    let mut out = BytesMut::new();
    let start = begin_data_row(&mut out, values.len());
    for v in values {
        put_value(&mut out, *v);
    }
    finish_message(&mut out, start);
    out.freeze()
}

/// Every printed form of `env` the check must recognise.
fn spellings(env: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let hex = String::from_utf8(bytea_hex(env)).unwrap();
    let escape = {
        let mut s = String::new();
        for &b in env {
            match b {
                b'\\' => s.push_str("\\\\"),
                0x20..=0x7e => s.push(b as char),
                _ => s.push_str(&format!("\\{b:03o}")),
            }
        }
        s
    };
    let b64 = |prefix: &[u8]| {
        use base64::Engine;
        let mut v = prefix.to_vec();
        v.extend_from_slice(env);
        base64::engine::general_purpose::STANDARD.encode(v)
    };
    let mut prefixed = b"\x00\x01".to_vec();
    prefixed.extend_from_slice(env);
    vec![
        ("binary", env.to_vec()),
        ("binary after a prefix", prefixed),
        ("hex", hex.clone().into_bytes()),
        ("hex uppercase", hex.to_uppercase().into_bytes()),
        ("hex after ||", format!("\\x0a0b{}", &hex[2..]).into_bytes()),
        ("hex without \\x", hex.as_bytes()[2..].to_vec()),
        (
            "record text",
            format!("(1,\"{}\",x)", hex.replace('\\', "\\\\")).into_bytes(),
        ),
        (
            "array text",
            format!("{{\"{}\"}}", hex.replace('\\', "\\\\")).into_bytes(),
        ),
        (
            "json",
            format!("{{\"phone\": \"{}\"}}", hex.replace('\\', "\\\\")).into_bytes(),
        ),
        (
            "nested record",
            format!("(\"(1,\"\"{}\"\")\")", hex.replace('\\', "\\\\\\\\")).into_bytes(),
        ),
        ("escape", escape.clone().into_bytes()),
        (
            "escape in record",
            format!("(\"{}\")", escape.replace('\\', "\\\\")).into_bytes(),
        ),
        ("base64 aligned", b64(b"").into_bytes()),
        ("base64 +1", b64(b"x").into_bytes()),
        ("base64 +2", b64(b"xy").into_bytes()),
        (
            "xml",
            format!("<row><phone>{}</phone></row>", b64(b"")).into_bytes(),
        ),
    ]
}

/// A simple Query the analysis cannot see into, answered by `rows`: what the client got.
fn run_query(roles: &[&str], rows: &[Bytes]) -> Vec<(u8, Bytes)> {
    let prot = protection(POLICY, 1);
    let (mut dp, _) = session(&prot, roles);
    front(&mut dp, &[encode_query(b"SELECT leak_it()")]);
    let mut server = vec![row_description(&["leak_it", "other"], 25)];
    server.extend_from_slice(rows);
    server.push(msg(b'C', b"SELECT 1\0"));
    server.push(msg(b'Z', b"I"));
    back(&mut dp, &server)
}

fn error_of(out: &[(u8, Bytes)]) -> Option<Bytes> {
    out.iter().find(|(t, _)| *t == b'E').map(|(_, m)| m.clone())
}

#[test]
fn every_spelling_of_an_envelope_is_refused_for_a_role_without_ciphertext_view() {
    let prot = protection(POLICY, 1);
    for col in ["a", "b"] {
        let env = envelope(&prot, col, "SECRET-0912345678");
        for (what, text) in spellings(&env) {
            let rows = [
                data_row(&[Some(b"fine"), Some(b"also fine")]),
                data_row(&[Some(b"fine"), Some(&text)]),
                data_row(&[Some(b"after"), Some(b"dropped")]),
            ];
            for roles in [&["reader"][..], &[][..], &["nobody"][..]] {
                // The check runs on the output, so the same must hold for every role
                // that is not a ciphertext reader, including plaintext readers.
                let out = run_query(roles, &rows);
                let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
                assert_eq!(tags, b"TDEZ", "{col} {what} {roles:?}: {tags:?}");
                let err = error_of(&out).unwrap();
                assert!(contains(&err, b"C42501"), "{what}");
                assert!(
                    contains(&err, b"result column 2 carries an encrypted value"),
                    "{what}: {:?}",
                    String::from_utf8_lossy(&err)
                );
                let all: Vec<u8> = out.iter().flat_map(|(_, m)| m.to_vec()).collect();
                assert!(!contains(&all, &env[..16]), "{what}: envelope bytes left");
                assert!(
                    !contains(&all, b"dropped"),
                    "{what}: rest of result not dropped"
                );
            }
        }
    }
}

#[test]
fn a_ciphertext_reader_gets_envelopes_in_any_spelling() {
    let prot = protection(POLICY, 1);
    let env = envelope(&prot, "a", "x");
    for (what, text) in spellings(&env) {
        let out = run_query(&["auditor"], &[data_row(&[Some(b"k"), Some(&text)])]);
        let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"TDCZ", "{what}");
        assert!(contains(&out[1].1, &text), "{what}");
    }
}

#[test]
fn look_alike_values_pass() {
    let prot = protection(POLICY, 1);
    let env = envelope(&prot, "a", "x");
    let mut wrong_tag = env.clone();
    wrong_tag[11] ^= 0x55;
    let mut wrong_key = env.clone();
    wrong_key[7] = 9;
    let hex_wrong_tag = bytea_hex(&wrong_tag);
    let looks: Vec<&[u8]> = vec![
        b"+84 0912 706301 4455",
        b"706301010000000100000000deadbeef",
        b"070630101000000010000000",
        b"CHECK (phone IS NULL OR substring(phone from 1 for 3) = '\\x706301'::bytea)",
        b"CHECK (substring(phone from 1 for 3) = 'pc\\001'::bytea)",
        b"npc\\x is a word and so is cGMBx",
        &wrong_tag,
        &wrong_key,
        &hex_wrong_tag,
    ];
    for v in looks {
        let out = run_query(&["reader"], &[data_row(&[Some(b"k"), Some(v)])]);
        let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"TDCZ", "{:?}", String::from_utf8_lossy(v));
    }
}

#[test]
fn the_session_goes_on_after_a_refused_result() {
    let prot = protection(POLICY, 1);
    let (mut dp, _) = session(&prot, &["reader"]);
    let env = envelope(&prot, "b", "y");
    for round in 0..2 {
        front(&mut dp, &[encode_query(b"SELECT leak_it()")]);
        let out = back(
            &mut dp,
            &[
                row_description(&["leak_it"], 17),
                data_row(&[Some(&bytea_hex(&env))]),
                data_row(&[Some(b"late")]),
                msg(b'C', b"SELECT 2\0"),
                msg(b'Z', b"T"),
            ],
        );
        let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"TEZ", "round {round}");
        // The transaction status is the server's own.
        assert_eq!(&out[2].1[5..], b"T");
        front(&mut dp, &[encode_query(b"SELECT 1")]);
        let out = back(
            &mut dp,
            &[
                row_description(&["x"], 23),
                data_row(&[Some(b"1")]),
                msg(b'C', b"SELECT 1\0"),
                msg(b'Z', b"T"),
            ],
        );
        let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"TDCZ");
    }
}

#[test]
fn copy_out_rows_are_checked() {
    let prot = protection(POLICY, 1);
    let (mut dp, _) = session(&prot, &["reader"]);
    let env = envelope(&prot, "a", "z");
    front(
        &mut dp,
        &[encode_query(b"COPY (SELECT leak_it()) TO STDOUT")],
    );
    let mut line = b"1\tclean\t\\".to_vec();
    line.extend_from_slice(&bytea_hex(&env));
    line.push(b'\n');
    let out = back(
        &mut dp,
        &[
            msg(b'H', b"\0\0\x03\0\0\0\0\0\0"),
            msg(b'd', b"0\tok\tfine\n"),
            msg(b'd', &line),
            msg(b'd', b"2\tnot\tsent\n"),
            msg(b'c', b""),
            msg(b'C', b"COPY 3\0"),
            msg(b'Z', b"I"),
        ],
    );
    let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"HdEZ");
    assert!(contains(&out[2].1, b"COPY TO STDOUT field 3"));
}

#[test]
fn notification_payloads_with_envelopes_are_withheld() {
    let prot = protection(POLICY, 1);
    let (mut dp, _) = session(&prot, &["reader"]);
    let env = envelope(&prot, "a", "n");
    let mut body = 42i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"chan\0");
    body.extend_from_slice(&bytea_hex(&env));
    body.push(0);
    let out = back(&mut dp, &[msg(b'A', &body)]);
    assert_eq!(out.len(), 1);
    assert!(contains(&out[0].1, b"chan\0"));
    assert!(contains(&out[0].1, super::backend::NOTIFY_WITHHELD));
    assert!(!contains(&out[0].1, b"706301"));
    // A clean one passes untouched.
    let clean = msg(b'A', b"\0\0\0\x2achan\0hello\0");
    assert_eq!(
        back(&mut dp, std::slice::from_ref(&clean)),
        vec![(b'A', clean)]
    );
}

#[test]
fn ten_column_rows_without_candidates_are_cheap_to_prove_clean() {
    let prot = protection(POLICY, 1);
    let roles = [RoleName::from_sql("reader")];
    let check = EgressCheck {
        prot: &prot,
        roles: &roles,
    };
    let text = b"a perfectly ordinary value of some length";
    let row = data_row(&[Some(&text[..]); 10]);
    assert!(!may_hold(&row[7..]));
    assert!(check.data_row(&row).is_ok());
}

#[test]
fn notices_and_errors_with_envelopes_are_withheld() {
    let prot = protection(POLICY, 1);
    let (mut dp, _) = session(&prot, &["reader"]);
    let env = envelope(&prot, "a", "raised");
    let mut body = b"SNOTICE\0C00000\0M".to_vec();
    body.extend_from_slice(&bytea_hex(&env));
    body.extend_from_slice(b"\0WPL/pgSQL function f() line 1\0\0");
    let out = back(&mut dp, &[msg(b'N', &body)]);
    assert_eq!(out.len(), 1);
    assert!(!contains(&out[0].1, b"706301"));
    assert!(contains(&out[0].1, super::backend::FIELD_WITHHELD));
    assert!(contains(&out[0].1, b"C00000"));
    front(&mut dp, &[encode_query(b"SELECT f()")]);
    let mut body = b"SERROR\0CP0001\0M".to_vec();
    body.extend_from_slice(&bytea_hex(&env));
    body.push(0);
    body.push(0);
    let out = back(&mut dp, &[msg(b'E', &body), msg(b'Z', b"I")]);
    assert_eq!(out.len(), 2);
    assert!(!contains(&out[0].1, b"706301"));
    assert!(contains(&out[0].1, b"CP0001"));
}
