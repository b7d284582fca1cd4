//! Test support: a synthetic database (one table, its schema snapshot), policies
//! from YAML, and a DataPath driven by hand-made protocol messages, no server.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};

use super::{DataPath, Protection, SessionSchema};
use crate::catalog::schema::{Attribute, ColumnLocation, NamedRelation, ProtectedTable, RelKind};
use crate::catalog::SchemaSnapshot;
use crate::codec::SessionContext;
use crate::crypto::{CipherSuite, Keyring, MasterKey};
use crate::policy::{Policy, RoleName, TableName};

pub(super) const TABLE_OID: u32 = 16400;

/// The columns of `public.t`, all bytea except `id` (int4): attnum = index + 1.
pub(super) const COLUMNS: [&str; 5] = ["id", "a", "b", "c", "d"];

pub(super) fn keyring() -> Keyring {
    let mut keys = BTreeMap::new();
    keys.insert(1, MasterKey::from_bytes([7u8; 32]));
    Keyring::from_parts(1, 1, BTreeMap::new(), keys).unwrap()
}

/// A protection generation from a policy over `public.t`.
pub(super) fn protection(yaml: &str, generation: u64) -> Arc<Protection> {
    let policy = Arc::new(Policy::load_str(yaml, "policy.yaml", generation).unwrap());
    let suite = CipherSuite::new(&keyring(), &policy).unwrap();
    Arc::new(Protection::new(policy, suite, 100))
}

/// The schema snapshot of `public.t` resolved for `prot`'s policy.
pub(super) fn schema(prot: &Protection, generation: u64) -> Arc<SessionSchema> {
    let attributes: Vec<Attribute> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, n)| Attribute {
            attnum: i as i16 + 1,
            name: n.to_string(),
            type_oid: if i == 0 { 23 } else { 17 },
            type_name: if i == 0 { "integer" } else { "bytea" }.into(),
        })
        .collect();
    let locations = prot
        .policy
        .columns()
        .iter()
        .map(|c| {
            let attnum = COLUMNS.iter().position(|n| *n == c.column).unwrap() as i16 + 1;
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
    let snapshot = SchemaSnapshot::new(
        "db".into(),
        &prot.policy,
        vec![table],
        locations,
        vec![],
        vec![relation],
    );
    Arc::new(SessionSchema::new(Arc::new(snapshot), prot, generation))
}

/// A session of `roles` under `prot`, with the swap it reads generations from.
pub(super) fn session(
    prot: &Arc<Protection>,
    roles: &[&str],
) -> (DataPath, Arc<ArcSwap<Protection>>) {
    let swap = Arc::new(ArcSwap::from(prot.clone()));
    let dp = DataPath::new(
        swap.clone(),
        schema(prot, prot.generation()),
        roles.iter().map(|r| RoleName::from_sql(r)).collect(),
        SessionContext::default(),
        vec!["public".into()],
    );
    (dp, swap)
}

/// Splits a byte stream into (tag, whole message) frames.
pub(super) fn frames(out: &[u8]) -> Vec<(u8, Bytes)> {
    let mut v = Vec::new();
    let mut rest = out;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let (m, tail) = rest.split_at(1 + len);
        v.push((m[0], Bytes::copy_from_slice(m)));
        rest = tail;
    }
    v
}

/// Feeds client messages; returns what went upstream.
pub(super) fn front(dp: &mut DataPath, msgs: &[Bytes]) -> Vec<(u8, Bytes)> {
    let mut out = BytesMut::new();
    for m in msgs {
        dp.on_frontend(m, &mut out).unwrap();
    }
    frames(&out)
}

/// Feeds server messages; returns what went to the client.
#[allow(dead_code)]
pub(super) fn back(dp: &mut DataPath, msgs: &[Bytes]) -> Vec<(u8, Bytes)> {
    let mut out = BytesMut::new();
    for m in msgs {
        dp.on_backend(m, &mut out).unwrap();
    }
    frames(&out)
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
