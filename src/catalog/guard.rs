//! The second line of defence: PostgreSQL configured from the policy, so that what the
//! proxy cannot see (a connection that bypasses it, SQL executed inside the server,
//! catalog views) is still refused by PostgreSQL itself. `pgcloak check --database`
//! compares the live database with the policy and prints the DDL that closes each gap:
//!
//! - **Privileges.** A role whose view of a protected column is `null` or `deny` (its own
//!   entry and the roles it can use, PUBLIC's fallback when none is listed: as pgcloak
//!   decides) holds no SELECT on that column. A column REVOKE does not override a
//!   table-level GRANT, so a table-level grant becomes `REVOKE SELECT ON t FROM r;
//!   GRANT SELECT (other columns) ON t TO r;`. Owners and superusers can always read:
//!   they are named as warnings.
//! - **Statistics.** Protected columns carry `SET STATISTICS 0`, and hold no statistics
//!   (pg_statistic rows, extended statistics), which would otherwise keep about a hundred
//!   envelopes per column in `pg_stats`.
//! - **Built-ins.** EXECUTE on each SQL-executing built-in of
//!   [`crate::sql::builtins::SQL_EXECUTING_FUNCTIONS`] is revoked from PUBLIC, except
//!   where the policy's `functions.allow` names it.
//!
//! The envelope CHECK constraints are `constraints.rs`. Read-only: nothing here changes
//! the database; the DDL is printed for the DBA (and run by `pgcloak demo`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::policy::{ColumnRef, Policy, RoleName, View};
use crate::sql::builtins::SQL_EXECUTING_FUNCTIONS;

use super::connect::CatalogConn;
use super::error::CatalogError;
use super::ident::{quote_ident, quote_qualified};
use super::schema::{Oid, SchemaSnapshot};
use super::session_reach::protected_columns;

/// Which layer of the database-side guard a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardKind {
    Privilege,
    Statistics,
    Builtin,
}

impl GuardKind {
    pub fn name(self) -> &'static str {
        match self {
            GuardKind::Privilege => "privileges",
            GuardKind::Statistics => "statistics",
            GuardKind::Builtin => "built-ins",
        }
    }
}

/// One way the database is looser than the policy, with the DDL that fixes it (run as a
/// superuser or the objects' owner). `ddl` may be empty when only the DBA can decide
/// (the message then says what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardFinding {
    pub kind: GuardKind,
    pub what: String,
    pub ddl: Vec<String>,
}

/// What the guard check found in one database.
#[derive(Debug, Clone, Default)]
pub struct GuardReport {
    /// The database is looser than the policy here (`check` exits 1; `strict` refuses).
    pub findings: Vec<GuardFinding>,
    /// Facts the DBA must know but DDL cannot change (owners, superusers, statistics the
    /// catalog role cannot see).
    pub warnings: Vec<String>,
}

const ROLES_SQL: &str = "\
SELECT r.rolname::text, r.rolsuper, \
       array(SELECT g.rolname::text FROM pg_roles g WHERE pg_has_role(r.oid, g.oid, 'USAGE')) \
FROM pg_roles r \
ORDER BY 1";

const RELATIONS_SQL: &str = "\
SELECT c.oid, n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text, \
       array(SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee)::text END \
             FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) x \
             WHERE x.privilege_type = 'SELECT'), \
       array(SELECT a.attname::text FROM pg_attribute a \
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE c.oid = ANY($1::oid[]) AND c.relkind IN ('r', 'p') \
ORDER BY c.oid";

/// Per protected column: column-level SELECT grantees, statistics target, and (when the
/// catalog role can tell) whether statistics are stored. `{STATS}` is [`STATS_DIRECT`] or
/// [`STATS_VIEW`]: PostgreSQL checks permissions on every relation a query names, even in
/// a CASE branch never taken, so the choice is made before the query is sent.
const COLUMNS_SQL: &str = "\
SELECT p.rel, p.col, \
       array(SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee)::text END \
             FROM aclexplode(a.attacl) x WHERE x.privilege_type = 'SELECT'), \
       coalesce(a.attstattarget::int, -1), \
       {STATS} \
FROM unnest($1::oid[], $2::text[]) AS p(rel, col) \
JOIN pg_attribute a ON a.attrelid = p.rel AND a.attname::text = p.col \
     AND a.attnum > 0 AND NOT a.attisdropped \
ORDER BY 1, 2";

/// A superuser (or a role granted it) reads pg_statistic itself.
const STATS_DIRECT: &str = "EXISTS (SELECT 1 FROM pg_statistic s \
    WHERE s.starelid = p.rel AND s.staattnum = a.attnum)";

/// Others see pg_stats rows only for columns they may read; NULL: cannot tell.
const STATS_VIEW: &str = "CASE WHEN has_column_privilege(p.rel, a.attnum, 'SELECT') \
    THEN EXISTS (SELECT 1 FROM pg_stats s JOIN pg_class c ON c.oid = p.rel \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE s.schemaname = n.nspname AND s.tablename = c.relname \
                   AND s.attname = a.attname) END";

const CAN_READ_STATISTIC_SQL: &str =
    "SELECT has_table_privilege('pg_catalog.pg_statistic', 'SELECT')";

/// Extended statistics objects covering a protected column (their MCV lists hold values).
const EXT_STATS_SQL: &str = "\
SELECT DISTINCT n.nspname::text, s.stxname::text, p.col \
FROM unnest($1::oid[], $2::text[]) AS p(rel, col) \
JOIN pg_attribute a ON a.attrelid = p.rel AND a.attname::text = p.col \
JOIN pg_statistic_ext s ON s.stxrelid = p.rel AND a.attnum = ANY(s.stxkeys::int2[]) \
JOIN pg_namespace n ON n.oid = s.stxnamespace \
ORDER BY 1, 2";

const BUILTINS_SQL: &str = "\
SELECT n.nspname::text, p.proname::text, \
       format('%s.%s(%s)', quote_ident(n.nspname), quote_ident(p.proname), \
              oidvectortypes(p.proargtypes)), \
       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x \
               WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE') \
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
WHERE p.proname::text = ANY($1::text[]) \
ORDER BY 3";

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn grantee_sql(g: &str) -> String {
    if g == "PUBLIC" {
        "PUBLIC".into()
    } else {
        quote_ident(g)
    }
}

/// `DELETE FROM pg_statistic` for one column: PostgreSQL 15 has no function that clears a
/// column's statistics, and `SET STATISTICS 0` + ANALYZE keeps the old rows.
pub fn clear_statistics_sql(schema: &str, table: &str, column: &str) -> String {
    let rel = literal(&quote_qualified(schema, table));
    format!(
        "DELETE FROM pg_catalog.pg_statistic WHERE starelid = {rel}::regclass AND staattnum = \
         (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = {rel}::regclass AND attname = {});",
        literal(column)
    )
}

struct Role {
    superuser: bool,
    usable: Vec<RoleName>,
}

struct Relation {
    schema: String,
    name: String,
    owner: String,
    table_select: BTreeSet<String>,
    columns: Vec<String>,
}

/// What the catalog says about one protected column.
struct ColumnFacts {
    select: BTreeSet<String>,
    stattarget: i32,
    has_stats: Option<bool>,
}

fn is_closed(v: View) -> bool {
    matches!(v, View::Null | View::Deny)
}

/// What the sections of the check share: the policy and the live catalog's roles,
/// relations and protected columns.
struct GuardFacts<'a> {
    policy: &'a Policy,
    snapshot: &'a SchemaSnapshot,
    roles: BTreeMap<String, Role>,
    relations: BTreeMap<Oid, Relation>,
    columns: BTreeMap<(Oid, String), ColumnFacts>,
    /// pgcloak's own catalog role: it samples stored envelopes against the keyring
    /// (`check --database`) and only ever reads ciphertext; applications never log in as
    /// it, so a column grant to it is not a reader the policy closes.
    catalog_role: String,
}

impl GuardFacts<'_> {
    /// The policy columns a (relation, column name) stands for: itself for policy tables
    /// and their children, every same-named policy column for an ancestor.
    fn refs_of(&self, oid: Oid, col: &str) -> Vec<ColumnRef> {
        let snapshot = self.snapshot;
        let by_loc = snapshot.table(oid).and_then(|t| {
            t.attributes
                .iter()
                .find(|a| a.name == col)
                .and_then(|a| snapshot.column_at(oid, a.attnum))
        });
        match by_loc {
            Some(r) => vec![r],
            None => self
                .policy
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, c)| c.column == col)
                .map(|(i, _)| ColumnRef(i as u32))
                .collect(),
        }
    }

    /// The most restrictive view among the policy columns a relation column stands for.
    fn view_of(&self, usable: &[RoleName], refs: &[ColumnRef]) -> View {
        refs.iter()
            .map(|r| self.policy.access_for(usable.iter(), *r))
            .min()
            .unwrap_or(View::Deny)
    }

    fn public_view(&self, refs: &[ColumnRef]) -> View {
        refs.iter()
            .filter_map(|r| self.policy.get(*r).map(|c| c.public))
            .min()
            .unwrap_or(View::Deny)
    }

    // ---- privileges ----

    /// Every privilege gap, then the superuser warning.
    fn check_privileges(&self, report: &mut GuardReport) {
        // (relation, grantee) -> protected columns the grantee must not read.
        let mut closed: BTreeMap<(Oid, String), BTreeSet<String>> = BTreeMap::new();
        for ((oid, col), facts) in &self.columns {
            let Some(rel) = self.relations.get(oid) else {
                continue;
            };
            self.check_column_privileges(*oid, rel, col, facts, &mut closed, report);
        }
        for ((oid, g), denied) in &closed {
            let Some(rel) = self.relations.get(oid) else {
                continue;
            };
            report
                .findings
                .push(self.closed_grant_finding(*oid, rel, g, denied));
        }
        let supers: Vec<&str> = self
            .roles
            .iter()
            .filter(|(_, r)| r.superuser)
            .map(|(n, _)| n.as_str())
            .collect();
        if !supers.is_empty() && !self.columns.is_empty() {
            report.warnings.push(format!(
                "superuser(s) {} read every protected column directly (envelopes only, without \
                 the keys); PostgreSQL cannot restrict them: keep them few and audited",
                supers.join(", ")
            ));
        }
    }

    /// One protected column: grantees whose view is closed go to `closed`; members that
    /// inherit a grant, pg_read_all_data readers and a closed owner are reported.
    fn check_column_privileges(
        &self,
        oid: Oid,
        rel: &Relation,
        col: &str,
        facts: &ColumnFacts,
        closed: &mut BTreeMap<(Oid, String), BTreeSet<String>>,
        report: &mut GuardReport,
    ) {
        let refs = self.refs_of(oid, col);
        let label = format!(
            "{}.{}",
            quote_qualified(&rel.schema, &rel.name),
            quote_ident(col)
        );
        let sources: BTreeSet<&String> = rel.table_select.iter().chain(&facts.select).collect();
        for g in sources {
            if *g == rel.owner
                || *g == self.catalog_role
                || self.roles.get(g).is_some_and(|r| r.superuser)
            {
                continue;
            }
            let own_view = if g == "PUBLIC" {
                self.public_view(&refs)
            } else {
                match self.roles.get(g) {
                    Some(r) => self.view_of(&r.usable, &refs),
                    None => continue,
                }
            };
            if is_closed(own_view) {
                closed
                    .entry((oid, g.clone()))
                    .or_default()
                    .insert(col.to_owned());
                continue;
            }
            self.check_inherited_grant(g, own_view, &refs, &label, report);
        }
        self.check_read_all_data(&refs, &label, report);
        self.check_owner(rel, &refs, &label, report);
    }

    /// The grantee `g` may read the column, but members whose own view is closed inherit
    /// the privilege: PostgreSQL cannot say "everyone in g but m".
    fn check_inherited_grant(
        &self,
        g: &str,
        own_view: View,
        refs: &[ColumnRef],
        label: &str,
        report: &mut GuardReport,
    ) {
        for (m, r) in &self.roles {
            let inherits = g == "PUBLIC" || r.usable.iter().any(|u| u.0 == g);
            if m == g || r.superuser || m.starts_with("pg_") || !inherits {
                continue;
            }
            let v = self.view_of(&r.usable, refs);
            if is_closed(v) {
                report.findings.push(GuardFinding {
                    kind: GuardKind::Privilege,
                    what: format!(
                        "role {m} (view {}) can SELECT {label} through {g}, whose view \
                         is {}; revoke {m}'s membership in {g}, or grant SELECT on the \
                         table to the roles that need it instead of {g}",
                        v.name(),
                        own_view.name()
                    ),
                    ddl: Vec::new(),
                });
            }
        }
    }

    /// pg_read_all_data (PostgreSQL 14+) reads every column: no column REVOKE helps.
    fn check_read_all_data(&self, refs: &[ColumnRef], label: &str, report: &mut GuardReport) {
        for (m, r) in &self.roles {
            if r.superuser || m.starts_with("pg_") {
                continue;
            }
            let reads_all = r.usable.iter().any(|u| u.0 == "pg_read_all_data");
            if reads_all && is_closed(self.view_of(&r.usable, refs)) {
                report.findings.push(GuardFinding {
                    kind: GuardKind::Privilege,
                    what: format!(
                        "role {m} reads {label} through pg_read_all_data although its view is closed"
                    ),
                    ddl: vec![format!("REVOKE pg_read_all_data FROM {};", quote_ident(m))],
                });
            }
        }
    }

    /// The table's owner always reads it: a warning when its view is closed.
    fn check_owner(
        &self,
        rel: &Relation,
        refs: &[ColumnRef],
        label: &str,
        report: &mut GuardReport,
    ) {
        let owner_view = self
            .roles
            .get(&rel.owner)
            .map(|r| (r.superuser, self.view_of(&r.usable, refs)));
        if let Some((false, v)) = owner_view {
            if is_closed(v) {
                report.warnings.push(format!(
                    "{label}: the table's owner {} can always read it (its view is {}); make \
                     a role whose view is ciphertext or better the owner \
                     (ALTER TABLE ... OWNER TO ...)",
                    rel.owner,
                    v.name()
                ));
            }
        }
    }

    /// The finding and DDL for grantee `g`, which holds SELECT on the `denied` columns of
    /// one relation although its view closes them.
    fn closed_grant_finding(
        &self,
        oid: Oid,
        rel: &Relation,
        g: &str,
        denied: &BTreeSet<String>,
    ) -> GuardFinding {
        let table = quote_qualified(&rel.schema, &rel.name);
        let who = grantee_sql(g);
        let list = denied
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut ddl = Vec::new();
        if rel.table_select.contains(g) {
            // Every protected column closed to g, not only the ones it reads now.
            let keep: Vec<String> = rel
                .columns
                .iter()
                .filter(|c| !self.closed_to(oid, c, g))
                .map(|c| quote_ident(c))
                .collect();
            ddl.push(format!("REVOKE SELECT ON {table} FROM {who};"));
            if !keep.is_empty() {
                ddl.push(format!(
                    "GRANT SELECT ({}) ON {table} TO {who};",
                    keep.join(", ")
                ));
            }
        } else {
            ddl.push(format!("REVOKE SELECT ({list}) ON {table} FROM {who};"));
        }
        GuardFinding {
            kind: GuardKind::Privilege,
            what: format!(
                "{g} holds SELECT on {table} column(s) {list}, which its policy view \
                 (null or deny) closes"
            ),
            ddl,
        }
    }

    /// Whether `c` of relation `oid` is a protected column grantee `g`'s view closes.
    fn closed_to(&self, oid: Oid, c: &str, g: &str) -> bool {
        if !self.columns.contains_key(&(oid, c.to_owned())) {
            return false;
        }
        let refs = self.refs_of(oid, c);
        let v = if g == "PUBLIC" {
            self.public_view(&refs)
        } else {
            self.roles
                .get(g)
                .map(|r| self.view_of(&r.usable, &refs))
                .unwrap_or(View::Deny)
        };
        is_closed(v)
    }

    // ---- statistics ----

    /// Statistics targets and stored statistics of the protected columns.
    fn check_statistics(&self, report: &mut GuardReport) {
        let mut unknown_stats = Vec::new();
        for ((oid, col), facts) in &self.columns {
            let Some(rel) = self.relations.get(oid) else {
                continue;
            };
            let table = quote_qualified(&rel.schema, &rel.name);
            if facts.stattarget != 0 {
                report.findings.push(GuardFinding {
                    kind: GuardKind::Statistics,
                    what: format!(
                        "{table}.{} collects statistics (pg_stats would hold its envelopes)",
                        quote_ident(col)
                    ),
                    ddl: vec![format!(
                        "ALTER TABLE {table} ALTER COLUMN {} SET STATISTICS 0;",
                        quote_ident(col)
                    )],
                });
            }
            let clear = clear_statistics_sql(&rel.schema, &rel.name, col);
            match facts.has_stats {
                Some(true) => report.findings.push(GuardFinding {
                    kind: GuardKind::Statistics,
                    what: format!(
                        "{table}.{} has stored statistics (envelopes in pg_stats); clear them \
                         as a superuser",
                        quote_ident(col)
                    ),
                    ddl: vec![clear],
                }),
                Some(false) => {}
                None => unknown_stats.push(clear),
            }
        }
        if !unknown_stats.is_empty() {
            report.warnings.push(format!(
                "the catalog role can read neither pg_statistic nor the protected columns, so \
                 it cannot tell whether statistics are stored for them; as a superuser, run:\n    {}",
                unknown_stats.join("\n    ")
            ));
        }
    }
}

impl CatalogConn {
    /// Compares the database with the policy (see the module docs).
    pub async fn guard_check(
        &self,
        policy: &Policy,
        snapshot: &SchemaSnapshot,
    ) -> Result<GuardReport, CatalogError> {
        let mut report = GuardReport::default();
        let roles = self.guard_roles().await?;
        let pairs = protected_columns(snapshot);
        let rel_oids: Vec<Oid> = {
            let mut v: Vec<Oid> = pairs.iter().map(|(o, _)| *o).collect();
            v.dedup();
            v
        };
        let relations = self.guard_relations(&rel_oids).await?;
        let (cols_rel, cols_name): (Vec<Oid>, Vec<String>) = pairs.iter().cloned().unzip();
        let columns = self.guard_columns(&cols_rel, &cols_name).await?;
        let catalog_role = self.guard_current_user().await?;
        let facts = GuardFacts {
            policy,
            snapshot,
            roles,
            relations,
            columns,
            catalog_role,
        };
        facts.check_privileges(&mut report);
        facts.check_statistics(&mut report);
        self.check_extended_statistics(&cols_rel, &cols_name, &mut report)
            .await?;
        self.check_builtins(policy, &mut report).await?;
        Ok(report)
    }

    /// Maps a query error to [`CatalogError::Query`] for the step `what`.
    fn guard_err(
        &self,
        what: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> CatalogError + Copy + '_ {
        move |e: tokio_postgres::Error| self.query_err(what, &e)
    }

    // ---- roles ----

    async fn guard_roles(&self) -> Result<BTreeMap<String, Role>, CatalogError> {
        let err = self.guard_err("roles");
        let mut roles: BTreeMap<String, Role> = BTreeMap::new();
        for row in self.client.query(ROLES_SQL, &[]).await.map_err(err)? {
            let name: String = row.try_get(0).map_err(err)?;
            let superuser: bool = row.try_get(1).map_err(err)?;
            let usable: Vec<String> = row.try_get(2).map_err(err)?;
            roles.insert(
                name,
                Role {
                    superuser,
                    usable: usable.into_iter().map(RoleName).collect(),
                },
            );
        }
        Ok(roles)
    }

    // ---- protected columns and their relations ----

    async fn guard_relations(
        &self,
        rel_oids: &[Oid],
    ) -> Result<BTreeMap<Oid, Relation>, CatalogError> {
        let err = self.guard_err("relation privileges");
        let mut relations: BTreeMap<Oid, Relation> = BTreeMap::new();
        for row in self
            .client
            .query(RELATIONS_SQL, &[&rel_oids])
            .await
            .map_err(err)?
        {
            let oid: Oid = row.try_get(0).map_err(err)?;
            let grantees: Vec<String> = row.try_get(4).map_err(err)?;
            relations.insert(
                oid,
                Relation {
                    schema: row.try_get(1).map_err(err)?,
                    name: row.try_get(2).map_err(err)?,
                    owner: row.try_get(3).map_err(err)?,
                    table_select: grantees.into_iter().collect(),
                    columns: row.try_get(5).map_err(err)?,
                },
            );
        }
        Ok(relations)
    }

    async fn guard_columns(
        &self,
        cols_rel: &[Oid],
        cols_name: &[String],
    ) -> Result<BTreeMap<(Oid, String), ColumnFacts>, CatalogError> {
        let visibility = self.guard_err("statistics visibility");
        let direct: bool = self
            .client
            .query_one(CAN_READ_STATISTIC_SQL, &[])
            .await
            .map_err(visibility)?
            .try_get(0)
            .map_err(visibility)?;
        let columns_sql =
            COLUMNS_SQL.replace("{STATS}", if direct { STATS_DIRECT } else { STATS_VIEW });
        let e = self.guard_err("column privileges and statistics");
        let mut columns: BTreeMap<(Oid, String), ColumnFacts> = BTreeMap::new();
        for row in self
            .client
            .query(&columns_sql, &[&cols_rel, &cols_name])
            .await
            .map_err(e)?
        {
            let oid: Oid = row.try_get(0).map_err(e)?;
            let name: String = row.try_get(1).map_err(e)?;
            let select: Vec<String> = row.try_get(2).map_err(e)?;
            columns.insert(
                (oid, name),
                ColumnFacts {
                    select: select.into_iter().collect(),
                    stattarget: row.try_get(3).map_err(e)?,
                    has_stats: row.try_get(4).map_err(e)?,
                },
            );
        }
        Ok(columns)
    }

    async fn guard_current_user(&self) -> Result<String, CatalogError> {
        let err = self.guard_err("current user");
        self.client
            .query_one("SELECT current_user::text", &[])
            .await
            .map_err(err)?
            .try_get(0)
            .map_err(err)
    }

    // ---- statistics ----

    /// Extended statistics objects covering a protected column.
    async fn check_extended_statistics(
        &self,
        cols_rel: &[Oid],
        cols_name: &[String],
        report: &mut GuardReport,
    ) -> Result<(), CatalogError> {
        let e = self.guard_err("extended statistics");
        for row in self
            .client
            .query(EXT_STATS_SQL, &[&cols_rel, &cols_name])
            .await
            .map_err(e)?
        {
            let schema: String = row.try_get(0).map_err(e)?;
            let name: String = row.try_get(1).map_err(e)?;
            let col: String = row.try_get(2).map_err(e)?;
            report.findings.push(GuardFinding {
                kind: GuardKind::Statistics,
                what: format!(
                    "extended statistics {} cover protected column {}",
                    quote_qualified(&schema, &name),
                    quote_ident(&col)
                ),
                ddl: vec![format!(
                    "DROP STATISTICS {};",
                    quote_qualified(&schema, &name)
                )],
            });
        }
        Ok(())
    }

    // ---- SQL-executing built-ins ----

    async fn check_builtins(
        &self,
        policy: &Policy,
        report: &mut GuardReport,
    ) -> Result<(), CatalogError> {
        let e = self.guard_err("built-in functions");
        let names: Vec<&str> = SQL_EXECUTING_FUNCTIONS.to_vec();
        let mut builtin: HashMap<String, Vec<String>> = HashMap::new();
        for row in self
            .client
            .query(BUILTINS_SQL, &[&names])
            .await
            .map_err(e)?
        {
            let schema: String = row.try_get(0).map_err(e)?;
            let name: String = row.try_get(1).map_err(e)?;
            let signature: String = row.try_get(2).map_err(e)?;
            let public: bool = row.try_get(3).map_err(e)?;
            let allowed = policy.function_allowed(&name)
                || policy.function_allowed(&format!("{schema}.{name}"));
            if public && !allowed {
                builtin.entry(name).or_default().push(signature);
            }
        }
        let mut builtin: Vec<_> = builtin.into_iter().collect();
        builtin.sort();
        for (name, signatures) in builtin {
            report.findings.push(GuardFinding {
                kind: GuardKind::Builtin,
                what: format!(
                    "PUBLIC may EXECUTE {name}, which runs SQL inside the server where pgcloak \
                     cannot see it"
                ),
                ddl: signatures
                    .iter()
                    .map(|s| format!("REVOKE EXECUTE ON FUNCTION {s} FROM PUBLIC;"))
                    .collect(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_statistics_quotes_names_as_literals() {
        assert_eq!(
            clear_statistics_sql("Sales", "o'rders", "Card"),
            "DELETE FROM pg_catalog.pg_statistic WHERE starelid = '\"Sales\".\"o''rders\"'::regclass \
             AND staattnum = (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = \
             '\"Sales\".\"o''rders\"'::regclass AND attname = 'Card');"
        );
    }
}
