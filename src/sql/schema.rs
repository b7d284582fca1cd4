//! What the analysis needs to know about the live schema, as a trait the catalog
//! implements (the catalog owns the queries; this module owns no I/O).

use std::collections::HashMap;

use super::Lineage;
use crate::policy::TableName;

/// The relations the session can see. Implemented by the catalog over pg_class and
/// pg_attribute; [`MemorySchema`] serves tests.
pub trait Schema {
    /// Whether a relation (table, view, foreign table, ...) with this exact normalised
    /// schema and name exists. `schema` may be `pg_temp` (the session's temp schema).
    fn table_exists(&self, schema: &str, name: &str) -> bool;
    /// The relation's column names in attribute order, if known.
    fn table_columns(&self, table: &TableName) -> Option<Vec<String>>;
    /// For a view: each output column's name and lineage (resolved to base columns by
    /// the catalog). `None` when the relation is not a view.
    fn view_columns(&self, view: &TableName) -> Option<Vec<(String, Lineage)>>;
    /// Changes whenever the answers above may change (part of the cache key).
    fn generation(&self) -> u64 {
        0
    }
}

/// A fixed, in-memory schema.
#[derive(Debug, Clone, Default)]
pub struct MemorySchema {
    pub tables: HashMap<TableName, Vec<String>>,
    pub views: HashMap<TableName, Vec<(String, Lineage)>>,
    pub generation: u64,
}

impl MemorySchema {
    pub fn new() -> MemorySchema {
        MemorySchema::default()
    }

    /// Adds a table with its columns in order.
    pub fn with_table(mut self, schema: &str, name: &str, columns: &[&str]) -> MemorySchema {
        self.tables.insert(
            TableName::new(schema, name),
            columns.iter().map(|c| c.to_string()).collect(),
        );
        self
    }

    /// Adds a view with its resolved columns.
    pub fn with_view(
        mut self,
        schema: &str,
        name: &str,
        columns: &[(&str, Lineage)],
    ) -> MemorySchema {
        self.views.insert(
            TableName::new(schema, name),
            columns.iter().map(|(c, l)| (c.to_string(), *l)).collect(),
        );
        self
    }
}

impl Schema for MemorySchema {
    fn table_exists(&self, schema: &str, name: &str) -> bool {
        let t = TableName::new(schema, name);
        self.tables.contains_key(&t) || self.views.contains_key(&t)
    }

    fn table_columns(&self, table: &TableName) -> Option<Vec<String>> {
        self.tables.get(table).cloned().or_else(|| {
            self.views
                .get(table)
                .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
        })
    }

    fn view_columns(&self, view: &TableName) -> Option<Vec<(String, Lineage)>> {
        self.views.get(view).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}
