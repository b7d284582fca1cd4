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

    /// Parses a type name as written in the policy: the names above, plus the usual
    /// PostgreSQL spellings (`integer`, `bigint`, `boolean`, `character varying`, ...).
    /// Case-insensitive; surrounding whitespace is ignored.
    pub fn from_name(name: &str) -> Option<LogicalType> {
        let lower = name.trim().to_ascii_lowercase();
        let t = match lower.as_str() {
            "text" => LogicalType::Text,
            "varchar" | "character varying" => LogicalType::Varchar,
            "int2" | "smallint" => LogicalType::Int2,
            "int4" | "int" | "integer" => LogicalType::Int4,
            "int8" | "bigint" => LogicalType::Int8,
            "numeric" | "decimal" => LogicalType::Numeric,
            "float8" | "double precision" => LogicalType::Float8,
            "bool" | "boolean" => LogicalType::Bool,
            "date" => LogicalType::Date,
            "timestamp" | "timestamp without time zone" => LogicalType::Timestamp,
            "timestamptz" | "timestamp with time zone" => LogicalType::Timestamptz,
            "uuid" => LogicalType::Uuid,
            "jsonb" => LogicalType::Jsonb,
            "bytea" => LogicalType::Bytea,
            _ => return None,
        };
        Some(t)
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
    /// Every view, from most to least permissive (the order used in error messages).
    pub const ALL: [View; 5] = [
        View::Plaintext,
        View::Masked,
        View::Ciphertext,
        View::Null,
        View::Deny,
    ];

    /// Parses a view name as written in the policy (exact, lower case).
    pub fn from_name(name: &str) -> Option<View> {
        View::ALL.into_iter().find(|v| v.name() == name)
    }

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

impl Mask {
    /// Every mask name, in the order used in error messages.
    pub const NAMES: [&'static str; 5] = ["keep_first", "keep_last", "email", "fixed", "pseudonym"];

    /// The name used in policy YAML.
    pub fn name(&self) -> &'static str {
        match self {
            Mask::KeepFirst { .. } => "keep_first",
            Mask::KeepLast { .. } => "keep_last",
            Mask::Email => "email",
            Mask::Fixed(_) => "fixed",
            Mask::Pseudonym => "pseudonym",
        }
    }

    /// Whether the mask can apply to values of `ty`. Character masks need text;
    /// `fixed` and `pseudonym` ignore the value's shape. The masked value itself is
    /// always reported to clients as `text`.
    pub fn applies_to(&self, ty: LogicalType) -> bool {
        match self {
            Mask::KeepFirst { .. } | Mask::KeepLast { .. } | Mask::Email => ty.is_textual(),
            Mask::Fixed(_) | Mask::Pseudonym => true,
        }
    }
}

/// A PostgreSQL role name, already normalised by identifier rules
/// (unquoted names case-folded to lower case, quoted names kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName(pub String);

impl RoleName {
    /// Normalises a role name as PostgreSQL would (see [`super::normalize_identifier`]).
    pub fn from_sql(name: &str) -> RoleName {
        RoleName(super::ident::normalize_identifier(name))
    }

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

    /// `schema.table.column` with PostgreSQL quoting where needed, for messages.
    pub fn qualified_name(&self) -> String {
        use super::ident::quote_identifier as q;
        format!(
            "{}.{}.{}",
            q(&self.table.schema),
            q(&self.table.name),
            q(&self.column)
        )
    }
}

/// One immutable generation of the policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) generation: u64,
    pub(crate) columns: Vec<ColumnPolicy>,
    pub(crate) by_table: HashMap<TableName, Vec<ColumnRef>>,
    /// table -> column -> ref, nested so that `find` does not allocate.
    pub(crate) by_table_column: HashMap<TableName, HashMap<String, ColumnRef>>,
    /// `functions.allow`: normalised `schema.name` or a built-in's bare name.
    pub(crate) allowed_functions: BTreeSet<String>,
    /// `guard:`: decryption quotas and honeytokens (the insider guard, `crate::guard`).
    pub(crate) guard: GuardPolicy,
}

/// What to do when a honeytoken is delivered or searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HoneytokenAction {
    /// Audit event, metric and WARN log; the statement goes on (the default).
    #[default]
    Alert,
    /// As `Alert`, then the statement fails and the session is closed.
    Deny,
}

/// One decryption quota: at most `max_values` plaintext values of `columns` delivered
/// to sessions of `role` (members included) per sliding `window`, per pgcloak instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaPolicy {
    /// Names the quota in errors, events and metrics (default: the role name). Usage is
    /// kept by this name, so it survives a reload that changes the limit or the window.
    pub name: String,
    pub role: RoleName,
    /// None: every protected column.
    pub columns: Option<BTreeSet<ColumnRef>>,
    pub max_values: u64,
    pub window: std::time::Duration,
}

impl QuotaPolicy {
    /// Whether plaintext values of `col` count against this quota.
    pub fn covers(&self, col: ColumnRef) -> bool {
        self.columns.as_ref().is_none_or(|c| c.contains(&col))
    }
}

/// The policy's `guard:` section.
#[derive(Debug, Clone, Default)]
pub struct GuardPolicy {
    pub quotas: Vec<QuotaPolicy>,
    /// Decoy values per column, as written in the policy (text form).
    pub honeytokens: BTreeMap<ColumnRef, Vec<String>>,
    pub on_honeytoken: HoneytokenAction,
}

impl GuardPolicy {
    pub fn is_empty(&self) -> bool {
        self.quotas.is_empty() && self.honeytokens.is_empty()
    }
}

impl Policy {
    /// Whether the policy's `functions.allow` list names this function (`schema.name`,
    /// or `name` for a built-in): the DBA vouches that calling it reveals nothing the
    /// caller may not see, so pgcloak lets it run although it cannot see into it.
    pub fn function_allowed(&self, qualified_name: &str) -> bool {
        self.allowed_functions.contains(qualified_name)
    }

    /// The policy with this `functions.allow` list (normalised names).
    pub fn with_allowed_functions(mut self, names: BTreeSet<String>) -> Policy {
        self.allowed_functions = names;
        self
    }

    /// The policy with this `guard:` section.
    pub fn with_guard(mut self, guard: GuardPolicy) -> Policy {
        self.guard = guard;
        self
    }

    /// The `guard:` section: quotas and honeytokens.
    pub fn guard(&self) -> &GuardPolicy {
        &self.guard
    }

    /// The `functions.allow` list, sorted (for `pgcloak check`).
    pub fn allowed_functions(&self) -> impl Iterator<Item = &str> {
        self.allowed_functions.iter().map(String::as_str)
    }

    /// Builds a policy from validated columns. Validation happens in the loader.
    pub fn from_columns(generation: u64, columns: Vec<ColumnPolicy>) -> Policy {
        let mut by_table: HashMap<TableName, Vec<ColumnRef>> = HashMap::new();
        let mut by_table_column: HashMap<TableName, HashMap<String, ColumnRef>> = HashMap::new();
        for (i, c) in columns.iter().enumerate() {
            let r = ColumnRef(i as u32);
            by_table.entry(c.table.clone()).or_default().push(r);
            by_table_column
                .entry(c.table.clone())
                .or_default()
                .insert(c.column.clone(), r);
        }
        Policy {
            generation,
            columns,
            by_table,
            by_table_column,
            allowed_functions: BTreeSet::new(),
            guard: GuardPolicy::default(),
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

    /// The column a [`ColumnRef`] of this generation points at.
    ///
    /// # Panics
    /// If `r` came from another generation with more columns. Code that may hold a
    /// stale reference uses [`Policy::get`], which cannot panic.
    pub fn column(&self, r: ColumnRef) -> &ColumnPolicy {
        &self.columns[r.0 as usize]
    }

    /// The column `r` points at, or `None` if `r` is not from this generation's range.
    pub fn get(&self, r: ColumnRef) -> Option<&ColumnPolicy> {
        self.columns.get(r.0 as usize)
    }

    /// Looks a column up by normalised table and column name (no allocation).
    pub fn find(&self, table: &TableName, column: &str) -> Option<ColumnRef> {
        self.by_table_column.get(table)?.get(column).copied()
    }

    /// The columns whose ciphertexts share `domain` (a key group name or a column id).
    pub fn columns_in_domain<'a>(
        &'a self,
        domain: &'a str,
    ) -> impl Iterator<Item = ColumnRef> + 'a {
        self.columns
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.crypto_domain() == domain)
            .map(|(i, _)| ColumnRef(i as u32))
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
    /// A reference from another generation fails closed with [`View::Deny`].
    pub fn access_for<'a, I>(&self, roles: I, column: ColumnRef) -> View
    where
        I: IntoIterator<Item = &'a RoleName>,
    {
        let Some(c) = self.get(column) else {
            return View::Deny;
        };
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
        let Some(c) = self.get(column) else {
            return false;
        };
        if c.encryption != Encryption::Deterministic {
            return false;
        }
        if self.access_for(roles.clone(), column) == View::Plaintext {
            return true;
        }
        roles.into_iter().any(|r| c.search.contains(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(table: &str, column: &str) -> ColumnPolicy {
        ColumnPolicy {
            table: TableName::new("public", table),
            column: column.into(),
            id: format!("public.{table}.{column}"),
            logical_type: LogicalType::Text,
            encryption: Encryption::Deterministic,
            key_group: None,
            mask: None,
            access: BTreeMap::new(),
            public: View::Null,
            search: BTreeSet::new(),
        }
    }

    #[test]
    fn type_names_round_trip_and_accept_postgres_spellings() {
        for t in LogicalType::ALL {
            assert_eq!(LogicalType::from_name(t.name()), Some(t));
        }
        assert_eq!(
            LogicalType::from_name("Double Precision"),
            Some(LogicalType::Float8)
        );
        assert_eq!(LogicalType::from_name("strin"), None);
    }

    #[test]
    fn views_order_from_deny_to_plaintext() {
        assert!(View::Deny < View::Null && View::Null < View::Ciphertext);
        assert!(View::Ciphertext < View::Masked && View::Masked < View::Plaintext);
        for v in View::ALL {
            assert_eq!(View::from_name(v.name()), Some(v));
        }
        assert_eq!(View::from_name("Plaintext"), None);
    }

    #[test]
    fn character_masks_need_text_and_the_others_do_not() {
        let keep = Mask::KeepLast { n: 3, fill: '*' };
        assert!(keep.applies_to(LogicalType::Varchar));
        assert!(!keep.applies_to(LogicalType::Int4));
        assert!(!Mask::Email.applies_to(LogicalType::Date));
        assert!(Mask::Pseudonym.applies_to(LogicalType::Uuid));
        assert!(Mask::Fixed("x".into()).applies_to(LogicalType::Jsonb));
    }

    #[test]
    fn find_distinguishes_tables_and_columns() {
        let p = Policy::from_columns(4, vec![col("a", "x"), col("b", "x"), col("a", "y")]);
        let a = TableName::new("public", "a");
        assert_eq!(p.find(&a, "y"), Some(ColumnRef(2)));
        assert_eq!(
            p.find(&TableName::new("public", "b"), "x"),
            Some(ColumnRef(1))
        );
        assert_eq!(p.find(&TableName::new("other", "a"), "x"), None);
        assert_eq!(p.table_columns(&a), &[ColumnRef(0), ColumnRef(2)]);
        assert_eq!(p.column(ColumnRef(1)).qualified_name(), "public.b.x");
    }

    #[test]
    fn crypto_domain_prefers_the_key_group() {
        let mut c = col("a", "x");
        assert_eq!(c.crypto_domain(), "public.a.x");
        c.key_group = Some("emails".into());
        assert_eq!(c.crypto_domain(), "emails");
    }
}
