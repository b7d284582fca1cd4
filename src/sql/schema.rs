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
    /// Whether (and how) the relation `schema.name` can reach a protected column.
    /// `schema` may be `pg_temp`. None: it cannot.
    fn relation_reach(&self, schema: &str, name: &str) -> Option<RelationReach> {
        let _ = (schema, name);
        None
    }
    /// Whether a user-defined function or procedure of this name (in `schema`, or in any
    /// schema when None) can reach a protected relation or runs dynamic SQL.
    fn function_reaches(&self, schema: Option<&str>, name: &str) -> bool {
        let _ = (schema, name);
        false
    }
}

/// A fixed, in-memory schema.
#[derive(Debug, Clone, Default)]
pub struct MemorySchema {
    pub tables: HashMap<TableName, Vec<String>>,
    pub views: HashMap<TableName, Vec<(String, Lineage)>>,
    pub generation: u64,
    /// The reach set: relations that can reach a protected column, and how.
    pub reach: HashMap<TableName, RelationReach>,
    /// Reaching user functions: name -> the schemas holding one of that name.
    pub functions: HashMap<String, Vec<String>>,
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

    /// Marks `schema.name` as reaching a protected column in this way.
    pub fn with_reach(mut self, schema: &str, name: &str, reach: RelationReach) -> MemorySchema {
        self.reach.insert(TableName::new(schema, name), reach);
        self
    }

    /// Adds a user function or procedure `schema.name` that reaches protected data.
    pub fn with_reaching_function(mut self, schema: &str, name: &str) -> MemorySchema {
        self.functions
            .entry(name.to_string())
            .or_default()
            .push(schema.to_string());
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

    fn relation_reach(&self, schema: &str, name: &str) -> Option<RelationReach> {
        self.reach.get(&TableName::new(schema, name)).copied()
    }

    fn function_reaches(&self, schema: Option<&str>, name: &str) -> bool {
        self.functions
            .get(name)
            .is_some_and(|schemas| schema.is_none_or(|s| schemas.iter().any(|x| x == s)))
    }
}

/// How a relation can reach a protected column (computed by the catalog from
/// pg_class, pg_inherits, pg_depend, pg_rewrite, pg_trigger, pg_policy and pg_attrdef).
/// A relation that is absent from the reach set cannot reach one, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationReach {
    /// Holds policy columns itself, or is a partition / inheritance child of a table that does.
    Protected,
    /// A view or materialized view reading one, directly or through other views or
    /// functions (its lineage comes from its definition).
    View,
    /// An inheritance parent or partitioned ancestor of a protected table: reading it
    /// returns the protected child's rows.
    Ancestor,
    /// Its rules, triggers, row-security policies, defaults or generated columns call
    /// something that reaches a protected column.
    Indirect,
}

/// What the catalog says a session's roles can reach (not part of a plan: plans are
/// role-independent; this is checked per execution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionReach {
    /// The session's login role, or any role it can become (`pg_has_role(.., 'MEMBER')`,
    /// superuser, owner), holds a privilege on a protected column, on a reaching view, or
    /// EXECUTE on a reaching SECURITY DEFINER function. When false, SQL pgcloak cannot
    /// see into (dynamic SQL, SQL-executing built-ins) cannot reach protected data and runs.
    pub can_reach_protected: bool,
}
