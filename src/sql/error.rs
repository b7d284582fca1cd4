//! Errors of SQL analysis and rewriting.
//!
//! Every error is a [`Refusal`]: an operation and a reason built from policy and
//! catalog names, fixed phrases and shape counts only, so no literal value or
//! parameter from the client's statement can reach a message (they may be plaintext
//! of a protected column, and errors end up in logs and in the client's terminal).

use thiserror::Error;

pub use super::refusal::Refusal;

/// Why a statement was refused or could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SqlError {
    /// The statement is refused; the [`Refusal`] decides message and SQLSTATE
    /// (0A000 unsupported, 42601 unparsable, 42501 forbidden, 22000 inconsistent,
    /// 42P01 ambiguous relation name).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl SqlError {
    /// The PostgreSQL SQLSTATE code the session reports for this error.
    pub fn sqlstate(&self) -> &'static str {
        self.refusal().sqlstate()
    }

    /// The human-readable message (never contains a literal from the statement).
    pub fn message(&self) -> String {
        self.refusal().to_string()
    }

    /// The typed refusal.
    pub fn refusal(&self) -> &Refusal {
        match self {
            SqlError::Refused(r) => r,
        }
    }
}

impl From<super::refusal::Fixed> for SqlError {
    fn from(f: super::refusal::Fixed) -> SqlError {
        SqlError::Refused(Refusal::fixed(f))
    }
}

impl From<super::refusal::Reason> for SqlError {
    fn from(r: super::refusal::Reason) -> SqlError {
        SqlError::Refused(Refusal::of(r))
    }
}
