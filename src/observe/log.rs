//! tracing setup: text for humans, JSON (one object per line, fields flattened:
//! `timestamp`, `level`, `target`, `message`, then the event's own fields) for
//! pipelines. Levels: `log.level` plus per-target `log.levels`; `RUST_LOG`, when
//! set, overrides both.
//!
//! Targets: `pgcloak::session`, `::auth`, `::sql`, `::crypto`, `::policy`,
//! `::catalog`, `::admin`, `::audit`.

//!
//! Third-party crates that log raw SQL or parameters at debug (sqlparser echoes
//! every statement and literal it parses; tokio-postgres logs queries and
//! parameters) are capped whatever the configuration says: a debug level must
//! never turn the log into a copy of the data.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Caps appended after the operator's directives (a later directive for the same
/// target replaces an earlier one).
pub const LEAK_CAPS: &str = "sqlparser=off,tokio_postgres=info,postgres_protocol=info";

/// The effective filter: `RUST_LOG` or the config, then [`LEAK_CAPS`].
pub fn directive(cfg: &LogConfig) -> String {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| cfg.filter_directive());
    format!("{base},{LEAK_CAPS}")
}

pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(directive(cfg))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{LEAK_CAPS}")));
    // Colour escapes only when a person is watching: a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(true);
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
