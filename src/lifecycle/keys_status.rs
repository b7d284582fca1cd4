//! `pgcloak keys status --database`: which key ids the stored envelopes of each policy
//! column reference, so that an old key is retired only when nothing uses it.
//!
//! Reads only envelope headers (grouped in SQL by their first 12 bytes, then parsed
//! with `peek_header`); never decrypts or prints a value.

use std::collections::BTreeMap;
use std::path::Path;

use crate::crypto::{peek_header, OVERHEAD};
use crate::policy::{ColumnRef, Encryption, LogicalType};

use super::error::LifecycleError;
use super::inspect;
use super::run::open;

/// The envelopes of one column by key id.
#[derive(Debug, Clone, Default)]
pub struct ColumnKeys {
    pub column: String,
    /// key id -> rows.
    pub by_key: BTreeMap<u32, u64>,
    /// Rows whose value is not an envelope of this column (plaintext, or another column's).
    pub foreign: u64,
    /// The key new values are sealed with.
    pub write_key: u32,
    pub deterministic: bool,
    /// False when the column is not stored as bytea (not encrypted yet).
    pub encrypted: bool,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct KeysStatus {
    pub columns: Vec<ColumnKeys>,
    pub keyring_ids: Vec<u32>,
    pub active: u32,
    pub pins: BTreeMap<String, u32>,
}

impl KeysStatus {
    /// Columns whose data references `key_id`.
    pub fn users_of(&self, key_id: u32) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.by_key.contains_key(&key_id))
            .map(|c| c.column.as_str())
            .collect()
    }

    /// The printed report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.columns {
            if !c.encrypted {
                s.push_str(&format!("{}: not encrypted (not bytea)\n", c.column));
                continue;
            }
            let keys: Vec<String> = c
                .by_key
                .iter()
                .map(|(k, n)| format!("key {k}: {n} rows"))
                .collect();
            s.push_str(&format!(
                "{}: {} writes with key {}; {}{}\n",
                c.column,
                if c.deterministic {
                    "deterministic"
                } else {
                    "randomized"
                },
                c.write_key,
                if keys.is_empty() {
                    "no values".to_string()
                } else {
                    keys.join(", ")
                },
                if c.foreign > 0 {
                    format!(", {} rows not envelopes of this column", c.foreign)
                } else {
                    String::new()
                }
            ));
        }
        for id in &self.keyring_ids {
            let users = self.users_of(*id);
            let pinned: Vec<&str> = self
                .pins
                .iter()
                .filter(|(_, k)| *k == id)
                .map(|(d, _)| d.as_str())
                .collect();
            let mut roles = Vec::new();
            if *id == self.active {
                roles.push("active".to_string());
            }
            if !pinned.is_empty() {
                roles.push(format!("pinned by {}", pinned.join(", ")));
            }
            let role = if roles.is_empty() {
                String::new()
            } else {
                format!(" ({})", roles.join("; "))
            };
            if users.is_empty() {
                s.push_str(&format!(
                    "key {id}{role}: referenced by no stored value in this database\n"
                ));
            } else {
                s.push_str(&format!(
                    "key {id}{role}: referenced by {}\n",
                    users.join(", ")
                ));
            }
        }
        s
    }
}

/// Reads the report for every policy column present in `database`.
pub async fn keys_status(config: &Path, database: &str) -> Result<KeysStatus, LifecycleError> {
    let ctx = open(config, database).await?;
    let client = ctx.client();
    let mut out = KeysStatus {
        keyring_ids: ctx.keyring.key_ids().collect(),
        active: ctx.keyring.active_key_id(),
        pins: ctx.keyring.pins().clone(),
        ..KeysStatus::default()
    };
    for (i, cp) in ctx.policy.columns().iter().enumerate() {
        let col = ColumnRef(i as u32);
        let name = cp.qualified_name();
        let crypto = |e| LifecycleError::crypto(&name, &e);
        let mut ck = ColumnKeys {
            column: name.clone(),
            write_key: ctx.suite.write_key_id(col).map_err(crypto)?,
            deterministic: cp.encryption == Encryption::Deterministic,
            ..ColumnKeys::default()
        };
        let Some(facts) = inspect::column(client, &cp.table, &cp.column).await? else {
            continue;
        };
        ck.encrypted = facts.type_oid == LogicalType::Bytea.oid();
        if ck.encrypted {
            let tag = ctx.suite.column_tag(col).map_err(crypto)?;
            let (by_key, foreign) = envelope_counts(client, &cp.table, &cp.column, tag).await?;
            ck.by_key = by_key;
            ck.foreign = foreign;
        }
        out.columns.push(ck);
    }
    Ok(out)
}

/// Rows of `column` by the key id of their envelope, and rows that are not envelopes of
/// this column (tag `tag`).
pub(crate) async fn envelope_counts(
    client: &tokio_postgres::Client,
    table: &crate::policy::TableName,
    column: &str,
    tag: u32,
) -> Result<(BTreeMap<u32, u64>, u64), LifecycleError> {
    let name = format!("{table}.{column}");
    let sql = format!(
        "SELECT substring({c} from 1 for 12), count(*), min(octet_length({c})) \
         FROM {t} WHERE {c} IS NOT NULL GROUP BY 1",
        c = crate::catalog::ident::quote_ident(column),
        t = crate::catalog::ident::quote_qualified(&table.schema, &table.name)
    );
    let err = |e: tokio_postgres::Error| LifecycleError::db("reading headers", &name, &e);
    let mut by_key = BTreeMap::new();
    let mut foreign = 0;
    for r in client.query(&sql, &[]).await.map_err(err)? {
        let head: Vec<u8> = r.try_get(0).map_err(err)?;
        let n: i64 = r.try_get(1).map_err(err)?;
        let min_len: i32 = r.try_get(2).map_err(err)?;
        let n = u64::try_from(n).unwrap_or(0);
        // The header alone decides; pad it to an envelope's minimum length when every
        // value of the group is at least that long.
        let mut probe = head;
        if usize::try_from(min_len).unwrap_or(0) >= OVERHEAD {
            probe.resize(OVERHEAD, 0);
        }
        match peek_header(&probe) {
            Ok(h) if h.column_tag == tag => *by_key.entry(h.key_id).or_default() += n,
            _ => foreign += n,
        }
    }
    Ok((by_key, foreign))
}
