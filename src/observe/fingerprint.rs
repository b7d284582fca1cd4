//! Statement fingerprints: a keyed hash of the literal-free statement text, its
//! kinds and the protected tables it touches. Logs and audit events identify
//! statements by this, never by raw SQL (which could carry a sensitive literal).
//!
//! The key comes from `audit.fingerprint_key_env`, or is random per process; with
//! a random key, fingerprints only compare within one process lifetime.

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

static KEY: OnceLock<HmacSha256> = OnceLock::new();

/// Sets the fingerprint key (first call wins). Called once at startup.
pub fn init_key(secret: Option<&[u8]>) {
    let mut random = [0u8; 32];
    let key: &[u8] = match secret {
        Some(s) if !s.is_empty() => s,
        _ => {
            let _ = getrandom::fill(&mut random);
            &random
        }
    };
    if let Ok(mac) = <HmacSha256 as KeyInit>::new_from_slice(key) {
        let _ = KEY.set(mac);
    }
}

fn key() -> &'static HmacSha256 {
    if KEY.get().is_none() {
        init_key(None);
    }
    // init_key always succeeds for HMAC (any key length); fall back defensively.
    KEY.get_or_init(|| <HmacSha256 as KeyInit>::new(&Default::default()))
}

/// The fingerprint of a normalised statement: 16 hex digits.
/// `normalised` is `crate::sql::fingerprint(sql).text` (literals already removed).
pub fn fingerprint(normalised: &str, kinds: &[&str], tables: &[String]) -> String {
    let mut mac = key().clone();
    mac.update(normalised.as_bytes());
    for k in kinds {
        mac.update(b"\0k");
        mac.update(k.as_bytes());
    }
    for t in tables {
        mac.update(b"\0t");
        mac.update(t.as_bytes());
    }
    let out = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(16);
    for b in out.iter().take(8) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The statement with every literal, number and comment shown as `?`, for
/// `log.statements: redacted` and as the input of [`fingerprint`].
///
/// It reads the raw SQL text itself and does not rely on the analyser's literal
/// scanner: `'…'`, `E'…'` (backslash escapes), `U&'…'` (and its `UESCAPE '…'`),
/// `B'…'`, `X'…'`, `N'…'`, `$$…$$` and `$tag$…$tag$` (so DO and function bodies),
/// numbers (`42`, `.5`, `1e-3`, `0x1F`), `-- …` and nested `/* /* */ */` comments.
/// A run of hidden bytes becomes one `?`; identifiers, keywords, operators and
/// `$n` parameters stay.
///
/// Whether a backslash escapes a quote in a plain `'…'` string depends on the
/// session's `standard_conforming_strings`, which a client can change at any time.
/// The text is therefore lexed both ways and a byte is shown only when both
/// lexings call it code: whichever setting the server had, every byte it read
/// as part of a literal is hidden.
pub fn redact_sql(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut hidden = vec![false; b.len()];
    mark_hidden(b, false, &mut hidden);
    mark_hidden(b, true, &mut hidden);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if hidden[i] {
            out.push(b'?');
            while i < b.len() && hidden[i] {
                i += 1;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Hidden runs start and end at ASCII delimiters, so this is lossless in practice.
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn is_tag_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Marks the bytes one lexing of `b` reads as literals, numbers or comments.
/// `plain_backslash`: a backslash escapes the next character in plain `'…'`
/// strings (standard_conforming_strings = off).
fn mark_hidden(b: &[u8], plain_backslash: bool, hidden: &mut [bool]) {
    let n = b.len();
    let mut mark = |from: usize, to: usize| {
        for h in &mut hidden[from..to.min(n)] {
            *h = true;
        }
    };
    let mut i = 0;
    while i < n {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        match c {
            0 => {
                // A literal the analyser's fingerprint already stripped: `\0` + kind letter.
                mark(i, i + 2);
                i += 2;
            }
            b'-' if next == Some(b'-') => {
                let end = b[i..].iter().position(|&x| x == b'\n').map_or(n, |p| i + p);
                mark(i, end);
                i = end;
            }
            b'/' if next == Some(b'*') => {
                let mut depth = 0usize;
                let mut j = i;
                while j < n {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                mark(i, j);
                i = j;
            }
            b'"' => {
                // A quoted identifier: shown, but its quotes must not start a string.
                let mut j = i + 1;
                while j < n {
                    if b[j] == b'"' {
                        if b.get(j + 1) == Some(&b'"') {
                            j += 2;
                            continue;
                        }
                        j += 1;
                        break;
                    }
                    j += 1;
                }
                i = j.max(i + 1);
            }
            b'\'' => {
                // E'…' (the prefix was read as an identifier just before) escapes with backslashes.
                let e_prefix =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident(b[i - 2]));
                let escapes = plain_backslash || e_prefix;
                let end = string_end(b, i, escapes);
                mark(i, end);
                i = end;
            }
            b'$' if !prev_ident => {
                if next.is_some_and(|d| d.is_ascii_digit()) {
                    // $n parameter: shown.
                    i += 1;
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    continue;
                }
                let mut j = i + 1;
                while j < n && is_tag_char(b[j]) {
                    j += 1;
                }
                if j < n && b[j] == b'$' {
                    let delim = &b[i..=j];
                    let body = j + 1;
                    let end = b[body..]
                        .windows(delim.len())
                        .position(|w| w == delim)
                        .map_or(n, |p| body + p + delim.len());
                    mark(i, end);
                    i = end;
                } else {
                    i += 1;
                }
            }
            b'0'..=b'9' if !prev_ident => {
                let end = number_end(b, i);
                mark(i, end);
                i = end;
            }
            b'.' if !prev_ident && next.is_some_and(|d| d.is_ascii_digit()) => {
                let end = number_end(b, i + 1);
                mark(i, end);
                i = end;
            }
            _ if is_ident(c) => {
                while i < n && is_ident(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
}

/// The end (exclusive) of the string literal whose opening quote is at `start`.
fn string_end(b: &[u8], start: usize, escapes: bool) -> usize {
    let mut j = start + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if escapes => j += 2,
            b'\'' if b.get(j + 1) == Some(&b'\'') => j += 2,
            b'\'' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The end (exclusive) of a numeric constant starting at `start` (digits,
/// letters for hex/binary/exponent, `_` separators, a decimal point, an exponent sign).
fn number_end(b: &[u8], start: usize) -> usize {
    let mut j = start;
    while j < b.len() {
        let c = b[j];
        let exponent_sign =
            (c == b'+' || c == b'-') && j > start && matches!(b[j - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || exponent_sign {
            j += 1;
        } else {
            break;
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_literal_values_but_not_kind_or_tables() {
        let a = crate::sql::fingerprint("SELECT * FROM t WHERE phone = '0912345678'");
        let b = crate::sql::fingerprint("SELECT * FROM t WHERE phone = '0987654321'");
        let fa = fingerprint(&a.text, &["select"], &["public.t".into()]);
        assert_eq!(fa, fingerprint(&b.text, &["select"], &["public.t".into()]));
        assert_ne!(fa, fingerprint(&a.text, &["delete"], &["public.t".into()]));
        assert_ne!(fa, fingerprint(&a.text, &["select"], &["public.u".into()]));
        assert_eq!(fa.len(), 16);
    }

    /// Each spelling holds the sentinel `S3CR3T` (or its pieces) in a literal form.
    const SPELLINGS: &[&str] = &[
        "SELECT 'S3CR3T'",
        "SELECT 'it''s S3CR3T'",
        "SELECT E'S3CR3T'",
        "SELECT e'a\\'S3CR3T'",
        "SELECT E'\\\\' , 'S3CR3T'",
        "SELECT 'a\\' , 'S3CR3T'",
        "SELECT 'a\\'S3CR3T'",
        "SELECT U&'S3CR3T\\0041'",
        "SELECT U&'!0041S3CR3T' UESCAPE '!'",
        "SELECT $$S3CR3T$$",
        "SELECT $q$S3CR3T$q$",
        "SELECT $q$ it's $$ S3CR3T $$ $q$",
        "SELECT $_x1$S3CR3T$_x1$",
        "SELECT B'1010' AS S3CR3T_bits WHERE x = X'53335CR3'",
        "SELECT N'S3CR3T'",
        "SELECT 'S3C' 'R3T'",
        "SELECT 'S3C'\n  'R3T'",
        "SELECT 1 -- S3CR3T",
        "SELECT /* S3CR3T */ 1",
        "SELECT /* outer /* S3CR3T */ still S3CR3T */ 1",
        "DO $do$BEGIN PERFORM 'S3CR3T'; END$do$",
        "DO 'BEGIN RAISE NOTICE ''S3CR3T''; END'",
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $fn$ SELECT 'S3CR3T' $fn$",
        "CREATE FUNCTION f() RETURNS text AS 'SELECT ''S3CR3T''' LANGUAGE sql",
        "INSERT INTO t VALUES ('S3CR3T') -- unterminated '",
        "SELECT 'S3CR3T",
        "SELECT $q$S3CR3T",
        "SELECT /* S3CR3T",
    ];

    #[test]
    fn every_literal_form_is_hidden() {
        for sql in SPELLINGS {
            let r = redact_sql(sql);
            let shown = r.replace("S3CR3T_bits", "");
            for needle in ["S3CR3T", "S3C", "R3T", "1010", "53335"] {
                assert!(!shown.contains(needle), "{sql:?} -> {r:?}");
            }
            assert!(r.contains('?'), "{sql:?} -> {r:?}");
        }
    }

    #[test]
    fn numbers_are_hidden_and_names_and_parameters_stay() {
        for (sql, want) in [
            (
                "SELECT a1, t.b FROM t2 WHERE id = 0912345678 AND x > 1.5e-3",
                "SELECT a1, t.b FROM t2 WHERE id = ? AND x > ?",
            ),
            ("SELECT .5, 0x1F, 1_000", "SELECT ?, ?, ?"),
            (
                "SELECT $1, $2 FROM \"we'ird\"",
                "SELECT $1, $2 FROM \"we'ird\"",
            ),
            ("SELECT a$b$c FROM t", "SELECT a$b$c FROM t"),
            ("SELECT 'x'::int", "SELECT ?::int"),
            ("SELECT tên1 FROM t", "SELECT tên1 FROM t"),
        ] {
            assert_eq!(redact_sql(sql), want);
        }
    }

    #[test]
    fn fingerprints_of_redacted_text_ignore_every_literal_form() {
        let a = redact_sql("DO $x$BEGIN PERFORM 'one'; END$x$ -- first");
        let b = redact_sql("DO $y$BEGIN PERFORM 'two'; END$y$ -- second");
        assert_eq!(
            fingerprint(&a, &["body"], &[]),
            fingerprint(&b, &["body"], &[])
        );
    }
}
