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
//! conservative scanner, and only pieces that may mention a policy name are parsed.
//! `U&"..."` identifiers are decoded before parsing (sqlparser does not know them),
//! padded to the same byte length so every offset still refers to the client's text.

use std::borrow::Cow;
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

use super::ident::{decode_unicode_ident, normalize, object_name_parts};
use super::lexer::{split_statements, Lexer, LiteralKind, TokKind};
use super::lineage::{Found, RelColumns, Relation, Scope};
use super::plan::*;
use super::scan::{
    contains_word_anywhere, fingerprint, first_mention, Fingerprint, Mention, NameSet,
};
use super::{Schema, SqlError};
use crate::policy::{ColumnRef, Encryption, Policy, TableName};

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
        return Err(SqlError::Syntax(
            "query string contains a NUL byte".to_string(),
        ));
    }
    let mut plans = Vec::new();
    let mut path_changed = false;
    for range in split_statements(sql) {
        let text = &sql[range.clone()];
        let mut plan = analyze_piece(sql, range, fp, ctx);
        if path_changed
            && plan.rejection.is_none()
            && first_mention(text, ctx.names, true).is_some()
        {
            // Analysed under the session's search_path, which an earlier statement of
            // this same string changes: names could resolve to other tables upstream.
            plan.touches_policy = true;
            plan.literals.clear();
            plan.params.clear();
            plan.rejection = Some(SqlError::unsupported(
                "a statement that follows a search_path change in the same query string cannot be analysed; \
                 send it as a separate query",
            ));
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
    if is_body_statement(text) {
        plan.kind = StatementKind::Body;
        if let Err(e) = check_body(text, ctx.names) {
            plan.touches_policy = true;
            plan.rejection = Some(e);
        }
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
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &parse_text);
    let stmt = match parsed {
        Ok(mut v) if v.len() == 1 => v.pop(),
        _ => None,
    };
    let Some(stmt) = stmt else {
        // Unparseable: forward only if it certainly names nothing protected.
        if let Some(m) = first_mention(text, ctx.names, false) {
            plan.touches_policy = true;
            plan.rejection = Some(SqlError::Syntax(format!(
                "pgcloak could not parse a statement that {}; it was not sent",
                describe_mention(&m)
            )));
        }
        return plan;
    };
    let mut a = Analyzer {
        ctx,
        fp,
        sql,
        base: range.start,
        line_starts: line_starts(&parse_text),
        parse_text: &parse_text,
        plan,
        ctes: Vec::new(),
    };
    if let Err(e) = a.statement(&stmt, text) {
        a.plan.touches_policy = true;
        a.plan.literals.clear();
        a.plan.params.clear();
        a.plan.rejection = Some(e);
    }
    a.plan.literals.sort_by_key(|l| l.start);
    a.plan.searched.sort();
    a.plan.searched.dedup();
    a.plan
}

fn describe_mention(m: &Mention) -> String {
    match m {
        Mention::Name(n) => format!("refers to the protected name \"{n}\""),
        Mention::Distrusted(w) => format!("uses {w}"),
        Mention::Escaped => "uses escapes that may spell a protected name".to_string(),
        Mention::Unterminated => "has an unterminated quote, comment or body".to_string(),
    }
}

/// DO blocks and CREATE FUNCTION/PROCEDURE: bodies pgcloak does not analyse.
fn is_body_statement(text: &str) -> bool {
    let mut words = Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .map_while(|t| (t.kind == TokKind::Word).then(|| &text[t.span]));
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("do") => true,
        Some(w) if w.eq_ignore_ascii_case("create") => words
            .take(4)
            .any(|w| w.eq_ignore_ascii_case("function") || w.eq_ignore_ascii_case("procedure")),
        _ => false,
    }
}

fn check_body(text: &str, names: &NameSet) -> R<()> {
    if let Some(m) = first_mention(text, names, false) {
        return Err(SqlError::unsupported(format!(
            "a DO block or function body that {} cannot be analysed by pgcloak; \
             define it directly on the database, or keep protected columns out of it",
            describe_mention(&m)
        )));
    }
    if contains_word_anywhere(text, "execute") {
        return Err(SqlError::unsupported(
            "a DO block or function body using dynamic SQL (EXECUTE) cannot be analysed by pgcloak \
             while the policy protects columns; define it directly on the database",
        ));
    }
    Ok(())
}

/// Replaces each `U&"..."` identifier by its decoded `"..."` form, padded with spaces to
/// the same byte length, so offsets into the result are offsets into `text`.
fn decode_unicode_identifiers(text: &str) -> R<Cow<'_, str>> {
    let toks: Vec<_> = Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .collect();
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (i, t) in toks.iter().enumerate() {
        let uescape = |j: usize| {
            toks.get(j).is_some_and(|n| {
                n.kind == TokKind::Word && text[n.span.clone()].eq_ignore_ascii_case("uescape")
            })
        };
        match t.kind {
            TokKind::Literal(LiteralKind::UnicodeString) if uescape(i + 1) => {
                return Err(SqlError::unsupported("UESCAPE is not supported by pgcloak"));
            }
            TokKind::UnicodeIdent => {
                if uescape(i + 1) {
                    return Err(SqlError::unsupported("UESCAPE is not supported by pgcloak"));
                }
                let decoded = decode_unicode_ident(&text[t.content.clone()]).ok_or_else(|| {
                    SqlError::Syntax("invalid Unicode escape in a U&\"...\" identifier".to_string())
                })?;
                let requoted = format!("\"{}\"", decoded.replace('"', "\"\""));
                let width = t.span.len();
                if requoted.len() > width {
                    return Err(SqlError::Syntax(
                        "invalid Unicode escape in a U&\"...\" identifier".to_string(),
                    ));
                }
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..t.span.start]);
                o.push_str(&requoted);
                o.extend(std::iter::repeat_n(' ', width - requoted.len()));
                copied = t.span.end;
            }
            _ => {}
        }
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

fn col_name(policy: &Policy, c: ColumnRef) -> String {
    let p = policy.column(c);
    format!("{}.{}", p.table, p.column)
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
}

use super::Lineage;

impl<'a> Analyzer<'a> {
    fn policy(&self) -> &'a Policy {
        self.ctx.policy
    }

    fn name(&self, c: ColumnRef) -> String {
        col_name(self.ctx.policy, c)
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
        SqlError::unsupported(
            "pgcloak could not locate a literal in the statement text; it was not sent",
        )
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
        let literal_start = |start: usize| -> R<usize> {
            if !negate {
                return Ok(start);
            }
            // The minus sign precedes the number (sqlparser's span covers only the number).
            let before = self.sql.get(..start).ok_or_else(|| self.lost())?;
            let trimmed = before.trim_end_matches([' ', '\t', '\n', '\r']);
            if trimmed.ends_with('-') {
                Ok(trimmed.len() - 1)
            } else {
                Err(self.lost())
            }
        };
        match &v.value {
            Value::Null => Ok(Operand::Null),
            Value::Placeholder(p) => Ok(p
                .strip_prefix('$')
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|n| *n > 0)
                .map_or(Operand::Other, Operand::Param)),
            Value::Boolean(b) => {
                let word = if *b { "true" } else { "false" };
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
            Value::Number(..)
            | Value::SingleQuotedString(_)
            | Value::EscapedStringLiteral(_)
            | Value::UnicodeStringLiteral(_)
            | Value::NationalStringLiteral(_) => {
                let from = literal_start(start)?;
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
            _ => Ok(Operand::Other),
        }
    }

    // ---------------------------------------------------------------- statements

    fn statement(&mut self, stmt: &Statement, text: &str) -> R<()> {
        match stmt {
            Statement::Query(q) => {
                self.plan.kind = StatementKind::Select;
                let shape = self.query(q, None)?;
                self.plan.result = Some(shape);
            }
            Statement::Insert(ins) => {
                self.plan.kind = StatementKind::Insert;
                self.plan.result = self.insert(ins)?;
            }
            Statement::Update(u) => {
                self.plan.kind = StatementKind::Update;
                self.plan.result = self.update(u)?;
            }
            Statement::Delete(d) => {
                self.plan.kind = StatementKind::Delete;
                self.plan.result = self.delete(d)?;
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                self.plan.kind = StatementKind::Copy;
                self.copy(source, *to, target, options, legacy_options)?;
            }
            Statement::Prepare {
                name,
                data_types,
                statement,
            } => {
                self.plan.kind = StatementKind::Prepare;
                let fresh =
                    StatementPlan::new(StatementKind::Other, self.plan.start, self.plan.end);
                let outer = std::mem::replace(&mut self.plan, fresh);
                let inner_result = self.statement(statement, text);
                let mut inner = std::mem::replace(&mut self.plan, outer);
                inner_result?;
                if !data_types.is_empty() {
                    if let Some(p) = inner
                        .params
                        .iter()
                        .find(|p| usize::from(p.index) <= data_types.len())
                    {
                        return Err(SqlError::unsupported(format!(
                            "PREPARE declares a type for ${}, which is stored in or compared with encrypted column {}; \
                             leave the parameter types out so PostgreSQL infers bytea",
                            p.index,
                            self.name(p.column)
                        )));
                    }
                }
                self.plan.touches_policy = inner.touches_policy;
                self.plan.literals.append(&mut inner.literals);
                self.plan.prepare = Some(PreparePlan {
                    name: normalize(name),
                    statement: Box::new(inner),
                });
            }
            Statement::Execute {
                name: Some(name),
                parameters,
                immediate: false,
                using,
                into,
                ..
            } if using.is_empty() && into.is_empty() => {
                self.plan.kind = StatementKind::Execute;
                let name = last_ident(name)
                    .ok_or_else(|| SqlError::unsupported("unsupported EXECUTE form"))?;
                let mut args = Vec::new();
                for p in parameters {
                    args.push(match self.operand(p)? {
                        Operand::Null => ExecuteArg::Null,
                        Operand::Param(n) => ExecuteArg::Param(n),
                        Operand::Literal { start, end, value } => {
                            ExecuteArg::Literal { start, end, value }
                        }
                        Operand::Default | Operand::Other => {
                            // The argument must not smuggle a protected column's value.
                            self.plain_expr(p, &Scope::default(), "an EXECUTE argument")?;
                            ExecuteArg::Expression
                        }
                    });
                }
                self.plan.execute = Some(ExecutePlan { name, args });
            }
            Statement::Explain { statement, .. } => {
                self.plan.kind = StatementKind::Explain;
                self.statement(statement, text)?;
                self.plan.kind = StatementKind::Explain;
                self.plan.result = Some(ResultShape {
                    columns: vec![OutputColumn {
                        name: Some("QUERY PLAN".to_string()),
                        lineage: Lineage::Plain,
                    }],
                    plain_tail: false,
                });
            }
            Statement::Truncate { .. }
            | Statement::Grant { .. }
            | Statement::Revoke { .. }
            | Statement::Drop { .. }
            | Statement::Analyze { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Deallocate { .. } => {
                // They move no values; forwarding them is safe.
            }
            _ => {
                if let Some(m) = first_mention(text, self.ctx.names, false) {
                    let what = first_words(text);
                    return Err(SqlError::unsupported(format!(
                        "{what} statements that {} are not supported by pgcloak; \
                         run them directly on the database",
                        describe_mention(&m)
                    )));
                }
            }
        }
        Ok(())
    }

    fn target_relation(
        &mut self,
        name: &ObjectName,
        alias: Option<&Ident>,
    ) -> R<(TableName, Relation)> {
        let table = self.resolve_table(name)?;
        if self
            .ctx
            .schema
            .view_columns(&table)
            .is_some_and(|v| v.iter().any(|(_, l)| *l != Lineage::Plain))
        {
            return Err(SqlError::unsupported(format!(
                "writing through view {table}, which exposes encrypted columns, is not supported; write to its table"
            )));
        }
        if self.policy().is_protected_table(&table) {
            self.plan.touches_policy = true;
        }
        let rel = Relation {
            visible: alias.map_or_else(|| table.name.clone(), normalize),
            schema: alias.is_none().then(|| table.schema.clone()),
            columns: RelColumns::Table {
                table: table.clone(),
                names: self.ctx.schema.table_columns(&table),
            },
        };
        Ok((table, rel))
    }

    fn insert(&mut self, ins: &Insert) -> R<Option<ResultShape>> {
        let TableObject::TableName(name) = &ins.table else {
            return Err(SqlError::unsupported(
                "INSERT into a table function is not supported by pgcloak",
            ));
        };
        let alias = ins.table_alias.as_ref().map(|a| &a.alias);
        let (table, rel) = self.target_relation(name, alias)?;
        let protected = self.policy().is_protected_table(&table);
        let target_names: Option<Vec<String>> = if ins.columns.is_empty() {
            self.ctx.schema.table_columns(&table)
        } else {
            Some(
                ins.columns
                    .iter()
                    .map(|c| {
                        last_ident(c)
                            .ok_or_else(|| SqlError::unsupported("unsupported INSERT column"))
                    })
                    .collect::<R<_>>()?,
            )
        };
        let targets: Option<Vec<Option<ColumnRef>>> = target_names
            .as_ref()
            .map(|v| v.iter().map(|n| self.policy().find(&table, n)).collect());
        if targets.is_none() && protected {
            return Err(SqlError::unsupported(format!(
                "INSERT into protected table {table} needs a column list (the catalog does not know its columns)"
            )));
        }
        let target_at = |i: usize| targets.as_ref().and_then(|t| t.get(i).copied().flatten());
        if !ins.assignments.is_empty() {
            return Err(SqlError::unsupported(
                "INSERT ... SET is not PostgreSQL syntax",
            ));
        }
        if let Some(src) = &ins.source {
            match &*src.body {
                SetExpr::Values(values) if src.with.is_none() && src.order_by.is_none() => {
                    for row in &values.rows {
                        for (i, e) in row.content.iter().enumerate() {
                            match target_at(i) {
                                Some(c) => {
                                    self.bind_value(c, e, &Scope::default(), "INSERT into")?
                                }
                                None => self.plain_expr(e, &Scope::default(), "an INSERT value")?,
                            }
                        }
                    }
                }
                _ => {
                    let shape = self.query(src, None)?;
                    for (i, out) in shape.columns.iter().enumerate() {
                        self.store_lineage(target_at(i), out.lineage, &table, "INSERT ... SELECT")?;
                    }
                    if shape.plain_tail {
                        let n = shape.columns.len();
                        if targets
                            .as_ref()
                            .is_some_and(|t| t.iter().skip(n).any(Option::is_some))
                        {
                            return Err(SqlError::unsupported(format!(
                                "INSERT ... SELECT * into protected table {table}: list the source columns"
                            )));
                        }
                    }
                }
            }
        }
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                let excluded = Relation {
                    visible: "excluded".to_string(),
                    schema: None,
                    columns: rel.columns.clone(),
                };
                let scope = Scope {
                    relations: vec![rel.clone(), excluded],
                    parent: None,
                };
                for a in &du.assignments {
                    self.assignment(&table, a, &scope)?;
                }
                if let Some(sel) = &du.selection {
                    self.predicate(sel, &scope)?;
                }
            }
        } else if ins.on.is_some() {
            return Err(SqlError::unsupported(
                "ON DUPLICATE KEY is not PostgreSQL syntax",
            ));
        }
        match &ins.returning {
            Some(items) => {
                let scope = Scope {
                    relations: vec![rel],
                    parent: None,
                };
                Ok(Some(self.projection(items, &scope)?))
            }
            None => Ok(None),
        }
    }

    /// Storing a value of lineage `src` into column `target` (None: a plain column).
    fn store_lineage(
        &mut self,
        target: Option<ColumnRef>,
        src: Lineage,
        table: &TableName,
        op: &str,
    ) -> R<()> {
        match (target, src) {
            (None, Lineage::Plain) => Ok(()),
            (Some(c), Lineage::Encrypted(s)) if self.same_domain(c, s) => {
                self.encrypted(c);
                Ok(())
            }
            (Some(c), _) => Err(SqlError::unsupported(format!(
                "{op} into encrypted column {} needs its source to be the same encrypted column or its key group; \
                 use VALUES with literals or parameters",
                self.name(c)
            ))),
            (None, Lineage::Encrypted(s)) => Err(SqlError::unsupported(format!(
                "{op} would store ciphertext of {} in a plain column of {table}",
                self.name(s)
            ))),
            (None, Lineage::Unknown) => Err(SqlError::unsupported(format!(
                "{op} into {table}: a source column's origin cannot be resolved"
            ))),
        }
    }

    fn same_domain(&self, a: ColumnRef, b: ColumnRef) -> bool {
        let (pa, pb) = (self.policy().column(a), self.policy().column(b));
        a == b
            || (pa.crypto_domain() == pb.crypto_domain()
                && pa.logical_type == pb.logical_type
                && pa.encryption == pb.encryption)
    }

    fn assignment(&mut self, table: &TableName, a: &Assignment, scope: &Scope<'_>) -> R<()> {
        match &a.target {
            AssignmentTarget::ColumnName(name) => {
                let col = last_ident(name)
                    .ok_or_else(|| SqlError::unsupported("unsupported SET target"))?;
                match self.policy().find(table, &col) {
                    Some(c) => self.bind_value(c, &a.value, scope, "UPDATE SET on"),
                    None => self.plain_expr(&a.value, scope, "an assignment to a plain column"),
                }
            }
            AssignmentTarget::Tuple(cols) => {
                for name in cols {
                    let col = last_ident(name)
                        .ok_or_else(|| SqlError::unsupported("unsupported SET target"))?;
                    if let Some(c) = self.policy().find(table, &col) {
                        return Err(SqlError::unsupported(format!(
                            "multi-column SET (...) = ... on encrypted column {} is not supported; assign columns one by one",
                            self.name(c)
                        )));
                    }
                }
                self.plain_expr(&a.value, scope, "an assignment to a plain column")
            }
        }
    }

    /// A value stored into (or compared with) encrypted column `c`.
    fn bind_value(&mut self, c: ColumnRef, e: &Expr, scope: &Scope<'_>, op: &str) -> R<()> {
        self.encrypted(c);
        match self.operand(e)? {
            Operand::Null | Operand::Default => Ok(()),
            Operand::Literal { start, end, value } => {
                self.plan.literals.push(LiteralAction {
                    column: c,
                    start,
                    end,
                    value,
                });
                Ok(())
            }
            Operand::Param(n) => self.param(c, n, false),
            Operand::Other => {
                let src = match self.column_lineage(e, scope) {
                    Some(l) => Some(l),
                    None => match strip_nested(e) {
                        Expr::Subquery(q) => Some(single_lineage(&self.query(q, Some(scope))?)),
                        _ => None,
                    },
                };
                match src {
                    Some(Lineage::Encrypted(s)) if self.same_domain(c, s) => Ok(()),
                    _ => Err(SqlError::unsupported(format!(
                        "{op} encrypted column {} needs a literal, a $n parameter, NULL or DEFAULT \
                         (or the same encrypted column); expressions cannot be encrypted",
                        self.name(c)
                    ))),
                }
            }
        }
    }

    fn param(&mut self, c: ColumnRef, index: u16, array: bool) -> R<()> {
        let logical_type = self.policy().column(c).logical_type;
        if let Some(prev) = self.plan.params.iter().find(|p| p.index == index) {
            if self.same_domain(prev.column, c) && prev.array == array {
                return Ok(());
            }
            return Err(SqlError::unsupported(format!(
                "parameter ${index} is used with encrypted columns {} and {}, which need different keys or types; \
                 use separate parameters",
                self.name(prev.column),
                self.name(c)
            )));
        }
        self.plan.params.push(ParamAction {
            index,
            column: c,
            logical_type,
            array,
        });
        self.plan.params.sort_by_key(|p| p.index);
        Ok(())
    }

    fn update(&mut self, u: &Update) -> R<Option<ResultShape>> {
        let TableFactor::Table { name, alias, .. } = &u.table.relation else {
            return Err(SqlError::unsupported(
                "UPDATE of this relation kind is not supported by pgcloak",
            ));
        };
        let (table, rel) = self.target_relation(name, alias.as_ref().map(|a| &a.name))?;
        let mut scope = Scope {
            relations: vec![rel],
            parent: None,
        };
        for j in &u.table.joins {
            self.join(j, &mut scope)?;
        }
        if let Some(from) = &u.from {
            let list = match from {
                UpdateTableFromKind::BeforeSet(v) | UpdateTableFromKind::AfterSet(v) => v,
            };
            for twj in list {
                self.table_with_joins(twj, &mut scope)?;
            }
        }
        for a in &u.assignments {
            self.assignment(&table, a, &scope)?;
        }
        if let Some(sel) = &u.selection {
            self.predicate(sel, &scope)?;
        }
        match &u.returning {
            Some(items) => Ok(Some(self.projection(items, &scope)?)),
            None => Ok(None),
        }
    }

    fn delete(&mut self, d: &Delete) -> R<Option<ResultShape>> {
        let from = match &d.from {
            FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
        };
        let mut scope = Scope::default();
        for twj in from {
            self.table_with_joins(twj, &mut scope)?;
        }
        if let Some(using) = &d.using {
            for twj in using {
                self.table_with_joins(twj, &mut scope)?;
            }
        }
        if let Some(sel) = &d.selection {
            self.predicate(sel, &scope)?;
        }
        match &d.returning {
            Some(items) => Ok(Some(self.projection(items, &scope)?)),
            None => Ok(None),
        }
    }

    fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> R<()> {
        let mut plan = CopyPlan {
            direction: if to {
                CopyDirection::ToStdout
            } else {
                CopyDirection::FromStdin
            },
            format: CopyFormat::Text,
            delimiter: None,
            null: None,
            quote: None,
            escape: None,
            header: false,
            fields: Vec::new(),
            plain_tail: false,
        };
        let mut binary = false;
        for o in options {
            match o {
                CopyOption::Format(f) => match normalize(f).as_str() {
                    "csv" => plan.format = CopyFormat::Csv,
                    "text" => plan.format = CopyFormat::Text,
                    _ => binary = true,
                },
                CopyOption::Delimiter(c) => plan.delimiter = Some(*c),
                CopyOption::Null(s) => plan.null = Some(s.clone()),
                CopyOption::Header(h) => plan.header = *h,
                CopyOption::Quote(c) => plan.quote = Some(*c),
                CopyOption::Escape(c) => plan.escape = Some(*c),
                _ => {}
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Binary => binary = true,
                CopyLegacyOption::Csv(csv) => {
                    plan.format = CopyFormat::Csv;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => plan.header = true,
                            CopyLegacyCsvOption::Quote(q) => plan.quote = Some(*q),
                            CopyLegacyCsvOption::Escape(e) => plan.escape = Some(*e),
                            _ => {}
                        }
                    }
                }
                CopyLegacyOption::Delimiter(c) => plan.delimiter = Some(*c),
                CopyLegacyOption::Null(s) => plan.null = Some(s.clone()),
                _ => {}
            }
        }
        let (what, lineages, tail): (String, Vec<Lineage>, bool) = match source {
            CopySource::Table {
                table_name,
                columns,
            } => {
                let table = self.resolve_table(table_name)?;
                if !self.policy().is_protected_table(&table) {
                    return Ok(());
                }
                self.plan.touches_policy = true;
                let names: Vec<String> = if columns.is_empty() {
                    self.ctx.schema.table_columns(&table).ok_or_else(|| {
                        SqlError::unsupported(format!(
                            "COPY of protected table {table} needs a column list (the catalog does not know its columns)"
                        ))
                    })?
                } else {
                    columns.iter().map(normalize).collect()
                };
                let l = names
                    .iter()
                    .map(|n| {
                        self.policy()
                            .find(&table, n)
                            .map_or(Lineage::Plain, Lineage::Encrypted)
                    })
                    .collect();
                (format!("protected table {table}"), l, false)
            }
            CopySource::Query(q) => {
                let shape = self.query(q, None)?;
                if !self.plan.touches_policy {
                    return Ok(());
                }
                (
                    "a query over protected columns".to_string(),
                    shape.columns.iter().map(|c| c.lineage).collect(),
                    shape.plain_tail,
                )
            }
        };
        if binary {
            return Err(SqlError::unsupported(format!(
                "binary COPY of {what} is not supported by pgcloak; use FORMAT text or csv"
            )));
        }
        if !matches!(target, CopyTarget::Stdin | CopyTarget::Stdout) {
            return Err(SqlError::unsupported(format!(
                "COPY of {what} to or from a server file or program is not supported (pgcloak could not encrypt \
                 or decrypt it); use COPY ... FROM STDIN or TO STDOUT"
            )));
        }
        for l in lineages {
            plan.fields.push(match l {
                Lineage::Plain => None,
                Lineage::Encrypted(c) => Some(c),
                Lineage::Unknown => {
                    return Err(SqlError::unsupported(format!(
                        "COPY of {what}: a column's origin cannot be resolved"
                    )))
                }
            });
        }
        plan.plain_tail = tail;
        self.plan.copy = Some(plan);
        Ok(())
    }

    // ---------------------------------------------------------------- relations

    fn resolve_table(&self, name: &ObjectName) -> R<TableName> {
        let parts = object_name_parts(name)
            .ok_or_else(|| SqlError::unsupported("unsupported table name form"))?;
        match parts.as_slice() {
            [name] => Ok(self.resolve_unqualified(name)),
            [schema, name] | [_, schema, name] => Ok(TableName::new(schema.clone(), name.clone())),
            _ => Err(SqlError::unsupported("unsupported table name form")),
        }
    }

    /// PostgreSQL's lookup: pg_temp, then pg_catalog (unless listed), then search_path.
    /// A schema "contains" a table if the catalog says so or the policy names it there
    /// (a policy table is known to exist; the catalog may be a refresh behind).
    fn resolve_unqualified(&self, name: &str) -> TableName {
        let path = self.ctx.search_path;
        let listed = |s: &str| path.iter().any(|p| p == s);
        let implicit = ["pg_temp", "pg_catalog"].into_iter().filter(|s| !listed(s));
        for schema in implicit.chain(path.iter().map(String::as_str)) {
            let t = TableName::new(schema, name);
            if self.ctx.schema.table_exists(schema, name) || self.policy().is_protected_table(&t) {
                return t;
            }
        }
        // Not found: PostgreSQL will fail; name it in the first path schema.
        TableName::new(path.first().map_or("public", String::as_str), name)
    }

    fn cte(&self, name: &str) -> Option<Vec<(String, Lineage)>> {
        self.ctes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
    }

    fn table_with_joins(&mut self, twj: &TableWithJoins, scope: &mut Scope<'_>) -> R<()> {
        self.table_factor(&twj.relation, scope)?;
        for j in &twj.joins {
            self.join(j, scope)?;
        }
        Ok(())
    }

    fn join(&mut self, j: &sqlparser::ast::Join, scope: &mut Scope<'_>) -> R<()> {
        self.table_factor(&j.relation, scope)?;
        let constraint = match join_constraint(&j.join_operator) {
            Some(c) => c,
            None => {
                if self.plan.touches_policy {
                    return Err(SqlError::unsupported(
                        "this join form is not supported by pgcloak on protected tables; use JOIN ... ON",
                    ));
                }
                return Ok(());
            }
        };
        match constraint {
            Some(JoinConstraint::On(e)) => self.predicate(e, scope),
            Some(JoinConstraint::Using(cols)) | Some(JoinConstraint::UsingAlias(cols, _)) => {
                let n = scope.relations.len();
                for c in cols {
                    let name = last_ident(c)
                        .ok_or_else(|| SqlError::unsupported("unsupported USING column"))?;
                    let left = Scope {
                        relations: scope.relations[..n.saturating_sub(1)].to_vec(),
                        parent: None,
                    }
                    .resolve(self.policy(), &name);
                    let right = scope
                        .relations
                        .last()
                        .and_then(|r| r.lookup(self.policy(), &name))
                        .map(|f| match f {
                            Found::Certain(l) | Found::Maybe(l) => l,
                        });
                    self.equal_columns(
                        left.unwrap_or(Lineage::Plain),
                        right.unwrap_or(Lineage::Plain),
                        "JOIN USING",
                    )?;
                }
                Ok(())
            }
            Some(JoinConstraint::Natural) => {
                let policy = self.policy();
                let protected = scope.relations.iter().any(|r| match &r.columns {
                    RelColumns::Table { table, .. } => policy.is_protected_table(table),
                    RelColumns::Known(c) => c.iter().any(|(_, l)| *l != Lineage::Plain),
                    RelColumns::Opaque => true,
                });
                if protected {
                    return Err(SqlError::unsupported(
                        "NATURAL JOIN involving protected columns is not supported by pgcloak; use JOIN ... ON",
                    ));
                }
                Ok(())
            }
            Some(JoinConstraint::None) | None => Ok(()),
        }
    }

    /// Two column lineages compared for equality (join keys, USING).
    fn equal_columns(&mut self, a: Lineage, b: Lineage, op: &str) -> R<()> {
        match (a, b) {
            (Lineage::Plain, Lineage::Plain) => Ok(()),
            (Lineage::Encrypted(x), Lineage::Encrypted(y)) => {
                self.require_deterministic(x, op)?;
                self.require_deterministic(y, op)?;
                if !self.same_domain(x, y) {
                    return Err(SqlError::unsupported(format!(
                        "{op} compares encrypted columns {} and {}, which use different keys; \
                         put them in one key_group to compare them",
                        self.name(x),
                        self.name(y)
                    )));
                }
                self.plan.searched.extend([x, y]);
                Ok(())
            }
            (Lineage::Encrypted(x), _) | (_, Lineage::Encrypted(x)) => {
                Err(SqlError::unsupported(format!(
                "{op} compares encrypted column {} with a plain value; compare it with a literal, \
                 a parameter or a column of its key group",
                self.name(x)
            )))
            }
            _ => Err(SqlError::unsupported(format!(
                "{op}: a column's origin cannot be resolved in a statement over protected columns"
            ))),
        }
    }

    fn require_deterministic(&self, c: ColumnRef, op: &str) -> R<()> {
        if self.policy().column(c).encryption == Encryption::Deterministic {
            return Ok(());
        }
        Err(SqlError::unsupported(format!(
            "{op} on randomized column {} is not supported: randomized ciphertexts never compare equal; \
             only IS [NOT] NULL and count() work (declare it encryption: deterministic for =, IN, GROUP BY and joins)",
            self.name(c)
        )))
    }

    fn alias_columns(
        alias: Option<&TableAlias>,
        mut cols: Vec<(String, Lineage)>,
    ) -> Vec<(String, Lineage)> {
        if let Some(a) = alias {
            for (slot, def) in cols.iter_mut().zip(&a.columns) {
                slot.0 = normalize(&def.name);
            }
        }
        cols
    }

    fn table_factor(&mut self, tf: &TableFactor, scope: &mut Scope<'_>) -> R<()> {
        match tf {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if args.is_some() {
                    self.fallback(tf, scope, "a table function argument")?;
                    scope.relations.push(Relation {
                        visible: alias.as_ref().map_or_else(
                            || last_ident(name).unwrap_or_default(),
                            |a| normalize(&a.name),
                        ),
                        schema: None,
                        columns: RelColumns::Opaque,
                    });
                    return Ok(());
                }
                let parts = object_name_parts(name)
                    .ok_or_else(|| SqlError::unsupported("unsupported table name form"))?;
                if let [only] = parts.as_slice() {
                    if let Some(cols) = self.cte(only) {
                        if cols.iter().any(|(_, l)| *l != Lineage::Plain) {
                            self.plan.touches_policy = true;
                        }
                        scope.relations.push(Relation {
                            visible: alias
                                .as_ref()
                                .map_or_else(|| only.clone(), |a| normalize(&a.name)),
                            schema: None,
                            columns: RelColumns::Known(Self::alias_columns(alias.as_ref(), cols)),
                        });
                        return Ok(());
                    }
                }
                let table = self.resolve_table(name)?;
                let visible = alias
                    .as_ref()
                    .map_or_else(|| table.name.clone(), |a| normalize(&a.name));
                let schema = alias.is_none().then(|| table.schema.clone());
                let columns = if let Some(v) = self.ctx.schema.view_columns(&table) {
                    if v.iter().any(|(_, l)| *l != Lineage::Plain) {
                        self.plan.touches_policy = true;
                    }
                    RelColumns::Known(Self::alias_columns(alias.as_ref(), v))
                } else {
                    let protected = self.policy().is_protected_table(&table);
                    if protected {
                        self.plan.touches_policy = true;
                    }
                    let names = self.ctx.schema.table_columns(&table);
                    match alias.as_ref().filter(|a| !a.columns.is_empty()) {
                        Some(a) => {
                            let rel = Relation {
                                visible: visible.clone(),
                                schema: None,
                                columns: RelColumns::Table {
                                    table: table.clone(),
                                    names,
                                },
                            };
                            match rel.expand(self.policy()) {
                                Some(cols) => RelColumns::Known(Self::alias_columns(Some(a), cols)),
                                None if !protected => RelColumns::Known(
                                    a.columns.iter().map(|c| (normalize(&c.name), Lineage::Plain)).collect(),
                                ),
                                None => {
                                    return Err(SqlError::unsupported(format!(
                                        "column aliases on protected table {table} need the catalog's column list"
                                    )))
                                }
                            }
                        }
                        None => RelColumns::Table { table, names },
                    }
                };
                scope.relations.push(Relation {
                    visible,
                    schema,
                    columns,
                });
                Ok(())
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let shape = if *lateral {
                    let view = Scope {
                        relations: scope.relations.clone(),
                        parent: scope.parent,
                    };
                    self.query(subquery, Some(&view))?
                } else {
                    match scope.parent {
                        Some(p) => self.query(subquery, Some(p))?,
                        None => self.query(subquery, None)?,
                    }
                };
                let cols = shape
                    .columns
                    .iter()
                    .map(|c| (c.name.clone().unwrap_or_default(), c.lineage))
                    .collect();
                scope.relations.push(Relation {
                    visible: alias
                        .as_ref()
                        .map(|a| normalize(&a.name))
                        .unwrap_or_default(),
                    schema: None,
                    columns: RelColumns::Known(Self::alias_columns(alias.as_ref(), cols)),
                });
                Ok(())
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if alias.is_some() {
                    let mut inner = Scope {
                        relations: Vec::new(),
                        parent: scope.parent,
                    };
                    self.table_with_joins(table_with_joins, &mut inner)?;
                    // Columns of an aliased join: every member's columns, in order.
                    let mut cols = Vec::new();
                    for r in &inner.relations {
                        match r.expand(self.policy()) {
                            Some(c) => cols.extend(c),
                            None if r.is_plain_when_unknown(self.policy()) => {}
                            None => {
                                return Err(SqlError::unsupported(
                                    "an aliased join over a protected table needs the catalog's column lists",
                                ))
                            }
                        }
                    }
                    scope.relations.push(Relation {
                        visible: alias
                            .as_ref()
                            .map(|a| normalize(&a.name))
                            .unwrap_or_default(),
                        schema: None,
                        columns: RelColumns::Known(Self::alias_columns(alias.as_ref(), cols)),
                    });
                    Ok(())
                } else {
                    self.table_with_joins(table_with_joins, scope)
                }
            }
            other => {
                self.fallback(other, scope, "a table function")?;
                let visible = match other {
                    TableFactor::Function { alias, .. }
                    | TableFactor::UNNEST { alias, .. }
                    | TableFactor::TableFunction { alias, .. } => {
                        alias.as_ref().map(|a| normalize(&a.name))
                    }
                    _ => None,
                };
                scope.relations.push(Relation {
                    visible: visible.unwrap_or_default(),
                    schema: None,
                    columns: RelColumns::Opaque,
                });
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- queries

    fn query(&mut self, q: &Query, outer: Option<&Scope<'_>>) -> R<ResultShape> {
        let mark = self.ctes.len();
        let result = self.query_inner(q, outer);
        self.ctes.truncate(mark);
        result
    }

    fn query_inner(&mut self, q: &Query, outer: Option<&Scope<'_>>) -> R<ResultShape> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = normalize(&cte.alias.name);
                if with.recursive {
                    if let SetExpr::SetOperation { left, .. } = &*cte.query.body {
                        let seed = self.set_expr(left, outer)?;
                        let seed_cols = shape_cols(&seed);
                        self.ctes.push((
                            name.clone(),
                            Self::alias_columns(Some(&cte.alias), seed_cols),
                        ));
                    }
                }
                let shape = self.query(&cte.query, outer)?;
                let cols = Self::alias_columns(Some(&cte.alias), shape_cols(&shape));
                if with.recursive {
                    if let Some(seed) = self.ctes.iter().rev().find(|(n, _)| *n == name) {
                        if seed.1.iter().map(|c| c.1).ne(cols.iter().map(|c| c.1)) {
                            return Err(SqlError::unsupported(format!(
                                "recursive CTE {name} mixes encrypted and plain values in one column"
                            )));
                        }
                    }
                }
                self.ctes.push((name, cols));
            }
        }
        let shape = match &*q.body {
            SetExpr::Select(s) => self.select(s, outer, q.order_by.as_ref())?,
            other => {
                let shape = self.set_expr(other, outer)?;
                if let Some(ob) = &q.order_by {
                    self.order_by_outputs(ob, &shape, None)?;
                }
                shape
            }
        };
        if let Some(l) = &q.limit_clause {
            self.fallback(l, &Scope::default(), "LIMIT/OFFSET")?;
        }
        Ok(shape)
    }

    fn set_expr(&mut self, body: &SetExpr, outer: Option<&Scope<'_>>) -> R<ResultShape> {
        match body {
            SetExpr::Select(s) => self.select(s, outer, None),
            SetExpr::Query(q) => self.query(q, outer),
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let l = self.set_expr(left, outer)?;
                let r = self.set_expr(right, outer)?;
                let opname = match op {
                    SetOperator::Union => "UNION",
                    SetOperator::Intersect => "INTERSECT",
                    SetOperator::Except => "EXCEPT",
                    _ => "a set operation",
                };
                let dedupe = !matches!(op, SetOperator::Union)
                    || !matches!(
                        set_quantifier,
                        SetQuantifier::All | SetQuantifier::AllByName
                    );
                self.combine(l, r, opname, dedupe)
            }
            SetExpr::Values(values) => {
                let scope = Scope::default();
                let scope_ref = outer.unwrap_or(&scope);
                let mut shape: Option<Vec<OutputColumn>> = None;
                for row in &values.rows {
                    let mut cols = Vec::new();
                    for (i, e) in row.content.iter().enumerate() {
                        let l = self.value(e, scope_ref)?;
                        cols.push(OutputColumn {
                            name: Some(format!("column{}", i + 1)),
                            lineage: l,
                        });
                    }
                    shape = Some(match shape {
                        None => cols,
                        Some(prev) => {
                            self.combine(
                                ResultShape {
                                    columns: prev,
                                    plain_tail: false,
                                },
                                ResultShape {
                                    columns: cols,
                                    plain_tail: false,
                                },
                                "VALUES",
                                false,
                            )?
                            .columns
                        }
                    });
                }
                Ok(ResultShape {
                    columns: shape.unwrap_or_default(),
                    plain_tail: false,
                })
            }
            SetExpr::Insert(Statement::Insert(ins)) => Ok(self.insert(ins)?.unwrap_or_default()),
            SetExpr::Update(Statement::Update(u)) => Ok(self.update(u)?.unwrap_or_default()),
            SetExpr::Delete(Statement::Delete(d)) => Ok(self.delete(d)?.unwrap_or_default()),
            SetExpr::Table(t) => {
                let name = t
                    .table_name
                    .as_ref()
                    .ok_or_else(|| SqlError::unsupported("TABLE without a name"))?;
                let mut parts = Vec::new();
                if let Some(s) = &t.schema_name {
                    parts.push(s.clone());
                }
                parts.push(name.clone());
                let obj = ObjectName::from(parts);
                let mut scope = match outer {
                    Some(p) => Scope::child(p),
                    None => Scope::default(),
                };
                self.table_factor(
                    &TableFactor::Table {
                        name: obj,
                        alias: None,
                        args: None,
                        with_hints: Vec::new(),
                        version: None,
                        with_ordinality: false,
                        partitions: Vec::new(),
                        json_path: None,
                        sample: None,
                        index_directives: Vec::new(),
                        inheritance: None,
                    },
                    &mut scope,
                )?;
                self.wildcard(&scope.relations, &mut ResultShape::default())
            }
            _ => Err(SqlError::unsupported(
                "this query form is not supported by pgcloak in a statement over protected columns",
            )),
        }
    }

    /// Combines the branches of UNION/INTERSECT/EXCEPT (or VALUES rows) column by column.
    fn combine(
        &mut self,
        l: ResultShape,
        r: ResultShape,
        op: &str,
        dedupe: bool,
    ) -> R<ResultShape> {
        if l.plain_tail != r.plain_tail && (l.has_encrypted() || r.has_encrypted()) {
            return Err(SqlError::unsupported(format!(
                "{op} over protected columns with * needs explicit column lists"
            )));
        }
        let mut cols = Vec::new();
        for (a, b) in l.columns.iter().zip(&r.columns) {
            let lineage = match (a.lineage, b.lineage) {
                (Lineage::Plain, Lineage::Plain) => Lineage::Plain,
                (Lineage::Encrypted(x), Lineage::Encrypted(y)) if self.same_domain(x, y) => {
                    if dedupe {
                        self.require_deterministic(x, op)?;
                        self.plan.searched.extend([x, y]);
                    }
                    Lineage::Encrypted(x)
                }
                (Lineage::Encrypted(x), _) | (_, Lineage::Encrypted(x)) => {
                    return Err(SqlError::unsupported(format!(
                        "{op} combines encrypted column {} with values of another origin; \
                         each branch must return the same encrypted column (or its key group)",
                        self.name(x)
                    )))
                }
                _ => Lineage::Unknown,
            };
            cols.push(OutputColumn {
                name: a.name.clone(),
                lineage,
            });
        }
        Ok(ResultShape {
            columns: cols,
            plain_tail: l.plain_tail && r.plain_tail,
        })
    }

    fn select(
        &mut self,
        s: &Select,
        outer: Option<&Scope<'_>>,
        order_by: Option<&OrderBy>,
    ) -> R<ResultShape> {
        let mut scope = match outer {
            Some(p) => Scope::child(p),
            None => Scope::default(),
        };
        for twj in &s.from {
            self.table_with_joins(twj, &mut scope)?;
        }
        let shape = self.projection(&s.projection, &scope)?;
        if s.into.is_some() && shape.has_encrypted() {
            return Err(SqlError::unsupported(
                "SELECT INTO would copy ciphertext of protected columns into a new table; this is not supported",
            ));
        }
        if let Some(w) = &s.selection {
            self.predicate(w, &scope)?;
        }
        match &s.group_by {
            GroupByExpr::Expressions(exprs, _) => {
                for e in exprs {
                    self.grouping(e, &scope, &shape, "GROUP BY")?;
                }
            }
            GroupByExpr::All(_) => {
                for c in shape.columns.clone() {
                    self.group_lineage(c.lineage, "GROUP BY")?;
                }
            }
        }
        if let Some(h) = &s.having {
            self.predicate(h, &scope)?;
        }
        match &s.distinct {
            Some(Distinct::Distinct) => {
                for c in shape.columns.clone() {
                    self.group_lineage(c.lineage, "DISTINCT")?;
                }
            }
            Some(Distinct::On(exprs)) => {
                for e in exprs {
                    self.grouping(e, &scope, &shape, "DISTINCT ON")?;
                }
            }
            _ => {}
        }
        if !s.named_window.is_empty() {
            self.fallback(&s.named_window, &scope, "a window definition")?;
        }
        if let Some(ob) = order_by {
            self.order_by_outputs(ob, &shape, Some(&scope))?;
        }
        Ok(shape)
    }

    fn group_lineage(&mut self, l: Lineage, op: &str) -> R<()> {
        match l {
            Lineage::Plain => Ok(()),
            Lineage::Encrypted(c) => {
                self.require_deterministic(c, op)?;
                self.plan.searched.push(c);
                Ok(())
            }
            Lineage::Unknown => Err(SqlError::unsupported(format!(
                "{op}: a column's origin cannot be resolved in a statement over protected columns"
            ))),
        }
    }

    fn output_ref(e: &Expr, shape: &ResultShape) -> Option<Lineage> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let i: usize = n.parse().ok()?;
                    shape.columns.get(i.checked_sub(1)?).map(|c| c.lineage)
                }
                _ => None,
            },
            Expr::Identifier(i) => {
                let n = normalize(i);
                shape
                    .columns
                    .iter()
                    .find(|c| c.name.as_deref() == Some(n.as_str()))
                    .map(|c| c.lineage)
            }
            _ => None,
        }
    }

    fn grouping(&mut self, e: &Expr, scope: &Scope<'_>, shape: &ResultShape, op: &str) -> R<()> {
        let l = match self.column_lineage(e, scope) {
            // An input column wins over an output name in GROUP BY.
            Some(l)
                if !matches!(e, Expr::Identifier(_))
                    || scope.resolve(self.policy(), &ident_name(e)).is_some() =>
            {
                Some(l)
            }
            _ => Self::output_ref(e, shape),
        };
        match l {
            Some(l) => self.group_lineage(l, op),
            None => self.plain_expr(e, scope, op),
        }
    }

    fn order_by_outputs(
        &mut self,
        ob: &OrderBy,
        shape: &ResultShape,
        scope: Option<&Scope<'_>>,
    ) -> R<()> {
        let OrderByKind::Expressions(list) = &ob.kind else {
            return Ok(());
        };
        for item in list {
            let e = &item.expr;
            // Output names and positions win in ORDER BY.
            let l = Self::output_ref(e, shape)
                .or_else(|| scope.and_then(|s| self.column_lineage(e, s)));
            match l {
                Some(Lineage::Encrypted(c)) => {
                    return Err(SqlError::unsupported(format!(
                        "ORDER BY on encrypted column {} is not supported: ciphertext order is meaningless; \
                         sort on a plain column or in the application",
                        self.name(c)
                    )))
                }
                Some(Lineage::Unknown) => {
                    return Err(SqlError::unsupported(
                        "ORDER BY: a column's origin cannot be resolved in a statement over protected columns",
                    ))
                }
                Some(Lineage::Plain) => {}
                None => match scope {
                    Some(s) => self.plain_expr(e, s, "ORDER BY")?,
                    None => self.plain_expr(e, &Scope::default(), "ORDER BY")?,
                },
            }
        }
        Ok(())
    }

    fn wildcard(&mut self, relations: &[Relation], shape: &mut ResultShape) -> R<ResultShape> {
        for r in relations {
            match r.expand(self.policy()) {
                Some(cols) => {
                    for (name, lineage) in cols {
                        if shape.plain_tail && lineage != Lineage::Plain {
                            return Err(SqlError::unsupported(
                                "* over protected columns after a table of unknown columns; list the columns",
                            ));
                        }
                        if !shape.plain_tail {
                            shape.columns.push(OutputColumn {
                                name: Some(name),
                                lineage,
                            });
                        }
                    }
                }
                None if r.is_plain_when_unknown(self.policy()) => shape.plain_tail = true,
                None => {
                    let what = match &r.columns {
                        RelColumns::Table { table, .. } => format!("protected table {table}"),
                        _ => "a table function".to_string(),
                    };
                    return Err(SqlError::unsupported(format!(
                        "cannot expand * over {what}: its columns are unknown; list the columns"
                    )));
                }
            }
        }
        Ok(shape.clone())
    }

    fn projection(&mut self, items: &[SelectItem], scope: &Scope<'_>) -> R<ResultShape> {
        let mut shape = ResultShape::default();
        for item in items {
            let (lineage, name) = match item {
                SelectItem::UnnamedExpr(e) => (self.value(e, scope)?, Some(output_name(e))),
                SelectItem::ExprWithAlias { expr, alias } => {
                    (self.value(expr, scope)?, Some(normalize(alias)))
                }
                SelectItem::ExprWithAliases { expr, aliases } => {
                    (self.value(expr, scope)?, aliases.first().map(normalize))
                }
                SelectItem::Wildcard(_) => {
                    shape = self.wildcard(&scope.relations, &mut shape)?;
                    continue;
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let rel = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            let parts = object_name_parts(n)
                                .ok_or_else(|| SqlError::unsupported("unsupported qualified *"))?;
                            match parts.as_slice() {
                                [r] => scope.relation(None, r).cloned(),
                                [s, r] => scope.relation(Some(s), r).cloned(),
                                _ => None,
                            }
                        }
                        SelectItemQualifiedWildcardKind::Expr(_) => None,
                    };
                    match rel {
                        Some(r) => {
                            shape = self.wildcard(std::slice::from_ref(&r), &mut shape)?;
                        }
                        None => {
                            if self.plan.touches_policy {
                                return Err(SqlError::unsupported(
                                    "cannot resolve a qualified * in a statement over protected columns",
                                ));
                            }
                            shape.plain_tail = true;
                        }
                    }
                    continue;
                }
            };
            if shape.plain_tail {
                if lineage != Lineage::Plain {
                    return Err(SqlError::unsupported(
                        "a protected column after * over a table of unknown columns; list the columns",
                    ));
                }
                continue;
            }
            shape.columns.push(OutputColumn { name, lineage });
        }
        if self.plan.touches_policy && shape.columns.iter().any(|c| c.lineage == Lineage::Unknown) {
            return Err(SqlError::unsupported(
                "a result column's origin cannot be resolved in a statement over protected columns; \
                 pgcloak will not return what could be ciphertext",
            ));
        }
        Ok(shape)
    }

    // ---------------------------------------------------------------- expressions

    /// The lineage of a bare column reference (through parentheses), or `None` when
    /// the expression is not one.
    fn column_lineage(&mut self, e: &Expr, scope: &Scope<'_>) -> Option<Lineage> {
        let l = match e {
            Expr::Nested(inner) => return self.column_lineage(inner, scope),
            Expr::Identifier(i) => {
                let name = normalize(i);
                match scope.resolve(self.policy(), &name) {
                    Some(l) => l,
                    // A whole-row reference (`to_jsonb(c)`) to a relation with ciphertext.
                    None => match scope.relation(None, &name) {
                        Some(r) if r.may_hold_encrypted(self.policy()) => Lineage::Unknown,
                        _ => Lineage::Plain,
                    },
                }
            }
            Expr::CompoundIdentifier(parts) => {
                let n: Vec<String> = parts.iter().map(normalize).collect();
                let found = match n.as_slice() {
                    [rel, col] => scope.resolve_qualified(self.policy(), None, rel, col),
                    [schema, rel, col] => scope
                        .resolve_qualified(self.policy(), Some(schema), rel, col)
                        // Or (composite) rel.col.field: field access on a column.
                        .or_else(|| scope.resolve_qualified(self.policy(), None, schema, rel)),
                    [_, schema, rel, col] => {
                        scope.resolve_qualified(self.policy(), Some(schema), rel, col)
                    }
                    _ => None,
                };
                found.unwrap_or(Lineage::Unknown)
            }
            _ => return None,
        };
        if let Lineage::Encrypted(c) = l {
            self.encrypted(c);
        }
        Some(l)
    }

    fn first_encrypted(&mut self, e: &Expr, scope: &Scope<'_>) -> Option<Lineage> {
        let mut found = None;
        let mut idents: Vec<Expr> = Vec::new();
        let _ = sqlparser::ast::visit_expressions(e, |x| {
            if matches!(x, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                idents.push(x.clone());
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        for x in idents {
            if let Some(l) = self.column_lineage(&x, scope) {
                if l != Lineage::Plain {
                    found = Some(l);
                    break;
                }
            }
        }
        found
    }

    fn op_error(&self, l: Lineage, op: &str) -> SqlError {
        match l {
            Lineage::Encrypted(c) => SqlError::unsupported(format!(
                "{op} over encrypted column {} is not supported: the database only sees ciphertext; \
                 encrypted columns allow projection, IS [NOT] NULL, count(), and for deterministic columns \
                 =, <>, IN, IS [NOT] DISTINCT FROM, GROUP BY, DISTINCT and joins in their key group",
                self.name(c)
            )),
            _ => SqlError::unsupported(format!(
                "{op}: a column's origin cannot be resolved in a statement over protected columns"
            )),
        }
    }

    /// The lineage of a value expression in a result column.
    fn value(&mut self, e: &Expr, scope: &Scope<'_>) -> R<Lineage> {
        if let Some(l) = self.column_lineage(e, scope) {
            return Ok(l);
        }
        match e {
            Expr::Value(_) => Ok(Lineage::Plain),
            Expr::Subquery(q) => {
                let shape = self.query(q, Some(scope))?;
                Ok(single_lineage(&shape))
            }
            Expr::Function(f) if is_count(f) => {
                self.count(f, scope)?;
                Ok(Lineage::Plain)
            }
            _ if is_predicate(e) => {
                self.predicate(e, scope)?;
                Ok(Lineage::Plain)
            }
            _ => {
                self.plain_expr(e, scope, &describe_op(e))?;
                Ok(Lineage::Plain)
            }
        }
    }

    fn count(&mut self, f: &Function, scope: &Scope<'_>) -> R<()> {
        let FunctionArguments::List(list) = &f.args else {
            return self.fallback(f, scope, "count()");
        };
        if list.args.len() != 1 || !list.clauses.is_empty() {
            return self.fallback(f, scope, "count()");
        }
        let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
        match &list.args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => match self.column_lineage(e, scope) {
                Some(Lineage::Encrypted(c)) => {
                    if distinct {
                        self.require_deterministic(c, "count(DISTINCT ...)")?;
                        self.plan.searched.push(c);
                    }
                }
                Some(Lineage::Unknown) => return Err(self.op_error(Lineage::Unknown, "count()")),
                Some(Lineage::Plain) => {}
                None => self.plain_expr(e, scope, "count()")?,
            },
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {}
            _ => self.fallback(f, scope, "count()")?,
        }
        if let Some(filter) = &f.filter {
            self.predicate(filter, scope)?;
        }
        if let Some(over) = &f.over {
            self.fallback(over, scope, "a window clause")?;
        }
        Ok(())
    }

    /// An expression whose value must not involve an encrypted column (an operand of
    /// an operator, a function argument, ...). Subqueries are analysed; their results
    /// must be plain.
    fn plain_expr(&mut self, e: &Expr, scope: &Scope<'_>, op: &str) -> R<()> {
        if let Some(l) = self.column_lineage(e, scope) {
            return match l {
                Lineage::Plain => Ok(()),
                other => Err(self.op_error(other, op)),
            };
        }
        match e {
            Expr::Value(_) | Expr::TypedString(_) => Ok(()),
            Expr::Nested(inner) => self.plain_expr(inner, scope, op),
            Expr::Subquery(q) => {
                let shape = self.query(q, Some(scope))?;
                match single_lineage(&shape) {
                    Lineage::Plain => Ok(()),
                    other => Err(self.op_error(other, op)),
                }
            }
            _ if is_predicate(e) => self.predicate(e, scope),
            Expr::BinaryOp {
                left,
                op: bop,
                right,
            } => {
                let name = format!("operator {bop}");
                self.plain_expr(left, scope, &name)?;
                self.plain_expr(right, scope, &name)
            }
            Expr::UnaryOp { expr, op: uop } => {
                self.plain_expr(expr, scope, &format!("operator {uop}"))
            }
            Expr::Cast { expr, .. } => self.plain_expr(expr, scope, "a cast"),
            Expr::Function(f) if is_count(f) => self.count(f, scope),
            Expr::Function(f) => {
                let name = format!("function {}()", f.name);
                if let FunctionArguments::List(list) = &f.args {
                    for a in &list.args {
                        let (FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(q))
                        | FunctionArg::Named {
                            arg: FunctionArgExpr::QualifiedWildcard(q),
                            ..
                        }) = a
                        else {
                            continue;
                        };
                        let rel = object_name_parts(q).and_then(|p| match p.as_slice() {
                            [r] => scope.relation(None, r).cloned(),
                            [s, r] => scope.relation(Some(s), r).cloned(),
                            _ => None,
                        });
                        if rel.is_none_or(|r| r.may_hold_encrypted(self.policy())) {
                            return Err(self.op_error(Lineage::Unknown, &name));
                        }
                    }
                }
                self.fallback(f, scope, &name)
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                if let Some(o) = operand {
                    self.plain_expr(o, scope, "CASE")?;
                }
                for w in conditions {
                    if operand.is_some() {
                        self.plain_expr(&w.condition, scope, "CASE")?;
                    } else {
                        self.predicate(&w.condition, scope)?;
                    }
                    self.plain_expr(&w.result, scope, "CASE")?;
                }
                if let Some(e) = else_result {
                    self.plain_expr(e, scope, "CASE")?;
                }
                Ok(())
            }
            Expr::Array(a) => {
                for x in &a.elem {
                    self.plain_expr(x, scope, "an ARRAY")?;
                }
                Ok(())
            }
            Expr::Tuple(list) => {
                for x in list {
                    self.plain_expr(x, scope, "a row constructor")?;
                }
                Ok(())
            }
            other => self.fallback(other, scope, op),
        }
    }

    /// For anything not modelled: every column reference inside (subqueries included,
    /// resolved conservatively against this scope) must be plain, and every subquery's
    /// result must be plain.
    fn fallback<V: Visit>(&mut self, node: &V, scope: &Scope<'_>, op: &str) -> R<()> {
        let mut queries: Vec<Query> = Vec::new();
        let _ = sqlparser::ast::visit_expressions(node, |x| {
            if let Expr::Subquery(q) | Expr::Exists { subquery: q, .. } = x {
                queries.push((**q).clone());
            }
            if let Expr::In {
                target: InTarget::Subquery(q),
                ..
            } = x
            {
                queries.push((**q).clone());
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        let mut idents: Vec<Expr> = Vec::new();
        let _ = sqlparser::ast::visit_expressions(node, |x| {
            if matches!(x, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                idents.push(x.clone());
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        for x in &idents {
            if let Some(l) = self.column_lineage(x, scope) {
                if l != Lineage::Plain {
                    return Err(self.op_error(l, op));
                }
            }
        }
        for q in &queries {
            let shape = self.query(q, Some(scope))?;
            if shape.columns.iter().any(|c| c.lineage != Lineage::Plain) {
                let l = shape
                    .columns
                    .iter()
                    .map(|c| c.lineage)
                    .find(|l| *l != Lineage::Plain)
                    .unwrap_or(Lineage::Unknown);
                return Err(self.op_error(l, op));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- predicates

    fn predicate(&mut self, e: &Expr, scope: &Scope<'_>) -> R<()> {
        match e {
            Expr::Nested(inner) => self.predicate(inner, scope),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And | BinaryOperator::Or,
                right,
            } => {
                self.predicate(left, scope)?;
                self.predicate(right, scope)
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => self.predicate(expr, scope),
            Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Eq | BinaryOperator::NotEq),
                right,
            } => self.equality(left, right, scope, &op.to_string()),
            Expr::IsDistinctFrom(l, r) => self.equality(l, r, scope, "IS DISTINCT FROM"),
            Expr::IsNotDistinctFrom(l, r) => self.equality(l, r, scope, "IS NOT DISTINCT FROM"),
            Expr::BinaryOp { left, op, right } => {
                let name = format!("operator {op}");
                for side in [left, right] {
                    if let Some(l) = self.column_lineage(side, scope) {
                        if l != Lineage::Plain {
                            return Err(self.op_error(l, &name));
                        }
                    }
                }
                self.plain_expr(left, scope, &name)?;
                self.plain_expr(right, scope, &name)
            }
            Expr::IsNull(x) | Expr::IsNotNull(x) => match self.column_lineage(x, scope) {
                Some(_) => Ok(()),
                None => self.plain_expr(x, scope, "IS NULL"),
            },
            Expr::In {
                expr,
                target,
                negated: _,
                ..
            } => self.in_predicate(expr, target, scope),
            Expr::AnyOp {
                left,
                compare_op,
                right,
                ..
            } => self.any_predicate(left, compare_op, right, scope, "ANY", BinaryOperator::Eq),
            Expr::AllOp {
                left,
                compare_op,
                right,
            } => self.any_predicate(left, compare_op, right, scope, "ALL", BinaryOperator::NotEq),
            Expr::Like { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, "LIKE")
            }
            Expr::ILike { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, "ILIKE")
            }
            Expr::SimilarTo { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, "SIMILAR TO")
            }
            Expr::RLike { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, "a regular expression match")
            }
            Expr::Between {
                expr, low, high, ..
            } => self.reject_on_encrypted(&[expr, low, high], scope, "BETWEEN"),
            Expr::Exists { subquery, .. } => {
                self.query(subquery, Some(scope))?;
                Ok(())
            }
            _ => match self.value(e, scope)? {
                Lineage::Plain => Ok(()),
                other => Err(self.op_error(other, "using a column as a condition")),
            },
        }
    }

    fn reject_on_encrypted(&mut self, parts: &[&Expr], scope: &Scope<'_>, op: &str) -> R<()> {
        for p in parts {
            if let Some(l) = self
                .column_lineage(p, scope)
                .filter(|l| *l != Lineage::Plain)
            {
                return Err(self.op_error(l, op));
            }
            if let Some(l) = self.first_encrypted(p, scope) {
                return Err(self.op_error(l, op));
            }
        }
        for p in parts {
            self.plain_expr(p, scope, op)?;
        }
        Ok(())
    }

    fn equality(&mut self, l: &Expr, r: &Expr, scope: &Scope<'_>, op: &str) -> R<()> {
        let lc = self.column_lineage(l, scope);
        let rc = self.column_lineage(r, scope);
        match (lc, rc) {
            (Some(a @ Lineage::Encrypted(_)), Some(b))
            | (Some(b), Some(a @ Lineage::Encrypted(_))) => self.equal_columns(a, b, op),
            (Some(Lineage::Encrypted(c)), None) => self.compare_value(c, r, scope, op),
            (None, Some(Lineage::Encrypted(c))) => self.compare_value(c, l, scope, op),
            (Some(Lineage::Unknown), _) | (_, Some(Lineage::Unknown)) => {
                Err(self.op_error(Lineage::Unknown, op))
            }
            _ => {
                // Neither side is a bare encrypted column; a subquery side may be one.
                let sub = |e: &Expr| matches!(strip_nested(e), Expr::Subquery(_));
                if sub(l) || sub(r) {
                    let ll = self.value(l, scope)?;
                    let rl = self.value(r, scope)?;
                    if ll != Lineage::Plain || rl != Lineage::Plain {
                        return self.equal_columns(ll, rl, op);
                    }
                    return Ok(());
                }
                self.plain_expr(l, scope, op)?;
                self.plain_expr(r, scope, op)
            }
        }
    }

    /// `col op value` with `col` encrypted: the value gets encrypted with col's key.
    fn compare_value(&mut self, c: ColumnRef, value: &Expr, scope: &Scope<'_>, op: &str) -> R<()> {
        self.require_deterministic(c, op)?;
        self.plan.searched.push(c);
        self.bind_value(c, value, scope, &format!("{op} on"))
    }

    fn in_predicate(&mut self, e: &Expr, target: &InTarget, scope: &Scope<'_>) -> R<()> {
        let lineage = self.column_lineage(e, scope);
        match (lineage, target) {
            (Some(Lineage::Encrypted(c)), InTarget::List(list)) => {
                self.require_deterministic(c, "IN")?;
                if list.len() > self.ctx.in_list_cap {
                    return Err(SqlError::unsupported(format!(
                        "IN list of {} values on encrypted column {} exceeds the limit of {}; \
                         split the query or use = ANY($1) with a smaller array",
                        list.len(),
                        self.name(c),
                        self.ctx.in_list_cap
                    )));
                }
                self.plan.searched.push(c);
                for x in list {
                    self.bind_value(c, x, scope, "IN on")?;
                }
                Ok(())
            }
            (Some(Lineage::Encrypted(c)), InTarget::Subquery(q)) => {
                let shape = self.query(q, Some(scope))?;
                self.equal_columns(
                    Lineage::Encrypted(c),
                    single_lineage(&shape),
                    "IN (subquery)",
                )
            }
            (Some(l @ (Lineage::Encrypted(_) | Lineage::Unknown)), _) => {
                Err(self.op_error(l, "IN"))
            }
            (_, InTarget::List(list)) => {
                self.plain_expr(e, scope, "IN")?;
                for x in list {
                    self.plain_expr(x, scope, "IN")?;
                }
                Ok(())
            }
            (_, InTarget::Subquery(q)) => {
                self.plain_expr(e, scope, "IN")?;
                let shape = self.query(q, Some(scope))?;
                match single_lineage(&shape) {
                    Lineage::Plain => Ok(()),
                    other => Err(self.op_error(other, "IN (subquery)")),
                }
            }
            (_, other) => {
                self.plain_expr(e, scope, "IN")?;
                if let InTarget::Unnest(x) = other {
                    self.plain_expr(x, scope, "IN")?;
                }
                Ok(())
            }
        }
    }

    fn any_predicate(
        &mut self,
        left: &Expr,
        cmp: &BinaryOperator,
        right: &Expr,
        scope: &Scope<'_>,
        what: &str,
        allowed: BinaryOperator,
    ) -> R<()> {
        let op = format!("{cmp} {what}");
        match self.column_lineage(left, scope) {
            Some(Lineage::Encrypted(c)) => {
                if *cmp != allowed {
                    return Err(self.op_error(Lineage::Encrypted(c), &op));
                }
                self.require_deterministic(c, &op)?;
                self.plan.searched.push(c);
                match strip_nested(right) {
                    Expr::Value(v) => match self.value_operand(v, false)? {
                        Operand::Param(n) => self.param(c, n, true),
                        Operand::Null => Ok(()),
                        _ => Err(self.any_error(c, &op)),
                    },
                    Expr::Array(a) => {
                        if a.elem.len() > self.ctx.in_list_cap {
                            return Err(SqlError::unsupported(format!(
                                "ARRAY of {} values on encrypted column {} exceeds the limit of {}",
                                a.elem.len(),
                                self.name(c),
                                self.ctx.in_list_cap
                            )));
                        }
                        for x in &a.elem {
                            self.bind_value(c, x, scope, &format!("{op} on"))?;
                        }
                        Ok(())
                    }
                    Expr::Subquery(q) => {
                        let shape = self.query(q, Some(scope))?;
                        self.equal_columns(Lineage::Encrypted(c), single_lineage(&shape), &op)
                    }
                    _ => Err(self.any_error(c, &op)),
                }
            }
            Some(Lineage::Unknown) => Err(self.op_error(Lineage::Unknown, &op)),
            _ => {
                self.plain_expr(left, scope, &op)?;
                match strip_nested(right) {
                    Expr::Subquery(q) => {
                        let shape = self.query(q, Some(scope))?;
                        match single_lineage(&shape) {
                            Lineage::Plain => Ok(()),
                            other => Err(self.op_error(other, &op)),
                        }
                    }
                    other => self.plain_expr(other, scope, &op),
                }
            }
        }
    }

    fn any_error(&self, c: ColumnRef, op: &str) -> SqlError {
        SqlError::unsupported(format!(
            "{op} on encrypted column {} needs a $n array parameter or an ARRAY[...] of literals",
            self.name(c)
        ))
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

fn describe_op(e: &Expr) -> String {
    match e {
        Expr::Function(f) => format!("function {}()", f.name),
        Expr::Cast { .. } => "a cast".to_string(),
        Expr::BinaryOp { op, .. } => format!("operator {op}"),
        Expr::UnaryOp { op, .. } => format!("operator {op}"),
        Expr::Case { .. } => "CASE".to_string(),
        _ => "an expression".to_string(),
    }
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

/// The first one or two words of a statement, upper-cased (for messages; never a literal).
fn first_words(text: &str) -> String {
    Lexer::new(text)
        .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
        .take(2)
        .map_while(|t| (t.kind == TokKind::Word).then(|| text[t.span].to_ascii_uppercase()))
        .collect::<Vec<_>>()
        .join(" ")
}
