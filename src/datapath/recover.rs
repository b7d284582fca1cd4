//! Bad values end the statement, not the session.
//!
//! A literal, parameter or COPY row that cannot be encoded for a protected column
//! (`'abc'` for an int4 column, an invalid date, bytes that are not valid in the
//! client encoding) must fail the way PostgreSQL's own input error would: an
//! ERROR for that statement, with the server's transaction state following it
//! (an explicit transaction is aborted, a pipeline skips to Sync, a COPY FROM
//! commits nothing). The session goes on.
//!
//! The frontend half already turns most refusals into a failure raised by the
//! server itself (see `inject_simple_failure` / `inject_extended_failure`), so the
//! server's transaction state is exactly what it would be for its own error.
//! [`DataPath::on_client`] is the session's entry point: it catches what is still
//! raised as an error, and turns it into the same kind of failure. Only a
//! malformed message ([`DataPathError::Wire`]) still ends the session: after it,
//! client and proxy no longer agree where messages begin.
//!
//! COPY FROM STDIN: a row that cannot be encoded makes pgcloak send CopyFail
//! upstream in place of the row (the server aborts the COPY, nothing is
//! committed), drop the client's remaining CopyData (it may hold plaintext) until
//! its CopyDone/CopyFail, and give the client the server's ErrorResponse with
//! pgcloak's SQLSTATE and message in place of the server's "COPY from stdin failed".

use bytes::{BufMut, BytesMut};

use super::state::FailedCopyInput;
use super::{DataPath, DataPathError};
use crate::wire::{Flow, Tag};

impl DataPath {
    /// Handles one client message (the session's entry point): [`Self::on_frontend`]
    /// with bad values turned into statement errors.
    pub fn on_client(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, DataPathError> {
        let tag = Tag(msg[0]);
        self.apply_catalog_updates();
        if self.state.after_failed_copy(tag) == FailedCopyInput::Drop {
            return Ok(Flow::Continue);
        }
        let mark = out.len();
        let r = match self.on_frontend(msg, out) {
            Err(e) if !e.ends_session() => {
                out.truncate(mark);
                self.recover(tag, &e, out);
                Ok(Flow::Continue)
            }
            r => r,
        };
        // The insider guard closes the session (a honeytoken under `deny`): nothing of
        // this message goes upstream, the client gets the error as FATAL.
        match self.guard_closed.take() {
            Some(g) => {
                out.truncate(mark);
                Err(DataPathError::Guard(g))
            }
            None => r,
        }
    }

    /// A refusal that must close the session is remembered where it was turned into
    /// a statement failure, and raised by [`Self::on_client`].
    pub(super) fn note_guard_close(&mut self, err: &DataPathError) {
        if let DataPathError::Guard(g) = err {
            if g.ends_session() {
                self.guard_closed = Some(g.clone());
            }
        }
    }

    fn recover(&mut self, tag: Tag, err: &DataPathError, out: &mut BytesMut) {
        match tag {
            Tag::QUERY => self.inject_simple_failure(err, out),
            Tag::COPY_DATA | Tag::COPY_DONE => self.fail_copy_in(err, out),
            _ => self.inject_extended_failure(err, out),
        }
    }

    /// Aborts the COPY FROM STDIN in progress with pgcloak's error.
    fn fail_copy_in(&mut self, err: &DataPathError, out: &mut BytesMut) {
        err.report(&self.sink);
        // Until the client's own CopyDone/CopyFail ('c' itself ends it here).
        self.state.fail_copy_in(err.to_pg());
        let reason = b"pgcloak: a COPY row cannot be encoded for a protected column";
        out.put_u8(Tag::COPY_FAIL.byte());
        out.put_i32((reason.len() + 5) as i32);
        out.put_slice(reason);
        out.put_u8(0);
    }
}

impl DataPathError {
    /// Whether the session cannot go on after this error: only when the client's
    /// messages no longer parse (framing lost). Everything else fails a statement.
    pub fn ends_session(&self) -> bool {
        match self {
            DataPathError::Guard(g) => g.ends_session(),
            e => matches!(e, DataPathError::Wire(_)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::super::testkit::{back, contains, frames, protection, session};
    use super::super::DataPath;
    use crate::wire::extended::{encode_query, Bind, Parse};

    const POLICY: &str = "version: 1
tables:
  public.t:
    a: { type: text, encryption: deterministic, access: { r: plaintext } }
    b: { type: int4, access: { r: plaintext } }
    c: { type: date, access: { r: plaintext } }
";

    fn msg(tag: u8, body: &[u8]) -> Bytes {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        Bytes::from(m)
    }

    fn client(dp: &mut DataPath, msgs: &[Bytes]) -> Vec<(u8, Bytes)> {
        let mut out = BytesMut::new();
        for m in msgs {
            dp.on_client(m, &mut out).expect("the session must go on");
        }
        frames(&out)
    }

    fn all(frames: &[(u8, Bytes)]) -> Vec<u8> {
        frames.iter().flat_map(|(_, m)| m.to_vec()).collect()
    }

    #[test]
    fn a_bad_literal_fails_its_statement_and_keeps_the_ones_before() {
        let prot = protection(POLICY, 1);
        for (sql, state) in [
            (
                "BEGIN; INSERT INTO t (id, a, b) VALUES (1, 'SECRET-A1', 'abc')",
                "22P02",
            ),
            (
                "BEGIN; INSERT INTO t (id, a, c) VALUES (1, 'SECRET-A1', '2024-02-30')",
                "22008",
            ),
            (
                "BEGIN; INSERT INTO t (id, a, c) VALUES (1, 'SECRET-A1', 'yesterday-ish')",
                "22007",
            ),
            (
                "BEGIN; UPDATE t SET b = '12x' WHERE a = 'SECRET-A1'",
                "22P02",
            ),
            (
                "BEGIN;INSERT INTO t (id, b) VALUES (2, '99999999999'); SELECT 1",
                "22003",
            ),
        ] {
            let (mut dp, _) = session(&prot, &["r"]);
            let up = client(&mut dp, &[encode_query(sql.as_bytes())]);
            assert_eq!(up.len(), 1, "{sql}");
            let text = String::from_utf8_lossy(&up[0].1[5..]).into_owned();
            assert!(text.starts_with("BEGIN;"), "{sql}: {text}");
            assert!(
                text.contains(&format!("ERRCODE = '{state}'")),
                "{sql}: {text}"
            );
            assert!(
                !text.contains("SECRET-A1"),
                "plaintext went upstream: {text}"
            );
            assert!(
                !text.contains("SELECT 1"),
                "{sql}: later statements must not run"
            );
            // The server's answer passes through with the transaction state it reports.
            let out = back(
                &mut dp,
                &[
                    msg(b'C', b"BEGIN\0"),
                    msg(b'E', b"SERROR\0C22P02\0Mx\0"),
                    msg(b'Z', b"E"),
                ],
            );
            let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
            assert_eq!(tags, b"CEZ");
            assert_eq!(&out[2].1[5..], b"E");
        }
    }

    #[test]
    fn a_bad_parameter_fails_the_pipeline_until_sync() {
        let prot = protection(POLICY, 1);
        let (mut dp, _) = session(&prot, &["r"]);
        let parse = Parse {
            name: String::new(),
            sql: b"INSERT INTO t (id, b) VALUES ($1, $2)".to_vec(),
            param_types: vec![],
        }
        .encode();
        let bind = Bind {
            portal: String::new(),
            statement: String::new(),
            param_formats: vec![],
            params: vec![
                Some(Bytes::from_static(b"1")),
                Some(Bytes::from_static(b"abc")),
            ],
            result_formats: vec![],
        }
        .encode();
        let exec = crate::wire::extended::encode_execute("", 0);
        let up = client(&mut dp, &[parse, bind, exec.clone(), exec, msg(b'S', b"")]);
        let tags: Vec<u8> = up.iter().map(|(t, _)| *t).collect();
        // Parse, then the injected failure (Parse/Bind/Execute of a DO), then Sync.
        assert_eq!(tags, b"PPBES", "{tags:?}");
        assert!(contains(&all(&up), b"ERRCODE = '22P02'"));
    }

    #[test]
    fn a_bad_copy_row_fails_the_copy_and_drops_the_rest() {
        let prot = protection(POLICY, 1);
        let (mut dp, _) = session(&prot, &["r"]);
        let up = client(&mut dp, &[encode_query(b"COPY t (id, a, b) FROM STDIN")]);
        assert_eq!(up.len(), 1);
        back(&mut dp, &[msg(b'G', b"\0\0\x03\0\0\0\0\0\0")]);
        let up = client(
            &mut dp,
            &[
                msg(b'd', b"1\tSECRET-ROW1\t5\n"),
                msg(b'd', b"2\tSECRET-ROW2\tnot-a-number\n3\tSECRET-ROW3\t7\n"),
                msg(b'd', b"4\tSECRET-ROW4\t8\n"),
                msg(b'c', b""),
            ],
        );
        let tags: Vec<u8> = up.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"df", "{tags:?}");
        let sent = all(&up);
        for s in ["SECRET-ROW1", "SECRET-ROW2", "SECRET-ROW3", "SECRET-ROW4"] {
            assert!(!contains(&sent, s.as_bytes()), "{s} went upstream");
        }
        let out = back(
            &mut dp,
            &[
                msg(b'E', b"SERROR\0C57014\0MCOPY from stdin failed: pgcloak\0"),
                msg(b'Z', b"I"),
            ],
        );
        let tags: Vec<u8> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, b"EZ");
        assert!(contains(&out[0].1, b"C22P02"));
        assert!(!contains(&out[0].1, b"57014"));
        // The next statement is handled normally.
        let up = client(&mut dp, &[encode_query(b"SELECT 1")]);
        assert_eq!(up.len(), 1);
        assert_eq!(&up[0].1[5..13], b"SELECT 1");
    }

    #[test]
    fn a_malformed_message_still_ends_the_session() {
        let prot = protection(POLICY, 1);
        let (mut dp, _) = session(&prot, &["r"]);
        let mut out = BytesMut::new();
        assert!(dp.on_client(&msg(b'B', b"\0"), &mut out).is_err());
    }
}
