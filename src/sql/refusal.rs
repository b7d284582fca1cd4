//! Why pgcloak refuses a statement or a result, as data: a [`Refusal`] is an
//! [`Operation`] and a [`Reason`], and is rendered to its message, SQLSTATE and metric
//! label here and nowhere else.
//!
//! A refusal must never carry a value from the client (a literal, a parameter, a row
//! value): errors reach logs, metrics and the client's terminal. The types make that
//! hold by construction rather than by convention:
//! - every name a refusal shows is a [`ColumnName`], [`RelationName`], [`CatalogName`],
//!   [`FunctionName`] or [`OperatorName`], each built only from the policy, the
//!   catalog (the [`Schema`] or the [`NameSet`] derived from it), the session's own
//!   record of what it created, or a fixed table of PostgreSQL built-ins; none has a
//!   constructor that takes free text and keeps it unchecked;
//! - every other piece of text is a `&'static str` fixed in the code;
//! - the only numbers are counts and positions of the statement's shape (how many list
//!   elements, which `$n`, which result column), limits from the configuration, a
//!   policy generation and a type OID.
//!
//! The fields of the name types are private, so no other module can wrap text in one:
//!
//! ```compile_fail
//! let _ = pgcloak::sql::refusal::ColumnName("4111-1111-1111-1111".into());
//! ```
//!
//! ```compile_fail
//! let _ = pgcloak::sql::refusal::FunctionName("my_leaky_fn");
//! ```
//!
//! Adding a refusal: add a [`Reason`] variant holding only such types, and its message
//! in [`Reason::render`]; its class decides SQLSTATE, metric label and hint.

use std::collections::HashSet;
use std::fmt;

use thiserror::Error;

use super::scan::NameSet;
use super::schema::Schema;
use crate::policy::{ColumnRef, Policy, TableName};

// ---------------------------------------------------------------- names

/// A protected column's name, taken from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnName(Box<str>);

impl ColumnName {
    /// `schema.table.column` as the analysis names it.
    pub fn of(policy: &Policy, c: ColumnRef) -> ColumnName {
        let p = policy.column(c);
        ColumnName(format!("{}.{}", p.table, p.column).into())
    }

    /// The policy's quoted qualified name, as the data path names it.
    pub fn quoted(policy: &Policy, c: ColumnRef) -> ColumnName {
        ColumnName(policy.column(c).qualified_name().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ColumnName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schema-qualified relation the policy protects or the catalog knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationName(TableName);

impl RelationName {
    /// A table the policy protects.
    pub fn protected(policy: &Policy, table: &TableName) -> Option<RelationName> {
        policy
            .is_protected_table(table)
            .then(|| RelationName(table.clone()))
    }

    /// A relation the policy protects or the catalog knows (exists, has known columns,
    /// or reaches a protected column).
    pub fn known(policy: &Policy, schema: &dyn Schema, table: &TableName) -> Option<RelationName> {
        let known = policy.is_protected_table(table)
            || schema.relation_reach(&table.schema, &table.name).is_some()
            || schema.table_exists(&table.schema, &table.name)
            || schema.table_columns(table).is_some()
            || schema.view_columns(table).is_some();
        known.then(|| RelationName(table.clone()))
    }
}

impl fmt::Display for RelationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An unqualified (or `schema.name`) name of a relation or function that reaches
/// protected data, as the catalog, the policy or the session's record of what it
/// created spells it (lower-cased where the name set is).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CatalogName(Box<str>);

impl CatalogName {
    /// A name of the fast-path name set (built from the policy and the catalog's
    /// reach set), or a table name of the policy.
    pub fn listed(names: &NameSet, policy: &Policy, word: &str) -> Option<CatalogName> {
        let listed = names.contains(word) || policy.columns().iter().any(|c| c.table.name == word);
        listed.then(|| CatalogName(word.to_ascii_lowercase().into()))
    }

    /// A name of the fast-path name set only.
    pub fn in_name_set(names: &NameSet, word: &str) -> Option<CatalogName> {
        names
            .contains(word)
            .then(|| CatalogName(word.to_ascii_lowercase().into()))
    }

    /// A user function or procedure the catalog says reaches protected data (in
    /// `schema`, or in any schema when None).
    pub fn reaching_function(
        catalog: &dyn Schema,
        schema: Option<&str>,
        name: &str,
    ) -> Option<CatalogName> {
        catalog.function_reaches(schema, name).then(|| {
            CatalogName(match schema {
                Some(s) => format!("{s}.{name}").into(),
                None => name.into(),
            })
        })
    }

    /// A function this session created with SQL pgcloak cannot see into (the
    /// session's own record, which the catalog learns of only later).
    pub fn created_in_session(created: &HashSet<String>, name: &str) -> Option<CatalogName> {
        created.contains(name).then(|| CatalogName(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CatalogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PostgreSQL built-in function, named from the fixed table of
/// [`super::builtins::KNOWN_FUNCTIONS`]; a function outside it is not named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionName(&'static str);

impl FunctionName {
    pub fn builtin(name: &str) -> Option<FunctionName> {
        super::builtins::known_function(name).map(FunctionName)
    }
}

/// A PostgreSQL operator, named from a fixed table; an operator outside it (a custom
/// one) is not named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorName(&'static str);

/// The operators pgcloak names in a refusal.
#[rustfmt::skip]
const OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "^", "||", "<", ">", "<=", ">=", "=", "<>", "!=", "~", "!~", "~*",
    "!~*", "~~", "!~~", "~~*", "!~~*", "@>", "<@", "&&", "->", "->>", "#>", "#>>", "#-", "?",
    "?|", "?&", "&", "|", "#", "<<", ">>", "@", "@@", "@@@", "|/", "||/", "!", "!!", "-|-",
    "<->", "&<", "&>", "<<|", "|>>", "NOT", "AND", "OR", "XOR", "DIV", "MOD",
];

impl OperatorName {
    /// The operator as sqlparser prints it, when it is in the fixed table.
    pub fn known(spelled: &str) -> Option<OperatorName> {
        OPERATORS
            .iter()
            .copied()
            .find(|o| *o == spelled)
            .map(OperatorName)
    }
}

/// The session's search_path (schema names from the server's `current_schemas`),
/// shown when an unqualified name cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath(Box<[Box<str>]>);

impl SearchPath {
    pub(in crate::sql) fn of_session(path: &[String]) -> SearchPath {
        SearchPath(path.iter().map(|s| s.as_str().into()).collect())
    }
}

impl fmt::Display for SearchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

/// The leading keywords of a statement pgcloak does not analyse (`ALTER TABLE`),
/// from a fixed table of SQL command words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementWords([Option<&'static str>; 2]);

#[rustfmt::skip]
const COMMAND_WORDS: &[&str] = &[
    "ALTER", "CREATE", "DROP", "COMMENT", "GRANT", "REVOKE", "TRUNCATE", "LOCK", "VACUUM",
    "ANALYZE", "ANALYSE", "CLUSTER", "REINDEX", "REFRESH", "SECURITY", "IMPORT", "REASSIGN",
    "LISTEN", "NOTIFY", "UNLISTEN", "DECLARE", "FETCH", "MOVE", "CLOSE", "DISCARD", "LOAD",
    "CALL", "SET", "RESET", "SHOW", "CHECKPOINT", "OR", "REPLACE", "TEMP", "TEMPORARY",
    "UNLOGGED", "GLOBAL", "LOCAL", "MATERIALIZED", "RECURSIVE", "TABLE", "VIEW", "INDEX",
    "SEQUENCE", "FUNCTION", "PROCEDURE", "TRIGGER", "RULE", "POLICY", "SCHEMA", "TYPE",
    "DOMAIN", "EXTENSION", "STATISTICS", "PUBLICATION", "SUBSCRIPTION", "FOREIGN", "SERVER",
    "AGGREGATE", "OPERATOR", "ROLE", "USER", "DATABASE", "DEFAULT", "PRIVILEGES", "ON", "LABEL",
    "EVENT", "COLUMN", "CONSTRAINT", "ALL", "SYSTEM", "ACCESS", "CAST", "COLLATION",
    "CONVERSION", "TEXT", "SEARCH", "LANGUAGE", "OWNED", "TRANSFORM", "TABLESPACE",
];

impl StatementWords {
    /// The first one or two words of `text`, each only when it is in the fixed table.
    pub(in crate::sql) fn of(words: &[&str]) -> StatementWords {
        let known = |w: &str| {
            COMMAND_WORDS
                .iter()
                .copied()
                .find(|c| c.eq_ignore_ascii_case(w))
        };
        let first = words.first().and_then(|w| known(w));
        let second = first.and(words.get(1).and_then(|w| known(w)));
        StatementWords([first, second])
    }
}

impl fmt::Display for StatementWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [Some(a), Some(b)] => write!(f, "{a} {b}"),
            [Some(a), None] => f.write_str(a),
            _ => f.write_str("a"),
        }
    }
}

/// Why a text may reach a protected column, as a refusal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mention {
    /// It calls a reaching function or SQL-executing built-in.
    Calls(CatalogName),
    /// It refers to a reaching relation (or a policy column name).
    RefersTo(CatalogName),
    /// A word that hides names (DO, EXECUTE, CALL).
    Distrusted(&'static str),
    /// An escape that could spell a protected name.
    Escaped,
    /// An unterminated quote, comment or body.
    Unterminated,
    /// A name of the set that cannot be shown (never expected).
    Unnamed,
}

impl fmt::Display for Mention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mention::Calls(n) => write!(f, "calls \"{n}\", which can reach protected data"),
            Mention::RefersTo(n) => {
                write!(f, "refers to \"{n}\", which can reach protected columns")
            }
            Mention::Distrusted(w) => write!(f, "uses {}", w.to_ascii_uppercase()),
            Mention::Escaped => f.write_str("uses escapes that may spell a protected name"),
            Mention::Unterminated => f.write_str("has an unterminated quote, comment or body"),
            Mention::Unnamed => f.write_str("names something that can reach protected columns"),
        }
    }
}

impl Mention {
    /// How a refusal shows the scanner's finding: a name only when the name set has it.
    pub(in crate::sql) fn of(names: &NameSet, m: &super::scan::Mention) -> Mention {
        use super::scan::Mention as M;
        use super::scan::NameKind as K;
        match m {
            M::Name(n, kind) => match (CatalogName::in_name_set(names, n), kind) {
                (Some(c), K::Function | K::Builtin) => Mention::Calls(c),
                (Some(c), _) => Mention::RefersTo(c),
                (None, _) => Mention::Unnamed,
            },
            M::Distrusted(w) => match ["do", "execute", "call"]
                .into_iter()
                .find(|d| d.eq_ignore_ascii_case(w))
            {
                Some(d) => Mention::Distrusted(d),
                None => Mention::Unnamed,
            },
            M::Escaped => Mention::Escaped,
            M::Unterminated => Mention::Unterminated,
        }
    }
}

// ---------------------------------------------------------------- operations

/// A set operation combining branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Union,
    Intersect,
    Except,
    Values,
    Other,
}

/// What the statement (or the server's answer) tried to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `=` or `<>`.
    Equal,
    NotEqual,
    IsDistinctFrom,
    IsNotDistinctFrom,
    In,
    InSubquery,
    /// `op ANY (...)` / `op ALL (...)`.
    Any(Option<OperatorName>),
    All(Option<OperatorName>),
    Like,
    ILike,
    SimilarTo,
    RegexMatch,
    Between,
    IsNull,
    /// A column used as a boolean condition.
    Condition,
    Count,
    CountDistinct,
    Cast,
    Case,
    Array,
    RowConstructor,
    Expression,
    Function(Option<FunctionName>),
    Operator(Option<OperatorName>),
    OrderBy,
    GroupBy,
    Distinct,
    DistinctOn,
    JoinUsing,
    SetOperation(SetOp),
    WindowClause,
    WindowDefinition,
    TableFunction,
    TableFunctionArgument,
    LimitOffset,
    Fetch,
    /// A clause of another SQL dialect (TOP, QUALIFY, ...), by its keywords.
    DialectClause(&'static str),
    /// Writes: a value stored into a column.
    Insert,
    InsertValue,
    InsertSelect,
    UpdateSet,
    SetFromSubquery,
    PlainAssignment,
    MergeInsert,
    MergeInsertValue,
    OnConflictTarget,
    ExecuteArgument,
    /// A statement as a whole (no finer operation applies).
    Statement,
    /// The data path: a result, row or message from the server.
    Result,
    /// The data path: COPY data.
    Copy,
    /// The data path: a prepared statement or portal.
    Prepared,
}

impl Operation {
    /// How a message names the operation.
    fn phrase(self) -> OpPhrase {
        OpPhrase(self)
    }

    /// The phrase before "encrypted column X needs a literal ..." (a value bound to
    /// the column).
    fn bind_phrase(self) -> BindPhrase {
        BindPhrase(self)
    }
}

struct OpPhrase(Operation);

impl fmt::Display for OpPhrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fixed = match self.0 {
            Operation::Equal => "=",
            Operation::NotEqual => "<>",
            Operation::IsDistinctFrom => "IS DISTINCT FROM",
            Operation::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
            Operation::In => "IN",
            Operation::InSubquery => "IN (subquery)",
            Operation::Any(op) | Operation::All(op) => {
                let what = if matches!(self.0, Operation::Any(_)) {
                    "ANY"
                } else {
                    "ALL"
                };
                return match op {
                    Some(o) => write!(f, "{} {what}", o.0),
                    None => write!(f, "an operator {what}"),
                };
            }
            Operation::Like => "LIKE",
            Operation::ILike => "ILIKE",
            Operation::SimilarTo => "SIMILAR TO",
            Operation::RegexMatch => "a regular expression match",
            Operation::Between => "BETWEEN",
            Operation::IsNull => "IS NULL",
            Operation::Condition => "using a column as a condition",
            Operation::Count => "count()",
            Operation::CountDistinct => "count(DISTINCT ...)",
            Operation::Cast => "a cast",
            Operation::Case => "CASE",
            Operation::Array => "an ARRAY",
            Operation::RowConstructor => "a row constructor",
            Operation::Expression => "an expression",
            Operation::Function(Some(n)) => return write!(f, "function {}()", n.0),
            Operation::Function(None) => "a function",
            Operation::Operator(Some(o)) => return write!(f, "operator {}", o.0),
            Operation::Operator(None) => "an operator",
            Operation::OrderBy => "ORDER BY",
            Operation::GroupBy => "GROUP BY",
            Operation::Distinct => "DISTINCT",
            Operation::DistinctOn => "DISTINCT ON",
            Operation::JoinUsing => "JOIN USING",
            Operation::SetOperation(SetOp::Union) => "UNION",
            Operation::SetOperation(SetOp::Intersect) => "INTERSECT",
            Operation::SetOperation(SetOp::Except) => "EXCEPT",
            Operation::SetOperation(SetOp::Values) => "VALUES",
            Operation::SetOperation(SetOp::Other) => "a set operation",
            Operation::WindowClause => "a window clause",
            Operation::WindowDefinition => "a window definition",
            Operation::TableFunction => "a table function",
            Operation::TableFunctionArgument => "a table function argument",
            Operation::LimitOffset => "LIMIT/OFFSET",
            Operation::Fetch => "FETCH",
            Operation::DialectClause(c) => c,
            Operation::Insert => "INSERT",
            Operation::InsertValue => "an INSERT value",
            Operation::InsertSelect => "INSERT ... SELECT",
            Operation::UpdateSet => "UPDATE SET",
            Operation::SetFromSubquery => "SET (...) = (SELECT ...)",
            Operation::PlainAssignment => "an assignment to a plain column",
            Operation::MergeInsert => "MERGE INSERT",
            Operation::MergeInsertValue => "a MERGE INSERT value",
            Operation::OnConflictTarget => "an ON CONFLICT target",
            Operation::ExecuteArgument => "an EXECUTE argument",
            Operation::Statement => "the statement",
            Operation::Result => "the result",
            Operation::Copy => "COPY",
            Operation::Prepared => "a prepared statement",
        };
        f.write_str(fixed)
    }
}

struct BindPhrase(Operation);

impl fmt::Display for BindPhrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Operation::Insert => f.write_str("INSERT into"),
            Operation::MergeInsert => f.write_str("MERGE INSERT into"),
            op => write!(f, "{} on", op.phrase()),
        }
    }
}

// ---------------------------------------------------------------- reasons

/// A whole-row reference to a relation holding protected columns: what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeRow {
    pub of: WholeRowOf,
    /// The protected columns it reads (None: a column whose origin is unresolved).
    pub columns: Vec<Option<ColumnName>>,
}

/// The relation of a [`WholeRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WholeRowOf {
    Table(RelationName),
    /// A table the policy names but neither policy nor catalog could confirm (never
    /// expected; not named).
    UnnamedTable,
    DerivedRelation,
    TableFunction,
}

impl fmt::Display for WholeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole-row reference to ")?;
        match &self.of {
            WholeRowOf::Table(t) => write!(f, "{t}")?,
            WholeRowOf::UnnamedTable => f.write_str("a protected table")?,
            WholeRowOf::DerivedRelation => f.write_str("a derived relation")?,
            WholeRowOf::TableFunction => f.write_str("a table function")?,
        }
        f.write_str(" reads its protected columns ")?;
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match c {
                Some(c) => write!(f, "{c}")?,
                None => f.write_str("a column of unresolved origin")?,
            }
        }
        Ok(())
    }
}

/// What a COPY statement copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySubject {
    Table(RelationName),
    Query,
}

impl fmt::Display for CopySubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopySubject::Table(t) => write!(f, "protected table {t}"),
            CopySubject::Query => f.write_str("a query over protected columns"),
        }
    }
}

/// SQL pgcloak cannot see into, refused for a session that can reach protected data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpaqueSql {
    /// A catalogued SQL-executing built-in (its name from [`super::builtins`]).
    Builtin(&'static str),
    /// A user function the catalog says reaches protected data.
    Function(CatalogName),
    DynamicSql,
    /// `EXECUTE` of a statement the session did not see prepared.
    UnknownPrepared,
}

/// Where the data path found an encrypted value a session may not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakPlace {
    /// A result column, by 1-based position.
    ResultColumn(usize),
    /// A field of COPY TO STDOUT, by 1-based position.
    CopyField(usize),
    ServerMessage,
    NotifyPayload,
}

impl fmt::Display for LeakPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeakPlace::ResultColumn(n) => write!(f, "result column {n}"),
            LeakPlace::CopyField(n) => write!(f, "COPY TO STDOUT field {n}"),
            LeakPlace::ServerMessage => f.write_str("a server message"),
            LeakPlace::NotifyPayload => f.write_str("a NOTIFY payload"),
        }
    }
}

/// A refusal that needs no name: one fixed sentence each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixed {
    TableNameForm,
    UsingColumnForm,
    InsertColumnForm,
    SetTargetForm,
    ExecuteForm,
    QualifiedStarForm,
    TableWithoutName,
    QueryForm,
    JoinForm,
    NaturalJoin,
    StarOverMergedJoin,
    SelectInto,
    StarAfterUnknownColumns,
    UnresolvedQualifiedStar,
    ProtectedAfterUnknownStar,
    UnresolvedResultColumn,
    AliasedJoinNeedsCatalog,
    RecursiveCteMixed,
    MergeTargetKind,
    MergeOutput,
    MergeUpdateForm,
    InsertIntoTableFunction,
    InsertSet,
    OnDuplicateKey,
    UpdateTargetKind,
    AfterSearchPathChange,
    LostLiteral,
    BitStringLiteral,
    FunctionCallMessage,
    ExecuteInMultiStatement,
    ExecuteWithParams,
    PreparedNotOneCommand,
    PrepareInExtended,
    ResultColumnsMismatch,
    ResultRowMismatch,
    UnterminatedCsv,
    PerColumnFormatsWithStar,
    MixedFormatsWithStar,
}

impl Fixed {
    fn text(self) -> &'static str {
        match self {
            Fixed::TableNameForm => "unsupported table name form",
            Fixed::UsingColumnForm => "unsupported USING column",
            Fixed::InsertColumnForm => "unsupported INSERT column",
            Fixed::SetTargetForm => "unsupported SET target",
            Fixed::ExecuteForm => "unsupported EXECUTE form",
            Fixed::QualifiedStarForm => "unsupported qualified *",
            Fixed::TableWithoutName => "TABLE without a name",
            Fixed::QueryForm => {
                "this query form is not supported by pgcloak in a statement over protected columns"
            }
            Fixed::JoinForm => {
                "this join form is not supported by pgcloak on protected tables; use JOIN ... ON"
            }
            Fixed::NaturalJoin => {
                "NATURAL JOIN involving protected columns is not supported by pgcloak; use JOIN ... ON"
            }
            Fixed::StarOverMergedJoin => {
                "* over a join with USING or NATURAL involving protected columns cannot be expanded \
                 by pgcloak; list the columns"
            }
            Fixed::SelectInto => {
                "SELECT INTO would copy ciphertext of protected columns into a new table; this is not supported"
            }
            Fixed::StarAfterUnknownColumns => {
                "* over protected columns after a table of unknown columns; list the columns"
            }
            Fixed::UnresolvedQualifiedStar => {
                "cannot resolve a qualified * in a statement over protected columns"
            }
            Fixed::ProtectedAfterUnknownStar => {
                "a protected column after * over a table of unknown columns; list the columns"
            }
            Fixed::UnresolvedResultColumn => {
                "a result column's origin cannot be resolved in a statement over protected columns; \
                 pgcloak will not return what could be ciphertext"
            }
            Fixed::AliasedJoinNeedsCatalog => {
                "an aliased join over a protected table needs the catalog's column lists"
            }
            Fixed::RecursiveCteMixed => {
                "a recursive CTE mixes encrypted and plain values in one column"
            }
            Fixed::MergeTargetKind => "MERGE into this relation kind is not supported by pgcloak",
            Fixed::MergeOutput => "MERGE ... OUTPUT is not PostgreSQL syntax",
            Fixed::MergeUpdateForm => "this MERGE UPDATE form is not supported by pgcloak",
            Fixed::InsertIntoTableFunction => "INSERT into a table function is not supported by pgcloak",
            Fixed::InsertSet => "INSERT ... SET is not PostgreSQL syntax",
            Fixed::OnDuplicateKey => "ON DUPLICATE KEY is not PostgreSQL syntax",
            Fixed::UpdateTargetKind => "UPDATE of this relation kind is not supported by pgcloak",
            Fixed::AfterSearchPathChange => {
                "a statement that follows a search_path change in the same query string cannot be analysed; \
                 send it as a separate query"
            }
            Fixed::LostLiteral => {
                "pgcloak could not locate a literal in the statement text; it was not sent"
            }
            Fixed::BitStringLiteral => {
                "bit-string literals cannot be stored in an encrypted column; use a string literal"
            }
            Fixed::FunctionCallMessage => {
                "pgcloak refuses the function-call ('F') protocol message for a session \
                 whose roles can reach protected columns: it cannot tell which columns \
                 the function reads; use a SELECT instead"
            }
            Fixed::ExecuteInMultiStatement => {
                "EXECUTE of a prepared statement on protected columns must be sent on \
                 its own (not in a multi-statement string)"
            }
            Fixed::ExecuteWithParams => {
                "EXECUTE with $n parameters is not supported on protected columns"
            }
            Fixed::PreparedNotOneCommand => "a prepared statement must contain exactly one command",
            Fixed::PrepareInExtended => {
                "PREPARE/EXECUTE inside the extended protocol is not supported on protected \
                 columns"
            }
            Fixed::ResultColumnsMismatch => {
                "the server's result columns do not match pgcloak's analysis of the statement"
            }
            Fixed::ResultRowMismatch => {
                "a result row does not match pgcloak's analysis of the statement"
            }
            Fixed::UnterminatedCsv => "unterminated CSV quoted field in COPY data",
            Fixed::PerColumnFormatsWithStar => {
                "pgcloak does not support per-column result formats with SELECT * on a \
                 protected table; list the columns"
            }
            Fixed::MixedFormatsWithStar => {
                "pgcloak does not support mixed result formats with SELECT * on a protected \
                 table; list the columns"
            }
        }
    }
}

/// How the database schema disagrees with the policy about a column (from the
/// catalog's check of the column's location).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaProblem {
    TableMissing,
    /// The relation is of this kind (a fixed word of the catalog: "view", ...).
    NotATable(&'static str),
    ColumnMissing,
    NotBytea,
    Unresolved,
}

/// A literal form that could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralForm {
    Any,
    String,
    EscapeString,
    UnicodeString,
}

/// Why: the rule the statement or the server's answer broke. Each variant holds only
/// names from the policy or catalog, fixed phrases, and shape counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    // -- the analysis (0A000 unless noted)
    /// A fixed sentence (the data-path ones are counted as `refused`).
    Fixed(Fixed),
    /// The operation is not possible on this encrypted column.
    EncryptedOperand(ColumnName),
    /// A column's origin cannot be resolved.
    UnresolvedOrigin,
    /// The operation reads a whole row holding protected columns.
    OverWholeRow(WholeRow),
    /// A whole-row reference to protected columns outside a select list's `*`.
    WholeRow(WholeRow),
    /// Equality on a randomized column.
    RandomizedColumn(ColumnName),
    /// Two encrypted columns under different keys compared.
    DifferentKeys(ColumnName, ColumnName),
    /// An encrypted column compared with a plain value.
    PlainComparison(ColumnName),
    /// A `$n` bound to an encrypted column also used elsewhere.
    ParameterReused {
        index: u16,
        column: ColumnName,
    },
    /// A `$n` bound to two encrypted columns needing different keys.
    ParameterTwoKeys {
        index: u16,
        first: ColumnName,
        second: ColumnName,
    },
    /// An IN list longer than the configured cap.
    InListTooLong {
        len: usize,
        column: ColumnName,
        cap: usize,
    },
    /// An ARRAY[...] longer than the configured cap.
    ArrayTooLong {
        len: usize,
        column: ColumnName,
        cap: usize,
    },
    /// `= ANY` with something other than an array parameter or an ARRAY of literals.
    AnyNeedsArray(ColumnName),
    /// `SET (...) = (SELECT ...)` whose subquery's columns are not listed.
    SetSubqueryColumns(Option<RelationName>),
    /// A multi-column SET of an encrypted column from an expression.
    MultiColumnSet(ColumnName),
    /// An expression (not a literal or parameter) stored into an encrypted column.
    ExpressionIntoEncrypted(ColumnName),
    /// A value of another origin stored into an encrypted column.
    OtherOriginIntoEncrypted(ColumnName),
    /// Ciphertext stored into a plain column.
    CiphertextIntoPlain {
        column: ColumnName,
        table: Option<RelationName>,
    },
    /// A stored value whose origin cannot be resolved.
    UnresolvedSource(Option<RelationName>),
    /// ORDER BY an encrypted column.
    OrderByEncrypted(ColumnName),
    /// A set operation with `*` on one side only.
    SetOperationStar,
    /// A set operation combining an encrypted column with another origin.
    SetOperationMixed(ColumnName),
    /// `*` over a relation whose columns are unknown.
    StarOverUnknown(Option<RelationName>),
    /// Column aliases on a protected table the catalog does not list.
    AliasesNeedCatalog(Option<RelationName>),
    /// An unqualified name not on the search_path while a reaching relation of that
    /// name exists (42P01).
    NotOnSearchPath {
        name: Option<CatalogName>,
        search_path: SearchPath,
    },
    /// The reference to a reaching relation could not be located for pinning.
    UnlocatedRelation(Option<RelationName>),
    PartitionChild(Option<RelationName>),
    ViewOfUnknownOrigin(Option<RelationName>),
    ParentWithoutOnly(Option<RelationName>),
    IndirectWrite(Option<RelationName>),
    WriteThroughView(Option<RelationName>),
    CteShadowsRelation(Option<CatalogName>),
    UnanalysedUse(Option<RelationName>),
    InsertNeedsColumns(Option<RelationName>),
    InsertSelectStar(Option<RelationName>),
    MergeInsertNeedsValues(Option<RelationName>),
    CopyNeedsColumns(Option<RelationName>),
    CopyBinary(CopySubject),
    CopyFileOrProgram(CopySubject),
    CopyUnresolved(CopySubject),
    /// PREPARE declares a type for a parameter bound to an encrypted column.
    PrepareTypedParameter {
        index: u16,
        column: ColumnName,
    },
    /// A statement kind pgcloak does not analyse, naming a reaching name.
    UnanalysedStatement {
        words: StatementWords,
        mention: Mention,
    },
    /// A DO block or function body naming a reaching name.
    OpaqueBody(Mention),
    /// EXECUTE passing one `$n` for an encrypted parameter and elsewhere.
    ExecuteParameterReused {
        index: u16,
        column: ColumnRef,
    },
    ExecuteMissingParameter {
        index: u16,
    },
    ExecuteArgumentNotPlain {
        index: u16,
    },
    // -- 42601
    /// The statement could not be parsed and mentions a reaching name.
    Unparsed(Mention),
    NulByte,
    InvalidUnicodeEscape,
    UescapeNeedsString,
    InvalidUescape,
    // -- 22000
    /// The statement text does not match its analysis (never expected).
    AnalysisMismatch,
    UndecodableLiteral(LiteralForm),
    // -- 42501
    /// SQL pgcloak cannot see into, for a session that can reach protected data.
    OpaqueForReachingSession(OpaqueSql),
    /// A function this session created with SQL pgcloak cannot see into.
    CreatedOpaqueFunction(CatalogName),
    /// No search grant on a compared column.
    NoSearchGrant {
        column: ColumnName,
        randomized: bool,
    },
    /// `deny` on a returned column (the analysis' check).
    NoReadGrant(ColumnName),
    /// `deny` on a column whose value the server returned (the data path's check).
    ColumnDenied(ColumnName),
    /// Ciphertext the session may not see reached the result.
    CiphertextWithheld(LeakPlace),
    // -- the data path (0A000, counted as `refused`)
    AnyListTooLong {
        column: ColumnName,
        len: usize,
        cap: usize,
    },
    UnfollowedResultColumn {
        position: usize,
        column: ColumnName,
    },
    NotByteaType {
        column: ColumnName,
        oid: u32,
    },
    NotByteaValue(ColumnName),
    SchemaMismatch(ColumnName, SchemaProblem),
    SchemaUnresolved {
        generation: u64,
    },
    CopyRowTooLong {
        max: usize,
    },
    CopyFieldCount {
        got: usize,
        expected: usize,
    },
    // -- 0A000, counted as `plan_changed`
    PlanChanged,
}

/// How a reason is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The analysis: not possible on encrypted columns (0A000, with a hint).
    Unsupported,
    /// The analysis: cannot parse (42601).
    Syntax,
    /// The analysis: an ambiguous unqualified name (42P01).
    UndefinedTable,
    /// The analysis: the statement does not match itself (22000).
    Value,
    /// A right the roles lack (42501).
    Denied,
    /// The data path refused a statement, value or result (0A000).
    Refused,
    /// A policy change alters a prepared statement (0A000).
    PlanChanged,
}

impl Reason {
    fn class(&self) -> Class {
        use Reason as R;
        match self {
            R::Fixed(
                Fixed::FunctionCallMessage
                | Fixed::ExecuteInMultiStatement
                | Fixed::ExecuteWithParams
                | Fixed::PreparedNotOneCommand
                | Fixed::PrepareInExtended
                | Fixed::ResultColumnsMismatch
                | Fixed::ResultRowMismatch
                | Fixed::UnterminatedCsv
                | Fixed::PerColumnFormatsWithStar
                | Fixed::MixedFormatsWithStar,
            ) => Class::Refused,
            R::Fixed(_) => Class::Unsupported,
            R::Unparsed(_)
            | R::NulByte
            | R::InvalidUnicodeEscape
            | R::UescapeNeedsString
            | R::InvalidUescape => Class::Syntax,
            R::NotOnSearchPath { .. } => Class::UndefinedTable,
            R::AnalysisMismatch | R::UndecodableLiteral(_) => Class::Value,
            R::OpaqueForReachingSession(_)
            | R::CreatedOpaqueFunction(_)
            | R::NoSearchGrant { .. }
            | R::NoReadGrant(_)
            | R::ColumnDenied(_)
            | R::CiphertextWithheld(_) => Class::Denied,
            R::AnyListTooLong { .. }
            | R::UnfollowedResultColumn { .. }
            | R::NotByteaType { .. }
            | R::NotByteaValue(_)
            | R::SchemaMismatch(..)
            | R::SchemaUnresolved { .. }
            | R::CopyRowTooLong { .. }
            | R::CopyFieldCount { .. } => Class::Refused,
            R::PlanChanged => Class::PlanChanged,
            _ => Class::Unsupported,
        }
    }

    /// The one policy column the reason names first, if any.
    pub fn column(&self) -> Option<&ColumnName> {
        use Reason as R;
        match self {
            R::EncryptedOperand(c)
            | R::RandomizedColumn(c)
            | R::DifferentKeys(c, _)
            | R::PlainComparison(c)
            | R::ParameterReused { column: c, .. }
            | R::ParameterTwoKeys { first: c, .. }
            | R::InListTooLong { column: c, .. }
            | R::ArrayTooLong { column: c, .. }
            | R::AnyNeedsArray(c)
            | R::MultiColumnSet(c)
            | R::ExpressionIntoEncrypted(c)
            | R::OtherOriginIntoEncrypted(c)
            | R::CiphertextIntoPlain { column: c, .. }
            | R::OrderByEncrypted(c)
            | R::SetOperationMixed(c)
            | R::PrepareTypedParameter { column: c, .. }
            | R::NoSearchGrant { column: c, .. }
            | R::NoReadGrant(c)
            | R::ColumnDenied(c)
            | R::AnyListTooLong { column: c, .. }
            | R::UnfollowedResultColumn { column: c, .. }
            | R::NotByteaType { column: c, .. }
            | R::NotByteaValue(c)
            | R::SchemaMismatch(c, _) => Some(c),
            R::OverWholeRow(w) | R::WholeRow(w) => w.columns.iter().flatten().next(),
            _ => None,
        }
    }

    /// Whether the message already describes a whole-row reference.
    fn describes_whole_row(&self) -> bool {
        matches!(self, Reason::OverWholeRow(_) | Reason::WholeRow(_))
    }
}

/// The SQL text of a relation that may be unnamed.
struct Rel<'a>(&'a Option<RelationName>);

impl fmt::Display for Rel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => r.fmt(f),
            None => f.write_str("the relation"),
        }
    }
}

/// A catalog name in double quotes, or a neutral phrase when it could not be named.
struct Quoted<'a>(&'a Option<CatalogName>);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "\"{n}\""),
            None => f.write_str("a name"),
        }
    }
}

const WHOLE_ROW_RULE: &str =
    "pgcloak answers whole rows of protected relations only as * or t.* in a select list";

// ---------------------------------------------------------------- the refusal

/// A refused statement, value or result: what was tried and why. Rendered in
/// [`fmt::Display`] (the message), [`Refusal::sqlstate`], [`Refusal::reject_reason`]
/// (the metric label) and [`Refusal::hint`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct Refusal {
    operation: Operation,
    reason: Reason,
    /// A whole-row reference that accompanied (or caused) the refusal.
    whole_row: Option<Box<WholeRow>>,
}

impl Refusal {
    pub fn new(operation: Operation, reason: Reason) -> Refusal {
        Refusal {
            operation,
            reason,
            whole_row: None,
        }
    }

    /// A refusal of the statement as a whole.
    pub fn of(reason: Reason) -> Refusal {
        Refusal::new(Operation::Statement, reason)
    }

    /// A fixed-sentence refusal.
    pub fn fixed(f: Fixed) -> Refusal {
        Refusal::of(Reason::Fixed(f))
    }

    /// Notes the whole-row reference that accompanied an analysis refusal (shown
    /// unless the message already describes one; other classes are left alone).
    pub fn with_whole_row(mut self, w: WholeRow) -> Refusal {
        if self.reason.class() == Class::Unsupported && !self.reason.describes_whole_row() {
            self.whole_row = Some(Box::new(w));
        }
        self
    }

    pub fn operation(&self) -> Operation {
        self.operation
    }

    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// The policy column the refusal names first, if any.
    pub fn column(&self) -> Option<&ColumnName> {
        self.reason.column()
    }

    /// The PostgreSQL SQLSTATE the client gets.
    pub fn sqlstate(&self) -> &'static str {
        match self.reason.class() {
            Class::Unsupported | Class::Refused | Class::PlanChanged => "0A000",
            Class::Syntax => "42601",
            Class::UndefinedTable => "42P01",
            Class::Value => "22000",
            Class::Denied => "42501",
        }
    }

    /// The bounded label of metrics and the audit trail.
    pub fn reject_reason(&self) -> RejectReason {
        match self.reason.class() {
            Class::Unsupported | Class::Syntax | Class::UndefinedTable | Class::Value => {
                RejectReason::UnsupportedSql
            }
            Class::Denied => RejectReason::Denied,
            Class::Refused => RejectReason::Refused,
            Class::PlanChanged => RejectReason::PlanChanged,
        }
    }

    /// The hint of the ErrorResponse, if any.
    pub fn hint(&self) -> Option<&'static str> {
        (self.reason.class() == Class::Unsupported).then_some(
            "pgcloak refused this statement before it reached the server; see docs/policy.md for what works on encrypted columns.",
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f)?;
        if let Some(w) = &self.whole_row {
            write!(f, " ({w}; {WHOLE_ROW_RULE})")?;
        }
        Ok(())
    }
}

impl Refusal {
    /// The message: the one place a refusal becomes text.
    fn render(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason as R;
        let op = self.operation.phrase();
        let bind = self.operation.bind_phrase();
        match &self.reason {
            R::Fixed(x) => f.write_str(x.text()),
            R::EncryptedOperand(c) => write!(
                f,
                "{op} over encrypted column {c} is not supported: the database only sees ciphertext; \
                 encrypted columns allow projection, IS [NOT] NULL, count(), and for deterministic columns \
                 =, <>, IN, IS [NOT] DISTINCT FROM, GROUP BY, DISTINCT and joins in their key group"
            ),
            R::UnresolvedOrigin => write!(
                f,
                "{op}: a column's origin cannot be resolved in a statement over protected columns"
            ),
            R::OverWholeRow(w) => write!(f, "{op} over {w}; {WHOLE_ROW_RULE}, list the columns instead"),
            R::WholeRow(w) => write!(f, "{w}; {WHOLE_ROW_RULE}, list the columns instead"),
            R::RandomizedColumn(c) => write!(
                f,
                "{op} on randomized column {c} is not supported: randomized ciphertexts never compare equal; \
                 only IS [NOT] NULL and count() work (declare it encryption: deterministic for =, IN, GROUP BY and joins)"
            ),
            R::DifferentKeys(a, b) => write!(
                f,
                "{op} compares encrypted columns {a} and {b}, which use different keys; \
                 put them in one key_group to compare them"
            ),
            R::PlainComparison(c) => write!(
                f,
                "{op} compares encrypted column {c} with a plain value; compare it with a literal, \
                 a parameter or a column of its key group"
            ),
            R::ParameterReused { index, column } => write!(
                f,
                "parameter ${index} is encrypted for column {column} and also used elsewhere in the statement; \
                 a parameter bound to an encrypted column can be used only with that column \
                 (use a separate parameter)"
            ),
            R::ParameterTwoKeys {
                index,
                first,
                second,
            } => write!(
                f,
                "parameter ${index} is used with encrypted columns {first} and {second}, which need different keys or types; \
                 use separate parameters"
            ),
            R::InListTooLong { len, column, cap } => write!(
                f,
                "IN list of {len} values on encrypted column {column} exceeds the limit of {cap}; \
                 split the query or use = ANY($1) with a smaller array"
            ),
            R::ArrayTooLong { len, column, cap } => write!(
                f,
                "ARRAY of {len} values on encrypted column {column} exceeds the limit of {cap}"
            ),
            R::AnyNeedsArray(c) => write!(
                f,
                "{op} on encrypted column {c} needs a $n array parameter or an ARRAY[...] of literals"
            ),
            R::SetSubqueryColumns(t) => write!(
                f,
                "SET (...) = (SELECT ...) on {}: list the subquery's columns",
                Rel(t)
            ),
            R::MultiColumnSet(c) => write!(
                f,
                "multi-column SET (...) = ... on encrypted column {c} needs a list of literals or parameters; \
                 assign columns one by one"
            ),
            R::ExpressionIntoEncrypted(c) => write!(
                f,
                "{bind} encrypted column {c} needs a literal, a $n parameter, NULL or DEFAULT \
                 (or the same encrypted column); expressions cannot be encrypted"
            ),
            R::OtherOriginIntoEncrypted(c) => write!(
                f,
                "{op} into encrypted column {c} needs its source to be the same encrypted column or its key group; \
                 use VALUES with literals or parameters"
            ),
            R::CiphertextIntoPlain { column, table } => write!(
                f,
                "{op} would store ciphertext of {column} in a plain column of {}",
                Rel(table)
            ),
            R::UnresolvedSource(t) => write!(
                f,
                "{op} into {}: a source column's origin cannot be resolved",
                Rel(t)
            ),
            R::OrderByEncrypted(c) => write!(
                f,
                "ORDER BY on encrypted column {c} is not supported: ciphertext order is meaningless; \
                 sort on a plain column or in the application"
            ),
            R::SetOperationStar => write!(
                f,
                "{op} over protected columns with * needs explicit column lists"
            ),
            R::SetOperationMixed(c) => write!(
                f,
                "{op} combines encrypted column {c} with values of another origin; \
                 each branch must return the same encrypted column (or its key group)"
            ),
            R::StarOverUnknown(t) => match t {
                Some(t) => write!(
                    f,
                    "cannot expand * over protected table {t}: its columns are unknown; list the columns"
                ),
                None => f.write_str(
                    "cannot expand * over a table function: its columns are unknown; list the columns",
                ),
            },
            R::AliasesNeedCatalog(t) => write!(
                f,
                "column aliases on protected table {} need the catalog's column list",
                Rel(t)
            ),
            R::NotOnSearchPath { name, search_path } => write!(
                f,
                "relation {} is not in the session's search_path ({search_path}), but a relation of that name \
                 can reach protected columns; pgcloak refuses to guess which one PostgreSQL would use: \
                 qualify it with its schema",
                Quoted(name)
            ),
            R::UnlocatedRelation(t) => write!(
                f,
                "pgcloak could not locate the reference to relation {} in the statement; \
                 write it schema-qualified",
                Rel(t)
            ),
            R::PartitionChild(t) => write!(
                f,
                "relation {} is a partition or inheritance child of a protected table; pgcloak analyses \
                 protected columns through the table the policy names: use that table",
                Rel(t)
            ),
            R::ViewOfUnknownOrigin(t) => write!(
                f,
                "view {} reads protected columns, but pgcloak does not know the origin of its columns; \
                 query the protected table, or wait for the catalog refresh",
                Rel(t)
            ),
            R::ParentWithoutOnly(t) => write!(
                f,
                "relation {t} is an inheritance or partition parent of a protected table: without ONLY it \
                 reads or changes the protected rows, which pgcloak cannot analyse through it; write ONLY {t}, \
                 or use the protected table itself",
                t = Rel(t)
            ),
            R::IndirectWrite(t) => write!(
                f,
                "writing to {} is refused: its rules, triggers, row-security policies or defaults reach a \
                 protected column, where pgcloak cannot encrypt or check the values",
                Rel(t)
            ),
            R::WriteThroughView(t) => write!(
                f,
                "writing through view {}, which exposes encrypted columns, is not supported; write to its table",
                Rel(t)
            ),
            R::CteShadowsRelation(n) => write!(
                f,
                "{} is both a CTE of this statement and the name of a relation that reaches \
                 protected columns, in a place pgcloak cannot tell them apart; rename the CTE",
                Quoted(n)
            ),
            R::UnanalysedUse(t) => write!(
                f,
                "pgcloak could not analyse how this statement uses {}, which reaches protected columns",
                Rel(t)
            ),
            R::InsertNeedsColumns(t) => write!(
                f,
                "INSERT into protected table {} needs a column list (the catalog does not know its columns)",
                Rel(t)
            ),
            R::InsertSelectStar(t) => write!(
                f,
                "INSERT ... SELECT * into protected table {}: list the source columns",
                Rel(t)
            ),
            R::MergeInsertNeedsValues(t) => write!(
                f,
                "MERGE ... INSERT into protected table {} needs a column list and VALUES",
                Rel(t)
            ),
            R::CopyNeedsColumns(t) => write!(
                f,
                "COPY of protected table {} needs a column list (the catalog does not know its columns)",
                Rel(t)
            ),
            R::CopyBinary(w) => write!(
                f,
                "binary COPY of {w} is not supported by pgcloak; use FORMAT text or csv"
            ),
            R::CopyFileOrProgram(w) => write!(
                f,
                "COPY of {w} to or from a server file or program is not supported (pgcloak could not encrypt \
                 or decrypt it); use COPY ... FROM STDIN or TO STDOUT"
            ),
            R::CopyUnresolved(w) => write!(f, "COPY of {w}: a column's origin cannot be resolved"),
            R::PrepareTypedParameter { index, column } => write!(
                f,
                "PREPARE declares a type for ${index}, which is stored in or compared with encrypted column {column}; \
                 leave the parameter types out so PostgreSQL infers bytea"
            ),
            R::UnanalysedStatement { words, mention } => write!(
                f,
                "{words} statement that {mention}: not supported by pgcloak; run it directly on the database"
            ),
            R::OpaqueBody(m) => write!(
                f,
                "a DO block or function body that {m} cannot be analysed by pgcloak; \
                 define it directly on the database, or keep protected relations out of it"
            ),
            R::ExecuteParameterReused { index, column } => write!(
                f,
                "EXECUTE: parameter ${index} is encrypted for a protected column (policy column #{}) \
                 and also passed elsewhere; use a separate parameter",
                column.0
            ),
            R::ExecuteMissingParameter { index } => {
                write!(f, "EXECUTE is missing parameter ${index}")
            }
            R::ExecuteArgumentNotPlain { index } => write!(
                f,
                "EXECUTE: parameter ${index} is stored in an encrypted column; pass a plain literal or a parameter"
            ),
            R::Unparsed(m) => write!(
                f,
                "pgcloak could not parse a statement that {m}; it was not sent"
            ),
            R::NulByte => f.write_str("query string contains a NUL byte"),
            R::InvalidUnicodeEscape => {
                f.write_str("invalid Unicode escape in a U&\"...\" identifier")
            }
            R::UescapeNeedsString => f.write_str("UESCAPE needs a string literal"),
            R::InvalidUescape => f.write_str("invalid UESCAPE character"),
            R::AnalysisMismatch => f.write_str("statement does not match its analysis"),
            R::UndecodableLiteral(form) => {
                let what = match form {
                    LiteralForm::Any => "a",
                    LiteralForm::String => "a string",
                    LiteralForm::EscapeString => "an escape string",
                    LiteralForm::UnicodeString => "a Unicode string",
                };
                write!(f, "cannot decode {what} literal")
            }
            R::OpaqueForReachingSession(what) => {
                f.write_str("permission denied: ")?;
                match what {
                    OpaqueSql::Builtin(name) => write!(
                        f,
                        "{name} runs SQL or reads stored values inside the server, where pgcloak cannot see what it touches"
                    )?,
                    OpaqueSql::Function(name) => write!(
                        f,
                        "function {name} can read protected relations or runs dynamic SQL inside the server"
                    )?,
                    OpaqueSql::DynamicSql => f.write_str(
                        "a DO block that runs dynamic SQL (EXECUTE) or calls a function reaching protected data",
                    )?,
                    OpaqueSql::UnknownPrepared => f.write_str(
                        "EXECUTE runs a statement pgcloak did not see prepared, so it was not analysed",
                    )?,
                }
                f.write_str(
                    "; this session's roles can reach protected columns, so pgcloak \
                     refuses SQL it cannot see into (a DBA can allow a named function in the policy's functions.allow)",
                )
            }
            R::CreatedOpaqueFunction(name) => write!(
                f,
                "permission denied: function {name}, created in this session, runs SQL \
                 pgcloak cannot see into (dynamic SQL, another language or an SQL-executing \
                 built-in); this session's roles can reach protected columns"
            ),
            R::NoSearchGrant { column, randomized } => {
                let why = if *randomized {
                    "it is randomized"
                } else {
                    "comparing it reveals equality; ask for a search grant in the policy"
                };
                write!(f, "permission denied to search column {column}: {why}")
            }
            R::NoReadGrant(c) => write!(f, "permission denied to read column {c}"),
            R::ColumnDenied(c) => write!(f, "permission denied for column {c}"),
            R::CiphertextWithheld(place) => write!(
                f,
                "{place} carries an encrypted value of a protected column that this session's roles \
                 may not see as ciphertext; pgcloak withheld the result (a function, view or cast \
                 the analysis could not follow returned it)"
            ),
            R::AnyListTooLong { column, len, cap } => write!(
                f,
                "= ANY list on encrypted column {column} has {len} elements; the limit is {cap}"
            ),
            R::UnfollowedResultColumn { position, column } => write!(
                f,
                "result column {position} comes from protected column {column} but pgcloak could not \
                 follow it through the statement; select the column directly"
            ),
            R::NotByteaType { column, oid } => write!(
                f,
                "column {column} is protected but the server returned it as type {oid}, not bytea; \
                 the schema does not match the policy"
            ),
            R::NotByteaValue(c) => write!(f, "column {c}: the server sent a value that is not bytea"),
            R::SchemaMismatch(c, problem) => {
                write!(f, "column {c}: ")?;
                match problem {
                    SchemaProblem::TableMissing => {
                        f.write_str("its table does not exist in the database")?
                    }
                    SchemaProblem::NotATable(kind) => {
                        write!(f, "its relation is a {kind}, not a table")?
                    }
                    SchemaProblem::ColumnMissing => f.write_str("its table has no such column")?,
                    SchemaProblem::NotBytea => f.write_str(
                        "its type in the database is not bytea (not encrypted yet: see `pgcloak encrypt`)",
                    )?,
                    SchemaProblem::Unresolved => {
                        f.write_str("it is not part of the schema pgcloak resolved")?
                    }
                }
                f.write_str("; pgcloak refuses statements on it until the schema matches the policy")
            }
            R::SchemaUnresolved { generation } => write!(
                f,
                "pgcloak has not yet resolved the database schema for policy generation {generation}; \
                 statements on protected columns are refused until it has, retry shortly"
            ),
            R::CopyRowTooLong { max } => write!(f, "a COPY row is longer than {max} bytes"),
            R::CopyFieldCount { got, expected } => {
                write!(f, "COPY row has {got} fields, expected {expected}")
            }
            R::PlanChanged => f.write_str(
                "a prepared statement was analysed under an earlier policy, and the \
                 policy change alters what it encrypts or returns (cached plan must not change \
                 result type); prepare it again",
            ),
        }
    }
}

/// Why pgcloak refused a statement or a result: the metric label and the audit
/// reason, given by the error's type (never by its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The session's roles lack a right (SQLSTATE 42501).
    Denied,
    /// The analysis refused the statement.
    UnsupportedSql,
    /// A value could not be encoded for its column.
    InvalidValue,
    /// Encryption or decryption failed.
    Crypto,
    /// The data path refused a statement or a result.
    Refused,
    /// A policy change alters a prepared statement's meaning.
    PlanChanged,
    /// A message could not be decoded.
    Malformed,
    /// `EXECUTE` of a statement never prepared through pgcloak.
    UnknownPrepared,
    /// The insider guard: a decryption quota is used up.
    Quota,
    /// The insider guard: a honeytoken was touched.
    Honeytoken,
}

impl RejectReason {
    /// The bounded label used in metrics and the audit trail.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Denied => "denied",
            RejectReason::UnsupportedSql => "unsupported_sql",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::Crypto => "crypto",
            RejectReason::Refused => "refused",
            RejectReason::PlanChanged => "plan_changed",
            RejectReason::Malformed => "malformed",
            RejectReason::UnknownPrepared => "unknown_prepared",
            RejectReason::Quota => "quota",
            RejectReason::Honeytoken => "honeytoken",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{analyze, AnalysisContext, MemorySchema};

    fn policy() -> Policy {
        let text = "version: 1\ntables:\n  public.t:\n    phone:\n      type: text\n      encryption: deterministic\n      access: { app: plaintext }\n    notes:\n      type: text\n      access: { app: plaintext }\n";
        Policy::load_str(text, "p.yaml", 1).unwrap()
    }

    /// Exhaustive on purpose: a new [`Reason`] does not compile until it has an index
    /// here, and [`every_reason_renders_its_sqlstate_label_and_column`] fails until the
    /// table below has a row for that index.
    fn index(r: &Reason) -> usize {
        use Reason as R;
        match r {
            R::Fixed(_) => 0,
            R::EncryptedOperand(_) => 1,
            R::UnresolvedOrigin => 2,
            R::OverWholeRow(_) => 3,
            R::WholeRow(_) => 4,
            R::RandomizedColumn(_) => 5,
            R::DifferentKeys(..) => 6,
            R::PlainComparison(_) => 7,
            R::ParameterReused { .. } => 8,
            R::ParameterTwoKeys { .. } => 9,
            R::InListTooLong { .. } => 10,
            R::ArrayTooLong { .. } => 11,
            R::AnyNeedsArray(_) => 12,
            R::SetSubqueryColumns(_) => 13,
            R::MultiColumnSet(_) => 14,
            R::ExpressionIntoEncrypted(_) => 15,
            R::OtherOriginIntoEncrypted(_) => 16,
            R::CiphertextIntoPlain { .. } => 17,
            R::UnresolvedSource(_) => 18,
            R::OrderByEncrypted(_) => 19,
            R::SetOperationStar => 20,
            R::SetOperationMixed(_) => 21,
            R::StarOverUnknown(_) => 22,
            R::AliasesNeedCatalog(_) => 23,
            R::NotOnSearchPath { .. } => 24,
            R::UnlocatedRelation(_) => 25,
            R::PartitionChild(_) => 26,
            R::ViewOfUnknownOrigin(_) => 27,
            R::ParentWithoutOnly(_) => 28,
            R::IndirectWrite(_) => 29,
            R::WriteThroughView(_) => 30,
            R::CteShadowsRelation(_) => 31,
            R::UnanalysedUse(_) => 32,
            R::InsertNeedsColumns(_) => 33,
            R::InsertSelectStar(_) => 34,
            R::MergeInsertNeedsValues(_) => 35,
            R::CopyNeedsColumns(_) => 36,
            R::CopyBinary(_) => 37,
            R::CopyFileOrProgram(_) => 38,
            R::CopyUnresolved(_) => 39,
            R::PrepareTypedParameter { .. } => 40,
            R::UnanalysedStatement { .. } => 41,
            R::OpaqueBody(_) => 42,
            R::ExecuteParameterReused { .. } => 43,
            R::ExecuteMissingParameter { .. } => 44,
            R::ExecuteArgumentNotPlain { .. } => 45,
            R::Unparsed(_) => 46,
            R::NulByte => 47,
            R::InvalidUnicodeEscape => 48,
            R::UescapeNeedsString => 49,
            R::InvalidUescape => 50,
            R::AnalysisMismatch => 51,
            R::UndecodableLiteral(_) => 52,
            R::OpaqueForReachingSession(_) => 53,
            R::CreatedOpaqueFunction(_) => 54,
            R::NoSearchGrant { .. } => 55,
            R::NoReadGrant(_) => 56,
            R::ColumnDenied(_) => 57,
            R::CiphertextWithheld(_) => 58,
            R::AnyListTooLong { .. } => 59,
            R::UnfollowedResultColumn { .. } => 60,
            R::NotByteaType { .. } => 61,
            R::NotByteaValue(_) => 62,
            R::SchemaMismatch(..) => 63,
            R::SchemaUnresolved { .. } => 64,
            R::CopyRowTooLong { .. } => 65,
            R::CopyFieldCount { .. } => 66,
            R::PlanChanged => 67,
        }
    }
    const REASONS: usize = 68;

    #[test]
    fn every_reason_renders_its_sqlstate_label_and_column() {
        let p = policy();
        let phone = ColumnName::of(&p, ColumnRef(0));
        let notes = ColumnName::of(&p, ColumnRef(1));
        let quoted = ColumnName::quoted(&p, ColumnRef(0));
        let table = RelationName::protected(&p, &TableName::new("public", "t"));
        let t = || table.clone();
        let tt = || table.clone().unwrap();
        let mut names = NameSet::default();
        names.insert("t");
        let cat = CatalogName::in_name_set(&names, "t").unwrap();
        let whole = WholeRow {
            of: WholeRowOf::Table(tt()),
            columns: vec![Some(phone.clone()), None],
        };
        let mention = Mention::RefersTo(cat.clone());
        let un = "0A000";
        let (sql, den, refd, chg) = (
            RejectReason::UnsupportedSql,
            RejectReason::Denied,
            RejectReason::Refused,
            RejectReason::PlanChanged,
        );
        use Reason as R;
        // (reason, SQLSTATE, metric label, what the message must name)
        #[rustfmt::skip]
        let cases: Vec<(Reason, &str, RejectReason, &str)> = vec![
            (R::Fixed(Fixed::SelectInto), un, sql, "SELECT INTO"),
            (R::EncryptedOperand(phone.clone()), un, sql, "public.t.phone"),
            (R::UnresolvedOrigin, un, sql, "origin cannot be resolved"),
            (R::OverWholeRow(whole.clone()), un, sql, "public.t.phone"),
            (R::WholeRow(whole.clone()), un, sql, "whole-row reference to public.t"),
            (R::RandomizedColumn(notes.clone()), un, sql, "randomized column public.t.notes"),
            (R::DifferentKeys(phone.clone(), notes.clone()), un, sql, "public.t.phone and public.t.notes"),
            (R::PlainComparison(phone.clone()), un, sql, "public.t.phone"),
            (R::ParameterReused { index: 2, column: phone.clone() }, un, sql, "$2 is encrypted for column public.t.phone"),
            (R::ParameterTwoKeys { index: 1, first: phone.clone(), second: notes.clone() }, un, sql, "$1"),
            (R::InListTooLong { len: 101, column: phone.clone(), cap: 100 }, un, sql, "limit of 100"),
            (R::ArrayTooLong { len: 101, column: phone.clone(), cap: 100 }, un, sql, "public.t.phone"),
            (R::AnyNeedsArray(phone.clone()), un, sql, "public.t.phone"),
            (R::SetSubqueryColumns(t()), un, sql, "on public.t"),
            (R::MultiColumnSet(phone.clone()), un, sql, "public.t.phone"),
            (R::ExpressionIntoEncrypted(phone.clone()), un, sql, "public.t.phone"),
            (R::OtherOriginIntoEncrypted(phone.clone()), un, sql, "public.t.phone"),
            (R::CiphertextIntoPlain { column: phone.clone(), table: t() }, un, sql, "of public.t.phone in a plain column of public.t"),
            (R::UnresolvedSource(t()), un, sql, "public.t"),
            (R::OrderByEncrypted(phone.clone()), un, sql, "ORDER BY on encrypted column public.t.phone"),
            (R::SetOperationStar, un, sql, "explicit column lists"),
            (R::SetOperationMixed(phone.clone()), un, sql, "public.t.phone"),
            (R::StarOverUnknown(t()), un, sql, "protected table public.t"),
            (R::AliasesNeedCatalog(t()), un, sql, "public.t"),
            (R::NotOnSearchPath { name: Some(cat.clone()), search_path: SearchPath::of_session(&["app".into(), "public".into()]) }, "42P01", sql, "\"t\" is not in the session's search_path (app, public)"),
            (R::UnlocatedRelation(t()), un, sql, "public.t"),
            (R::PartitionChild(t()), un, sql, "public.t"),
            (R::ViewOfUnknownOrigin(t()), un, sql, "public.t"),
            (R::ParentWithoutOnly(t()), un, sql, "write ONLY public.t"),
            (R::IndirectWrite(t()), un, sql, "public.t"),
            (R::WriteThroughView(t()), un, sql, "public.t"),
            (R::CteShadowsRelation(Some(cat.clone())), un, sql, "\"t\" is both a CTE"),
            (R::UnanalysedUse(t()), un, sql, "public.t"),
            (R::InsertNeedsColumns(t()), un, sql, "public.t"),
            (R::InsertSelectStar(t()), un, sql, "public.t"),
            (R::MergeInsertNeedsValues(t()), un, sql, "public.t"),
            (R::CopyNeedsColumns(t()), un, sql, "public.t"),
            (R::CopyBinary(CopySubject::Table(tt())), un, sql, "binary COPY of protected table public.t"),
            (R::CopyFileOrProgram(CopySubject::Query), un, sql, "a query over protected columns"),
            (R::CopyUnresolved(CopySubject::Table(tt())), un, sql, "public.t"),
            (R::PrepareTypedParameter { index: 1, column: phone.clone() }, un, sql, "public.t.phone"),
            (R::UnanalysedStatement { words: StatementWords::of(&["alter", "table"]), mention: mention.clone() }, un, sql, "ALTER TABLE statement that refers to \"t\""),
            (R::OpaqueBody(mention.clone()), un, sql, "\"t\""),
            (R::ExecuteParameterReused { index: 1, column: ColumnRef(0) }, un, sql, "policy column #0"),
            (R::ExecuteMissingParameter { index: 3 }, un, sql, "$3"),
            (R::ExecuteArgumentNotPlain { index: 3 }, un, sql, "$3"),
            (R::Unparsed(mention.clone()), "42601", sql, "\"t\""),
            (R::NulByte, "42601", sql, "NUL byte"),
            (R::InvalidUnicodeEscape, "42601", sql, "Unicode escape"),
            (R::UescapeNeedsString, "42601", sql, "UESCAPE"),
            (R::InvalidUescape, "42601", sql, "UESCAPE"),
            (R::AnalysisMismatch, "22000", sql, "does not match its analysis"),
            (R::UndecodableLiteral(LiteralForm::EscapeString), "22000", sql, "cannot decode an escape string literal"),
            (R::OpaqueForReachingSession(OpaqueSql::Function(cat.clone())), "42501", den, "function t can read"),
            (R::CreatedOpaqueFunction(cat.clone()), "42501", den, "function t, created in this session"),
            (R::NoSearchGrant { column: phone.clone(), randomized: false }, "42501", den, "permission denied to search column public.t.phone: comparing"),
            (R::NoReadGrant(phone.clone()), "42501", den, "permission denied to read column public.t.phone"),
            (R::ColumnDenied(quoted.clone()), "42501", den, "permission denied for column public.t.phone"),
            (R::CiphertextWithheld(LeakPlace::ResultColumn(2)), "42501", den, "result column 2 carries"),
            (R::AnyListTooLong { column: quoted.clone(), len: 9, cap: 8 }, un, refd, "public.t.phone has 9 elements; the limit is 8"),
            (R::UnfollowedResultColumn { position: 1, column: quoted.clone() }, un, refd, "result column 1 comes from protected column public.t.phone"),
            (R::NotByteaType { column: quoted.clone(), oid: 25 }, un, refd, "public.t.phone is protected but the server returned it as type 25"),
            (R::NotByteaValue(quoted.clone()), un, refd, "column public.t.phone: the server sent"),
            (R::SchemaMismatch(quoted.clone(), SchemaProblem::NotBytea), un, refd, "column public.t.phone: its type in the database is not bytea"),
            (R::SchemaUnresolved { generation: 7 }, un, refd, "policy generation 7"),
            (R::CopyRowTooLong { max: 10 }, un, refd, "longer than 10 bytes"),
            (R::CopyFieldCount { got: 2, expected: 3 }, un, refd, "2 fields, expected 3"),
            (R::PlanChanged, un, chg, "prepare it again"),
        ];
        let mut seen = [false; REASONS];
        for (reason, state, label, says) in cases {
            seen[index(&reason)] = true;
            let r = Refusal::new(Operation::Equal, reason);
            let msg = r.to_string();
            assert_eq!(r.sqlstate(), state, "{msg}");
            assert_eq!(r.reject_reason(), label, "{msg}");
            assert!(msg.contains(says), "`{says}` not in: {msg}");
            if let Some(c) = r.column() {
                assert!(msg.contains(c.as_str()), "{msg} does not name {c}");
            }
            assert_eq!(r.hint().is_some(), state == un && label == sql, "{msg}");
        }
        let missing: Vec<usize> = (0..REASONS).filter(|i| !seen[*i]).collect();
        assert!(missing.is_empty(), "reasons without a row: {missing:?}");
    }

    #[test]
    fn operations_render_as_the_messages_always_said() {
        let upper = FunctionName::builtin("UPPER");
        let lt = OperatorName::known("<");
        let cases = [
            (Operation::Equal, "="),
            (Operation::NotEqual, "<>"),
            (Operation::Function(upper), "function upper()"),
            (
                Operation::Function(FunctionName::builtin("pg_catalog.max")),
                "function max()",
            ),
            (Operation::Operator(lt), "operator <"),
            (Operation::Any(OperatorName::known("=")), "= ANY"),
            (Operation::All(OperatorName::known("<>")), "<> ALL"),
            (Operation::Like, "LIKE"),
            (Operation::OrderBy, "ORDER BY"),
            (Operation::SetOperation(SetOp::Union), "UNION"),
            (Operation::DialectClause("QUALIFY"), "QUALIFY"),
        ];
        for (op, want) in cases {
            assert_eq!(op.phrase().to_string(), want);
        }
        assert_eq!(Operation::Insert.bind_phrase().to_string(), "INSERT into");
        assert_eq!(
            Operation::UpdateSet.bind_phrase().to_string(),
            "UPDATE SET on"
        );
        assert_eq!(
            Operation::Any(OperatorName::known("="))
                .bind_phrase()
                .to_string(),
            "= ANY on"
        );
    }

    /// The only ways text enters a refusal: names checked against the policy, the
    /// catalog, the session's record or a fixed table. Anything else is not named.
    #[test]
    fn names_outside_policy_catalog_and_builtins_are_not_shown() {
        let p = policy();
        let names = NameSet::from_policy(&p);
        let secret = "4111-1111-1111-1111";
        assert_eq!(FunctionName::builtin(secret), None);
        assert_eq!(FunctionName::builtin("my_leaky_fn"), None);
        assert_eq!(OperatorName::known(secret), None);
        assert_eq!(CatalogName::in_name_set(&names, secret), None);
        assert_eq!(CatalogName::listed(&names, &p, secret), None);
        assert_eq!(
            CatalogName::created_in_session(&HashSet::from(["f".to_string()]), secret),
            None
        );
        let schema = MemorySchema::new();
        let unknown = TableName::new("public", secret);
        assert_eq!(RelationName::known(&p, &schema, &unknown), None);
        assert_eq!(CatalogName::reaching_function(&schema, None, secret), None);
        assert_eq!(StatementWords::of(&[secret, "table"]).to_string(), "a");
        assert_eq!(StatementWords::of(&["alter", secret]).to_string(), "ALTER");
        let m = Mention::of(
            &names,
            &super::super::scan::Mention::Name(secret.into(), super::super::NameKind::Relation),
        );
        assert_eq!(m, Mention::Unnamed);
        let m = Mention::of(
            &names,
            &super::super::scan::Mention::Distrusted(secret.into()),
        );
        assert_eq!(m, Mention::Unnamed);
    }

    /// Statements refused for every reason the analysis has, each carrying a sentinel
    /// in every place the client controls (literals, parameters' neighbours, aliases,
    /// CTE, function, operator and prepared-statement names, comments): no message
    /// shows it.
    #[test]
    fn client_text_never_reaches_a_refusal() {
        let p = policy();
        let schema = MemorySchema::new().with_table("public", "t", &["id", "phone", "notes"]);
        let names = NameSet::from_policy(&p);
        let path = vec!["public".to_string()];
        let ctx = AnalysisContext {
            policy: &p,
            schema: &schema,
            search_path: &path,
            names: &names,
            in_list_cap: 3,
            force_full_analysis: false,
        };
        let s = "zq_secret_93";
        let statements = [
            format!("select {s}(phone) from t"),
            format!("select phone as {s} from t order by {s}"),
            format!("select phone from t where phone < '{s}'"),
            format!("select phone from t where notes = '{s}'"),
            format!("select phone from t where phone like '%{s}%'"),
            format!("select phone from t where phone in ('{s}', 'a', 'b', 'c')"),
            format!("select phone from t where phone = any(array['{s}', 'a', 'b', 'c'])"),
            format!("select phone from t where phone = upper('{s}')"),
            format!("insert into t (phone) values (upper('{s}'))"),
            format!("insert into t (phone) values ('{s}' || 'x')"),
            format!("update t set phone = notes || '{s}'"),
            format!("select to_jsonb({s}) from t {s}"),
            format!("select row({s}.*) from t {s}"),
            format!("with recursive {s}(x) as (select phone from t union all select 'a' from {s}) select * from {s}"),
            format!("select phone from t union select '{s}'"),
            format!("select phone /* {s} */ from t where phone ~~ '{s}'"),
            format!("select phone from t where phone OPERATOR(public.{s}) '{s}'"),
            format!("select phone from t where phone @@@ '{s}'"),
            format!("do $$ begin perform phone from t where x = '{s}'; end $$"),
            format!("selekt phone from t where phone = '{s}'"),
            format!("select phone from t where phone = '{s}"),
            format!("copy t to '/tmp/{s}'"),
            format!("select phone into {s} from t"),
            format!("alter table t alter column phone set default '{s}'"),
            format!("prepare {s}(text) as select id from t where phone = $1"),
            format!("select $1, id from t where phone = $1 and id::text = '{s}'"),
        ];
        let mut refused = 0;
        for sql in &statements {
            let Ok(plans) = analyze(sql, &ctx) else {
                continue;
            };
            for plan in plans {
                if let Some(e) = &plan.rejection {
                    refused += 1;
                    let msg = e.message();
                    assert!(!msg.contains(s), "{sql}\n  leaked into: {msg}");
                }
            }
        }
        assert!(refused >= statements.len() - 2, "only {refused} refused");
    }
}
