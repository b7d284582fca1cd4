//! Shared end-to-end test harness: one throwaway PostgreSQL cluster per test binary,
//! a pgcloak child-process spawner, TLS material, client helpers and a raw protocol writer.
//!
//! The harness owns every process and file it creates and removes them at process exit,
//! even when a test panics. It never talks to anything but 127.0.0.1 and its own sockets.
//!
//! Set `PGCLOAK_TEST_TARGET=direct` to point the suites at PostgreSQL itself instead of
//! the proxy (useful to tell a harness bug from a proxy bug).
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod cluster;
pub mod protected;
pub mod proxy;
pub mod raw;
pub mod tls;
pub mod yaml;

pub use client::*;
pub use cluster::{
    cluster, fresh_db, Cluster, APP_PASSWORD, APP_USER, CLEARTEXT_USER, LEGACY_PASSWORD, MD5_USER,
    SUPERUSER, SUPERUSER_PASSWORD, TRUST_USER,
};
pub use protected::{
    eventually, eventually_async, eventually_async_with, eventually_with, Prepared,
    ProtectedBuilder, ProtectedProxy, CATALOG_ROLE, ROLE_PASSWORD,
};
pub use proxy::Proxy;

use std::time::Duration;

/// How long a test waits for something that should be immediate before declaring a hang.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(5);
