//! What terminating authentication needs across sessions: the verifier source (the
//! `auth.file` userlist, or `auth.query` over a catalog connection with a short TTL cache),
//! the fake verifiers for unknown roles, the per-address failure tracker, the client leg's
//! tls-server-end-point hash and the configured upstream passwords.
//!
//! Built once at startup (`session::Shared::new`) from the `auth` section and the sections
//! it names; the session layer drives the exchanges with it. Unlike the building blocks
//! beside it, it does I/O (the auth query's catalog connection). It never logs or displays a verifier, password or
//! secret, and a lookup never tells anyone but the log whether a role exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::warn;
use zeroize::Zeroizing;

use super::config::{AuthConfig, ClientAuthMethod};
use super::{AuthError, BackoffConfig, FailureTracker, FakeVerifiers, Userlist, Verifier};
use crate::catalog::{CatalogConfig, CatalogConn};
use crate::net::UpstreamConfig;
use crate::tls::{ClientTlsConfig, ClientTlsMode};

const LOG: &str = "pgcloak::auth";
/// Roles whose lookup result is cached at once (bounds memory under enumeration attempts).
const CACHE_CAPACITY: usize = 10_000;
/// A fake-verifier secret shorter than this is refused.
const MIN_FAKE_SECRET_LEN: usize = 16;

/// Why the authentication state could not be built at startup.
#[derive(Debug, Error)]
pub enum AuthSetupError {
    #[error("auth.file {path}: cannot read: {reason}")]
    ReadUserlist { path: String, reason: String },
    #[error("auth.file: {0}")]
    Userlist(AuthError),
    #[error("{0}")]
    Secret(String),
    #[error("auth.query: {0}")]
    Catalog(String),
    #[error("client leg certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
}

/// Why a role's verifier could not be looked up (not whether it exists).
#[derive(Debug, Error)]
#[error("cannot look up the role's verifier: {0}")]
pub struct LookupError(pub String);

/// Shared state of `auth.mode: scram`.
pub struct AuthState {
    source: VerifierSource,
    pub(crate) fakes: FakeVerifiers,
    failures: Mutex<FailureTracker>,
    /// tls-server-end-point of pgcloak's own client-leg certificate (SCRAM-SHA-256-PLUS).
    pub(crate) client_end_point: Option<Vec<u8>>,
    upstream_passwords: HashMap<String, Zeroizing<String>>,
    pub(crate) methods: Vec<ClientAuthMethod>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("methods", &self.methods)
            .field("plus", &self.client_end_point.is_some())
            .finish_non_exhaustive()
    }
}

enum VerifierSource {
    File(Userlist),
    Query(Box<QuerySource>),
}

struct QuerySource {
    upstream: UpstreamConfig,
    catalog: CatalogConfig,
    password: Option<Zeroizing<String>>,
    database: String,
    query: String,
    ttl: Duration,
    live: tokio::sync::Mutex<Option<Arc<LiveQuery>>>,
    cache: Mutex<LruCache<String, (Instant, Option<Verifier>)>>,
}

struct LiveQuery {
    conn: CatalogConn,
    statement: tokio_postgres::Statement,
}

/// Reads and parses an `auth.file` userlist, with `file:line` errors.
pub fn load_userlist(path: &Path) -> Result<Userlist, AuthSetupError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthSetupError::ReadUserlist {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Userlist::parse(&text, &path.display().to_string()).map_err(AuthSetupError::Userlist)
}

impl AuthState {
    /// Builds the state for `auth.mode: scram` from the `auth` section, the `catalog` and
    /// `upstream` sections its query runs over and the client leg's `tls` section (for
    /// SCRAM-SHA-256-PLUS); `env` looks up environment variables.
    pub fn new(
        auth: &AuthConfig,
        catalog: Option<&CatalogConfig>,
        upstream: &UpstreamConfig,
        tls: &ClientTlsConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AuthState, AuthSetupError> {
        let source = match (&auth.file, catalog) {
            (Some(path), _) => VerifierSource::File(load_userlist(path)?),
            (None, Some(catalog)) => {
                let password = catalog
                    .resolve_password(&env)
                    .map_err(|e| AuthSetupError::Catalog(e.to_string()))?
                    .map(Zeroizing::new);
                VerifierSource::Query(Box::new(QuerySource {
                    upstream: upstream.clone(),
                    catalog: catalog.clone(),
                    password,
                    database: auth.query_database.clone(),
                    query: auth.query.clone(),
                    ttl: Duration::from_secs(auth.cache_secs),
                    live: tokio::sync::Mutex::new(None),
                    cache: Mutex::new(LruCache::new(
                        NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN),
                    )),
                }))
            }
            (None, None) => {
                return Err(AuthSetupError::Catalog(
                    "auth.mode scram needs auth.file or a catalog section".into(),
                ))
            }
        };
        let fakes = fake_verifiers(
            auth.fake_secret_env.as_deref(),
            auth.fake_secret_file.as_deref(),
            &env,
        )?;
        let mut upstream_passwords = HashMap::new();
        for (role, var) in &auth.upstream_passwords {
            match env(var) {
                Some(v) if !v.is_empty() => {
                    upstream_passwords.insert(role.clone(), Zeroizing::new(v));
                }
                _ => {
                    return Err(AuthSetupError::Secret(format!(
                        "auth.upstream_passwords.{role} names `{var}`, but that environment \
                         variable is unset or empty"
                    )))
                }
            }
        }
        let client_end_point = match (&tls.cert, tls.mode) {
            (Some(path), mode) if mode != ClientTlsMode::Disabled => {
                Some(certificate_end_point(path)?)
            }
            _ => None,
        };
        let b = &auth.backoff;
        let failures = FailureTracker::new(BackoffConfig {
            threshold: b.threshold,
            base_delay: Duration::from_millis(b.base_delay_ms),
            max_delay: Duration::from_millis(b.max_delay_ms),
            forget_after: Duration::from_secs(b.forget_after_secs),
            ..BackoffConfig::default()
        });
        Ok(AuthState {
            source,
            fakes,
            failures: Mutex::new(failures),
            client_end_point,
            upstream_passwords,
            methods: auth.methods.clone(),
        })
    }

    /// The role's stored verifier; `None` for an unknown role or one without a password.
    pub async fn verifier_for(&self, role: &str) -> Result<Option<Verifier>, LookupError> {
        match &self.source {
            VerifierSource::File(list) => Ok(list.get(role).cloned()),
            VerifierSource::Query(q) => q.lookup(role).await,
        }
    }

    /// Drops a cached lookup (after upstream refused a login pgcloak accepted, the verifier
    /// may have changed in the database).
    pub(crate) fn forget(&self, role: &str) {
        if let VerifierSource::Query(q) = &self.source {
            q.cache.lock().unwrap_or_else(|p| p.into_inner()).pop(role);
        }
    }

    /// The configured upstream password of `role`, if any.
    pub(crate) fn upstream_password(&self, role: &str) -> Option<&Zeroizing<String>> {
        self.upstream_passwords.get(role)
    }

    /// Refuses a login from an address that failed too often recently.
    pub(crate) fn check_backoff(&self, addr: IpAddr) -> Result<(), AuthError> {
        match self.failures.lock() {
            Ok(t) => t.check(addr, Instant::now()),
            Err(p) => p.into_inner().check(addr, Instant::now()),
        }
    }

    pub(crate) fn record_failure(&self, addr: IpAddr) {
        let mut t = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        t.record_failure(addr, Instant::now());
    }

    pub(crate) fn record_success(&self, addr: IpAddr) {
        let mut t = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        t.record_success(addr);
    }
}

impl QuerySource {
    async fn lookup(&self, role: &str) -> Result<Option<Verifier>, LookupError> {
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, v)) = cache.get(role) {
                if now.saturating_duration_since(*at) < self.ttl {
                    return Ok(v.clone());
                }
            }
        }
        let live = self.live().await?;
        let rows = match live.conn.client.query(&live.statement, &[&role]).await {
            Ok(rows) => rows,
            Err(e) => {
                // A broken connection is replaced at the next lookup.
                let mut slot = self.live.lock().await;
                if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &live)) {
                    *slot = None;
                }
                return Err(LookupError(describe(&e)));
            }
        };
        let text: Option<String> = match rows.first() {
            None => None,
            Some(row) => row
                .try_get::<_, Option<String>>(1)
                .map_err(|e| LookupError(format!("second column is not text: {e}")))?,
        };
        let verifier = match text {
            None => None,
            Some(t) => match Verifier::parse(&t) {
                Ok(v) => Some(v),
                Err(e) => {
                    // Never echo the stored value: it may be a plaintext password.
                    warn!(target: LOG, role, reason = %e, "role's stored password is not a usable verifier; treating it as absent");
                    None
                }
            },
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(role.to_owned(), (now, verifier.clone()));
        Ok(verifier)
    }

    async fn live(&self) -> Result<Arc<LiveQuery>, LookupError> {
        let mut slot = self.live.lock().await;
        if let Some(l) = slot.as_ref() {
            if !l.conn.is_closed() {
                return Ok(l.clone());
            }
        }
        let conn = CatalogConn::connect(
            &self.upstream,
            &self.catalog,
            self.password.as_ref().map(|p| p.as_str()),
            &self.database,
        )
        .await
        .map_err(|e| LookupError(e.to_string()))?;
        let statement = conn
            .client
            .prepare(&self.query)
            .await
            .map_err(|e| LookupError(describe(&e)))?;
        if statement.columns().len() < 2 {
            return Err(LookupError(
                "auth.query must return two columns (role name, verifier)".into(),
            ));
        }
        let live = Arc::new(LiveQuery { conn, statement });
        *slot = Some(live.clone());
        Ok(live)
    }
}

/// A driver error with the server's message and SQLSTATE when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The fake-verifier secret: from an environment variable or a file (any text of at least
/// 16 bytes, hashed to 32 bytes), else random for this process only.
fn fake_verifiers(
    var: Option<&str>,
    file: Option<&Path>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<FakeVerifiers, AuthSetupError> {
    let material: Zeroizing<Vec<u8>> = match (var, file) {
        (Some(var), _) => match env(var) {
            Some(v) => Zeroizing::new(v.into_bytes()),
            None => {
                return Err(AuthSetupError::Secret(format!(
                    "auth.fake_secret_env names `{var}`, but that environment variable is unset"
                )))
            }
        },
        (None, Some(path)) => Zeroizing::new(std::fs::read(path).map_err(|e| {
            AuthSetupError::Secret(format!(
                "auth.fake_secret_file {}: cannot read: {e}",
                path.display()
            ))
        })?),
        (None, None) => return Ok(FakeVerifiers::generate()),
    };
    let trimmed = material.trim_ascii();
    if trimmed.len() < MIN_FAKE_SECRET_LEN {
        return Err(AuthSetupError::Secret(format!(
            "the fake-verifier secret must be at least {MIN_FAKE_SECRET_LEN} bytes"
        )));
    }
    let mut hasher = Sha256::new();
    hasher.update(b"pgcloak fake verifier secret\0");
    hasher.update(trimmed);
    let digest: [u8; 32] = hasher.finalize().into();
    Ok(FakeVerifiers::new(digest))
}

/// tls-server-end-point of the first certificate in the PEM file `path`.
fn certificate_end_point(path: &Path) -> Result<Vec<u8>, AuthSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let err = |reason: String| AuthSetupError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no PEM certificate found".into()))?
        .map_err(|e| err(e.to_string()))?;
    crate::auth::tls_server_end_point(first.as_ref()).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_secret_from_env_is_stable_and_short_secrets_are_refused() {
        let env = |k: &str| (k == "S").then(|| "a-long-enough-fake-secret".to_string());
        let a = fake_verifiers(Some("S"), None, &env).unwrap();
        let b = fake_verifiers(Some("S"), None, &env).unwrap();
        assert_eq!(a.verifier_for("ghost"), b.verifier_for("ghost"));
        let short = |_: &str| Some("short".to_string());
        assert!(fake_verifiers(Some("S"), None, &short).is_err());
        let unset = |_: &str| None;
        let err = fake_verifiers(Some("S"), None, &unset).unwrap_err();
        assert!(err.to_string().contains("`S`"), "{err}");
    }
}
