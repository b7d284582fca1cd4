//! What every session of this process shares, built once at startup from the config:
//! the client leg's TLS, the upstream connector, cancel routing, the authentication
//! state, and (with a policy) the protection generation in force with its catalog.
//!
//! Each piece is owned by its module (`net::Upstream`, `cancel::CancelRouter`,
//! `auth::AuthState`, `protection`); this file only assembles them. The admin endpoint
//! and live reload get their own handles (`observe::admin::AdminState`,
//! `observe::reload::Reloader`), not this struct.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthSetupError, AuthState};
use crate::cancel::CancelRouter;
use crate::catalog::CatalogCache;
use crate::config::{AuthMode, Config};
use crate::datapath::{Protection, SessionSchema};
use crate::net::Upstream;
use crate::protection::LoadError;
use crate::tls::TlsError;

/// Why the shared state could not be built.
#[derive(Debug, Error)]
pub enum SharedError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error(transparent)]
    Protection(#[from] LoadError),
    #[error("catalog: {0}")]
    Catalog(String),
}

/// State every session shares. Built once at startup.
pub struct Shared {
    /// The proxy configuration; sessions read `limits`, `tls.mode` and
    /// `trust_upstream_identity` from it, the data path's refresh `catalog.refresh_secs`.
    pub config: Config,
    /// The client leg's TLS acceptor; None when `tls.mode` is `disabled`.
    pub client_tls: Option<TlsAcceptor>,
    pub upstream: Arc<Upstream>,
    pub cancel: CancelRouter,
    /// `auth.mode: scram` state (verifiers, fake verifiers, failure backoff); None in relay mode.
    pub auth: Option<AuthState>,
    /// The current policy + keys generation (None: no policy, plain relay).
    pub protection: Option<Arc<ArcSwap<Protection>>>,
    /// Schema and role memberships (present with a policy).
    pub catalog: Option<Arc<CatalogCache>>,
    /// Per database: the analyser's schema for the latest catalog snapshot.
    pub schemas: Mutex<HashMap<String, Arc<SessionSchema>>>,
    /// (database, generation) pairs whose stored envelopes were already tried against
    /// the keyring on first use (`server::check_keyring_on_first_use`).
    pub keyring_checked: Mutex<std::collections::HashSet<(String, u64)>>,
    /// At most `max_connections` sessions at once.
    pub limiter: Arc<Semaphore>,
    /// Fired when the drain period is over: sessions still open close now.
    pub force_close: CancellationToken,
}

impl Shared {
    pub fn new(config: Config) -> Result<Shared, SharedError> {
        let client_tls = crate::tls::acceptor(&config.tls)?;
        let upstream = Arc::new(Upstream::new(config.upstream.clone())?);
        let auth = match config.auth.mode {
            AuthMode::Relay => None,
            AuthMode::Scram => Some(AuthState::new(
                &config.auth,
                config.catalog.as_ref(),
                &config.upstream,
                &config.tls,
                |k| std::env::var(k).ok(),
            )?),
        };
        let (protection, catalog) = match config.protection_sources() {
            Some(sources) => {
                let loaded = sources.load(1)?;
                let policy = Arc::new(loaded.policy);
                let prot = Protection::new(policy.clone(), loaded.suite, config.limits.in_list_cap);
                // A policy that protects no column (`tables: {}`) needs no catalog login.
                let catalog_cfg = match config.catalog.clone() {
                    Some(c) => c,
                    None if policy.columns().is_empty() => Default::default(),
                    None => {
                        return Err(SharedError::Catalog(
                            "a policy needs the `catalog` section".into(),
                        ))
                    }
                };
                let cache = CatalogCache::new(config.upstream.clone(), catalog_cfg, policy)
                    .map_err(|e| SharedError::Catalog(e.to_string()))?;
                (
                    Some(Arc::new(ArcSwap::from_pointee(prot))),
                    Some(Arc::new(cache)),
                )
            }
            None => (None, None),
        };
        Ok(Shared {
            client_tls,
            cancel: CancelRouter::new(config.instance_id, config.peers.clone(), upstream.clone()),
            upstream,
            auth,
            protection,
            catalog,
            schemas: Default::default(),
            keyring_checked: Default::default(),
            limiter: Arc::new(Semaphore::new(config.max_connections)),
            force_close: CancellationToken::new(),
            config,
        })
    }
}
