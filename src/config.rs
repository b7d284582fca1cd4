//! The proxy configuration: `config/pgcloak.yaml`, overridden by `PGCLOAK_*`
//! environment variables.
//!
//! Loading is strict: unknown keys are errors, and every error names the file,
//! line and column. Relative paths are resolved against the working directory.
//!
//! This file holds the root [`Config`], the process's own settings (listen address,
//! limits, logging, audit, admin, fleet peers), `PGCLOAK_*` overrides and validation.
//! A section that a module owns is defined next to it and only named here: `upstream`
//! in `net`, `tls` in `tls`, `auth` in `auth::config`, `catalog` in `catalog::config`,
//! `keys` in `protection`. Those modules receive their section, never the whole
//! `Config`, so nothing they hold depends on this file.

use std::path::{Path, PathBuf};

pub use crate::auth::config::{AuthBackoffConfig, AuthConfig, AuthMode, ClientAuthMethod};
pub use crate::net::{UpstreamConfig, UpstreamTlsMode};
pub use crate::protection::KeysConfig;
pub use crate::tls::{ClientTlsConfig, ClientTlsMode};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// The whole proxy configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file this configuration was read from (set by [`Config::load`]); a reload
    /// re-validates it and says what it cannot apply.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
    /// Address clients connect to.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// This instance's id (0..=255), embedded in the BackendKeyData pid given to
    /// clients so that a fleet can route a cancel to the instance owning the session.
    #[serde(default)]
    pub instance_id: u8,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub tls: ClientTlsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// pgcloak's own connection to upstream (schema, roles, `auth.query`).
    #[serde(default)]
    pub catalog: Option<crate::catalog::CatalogConfig>,
    /// Count a role that upstream admitted by `trust` as authenticated (demos and tests only).
    #[serde(default)]
    pub trust_upstream_identity: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long SIGTERM/SIGINT waits for open sessions before closing them.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogConfig,
    /// The policy file (which columns are protected). Without it pgcloak is a plain relay.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Where the master keys come from (required with a policy).
    #[serde(default)]
    pub keys: Option<KeysConfig>,
    /// Refuse to start while a configured database is looser than the policy (envelope
    /// CHECK constraints, column privileges, statistics, built-ins: `catalog::guard`).
    #[serde(default)]
    pub strict: bool,
    /// The admin HTTP listener (/metrics, /healthz, /readyz); off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The audit trail: `pgcloak::audit` log target, or its own file.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Statements slower than this (end to end) are logged with pgcloak's and upstream's share.
    #[serde(default)]
    pub slow_statement_ms: Option<u64>,
    /// Other instances of the fleet: instance id -> address (host:port) of their client listener,
    /// to forward a CancelRequest for a session they own.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<u8, String>,
    /// How often the policy and keyring files are checked for changes (0: only SIGHUP).
    #[serde(default = "default_reload_poll_ms")]
    pub reload_poll_ms: u64,
    /// Session worker threads (each a single-threaded runtime; a session stays on one);
    /// 0: half the CPUs the process may use, at least one (`workers::default_count`).
    #[serde(default)]
    pub workers: usize,
}

/// `admin:`: where the admin HTTP endpoint listens (keep it off the client network).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
}

/// `audit:`: where audit events go and how statements are fingerprinted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Append JSON lines to this file instead of the `pgcloak::audit` log target.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Environment variable holding the statement-fingerprint key (random per process if unset,
    /// so fingerprints only compare within one process lifetime).
    #[serde(default)]
    pub fingerprint_key_env: Option<String>,
}

/// `log.statements`: whether a literal-free form of each analysed statement is logged at debug.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementLog {
    #[default]
    Off,
    Redacted,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest protocol message accepted from either side, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Time allowed from connect to the end of authentication.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_secs: u64,
    /// Longest IN (...) / = ANY($n) list accepted on an encrypted column.
    #[serde(default = "default_in_list_cap")]
    pub in_list_cap: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message_bytes(),
            startup_timeout_secs: default_startup_timeout(),
            in_list_cap: default_in_list_cap(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Per-target levels, e.g. `{ pgcloak::sql: debug }` (added to `level`).
    #[serde(default)]
    pub levels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub statements: StatementLog,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_log_level(),
            levels: Default::default(),
            statements: StatementLog::Off,
        }
    }
}

impl LogConfig {
    /// The tracing filter directive: `level` plus each `target=level` of `levels`.
    pub fn filter_directive(&self) -> String {
        let mut d = self.level.clone();
        for (target, level) in &self.levels {
            d.push_str(&format!(",{target}={level}"));
        }
        d
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_max_connections() -> usize {
    1000
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_max_message_bytes() -> usize {
    256 << 20
}
fn default_startup_timeout() -> u64 {
    60
}
fn default_in_list_cap() -> usize {
    100
}
fn default_reload_poll_ms() -> u64 {
    1000
}
fn default_log_level() -> String {
    "info".into()
}

/// Whether `s` names a log level.
fn is_level(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "off" | "error" | "warn" | "info" | "debug" | "trace"
    )
}

/// `info`, or `info,pgcloak::sql=debug`: levels and `target=level` pairs only.
fn is_level_directive(s: &str) -> bool {
    !s.trim().is_empty()
        && s.split(',').all(|part| match part.split_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(part),
        })
}

/// The 1-based line of `text` that sets the last segment of `key` (`log.level` ->
/// `level:`), when one line does; a best effort for pointing errors at a line.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?;
    let needle = format!("{last}:");
    let found: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.split('#').next().unwrap_or("");
            code.match_indices(&needle).any(|(i, _)| {
                i == 0
                    || code[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c == ' ' || c == '{' || c == ',')
            })
        })
        .map(|(i, _)| i + 1)
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// A warning that does not stop the proxy but that an operator must see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub String);

/// A config key that is wrong, and why ([`ConfigError::Invalid`] without the file).
struct Invalid {
    key: &'static str,
    message: String,
}

impl Invalid {
    fn new(key: &'static str, message: String) -> Invalid {
        Invalid { key, message }
    }
}

impl Config {
    /// Reads, parses, applies `PGCLOAK_*` overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::load_str(&text, &path.display().to_string(), |k| {
            std::env::var(k).ok()
        })?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses `text` (named `file` in errors) with overrides looked up by `env`.
    pub fn load_str(
        text: &str,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let message = e.without_snippet().to_string();
            // serde-saphyr appends " at line L, column C"; we print it as a prefix instead.
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            ConfigError::Parse {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })?;
        cfg.apply_env(env)?;
        cfg.validate(file).map_err(|e| match e {
            // Point at the line that set the key, as parse errors do.
            ConfigError::Invalid { file, key, message } => ConfigError::Invalid {
                file: match key_line(text, &key) {
                    Some(line) => format!("{file}:{line}"),
                    None => file,
                },
                key,
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ConfigError> {
            v.parse().map_err(|_| ConfigError::Env {
                var: var.into(),
                message: format!("cannot parse `{v}`"),
            })
        }
        fn enum_value<T: for<'de> Deserialize<'de>>(var: &str, v: &str) -> Result<T, ConfigError> {
            serde_saphyr::from_str(v).map_err(|_| ConfigError::Env {
                var: var.into(),
                message: format!("unknown value `{v}`"),
            })
        }
        if let Some(v) = env("PGCLOAK_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = env("PGCLOAK_INSTANCE_ID") {
            self.instance_id = parse("PGCLOAK_INSTANCE_ID", &v)?;
        }
        if let Some(v) = env("PGCLOAK_UPSTREAM_HOST") {
            self.upstream.host = v;
        }
        if let Some(v) = env("PGCLOAK_UPSTREAM_PORT") {
            self.upstream.port = parse("PGCLOAK_UPSTREAM_PORT", &v)?;
        }
        if let Some(v) = env("PGCLOAK_UPSTREAM_TLS") {
            self.upstream.tls = enum_value("PGCLOAK_UPSTREAM_TLS", &v)?;
        }
        if let Some(v) = env("PGCLOAK_TLS_MODE") {
            self.tls.mode = enum_value("PGCLOAK_TLS_MODE", &v)?;
        }
        if let Some(v) = env("PGCLOAK_MAX_CONNECTIONS") {
            self.max_connections = parse("PGCLOAK_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = env("PGCLOAK_LOG_FORMAT") {
            self.log.format = enum_value("PGCLOAK_LOG_FORMAT", &v)?;
        }
        if let Some(v) = env("PGCLOAK_LOG_LEVEL") {
            self.log.level = v;
        }
        // The lifecycle commands run as the tables' owner, not as the proxy's catalog
        // role: this picks the role without a second config file.
        if let Some(v) = env("PGCLOAK_CATALOG_USER") {
            if let Some(c) = self.catalog.as_mut() {
                c.user = v;
            }
        }
        Ok(())
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.check_client_side()
            .and_then(|()| self.check_upstream())
            .and_then(|()| self.check_protection())
            .and_then(|()| self.check_limits_and_admin())
            .and_then(|()| self.check_peers())
            .and_then(|()| self.check_log())
            .map_err(|Invalid { key, message }| ConfigError::Invalid {
                file: file.to_string(),
                key: key.to_string(),
                message,
            })
    }

    /// The client-facing listener and its TLS.
    fn check_client_side(&self) -> Result<(), Invalid> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Invalid::new(
                "listen",
                format!("`{}` is not an address such as 127.0.0.1:6432", self.listen),
            ));
        }
        if self.tls.mode != ClientTlsMode::Disabled
            && (self.tls.cert.is_none() || self.tls.key.is_none())
        {
            return Err(Invalid::new(
                "tls",
                "mode optional/required needs both `cert` and `key`".into(),
            ));
        }
        Ok(())
    }

    /// The upstream connection's TLS.
    fn check_upstream(&self) -> Result<(), Invalid> {
        if self.upstream.is_unix_socket()
            && matches!(
                self.upstream.tls,
                UpstreamTlsMode::Require | UpstreamTlsMode::VerifyFull
            )
        {
            return Err(Invalid::new(
                "upstream.tls",
                "PostgreSQL does not offer TLS on unix sockets; use `disable` or a TCP host".into(),
            ));
        }
        if self.upstream.tls == UpstreamTlsMode::VerifyFull && self.upstream.ca_file.is_none() {
            return Err(Invalid::new(
                "upstream.ca_file",
                "verify-full needs `ca_file` (the CA that signed the server certificate)".into(),
            ));
        }
        Ok(())
    }

    /// The catalog login, authentication, and what a policy needs (keys, catalog).
    fn check_protection(&self) -> Result<(), Invalid> {
        if let Some(Err(e)) = self.catalog.as_ref().map(|c| c.validate()) {
            return Err(Invalid::new("catalog", e.to_string()));
        }
        if let Err(message) = self.auth.validate(self.catalog.as_ref()) {
            return Err(Invalid::new("auth", message));
        }
        if self.policy.is_some() {
            match &self.keys {
                None => {
                    return Err(Invalid::new(
                        "keys",
                        "a policy needs keys: `keys: { file: config/keys/master.keys }` (or `env: VAR`); create one with `pgcloak keygen`".into(),
                    ))
                }
                Some(k) if k.file.is_some() == k.env.is_some() => {
                    return Err(Invalid::new("keys", "set exactly one of `file` and `env`".into()))
                }
                _ => {}
            }
            if self.catalog.is_none() {
                return Err(Invalid::new(
                    "catalog",
                    "a policy needs the catalog connection (`catalog: { user: pgcloak, password_env: PGCLOAK_CATALOG_PASSWORD }`) to resolve protected columns".into(),
                ));
            }
        }
        Ok(())
    }

    /// Connection and message limits, and the admin listener.
    fn check_limits_and_admin(&self) -> Result<(), Invalid> {
        if self.max_connections == 0 {
            return Err(Invalid::new("max_connections", "must be at least 1".into()));
        }
        if self.limits.max_message_bytes < 8192 {
            return Err(Invalid::new(
                "limits.max_message_bytes",
                "must be at least 8192".into(),
            ));
        }
        if let Some(a) = &self.admin {
            if a.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(Invalid::new(
                    "admin.listen",
                    format!("`{}` is not an address such as 127.0.0.1:9930", a.listen),
                ));
            }
        }
        Ok(())
    }

    /// Peer instances: not this one, each at host:port.
    fn check_peers(&self) -> Result<(), Invalid> {
        for (id, addr) in &self.peers {
            if *id == self.instance_id {
                return Err(Invalid::new(
                    "peers",
                    format!("instance id {id} is this instance's own `instance_id`"),
                ));
            }
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(Invalid::new(
                    "peers",
                    format!("peer {id}: `{addr}` is not host:port"),
                ));
            }
        }
        Ok(())
    }

    /// Log levels, per target and overall.
    fn check_log(&self) -> Result<(), Invalid> {
        for (target, level) in &self.log.levels {
            if !is_level(level)
                || tracing_subscriber::EnvFilter::try_new(format!("{target}={level}")).is_err()
            {
                return Err(Invalid::new(
                    "log.levels",
                    format!(
                        "`{target}: {level}` is not a target and level (off, error, warn, \
                         info, debug, trace)"
                    ),
                ));
            }
        }
        // EnvFilter takes a bare word as a *target* name: `debugg` would be accepted and
        // silence every log line, the audit trail included. Only levels and
        // `target=level` pairs pass here.
        if !is_level_directive(&self.log.level)
            || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err()
        {
            return Err(Invalid::new(
                "log.level",
                format!(
                    "`{}` is not a level (off, error, warn, info, debug, trace) or a list of \
                     them with `target=level` pairs",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    /// Where the policy and keyring are loaded from; None without a policy (plain relay).
    pub fn protection_sources(&self) -> Option<crate::protection::Sources> {
        Some(crate::protection::Sources {
            policy: self.policy.clone()?,
            keys: self.keys.clone(),
        })
    }

    /// Problems that do not prevent starting but change what works.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut w = Vec::new();
        if self.auth.mode == AuthMode::Relay
            && self.tls.mode != ClientTlsMode::Disabled
            && self.upstream.tls != UpstreamTlsMode::Disable
            && !self.upstream.is_unix_socket()
        {
            w.push(ConfigWarning(
                "auth.mode relay with TLS on both legs: SCRAM-SHA-256 logins will fail when a \
                 client connects over TLS, because upstream offers channel binding and refuses the \
                 client's \"y\" flag as a downgrade. Use tls.mode disabled or upstream.tls disable, \
                 or md5/cleartext upstream auth (see docs/operations.md, \"Relay and TLS\")"
                    .into(),
            ));
        }
        if matches!(
            self.upstream.tls,
            UpstreamTlsMode::Prefer | UpstreamTlsMode::Require
        ) && !self.upstream.is_unix_socket()
        {
            w.push(ConfigWarning(format!(
                "upstream.tls {} encrypts but does not verify the server certificate; use \
                 verify-full with ca_file in production",
                self.upstream.tls.name()
            )));
        }
        if self.auth.mode == AuthMode::Scram
            && self.auth.fake_secret_env.is_none()
            && self.auth.fake_secret_file.is_none()
        {
            w.push(ConfigWarning(
                "auth.fake_secret_env/fake_secret_file is not set: the fake salts shown for \
                 unknown roles change at each restart, which lets a patient client tell unknown \
                 roles from real ones"
                    .into(),
            ));
        }
        if self.trust_upstream_identity {
            w.push(ConfigWarning(
                "trust_upstream_identity is on: roles admitted by trust count as authenticated \
                 (demos and tests only)"
                    .into(),
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::load_str(text, "pgcloak.yaml", |_| None)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load("upstream: { host: 127.0.0.1, port: 5433 }\n").unwrap();
        assert_eq!(c.listen, "127.0.0.1:6432");
        assert_eq!(c.upstream.port, 5433);
        assert_eq!(c.upstream.tls, UpstreamTlsMode::Prefer);
        assert_eq!(c.max_connections, 1000);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let err = load("upstream:\n  host: x\n  prot: 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pgcloak.yaml:3:3: unknown field `prot`, expected one of host, port, tls, ca_file, server_name, connect_timeout_ms"
        );
    }

    #[test]
    fn log_level_typo_is_refused_with_its_line() {
        for bad in [
            "debugg",
            "infos",
            "warning",
            "info,pgcloak::sql=verbose",
            "",
        ] {
            let text = format!(
                "upstream: {{ host: 127.0.0.1 }}\nlog:\n  format: text\n  level: \"{bad}\"\n"
            );
            let err = load(&text).unwrap_err().to_string();
            assert!(
                err.starts_with("pgcloak.yaml:4: log.level: "),
                "{bad}: {err}"
            );
        }
        let err = load("upstream: { host: h }\nlog: { format: json, level: debugg }\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("pgcloak.yaml:2: log.level:"), "{err}");
        let err = load("upstream: { host: h }\nlog: { levels: { pgcloak::sql: loud } }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.levels"), "{err}");
        for good in ["info", "DEBUG", "warn,pgcloak::sql=debug", "off"] {
            let text = format!("upstream: {{ host: h }}\nlog: {{ level: \"{good}\" }}\n");
            assert!(load(&text).is_ok(), "{good}");
        }
    }

    #[test]
    fn bad_enum_value_is_located() {
        let err = load("upstream: { tls: sometimes }\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("pgcloak.yaml:1:"), "{err}");
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn env_overrides_win() {
        let c = Config::load_str("upstream: {port: 1}\n", "f", |k| match k {
            "PGCLOAK_UPSTREAM_PORT" => Some("7777".into()),
            "PGCLOAK_TLS_MODE" => Some("disabled".into()),
            "PGCLOAK_UPSTREAM_TLS" => Some("verify-full".into()),
            _ => None,
        });
        // verify-full without ca_file is refused: overrides are validated too.
        assert!(c.unwrap_err().to_string().contains("ca_file"));
        let c = Config::load_str("upstream: {port: 1}\n", "f", |k| {
            (k == "PGCLOAK_UPSTREAM_PORT").then(|| "7777".into())
        })
        .unwrap();
        assert_eq!(c.upstream.port, 7777);
        let bad = Config::load_str("upstream: {port: 1}\n", "f", |k| {
            (k == "PGCLOAK_MAX_CONNECTIONS").then(|| "many".into())
        });
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("PGCLOAK_MAX_CONNECTIONS"));
    }

    #[test]
    fn tls_without_cert_is_refused() {
        let err = load("upstream: {}\ntls: { mode: required }\n").unwrap_err();
        assert!(err.to_string().contains("needs both `cert` and `key`"));
    }

    #[test]
    fn relay_with_tls_on_both_legs_warns_about_scram() {
        let c =
            load("upstream: { tls: require }\ntls: { mode: optional, cert: a, key: b }\n").unwrap();
        assert!(c.warnings().iter().any(|w| w.0.contains("channel binding")));
        let c =
            load("upstream: { tls: disable }\ntls: { mode: optional, cert: a, key: b }\n").unwrap();
        assert!(!c.warnings().iter().any(|w| w.0.contains("channel binding")));
    }

    #[test]
    fn scram_mode_needs_a_verifier_source_and_scram_in_methods() {
        let err = load("upstream: {}\nauth: { mode: scram }\n").unwrap_err();
        assert!(err.to_string().contains("auth.file"), "{err}");
        let c = load("upstream: {}\nauth: { mode: scram, file: users.txt }\n").unwrap();
        assert_eq!(c.auth.mode, AuthMode::Scram);
        assert_eq!(c.auth.methods, vec![ClientAuthMethod::ScramSha256]);
        assert!(c.auth.query.contains("pg_authid"));
        let c = load("upstream: {}\ncatalog: { user: pc }\nauth: { mode: scram, methods: [md5, scram-sha-256, password] }\n")
            .unwrap();
        assert_eq!(c.auth.methods.len(), 3);
        let err =
            load("upstream: {}\nauth: { mode: scram, file: u, methods: [md5] }\n").unwrap_err();
        assert!(err.to_string().contains("scram-sha-256"), "{err}");
        let err =
            load("upstream: {}\nauth: { mode: scram, file: u, metods: [md5] }\n").unwrap_err();
        assert!(err.to_string().starts_with("pgcloak.yaml:2:"), "{err}");
    }

    #[test]
    fn operations_sections_parse_and_validate() {
        let c = load(
            "upstream: {}\ninstance_id: 1\nadmin: { listen: 127.0.0.1:9930 }\n\
             log: { levels: { pgcloak::sql: debug }, statements: redacted }\n\
             audit: { file: /tmp/a.jsonl }\nslow_statement_ms: 200\npeers: { 2: 127.0.0.1:6433 }\n",
        )
        .unwrap();
        assert_eq!(c.admin.unwrap().listen, "127.0.0.1:9930");
        assert_eq!(c.log.statements, StatementLog::Redacted);
        assert_eq!(c.log.filter_directive(), "info,pgcloak::sql=debug");
        assert_eq!(c.slow_statement_ms, Some(200));
        assert_eq!(c.peers.get(&2).unwrap(), "127.0.0.1:6433");
        let err = load("upstream: {}\ninstance_id: 2\npeers: { 2: 127.0.0.1:1 }\n").unwrap_err();
        assert!(err.to_string().contains("own `instance_id`"), "{err}");
        let err = load("upstream: {}\nadmin: { listen: nowhere }\n").unwrap_err();
        assert!(err.to_string().contains("admin.listen"), "{err}");
        let err = load("upstream: {}\nlog: { statements: raw }\n").unwrap_err();
        assert!(err.to_string().starts_with("pgcloak.yaml:2:"), "{err}");
    }

    #[test]
    fn scram_mode_without_a_fake_secret_warns() {
        let c = load("upstream: {}\nauth: { mode: scram, file: u }\n").unwrap();
        assert!(c.warnings().iter().any(|w| w.0.contains("fake_secret")));
        let c = load("upstream: {}\nauth: { mode: scram, file: u, fake_secret_env: S }\n").unwrap();
        assert!(!c.warnings().iter().any(|w| w.0.contains("fake_secret")));
    }
}
