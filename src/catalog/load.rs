//! Reads a [`SchemaSnapshot`] from one database's catalog for one policy generation.
//!
//! Read-only queries: the protected tables and their columns, their partitions and
//! inheritance children, the views that depend on any of them (pg_depend through
//! pg_rewrite, transitively), everything else that can reach them (`reach.rs`), and every
//! relation sharing a name with one of those (for search_path resolution). Nothing here
//! writes to the database.
//!
//! The queries are separate statements, not one atomic read: DDL racing a load is caught by
//! the cache's invalidation epoch (DDL relayed by pgcloak) or by the TTL (DDL run directly).

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::policy::{ColumnPolicy, Policy, TableName};
use crate::wire::Oid as TypeOid;

use super::connect::CatalogConn;
use super::error::CatalogError;
use super::schema::{
    Attribute, ColumnLocation, DependentView, NamedRelation, Oid, ProtectedTable, RelKind,
    SchemaSnapshot,
};

const TABLES_SQL: &str = "\
SELECT p.s, p.t, c.oid, c.relkind, a.attnum, a.attname::text, a.atttypid, \
       format_type(a.atttypid, a.atttypmod) \
FROM unnest($1::text[], $2::text[]) AS p(s, t) \
JOIN pg_namespace n ON n.nspname::text = p.s \
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname::text = p.t \
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY c.oid, a.attnum";

const CHILDREN_SQL: &str = "\
WITH RECURSIVE kids(oid, root) AS ( \
  SELECT i.inhrelid, i.inhparent FROM pg_inherits i WHERE i.inhparent = ANY($1::oid[]) \
  UNION \
  SELECT i.inhrelid, k.root FROM pg_inherits i JOIN kids k ON i.inhparent = k.oid \
) \
SELECT k.root, c.oid, n.nspname::text, c.relname::text, c.relkind, \
       a.attnum, a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod) \
FROM kids k \
JOIN pg_class c ON c.oid = k.oid \
JOIN pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY c.oid, a.attnum";

/// Views and materialized views whose rewrite rule reads a protected relation, then views
/// reading those, and so on. Only rules of views are followed (not rules on tables).
const VIEWS_SQL: &str = "\
WITH RECURSIVE dep(view_oid, ref_oid) AS ( \
  SELECT r.ev_class, d.refobjid \
  FROM pg_depend d \
  JOIN pg_rewrite r ON r.oid = d.objid \
  JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
  WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
    AND d.refobjid = ANY($1::oid[]) AND r.ev_class <> d.refobjid \
  UNION \
  SELECT r.ev_class, d.refobjid \
  FROM dep \
  JOIN pg_depend d ON d.refobjid = dep.view_oid \
  JOIN pg_rewrite r ON r.oid = d.objid \
  JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
  WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
    AND r.ev_class <> d.refobjid \
) \
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind, pg_get_viewdef(c.oid, true), \
       array_agg(DISTINCT dep.ref_oid ORDER BY dep.ref_oid) \
FROM dep \
JOIN pg_class c ON c.oid = dep.view_oid \
JOIN pg_namespace n ON n.oid = c.relnamespace \
GROUP BY c.oid, n.nspname, c.relname, c.relkind \
ORDER BY c.oid";

const ATTRIBUTES_SQL: &str = "\
SELECT a.attrelid, a.attnum, a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod) \
FROM pg_attribute a \
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY a.attrelid, a.attnum";

const SAME_NAMED_SQL: &str = "\
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relname::text = ANY($1::text[]) \
ORDER BY n.nspname, c.relname";

/// Reads one field; a type mismatch (an unexpected server) is an error, never a panic.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize, conn: &CatalogConn) -> Result<T, CatalogError> {
    row.try_get(i)
        .map_err(|e| conn.query_err("decoding a catalog row", &e))
}

/// `schema.table.column` as shown in errors.
fn column_label(table: &TableName, column: &str) -> String {
    format!("{table}.{column}")
}

struct FoundTable {
    oid: Oid,
    kind: RelKind,
    attributes: Vec<Attribute>,
}

impl CatalogConn {
    /// Resolves every policy column; Err with one error per column that does not resolve
    /// (for startup and `pgcloak check --database`).
    pub async fn resolve(&self, policy: &Policy) -> Result<SchemaSnapshot, Vec<CatalogError>> {
        let snapshot = self.load_snapshot(policy).await.map_err(|e| vec![e])?;
        let problems: Vec<CatalogError> = snapshot.problems().into_iter().cloned().collect();
        if problems.is_empty() {
            Ok(snapshot)
        } else {
            Err(problems)
        }
    }

    /// Reads a snapshot. Policy columns that do not resolve are recorded in it (see
    /// [`SchemaSnapshot::location`]); Err only when the catalog cannot be read.
    pub async fn load_snapshot(&self, policy: &Policy) -> Result<SchemaSnapshot, CatalogError> {
        let found = self.load_tables(policy).await?;

        let mut tables = Vec::new();
        let mut locations = Vec::with_capacity(policy.columns().len());
        let mut protected: BTreeMap<Oid, &TableName> = BTreeMap::new();
        for col in policy.columns() {
            let location = self.locate(col, &found);
            if let Ok(l) = &location {
                protected.insert(l.table_oid, &col.table);
            }
            locations.push(location);
        }
        for (oid, name) in &protected {
            if let Some(t) = found.get(*name) {
                tables.push(ProtectedTable {
                    oid: *oid,
                    name: (*name).clone(),
                    kind: t.kind,
                    attributes: t.attributes.clone(),
                    root: None,
                });
            }
        }

        let roots: Vec<Oid> = protected.keys().copied().collect();
        for child in self.load_children(&roots).await? {
            // A child of two protected roots is listed once per root (the mapping is per
            // root); the first entry already covers the relation for name lookups.
            tables.push(child);
        }

        let table_oids: Vec<Oid> = tables.iter().map(|t| t.oid).collect();
        let views = self.load_views(&table_oids).await?;

        let (reach, reach_oids) = self.load_reach(&tables, &views).await?;

        // Every reaching relation's name: search_path resolution needs each of them.
        let mut names: Vec<String> = tables.iter().map(|t| t.name.name.clone()).collect();
        names.extend(views.iter().map(|v| v.name.name.clone()));
        names.extend(reach_oids.relations.iter().map(|r| r.name.name.clone()));
        names.sort();
        names.dedup();
        let relations = self.load_same_named(&names).await?;

        Ok(SchemaSnapshot::new(
            self.database.clone(),
            policy,
            tables,
            locations,
            views,
            relations,
        )
        .with_reach(reach)
        .with_reach_oids(reach_oids))
    }

    /// Where a policy column is in this database: an error when its table is missing or
    /// stores no rows, or the column is missing or not bytea.
    fn locate(
        &self,
        col: &ColumnPolicy,
        found: &HashMap<TableName, FoundTable>,
    ) -> Result<ColumnLocation, CatalogError> {
        let label = column_label(&col.table, &col.column);
        match found.get(&col.table) {
            None => Err(CatalogError::TableMissing {
                database: self.database.clone(),
                column: label,
                table: col.table.to_string(),
            }),
            Some(t) if !t.kind.stores_rows() => Err(CatalogError::NotATable {
                database: self.database.clone(),
                column: label,
                table: col.table.to_string(),
                kind: t.kind.name(),
            }),
            Some(t) => match t.attributes.iter().find(|a| a.name == col.column) {
                None => Err(CatalogError::ColumnMissing {
                    database: self.database.clone(),
                    column: label,
                    table: col.table.to_string(),
                    name: col.column.clone(),
                }),
                Some(a) if a.type_oid != TypeOid::BYTEA => Err(CatalogError::NotBytea {
                    database: self.database.clone(),
                    column: label,
                    actual: a.type_name.clone(),
                }),
                Some(a) => Ok(ColumnLocation {
                    table_oid: t.oid,
                    attnum: a.attnum,
                }),
            },
        }
    }

    async fn load_tables(
        &self,
        policy: &Policy,
    ) -> Result<HashMap<TableName, FoundTable>, CatalogError> {
        let mut wanted: Vec<&TableName> = policy.columns().iter().map(|c| &c.table).collect();
        wanted.sort();
        wanted.dedup();
        let schemas: Vec<&str> = wanted.iter().map(|t| t.schema.as_str()).collect();
        let names: Vec<&str> = wanted.iter().map(|t| t.name.as_str()).collect();
        let rows = self
            .client
            .query(TABLES_SQL, &[&schemas, &names])
            .await
            .map_err(|e| self.query_err("policy tables", &e))?;
        let mut found: HashMap<TableName, FoundTable> = HashMap::new();
        for row in rows {
            let name = TableName::new(col::<String>(&row, 0, self)?, col::<String>(&row, 1, self)?);
            let oid: Oid = col(&row, 2, self)?;
            let kind = RelKind::from_relkind(col(&row, 3, self)?);
            let entry = found.entry(name).or_insert_with(|| FoundTable {
                oid,
                kind,
                attributes: Vec::new(),
            });
            if let Some(attnum) = row.get::<_, Option<i16>>(4) {
                entry.attributes.push(Attribute {
                    attnum,
                    name: col(&row, 5, self)?,
                    type_oid: col(&row, 6, self)?,
                    type_name: col(&row, 7, self)?,
                });
            }
        }
        Ok(found)
    }

    async fn load_children(&self, roots: &[Oid]) -> Result<Vec<ProtectedTable>, CatalogError> {
        if roots.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(CHILDREN_SQL, &[&roots])
            .await
            .map_err(|e| self.query_err("partitions and inheritance children", &e))?;
        // A child reachable from two protected roots appears once per root.
        let mut out: Vec<ProtectedTable> = Vec::new();
        let mut seen: HashSet<(Oid, Oid)> = HashSet::new();
        for row in rows {
            let root: Oid = col(&row, 0, self)?;
            let oid: Oid = col(&row, 1, self)?;
            let attribute = Attribute {
                attnum: col(&row, 5, self)?,
                name: col(&row, 6, self)?,
                type_oid: col(&row, 7, self)?,
                type_name: col(&row, 8, self)?,
            };
            if seen.insert((root, oid)) {
                out.push(ProtectedTable {
                    oid,
                    name: TableName::new(
                        col::<String>(&row, 2, self)?,
                        col::<String>(&row, 3, self)?,
                    ),
                    kind: RelKind::from_relkind(col(&row, 4, self)?),
                    attributes: Vec::new(),
                    root: Some(root),
                });
            }
            if let Some(t) = out
                .iter_mut()
                .find(|t| t.oid == oid && t.root == Some(root))
            {
                t.attributes.push(attribute);
            }
        }
        Ok(out)
    }

    async fn load_views(&self, protected: &[Oid]) -> Result<Vec<DependentView>, CatalogError> {
        if protected.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(VIEWS_SQL, &[&protected])
            .await
            .map_err(|e| self.query_err("dependent views", &e))?;
        let mut views: Vec<DependentView> = Vec::with_capacity(rows.len());
        for row in &rows {
            views.push(DependentView {
                oid: col(row, 0, self)?,
                name: TableName::new(col::<String>(row, 1, self)?, col::<String>(row, 2, self)?),
                kind: RelKind::from_relkind(col(row, 3, self)?),
                definition: row.get::<_, Option<String>>(4).unwrap_or_default(),
                reads: col(row, 5, self)?,
                attributes: Vec::new(),
            });
        }
        if views.is_empty() {
            return Ok(views);
        }
        let oids: Vec<Oid> = views.iter().map(|v| v.oid).collect();
        let rows = self
            .client
            .query(ATTRIBUTES_SQL, &[&oids])
            .await
            .map_err(|e| self.query_err("view columns", &e))?;
        for row in rows {
            let oid: Oid = col(&row, 0, self)?;
            if let Some(v) = views.iter_mut().find(|v| v.oid == oid) {
                v.attributes.push(Attribute {
                    attnum: col(&row, 1, self)?,
                    name: col(&row, 2, self)?,
                    type_oid: col(&row, 3, self)?,
                    type_name: col(&row, 4, self)?,
                });
            }
        }
        Ok(views)
    }

    async fn load_same_named(&self, names: &[String]) -> Result<Vec<NamedRelation>, CatalogError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .client
            .query(SAME_NAMED_SQL, &[&names])
            .await
            .map_err(|e| self.query_err("relations by name", &e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(NamedRelation {
                oid: col(row, 0, self)?,
                schema: col(row, 1, self)?,
                name: col(row, 2, self)?,
                kind: RelKind::from_relkind(col(row, 3, self)?),
            });
        }
        Ok(out)
    }
}
