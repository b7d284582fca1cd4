//! Observability: logging setup (and, later, audit, metrics and admin HTTP).

pub mod log;
