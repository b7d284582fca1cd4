//! What happens to one value: encrypt a plaintext read in text form, decrypt an
//! envelope back to PostgreSQL text, or re-seal an envelope under the current key.
//!
//! Pure and I/O-free; it reuses the codec and the cipher suite (never a second
//! implementation). Errors name the column, never the value.

use crate::codec::{canonical_to_text, text_to_canonical, SessionContext};
use crate::crypto::{peek_header, CipherSuite};
use crate::policy::{ColumnRef, LogicalType};

use super::error::LifecycleError;
use super::plan::Kind;

/// The per-value conversion of one column.
pub struct Transform<'a> {
    pub kind: Kind,
    pub suite: &'a CipherSuite,
    pub column: ColumnRef,
    pub logical: LogicalType,
    /// Whether the policy makes the column deterministic.
    pub deterministic: bool,
    /// For error messages only.
    pub name: String,
    /// The codec context of the tool's own session: UTF8, ISO DateStyle, UTC.
    pub ctx: SessionContext,
}

impl Transform<'_> {
    /// The SQL expression that reads the source value (`{col}` is replaced).
    pub fn source_expr(&self) -> &'static str {
        match self.kind {
            Kind::Encrypt if self.logical != LogicalType::Bytea => "{col}::text",
            _ => "{col}",
        }
    }

    /// Whether the source is read as bytea (else text).
    pub fn reads_bytea(&self) -> bool {
        self.source_expr() == "{col}"
    }

    /// Converts one source value; NULL stays NULL.
    pub fn apply(&self, value: Option<&[u8]>) -> Result<Option<Vec<u8>>, LifecycleError> {
        let Some(v) = value else { return Ok(None) };
        let crypto = |e| LifecycleError::crypto(&self.name, &e);
        let codec = |e| LifecycleError::codec(&self.name, &e);
        match self.kind {
            Kind::Encrypt => {
                if self.logical == LogicalType::Bytea && self.is_own_envelope(v) {
                    // Already sealed for this column (an earlier partial run, or a
                    // client writing through pgcloak): never encrypt twice.
                    return Ok(Some(v.to_vec()));
                }
                let canonical = if self.logical == LogicalType::Bytea {
                    text_to_canonical(self.logical, hex_text(v).as_bytes(), &self.ctx)
                } else {
                    text_to_canonical(self.logical, v, &self.ctx)
                }
                .map_err(codec)?;
                Ok(Some(
                    self.suite
                        .encrypt(self.column, &canonical)
                        .map_err(crypto)?,
                ))
            }
            Kind::Decrypt => {
                let canonical = self.suite.decrypt(self.column, v).map_err(crypto)?;
                let text = canonical_to_text(self.logical, &canonical, &self.ctx).map_err(codec)?;
                Ok(Some(text))
            }
            Kind::Reencrypt => {
                let write = self.suite.write_key_id(self.column).map_err(crypto)?;
                let h = peek_header(v).map_err(crypto)?;
                if h.key_id == write
                    && h.column_tag == self.suite.column_tag(self.column).map_err(crypto)?
                {
                    let scheme_matches = matches!(
                        (h.scheme, self.deterministic),
                        (crate::crypto::Scheme::Deterministic, true)
                            | (crate::crypto::Scheme::Randomized, false)
                    );
                    if scheme_matches {
                        return Ok(Some(v.to_vec()));
                    }
                }
                let canonical = self.suite.decrypt(self.column, v).map_err(crypto)?;
                Ok(Some(
                    self.suite
                        .encrypt(self.column, &canonical)
                        .map_err(crypto)?,
                ))
            }
        }
    }

    fn is_own_envelope(&self, v: &[u8]) -> bool {
        match (peek_header(v), self.suite.column_tag(self.column)) {
            (Ok(h), Ok(tag)) => h.column_tag == tag && self.suite.decrypt(self.column, v).is_ok(),
            _ => false,
        }
    }
}

/// PostgreSQL's hex text form of bytes (`\x...`).
fn hex_text(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
