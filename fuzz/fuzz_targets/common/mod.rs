//! Shared fixtures of the fuzz targets: one fixed policy over one table, a fixed keyring,
//! the schema snapshot the catalog would give, and a decoder of the fuzz input into
//! protocol messages.
//!
//! Input format of the data-path targets: a sequence of records `[tag][len: u16 BE][body]`.
//! The harness writes the PostgreSQL length word itself, so the fuzzer explores message
//! contents instead of rediscovering framing. A tag with the high bit set is a server
//! message (tag & 0x7f) for `on_backend`; tag 0x01 is a server DataRow whose four
//! protected values are the body encrypted by the fixture (valid envelopes), so rows
//! with real ciphertext are reachable.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::{BufMut, BytesMut};

use pgcloak::catalog::schema::{Attribute, ColumnLocation, NamedRelation, ProtectedTable, RelKind};
use pgcloak::catalog::SchemaSnapshot;
use pgcloak::codec::SessionContext;
use pgcloak::crypto::{CipherSuite, Keyring, MasterKey};
use pgcloak::datapath::{DataPath, Protection, SessionSchema};
use pgcloak::policy::{Policy, RoleName, TableName};

pub const TABLE_OID: u32 = 16400;
pub const COLUMNS: [&str; 6] = ["id", "a", "b", "c", "d", "e"];

/// The fixed policy: every encryption scheme, a mask, a search grant, deny and ciphertext.
pub const POLICY: &str = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, mask: { keep_last: 2 }, access: { app: plaintext, agent: masked, PUBLIC: deny }, search: [agent] }
    b: { type: int4, access: { app: plaintext, agent: ciphertext } }
    c: { type: date, encryption: deterministic, access: { app: plaintext } }
    d: { type: jsonb, access: { app: plaintext, agent: masked }, mask: { fixed: \"X\" } }
";

pub fn keyring() -> Keyring {
    let mut keys = BTreeMap::new();
    keys.insert(1, MasterKey::from_bytes([7u8; 32]));
    Keyring::from_parts(1, 1, BTreeMap::new(), keys).expect("fixed keyring")
}

pub fn protection() -> Arc<Protection> {
    static PROT: OnceLock<Arc<Protection>> = OnceLock::new();
    PROT.get_or_init(|| {
        let policy = Arc::new(Policy::load_str(POLICY, "policy.yaml", 1).expect("fixed policy"));
        let suite = CipherSuite::new(&keyring(), &policy).expect("suite");
        Arc::new(Protection::new(policy, suite, 100))
    })
    .clone()
}

pub fn snapshot(policy: &Policy) -> SchemaSnapshot {
    let attributes: Vec<Attribute> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, n)| Attribute {
            attnum: i as i16 + 1,
            name: n.to_string(),
            type_oid: if i == 0 || i == 5 { 23 } else { 17 },
            type_name: if i == 0 || i == 5 { "integer" } else { "bytea" }.into(),
        })
        .collect();
    let locations = policy
        .columns()
        .iter()
        .map(|c| {
            let attnum = COLUMNS.iter().position(|n| *n == c.column).expect("col") as i16 + 1;
            Ok(ColumnLocation {
                table_oid: TABLE_OID,
                attnum,
            })
        })
        .collect();
    let table = ProtectedTable {
        oid: TABLE_OID,
        name: TableName::new("public", "t"),
        kind: RelKind::Table,
        attributes,
        root: None,
    };
    let relation = NamedRelation {
        oid: TABLE_OID,
        schema: "public".into(),
        name: "t".into(),
        kind: RelKind::Table,
    };
    SchemaSnapshot::new(
        "db".into(),
        policy,
        vec![table],
        locations,
        vec![],
        vec![relation],
    )
}

pub fn schema() -> Arc<SessionSchema> {
    static SCHEMA: OnceLock<Arc<SessionSchema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let prot = protection();
            Arc::new(SessionSchema::new(
                Arc::new(snapshot(&prot.policy)),
                &prot,
                prot.generation(),
            ))
        })
        .clone()
}

/// A session of the role chosen by `selector`: plaintext reader, masked reader or PUBLIC.
pub fn session(selector: u8) -> DataPath {
    let prot = protection();
    let roles: &[&str] = match selector % 3 {
        0 => &["app"],
        1 => &["agent"],
        _ => &[],
    };
    DataPath::new(
        Arc::new(ArcSwap::from(prot)),
        schema(),
        roles.iter().map(|r| RoleName::from_sql(r)).collect(),
        SessionContext::default(),
        vec!["public".into()],
    )
}

/// One decoded record of the fuzz input.
pub enum Record {
    Client(Vec<u8>),
    Server(Vec<u8>),
}

/// A whole protocol message: tag, length word, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = BytesMut::with_capacity(5 + body.len());
    m.put_u8(tag);
    m.put_u32(body.len() as u32 + 4);
    m.put_slice(body);
    m.to_vec()
}

/// A DataRow `(1, enc(a), enc(b), enc(c), enc(d), 2)` with `plain` encrypted for each
/// protected column (whatever the type: the decrypt side must cope with bad canonical text).
pub fn encrypted_row(plain: &[u8]) -> Vec<u8> {
    let prot = protection();
    let mut body = BytesMut::new();
    body.put_i16(COLUMNS.len() as i16);
    body.put_i32(1);
    body.put_slice(b"1");
    for col in prot.policy.columns().iter().enumerate() {
        let r = pgcloak::policy::ColumnRef(col.0 as u32);
        let env = prot.suite.encrypt(r, plain).unwrap_or_default();
        body.put_i32(env.len() as i32);
        body.put_slice(&env);
    }
    body.put_i32(1);
    body.put_slice(b"2");
    message(b'D', &body)
}

/// Splits the fuzz input into records (see the module docs).
pub fn records(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < 64 {
        let tag = data[0];
        let len = u16::from_be_bytes([data[1], data[2]]) as usize;
        let body = &data[3..];
        let take = len.min(body.len());
        let (b, rest) = body.split_at(take);
        data = rest;
        if tag == 0x01 {
            out.push(Record::Server(encrypted_row(b)));
        } else if tag & 0x80 != 0 {
            out.push(Record::Server(message(tag & 0x7f, b)));
        } else if tag != 0 {
            out.push(Record::Client(message(tag, b)));
        }
    }
    out
}

/// Drives a session with the records; a handler error ends the session, as it does live.
pub fn drive(dp: &mut DataPath, recs: &[Record]) {
    let mut out = BytesMut::new();
    for r in recs {
        out.clear();
        let res = match r {
            Record::Client(m) => dp.on_client(m, &mut out).map(|_| ()),
            Record::Server(m) => dp.on_backend(m, &mut out).map(|_| ()),
        };
        if res.is_err() {
            return;
        }
        // Whatever the handlers emit must itself be well framed.
        check_framed(&out);
    }
}

/// Panics if `out` is not a sequence of whole messages.
pub fn check_framed(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= 5, "a truncated message was emitted");
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert!(
            len >= 4 && out.len() > len,
            "a message with a bad length was emitted"
        );
        out = &out[1 + len..];
    }
}
