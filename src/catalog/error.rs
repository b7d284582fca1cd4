//! Catalog errors. Resolution errors name the policy column, say what is wrong and what to
//! do; the session turns them into ErrorResponses with [`CatalogError::sqlstate`].
//! They carry names and catalog facts only, never a data value or a password.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// The `catalog:` configuration is unusable.
    #[error("catalog configuration: {0}")]
    Config(String),

    /// The catalog connection could not be opened.
    #[error("catalog connection to database \"{database}\" at {target}: {reason}")]
    Connect {
        database: String,
        target: String,
        reason: String,
    },

    /// A catalog query failed (connection lost, permission, timeout).
    #[error("catalog query ({what}) in database \"{database}\" failed: {reason}")]
    Query {
        database: String,
        what: &'static str,
        reason: String,
    },

    /// The policy column's table does not exist.
    #[error(
        "policy column {column}: table {table} does not exist in database \"{database}\"; \
         create it (with {column} as bytea) or correct the table name in the policy"
    )]
    TableMissing {
        database: String,
        column: String,
        table: String,
    },

    /// The policy names something that is not a plain or partitioned table.
    #[error(
        "policy column {column}: {table} is a {kind}, not a table, in database \"{database}\"; \
         the policy must name the base table that stores the column"
    )]
    NotATable {
        database: String,
        column: String,
        table: String,
        kind: &'static str,
    },

    /// The table exists but has no such column.
    #[error(
        "policy column {column}: table {table} has no column \"{name}\" in database \
         \"{database}\"; add it as bytea (ALTER TABLE ... ADD COLUMN) or correct the policy"
    )]
    ColumnMissing {
        database: String,
        column: String,
        table: String,
        name: String,
    },

    /// The column exists with another type than bytea, so ciphertext cannot be stored.
    #[error(
        "policy column {column}: its type is {actual} in database \"{database}\" (not encrypted \
         yet), but encrypted columns are stored as bytea; encrypt the existing data online with \
         `pgcloak encrypt --config <pgcloak.yaml> --database {database}` (it converts the column \
         to bytea; do not use ALTER ... TYPE bytea, which stores the plaintext bytes), or remove \
         it from the policy"
    )]
    NotBytea {
        database: String,
        column: String,
        actual: String,
    },

    /// The login role does not exist (so it has no role memberships to use).
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
}

impl CatalogError {
    /// The SQLSTATE a client sees when a statement is refused because of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // system_error: pgcloak cannot see the schema, so it refuses (fail closed).
            CatalogError::Config(_) | CatalogError::Connect { .. } | CatalogError::Query { .. } => {
                "58000"
            }
            CatalogError::TableMissing { .. } => "42P01",
            CatalogError::NotATable { .. } => "42809",
            CatalogError::ColumnMissing { .. } => "42703",
            CatalogError::NotBytea { .. } => "42804",
            CatalogError::UnknownRole(_) => "42704",
        }
    }

    /// The policy column (`schema.table.column`) this error is about, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            CatalogError::TableMissing { column, .. }
            | CatalogError::NotATable { column, .. }
            | CatalogError::ColumnMissing { column, .. }
            | CatalogError::NotBytea { column, .. } => Some(column),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_errors_name_the_column_and_carry_sqlstates() {
        let e = CatalogError::NotBytea {
            database: "crm".into(),
            column: "public.customers.phone".into(),
            actual: "text".into(),
        };
        assert_eq!(e.sqlstate(), "42804");
        assert_eq!(e.column(), Some("public.customers.phone"));
        let msg = e.to_string();
        assert!(
            msg.contains("public.customers.phone") && msg.contains("text"),
            "{msg}"
        );
        let e = CatalogError::TableMissing {
            database: "crm".into(),
            column: "public.x.y".into(),
            table: "public.x".into(),
        };
        assert_eq!(e.sqlstate(), "42P01");
    }
}
