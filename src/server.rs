//! The listener: accept loop, connection limit, cancel routing and graceful shutdown.
//!
//! Each connection gets its own task. On SIGTERM/SIGINT the listener stops
//! accepting, open sessions get `shutdown_timeout_secs` to finish, and then
//! any still open are closed with 57P01.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use arc_swap::ArcSwap;

use crate::cancel::CancelMap;
use crate::catalog::CatalogCache;
use crate::config::{ClientTlsMode, Config};
use crate::crypto::{CipherSuite, Keyring};
use crate::datapath::Protection;
use crate::net::connect_upstream;
use crate::policy::Policy;
use crate::tls::TlsError;
use crate::wire::messages::cancel_request;

const LOG: &str = "pgcloak::session";

/// State every session shares. Built once at startup.
pub struct Shared {
    pub config: Config,
    pub acceptor: Option<TlsAcceptor>,
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    pub cancel: CancelMap,
    pub limiter: Arc<Semaphore>,
    /// Fired when the drain period is over: sessions still open close now.
    pub force_close: CancellationToken,
    /// `auth.mode: scram` state (verifiers, fake verifiers, failure backoff); None in relay mode.
    pub auth: Option<crate::session::auth_state::AuthState>,
    /// The current policy + keys generation (None: no policy, plain relay).
    pub protection: Option<Arc<ArcSwap<Protection>>>,
    /// Schema and role memberships (present with a policy).
    pub catalog: Option<Arc<CatalogCache>>,
    /// Per database: the analyser's schema for the latest catalog snapshot.
    pub schemas:
        std::sync::Mutex<std::collections::HashMap<String, Arc<crate::datapath::SessionSchema>>>,
    /// Readiness inputs (draining, upstream reachability) for the admin endpoint.
    pub health: crate::observe::admin::Health,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] crate::session::auth_state::AuthSetupError),
    #[error("{0}")]
    Policy(String),
    #[error("keys: {0}")]
    Keys(String),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

impl Shared {
    pub fn new(config: Config) -> Result<Shared, ServerError> {
        let acceptor = match (config.tls.mode, &config.tls.cert, &config.tls.key) {
            (ClientTlsMode::Disabled, _, _) => None,
            (_, Some(cert), Some(key)) => {
                Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?))
            }
            _ => {
                return Err(ServerError::Tls(TlsError::Config(
                    "tls.cert and tls.key are required".into(),
                )))
            }
        };
        let upstream_tls = crate::tls::upstream_client_config(&config.upstream)?;
        let auth = match config.auth.mode {
            crate::config::AuthMode::Relay => None,
            crate::config::AuthMode::Scram => {
                Some(crate::session::auth_state::AuthState::new(&config, |k| {
                    std::env::var(k).ok()
                })?)
            }
        };
        let (protection, catalog) = match load_protection(&config, 1)? {
            Some((prot, policy)) => {
                // A policy that protects no column (`tables: {}`) needs no catalog login.
                let catalog_cfg = match config.catalog.clone() {
                    Some(c) => c,
                    None if policy.columns().is_empty() => Default::default(),
                    None => {
                        return Err(ServerError::Catalog(
                            "a policy needs the `catalog` section".into(),
                        ))
                    }
                };
                let cache = CatalogCache::new(config.upstream.clone(), catalog_cfg, policy)
                    .map_err(|e| ServerError::Catalog(e.to_string()))?;
                (
                    Some(Arc::new(ArcSwap::from_pointee(prot))),
                    Some(Arc::new(cache)),
                )
            }
            None => (None, None),
        };
        Ok(Shared {
            auth,
            protection,
            catalog,
            schemas: Default::default(),
            acceptor,
            upstream_tls,
            cancel: CancelMap::new(config.instance_id, !config.peers.is_empty()),
            limiter: Arc::new(Semaphore::new(config.max_connections)),
            force_close: CancellationToken::new(),
            health: Default::default(),
            config,
        })
    }
}

/// Loads the policy and keyring named by the config into a [`Protection`].
pub fn load_protection(
    config: &Config,
    generation: u64,
) -> Result<Option<(Protection, Arc<Policy>)>, ServerError> {
    let Some(policy_path) = &config.policy else {
        return Ok(None);
    };
    let policy =
        Policy::load(policy_path, generation).map_err(|e| ServerError::Policy(e.to_string()))?;
    let keys = config
        .keys
        .as_ref()
        .ok_or_else(|| ServerError::Keys("a policy needs `keys`".into()))?;
    let keyring = match (&keys.file, &keys.env) {
        (Some(f), _) => Keyring::from_file(f),
        (None, Some(v)) => Keyring::from_env(v),
        (None, None) => return Err(ServerError::Keys("set `file` or `env`".into())),
    }
    .map_err(|e| ServerError::Keys(e.to_string()))?;
    let policy = Arc::new(policy);
    let suite =
        CipherSuite::new(&keyring, &policy).map_err(|e| ServerError::Keys(e.to_string()))?;
    Ok(Some((
        Protection::new(policy.clone(), suite, config.limits.in_list_cap),
        policy,
    )))
}

/// What `check --database` (and startup) found in the live schema.
#[derive(Default)]
pub struct DatabaseCheck {
    /// Policy columns that do not resolve (missing, not bytea, ...): fatal.
    pub errors: Vec<String>,
    /// Protected columns without the envelope CHECK constraint, with the DDL to add it.
    pub missing_constraints: Vec<(String, String)>,
    /// Where the database is looser than the policy (privileges, statistics, built-ins),
    /// each with the DDL that fixes it: see `catalog::guard`.
    pub guard: Vec<(String, Vec<String>)>,
    /// What the DBA must know but no DDL fixes (owners, superusers, unknown statistics).
    pub guard_warnings: Vec<String>,
    /// Adoption and operations findings (catalog::adoption_checks): the keyring does not
    /// open the stored data (errors), unknown roles, kept plaintext columns (warnings).
    pub adoption: crate::catalog::adoption_checks::AdoptionFindings,
}

impl DatabaseCheck {
    /// Whether the database is looser than the policy (`check` exits 1, `strict` refuses).
    pub fn looser_than_policy(&self) -> bool {
        !self.missing_constraints.is_empty() || !self.guard.is_empty()
    }
}

/// Checks the policy against each database's live schema.
pub async fn check_databases(shared: &Shared, databases: &[String]) -> DatabaseCheck {
    let mut out = DatabaseCheck::default();
    let Some(catalog) = shared.catalog.as_ref().filter(|c| c.protects_anything()) else {
        return out;
    };
    for db in databases {
        match catalog.snapshot(db).await {
            Ok(snap) => {
                for p in snap.problems() {
                    out.errors.push(format!("database {db}: {p}"));
                }
            }
            Err(e) => {
                out.errors.push(format!("database {db}: {e}"));
                continue;
            }
        }
        match catalog.check_constraints(db).await {
            Ok(missing) => {
                for m in missing {
                    out.missing_constraints
                        .push((format!("database {db}: {}", m.describe()), m.ddl()));
                }
            }
            Err(e) => out.errors.push(format!("database {db}: {e}")),
        }
        check_guard(catalog, db, &mut out).await;
        adoption_checks(shared, db, &mut out).await;
    }
    out
}

/// The database-side guard's part of [`check_databases`] (`catalog::guard`).
async fn check_guard(catalog: &CatalogCache, db: &str, out: &mut DatabaseCheck) {
    match catalog.guard_check(db).await {
        Ok(report) => {
            for f in report.findings {
                out.guard.push((
                    format!("database {db}: {}: {}", f.kind.name(), f.what),
                    f.ddl,
                ));
            }
            for w in report.warnings {
                out.guard_warnings.push(format!("database {db}: {w}"));
            }
        }
        Err(e) => out.errors.push(format!("database {db}: {e}")),
    }
}

/// The adoption checks on a short-lived connection of their own (the cache's connections
/// are the sessions'; this one closes when done).
async fn adoption_checks(shared: &Shared, db: &str, out: &mut DatabaseCheck) {
    let (Some(protection), Some(catalog)) = (&shared.protection, &shared.config.catalog) else {
        return;
    };
    let password = match catalog.resolve_password(|k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            out.errors.push(format!("database {db}: {e}"));
            return;
        }
    };
    let conn = match crate::catalog::CatalogConn::connect(
        &shared.config.upstream,
        catalog,
        password.as_deref(),
        db,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(format!("database {db}: {e}"));
            return;
        }
    };
    let prot = protection.load_full();
    let found =
        crate::catalog::adoption_checks::check(&conn.client, db, &prot.policy, &prot.suite).await;
    out.adoption.errors.extend(found.errors);
    out.adoption.warnings.extend(found.warnings);
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// The admin HTTP listener (`admin.listen`), if configured.
    admin: Option<TcpListener>,
    /// SIGHUP, registered before any listener is bound: a SIGHUP that arrives once a client
    /// can connect must reload, never kill the process (the default action).
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        #[cfg(unix)]
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let addr = config.listen.clone();
        let shared = Arc::new(Shared::new(config)?);
        // A policy column that does not resolve in a configured database is a startup
        // error; a database looser than the policy (a missing envelope CHECK constraint,
        // privileges, statistics, built-ins) is a warning (an error with `strict`).
        let databases = shared
            .config
            .catalog
            .as_ref()
            .map(|c| c.databases.clone())
            .unwrap_or_default();
        if shared.protection.is_some() && !databases.is_empty() {
            let found = check_databases(&shared, &databases).await;
            if !found.errors.is_empty() {
                return Err(ServerError::Catalog(found.errors.join("; ")));
            }
            for (what, ddl) in &found.missing_constraints {
                warn!(target: "pgcloak::policy", problem = %what, fix = %ddl, "protected column lacks its envelope CHECK constraint");
            }
            for problem in &found.adoption.errors {
                tracing::error!(target: "pgcloak::crypto", problem = %problem, "the keyring does not open the stored data");
            }
            for problem in &found.adoption.warnings {
                warn!(target: "pgcloak::policy", problem = %problem, "check --database finding");
            }
            for (what, ddl) in &found.guard {
                warn!(target: "pgcloak::policy", problem = %what, fix = %ddl.join(" "), "the database is looser than the policy");
            }
            for w in &found.guard_warnings {
                warn!(target: "pgcloak::policy", "{w}");
            }
            if shared.config.strict && found.looser_than_policy() {
                let mut missing: Vec<String> = found
                    .missing_constraints
                    .iter()
                    .map(|(what, _)| what.clone())
                    .collect();
                missing.extend(found.guard.iter().map(|(what, _)| what.clone()));
                return Err(ServerError::Catalog(format!(
                    "strict: the database is looser than the policy ({} problem(s)): {}; run `pgcloak check --database` for the DDL",
                    missing.len(),
                    missing.join("; ")
                )));
            }
        }
        // A wrong catalog password would otherwise surface only as refused statements.
        if shared
            .catalog
            .as_ref()
            .is_some_and(|c| c.protects_anything())
        {
            let login = crate::observe::admin::test_catalog_login(&shared.config).await;
            if let Err(e) = &login {
                warn!(target: "pgcloak::catalog", error = %e, "the catalog login fails: statements on protected columns are refused until it works; check catalog.user and its password variable (docs/troubleshooting.md)");
            }
            shared.health.set_catalog_login(login.is_ok());
        }
        // ---- operations: metrics, audit, admin listener ----
        // (bound before the client listener: whoever sees the client port accept can
        // query the admin endpoint at once)
        crate::observe::init(&shared.config).map_err(ServerError::Policy)?;
        let admin =
            match &shared.config.admin {
                Some(a) => Some(TcpListener::bind(&a.listen).await.map_err(|source| {
                    ServerError::Bind {
                        addr: a.listen.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        // ---- end of operations ----
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
            shared,
            admin,
            #[cfg(unix)]
            hup,
        })
    }

    /// The admin listener's address, if one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` fires, then drains.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        // ---- operations: admin endpoint and live reload run until the process ends ----
        let ops_stop = CancellationToken::new();
        if let Some(admin) = self.admin.take() {
            let listen = admin
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            info!(target: "pgcloak::admin", listen = %listen, "admin endpoint listening");
            tokio::spawn(crate::observe::admin::serve(
                admin,
                self.shared.clone(),
                ops_stop.clone(),
            ));
        }
        tokio::spawn(crate::observe::reload::watch(
            self.shared.clone(),
            ops_stop.clone(),
            #[cfg(unix)]
            self.hup.take(),
        ));
        // Cut-overs of `pgcloak encrypt`/`decrypt`/`reencrypt` are followed at once
        // (catalog::follow): the schema is re-read, policy and keyring reloaded.
        if let Some(catalog) = &self.shared.catalog {
            let shared = self.shared.clone();
            let hook: crate::catalog::follow::CutoverHook = Arc::new(move |_db: &str| {
                let _ = crate::observe::reload::reload_now(&shared, "cutover");
            });
            tokio::spawn(crate::catalog::follow::follow(
                catalog.clone(),
                hook,
                ops_stop.clone(),
            ));
        }
        let _ops_guard = ops_stop.drop_guard();
        // ---- end of operations ----
        let mut backoff = Duration::from_millis(5);
        let listen = self
            .local_addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        info!(target: LOG, listen = %listen, upstream = %self.shared.config.upstream.display_addr(), "pgcloak listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        backoff = Duration::from_millis(5);
                        let shared = self.shared.clone();
                        tracker.spawn(crate::observe::scope(peer, crate::session::run(tcp, peer, shared)));
                    }
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        error!(target: LOG, error = %e, "accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
        drop(self.listener);
        self.shared.health.set_draining();
        tracker.close();
        let open = tracker.len();
        let timeout = Duration::from_secs(self.shared.config.shutdown_timeout_secs);
        info!(target: LOG, open_sessions = open, timeout_secs = timeout.as_secs(), "shutting down: draining sessions");
        if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
            warn!(target: LOG, open_sessions = tracker.len(), "drain timeout reached: closing remaining sessions");
            self.shared.force_close.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        info!(target: LOG, "pgcloak stopped");
    }
}

/// The longest a cancel may take to reach upstream; the session's frontend is held
/// meanwhile, so this bounds that hold too.
const CANCEL_DELIVERY_LIMIT: Duration = Duration::from_secs(5);

/// Sends a client's CancelRequest to the upstream backend of the session it names, if
/// the batch that was running when it arrived is still running when it is sent.
/// As PostgreSQL does, nothing is ever answered to the requester.
pub async fn forward_cancel(shared: &Shared, pid: i32, secret: &[u8]) {
    // ---- operations: a session owned by a peer instance ----
    if let Some(owner) = CancelMap::instance_of(secret) {
        if owner != shared.config.instance_id {
            if let Some(addr) = shared.config.peers.get(&owner) {
                forward_cancel_to_peer(addr, owner, pid, secret).await;
                return;
            }
        }
    }
    // ---- end of operations ----
    let Some((key, gate)) = shared.cancel.lookup(pid, secret) else {
        debug!(target: LOG, "cancel request for no known session");
        return;
    };
    // Nothing running: drop it (PostgreSQL ignores a cancel for an idle backend too).
    let Some(delivery) = gate.begin_delivery() else {
        debug!(target: LOG, "cancel request while no statement runs: dropped");
        return;
    };
    let deliver = async {
        let mut up =
            match connect_upstream(&shared.config.upstream, shared.upstream_tls.as_ref()).await {
                Ok(up) => up,
                Err(e) => {
                    warn!(target: LOG, error = %e, "could not forward cancel request");
                    return;
                }
            };
        // The connection took time: the statement may have finished meanwhile. The
        // session's next statement is held back until we are done, so it cannot be hit.
        if !delivery.still_running() {
            debug!(target: LOG, "statement finished before the cancel could be sent: dropped");
            return;
        }
        let _ = up.write_all(&cancel_request(key.pid, &key.secret)).await;
        let _ = up.flush().await;
        // Upstream closes once it has signalled the backend: only then may the session's
        // next statement go out.
        let mut sink = [0u8; 64];
        let _ = tokio::io::AsyncReadExt::read(&mut up, &mut sink).await;
        debug!(target: LOG, "cancel request forwarded");
    };
    if tokio::time::timeout(CANCEL_DELIVERY_LIMIT, deliver)
        .await
        .is_err()
    {
        warn!(target: LOG, "timed out forwarding a cancel request");
    }
    drop(delivery);
}

/// Passes a CancelRequest on, unchanged, to the peer instance that owns the session.
async fn forward_cancel_to_peer(addr: &str, owner: u8, pid: i32, secret: &[u8]) {
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(mut peer)) => {
            let _ = peer.write_all(&cancel_request(pid, secret)).await;
            let _ = peer.flush().await;
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut peer, &mut sink),
            )
            .await;
            debug!(target: LOG, peer = owner, "cancel request forwarded to peer instance");
        }
        Ok(Err(e)) => {
            warn!(target: LOG, peer = owner, error = %e, "could not forward cancel request to peer")
        }
        Err(_) => warn!(target: LOG, peer = owner, "timed out forwarding cancel request to peer"),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
