//! The analyser's view of one database: the catalog's snapshot plus the
//! lineage of every view that reads a protected table, derived once per
//! snapshot by analysing the view definitions themselves.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::catalog::SchemaSnapshot;
use crate::policy::TableName;
use crate::sql::{analyze, AnalysisContext, Lineage, NameSet, RelationReach, Schema};

use super::Protection;

/// [`Schema`] over a catalog snapshot, with view lineage precomputed.
pub struct SessionSchema {
    snapshot: Arc<SchemaSnapshot>,
    /// The fast path's names: everything in this database that can reach a protected
    /// column (relations, views, functions), plus the policy's own names.
    names: NameSet,
    views: HashMap<TableName, Vec<(String, Lineage)>>,
    generation: u64,
    policy_generation: u64,
}

impl SessionSchema {
    pub fn new(snapshot: Arc<SchemaSnapshot>, prot: &Protection, generation: u64) -> SessionSchema {
        let builder = Builder {
            snapshot: &snapshot,
            prot,
            memo: RefCell::new(HashMap::new()),
            busy: RefCell::new(HashSet::new()),
        };
        for v in snapshot.views() {
            let _ = builder.view_columns(&v.name);
        }
        let views = builder.memo.into_inner();
        let names = reach_names(&snapshot, prot);
        SessionSchema {
            snapshot,
            names,
            views,
            generation,
            policy_generation: prot.generation(),
        }
    }

    /// The same snapshot re-resolved for a newer policy generation, when every
    /// policy column of `prot` is the column the snapshot resolved at that index
    /// (a reload that changed access maps, masks or search rights). None when the
    /// column list changed: the snapshot's references would point at other
    /// columns, and statements on protected columns must wait for a new snapshot.
    pub fn for_generation(&self, prot: &Protection) -> Option<SessionSchema> {
        let snap = &self.snapshot;
        let columns = prot.policy.columns();
        if columns.len() != snap.locations.len() {
            return None;
        }
        for (c, loc) in columns.iter().zip(&snap.locations) {
            let loc = loc.as_ref().ok()?;
            let table = snap.table(loc.table_oid)?;
            let attr = table.attributes.iter().find(|a| a.attnum == loc.attnum)?;
            if table.name != c.table || attr.name != c.column {
                return None;
            }
        }
        // Same snapshot, same schema generation: the analysis cache key still
        // differs by policy generation.
        Some(SessionSchema::new(snap.clone(), prot, self.generation))
    }

    pub fn policy_generation(&self) -> u64 {
        self.policy_generation
    }

    pub fn snapshot(&self) -> &Arc<SchemaSnapshot> {
        &self.snapshot
    }

    /// The names a statement must contain to reach a protected column here.
    pub fn names(&self) -> &NameSet {
        &self.names
    }
}

/// The fast path's names for this snapshot: the policy's tables plus every relation,
/// view and function the catalog found that can reach a protected column, and the
/// built-ins catalogue (see [`NameSet::from_reach`]). Column names are not in it: a
/// statement that names no reaching relation cannot reach a protected column.
fn reach_names(snapshot: &SchemaSnapshot, prot: &Protection) -> NameSet {
    let reach = snapshot.reach();
    let relations = reach
        .relations
        .keys()
        .map(|(_, name)| name.as_str())
        .chain(snapshot.views().iter().map(|v| v.name.name.as_str()))
        .chain(snapshot.tables().iter().map(|t| t.name.name.as_str()));
    let functions = reach.functions.keys().map(String::as_str);
    NameSet::from_reach(&prot.policy, relations, functions)
}

fn table_exists(snapshot: &SchemaSnapshot, schema: &str, name: &str) -> bool {
    // A temporary table of another session is invisible to this one, and the
    // catalog cannot tell whose it is: assume none shadows (the protected reading).
    if schema == "pg_temp" {
        return false;
    }
    snapshot
        .relations_named(name)
        .iter()
        .any(|r| r.schema == schema)
}

fn table_columns(snapshot: &SchemaSnapshot, table: &TableName) -> Option<Vec<String>> {
    snapshot
        .table_by_name(table)
        .map(|t| t.attributes.iter().map(|a| a.name.clone()).collect())
}

impl Schema for SessionSchema {
    fn table_exists(&self, schema: &str, name: &str) -> bool {
        table_exists(&self.snapshot, schema, name)
    }

    fn table_columns(&self, table: &TableName) -> Option<Vec<String>> {
        table_columns(&self.snapshot, table)
    }

    fn view_columns(&self, view: &TableName) -> Option<Vec<(String, Lineage)>> {
        self.views.get(view).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn relation_reach(&self, schema: &str, name: &str) -> Option<RelationReach> {
        self.snapshot.reach().relation(schema, name)
    }

    fn function_reaches(&self, schema: Option<&str>, name: &str) -> bool {
        self.snapshot.reach().function(schema, name)
    }
}

/// Computes view lineage recursively (views over views), guarding against cycles.
struct Builder<'a> {
    snapshot: &'a SchemaSnapshot,
    prot: &'a Protection,
    memo: RefCell<HashMap<TableName, Vec<(String, Lineage)>>>,
    busy: RefCell<HashSet<TableName>>,
}

impl Schema for Builder<'_> {
    fn table_exists(&self, schema: &str, name: &str) -> bool {
        table_exists(self.snapshot, schema, name)
    }

    fn table_columns(&self, table: &TableName) -> Option<Vec<String>> {
        table_columns(self.snapshot, table)
    }

    fn view_columns(&self, view: &TableName) -> Option<Vec<(String, Lineage)>> {
        if let Some(v) = self.memo.borrow().get(view) {
            return Some(v.clone());
        }
        let def = self.snapshot.view_by_name(view)?;
        if !self.busy.borrow_mut().insert(view.clone()) {
            return None;
        }
        let search_path = vec!["pg_catalog".to_string()];
        let ctx = AnalysisContext {
            policy: &self.prot.policy,
            schema: self,
            search_path: &search_path,
            names: &self.prot.names,
            in_list_cap: usize::MAX,
            force_full_analysis: true,
        };
        let names: Vec<String> = def.attributes.iter().map(|a| a.name.clone()).collect();
        // Anything we cannot follow is Unknown: statements reading it are refused.
        let lineage: Vec<Lineage> = match analyze(&def.definition, &ctx) {
            Ok(plans) => match plans.first().and_then(|p| p.result.as_ref()) {
                Some(shape) if shape.columns.len() == names.len() => {
                    shape.columns.iter().map(|c| c.lineage).collect()
                }
                _ => vec![Lineage::Unknown; names.len()],
            },
            Err(_) => vec![Lineage::Unknown; names.len()],
        };
        let cols: Vec<(String, Lineage)> = names.into_iter().zip(lineage).collect();
        self.busy.borrow_mut().remove(view);
        self.memo.borrow_mut().insert(view.clone(), cols.clone());
        Some(cols)
    }
}
