//! Why the data path refused a statement or a value. Every message names
//! columns and operations, never a value: a refusal is a typed
//! [`Refusal`](crate::sql::Refusal), rendered (message, SQLSTATE, metric label) by its
//! type; codec and crypto errors name only the column.

use thiserror::Error;

use crate::codec::CodecError;
use crate::crypto::CryptoError;
use crate::observe::RejectReason;
use crate::sql::{Refusal, SqlError};
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
    /// The data path refused a statement, a value or a result (0A000), a right is
    /// missing (42501), or a policy change alters a prepared statement (0A000): the
    /// refusal's type decides.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Wire(#[from] WireError),
    /// `EXECUTE name` of a statement this session never prepared through pgcloak: every
    /// way of preparing one passes through it, so PostgreSQL would not know it either.
    #[error("prepared statement \"{0}\" does not exist")]
    UnknownPrepared(String),
    /// The insider guard stopped the statement (a quota, or a honeytoken under `deny`).
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
}

impl DataPathError {
    pub fn codec(column: &str, e: CodecError) -> DataPathError {
        let sqlstate = pg_sqlstate(&e);
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
            DataPathError::Refused(r) => r.sqlstate(),
            DataPathError::Wire(w) => w.sqlstate(),
            DataPathError::UnknownPrepared(_) => "26000",
            DataPathError::Guard(g) => g.sqlstate(),
        }
    }

    /// Why this refusal is counted, from the error's type: a right the roles lack is
    /// `denied` whichever layer found it.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DataPathError::Sql(e) => e.refusal().reject_reason(),
            DataPathError::Codec { .. } => RejectReason::InvalidValue,
            DataPathError::Crypto { .. } => RejectReason::Crypto,
            DataPathError::Refused(r) => r.reject_reason(),
            DataPathError::Wire(_) => RejectReason::Malformed,
            DataPathError::UnknownPrepared(_) => RejectReason::UnknownPrepared,
            DataPathError::Guard(crate::guard::GuardError::QuotaExceeded { .. }) => {
                RejectReason::Quota
            }
            DataPathError::Guard(crate::guard::GuardError::Honeytoken) => RejectReason::Honeytoken,
        }
    }

    /// Counts this refusal (metric and audit event): the one place the data path
    /// reports one.
    pub(super) fn report(&self, sink: &crate::observe::Sink) {
        sink.rejected(self.reject_reason(), self.sqlstate());
    }

    /// The ErrorResponse a client sees.
    pub fn to_pg(&self) -> PgError {
        let e = PgError::error(self.sqlstate(), self.to_string());
        let hint = match self {
            DataPathError::Sql(s) => s.refusal().hint(),
            DataPathError::Refused(r) => r.hint(),
            _ => None,
        };
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    }
}

/// The SQLSTATE PostgreSQL itself gives for the same bad input: its datetime input
/// functions say 22007 (invalid_datetime_format) where other types say 22P02, and
/// bytes that are not valid in the client encoding are 22021
/// (character_not_in_repertoire).
fn pg_sqlstate(e: &CodecError) -> &'static str {
    use crate::policy::LogicalType;
    match e {
        CodecError::InvalidText { reason, .. } if *reason == ENCODING_REASON => "22021",
        CodecError::InvalidText {
            ty: LogicalType::Date | LogicalType::Timestamp | LogicalType::Timestamptz,
            ..
        } => "22007",
        _ => e.sqlstate(),
    }
}

/// The reason `codec::ClientEncoding::decode` gives for undecodable bytes.
const ENCODING_REASON: &str = "not valid in the client encoding";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LogicalType;

    #[test]
    fn refusals_are_counted_and_hinted_by_their_type() {
        use crate::sql::refusal::{Fixed, LeakPlace, Reason};
        let cases = [
            (
                DataPathError::from(SqlError::from(Fixed::SelectInto)),
                RejectReason::UnsupportedSql,
                "0A000",
                true,
            ),
            (
                SqlError::from(Reason::NulByte).into(),
                RejectReason::UnsupportedSql,
                "42601",
                false,
            ),
            (
                Refusal::of(Reason::CiphertextWithheld(LeakPlace::NotifyPayload)).into(),
                RejectReason::Denied,
                "42501",
                false,
            ),
            (
                Refusal::fixed(Fixed::ResultRowMismatch).into(),
                RejectReason::Refused,
                "0A000",
                false,
            ),
            (
                Refusal::of(Reason::PlanChanged).into(),
                RejectReason::PlanChanged,
                "0A000",
                false,
            ),
        ];
        for (e, reason, state, hinted) in cases {
            assert_eq!(e.reject_reason(), reason, "{e}");
            assert_eq!(e.sqlstate(), state, "{e}");
            assert_eq!(e.to_pg().hint.is_some(), hinted, "{e}");
        }
    }

    #[test]
    fn sqlstates_follow_postgresql_for_bad_input() {
        let ctx = crate::codec::SessionContext::default();
        let cases = [
            (LogicalType::Int4, &b"abc"[..], "22P02"),
            (LogicalType::Date, b"not-a-date", "22007"),
            (LogicalType::Int4, b"99999999999", "22003"),
            (LogicalType::Text, b"\xff\xfe", "22021"),
        ];
        for (ty, input, want) in cases {
            match crate::codec::text_to_canonical(ty, input, &ctx) {
                Err(e) => assert_eq!(DataPathError::codec("t.c", e).sqlstate(), want, "{ty:?}"),
                Ok(_) => assert_eq!(want, "", "{ty:?} accepted"),
            }
        }
        let bad = ctx
            .client_encoding
            .decode(LogicalType::Text, b"ok \xff\xfe")
            .unwrap_err();
        assert_eq!(DataPathError::codec("t.c", bad).sqlstate(), "22021");
    }
}
