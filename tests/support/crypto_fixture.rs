//! Shared fixture for the crypto tests: a fixed keyring and a small policy.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use pgcloak::crypto::{Keyring, MasterKey};
use pgcloak::policy::{ColumnPolicy, ColumnRef, Encryption, LogicalType, Policy, TableName, View};

pub fn key(byte: u8) -> MasterKey {
    MasterKey::from_bytes([byte; 32])
}

/// Keys 1 (0x01 * 32) and 2 (0x02 * 32); active 2, deterministic default 1.
pub fn keyring() -> Keyring {
    let mut keys = BTreeMap::new();
    keys.insert(1, key(1));
    keys.insert(2, key(2));
    Keyring::from_parts(2, 1, BTreeMap::new(), keys).unwrap()
}

pub fn column(
    table: &str,
    name: &str,
    ty: LogicalType,
    enc: Encryption,
    key_group: Option<&str>,
) -> ColumnPolicy {
    ColumnPolicy {
        table: TableName::new("public", table),
        column: name.to_string(),
        id: format!("public.{table}.{name}"),
        logical_type: ty,
        encryption: enc,
        key_group: key_group.map(str::to_string),
        mask: None,
        access: BTreeMap::new(),
        public: View::Null,
        search: BTreeSet::new(),
    }
}

pub const EMAIL: ColumnRef = ColumnRef(0); // randomized
pub const PHONE: ColumnRef = ColumnRef(1); // deterministic
pub const NATIONAL_ID: ColumnRef = ColumnRef(2); // deterministic, key group "people"
pub const PARTNER_ID: ColumnRef = ColumnRef(3); // deterministic, key group "people"
pub const BIRTH: ColumnRef = ColumnRef(4); // randomized

pub fn policy() -> Policy {
    use Encryption::*;
    use LogicalType::*;
    Policy::from_columns(
        7,
        vec![
            column("customers", "email", Text, Randomized, None),
            column("customers", "phone", Text, Deterministic, None),
            column(
                "customers",
                "national_id",
                Text,
                Deterministic,
                Some("people"),
            ),
            column(
                "partners",
                "national_id",
                Text,
                Deterministic,
                Some("people"),
            ),
            column("customers", "birth_date", Date, Randomized, None),
        ],
    )
}
