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
    decode_data_row, decode_error_fields, encode_close, encode_execute, encode_sync, Bind, Parse,
    Target,
};
use crate::wire::messages::field;
use crate::wire::Tag;

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
    out.extend_from_slice(&encode_close(Target::PORTAL, SEARCH_PATH_NAME));
    out.extend_from_slice(&encode_close(Target::STATEMENT, SEARCH_PATH_NAME));
    out.extend_from_slice(&encode_sync());
    out
}

/// Which words a statement text may contain, from one pass over its bytes: a
/// superset test (a word found as a case-insensitive substring anywhere, in a string,
/// comment or identifier too) that decides whether the exact text tests of
/// [`crate::sql::session_state`] need to run at all. Most statements contain none
/// of these words and are lexed once only, by the analysis' own name scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Words(u8);

impl Words {
    /// A word that may change name resolution (see [`resolution_change`]).
    const RESOLUTION: u8 = 1;
    /// `copy` (see [`may_start_copy`]).
    const COPY: u8 = 2;
    /// `prepare`, `deallocate` or `discard` (SQL-level prepared statements).
    const PREPARED: u8 = 4;
    /// `create` (functions and views the session creates).
    const CREATE: u8 = 8;

    /// The words of a statement text (its bytes as the client sent them),
    /// case-insensitively. Each position is dispatched on its first two letters, and
    /// only the words starting with them are compared.
    pub(super) fn of(text: &[u8]) -> Words {
        const R: u8 = Words::RESOLUTION;
        const PREPARED: u8 = Words::PREPARED;
        const ALL: u8 = Words::RESOLUTION | Words::COPY | Words::PREPARED | Words::CREATE;
        let mut found = 0u8;
        for (i, pair) in text.windows(2).enumerate() {
            // ASCII letters folded to lower case; other bytes never match a pair below.
            let candidates: &[(&[u8], u8)] = match (pair[0] | 0x20, pair[1] | 0x20) {
                (b'a', b'b') => &[(b"abort", R)],
                (b'a', b'u') => &[(b"authorization", R)],
                (b'c', b'o') => &[(b"commit", R), (b"copy", Words::COPY)],
                (b'c', b'r') => &[(b"create", Words::CREATE)],
                (b'd', b'i') => &[(b"discard", R | PREPARED)],
                (b'd', b'e') => &[(b"deallocate", PREPARED)],
                (b'e', b'n') => &[(b"end", R)],
                (b'p', b'r') => &[(b"prepare", R | PREPARED)],
                // "reset" also covers RESET ALL.
                (b'r', b'e') => &[(b"reset", R), (b"release", R)],
                (b'r', b'o') => &[(b"role", R), (b"rollback", R)],
                (b's', b'e') => &[(b"search_path", R), (b"set_config", R)],
                (b's', b'c') => &[(b"schema", R)],
                // "temp" covers "temporary".
                (b't', b'e') => &[(b"temp", R)],
                // A Unicode-escaped identifier may spell any of the words above.
                (b'u', b'&') => &[(b"u&\"", R)],
                _ => continue,
            };
            for (word, flags) in candidates {
                if found & flags != *flags
                    && text
                        .get(i..i + word.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(word))
                {
                    found |= flags;
                }
            }
            if found == ALL {
                break;
            }
        }
        Words(found)
    }

    pub(super) fn resolution(self) -> bool {
        self.0 & Words::RESOLUTION != 0
    }

    pub(super) fn copy(self) -> bool {
        self.0 & Words::COPY != 0
    }

    pub(super) fn prepared(self) -> bool {
        self.0 & Words::PREPARED != 0
    }

    pub(super) fn creates(self) -> bool {
        self.0 & Words::CREATE != 0
    }
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
    pub(super) fn note_resolution_change(&mut self, sql: &[u8], words: Words, parse: bool) {
        if parse && words.copy() && may_start_copy(&String::from_utf8_lossy(sql)) {
            // Its Execute may put the server in COPY FROM STDIN before the Sync arrives.
            self.copy_may_run = true;
        }
        if !words.resolution() {
            return;
        }
        match resolution_change(&String::from_utf8_lossy(sql)) {
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
    pub(super) fn refresh_after_query(&mut self, sql: &[u8], words: Words, out: &mut BytesMut) {
        if self.path_refresh_due && !(words.copy() && may_start_copy(&String::from_utf8_lossy(sql)))
        {
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
        let tag = Tag(msg[0]);
        match tag {
            Tag::PARAMETER_STATUS | Tag::NOTIFICATION_RESPONSE | Tag::NOTICE_RESPONSE => {
                out.extend_from_slice(msg)
            }
            Tag::DATA_ROW => {
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
            Tag::ERROR_RESPONSE => {
                // A FATAL or PANIC is about the session, not the read (the backend was
                // terminated, shut down, timed out): the client must see why it ends.
                if ends_session(msg) {
                    out.extend_from_slice(msg);
                }
                if let Some(Expect::SearchPath { failed, .. }) = self.state.front_mut() {
                    *failed = true;
                }
            }
            Tag::READY_FOR_QUERY => {
                let idle = msg.get(5) == Some(&crate::wire::messages::transaction_status::IDLE);
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

/// Whether an ErrorResponse's severity is FATAL or PANIC (the server ends the session).
fn ends_session(msg: &[u8]) -> bool {
    decode_error_fields(msg).is_ok_and(|fields| {
        fields.iter().any(|(code, v)| {
            matches!(*code, field::SEVERITY_NONLOCALIZED | field::SEVERITY)
                && matches!(&v[..], b"FATAL" | b"PANIC")
        })
    })
}

#[cfg(test)]
mod reply_tests {
    use bytes::{Bytes, BytesMut};

    use crate::datapath::testkit::{back, protection, session};
    use crate::wire::PgError;

    const POLICY: &str = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
";

    /// What reaches the client when the server answers pgcloak's first search_path read
    /// with `reply`.
    fn client_sees(reply: &[Bytes]) -> Vec<u8> {
        let prot = protection(POLICY, 1);
        let (mut dp, _) = session(&prot, &["r"]);
        let mut upstream = BytesMut::new();
        dp.read_search_path_at_start(&mut upstream);
        assert!(!upstream.is_empty(), "the read was injected");
        back(&mut dp, reply).into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn a_fatal_in_reply_to_the_injected_read_reaches_the_client() {
        // pg_terminate_backend of a session whose first read was still unanswered: the
        // client must learn why its session ends (it saw nothing before, then EOF).
        let fatal = PgError::fatal(
            "57P01",
            "terminating connection due to administrator command",
        );
        assert_eq!(client_sees(&[fatal.encode()]), b"E");
    }

    #[test]
    fn an_error_in_reply_to_the_injected_read_stays_pgcloaks() {
        let error = PgError::error("25P02", "current transaction is aborted");
        let ready = Bytes::from_static(b"Z\0\0\0\x05E");
        assert_eq!(client_sees(&[error.encode(), ready]), b"");
    }
}

#[cfg(test)]
mod tests {
    use super::Words;
    use crate::sql::session_state::{
        created_functions, may_start_copy, prepared_changes, resolution_change, ResolutionChange,
    };

    /// The one-pass word test never says "no" where the exact text tests would say "yes".
    #[test]
    fn words_are_a_superset_of_the_text_tests() {
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "SET search_path TO a, b",
            "set SEARCH_PATH = x",
            "SELECT pg_catalog.SET_CONFIG('search_path', 'x', false)",
            "RESET ALL",
            "DISCARD ALL",
            "SET ROLE app",
            "SET SESSION AUTHORIZATION app",
            "CREATE TEMP TABLE t (a int)",
            "create temporary table t (a int)",
            "CREATE SCHEMA s",
            "COMMIT",
            "rollback to savepoint a",
            "ABORT",
            "END",
            "RELEASE SAVEPOINT a",
            "PREPARE TRANSACTION 'x'",
            "PREPARE q(int) AS SELECT $1",
            "DEALLOCATE q",
            "deallocate prepare all",
            "COPY t FROM STDIN",
            "copy t to stdout",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "create or replace view v as select 1",
            "/* c */ Commit",
            "SET U&\"\\0073earch_path\" TO shadow",
            "BEGIN; SELECT 1; END;",
        ];
        for t in texts {
            let w = Words::of(t.as_bytes());
            if resolution_change(t) != ResolutionChange::None {
                assert!(w.resolution(), "{t}");
            }
            if may_start_copy(t) {
                assert!(w.copy(), "{t}");
            }
            if !prepared_changes(t).is_empty() {
                assert!(w.prepared(), "{t}");
            }
            if !created_functions(t).is_empty() {
                assert!(w.creates(), "{t}");
            }
        }
        // Statements assembled from keywords in mixed case, fragments and punctuation.
        let parts = [
            "SeT",
            " ",
            "search_PATH",
            "=",
            "x",
            ";",
            "ReSeT",
            "ALL",
            "rolE",
            "ROLLback",
            "end",
            "Copy",
            "from",
            "stdin",
            "prepare",
            "q",
            "AS",
            "select",
            "1",
            "deALLocate",
            "discard",
            "create",
            "FUNCTION",
            "f()",
            "temp",
            "TEMPORARY",
            "schema",
            "abort",
            "commit",
            "release",
            "authorization",
            "'",
            "\"",
            "--",
            "\n",
            "/*",
            "*/",
            "$$",
            "(",
            ")",
            "set_config",
            "'search_path'",
            ",",
            "ée",
            "_",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut t = String::new();
            for _ in 0..(seed % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                t.push_str(parts[(seed % parts.len() as u64) as usize]);
                if seed % 3 == 0 {
                    t.push(' ');
                }
            }
            let w = Words::of(t.as_bytes());
            assert!(
                resolution_change(&t) == ResolutionChange::None || w.resolution(),
                "{t}"
            );
            assert!(!may_start_copy(&t) || w.copy(), "{t}");
            assert!(prepared_changes(&t).is_empty() || w.prepared(), "{t}");
            assert!(created_functions(&t).is_empty() || w.creates(), "{t}");
        }
        // The common statement needs none of them.
        assert_eq!(
            Words::of(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"),
            Words::default()
        );
        assert_eq!(
            Words::of(b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 7"),
            Words::default()
        );
    }
}
