//! The session's protocol state: what upstream will answer next, and which phase
//! each direction of the conversation is in.
//!
//! This is the one place that knows how PostgreSQL's message flow moves: the
//! queue of expected responses (pushed as client messages go upstream, popped as
//! the answers come back, with entries for messages pgcloak injected itself) and
//! three phases, each an enum with named transitions instead of loose flags:
//!
//! - [`ClientPhase`]: whether client messages are dropped (after pgcloak failed a
//!   pipeline, until Sync; after pgcloak failed a COPY FROM STDIN, until the client
//!   ends its copy);
//! - [`CopyInPhase`]: whether the server is in COPY FROM STDIN mode and whether
//!   pgcloak encrypts the stream;
//! - [`ResultPhase`]: the result being relayed (rows to rewrite, a COPY TO STDOUT
//!   to decrypt) or a failed cycle whose remaining answers are dropped.
//!
//! It does no I/O and knows nothing of SQL or values: the frontend and backend
//! halves decide what a message means and call the transition that follows.

use std::collections::VecDeque;
use std::sync::Arc;

use super::backend::ActiveResult;
use super::copy::CopyIn;
use super::{CopyStream, Protection, ResultTransform};
use crate::sql::ParamAction;
use crate::wire::{PgError, Tag};

/// What upstream will answer next, in order. Only responses pgcloak must act on
/// are queued; the rest pass through untouched.
pub(super) enum Expect {
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
    Swallow(Tag),
    /// The error raised by a statement pgcloak substituted: strip its PL/pgSQL context.
    InjectedError,
    /// A Sync: its ReadyForQuery ends error recovery.
    Sync,
    /// pgcloak's own `current_schemas(true)` query, injected after a statement that may
    /// change name resolution: every reply up to its ReadyForQuery is consumed, and the
    /// schemas it lists become the session's search_path (unless it failed).
    SearchPath { schemas: Vec<String>, failed: bool },
}

/// One statement of a simple Query, as the backend half will meet its results.
pub(super) struct SimpleStatement {
    pub(super) transform: Option<Arc<ResultTransform>>,
    pub(super) copy: Option<CopyStream>,
    pub(super) injected_error: bool,
}

/// How pgcloak treats the client's next messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientPhase {
    /// Every message is handled.
    Normal,
    /// pgcloak failed a message of a pipeline: drop everything until Sync, as
    /// PostgreSQL would after its own error.
    DiscardUntilSync,
    /// pgcloak failed a COPY FROM STDIN: drop the client's CopyData (it may hold
    /// plaintext) until its CopyDone/CopyFail.
    DropFailedCopy,
}

/// What to do with one client message while [`ClientPhase::DropFailedCopy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailedCopyInput {
    /// Not in that phase (or it just ended on another message): handle it.
    Handle,
    /// Drop the message.
    Drop,
}

/// The server's COPY FROM STDIN mode, as pgcloak follows it.
pub(super) enum CopyInPhase {
    /// Not copying.
    Off,
    /// The server is in COPY FROM STDIN and ignores Sync until CopyDone/CopyFail;
    /// the stream touches nothing protected (or its encryption already failed).
    Plain,
    /// As `Plain`, and pgcloak encrypts the protected fields of the stream.
    Encrypting(Box<CopyIn>, Arc<Protection>),
}

/// The result being relayed to the client.
pub(super) enum ResultPhase {
    /// No result set in progress (or one that passes untouched).
    Idle,
    /// A result set whose rows are rewritten (or passthrough rows, whose
    /// description names a column in an egress error).
    Rows(Arc<ActiveResult>),
    /// A COPY TO STDOUT whose fields are decrypted.
    CopyOut(CopyStream),
    /// pgcloak sent the client its own error for this cycle: upstream's answers
    /// are dropped until ReadyForQuery.
    Failed,
}

/// How a server ErrorResponse is to be presented, from the protocol state.
pub(super) struct ServerError {
    /// It answers a statement pgcloak substituted to raise its own error.
    pub(super) injected: bool,
    /// pgcloak's own error, to send instead of the server's (the answer to the
    /// CopyFail pgcloak sent for a COPY row it could not encode).
    pub(super) own: Option<PgError>,
}

/// Where the transform for a RowDescription comes from.
pub(super) struct RowDescriptionFor {
    pub(super) transform: Option<Arc<ResultTransform>>,
    /// The response to a Describe (not rows of a simple Query).
    pub(super) described: bool,
    /// The Describe was of a portal: upstream sends the formats the Bind chose.
    pub(super) upstream_binary: bool,
    /// Part of a simple Query.
    pub(super) simple: bool,
}

/// The expected-response queue and the phases of one session.
pub(super) struct ProtocolState {
    expect: VecDeque<Expect>,
    client: ClientPhase,
    copy_in: CopyInPhase,
    /// A COPY FROM STDIN plan waiting for the server's CopyInResponse.
    planned_copy_in: Option<CopyStream>,
    result: ResultPhase,
    /// The error the client gets in place of the server's answer to pgcloak's CopyFail.
    copy_fail_error: Option<PgError>,
}

impl Default for ProtocolState {
    fn default() -> Self {
        ProtocolState {
            expect: VecDeque::new(),
            client: ClientPhase::Normal,
            copy_in: CopyInPhase::Off,
            planned_copy_in: None,
            result: ResultPhase::Idle,
            copy_fail_error: None,
        }
    }
}

impl ProtocolState {
    // ---- frontend transitions -------------------------------------------------

    /// Queues what upstream will answer to a message now going upstream.
    pub(super) fn expect(&mut self, e: Expect) {
        self.expect.push_back(e);
    }

    /// Whether a client message with this tag is dropped (pipeline failed by pgcloak).
    pub(super) fn discards(&self, tag: Tag) -> bool {
        self.client == ClientPhase::DiscardUntilSync && tag != Tag::SYNC
    }

    /// The client's Sync: error recovery ends; its ReadyForQuery is expected unless
    /// the server is in COPY FROM STDIN (it ignores Sync there and answers nothing).
    pub(super) fn client_sync(&mut self) {
        self.client = ClientPhase::Normal;
        if matches!(self.copy_in, CopyInPhase::Off) {
            self.expect.push_back(Expect::Sync);
        }
    }

    /// pgcloak injected Parse/Bind/Execute of a failing statement: their
    /// ParseComplete and BindComplete are dropped, the error is its own, and the
    /// client's messages are dropped until Sync.
    pub(super) fn injected_extended_failure(&mut self) {
        self.expect.push_back(Expect::Swallow(Tag::PARSE_COMPLETE));
        self.expect.push_back(Expect::Swallow(Tag::BIND_COMPLETE));
        self.expect.push_back(Expect::InjectedError);
        self.client = ClientPhase::DiscardUntilSync;
    }

    /// A statement going upstream may start COPY FROM STDIN with protected fields.
    pub(super) fn plan_copy_in(&mut self, stream: CopyStream) {
        self.planned_copy_in = Some(stream);
    }

    /// The encrypting COPY FROM STDIN stream, for the client's CopyData.
    pub(super) fn copy_in_stream(&mut self) -> Option<(&mut CopyIn, &Protection)> {
        match &mut self.copy_in {
            CopyInPhase::Encrypting(c, prot) => Some((&mut **c, &**prot)),
            _ => None,
        }
    }

    /// The client's CopyDone: the server leaves COPY mode; the encrypting stream
    /// (if any) is returned to flush its last row.
    pub(super) fn client_copy_done(&mut self) -> Option<(Box<CopyIn>, Arc<Protection>)> {
        match std::mem::replace(&mut self.copy_in, CopyInPhase::Off) {
            CopyInPhase::Encrypting(c, prot) => Some((c, prot)),
            _ => None,
        }
    }

    /// The client's CopyFail: the server leaves COPY mode, nothing is flushed.
    pub(super) fn client_copy_fail(&mut self) {
        self.copy_in = CopyInPhase::Off;
    }

    /// pgcloak aborts the COPY FROM STDIN with CopyFail; the client gets `err` in
    /// place of the server's answer, and its CopyData is dropped until it ends the copy.
    pub(super) fn fail_copy_in(&mut self, err: PgError) {
        self.copy_in = CopyInPhase::Off;
        self.planned_copy_in = None;
        self.client = ClientPhase::DropFailedCopy;
        self.copy_fail_error = Some(err);
    }

    /// Filters a client message while pgcloak's CopyFail is in effect.
    pub(super) fn after_failed_copy(&mut self, tag: Tag) -> FailedCopyInput {
        if self.client != ClientPhase::DropFailedCopy {
            return FailedCopyInput::Handle;
        }
        match tag {
            Tag::COPY_DATA => FailedCopyInput::Drop,
            Tag::COPY_DONE | Tag::COPY_FAIL => {
                // The server left COPY mode at pgcloak's CopyFail and ignores these.
                self.client = ClientPhase::Normal;
                FailedCopyInput::Drop
            }
            _ => {
                self.client = ClientPhase::Normal;
                FailedCopyInput::Handle
            }
        }
    }

    /// Whether the server is in (or about to enter, with pgcloak encrypting) COPY
    /// FROM STDIN, where an injected Query would be taken as copy data.
    pub(super) fn in_copy_in(&self) -> bool {
        !matches!(self.copy_in, CopyInPhase::Off)
    }

    // ---- backend transitions --------------------------------------------------

    /// The next expected response.
    pub(super) fn front(&self) -> Option<&Expect> {
        self.expect.front()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Expect> {
        self.expect.front_mut()
    }

    /// Pops the next expected response (a reply that completes it arrived).
    pub(super) fn pop(&mut self) -> Option<Expect> {
        self.expect.pop_front()
    }

    /// ParseComplete/BindComplete: true when it answers pgcloak's own injected
    /// message (it is dropped and its entry popped).
    pub(super) fn swallows(&mut self, tag: Tag) -> bool {
        if matches!(self.expect.front(), Some(Expect::Swallow(t)) if *t == tag) {
            self.expect.pop_front();
            return true;
        }
        false
    }

    /// NoData: the Describe it answers is done.
    pub(super) fn no_data(&mut self) {
        if matches!(
            self.expect.front(),
            Some(Expect::DescribeStatement { .. } | Expect::DescribePortal { .. })
        ) {
            self.expect.pop_front();
        }
    }

    /// RowDescription: which transform applies, popping the Describe it answers.
    pub(super) fn row_description(&mut self) -> RowDescriptionFor {
        let mut r = RowDescriptionFor {
            transform: None,
            described: false,
            upstream_binary: false,
            simple: false,
        };
        match self.expect.front() {
            Some(Expect::DescribeStatement { transform, .. }) => {
                r.transform = transform.clone();
                r.described = true;
            }
            Some(Expect::DescribePortal { transform }) => {
                r.transform = transform.clone();
                r.described = true;
                r.upstream_binary = true;
            }
            Some(Expect::Simple(stmts)) => {
                r.transform = stmts.front().and_then(|s| s.transform.clone());
                r.simple = true;
            }
            _ => {}
        }
        if r.described {
            self.expect.pop_front();
        }
        r
    }

    /// The transform of the Execute whose rows arrive (without a RowDescription).
    pub(super) fn execute_transform(&self) -> Option<Arc<ResultTransform>> {
        match self.expect.front() {
            Some(Expect::Execute {
                transform: Some(t), ..
            }) => Some(t.clone()),
            _ => None,
        }
    }

    /// CommandComplete, EmptyQueryResponse or PortalSuspended (`suspended`): the
    /// result is over; an Execute is answered, a simple Query moves to its next statement.
    pub(super) fn command_done(&mut self, suspended: bool) {
        self.result = ResultPhase::Idle;
        match self.expect.front_mut() {
            Some(Expect::Execute { .. }) => {
                self.expect.pop_front();
            }
            Some(Expect::Simple(stmts)) if !suspended => {
                stmts.pop_front();
            }
            _ => {}
        }
    }

    /// The rows being relayed now follow `active`.
    pub(super) fn relay_rows(&mut self, active: Arc<ActiveResult>) {
        self.result = ResultPhase::Rows(active);
    }

    /// The result set being relayed, if its rows are followed.
    pub(super) fn rows(&self) -> Option<&Arc<ActiveResult>> {
        match &self.result {
            ResultPhase::Rows(a) => Some(a),
            _ => None,
        }
    }

    /// CopyOutResponse: the COPY TO STDOUT of the current statement starts.
    pub(super) fn copy_out_started(&mut self) {
        let copy = match self.expect.front() {
            Some(Expect::Simple(stmts)) => stmts.front().and_then(|s| s.copy.clone()),
            Some(Expect::Execute { copy, .. }) => copy.clone(),
            _ => None,
        };
        match copy {
            Some(c) => self.result = ResultPhase::CopyOut(c),
            None if matches!(self.result, ResultPhase::CopyOut(_)) => {
                self.result = ResultPhase::Idle
            }
            None => {}
        }
    }

    /// The COPY TO STDOUT whose fields are decrypted, if one is in progress.
    pub(super) fn copy_out(&self) -> Option<&CopyStream> {
        match &self.result {
            ResultPhase::CopyOut(c) => Some(c),
            _ => None,
        }
    }

    /// CopyInResponse: the server is in COPY FROM STDIN. It ignores every Sync the
    /// client sent after the statement that started it, so those are not expected;
    /// the planned stream (if any) starts encrypting.
    pub(super) fn copy_in_started(&mut self) {
        let mut first = true;
        self.expect.retain(|e| {
            let keep = first || !matches!(e, Expect::Sync);
            first = false;
            keep
        });
        self.copy_in = match self.planned_copy_in.take() {
            Some(s) => CopyInPhase::Encrypting(Box::new(CopyIn::new(s.plan)), s.prot),
            None => CopyInPhase::Plain,
        };
    }

    /// pgcloak sent its own error for this cycle: drop the rest until ReadyForQuery.
    pub(super) fn fail_result(&mut self) {
        self.result = ResultPhase::Failed;
    }

    /// Whether the current cycle's answers are being dropped.
    pub(super) fn result_failed(&self) -> bool {
        matches!(self.result, ResultPhase::Failed)
    }

    /// ErrorResponse: error recovery. A simple Query skips its remaining
    /// statements; the extended protocol skips everything until Sync.
    pub(super) fn server_error(&mut self) -> ServerError {
        let own_injected = matches!(self.expect.front(), Some(Expect::InjectedError));
        let injected = own_injected
            || matches!(self.expect.front(), Some(Expect::Simple(s)) if s.front().is_some_and(|st| st.injected_error));
        if own_injected {
            self.expect.pop_front();
        }
        self.result = ResultPhase::Idle;
        if matches!(self.copy_in, CopyInPhase::Encrypting(..)) {
            self.copy_in = CopyInPhase::Plain;
        }
        self.planned_copy_in = None;
        match self.expect.front_mut() {
            Some(Expect::Simple(stmts)) => stmts.clear(),
            _ => {
                while let Some(front) = self.expect.front() {
                    if matches!(front, Expect::Sync | Expect::Simple(_)) {
                        break;
                    }
                    self.expect.pop_front();
                }
            }
        }
        ServerError {
            injected,
            own: self.copy_fail_error.take(),
        }
    }

    /// ReadyForQuery: the end of a Sync or simple-Query cycle. Returns whether
    /// everything the client sent is answered.
    pub(super) fn ready_for_query(&mut self) -> bool {
        if !self.result_failed() {
            self.copy_fail_error = None;
        }
        self.result = ResultPhase::Idle;
        while let Some(e) = self.expect.pop_front() {
            if matches!(e, Expect::Sync | Expect::Simple(_)) {
                break;
            }
        }
        self.expect.is_empty()
    }

    /// Whether the next upstream message answers pgcloak's search_path query.
    pub(super) fn awaiting_search_path(&self) -> bool {
        matches!(self.expect.front(), Some(Expect::SearchPath { .. }))
    }

    #[cfg(test)]
    fn snapshot(&self) -> (String, ClientPhase, &'static str, &'static str, bool) {
        let queue = self
            .expect
            .iter()
            .map(|e| match e {
                Expect::DescribeStatement { .. } => "DS".to_string(),
                Expect::DescribePortal { .. } => "DP".into(),
                Expect::Execute { .. } => "E".into(),
                Expect::Simple(s) => format!("Q{}", s.len()),
                Expect::Swallow(t) => format!("W{}", t.byte() as char),
                Expect::InjectedError => "I".into(),
                Expect::Sync => "S".into(),
                Expect::SearchPath { .. } => "P".into(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let copy = match self.copy_in {
            CopyInPhase::Off => "off",
            CopyInPhase::Plain => "plain",
            CopyInPhase::Encrypting(..) => "encrypting",
        };
        let result = match self.result {
            ResultPhase::Idle => "idle",
            ResultPhase::Rows(_) => "rows",
            ResultPhase::CopyOut(_) => "copy-out",
            ResultPhase::Failed => "failed",
        };
        (
            queue,
            self.client,
            copy,
            result,
            self.copy_fail_error.is_some(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{CopyDirection, CopyFormat, CopyPlan};

    /// One step a pump takes on the state.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Execute,
        CopyExecute,
        DescribeStatement,
        DescribePortal,
        SimpleQuery(usize),
        Sync,
        InjectExtended,
        ParseComplete,
        BindComplete,
        NoData,
        RowDescription,
        CommandComplete,
        PortalSuspended,
        CopyIn,
        CopyOut,
        ClientCopyDone,
        ClientCopyFail,
        FailCopyIn,
        ServerError,
        FailResult,
        Ready,
    }

    fn stream(direction: CopyDirection) -> CopyStream {
        let prot = super::super::testkit::protection(
            "version: 1\ntables:\n  public.t:\n    a: { type: text, access: { r: plaintext } }\n",
            1,
        );
        CopyStream {
            plan: Arc::new(CopyPlan {
                direction,
                format: CopyFormat::Text,
                delimiter: None,
                null: None,
                quote: None,
                escape: None,
                header: false,
                fields: vec![None, Some(crate::policy::ColumnRef(0))],
                plain_tail: false,
            }),
            prot,
        }
    }

    fn apply(s: &mut ProtocolState, step: Step) {
        match step {
            Step::Execute => s.expect(Expect::Execute {
                transform: None,
                copy: None,
            }),
            Step::CopyExecute => {
                s.plan_copy_in(stream(CopyDirection::FromStdin));
                s.expect(Expect::Execute {
                    transform: None,
                    copy: None,
                })
            }
            Step::DescribeStatement => s.expect(Expect::DescribeStatement {
                params: vec![],
                prot: None,
                transform: None,
            }),
            Step::DescribePortal => s.expect(Expect::DescribePortal { transform: None }),
            Step::SimpleQuery(n) => {
                let mut stmts = VecDeque::new();
                for i in 0..n {
                    stmts.push_back(SimpleStatement {
                        transform: None,
                        copy: (i == 0).then(|| stream(CopyDirection::ToStdout)),
                        injected_error: false,
                    });
                }
                s.expect(Expect::Simple(stmts))
            }
            Step::Sync => s.client_sync(),
            Step::InjectExtended => s.injected_extended_failure(),
            Step::ParseComplete => {
                s.swallows(Tag::PARSE_COMPLETE);
            }
            Step::BindComplete => {
                s.swallows(Tag::BIND_COMPLETE);
            }
            Step::NoData => s.no_data(),
            Step::RowDescription => {
                s.row_description();
            }
            Step::CommandComplete => s.command_done(false),
            Step::PortalSuspended => s.command_done(true),
            Step::CopyIn => s.copy_in_started(),
            Step::CopyOut => s.copy_out_started(),
            Step::ClientCopyDone => {
                s.client_copy_done();
            }
            Step::ClientCopyFail => s.client_copy_fail(),
            Step::FailCopyIn => s.fail_copy_in(PgError::error("22P02", "bad row")),
            Step::ServerError => {
                s.server_error();
            }
            Step::FailResult => s.fail_result(),
            Step::Ready => {
                s.ready_for_query();
            }
        }
    }

    use ClientPhase::*;
    use Step::*;

    #[test]
    fn transitions_follow_the_protocol() {
        // (what, steps, queue, client phase, copy-in phase, result phase, own copy error)
        #[allow(clippy::type_complexity)]
        let table: &[(&str, &[Step], &str, ClientPhase, &str, &str, bool)] = &[
            ("nothing", &[], "", Normal, "off", "idle", false),
            (
                "pipelined executes",
                &[Execute, Execute, Sync],
                "E E S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "executes answered",
                &[Execute, Execute, Sync, CommandComplete, CommandComplete],
                "S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "ready ends the cycle",
                &[Execute, Sync, CommandComplete, Ready],
                "",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "portal suspended answers the execute",
                &[Execute, Sync, PortalSuspended],
                "S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "describes popped by their replies",
                &[
                    DescribeStatement,
                    DescribePortal,
                    Sync,
                    RowDescription,
                    NoData,
                ],
                "S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "injected failure drops client messages until sync",
                &[InjectExtended],
                "W1 W2 I",
                DiscardUntilSync,
                "off",
                "idle",
                false,
            ),
            (
                "sync ends the discard",
                &[InjectExtended, Sync],
                "W1 W2 I S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "injected replies swallowed",
                &[InjectExtended, Sync, ParseComplete, BindComplete],
                "I S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "a wrong reply is not swallowed",
                &[InjectExtended, BindComplete],
                "W1 W2 I",
                DiscardUntilSync,
                "off",
                "idle",
                false,
            ),
            (
                "an error skips to sync",
                &[Execute, Execute, Sync, Execute, ServerError],
                "S E",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "an error clears a simple query's statements",
                &[SimpleQuery(3), ServerError],
                "Q0",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "simple statements complete one by one",
                &[SimpleQuery(3), CommandComplete, CommandComplete],
                "Q1",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "portal suspended does not end a simple statement",
                &[SimpleQuery(2), PortalSuspended],
                "Q2",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "copy out follows the statement's plan",
                &[SimpleQuery(1), CopyOut],
                "Q1",
                Normal,
                "off",
                "copy-out",
                false,
            ),
            (
                "copy out ends with its command",
                &[SimpleQuery(1), CopyOut, CommandComplete],
                "Q0",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "copy in of a plan encrypts and drops later syncs",
                &[CopyExecute, Sync, Execute, Sync, CopyIn],
                "E E",
                Normal,
                "encrypting",
                "idle",
                false,
            ),
            (
                "copy in without a plan is plain",
                &[Execute, Sync, CopyIn],
                "E",
                Normal,
                "plain",
                "idle",
                false,
            ),
            (
                "sync during copy in is not expected",
                &[Execute, CopyIn, Sync],
                "E",
                Normal,
                "plain",
                "idle",
                false,
            ),
            (
                "copy done leaves copy mode",
                &[CopyExecute, CopyIn, ClientCopyDone, Sync],
                "E S",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "copy fail leaves copy mode",
                &[CopyExecute, CopyIn, ClientCopyFail],
                "E",
                Normal,
                "off",
                "idle",
                false,
            ),
            (
                "a server error stops encrypting but the server stays in copy",
                &[CopyExecute, CopyIn, ServerError],
                "",
                Normal,
                "plain",
                "idle",
                false,
            ),
            (
                "a server error forgets a planned copy",
                &[CopyExecute, ServerError, CopyIn],
                "",
                Normal,
                "plain",
                "idle",
                false,
            ),
            (
                "pgcloak's copy failure drops copy data and keeps its error",
                &[CopyExecute, CopyIn, FailCopyIn],
                "E",
                DropFailedCopy,
                "off",
                "idle",
                true,
            ),
            (
                "the server's answer to the copy fail takes the error",
                &[CopyExecute, CopyIn, FailCopyIn, ServerError],
                "",
                DropFailedCopy,
                "off",
                "idle",
                false,
            ),
            (
                "ready clears an unused copy error",
                &[SimpleQuery(1), FailCopyIn, Ready],
                "",
                DropFailedCopy,
                "off",
                "idle",
                false,
            ),
            (
                "a failed result drops until ready",
                &[SimpleQuery(1), FailResult],
                "Q1",
                Normal,
                "off",
                "failed",
                false,
            ),
            (
                "ready after a failed result keeps a copy error",
                &[SimpleQuery(1), FailCopyIn, FailResult, Ready],
                "",
                DropFailedCopy,
                "off",
                "idle",
                true,
            ),
        ];
        for (what, steps, queue, client, copy, result, own) in table {
            let mut s = ProtocolState::default();
            for step in *steps {
                apply(&mut s, *step);
            }
            assert_eq!(
                s.snapshot(),
                (queue.to_string(), *client, *copy, *result, *own),
                "{what}: {steps:?}"
            );
        }
    }

    #[test]
    fn a_failed_copy_drops_data_until_the_client_ends_it() {
        // (the message after pgcloak's CopyFail, what happens to it, the phase after)
        for (tag, input, phase) in [
            (Tag::COPY_DATA, FailedCopyInput::Drop, DropFailedCopy),
            (Tag::COPY_DONE, FailedCopyInput::Drop, Normal),
            (Tag::COPY_FAIL, FailedCopyInput::Drop, Normal),
            (Tag::QUERY, FailedCopyInput::Handle, Normal),
            (Tag::SYNC, FailedCopyInput::Handle, Normal),
        ] {
            let mut s = ProtocolState::default();
            s.fail_copy_in(PgError::error("22P02", "bad row"));
            assert_eq!(s.after_failed_copy(tag), input, "{tag:?}");
            assert_eq!(s.client, phase, "{tag:?}");
        }
        let mut s = ProtocolState::default();
        assert_eq!(s.after_failed_copy(Tag::COPY_DATA), FailedCopyInput::Handle);
    }

    #[test]
    fn only_sync_passes_a_failed_pipeline() {
        let mut s = ProtocolState::default();
        s.injected_extended_failure();
        for tag in *b"PBDECHdcfQF" {
            assert!(s.discards(Tag(tag)), "{}", tag as char);
        }
        assert!(!s.discards(Tag::SYNC));
        s.client_sync();
        assert!(!s.discards(Tag::PARSE));
    }

    #[test]
    fn row_description_reports_where_it_belongs() {
        let mut s = ProtocolState::default();
        apply(&mut s, DescribePortal);
        apply(&mut s, SimpleQuery(1));
        let r = s.row_description();
        assert!(r.described && r.upstream_binary && !r.simple);
        let r = s.row_description();
        assert!(!r.described && r.simple);
        assert_eq!(s.snapshot().0, "Q1");
    }
}
