//! The data lifecycle: `pgcloak encrypt` (adopt pgcloak on a live database),
//! `pgcloak reencrypt` (key rotation), `pgcloak decrypt` (the way out),
//! `pgcloak keys status --database` and `pgcloak honeytoken plant` (decoy rows for the
//! insider guard, written like any converted row).
//!
//! Owns the online column conversion (shadow column, change-log trigger, keyset
//! backfill, catch-up, one short cut-over transaction) and its resumable progress in
//! the `pgcloak` schema. It reuses the crypto, codec, policy and catalog modules and
//! must never carry a second implementation of any of them, log or print a value or a
//! key, or cut over while a row is left unconverted. docs/lifecycle.md is the guide.

mod engine;
pub mod error;
mod inspect;
mod keys_status;
pub mod plan;
pub mod plant;
mod rotate;
mod run;
mod transform;

pub use engine::{Pace, RunStats};
pub use error::LifecycleError;
pub use keys_status::{keys_status, ColumnKeys, KeysStatus};
pub use plan::Kind;
pub use run::{open, run, select, ColumnOutcome, Context, Options, Outcome};
