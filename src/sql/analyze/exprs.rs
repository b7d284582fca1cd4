//! Expressions and predicates: what may be done with an encrypted column, and which
//! operands get encrypted with its key.

use super::*;

/// Per-statement state for the rules of issue 11 that span the whole statement:
/// whole-row references, the single role of a `$n` bound to a protected column, and
/// the outermost select list (for the `null`-view projection rewrite).
#[derive(Debug, Default)]
pub(super) struct RowState {
    /// The first whole-row reference to a relation that holds protected columns
    /// (described for the message): the statement is refused.
    pub(super) whole_row: Option<WholeRow>,
    /// `$n` occurrences bound to an encrypted column: (n, byte offset in the query string).
    pub(super) bound: Vec<(u16, usize)>,
    /// Nesting depth of the query being analysed (1: the statement's own query).
    pub(super) depth: usize,
    /// Set just before the outermost SELECT is analysed.
    pub(super) top_pending: bool,
    /// The expansion of `*` in the select list being analysed, when a USING or
    /// NATURAL join merges columns.
    pub(super) merged_star: Option<Vec<(String, Lineage)>>,
}

/// What a node holds outside its subqueries: column references (identifiers,
/// qualified names and whole-row `t.*` forms, also as function arguments), and its
/// outermost subqueries (analysed in their own scope).
#[derive(Default)]
struct Refs {
    depth: usize,
    refs: Vec<Expr>,
    queries: Vec<Query>,
}

impl sqlparser::ast::Visitor for Refs {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> std::ops::ControlFlow<()> {
        if self.depth == 0 {
            self.queries.push(q.clone());
        }
        self.depth += 1;
        std::ops::ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> std::ops::ControlFlow<()> {
        self.depth = self.depth.saturating_sub(1);
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, x: &Expr) -> std::ops::ControlFlow<()> {
        if self.depth > 0 {
            return std::ops::ControlFlow::Continue(());
        }
        match x {
            Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::QualifiedWildcard(..)
            | Expr::Wildcard(_) => self.refs.push(x.clone()),
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    self.args(&list.args);
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> std::ops::ControlFlow<()> {
        if self.depth == 0 {
            match tf {
                TableFactor::Function { args, .. } => self.args(args),
                TableFactor::Table { args: Some(a), .. } => self.args(&a.args),
                _ => {}
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

impl Refs {
    /// `f(t.*)`: a whole-row argument.
    fn args(&mut self, args: &[FunctionArg]) {
        for a in args {
            if let Some(q) = wildcard_arg(a) {
                self.refs.push(Expr::QualifiedWildcard(
                    q.clone(),
                    sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
                ));
            }
        }
    }
}

/// The relation name of a `t.*` function argument.
pub(super) fn wildcard_arg(a: &FunctionArg) -> Option<&ObjectName> {
    match a {
        FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(q))
        | FunctionArg::Named {
            arg: FunctionArgExpr::QualifiedWildcard(q),
            ..
        }
        | FunctionArg::ExprNamed {
            arg: FunctionArgExpr::QualifiedWildcard(q),
            ..
        } => Some(q),
        _ => None,
    }
}

fn refs_of<V: Visit>(node: &V) -> Refs {
    let mut r = Refs::default();
    let _ = node.visit(&mut r);
    r
}

fn column_refs<V: Visit>(node: &V) -> Vec<Expr> {
    refs_of(node).refs
}

impl Analyzer<'_> {
    /// A whole-row reference to `r` (`r.*` in an expression, `r` as a value): plain
    /// when the relation holds no protected column, else recorded for refusal.
    pub(super) fn whole_row(&mut self, r: &Relation) -> Lineage {
        let policy = self.policy();
        if !r.may_hold_encrypted(policy) {
            return Lineage::Plain;
        }
        self.plan.touches_policy = true;
        if self.rows.whole_row.is_none() {
            let (of, columns): (WholeRowOf, Vec<Option<ColumnName>>) = match &r.columns {
                RelColumns::Table { table, .. } => (
                    self.rel(table)
                        .map_or(WholeRowOf::UnnamedTable, WholeRowOf::Table),
                    policy
                        .table_columns(table)
                        .iter()
                        .map(|c| Some(self.name(*c)))
                        .collect(),
                ),
                RelColumns::Known(cols) => (
                    WholeRowOf::DerivedRelation,
                    cols.iter()
                        .filter(|(_, l)| *l != Lineage::Plain)
                        .map(|(_, l)| match l {
                            Lineage::Encrypted(c) => Some(self.name(*c)),
                            _ => None,
                        })
                        .collect(),
                ),
                RelColumns::Opaque => (WholeRowOf::TableFunction, Vec::new()),
            };
            self.rows.whole_row = Some(WholeRow { of, columns });
        }
        Lineage::Unknown
    }

    /// The whole-row reference `name.*` (or `schema.name.*`).
    fn qualified_whole_row(&mut self, name: &ObjectName, scope: &Scope<'_>) -> Lineage {
        let rel = object_name_parts(name).and_then(|p| match p.as_slice() {
            [r] => scope.relation(None, r).cloned(),
            [s, r] => scope.relation(Some(s), r).cloned(),
            [_, s, r] => scope.relation(Some(s), r).cloned(),
            _ => None,
        });
        match rel {
            Some(r) => self.whole_row(&r),
            None => Lineage::Unknown,
        }
    }

    /// A bare `*` in an expression: every relation of the scope, whole.
    fn bare_wildcard(&mut self, scope: &Scope<'_>) -> Lineage {
        let mut level = Some(scope);
        while let Some(s) = level {
            for r in s.relations.clone() {
                if self.whole_row(&r) != Lineage::Plain {
                    return Lineage::Unknown;
                }
            }
            level = s.parent;
        }
        Lineage::Plain
    }

    /// Records that the `$n` operand `e` is bound to an encrypted column here.
    pub(super) fn bound_param(&mut self, e: &Expr) {
        if let Expr::Value(v) = strip_nested(e) {
            if let (Value::Placeholder(p), Some(at)) = (&v.value, self.abs(v.span.start)) {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<u16>().ok()) {
                    self.rows.bound.push((n, at));
                }
            }
        }
    }

    /// The checks that need the whole statement, run after it was analysed: no
    /// whole-row reference to protected columns, and every `$n` bound to an encrypted
    /// column used only there. Projections are kept only for a plain SELECT.
    pub(super) fn finish(&mut self, text: &str) -> R<()> {
        if let Some(w) = self.rows.whole_row.take() {
            return Err(Reason::WholeRow(w).into());
        }
        let mut actions: Vec<ParamAction> = self.plan.params.clone();
        if let Some(p) = &self.plan.prepare {
            actions.extend(p.statement.params.iter().copied());
        }
        if !actions.is_empty() {
            let mut lexer = Lexer::new(text);
            for t in lexer.by_ref() {
                if t.kind != TokKind::Param {
                    continue;
                }
                let Some(n) = text
                    .get(t.span.clone())
                    .and_then(|s| s.strip_prefix('$'))
                    .and_then(|s| s.parse::<u16>().ok())
                else {
                    continue;
                };
                let at = self.base + t.span.start;
                if let Some(a) = actions.iter().find(|a| a.index == n) {
                    if !self.rows.bound.contains(&(n, at)) {
                        return Err(Reason::ParameterReused {
                            index: n,
                            column: self.name(a.column),
                        }
                        .into());
                    }
                }
            }
        }
        if self.plan.kind != StatementKind::Select {
            self.plan.projections.clear();
        }
        Ok(())
    }

    /// `SET (a, b) = (v1, v2)`, `= ROW(v1, v2)` or `= (SELECT x, y ...)`: each value
    /// stored into its target like a single assignment.
    pub(super) fn tuple_assignment(
        &mut self,
        table: &TableName,
        targets: &[Option<ColumnRef>],
        value: &Expr,
        scope: &Scope<'_>,
    ) -> R<()> {
        let items: Option<Vec<&Expr>> = match strip_nested(value) {
            Expr::Tuple(list) => Some(list.iter().collect()),
            Expr::Function(f)
                if last_ident(&f.name).as_deref() == Some("row") && f.name.0.len() == 1 =>
            {
                match &f.args {
                    FunctionArguments::List(l) if l.clauses.is_empty() => l
                        .args
                        .iter()
                        .map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                            _ => None,
                        })
                        .collect(),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(items) = items.filter(|v| v.len() == targets.len()) {
            for (t, e) in targets.iter().zip(items) {
                match t {
                    Some(c) => self.bind_value(*c, e, scope, Operation::UpdateSet)?,
                    None => self.plain_expr(e, scope, Operation::PlainAssignment)?,
                }
            }
            return Ok(());
        }
        if let Expr::Subquery(q) = strip_nested(value) {
            let shape = self.query(q, Some(scope))?;
            if shape.plain_tail || shape.columns.len() != targets.len() {
                if targets.iter().all(Option::is_none) && !shape.has_encrypted() {
                    return Ok(());
                }
                return Err(self.refuse(
                    Operation::SetFromSubquery,
                    Reason::SetSubqueryColumns(self.rel(table)),
                ));
            }
            for (t, out) in targets.iter().zip(&shape.columns) {
                self.store_lineage(*t, out.lineage, table, Operation::SetFromSubquery)?;
            }
            return Ok(());
        }
        if let Some(c) = targets.iter().flatten().next() {
            return Err(self.refuse(Operation::UpdateSet, Reason::MultiColumnSet(self.name(*c))));
        }
        self.plain_expr(value, scope, Operation::PlainAssignment)
    }

    /// A refusal caused (or accompanied) by a whole-row reference says so.
    pub(super) fn explain(&mut self, e: SqlError) -> SqlError {
        match (self.rows.whole_row.take(), e) {
            (Some(w), SqlError::Refused(r)) => SqlError::Refused(r.with_whole_row(w)),
            (_, e) => e,
        }
    }

    /// The lineage of a bare column reference (through parentheses), or `None` when
    /// the expression is not one.
    pub(super) fn column_lineage(&mut self, e: &Expr, scope: &Scope<'_>) -> Option<Lineage> {
        let l = match e {
            Expr::Nested(inner) => return self.column_lineage(inner, scope),
            Expr::Identifier(i) => {
                let name = normalize(i);
                let rel = scope.relation(None, &name).cloned();
                match scope.resolve(self.policy(), &name) {
                    // A relation of this name is visible and no relation certainly has
                    // a column of this name: PostgreSQL may read it as the whole row.
                    Some(_)
                        if rel
                            .as_ref()
                            .is_some_and(|r| r.may_hold_encrypted(self.policy()))
                            && !scope.certainly_has_column(self.policy(), &name) =>
                    {
                        rel.as_ref().map_or(Lineage::Unknown, |r| self.whole_row(r))
                    }
                    Some(l) => l,
                    // A whole-row reference (`to_jsonb(c)`, `c::text`, `c IS NULL`).
                    None => match rel {
                        Some(r) => self.whole_row(&r),
                        None => Lineage::Plain,
                    },
                }
            }
            Expr::QualifiedWildcard(name, _) => self.qualified_whole_row(name, scope),
            Expr::Wildcard(_) => self.bare_wildcard(scope),
            Expr::CompoundIdentifier(parts) => {
                let n: Vec<String> = parts.iter().map(normalize).collect();
                let found = match n.as_slice() {
                    // `c.f` where c has no column f: attribute notation for f(c)
                    // (`c.text` is a cast of the whole row).
                    [rel, col]
                        if scope.relation(None, rel).is_some_and(|r| {
                            r.may_hold_encrypted(self.policy())
                                && r.lookup(self.policy(), col).is_none()
                        }) =>
                    {
                        scope
                            .relation(None, rel)
                            .cloned()
                            .map(|r| self.whole_row(&r))
                    }
                    [rel, col] => match scope.resolve_qualified(self.policy(), None, rel, col) {
                        Some(l) => Some(l),
                        // `schema.table` as a whole-row reference.
                        None => scope
                            .relation(Some(rel), col)
                            .cloned()
                            .map(|r| self.whole_row(&r)),
                    },
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

    pub(super) fn first_encrypted(&mut self, e: &Expr, scope: &Scope<'_>) -> Option<Lineage> {
        let mut found = None;
        for x in column_refs(e) {
            if let Some(l) = self.column_lineage(&x, scope) {
                if l != Lineage::Plain {
                    found = Some(l);
                    break;
                }
            }
        }
        found
    }

    pub(super) fn op_error(&self, l: Lineage, op: Operation) -> SqlError {
        if let (Lineage::Unknown, Some(w)) = (l, &self.rows.whole_row) {
            return self.refuse(op, Reason::OverWholeRow(w.clone()));
        }
        match l {
            Lineage::Encrypted(c) => self.refuse(op, Reason::EncryptedOperand(self.name(c))),
            _ => self.refuse(op, Reason::UnresolvedOrigin),
        }
    }

    /// The lineage of a value expression in a result column.
    pub(super) fn value(&mut self, e: &Expr, scope: &Scope<'_>) -> R<Lineage> {
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
                self.plain_expr(e, scope, describe_op(e))?;
                Ok(Lineage::Plain)
            }
        }
    }

    pub(super) fn count(&mut self, f: &Function, scope: &Scope<'_>) -> R<()> {
        let FunctionArguments::List(list) = &f.args else {
            return self.fallback(f, scope, Operation::Count);
        };
        if list.args.len() != 1 || !list.clauses.is_empty() {
            return self.fallback(f, scope, Operation::Count);
        }
        let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
        match &list.args[0] {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => match self.column_lineage(e, scope) {
                Some(Lineage::Encrypted(c)) => {
                    if distinct {
                        self.require_deterministic(c, Operation::CountDistinct)?;
                        self.plan.searched.push(c);
                    }
                }
                Some(Lineage::Unknown) => {
                    return Err(self.op_error(Lineage::Unknown, Operation::Count))
                }
                Some(Lineage::Plain) => {}
                None => self.plain_expr(e, scope, Operation::Count)?,
            },
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {}
            FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(q)) => {
                let l = self.qualified_whole_row(q, scope);
                if l != Lineage::Plain {
                    return Err(self.op_error(l, Operation::Count));
                }
            }
            _ => self.fallback(f, scope, Operation::Count)?,
        }
        if let Some(filter) = &f.filter {
            self.predicate(filter, scope)?;
        }
        if let Some(over) = &f.over {
            self.fallback(over, scope, Operation::WindowClause)?;
        }
        Ok(())
    }

    /// An expression whose value must not involve an encrypted column (an operand of
    /// an operator, a function argument, ...). Subqueries are analysed; their results
    /// must be plain.
    pub(super) fn plain_expr(&mut self, e: &Expr, scope: &Scope<'_>, op: Operation) -> R<()> {
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
                let name = Operation::Operator(OperatorName::known(&bop.to_string()));
                self.plain_expr(left, scope, name)?;
                self.plain_expr(right, scope, name)
            }
            Expr::UnaryOp { expr, op: uop } => {
                let name = Operation::Operator(OperatorName::known(&uop.to_string()));
                self.plain_expr(expr, scope, name)
            }
            Expr::Cast { expr, .. } => self.plain_expr(expr, scope, Operation::Cast),
            Expr::Function(f) if is_count(f) => self.count(f, scope),
            Expr::Function(f) => self.plain_call(f, scope),
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.plain_case(
                operand.as_deref(),
                conditions,
                else_result.as_deref(),
                scope,
            ),
            Expr::Array(a) => {
                for x in &a.elem {
                    self.plain_expr(x, scope, Operation::Array)?;
                }
                Ok(())
            }
            Expr::Tuple(list) => {
                for x in list {
                    self.plain_expr(x, scope, Operation::RowConstructor)?;
                }
                Ok(())
            }
            other => self.fallback(other, scope, op),
        }
    }

    /// A function call whose result must be plain: no `rel.*` argument may carry a
    /// protected column, nor anything else inside it.
    fn plain_call(&mut self, f: &Function, scope: &Scope<'_>) -> R<()> {
        let name = function_op(f);
        if let FunctionArguments::List(list) = &f.args {
            for q in list.args.iter().filter_map(wildcard_arg) {
                let l = self.qualified_whole_row(q, scope);
                if l != Lineage::Plain {
                    return Err(self.op_error(l, name));
                }
            }
        }
        self.fallback(f, scope, name)
    }

    /// `CASE [operand] WHEN ... THEN ... ELSE ... END` whose result must be plain: the
    /// operand, the results and the conditions (predicates when there is no operand).
    fn plain_case(
        &mut self,
        operand: Option<&Expr>,
        conditions: &[sqlparser::ast::CaseWhen],
        else_result: Option<&Expr>,
        scope: &Scope<'_>,
    ) -> R<()> {
        if let Some(o) = operand {
            self.plain_expr(o, scope, Operation::Case)?;
        }
        for w in conditions {
            if operand.is_some() {
                self.plain_expr(&w.condition, scope, Operation::Case)?;
            } else {
                self.predicate(&w.condition, scope)?;
            }
            self.plain_expr(&w.result, scope, Operation::Case)?;
        }
        if let Some(e) = else_result {
            self.plain_expr(e, scope, Operation::Case)?;
        }
        Ok(())
    }

    /// For anything not modelled: every column reference inside (subqueries included,
    /// resolved conservatively against this scope) must be plain, and every subquery's
    /// result must be plain.
    pub(super) fn fallback<V: Visit>(
        &mut self,
        node: &V,
        scope: &Scope<'_>,
        op: Operation,
    ) -> R<()> {
        let Refs { refs, queries, .. } = refs_of(node);
        for x in &refs {
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

    pub(super) fn predicate(&mut self, e: &Expr, scope: &Scope<'_>) -> R<()> {
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
            } => {
                let op = if *op == BinaryOperator::Eq {
                    Operation::Equal
                } else {
                    Operation::NotEqual
                };
                self.equality(left, right, scope, op)
            }
            Expr::IsDistinctFrom(l, r) => self.equality(l, r, scope, Operation::IsDistinctFrom),
            Expr::IsNotDistinctFrom(l, r) => {
                self.equality(l, r, scope, Operation::IsNotDistinctFrom)
            }
            Expr::BinaryOp { left, op, right } => self.operator_predicate(left, op, right, scope),
            Expr::IsNull(x) | Expr::IsNotNull(x) => match self.column_lineage(x, scope) {
                Some(_) => Ok(()),
                None => self.plain_expr(x, scope, Operation::IsNull),
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
            } => self.any_predicate(left, compare_op, right, scope, false, BinaryOperator::Eq),
            Expr::AllOp {
                left,
                compare_op,
                right,
            } => self.any_predicate(left, compare_op, right, scope, true, BinaryOperator::NotEq),
            Expr::Like { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, Operation::Like)
            }
            Expr::ILike { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, Operation::ILike)
            }
            Expr::SimilarTo { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, Operation::SimilarTo)
            }
            Expr::RLike { expr, pattern, .. } => {
                self.reject_on_encrypted(&[expr, pattern], scope, Operation::RegexMatch)
            }
            Expr::Between {
                expr, low, high, ..
            } => self.reject_on_encrypted(&[expr, low, high], scope, Operation::Between),
            Expr::Exists { subquery, .. } => {
                self.query(subquery, Some(scope))?;
                Ok(())
            }
            _ => self.plain_condition(e, scope),
        }
    }

    /// Any other binary operator in a condition: neither side may be an encrypted
    /// column, and both must be plain.
    fn operator_predicate(
        &mut self,
        left: &Expr,
        op: &BinaryOperator,
        right: &Expr,
        scope: &Scope<'_>,
    ) -> R<()> {
        let name = Operation::Operator(OperatorName::known(&op.to_string()));
        for side in [left, right] {
            if let Some(l) = self.column_lineage(side, scope) {
                if l != Lineage::Plain {
                    return Err(self.op_error(l, name));
                }
            }
        }
        self.plain_expr(left, scope, name)?;
        self.plain_expr(right, scope, name)
    }

    /// Any other expression used as a condition: its value must be plain.
    fn plain_condition(&mut self, e: &Expr, scope: &Scope<'_>) -> R<()> {
        match self.value(e, scope)? {
            Lineage::Plain => Ok(()),
            other => Err(self.op_error(other, Operation::Condition)),
        }
    }

    pub(super) fn reject_on_encrypted(
        &mut self,
        parts: &[&Expr],
        scope: &Scope<'_>,
        op: Operation,
    ) -> R<()> {
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

    pub(super) fn equality(
        &mut self,
        l: &Expr,
        r: &Expr,
        scope: &Scope<'_>,
        op: Operation,
    ) -> R<()> {
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
    pub(super) fn compare_value(
        &mut self,
        c: ColumnRef,
        value: &Expr,
        scope: &Scope<'_>,
        op: Operation,
    ) -> R<()> {
        self.require_deterministic(c, op)?;
        self.plan.searched.push(c);
        self.bind_value(c, value, scope, op)
    }

    pub(super) fn in_predicate(&mut self, e: &Expr, target: &InTarget, scope: &Scope<'_>) -> R<()> {
        let lineage = self.column_lineage(e, scope);
        match (lineage, target) {
            (Some(Lineage::Encrypted(c)), InTarget::List(list)) => {
                self.require_deterministic(c, Operation::In)?;
                if list.len() > self.ctx.in_list_cap {
                    return Err(self.refuse(
                        Operation::In,
                        Reason::InListTooLong {
                            len: list.len(),
                            column: self.name(c),
                            cap: self.ctx.in_list_cap,
                        },
                    ));
                }
                self.plan.searched.push(c);
                for x in list {
                    self.bind_value(c, x, scope, Operation::In)?;
                }
                Ok(())
            }
            (Some(Lineage::Encrypted(c)), InTarget::Subquery(q)) => {
                let shape = self.query(q, Some(scope))?;
                self.equal_columns(
                    Lineage::Encrypted(c),
                    single_lineage(&shape),
                    Operation::InSubquery,
                )
            }
            (Some(l @ (Lineage::Encrypted(_) | Lineage::Unknown)), _) => {
                Err(self.op_error(l, Operation::In))
            }
            (_, InTarget::List(list)) => {
                self.plain_expr(e, scope, Operation::In)?;
                for x in list {
                    self.plain_expr(x, scope, Operation::In)?;
                }
                Ok(())
            }
            (_, InTarget::Subquery(q)) => {
                self.plain_expr(e, scope, Operation::In)?;
                let shape = self.query(q, Some(scope))?;
                match single_lineage(&shape) {
                    Lineage::Plain => Ok(()),
                    other => Err(self.op_error(other, Operation::InSubquery)),
                }
            }
            (_, other) => {
                self.plain_expr(e, scope, Operation::In)?;
                if let InTarget::Unnest(x) = other {
                    self.plain_expr(x, scope, Operation::In)?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn any_predicate(
        &mut self,
        left: &Expr,
        cmp: &BinaryOperator,
        right: &Expr,
        scope: &Scope<'_>,
        all: bool,
        allowed: BinaryOperator,
    ) -> R<()> {
        let cmp_name = OperatorName::known(&cmp.to_string());
        let op = if all {
            Operation::All(cmp_name)
        } else {
            Operation::Any(cmp_name)
        };
        match self.column_lineage(left, scope) {
            Some(Lineage::Encrypted(c)) => {
                if *cmp != allowed {
                    return Err(self.op_error(Lineage::Encrypted(c), op));
                }
                self.require_deterministic(c, op)?;
                self.plan.searched.push(c);
                match strip_nested(right) {
                    Expr::Value(v) => match self.value_operand(v, false)? {
                        Operand::Param(n) => {
                            self.bound_param(right);
                            self.param(c, n, true)
                        }
                        Operand::Null => Ok(()),
                        _ => Err(self.any_error(c, op)),
                    },
                    Expr::Array(a) => {
                        if a.elem.len() > self.ctx.in_list_cap {
                            return Err(self.refuse(
                                op,
                                Reason::ArrayTooLong {
                                    len: a.elem.len(),
                                    column: self.name(c),
                                    cap: self.ctx.in_list_cap,
                                },
                            ));
                        }
                        for x in &a.elem {
                            self.bind_value(c, x, scope, op)?;
                        }
                        Ok(())
                    }
                    Expr::Subquery(q) => {
                        let shape = self.query(q, Some(scope))?;
                        self.equal_columns(Lineage::Encrypted(c), single_lineage(&shape), op)
                    }
                    _ => Err(self.any_error(c, op)),
                }
            }
            Some(Lineage::Unknown) => Err(self.op_error(Lineage::Unknown, op)),
            _ => {
                self.plain_expr(left, scope, op)?;
                match strip_nested(right) {
                    Expr::Subquery(q) => {
                        let shape = self.query(q, Some(scope))?;
                        match single_lineage(&shape) {
                            Lineage::Plain => Ok(()),
                            other => Err(self.op_error(other, op)),
                        }
                    }
                    other => self.plain_expr(other, scope, op),
                }
            }
        }
    }

    pub(super) fn any_error(&self, c: ColumnRef, op: Operation) -> SqlError {
        self.refuse(op, Reason::AnyNeedsArray(self.name(c)))
    }
}
