//! The observation sink: what the data path decided, recorded into a small owned
//! struct instead of a call into the session's accounting per value or message.
//!
//! The data path appends to its [`Sink`] (value counts per column and view, the
//! statements it forwarded unanalysed or analysed, its refusals, the time its
//! analysis, rewriting and crypto took); the session drains it with
//! [`super::session::record`] when something is urgent (a refusal or an analysed
//! statement, whose fingerprint later events name), at the end of a statement cycle
//! (ReadyForQuery), before the insider guard reports (its audit events name the
//! statement), and when the session ends. A message forwarded unchanged costs no
//! call at all.
//!
//! Recording goes through `&self` (interior mutability): the analysis code that
//! counts encrypted literals holds the data path by shared reference.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use super::session::RejectReason;
use crate::policy::{ColumnRef, Policy, View};
use crate::sql::StatementPlan;

/// One session's pending observations (see the module docs).
#[derive(Default)]
pub struct Sink {
    pending: RefCell<Pending>,
    /// When the current statement cycle began (its first client message).
    cycle_start: Cell<Option<Instant>>,
}

/// Events whose order matters (each may change or read the session's statement
/// fingerprint), then counters whose order does not.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) ordered: Vec<Event>,
    /// Something in `ordered` should reach the metrics and the audit trail now.
    pub(super) urgent: bool,
    /// Values encrypted: (generation, column) → (qualified name, count).
    pub(super) encrypted: Vec<((u64, u32), String, u64)>,
    /// Values sent to the client: (generation, column, view) → (qualified name, count).
    pub(super) out: Vec<((u64, u32, View), String, u64)>,
    /// Time spent in analysis, rewriting and crypto in the current cycle.
    pub(super) handler: Duration,
}

/// An observation whose place in the sequence matters.
pub(super) enum Event {
    /// A new statement arrived (Query or Parse): the previous fingerprint no longer
    /// describes what a refusal belongs to.
    Received,
    /// A statement forwarded without analysis; its text only when the statement log
    /// or the slow-statement log needs its fingerprint.
    FastPath(Option<String>),
    /// A statement the analysis planned: the client's text, its kinds and tables.
    Analysed {
        sql: String,
        kinds: Vec<&'static str>,
        tables: Vec<String>,
    },
    /// pgcloak refused a statement or a result.
    Rejected(RejectReason, &'static str),
}

impl Sink {
    pub fn new() -> Sink {
        Sink::default()
    }

    /// Whether something should be recorded before the current message's output leaves.
    pub fn is_urgent(&self) -> bool {
        self.pending.borrow().urgent
    }

    /// A new statement arrived (Query or Parse).
    pub fn statement_received(&self) {
        self.pending.borrow_mut().ordered.push(Event::Received);
    }

    /// A statement forwarded without analysis (it cannot name a protected column).
    pub fn statement_fast_path(&self, sql: &str) {
        let text = super::session::wants_statement_text().then(|| sql.to_string());
        self.pending
            .borrow_mut()
            .ordered
            .push(Event::FastPath(text));
    }

    /// A statement the analyser planned (`plans` in order); `sql` is the client's text.
    pub fn statement_analysed(&self, sql: &str, plans: &[StatementPlan], policy: &Policy) {
        let (kinds, tables) = super::session::describe_plans(plans, policy);
        let mut p = self.pending.borrow_mut();
        p.ordered.push(Event::Analysed {
            sql: sql.to_string(),
            kinds,
            tables,
        });
        p.urgent = true;
    }

    /// pgcloak refused a statement or a result (fail closed).
    pub fn rejected(&self, reason: RejectReason, sqlstate: &'static str) {
        let mut p = self.pending.borrow_mut();
        p.ordered.push(Event::Rejected(reason, sqlstate));
        p.urgent = true;
    }

    /// One value encrypted for `col`.
    pub fn encrypted(&self, policy: &Policy, col: ColumnRef) {
        let key = (policy.generation(), col.0);
        let mut p = self.pending.borrow_mut();
        match p.encrypted.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, n)) => *n += 1,
            None => p.encrypted.push((key, name_of(policy, col), 1)),
        }
    }

    /// One protected value leaves for the client under `view`.
    pub fn decrypted_or_withheld(&self, policy: &Policy, col: ColumnRef, view: View) {
        let key = (policy.generation(), col.0, view);
        let mut p = self.pending.borrow_mut();
        match p.out.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, n)) => *n += 1,
            None => p.out.push((key, name_of(policy, col), 1)),
        }
    }

    /// The client sent a message: the first one after ReadyForQuery starts a cycle
    /// (one clock read per cycle, not per message).
    pub fn cycle_begin(&self) {
        if self.cycle_start.get().is_none() {
            self.cycle_start.set(Some(Instant::now()));
        }
    }

    /// Takes the current cycle's start (ReadyForQuery ends it).
    pub(super) fn take_cycle_start(&self) -> Option<Instant> {
        self.cycle_start.take()
    }

    /// Time spent in analysis, rewriting or crypto since `started`.
    pub fn handler_time(&self, started: Instant) {
        self.pending.borrow_mut().handler += started.elapsed();
    }

    /// Takes everything pending.
    pub(super) fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.borrow_mut())
    }

    /// Hands back the (drained) event list, so its capacity serves the next cycle.
    pub(super) fn recycle(&self, mut ordered: Vec<Event>) {
        ordered.clear();
        let mut p = self.pending.borrow_mut();
        if p.ordered.is_empty() {
            p.ordered = ordered;
        }
    }
}

fn name_of(policy: &Policy, col: ColumnRef) -> String {
    policy
        .get(col)
        .map(|c| c.qualified_name())
        .unwrap_or_else(|| "(unknown)".into())
}
