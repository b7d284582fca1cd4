//! The fast path: decide without the parser whether a statement could reach a
//! protected column ([`may_mention`]), and compute a literal-stripped [`fingerprint`]
//! that keys the analysis cache.
//!
//! # What the fast path looks for
//!
//! The [`NameSet`] holds the names a statement must contain to reach protected data:
//! - the names of every *reaching* relation (the catalog's reach set: protected tables,
//!   their partitions and inheritance children and parents, views reading them, and
//!   relations whose rules, triggers, policies or defaults reach them);
//! - the names of user functions and procedures that reach one (or run dynamic SQL);
//! - the built-ins catalogue of [`super::builtins`] (SQL-executing functions such as
//!   `query_to_xml`, and value-exposing catalog relations such as `pg_stats`);
//! - the words that hide names: DO, EXECUTE and CALL.
//!
//! Column names are NOT in it (when the catalog's reach set exists): a column can only
//! be reached through a relation, so `CREATE TABLE people(k int, name text)` passes
//! even when a protected column is called `name`. [`NameSet::from_policy`] is the
//! conservative fallback for when no reach set exists yet: policy tables and columns.
//!
//! Ordinary string literals are data, not SQL: `'customers'` or `E'\x70hone'` name
//! nothing. Only strings that are SQL which will run are scanned as SQL text: the
//! bodies of DO blocks and of CREATE FUNCTION / PROCEDURE. (Arguments of SQL-executing
//! built-ins need no scan: the built-in's own name sends the statement to the analyser,
//! which marks it [`Opaque`](super::Opaque).) Inside a body, a `U&"..."` identifier is
//! distrusted (it could spell a name); an `E'...'` body is decoded before the scan.
//!
//! `may_mention` may say "yes" too often (that costs a parse) but must never say "no"
//! for a statement that reaches a protected column. A statement that names nothing in
//! the set passes untouched whatever identifiers or strings it holds.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;

use super::builtins;
use super::lexer::{Lexer, LiteralKind, TokKind};
use crate::policy::Policy;

/// What a name in the [`NameSet`] stands for (a name may be several things).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A reaching relation (table, view, parent, ...), or a policy table.
    Relation,
    /// A policy column name (only in the [`NameSet::from_policy`] fallback).
    Column,
    /// A user function or procedure that reaches protected data.
    Function,
    /// A catalogued SQL-executing built-in or value-exposing catalog relation.
    Builtin,
}

impl NameKind {
    fn bit(self) -> u8 {
        match self {
            NameKind::Relation => 1,
            NameKind::Column => 2,
            NameKind::Function => 4,
            NameKind::Builtin => 8,
        }
    }

    /// The most telling kind among `bits` (relations first: they decide refusals).
    fn from_bits(bits: u8) -> NameKind {
        [
            NameKind::Relation,
            NameKind::Column,
            NameKind::Function,
            NameKind::Builtin,
        ]
        .into_iter()
        .find(|k| bits & k.bit() != 0)
        .unwrap_or(NameKind::Relation)
    }
}

/// Every name a statement must contain to reach a protected column (see the module
/// docs). Built once per policy and catalog generation. Names are stored
/// ASCII-lower-cased; matching is case-insensitive, which is conservative for quoted
/// mixed-case names.
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    names: HashMap<Box<[u8]>, u8>,
    max_len: usize,
}

/// Words that send a statement to the full analyser whatever names it contains.
const DISTRUSTED_WORDS: [&str; 3] = ["do", "execute", "call"];

impl NameSet {
    /// The conservative fallback when the catalog has no reach set: the table and
    /// column names of every policy column (a view keeping a column's name is caught;
    /// one renaming it is not, which is why the reach set exists), and the built-ins.
    pub fn from_policy(policy: &Policy) -> NameSet {
        let mut set = NameSet::default();
        for c in policy.columns() {
            set.insert(&c.table.name);
            set.insert_kind(&c.column, NameKind::Column);
        }
        if !set.is_empty() {
            set.insert_builtins();
        }
        set
    }

    /// The fast-path set of one database snapshot: the names of every reaching
    /// relation (unqualified; the catalog's reach set, which includes the protected
    /// tables), the policy's own tables (the catalog may be a refresh behind), the
    /// names of reaching user functions and procedures, and the built-ins catalogue.
    /// Empty when nothing is protected (then every statement passes the fast path).
    pub fn from_reach<'a>(
        policy: &Policy,
        relations: impl IntoIterator<Item = &'a str>,
        functions: impl IntoIterator<Item = &'a str>,
    ) -> NameSet {
        let mut set = NameSet::default();
        for c in policy.columns() {
            set.insert(&c.table.name);
        }
        for r in relations {
            set.insert(r);
        }
        if set.is_empty() {
            return set;
        }
        for f in functions {
            set.insert_kind(f, NameKind::Function);
        }
        set.insert_builtins();
        set
    }

    fn insert_builtins(&mut self) {
        for f in builtins::SQL_EXECUTING_FUNCTIONS
            .iter()
            .chain(builtins::VALUE_EXPOSING_RELATIONS)
        {
            self.insert_kind(f, NameKind::Builtin);
        }
    }

    /// Adds one relation name (a view over a protected table, for instance).
    pub fn insert(&mut self, name: &str) {
        self.insert_kind(name, NameKind::Relation);
    }

    /// Adds one name of the given kind.
    pub fn insert_kind(&mut self, name: &str, kind: NameKind) {
        let lower = name.to_ascii_lowercase().into_bytes().into_boxed_slice();
        self.max_len = self.max_len.max(lower.len());
        *self.names.entry(lower).or_insert(0) |= kind.bit();
    }

    /// Whether the name (any case) is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.kind_of(name.as_bytes()).is_some()
    }

    /// Whether the name (any case) is a reaching relation's (or policy table's) name.
    pub fn is_relation(&self, name: &str) -> bool {
        self.bits_of(name.as_bytes()) & NameKind::Relation.bit() != 0
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn kind_of(&self, word: &[u8]) -> Option<NameKind> {
        let bits = self.bits_of(word);
        (bits != 0).then(|| NameKind::from_bits(bits))
    }

    /// Case-insensitive lookup without allocating.
    fn bits_of(&self, word: &[u8]) -> u8 {
        if word.is_empty() || word.len() > self.max_len {
            return 0;
        }
        let mut buf = [0u8; 64];
        let found = if word.len() <= buf.len() {
            let lower = &mut buf[..word.len()];
            lower.copy_from_slice(word);
            lower.make_ascii_lowercase();
            self.names.get(&*lower)
        } else {
            self.names.get(word.to_ascii_lowercase().as_slice())
        };
        found.copied().unwrap_or(0)
    }
}

fn is_distrusted_word(word: &[u8]) -> bool {
    DISTRUSTED_WORDS
        .iter()
        .any(|d| word.eq_ignore_ascii_case(d.as_bytes()))
}

/// Whether `sql` could reach a protected column. False only when it certainly
/// cannot; see the module docs for what is looked for.
pub fn may_mention(sql: &str, names: &NameSet) -> bool {
    !names.is_empty() && first_mention(sql, names, true).is_some()
}

/// Why a text may reach a protected column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mention {
    /// This name (lower-cased) of the set appears, standing for this kind.
    Name(String, NameKind),
    /// A word that hides names (DO, EXECUTE, CALL).
    Distrusted(String),
    /// An escape (`U&` identifier) that could spell a name.
    Escaped,
    /// A quote, comment or body runs to the end of the text.
    Unterminated,
}

/// Tracks whether the current statement is a DO block or CREATE FUNCTION/PROCEDURE,
/// whose string and dollar-quoted literals are SQL that will run.
/// In a CREATE FUNCTION/PROCEDURE, only strings after `AS` are the body (argument
/// defaults before it are data); in a DO block every string is.
#[derive(Default)]
struct BodyState {
    words: u8,
    create: bool,
    definition: bool,
    body: bool,
}

impl BodyState {
    fn word(&mut self, w: &[u8]) {
        if self.words == 0 {
            self.body = w.eq_ignore_ascii_case(b"do");
            self.create = w.eq_ignore_ascii_case(b"create");
        } else if self.create
            && self.words <= 4
            && (w.eq_ignore_ascii_case(b"function") || w.eq_ignore_ascii_case(b"procedure"))
        {
            self.definition = true;
        } else if self.definition && w.eq_ignore_ascii_case(b"as") {
            self.body = true;
        }
        self.words = self.words.saturating_add(1);
    }
}

/// The first reason `sql` may reach a protected column. With `distrust_words`, the
/// words DO, EXECUTE and CALL count as reasons too. Literals count only in the bodies
/// of DO blocks and CREATE FUNCTION / PROCEDURE statements.
pub(crate) fn first_mention(sql: &str, names: &NameSet, distrust_words: bool) -> Option<Mention> {
    first_mention_with(sql, names, distrust_words, |_| true)
}

/// [`first_mention`] restricted to names of the kinds `accept` takes.
pub(crate) fn first_mention_with(
    sql: &str,
    names: &NameSet,
    distrust_words: bool,
    accept: impl Fn(NameKind) -> bool,
) -> Option<Mention> {
    let bytes = sql.as_bytes();
    let mut lexer = Lexer::new(sql);
    let mut state = BodyState::default();
    let name = |w: &[u8]| {
        names
            .kind_of(w)
            .filter(|k| accept(*k))
            .map(|k| Mention::Name(String::from_utf8_lossy(w).to_ascii_lowercase(), k))
    };
    for tok in lexer.by_ref() {
        let text = &bytes[tok.span.clone()];
        let content = &bytes[tok.content.clone()];
        let hit = match tok.kind {
            TokKind::Word => {
                state.word(text);
                name(text).or_else(|| {
                    (distrust_words && is_distrusted_word(text)).then(|| {
                        Mention::Distrusted(String::from_utf8_lossy(text).to_ascii_uppercase())
                    })
                })
            }
            TokKind::QuotedIdent => {
                state.words = state.words.saturating_add(1);
                name(&unquote_ident(content))
            }
            TokKind::UnicodeIdent => Some(Mention::Escaped),
            TokKind::Literal(LiteralKind::UnicodeString) => state.body.then_some(Mention::Escaped),
            TokKind::Literal(LiteralKind::String) | TokKind::Dollar if state.body => {
                body_mention(content, &name)
            }
            TokKind::Literal(LiteralKind::EscapeString) if state.body => {
                let lit = LiteralSpan {
                    range: tok.span.clone(),
                    kind: LiteralKind::EscapeString,
                };
                match literal_value(sql, &lit) {
                    Ok(decoded) => body_mention(decoded.as_bytes(), &name),
                    Err(_) => Some(Mention::Escaped),
                }
            }
            TokKind::Semicolon => {
                state = BodyState::default();
                None
            }
            TokKind::Literal(_)
            | TokKind::Dollar
            | TokKind::Space
            | TokKind::Comment
            | TokKind::Param
            | TokKind::Punct => None,
        };
        if hit.is_some() {
            return hit;
        }
    }
    lexer.unterminated.then_some(Mention::Unterminated)
}

/// Whether the text, bodies included, contains the word (case-insensitive).
pub(crate) fn contains_word_anywhere(sql: &str, word: &str) -> bool {
    sql.as_bytes()
        .split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80))
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

/// A body that will run as SQL: scan it as text. A `U&"..."` identifier inside could
/// spell a name; strings inside it are the body's own data (dynamic SQL built from them
/// needs EXECUTE, which the analyser treats as opaque).
fn body_mention(body: &[u8], name: &impl Fn(&[u8]) -> Option<Mention>) -> Option<Mention> {
    if body.windows(3).any(|w| w.eq_ignore_ascii_case(b"u&\"")) {
        return Some(Mention::Escaped);
    }
    body.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$' || *b >= 0x80))
        .find_map(name)
}

fn unquote_ident(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while let Some(&b) = content.get(i) {
        out.push(b);
        i += if b == b'"' { 2 } else { 1 };
    }
    out
}

/// One literal found by the fingerprint scanner, in statement order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralSpan {
    /// Byte range of the whole literal token (prefix and quotes included).
    pub range: Range<usize>,
    pub kind: LiteralKind,
}

/// A literal-stripped form of a query string.
///
/// Two statements that differ only in the values of their string and numeric literals
/// have equal `text`. Dollar-quoted bodies are kept verbatim (they may be function
/// bodies, and the analysis depends on them). When the analysis could depend on a
/// literal's value (DO, CREATE FUNCTION/PROCEDURE, COPY options, positional
/// `ORDER BY 1`), the fingerprint is marked not `cacheable` or the numbers are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The statement with each stripped literal replaced by `\0` and a kind letter
    /// (a NUL byte cannot occur in a PostgreSQL query string).
    pub text: String,
    /// The stripped literals, in order. Plans refer to literals by index in this list.
    pub literals: Vec<LiteralSpan>,
    /// Whether analysis results keyed by `text` may be reused for other literal values.
    pub cacheable: bool,
}

impl Fingerprint {
    /// A 64-bit hash of the normalised text (for metrics and quick comparisons).
    pub fn hash64(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.text.hash(&mut h);
        h.finish()
    }
}

/// Computes the fingerprint of a query string (one or several statements).
pub fn fingerprint(sql: &str) -> Fingerprint {
    // First pass: words that decide what may be stripped.
    let mut keep_numbers = false;
    let mut cacheable = true;
    let mut first_word = true;
    let mut lexer = Lexer::new(sql);
    for tok in lexer.by_ref() {
        match tok.kind {
            TokKind::Word => {
                let w = &sql[tok.span.clone()];
                if first_word && (w.eq_ignore_ascii_case("do") || w.eq_ignore_ascii_case("copy")) {
                    cacheable = false;
                }
                if w.eq_ignore_ascii_case("function") || w.eq_ignore_ascii_case("procedure") {
                    cacheable = false;
                }
                if w.eq_ignore_ascii_case("order") || w.eq_ignore_ascii_case("group") {
                    keep_numbers = true;
                }
                first_word = false;
            }
            TokKind::Semicolon => first_word = true,
            TokKind::Space | TokKind::Comment => {}
            _ => first_word = false,
        }
    }
    // The analysis of later statements depends on a search_path change, which may be
    // spelled inside a literal (`set_config('search_path', ...)`).
    if lexer.unterminated || contains_word_anywhere(sql, "search_path") {
        cacheable = false;
    }
    let mut text = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut copied = 0usize;
    for tok in Lexer::new(sql) {
        let TokKind::Literal(kind) = tok.kind else {
            continue;
        };
        if kind == LiteralKind::Number && keep_numbers {
            continue;
        }
        text.push_str(&sql[copied..tok.span.start]);
        text.push('\0');
        text.push(kind.tag());
        copied = tok.span.end;
        literals.push(LiteralSpan {
            range: tok.span,
            kind,
        });
    }
    text.push_str(&sql[copied..]);
    Fingerprint {
        text,
        literals,
        cacheable,
    }
}

/// The value of a literal as PostgreSQL would read it (quotes removed, escapes
/// decoded). The error never contains the literal.
pub fn literal_value(sql: &str, lit: &LiteralSpan) -> Result<String, super::SqlError> {
    use super::refusal::{Fixed, LiteralForm, Reason};
    let bad = |what: LiteralForm| super::SqlError::from(Reason::UndecodableLiteral(what));
    let raw = sql
        .get(lit.range.clone())
        .ok_or_else(|| bad(LiteralForm::Any))?;
    match lit.kind {
        LiteralKind::Number => Ok(raw.replace('_', "")),
        LiteralKind::String => {
            let body = raw
                .strip_prefix(['n', 'N'])
                .unwrap_or(raw)
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .ok_or_else(|| bad(LiteralForm::String))?;
            Ok(body.replace("''", "'"))
        }
        LiteralKind::EscapeString => {
            let body = raw
                .get(2..raw.len().saturating_sub(1))
                .ok_or_else(|| bad(LiteralForm::EscapeString))?;
            decode_escape_string(body).ok_or_else(|| bad(LiteralForm::EscapeString))
        }
        LiteralKind::UnicodeString => {
            let body = raw
                .get(3..raw.len().saturating_sub(1))
                .ok_or_else(|| bad(LiteralForm::UnicodeString))?;
            let unquoted = body.replace("''", "'");
            // Same escape rules as U&"..." identifiers (doubled quotes already removed).
            super::ident::decode_unicode_ident(&unquoted.replace('"', "\"\""))
                .ok_or_else(|| bad(LiteralForm::UnicodeString))
        }
        LiteralKind::BitString => Err(Fixed::BitStringLiteral.into()),
    }
}

fn decode_escape_string(body: &str) -> Option<String> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let b = body.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        i += 1;
        if c == b'\'' {
            // A doubled quote.
            if b.get(i) == Some(&b'\'') {
                i += 1;
            }
            out.push(b'\'');
            continue;
        }
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *b.get(i)?;
        i += 1;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match b.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(v).ok()?);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match b.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    out.push(b'x');
                } else {
                    out.push(u8::try_from(v).ok()?);
                }
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let hex = body.get(i..i + n)?;
                let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                i += n;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            other => out.push(other),
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> NameSet {
        let mut n = NameSet::default();
        for w in ["customers", "phone", "national_id"] {
            n.insert(w);
        }
        n
    }

    #[test]
    fn plain_pgbench_statement_cannot_mention() {
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;";
        assert!(!may_mention(sql, &names()));
    }

    #[test]
    fn column_name_is_caught_in_any_case() {
        assert!(may_mention("select PHONE from t", &names()));
        assert!(may_mention("select \"Phone\" from t", &names()));
        assert!(may_mention("select x from public.Customers", &names()));
    }

    #[test]
    fn unicode_escaped_column_name_is_caught() {
        assert!(may_mention(r#"select U&"\0070hone" from t"#, &names()));
        assert!(may_mention(r#"select u&"x" from t"#, &names()));
    }

    #[test]
    fn strings_are_data_except_in_bodies() {
        // Issue 11: a literal holding a protected name reaches nothing.
        assert!(!may_mention("select $x$ select phone $x$", &names()));
        assert!(!may_mention("select 'phone'", &names()));
        assert!(!may_mention("select U&'\\0070hone'", &names()));
        // Bodies of DO blocks and function definitions are SQL that will run.
        assert!(may_mention(
            "create function f() returns int as $x$ select phone from t $x$ language sql",
            &names()
        ));
        assert!(may_mention(
            "CREATE OR REPLACE PROCEDURE p() AS 'delete from customers' LANGUAGE sql",
            &names()
        ));
        let m = first_mention("do 'begin perform phone(); end'", &names(), false);
        assert_eq!(
            m,
            Some(Mention::Name("phone".to_string(), NameKind::Relation))
        );
        // ... and only in their own statement.
        assert!(!may_mention(
            "create function f() returns int as 'select 1' language sql; select 'phone'",
            &NameSet::default()
        ));
        let m = first_mention(
            "create function f() returns int as 'select 1' language sql; select 'phone'",
            &names(),
            false,
        );
        assert_eq!(m, None);
    }

    #[test]
    fn escaped_bodies_are_decoded_or_distrusted() {
        let m = first_mention(r"do E'begin perform \x70hone; end'", &names(), false);
        assert_eq!(
            m,
            Some(Mention::Name("phone".to_string(), NameKind::Relation))
        );
        let m = first_mention(
            r#"do $$ begin perform U&"\0070hone"; end $$"#,
            &names(),
            false,
        );
        assert_eq!(m, Some(Mention::Escaped));
    }

    #[test]
    fn name_kinds_are_reported() {
        let mut n = names();
        n.insert_kind("leak", NameKind::Function);
        let m = first_mention("select leak()", &n, false);
        assert_eq!(
            m,
            Some(Mention::Name("leak".to_string(), NameKind::Function))
        );
        assert!(n.is_relation("Customers") && !n.is_relation("leak"));
    }

    #[test]
    fn do_block_is_always_sent_to_the_analyser() {
        assert!(may_mention("DO $$ begin perform 1; end $$", &names()));
        assert!(may_mention("execute stmt1('x')", &names()));
    }

    #[test]
    fn escape_string_outside_a_body_is_data() {
        assert!(!may_mention(r"select E'\x70hone'", &names()));
        assert!(!may_mention(r"select E'hello'", &names()));
    }

    #[test]
    fn unterminated_input_is_distrusted() {
        assert!(may_mention("select 'abc", &names()));
        assert!(may_mention("select 1 /* abc", &names()));
    }

    #[test]
    fn comments_do_not_count() {
        assert!(!may_mention("select 1 -- phone\n", &names()));
        assert!(!may_mention("select 1 /* phone */", &names()));
    }

    #[test]
    fn empty_name_set_never_mentions() {
        assert!(!may_mention(
            "select phone from customers",
            &NameSet::default()
        ));
    }

    #[test]
    fn fingerprint_strips_literals_in_order() {
        let sql = "UPDATE a SET b = b + 12 WHERE c = 'x''y' AND d = E'\\n'";
        let fp = fingerprint(sql);
        assert_eq!(
            fp.text,
            "UPDATE a SET b = b + \0n WHERE c = \0s AND d = \0e"
        );
        assert_eq!(fp.literals.len(), 3);
        assert_eq!(&sql[fp.literals[1].range.clone()], "'x''y'");
        assert!(fp.cacheable);
    }

    #[test]
    fn fingerprint_keeps_positional_order_by_numbers() {
        let a = fingerprint("select a, b from t order by 1");
        let b = fingerprint("select a, b from t order by 2");
        assert_ne!(a.text, b.text);
    }

    #[test]
    fn fingerprint_of_search_path_change_is_not_cacheable() {
        assert!(!fingerprint("select set_config('search_path', 'app', false); select 1").cacheable);
    }

    #[test]
    fn fingerprint_of_do_block_is_not_cacheable() {
        assert!(!fingerprint("do 'begin end'").cacheable);
        assert!(!fingerprint("copy t from stdin with (format 'csv')").cacheable);
        assert!(
            !fingerprint("create function f() returns int as 'select 1' language sql").cacheable
        );
    }

    #[test]
    fn literal_values_decode() {
        let sql = r"select 'it''s', E'a\tb\x41\101\u00e9', N'n', U&'\0070x', 1_000";
        let fp = fingerprint(sql);
        let v: Vec<String> = fp
            .literals
            .iter()
            .map(|l| literal_value(sql, l).unwrap())
            .collect();
        assert_eq!(v, vec!["it's", "a\tbAAé", "n", "px", "1000"]);
    }

    #[test]
    fn escape_string_producing_nul_is_refused() {
        let sql = r"select E'\0'";
        let fp = fingerprint(sql);
        assert!(literal_value(sql, &fp.literals[0]).is_err());
    }
}
