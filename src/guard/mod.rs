//! The insider guard: decryption quotas per role and honeytokens (the audit trail's
//! keyed hash chain is `observe::chain`).
//!
//! The core is pure ([`quota::Ledger`], [`honeytoken::Matcher`]); this
//! module adds the process-wide state the data path calls into: one ledger shared by
//! every session of the instance (a `Mutex<Ledger>` touched once per result row that
//! carries plaintext of a quota's columns) and its metrics. The guard decides and
//! returns what it decided ([`GuardError`], [`HoneytokenTouch`]); the data path
//! (`datapath::insider`) logs and audits it, so this module needs nothing of `observe`.
//! `pgcloak honeytoken plant`, the shell part, is `lifecycle::plant`. Nothing here ever
//! records a value.
//!
//! Quotas are read from the policy in force at each row, so a reload applies to open
//! sessions; usage is kept by quota name, so it survives the reload.

pub mod honeytoken;
pub mod quota;

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use thiserror::Error;

use crate::policy::{ColumnRef, HoneytokenAction, Policy, RoleName};

/// Why the guard stopped a statement. The messages name quotas, never values.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum GuardError {
    #[error(
        "decryption quota \"{quota}\" exceeded: at most {max_values} plaintext values per {window}; \
         pgcloak stopped the result before the first row over the quota"
    )]
    QuotaExceeded {
        quota: String,
        /// The role the quota is set on (the session's login or one it is a member of).
        role: String,
        max_values: u64,
        window: String,
    },
    /// `on_honeytoken: deny`: the statement fails and the session is closed.
    #[error("permission denied: pgcloak's insider guard closed this session")]
    Honeytoken,
}

impl GuardError {
    pub fn sqlstate(&self) -> &'static str {
        "42501"
    }

    /// Whether the session must be closed after the error.
    pub fn ends_session(&self) -> bool {
        matches!(self, GuardError::Honeytoken)
    }

    pub fn label(&self) -> &'static str {
        match self {
            GuardError::QuotaExceeded { .. } => "quota",
            GuardError::Honeytoken => "honeytoken",
        }
    }
}

/// What the guard derived from one policy generation: the honeytoken matcher.
#[derive(Debug, Default)]
pub struct Compiled {
    matcher: honeytoken::Matcher,
    quotas: bool,
}

impl Compiled {
    /// Canonicalises the policy's decoys (a decoy that is not a valid value of its
    /// column's type can never be delivered; it is logged and skipped).
    pub fn new(policy: &Policy) -> Compiled {
        let mut matcher = honeytoken::Matcher::new();
        let ctx = crate::codec::SessionContext::default();
        for (col, values) in &policy.guard().honeytokens {
            let Some(c) = policy.get(*col) else { continue };
            for v in values {
                match crate::codec::text_to_canonical(c.logical_type, v.as_bytes(), &ctx) {
                    Ok(canonical) => matcher.add(*col, &canonical),
                    Err(_) => {
                        tracing::warn!(target: "pgcloak::guard", column = %c.qualified_name(),
                        "a honeytoken is not a valid value of its column's type and is ignored")
                    }
                }
            }
        }
        Compiled {
            matcher,
            quotas: !policy.guard().quotas.is_empty(),
        }
    }

    /// Nothing to do per row.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty() && !self.quotas
    }

    pub fn has_quotas(&self) -> bool {
        self.quotas
    }

    /// Whether `col` has decoys (only then is a delivered value decrypted to compare).
    pub fn watches(&self, col: ColumnRef) -> bool {
        self.matcher.watches(col)
    }

    pub fn is_honeytoken(&self, col: ColumnRef, canonical: &[u8]) -> bool {
        self.matcher.matches(col, canonical)
    }
}

fn ledger() -> &'static Mutex<quota::Ledger> {
    static L: OnceLock<Mutex<quota::Ledger>> = OnceLock::new();
    L.get_or_init(|| Mutex::new(quota::Ledger::new()))
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `1h`, `90m`, `45s` for messages.
pub fn window_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Charges plaintext values about to be delivered (`counts`: per column, this row or
/// batch) to every quota of the session's roles, all or nothing.
pub fn charge(
    policy: &Policy,
    roles: &[RoleName],
    counts: &[(ColumnRef, u64)],
) -> Result<(), GuardError> {
    let quotas = &policy.guard().quotas;
    let mut charges = Vec::new();
    let mut which = Vec::new();
    for q in quotas.iter().filter(|q| roles.contains(&q.role)) {
        let n: u64 = counts
            .iter()
            .filter(|(c, _)| q.covers(*c))
            .map(|(_, n)| n)
            .sum();
        if n > 0 {
            charges.push((
                quota::Limit {
                    name: &q.name,
                    max_values: q.max_values,
                    window: q.window,
                },
                n,
            ));
            which.push(q);
        }
    }
    if charges.is_empty() {
        return Ok(());
    }
    let result = ledger()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .charge(&charges, now_ms());
    match result {
        Ok(after) => {
            for (q, used) in which.iter().zip(after) {
                metrics::gauge!(QUOTA_USAGE, "quota" => q.name.clone(), "role" => q.role.0.clone())
                    .set(used as f64);
            }
            Ok(())
        }
        Err(e) => {
            let role = which
                .iter()
                .find(|q| q.name == e.quota)
                .map(|q| q.role.0.clone())
                .unwrap_or_default();
            metrics::counter!(QUOTA_DENIALS, "role" => role.clone(), "quota" => e.quota.clone())
                .increment(1);
            Err(GuardError::QuotaExceeded {
                quota: e.quota,
                role,
                max_values: e.max_values,
                window: window_text(e.window),
            })
        }
    }
}

/// A honeytoken was delivered or searched for: what the data path reports (log and audit
/// event, `datapath::insider`), and whether the policy denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoneytokenTouch {
    /// The decoy's column, schema-qualified (a policy name, never a value).
    pub column: String,
    /// The view it was delivered under, or `search`.
    pub how: &'static str,
    /// `on_honeytoken: deny`: the statement fails and the session is closed.
    pub deny: bool,
}

impl HoneytokenTouch {
    /// `Err` when the policy says to deny.
    pub fn outcome(&self) -> Result<(), GuardError> {
        if self.deny {
            Err(GuardError::Honeytoken)
        } else {
            Ok(())
        }
    }
}

/// A honeytoken of `col` was delivered (`how` = the view) or searched for (`search`):
/// counted, and what to report.
pub fn honeytoken_touched(policy: &Policy, col: ColumnRef, how: &'static str) -> HoneytokenTouch {
    let column = policy
        .get(col)
        .map(|c| c.qualified_name())
        .unwrap_or_default();
    metrics::counter!(HONEYTOKEN_READS, "column" => column.clone()).increment(1);
    HoneytokenTouch {
        column,
        how,
        deny: policy.guard().on_honeytoken == HoneytokenAction::Deny,
    }
}

pub const QUOTA_DENIALS: &str = "pgcloak_quota_denials_total";
pub const QUOTA_USAGE: &str = "pgcloak_quota_usage";
pub const HONEYTOKEN_READS: &str = "pgcloak_honeytoken_reads_total";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_decoys_match_in_canonical_form() {
        let p = Policy::load_str(
            "version: 1\ntables:\n  public.c:\n    phone: { type: text, access: { a: plaintext } }\n    n: { type: int4, access: { a: plaintext } }\nguard:\n  honeytokens:\n    public.c.phone: [\"0900000009\"]\n    c.n: [\"00042\", \"x\"]\n",
            "p.yaml",
            1,
        )
        .unwrap();
        let g = Compiled::new(&p);
        assert!(g.watches(ColumnRef(0)) && g.watches(ColumnRef(1)));
        assert!(g.is_honeytoken(ColumnRef(0), b"0900000009"));
        let ctx = crate::codec::SessionContext::default();
        let canon =
            crate::codec::text_to_canonical(crate::policy::LogicalType::Int4, b"42", &ctx).unwrap();
        assert!(g.is_honeytoken(ColumnRef(1), &canon));
        assert!(!g.has_quotas());
    }

    #[test]
    fn quotas_count_only_the_roles_and_columns_they_name() {
        let p = Policy::load_str(
            "version: 1\ntables:\n  public.c:\n    phone: { type: text, access: { agent: plaintext } }\n    name: { type: text, access: { agent: plaintext } }\nguard:\n  quotas:\n    - { name: unit_q, role: agent, columns: [public.c.phone], max_values: 3, window: 1h }\n",
            "p.yaml",
            1,
        )
        .unwrap();
        let agent = vec![RoleName("agent".into())];
        let other = vec![RoleName("other".into())];
        assert!(charge(&p, &other, &[(ColumnRef(0), 100)]).is_ok());
        assert!(charge(&p, &agent, &[(ColumnRef(1), 100)]).is_ok());
        assert!(charge(&p, &agent, &[(ColumnRef(0), 2), (ColumnRef(1), 5)]).is_ok());
        let e = charge(&p, &agent, &[(ColumnRef(0), 2)]).unwrap_err();
        assert_eq!(e.sqlstate(), "42501");
        let msg = e.to_string();
        assert!(
            msg.contains("\"unit_q\"") && msg.contains("3 plaintext values per 1h"),
            "{msg}"
        );
        assert!(charge(&p, &agent, &[(ColumnRef(0), 1)]).is_ok());
    }
}
