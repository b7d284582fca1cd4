//! Following the session's name resolution: after a statement that may change the
//! search_path, `$user` or the temporary schema (see [`crate::sql::session_state`]),
//! pgcloak injects its own `current_schemas(true)` query on the session's connection at
//! the next safe point, consumes the reply and analyses later statements under the
//! answer. Until the reply arrives, statements are analysed under the previous path;
//! schema-qualified rewriting of protected names keeps that window safe (a stale path
//! can pick another relation, never send plaintext to a protected one).

use bytes::BytesMut;

use super::{DataPath, Expect};
use crate::sql::session_state::{may_start_copy, resolution_change, ResolutionChange};
use crate::wire::extended::{
    decode_data_row, encode_close, encode_execute, encode_sync, Bind, Parse,
};

/// The query pgcloak injects: one row per schema, implicit ones included.
const SEARCH_PATH_SQL: &[u8] = b"SELECT pg_catalog.unnest(pg_catalog.current_schemas(true))";
/// The statement and portal name the injected query runs under (closed before its Sync).
const SEARCH_PATH_NAME: &str = "pgcloak.search_path";

/// The injected query as the upstream sees it: Parse/Bind/Execute of a named statement
/// and portal, both closed again, then Sync. Not a simple Query: that would destroy the
/// client's unnamed statement and unnamed portal, which outlive a Sync (drivers Parse an
/// unnamed statement, Sync, and Bind it later: asyncpg's uncached statements, psycopg).
fn search_path_query() -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(
        &Parse {
            name: SEARCH_PATH_NAME.into(),
            sql: SEARCH_PATH_SQL.to_vec(),
            param_types: Vec::new(),
        }
        .encode(),
    );
    out.extend_from_slice(
        &Bind {
            portal: SEARCH_PATH_NAME.into(),
            statement: SEARCH_PATH_NAME.into(),
            param_formats: Vec::new(),
            params: Vec::new(),
            result_formats: Vec::new(),
        }
        .encode(),
    );
    out.extend_from_slice(&encode_execute(SEARCH_PATH_NAME, 0));
    out.extend_from_slice(&encode_close(b'P', SEARCH_PATH_NAME));
    out.extend_from_slice(&encode_close(b'S', SEARCH_PATH_NAME));
    out.extend_from_slice(&encode_sync());
    out
}

impl DataPath {
    /// At session start: queues the first read of the session's search_path into `out`
    /// (to be written upstream before the client's first message). The backend pump
    /// consumes the reply like any injected read, and the client's first statement
    /// waits for it (the pump's gate), so setup costs no round trip of its own.
    pub fn read_search_path_at_start(&mut self, out: &mut BytesMut) {
        self.path_refresh_due = true;
        self.inject_search_path_query(out);
    }

    /// Notes a statement text the client sent (Query or Parse).
    pub(super) fn note_resolution_change(&mut self, sql: &[u8], parse: bool) {
        let text = String::from_utf8_lossy(sql);
        if parse && may_start_copy(&text) {
            // Its Execute may put the server in COPY FROM STDIN before the Sync arrives.
            self.copy_may_run = true;
        }
        match resolution_change(&text) {
            ResolutionChange::Now => {
                self.path_refresh_due = true;
                self.path_changed_in_transaction = true;
            }
            ResolutionChange::AtTransactionEnd if self.path_changed_in_transaction => {
                self.path_refresh_due = true;
            }
            _ => {}
        }
    }

    /// After forwarding a simple Query: inject the search_path query now unless the
    /// statement may have started COPY FROM STDIN (then it waits for the next point).
    pub(super) fn refresh_after_query(&mut self, sql: &[u8], out: &mut BytesMut) {
        if self.path_refresh_due && !may_start_copy(&String::from_utf8_lossy(sql)) {
            self.inject_search_path_query(out);
        }
    }

    /// Injects the search_path query if one is due and the server accepts a Query now.
    pub(super) fn inject_search_path_query(&mut self, out: &mut BytesMut) {
        if !self.path_refresh_due || self.state.in_copy_in() || self.copy_may_run {
            return;
        }
        self.path_refresh_due = false;
        out.extend_from_slice(&search_path_query());
        self.path_reads.send_modify(|n| *n += 1);
        self.state.expect(Expect::SearchPath {
            schemas: Vec::new(),
            failed: false,
        });
    }

    /// The client ended a COPY (CopyDone/CopyFail) or sent a simple Query: no COPY of an
    /// earlier Parse can still be waiting for data.
    pub(super) fn copy_settled(&mut self) {
        self.copy_may_run = false;
    }

    /// Whether the next upstream message answers pgcloak's search_path query.
    pub(super) fn awaiting_search_path(&self) -> bool {
        self.state.awaiting_search_path()
    }

    /// Consumes one message of the reply to the injected query (ParseComplete,
    /// BindComplete, rows, CommandComplete, CloseComplete, ReadyForQuery; or an error and
    /// ReadyForQuery). Asynchronous messages (ParameterStatus, NotificationResponse,
    /// NoticeResponse) still reach the client.
    pub(super) fn on_search_path_reply(&mut self, msg: &[u8], out: &mut BytesMut) {
        let tag = msg[0];
        match tag {
            b'S' | b'A' | b'N' => out.extend_from_slice(msg),
            b'D' => {
                if let Some(Expect::SearchPath { schemas, failed }) = self.state.front_mut() {
                    match decode_data_row(msg) {
                        Ok(values) => match values.first() {
                            Some(Some(v)) => schemas.push(String::from_utf8_lossy(v).into_owned()),
                            _ => *failed = true,
                        },
                        Err(_) => *failed = true,
                    }
                }
            }
            b'E' => {
                if let Some(Expect::SearchPath { failed, .. }) = self.state.front_mut() {
                    *failed = true;
                }
            }
            b'Z' => {
                let idle = msg.get(5) == Some(&b'I');
                self.path_reads.send_modify(|n| *n = n.saturating_sub(1));
                if let Some(Expect::SearchPath { schemas, failed }) = self.state.pop() {
                    if failed {
                        // Inside an aborted transaction: try again after its end.
                        self.path_changed_in_transaction = true;
                    } else {
                        self.search_path = schemas;
                        if idle {
                            self.path_changed_in_transaction = false;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
