//! SQL analysis and rewriting against the policy: the pure core of the data path.
//!
//! This module owns deciding, for every statement a client sends, whether it touches a
//! protected column and exactly how: which literals and parameters must be encrypted
//! for which column, what each result column's lineage is, and which statements must be
//! refused. It performs no I/O and never sees keys: encryption happens through a
//! callback in [`rewrite`]. It must never let a statement that touches a protected
//! column through without understanding every reference to it (fail closed), and its
//! errors never carry a value from the statement.
//!
//! Like PostgreSQL since 9.1 by default, the lexers here assume
//! `standard_conforming_strings = on` (a backslash escapes only inside `E'...'`). A
//! session where it is off must not use these plans: the session refuses to turn it off.
//!
//! Decisions are made by **reachability**, not by names in the text: the catalog's
//! reach set (through [`Schema::relation_reach`] and [`Schema::function_reaches`]) says
//! which relations and functions can reach a protected column. A statement that names
//! none of them passes untouched whatever identifiers or strings it holds
//! ([`scan`]). One that does is analysed: every unqualified reference to a reaching
//! name is pinned to the schema-qualified relation it resolved to ([`TextEdit`]);
//! inheritance/partition parents need ONLY; relations whose rules, triggers, policies
//! or defaults reach a protected column take no writes. SQL pgcloak cannot see into
//! (the built-ins catalogue of [`builtins`], reaching user functions, DO blocks running
//! dynamic SQL, EXECUTE of an unknown prepared statement) is [`Opaque`]: it runs only
//! for sessions whose roles cannot reach protected data, or when the policy's
//! `functions.allow` names it ([`StatementPlan::authorize_opaque`]).
//!
//! - [`scan`]: the conservative fast path (`may_mention`) and the literal-stripped
//!   fingerprint, without the parser.
//! - [`analyze`]: the full analysis into [`StatementPlan`]s.
//! - [`rewrite`]: splicing ciphertext into the client's SQL text.
//! - [`cache`]: the LRU analysis cache.
//! - [`refusal`]: why a statement is refused, as data ([`Refusal`]): names only from the
//!   policy, the catalog or fixed tables, rendered to message and SQLSTATE in one place.
//! - [`builtins`]: the catalogue of SQL-executing built-ins and value-exposing catalog
//!   relations (kept in step with docs/policy.md and docs/security.md).

pub mod analyze;
/// The built-ins catalogue lives with the policy (its `functions.allow` is validated
/// against it); re-exported here where the analysis reads it.
pub use crate::policy::builtins;
pub mod cache;
mod error;
mod ident;
mod lexer;
pub mod lineage;
pub mod plan;
pub mod refusal;
pub mod rewrite;
pub mod scan;
pub mod schema;
pub mod session_state;

pub use analyze::{analyze, analyze_with_fingerprint, AnalysisContext, DEFAULT_IN_LIST_CAP};
pub use cache::{Analysis, AnalysisCache};
pub use error::SqlError;
pub use lexer::{split_statements, LiteralKind};
pub use plan::*;
pub use refusal::Refusal;
pub use scan::{
    fingerprint, literal_value, may_mention, Fingerprint, LiteralSpan, NameKind, NameSet,
};
pub use schema::{MemorySchema, RelationReach, Schema, SessionReach};
