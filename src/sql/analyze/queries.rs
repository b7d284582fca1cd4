//! Queries: CTEs, set operations, VALUES and TABLE, SELECT clauses (projection,
//! GROUP BY, DISTINCT, ORDER BY), the lineage of result columns, the outermost select
//! list's items for the projection rewrite, and MERGE.

use super::*;

impl Analyzer<'_> {
    pub(super) fn query(&mut self, q: &Query, outer: Option<&Scope<'_>>) -> R<ResultShape> {
        let mark = self.ctes.len();
        self.rows.depth += 1;
        let result = self.query_inner(q, outer);
        self.rows.depth -= 1;
        self.ctes.truncate(mark);
        result
    }

    pub(super) fn query_inner(&mut self, q: &Query, outer: Option<&Scope<'_>>) -> R<ResultShape> {
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
                            return Err(Fixed::RecursiveCteMixed.into());
                        }
                    }
                }
                self.ctes.push((name, cols));
            }
        }
        let shape = match &*q.body {
            SetExpr::Select(s) => {
                // The statement's own SELECT (not a CTE, subquery or set operation).
                self.rows.top_pending = self.rows.depth == 1;
                self.select(s, outer, q.order_by.as_ref())?
            }
            other => {
                let shape = self.set_expr(other, outer)?;
                if let Some(ob) = &q.order_by {
                    self.order_by_outputs(ob, &shape, None)?;
                }
                shape
            }
        };
        if let Some(l) = &q.limit_clause {
            self.fallback(l, &Scope::default(), Operation::LimitOffset)?;
        }
        if let Some(f) = &q.fetch {
            self.fallback(f, &Scope::default(), Operation::Fetch)?;
        }
        Ok(shape)
    }

    pub(super) fn set_expr(&mut self, body: &SetExpr, outer: Option<&Scope<'_>>) -> R<ResultShape> {
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
                let (opname, dedupe) = set_operation(op, set_quantifier);
                self.combine(l, r, opname, dedupe)
            }
            SetExpr::Values(values) => self.values(values, outer),
            SetExpr::Insert(Statement::Insert(ins)) => Ok(self.insert(ins)?.unwrap_or_default()),
            SetExpr::Update(Statement::Update(u)) => Ok(self.update(u)?.unwrap_or_default()),
            SetExpr::Delete(Statement::Delete(d)) => Ok(self.delete(d)?.unwrap_or_default()),
            SetExpr::Table(t) => self.table_command(t, outer),
            _ => Err(Fixed::QueryForm.into()),
        }
    }

    /// `VALUES (...), (...)`: each row's values, the rows combined column by column
    /// like the branches of a UNION ALL.
    fn values(
        &mut self,
        values: &sqlparser::ast::Values,
        outer: Option<&Scope<'_>>,
    ) -> R<ResultShape> {
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
                        Operation::SetOperation(SetOp::Values),
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

    /// `TABLE name`: read as `SELECT * FROM name`.
    fn table_command(
        &mut self,
        t: &sqlparser::ast::Table,
        outer: Option<&Scope<'_>>,
    ) -> R<ResultShape> {
        let name = t
            .table_name
            .as_ref()
            .ok_or_else(|| SqlError::from(Fixed::TableWithoutName))?;
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

    /// Combines the branches of UNION/INTERSECT/EXCEPT (or VALUES rows) column by column.
    pub(super) fn combine(
        &mut self,
        l: ResultShape,
        r: ResultShape,
        op: Operation,
        dedupe: bool,
    ) -> R<ResultShape> {
        if l.plain_tail != r.plain_tail && (l.has_encrypted() || r.has_encrypted()) {
            return Err(self.refuse(op, Reason::SetOperationStar));
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
                    return Err(self.refuse(op, Reason::SetOperationMixed(self.name(x))))
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

    pub(super) fn select(
        &mut self,
        s: &Select,
        outer: Option<&Scope<'_>>,
        order_by: Option<&OrderBy>,
    ) -> R<ResultShape> {
        let top = std::mem::take(&mut self.rows.top_pending);
        let mut scope = match outer {
            Some(p) => Scope::child(p),
            None => Scope::default(),
        };
        for twj in &s.from {
            self.table_with_joins(twj, &mut scope)?;
        }
        let merged = self.merged_star(s, &scope)?;
        let saved = std::mem::replace(&mut self.rows.merged_star, merged);
        let shape = self.projection(&s.projection, &scope);
        self.rows.merged_star = saved;
        let shape = shape?;
        if top {
            self.record_projections(&s.projection, &scope, &s.from);
        }
        if s.into.is_some() && shape.has_encrypted() {
            return Err(Fixed::SelectInto.into());
        }
        if let Some(w) = &s.selection {
            self.predicate(w, &scope)?;
        }
        self.group_by(&s.group_by, &scope, &shape)?;
        if let Some(h) = &s.having {
            self.predicate(h, &scope)?;
        }
        self.distinct(s.distinct.as_ref(), &scope, &shape)?;
        self.other_select_clauses(s, &scope)?;
        if let Some(ob) = order_by {
            self.order_by_outputs(ob, &shape, Some(&scope))?;
        }
        Ok(shape)
    }

    /// What `*` expands to over a join USING / NATURAL, which merges the join columns:
    /// expanded exactly when the join involves protected columns (refused when that
    /// cannot be done), None otherwise (the ordinary expansion).
    fn merged_star(&self, s: &Select, scope: &Scope<'_>) -> R<Option<Vec<(String, Lineage)>>> {
        if from_merges(&s.from)
            && s.projection
                .iter()
                .any(|i| matches!(i, SelectItem::Wildcard(_)))
            && scope.relations.iter().any(|r| {
                r.may_hold_encrypted(self.policy()) || !r.is_plain_when_unknown(self.policy())
            })
        {
            let cols = self
                .star_columns(&s.from, &scope.relations)
                .ok_or_else(|| SqlError::from(Fixed::StarOverMergedJoin))?;
            Ok(Some(cols.into_iter().map(|(n, l, _)| (n, l)).collect()))
        } else {
            Ok(None)
        }
    }

    /// GROUP BY: each grouping expression (or, for GROUP BY ALL, each output column)
    /// must be plain or deterministically encrypted.
    fn group_by(&mut self, g: &GroupByExpr, scope: &Scope<'_>, shape: &ResultShape) -> R<()> {
        match g {
            GroupByExpr::Expressions(exprs, _) => {
                for e in exprs {
                    self.grouping(e, scope, shape, Operation::GroupBy)?;
                }
            }
            GroupByExpr::All(_) => {
                for c in shape.columns.clone() {
                    self.group_lineage(c.lineage, Operation::GroupBy)?;
                }
            }
        }
        Ok(())
    }

    /// DISTINCT (over every output column) and DISTINCT ON (over its expressions):
    /// like GROUP BY.
    fn distinct(&mut self, d: Option<&Distinct>, scope: &Scope<'_>, shape: &ResultShape) -> R<()> {
        match d {
            Some(Distinct::Distinct) => {
                for c in shape.columns.clone() {
                    self.group_lineage(c.lineage, Operation::Distinct)?;
                }
            }
            Some(Distinct::On(exprs)) => {
                for e in exprs {
                    self.grouping(e, scope, shape, Operation::DistinctOn)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// WINDOW definitions and the clauses of other dialects: nothing in them may touch
    /// a protected column.
    fn other_select_clauses(&mut self, s: &Select, scope: &Scope<'_>) -> R<()> {
        if !s.named_window.is_empty() {
            self.fallback(&s.named_window, scope, Operation::WindowDefinition)?;
        }
        self.fallback(&s.top, scope, Operation::DialectClause("TOP"))?;
        self.fallback(
            &s.lateral_views,
            scope,
            Operation::DialectClause("LATERAL VIEW"),
        )?;
        self.fallback(&s.prewhere, scope, Operation::DialectClause("PREWHERE"))?;
        self.fallback(&s.connect_by, scope, Operation::DialectClause("CONNECT BY"))?;
        self.fallback(&s.cluster_by, scope, Operation::DialectClause("CLUSTER BY"))?;
        self.fallback(
            &s.distribute_by,
            scope,
            Operation::DialectClause("DISTRIBUTE BY"),
        )?;
        self.fallback(&s.sort_by, scope, Operation::DialectClause("SORT BY"))?;
        self.fallback(&s.qualify, scope, Operation::DialectClause("QUALIFY"))?;
        Ok(())
    }

    pub(super) fn group_lineage(&mut self, l: Lineage, op: Operation) -> R<()> {
        match l {
            Lineage::Plain => Ok(()),
            Lineage::Encrypted(c) => {
                self.require_deterministic(c, op)?;
                self.plan.searched.push(c);
                Ok(())
            }
            Lineage::Unknown => Err(self.op_error(Lineage::Unknown, op)),
        }
    }

    pub(super) fn output_ref(e: &Expr, shape: &ResultShape) -> Option<Lineage> {
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

    pub(super) fn grouping(
        &mut self,
        e: &Expr,
        scope: &Scope<'_>,
        shape: &ResultShape,
        op: Operation,
    ) -> R<()> {
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

    pub(super) fn order_by_outputs(
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
                    return Err(
                        self.refuse(Operation::OrderBy, Reason::OrderByEncrypted(self.name(c)))
                    )
                }
                Some(Lineage::Unknown) => {
                    return Err(self.op_error(Lineage::Unknown, Operation::OrderBy))
                }
                Some(Lineage::Plain) => {}
                None => match scope {
                    Some(s) => self.plain_expr(e, s, Operation::OrderBy)?,
                    None => self.plain_expr(e, &Scope::default(), Operation::OrderBy)?,
                },
            }
        }
        Ok(())
    }

    pub(super) fn wildcard(
        &mut self,
        relations: &[Relation],
        shape: &mut ResultShape,
    ) -> R<ResultShape> {
        for r in relations {
            match r.expand(self.policy()) {
                Some(cols) => {
                    for (name, lineage) in cols {
                        if shape.plain_tail && lineage != Lineage::Plain {
                            return Err(Fixed::StarAfterUnknownColumns.into());
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
                        RelColumns::Table { table, .. } => self.rel(table),
                        _ => None,
                    };
                    return Err(Reason::StarOverUnknown(what).into());
                }
            }
        }
        Ok(shape.clone())
    }

    pub(super) fn projection(&mut self, items: &[SelectItem], scope: &Scope<'_>) -> R<ResultShape> {
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
                    match self.rows.merged_star.clone() {
                        Some(cols) => {
                            for (name, lineage) in cols {
                                if shape.plain_tail && lineage != Lineage::Plain {
                                    return Err(Fixed::StarAfterUnknownColumns.into());
                                }
                                if !shape.plain_tail {
                                    shape.columns.push(OutputColumn {
                                        name: Some(name),
                                        lineage,
                                    });
                                }
                            }
                        }
                        None => shape = self.wildcard(&scope.relations, &mut shape)?,
                    }
                    continue;
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let rel = match kind {
                        SelectItemQualifiedWildcardKind::ObjectName(n) => {
                            let parts = object_name_parts(n)
                                .ok_or_else(|| SqlError::from(Fixed::QualifiedStarForm))?;
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
                                return Err(Fixed::UnresolvedQualifiedStar.into());
                            }
                            shape.plain_tail = true;
                        }
                    }
                    continue;
                }
            };
            if shape.plain_tail {
                if lineage != Lineage::Plain {
                    return Err(Fixed::ProtectedAfterUnknownStar.into());
                }
                continue;
            }
            shape.columns.push(OutputColumn { name, lineage });
        }
        if self.plan.touches_policy && shape.columns.iter().any(|c| c.lineage == Lineage::Unknown) {
            return Err(Fixed::UnresolvedResultColumn.into());
        }
        Ok(shape)
    }
}

/// Whether a FROM list has a join whose columns PostgreSQL merges (USING, NATURAL).
fn from_merges(from: &[TableWithJoins]) -> bool {
    fn factor(tf: &TableFactor) -> bool {
        match tf {
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => twj(table_with_joins),
            _ => false,
        }
    }
    fn twj(t: &TableWithJoins) -> bool {
        factor(&t.relation)
            || t.joins.iter().any(|j| {
                factor(&j.relation)
                    || matches!(
                        join_constraint(&j.join_operator),
                        Some(Some(
                            JoinConstraint::Using(_)
                                | JoinConstraint::UsingAlias(..)
                                | JoinConstraint::Natural
                        ))
                    )
            })
    }
    from.iter().any(twj)
}

/// The operation named in a refusal for a set operation, and whether it removes
/// duplicates (every form but UNION ALL).
fn set_operation(op: &SetOperator, q: &SetQuantifier) -> (Operation, bool) {
    let opname = match op {
        SetOperator::Union => Operation::SetOperation(SetOp::Union),
        SetOperator::Intersect => Operation::SetOperation(SetOp::Intersect),
        SetOperator::Except => Operation::SetOperation(SetOp::Except),
        _ => Operation::SetOperation(SetOp::Other),
    };
    let dedupe = !matches!(op, SetOperator::Union)
        || !matches!(q, SetQuantifier::All | SetQuantifier::AllByName);
    (opname, dedupe)
}

/// SQL for an identifier: always double-quoted, quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Analyzer<'_> {
    /// The columns `*` expands to over this FROM list, in PostgreSQL's output order
    /// (USING / NATURAL join columns merged first), each with the index of its relation
    /// in `rels` (None for a merged column). None when unsure (unknown column lists, a
    /// join form or nesting this does not model).
    pub(super) fn star_columns(
        &self,
        from: &[TableWithJoins],
        rels: &[Relation],
    ) -> Option<Vec<(String, Lineage, Option<usize>)>> {
        type Cols = Vec<(String, Lineage, Option<usize>)>;
        let policy = self.policy();
        let mut k = 0usize;
        let mut next = |tf: &TableFactor| -> Option<Cols> {
            if let TableFactor::NestedJoin { alias: None, .. } = tf {
                return None;
            }
            let r = rels.get(k)?;
            let i = k;
            k += 1;
            Some(
                r.expand(policy)?
                    .into_iter()
                    .map(|(n, l)| (n, l, Some(i)))
                    .collect(),
            )
        };
        let mut out: Cols = Vec::new();
        for t in from {
            let mut cols = next(&t.relation)?;
            for j in &t.joins {
                let right = next(&j.relation)?;
                let constraint = join_constraint(&j.join_operator)?;
                let names: Vec<String> = match constraint {
                    Some(JoinConstraint::Using(list)) => {
                        list.iter().map(last_ident).collect::<Option<_>>()?
                    }
                    Some(JoinConstraint::UsingAlias(..)) => return None,
                    Some(JoinConstraint::Natural) => cols
                        .iter()
                        .filter(|(n, _, _)| right.iter().any(|(m, _, _)| m == n))
                        .map(|(n, _, _)| n.clone())
                        .collect(),
                    _ => {
                        cols.extend(right);
                        continue;
                    }
                };
                let from_right = matches!(
                    j.join_operator,
                    JoinOperator::Right(_) | JoinOperator::RightOuter(_)
                );
                let mut merged: Cols = Vec::new();
                for n in &names {
                    let once = |side: &Cols| {
                        let mut hits = side.iter().filter(|(m, _, _)| m == n);
                        let first = hits.next()?.1;
                        hits.next().is_none().then_some(first)
                    };
                    let (l, r) = (once(&cols)?, once(&right)?);
                    merged.push((n.clone(), if from_right { r } else { l }, None));
                }
                merged.extend(cols.into_iter().filter(|(n, _, _)| !names.contains(n)));
                merged.extend(right.into_iter().filter(|(n, _, _)| !names.contains(n)));
                cols = merged;
            }
            out.extend(cols);
        }
        (k == rels.len()).then_some(out)
    }

    /// Records the outermost select list's items that read a protected column, for
    /// the `null`-view rewrite ([`Projection`]). Items it is unsure about are left out
    /// (they are then sent unchanged).
    pub(super) fn record_projections(
        &mut self,
        items: &[SelectItem],
        scope: &Scope<'_>,
        from: &[TableWithJoins],
    ) {
        let stmt_text = self.sql.get(self.base..).unwrap_or_default();
        let bounds: Vec<(usize, usize)> = Lexer::new(stmt_text)
            .filter(|t| !matches!(t.kind, TokKind::Space | TokKind::Comment))
            .map(|t| (self.base + t.span.start, self.base + t.span.end))
            .collect();
        for item in items {
            let Some((start_pos, end_pos)) = self.item_tokens(item, &bounds) else {
                continue;
            };
            let bare = |e: &Expr| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }
                    if bare(e) =>
                {
                    let Some(Lineage::Encrypted(c)) = self.column_lineage(e, scope) else {
                        continue;
                    };
                    let output_name = match item {
                        SelectItem::ExprWithAlias { alias, .. } => normalize(alias),
                        _ => output_name(e),
                    };
                    self.plan.projections.push(Projection::Column {
                        start: start_pos,
                        end: end_pos,
                        column: c,
                        output_name,
                    });
                }
                SelectItem::Wildcard(opts) if plain_wildcard(opts) => {
                    let Some(cols) = self.star_columns(from, &scope.relations) else {
                        continue;
                    };
                    self.push_star(
                        start_pos,
                        end_pos,
                        None,
                        cols.into_iter().map(|(n, l, _)| (n, l)),
                    );
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    opts,
                ) if plain_wildcard(opts) => {
                    self.record_qualified_star(n, (start_pos, end_pos), scope);
                }
                _ => {}
            }
        }
    }

    /// Where a select-list item starts and ends, when both ends are token boundaries of
    /// the statement (only whole tokens are replaced); None when unsure.
    fn item_tokens(
        &self,
        item: &SelectItem,
        bounds: &[(usize, usize)],
    ) -> Option<(SqlPos, SqlPos)> {
        use sqlparser::ast::Spanned;
        let span = item.span();
        let (start, end) = (self.abs(span.start)?, self.abs(span.end)?);
        if start >= end
            || !bounds.iter().any(|b| b.0 == start)
            || !bounds.iter().any(|b| b.1 == end)
            || self.sql.get(start..end).is_none()
        {
            return None;
        }
        Some((self.pos(start), self.pos(end)))
    }

    /// `rel.*` in the outermost select list: its columns, when the relation is known.
    fn record_qualified_star(
        &mut self,
        n: &ObjectName,
        (start, end): (SqlPos, SqlPos),
        scope: &Scope<'_>,
    ) {
        let Some(parts) = object_name_parts(n) else {
            return;
        };
        let rel = match parts.as_slice() {
            [r] => scope.relation(None, r),
            [s, r] => scope.relation(Some(s), r),
            _ => None,
        };
        let Some(cols) = rel.and_then(|r| r.expand(self.policy())) else {
            return;
        };
        let q = parts
            .iter()
            .map(|p| quote_ident(p))
            .collect::<Vec<_>>()
            .join(".");
        self.push_star(start, end, Some(q), cols.into_iter());
    }

    fn push_star(
        &mut self,
        start: SqlPos,
        end: SqlPos,
        qualifier: Option<String>,
        cols: impl Iterator<Item = (String, Lineage)>,
    ) {
        let mut columns: Vec<(String, Option<ColumnRef>)> = Vec::new();
        for (n, l) in cols {
            let c = match l {
                Lineage::Plain => None,
                Lineage::Encrypted(c) => Some(c),
                Lineage::Unknown => return,
            };
            // A duplicated or empty name could not be referenced unambiguously.
            if n.is_empty() || columns.iter().any(|(m, _)| *m == n) {
                return;
            }
            columns.push((n, c));
        }
        if columns.iter().all(|(_, c)| c.is_none()) {
            return;
        }
        self.plan.projections.push(Projection::Star {
            start,
            end,
            qualifier,
            columns,
        });
    }
}

/// A `*` without EXCLUDE / REPLACE / RENAME options (not PostgreSQL).
fn plain_wildcard(o: &sqlparser::ast::WildcardAdditionalOptions) -> bool {
    o.opt_ilike.is_none()
        && o.opt_exclude.is_none()
        && o.opt_except.is_none()
        && o.opt_replace.is_none()
        && o.opt_rename.is_none()
        && o.opt_alias.is_none()
}

impl Analyzer<'_> {
    /// `MERGE INTO target USING source ON ... WHEN ...`: the join condition and clause
    /// predicates as predicates, INSERT values and UPDATE assignments as writes to the
    /// target's columns (encrypted like INSERT and UPDATE).
    pub(super) fn merge(&mut self, m: &sqlparser::ast::Merge) -> R<()> {
        use sqlparser::ast::{MergeAction, MergeInsertKind, MergeUpdateKind};
        let TableFactor::Table { name, alias, .. } = &m.table else {
            return Err(Fixed::MergeTargetKind.into());
        };
        let (table, rel) = self.target_relation(name, alias.as_ref().map(|a| &a.name))?;
        if m.output.is_some() {
            return Err(Fixed::MergeOutput.into());
        }
        let mut scope = Scope {
            relations: vec![rel],
            parent: None,
        };
        self.table_factor(&m.source, &mut scope)?;
        self.predicate(&m.on, &scope)?;
        for clause in &m.clauses {
            if let Some(p) = &clause.predicate {
                self.predicate(p, &scope)?;
            }
            match &clause.action {
                MergeAction::Insert(ins) => {
                    let names: Option<Vec<String>> = if ins.columns.is_empty() {
                        self.ctx.schema.table_columns(&table)
                    } else {
                        ins.columns.iter().map(last_ident).collect()
                    };
                    let targets: Option<Vec<Option<ColumnRef>>> =
                        names.map(|v| v.iter().map(|n| self.policy().find(&table, n)).collect());
                    let protected = self.policy().is_protected_table(&table);
                    match (&ins.kind, targets) {
                        (MergeInsertKind::Values(values), Some(targets)) => {
                            for row in &values.rows {
                                for (i, e) in row.content.iter().enumerate() {
                                    match targets.get(i).copied().flatten() {
                                        Some(c) => {
                                            self.bind_value(c, e, &scope, Operation::MergeInsert)?
                                        }
                                        None => {
                                            self.plain_expr(e, &scope, Operation::MergeInsertValue)?
                                        }
                                    }
                                }
                            }
                        }
                        (MergeInsertKind::Values(values), None) if !protected => {
                            self.fallback(values, &scope, Operation::MergeInsertValue)?;
                        }
                        _ if !protected => {}
                        _ => {
                            return Err(self.refuse(
                                Operation::MergeInsert,
                                Reason::MergeInsertNeedsValues(self.rel(&table)),
                            ))
                        }
                    }
                    if let Some(p) = &ins.insert_predicate {
                        self.predicate(p, &scope)?;
                    }
                }
                MergeAction::Update(u) => {
                    match &u.kind {
                        MergeUpdateKind::Set(assignments) => {
                            for a in assignments {
                                self.assignment(&table, a, &scope)?;
                            }
                        }
                        _ => return Err(Fixed::MergeUpdateForm.into()),
                    }
                    for p in [&u.update_predicate, &u.delete_predicate]
                        .into_iter()
                        .flatten()
                    {
                        self.predicate(p, &scope)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
