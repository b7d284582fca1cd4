//! Why the data path refused a statement or a value. Every message names
//! columns and operations, never a value.

use thiserror::Error;

use crate::codec::CodecError;
use crate::crypto::CryptoError;
use crate::sql::SqlError;
use crate::wire::{PgError, WireError};

#[derive(Debug, Error)]
pub enum DataPathError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("{message}")]
    Codec {
        message: String,
        sqlstate: &'static str,
    },
    #[error("column {column}: {message}")]
    Crypto {
        column: String,
        message: String,
        sqlstate: &'static str,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PlanChanged(String),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// `EXECUTE name` of a statement this session never prepared through pgcloak: every
    /// way of preparing one passes through it, so PostgreSQL would not know it either.
    #[error("prepared statement \"{0}\" does not exist")]
    UnknownPrepared(String),
}

impl DataPathError {
    pub fn codec(column: &str, e: CodecError) -> DataPathError {
        let sqlstate = e.sqlstate();
        DataPathError::Codec {
            message: e.with_column(column).to_string(),
            sqlstate,
        }
    }

    pub fn crypto(column: &str, e: CryptoError) -> DataPathError {
        DataPathError::Crypto {
            column: column.to_string(),
            sqlstate: e.sqlstate(),
            message: e.to_string(),
        }
    }

    pub fn sqlstate(&self) -> &'static str {
        match self {
            DataPathError::Sql(e) => e.sqlstate(),
            DataPathError::Codec { sqlstate, .. } | DataPathError::Crypto { sqlstate, .. } => {
                sqlstate
            }
            DataPathError::Refused(_) => "0A000",
            DataPathError::Forbidden(_) => "42501",
            DataPathError::PlanChanged(_) => "0A000",
            DataPathError::Wire(w) => w.sqlstate(),
            DataPathError::UnknownPrepared(_) => "26000",
        }
    }

    /// The ErrorResponse a client sees.
    pub fn to_pg(&self) -> PgError {
        let e = PgError::error(self.sqlstate(), self.to_string());
        match self {
            DataPathError::Sql(SqlError::Unsupported(_)) => {
                e.with_hint("pgcloak refused this statement before it reached the server; see docs/policy.md for what works on encrypted columns.")
            }
            _ => e,
        }
    }
}
