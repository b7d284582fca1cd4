//! One value at a time: client value → canonical plaintext → envelope on the
//! way in; envelope → the role's view, in the client's format, on the way out.

use crate::codec::{self, SessionContext};
use crate::observe::Sink;
use crate::policy::{apply_mask, ColumnRef, LogicalType, View};
use crate::sql::refusal::{ColumnName, Reason, Refusal};
use crate::sql::ParamAction;

use super::{DataPathError, Protection};

/// Encrypts a literal from the client's SQL text (already decoded by the lexer).
pub(super) fn encrypt_text_literal(
    prot: &Protection,
    ctx: &SessionContext,
    sink: &Sink,
    col: ColumnRef,
    text: &str,
) -> Result<Vec<u8>, DataPathError> {
    let c = prot.policy.column(col);
    // The SQL text is UTF-8 here (decoded from the client encoding already).
    let mut utf8_ctx = ctx.clone();
    utf8_ctx.client_encoding = codec::ClientEncoding::Utf8;
    let canonical = codec::text_to_canonical(c.logical_type, text.as_bytes(), &utf8_ctx)
        .map_err(|e| DataPathError::codec(&c.qualified_name(), e))?;
    super::insider::searched(prot, sink, col, &canonical)?;
    sink.encrypted(&prot.policy, col);
    prot.suite
        .encrypt(col, &canonical)
        .map_err(|e| DataPathError::crypto(&c.qualified_name(), e))
}

/// Encrypts one Bind parameter (text or binary format) into a binary bytea
/// (or bytea[] for `= ANY($n)`).
pub(super) fn encrypt_param(
    prot: &Protection,
    ctx: &SessionContext,
    sink: &Sink,
    action: &ParamAction,
    format: i16,
    value: &[u8],
) -> Result<Vec<u8>, DataPathError> {
    let c = prot.policy.column(action.column);
    let name = c.qualified_name();
    let one = |v: &[u8], binary: bool| -> Result<Vec<u8>, DataPathError> {
        let canonical = if binary {
            codec::binary_to_canonical(c.logical_type, v, ctx)
        } else {
            codec::text_to_canonical(c.logical_type, v, ctx)
        }
        .map_err(|e| DataPathError::codec(&name, e))?;
        super::insider::searched(prot, sink, action.column, &canonical)?;
        sink.encrypted(&prot.policy, action.column);
        prot.suite
            .encrypt(action.column, &canonical)
            .map_err(|e| DataPathError::crypto(&name, e))
    };
    if !action.array {
        return one(value, format == 1);
    }
    let elements = if format == 1 {
        super::array::decode_binary_array(value)
    } else {
        super::array::decode_text_array(value, ctx)
    }
    .map_err(|m| DataPathError::Codec {
        message: format!("invalid array for column {name}: {m}"),
        sqlstate: if format == 1 { "22P03" } else { "22P02" },
    })?;
    if elements.len() > prot.in_list_cap {
        return Err(Refusal::of(Reason::AnyListTooLong {
            column: ColumnName::quoted(&prot.policy, action.column),
            len: elements.len(),
            cap: prot.in_list_cap,
        })
        .into());
    }
    let mut encrypted = Vec::with_capacity(elements.len());
    for e in elements {
        encrypted.push(match e {
            None => None,
            Some(v) => Some(one(&v, format == 1)?),
        });
    }
    Ok(super::array::encode_binary_bytea_array(&encrypted))
}

/// What goes to the client for one encrypted value under `view`.
/// `envelope` is the raw envelope (already hex-decoded if upstream sent text).
pub(super) fn render(
    prot: &Protection,
    ctx: &SessionContext,
    sink: &Sink,
    col: ColumnRef,
    view: View,
    envelope: &[u8],
    client_format: i16,
) -> Result<Option<Vec<u8>>, DataPathError> {
    let c = prot.policy.column(col);
    let name = || c.qualified_name();
    sink.decrypted_or_withheld(&prot.policy, col, view);
    match view {
        View::Null => Ok(None),
        View::Deny => {
            Err(Refusal::of(Reason::ColumnDenied(ColumnName::quoted(&prot.policy, col))).into())
        }
        View::Ciphertext => Ok(Some(if client_format == 1 {
            envelope.to_vec()
        } else {
            bytea_hex(envelope)
        })),
        View::Plaintext => {
            let canonical = prot
                .suite
                .decrypt(col, envelope)
                .map_err(|e| DataPathError::crypto(&name(), e))?;
            let out = if client_format == 1 {
                codec::canonical_to_binary(c.logical_type, &canonical, ctx)
            } else {
                codec::canonical_to_text(c.logical_type, &canonical, ctx)
            }
            .map_err(|e| DataPathError::codec(&name(), e))?;
            Ok(Some(out))
        }
        View::Masked => {
            let canonical = prot
                .suite
                .decrypt(col, envelope)
                .map_err(|e| DataPathError::crypto(&name(), e))?;
            let text = String::from_utf8_lossy(&canonical);
            let masked = match &c.mask {
                Some(mask) => apply_mask(mask, &text, |p| {
                    prot.suite
                        .pseudonym(col, p.as_bytes())
                        .unwrap_or_else(|_| "********".to_string())
                }),
                None => String::new(),
            };
            // Masked values are reported as text.
            codec::canonical_to_text(LogicalType::Text, masked.as_bytes(), ctx)
                .map(Some)
                .map_err(|e| DataPathError::codec(&name(), e))
        }
    }
}

/// The type a client is told for an encrypted column under `view`.
pub(super) fn reported_type(ty: LogicalType, view: View) -> (u32, i16) {
    match view {
        View::Plaintext | View::Null | View::Deny => (ty.oid(), ty.typlen()),
        View::Masked => (LogicalType::Text.oid(), -1),
        View::Ciphertext => (LogicalType::Bytea.oid(), -1),
    }
}

/// bytea's text output (hex format).
pub(super) fn bytea_hex(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(2 + bytes.len() * 2);
    out.extend_from_slice(b"\\x");
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out
}

/// Parses bytea's text output (hex or escape format) back to bytes.
pub(super) fn parse_bytea_text(text: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        let val = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        return hex
            .chunks(2)
            .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
            .collect();
    }
    // Escape format: \\ and \ooo; everything else literal.
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            if text.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
            } else {
                let oct = text.get(i + 1..i + 4)?;
                let mut v: u16 = 0;
                for d in oct {
                    if !(b'0'..=b'7').contains(d) {
                        return None;
                    }
                    v = v * 8 + u16::from(d - b'0');
                }
                out.push(u8::try_from(v).ok()?);
                i += 4;
            }
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_text_round_trips_hex_and_reads_escape() {
        let v = vec![0u8, 1, 0x70, 0x63, 255];
        assert_eq!(parse_bytea_text(&bytea_hex(&v)).unwrap(), v);
        assert_eq!(parse_bytea_text(b"pc\\001\\\\").unwrap(), b"pc\x01\\");
        assert!(parse_bytea_text(b"\\x0").is_none());
        assert!(parse_bytea_text(b"\\9").is_none());
    }
}
