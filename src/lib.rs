//! pgcloak: a transparent encrypting proxy for PostgreSQL.
//!
//! The pure core (policy, crypto, codec, sql) has no I/O; the shell (wire, session,
//! server, auth, catalog, observe) is thin and tested end to end against PostgreSQL.

pub mod auth;
pub mod cancel;
pub mod catalog;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod datapath;
pub mod demo;
pub mod guard;
pub mod lifecycle;
pub mod net;
pub mod observe;
pub mod policy;
pub mod protection;
pub mod server;
pub mod session;
pub mod sql;
pub mod tls;
pub mod wire;
pub mod workers;
