//! Whether a login role, with every role it can become, can reach protected data at all
//! ([`SessionReach`]): the condition under which SQL pgcloak cannot see into (dynamic
//! SQL, SQL-executing built-ins, reaching user functions) may run.
//!
//! "Can become" is `pg_has_role(login, r, 'MEMBER')`: a NOINHERIT member can still
//! `SET ROLE` and use the role's privileges, so membership counts, not just usage.
//! The session reaches when any of those roles
//! - is a superuser;
//! - owns a reaching relation (an owner can grant itself anything);
//! - holds SELECT, INSERT, UPDATE or REFERENCES on a protected column (of a policy table,
//!   a partition or child, or a same-named column of an ancestor);
//! - holds any privilege on a reaching view or on a relation that reaches indirectly
//!   (views and rules run with their owner's privileges);
//! - holds EXECUTE on a reaching SECURITY DEFINER function.

use crate::policy::RoleName;
use crate::sql::{RelationReach, SessionReach};

use super::connect::CatalogConn;
use super::error::CatalogError;
use super::schema::{Oid, SchemaSnapshot};

const LOGIN_SQL: &str = "SELECT oid FROM pg_roles WHERE rolname::text = $1";

const SESSION_REACH_SQL: &str = "\
WITH me AS ( \
  SELECT r.oid, r.rolsuper FROM pg_roles r WHERE pg_has_role($1::oid, r.oid, 'MEMBER') \
) \
SELECT EXISTS (SELECT 1 FROM me WHERE me.rolsuper) \
    OR EXISTS (SELECT 1 FROM pg_class c JOIN me ON me.oid = c.relowner \
               WHERE c.oid = ANY($2::oid[])) \
    OR EXISTS (SELECT 1 FROM me \
               CROSS JOIN unnest($3::oid[], $4::text[]) AS p(rel, col) \
               JOIN pg_attribute a ON a.attrelid = p.rel AND a.attname::text = p.col \
                    AND a.attnum > 0 AND NOT a.attisdropped \
               WHERE has_column_privilege(me.oid, p.rel, a.attnum, \
                                          'SELECT, INSERT, UPDATE, REFERENCES')) \
    OR EXISTS (SELECT 1 FROM me CROSS JOIN unnest($5::oid[]) AS v(rel) \
               JOIN pg_class c ON c.oid = v.rel \
               WHERE has_table_privilege(me.oid, v.rel, 'SELECT, INSERT, UPDATE, DELETE')) \
    OR EXISTS (SELECT 1 FROM me CROSS JOIN unnest($6::oid[]) AS f(fn) \
               JOIN pg_proc p ON p.oid = f.fn \
               WHERE has_function_privilege(me.oid, f.fn, 'EXECUTE'))";

/// The (relation, column name) pairs that hold a protected column: each policy column in
/// its table and in every partition/child, and the same-named column of every ancestor.
pub(crate) fn protected_columns(snapshot: &SchemaSnapshot) -> Vec<(Oid, String)> {
    let mut out: Vec<(Oid, String)> = Vec::new();
    for t in snapshot.tables() {
        for a in &t.attributes {
            if snapshot.column_at(t.oid, a.attnum).is_some() {
                out.push((t.oid, a.name.clone()));
            }
        }
    }
    let mut names: Vec<String> = out.iter().map(|(_, n)| n.clone()).collect();
    names.sort();
    names.dedup();
    for r in snapshot
        .reach_oids()
        .relations
        .iter()
        .filter(|r| r.reach == RelationReach::Ancestor)
    {
        for n in &names {
            out.push((r.oid, n.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

impl CatalogConn {
    /// Computes [`SessionReach`] for `login` against `snapshot` (of this database).
    pub async fn session_reach(
        &self,
        snapshot: &SchemaSnapshot,
        login: &RoleName,
    ) -> Result<SessionReach, CatalogError> {
        let row = self
            .client
            .query_opt(LOGIN_SQL, &[&login.as_str()])
            .await
            .map_err(|e| self.query_err("login role", &e))?
            .ok_or_else(|| CatalogError::UnknownRole(login.0.clone()))?;
        let login_oid: Oid = row
            .try_get(0)
            .map_err(|e| self.query_err("login role", &e))?;
        let reach = snapshot.reach_oids();
        let owned: Vec<Oid> = reach.relations.iter().map(|r| r.oid).collect();
        let (rels, cols): (Vec<Oid>, Vec<String>) = protected_columns(snapshot).into_iter().unzip();
        let through: Vec<Oid> = reach
            .relations
            .iter()
            .filter(|r| matches!(r.reach, RelationReach::View | RelationReach::Indirect))
            .map(|r| r.oid)
            .collect();
        let definers: Vec<Oid> = reach
            .functions
            .iter()
            .filter(|f| f.security_definer)
            .map(|f| f.oid)
            .collect();
        let row = self
            .client
            .query_one(
                SESSION_REACH_SQL,
                &[&login_oid, &owned, &rels, &cols, &through, &definers],
            )
            .await
            .map_err(|e| self.query_err("session reach", &e))?;
        let can_reach_protected: bool = row
            .try_get(0)
            .map_err(|e| self.query_err("session reach", &e))?;
        Ok(SessionReach {
            can_reach_protected,
        })
    }
}
