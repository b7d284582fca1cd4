//! Errors of SQL analysis and rewriting.
//!
//! Messages name columns, operations and statement kinds only. They must NEVER carry a
//! literal value or a parameter from the client's statement: those may be plaintext of a
//! protected column, and errors end up in logs and in the client's terminal.

use thiserror::Error;

/// Why a statement was refused or could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SqlError {
    /// The operation is not possible on an encrypted column (SQLSTATE 0A000).
    #[error("{0}")]
    Unsupported(String),
    /// The statement could not be parsed but may touch a protected column (SQLSTATE 42601).
    #[error("{0}")]
    Syntax(String),
    /// The session's roles lack a right the statement needs (SQLSTATE 42501).
    #[error("{0}")]
    Forbidden(String),
    /// A value could not be encrypted for a column (SQLSTATE 22000 class).
    #[error("{0}")]
    Value(String),
    /// An unqualified relation name pgcloak cannot resolve while a relation of that
    /// name reaches protected columns (SQLSTATE 42P01, undefined_table).
    #[error("{0}")]
    UndefinedTable(String),
}

impl SqlError {
    /// The PostgreSQL SQLSTATE code the session reports for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Unsupported(_) => "0A000",
            SqlError::Syntax(_) => "42601",
            SqlError::Forbidden(_) => "42501",
            SqlError::Value(_) => "22000",
            SqlError::UndefinedTable(_) => "42P01",
        }
    }

    /// The human-readable message (never contains a literal from the statement).
    pub fn message(&self) -> &str {
        match self {
            SqlError::Unsupported(m)
            | SqlError::Syntax(m)
            | SqlError::Forbidden(m)
            | SqlError::Value(m)
            | SqlError::UndefinedTable(m) => m,
        }
    }

    pub(crate) fn unsupported(msg: impl Into<String>) -> SqlError {
        SqlError::Unsupported(msg.into())
    }
}
