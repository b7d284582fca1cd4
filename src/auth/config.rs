//! The `auth:` section of the proxy configuration: who verifies the client's password,
//! against what, and how (docs/operations.md, "Authentication"). Parsed as part of
//! `config::Config`; validated here.

use std::path::PathBuf;

use serde::Deserialize;

use crate::catalog::CatalogConfig;

/// The `auth:` section: who verifies the client's password, against what, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub mode: AuthMode,
    /// `scram` mode: a userlist file of `"role" "verifier"` lines. When set, it is the only
    /// source of verifiers (identity pinned to verifiers pgcloak holds).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `scram` mode without `file`: the query run over the catalog connection, `$1` = role;
    /// the second column is the verifier (`rolpassword`).
    #[serde(default = "default_auth_query")]
    pub query: String,
    /// The database the auth query connects to (pg_authid is shared by all databases).
    #[serde(default = "default_auth_query_database")]
    pub query_database: String,
    /// How long a verifier read by `query` (or its absence) is cached.
    #[serde(default = "default_auth_cache_secs")]
    pub cache_secs: u64,
    /// Client-facing methods, in order of preference. `scram-sha-256` must be listed;
    /// `password` is only ever used over TLS.
    #[serde(default = "default_auth_methods")]
    pub methods: Vec<ClientAuthMethod>,
    /// Role -> name of an environment variable holding its password, for upstreams that ask
    /// for md5 or a cleartext password (SCRAM pass-through needs none).
    #[serde(default)]
    pub upstream_passwords: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub backoff: AuthBackoffConfig,
    /// Environment variable holding the secret that derives fake verifiers for unknown roles.
    #[serde(default)]
    pub fake_secret_env: Option<String>,
    /// File holding that secret (alternative to `fake_secret_env`).
    #[serde(default)]
    pub fake_secret_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::default(),
            file: None,
            query: default_auth_query(),
            query_database: default_auth_query_database(),
            cache_secs: default_auth_cache_secs(),
            methods: default_auth_methods(),
            upstream_passwords: Default::default(),
            backoff: AuthBackoffConfig::default(),
            fake_secret_env: None,
            fake_secret_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The auth exchange is relayed between client and upstream.
    #[default]
    Relay,
    /// pgcloak verifies the client itself (SCRAM on stored verifiers), then logs in upstream
    /// as the same role (SCRAM pass-through, a configured password, or trust).
    Scram,
}

/// A password method pgcloak may ask a client for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuthMethod {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "password")]
    Password,
}

/// Per-client-address backoff after repeated failed logins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthBackoffConfig {
    /// Failures from one address before logins from it are refused for a while (0 = off).
    #[serde(default = "default_backoff_threshold")]
    pub threshold: u32,
    #[serde(default = "default_backoff_base_ms")]
    pub base_delay_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub max_delay_ms: u64,
    #[serde(default = "default_backoff_forget_secs")]
    pub forget_after_secs: u64,
}

impl Default for AuthBackoffConfig {
    fn default() -> Self {
        AuthBackoffConfig {
            threshold: default_backoff_threshold(),
            base_delay_ms: default_backoff_base_ms(),
            max_delay_ms: default_backoff_max_ms(),
            forget_after_secs: default_backoff_forget_secs(),
        }
    }
}

fn default_auth_query() -> String {
    "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1".into()
}
fn default_auth_query_database() -> String {
    "postgres".into()
}
fn default_auth_cache_secs() -> u64 {
    10
}
fn default_auth_methods() -> Vec<ClientAuthMethod> {
    vec![ClientAuthMethod::ScramSha256]
}
fn default_backoff_threshold() -> u32 {
    5
}
fn default_backoff_base_ms() -> u64 {
    1000
}
fn default_backoff_max_ms() -> u64 {
    60_000
}
fn default_backoff_forget_secs() -> u64 {
    600
}

impl AuthConfig {
    /// Checks the section against itself and the catalog section (`auth.query` runs there).
    pub(crate) fn validate(&self, catalog: Option<&CatalogConfig>) -> Result<(), String> {
        if !self.methods.contains(&ClientAuthMethod::ScramSha256) {
            return Err("auth.methods must include scram-sha-256".into());
        }
        if self.mode == AuthMode::Scram && self.file.is_none() && catalog.is_none() {
            return Err(
                "auth.mode scram needs `auth.file` (a userlist) or a `catalog:` section for \
                 auth.query"
                    .into(),
            );
        }
        if self.mode == AuthMode::Scram && self.file.is_none() && !self.query.contains("$1") {
            return Err("auth.query must use $1 for the role name".into());
        }
        if self.backoff.max_delay_ms < self.backoff.base_delay_ms {
            return Err("auth.backoff.max_delay_ms must be at least base_delay_ms".into());
        }
        Ok(())
    }
}
