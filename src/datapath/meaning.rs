//! What a statement plan means independently of one policy generation, so that a
//! prepared statement re-analysed after a policy change can be compared with the
//! plan upstream already holds. Column references are indexes into one
//! generation's policy; here columns are named by their identity instead.
//!
//! It only compares; it never decides what to do with a difference.

use crate::crypto::CipherSuite;
use crate::policy::{ColumnRef, Encryption, LogicalType, Policy};
use crate::sql::{Lineage, StatementPlan};

use super::Protection;

/// A policy column by meaning: its identity (bound into its ciphertexts), crypto
/// domain, logical type and scheme.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ColumnMeaning {
    id: String,
    domain: String,
    logical_type: LogicalType,
    encryption: Encryption,
}

impl ColumnMeaning {
    fn of(policy: &Policy, col: ColumnRef) -> Option<ColumnMeaning> {
        let c = policy.get(col)?;
        Some(ColumnMeaning {
            id: c.id.clone(),
            domain: c.crypto_domain().to_string(),
            logical_type: c.logical_type,
            encryption: c.encryption,
        })
    }
}

/// One result column: forwarded, decrypted for a column, or unresolved.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ResultMeaning {
    Plain,
    Encrypted(Option<ColumnMeaning>),
    Unknown,
}

/// Everything about a plan that upstream's copy of the statement or the client's
/// view of it depends on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PlanMeaning {
    /// (parameter number, array, column), by parameter number.
    params: Vec<(u16, bool, Option<ColumnMeaning>)>,
    /// Literals baked into upstream's text as ciphertext: the column and the key
    /// the ciphertext was made under.
    literals: Vec<(Option<ColumnMeaning>, Option<u32>)>,
    /// The result columns, when any of them is not plain (else nothing is rewritten).
    result: Option<(Vec<ResultMeaning>, bool)>,
    /// COPY fields, when any is protected.
    copy: Option<Vec<Option<ColumnMeaning>>>,
}

impl PlanMeaning {
    /// The meaning of `plan` under the generation it was made for. `None` is the
    /// fast path: nothing encrypted, nothing rewritten.
    pub(super) fn of(prot: &Protection, plan: Option<&StatementPlan>) -> PlanMeaning {
        let Some(plan) = plan else {
            return PlanMeaning::default();
        };
        let policy = &prot.policy;
        let mut params: Vec<_> = plan
            .params
            .iter()
            .map(|p| (p.index, p.array, ColumnMeaning::of(policy, p.column)))
            .collect();
        params.sort_by_key(|p| p.0);
        let literals = plan
            .literals
            .iter()
            .map(|l| {
                (
                    ColumnMeaning::of(policy, l.column),
                    literal_key(&prot.suite, policy, l.column),
                )
            })
            .collect();
        let result = plan.result.as_ref().and_then(|shape| {
            if shape.columns.iter().all(|c| c.lineage == Lineage::Plain) {
                return None;
            }
            let cols = shape
                .columns
                .iter()
                .map(|c| match c.lineage {
                    Lineage::Plain => ResultMeaning::Plain,
                    Lineage::Encrypted(col) => {
                        ResultMeaning::Encrypted(ColumnMeaning::of(policy, col))
                    }
                    Lineage::Unknown => ResultMeaning::Unknown,
                })
                .collect();
            Some((cols, shape.plain_tail))
        });
        let copy = plan.copy.as_ref().and_then(|c| {
            c.fields.iter().any(Option::is_some).then(|| {
                c.fields
                    .iter()
                    .map(|f| f.and_then(|col| ColumnMeaning::of(policy, col)))
                    .collect()
            })
        });
        PlanMeaning {
            params,
            literals,
            result,
            copy,
        }
    }
}

/// The key a deterministic literal's ciphertext is made under: a different one
/// would make an equality baked into upstream's text miss every row.
fn literal_key(suite: &CipherSuite, policy: &Policy, col: ColumnRef) -> Option<u32> {
    let c = policy.get(col)?;
    if c.encryption != Encryption::Deterministic {
        return None;
    }
    suite.write_key_id(col).ok()
}
