//! The PostgreSQL wire protocol, as far as pgcloak needs it: framing, the
//! startup-phase packets, builders for the messages the proxy originates, and the
//! protocol's vocabulary as types: [`Tag`] (message type bytes), [`Format`] (value format
//! codes) and [`Oid`] (type OIDs).
//!
//! This module never logs message contents: frames may carry plaintext values.

mod error;
pub mod extended;
pub mod format;
pub mod frame;
pub mod messages;
pub mod oid;
pub mod startup;
pub mod tag;

pub use error::WireError;
pub use format::Format;
pub use frame::{split_frame, Frame};
pub use messages::{PgError, Severity};
pub use oid::Oid;
pub use tag::Tag;

/// What a relay should do after handling a message (the session's pumps and the data
/// path's handlers share it; it lives here so the data path needs nothing of `session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Write what is pending, then stop this direction (e.g. after Terminate).
    Stop,
}
