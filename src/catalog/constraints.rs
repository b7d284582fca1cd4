//! Defence in depth: every policy column should carry a CHECK constraint that admits only
//! NULL or bytes starting with the envelope's magic `pc` and version 1, so that even a
//! path bypassing pgcloak cannot store plaintext there:
//!
//! ```sql
//! ALTER TABLE public.customers ADD CONSTRAINT pgcloak_envelope_phone
//!   CHECK (phone IS NULL OR substring(phone from 1 for 3) = E'\\x706301'::bytea);
//! ```
//!
//! A constraint is recognised by what it does, not by its name: a CHECK (`contype = 'c'`)
//! on exactly that column (`conkey = {attnum}`) whose normalised `pg_get_constraintdef`
//! is one of the accepted forms. The name only matters when pgcloak proposes DDL.

use crate::policy::{ColumnRef, Policy, TableName};

use super::connect::CatalogConn;
use super::error::CatalogError;
use super::ident::{clip_identifier, quote_ident, quote_qualified};

/// The envelope's first three bytes (`p`, `c`, version 1) in hex.
pub const ENVELOPE_PREFIX_HEX: &str = "706301";

const CONSTRAINTS_SQL: &str = "\
SELECT p.i, k.conname::text, pg_get_constraintdef(k.oid), k.convalidated \
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS p(s, t, c, i) \
JOIN pg_namespace n ON n.nspname::text = p.s \
JOIN pg_class cl ON cl.relnamespace = n.oid AND cl.relname::text = p.t \
JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attname::text = p.c \
     AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'bytea'::regtype \
LEFT JOIN pg_constraint k ON k.conrelid = cl.oid AND k.contype = 'c' \
     AND k.conkey = ARRAY[a.attnum] \
ORDER BY p.i";

/// The name pgcloak gives the constraint on `column` (clipped to 63 bytes like PostgreSQL).
pub fn constraint_name(column: &str) -> String {
    clip_identifier(&format!("pgcloak_envelope_{column}")).to_string()
}

/// The CHECK expression for `column`. `E'\\x..'` reads the same whatever
/// `standard_conforming_strings` is.
pub fn envelope_check_expr(column: &str) -> String {
    let c = quote_ident(column);
    format!("{c} IS NULL OR substring({c} from 1 for 3) = E'\\\\x{ENVELOPE_PREFIX_HEX}'::bytea")
}

/// Lower-cases and drops whitespace, parentheses and double quotes, so that deparsing
/// differences between PostgreSQL versions (`SUBSTRING(c FROM 1 FOR 3)` from 14 on,
/// `"substring"(c, 1, 3)` before) and extra parentheses do not matter. The column itself
/// is pinned by `conkey`, so folding its case here loses nothing.
fn normalise(def: &str) -> String {
    def.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | '"'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `pg_get_constraintdef` output is an envelope check on `column`.
pub fn is_envelope_check(def: &str, column: &str) -> bool {
    let c = normalise(column);
    let magic = format!("='\\x{ENVELOPE_PREFIX_HEX}'::bytea");
    // pg_get_constraintdef appends " NOT VALID" to an unvalidated check; `convalidated`
    // carries that fact separately.
    let def = def.trim_end();
    let def = def.strip_suffix("NOT VALID").unwrap_or(def);
    let got = normalise(def);
    [
        format!("check{c}isnullorsubstring{c}from1for3{magic}"),
        format!("check{c}isnullorsubstring{c},1,3{magic}"),
        format!("check{c}isnullorsubstr{c},1,3{magic}"),
    ]
    .contains(&got)
}

/// What is wrong with a column's envelope constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintProblem {
    /// No envelope check on the column.
    Absent,
    /// A constraint with pgcloak's name exists but checks something else (e.g. an older
    /// envelope version): it is replaced.
    Different { name: String },
    /// The check exists but was added NOT VALID: old rows were never checked.
    NotValidated { name: String },
}

/// A policy column whose envelope constraint is missing or incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingConstraint {
    pub column: ColumnRef,
    pub table: TableName,
    pub column_name: String,
    pub problem: ConstraintProblem,
}

impl MissingConstraint {
    /// The statement that fixes it, identifiers quoted as needed.
    pub fn ddl(&self) -> String {
        let table = quote_qualified(&self.table.schema, &self.table.name);
        let check = envelope_check_expr(&self.column_name);
        match &self.problem {
            ConstraintProblem::Absent => format!(
                "ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({check});",
                quote_ident(&constraint_name(&self.column_name))
            ),
            ConstraintProblem::Different { name } => format!(
                "ALTER TABLE {table} DROP CONSTRAINT {n}, ADD CONSTRAINT {n} CHECK ({check});",
                n = quote_ident(name)
            ),
            ConstraintProblem::NotValidated { name } => format!(
                "ALTER TABLE {table} VALIDATE CONSTRAINT {};",
                quote_ident(name)
            ),
        }
    }

    /// One line for `pgcloak check` and the startup warning.
    pub fn describe(&self) -> String {
        let what = match &self.problem {
            ConstraintProblem::Absent => "has no envelope CHECK constraint".to_string(),
            ConstraintProblem::Different { name } => {
                format!("has a constraint {name} that is not the envelope check")
            }
            ConstraintProblem::NotValidated { name } => {
                format!("has envelope check {name} added NOT VALID (existing rows unchecked)")
            }
        };
        format!("policy column {}.{} {what}", self.table, self.column_name)
    }
}

impl CatalogConn {
    /// The policy columns (that exist as bytea here) lacking a valid envelope constraint.
    /// Columns that do not resolve are reported by [`CatalogConn::resolve`], not here.
    pub async fn check_constraints(
        &self,
        policy: &Policy,
    ) -> Result<Vec<MissingConstraint>, CatalogError> {
        let cols = policy.columns();
        let schemas: Vec<&str> = cols.iter().map(|c| c.table.schema.as_str()).collect();
        let tables: Vec<&str> = cols.iter().map(|c| c.table.name.as_str()).collect();
        let names: Vec<&str> = cols.iter().map(|c| c.column.as_str()).collect();
        let rows = self
            .client
            .query(CONSTRAINTS_SQL, &[&schemas, &tables, &names])
            .await
            .map_err(|e| self.query_err("envelope constraints", &e))?;
        // Per present column: (found valid, found not validated, pgcloak-named other).
        #[derive(Default)]
        struct Seen {
            valid: bool,
            not_validated: Option<String>,
            named_other: Option<String>,
        }
        let mut seen: Vec<Option<Seen>> = (0..cols.len()).map(|_| None).collect();
        for row in rows {
            let err = |e: tokio_postgres::Error| self.query_err("envelope constraints", &e);
            let ordinal: i64 = row.try_get(0).map_err(err)?;
            let Some(index) = usize::try_from(ordinal - 1)
                .ok()
                .filter(|i| *i < cols.len())
            else {
                continue;
            };
            let (Some(col), Some(slot)) = (cols.get(index), seen.get_mut(index)) else {
                continue;
            };
            let entry = slot.get_or_insert_with(Seen::default);
            let name: Option<String> = row.try_get(1).map_err(err)?;
            let def: Option<String> = row.try_get(2).map_err(err)?;
            let validated: Option<bool> = row.try_get(3).map_err(err)?;
            let (Some(name), Some(def)) = (name, def) else {
                continue;
            };
            if is_envelope_check(&def, &col.column) {
                if validated == Some(true) {
                    entry.valid = true;
                } else {
                    entry.not_validated = Some(name);
                }
            } else if name == constraint_name(&col.column) {
                entry.named_other = Some(name);
            }
        }
        let mut missing = Vec::new();
        for (i, (col, s)) in cols.iter().zip(seen).enumerate() {
            let Some(s) = s else { continue };
            if s.valid {
                continue;
            }
            let problem = match (s.not_validated, s.named_other) {
                (Some(name), _) => ConstraintProblem::NotValidated { name },
                (None, Some(name)) => ConstraintProblem::Different { name },
                (None, None) => ConstraintProblem::Absent,
            };
            missing.push(MissingConstraint {
                column: ColumnRef(i as u32),
                table: col.table.clone(),
                column_name: col.column.clone(),
                problem,
            });
        }
        Ok(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_deparse_styles_are_recognised() {
        let pg14 =
            "CHECK (((phone IS NULL) OR (SUBSTRING(phone FROM 1 FOR 3) = '\\x706301'::bytea)))";
        let pg13 = "CHECK (((phone IS NULL) OR (\"substring\"(phone, 1, 3) = '\\x706301'::bytea)))";
        assert!(is_envelope_check(pg14, "phone"));
        assert!(is_envelope_check(pg13, "phone"));
        assert!(is_envelope_check(&format!("{pg14} NOT VALID"), "phone"));
        let wrong_magic =
            "CHECK (((phone IS NULL) OR (SUBSTRING(phone FROM 1 FOR 3) = '\\x706302'::bytea)))";
        assert!(!is_envelope_check(wrong_magic, "phone"));
        let weaker = "CHECK ((phone IS NULL) OR (length(phone) > 3))";
        assert!(!is_envelope_check(weaker, "phone"));
        let quoted = "CHECK (((\"Phone\" IS NULL) OR (SUBSTRING(\"Phone\" FROM 1 FOR 3) = '\\x706301'::bytea)))";
        assert!(is_envelope_check(quoted, "Phone"));
    }

    #[test]
    fn ddl_quotes_identifiers() {
        let m = MissingConstraint {
            column: ColumnRef(0),
            table: TableName::new("Sales", "order"),
            column_name: "Card No".into(),
            problem: ConstraintProblem::Absent,
        };
        assert_eq!(
            m.ddl(),
            "ALTER TABLE \"Sales\".\"order\" ADD CONSTRAINT \"pgcloak_envelope_Card No\" CHECK \
             (\"Card No\" IS NULL OR substring(\"Card No\" from 1 for 3) = E'\\\\x706301'::bytea);"
        );
        let v = MissingConstraint {
            problem: ConstraintProblem::NotValidated {
                name: "pgcloak_envelope_x".into(),
            },
            ..m
        };
        assert!(v.ddl().ends_with("VALIDATE CONSTRAINT pgcloak_envelope_x;"));
    }

    #[test]
    fn constraint_names_fit_postgres_limit() {
        let long = "c".repeat(80);
        assert_eq!(constraint_name(&long).len(), 63);
        assert_eq!(constraint_name("phone"), "pgcloak_envelope_phone");
    }
}
