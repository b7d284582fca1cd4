//! The roles a login may use: the login role plus every role whose privileges it has,
//! i.e. `pg_has_role(login, role, 'USAGE')`, which respects NOINHERIT (per role before
//! PostgreSQL 16, per grant from 16 on).
//!
//! One deliberate difference: PostgreSQL answers "yes" for a superuser and every role.
//! pgcloak protects data from the DBA too, so a superuser gets only the roles it is
//! actually granted (followed through inheriting memberships), never every role.

use crate::policy::RoleName;

use super::connect::CatalogConn;
use super::error::CatalogError;

const LOGIN_SQL: &str = "SELECT oid, rolsuper FROM pg_roles WHERE rolname::text = $1";

const USAGE_SQL: &str = "\
SELECT r.rolname::text FROM pg_roles r \
WHERE pg_has_role($1::oid, r.oid, 'USAGE') ORDER BY 1";

/// Membership graph, PostgreSQL 16+: inheritance is a property of each grant.
const GRAPH_SQL_16: &str = "\
WITH RECURSIVE m(oid) AS ( \
  SELECT $1::oid \
  UNION \
  SELECT a.roleid FROM pg_auth_members a JOIN m ON a.member = m.oid WHERE a.inherit_option \
) \
SELECT r.rolname::text FROM pg_roles r JOIN m ON r.oid = m.oid ORDER BY 1";

/// Membership graph before PostgreSQL 16: a NOINHERIT member does not pass on its grants.
const GRAPH_SQL_15: &str = "\
WITH RECURSIVE m(oid) AS ( \
  SELECT $1::oid \
  UNION \
  SELECT a.roleid FROM pg_auth_members a JOIN m ON a.member = m.oid \
  JOIN pg_roles mr ON mr.oid = a.member WHERE mr.rolinherit \
) \
SELECT r.rolname::text FROM pg_roles r JOIN m ON r.oid = m.oid ORDER BY 1";

impl CatalogConn {
    /// The login role first, then every other role it can use, in name order.
    /// Err([`CatalogError::UnknownRole`]) if the login role does not exist.
    pub async fn session_roles(&self, login: &RoleName) -> Result<Vec<RoleName>, CatalogError> {
        let row = self
            .client
            .query_opt(LOGIN_SQL, &[&login.as_str()])
            .await
            .map_err(|e| self.query_err("login role", &e))?
            .ok_or_else(|| CatalogError::UnknownRole(login.0.clone()))?;
        let oid: u32 = row
            .try_get(0)
            .map_err(|e| self.query_err("login role", &e))?;
        let superuser: bool = row
            .try_get(1)
            .map_err(|e| self.query_err("login role", &e))?;
        let sql = if !superuser {
            USAGE_SQL
        } else if self.server_version >= 160000 {
            GRAPH_SQL_16
        } else {
            GRAPH_SQL_15
        };
        let rows = self
            .client
            .query(sql, &[&oid])
            .await
            .map_err(|e| self.query_err("role memberships", &e))?;
        let mut roles = vec![login.clone()];
        for row in rows {
            let name: String = row
                .try_get(0)
                .map_err(|e| self.query_err("role memberships", &e))?;
            if name != login.0 {
                roles.push(RoleName(name));
            }
        }
        Ok(roles)
    }
}
