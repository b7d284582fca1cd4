//! Errors of the value codec. They name the type and (once the caller adds it) the
//! column, and say what was expected; they never contain the value or any of its bytes.

use thiserror::Error;

use crate::policy::LogicalType;

/// Why a value could not be converted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Text-format input that is not a valid value of the type (SQLSTATE 22P02).
    #[error("invalid input syntax for type {ty}{}: {reason}", in_column(.column))]
    InvalidText {
        ty: LogicalType,
        column: Option<String>,
        reason: &'static str,
    },
    /// Binary-format input that is not a valid value of the type (SQLSTATE 22P03).
    #[error("invalid binary data for type {ty}{}: {reason}", in_column(.column))]
    InvalidBinary {
        ty: LogicalType,
        column: Option<String>,
        reason: &'static str,
    },
    /// Well-formed but outside the type's range (22003 for numbers, 22008 for dates).
    #[error("value out of range for type {ty}{}: {reason}", in_column(.column))]
    OutOfRange {
        ty: LogicalType,
        column: Option<String>,
        reason: &'static str,
        sqlstate: &'static str,
    },
    /// A character that has no equivalent in the client encoding (22P05).
    #[error("a character of a {ty} value{} has no equivalent in client encoding {encoding}", in_column(.column))]
    Untranslatable {
        ty: LogicalType,
        column: Option<String>,
        encoding: String,
    },
    /// The session's client_encoding is one pgcloak cannot convert (0A000).
    #[error("client_encoding {0} is not supported by pgcloak for encrypted columns; use UTF8 or another supported encoding (see docs/format.md)")]
    UnsupportedEncoding(String),
    /// The session's TimeZone cannot be interpreted (0A000).
    #[error("TimeZone {0} is not supported by pgcloak for encrypted columns; use an IANA zone name or UTC")]
    UnsupportedTimeZone(String),
    /// A session parameter value pgcloak does not understand (22023).
    #[error("unrecognised value for session parameter {0}")]
    UnsupportedSetting(String),
    /// A decrypted value is not in canonical form: stored data is corrupt (XX001).
    #[error("stored value of type {ty}{} is not in canonical form", in_column(.column))]
    CorruptCanonical {
        ty: LogicalType,
        column: Option<String>,
    },
}

fn in_column(c: &Option<String>) -> String {
    match c {
        Some(c) => format!(" in column {c}"),
        None => String::new(),
    }
}

impl CodecError {
    pub(crate) fn text(ty: LogicalType, reason: &'static str) -> Self {
        CodecError::InvalidText {
            ty,
            column: None,
            reason,
        }
    }

    pub(crate) fn binary(ty: LogicalType, reason: &'static str) -> Self {
        CodecError::InvalidBinary {
            ty,
            column: None,
            reason,
        }
    }

    pub(crate) fn range(ty: LogicalType, reason: &'static str) -> Self {
        let sqlstate = match ty {
            LogicalType::Date | LogicalType::Timestamp | LogicalType::Timestamptz => "22008",
            _ => "22003",
        };
        CodecError::OutOfRange {
            ty,
            column: None,
            reason,
            sqlstate,
        }
    }

    pub(crate) fn corrupt(ty: LogicalType) -> Self {
        CodecError::CorruptCanonical { ty, column: None }
    }

    /// Names the column (its policy id or `table.column`) in the error.
    pub fn with_column(mut self, name: &str) -> Self {
        match &mut self {
            CodecError::InvalidText { column, .. }
            | CodecError::InvalidBinary { column, .. }
            | CodecError::OutOfRange { column, .. }
            | CodecError::Untranslatable { column, .. }
            | CodecError::CorruptCanonical { column, .. } => *column = Some(name.to_string()),
            CodecError::UnsupportedEncoding(_)
            | CodecError::UnsupportedTimeZone(_)
            | CodecError::UnsupportedSetting(_) => {}
        }
        self
    }

    /// The SQLSTATE for the ErrorResponse.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CodecError::InvalidText { .. } => "22P02",
            CodecError::InvalidBinary { .. } => "22P03",
            CodecError::OutOfRange { sqlstate, .. } => sqlstate,
            CodecError::Untranslatable { .. } => "22P05",
            CodecError::UnsupportedEncoding(_) | CodecError::UnsupportedTimeZone(_) => "0A000",
            CodecError::UnsupportedSetting(_) => "22023",
            CodecError::CorruptCanonical { .. } => "XX001",
        }
    }
}
