//! The data path's calls into the insider guard ([`crate::guard`]).
//!
//! [`RowGuard`] watches one result row (DataRow or COPY TO STDOUT line) as its values
//! are rendered: it counts the plaintext values of each column and notices a
//! honeytoken in any view (a ciphertext or masked value is decrypted to compare, only
//! for columns that have decoys). [`RowGuard::finish`] runs before the row is
//! appended for the client: a quota that the row would pass, or a honeytoken under
//! `on_honeytoken: deny`, fails the statement there, so no row beyond the quota and
//! no half row leaves pgcloak. [`searched`] does the same for a value encrypted for
//! the server (an equality search or a write naming a decoy).
//!
//! The guard decides (quota ledger, decoy match, the policy's action); this module
//! reports what it decided: a warning on `pgcloak::guard` and an audit event naming
//! the session, never a value.

use crate::guard::{GuardError, HoneytokenTouch};
use crate::observe::Sink;
use crate::policy::{ColumnRef, RoleName, View};

use super::{DataPathError, Protection};

/// One row's guard bookkeeping (None when the policy has no guard section).
pub(super) struct RowGuard<'a> {
    prot: &'a Protection,
    plaintext: Vec<(ColumnRef, u64)>,
    touched: Option<(ColumnRef, &'static str)>,
}

impl<'a> RowGuard<'a> {
    pub(super) fn new(prot: &'a Protection) -> Option<RowGuard<'a>> {
        (!prot.guard.is_empty()).then(|| RowGuard {
            prot,
            plaintext: Vec::new(),
            touched: None,
        })
    }

    /// One protected value of `col`, about to be delivered under `view`.
    pub(super) fn value(&mut self, col: ColumnRef, view: View, envelope: &[u8]) {
        if view == View::Plaintext && self.prot.guard.has_quotas() {
            match self.plaintext.iter_mut().find(|(c, _)| *c == col) {
                Some((_, n)) => *n += 1,
                None => self.plaintext.push((col, 1)),
            }
        }
        if self.touched.is_none()
            && matches!(view, View::Plaintext | View::Masked | View::Ciphertext)
            && self.prot.guard.watches(col)
        {
            // A value that does not decrypt is not a decoy (rendering reports it).
            if let Ok(canonical) = self.prot.suite.decrypt(col, envelope) {
                if self.prot.guard.is_honeytoken(col, &canonical) {
                    self.touched = Some((col, view.name()));
                }
            }
        }
    }

    /// Before the row goes out: report a honeytoken, charge the quotas. `current` is
    /// the protection in force now (quotas follow a reload at once); the row's column
    /// references index `self.prot`'s generation.
    pub(super) fn finish(
        self,
        current: &Protection,
        roles: &[RoleName],
        sink: &Sink,
    ) -> Result<(), DataPathError> {
        if self.touched.is_some() || !self.plaintext.is_empty() {
            // The guard's audit events name the statement: record it first.
            crate::observe::record(sink);
        }
        if let Some((col, how)) = self.touched {
            report_honeytoken(crate::guard::honeytoken_touched(
                &self.prot.policy,
                col,
                how,
            ))?;
        }
        if self.plaintext.is_empty() || current.policy.guard().quotas.is_empty() {
            return Ok(());
        }
        let counts: Vec<(ColumnRef, u64)> = if current.generation() == self.prot.generation() {
            self.plaintext
        } else {
            self.plaintext
                .into_iter()
                .filter_map(|(c, n)| {
                    let p = self.prot.policy.get(c)?;
                    Some((current.policy.find(&p.table, &p.column)?, n))
                })
                .collect()
        };
        if let Err(e) = crate::guard::charge(&current.policy, roles, &counts) {
            report_quota(&e);
            return Err(e.into());
        }
        Ok(())
    }
}

/// A value of `col` (canonical) is being encrypted for the server: an equality
/// search or a write that names a honeytoken is reported.
pub(super) fn searched(
    prot: &Protection,
    sink: &Sink,
    col: ColumnRef,
    canonical: &[u8],
) -> Result<(), DataPathError> {
    if prot.guard.watches(col) && prot.guard.is_honeytoken(col, canonical) {
        // The guard's audit event names the statement: record it first.
        crate::observe::record(sink);
        report_honeytoken(crate::guard::honeytoken_touched(
            &prot.policy,
            col,
            "search",
        ))?;
    }
    Ok(())
}

/// Logs and audits a decoy touched; `Err` when the policy denies.
fn report_honeytoken(t: HoneytokenTouch) -> Result<(), GuardError> {
    let who = crate::observe::session::identity();
    tracing::warn!(target: "pgcloak::guard", column = %t.column, how = t.how, role = %who.role,
        session = who.session, client_addr = %who.client,
        fingerprint = who.fingerprint.as_deref().unwrap_or(""), deny = t.deny,
        "honeytoken touched: a decoy value no legitimate workflow reads");
    crate::observe::audit::honeytoken(&who, &t.column, t.how, t.deny);
    t.outcome()
}

/// Logs and audits a quota refusal.
fn report_quota(e: &GuardError) {
    if let GuardError::QuotaExceeded {
        quota,
        role,
        max_values,
        window,
    } = e
    {
        let who = crate::observe::session::identity();
        tracing::warn!(target: "pgcloak::guard", quota = %quota, quota_role = %role,
            login = %who.role, session = who.session, client_addr = %who.client,
            max_values = *max_values, window = %window, "decryption quota exceeded: statement refused");
        crate::observe::audit::quota_denied(&who, quota, role, *max_values, window);
    }
}
