//! Buffered frame reading for the startup and authentication phases.
//!
//! The buffer is handed on to the relay afterwards, so bytes that arrived
//! together with the last authentication message are never lost.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::wire::{split_frame, Frame, WireError};

pub struct FrameReader {
    pub buf: BytesMut,
    max_len: usize,
}

impl FrameReader {
    pub fn new(max_len: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(16 * 1024),
            max_len,
        }
    }

    /// The next whole message, or None on a clean end of stream between messages.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<Frame>, WireError> {
        loop {
            if let Some(f) = split_frame(&mut self.buf, self.max_len)? {
                return Ok(Some(f));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8192);
            }
            let n = r.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }
}
