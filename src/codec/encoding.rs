//! client_encoding conversion: client bytes to UTF-8 and back, through encoding_rs.
//!
//! Owns the mapping from PostgreSQL encoding names to converters. Encodings without
//! an exact converter are refused by name (fail closed), never approximated.

use std::borrow::Cow;

use encoding_rs::Encoding;
use unicode_normalization::UnicodeNormalization;

use super::error::CodecError;
use crate::policy::LogicalType;

/// A client encoding pgcloak can convert, or the name of one it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEncoding {
    /// UTF8 (also used for SQL_ASCII, which PostgreSQL does not convert).
    Utf8,
    /// LATIN1 (ISO-8859-1); encoding_rs only has windows-1252 under that label.
    Latin1,
    /// LATIN5 (ISO-8859-9); encoding_rs only has windows-1254 under that label.
    Latin5,
    /// Any other encoding with an exact encoding_rs converter; `name` is PostgreSQL's.
    Rs {
        name: &'static str,
        encoding: &'static Encoding,
    },
    /// Named by the server but not convertible here.
    Unsupported(String),
}

impl ClientEncoding {
    /// Maps a PostgreSQL encoding name (as in ParameterStatus) to a converter.
    pub fn from_name(name: &str) -> ClientEncoding {
        let key: String = name
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        let rs =
            |name: &'static str, encoding: &'static Encoding| ClientEncoding::Rs { name, encoding };
        match key.as_str() {
            "UTF8" | "UNICODE" | "SQLASCII" => ClientEncoding::Utf8,
            "LATIN1" | "ISO88591" => ClientEncoding::Latin1,
            "LATIN5" | "ISO88599" => ClientEncoding::Latin5,
            "LATIN2" | "ISO88592" => rs("LATIN2", encoding_rs::ISO_8859_2),
            "LATIN3" | "ISO88593" => rs("LATIN3", encoding_rs::ISO_8859_3),
            "LATIN4" | "ISO88594" => rs("LATIN4", encoding_rs::ISO_8859_4),
            "LATIN6" | "ISO885910" => rs("LATIN6", encoding_rs::ISO_8859_10),
            "LATIN7" | "ISO885913" => rs("LATIN7", encoding_rs::ISO_8859_13),
            "LATIN8" | "ISO885914" => rs("LATIN8", encoding_rs::ISO_8859_14),
            "LATIN9" | "ISO885915" => rs("LATIN9", encoding_rs::ISO_8859_15),
            "LATIN10" | "ISO885916" => rs("LATIN10", encoding_rs::ISO_8859_16),
            "ISO88595" => rs("ISO_8859_5", encoding_rs::ISO_8859_5),
            "ISO88596" => rs("ISO_8859_6", encoding_rs::ISO_8859_6),
            "ISO88597" => rs("ISO_8859_7", encoding_rs::ISO_8859_7),
            "ISO88598" => rs("ISO_8859_8", encoding_rs::ISO_8859_8),
            "WIN866" | "ALT" => rs("WIN866", encoding_rs::IBM866),
            "WIN874" => rs("WIN874", encoding_rs::WINDOWS_874),
            "WIN1250" => rs("WIN1250", encoding_rs::WINDOWS_1250),
            "WIN1251" | "WIN" => rs("WIN1251", encoding_rs::WINDOWS_1251),
            "WIN1252" => rs("WIN1252", encoding_rs::WINDOWS_1252),
            "WIN1253" => rs("WIN1253", encoding_rs::WINDOWS_1253),
            "WIN1254" => rs("WIN1254", encoding_rs::WINDOWS_1254),
            "WIN1255" => rs("WIN1255", encoding_rs::WINDOWS_1255),
            "WIN1256" => rs("WIN1256", encoding_rs::WINDOWS_1256),
            "WIN1257" => rs("WIN1257", encoding_rs::WINDOWS_1257),
            "WIN1258" => rs("WIN1258", encoding_rs::WINDOWS_1258),
            "KOI8R" | "KOI8" => rs("KOI8R", encoding_rs::KOI8_R),
            "KOI8U" => rs("KOI8U", encoding_rs::KOI8_U),
            "EUCJP" => rs("EUC_JP", encoding_rs::EUC_JP),
            "SJIS" | "SHIFTJIS" | "MSKANJI" => rs("SJIS", encoding_rs::SHIFT_JIS),
            "EUCKR" => rs("EUC_KR", encoding_rs::EUC_KR),
            "UHC" => rs("UHC", encoding_rs::EUC_KR),
            "BIG5" => rs("BIG5", encoding_rs::BIG5),
            "GBK" => rs("GBK", encoding_rs::GBK),
            "GB18030" => rs("GB18030", encoding_rs::GB18030),
            _ => ClientEncoding::Unsupported(name.to_string()),
        }
    }

    /// PostgreSQL's name for the encoding.
    pub fn name(&self) -> &str {
        match self {
            ClientEncoding::Utf8 => "UTF8",
            ClientEncoding::Latin1 => "LATIN1",
            ClientEncoding::Latin5 => "LATIN5",
            ClientEncoding::Rs { name, .. } => name,
            ClientEncoding::Unsupported(n) => n,
        }
    }

    /// Client bytes to UTF-8. Malformed input is a 22P02 error for `ty`.
    pub fn decode<'a>(&self, ty: LogicalType, bytes: &'a [u8]) -> Result<Cow<'a, str>, CodecError> {
        let bad = || CodecError::text(ty, "not valid in the client encoding");
        if bytes.is_ascii() && !matches!(self, ClientEncoding::Unsupported(_)) {
            // Every supported encoding is ASCII-compatible.
            return std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| bad());
        }
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| bad()),
            ClientEncoding::Latin1 => {
                Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
            }
            ClientEncoding::Latin5 => {
                Ok(Cow::Owned(bytes.iter().map(|&b| latin5_char(b)).collect()))
            }
            ClientEncoding::Rs { encoding, .. } => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(bad),
            ClientEncoding::Unsupported(n) => Err(CodecError::UnsupportedEncoding(n.clone())),
        }
    }

    /// UTF-8 to client bytes. A character with no equivalent is tried in decomposed
    /// form (WIN1258 spells Vietnamese tones as combining marks), else it is a 22P05
    /// error for `ty`.
    pub fn encode<'a>(&self, ty: LogicalType, text: &'a str) -> Result<Cow<'a, [u8]>, CodecError> {
        if text.is_ascii() && !matches!(self, ClientEncoding::Unsupported(_)) {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        let untranslatable = || CodecError::Untranslatable {
            ty,
            column: None,
            encoding: self.name().to_string(),
        };
        match self {
            ClientEncoding::Utf8 => Ok(Cow::Borrowed(text.as_bytes())),
            ClientEncoding::Unsupported(n) => Err(CodecError::UnsupportedEncoding(n.clone())),
            _ => {
                if let Some(b) = self.encode_exact(text) {
                    return Ok(Cow::Owned(b));
                }
                let mut out = Vec::with_capacity(text.len());
                let mut buf = [0u8; 4];
                for c in text.chars() {
                    if let Some(b) = self.encode_exact(c.encode_utf8(&mut buf)) {
                        out.extend_from_slice(&b);
                        continue;
                    }
                    out.extend_from_slice(&self.encode_decomposed(c).ok_or_else(untranslatable)?);
                }
                Ok(Cow::Owned(out))
            }
        }
    }

    fn encode_exact(&self, s: &str) -> Option<Vec<u8>> {
        match self {
            ClientEncoding::Utf8 => Some(s.as_bytes().to_vec()),
            ClientEncoding::Latin1 => s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect(),
            ClientEncoding::Latin5 => s.chars().map(latin5_byte).collect(),
            ClientEncoding::Rs { encoding, .. } => {
                let (bytes, _, had_errors) = encoding.encode(s);
                (!had_errors).then(|| bytes.into_owned())
            }
            ClientEncoding::Unsupported(_) => None,
        }
    }

    /// `ộ` = `o` + U+0323 + U+0302: find a precomposed letter the encoding has (`ô`)
    /// made of the base and some of the marks, then the other marks one by one.
    /// Subsets with more marks are tried first.
    fn encode_decomposed(&self, c: char) -> Option<Vec<u8>> {
        let parts: Vec<char> = c.nfd().collect();
        let (base, marks) = parts.split_first()?;
        if marks.is_empty() || marks.len() > 4 {
            return None;
        }
        let n = marks.len();
        let mut subsets: Vec<u32> = (0..(1u32 << n)).collect();
        subsets.sort_by_key(|m| std::cmp::Reverse(m.count_ones()));
        let mut buf = [0u8; 4];
        for mask in subsets {
            let mut head = String::new();
            head.push(*base);
            head.extend(
                marks
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, m)| *m),
            );
            let head: String = head.nfc().collect();
            let Some(mut out) = self.encode_exact(&head) else {
                continue;
            };
            let rest = marks
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) == 0);
            let mut ok = true;
            for (_, m) in rest {
                match self.encode_exact(m.encode_utf8(&mut buf)) {
                    Some(b) => out.extend_from_slice(&b),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                return Some(out);
            }
        }
        None
    }
}

const LATIN5_DIFF: [(u8, char); 6] = [
    (0xD0, '\u{011E}'),
    (0xDD, '\u{0130}'),
    (0xDE, '\u{015E}'),
    (0xF0, '\u{011F}'),
    (0xFD, '\u{0131}'),
    (0xFE, '\u{015F}'),
];

fn latin5_char(b: u8) -> char {
    LATIN5_DIFF
        .iter()
        .find(|(x, _)| *x == b)
        .map(|(_, c)| *c)
        .unwrap_or(char::from(b))
}

fn latin5_byte(c: char) -> Option<u8> {
    if let Some((b, _)) = LATIN5_DIFF.iter().find(|(_, x)| *x == c) {
        return Some(*b);
    }
    let b = u8::try_from(u32::from(c)).ok()?;
    // The Latin-1 characters that LATIN5 replaced have no byte.
    (!LATIN5_DIFF.iter().any(|(x, _)| *x == b)).then_some(b)
}
