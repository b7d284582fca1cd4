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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crypto::{Keyring, MasterKey};
    use crate::policy::{Policy, TableName};

    fn suite(active: u32, pins: &[(&str, u32)]) -> (Policy, CipherSuite) {
        let policy = Policy::load_str(
            "version: 1\ntables:\n  public.t:\n    phone:\n      type: text\n      \
             encryption: deterministic\n      access: { app: plaintext }\n    blob:\n      \
             type: bytea\n      access: { app: plaintext }\n    born:\n      type: date\n      \
             access: { app: plaintext }\n",
            "policy.yaml",
            1,
        )
        .unwrap();
        let keys: BTreeMap<u32, MasterKey> = [1u32, 2]
            .into_iter()
            .map(|i| (i, MasterKey::from_bytes([i as u8; 32])))
            .collect();
        let pins = pins.iter().map(|(d, k)| (d.to_string(), *k)).collect();
        let keyring = Keyring::from_parts(active, 1, pins, keys).unwrap();
        let suite = CipherSuite::new(&keyring, &policy).unwrap();
        (policy, suite)
    }

    fn transform<'a>(
        kind: Kind,
        policy: &Policy,
        suite: &'a CipherSuite,
        col: &str,
    ) -> Transform<'a> {
        let r = policy.find(&TableName::new("public", "t"), col).unwrap();
        let cp = policy.column(r);
        Transform {
            kind,
            suite,
            column: r,
            logical: cp.logical_type,
            deterministic: cp.encryption == crate::policy::Encryption::Deterministic,
            name: cp.qualified_name(),
            ctx: SessionContext::default(),
        }
    }

    #[test]
    fn encrypt_then_decrypt_gives_postgres_text_back_and_null_stays_null() {
        let (p, s) = suite(1, &[]);
        let enc = transform(Kind::Encrypt, &p, &s, "born");
        let dec = transform(Kind::Decrypt, &p, &s, "born");
        let sealed = enc.apply(Some(b"1990-03-14")).unwrap().unwrap();
        assert!(peek_header(&sealed).is_ok());
        assert_eq!(dec.apply(Some(&sealed)).unwrap().unwrap(), b"1990-03-14");
        assert_eq!(enc.apply(None).unwrap(), None);
    }

    #[test]
    fn bytea_column_already_holding_its_own_envelope_is_not_encrypted_twice() {
        let (p, s) = suite(1, &[]);
        let enc = transform(Kind::Encrypt, &p, &s, "blob");
        let once = enc.apply(Some(b"\x00\x01raw")).unwrap().unwrap();
        let again = enc.apply(Some(&once)).unwrap().unwrap();
        assert_eq!(once, again);
        let dec = transform(Kind::Decrypt, &p, &s, "blob");
        assert_eq!(dec.apply(Some(&again)).unwrap().unwrap(), b"\\x0001726177");
    }

    #[test]
    fn reencrypt_moves_old_key_values_and_keeps_current_ones() {
        let (p, old) = suite(1, &[]);
        let sealed_old = transform(Kind::Encrypt, &p, &old, "phone")
            .apply(Some(b"0912345678"))
            .unwrap()
            .unwrap();
        let (_, new) = suite(2, &[("public.t.phone", 2)]);
        let re = transform(Kind::Reencrypt, &p, &new, "phone");
        let moved = re.apply(Some(&sealed_old)).unwrap().unwrap();
        assert_eq!(peek_header(&moved).unwrap().key_id, 2);
        // Deterministic under the new pin: equal to a fresh encryption, and left alone.
        let fresh = transform(Kind::Encrypt, &p, &new, "phone")
            .apply(Some(b"0912345678"))
            .unwrap()
            .unwrap();
        assert_eq!(moved, fresh);
        assert_eq!(re.apply(Some(&moved)).unwrap().unwrap(), moved);
    }

    #[test]
    fn a_value_that_is_not_an_envelope_fails_without_showing_it() {
        let (p, s) = suite(1, &[]);
        let dec = transform(Kind::Decrypt, &p, &s, "phone");
        let err = dec
            .apply(Some(b"SECRET-PLAINTEXT"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("public.t.phone"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }
}
