//! The catalog: pgcloak's own view of the live schema and of role memberships, read over
//! separate catalog connections (one per database, since PostgreSQL catalogs are per
//! database) with pgcloak's own login.
//!
//! It owns:
//! - resolving each policy column to its table OID and attnum, checking it exists and is
//!   `bytea` (a column that does not resolve is an error naming it, and statements
//!   touching it must be refused: [`SchemaSnapshot::location`]);
//! - the views (and materialized views) built, directly or through other views, on
//!   protected tables, with their definitions for the SQL analyser's lineage;
//!   partitions and inheritance children of protected tables, mapped to the same columns;
//! - resolving unqualified names through a session's search_path
//!   ([`SchemaSnapshot::resolve_unqualified`]);
//! - the roles a login can use (`pg_has_role(.., 'USAGE')`, NOINHERIT respected);
//! - the envelope CHECK constraints (defence in depth) and the DDL to add missing ones;
//! - caching and refreshing all of it ([`CatalogCache`]).
//!
//! It must never: write to the database, read table data, see or log any data value, or
//! serve a snapshot it could not confirm (a failed refresh is an error, not stale data).

pub mod adoption_checks;
pub mod config;
mod connect;
pub mod constraints;
pub mod error;
pub mod follow;
pub mod guard;
pub mod ident;
mod load;
mod reach;
mod refresh;
mod roles;
pub mod schema;
pub mod search_path;
mod session_reach;

pub use config::CatalogConfig;
pub(crate) use connect::describe as describe_error;
pub use connect::CatalogConn;
pub use constraints::{ConstraintProblem, MissingConstraint};
pub use error::CatalogError;
pub use guard::{GuardFinding, GuardKind, GuardReport};
pub use refresh::CatalogCache;
pub use schema::{
    Attribute, ColumnLocation, DependentView, NamedRelation, Oid, ProtectedTable, ReachOids,
    ReachSet, ReachingFunction, ReachingRelation, RelKind, SchemaSnapshot,
};
pub use search_path::{parse_search_path, NameResolution};
