//! Errors raised while framing PostgreSQL protocol messages.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("invalid message length {len} for message type {tag:?}")]
    InvalidLength { tag: char, len: i64 },
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("invalid startup packet length {0}")]
    InvalidStartupLength(i64),
    #[error("malformed startup packet: {0}")]
    MalformedStartup(&'static str),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("unsupported format code: {code}")]
    UnknownFormat { code: i16 },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// The SQLSTATE PostgreSQL uses for this kind of failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            WireError::UnsupportedProtocol { .. } => "0A000",
            WireError::TooLarge { .. } => "54000",
            WireError::UnknownFormat { .. } => "22023",
            WireError::Io(_) => "08006",
            _ => "08P01",
        }
    }
}
