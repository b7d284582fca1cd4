//! The schema snapshot of one database under one policy generation: where each policy
//! column lives (table OID, attnum), the views built on protected tables, and which schemas
//! hold a relation of each name that matters (for search_path resolution).
//!
//! A snapshot is immutable and pure data: the loader (`load.rs`) fills it from the catalog,
//! and sessions read it without locks. It never holds a data value.

use std::collections::HashMap;
use std::time::Instant;

use crate::policy::{ColumnRef, Policy, TableName};

use super::error::CatalogError;

/// A PostgreSQL object id as the catalog rows hold it (relations, functions, types). The
/// type OIDs pgcloak names are constants of [`crate::wire::Oid`].
pub type Oid = u32;

/// The kinds of relation pgcloak cares about (pg_class.relkind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelKind {
    Table,
    PartitionedTable,
    View,
    MaterializedView,
    ForeignTable,
    /// Anything else (index, sequence, composite type, ...).
    Other,
}

impl RelKind {
    pub fn from_relkind(c: i8) -> RelKind {
        match c as u8 {
            b'r' => RelKind::Table,
            b'p' => RelKind::PartitionedTable,
            b'v' => RelKind::View,
            b'm' => RelKind::MaterializedView,
            b'f' => RelKind::ForeignTable,
            _ => RelKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RelKind::Table => "table",
            RelKind::PartitionedTable => "partitioned table",
            RelKind::View => "view",
            RelKind::MaterializedView => "materialized view",
            RelKind::ForeignTable => "foreign table",
            RelKind::Other => "relation of another kind",
        }
    }

    /// Whether a policy column may live in a relation of this kind.
    pub fn stores_rows(self) -> bool {
        matches!(self, RelKind::Table | RelKind::PartitionedTable)
    }
}

/// One attribute (column) of a relation, as pg_attribute has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub attnum: i16,
    pub name: String,
    pub type_oid: Oid,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(20)`.
    pub type_name: String,
}

/// A table that holds at least one policy column, with all its live columns in order
/// (what `SELECT *` expands to).
#[derive(Debug, Clone)]
pub struct ProtectedTable {
    pub oid: Oid,
    pub name: TableName,
    pub kind: RelKind,
    pub attributes: Vec<Attribute>,
    /// For a partition or inheritance child: the protected table it descends from. Its
    /// policy columns (matched by name) map to the same [`ColumnRef`]s as the root's.
    pub root: Option<Oid>,
}

/// A view or materialized view that reads, directly or through other views, from a
/// protected table. The SQL analyser derives column lineage from `definition`.
#[derive(Debug, Clone)]
pub struct DependentView {
    pub oid: Oid,
    pub name: TableName,
    pub kind: RelKind,
    /// Output columns in order (RowDescription reports the view's OID and these attnums).
    pub attributes: Vec<Attribute>,
    /// `pg_get_viewdef(oid, true)` as read over the catalog connection, whose search_path
    /// is `pg_catalog` alone: every user relation in it is schema-qualified.
    pub definition: String,
    /// The OIDs of the protected tables and dependent views it reads directly.
    pub reads: Vec<Oid>,
}

/// Where a policy column lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColumnLocation {
    pub table_oid: Oid,
    pub attnum: i16,
}

/// A relation found by name in some schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRelation {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
}

/// The resolved schema of one database for one policy generation.
#[derive(Debug, Clone)]
pub struct SchemaSnapshot {
    pub(crate) database: String,
    pub(crate) policy_generation: u64,
    pub(crate) loaded_at: Instant,
    pub(crate) tables: Vec<ProtectedTable>,
    /// Indexed by `ColumnRef.0`: where each policy column lives, or why it does not resolve.
    pub(crate) locations: Vec<Result<ColumnLocation, CatalogError>>,
    pub(crate) by_attribute: HashMap<(Oid, i16), ColumnRef>,
    pub(crate) views: Vec<DependentView>,
    /// Every relation (in any schema, temporary ones included) whose name is the name of a
    /// protected table or dependent view.
    pub(crate) same_named: HashMap<String, Vec<NamedRelation>>,
    /// Every relation and user function that can reach a protected column (see
    /// [`ReachSet`]); filled by the loader, empty in snapshots built without it.
    pub(crate) reach: ReachSet,
    /// The same reach by OID (for privilege checks: session reach, the database guard).
    pub(crate) reach_oids: ReachOids,
}

/// A reaching relation, by OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachingRelation {
    pub oid: Oid,
    pub name: TableName,
    pub reach: crate::sql::RelationReach,
}

/// A reaching user function or procedure, by OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReachingFunction {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    /// SECURITY DEFINER: it runs with its owner's privileges, whoever calls it.
    pub security_definer: bool,
    /// Why it reaches (for `pgcloak check` and tests): a reaching relation or function it
    /// names, dynamic SQL, or a catalogued SQL-executing built-in.
    pub why: String,
}

/// [`ReachSet`] keyed by OID, with what privilege checks need.
#[derive(Debug, Clone, Default)]
pub struct ReachOids {
    pub relations: Vec<ReachingRelation>,
    pub functions: Vec<ReachingFunction>,
}

/// What in one database can reach a protected column: the input of the analyser's
/// fast path (a statement naming none of these, and no SQL-executing built-in, cannot
/// reach protected data) and of its relation checks.
#[derive(Debug, Clone, Default)]
pub struct ReachSet {
    /// (schema, relation name) -> how it reaches.
    pub relations: HashMap<(String, String), crate::sql::RelationReach>,
    /// Function or procedure name -> the schemas holding a reaching one of that name.
    pub functions: HashMap<String, Vec<String>>,
}

impl ReachSet {
    /// How `schema.name` reaches a protected column, if it does.
    pub fn relation(&self, schema: &str, name: &str) -> Option<crate::sql::RelationReach> {
        self.relations
            .get(&(schema.to_string(), name.to_string()))
            .copied()
    }

    /// Whether a reaching function named `name` exists (in `schema`, or anywhere).
    pub fn function(&self, schema: Option<&str>, name: &str) -> bool {
        match (self.functions.get(name), schema) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(schemas), Some(s)) => schemas.iter().any(|x| x == s),
        }
    }
}

impl SchemaSnapshot {
    /// Assembles a snapshot and its indexes: what the loader does after reading the
    /// catalog, public so that the SQL analyser can build snapshots in pure unit tests.
    ///
    /// `locations` has one entry per policy column (indexed by `ColumnRef.0`). `tables`
    /// holds the protected tables plus their partitions/children (`root` set), whose
    /// policy columns are matched to the root's by name. `relations` lists every relation
    /// sharing a name with a protected table or dependent view, in any schema.
    pub fn new(
        database: String,
        policy: &Policy,
        tables: Vec<ProtectedTable>,
        locations: Vec<Result<ColumnLocation, CatalogError>>,
        views: Vec<DependentView>,
        relations: Vec<NamedRelation>,
    ) -> SchemaSnapshot {
        let mut by_attribute = HashMap::new();
        for (i, loc) in locations.iter().enumerate() {
            let Ok(loc) = loc else { continue };
            let column = ColumnRef(i as u32);
            by_attribute.insert((loc.table_oid, loc.attnum), column);
            let Some(name) = policy.columns().get(i).map(|c| c.column.as_str()) else {
                continue;
            };
            for child in tables.iter().filter(|t| t.root == Some(loc.table_oid)) {
                if let Some(a) = child.attributes.iter().find(|a| a.name == name) {
                    by_attribute.insert((child.oid, a.attnum), column);
                }
            }
        }
        let mut same_named: HashMap<String, Vec<NamedRelation>> = HashMap::new();
        for r in relations {
            same_named.entry(r.name.clone()).or_default().push(r);
        }
        SchemaSnapshot {
            database,
            policy_generation: policy.generation(),
            loaded_at: Instant::now(),
            tables,
            locations,
            by_attribute,
            views,
            same_named,
            reach: ReachSet::default(),
            reach_oids: ReachOids::default(),
        }
    }

    /// The same snapshot with its reach set (the loader computes it last).
    pub fn with_reach(mut self, reach: ReachSet) -> SchemaSnapshot {
        self.reach = reach;
        self
    }

    /// The same snapshot with the reach by OID (the loader sets it with [`Self::with_reach`]).
    pub fn with_reach_oids(mut self, oids: ReachOids) -> SchemaSnapshot {
        self.reach_oids = oids;
        self
    }

    /// Every reaching relation and function, by OID.
    pub fn reach_oids(&self) -> &ReachOids {
        &self.reach_oids
    }

    /// Every relation and function that can reach a protected column.
    pub fn reach(&self) -> &ReachSet {
        &self.reach
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The policy generation this snapshot was resolved against.
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation
    }

    pub fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    /// Every policy column that does not resolve in this database, with the reason.
    pub fn problems(&self) -> Vec<&CatalogError> {
        self.locations
            .iter()
            .filter_map(|l| l.as_ref().err())
            .collect()
    }

    /// Where a policy column lives. Err (naming the column, with a SQLSTATE) when it does not
    /// resolve: a statement touching it must be refused.
    pub fn location(&self, column: ColumnRef) -> Result<ColumnLocation, CatalogError> {
        match self.locations.get(column.0 as usize) {
            Some(l) => l.clone(),
            None => Err(CatalogError::Config(format!(
                "column #{} is not part of policy generation {}",
                column.0, self.policy_generation
            ))),
        }
    }

    /// The policy column stored at (table OID, attnum): RowDescription's origin fields.
    /// A view's OID never maps here; use [`SchemaSnapshot::view`] and the view's lineage.
    pub fn column_at(&self, table_oid: Oid, attnum: i16) -> Option<ColumnRef> {
        self.by_attribute.get(&(table_oid, attnum)).copied()
    }

    /// The protected tables that resolved.
    pub fn tables(&self) -> &[ProtectedTable] {
        &self.tables
    }

    pub fn table(&self, oid: Oid) -> Option<&ProtectedTable> {
        self.tables.iter().find(|t| t.oid == oid)
    }

    pub fn table_by_name(&self, name: &TableName) -> Option<&ProtectedTable> {
        self.tables.iter().find(|t| &t.name == name)
    }

    /// Views and materialized views reading (transitively) from a protected table.
    pub fn views(&self) -> &[DependentView] {
        &self.views
    }

    pub fn view(&self, oid: Oid) -> Option<&DependentView> {
        self.views.iter().find(|v| v.oid == oid)
    }

    pub fn view_by_name(&self, name: &TableName) -> Option<&DependentView> {
        self.views.iter().find(|v| &v.name == name)
    }

    /// Whether this OID is a protected table or a view over one: its results need analysis.
    pub fn is_sensitive_relation(&self, oid: Oid) -> bool {
        self.table(oid).is_some() || self.view(oid).is_some()
    }

    /// Every relation named `name` in any schema, if `name` is the name of a protected
    /// table or dependent view; empty otherwise.
    pub fn relations_named(&self, name: &str) -> &[NamedRelation] {
        self.same_named.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}
