//! Lifecycle errors. They name tables, columns and catalog facts, never a data value,
//! a primary-key value or a key.

use thiserror::Error;

use crate::catalog::CatalogError;
use crate::codec::CodecError;
use crate::crypto::CryptoError;

#[derive(Debug, Error)]
pub enum LifecycleError {
    /// The configuration, policy or keyring cannot be used.
    #[error("{0}")]
    Setup(String),

    /// Connecting to the database failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),

    /// A statement failed (the server's message and SQLSTATE, no values).
    #[error("{what} on {target} failed: {reason}")]
    Database {
        what: &'static str,
        target: String,
        reason: String,
    },

    /// The column cannot be converted as it is; `fix` says what to do.
    #[error("refusing to convert {column}: {reason}; fix: {fix}")]
    Refused {
        column: String,
        reason: String,
        fix: String,
    },

    /// A value could not be encrypted or decrypted.
    #[error("{column}: a stored value could not be processed: {reason}")]
    Value { column: String, reason: String },

    /// The final check under the cut-over lock found rows not converted (nothing changed).
    #[error(
        "{column}: {missing} row(s) have a value but no converted value at cut-over; \
         nothing was changed, rerun the command"
    )]
    Incomplete { column: String, missing: i64 },
}

impl LifecycleError {
    pub(crate) fn db(what: &'static str, target: &str, e: &tokio_postgres::Error) -> Self {
        let reason = match e.as_db_error() {
            // Data exceptions and integrity violations can quote the offending value
            // (`invalid input syntax for type integer: "..."`): keep only the SQLSTATE.
            Some(db)
                if db.code().code().starts_with("22") || db.code().code().starts_with("23") =>
            {
                format!(
                    "the server rejected a value ({}; message withheld: it may quote the value)",
                    db.code().code()
                )
            }
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        LifecycleError::Database {
            what,
            target: target.to_string(),
            reason,
        }
    }

    pub(crate) fn crypto(column: &str, e: &CryptoError) -> Self {
        LifecycleError::Value {
            column: column.to_string(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn codec(column: &str, e: &CodecError) -> Self {
        LifecycleError::Value {
            column: column.to_string(),
            reason: e.to_string(),
        }
    }

    /// The SQLSTATE-like class for scripts: refusals are configuration problems.
    pub fn exit_code(&self) -> u8 {
        match self {
            LifecycleError::Refused { .. } | LifecycleError::Setup(_) => 2,
            _ => 1,
        }
    }
}
