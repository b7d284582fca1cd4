//! [`CatalogCache`]: the latest schema snapshot per database and the role set per login,
//! shared by all sessions.
//!
//! Reads are lock-free (arc-swap). A snapshot is reused while it is younger than
//! `refresh_secs`, was resolved against the current policy generation, and its database
//! was not invalidated since its load began; otherwise the next caller re-reads the catalog
//! (one load per database at a time; concurrent callers wait for it). Invalidation bumps
//! an epoch, so a load that started before the DDL it must reflect is never taken as fresh.
//!
//! Catalog connections are opened lazily, one per database, and closed
//! [`CATALOG_IDLE_CLOSE`] after their last read, so they never keep a database from being
//! dropped or renamed; most sessions find a fresh snapshot and open none. When
//! a refresh fails, the caller gets the error and must refuse statements that touch policy
//! columns (fail closed); the stale snapshot is not served.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use lru::LruCache;
use zeroize::Zeroizing;

use crate::net::UpstreamConfig;
use crate::policy::{Policy, RoleName};

use super::config::CatalogConfig;
use super::connect::CatalogConn;
use super::constraints::MissingConstraint;
use super::error::CatalogError;
use super::schema::SchemaSnapshot;

/// Runs `$call` on `$db`'s connection; if it fails because the connection was lost
/// (server restart, idle timeout, terminated backend), reconnects and tries once more.
/// A macro rather than a closure-taking method, so the futures stay `Send`.
macro_rules! retry_once_if_lost {
    ($cache:expr, $db:expr, $conn:ident => $call:expr) => {{
        let mut retried = false;
        // Arms the idle close however this ends, a dropped (cancelled) caller included.
        let _release = ReleaseOnDrop {
            cache: &$cache,
            db: &$db,
        };
        loop {
            let $conn = $cache.connection(&$db).await?;
            match tokio::time::timeout(CATALOG_CALL_TIMEOUT, $call).await {
                Err(_elapsed) => {
                    // An unresponsive server or a black-holed connection: drop it, so the
                    // next call starts afresh, and refuse rather than wait forever.
                    $cache.forget_connection(&$db, &$conn).await;
                    break Err(CatalogError::Query {
                        database: $db.name.clone(),
                        what: "catalog read",
                        reason: format!("no answer within {CATALOG_CALL_TIMEOUT:?}"),
                    });
                }
                Ok(Err(_)) if !retried && $conn.is_closed() => {
                    $cache.forget_connection(&$db, &$conn).await;
                    retried = true;
                }
                Ok(result) => break result,
            }
        }
    }};
}

/// Arms a database's idle-close timer when dropped (see [`CatalogCache::release`]).
struct ReleaseOnDrop<'a> {
    cache: &'a CatalogCache,
    db: &'a Arc<Database>,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.cache.release(self.db);
    }
}

/// How long a catalog connection stays open after its last read. Short, so that an idle
/// one never stands in the way of `DROP DATABASE`, `ALTER DATABASE ... RENAME` or
/// `CREATE DATABASE ... TEMPLATE` (PostgreSQL waits up to 5 s for other sessions to
/// leave a database before it refuses with 55006); long enough that the reads of one
/// session setup (schema, then role memberships) share one connection.
pub const CATALOG_IDLE_CLOSE: Duration = Duration::from_millis(250);

/// The longest one catalog read may take (the server's statement_timeout is the same, so
/// this only fires when the server or the network stops answering).
const CATALOG_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many logins' role sets are kept.
const ROLE_CACHE_ENTRIES: usize = 10_000;

struct Cached {
    snapshot: Arc<SchemaSnapshot>,
    epoch: u64,
    at: Instant,
}

/// One database: its connection, its latest snapshot, its invalidation epoch.
struct Database {
    name: String,
    conn: tokio::sync::Mutex<Option<Arc<CatalogConn>>>,
    latest: ArcSwapOption<Cached>,
    epoch: AtomicU64,
    loading: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
    /// Bumped on each use of the connection; an idle-close timer closes the connection
    /// only if no use came after the one that armed it.
    uses: AtomicU64,
}

struct RoleEntry {
    roles: Arc<[RoleName]>,
    at: Instant,
}

/// A login's [`crate::sql::SessionReach`] in one database, valid for the snapshot it was
/// computed against (a newer snapshot means new relations or functions may reach).
struct ReachEntry {
    reach: crate::sql::SessionReach,
    at: Instant,
    snapshot: std::sync::Weak<SchemaSnapshot>,
}

/// Schema snapshots per database and role sets per login, refreshed on a TTL, on
/// [`CatalogCache::invalidate`] and on [`CatalogCache::reload`].
pub struct CatalogCache {
    upstream: UpstreamConfig,
    config: CatalogConfig,
    password: Option<Zeroizing<String>>,
    ttl: Duration,
    policy: ArcSwap<Policy>,
    databases: Mutex<HashMap<String, Arc<Database>>>,
    roles: Mutex<LruCache<RoleName, RoleEntry>>,
    reach: Mutex<LruCache<(String, RoleName), ReachEntry>>,
    started: Instant,
    /// The policy generation of the latest [`CatalogCache::reload`]: sessions' refresh
    /// tasks wait on it instead of polling.
    reloaded: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for CatalogCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogCache")
            .field("upstream", &self.upstream.display_addr())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CatalogCache {
    /// Builds the cache; reads the password (`password_env` or `password`) now, so a
    /// missing variable is a startup error. Opens no connection yet.
    pub fn new(
        upstream: UpstreamConfig,
        config: CatalogConfig,
        policy: Arc<Policy>,
    ) -> Result<CatalogCache, CatalogError> {
        Self::with_env(upstream, config, policy, |k| std::env::var(k).ok())
    }

    /// [`CatalogCache::new`] with environment lookups through `env` (for tests).
    pub fn with_env(
        upstream: UpstreamConfig,
        config: CatalogConfig,
        policy: Arc<Policy>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<CatalogCache, CatalogError> {
        config.validate()?;
        let password = config.resolve_password(env)?.map(Zeroizing::new);
        let ttl = Duration::from_secs(config.refresh_secs);
        let reloaded = tokio::sync::watch::Sender::new(policy.generation());
        let entries = NonZeroUsize::new(ROLE_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        Ok(CatalogCache {
            upstream,
            config,
            password,
            ttl,
            policy: ArcSwap::new(policy),
            databases: Mutex::new(HashMap::new()),
            roles: Mutex::new(LruCache::new(entries)),
            reach: Mutex::new(LruCache::new(entries)),
            started: Instant::now(),
            reloaded,
        })
    }

    /// The policy generation snapshots are resolved against.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The schema snapshot of `database` for the current policy, re-read if stale.
    /// The snapshot's [`SchemaSnapshot::policy_generation`] says which policy its
    /// `ColumnRef`s belong to.
    pub async fn snapshot(&self, database: &str) -> Result<Arc<SchemaSnapshot>, CatalogError> {
        if let Some(empty) = self.nothing_protected(database) {
            return Ok(empty);
        }
        let db = self.database(database);
        if let Some(s) = self.fresh(&db) {
            return Ok(s);
        }
        let _loading = db.loading.lock().await;
        if let Some(s) = self.fresh(&db) {
            return Ok(s);
        }
        // A policy reload during the load makes the result stale at once: load again
        // (bounded), so callers get a snapshot of the policy that is current.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let epoch = db.epoch.load(Ordering::SeqCst);
            let policy = self.policy.load_full();
            let started = Instant::now();
            let snapshot =
                Arc::new(retry_once_if_lost!(self, db, conn => conn.load_snapshot(&policy))?);
            db.latest.store(Some(Arc::new(Cached {
                snapshot: snapshot.clone(),
                epoch,
                at: started,
            })));
            if attempts >= 3 || self.policy.load().generation() == policy.generation() {
                return Ok(snapshot);
            }
        }
    }

    /// Forgets `database`'s snapshot: the next [`CatalogCache::snapshot`] re-reads the
    /// catalog. Call it after relaying DDL (and again when its transaction commits).
    pub fn invalidate(&self, database: &str) {
        let db = self.lock_databases().get(database).cloned();
        if let Some(db) = db {
            db.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Forgets every login's cached role set (after relaying GRANT, REVOKE, ALTER ROLE...).
    pub fn invalidate_roles(&self) {
        self.lock_roles().clear();
        self.lock_reach().clear();
    }

    /// Swaps in a new policy generation; every database is re-resolved on next use.
    pub fn reload(&self, policy: Arc<Policy>) {
        let generation = policy.generation();
        self.policy.store(policy);
        self.reloaded.send_replace(generation);
    }

    /// Changes with every [`CatalogCache::reload`] (after the new protection generation is
    /// in force): what a session's refresh task waits on.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// The login role plus the roles it can use (see `roles.rs`), cached per login for
    /// `refresh_secs`. `database` only picks the catalog connection (roles are cluster-wide).
    pub async fn session_roles(
        &self,
        database: &str,
        login: &RoleName,
    ) -> Result<Arc<[RoleName]>, CatalogError> {
        if self.nothing_protected(database).is_some() {
            // No column's access depends on a role.
            return Ok(Arc::from([login.clone()]));
        }
        if let Some(e) = self.lock_roles().get(login) {
            if e.at.elapsed() < self.ttl {
                return Ok(e.roles.clone());
            }
        }
        let db = self.database(database);
        let roles: Arc<[RoleName]> =
            retry_once_if_lost!(self, db, conn => conn.session_roles(login))?.into();
        self.lock_roles().put(
            login.clone(),
            RoleEntry {
                roles: roles.clone(),
                at: Instant::now(),
            },
        );
        Ok(roles)
    }

    /// What the login role (with every role it can become) can reach in `database`
    /// (see `session_reach.rs`). Cached per database and login for `refresh_secs`, forgotten
    /// by [`CatalogCache::invalidate_roles`] and whenever the database's snapshot changes.
    pub async fn session_reach(
        &self,
        database: &str,
        login: &RoleName,
    ) -> Result<crate::sql::SessionReach, CatalogError> {
        if self.nothing_protected(database).is_some() {
            return Ok(crate::sql::SessionReach::default());
        }
        let snapshot = self.snapshot(database).await?;
        let key = (database.to_string(), login.clone());
        if let Some(e) = self.lock_reach().get(&key) {
            let same = e
                .snapshot
                .upgrade()
                .is_some_and(|s| Arc::ptr_eq(&s, &snapshot));
            if same && e.at.elapsed() < self.ttl {
                return Ok(e.reach);
            }
        }
        let db = self.database(database);
        let reach = retry_once_if_lost!(self, db, conn => conn.session_reach(&snapshot, login))?;
        self.lock_reach().put(
            key,
            ReachEntry {
                reach,
                at: Instant::now(),
                snapshot: Arc::downgrade(&snapshot),
            },
        );
        Ok(reach)
    }

    /// Resolves the policy in every database listed in `catalog.databases`; Err lists every
    /// column that does not resolve, in every database (the startup check).
    pub async fn resolve_configured(&self) -> Result<(), Vec<CatalogError>> {
        let mut problems = Vec::new();
        for name in self.config.databases.clone() {
            match self.snapshot(&name).await {
                Ok(s) => problems.extend(s.problems().into_iter().cloned()),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The policy columns of `database` lacking a valid envelope CHECK constraint.
    pub async fn check_constraints(
        &self,
        database: &str,
    ) -> Result<Vec<MissingConstraint>, CatalogError> {
        if self.nothing_protected(database).is_some() {
            return Ok(Vec::new());
        }
        let db = self.database(database);
        let policy = self.policy.load_full();
        retry_once_if_lost!(self, db, conn => conn.check_constraints(&policy))
    }

    /// Compares `database` with the policy: privileges, statistics and built-ins (see
    /// `guard.rs`), against a freshly read snapshot.
    pub async fn guard_check(
        &self,
        database: &str,
    ) -> Result<super::guard::GuardReport, CatalogError> {
        if self.nothing_protected(database).is_some() {
            return Ok(Default::default());
        }
        self.invalidate(database);
        let snapshot = self.snapshot(database).await?;
        let policy = self.policy.load_full();
        let db = self.database(database);
        retry_once_if_lost!(self, db, conn => conn.guard_check(&policy, &snapshot))
    }

    fn fresh(&self, db: &Database) -> Option<Arc<SchemaSnapshot>> {
        let cached = db.latest.load_full()?;
        let fresh = cached.epoch == db.epoch.load(Ordering::SeqCst)
            && cached.snapshot.policy_generation() == self.policy.load().generation()
            && cached.at.elapsed() < self.ttl;
        fresh.then(|| cached.snapshot.clone())
    }

    /// The entry for `name`, created on first use; beyond `max_databases` the least
    /// recently used one is dropped (its connection closes when no caller holds it).
    fn database(&self, name: &str) -> Arc<Database> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut map = self.lock_databases();
        if let Some(db) = map.get(name) {
            db.last_used.store(now, Ordering::Relaxed);
            return db.clone();
        }
        while map.len() >= self.config.max_databases {
            let oldest = map
                .iter()
                .min_by_key(|(_, d)| d.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
        let db = Arc::new(Database {
            name: name.to_string(),
            conn: tokio::sync::Mutex::new(None),
            latest: ArcSwapOption::empty(),
            epoch: AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(now),
            uses: AtomicU64::new(0),
        });
        map.insert(name.to_string(), db.clone());
        db
    }

    async fn connection(&self, db: &Database) -> Result<Arc<CatalogConn>, CatalogError> {
        db.uses.fetch_add(1, Ordering::SeqCst);
        let mut slot = db.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let password = self.password.as_ref().map(|p| p.as_str());
        let conn =
            Arc::new(CatalogConn::connect(&self.upstream, &self.config, password, &db.name).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Arms the idle-close timer after a read: the connection closes
    /// [`CATALOG_IDLE_CLOSE`] after its last use, unless it is in use again by then.
    fn release(&self, db: &Arc<Database>) {
        let armed = db.uses.load(Ordering::SeqCst);
        let db = db.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(CATALOG_IDLE_CLOSE).await;
            let mut slot = db.conn.lock().await;
            if db.uses.load(Ordering::SeqCst) != armed {
                return;
            }
            // Held by a caller still reading: that caller's own release closes it later.
            if slot.as_ref().is_some_and(|c| Arc::strong_count(c) == 1) {
                *slot = None;
            }
        });
    }

    /// Whether `database` has a catalog connection open now (for tests and /readyz).
    pub async fn has_open_connection(&self, database: &str) -> bool {
        let db = self.lock_databases().get(database).cloned();
        match db {
            Some(db) => db
                .conn
                .lock()
                .await
                .as_ref()
                .is_some_and(|c| !c.is_closed()),
            None => false,
        }
    }

    async fn forget_connection(&self, db: &Database, conn: &Arc<CatalogConn>) {
        let mut slot = db.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    // ---- cut-over follower and empty policies (follow.rs) ----

    /// With a policy that protects no column (`tables: {}`), there is nothing to resolve:
    /// an empty snapshot of `database`, and no catalog login at all.
    fn nothing_protected(&self, database: &str) -> Option<Arc<SchemaSnapshot>> {
        let policy = self.policy.load();
        policy.columns().is_empty().then(|| {
            Arc::new(SchemaSnapshot::new(
                database.to_string(),
                &policy,
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ))
        })
    }

    /// Whether the current policy protects any column (else no catalog login is needed).
    pub fn protects_anything(&self) -> bool {
        !self.policy.load().columns().is_empty()
    }

    /// Forgets every database's snapshot (the follower lost its LISTEN connection and
    /// may have missed a cut-over).
    pub fn invalidate_all(&self) {
        for db in self.lock_databases().values() {
            db.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The catalog config this cache was built with.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    /// Opens the follower's connection to `catalog.maintenance_database`, forwarding its
    /// NOTIFY payloads on `notices`.
    pub(super) async fn connect_follower(
        &self,
        notices: tokio::sync::mpsc::Sender<String>,
    ) -> Result<CatalogConn, CatalogError> {
        let password = self.password.as_ref().map(|p| p.as_str());
        CatalogConn::connect_notified(
            &self.upstream,
            &self.config,
            password,
            &self.config.maintenance_database,
            notices,
        )
        .await
    }

    // ---- end of follower hooks ----

    // A poisoned lock only means another thread panicked while holding it; the maps stay
    // consistent (every update is a single insert/remove), so keep going.
    fn lock_databases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Database>>> {
        self.databases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_reach(&self) -> std::sync::MutexGuard<'_, LruCache<(String, RoleName), ReachEntry>> {
        self.reach.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_roles(&self) -> std::sync::MutexGuard<'_, LruCache<RoleName, RoleEntry>> {
        self.roles.lock().unwrap_or_else(|p| p.into_inner())
    }
}
