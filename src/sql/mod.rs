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
//! Known limits, by design of a proxy that sees only SQL text: functions, procedures,
//! triggers and rules defined directly on the database can read protected columns
//! without naming them in the client's statement (DO blocks and bodies sent through
//! pgcloak are checked); the 'F' (function call) message is the session's to refuse.
//!
//! - [`scan`]: the conservative fast path (`may_mention`) and the literal-stripped
//!   fingerprint, without the parser.
//! - [`analyze`]: the full analysis into [`StatementPlan`]s.
//! - [`rewrite`]: splicing ciphertext into the client's SQL text.
//! - [`cache`]: the LRU analysis cache.

pub mod analyze;
pub mod builtins;
pub mod cache;
mod error;
mod ident;
mod lexer;
pub mod lineage;
pub mod plan;
pub mod rewrite;
pub mod scan;
pub mod schema;
pub mod session_state;

pub use analyze::{analyze, analyze_with_fingerprint, AnalysisContext, DEFAULT_IN_LIST_CAP};
pub use cache::{Analysis, AnalysisCache};
pub use error::SqlError;
pub use lexer::{split_statements, LiteralKind};
pub use plan::*;
pub use scan::{fingerprint, literal_value, may_mention, Fingerprint, LiteralSpan, NameSet};
pub use schema::{MemorySchema, RelationReach, Schema, SessionReach};
