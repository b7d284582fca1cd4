//! Session setup for the data path: the session's schema snapshot, roles and
//! search_path, and the handlers that run the data path in both pumps.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::datapath::{CatalogUpdates, DataPath, DataPathError, SessionSchema};
use crate::net::UpstreamStream;
use crate::policy::RoleName;
use crate::wire::{PgError, Tag};

use super::relay::{Flow, MessageHandler};
use super::shared::Shared;
use super::{Identity, SessionError};

/// One session's data path and the small, explicit state its tasks share: the
/// frontend and backend pumps share the [`DataPath`] (its protocol state links what
/// the client sent to what upstream answers); the refresh task only hands catalog
/// facts over through [`CatalogUpdates`] and is woken by `catalog_changed`.
#[derive(Clone)]
pub struct SessionDataPath {
    dp: Arc<Mutex<DataPath>>,
    updates: Arc<CatalogUpdates>,
    catalog_changed: Arc<tokio::sync::Notify>,
    path_reads: tokio::sync::watch::Receiver<u32>,
}

impl SessionDataPath {
    fn new(dp: DataPath) -> SessionDataPath {
        SessionDataPath {
            updates: dp.catalog_updates(),
            catalog_changed: dp.catalog_changed(),
            path_reads: dp.path_reads(),
            dp: Arc::new(Mutex::new(dp)),
        }
    }
}

/// Builds the session's data path, or None when no policy is configured.
pub async fn setup(
    shared: &Shared,
    identity: &Identity,
    parameters: &[(String, String)],
    upstream: &mut UpstreamStream,
) -> Result<Option<SessionDataPath>, SessionError> {
    let (Some(protection), Some(catalog)) = (&shared.protection, &shared.catalog) else {
        return Ok(None);
    };
    let refuse = |what: &str, e: &dyn std::fmt::Display| {
        SessionError::Refused(PgError::fatal(
            "58000",
            format!(
                "pgcloak cannot {what} for database \"{}\": {e}",
                identity.database
            ),
        ))
    };
    let schema = catalog
        .snapshot(&identity.database)
        .await
        .map_err(|e| refuse("read the schema", &e))?;
    // Rights come only from authentication; an unverified session is PUBLIC.
    let roles: Vec<RoleName> = if identity.authenticated {
        catalog
            .session_roles(&identity.database, &RoleName(identity.role.clone()))
            .await
            .map_err(|e| refuse("read role memberships", &e))?
            .to_vec()
    } else {
        Vec::new()
    };
    // What PostgreSQL lets the login role touch: privileges hold for the real role
    // whether or not pgcloak verified it.
    let reach = catalog
        .session_reach(&identity.database, &RoleName(identity.role.clone()))
        .await
        .map_err(|e| refuse("read what the session's roles can reach", &e))?;
    check_keyring_on_first_use(shared, &identity.database);
    let mut codec = crate::codec::SessionContext::default();
    for (name, value) in parameters {
        let _ = codec.update(name, value);
    }
    let prot = protection.load_full();
    let schema = shared_schema(shared, &identity.database, schema, &prot);
    let mut dp = DataPath::new(protection.clone(), schema, roles, codec, Vec::new());
    dp.set_reach(reach);
    // The session's effective search_path (startup options, per-role and per-database
    // settings, `$user`) is read on its own connection, pipelined: written now, its
    // reply consumed by the backend pump, the first statement held until it is in.
    let mut first_read = BytesMut::new();
    dp.read_search_path_at_start(&mut first_read);
    upstream.write_all(&first_read).await?;
    upstream.flush().await?;
    Ok(Some(SessionDataPath::new(dp)))
}

/// Keeps a session's view of the catalog current: on the catalog TTL, after DDL or a
/// GRANT went through the session, and after a policy reload. Never returns; it runs
/// beside the session's two pumps and ends with them. A failed refresh keeps the last
/// view (statements on columns it cannot resolve are refused by the data path).
pub async fn refresh_loop(shared: &Shared, identity: &Identity, dp: SessionDataPath) {
    let (Some(protection), Some(catalog)) = (&shared.protection, &shared.catalog) else {
        return std::future::pending().await;
    };
    let ttl = std::time::Duration::from_secs(
        shared
            .config
            .catalog
            .as_ref()
            .map(|c| c.refresh_secs)
            .unwrap_or(30)
            .max(1),
    );
    let changed = dp.catalog_changed;
    let updates = dp.updates;
    let mut reloads = catalog.reloads();
    let mut generation = protection.load().generation();
    let mut next = tokio::time::Instant::now() + ttl;
    // Sleeps until DDL/GRANT went through the session, a reload, or the TTL: no
    // periodic wakeup (1,000 idle sessions cost no timer work between refreshes).
    loop {
        let (ddl, reload) = tokio::select! {
            _ = changed.notified() => (true, false),
            r = reloads.changed() => {
                if r.is_err() {
                    // The cache is gone: the process is shutting down.
                    return std::future::pending().await;
                }
                (false, true)
            }
            _ = tokio::time::sleep_until(next) => (false, false),
        };
        let reloaded = reload || protection.load().generation() != generation;
        if !(ddl || reloaded || tokio::time::Instant::now() >= next) {
            continue;
        }
        if ddl {
            catalog.invalidate(&identity.database);
            catalog.invalidate_roles();
        }
        let prot = protection.load_full();
        generation = prot.generation();
        next = tokio::time::Instant::now() + ttl;
        if let Ok(snapshot) = catalog.snapshot(&identity.database).await {
            let schema = shared_schema(shared, &identity.database, snapshot, &prot);
            updates.schema(schema);
        }
        if let Ok(reach) = catalog
            .session_reach(&identity.database, &RoleName(identity.role.clone()))
            .await
        {
            updates.reach(reach);
        }
        if identity.authenticated {
            if let Ok(roles) = catalog
                .session_roles(&identity.database, &RoleName(identity.role.clone()))
                .await
            {
                updates.roles(roles.to_vec());
            }
        }
    }
}

/// The keyring check of `check --database` for a database that `catalog.databases` does
/// not list, the first time a session uses it under the current policy generation: a
/// sample of its stored envelopes is tried against the keyring, in a task of its own on a
/// short-lived connection, and a keyring that does not open them is logged at ERROR with
/// the fix. Databases listed in `catalog.databases` were checked at startup.
fn check_keyring_on_first_use(shared: &Shared, db: &str) {
    let (Some(protection), Some(catalog)) = (&shared.protection, &shared.config.catalog) else {
        return;
    };
    if catalog.databases.iter().any(|d| d == db) {
        return;
    }
    let prot = protection.load_full();
    if prot.policy.columns().is_empty() {
        return;
    }
    {
        let mut seen = shared
            .keyring_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !seen.insert((db.to_string(), prot.generation())) {
            return;
        }
    }
    let (upstream, catalog, db) = (
        shared.upstream.config.clone(),
        catalog.clone(),
        db.to_string(),
    );
    tokio::spawn(async move {
        let found = crate::catalog::adoption_checks::check_database(
            &upstream,
            &catalog,
            &prot.policy,
            &prot.suite,
            &db,
        )
        .await;
        for problem in &found.errors {
            tracing::error!(target: "pgcloak::crypto", problem = %problem, "the keyring does not open the stored data");
        }
    });
}

/// One [`SessionSchema`] per database and catalog snapshot, shared by its
/// sessions so that they share analysis-cache entries too.
fn shared_schema(
    shared: &Shared,
    database: &str,
    snapshot: Arc<crate::catalog::SchemaSnapshot>,
    prot: &crate::datapath::Protection,
) -> Arc<SessionSchema> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut map = shared.schemas.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = map.get(database) {
        if Arc::ptr_eq(s.snapshot(), &snapshot) && s.policy_generation() == prot.generation() {
            return s.clone();
        }
    }
    let s = Arc::new(SessionSchema::new(
        snapshot,
        prot,
        NEXT.fetch_add(1, Ordering::Relaxed),
    ));
    map.insert(database.to_string(), s.clone());
    s
}

/// The frontend pump's handler when the data path is on.
pub struct FrontendData {
    dp: Arc<Mutex<DataPath>>,
    /// Outstanding search_path reads: a statement waits for them (see [`MessageHandler::gate`]).
    path_reads: tokio::sync::watch::Receiver<u32>,
}

impl FrontendData {
    pub fn new(dp: SessionDataPath) -> FrontendData {
        FrontendData {
            dp: dp.dp,
            path_reads: dp.path_reads,
        }
    }
}

impl MessageHandler for FrontendData {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        let mut dp = self.dp.lock().unwrap_or_else(|p| p.into_inner());
        dp.sink().cycle_begin();
        let r = dp.on_client(msg, out).map_err(SessionError::from);
        if dp.sink().is_urgent() {
            crate::observe::record(dp.sink());
        }
        r
    }

    fn gate(&self, msg: &[u8]) -> Option<tokio::sync::watch::Receiver<u32>> {
        // Only statement texts depend on how names resolve.
        if !matches!(msg.first().map(|&b| Tag(b)), Some(Tag::QUERY | Tag::PARSE))
            || *self.path_reads.borrow() == 0
        {
            return None;
        }
        Some(self.path_reads.clone())
    }
}

/// The backend pump's handler when the data path is on.
pub struct BackendData(pub SessionDataPath);

impl MessageHandler for BackendData {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        let mut dp = self.0.dp.lock().unwrap_or_else(|p| p.into_inner());
        let r = dp.on_backend(msg, out).map_err(SessionError::from);
        if msg[0] == Tag::READY_FOR_QUERY.byte() {
            // The end of a statement cycle: its latency, counts and events.
            crate::observe::cycle_end(dp.sink());
        } else if dp.sink().is_urgent() {
            crate::observe::record(dp.sink());
        }
        r
    }
}

impl SessionDataPath {
    /// Records what the data path still holds (the session is ending).
    pub fn record_pending(&self) {
        let dp = self.dp.lock().unwrap_or_else(|p| p.into_inner());
        crate::observe::record(dp.sink());
    }
}

/// What is left of a data-path error at the session edge ends the session: the
/// data path turns every error about a statement or a value into an ErrorResponse
/// itself ([`DataPath::on_client`], [`DataPath::on_backend`]); what reaches here
/// is a message pgcloak could not frame or decode (protocol desync).
impl From<DataPathError> for SessionError {
    fn from(e: DataPathError) -> SessionError {
        SessionError::Refused(PgError::fatal(e.sqlstate(), e.to_string()))
    }
}
