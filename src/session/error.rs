//! Why a session (or connection attempt) ended abnormally, and what the client sees.

use thiserror::Error;

use crate::net::UpstreamError;
use crate::wire::{PgError, WireError};

#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("upstream protocol violation: {0}")]
    UpstreamProtocol(&'static str),
    #[error("invalid frontend message type {}", *.0 as char)]
    UnknownFrontendMessage(u8),
    #[error("client closed the connection")]
    ClientGone,
    #[error("upstream closed the connection")]
    UpstreamGone,
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(String),
    #[error("direct TLS connection but TLS is not configured")]
    DirectTlsNotConfigured,
    #[error("direct TLS connection without ALPN \"postgresql\"")]
    DirectTlsWithoutAlpn,
    #[error("TLS required but client did not request it")]
    TlsRequired,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("authentication failed (SQLSTATE {})", .sqlstate.as_deref().unwrap_or("?"))]
    AuthFailed { sqlstate: Option<String> },
    #[error("refused: {}", .0.message)]
    Refused(PgError),
    #[error("too many connections")]
    TooManyConnections,
    #[error("startup timed out")]
    StartupTimeout,
    #[error("server shutting down")]
    Shutdown,
}

impl SessionError {
    /// The FATAL error to send to the client before closing, if any.
    pub fn client_error(&self, upstream_addr: &str) -> Option<PgError> {
        match self {
            SessionError::Wire(WireError::Io(_))
            | SessionError::Wire(WireError::Truncated)
            | SessionError::Io(_)
            | SessionError::ClientGone
            | SessionError::TlsHandshake(_)
            | SessionError::DirectTlsNotConfigured
            | SessionError::DirectTlsWithoutAlpn
            | SessionError::AuthFailed { .. } => None,
            SessionError::Wire(w) => Some(PgError::fatal(w.sqlstate(), w.to_string())),
            SessionError::Protocol(m) => Some(PgError::fatal("08P01", *m)),
            SessionError::UnknownFrontendMessage(t) => Some(PgError::fatal(
                "08P01",
                format!("invalid frontend message type {t}"),
            )),
            SessionError::UpstreamProtocol(m) => Some(PgError::fatal(
                "08P01",
                format!("upstream {upstream_addr} violated the protocol: {m}"),
            )),
            SessionError::UpstreamGone => Some(PgError::fatal(
                "08006",
                format!("upstream {upstream_addr} closed the connection unexpectedly"),
            )),
            SessionError::TlsRequired => Some(
                PgError::fatal("28000", "pgcloak accepts only TLS connections")
                    .with_hint("Connect with sslmode=require (or stronger)."),
            ),
            SessionError::Upstream(e @ UpstreamError::Connect { .. }) => {
                Some(PgError::fatal("08001", e.to_string()))
            }
            SessionError::Upstream(e) => Some(PgError::fatal("08001", e.to_string())),
            SessionError::Refused(e) => Some(e.clone()),
            SessionError::TooManyConnections => {
                Some(PgError::fatal("53300", "sorry, too many clients already"))
            }
            SessionError::StartupTimeout => Some(PgError::fatal(
                "08006",
                "timed out during startup and authentication",
            )),
            SessionError::Shutdown => Some(PgError::fatal(
                "57P01",
                "terminating connection due to administrator command",
            )),
        }
    }

    /// A short stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SessionError::Wire(WireError::Io(_)) | SessionError::Io(_) => "io_error",
            SessionError::Wire(WireError::TooLarge { .. }) => "message_too_large",
            SessionError::Wire(_) => "malformed_message",
            SessionError::Protocol(_) | SessionError::UnknownFrontendMessage(_) => {
                "protocol_violation"
            }
            SessionError::UpstreamProtocol(_) => "upstream_protocol_violation",
            SessionError::ClientGone => "client_gone",
            SessionError::UpstreamGone => "upstream_gone",
            SessionError::TlsHandshake(_)
            | SessionError::DirectTlsNotConfigured
            | SessionError::DirectTlsWithoutAlpn => "tls_error",
            SessionError::TlsRequired => "tls_required",
            SessionError::Upstream(_) => "upstream_unreachable",
            SessionError::AuthFailed { .. } => "auth_failed",
            SessionError::Refused(_) => "refused",
            SessionError::TooManyConnections => "too_many_connections",
            SessionError::StartupTimeout => "startup_timeout",
            SessionError::Shutdown => "shutdown",
        }
    }
}
