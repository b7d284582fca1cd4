//! A tiny hand-written PostgreSQL frontend for protocol cases no driver produces: Flush without
//! Sync, protocol 3.2 startups, GSSENCRequest, bytes pipelined after SSLRequest, and malformed
//! input. Builders in [`fe`] make frontend messages; [`RawConn`] reads backend messages.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::HANG_TIMEOUT;

/// Frontend message builders. Each returns the complete bytes of one message.
pub mod fe {
    use bytes::{BufMut, BytesMut};

    pub const PROTOCOL_3_0: u32 = 3 << 16;
    pub const PROTOCOL_3_2: u32 = (3 << 16) | 2;
    pub const SSL_REQUEST: u32 = 80877103;
    pub const GSSENC_REQUEST: u32 = 80877104;
    pub const CANCEL_REQUEST: u32 = 80877102;

    fn cstr(buf: &mut BytesMut, s: &str) {
        buf.put_slice(s.as_bytes());
        buf.put_u8(0);
    }

    /// A message with a type byte: tag, Int32 length (self-inclusive), body.
    pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(body.len() + 5);
        buf.put_u8(tag);
        buf.put_i32(body.len() as i32 + 4);
        buf.put_slice(body);
        buf.to_vec()
    }

    /// An untagged startup-phase packet: Int32 length, Int32 code, rest.
    pub fn untagged(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_i32(rest.len() as i32 + 8);
        buf.put_u32(code);
        buf.put_slice(rest);
        buf.to_vec()
    }

    pub fn startup(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
        let mut rest = BytesMut::new();
        for (k, v) in params {
            cstr(&mut rest, k);
            cstr(&mut rest, v);
        }
        rest.put_u8(0);
        untagged(version, &rest)
    }

    pub fn ssl_request() -> Vec<u8> {
        untagged(SSL_REQUEST, &[])
    }

    pub fn gssenc_request() -> Vec<u8> {
        untagged(GSSENC_REQUEST, &[])
    }

    pub fn cancel_request(pid: i32, key: i32) -> Vec<u8> {
        let mut rest = BytesMut::new();
        rest.put_i32(pid);
        rest.put_i32(key);
        untagged(CANCEL_REQUEST, &rest)
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut body = BytesMut::new();
        cstr(&mut body, sql);
        frame(b'Q', &body)
    }

    pub fn parse(name: &str, sql: &str, param_types: &[u32]) -> Vec<u8> {
        let mut body = BytesMut::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.put_i16(param_types.len() as i16);
        for t in param_types {
            body.put_u32(*t);
        }
        frame(b'P', &body)
    }

    /// Bind with all parameters in text format and the given result format codes.
    pub fn bind(
        portal: &str,
        statement: &str,
        params: &[Option<&[u8]>],
        result_formats: &[i16],
    ) -> Vec<u8> {
        let mut body = BytesMut::new();
        cstr(&mut body, portal);
        cstr(&mut body, statement);
        body.put_i16(0);
        body.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    body.put_i32(v.len() as i32);
                    body.put_slice(v);
                }
                None => body.put_i32(-1),
            }
        }
        body.put_i16(result_formats.len() as i16);
        for f in result_formats {
            body.put_i16(*f);
        }
        frame(b'B', &body)
    }

    /// Describe a statement (`b'S'`) or portal (`b'P'`).
    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u8(kind);
        cstr(&mut body, name);
        frame(b'D', &body)
    }

    pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
        let mut body = BytesMut::new();
        cstr(&mut body, portal);
        body.put_i32(max_rows);
        frame(b'E', &body)
    }

    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u8(kind);
        cstr(&mut body, name);
        frame(b'C', &body)
    }

    pub fn sync() -> Vec<u8> {
        frame(b'S', &[])
    }

    pub fn flush() -> Vec<u8> {
        frame(b'H', &[])
    }

    pub fn terminate() -> Vec<u8> {
        frame(b'X', &[])
    }

    /// FunctionCall ('F') with binary arguments and a binary result.
    pub fn function_call(oid: u32, args: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = BytesMut::new();
        body.put_u32(oid);
        body.put_i16(1);
        body.put_i16(1);
        body.put_i16(args.len() as i16);
        for a in args {
            match a {
                Some(v) => {
                    body.put_i32(v.len() as i32);
                    body.put_slice(v);
                }
                None => body.put_i32(-1),
            }
        }
        body.put_i16(1);
        frame(b'F', &body)
    }

    /// Concatenates messages into one write (a pipeline).
    pub fn concat(messages: &[Vec<u8>]) -> Vec<u8> {
        messages.concat()
    }
}

/// One backend message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Bytes,
}

impl Msg {
    /// Fields of an ErrorResponse/NoticeResponse, keyed by field type ('S', 'C', 'M', ...).
    pub fn fields(&self) -> BTreeMap<char, String> {
        let mut out = BTreeMap::new();
        for part in self.body.split(|b| *b == 0) {
            if let Some((&kind, text)) = part.split_first() {
                out.insert(kind as char, String::from_utf8_lossy(text).into_owned());
            }
        }
        out
    }

    pub fn sqlstate(&self) -> Option<String> {
        self.fields().get(&'C').cloned()
    }

    /// The non-localized severity ('V'), falling back to 'S'.
    pub fn severity(&self) -> Option<String> {
        let f = self.fields();
        f.get(&'V').or_else(|| f.get(&'S')).cloned()
    }

    /// Text columns of a DataRow (None for NULL).
    pub fn data_row(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let mut body = self.body.clone();
        let n = body.get_i16();
        (0..n)
            .map(|_| {
                let len = body.get_i32();
                if len < 0 {
                    None
                } else {
                    let v = body.split_to(len as usize);
                    Some(String::from_utf8_lossy(&v).into_owned())
                }
            })
            .collect()
    }
}

/// The tags of `msgs` as a string, e.g. "12TDCZ", for compact assertions.
pub fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// A raw connection to the proxy (or PostgreSQL).
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    pub async fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: BytesMut::with_capacity(8192),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Like [`RawConn::send`] but tolerates a peer that already closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Half-closes our side: the peer reads EOF.
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads more bytes; 0 at EOF. A reset counts as EOF.
    async fn fill(&mut self) -> usize {
        self.stream
            .read_buf(&mut self.buf)
            .await
            .unwrap_or_default()
    }

    /// One byte (the answer to SSLRequest/GSSENCRequest); None at EOF. Panics on a hang.
    pub async fn recv_byte(&mut self) -> Option<u8> {
        timeout(HANG_TIMEOUT, async {
            while self.buf.is_empty() {
                if self.fill().await == 0 {
                    return None;
                }
            }
            Some(self.buf.get_u8())
        })
        .await
        .expect("no answer within the hang timeout")
    }

    /// The next backend message, or None at EOF; Err on timeout.
    pub async fn recv_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<Msg>, tokio::time::error::Elapsed> {
        timeout(limit, async {
            loop {
                if self.buf.len() >= 5 {
                    let len =
                        i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                    assert!(
                        (4..64 << 20).contains(&len),
                        "implausible backend message length {len}"
                    );
                    let total = len as usize + 1;
                    if self.buf.len() >= total {
                        let mut frame = self.buf.split_to(total).freeze();
                        let tag = frame.get_u8();
                        frame.advance(4);
                        return Some(Msg { tag, body: frame });
                    }
                }
                if self.fill().await == 0 {
                    return None;
                }
            }
        })
        .await
    }

    /// The next backend message or None at EOF. Panics if nothing arrives in time.
    pub async fn recv(&mut self) -> Option<Msg> {
        self.recv_within(HANG_TIMEOUT)
            .await
            .expect("backend message did not arrive (hang)")
    }

    /// The next message, which must have tag `tag`.
    pub async fn expect(&mut self, tag: u8) -> Msg {
        let msg = self
            .recv()
            .await
            .unwrap_or_else(|| panic!("EOF while expecting '{}'", tag as char));
        assert_eq!(msg.tag, tag, "expected '{}', got {msg:?}", tag as char);
        msg
    }

    /// Messages up to and including the first with tag `tag`.
    pub async fn recv_until(&mut self, tag: u8) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let msg = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("EOF before '{}': got {}", tag as char, tags(&out)));
            let done = msg.tag == tag;
            out.push(msg);
            if done {
                return out;
            }
        }
    }

    /// Every remaining byte until the peer closes; Err if it does not close within `limit`.
    pub async fn read_to_eof(
        &mut self,
        limit: Duration,
    ) -> Result<Vec<u8>, tokio::time::error::Elapsed> {
        timeout(limit, async {
            while self.fill().await > 0 {}
            self.buf.split().to_vec()
        })
        .await
    }

    /// Protocol 3.0 startup as a role that pg_hba admits by trust; returns the messages up to
    /// and including ReadyForQuery. Panics on an ErrorResponse or authentication request.
    pub async fn startup_trust(&mut self, user: &str, db: &str) -> Vec<Msg> {
        self.send(&fe::startup(
            fe::PROTOCOL_3_0,
            &[("user", user), ("database", db)],
        ))
        .await;
        self.expect_startup_ok().await
    }

    /// Reads the startup answer: AuthenticationOk, ..., ReadyForQuery (no password asked).
    pub async fn expect_startup_ok(&mut self) -> Vec<Msg> {
        let msgs = self.recv_until(b'Z').await;
        for m in &msgs {
            assert_ne!(m.tag, b'E', "startup failed: {:?}", m.fields());
            if m.tag == b'R' {
                assert_eq!(
                    &m.body[..],
                    &[0, 0, 0, 0],
                    "expected AuthenticationOk for a trust role"
                );
            }
        }
        msgs
    }

    /// (pid, key) from the BackendKeyData among `msgs`.
    pub fn backend_key(msgs: &[Msg]) -> (i32, i32) {
        let m = msgs
            .iter()
            .find(|m| m.tag == b'K')
            .expect("no BackendKeyData");
        let mut b = m.body.clone();
        (b.get_i32(), b.get_i32())
    }
}

/// Encodes an i32 as 4 big-endian bytes (binary int4).
pub fn int4(v: i32) -> [u8; 4] {
    v.to_be_bytes()
}
