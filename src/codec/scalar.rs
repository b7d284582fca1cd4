//! bool, uuid, bytea and text/varchar: parsing and canonical spelling.
//!
//! Canonical forms: bool `t`/`f`; uuid lower-case hyphenated; bytea `\x` + lower-case
//! hex; text the NFC-normalised UTF-8 string (so WIN1258's decomposed Vietnamese
//! tones and UTF-8's precomposed letters give the same bytes).

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::error::CodecError;
use super::number::pg_trim;
use crate::policy::LogicalType;

pub(crate) fn parse_bool(s: &str) -> Result<bool, CodecError> {
    let w = pg_trim(s).to_ascii_lowercase();
    let prefix_of = |full: &str, min: usize| w.len() >= min && full.starts_with(w.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || w == "1" {
        Ok(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || w == "0" {
        Ok(false)
    } else {
        Err(CodecError::text(
            LogicalType::Bool,
            "expected true or false",
        ))
    }
}

pub(crate) fn bool_from_binary(b: &[u8]) -> Result<bool, CodecError> {
    match b {
        [0] => Ok(false),
        [1] => Ok(true),
        _ => Err(CodecError::binary(
            LogicalType::Bool,
            "expected one byte, 0 or 1",
        )),
    }
}

/// PostgreSQL uuid input: 32 hex digits, optionally in braces, with a hyphen allowed
/// after any group of four digits.
pub(crate) fn parse_uuid(s: &str) -> Result<uuid::Uuid, CodecError> {
    let bad = || CodecError::text(LogicalType::Uuid, "expected 32 hexadecimal digits");
    let s = pg_trim(s);
    let inner = match (s.strip_prefix('{'), s.ends_with('}')) {
        (Some(rest), true) => rest.strip_suffix('}').ok_or_else(bad)?,
        (None, false) => s,
        _ => return Err(bad()),
    };
    let mut bytes = [0u8; 16];
    let mut n = 0usize;
    let mut prev_hyphen = true; // no leading hyphen
    for c in inner.chars() {
        if c == '-' {
            if prev_hyphen || n % 4 != 0 || n == 32 {
                return Err(bad());
            }
            prev_hyphen = true;
            continue;
        }
        prev_hyphen = false;
        let d = c.to_digit(16).ok_or_else(bad)? as u8;
        let slot = bytes.get_mut(n / 2).ok_or_else(bad)?;
        *slot = (*slot << 4) | d;
        n += 1;
    }
    if n != 32 || prev_hyphen {
        return Err(bad());
    }
    Ok(uuid::Uuid::from_bytes(bytes))
}

pub(crate) fn uuid_from_binary(b: &[u8]) -> Result<uuid::Uuid, CodecError> {
    uuid::Uuid::from_slice(b)
        .map_err(|_| CodecError::binary(LogicalType::Uuid, "expected 16 bytes"))
}

pub(crate) fn hex_bytea(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("\\x");
    for &x in b {
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 15)]));
    }
    s
}

/// bytea text input: hex (`\x0a0B`, whitespace between pairs) or escape format
/// (`\\`, `\ooo` octal, other bytes as they are).
pub(crate) fn parse_bytea(s: &str) -> Result<Vec<u8>, CodecError> {
    let ty = LogicalType::Bytea;
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut it = hex
            .chars()
            .filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r'));
        while let Some(h) = it.next() {
            let l = it
                .next()
                .ok_or(CodecError::text(ty, "odd number of hexadecimal digits"))?;
            let (Some(h), Some(l)) = (h.to_digit(16), l.to_digit(16)) else {
                return Err(CodecError::text(ty, "invalid hexadecimal digit"));
            };
            out.push((h * 16 + l) as u8);
        }
        return Ok(out);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        match (b.get(i + 1), b.get(i + 2), b.get(i + 3)) {
            (Some(b'\\'), _, _) => {
                out.push(b'\\');
                i += 2;
            }
            (Some(&a @ b'0'..=b'3'), Some(&m @ b'0'..=b'7'), Some(&z @ b'0'..=b'7')) => {
                out.push((a - b'0') * 64 + (m - b'0') * 8 + (z - b'0'));
                i += 4;
            }
            _ => return Err(CodecError::text(ty, "invalid escape sequence")),
        }
    }
    Ok(out)
}

/// Text canonical form: NFC, no NUL characters (PostgreSQL text cannot hold them).
pub(crate) fn canonical_text(ty: LogicalType, s: &str) -> Result<String, CodecError> {
    if s.contains('\0') {
        return Err(CodecError::text(ty, "text cannot contain NUL characters"));
    }
    Ok(match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => s.to_string(),
        _ => s.nfc().collect(),
    })
}
