//! The last check on the way out: an encrypted envelope reaches a client only in
//! a place the session's roles may see ciphertext of its column.
//!
//! The analysis decides how each result column is rewritten, but SQL it cannot
//! see into (a function defined in the database, a view over a protected column,
//! `(c.*)::text`, `to_json(phone)`, `table_to_xml(...)`) can still hand the server's
//! stored envelopes to a client. This module looks for envelopes in what is about
//! to leave: every DataRow (after pgcloak's own rewriting), every CopyData of
//! COPY TO, and NotificationResponse payloads.
//!
//! An envelope is recognised in each form PostgreSQL can print it:
//! - binary (`pc\x01\x01|\x02` and the rest of the 12-byte header), as in a binary
//!   bytea result or binary COPY;
//! - bytea hex text (`\x706301…`, also with doubled backslashes inside record,
//!   array and JSON text, mid-value after `||`, uppercase from XML `xmlbinary=hex`,
//!   and `encode(…, 'hex')` without the `\x`);
//! - bytea escape text (`pc\001\001…`, with any backslash multiplicity);
//! - base64 (`encode(…, 'base64')`, the XML functions' default), at any of the
//!   three byte alignments.
//!
//! A match counts only when the whole header decodes and names a key id of the
//! keyring and a column tag of the policy, so a plain value that merely contains
//! `706301` (a phone number) is not mistaken for one. The escape form is the
//! exception: `pc\001\001` or `pc\001\002` followed by bytes that cannot be
//! decoded is refused anyway (that spelling does not occur by accident).
//!
//! An envelope found is allowed when every policy column carrying its tag is one
//! the session's roles see as `ciphertext`; anything else is a leak, reported by
//! position and never by value.
//!
//! Cost: the whole message is first searched with six `memmem` finders built once
//! per process; values are decoded and headers validated only when one matches.
//! Values shorter than an envelope header cannot hold one and are never decoded.

use std::sync::OnceLock;

use memchr::memmem::Finder;

use super::Protection;
use crate::crypto::CipherSuite;
use crate::policy::{RoleName, View};
use crate::wire::extended::decode_data_row;

/// Envelope header length: magic (2), version, scheme, key id (4), column tag (4).
const HEADER_LEN: usize = 12;
/// The shortest form of a header in any encoding (binary): a shorter value cannot hold one.
const MIN_LEN: usize = HEADER_LEN;

/// Where an envelope was found in a message that must not carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leak {
    /// The 0-based result column (DataRow), if the message has columns.
    pub column: Option<usize>,
    /// Byte offset of the match in the value (or payload) it was found in.
    pub offset: usize,
}

struct Finders {
    binary: Finder<'static>,
    escape: Finder<'static>,
    hex: Finder<'static>,
    /// (pattern, characters back to the 4-char group start, header bytes to skip).
    base64: [(Finder<'static>, usize, usize); 3],
}

fn finders() -> &'static Finders {
    static FINDERS: OnceLock<Finders> = OnceLock::new();
    FINDERS.get_or_init(|| Finders {
        binary: Finder::new(b"pc\x01").into_owned(),
        escape: Finder::new(b"pc\\").into_owned(),
        hex: Finder::new(b"706301").into_owned(),
        base64: [
            // "pc\x01" at a 3-byte boundary.
            (Finder::new(b"cGMB").into_owned(), 0, 0),
            // One byte before "pc": the group (X, p, c) ends in "Bj", then (\x01, s, ..) gives "AQ".
            (Finder::new(b"BjAQ").into_owned(), 2, 1),
            // Two bytes before: the group (X, Y, p) ends in "w", then (c, \x01, s) gives "YwE".
            (Finder::new(b"wYwE").into_owned(), 3, 2),
        ],
    })
}

/// Whether `bytes` may hold an envelope in some form (the cheap prefilter).
pub fn may_hold(bytes: &[u8]) -> bool {
    if bytes.len() < MIN_LEN {
        return false;
    }
    let f = finders();
    f.binary.find(bytes).is_some()
        || f.hex.find(bytes).is_some()
        || f.escape.find(bytes).is_some()
        || f.base64.iter().any(|(p, _, _)| p.find(bytes).is_some())
}

/// Whether a whole DataRow message may hold an envelope (the prefilter of
/// [`EgressCheck::data_row`], without the session's protection).
pub fn may_hold_row(msg: &[u8]) -> bool {
    msg.len() >= 7 + MIN_LEN && may_hold(&msg[7..])
}

/// The egress check for one session: its protection generation and roles.
pub struct EgressCheck<'a> {
    pub prot: &'a Protection,
    pub roles: &'a [RoleName],
}

impl EgressCheck<'_> {
    /// Checks one whole DataRow message (tag and length included).
    pub fn data_row(&self, msg: &[u8]) -> Result<(), Leak> {
        if self.prot.is_empty() || msg.len() < 7 + MIN_LEN || !may_hold(&msg[7..]) {
            return Ok(());
        }
        let Ok(values) = decode_data_row(msg) else {
            // Not a well-formed row: judge its bytes as one value.
            return self.bytes(&msg[5..]);
        };
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                self.value(v).map_err(|offset| Leak {
                    column: Some(i),
                    offset,
                })?;
            }
        }
        Ok(())
    }

    /// Checks an unstructured payload (CopyData, a notification payload).
    pub fn bytes(&self, payload: &[u8]) -> Result<(), Leak> {
        if self.prot.is_empty() || !may_hold(payload) {
            return Ok(());
        }
        self.value(payload).map_err(|offset| Leak {
            column: None,
            offset,
        })
    }

    /// Err(offset) of the first envelope in `v` the roles may not see.
    fn value(&self, v: &[u8]) -> Result<(), usize> {
        if v.len() < MIN_LEN {
            return Ok(());
        }
        let f = finders();
        let suite = &self.prot.suite;
        for pos in f.binary.find_iter(v) {
            if let Some(h) = v.get(pos..pos + HEADER_LEN) {
                self.judge(header_tag(h, suite), pos)?;
            }
        }
        for pos in f.hex.find_iter(v) {
            if let Some(h) = v.get(pos..pos + 2 * HEADER_LEN).and_then(decode_hex) {
                self.judge(header_tag(&h, suite), pos)?;
            }
        }
        for pos in f.escape.find_iter(v) {
            match decode_escape_header(&v[pos..]) {
                Escape::NotEnvelope => {}
                Escape::Undecodable => return Err(pos),
                Escape::Header(h) => self.judge(header_tag(&h, suite), pos)?,
            }
        }
        for (p, back, skip) in &f.base64 {
            for pos in p.find_iter(v) {
                let Some(start) = pos.checked_sub(*back) else {
                    continue;
                };
                if let Some(bytes) = decode_base64(&v[start..], HEADER_LEN + 3) {
                    if let Some(h) = bytes.get(*skip..skip + HEADER_LEN) {
                        self.judge(header_tag(h, suite), pos)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A header that validated (Some(tag)) is allowed only for ciphertext readers of
    /// every column with that tag; look-alike bytes (None) are not envelopes.
    fn judge(&self, tag: Option<u32>, pos: usize) -> Result<(), usize> {
        let Some(tag) = tag else { return Ok(()) };
        let policy = &self.prot.policy;
        let cols = self.prot.suite.columns_with_tag(tag);
        let allowed = !cols.is_empty()
            && cols
                .iter()
                .all(|c| policy.access_for(self.roles, *c) == View::Ciphertext);
        if allowed {
            Ok(())
        } else {
            Err(pos)
        }
    }
}

/// The column tag of a valid envelope header: magic, version 1, a known scheme,
/// a key id of the keyring and a tag of the policy.
fn header_tag(h: &[u8], suite: &CipherSuite) -> Option<u32> {
    if h.len() < HEADER_LEN || &h[..3] != b"pc\x01" || !matches!(h[3], 1 | 2) {
        return None;
    }
    let key_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let tag = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    (suite.knows_key_id(key_id) && !suite.columns_with_tag(tag).is_empty()).then_some(tag)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    s.chunks_exact(2)
        .map(|p| Some(hex_val(p[0])? << 4 | hex_val(p[1])?))
        .collect()
}

enum Escape {
    NotEnvelope,
    /// The envelope's signature, then bytes that do not decode as escape text.
    Undecodable,
    Header(Vec<u8>),
}

/// Decodes a header in bytea escape form starting at `pc\`, where every backslash
/// of the escape text may appear `k` times (k = 1 plain, 2 inside record or array
/// text or JSON, 4 nested, ...).
fn decode_escape_header(s: &[u8]) -> Escape {
    let run = s[2..].iter().take_while(|&&b| b == b'\\').count();
    if run == 0 {
        return Escape::NotEnvelope;
    }
    let k = run;
    let mut out = vec![b'p', b'c'];
    let mut i = 2;
    while out.len() < HEADER_LEN {
        match escape_byte(s, &mut i, k, &mut out) {
            Some(()) => {}
            None if out.len() >= 4 => return Escape::Undecodable,
            None => return Escape::NotEnvelope,
        }
        // The signature: version 1 and a known scheme.
        if out.len() >= 3 && out[2] != 1 || out.len() >= 4 && !matches!(out[3], 1 | 2) {
            return Escape::NotEnvelope;
        }
    }
    out.truncate(HEADER_LEN);
    Escape::Header(out)
}

/// One or more decoded bytes from escape text at `s[*i..]` (a run of literal
/// backslash bytes may decode to several).
fn escape_byte(s: &[u8], i: &mut usize, k: usize, out: &mut Vec<u8>) -> Option<()> {
    let c = *s.get(*i)?;
    if c != b'\\' {
        out.push(c);
        *i += 1;
        return Some(());
    }
    let run = s[*i..].iter().take_while(|&&b| b == b'\\').count();
    let pairs = run / (2 * k);
    match run % (2 * k) {
        0 => {
            out.extend(std::iter::repeat_n(b'\\', pairs));
            *i += run;
            Some(())
        }
        r if r == k => {
            out.extend(std::iter::repeat_n(b'\\', pairs));
            *i += run;
            let oct = s.get(*i..*i + 3)?;
            let mut v: u16 = 0;
            for d in oct {
                if !(b'0'..=b'7').contains(d) {
                    return None;
                }
                v = v * 8 + u16::from(d - b'0');
            }
            out.push(u8::try_from(v).ok()?);
            *i += 3;
            Some(())
        }
        _ => None,
    }
}

fn b64_val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes the first `n` bytes of base64 text (a multiple of 3), skipping the line
/// breaks `encode(…, 'base64')` inserts.
fn decode_base64(s: &[u8], n: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s {
        if c == b'\n' || c == b'\r' {
            continue;
        }
        acc = acc << 6 | u32::from(b64_val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            if out.len() == n {
                return Some(out);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_is_case_insensitive() {
        assert_eq!(decode_hex(b"7063aB").unwrap(), vec![0x70, 0x63, 0xab]);
        assert!(decode_hex(b"70g3").is_none());
    }

    #[test]
    fn base64_decoding_skips_line_breaks() {
        assert_eq!(decode_base64(b"cG\nMB", 3).unwrap(), b"pc\x01");
        assert!(decode_base64(b"cG", 3).is_none());
    }

    #[test]
    fn escape_header_decodes_any_backslash_multiplicity() {
        for k in 1..=4 {
            let bs = "\\".repeat(k);
            let text = format!("pc{bs}001{bs}002{bs}000{bs}000{bs}000{bs}001AB{bs}{bs}Z");
            let Escape::Header(h) = decode_escape_header(text.as_bytes()) else {
                panic!("k={k}: not decoded")
            };
            assert_eq!(h, b"pc\x01\x02\0\0\0\x01AB\\Z", "k={k}");
        }
        // The CHECK constraint's prefix `'pc\001'::bytea` is not an envelope.
        assert!(matches!(
            decode_escape_header(b"pc\\001'::bytea"),
            Escape::NotEnvelope
        ));
        assert!(matches!(
            decode_escape_header(b"pc\\001\\001\\0"),
            Escape::Undecodable
        ));
    }
}
