//! FROM items: resolving table names through search_path, CTEs and views, joins,
//! and the relations each query level can see.

use super::*;

impl Analyzer<'_> {
    pub(super) fn resolve_table(&self, name: &ObjectName) -> R<TableName> {
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
    pub(super) fn resolve_unqualified(&self, name: &str) -> TableName {
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
    pub(super) fn equal_columns(&mut self, a: Lineage, b: Lineage, op: &str) -> R<()> {
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

    pub(super) fn require_deterministic(&self, c: ColumnRef, op: &str) -> R<()> {
        if self.policy().column(c).encryption == Encryption::Deterministic {
            return Ok(());
        }
        Err(SqlError::unsupported(format!(
            "{op} on randomized column {} is not supported: randomized ciphertexts never compare equal; \
             only IS [NOT] NULL and count() work (declare it encryption: deterministic for =, IN, GROUP BY and joins)",
            self.name(c)
        )))
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
}
