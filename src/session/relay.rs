//! The steady state of a session: two pumps, one per direction, each reading
//! whole messages, handing them to its handler and writing the result.
//!
//! Output is written once per read batch: when every complete message that
//! arrived has been handled, the pump writes what it has before waiting for
//! more. So a pipeline of many small messages costs one write, and nothing
//! waits for a ReadyForQuery to be flushed (Flush, PortalSuspended and NOTIFY
//! go out at once). Memory per direction is bounded by the largest message
//! allowed plus the write threshold.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cancel::CancelGate;
use crate::wire::{Tag, WireError};

use super::SessionError;

/// Write out pending output once it grows past this, even mid-batch.
const WRITE_THRESHOLD: usize = 64 * 1024;
/// Minimum free space before a read.
const READ_CHUNK: usize = 16 * 1024;

pub use crate::wire::Flow;

/// Decides what goes out for each message that comes in.
pub trait MessageHandler {
    /// `msg` is one whole message (tag, length, body). Append what should be
    /// sent on to `out`: usually `msg` itself, byte for byte.
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError>;

    /// Before `msg` is handled: a count that must drop to zero first (the data path's
    /// outstanding search_path reads, which decide how the statement's names resolve).
    /// The pump writes what it holds, then waits, at most [`GATE_TIMEOUT`].
    fn gate(&self, msg: &[u8]) -> Option<tokio::sync::watch::Receiver<u32>> {
        let _ = msg;
        None
    }
}

/// How long a gated message waits before it is handled anyway (the data path then
/// analyses it under what it knows, and schema-qualified rewriting keeps that safe).
pub const GATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a pump ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The reading side closed cleanly between messages.
    Eof,
    /// The handler asked to stop.
    Stopped,
}

/// Byte counters for the session log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub bytes: u64,
    pub messages: u64,
}

/// Relays whole messages from `reader` to `writer` through `handler` until EOF or Stop.
/// With `hold`, nothing is written while a cancel for this session is being delivered
/// upstream (see [`CancelGate`]).
pub async fn pump<R, W, H>(
    reader: &mut R,
    mut rbuf: BytesMut,
    writer: &mut W,
    handler: &mut H,
    max_len: usize,
    traffic: &mut Traffic,
    hold: Option<&CancelGate>,
) -> Result<PumpEnd, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    H: MessageHandler,
{
    let mut wbuf = BytesMut::with_capacity(WRITE_THRESHOLD + READ_CHUNK);
    loop {
        let mut pos = 0usize;
        let mut stop = false;
        let mut need = 0usize;
        loop {
            let total = match next_message(&rbuf[pos..], max_len)? {
                Next::Whole(total) => total,
                Next::Short(missing) => {
                    need = missing;
                    break;
                }
            };
            if let Some(mut gate) = handler.gate(&rbuf[pos..pos + total]) {
                write_out(writer, &mut wbuf, None, true).await?;
                let _ = tokio::time::timeout(GATE_TIMEOUT, gate.wait_for(|n| *n == 0)).await;
            }
            let flow = handler.on_message(&rbuf[pos..pos + total], &mut wbuf)?;
            pos += total;
            traffic.messages += 1;
            if flow == Flow::Stop {
                stop = true;
                break;
            }
            if wbuf.len() >= WRITE_THRESHOLD {
                write_out(writer, &mut wbuf, hold, false).await?;
            }
        }
        traffic.bytes += pos as u64;
        rbuf.advance(pos);
        write_out(writer, &mut wbuf, hold, true).await?;
        if stop {
            return Ok(PumpEnd::Stopped);
        }
        rbuf.reserve(need.max(READ_CHUNK));
        let n = reader.read_buf(&mut rbuf).await?;
        if n == 0 {
            return if rbuf.is_empty() {
                Ok(PumpEnd::Eof)
            } else {
                Err(SessionError::Wire(WireError::Truncated))
            };
        }
    }
}

/// What the unread bytes of a read buffer start with.
#[derive(Debug, PartialEq)]
enum Next {
    /// A whole message of this many bytes (tag included).
    Whole(usize),
    /// Part of one: at least this many more bytes are needed (0: the header is incomplete).
    Short(usize),
}

/// Checks the header of the message at the start of `buf`: a length below 4 or a message
/// over `max_len` is a wire error, before any of it is handled.
fn next_message(buf: &[u8], max_len: usize) -> Result<Next, SessionError> {
    let Some(head) = buf.get(..5) else {
        return Ok(Next::Short(0));
    };
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as i64;
    if len < 4 {
        return Err(SessionError::Wire(WireError::InvalidLength {
            tag: head[0] as char,
            len,
        }));
    }
    let total = len as usize + 1;
    if total > max_len {
        return Err(SessionError::Wire(WireError::TooLarge {
            len: total,
            limit: max_len,
        }));
    }
    Ok(if buf.len() < total {
        Next::Short(total - buf.len())
    } else {
        Next::Whole(total)
    })
}

/// Writes what `wbuf` holds (if anything), first waiting for a cancel being delivered
/// (`hold`), and flushes when `flush`.
async fn write_out<W: AsyncWrite + Unpin>(
    writer: &mut W,
    wbuf: &mut BytesMut,
    hold: Option<&CancelGate>,
    flush: bool,
) -> Result<(), SessionError> {
    if wbuf.is_empty() {
        return Ok(());
    }
    if let Some(g) = hold {
        g.wait_delivered().await;
    }
    writer.write_all(wbuf).await?;
    if flush {
        writer.flush().await?;
    }
    wbuf.clear();
    Ok(())
}

/// Client → upstream, for the proxy core: every valid frontend message goes
/// through untouched; an unknown type ends the session as PostgreSQL would.
pub struct FrontendRelay;

impl MessageHandler for FrontendRelay {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        match Tag(msg[0]) {
            Tag::QUERY
            | Tag::PARSE
            | Tag::BIND
            | Tag::DESCRIBE
            | Tag::EXECUTE
            | Tag::CLOSE
            | Tag::SYNC
            | Tag::FLUSH
            | Tag::FUNCTION_CALL
            | Tag::COPY_DATA
            | Tag::COPY_DONE
            | Tag::COPY_FAIL => {
                out.extend_from_slice(msg);
                Ok(Flow::Continue)
            }
            Tag::TERMINATE => {
                out.extend_from_slice(msg);
                Ok(Flow::Stop)
            }
            Tag(other) => Err(SessionError::UnknownFrontendMessage(other)),
        }
    }
}

/// Upstream → client, for the proxy core: everything goes through untouched.
pub struct BackendRelay;

impl MessageHandler for BackendRelay {
    fn on_message(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, SessionError> {
        out.extend_from_slice(msg);
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn forwards_byte_for_byte_and_stops_at_terminate() {
        let mut input = Vec::new();
        input.extend(msg(b'Q', b"select 1\0"));
        input.extend(msg(b'P', b"\0select $1\0\0\0"));
        input.extend(msg(b'S', b""));
        input.extend(msg(b'X', b""));
        input.extend(msg(b'Q', b"never\0"));
        let mut out = Vec::new();
        let mut t = Traffic::default();
        let end = pump(
            &mut &input[..],
            BytesMut::new(),
            &mut out,
            &mut FrontendRelay,
            1 << 20,
            &mut t,
            None,
        )
        .await
        .unwrap();
        assert!(matches!(end, PumpEnd::Stopped));
        let expected_len = input.len() - msg(b'Q', b"never\0").len();
        assert_eq!(out, input[..expected_len]);
        assert_eq!(t.messages, 4);
    }

    #[tokio::test]
    async fn unknown_frontend_type_is_refused() {
        let input = msg(b'z', b"");
        let mut out = Vec::new();
        let err = pump(
            &mut &input[..],
            BytesMut::new(),
            &mut out,
            &mut FrontendRelay,
            1 << 20,
            &mut Traffic::default(),
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SessionError::UnknownFrontendMessage(b'z')));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn truncated_message_is_an_error_and_oversized_is_refused() {
        let mut input = msg(b'Q', b"select 1\0");
        input.truncate(7);
        let r = pump(
            &mut &input[..],
            BytesMut::new(),
            &mut Vec::new(),
            &mut BackendRelay,
            1 << 20,
            &mut Traffic::default(),
            None,
        )
        .await;
        assert!(matches!(r, Err(SessionError::Wire(WireError::Truncated))));
        let huge = b"d\x7f\xff\xff\xff".to_vec();
        let r = pump(
            &mut &huge[..],
            BytesMut::new(),
            &mut Vec::new(),
            &mut BackendRelay,
            1 << 20,
            &mut Traffic::default(),
            None,
        )
        .await;
        assert!(matches!(
            r,
            Err(SessionError::Wire(WireError::TooLarge { .. }))
        ));
    }

    #[test]
    fn message_headers_are_checked_before_the_body_arrives() {
        assert_eq!(next_message(b"", 100).unwrap(), Next::Short(0));
        assert_eq!(next_message(b"Q\0\0", 100).unwrap(), Next::Short(0));
        assert_eq!(next_message(b"Q\0\0\0\x06a", 100).unwrap(), Next::Short(1));
        assert_eq!(next_message(b"Q\0\0\0\x06ab", 100).unwrap(), Next::Whole(7));
        assert_eq!(
            next_message(b"Q\0\0\0\x06abQ", 100).unwrap(),
            Next::Whole(7)
        );
        assert_eq!(next_message(b"S\0\0\0\x04", 100).unwrap(), Next::Whole(5));
        assert!(matches!(
            next_message(b"Q\0\0\0\x03", 100),
            Err(SessionError::Wire(WireError::InvalidLength {
                tag: 'Q',
                len: 3
            }))
        ));
        assert!(matches!(
            next_message(b"Q\xff\xff\xff\xff", 100),
            Err(SessionError::Wire(WireError::InvalidLength { len: -1, .. }))
        ));
        // Refused from the header alone, before the body is read.
        assert!(matches!(
            next_message(b"d\0\0\0\x64", 100),
            Err(SessionError::Wire(WireError::TooLarge {
                len: 101,
                limit: 100
            }))
        ));
    }

    #[tokio::test]
    async fn leftover_bytes_from_startup_are_relayed_first() {
        let first = msg(b'Q', b"a\0");
        let second = msg(b'Q', b"b\0");
        let mut out = Vec::new();
        pump(
            &mut &second[..],
            BytesMut::from(&first[..]),
            &mut out,
            &mut BackendRelay,
            1 << 20,
            &mut Traffic::default(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(out, [first, second].concat());
    }
}
