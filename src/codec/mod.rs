//! The value codec: every logical type between the client's wire forms (text in the
//! session's encoding and DateStyle, or binary) and the canonical plaintext that is
//! encrypted.
//!
//! The canonical plaintext is a normalised UTF-8 text form: the same value always
//! gives the same bytes whatever format, spelling or session settings the client used,
//! so deterministic encryption gives equal ciphertexts for equal values. Forms are
//! listed in docs/format.md. This module is pure; it must never put a value (or any
//! byte of one) into an error, a log line or a panic.

pub mod context;
pub mod encoding;
pub mod error;

mod datetime;
mod json;
mod number;
mod numeric;
mod scalar;

pub use context::{DateOrder, DateOutputStyle, DateStyle, SessionContext, SessionTimeZone};
pub use encoding::ClientEncoding;
pub use error::CodecError;

use crate::policy::LogicalType;

/// Text-format input (as the client sent it) to canonical plaintext.
pub fn text_to_canonical(
    ty: LogicalType,
    bytes: &[u8],
    ctx: &SessionContext,
) -> Result<Vec<u8>, CodecError> {
    let s = ctx.client_encoding.decode(ty, bytes)?;
    Ok(canonical_from_str(ty, &s, ctx)?.into_bytes())
}

fn canonical_from_str(
    ty: LogicalType,
    s: &str,
    ctx: &SessionContext,
) -> Result<String, CodecError> {
    use LogicalType::*;
    Ok(match ty {
        Text | Varchar => scalar::canonical_text(ty, s)?,
        Int2 | Int4 | Int8 => number::parse_int(ty, s)?.to_string(),
        Numeric => numeric::Numeric::parse_text(s)?.to_canonical(),
        Float8 => number::canonical_float(number::parse_float(s)?),
        Bool => bool_canonical(scalar::parse_bool(s)?),
        Date | Timestamp | Timestamptz => datetime::canonical(ty, datetime::parse(ty, s, ctx)?),
        Uuid => scalar::parse_uuid(s)?.hyphenated().to_string(),
        Jsonb => json::canonical_json(s)?,
        Bytea => scalar::hex_bytea(&scalar::parse_bytea(s)?),
    })
}

fn bool_canonical(b: bool) -> String {
    if b { "t" } else { "f" }.to_string()
}

/// Binary-format input to canonical plaintext. `ctx` matters for text/varchar and
/// jsonb, whose binary forms are text in the client encoding.
pub fn binary_to_canonical(
    ty: LogicalType,
    bytes: &[u8],
    ctx: &SessionContext,
) -> Result<Vec<u8>, CodecError> {
    use LogicalType::*;
    let as_binary_error = |e: CodecError| match e {
        CodecError::InvalidText { ty, column, reason } => {
            CodecError::InvalidBinary { ty, column, reason }
        }
        other => other,
    };
    let s = match ty {
        Text | Varchar => {
            let s = ctx
                .client_encoding
                .decode(ty, bytes)
                .map_err(as_binary_error)?;
            scalar::canonical_text(ty, &s).map_err(as_binary_error)?
        }
        Int2 | Int4 | Int8 => number::int_from_binary(ty, bytes)?.to_string(),
        Numeric => numeric::Numeric::from_binary(bytes)?.to_canonical(),
        Float8 => number::canonical_float(number::float_from_binary(bytes)?),
        Bool => bool_canonical(scalar::bool_from_binary(bytes)?),
        Date | Timestamp | Timestamptz => {
            datetime::canonical(ty, datetime::from_binary(ty, bytes)?)
        }
        Uuid => scalar::uuid_from_binary(bytes)?.hyphenated().to_string(),
        Jsonb => {
            let Some((&1, body)) = bytes.split_first() else {
                return Err(CodecError::binary(ty, "unsupported jsonb binary version"));
            };
            let s = ctx
                .client_encoding
                .decode(ty, body)
                .map_err(as_binary_error)?;
            json::canonical_json(&s).map_err(as_binary_error)?
        }
        Bytea => scalar::hex_bytea(bytes),
    };
    Ok(s.into_bytes())
}

fn canonical_str(ty: LogicalType, canonical: &[u8]) -> Result<&str, CodecError> {
    std::str::from_utf8(canonical).map_err(|_| CodecError::corrupt(ty))
}

/// Re-reads a canonical value; anything unreadable is stored-data corruption.
fn reparse<T>(ty: LogicalType, r: Result<T, CodecError>) -> Result<T, CodecError> {
    r.map_err(|_| CodecError::corrupt(ty))
}

/// Canonical plaintext to the text PostgreSQL itself would send this session
/// (client encoding, DateStyle, TimeZone).
pub fn canonical_to_text(
    ty: LogicalType,
    canonical: &[u8],
    ctx: &SessionContext,
) -> Result<Vec<u8>, CodecError> {
    use LogicalType::*;
    let s = canonical_str(ty, canonical)?;
    let utc = SessionContext::default();
    let out: String = match ty {
        Text | Varchar | Jsonb => return Ok(ctx.client_encoding.encode(ty, s)?.into_owned()),
        Int2 | Int4 | Int8 => reparse(ty, number::parse_int(ty, s))?.to_string(),
        Numeric => reparse(ty, numeric::Numeric::parse_text(s))?.to_canonical(),
        Float8 => number::format_float(reparse(ty, number::parse_float(s))?),
        Bool => bool_canonical(reparse(ty, scalar::parse_bool(s))?),
        Date | Timestamp | Timestamptz => {
            let v = reparse(ty, datetime::parse(ty, s, &utc))?;
            datetime::session_text(ty, v, ctx)?
        }
        Uuid => reparse(ty, scalar::parse_uuid(s))?.hyphenated().to_string(),
        Bytea => {
            if !s.starts_with("\\x") || !s.is_ascii() {
                return Err(CodecError::corrupt(ty));
            }
            s.to_string()
        }
    };
    Ok(out.into_bytes())
}

/// Canonical plaintext to PostgreSQL's binary format for the type.
pub fn canonical_to_binary(
    ty: LogicalType,
    canonical: &[u8],
    ctx: &SessionContext,
) -> Result<Vec<u8>, CodecError> {
    use LogicalType::*;
    let s = canonical_str(ty, canonical)?;
    let utc = SessionContext::default();
    Ok(match ty {
        Text | Varchar => ctx.client_encoding.encode(ty, s)?.into_owned(),
        Jsonb => {
            let mut v = vec![1u8];
            v.extend_from_slice(&ctx.client_encoding.encode(ty, s)?);
            v
        }
        Int2 | Int4 | Int8 => number::int_to_binary(ty, reparse(ty, number::parse_int(ty, s))?)?,
        Numeric => reparse(ty, numeric::Numeric::parse_text(s))?.to_binary(),
        Float8 => reparse(ty, number::parse_float(s))?.to_be_bytes().to_vec(),
        Bool => vec![u8::from(reparse(ty, scalar::parse_bool(s))?)],
        Date | Timestamp | Timestamptz => {
            datetime::to_binary(ty, reparse(ty, datetime::parse(ty, s, &utc))?)?
        }
        Uuid => reparse(ty, scalar::parse_uuid(s))?.as_bytes().to_vec(),
        Bytea => reparse(ty, scalar::parse_bytea(s))?,
    })
}
