//! The catalogue of PostgreSQL built-ins that run SQL, or read stored values, inside the
//! server where pgcloak cannot see what they touch. A statement that calls one (or reads
//! one of the relations) is [`Opaque`](crate::sql::Opaque): it runs only for a session whose
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

/// Common PostgreSQL built-in functions, the only function names a refusal shows
/// ([`crate::sql::refusal::FunctionName`]): a name outside this table (a user function, a
/// typo) is not echoed back.
#[rustfmt::skip]
pub const KNOWN_FUNCTIONS: &[&str] = &[
    // aggregates
    "avg", "bit_and", "bit_or", "bool_and", "bool_or", "count", "every", "max", "min", "sum",
    "string_agg", "array_agg", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
    "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "mode",
    "percentile_cont", "percentile_disc", "rank", "dense_rank", "row_number", "ntile", "lag",
    "lead", "first_value", "last_value", "nth_value", "xmlagg",
    // strings
    "upper", "lower", "initcap", "length", "char_length", "character_length", "octet_length",
    "bit_length", "substr", "substring", "left", "right", "trim", "btrim", "ltrim", "rtrim",
    "lpad", "rpad", "replace", "translate", "concat", "concat_ws", "format", "position",
    "strpos", "split_part", "reverse", "repeat", "md5", "sha224", "sha256", "sha384", "sha512",
    "encode", "decode", "convert", "convert_from", "convert_to", "to_hex", "ascii", "chr",
    "quote_ident", "quote_literal", "quote_nullable", "regexp_replace", "regexp_match",
    "regexp_matches", "regexp_split_to_array", "regexp_split_to_table", "starts_with",
    "string_to_array", "array_to_string", "overlay", "unaccent", "get_byte", "set_byte",
    // numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "mod", "power", "sqrt", "exp", "ln",
    "log", "sign", "random", "width_bucket", "greatest", "least", "coalesce", "nullif",
    // dates
    "date_part", "date_trunc", "extract", "age", "to_char", "to_date", "to_timestamp",
    "to_number", "justify_days", "justify_hours", "make_date", "make_timestamp", "now",
    // json, xml, rows and arrays
    "to_json", "to_jsonb", "row_to_json", "json_build_object", "jsonb_build_object",
    "json_build_array", "jsonb_build_array", "jsonb_set", "jsonb_insert", "json_extract_path",
    "jsonb_extract_path", "json_extract_path_text", "jsonb_extract_path_text",
    "json_populate_record", "jsonb_populate_record", "jsonb_strip_nulls", "jsonb_pretty",
    "xmlelement", "xmlforest", "array_length", "array_position", "array_positions",
    "array_append", "array_prepend", "array_cat", "array_remove", "array_replace",
    "cardinality", "unnest", "generate_series", "row", "hashtext", "digest", "hmac", "crypt",
    "pgp_sym_encrypt", "pgp_sym_decrypt", "length", "to_tsvector", "to_tsquery",
    "plainto_tsquery", "websearch_to_tsquery", "similarity", "levenshtein", "soundex",
    "metaphone", "pg_typeof", "num_nulls", "num_nonnulls",
];

/// The table entry for a function name (unqualified or `pg_catalog.`-qualified, any
/// case), if any.
pub fn known_function(name: &str) -> Option<&'static str> {
    let bare = name
        .strip_prefix("pg_catalog.")
        .or_else(|| name.strip_prefix("PG_CATALOG."))
        .unwrap_or(name);
    KNOWN_FUNCTIONS
        .iter()
        .copied()
        .find(|f| f.eq_ignore_ascii_case(bare))
}
