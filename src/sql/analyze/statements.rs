//! Statements: INSERT, UPDATE, DELETE, COPY, PREPARE, EXECUTE, EXPLAIN, and the
//! refusal of statement kinds that cannot be analysed.

use super::*;

impl Analyzer<'_> {
    pub(super) fn statement(&mut self, stmt: &Statement, text: &str) -> R<()> {
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
                self.prepare(name, data_types, statement, text)?;
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
                self.execute(name, parameters)?;
            }
            Statement::Explain { statement, .. } => {
                self.plan.kind = StatementKind::Explain;
                self.statement(statement, text)?;
                self.plan.kind = StatementKind::Explain;
                self.plan.result = Some(explain_shape());
            }
            Statement::Merge(m) => {
                // A write without a result, like UPDATE.
                self.plan.kind = StatementKind::Update;
                self.merge(m)?;
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
                // They move no values; forwarding them is safe (their relation names
                // are still pinned by the pass over uncovered references).
                self.passthrough = true;
            }
            _ => self.unanalysed(text)?,
        }
        Ok(())
    }

    /// `PREPARE name [(types)] AS statement`: analyses the inner statement into its own
    /// plan, refuses a declared type on a parameter bound to an encrypted column, and
    /// carries the inner plan's literals, edits and opaque calls to the PREPARE itself.
    fn prepare(
        &mut self,
        name: &Ident,
        data_types: &[sqlparser::ast::DataType],
        statement: &Statement,
        text: &str,
    ) -> R<()> {
        let fresh = StatementPlan::new(StatementKind::Other, self.plan.start, self.plan.end);
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
                return Err(Reason::PrepareTypedParameter {
                    index: p.index,
                    column: self.name(p.column),
                }
                .into());
            }
        }
        self.plan.touches_policy = inner.touches_policy;
        self.plan.literals.append(&mut inner.literals);
        // Qualification edits apply to the PREPARE text itself.
        self.plan.edits.append(&mut inner.edits);
        for o in &inner.opaque {
            self.opaque(o.clone());
        }
        self.plan.prepare = Some(PreparePlan {
            name: normalize(name),
            statement: Box::new(inner),
        });
        Ok(())
    }

    /// `EXECUTE name(args)`: each argument as a value EXECUTE can encrypt, or an
    /// expression that must not carry a protected column's value.
    fn execute(&mut self, name: &ObjectName, parameters: &[Expr]) -> R<()> {
        let name = last_ident(name).ok_or_else(|| SqlError::from(Fixed::ExecuteForm))?;
        let mut args = Vec::new();
        for p in parameters {
            args.push(match self.operand(p)? {
                Operand::Null => ExecuteArg::Null,
                Operand::Param(n) => ExecuteArg::Param(n),
                Operand::Literal { start, end, value } => ExecuteArg::Literal { start, end, value },
                Operand::Default | Operand::Other => {
                    // The argument must not smuggle a protected column's value.
                    self.plain_expr(p, &Scope::default(), Operation::ExecuteArgument)?;
                    ExecuteArg::Expression
                }
            });
        }
        self.plan.execute = Some(ExecutePlan { name, args });
        Ok(())
    }

    /// A statement kind not analysed: refused when it names a reaching relation or
    /// column (function calls were classified by the pre-pass), forwarded otherwise.
    fn unanalysed(&self, text: &str) -> R<()> {
        let relation = |k: NameKind| matches!(k, NameKind::Relation | NameKind::Column);
        if let Some(m) = first_mention_with(text, self.ctx.names, false, relation) {
            return Err(Reason::UnanalysedStatement {
                words: first_words(text),
                mention: RMention::of(self.ctx.names, &m),
            }
            .into());
        }
        Ok(())
    }

    pub(super) fn target_relation(
        &mut self,
        name: &ObjectName,
        alias: Option<&Ident>,
    ) -> R<(TableName, Relation)> {
        self.writing = true;
        let table = self.resolve_table(name);
        self.writing = false;
        let table = table?;
        if self
            .ctx
            .schema
            .view_columns(&table)
            .is_some_and(|v| v.iter().any(|(_, l)| *l != Lineage::Plain))
        {
            return Err(Reason::WriteThroughView(self.rel(&table)).into());
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

    pub(super) fn insert(&mut self, ins: &Insert) -> R<Option<ResultShape>> {
        let TableObject::TableName(name) = &ins.table else {
            return Err(Fixed::InsertIntoTableFunction.into());
        };
        let alias = ins.table_alias.as_ref().map(|a| &a.alias);
        let (table, rel) = self.target_relation(name, alias)?;
        let targets = self.insert_targets(ins, &table)?;
        if !ins.assignments.is_empty() {
            return Err(Fixed::InsertSet.into());
        }
        if let Some(src) = &ins.source {
            self.insert_source(src, &table, targets.as_deref())?;
        }
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            self.on_conflict(oc, &table, &rel)?;
        } else if ins.on.is_some() {
            return Err(Fixed::OnDuplicateKey.into());
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

    /// The policy column (or None: plain) of each INSERT target column, the table's
    /// own list when none is written; None when unknown, refused on a protected table.
    fn insert_targets(&self, ins: &Insert, table: &TableName) -> R<Option<Vec<Option<ColumnRef>>>> {
        let protected = self.policy().is_protected_table(table);
        let target_names: Option<Vec<String>> = if ins.columns.is_empty() {
            self.ctx.schema.table_columns(table)
        } else {
            Some(
                ins.columns
                    .iter()
                    .map(|c| last_ident(c).ok_or_else(|| SqlError::from(Fixed::InsertColumnForm)))
                    .collect::<R<_>>()?,
            )
        };
        let targets: Option<Vec<Option<ColumnRef>>> = target_names
            .as_ref()
            .map(|v| v.iter().map(|n| self.policy().find(table, n)).collect());
        if targets.is_none() && protected {
            return Err(self.refuse(
                Operation::Insert,
                Reason::InsertNeedsColumns(self.rel(table)),
            ));
        }
        Ok(targets)
    }

    /// The rows an INSERT stores: VALUES bound column by column, or a query whose
    /// result columns' lineage must fit the target columns.
    fn insert_source(
        &mut self,
        src: &Query,
        table: &TableName,
        targets: Option<&[Option<ColumnRef>]>,
    ) -> R<()> {
        let target_at = |i: usize| targets.and_then(|t| t.get(i).copied().flatten());
        match &*src.body {
            SetExpr::Values(values) if src.with.is_none() && src.order_by.is_none() => {
                for row in &values.rows {
                    for (i, e) in row.content.iter().enumerate() {
                        match target_at(i) {
                            Some(c) => {
                                self.bind_value(c, e, &Scope::default(), Operation::Insert)?
                            }
                            None => {
                                self.plain_expr(e, &Scope::default(), Operation::InsertValue)?
                            }
                        }
                    }
                }
            }
            _ => {
                let shape = self.query(src, None)?;
                for (i, out) in shape.columns.iter().enumerate() {
                    self.store_lineage(target_at(i), out.lineage, table, Operation::InsertSelect)?;
                }
                if shape.plain_tail {
                    let n = shape.columns.len();
                    if targets.is_some_and(|t| t.iter().skip(n).any(Option::is_some)) {
                        return Err(self.refuse(
                            Operation::InsertSelect,
                            Reason::InsertSelectStar(self.rel(table)),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `ON CONFLICT (target) [DO UPDATE SET ... WHERE ...]`: the conflict target over
    /// the table, the assignments and condition over it and `excluded`.
    fn on_conflict(
        &mut self,
        oc: &sqlparser::ast::OnConflict,
        table: &TableName,
        rel: &Relation,
    ) -> R<()> {
        let target_scope = Scope {
            relations: vec![rel.clone()],
            parent: None,
        };
        self.fallback(
            &oc.conflict_target,
            &target_scope,
            Operation::OnConflictTarget,
        )?;
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
                self.assignment(table, a, &scope)?;
            }
            if let Some(sel) = &du.selection {
                self.predicate(sel, &scope)?;
            }
        }
        Ok(())
    }

    /// Storing a value of lineage `src` into column `target` (None: a plain column).
    pub(super) fn store_lineage(
        &mut self,
        target: Option<ColumnRef>,
        src: Lineage,
        table: &TableName,
        op: Operation,
    ) -> R<()> {
        match (target, src) {
            (None, Lineage::Plain) => Ok(()),
            (Some(c), Lineage::Encrypted(s)) if self.same_domain(c, s) => {
                self.encrypted(c);
                Ok(())
            }
            (Some(c), _) => Err(self.refuse(op, Reason::OtherOriginIntoEncrypted(self.name(c)))),
            (None, Lineage::Encrypted(s)) => Err(self.refuse(
                op,
                Reason::CiphertextIntoPlain {
                    column: self.name(s),
                    table: self.rel(table),
                },
            )),
            (None, Lineage::Unknown) => {
                Err(self.refuse(op, Reason::UnresolvedSource(self.rel(table))))
            }
        }
    }

    pub(super) fn same_domain(&self, a: ColumnRef, b: ColumnRef) -> bool {
        let (pa, pb) = (self.policy().column(a), self.policy().column(b));
        a == b
            || (pa.crypto_domain() == pb.crypto_domain()
                && pa.logical_type == pb.logical_type
                && pa.encryption == pb.encryption)
    }

    pub(super) fn assignment(
        &mut self,
        table: &TableName,
        a: &Assignment,
        scope: &Scope<'_>,
    ) -> R<()> {
        match &a.target {
            AssignmentTarget::ColumnName(name) => {
                let col = last_ident(name).ok_or_else(|| SqlError::from(Fixed::SetTargetForm))?;
                match self.policy().find(table, &col) {
                    Some(c) => self.bind_value(c, &a.value, scope, Operation::UpdateSet),
                    None => self.plain_expr(&a.value, scope, Operation::PlainAssignment),
                }
            }
            AssignmentTarget::Tuple(cols) => {
                let targets = cols
                    .iter()
                    .map(|name| {
                        last_ident(name)
                            .map(|col| self.policy().find(table, &col))
                            .ok_or_else(|| SqlError::from(Fixed::SetTargetForm))
                    })
                    .collect::<R<Vec<_>>>()?;
                self.tuple_assignment(table, &targets, &a.value, scope)
            }
        }
    }

    /// A value stored into (or compared with) encrypted column `c`.
    pub(super) fn bind_value(
        &mut self,
        c: ColumnRef,
        e: &Expr,
        scope: &Scope<'_>,
        op: Operation,
    ) -> R<()> {
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
            Operand::Param(n) => {
                self.bound_param(e);
                self.param(c, n, false)
            }
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
                    _ => Err(self.refuse(op, Reason::ExpressionIntoEncrypted(self.name(c)))),
                }
            }
        }
    }

    pub(super) fn param(&mut self, c: ColumnRef, index: u16, array: bool) -> R<()> {
        let logical_type = self.policy().column(c).logical_type;
        if let Some(prev) = self.plan.params.iter().find(|p| p.index == index) {
            if self.same_domain(prev.column, c) && prev.array == array {
                return Ok(());
            }
            return Err(Reason::ParameterTwoKeys {
                index,
                first: self.name(prev.column),
                second: self.name(c),
            }
            .into());
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

    pub(super) fn update(&mut self, u: &Update) -> R<Option<ResultShape>> {
        let TableFactor::Table { name, alias, .. } = &u.table.relation else {
            return Err(Fixed::UpdateTargetKind.into());
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

    pub(super) fn delete(&mut self, d: &Delete) -> R<Option<ResultShape>> {
        let from = match &d.from {
            FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
        };
        let mut scope = Scope::default();
        for twj in from {
            self.writing = true;
            let done = self.table_factor(&twj.relation, &mut scope);
            self.writing = false;
            done?;
            for j in &twj.joins {
                self.join(j, &mut scope)?;
            }
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

    pub(super) fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> R<()> {
        let (mut plan, binary) = copy_plan(to, options, legacy);
        let Some(CopiedColumns {
            what,
            lineages,
            tail,
        }) = self.copy_source(source, to)?
        else {
            return Ok(());
        };
        if binary {
            return Err(self.refuse(Operation::Copy, Reason::CopyBinary(what)));
        }
        if !matches!(target, CopyTarget::Stdin | CopyTarget::Stdout) {
            return Err(self.refuse(Operation::Copy, Reason::CopyFileOrProgram(what)));
        }
        for l in lineages {
            plan.fields.push(match l {
                Lineage::Plain => None,
                Lineage::Encrypted(c) => Some(c),
                Lineage::Unknown => {
                    return Err(self.refuse(Operation::Copy, Reason::CopyUnresolved(what)))
                }
            });
        }
        plan.plain_tail = tail;
        self.plan.copy = Some(plan);
        Ok(())
    }

    /// What a COPY copies and the lineage of each field; None when it reaches no
    /// protected column (the statement then passes untouched).
    fn copy_source(&mut self, source: &CopySource, to: bool) -> R<Option<CopiedColumns>> {
        match source {
            CopySource::Table {
                table_name,
                columns,
            } => self.copy_table(table_name, columns, to),
            CopySource::Query(q) => {
                let shape = self.query(q, None)?;
                if !self.plan.touches_policy {
                    return Ok(None);
                }
                Ok(Some(CopiedColumns {
                    what: CopySubject::Query,
                    lineages: shape.columns.iter().map(|c| c.lineage).collect(),
                    tail: shape.plain_tail,
                }))
            }
        }
    }

    /// `COPY table [(columns)]`: the table resolved (written to by COPY FROM) and each
    /// listed column's lineage, the table's own list when none is written.
    fn copy_table(
        &mut self,
        table_name: &ObjectName,
        columns: &[Ident],
        to: bool,
    ) -> R<Option<CopiedColumns>> {
        self.writing = !to;
        let table = self.resolve_table(table_name);
        self.writing = false;
        let table = table?;
        if !self.policy().is_protected_table(&table) {
            return Ok(None);
        }
        self.plan.touches_policy = true;
        let names: Vec<String> = if columns.is_empty() {
            self.ctx.schema.table_columns(&table).ok_or_else(|| {
                self.refuse(Operation::Copy, Reason::CopyNeedsColumns(self.rel(&table)))
            })?
        } else {
            columns.iter().map(normalize).collect()
        };
        let lineages = names
            .iter()
            .map(|n| {
                self.policy()
                    .find(&table, n)
                    .map_or(Lineage::Plain, Lineage::Encrypted)
            })
            .collect();
        let what = match RelationName::protected(self.policy(), &table) {
            Some(t) => CopySubject::Table(t),
            None => CopySubject::Query,
        };
        Ok(Some(CopiedColumns {
            what,
            lineages,
            tail: false,
        }))
    }
}

/// EXPLAIN's result: one plain `QUERY PLAN` column.
fn explain_shape() -> ResultShape {
    ResultShape {
        columns: vec![OutputColumn {
            name: Some("QUERY PLAN".to_string()),
            lineage: Lineage::Plain,
        }],
        plain_tail: false,
    }
}

/// The fields a COPY moves, once it is known to reach a protected column.
struct CopiedColumns {
    /// What is copied, for a refusal.
    what: CopySubject,
    /// Each field's lineage, in order.
    lineages: Vec<Lineage>,
    /// More plain fields follow, of unknown number.
    tail: bool,
}

/// The stream format of a COPY from its options (both syntaxes), and whether it is
/// binary (refused later, when the copy reaches a protected column).
fn copy_plan(to: bool, options: &[CopyOption], legacy: &[CopyLegacyOption]) -> (CopyPlan, bool) {
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
        binary |= legacy_copy_option(&mut plan, o);
    }
    (plan, binary)
}

/// Applies one pre-9.0 COPY option; true when it asks for the binary format.
fn legacy_copy_option(plan: &mut CopyPlan, o: &CopyLegacyOption) -> bool {
    match o {
        CopyLegacyOption::Binary => return true,
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
    false
}
