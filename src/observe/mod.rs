//! Observability: logging setup, the audit trail, Prometheus metrics, the admin
//! HTTP endpoint (/metrics, /healthz, /readyz), statement fingerprints, per-session
//! accounting and live policy/keyring reload.
//!
//! Everything here describes decisions the data path made; it must never record a
//! value, a literal, raw SQL, a key or a password. Labels are bounded by the policy
//! (column names, views, statement kinds, error labels), never by client input.

pub mod admin;
pub mod audit;
pub mod chain;
pub mod fingerprint;
pub mod log;
pub mod metrics;
pub mod reload;
pub mod session;
pub mod sink;

pub use session::{
    cycle_end, record, rejected, scope, session_error, session_opened, RejectReason,
};
pub use sink::Sink;

/// Process-wide observability setup from the config: the metrics recorder, the
/// audit sink, the fingerprint key and the statement-log settings.
pub fn init(config: &crate::config::Config) -> Result<(), String> {
    metrics::install();
    if config.policy.is_some() {
        metrics::reloads_registered();
    }
    audit::set_json_log(config.log.format == crate::config::LogFormat::Json);
    if let Some(path) = &config.audit.file {
        let key = chain::audit_chain_key(config)?;
        audit::init_file(path, key)
            .map_err(|e| format!("audit.file {}: cannot open: {e}", path.display()))?;
    }
    let key = match &config.audit.fingerprint_key_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| format!("audit.fingerprint_key_env: {var} is not set"))?
                .into_bytes(),
        ),
        None => None,
    };
    fingerprint::init_key(key.as_deref());
    session::init(session::Settings {
        slow_statement: config
            .slow_statement_ms
            .map(std::time::Duration::from_millis),
        log_statements: config.log.statements == crate::config::StatementLog::Redacted,
    });
    Ok(())
}
