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
    let mut i = 0;
    while i < n {
        let lexeme = lexeme_at(b, i, plain_backslash);
        if lexeme.hidden {
            for h in &mut hidden[i..lexeme.end.min(n)] {
                *h = true;
            }
        }
        i = lexeme.end;
    }
}

/// One lexeme as [`mark_hidden`] reads it: where it ends (exclusive, always past its
/// start) and whether it is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lexeme {
    end: usize,
    hidden: bool,
}

impl Lexeme {
    /// A literal, number or comment ending at `end`.
    fn hidden(end: usize) -> Lexeme {
        Lexeme { end, hidden: true }
    }

    /// Code (identifier, keyword, operator, `$n`) ending at `end`.
    fn shown(end: usize) -> Lexeme {
        Lexeme { end, hidden: false }
    }
}

/// The lexeme starting at `i` and whether it is hidden, one case per lexeme kind.
fn lexeme_at(b: &[u8], i: usize, plain_backslash: bool) -> Lexeme {
    let c = b[i];
    let next = b.get(i + 1).copied();
    let prev_ident = i > 0 && is_ident(b[i - 1]);
    match c {
        // A literal the analyser's fingerprint already stripped: `\0` + kind letter.
        0 => Lexeme::hidden(i + 2),
        b'-' if next == Some(b'-') => Lexeme::hidden(line_comment_end(b, i)),
        b'/' if next == Some(b'*') => Lexeme::hidden(block_comment_end(b, i)),
        // A quoted identifier: shown, but its quotes must not start a string.
        b'"' => Lexeme::shown(quoted_ident_end(b, i)),
        b'\'' => Lexeme::hidden(string_end(b, i, plain_backslash || has_e_prefix(b, i))),
        b'$' if !prev_ident => dollar_lexeme(b, i),
        b'0'..=b'9' if !prev_ident => Lexeme::hidden(number_end(b, i)),
        b'.' if !prev_ident && next.is_some_and(|d| d.is_ascii_digit()) => {
            Lexeme::hidden(number_end(b, i + 1))
        }
        _ if is_ident(c) => Lexeme::shown(ident_end(b, i)),
        _ => Lexeme::shown(i + 1),
    }
}

/// The end of a `-- …` comment starting at `start`: the next newline (kept) or the end.
fn line_comment_end(b: &[u8], start: usize) -> usize {
    b[start..]
        .iter()
        .position(|&x| x == b'\n')
        .map_or(b.len(), |p| start + p)
}

/// The end of a `/* … */` comment starting at `start`, counting nested comments; the
/// end of the text when unterminated.
fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut j = start;
    while j < b.len() {
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
    j
}

/// The end of a `"…"` identifier starting at `start` (`""` inside is an escaped quote).
fn quoted_ident_end(b: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while j < b.len() {
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
    j.max(start + 1)
}

/// Whether the quote at `quote` opens an `E'…'` string (backslash escapes): an `e`/`E`
/// just before it that is a word of its own.
fn has_e_prefix(b: &[u8], quote: usize) -> bool {
    quote > 0 && matches!(b[quote - 1], b'e' | b'E') && (quote < 2 || !is_ident(b[quote - 2]))
}

/// The lexeme at a `$` that does not continue an identifier: a `$n` parameter (shown), a
/// `$tag$…$tag$` string up to its closing tag or the end (hidden), or a lone `$` (shown).
fn dollar_lexeme(b: &[u8], start: usize) -> Lexeme {
    let n = b.len();
    if b.get(start + 1).is_some_and(|d| d.is_ascii_digit()) {
        let mut i = start + 1;
        while i < n && b[i].is_ascii_digit() {
            i += 1;
        }
        return Lexeme::shown(i);
    }
    let mut j = start + 1;
    while j < n && is_tag_char(b[j]) {
        j += 1;
    }
    if j < n && b[j] == b'$' {
        let delim = &b[start..=j];
        let body = j + 1;
        let end = b[body..]
            .windows(delim.len())
            .position(|w| w == delim)
            .map_or(n, |p| body + p + delim.len());
        Lexeme::hidden(end)
    } else {
        Lexeme::shown(start + 1)
    }
}

/// The end of the identifier or keyword starting at `start`.
fn ident_end(b: &[u8], start: usize) -> usize {
    let mut j = start;
    while j < b.len() && is_ident(b[j]) {
        j += 1;
    }
    j
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
    fn each_lexeme_kind_ends_where_postgres_ends_it() {
        let hidden = Lexeme::hidden;
        let shown = Lexeme::shown;
        for (sql, at, plain_backslash, want) in [
            ("\0sx", 0, false, hidden(2)),
            ("-- x\ny", 0, false, hidden(4)),
            ("/* /* */ */x", 0, false, hidden(11)),
            ("/* open", 0, false, hidden(7)),
            ("\"a\"\"b\"c", 0, false, shown(6)),
            ("'a\\'b'c", 0, false, hidden(4)),
            ("'a\\'b'c", 0, true, hidden(6)),
            ("E'a\\'b'c", 1, false, hidden(7)),
            ("se'a\\'b'c", 2, false, hidden(6)),
            ("$12x", 0, false, shown(3)),
            ("$q$a$b$q$c", 0, false, hidden(9)),
            ("$q$open", 0, false, hidden(7)),
            ("$ x", 0, false, shown(1)),
            ("12e-3x", 0, false, hidden(6)),
            (".5)", 0, false, hidden(2)),
            ("a$b$c $1", 0, false, shown(5)),
            ("a1", 1, false, shown(2)),
            ("<=", 0, false, shown(1)),
        ] {
            assert_eq!(
                lexeme_at(sql.as_bytes(), at, plain_backslash),
                want,
                "{sql:?} at {at}"
            );
        }
    }

    #[test]
    fn every_lexeme_ends_past_its_start() {
        for sql in SPELLINGS
            .iter()
            .copied()
            .chain(["\0", "$", "-", "/*", "\"", "E'"])
        {
            let b = sql.as_bytes();
            for at in 0..b.len() {
                for plain_backslash in [false, true] {
                    assert!(
                        lexeme_at(b, at, plain_backslash).end > at,
                        "{sql:?} at {at}"
                    );
                }
            }
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
