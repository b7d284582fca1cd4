//! Framing: cutting a byte stream into whole protocol messages.
//!
//! A [`Frame`] is one complete message (tag, length and body) held in a single
//! `Bytes`. Frames that nobody needs to rewrite are forwarded as these exact
//! bytes; this module never decodes message bodies.

use bytes::{Buf, Bytes, BytesMut};

use super::{Tag, WireError};

/// One whole protocol message: `bytes` holds tag, length and body.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl std::fmt::Debug for Frame {
    // Never print the bytes: a message may carry a plaintext parameter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &self.message_tag())
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Frame {
    /// Wraps already-encoded message bytes. The caller guarantees a valid header.
    pub fn from_encoded(bytes: Bytes) -> Frame {
        debug_assert!(bytes.len() >= 5);
        Frame { bytes }
    }

    /// The message type byte, raw. Prefer [`Frame::message_tag`]; this goes once the
    /// callers that still match on bytes have moved to [`Tag`].
    pub fn tag(&self) -> u8 {
        self.bytes.first().copied().unwrap_or(0)
    }

    /// The message type.
    pub fn message_tag(&self) -> Tag {
        Tag(self.tag())
    }

    /// The message body, after the tag and the length word.
    pub fn body(&self) -> &[u8] {
        self.bytes.get(5..).unwrap_or(&[])
    }

    /// The body as a cheap `Bytes` slice of the same buffer.
    pub fn body_bytes(&self) -> Bytes {
        if self.bytes.len() >= 5 {
            self.bytes.slice(5..)
        } else {
            Bytes::new()
        }
    }

    /// The whole message as it travels on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Cuts the next complete message off the front of `buf`, if one is there.
///
/// The length word is checked against `max_len` before any memory is reserved,
/// so a hostile length cannot make us allocate. On `Ok(None)` the buffer holds
/// a partial message and `buf` has been given capacity for the rest of it.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
    if len < 4 {
        return Err(WireError::InvalidLength {
            tag: tag as char,
            len,
        });
    }
    let total = len as usize + 1;
    if total > max_len {
        return Err(WireError::TooLarge {
            len: total,
            limit: max_len,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        bytes: buf.split_to(total).freeze(),
    }))
}

/// A cursor over a message body for the few messages we decode.
pub struct BodyReader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> BodyReader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        BodyReader { buf, what }
    }

    fn malformed(&self) -> WireError {
        WireError::Malformed { what: self.what }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        if self.buf.is_empty() {
            return Err(self.malformed());
        }
        Ok(self.buf.get_u8())
    }

    pub fn i16(&mut self) -> Result<i16, WireError> {
        if self.buf.len() < 2 {
            return Err(self.malformed());
        }
        Ok(self.buf.get_i16())
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        if self.buf.len() < 4 {
            return Err(self.malformed());
        }
        Ok(self.buf.get_i32())
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.malformed());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A NUL-terminated string, without the NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let pos = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed())?;
        let (s, tail) = self.buf.split_at(pos);
        self.buf = &tail[1..];
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IQ\0\0"[..]);
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.message_tag(), Tag::READY_FOR_QUERY);
        assert_eq!(f.body(), b"I");
        assert!(split_frame(&mut buf, 1024).unwrap().is_none());
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn hostile_length_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1 << 20),
            Err(WireError::TooLarge { .. })
        ));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn length_below_four_is_malformed() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02"[..]);
        assert!(matches!(
            split_frame(&mut buf, 1024),
            Err(WireError::InvalidLength { .. })
        ));
        let mut neg = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(split_frame(&mut neg, 1024).is_err());
    }

    #[test]
    fn body_reader_never_reads_past_the_end() {
        let mut r = BodyReader::new(b"ab\0\x01", "test");
        assert_eq!(r.cstr().unwrap(), b"ab");
        assert_eq!(r.u8().unwrap(), 1);
        assert!(r.u8().is_err());
        assert!(r.i32().is_err());
        assert!(r.cstr().is_err());
    }
}
