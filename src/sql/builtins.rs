//! The catalogue of PostgreSQL built-ins that run SQL, or read stored values, inside the
//! server where pgcloak cannot see what they touch. A statement that calls one (or reads
//! one of the relations) is [`Opaque`](super::Opaque): it runs only for a session whose
//! roles cannot reach protected data, or when the policy's `functions.allow` names it.
//! `pgcloak check --database` prints `REVOKE EXECUTE ... FROM PUBLIC` for the functions.
//!
//! Kept in code and in docs/security.md; extend both together.

/// Functions (in `pg_catalog` or a common extension) that execute an SQL string or a
/// cursor, or dump whole relations, schemas or databases.
pub const SQL_EXECUTING_FUNCTIONS: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    // dblink (contrib) connects back, possibly to the same database, and runs any SQL.
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_fetch",
    "dblink_send_query",
    "dblink_get_result",
];

/// Catalog relations that expose stored values or their statistics.
pub const VALUE_EXPOSING_RELATIONS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
];

/// The catalogue entry for a function name (lower-case, unqualified), if any.
pub fn sql_executing_function(name: &str) -> Option<&'static str> {
    SQL_EXECUTING_FUNCTIONS
        .iter()
        .copied()
        .find(|f| f.eq_ignore_ascii_case(name))
}

/// The catalogue entry for a relation name, if any.
pub fn value_exposing_relation(name: &str) -> Option<&'static str> {
    VALUE_EXPOSING_RELATIONS
        .iter()
        .copied()
        .find(|f| f.eq_ignore_ascii_case(name))
}

/// Every catalogued name (functions, then relations): what `functions.allow` accepts
/// as a bare name.
pub fn catalogue() -> impl Iterator<Item = &'static str> {
    SQL_EXECUTING_FUNCTIONS
        .iter()
        .chain(VALUE_EXPOSING_RELATIONS)
        .copied()
}

/// Whether a (normalised) name is in the catalogue.
pub fn is_catalogued(name: &str) -> bool {
    catalogue().any(|c| c == name)
}
