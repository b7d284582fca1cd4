//! A small PostgreSQL lexer: just enough to find identifiers, literals, bodies and
//! statement boundaries without the full parser.
//!
//! It follows PostgreSQL's rules with `standard_conforming_strings = on` (the default
//! since 9.1): backslashes escape only inside `E'...'`. It never fails: anything
//! unterminated is reported through [`Lexer::unterminated`] so callers can fail closed.

use std::ops::Range;

/// The kind of a literal the fingerprint strips and the rewriter may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiteralKind {
    /// `'...'` (also `N'...'`).
    String,
    /// `E'...'` with backslash escapes.
    EscapeString,
    /// `U&'...'` with Unicode escapes.
    UnicodeString,
    /// `B'...'` or `X'...'`.
    BitString,
    /// An unsigned numeric constant.
    Number,
}

impl LiteralKind {
    /// The placeholder byte used in fingerprints.
    pub(crate) fn tag(self) -> char {
        match self {
            LiteralKind::String => 's',
            LiteralKind::EscapeString => 'e',
            LiteralKind::UnicodeString => 'u',
            LiteralKind::BitString => 'b',
            LiteralKind::Number => 'n',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokKind {
    Space,
    Comment,
    Word,
    /// `"..."`, possibly with doubled quotes inside.
    QuotedIdent,
    /// `U&"..."`.
    UnicodeIdent,
    Literal(LiteralKind),
    /// `$tag$ ... $tag$`; the content range excludes the delimiters.
    Dollar,
    /// `$1`.
    Param,
    Semicolon,
    Punct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    pub kind: TokKind,
    pub span: Range<usize>,
    /// For quoted things, the bytes between the delimiters.
    pub content: Range<usize>,
}

pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Set when a quote, comment or body ran to the end of the input.
    pub unterminated: bool,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
            unterminated: false,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    /// Scans a quoted section starting after its opening quote; returns the end of the
    /// content (the closing quote's index). Doubled quotes continue the section.
    fn quoted(&mut self, from: usize, quote: u8, backslash: bool) -> usize {
        let mut i = from;
        while i < self.src.len() {
            let b = self.src[i];
            if backslash && b == b'\\' {
                i += 2;
                continue;
            }
            if b == quote {
                if self.at(i + 1) == Some(quote) {
                    i += 2;
                    continue;
                }
                return i;
            }
            i += 1;
        }
        self.unterminated = true;
        self.src.len()
    }

    fn literal(&mut self, start: usize, quote_at: usize, kind: LiteralKind) -> Tok {
        let end = self.quoted(quote_at + 1, b'\'', kind == LiteralKind::EscapeString);
        self.pos = (end + 1).min(self.src.len());
        Tok {
            kind: TokKind::Literal(kind),
            span: start..self.pos,
            content: quote_at + 1..end,
        }
    }

    fn word(&mut self, start: usize) -> Tok {
        let mut i = start + 1;
        let first = self.src[start];
        // String prefixes: E'..', B'..', X'..', N'..', U&'..', U&"..".
        if self.at(i) == Some(b'\'') {
            let kind = match first {
                b'e' | b'E' => Some(LiteralKind::EscapeString),
                b'b' | b'B' | b'x' | b'X' => Some(LiteralKind::BitString),
                b'n' | b'N' => Some(LiteralKind::String),
                _ => None,
            };
            if let Some(kind) = kind {
                return self.literal(start, i, kind);
            }
        }
        if (first == b'u' || first == b'U') && self.at(i) == Some(b'&') {
            match self.at(i + 1) {
                Some(b'\'') => return self.literal(start, i + 1, LiteralKind::UnicodeString),
                Some(b'"') => {
                    let end = self.quoted(i + 2, b'"', false);
                    self.pos = (end + 1).min(self.src.len());
                    return Tok {
                        kind: TokKind::UnicodeIdent,
                        span: start..self.pos,
                        content: i + 2..end,
                    };
                }
                _ => {}
            }
        }
        while self.at(i).is_some_and(is_ident_cont) {
            i += 1;
        }
        self.pos = i;
        Tok {
            kind: TokKind::Word,
            span: start..i,
            content: start..i,
        }
    }

    fn number(&mut self, start: usize) -> Tok {
        let mut i = start;
        while self
            .at(i)
            .is_some_and(|b| b.is_ascii_digit() || b == b'_' || b == b'.')
        {
            // `1..2` is not a number followed by a number; stop before a second dot.
            if self.src[i] == b'.' && self.at(i + 1) == Some(b'.') {
                break;
            }
            i += 1;
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(self.at(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if self.at(j).is_some_and(|b| b.is_ascii_digit()) {
                i = j;
                while self.at(i).is_some_and(|b| b.is_ascii_digit()) {
                    i += 1;
                }
            }
        }
        // Hex/octal/binary integers (PostgreSQL 16) and trailing junk stay one token.
        while self
            .at(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            i += 1;
        }
        self.pos = i;
        Tok {
            kind: TokKind::Literal(LiteralKind::Number),
            span: start..i,
            content: start..i,
        }
    }

    fn dollar(&mut self, start: usize) -> Tok {
        let mut i = start + 1;
        if self.at(i).is_some_and(|b| b.is_ascii_digit()) {
            while self.at(i).is_some_and(|b| b.is_ascii_digit()) {
                i += 1;
            }
            self.pos = i;
            return Tok {
                kind: TokKind::Param,
                span: start..i,
                content: start + 1..i,
            };
        }
        if self.at(i).is_some_and(is_ident_start) {
            while self
                .at(i)
                .is_some_and(|b| is_ident_start(b) || b.is_ascii_digit())
            {
                i += 1;
            }
        }
        if self.at(i) != Some(b'$') {
            self.pos = start + 1;
            return Tok {
                kind: TokKind::Punct,
                span: start..start + 1,
                content: start..start + 1,
            };
        }
        let delim = &self.src[start..=i];
        let body_start = i + 1;
        let found = self.src[body_start..]
            .windows(delim.len())
            .position(|w| w == delim);
        let (body_end, end) = match found {
            Some(p) => (body_start + p, body_start + p + delim.len()),
            None => {
                self.unterminated = true;
                (self.src.len(), self.src.len())
            }
        };
        self.pos = end;
        Tok {
            kind: TokKind::Dollar,
            span: start..end,
            content: body_start..body_end,
        }
    }

    fn comment(&mut self, start: usize) -> Option<Tok> {
        let next = self.at(start + 1);
        let b = self.src[start];
        let end = if b == b'-' && next == Some(b'-') {
            self.src[start..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(self.src.len(), |p| start + p)
        } else if b == b'/' && next == Some(b'*') {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                if i >= self.src.len() {
                    self.unterminated = true;
                    break self.src.len();
                }
                if self.src[i] == b'/' && self.at(i + 1) == Some(b'*') {
                    depth += 1;
                    i += 2;
                } else if self.src[i] == b'*' && self.at(i + 1) == Some(b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break i;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            return None;
        };
        self.pos = end;
        Some(Tok {
            kind: TokKind::Comment,
            span: start..end,
            content: start..end,
        })
    }
}

impl Iterator for Lexer<'_> {
    type Item = Tok;

    fn next(&mut self) -> Option<Tok> {
        let start = self.pos;
        let b = *self.src.get(start)?;
        let simple = |kind, end: usize| Tok {
            kind,
            span: start..end,
            content: start..end,
        };
        let tok = match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                let mut i = start + 1;
                while matches!(self.at(i), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
                    i += 1;
                }
                self.pos = i;
                simple(TokKind::Space, i)
            }
            b'-' | b'/' => match self.comment(start) {
                Some(t) => t,
                None => {
                    self.pos = start + 1;
                    simple(TokKind::Punct, start + 1)
                }
            },
            b'\'' => self.literal(start, start, LiteralKind::String),
            b'"' => {
                let end = self.quoted(start + 1, b'"', false);
                self.pos = (end + 1).min(self.src.len());
                Tok {
                    kind: TokKind::QuotedIdent,
                    span: start..self.pos,
                    content: start + 1..end,
                }
            }
            b'$' => self.dollar(start),
            b';' => {
                self.pos = start + 1;
                simple(TokKind::Semicolon, start + 1)
            }
            b'0'..=b'9' => self.number(start),
            b'.' if self.at(start + 1).is_some_and(|c| c.is_ascii_digit()) => self.number(start),
            c if is_ident_start(c) => self.word(start),
            _ => {
                // Step over a whole UTF-8 sequence is unnecessary: bytes >= 0x80 start words.
                self.pos = start + 1;
                simple(TokKind::Punct, start + 1)
            }
        };
        Some(tok)
    }
}

/// Splits a query string into statements at top-level semicolons (not inside
/// quotes, bodies, comments or a `BEGIN ATOMIC ... END` block). Empty statements
/// (only spaces and comments) are dropped, as PostgreSQL does.
pub fn split_statements(sql: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut meaningful = false;
    let mut prev_word_begin = false;
    let mut atomic_depth: Option<usize> = None;
    for tok in Lexer::new(sql) {
        match tok.kind {
            TokKind::Space | TokKind::Comment => continue,
            TokKind::Semicolon if atomic_depth.is_none() => {
                if meaningful {
                    out.push(start..tok.span.start);
                }
                start = tok.span.end;
                meaningful = false;
                prev_word_begin = false;
                continue;
            }
            TokKind::Word => {
                let w = &sql[tok.span.clone()];
                if prev_word_begin && w.eq_ignore_ascii_case("atomic") && atomic_depth.is_none() {
                    atomic_depth = Some(0);
                } else if let Some(d) = atomic_depth {
                    if w.eq_ignore_ascii_case("case") {
                        atomic_depth = Some(d + 1);
                    } else if w.eq_ignore_ascii_case("end") {
                        atomic_depth = d.checked_sub(1);
                    }
                }
                prev_word_begin = w.eq_ignore_ascii_case("begin");
            }
            _ => prev_word_begin = false,
        }
        meaningful = true;
    }
    if meaningful {
        out.push(start..sql.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokKind, &str)> {
        Lexer::new(sql)
            .filter(|t| t.kind != TokKind::Space)
            .map(|t| (t.kind, &sql[t.span]))
            .collect()
    }

    #[test]
    fn lexer_recognises_literal_forms() {
        let k = kinds(r"E'a\'b' 'it''s' U&'x' B'01' 1.5e3 $1 $q$ a;b $q$");
        assert_eq!(
            k[0],
            (TokKind::Literal(LiteralKind::EscapeString), r"E'a\'b'")
        );
        assert_eq!(k[1], (TokKind::Literal(LiteralKind::String), "'it''s'"));
        assert_eq!(
            k[2],
            (TokKind::Literal(LiteralKind::UnicodeString), "U&'x'")
        );
        assert_eq!(k[3], (TokKind::Literal(LiteralKind::BitString), "B'01'"));
        assert_eq!(k[4], (TokKind::Literal(LiteralKind::Number), "1.5e3"));
        assert_eq!(k[5], (TokKind::Param, "$1"));
        assert_eq!(k[6], (TokKind::Dollar, "$q$ a;b $q$"));
    }

    #[test]
    fn identifier_with_dollar_is_one_word() {
        let k = kinds("a$b$ $$x$$");
        assert_eq!(k[0], (TokKind::Word, "a$b$"));
        assert_eq!(k[1], (TokKind::Dollar, "$$x$$"));
    }

    #[test]
    fn split_ignores_semicolons_in_quotes_bodies_and_comments() {
        let sql = "select ';'; /* ; */ do $$ begin; end $$ ; -- ;\n select 2;;";
        let parts: Vec<&str> = split_statements(sql).into_iter().map(|r| &sql[r]).collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "select ';'");
        assert!(parts[1].contains("do $$ begin; end $$"));
        assert!(parts[2].trim_start().starts_with("-- ;"));
    }

    #[test]
    fn split_keeps_begin_atomic_body_together() {
        let sql = "create function f() returns int begin atomic select case when true then 1 end; select 2; end; select 3";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn unterminated_quote_is_reported() {
        let mut l = Lexer::new("select 'abc");
        for _ in l.by_ref() {}
        assert!(l.unterminated);
    }
}
