//! The PostgreSQL wire protocol, as far as pgcloak needs it: framing, the
//! startup-phase packets, and builders for the messages the proxy originates.
//!
//! This module never logs message contents: frames may carry plaintext values.

mod error;
pub mod extended;
pub mod frame;
pub mod messages;
pub mod startup;

pub use error::WireError;
pub use frame::{split_frame, Frame};
pub use messages::{PgError, Severity};
