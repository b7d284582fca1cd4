//! pgcloak: a transparent encrypting proxy for PostgreSQL.
//!
//! The pure core (policy, crypto, codec, sql) has no I/O; the shell (wire, session,
//! server, auth, catalog, observe) is thin and tested end to end against PostgreSQL.

pub mod codec;
pub mod crypto;
pub mod policy;
