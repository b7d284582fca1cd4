//! Reads the facts a conversion depends on from the live catalog: the column's type,
//! the primary key, and everything that would break or silently keep pointing at the
//! old column (indexes, constraints, views, defaults). Refusals say what to do.

use tokio_postgres::Client;

use crate::catalog::constraints::is_envelope_check;
use crate::policy::TableName;

use super::error::LifecycleError;
use super::plan::{shadow_name, PkColumn};

/// One column of a table, as the catalog describes it.
#[derive(Debug, Clone)]
pub struct ColumnFacts {
    pub relid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(40)`.
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
}

/// Things that refer to a column and would not follow it through a conversion.
#[derive(Debug, Clone, Default)]
pub struct Dependents {
    pub indexes: Vec<String>,
    pub constraints: Vec<String>,
    pub views: Vec<String>,
    /// A valid envelope CHECK on the column.
    pub envelope_check: Option<(String, bool)>,
    /// Statements that recreate the indexes and UNIQUE/exclusion constraints of the
    /// table that use the column (by name, so they apply to the converted column).
    pub rebuild: Vec<String>,
    /// Constraints that cannot be recreated on an envelope column (foreign keys,
    /// checks, the primary key).
    pub not_rebuildable: Vec<String>,
    /// Indexes over an expression of the column or with a predicate: an envelope
    /// cannot be computed on, so they cannot follow the column to ciphertext.
    pub expression_indexes: Vec<String>,
    /// The statements that drop what `rebuild` recreates (for a conversion that keeps
    /// the replaced column, whose indexes would otherwise keep the names).
    pub drops: Vec<String>,
}

const COLUMN_SQL: &str = "\
SELECT c.oid::int8, a.attnum, a.atttypid::int8, format_type(a.atttypid, a.atttypmod), \
       a.attnotnull, a.atthasdef \
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND c.relkind IN ('r', 'p')";

const PK_SQL: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY k.ord";

const INDEXES_SQL: &str = "\
SELECT ic.relname::text, pg_get_indexdef(i.indexrelid), \
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid), \
       i.indexprs IS NULL AND i.indpred IS NULL, \
       quote_ident(icn.nspname) || '.' || quote_ident(ic.relname) \
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
JOIN pg_namespace icn ON icn.oid = ic.relnamespace \
WHERE i.indrelid = $1::int8::oid AND ($2::int2 = ANY(i.indkey::int2[]) OR EXISTS ( \
  SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid \
  AND d.refobjid = i.indrelid AND d.refobjsubid = $2::int2)) ORDER BY 1";

const CONSTRAINTS_SQL: &str = "\
SELECT k.conname::text, pg_get_constraintdef(k.oid), k.convalidated, k.contype::text, \
       k.conrelid = $1::int8::oid \
FROM pg_constraint k WHERE (k.conrelid = $1::int8::oid AND $2::int2 = ANY(k.conkey)) \
   OR (k.confrelid = $1::int8::oid AND $2::int2 = ANY(k.confkey)) ORDER BY 1";

const VIEWS_SQL: &str = "\
SELECT DISTINCT v.oid::regclass::text FROM pg_depend d \
JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class \
WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = $1::int8::oid \
  AND d.refobjsubid = $2::int2 AND v.oid <> $1::int8::oid ORDER BY 1";

fn target(table: &TableName) -> String {
    format!("{}.{}", table.schema, table.name)
}

/// The column's facts, or `None` when the table has no such column.
pub async fn column(
    client: &Client,
    table: &TableName,
    column: &str,
) -> Result<Option<ColumnFacts>, LifecycleError> {
    let rows = client
        .query(COLUMN_SQL, &[&table.schema, &table.name, &column])
        .await
        .map_err(|e| LifecycleError::db("reading the column", &target(table), &e))?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let get =
        |e: tokio_postgres::Error| LifecycleError::db("reading the column", &target(table), &e);
    let relid: i64 = r.try_get(0).map_err(get)?;
    let type_oid: i64 = r.try_get(2).map_err(get)?;
    Ok(Some(ColumnFacts {
        relid: u32::try_from(relid).unwrap_or(0),
        attnum: r.try_get(1).map_err(get)?,
        type_oid: u32::try_from(type_oid).unwrap_or(0),
        sql_type: r.try_get(3).map_err(get)?,
        not_null: r.try_get(4).map_err(get)?,
        has_default: r.try_get(5).map_err(get)?,
    }))
}

/// Whether the conversion's shadow column exists (a conversion is under way).
pub async fn shadow_exists(
    client: &Client,
    table: &TableName,
    column: &str,
) -> Result<bool, LifecycleError> {
    Ok(self::column(client, table, &shadow_name(column))
        .await?
        .is_some())
}

/// The primary key columns in key order; empty when there is none.
pub async fn primary_key(
    client: &Client,
    table: &TableName,
    relid: u32,
) -> Result<Vec<PkColumn>, LifecycleError> {
    let rows = client
        .query(PK_SQL, &[&i64::from(relid)])
        .await
        .map_err(|e| LifecycleError::db("reading the primary key", &target(table), &e))?;
    rows.iter()
        .map(|r| {
            Ok(PkColumn {
                name: r.try_get(0).map_err(|e| {
                    LifecycleError::db("reading the primary key", &target(table), &e)
                })?,
                sql_type: r.try_get(1).map_err(|e| {
                    LifecycleError::db("reading the primary key", &target(table), &e)
                })?,
            })
        })
        .collect()
}

/// Indexes, constraints and views that use the column.
pub async fn dependents(
    client: &Client,
    table: &TableName,
    column: &str,
    facts: &ColumnFacts,
) -> Result<Dependents, LifecycleError> {
    let t = target(table);
    let relid = i64::from(facts.relid);
    let err = |e: tokio_postgres::Error| LifecycleError::db("reading dependents", &t, &e);
    let mut d = Dependents::default();
    for r in client
        .query(INDEXES_SQL, &[&relid, &facts.attnum])
        .await
        .map_err(err)?
    {
        let name: String = r.try_get(0).map_err(err)?;
        let def: String = r.try_get(1).map_err(err)?;
        let owned: bool = r.try_get(2).map_err(err)?;
        let simple: bool = r.try_get(3).map_err(err)?;
        let qualified: String = r.try_get(4).map_err(err)?;
        if !simple {
            d.expression_indexes.push(name.clone());
        }
        if !owned {
            d.rebuild.push(def);
            d.drops.push(format!("DROP INDEX {qualified}"));
        }
        d.indexes.push(name);
    }
    for r in client
        .query(CONSTRAINTS_SQL, &[&relid, &facts.attnum])
        .await
        .map_err(err)?
    {
        let name: String = r.try_get(0).map_err(err)?;
        let def: String = r.try_get(1).map_err(err)?;
        let valid: bool = r.try_get(2).map_err(err)?;
        let kind: String = r.try_get(3).map_err(err)?;
        let own: bool = r.try_get(4).map_err(err)?;
        if kind == "c" && is_envelope_check(&def, column) {
            d.envelope_check = Some((name, valid));
            continue;
        }
        if own && (kind == "u" || kind == "x") {
            let t = crate::catalog::ident::quote_qualified(&table.schema, &table.name);
            let q = crate::catalog::ident::quote_ident(&name);
            d.rebuild
                .push(format!("ALTER TABLE {t} ADD CONSTRAINT {q} {def}"));
            d.drops.push(format!("ALTER TABLE {t} DROP CONSTRAINT {q}"));
        } else {
            d.not_rebuildable.push(name.clone());
        }
        d.constraints.push(name);
    }
    for r in client
        .query(VIEWS_SQL, &[&relid, &facts.attnum])
        .await
        .map_err(err)?
    {
        d.views.push(r.try_get(0).map_err(err)?);
    }
    Ok(d)
}

impl Dependents {
    /// For re-encryption: indexes and UNIQUE constraints are rebuilt at cut-over (the
    /// column stays an envelope column of the same key domain); anything else refuses.
    pub fn rebuild_refusal(&self, column: &str) -> Option<LifecycleError> {
        if !self.not_rebuildable.is_empty() {
            return Some(LifecycleError::Refused {
                column: column.to_string(),
                reason: format!(
                    "it is used by constraint(s) {} that cannot be rebuilt on the new column",
                    self.not_rebuildable.join(", ")
                ),
                fix: "drop them, rerun, then recreate them".to_string(),
            });
        }
        self.view_refusal(column)
    }

    /// For encryption of a deterministic column: plain indexes and UNIQUE constraints
    /// are recreated on the ciphertext at cut-over (equal plaintexts give equal
    /// envelopes), as `reencrypt` does; indexes on expressions or with a predicate,
    /// foreign keys, CHECKs and the primary key refuse.
    pub fn encrypt_rebuild_refusal(&self, column: &str) -> Option<LifecycleError> {
        if !self.expression_indexes.is_empty() {
            return Some(LifecycleError::Refused {
                column: column.to_string(),
                reason: format!(
                    "index(es) {} compute on the column or have a WHERE clause, which \
                     cannot work on ciphertext",
                    self.expression_indexes.join(", ")
                ),
                fix: "drop them, rerun (plain indexes and UNIQUE on the column are rebuilt \
                      on the ciphertext automatically)"
                    .to_string(),
            });
        }
        self.rebuild_refusal(column)
    }

    fn view_refusal(&self, column: &str) -> Option<LifecycleError> {
        (!self.views.is_empty()).then(|| LifecycleError::Refused {
            column: column.to_string(),
            reason: format!("view(s) {} use it", self.views.join(", ")),
            fix: "drop the views, rerun, then recreate them (they would keep reading the \
                  replaced column)"
                .to_string(),
        })
    }

    /// The refusal for anything that uses the column, naming each object.
    pub fn refusal(&self, column: &str, deterministic: bool) -> Option<LifecycleError> {
        if !self.indexes.is_empty() || !self.constraints.is_empty() {
            let mut used = Vec::new();
            if !self.indexes.is_empty() {
                used.push(format!("index(es) {}", self.indexes.join(", ")));
            }
            if !self.constraints.is_empty() {
                used.push(format!("constraint(s) {}", self.constraints.join(", ")));
            }
            let fix = if deterministic {
                "drop them, rerun, then recreate them on the converted column (the column is \
                 deterministic, so equality indexes and UNIQUE work on its ciphertext)"
            } else {
                "an equality index or UNIQUE needs `encryption: deterministic` in the policy; \
                 make the column deterministic (or give the index up), drop them, rerun, then \
                 recreate them on the converted column"
            };
            return Some(LifecycleError::Refused {
                column: column.to_string(),
                reason: format!("it is used by {}", used.join(" and ")),
                fix: fix.to_string(),
            });
        }
        self.view_refusal(column)
    }
}

const PRIVILEGES_SQL: &str = "\
SELECT current_user::text, pg_get_userbyid(c.relowner)::text, \
       pg_has_role(current_user, c.relowner, 'USAGE'), current_database()::text, \
       EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgcloak'), \
       has_database_privilege(current_database(), 'CREATE'), \
       CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgcloak') \
            THEN has_schema_privilege('pgcloak', 'CREATE, USAGE') ELSE true END \
FROM pg_class c WHERE c.oid = $1::int8::oid";

/// Whether the role running the conversion may do it: it must own the table (ALTER
/// TABLE, triggers) and be able to create pgcloak's schema or objects in it. `None` when
/// it may; otherwise the refusal names the role and the exact fix.
pub async fn privilege_refusal(
    client: &Client,
    table: &TableName,
    relid: u32,
    column: &str,
) -> Result<Option<LifecycleError>, LifecycleError> {
    let err = |e: tokio_postgres::Error| {
        LifecycleError::db("reading the table's owner", &target(table), &e)
    };
    let rows = client
        .query(PRIVILEGES_SQL, &[&i64::from(relid)])
        .await
        .map_err(err)?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let me: String = r.try_get(0).map_err(err)?;
    let owner: String = r.try_get(1).map_err(err)?;
    let owns: bool = r.try_get(2).map_err(err)?;
    let database: String = r.try_get(3).map_err(err)?;
    let schema_exists: bool = r.try_get(4).map_err(err)?;
    let can_create_schema: bool = r.try_get(5).map_err(err)?;
    let can_use_schema: bool = r.try_get(6).map_err(err)?;
    let q = crate::catalog::ident::quote_ident;
    if !owns {
        return Ok(Some(LifecycleError::Refused {
            column: column.to_string(),
            reason: format!(
                "role \"{me}\" (catalog.user) does not own table {} (its owner is \"{owner}\"), \
                 and converting a column alters the table",
                target(table)
            ),
            fix: format!(
                "run the command as the owner: PGCLOAK_CATALOG_USER={owner} \
                 PGCLOAK_CATALOG_PASSWORD='<{owner}'s password>' pgcloak encrypt ...; or, for \
                 the run only, GRANT {o} TO {m}; and afterwards REVOKE {o} FROM {m}; (the \
                 proxy's catalog role needs no write rights)",
                o = q(&owner),
                m = q(&me)
            ),
        }));
    }
    if !schema_exists && !can_create_schema {
        return Ok(Some(LifecycleError::Refused {
            column: column.to_string(),
            reason: format!(
                "role \"{me}\" may not create pgcloak's working schema `pgcloak` in database \
                 \"{database}\""
            ),
            fix: format!(
                "as a superuser: CREATE SCHEMA pgcloak AUTHORIZATION {m}; (or GRANT CREATE ON \
                 DATABASE {d} TO {m};)",
                m = q(&me),
                d = q(&database)
            ),
        }));
    }
    if !can_use_schema {
        return Ok(Some(LifecycleError::Refused {
            column: column.to_string(),
            reason: format!(
                "role \"{me}\" lacks CREATE and USAGE on pgcloak's working schema `pgcloak`"
            ),
            fix: format!(
                "as its owner: GRANT CREATE, USAGE ON SCHEMA pgcloak TO {m}; (or ALTER SCHEMA \
                 pgcloak OWNER TO {m};)",
                m = q(&me)
            ),
        }));
    }
    Ok(None)
}
