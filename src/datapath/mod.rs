//! The data path: encrypt on the way in, decrypt or withhold on the way out.
//!
//! [`DataPath`] is one session's protocol state: its prepared statements and
//! portals, the queue of what upstream will answer next, its codec context
//! and its roles. The frontend half ([`DataPath::on_frontend`]) analyses and
//! rewrites client messages; the backend half ([`DataPath::on_backend`])
//! rewrites result descriptions and rows. Both are pure functions of the
//! state and one message, with no I/O, so they are tested without sockets.
//!
//! It must never forward a statement that touches a protected column without
//! understanding it, never send plaintext of a protected column upstream, and
//! never hand ciphertext to a client as if it were the value.

mod array;
mod backend;
mod copy;
pub mod egress;
mod error;
mod frontend;
mod insider;
mod meaning;
mod recover;
mod resolution;
mod schema;
mod state;
mod values;

use state::{Expect, ProtocolState, SimpleStatement};

pub use schema::SessionSchema;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Re-exported from [`crate::protection`], where observability can name it too.
pub use crate::protection::Protection;
pub use error::DataPathError;

use crate::codec::SessionContext;
use crate::policy::RoleName;
use crate::sql::{CopyPlan, ResultShape, SessionReach, StatementPlan};

/// What the session knows about a prepared statement (from its Parse).
#[derive(Clone)]
struct Prepared {
    /// The generation the plan was made under: its [`ColumnRef`](crate::policy::ColumnRef)s
    /// index this policy, and a newer generation re-analyses the text at Bind.
    prot: Arc<Protection>,
    /// None: the fast path proved the statement cannot touch a protected column.
    plan: Option<Arc<StatementPlan>>,
    /// The client's statement text (decoded) and parameter types, for re-analysis.
    sql: Arc<str>,
    param_types: Arc<[u32]>,
}

/// What the session knows about a bound portal.
#[derive(Clone)]
struct Portal {
    transform: Option<Arc<ResultTransform>>,
    copy: Option<CopyStream>,
}

/// A COPY plan with the protection generation whose column references it holds.
#[derive(Clone)]
pub(crate) struct CopyStream {
    pub(crate) plan: Arc<CopyPlan>,
    pub(crate) prot: Arc<Protection>,
}

/// How to rewrite one result set: per result column, what to do.
#[derive(Clone)]
pub(crate) struct ResultTransform {
    shape: ResultShape,
    /// The formats the client asked for, per result column (extended protocol).
    client_formats: Option<Vec<i16>>,
    /// The generation `shape`'s column references index: a reload between the
    /// analysis and the rows never makes them point at another column.
    prot: Arc<Protection>,
}

/// Per-session data-path state.
pub struct DataPath {
    /// Woken when DDL or a GRANT passes through, so the session refreshes its catalog view.
    catalog_changed: Arc<tokio::sync::Notify>,
    protection: Arc<ArcSwap<Protection>>,
    schema: Arc<SessionSchema>,
    roles: Vec<RoleName>,
    codec: SessionContext,
    search_path: Vec<String>,
    statements: HashMap<String, Prepared>,
    portals: HashMap<String, Portal>,
    /// SQL-level `PREPARE name AS ...` plans, for `EXECUTE name(...)`.
    sql_prepared: HashMap<String, Box<StatementPlan>>,
    /// SQL-level `PREPARE name AS ...` of statements that touch nothing protected.
    plain_prepared: std::collections::HashSet<String>,
    /// Functions this session created that run SQL pgcloak cannot see (dynamic SQL, other
    /// languages, SQL-executing built-ins): opaque at once, before the catalog knows them.
    created_opaque: std::collections::HashSet<String>,
    /// The expected-response queue and the protocol phases.
    state: ProtocolState,
    /// What the session's roles can reach (decides whether opaque SQL may run).
    reach: SessionReach,
    /// A statement that may change name resolution went upstream: re-read the
    /// search_path at the next point where a query may be injected.
    path_refresh_due: bool,
    /// Name resolution changed inside the current transaction: its end may undo it.
    path_changed_in_transaction: bool,
    /// A parsed statement may start COPY FROM STDIN: inject nothing until it settles.
    copy_may_run: bool,
    /// How many injected search_path reads are unanswered (statements wait for zero).
    path_reads: tokio::sync::watch::Sender<u32>,
    /// The insider guard refused a statement and the session must close (honeytoken deny).
    guard_closed: Option<crate::guard::GuardError>,
    /// Catalog facts the session's refresh task hands over between messages.
    updates: Arc<CatalogUpdates>,
    /// What the data path decided, for the session to record (see [`crate::observe::sink`]).
    sink: crate::observe::Sink,
    /// Statement texts the fast path found plain under the current schema view.
    plain_texts: std::cell::RefCell<PlainTexts>,
}

/// Statement texts found to name nothing that can reach a protected column, for one
/// schema view and policy generation (the key); a new key forgets them all. Bounded:
/// when full it starts over. Only the name scan's verdict is remembered; everything
/// that depends on the session (created functions, prepared statements) is still
/// checked for every statement.
/// The schema view is held (not only compared by address), so a new view can never
/// be mistaken for the one the texts were checked against.
#[derive(Default)]
struct PlainTexts {
    key: Option<(Arc<SessionSchema>, u64)>,
    texts: std::collections::HashSet<Box<str>>,
}

impl PlainTexts {
    const CAP: usize = 256;

    fn is_for(&self, schema: &Arc<SessionSchema>, generation: u64) -> bool {
        self.key
            .as_ref()
            .is_some_and(|(s, g)| Arc::ptr_eq(s, schema) && *g == generation)
    }

    fn holds(&self, schema: &Arc<SessionSchema>, generation: u64, sql: &str) -> bool {
        self.is_for(schema, generation) && self.texts.contains(sql)
    }

    fn insert(&mut self, schema: &Arc<SessionSchema>, generation: u64, sql: &str) {
        if !self.is_for(schema, generation) || self.texts.len() >= PlainTexts::CAP {
            self.texts.clear();
            self.key = Some((schema.clone(), generation));
        }
        self.texts.insert(sql.into());
    }
}

/// What the session's catalog refresh hands to its data path: a new schema view,
/// reach or role set. The refresh task never touches the data path itself; the data
/// path takes what changed before its next message, at the cost of one atomic load
/// when nothing did.
#[derive(Default)]
pub struct CatalogUpdates {
    changed: AtomicBool,
    pending: Mutex<PendingUpdates>,
}

#[derive(Default)]
struct PendingUpdates {
    schema: Option<Arc<SessionSchema>>,
    reach: Option<SessionReach>,
    roles: Option<Vec<RoleName>>,
}

impl CatalogUpdates {
    /// A refreshed schema view.
    pub fn schema(&self, schema: Arc<SessionSchema>) {
        self.update(|p| p.schema = Some(schema));
    }

    /// What the session's roles can reach now.
    pub fn reach(&self, reach: SessionReach) {
        self.update(|p| p.reach = Some(reach));
    }

    /// The session's role memberships now.
    pub fn roles(&self, roles: Vec<RoleName>) {
        self.update(|p| p.roles = Some(roles));
    }

    fn update(&self, f: impl FnOnce(&mut PendingUpdates)) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut p);
        self.changed.store(true, Ordering::Release);
    }

    fn take(&self) -> Option<PendingUpdates> {
        if !self.changed.load(Ordering::Acquire) {
            return None;
        }
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.store(false, Ordering::Relaxed);
        Some(std::mem::take(&mut *p))
    }
}

impl DataPath {
    pub fn new(
        protection: Arc<ArcSwap<Protection>>,
        schema: Arc<SessionSchema>,
        roles: Vec<RoleName>,
        codec: SessionContext,
        search_path: Vec<String>,
    ) -> DataPath {
        DataPath {
            catalog_changed: Arc::new(tokio::sync::Notify::new()),
            protection,
            schema,
            roles,
            codec,
            search_path,
            statements: HashMap::new(),
            portals: HashMap::new(),
            sql_prepared: HashMap::new(),
            plain_prepared: std::collections::HashSet::new(),
            created_opaque: std::collections::HashSet::new(),
            state: ProtocolState::default(),
            reach: SessionReach {
                can_reach_protected: true,
            },
            path_refresh_due: false,
            path_changed_in_transaction: false,
            copy_may_run: false,
            path_reads: tokio::sync::watch::Sender::new(0),
            guard_closed: None,
            updates: Arc::new(CatalogUpdates::default()),
            sink: crate::observe::Sink::new(),
            plain_texts: Default::default(),
        }
    }

    /// Where the session's refresh task hands over catalog facts.
    pub fn catalog_updates(&self) -> Arc<CatalogUpdates> {
        self.updates.clone()
    }

    /// Takes what the refresh task handed over since the last message.
    fn apply_catalog_updates(&mut self) {
        let Some(p) = self.updates.take() else {
            return;
        };
        if let Some(schema) = p.schema {
            self.schema = schema;
        }
        if let Some(reach) = p.reach {
            self.reach = reach;
        }
        if let Some(roles) = p.roles {
            self.roles = roles;
        }
    }

    /// What the session's roles can reach, from the catalog (conservative until set).
    pub fn set_reach(&mut self, reach: SessionReach) {
        self.reach = reach;
    }

    /// The count of unanswered search_path reads, to wait on.
    pub fn path_reads(&self) -> tokio::sync::watch::Receiver<u32> {
        self.path_reads.subscribe()
    }

    /// The session's effective search_path as pgcloak last read it.
    pub fn search_path(&self) -> &[String] {
        &self.search_path
    }

    /// The roles whose grants apply (empty: PUBLIC only).
    pub fn roles(&self) -> &[RoleName] {
        &self.roles
    }

    /// Replaces the schema (after a catalog refresh).
    pub fn set_schema(&mut self, schema: Arc<SessionSchema>) {
        self.schema = schema;
    }

    /// Notified when DDL or a GRANT/REVOKE went through this session.
    pub fn catalog_changed(&self) -> Arc<tokio::sync::Notify> {
        self.catalog_changed.clone()
    }

    /// What the data path decided since the session last recorded it.
    pub fn sink(&self) -> &crate::observe::Sink {
        &self.sink
    }

    pub fn set_roles(&mut self, roles: Vec<RoleName>) {
        self.roles = roles;
    }
}

#[cfg(test)]
mod egress_tests;
#[cfg(test)]
mod recheck_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod view_props;

#[cfg(test)]
mod plain_texts_tests {
    use super::testkit::{protection, schema};
    use super::PlainTexts;

    #[test]
    fn a_text_is_plain_only_for_the_schema_view_and_generation_it_was_checked_under() {
        let prot = protection(
            "version: 1\ntables:\n  public.t:\n    a: { type: text, access: { r: plaintext } }\n",
            1,
        );
        let (s1, s2) = (schema(&prot, 1), schema(&prot, 1));
        let mut p = PlainTexts::default();
        p.insert(&s1, 1, "SELECT 1");
        assert!(p.holds(&s1, 1, "SELECT 1"));
        assert!(!p.holds(&s1, 1, "SELECT 2"));
        // Another view (a catalog refresh), even an equal one, or another generation.
        assert!(!p.holds(&s2, 1, "SELECT 1"));
        assert!(!p.holds(&s1, 2, "SELECT 1"));
        p.insert(&s2, 1, "SELECT 2");
        assert!(!p.holds(&s1, 1, "SELECT 1"));
        for i in 0..PlainTexts::CAP + 1 {
            p.insert(&s2, 1, &format!("SELECT {i}"));
        }
        assert!(p.texts.len() <= PlainTexts::CAP);
    }
}
