//! The full analysis: parse each statement and decide how it touches the policy.
//!
//! Owns the rules of issue 4 ("Predicates", "Reads", "Writes"): what may be done with
//! an encrypted column, which literals and `$n` parameters get encrypted for which
//! column, the lineage of every result column, and the refusals. It must never return
//! a plan that forwards a statement touching a protected column it did not fully
//! understand: anything unrecognised that refers to one is rejected.
//!
//! Plans are role-independent (they are cached across sessions); role checks run per
//! execution through [`StatementPlan::authorize`]. Each statement of a query string is
//! analysed on its own, so a rejection applies to one statement and the session can
//! make upstream fail at exactly that point.
//!
//! Statements are split by [`split_statements`]; each piece is first checked by the
//! conservative scanner, and only pieces that may reach a protected column are parsed.
//! A parsed statement gets a pre-pass over sqlparser's visitor (every relation and
//! function reference, wherever it is): function calls are classified as
//! [`Opaque`] or not, and relation references the value analysis did not walk are
//! resolved, pinned and checked afterwards (see `relations.rs`).
//! `U&"..."` identifiers are decoded before parsing (sqlparser does not know them),
//! padded to the same byte length so every offset still refers to the client's text.

mod exprs;
mod queries;
mod relations;
mod statements;

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

use sqlparser::ast::{
    Assignment, AssignmentTarget, BinaryOperator, CopyLegacyCsvOption, CopyLegacyOption,
    CopyOption, CopySource, CopyTarget, Delete, Distinct, DuplicateTreatment, Expr, FromTable,
    Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, InTarget,
    Insert, JoinConstraint, JoinOperator, ObjectName, OnConflictAction, OnInsert, OrderBy,
    OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, SetOperator,
    SetQuantifier, Statement, TableAlias, TableFactor, TableObject, TableWithJoins, UnaryOperator,
    Update, UpdateTableFromKind, Value, ValueWithSpan, Visit,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Location;

use super::ident::{normalize, object_name_parts};
use super::lexer::{split_statements, Lexer, LiteralKind, TokKind};
use super::lineage::{Found, RelColumns, Relation, Scope};
use super::plan::*;
use super::refusal::{
    CatalogName, ColumnName, CopySubject, Fixed, FunctionName, Mention as RMention, Operation,
    OperatorName, Reason, Refusal, RelationName, SearchPath, SetOp, StatementWords, WholeRow,
    WholeRowOf,
};
use super::scan::{
    contains_word_anywhere, fingerprint, first_mention, first_mention_with, Fingerprint, NameKind,
    NameSet,
};
use super::{Schema, SqlError};
use crate::policy::{ColumnRef, Encryption, Policy, TableName};
use relations::{NameKey, Refs};

/// The default cap on IN lists and ARRAY[...] operands compared with an encrypted column.
pub const DEFAULT_IN_LIST_CAP: usize = 100;

/// Everything an analysis depends on (and therefore everything the cache key holds).
pub struct AnalysisContext<'a> {
    pub policy: &'a Policy,
    pub schema: &'a dyn Schema,
    /// The session's effective search_path, `$user` already expanded.
    pub search_path: &'a [String],
    /// Built from the same policy generation (and the catalog's view names).
    pub names: &'a NameSet,
    /// Maximum IN / ANY list length on an encrypted column.
    pub in_list_cap: usize,
    /// Parse every statement, even those the scanner says cannot mention a policy name
    /// (for tests that check the scanner against the analyser, and for audits).
    pub force_full_analysis: bool,
}

/// Analyses every statement of a query string. Each plan carries its own rejection
/// (if any); `Err` is reserved for input that cannot be split into statements at all.
pub fn analyze(sql: &str, ctx: &AnalysisContext<'_>) -> Result<Vec<StatementPlan>, SqlError> {
    let fp = fingerprint(sql);
    analyze_with_fingerprint(sql, &fp, ctx)
}

/// [`analyze`] with a fingerprint the caller already computed (for the cache).
pub fn analyze_with_fingerprint(
    sql: &str,
    fp: &Fingerprint,
    ctx: &AnalysisContext<'_>,
) -> Result<Vec<StatementPlan>, SqlError> {
    if sql.contains('\0') {
        return Err(Reason::NulByte.into());
    }
    let mut plans = Vec::new();
    let mut path_changed = false;
    for range in split_statements(sql) {
        let text = &sql[range.clone()];
        let mut plan = analyze_piece(sql, range, fp, ctx);
        if path_changed
            && plan.rejection.is_none()
            && (plan.touches_policy || first_mention(text, ctx.names, false).is_some())
        {
            // Analysed under the session's search_path, which an earlier statement of
            // this same string changes: names could resolve to other tables upstream.
            plan.touches_policy = true;
            plan.literals.clear();
            plan.params.clear();
            plan.rejection = Some(Fixed::AfterSearchPathChange.into());
        }
        path_changed |= changes_search_path(text);
        plans.push(plan);
    }
    Ok(plans)
}

/// SET/RESET search_path, set_config('search_path', ...), RESET ALL, DISCARD ALL.
fn changes_search_path(text: &str) -> bool {
    if contains_word_anywhere(text, "search_path") {
        return true;
    }
    let mut words = Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .map_while(|t| (t.kind == TokKind::Word).then(|| text[t.span].to_ascii_lowercase()));
    matches!(
        (words.next().as_deref(), words.next().as_deref()),
        (Some("reset" | "discard"), Some("all"))
    )
}

type R<T> = Result<T, SqlError>;

fn analyze_piece(
    sql: &str,
    range: Range<usize>,
    fp: &Fingerprint,
    ctx: &AnalysisContext<'_>,
) -> StatementPlan {
    let text = &sql[range.clone()];
    let mut plan = StatementPlan::new(
        StatementKind::Other,
        SqlPos::at(fp, range.start),
        SqlPos::at(fp, range.end),
    );
    if !ctx.force_full_analysis
        && (ctx.names.is_empty() || first_mention(text, ctx.names, true).is_none())
    {
        return plan;
    }
    if let Some(body) = body_statement(text) {
        plan.kind = StatementKind::Body;
        body_plan(&mut plan, check_body(text, body, ctx.names));
        return plan;
    }
    let parse_text = match decode_unicode_identifiers(text) {
        Ok(t) => t,
        Err(e) => {
            plan.touches_policy = true;
            plan.rejection = Some(e);
            return plan;
        }
    };
    let Some(stmt) = parse_one(&parse_text) else {
        // Unparseable: forward only if it certainly names nothing protected.
        if let Some(m) = first_mention(text, ctx.names, false) {
            plan.touches_policy = true;
            plan.rejection = Some(Reason::Unparsed(RMention::of(ctx.names, &m)).into());
        }
        return plan;
    };
    let a = Analyzer {
        ctx,
        fp,
        sql,
        base: range.start,
        line_starts: line_starts(&parse_text),
        parse_text: &parse_text,
        plan,
        ctes: Vec::new(),
        refs: Refs::collect(&stmt),
        seen: HashSet::new(),
        writing: false,
        passthrough: false,
        rows: exprs::RowState::default(),
    };
    a.run(&stmt, text)
}

/// A DO block's or a function definition's plan from [`check_body`]'s verdict.
fn body_plan(plan: &mut StatementPlan, verdict: R<Option<Opaque>>) {
    match verdict {
        Ok(None) => {}
        Ok(Some(o)) => {
            plan.touches_policy = true;
            plan.opaque.push(o);
        }
        Err(e) => {
            plan.touches_policy = true;
            plan.rejection = Some(e);
        }
    }
}

/// The statement of a piece, when sqlparser reads exactly one.
fn parse_one(parse_text: &str) -> Option<Statement> {
    match Parser::parse_sql(&PostgreSqlDialect {}, parse_text) {
        Ok(mut v) if v.len() == 1 => v.pop(),
        _ => None,
    }
}

/// A statement whose body is SQL pgcloak does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `DO ...`: the body runs now.
    Do,
    /// `CREATE [OR REPLACE] FUNCTION/PROCEDURE ...`: the body runs later, when called.
    Create,
}

/// DO blocks and CREATE FUNCTION/PROCEDURE: bodies pgcloak does not analyse.
fn body_statement(text: &str) -> Option<Body> {
    let mut words = Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .map_while(|t| (t.kind == TokKind::Word).then(|| &text[t.span]));
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("do") => Some(Body::Do),
        Some(w) if w.eq_ignore_ascii_case("create") => words
            .take(4)
            .any(|w| w.eq_ignore_ascii_case("function") || w.eq_ignore_ascii_case("procedure"))
            .then_some(Body::Create),
        _ => None,
    }
}

/// A body naming a reaching relation is refused (plaintext of a protected column could
/// be inside it, and it would go upstream and into the server's logs). Otherwise a
/// definition passes (creating runs nothing); a DO block that runs dynamic SQL or calls
/// a reaching function or built-in is [`Opaque::DynamicSql`].
fn check_body(text: &str, body: Body, names: &NameSet) -> R<Option<Opaque>> {
    let relation = |k: NameKind| matches!(k, NameKind::Relation | NameKind::Column);
    if let Some(m) = first_mention_with(text, names, false, relation) {
        return Err(Reason::OpaqueBody(RMention::of(names, &m)).into());
    }
    if body == Body::Create {
        return Ok(None);
    }
    let calls = first_mention_with(text, names, false, |k| !relation(k)).is_some();
    Ok((calls || contains_word_anywhere(text, "execute")).then_some(Opaque::DynamicSql))
}

/// Replaces each `U&"..."` identifier by its decoded `"..."` form, padded with spaces to
/// the same byte length, so offsets into the result are offsets into `text`. A
/// `UESCAPE 'c'` clause is decoded with it (identifiers) or blanked, its `U&'...'`
/// string becoming a plain literal that sits two bytes later than the fingerprint's:
/// such a string is never located as a value to encrypt, so it is refused there and
/// passes everywhere else.
fn decode_unicode_identifiers(text: &str) -> R<Cow<'_, str>> {
    let toks: Vec<_> = Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .collect();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut skip_to = 0;
    let bad = || SqlError::from(Reason::InvalidUnicodeEscape);
    for (i, t) in toks.iter().enumerate() {
        if t.span.start < skip_to {
            continue;
        }
        if !matches!(
            t.kind,
            TokKind::UnicodeIdent | TokKind::Literal(LiteralKind::UnicodeString)
        ) {
            continue;
        }
        // The escape character and where the token (with its UESCAPE clause) ends.
        let (esc, end) = match (toks.get(i + 1), toks.get(i + 2)) {
            (Some(u), Some(l))
                if u.kind == TokKind::Word
                    && text[u.span.clone()].eq_ignore_ascii_case("uescape") =>
            {
                if l.kind != TokKind::Literal(LiteralKind::String) {
                    return Err(Reason::UescapeNeedsString.into());
                }
                let c = super::ident::valid_uescape(&text[l.content.clone()])
                    .ok_or_else(|| SqlError::from(Reason::InvalidUescape))?;
                (Some(c), l.span.end)
            }
            _ => (None, t.span.end),
        };
        let replacement = match t.kind {
            TokKind::UnicodeIdent => {
                let decoded = super::ident::decode_unicode_with(
                    &text[t.content.clone()],
                    esc.unwrap_or('\\'),
                )
                .ok_or_else(bad)?;
                format!("\"{}\"", decoded.replace('"', "\"\""))
            }
            _ if esc.is_some() => {
                // `U&'...'` becomes `  '...'`; the UESCAPE clause becomes spaces.
                format!("  {}", &text[t.span.start + 2..t.span.end])
            }
            _ => continue,
        };
        let width = end - t.span.start;
        if replacement.len() > width {
            return Err(bad());
        }
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[copied..t.span.start]);
        o.push_str(&replacement);
        o.extend(std::iter::repeat_n(' ', width - replacement.len()));
        copied = end;
        skip_to = end;
    }
    Ok(match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    })
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    v
}

/// A value operand: what can be encrypted for a column.
enum Operand {
    Null,
    Default,
    Param(u16),
    Literal {
        start: SqlPos,
        end: SqlPos,
        value: LiteralValue,
    },
    Other,
}

fn last_ident(name: &ObjectName) -> Option<String> {
    object_name_parts(name).and_then(|mut v| v.pop())
}

fn join_constraint(op: &JoinOperator) -> Option<Option<&JoinConstraint>> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c) => Some(Some(c)),
        _ => None,
    }
}

struct Analyzer<'a> {
    ctx: &'a AnalysisContext<'a>,
    fp: &'a Fingerprint,
    sql: &'a str,
    /// Where the statement starts in `sql`.
    base: usize,
    line_starts: Vec<usize>,
    parse_text: &'a str,
    plan: StatementPlan,
    /// Visible CTEs, innermost last.
    ctes: Vec<(String, Vec<(String, super::Lineage)>)>,
    /// Every relation and function reference of the statement (the pre-pass).
    refs: Refs,
    /// Relation references the analysis resolved (or found to be CTEs).
    seen: HashSet<NameKey>,
    /// The relation being resolved is written to (INSERT, UPDATE, DELETE, COPY FROM).
    writing: bool,
    /// The statement moves no values (TRUNCATE, GRANT, DROP, ...).
    passthrough: bool,
    /// Whole-row references, `$n` roles and the outermost select list (issue 11).
    rows: exprs::RowState,
}

use super::Lineage;

impl<'a> Analyzer<'a> {
    /// Analyses the parsed statement and the references it did not walk; a refusal
    /// anywhere drops every encryption action and becomes the plan's rejection.
    fn run(mut self, stmt: &Statement, text: &str) -> StatementPlan {
        self.classify_functions();
        let analysed = self
            .statement(stmt, text)
            .and_then(|()| self.uncovered_relations())
            .and_then(|()| self.finish(text));
        if let Err(e) = analysed {
            self.plan.touches_policy = true;
            self.plan.literals.clear();
            self.plan.params.clear();
            self.plan.projections.clear();
            self.plan.rejection = Some(self.explain(e));
        }
        self.plan.literals.sort_by_key(|l| l.start);
        self.plan.searched.sort();
        self.plan.searched.dedup();
        self.plan
    }

    fn policy(&self) -> &'a Policy {
        self.ctx.policy
    }

    /// A policy column's name, for a refusal.
    fn name(&self, c: ColumnRef) -> ColumnName {
        ColumnName::of(self.ctx.policy, c)
    }

    /// A refusal of `op`.
    fn refuse(&self, op: Operation, reason: Reason) -> SqlError {
        Refusal::new(op, reason).into()
    }

    /// A relation's name for a refusal, when the policy or the catalog knows it.
    fn rel(&self, t: &TableName) -> Option<RelationName> {
        RelationName::known(self.ctx.policy, self.ctx.schema, t)
    }

    fn encrypted(&mut self, c: ColumnRef) {
        self.plan.touches_policy = true;
        let _ = c;
    }

    // ---------------------------------------------------------------- positions

    /// Byte offset in the query string of a sqlparser location.
    fn abs(&self, loc: Location) -> Option<usize> {
        let line = usize::try_from(loc.line).ok()?.checked_sub(1)?;
        let col = usize::try_from(loc.column).ok()?.checked_sub(1)?;
        let start = *self.line_starts.get(line)?;
        let rest = self.parse_text.get(start..)?;
        let off = match rest.char_indices().nth(col) {
            Some((i, _)) => i,
            None if rest.chars().count() == col => rest.len(),
            None => return None,
        };
        Some(self.base + start + off)
    }

    fn pos(&self, abs: usize) -> SqlPos {
        SqlPos::at(self.fp, abs)
    }

    fn lost(&self) -> SqlError {
        Fixed::LostLiteral.into()
    }

    /// Classifies an expression as something that can be stored in or compared with
    /// an encrypted column.
    fn operand(&self, e: &Expr) -> R<Operand> {
        Ok(match e {
            Expr::Nested(inner) => self.operand(inner)?,
            Expr::Value(v) => self.value_operand(v, false)?,
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match &**expr {
                Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                    self.value_operand(v, true)?
                }
                _ => Operand::Other,
            },
            Expr::Identifier(i)
                if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default") =>
            {
                Operand::Default
            }
            _ => Operand::Other,
        })
    }

    fn value_operand(&self, v: &ValueWithSpan, negate: bool) -> R<Operand> {
        let start = self.abs(v.span.start).ok_or_else(|| self.lost())?;
        match &v.value {
            Value::Null => Ok(Operand::Null),
            Value::Placeholder(p) => Ok(p
                .strip_prefix('$')
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|n| *n > 0)
                .map_or(Operand::Other, Operand::Param)),
            Value::Boolean(b) => self.boolean_operand(start, *b),
            Value::Number(..)
            | Value::SingleQuotedString(_)
            | Value::EscapedStringLiteral(_)
            | Value::UnicodeStringLiteral(_)
            | Value::NationalStringLiteral(_) => {
                let from = self.literal_start(start, negate)?;
                self.literal_operand(start, from, negate)
            }
            _ => Ok(Operand::Other),
        }
    }

    /// Where a literal starting at `start` begins in the text: at the minus sign before
    /// it when negated (sqlparser's span covers only the number).
    fn literal_start(&self, start: usize, negate: bool) -> R<usize> {
        if !negate {
            return Ok(start);
        }
        let before = self.sql.get(..start).ok_or_else(|| self.lost())?;
        let trimmed = before.trim_end_matches([' ', '\t', '\n', '\r']);
        if trimmed.ends_with('-') {
            Ok(trimmed.len() - 1)
        } else {
            Err(self.lost())
        }
    }

    /// `true` / `false` at `start`, found in the text as written.
    fn boolean_operand(&self, start: usize, b: bool) -> R<Operand> {
        let word = if b { "true" } else { "false" };
        let end = start + word.len();
        if !self
            .sql
            .get(start..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            return Err(self.lost());
        }
        Ok(Operand::Literal {
            start: self.pos(start),
            end: self.pos(end),
            value: LiteralValue::Fixed(word.to_string()),
        })
    }

    /// A number or string literal at `start` (written from `from`, its minus sign when
    /// negated): the fingerprint's literal, or a number the fingerprint kept as text.
    fn literal_operand(&self, start: usize, from: usize, negate: bool) -> R<Operand> {
        if let Ok(index) = self
            .fp
            .literals
            .binary_search_by_key(&start, |l| l.range.start)
        {
            if self.fp.literals[index].kind == LiteralKind::BitString {
                return Err(self.lost());
            }
            return Ok(Operand::Literal {
                start: self.pos(from),
                end: SqlPos {
                    after_literal: Some(index),
                    delta: 0,
                },
                value: LiteralValue::Literal { index, negate },
            });
        }
        // A number the fingerprint kept (statements with ORDER/GROUP BY).
        let tok = Lexer::new(self.sql.get(start..).ok_or_else(|| self.lost())?)
            .next()
            .filter(|t| t.kind == TokKind::Literal(LiteralKind::Number))
            .ok_or_else(|| self.lost())?;
        let digits = &self.sql[start..start + tok.span.end];
        let text = if negate {
            format!("-{digits}")
        } else {
            digits.to_string()
        };
        Ok(Operand::Literal {
            start: self.pos(from),
            end: self.pos(start + tok.span.end),
            value: LiteralValue::Fixed(text.replace('_', "")),
        })
    }
}

fn strip_nested(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

fn single_lineage(shape: &ResultShape) -> Lineage {
    match shape.columns.as_slice() {
        [one] if !shape.plain_tail => one.lineage,
        [] if shape.plain_tail => Lineage::Plain,
        _ => Lineage::Unknown,
    }
}

fn shape_cols(shape: &ResultShape) -> Vec<(String, Lineage)> {
    shape
        .columns
        .iter()
        .map(|c| (c.name.clone().unwrap_or_default(), c.lineage))
        .collect()
}

fn ident_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => normalize(i),
        _ => String::new(),
    }
}

fn is_count(f: &Function) -> bool {
    f.name.0.len() == 1 && last_ident(&f.name).is_some_and(|n| n == "count")
}

fn is_predicate(e: &Expr) -> bool {
    matches!(
        e,
        Expr::BinaryOp {
            op: BinaryOperator::And
                | BinaryOperator::Or
                | BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq,
            ..
        } | Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        } | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::In { .. }
            | Expr::AnyOp { .. }
            | Expr::AllOp { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::RLike { .. }
            | Expr::Between { .. }
            | Expr::Exists { .. }
    )
}

fn describe_op(e: &Expr) -> Operation {
    match e {
        Expr::Function(f) => function_op(f),
        Expr::Cast { .. } => Operation::Cast,
        Expr::BinaryOp { op, .. } => Operation::Operator(OperatorName::known(&op.to_string())),
        Expr::UnaryOp { op, .. } => Operation::Operator(OperatorName::known(&op.to_string())),
        Expr::Case { .. } => Operation::Case,
        _ => Operation::Expression,
    }
}

/// A call of `f`, named when it is a known built-in.
fn function_op(f: &Function) -> Operation {
    Operation::Function(FunctionName::builtin(&f.name.to_string()))
}

/// The column name PostgreSQL reports for an unaliased result expression.
fn output_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => normalize(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalize).unwrap_or_default(),
        Expr::Nested(inner) => output_name(inner),
        Expr::Function(f) => last_ident(&f.name).unwrap_or_default(),
        Expr::Cast { expr, .. } => output_name(expr),
        _ => "?column?".to_string(),
    }
}

/// The first one or two words of a statement, when they are SQL command words.
fn first_words(text: &str) -> StatementWords {
    let words: Vec<&str> = Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .take(2)
        .map_while(|t| (t.kind == TokKind::Word).then(|| &text[t.span]))
        .collect();
    StatementWords::of(&words)
}
