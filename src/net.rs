//! Byte streams for both legs (plain TCP, unix socket, TLS) and the upstream
//! connector with PostgreSQL's SSLRequest negotiation.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pub use crate::tls::UpstreamTlsMode;
use crate::wire::messages::ssl_request;

macro_rules! delegate_io {
    ($ty:ident { $($variant:ident),* }) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)* }
            }
        }
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)* }
            }
            fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)* }
            }
            fn is_write_vectored(&self) -> bool {
                match self { $($ty::$variant(s) => s.is_write_vectored(),)* }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_flush(cx),)* }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() { $($ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)* }
            }
        }
    };
}

/// The client leg: plain TCP or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}
delegate_io!(ClientStream { Plain, Tls });

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

/// The upstream leg: TCP, unix socket, or TLS over TCP.
pub enum UpstreamStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}
delegate_io!(UpstreamStream { Tcp, Unix, Tls });

impl UpstreamStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamStream::Tls(_))
    }
}

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("could not connect to upstream {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("upstream {addr} does not support TLS, which upstream.tls {mode} requires")]
    TlsRefused { addr: String, mode: &'static str },
    #[error("TLS handshake with upstream {addr} failed: {reason}")]
    TlsHandshake { addr: String, reason: String },
}

/// Connects to upstream and negotiates TLS according to the configured mode.
pub async fn connect_upstream(
    cfg: &UpstreamConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<UpstreamStream, UpstreamError> {
    let addr = cfg.display_addr();
    let timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let connect_err = |reason: String| UpstreamError::Connect {
        addr: addr.clone(),
        reason,
    };
    if cfg.is_unix_socket() {
        let path = format!("{}/.s.PGSQL.{}", cfg.host.trim_end_matches('/'), cfg.port);
        let s = tokio::time::timeout(timeout, UnixStream::connect(&path))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        return Ok(UpstreamStream::Unix(s));
    }
    let mut tcp = tokio::time::timeout(timeout, TcpStream::connect((cfg.host.as_str(), cfg.port)))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(UpstreamStream::Tcp(tcp));
    };
    let negotiate = async {
        tcp.write_all(&ssl_request()).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        Ok::<u8, io::Error>(answer[0])
    };
    let answer = tokio::time::timeout(timeout, negotiate)
        .await
        .map_err(|_| connect_err("timed out negotiating TLS".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    match answer {
        b'S' => {
            let name =
                crate::tls::upstream_server_name(cfg.server_name.as_deref().unwrap_or(&cfg.host))
                    .map_err(|e| UpstreamError::TlsHandshake {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            let s = tokio::time::timeout(timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| UpstreamError::TlsHandshake {
                    addr: addr.clone(),
                    reason: "timed out".into(),
                })?
                .map_err(|e| UpstreamError::TlsHandshake {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            Ok(UpstreamStream::Tls(Box::new(s)))
        }
        b'N' if cfg.tls == UpstreamTlsMode::Prefer => Ok(UpstreamStream::Tcp(tcp)),
        b'N' => Err(UpstreamError::TlsRefused {
            addr,
            mode: cfg.tls.name(),
        }),
        _ => Err(connect_err(
            "unexpected answer to SSLRequest (is this a PostgreSQL server?)".into(),
        )),
    }
}

/// The `upstream:` section: the PostgreSQL server pgcloak relays to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A host name or IP address, or an absolute directory holding the server's unix socket.
    #[serde(default = "default_upstream_host")]
    pub host: String,
    #[serde(default = "default_upstream_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: UpstreamTlsMode,
    /// CA certificates (PEM) used by `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the server certificate must carry under `verify-full` (defaults to `host`).
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

impl UpstreamConfig {
    /// The rustls client configuration `tls` asks for, or None for `disable`.
    pub fn client_tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, crate::tls::TlsError> {
        crate::tls::upstream_client_config(self.tls, self.ca_file.as_deref())
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The address shown in logs and errors.
    pub fn display_addr(&self) -> String {
        if self.is_unix_socket() {
            format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn default_upstream_host() -> String {
    "127.0.0.1".into()
}
fn default_upstream_port() -> u16 {
    5432
}
fn default_connect_timeout() -> u64 {
    5000
}

/// The upstream server and the TLS client configuration for reaching it, built once.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Upstream {
    /// Builds the TLS client configuration that `config.tls` asks for.
    pub fn new(config: UpstreamConfig) -> Result<Upstream, crate::tls::TlsError> {
        let tls = config.client_tls()?;
        Ok(Upstream { config, tls })
    }

    /// Opens a connection, with TLS negotiated as configured.
    pub async fn connect(&self) -> Result<UpstreamStream, UpstreamError> {
        connect_upstream(&self.config, self.tls.as_ref()).await
    }
}
