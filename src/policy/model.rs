//! The policy model: what is sensitive, how it is encrypted, and who may see it.
//!
//! A [`Policy`] is immutable once built. A reload builds a whole new one with a
//! higher generation number and swaps it in; nothing here is ever mutated in place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// The type the application sees for an encrypted column (it is stored as `bytea`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogicalType {
    Text,
    Varchar,
    Int2,
    Int4,
    Int8,
    Numeric,
    Float8,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
    Jsonb,
    Bytea,
}

impl LogicalType {
    /// Every supported type, in the order used in error messages.
    pub const ALL: [LogicalType; 14] = [
        LogicalType::Text,
        LogicalType::Varchar,
        LogicalType::Int2,
        LogicalType::Int4,
        LogicalType::Int8,
        LogicalType::Numeric,
        LogicalType::Float8,
        LogicalType::Bool,
        LogicalType::Date,
        LogicalType::Timestamp,
        LogicalType::Timestamptz,
        LogicalType::Uuid,
        LogicalType::Jsonb,
        LogicalType::Bytea,
    ];

    /// The name used in policy YAML (and by PostgreSQL).
    pub fn name(self) -> &'static str {
        match self {
            LogicalType::Text => "text",
            LogicalType::Varchar => "varchar",
            LogicalType::Int2 => "int2",
            LogicalType::Int4 => "int4",
            LogicalType::Int8 => "int8",
            LogicalType::Numeric => "numeric",
            LogicalType::Float8 => "float8",
            LogicalType::Bool => "bool",
            LogicalType::Date => "date",
            LogicalType::Timestamp => "timestamp",
            LogicalType::Timestamptz => "timestamptz",
            LogicalType::Uuid => "uuid",
            LogicalType::Jsonb => "jsonb",
            LogicalType::Bytea => "bytea",
        }
    }

    /// The PostgreSQL type OID reported to clients in RowDescription/ParameterDescription.
    pub fn oid(self) -> u32 {
        match self {
            LogicalType::Text => 25,
            LogicalType::Varchar => 1043,
            LogicalType::Int2 => 21,
            LogicalType::Int4 => 23,
            LogicalType::Int8 => 20,
            LogicalType::Numeric => 1700,
            LogicalType::Float8 => 701,
            LogicalType::Bool => 16,
            LogicalType::Date => 1082,
            LogicalType::Timestamp => 1114,
            LogicalType::Timestamptz => 1184,
            LogicalType::Uuid => 2950,
            LogicalType::Jsonb => 3802,
            LogicalType::Bytea => 17,
        }
    }

    /// The fixed length PostgreSQL reports for the type (-1 for variable length).
    pub fn typlen(self) -> i16 {
        match self {
            LogicalType::Int2 => 2,
            LogicalType::Int4 => 4,
            LogicalType::Int8 | LogicalType::Float8 => 8,
            LogicalType::Bool => 1,
            LogicalType::Date => 4,
            LogicalType::Timestamp | LogicalType::Timestamptz => 8,
            LogicalType::Uuid => 16,
            _ => -1,
        }
    }

    /// Whether text-like masks (keep_first, keep_last, email) can apply.
    pub fn is_textual(self) -> bool {
        matches!(self, LogicalType::Text | LogicalType::Varchar)
    }
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a column is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// A fresh random nonce per value: no equality leaks, no predicates.
    Randomized,
    /// SIV-style: equal plaintexts give equal ciphertexts (equality, GROUP BY, UNIQUE).
    Deterministic,
}

/// What a role sees when it reads a column. Ordered from least to most permissive,
/// so `max()` over a role set gives the most permissive grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum View {
    /// Any statement returning the column fails with 42501.
    Deny,
    /// The value is replaced by NULL.
    Null,
    /// The raw envelope, as bytea.
    Ciphertext,
    /// The column's mask applied to the plaintext.
    Masked,
    /// The decrypted value.
    Plaintext,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Deny => "deny",
            View::Null => "null",
            View::Ciphertext => "ciphertext",
            View::Masked => "masked",
            View::Plaintext => "plaintext",
        }
    }
}

/// How a masked value is derived from the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// Keep the first `n` Unicode characters, replace the rest with `fill`.
    KeepFirst { n: usize, fill: char },
    /// Keep the last `n` Unicode characters, replace the rest with `fill`.
    KeepLast { n: usize, fill: char },
    /// `alice@example.com` -> `a***@example.com`.
    Email,
    /// A constant replacement.
    Fixed(String),
    /// A keyed, stable token (HMAC of the plaintext under the column's pseudonym key).
    Pseudonym,
}

/// A PostgreSQL role name, already normalised by identifier rules
/// (unquoted names case-folded to lower case, quoted names kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(pub String);

impl RoleName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A schema-qualified table name, normalised like PostgreSQL identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Index of a column inside one [`Policy`] generation. Cheap to copy and to use as a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnRef(pub u32);

/// Everything the policy says about one sensitive column.
#[derive(Debug, Clone)]
pub struct ColumnPolicy {
    pub table: TableName,
    /// The column name, normalised.
    pub column: String,
    /// Stable identity bound into every ciphertext; defaults to `schema.table.column`.
    pub id: String,
    pub logical_type: LogicalType,
    pub encryption: Encryption,
    /// Deterministic columns sharing a key (and a ciphertext domain) for joins.
    pub key_group: Option<String>,
    pub mask: Option<Mask>,
    /// Explicit role grants (PUBLIC excluded).
    pub access: BTreeMap<RoleName, View>,
    /// The fallback when none of the session's roles has an entry (default: Null).
    pub public: View,
    /// Roles granted predicate use besides plaintext readers.
    pub search: BTreeSet<RoleName>,
}

impl ColumnPolicy {
    /// The name bound into the AAD and key derivation: the key group if any, else the column id.
    pub fn crypto_domain(&self) -> &str {
        self.key_group.as_deref().unwrap_or(&self.id)
    }
}

/// One immutable generation of the policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) generation: u64,
    pub(crate) columns: Vec<ColumnPolicy>,
    pub(crate) by_table: HashMap<TableName, Vec<ColumnRef>>,
    pub(crate) by_name: HashMap<(TableName, String), ColumnRef>,
}

impl Policy {
    /// Builds a policy from validated columns. Validation happens in the loader.
    pub fn from_columns(generation: u64, columns: Vec<ColumnPolicy>) -> Policy {
        let mut by_table: HashMap<TableName, Vec<ColumnRef>> = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, c) in columns.iter().enumerate() {
            let r = ColumnRef(i as u32);
            by_table.entry(c.table.clone()).or_default().push(r);
            by_name.insert((c.table.clone(), c.column.clone()), r);
        }
        Policy {
            generation,
            columns,
            by_table,
            by_name,
        }
    }

    /// An empty policy (nothing is sensitive).
    pub fn empty(generation: u64) -> Policy {
        Policy::from_columns(generation, Vec::new())
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// All columns of this generation, indexable by [`ColumnRef`].
    pub fn columns(&self) -> &[ColumnPolicy] {
        &self.columns
    }

    pub fn column(&self, r: ColumnRef) -> &ColumnPolicy {
        &self.columns[r.0 as usize]
    }

    /// Looks a column up by normalised table and column name.
    pub fn find(&self, table: &TableName, column: &str) -> Option<ColumnRef> {
        self.by_name
            .get(&(table.clone(), column.to_string()))
            .copied()
    }

    /// The sensitive columns of a table, if it has any.
    pub fn table_columns(&self, table: &TableName) -> &[ColumnRef] {
        self.by_table.get(table).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the table has any sensitive column.
    pub fn is_protected_table(&self, table: &TableName) -> bool {
        self.by_table.contains_key(table)
    }

    /// The most permissive view among the session's roles; PUBLIC only when none is listed.
    pub fn access_for<'a, I>(&self, roles: I, column: ColumnRef) -> View
    where
        I: IntoIterator<Item = &'a RoleName>,
    {
        let c = self.column(column);
        roles
            .into_iter()
            .filter_map(|r| c.access.get(r).copied())
            .max()
            .unwrap_or(c.public)
    }

    /// Whether the session may use the column in a predicate (equality oracle).
    pub fn may_search<'a, I>(&self, roles: I, column: ColumnRef) -> bool
    where
        I: IntoIterator<Item = &'a RoleName> + Clone,
    {
        let c = self.column(column);
        if c.encryption != Encryption::Deterministic {
            return false;
        }
        if self.access_for(roles.clone(), column) == View::Plaintext {
            return true;
        }
        roles.into_iter().any(|r| c.search.contains(r))
    }
}
