//! The listener: accept loop, connection limit, startup checks and graceful shutdown.
//!
//! Each connection gets its own task (`session::run`) on one of the session workers
//! (`workers`: single-threaded runtimes, a session stays on one). On SIGTERM/SIGINT the listener
//! stops accepting, open sessions get `shutdown_timeout_secs` to finish, and then any
//! still open are closed with 57P01. The admin endpoint and live reload run beside it
//! with their own handles (`observe::admin::AdminState`, `observe::reload::Reloader`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::catalog::CatalogCache;
use crate::config::Config;
use crate::observe::admin::{AdminState, Health};
use crate::observe::reload::Reloader;
/// Re-exported for the modules that name it through the server.
pub use crate::session::{Shared, SharedError};
use crate::workers::Workers;

const LOG: &str = "pgcloak::session";

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Shared(#[from] SharedError),
    /// Metrics, audit or logging could not be set up.
    #[error("{0}")]
    Observe(String),
    #[error("catalog: {0}")]
    Catalog(String),
    #[error(transparent)]
    Workers(#[from] crate::workers::WorkersError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
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
    let prot = protection.load_full();
    let found = crate::catalog::adoption_checks::check_database(
        &shared.upstream.config,
        catalog,
        &prot.policy,
        &prot.suite,
        db,
    )
    .await;
    out.adoption.errors.extend(found.errors);
    out.adoption.warnings.extend(found.warnings);
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// Readiness inputs (draining, upstream reachability, catalog login).
    health: Arc<Health>,
    /// The admin HTTP listener (`admin.listen`), if configured.
    admin: Option<TcpListener>,
    /// Where sessions run.
    workers: Workers,
    /// The policy and keyring files' stamps from before they were loaded (reload baseline).
    loaded_stamps: Option<Vec<crate::observe::reload::Stamp>>,
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
        // Stamped before Shared::new reads them: a change from here on is reloaded, even one
        // made before the watcher first runs.
        let loaded_stamps = config
            .protection_sources()
            .map(|s| crate::observe::reload::stamps(&s.files()));
        let shared = Arc::new(Shared::new(config)?);
        check_at_start(&shared).await?;
        let health = Arc::new(Health::default());
        // A wrong catalog password would otherwise surface only as refused statements.
        if shared
            .catalog
            .as_ref()
            .is_some_and(|c| c.protects_anything())
        {
            let login = admin_state(&shared, health.clone())
                .test_catalog_login()
                .await;
            if let Err(e) = &login {
                warn!(target: "pgcloak::catalog", error = %e, "the catalog login fails: statements on protected columns are refused until it works; check catalog.user and its password variable (docs/troubleshooting.md)");
            }
            health.set_catalog_login(login.is_ok());
        }
        // Metrics, audit and the admin listener are set up before the client listener:
        // whoever sees the client port accept can query the admin endpoint at once.
        crate::observe::init(&shared.config).map_err(ServerError::Observe)?;
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
        let workers = Workers::start(match shared.config.workers {
            0 => crate::workers::default_count(),
            n => n,
        })?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            listener,
            shared,
            health,
            admin,
            workers,
            loaded_stamps,
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
        // The admin endpoint and live reload run until the process ends.
        let ops_stop = CancellationToken::new();
        self.spawn_operations(&ops_stop);
        let _ops_guard = ops_stop.drop_guard();
        self.accept_until(&shutdown, &tracker).await;
        drop(self.listener);
        self.health.set_draining();
        drain(&self.shared, &tracker).await;
    }

    /// Starts the admin endpoint (if configured) and the reload watcher.
    fn spawn_operations(&mut self, stop: &CancellationToken) {
        if let Some(admin) = self.admin.take() {
            let listen = admin
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            info!(target: "pgcloak::admin", listen = %listen, "admin endpoint listening");
            let state = admin_state(&self.shared, self.health.clone());
            tokio::spawn(crate::observe::admin::serve(
                admin,
                Arc::new(state),
                stop.clone(),
            ));
        }
        let reloader = Reloader {
            config: self.shared.config.clone(),
            protection: self.shared.protection.clone(),
            catalog: self.shared.catalog.clone(),
        };
        tokio::spawn(crate::observe::reload::watch(
            reloader,
            self.loaded_stamps.take(),
            stop.clone(),
            #[cfg(unix)]
            self.hup.take(),
        ));
        // Cut-overs of `pgcloak encrypt`/`decrypt`/`reencrypt` are followed at once
        // (catalog::follow): the schema is re-read, policy and keyring reloaded.
        if let Some(catalog) = &self.shared.catalog {
            let reloader = Arc::new(Reloader {
                config: self.shared.config.clone(),
                protection: self.shared.protection.clone(),
                catalog: self.shared.catalog.clone(),
            });
            let hook: crate::catalog::follow::CutoverHook = Arc::new(move |_db: &str| {
                let _ = crate::observe::reload::reload_now(&reloader, "cutover");
            });
            tokio::spawn(crate::catalog::follow::follow(
                catalog.clone(),
                hook,
                stop.clone(),
            ));
        }
    }

    /// The accept loop: one task per connection until `shutdown` fires.
    async fn accept_until(&self, shutdown: &CancellationToken, tracker: &TaskTracker) {
        let mut backoff = Duration::from_millis(5);
        let listen = self
            .local_addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        info!(target: LOG, listen = %listen, upstream = %self.shared.upstream.config.display_addr(), workers = self.workers.len(), "pgcloak listening");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        backoff = Duration::from_millis(5);
                        self.workers.spawn_session(tracker, tcp, peer, self.shared.clone());
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
    }
}

/// The admin endpoint's view of the running proxy.
fn admin_state(shared: &Shared, health: Arc<Health>) -> AdminState {
    let policy_configured = shared.config.policy.is_some();
    AdminState {
        health,
        upstream: shared.upstream.config.clone(),
        // A policy that protects no column (`tables: {}`) needs no catalog login.
        catalog: shared.config.catalog.clone().filter(|_| {
            policy_configured
                && shared
                    .catalog
                    .as_ref()
                    .is_some_and(|c| c.protects_anything())
        }),
        policy_configured,
        protection: shared.protection.clone(),
    }
}

/// Gives open sessions `shutdown_timeout_secs` to finish, then closes the rest.
async fn drain(shared: &Shared, tracker: &TaskTracker) {
    tracker.close();
    let open = tracker.len();
    let timeout = Duration::from_secs(shared.config.shutdown_timeout_secs);
    info!(target: LOG, open_sessions = open, timeout_secs = timeout.as_secs(), "shutting down: draining sessions");
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        warn!(target: LOG, open_sessions = tracker.len(), "drain timeout reached: closing remaining sessions");
        shared.force_close.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    info!(target: LOG, "pgcloak stopped");
}

/// A policy column that does not resolve in a configured database is a startup error;
/// a database looser than the policy (a missing envelope CHECK constraint, privileges,
/// statistics, built-ins) is a warning (an error with `strict`).
async fn check_at_start(shared: &Shared) -> Result<(), ServerError> {
    let databases = shared
        .config
        .catalog
        .as_ref()
        .map(|c| c.databases.clone())
        .unwrap_or_default();
    if shared.protection.is_none() || databases.is_empty() {
        return Ok(());
    }
    let found = check_databases(shared, &databases).await;
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
    Ok(())
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
