//! What in one database can reach a protected column ([`ReachSet`]), computed from the
//! catalog at the end of every snapshot load.
//!
//! - **Protected**: the policy tables and their partitions / inheritance children.
//! - **View**: views and materialized views reading a reaching relation or calling a
//!   reaching function (pg_depend through their `_RETURN` rule), transitively.
//! - **Ancestor**: inheritance parents and partitioned ancestors of protected tables.
//! - **Indirect**: relations whose rules, triggers, row-security policies, defaults,
//!   generated columns or CHECK constraints read a reaching relation or call a reaching
//!   function.
//! - **Functions**: user functions and procedures whose body names a reaching relation or
//!   function (a case-insensitive word match: conservative), runs dynamic SQL (plpgsql
//!   `EXECUTE`; any other procedural language can run SQL strings, so it always counts),
//!   or calls a catalogued SQL-executing built-in; C functions named in that catalogue
//!   (dblink). Calls to built-ins hidden in stored expression trees (where pg_depend
//!   records nothing, since built-ins are pinned) are found by their OIDs in the trees.
//!
//! Everything iterates to a fixpoint (functions calling functions, views over views over
//! functions, triggers calling those). Read-only queries; no data value is ever read.

use std::collections::{HashMap, HashSet};

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::policy::TableName;
use crate::sql::builtins::{SQL_EXECUTING_FUNCTIONS, VALUE_EXPOSING_RELATIONS};
use crate::sql::RelationReach;

use super::connect::CatalogConn;
use super::error::CatalogError;
use super::schema::{
    DependentView, Oid, ProtectedTable, ReachOids, ReachSet, ReachingFunction, ReachingRelation,
};

/// Schemas whose objects are PostgreSQL's own.
const SYSTEM_SCHEMAS: &str = "('pg_catalog', 'information_schema', 'pg_toast')";

const ANCESTORS_SQL: &str = "\
WITH RECURSIVE up(oid) AS ( \
  SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = ANY($1::oid[]) \
  UNION \
  SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid \
) \
SELECT c.oid, n.nspname::text, c.relname::text \
FROM up JOIN pg_class c ON c.oid = up.oid JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p', 'f') \
ORDER BY c.oid";

/// User functions and procedures, with their body text. `{BODY}` is replaced by the body
/// expression (SQL-standard bodies exist from PostgreSQL 14 on).
const FUNCTIONS_SQL: &str = "\
SELECT p.oid, n.nspname::text, p.proname::text, l.lanname::text, {BODY}, p.prosecdef \
FROM pg_proc p \
JOIN pg_namespace n ON n.oid = p.pronamespace \
JOIN pg_language l ON l.oid = p.prolang \
WHERE n.nspname::text NOT IN {SYSTEM} OR p.proname::text = ANY($1::text[]) \
ORDER BY p.oid";

const BODY_14: &str = "CASE WHEN p.prosqlbody IS NOT NULL \
     THEN coalesce(pg_get_function_sqlbody(p.oid), '') || ' ' || p.prosqlbody::text \
     ELSE coalesce(p.prosrc, '') END";
const BODY_OLD: &str = "coalesce(p.prosrc, '')";

/// Dependencies of relations (through their rules, triggers, policies, defaults and
/// generated columns, CHECK constraints) and of SQL-standard function bodies, on
/// relations and functions. `src_kind`: 'v' for a view's own rule, 'i' for anything else
/// on a relation, 'f' for a function.
const EDGES_SQL: &str = "\
WITH e(src, src_kind, ref_is_func, ref) AS ( \
  SELECT r.ev_class, CASE WHEN c.relkind IN ('v', 'm') AND r.rulename = '_RETURN' \
                          THEN 'v' ELSE 'i' END, \
         d.refclassid = 'pg_proc'::regclass, d.refobjid \
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
  JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
  WHERE d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass) \
  UNION ALL \
  SELECT t.tgrelid, 'i', true, t.tgfoid FROM pg_trigger t WHERE NOT t.tgisinternal \
  UNION ALL \
  SELECT t.tgrelid, 'i', d.refclassid = 'pg_proc'::regclass, d.refobjid \
  FROM pg_trigger t JOIN pg_depend d ON d.classid = 'pg_trigger'::regclass AND d.objid = t.oid \
  WHERE NOT t.tgisinternal \
    AND d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass) \
  UNION ALL \
  SELECT p.polrelid, 'i', d.refclassid = 'pg_proc'::regclass, d.refobjid \
  FROM pg_policy p JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid \
  WHERE d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass) \
  UNION ALL \
  SELECT a.adrelid, 'i', d.refclassid = 'pg_proc'::regclass, d.refobjid \
  FROM pg_attrdef a JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = a.oid \
  WHERE d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass) \
  UNION ALL \
  SELECT k.conrelid, 'i', d.refclassid = 'pg_proc'::regclass, d.refobjid \
  FROM pg_constraint k \
  JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = k.oid \
  WHERE k.contype = 'c' AND k.conrelid <> 0 \
    AND d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass) \
  UNION ALL \
  SELECT d.objid, 'f', d.refclassid = 'pg_proc'::regclass, d.refobjid \
  FROM pg_depend d \
  WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'n' \
    AND d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass) \
) \
SELECT DISTINCT e.src, e.src_kind, e.ref_is_func, e.ref, \
       coalesce(n.nspname::text, ''), coalesce(c.relname::text, '') \
FROM e \
LEFT JOIN pg_class c ON c.oid = e.src AND e.src_kind <> 'f' \
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE e.src <> e.ref AND (e.src_kind = 'f' OR c.oid IS NOT NULL)";

/// Relations whose stored expression trees (rules, policies, defaults, CHECK constraints)
/// call one of the given functions: pg_depend records no dependency on pinned built-ins.
const TREE_CALLS_SQL: &str = "\
WITH t(src, src_kind, tree) AS ( \
  SELECT r.ev_class, CASE WHEN c.relkind IN ('v', 'm') AND r.rulename = '_RETURN' \
                          THEN 'v' ELSE 'i' END, \
         r.ev_action::text || ' ' || coalesce(r.ev_qual::text, '') \
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
  UNION ALL \
  SELECT p.polrelid, 'i', coalesce(p.polqual::text, '') || ' ' || coalesce(p.polwithcheck::text, '') \
  FROM pg_policy p \
  UNION ALL \
  SELECT a.adrelid, 'i', a.adbin::text FROM pg_attrdef a \
  UNION ALL \
  SELECT k.conrelid, 'i', coalesce(k.conbin::text, '') FROM pg_constraint k \
  WHERE k.contype = 'c' AND k.conrelid <> 0 \
) \
SELECT DISTINCT t.src, t.src_kind, n.nspname::text, c.relname::text \
FROM t JOIN pg_class c ON c.oid = t.src JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE n.nspname::text NOT IN ('pg_catalog', 'information_schema') AND t.tree ~ $1";

fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize, conn: &CatalogConn) -> Result<T, CatalogError> {
    row.try_get(i)
        .map_err(|e| conn.query_err("decoding a reach row", &e))
}

/// A user function as the reach computation sees it.
#[derive(Debug, Clone)]
pub(crate) struct FunctionFacts {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    pub language: String,
    /// Lower-cased identifier-like words of the body.
    pub words: HashSet<String>,
    pub security_definer: bool,
}

/// An edge: `src` (a relation, or a function when `src_is_func`) depends on `ref`.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub src: Oid,
    pub src_kind: EdgeSource,
    pub src_name: Option<TableName>,
    pub ref_is_func: bool,
    pub reference: Oid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeSource {
    /// A view's or materialized view's own query.
    View,
    /// A rule, trigger, policy, default or CHECK constraint of a relation.
    Indirect,
    /// A SQL-standard function body.
    Function,
}

/// Everything the fixpoint needs, read from the catalog.
#[derive(Debug, Default)]
pub(crate) struct ReachInputs {
    /// Protected tables, their children, and (from VIEWS_SQL) dependent views.
    pub protected: Vec<(Oid, TableName)>,
    pub views: Vec<(Oid, TableName)>,
    pub ancestors: Vec<(Oid, TableName)>,
    pub functions: Vec<FunctionFacts>,
    pub edges: Vec<Edge>,
}

/// The lower-cased identifier-like words of `text` (letters, digits, `_`, `$`, and any
/// non-ASCII character, which PostgreSQL also allows in identifiers).
pub(crate) fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn builtin_word(words: &HashSet<String>) -> Option<&'static str> {
    SQL_EXECUTING_FUNCTIONS
        .iter()
        .chain(VALUE_EXPOSING_RELATIONS)
        .copied()
        .find(|b| words.contains(*b))
}

impl FunctionFacts {
    /// Why this function reaches by itself (independent of what else reaches), if it does.
    fn static_reason(&self) -> Option<String> {
        match self.language.as_str() {
            "c" | "internal" => SQL_EXECUTING_FUNCTIONS
                .contains(&self.name.as_str())
                .then(|| format!("it is the SQL-executing built-in {}", self.name)),
            "sql" => builtin_word(&self.words).map(|b| format!("it calls {b}")),
            "plpgsql" => {
                if self.words.contains("execute") {
                    Some("it runs dynamic SQL (EXECUTE)".into())
                } else {
                    builtin_word(&self.words).map(|b| format!("it calls {b}"))
                }
            }
            other => Some(format!(
                "it is written in {other}, which can run any SQL string"
            )),
        }
    }

    fn is_c(&self) -> bool {
        matches!(self.language.as_str(), "c" | "internal")
    }
}

/// Computes the reach fixpoint (pure; the loader feeds it).
pub(crate) fn compute(inputs: &ReachInputs) -> (ReachSet, ReachOids) {
    let mut reach = Fixpoint::seed(inputs);
    while reach.step() {}
    reach.into_sets()
}

/// What reaches so far, while [`compute`] iterates.
struct Fixpoint<'a> {
    inputs: &'a ReachInputs,
    by_oid: HashMap<Oid, &'a FunctionFacts>,
    relations: HashMap<Oid, (TableName, RelationReach)>,
    /// Reaching functions and why each reaches.
    functions: HashMap<Oid, String>,
    /// Lower-cased names of everything reaching: a function body naming one reaches.
    names: HashSet<String>,
}

impl<'a> Fixpoint<'a> {
    /// The protected relations, their views and ancestors, and the functions that reach
    /// by themselves.
    fn seed(inputs: &'a ReachInputs) -> Fixpoint<'a> {
        let mut fp = Fixpoint {
            inputs,
            by_oid: inputs.functions.iter().map(|f| (f.oid, f)).collect(),
            relations: HashMap::new(),
            functions: HashMap::new(),
            names: HashSet::new(),
        };
        for (list, reach) in [
            (&inputs.protected, RelationReach::Protected),
            (&inputs.views, RelationReach::View),
            (&inputs.ancestors, RelationReach::Ancestor),
        ] {
            for (oid, name) in list {
                fp.names.insert(name.name.to_lowercase());
                fp.relations.entry(*oid).or_insert((name.clone(), reach));
            }
        }
        for f in &inputs.functions {
            if let Some(why) = f.static_reason() {
                fp.names.insert(f.name.to_lowercase());
                fp.functions.insert(f.oid, why);
            }
        }
        fp
    }

    /// One round over function bodies and dependency edges; true if anything was added.
    fn step(&mut self) -> bool {
        let mut changed = false;
        for f in &self.inputs.functions {
            if self.functions.contains_key(&f.oid) || f.is_c() {
                continue;
            }
            if let Some(w) = f.words.iter().find(|w| self.names.contains(*w)) {
                self.functions.insert(f.oid, format!("its body names {w}"));
                self.names.insert(f.name.to_lowercase());
                changed = true;
            }
        }
        for e in &self.inputs.edges {
            changed |= self.follow(e);
        }
        changed
    }

    /// Marks the source of `e` as reaching when what it refers to reaches; true if new.
    fn follow(&mut self, e: &Edge) -> bool {
        let reaches = if e.ref_is_func {
            self.functions.contains_key(&e.reference)
        } else {
            self.relations.contains_key(&e.reference)
        };
        if !reaches {
            return false;
        }
        match (e.src_kind, &e.src_name) {
            (EdgeSource::Function, _) => {
                if self.functions.contains_key(&e.src) {
                    return false;
                }
                let why = match self.by_oid.get(&e.reference) {
                    Some(f) if e.ref_is_func => format!("it calls {}", f.name),
                    _ => match self.relations.get(&e.reference) {
                        Some((n, _)) => format!("it reads {n}"),
                        None => "it depends on a reaching object".into(),
                    },
                };
                self.functions.insert(e.src, why);
                if let Some(f) = self.by_oid.get(&e.src) {
                    self.names.insert(f.name.to_lowercase());
                }
                true
            }
            (kind, Some(name)) => {
                if self.relations.contains_key(&e.src) {
                    return false;
                }
                let reach = if kind == EdgeSource::View {
                    RelationReach::View
                } else {
                    RelationReach::Indirect
                };
                self.relations.insert(e.src, (name.clone(), reach));
                self.names.insert(name.name.to_lowercase());
                true
            }
            (_, None) => false,
        }
    }

    /// The result, relations by OID and functions in catalog order.
    fn into_sets(self) -> (ReachSet, ReachOids) {
        let mut set = ReachSet::default();
        let mut oids = ReachOids::default();
        let mut rels: Vec<_> = self.relations.into_iter().collect();
        rels.sort_by_key(|(oid, _)| *oid);
        for (oid, (name, reach)) in rels {
            set.relations
                .insert((name.schema.clone(), name.name.clone()), reach);
            oids.relations.push(ReachingRelation { oid, name, reach });
        }
        for f in &self.inputs.functions {
            let Some(why) = self.functions.get(&f.oid) else {
                continue;
            };
            let schemas = set.functions.entry(f.name.clone()).or_default();
            if !schemas.contains(&f.schema) {
                schemas.push(f.schema.clone());
            }
            oids.functions.push(ReachingFunction {
                oid: f.oid,
                schema: f.schema.clone(),
                name: f.name.clone(),
                security_definer: f.security_definer,
                why: why.clone(),
            });
        }
        (set, oids)
    }
}

impl CatalogConn {
    /// Reads what [`compute`] needs and computes the reach of this database.
    pub(crate) async fn load_reach(
        &self,
        tables: &[ProtectedTable],
        views: &[DependentView],
    ) -> Result<(ReachSet, ReachOids), CatalogError> {
        if tables.is_empty() {
            return Ok((ReachSet::default(), ReachOids::default()));
        }
        let mut inputs = ReachInputs {
            protected: tables.iter().map(|t| (t.oid, t.name.clone())).collect(),
            views: views.iter().map(|v| (v.oid, v.name.clone())).collect(),
            ..ReachInputs::default()
        };
        inputs.ancestors = self.reach_ancestors(tables).await?;
        inputs.functions = self.reach_functions().await?;
        inputs.edges = self.reach_edges().await?;
        let tree_calls = self.reach_tree_calls(&inputs.functions).await?;
        inputs.edges.extend(tree_calls);
        Ok(compute(&inputs))
    }

    /// Inheritance parents and partitioned ancestors of the protected tables.
    async fn reach_ancestors(
        &self,
        tables: &[ProtectedTable],
    ) -> Result<Vec<(Oid, TableName)>, CatalogError> {
        let oids: Vec<Oid> = tables.iter().map(|t| t.oid).collect();
        let rows = self
            .client
            .query(ANCESTORS_SQL, &[&oids])
            .await
            .map_err(|e| self.query_err("inheritance ancestors", &e))?;
        let mut ancestors = Vec::new();
        for row in &rows {
            ancestors.push((
                col(row, 0, self)?,
                TableName::new(col::<String>(row, 1, self)?, col::<String>(row, 2, self)?),
            ));
        }
        Ok(ancestors)
    }

    /// User functions and procedures (and the catalogued C built-ins), with their words.
    async fn reach_functions(&self) -> Result<Vec<FunctionFacts>, CatalogError> {
        let body = if self.server_version >= 140000 {
            BODY_14
        } else {
            BODY_OLD
        };
        let sql = FUNCTIONS_SQL
            .replace("{BODY}", body)
            .replace("{SYSTEM}", SYSTEM_SCHEMAS);
        let builtins: Vec<&str> = SQL_EXECUTING_FUNCTIONS.to_vec();
        let rows = self
            .client
            .query(&sql, &[&builtins])
            .await
            .map_err(|e| self.query_err("user functions", &e))?;
        let mut functions = Vec::new();
        for row in &rows {
            let body: String = col(row, 4, self)?;
            functions.push(FunctionFacts {
                oid: col(row, 0, self)?,
                schema: col(row, 1, self)?,
                name: col(row, 2, self)?,
                language: col(row, 3, self)?,
                words: words(&body),
                security_definer: col(row, 5, self)?,
            });
        }
        Ok(functions)
    }

    /// pg_depend edges from views, relations' rules and the like, and function bodies.
    async fn reach_edges(&self) -> Result<Vec<Edge>, CatalogError> {
        let rows = self
            .client
            .query(EDGES_SQL, &[])
            .await
            .map_err(|e| self.query_err("dependencies", &e))?;
        let mut edges = Vec::new();
        for row in &rows {
            let kind: String = col(row, 1, self)?;
            let schema: String = col(row, 4, self)?;
            let name: String = col(row, 5, self)?;
            edges.push(Edge {
                src: col(row, 0, self)?,
                src_kind: match kind.as_str() {
                    "v" => EdgeSource::View,
                    "f" => EdgeSource::Function,
                    _ => EdgeSource::Indirect,
                },
                src_name: (kind != "f").then(|| TableName::new(schema, name)),
                ref_is_func: col(row, 2, self)?,
                reference: col(row, 3, self)?,
            });
        }
        Ok(edges)
    }

    /// Calls to catalogued built-ins inside stored expression trees: an edge to the
    /// built-in (which reaches by itself, see FunctionFacts::static_reason).
    async fn reach_tree_calls(
        &self,
        functions: &[FunctionFacts],
    ) -> Result<Vec<Edge>, CatalogError> {
        let builtin_oids: Vec<Oid> = functions
            .iter()
            .filter(|f| f.is_c() && SQL_EXECUTING_FUNCTIONS.contains(&f.name.as_str()))
            .map(|f| f.oid)
            .collect();
        let Some(first) = builtin_oids.first().copied() else {
            return Ok(Vec::new());
        };
        let alternatives: Vec<String> = builtin_oids.iter().map(|o| o.to_string()).collect();
        let pattern = format!(":funcid ({}) ", alternatives.join("|"));
        let rows = self
            .client
            .query(TREE_CALLS_SQL, &[&pattern])
            .await
            .map_err(|e| self.query_err("built-in calls in expressions", &e))?;
        let mut edges = Vec::new();
        for row in &rows {
            let kind: String = col(row, 1, self)?;
            edges.push(Edge {
                src: col(row, 0, self)?,
                src_kind: if kind == "v" {
                    EdgeSource::View
                } else {
                    EdgeSource::Indirect
                },
                src_name: Some(TableName::new(
                    col::<String>(row, 2, self)?,
                    col::<String>(row, 3, self)?,
                )),
                ref_is_func: true,
                // Any catalogued built-in: each reaches by itself.
                reference: first,
            });
        }
        Ok(edges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(oid: Oid, name: &str, language: &str, body: &str) -> FunctionFacts {
        FunctionFacts {
            oid,
            schema: "public".into(),
            name: name.into(),
            language: language.into(),
            words: words(body),
            security_definer: false,
        }
    }

    fn t(name: &str) -> TableName {
        TableName::new("public", name)
    }

    #[test]
    fn words_fold_case_and_split_on_punctuation() {
        let w = words("SELECT \"Orders\".x FROM sales.\"Orders\"; EXECUTE format($q$..$q$)");
        for expected in ["orders", "sales", "execute", "format", "$q$"] {
            assert!(w.contains(expected), "{expected}: {w:?}");
        }
    }

    #[test]
    fn functions_views_and_triggers_reach_through_a_fixpoint() {
        let inputs = ReachInputs {
            protected: vec![(10, t("Customers"))],
            functions: vec![
                f(
                    100,
                    "read_it",
                    "sql",
                    "select phone from public.\"Customers\"",
                ),
                f(101, "wrap", "plpgsql", "begin return read_it(); end"),
                f(102, "dyn", "plpgsql", "begin execute 'select 1'; end"),
                f(103, "innocent", "sql", "select 1 from other"),
                f(
                    104,
                    "xmlish",
                    "sql",
                    "select query_to_xml('x', true, true, '')",
                ),
                f(105, "py", "plpython3u", "return 1"),
                f(106, "dblink", "c", "dblink_record"),
                f(107, "crypt", "c", "pg_crypt"),
            ],
            edges: vec![
                Edge {
                    src: 20,
                    src_kind: EdgeSource::View,
                    src_name: Some(t("v_wrap")),
                    ref_is_func: true,
                    reference: 101,
                },
                Edge {
                    src: 21,
                    src_kind: EdgeSource::View,
                    src_name: Some(t("v_over_v")),
                    ref_is_func: false,
                    reference: 20,
                },
                Edge {
                    src: 30,
                    src_kind: EdgeSource::Indirect,
                    src_name: Some(t("audited")),
                    ref_is_func: true,
                    reference: 102,
                },
                Edge {
                    src: 31,
                    src_kind: EdgeSource::Indirect,
                    src_name: Some(t("unrelated")),
                    ref_is_func: true,
                    reference: 103,
                },
            ],
            ..ReachInputs::default()
        };
        let (set, oids) = compute(&inputs);
        assert_eq!(
            set.relation("public", "Customers"),
            Some(RelationReach::Protected)
        );
        assert_eq!(set.relation("public", "v_wrap"), Some(RelationReach::View));
        assert_eq!(
            set.relation("public", "v_over_v"),
            Some(RelationReach::View)
        );
        assert_eq!(
            set.relation("public", "audited"),
            Some(RelationReach::Indirect)
        );
        assert_eq!(set.relation("public", "unrelated"), None);
        for name in ["read_it", "wrap", "dyn", "xmlish", "py", "dblink"] {
            assert!(set.function(Some("public"), name), "{name}");
        }
        for name in ["innocent", "crypt"] {
            assert!(!set.function(None, name), "{name}");
        }
        assert_eq!(oids.functions.len(), 6);
    }
}
