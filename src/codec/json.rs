//! jsonb: a strict JSON parser and PostgreSQL's jsonb output form.
//!
//! Canonical form is what PostgreSQL prints for jsonb: object keys sorted by length
//! then bytes, duplicate keys resolved to the last value, `", "` and `": "` separators.
//! Numbers are canonical numerics (`1.50` becomes `1.5`, which jsonb compares equal).
//! Nesting is limited so hostile input cannot exhaust the stack.

use super::error::CodecError;
use super::numeric::Numeric;
use crate::policy::LogicalType;

const TY: LogicalType = LogicalType::Jsonb;
const MAX_DEPTH: usize = 256;

enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn err(reason: &'static str) -> CodecError {
    CodecError::text(TY, reason)
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, CodecError> {
        if depth > MAX_DEPTH {
            return Err(err("JSON nested too deeply"));
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.eat(b"}") {
                    return Ok(Json::Object(members));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return Err(err("expected a string as object key"));
                    }
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(b":") {
                        return Err(err("expected \":\" after object key"));
                    }
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    if self.eat(b",") {
                        continue;
                    }
                    if self.eat(b"}") {
                        return Ok(Json::Object(members));
                    }
                    return Err(err("expected \",\" or \"}\" in object"));
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b",") {
                        continue;
                    }
                    if self.eat(b"]") {
                        return Ok(Json::Array(items));
                    }
                    return Err(err("expected \",\" or \"]\" in array"));
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ if self.eat(b"true") => Ok(Json::Bool(true)),
            _ if self.eat(b"false") => Ok(Json::Bool(false)),
            _ if self.eat(b"null") => Ok(Json::Null),
            _ => Err(err("expected a JSON value")),
        }
    }

    fn number(&mut self) -> Result<Json, CodecError> {
        let start = self.i;
        self.eat(b"-");
        let digits = |p: &mut Self| {
            let s = p.i;
            while matches!(p.s.get(p.i), Some(b'0'..=b'9')) {
                p.i += 1;
            }
            p.i - s
        };
        let int_start = self.i;
        let n = digits(self);
        if n == 0 || (n > 1 && self.s.get(int_start) == Some(&b'0')) {
            return Err(err("invalid JSON number"));
        }
        if self.eat(b".") && digits(self) == 0 {
            return Err(err("invalid JSON number"));
        }
        if self.eat(b"e") || self.eat(b"E") {
            if !self.eat(b"+") {
                self.eat(b"-");
            }
            if digits(self) == 0 {
                return Err(err("invalid JSON number"));
            }
        }
        let text = std::str::from_utf8(self.s.get(start..self.i).unwrap_or(&[]))
            .map_err(|_| err("invalid JSON number"))?;
        let n = Numeric::parse_text(text).map_err(|e| match e {
            CodecError::OutOfRange { reason, .. } => CodecError::range(TY, reason),
            _ => err("invalid JSON number"),
        })?;
        Ok(Json::Number(n.to_canonical()))
    }

    fn hex4(&mut self) -> Result<u32, CodecError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or(err("truncated \\u escape"))?;
        let s = std::str::from_utf8(h).map_err(|_| err("invalid \\u escape"))?;
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("invalid \\u escape"));
        }
        self.i += 4;
        u32::from_str_radix(s, 16).map_err(|_| err("invalid \\u escape"))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(err("unterminated JSON string"));
            };
            self.i += 1;
            match c {
                b'"' => break,
                0..=0x1f => return Err(err("control characters in JSON strings must be escaped")),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(err("unterminated JSON string"));
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if !self.eat(b"\\u") {
                                    return Err(err("unpaired Unicode surrogate"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(err("unpaired Unicode surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            if cp == 0 {
                                return Err(err("\\u0000 cannot be stored in jsonb"));
                            }
                            char::from_u32(cp).ok_or(err("unpaired Unicode surrogate"))?
                        }
                        _ => return Err(err("invalid escape in JSON string")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| err("invalid UTF-8 in JSON string"))
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(out: &mut String, v: Json) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n),
        Json::Str(s) => write_str(out, &s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(out, item);
            }
            out.push(']');
        }
        Json::Object(mut members) => {
            // Stable sort keeps input order among equal keys; the last one wins.
            members.sort_by(|a, b| {
                a.0.len()
                    .cmp(&b.0.len())
                    .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
            });
            let mut kept: Vec<(String, Json)> = Vec::with_capacity(members.len());
            for m in members {
                match kept.last_mut() {
                    Some(last) if last.0 == m.0 => *last = m,
                    _ => kept.push(m),
                }
            }
            out.push('{');
            for (i, (k, v)) in kept.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, &k);
                out.push_str(": ");
                write(out, v);
            }
            out.push('}');
        }
    }
}

/// Parses JSON text and returns the canonical jsonb text.
pub(crate) fn canonical_json(s: &str) -> Result<String, CodecError> {
    let mut p = Parser {
        s: s.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(err("unexpected data after the JSON value"));
    }
    let mut out = String::with_capacity(s.len());
    write(&mut out, v);
    Ok(out)
}
