//! Opening pgcloak's own catalog connection to one database of the upstream server.
//!
//! The connection uses the `upstream:` target and TLS settings (the same rustls client
//! configuration as the proxy's upstream leg) and the `catalog:` login. Its search_path is
//! pinned to `pg_catalog` so that no user-created function or relation can stand in for the
//! catalog objects pgcloak queries.

use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::net::{UpstreamConfig, UpstreamTlsMode};

use super::config::CatalogConfig;
use super::error::CatalogError;

/// One open catalog connection to one database.
pub struct CatalogConn {
    pub(crate) client: Client,
    pub(crate) database: String,
    /// `server_version_num`, e.g. 150004.
    pub(crate) server_version: u32,
}

impl std::fmt::Debug for CatalogConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogConn")
            .field("database", &self.database)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

/// Presents `upstream.server_name` (when set) instead of the connection host in SNI and
/// certificate verification, like the proxy's upstream leg does.
#[derive(Clone)]
struct NamedRustls {
    inner: MakeRustlsConnect,
    server_name: Option<String>,
}

impl MakeTlsConnect<Socket> for NamedRustls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = self.server_name.as_deref().unwrap_or(hostname);
        <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut self.inner, name)
    }
}

/// A readable description of a driver error (the server's SQLSTATE and message when there
/// is one; tokio-postgres' own Display hides it).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// Runs a connection until it closes, forwarding NOTIFY payloads to `notices` (if any).
async fn drive<S, T>(
    mut conn: tokio_postgres::Connection<S, T>,
    notices: Option<tokio::sync::mpsc::Sender<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(notices) = notices else {
        let _ = conn.await;
        return;
    };
    while let Some(Ok(message)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
        if let tokio_postgres::AsyncMessage::Notification(n) = message {
            // A full queue means the follower is behind; it refreshes anyway.
            let _ = notices.try_send(n.payload().to_string());
        }
    }
}

impl CatalogConn {
    /// Opens a catalog connection to `database`. `password` comes from
    /// [`CatalogConfig::resolve_password`].
    /// The whole exchange (TCP, TLS, authentication, first query) is bounded by
    /// `upstream.connect_timeout_ms`: a server that accepts and then stays silent is an
    /// error, not a hang.
    pub async fn connect(
        upstream: &UpstreamConfig,
        catalog: &CatalogConfig,
        password: Option<&str>,
        database: &str,
    ) -> Result<CatalogConn, CatalogError> {
        let limit = Duration::from_millis(upstream.connect_timeout_ms.max(1));
        match tokio::time::timeout(
            limit,
            Self::connect_unbounded(upstream, catalog, password, database),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CatalogError::Connect {
                database: database.to_string(),
                target: upstream.display_addr(),
                reason: format!("no complete answer within {limit:?}"),
            }),
        }
    }

    /// [`CatalogConn::connect`] that also forwards the connection's NOTIFY payloads on
    /// `notices` (the cut-over follower, `follow.rs`).
    pub(crate) async fn connect_notified(
        upstream: &UpstreamConfig,
        catalog: &CatalogConfig,
        password: Option<&str>,
        database: &str,
        notices: tokio::sync::mpsc::Sender<String>,
    ) -> Result<CatalogConn, CatalogError> {
        let limit = Duration::from_millis(upstream.connect_timeout_ms.max(1));
        let connect =
            Self::connect_unbounded_with(upstream, catalog, password, database, Some(notices));
        match tokio::time::timeout(limit, connect).await {
            Ok(result) => result,
            Err(_) => Err(CatalogError::Connect {
                database: database.to_string(),
                target: upstream.display_addr(),
                reason: format!("no complete answer within {limit:?}"),
            }),
        }
    }

    async fn connect_unbounded(
        upstream: &UpstreamConfig,
        catalog: &CatalogConfig,
        password: Option<&str>,
        database: &str,
    ) -> Result<CatalogConn, CatalogError> {
        Self::connect_unbounded_with(upstream, catalog, password, database, None).await
    }

    async fn connect_unbounded_with(
        upstream: &UpstreamConfig,
        catalog: &CatalogConfig,
        password: Option<&str>,
        database: &str,
        notices: Option<tokio::sync::mpsc::Sender<String>>,
    ) -> Result<CatalogConn, CatalogError> {
        let connect_err = |reason: String| CatalogError::Connect {
            database: database.to_string(),
            target: upstream.display_addr(),
            reason,
        };
        let mut config = Config::new();
        config
            .user(&catalog.user)
            .dbname(database)
            .port(upstream.port)
            .application_name("pgcloak-catalog")
            .options("-c search_path=pg_catalog -c statement_timeout=30000")
            .connect_timeout(Duration::from_millis(upstream.connect_timeout_ms.max(1)));
        if let Some(p) = password {
            config.password(p);
        }
        let tls = if upstream.is_unix_socket() {
            config.host_path(&upstream.host).ssl_mode(SslMode::Disable);
            None
        } else {
            config.host(&upstream.host);
            match upstream
                .client_tls()
                .map_err(|e| connect_err(e.to_string()))?
            {
                None => {
                    config.ssl_mode(SslMode::Disable);
                    None
                }
                Some(rustls_config) => {
                    config.ssl_mode(if upstream.tls == UpstreamTlsMode::Prefer {
                        SslMode::Prefer
                    } else {
                        SslMode::Require
                    });
                    Some(NamedRustls {
                        inner: MakeRustlsConnect::new((*rustls_config).clone()),
                        server_name: upstream.server_name.clone(),
                    })
                }
            }
        };
        let client = match tls {
            None => {
                let (client, conn) = config
                    .connect(NoTls)
                    .await
                    .map_err(|e| connect_err(describe(&e)))?;
                tokio::spawn(drive(conn, notices));
                client
            }
            Some(tls) => {
                let (client, conn) = config
                    .connect(tls)
                    .await
                    .map_err(|e| connect_err(describe(&e)))?;
                tokio::spawn(drive(conn, notices));
                client
            }
        };
        let row = client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| connect_err(describe(&e)))?;
        let version: i32 = row.get(0);
        Ok(CatalogConn {
            client,
            database: database.to_string(),
            server_version: u32::try_from(version).unwrap_or(0),
        })
    }

    /// The database this connection reads.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Whether the connection has been lost (a new one must be opened).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(crate) fn query_err(&self, what: &'static str, e: &tokio_postgres::Error) -> CatalogError {
        CatalogError::Query {
            database: self.database.clone(),
            what,
            reason: describe(e),
        }
    }
}
