//! FROM items: resolving table names through search_path, CTEs and views, joins,
//! and the relations each query level can see.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{TableInheritance, Visitor};

use super::*;
use crate::sql::builtins;
use crate::sql::RelationReach;

/// A relation or function name's place in the statement: its first identifier's start
/// (sqlparser's line and column). None for names sqlparser gave no span (synthesised).
pub(super) type NameKey = (u64, u64);

pub(super) fn name_key(name: &ObjectName) -> Option<NameKey> {
    let first = name.0.first()?.as_ident()?;
    let start = first.span.start;
    (start.line > 0).then_some((start.line, start.column))
}

/// What the pre-pass finds anywhere in a parsed statement (sqlparser's visitor sees
/// every relation and function reference, including places the analysis of values
/// never walks).
#[derive(Default)]
pub(super) struct Refs {
    /// Every relation reference, in visit order.
    pub relations: Vec<ObjectName>,
    /// Relation names written with ONLY.
    pub only: HashSet<NameKey>,
    /// Table-function names (sqlparser visits them as relations too).
    pub table_functions: HashSet<NameKey>,
    /// Every function or procedure call.
    pub functions: Vec<ObjectName>,
    /// Every CTE name the statement defines (at any level).
    pub ctes: HashSet<String>,
}

impl Refs {
    pub(super) fn collect(stmt: &Statement) -> Refs {
        let mut refs = Refs::default();
        let _ = stmt.visit(&mut refs);
        refs
    }
}

impl Visitor for Refs {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(w) = &q.with {
            self.ctes
                .extend(w.cte_tables.iter().map(|c| normalize(&c.alias.name)));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, r: &ObjectName) -> ControlFlow<()> {
        self.relations.push(r.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        match tf {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => {
                self.table_functions.extend(name_key(name));
                self.functions.push(name.clone());
            }
            TableFactor::Table {
                name,
                inheritance: Some(TableInheritance::Only { .. }),
                ..
            } => self.only.extend(name_key(name)),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.functions.push(f.name.clone());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if let Statement::Call(f) = s {
            self.functions.push(f.name.clone());
        }
        ControlFlow::Continue(())
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `"name"` with inner quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Analyzer<'_> {
    /// Resolves a relation reference (not a CTE) to the relation PostgreSQL would use,
    /// pins an unqualified reaching name to it with a [`TextEdit`], and applies the
    /// reach rules (ancestors need ONLY, indirect relations take no writes).
    pub(super) fn resolve_table(&mut self, name: &ObjectName) -> R<TableName> {
        let parts = object_name_parts(name).ok_or_else(|| SqlError::from(Fixed::TableNameForm))?;
        let key = name_key(name);
        if let Some(k) = key {
            self.seen.insert(k);
        }
        let table = match parts.as_slice() {
            [n] => {
                let t = self.resolve_unqualified(n)?;
                self.qualify(name, &t)?;
                t
            }
            [schema, n] | [_, schema, n] => TableName::new(schema.clone(), n.clone()),
            _ => return Err(Fixed::TableNameForm.into()),
        };
        let only = key.is_some_and(|k| self.refs.only.contains(&k));
        self.check_reach(&table, only)?;
        Ok(table)
    }

    /// Whether a relation `schema.name` is known to exist: the catalog says so, the
    /// policy names it (the catalog may be a refresh behind), it is in the reach set,
    /// or it is a catalogued value-exposing catalog relation.
    fn relation_exists(&self, schema: &str, name: &str) -> bool {
        self.ctx.schema.table_exists(schema, name)
            || self
                .policy()
                .is_protected_table(&TableName::new(schema, name))
            || self.ctx.schema.relation_reach(schema, name).is_some()
            || (schema == "pg_catalog" && builtins::value_exposing_relation(name).is_some())
    }

    /// Whether some relation of this name, in any schema, can reach a protected column.
    pub(super) fn reaching_candidate(&self, name: &str) -> bool {
        self.ctx.names.is_relation(name)
            || self.policy().columns().iter().any(|c| c.table.name == name)
    }

    /// PostgreSQL's lookup: pg_temp, then pg_catalog (unless listed), then search_path.
    /// A name found nowhere while a reaching relation of that name exists is refused:
    /// pgcloak cannot tell which relation PostgreSQL would use (another session's
    /// temp table, a refresh the catalog has not seen).
    pub(super) fn resolve_unqualified(&self, name: &str) -> R<TableName> {
        let path = self.ctx.search_path;
        // current_schemas(true) spells the session's temp schema `pg_temp_N`, at the
        // place PostgreSQL searches it.
        let listed = |s: &str| {
            path.iter().any(|p| {
                p == s || (s == "pg_temp" && p.strip_prefix("pg_temp_").is_some_and(is_digits))
            })
        };
        let implicit = ["pg_temp", "pg_catalog"].into_iter().filter(|s| !listed(s));
        for schema in implicit.chain(path.iter().map(String::as_str)) {
            if self.relation_exists(schema, name) {
                return Ok(TableName::new(schema, name));
            }
        }
        if self.reaching_candidate(name) {
            return Err(Reason::NotOnSearchPath {
                name: CatalogName::listed(self.ctx.names, self.policy(), name),
                search_path: SearchPath::of_session(path),
            }
            .into());
        }
        // Not found and nothing reaching: PostgreSQL will decide; name it in the first path schema.
        Ok(TableName::new(
            path.first().map_or("public", String::as_str),
            name,
        ))
    }

    /// Replaces an unqualified reference whose name some reaching relation carries by
    /// the schema-qualified relation it resolved to, so upstream reads exactly what was
    /// analysed whatever the session's real search_path is.
    fn qualify(&mut self, name: &ObjectName, table: &TableName) -> R<()> {
        if !self.reaching_candidate(&table.name) {
            return Ok(());
        }
        let ident = name.0.first().and_then(|p| p.as_ident());
        let span = ident.and_then(|i| Some((self.abs(i.span.start)?, self.abs(i.span.end)?)));
        let Some((start, end)) = span.filter(|(s, e)| s < e) else {
            return Err(Reason::UnlocatedRelation(self.rel(table)).into());
        };
        let (start, end) = (self.pos(start), self.pos(end));
        if self.plan.edits.iter().any(|e| e.start == start) {
            return Ok(());
        }
        self.plan.edits.push(TextEdit {
            start,
            end,
            text: format!(
                "{}.{}",
                quote_ident(&table.schema),
                quote_ident(&table.name)
            ),
        });
        Ok(())
    }

    /// The reach rules for one resolved relation.
    fn check_reach(&mut self, table: &TableName, only: bool) -> R<()> {
        if table.schema == "pg_catalog" {
            if let Some(b) = builtins::value_exposing_relation(&table.name) {
                self.opaque(Opaque::Builtin(b));
            }
        }
        let protected = self.policy().is_protected_table(table);
        let reach = if protected {
            Some(RelationReach::Protected)
        } else {
            self.ctx.schema.relation_reach(&table.schema, &table.name)
        };
        let Some(reach) = reach else {
            return Ok(());
        };
        self.plan.touches_policy = true;
        if self.passthrough {
            // TRUNCATE, GRANT, DROP, ...: they move no values.
            return Ok(());
        }
        match reach {
            RelationReach::Protected if !protected => {
                Err(Reason::PartitionChild(self.rel(table)).into())
            }
            RelationReach::Protected => Ok(()),
            RelationReach::View => {
                if self.ctx.schema.view_columns(table).is_none() {
                    return Err(Reason::ViewOfUnknownOrigin(self.rel(table)).into());
                }
                Ok(())
            }
            RelationReach::Ancestor if only => Ok(()),
            RelationReach::Ancestor => Err(Reason::ParentWithoutOnly(self.rel(table)).into()),
            RelationReach::Indirect if self.writing => {
                Err(Reason::IndirectWrite(self.rel(table)).into())
            }
            RelationReach::Indirect => Ok(()),
        }
    }

    pub(super) fn opaque(&mut self, o: Opaque) {
        if !self.plan.opaque.contains(&o) {
            self.plan.opaque.push(o);
        }
    }

    /// Every function call of the statement: a catalogued built-in or a reaching user
    /// function makes the plan opaque (checked per session by `authorize_opaque`).
    pub(super) fn classify_functions(&mut self) {
        let names = std::mem::take(&mut self.refs.functions);
        for name in &names {
            if let Some(o) = self.classify_function(name) {
                self.plan.touches_policy = true;
                self.opaque(o);
            }
        }
        self.refs.functions = names;
    }

    fn classify_function(&self, name: &ObjectName) -> Option<Opaque> {
        let parts = object_name_parts(name)?;
        let (schema, fname) = match parts.as_slice() {
            [f] => (None, f),
            [s, f] | [_, s, f] => (Some(s.as_str()), f),
            _ => return None,
        };
        // Whatever the schema: an extension's dblink lives in public, and a user
        // function shadowing a catalogued name is treated as it.
        if let Some(b) = builtins::sql_executing_function(fname) {
            return Some(Opaque::Builtin(b));
        }
        let reaches = |s: Option<&str>| CatalogName::reaching_function(self.ctx.schema, s, fname);
        match schema {
            Some(s) => CatalogName::reaching_function(self.ctx.schema, Some(s), fname)
                .map(Opaque::Function),
            None => {
                let path = self.ctx.search_path;
                let implicit = (!path.iter().any(|p| p == "pg_catalog")).then_some("pg_catalog");
                let found = implicit
                    .into_iter()
                    .chain(path.iter().map(String::as_str))
                    .find_map(|s| reaches(Some(s)));
                found.or_else(|| reaches(None)).map(Opaque::Function)
            }
        }
    }

    /// Relation references the analysis of values did not walk (sqlparser's visitor
    /// saw them): pin and check them; one that reaches a protected column in a
    /// statement moving values is refused, since its use was not analysed.
    pub(super) fn uncovered_relations(&mut self) -> R<()> {
        let relations = std::mem::take(&mut self.refs.relations);
        for name in &relations {
            let key = name_key(name);
            if key.is_some_and(|k| self.seen.contains(&k) || self.refs.table_functions.contains(&k))
            {
                continue;
            }
            let parts =
                object_name_parts(name).ok_or_else(|| SqlError::from(Fixed::TableNameForm))?;
            if let [only] = parts.as_slice() {
                if self.refs.ctes.contains(only) {
                    if self.reaching_candidate(only) {
                        let n = CatalogName::listed(self.ctx.names, self.policy(), only);
                        return Err(Reason::CteShadowsRelation(n).into());
                    }
                    continue;
                }
            }
            let before = self.plan.touches_policy;
            self.plan.touches_policy = false;
            let table = self.resolve_table(name)?;
            let reaches = self.plan.touches_policy;
            self.plan.touches_policy |= before;
            if reaches && !self.passthrough {
                return Err(Reason::UnanalysedUse(self.rel(&table)).into());
            }
        }
        Ok(())
    }

    pub(super) fn cte(&self, name: &str) -> Option<Vec<(String, Lineage)>> {
        self.ctes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
    }

    pub(super) fn table_with_joins(
        &mut self,
        twj: &TableWithJoins,
        scope: &mut Scope<'_>,
    ) -> R<()> {
        self.table_factor(&twj.relation, scope)?;
        for j in &twj.joins {
            self.join(j, scope)?;
        }
        Ok(())
    }

    pub(super) fn join(&mut self, j: &sqlparser::ast::Join, scope: &mut Scope<'_>) -> R<()> {
        self.table_factor(&j.relation, scope)?;
        let constraint = match join_constraint(&j.join_operator) {
            Some(c) => c,
            None => {
                if self.plan.touches_policy {
                    return Err(Fixed::JoinForm.into());
                }
                return Ok(());
            }
        };
        match constraint {
            Some(JoinConstraint::On(e)) => self.predicate(e, scope),
            Some(JoinConstraint::Using(cols)) | Some(JoinConstraint::UsingAlias(cols, _)) => {
                let n = scope.relations.len();
                for c in cols {
                    let name =
                        last_ident(c).ok_or_else(|| SqlError::from(Fixed::UsingColumnForm))?;
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
                        Operation::JoinUsing,
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
                    return Err(Fixed::NaturalJoin.into());
                }
                Ok(())
            }
            Some(JoinConstraint::None) | None => Ok(()),
        }
    }

    /// Two column lineages compared for equality (join keys, USING).
    pub(super) fn equal_columns(&mut self, a: Lineage, b: Lineage, op: Operation) -> R<()> {
        match (a, b) {
            (Lineage::Plain, Lineage::Plain) => Ok(()),
            (Lineage::Encrypted(x), Lineage::Encrypted(y)) => {
                self.require_deterministic(x, op)?;
                self.require_deterministic(y, op)?;
                if !self.same_domain(x, y) {
                    return Err(self.refuse(op, Reason::DifferentKeys(self.name(x), self.name(y))));
                }
                self.plan.searched.extend([x, y]);
                Ok(())
            }
            (Lineage::Encrypted(x), _) | (_, Lineage::Encrypted(x)) => {
                Err(self.refuse(op, Reason::PlainComparison(self.name(x))))
            }
            _ => Err(self.refuse(op, Reason::UnresolvedOrigin)),
        }
    }

    pub(super) fn require_deterministic(&self, c: ColumnRef, op: Operation) -> R<()> {
        if self.policy().column(c).encryption == Encryption::Deterministic {
            return Ok(());
        }
        Err(self.refuse(op, Reason::RandomizedColumn(self.name(c))))
    }

    pub(super) fn alias_columns(
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

    pub(super) fn table_factor(&mut self, tf: &TableFactor, scope: &mut Scope<'_>) -> R<()> {
        match tf {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if args.is_some() {
                    return self.table_call(tf, name, alias.as_ref(), scope);
                }
                self.named_table(name, alias.as_ref(), scope)
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => self.derived_table(*lateral, subquery, alias.as_ref(), scope),
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => self.nested_join(table_with_joins, alias.as_ref(), scope),
            other => self.opaque_table_factor(other, scope),
        }
    }

    /// `name(args)` written as a table: the arguments may not touch a protected
    /// column, and its columns are opaque.
    fn table_call(
        &mut self,
        tf: &TableFactor,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        scope: &mut Scope<'_>,
    ) -> R<()> {
        self.fallback(tf, scope, Operation::TableFunctionArgument)?;
        scope.relations.push(Relation {
            visible: alias.map_or_else(
                || last_ident(name).unwrap_or_default(),
                |a| normalize(&a.name),
            ),
            schema: None,
            columns: RelColumns::Opaque,
        });
        Ok(())
    }

    /// A relation name in FROM: a visible CTE, or the relation it resolves to with the
    /// columns the catalog, a view's lineage or the policy give it.
    fn named_table(
        &mut self,
        name: &ObjectName,
        alias: Option<&TableAlias>,
        scope: &mut Scope<'_>,
    ) -> R<()> {
        let parts = object_name_parts(name).ok_or_else(|| SqlError::from(Fixed::TableNameForm))?;
        if let [only] = parts.as_slice() {
            if let Some(cols) = self.cte(only) {
                self.seen.extend(name_key(name));
                if cols.iter().any(|(_, l)| *l != Lineage::Plain) {
                    self.plan.touches_policy = true;
                }
                scope.relations.push(Relation {
                    visible: alias.map_or_else(|| only.clone(), |a| normalize(&a.name)),
                    schema: None,
                    columns: RelColumns::Known(Self::alias_columns(alias, cols)),
                });
                return Ok(());
            }
        }
        let table = self.resolve_table(name)?;
        let visible = alias.map_or_else(|| table.name.clone(), |a| normalize(&a.name));
        let schema = alias.is_none().then(|| table.schema.clone());
        let columns = self.relation_columns(table, &visible, alias)?;
        scope.relations.push(Relation {
            visible,
            schema,
            columns,
        });
        Ok(())
    }

    /// The columns of a resolved relation seen as `visible`: a view's lineage, or the
    /// table's; column aliases over a protected table whose columns the catalog does
    /// not know are refused.
    fn relation_columns(
        &mut self,
        table: TableName,
        visible: &str,
        alias: Option<&TableAlias>,
    ) -> R<RelColumns> {
        if let Some(v) = self.ctx.schema.view_columns(&table) {
            if v.iter().any(|(_, l)| *l != Lineage::Plain) {
                self.plan.touches_policy = true;
            }
            return Ok(RelColumns::Known(Self::alias_columns(alias, v)));
        }
        let protected = self.policy().is_protected_table(&table);
        if protected {
            self.plan.touches_policy = true;
        }
        let names = self.ctx.schema.table_columns(&table);
        let Some(a) = alias.filter(|a| !a.columns.is_empty()) else {
            return Ok(RelColumns::Table { table, names });
        };
        let rel = Relation {
            visible: visible.to_string(),
            schema: None,
            columns: RelColumns::Table {
                table: table.clone(),
                names,
            },
        };
        match rel.expand(self.policy()) {
            Some(cols) => Ok(RelColumns::Known(Self::alias_columns(Some(a), cols))),
            None if !protected => Ok(RelColumns::Known(
                a.columns
                    .iter()
                    .map(|c| (normalize(&c.name), Lineage::Plain))
                    .collect(),
            )),
            None => Err(Reason::AliasesNeedCatalog(self.rel(&table)).into()),
        }
    }

    /// `[LATERAL] (subquery) alias`: its result columns (a LATERAL subquery sees the
    /// relations before it).
    fn derived_table(
        &mut self,
        lateral: bool,
        subquery: &Query,
        alias: Option<&TableAlias>,
        scope: &mut Scope<'_>,
    ) -> R<()> {
        let shape = if lateral {
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
            visible: alias.map(|a| normalize(&a.name)).unwrap_or_default(),
            schema: None,
            columns: RelColumns::Known(Self::alias_columns(alias, cols)),
        });
        Ok(())
    }

    /// `(a JOIN b) [alias]`: without an alias its members join this level; with one,
    /// a single relation of every member's columns in order.
    fn nested_join(
        &mut self,
        table_with_joins: &TableWithJoins,
        alias: Option<&TableAlias>,
        scope: &mut Scope<'_>,
    ) -> R<()> {
        if alias.is_none() {
            return self.table_with_joins(table_with_joins, scope);
        }
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
                None => return Err(Fixed::AliasedJoinNeedsCatalog.into()),
            }
        }
        scope.relations.push(Relation {
            visible: alias.map(|a| normalize(&a.name)).unwrap_or_default(),
            schema: None,
            columns: RelColumns::Known(Self::alias_columns(alias, cols)),
        });
        Ok(())
    }

    /// Table functions, UNNEST and other FROM items: nothing in them may touch a
    /// protected column, and their columns are opaque.
    fn opaque_table_factor(&mut self, other: &TableFactor, scope: &mut Scope<'_>) -> R<()> {
        self.fallback(other, scope, Operation::TableFunction)?;
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
