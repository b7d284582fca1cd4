//! tracing setup: text for humans, JSON (one object per line, fields flattened:
//! `timestamp`, `level`, `target`, `message`, then the event's own fields) for
//! pipelines. Levels: `log.level` plus per-target `log.levels`; `RUST_LOG`, when
//! set, overrides both.
//!
//! Targets: `pgcloak::session`, `::auth`, `::sql`, `::crypto`, `::policy`,
//! `::catalog`, `::admin`, `::audit`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(cfg.filter_directive()).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
