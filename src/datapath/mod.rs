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
mod values;

pub use schema::SessionSchema;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use error::DataPathError;

use crate::codec::SessionContext;
use crate::crypto::CipherSuite;
use crate::policy::{Policy, RoleName};
use crate::sql::{
    AnalysisCache, CopyPlan, NameSet, ParamAction, ResultShape, SessionReach, StatementPlan,
};

/// Everything derived from one policy + keyring generation, shared by all sessions.
pub struct Protection {
    pub policy: Arc<Policy>,
    pub suite: CipherSuite,
    pub names: NameSet,
    pub cache: AnalysisCache,
    pub in_list_cap: usize,
    /// The insider guard's view of this generation (honeytoken matcher, quotas on/off).
    pub guard: crate::guard::Compiled,
}

impl Protection {
    pub fn new(policy: Arc<Policy>, suite: CipherSuite, in_list_cap: usize) -> Protection {
        let names = NameSet::from_policy(&policy);
        let guard = crate::guard::Compiled::new(&policy);
        Protection {
            guard,
            policy,
            suite,
            names,
            cache: AnalysisCache::new(4096),
            in_list_cap,
        }
    }

    pub fn generation(&self) -> u64 {
        self.policy.generation()
    }

    /// Whether anything at all is protected.
    pub fn is_empty(&self) -> bool {
        self.policy.columns().is_empty()
    }
}

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

/// What upstream will answer next, in order. Only responses pgcloak must act on
/// are queued; the rest pass through untouched.
enum Expect {
    /// A Describe of a statement: ParameterDescription, then RowDescription or NoData.
    DescribeStatement {
        params: Vec<ParamAction>,
        prot: Option<Arc<Protection>>,
        transform: Option<Arc<ResultTransform>>,
    },
    /// A Describe of a portal: RowDescription or NoData.
    DescribePortal {
        transform: Option<Arc<ResultTransform>>,
    },
    /// An Execute: rows until CommandComplete, PortalSuspended, EmptyQuery or an error.
    Execute {
        transform: Option<Arc<ResultTransform>>,
        copy: Option<CopyStream>,
    },
    /// A simple Query: its statements in order, until ReadyForQuery.
    Simple(VecDeque<SimpleStatement>),
    /// A response to a message pgcloak injected, to be dropped.
    Swallow(u8),
    /// The error raised by a statement pgcloak substituted: strip its PL/pgSQL context.
    InjectedError,
    /// A Sync: its ReadyForQuery ends error recovery.
    Sync,
    /// pgcloak's own `current_schemas(true)` query, injected after a statement that may
    /// change name resolution: every reply up to its ReadyForQuery is consumed, and the
    /// schemas it lists become the session's search_path (unless it failed).
    SearchPath { schemas: Vec<String>, failed: bool },
}

struct SimpleStatement {
    transform: Option<Arc<ResultTransform>>,
    copy: Option<CopyStream>,
    injected_error: bool,
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
    expect: VecDeque<Expect>,
    /// Client messages are dropped until Sync (after pgcloak refused one in a pipeline).
    discard_until_sync: bool,
    /// The COPY FROM STDIN stream being encrypted, if any.
    copy_in: Option<(copy::CopyIn, Arc<Protection>)>,
    /// The server is in COPY FROM STDIN mode: it ignores Sync until CopyDone/CopyFail.
    server_copy_in: bool,
    /// A COPY FROM STDIN plan waiting for the server's CopyInResponse.
    pending_copy_in: Option<CopyStream>,
    /// Backend: the result set being rewritten.
    active: Option<Arc<backend::ActiveResult>>,
    current_copy_out: Option<CopyStream>,
    /// Backend: an error was sent for a result; drop the rest until ReadyForQuery.
    swallow_until_ready: bool,
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
    /// pgcloak failed the COPY FROM STDIN: drop the client's CopyData until its CopyDone.
    copy_in_failed: bool,
    /// The error the client gets in place of the server's answer to pgcloak's CopyFail.
    copy_fail_error: Option<crate::wire::PgError>,
    /// The insider guard refused a statement and the session must close (honeytoken deny).
    guard_closed: Option<crate::guard::GuardError>,
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
            expect: VecDeque::new(),
            discard_until_sync: false,
            copy_in: None,
            server_copy_in: false,
            pending_copy_in: None,
            active: None,
            current_copy_out: None,
            swallow_until_ready: false,
            reach: SessionReach {
                can_reach_protected: true,
            },
            path_refresh_due: false,
            path_changed_in_transaction: false,
            copy_may_run: false,
            path_reads: tokio::sync::watch::Sender::new(0),
            copy_in_failed: false,
            copy_fail_error: None,
            guard_closed: None,
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
