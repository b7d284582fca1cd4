//! Which statements can change what an unqualified name means for the rest of the
//! session, so that the data path re-reads the session's effective search_path
//! (`current_schemas(true)`) after them.
//!
//! This is a conservative text test, not an analysis: it may say "yes" too often (an
//! extra catalog-free query on the session's own connection), never "no" for a statement
//! that changes the search_path by SET, SET LOCAL, RESET, RESET ALL, DISCARD ALL,
//! `set_config()` (also inside DO and function bodies sent through pgcloak), SET ROLE /
//! SET SESSION AUTHORIZATION (`$user`), CREATE/DROP/ALTER SCHEMA (a `$user` schema
//! appearing) or a temporary table (the session's `pg_temp_N` appearing). A transaction
//! end (COMMIT, ROLLBACK, ROLLBACK TO, RELEASE, ABORT, END, PREPARE TRANSACTION) can
//! undo such a change, so it counts only after one in the same session
//! ([`ResolutionChange::AtTransactionEnd`]).
//!
//! What it cannot see: a function defined directly in the database that calls
//! `set_config('search_path', ...)`. The analysis does not depend on it being complete:
//! every unqualified reference to a name that some reaching relation carries is sent
//! schema-qualified as analysed (see [`super::TextEdit`]), so a stale search_path can
//! only make pgcloak pick another relation than PostgreSQL would, never send plaintext
//! to a protected one.

use super::lexer::{Lexer, LiteralKind, TokKind};

/// What a statement text may do to name resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolutionChange {
    /// Nothing: names keep their meaning.
    None,
    /// It may change the search_path, `$user` or the temporary schema now.
    Now,
    /// It ends (part of) a transaction: an earlier change in it may be undone.
    AtTransactionEnd,
}

const CHANGE_WORDS: &[&str] = &[
    "reset",
    "discard",
    "role",
    "authorization",
    "temp",
    "temporary",
    "schema",
];

const END_WORDS: &[&str] = &["commit", "rollback", "abort", "end", "release", "prepare"];

/// Classifies a statement text (one or several statements).
pub fn resolution_change(sql: &str) -> ResolutionChange {
    let lower_contains = |needle: &str| {
        sql.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    // Anywhere, even inside a string or a body: set_config('search_path', ...).
    if lower_contains("search_path") || lower_contains("set_config") {
        return ResolutionChange::Now;
    }
    // A Unicode-escaped identifier (U&"\0073earch_path", U&"r\006Fle") can spell any
    // of the words below without containing them: read the path again.
    if lower_contains("u&\"") {
        return ResolutionChange::Now;
    }
    let mut end = false;
    for tok in Lexer::new(sql) {
        if tok.kind != TokKind::Word {
            continue;
        }
        let word = &sql.as_bytes()[tok.span.clone()];
        let is = |list: &[&str]| list.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()));
        if is(CHANGE_WORDS) {
            return ResolutionChange::Now;
        }
        end |= is(END_WORDS);
    }
    if end {
        ResolutionChange::AtTransactionEnd
    } else {
        ResolutionChange::None
    }
}

/// Whether the text may start COPY FROM STDIN (the server then accepts only copy
/// messages, so nothing may be injected right after it).
pub fn may_start_copy(sql: &str) -> bool {
    Lexer::new(sql).any(|t| {
        t.kind == TokKind::Word && sql.as_bytes()[t.span.clone()].eq_ignore_ascii_case(b"copy")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_changes_in_every_spelling_are_seen() {
        for sql in [
            "SET search_path = public",
            "set SEARCH_PATH to app, public",
            "SET LOCAL search_path TO pg_catalog",
            "SET SESSION search_path = \"$user\"",
            "RESET search_path",
            "RESET ALL",
            "DISCARD ALL",
            "SELECT pg_catalog.set_config('search_path', 'evil', false)",
            "SELECT set_config('search_' || 'path', 'x', false)",
            "SET U&\"\\0073earch_path\" TO shadow",
            "set u&\"search\\005Fpath\" = shadow",
            "SET ROLE U&\"\\0061dmin\"",
            "DO $$BEGIN PERFORM set_config('search_path', 'x', false); END$$",
            "SET ROLE app",
            "RESET ROLE",
            "SET SESSION AUTHORIZATION alice",
            "CREATE SCHEMA alice",
            "CREATE TEMP TABLE customers (phone text)",
            "CREATE TEMPORARY TABLE t (a int)",
            "ALTER SCHEMA a RENAME TO b",
            "SELECT 1; SET search_path = x",
        ] {
            assert_eq!(resolution_change(sql), ResolutionChange::Now, "{sql}");
        }
    }

    #[test]
    fn transaction_ends_are_reported_as_such() {
        for sql in [
            "COMMIT",
            "ROLLBACK",
            "rollback to savepoint s1",
            "RELEASE s1",
            "ABORT",
            "END",
            "PREPARE TRANSACTION 'x'",
        ] {
            assert_eq!(
                resolution_change(sql),
                ResolutionChange::AtTransactionEnd,
                "{sql}"
            );
        }
    }

    #[test]
    fn ordinary_statements_change_nothing() {
        for sql in [
            "SELECT * FROM customers WHERE phone = $1",
            "INSERT INTO t VALUES ('role')",
            "UPDATE t SET a = 1 -- reset",
            "SELECT pg_temp_3.f()",
        ] {
            assert_eq!(resolution_change(sql), ResolutionChange::None, "{sql}");
        }
    }

    #[test]
    fn copy_is_recognised() {
        assert!(may_start_copy("copy t from stdin"));
        assert!(may_start_copy("SET x = 1; COPY t FROM STDIN"));
        assert!(!may_start_copy("SELECT 'copy'"));
    }
}

/// What a statement does to the session's SQL-level prepared statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedChange {
    /// `PREPARE name ...`: the normalised name.
    Prepare(String),
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate(String),
    /// `DEALLOCATE [PREPARE] ALL` or `DISCARD ALL`.
    DeallocateAll,
}

/// The prepared-statement changes of a query string, statement by statement. Names are
/// normalised like identifiers (unquoted folded to lower case, `""` unescaped).
pub fn prepared_changes(sql: &str) -> Vec<PreparedChange> {
    let quick = |w: &str| {
        sql.as_bytes()
            .windows(w.len())
            .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
    };
    if !(quick("prepare") || quick("deallocate") || quick("discard")) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for range in super::lexer::split_statements(sql) {
        let text = &sql[range];
        let mut toks = Lexer::new(text)
            .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
            .map(|t| {
                let raw = &text[t.span.clone()];
                match t.kind {
                    TokKind::QuotedIdent => (true, text[t.content.clone()].replace("\"\"", "\"")),
                    _ => (false, raw.to_ascii_lowercase()),
                }
            });
        let first = toks.next();
        let word = |t: &Option<(bool, String)>, w: &str| matches!(t, Some((false, s)) if s == w);
        if word(&first, "prepare") {
            match toks.next() {
                // PREPARE TRANSACTION 'gid' is two-phase commit, not a statement.
                Some((false, s)) if s == "transaction" => {}
                Some((_, name)) => out.push(PreparedChange::Prepare(name)),
                None => {}
            }
        } else if word(&first, "deallocate") {
            let mut next = toks.next();
            if word(&next, "prepare") {
                next = toks.next();
            }
            match next {
                Some((false, s)) if s == "all" => out.push(PreparedChange::DeallocateAll),
                Some((_, name)) => out.push(PreparedChange::Deallocate(name)),
                None => {}
            }
        } else if word(&first, "discard") && word(&toks.next(), "all") {
            out.push(PreparedChange::DeallocateAll);
        }
    }
    out
}

#[cfg(test)]
mod prepared_tests {
    use super::*;

    #[test]
    fn prepare_and_deallocate_are_read_in_every_spelling() {
        assert_eq!(
            prepared_changes("PREPARE foo(int) AS SELECT $1"),
            vec![PreparedChange::Prepare("foo".into())]
        );
        assert_eq!(
            prepared_changes("prepare \"Foo\"\"x\" as select 1; DEALLOCATE Bar"),
            vec![
                PreparedChange::Prepare("Foo\"x".into()),
                PreparedChange::Deallocate("bar".into())
            ]
        );
        assert_eq!(
            prepared_changes("/* c */ DEALLOCATE PREPARE ALL"),
            vec![PreparedChange::DeallocateAll]
        );
        assert_eq!(
            prepared_changes("discard all"),
            vec![PreparedChange::DeallocateAll]
        );
        assert_eq!(prepared_changes("PREPARE TRANSACTION 'x'"), vec![]);
        assert_eq!(prepared_changes("SELECT 'prepare x'"), vec![]);
    }
}

/// The functions, procedures and (plain) views a statement text creates (`CREATE [OR
/// REPLACE] [TEMP] FUNCTION | PROCEDURE | VIEW [schema.]name`), each with whether its
/// definition may run SQL pgcloak cannot
/// see (the word EXECUTE anywhere in it, a language other than `sql`/`plpgsql`/`internal`/
/// `c`, or a call to a catalogued SQL-executing built-in). The catalog learns of a new
/// function only at its next snapshot (and not before the creating transaction commits), so
/// the session treats such a function as opaque from the moment it is created.
pub fn created_functions(sql: &str) -> Vec<(String, bool)> {
    let lower_contains = |text: &str, needle: &str| {
        text.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if !lower_contains(sql, "create") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for range in super::lexer::split_statements(sql) {
        let text = &sql[range];
        let toks: Vec<(TokKind, String)> = Lexer::new(text)
            .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
            .map(|t| match t.kind {
                TokKind::QuotedIdent => (t.kind, text[t.content.clone()].replace("\"\"", "\"")),
                // `LANGUAGE 'plpgsql'`: PostgreSQL still takes the name as a plain string.
                TokKind::Literal(LiteralKind::String) => {
                    (t.kind, text[t.content.clone()].to_ascii_lowercase())
                }
                _ => (t.kind, text[t.span.clone()].to_ascii_lowercase()),
            })
            .collect();
        let word = |i: usize, w: &str| {
            toks.get(i)
                .is_some_and(|(k, s)| *k == TokKind::Word && s == w)
        };
        if !word(0, "create") {
            continue;
        }
        let mut i = 1;
        if word(1, "or") && word(2, "replace") {
            i = 3;
        }
        if word(i, "temp") || word(i, "temporary") || word(i, "recursive") {
            i += 1;
        }
        let view = word(i, "view");
        if !(word(i, "function") || word(i, "procedure") || view) {
            continue;
        }
        // [schema .] name: the last identifier before the argument list.
        // ident ( . ident )*
        let mut name = None;
        let mut j = i + 1;
        while let Some((TokKind::Word | TokKind::QuotedIdent, s)) = toks.get(j) {
            name = Some(s.clone());
            if !matches!(toks.get(j + 1), Some((TokKind::Punct, dot)) if dot == ".") {
                break;
            }
            j += 2;
        }
        let Some(name) = name else { continue };
        let language = toks
            .iter()
            .position(|(k, s)| *k == TokKind::Word && s == "language")
            .and_then(|p| toks.get(p + 1))
            .map(|(_, s)| s.to_ascii_lowercase());
        let foreign_language = language
            .as_deref()
            .is_some_and(|l| !matches!(l, "sql" | "plpgsql" | "internal" | "c"));
        if view {
            // A view runs nothing when created; it is opaque when it calls an opaque
            // function (the caller checks its text against those).
            out.push((name, false));
            continue;
        }
        let dynamic = lower_contains(text, "execute")
            || foreign_language
            || super::builtins::SQL_EXECUTING_FUNCTIONS
                .iter()
                .any(|b| lower_contains(text, b));
        out.push((name, dynamic));
    }
    out
}

#[cfg(test)]
mod created_tests {
    use super::*;

    #[test]
    fn created_functions_are_named_with_their_dynamic_sql() {
        assert_eq!(
            created_functions(
                "create function explain_filter(text) returns setof text language plpgsql as \
                 $$ begin for ln in execute $1 loop return next ln; end loop; end $$"
            ),
            vec![("explain_filter".to_string(), true)]
        );
        assert_eq!(
            created_functions("CREATE OR REPLACE FUNCTION pg_temp.\"MySin\"(float8) RETURNS float8 LANGUAGE plpgsql AS 'begin return sin($1); end'"),
            vec![("MySin".to_string(), false)]
        );
        assert_eq!(
            created_functions("create procedure p() language plpython3u as $$ pass $$"),
            vec![("p".to_string(), true)]
        );
        assert_eq!(
            created_functions("create function f() returns xml language sql as $$ select query_to_xml('x', true, false, '') $$"),
            vec![("f".to_string(), true)]
        );
        assert_eq!(
            created_functions("create or replace temp view s.v as select dyn('x')"),
            vec![("v".to_string(), false)]
        );
        assert!(created_functions("CREATE TABLE f (a int)").is_empty());
        assert!(created_functions("SELECT 'create function x'").is_empty());
    }

    #[test]
    fn the_language_is_the_same_in_every_spelling() {
        for lang in ["'plpgsql'", "\"plpgsql\"", "PLPGSQL", "'sql'", "SQL", "'c'"] {
            let sql = format!(
                "CREATE FUNCTION is_positive(x integer DEFAULT '-1'::integer) RETURNS boolean \
                 LANGUAGE {lang} AS $b$BEGIN RETURN x > 0; END$b$"
            );
            assert_eq!(
                created_functions(&sql),
                vec![("is_positive".to_string(), false)],
                "{lang}"
            );
        }
        for lang in ["'plpython3u'", "\"plperl\"", "E'plpgsql'"] {
            let sql = format!("CREATE FUNCTION f() RETURNS int LANGUAGE {lang} AS $$ x $$");
            assert_eq!(
                created_functions(&sql),
                vec![("f".to_string(), true)],
                "{lang}"
            );
        }
        // The body is still scanned in the quoted spelling.
        assert_eq!(
            created_functions(
                "CREATE FUNCTION f() RETURNS int LANGUAGE 'plpgsql' AS $$BEGIN EXECUTE 'x'; END$$"
            ),
            vec![("f".to_string(), true)]
        );
    }
}

/// The first of `names` (functions this session created that run SQL pgcloak cannot see)
/// that a statement text may call: a word or quoted identifier equal to one (unquoted
/// words compare case-insensitively). Routine and view definitions, DROP, ALTER, COMMENT,
/// GRANT and REVOKE run nothing and are not reported.
pub fn mentions_created(
    sql: &str,
    names: &std::collections::HashSet<String>,
) -> Option<super::refusal::CatalogName> {
    if names.is_empty() {
        return None;
    }
    for range in super::lexer::split_statements(sql) {
        let text = &sql[range];
        let mut first = true;
        for t in Lexer::new(text) {
            if matches!(t.kind, TokKind::Space | TokKind::Comment) {
                continue;
            }
            let raw = &text[t.span.clone()];
            if first {
                first = false;
                let lower = raw.to_ascii_lowercase();
                // These run nothing they name. CREATE TABLE AS, CREATE MATERIALIZED VIEW
                // and CREATE INDEX do run expressions, so only routine and view definitions
                // are passed over (their own text is checked when they are created).
                if matches!(
                    lower.as_str(),
                    "drop" | "alter" | "comment" | "grant" | "revoke"
                ) || (lower == "create" && !created_functions(text).is_empty())
                {
                    break;
                }
            }
            let hit = match t.kind {
                TokKind::Word => names.iter().find(|n| n.eq_ignore_ascii_case(raw)).cloned(),
                TokKind::QuotedIdent => {
                    let unquoted = text[t.content.clone()].replace("\"\"", "\"");
                    names.contains(&unquoted).then_some(unquoted)
                }
                // A body may call it too.
                TokKind::Dollar | TokKind::Literal(_) => {
                    let body = &text[t.content.clone()];
                    names
                        .iter()
                        .find(|n| {
                            body.as_bytes()
                                .windows(n.len())
                                .any(|w| w.eq_ignore_ascii_case(n.as_bytes()))
                        })
                        .cloned()
                }
                _ => None,
            };
            if let Some(hit) = hit {
                return super::refusal::CatalogName::created_in_session(names, &hit);
            }
        }
    }
    None
}
