//! tokio-postgres helpers: connect (plain or rustls), keep the connection's asynchronous
//! messages (NOTIFY, NOTICE) in a channel, and read SQLSTATEs out of errors.

use std::path::Path;
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, Error, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connects without TLS, driving the connection on the current runtime. Panics on failure.
pub async fn connect(config: &Config) -> Client {
    try_connect(config)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e:?}"))
}

/// Connects without TLS, driving the connection on the current runtime.
pub async fn try_connect(config: &Config) -> Result<Client, Error> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Connects without TLS and forwards every asynchronous message (notifications, notices)
/// into the returned channel.
pub async fn connect_with_messages(
    config: &Config,
) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
    let (client, mut conn) = config.connect(NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if tx.send(message).is_err() {
                break;
            }
        }
    });
    (client, rx)
}

/// A rustls client config (ring provider) that trusts exactly the CA in `ca_file`.
pub fn rustls_config(ca_file: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A tokio-postgres TLS connector that trusts exactly the CA in `ca_file`.
pub fn rustls_connector(ca_file: &Path) -> MakeRustlsConnect {
    MakeRustlsConnect::new(rustls_config(ca_file))
}

/// Connects with rustls (the config's `ssl_mode` decides whether TLS is required).
pub async fn try_connect_tls(config: &Config, ca_file: &Path) -> Result<Client, Error> {
    let (client, conn) = config.connect(rustls_connector(ca_file)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE carried by a database error, if any.
pub fn sqlstate(err: &Error) -> Option<String> {
    err.code().map(|c| c.code().to_string())
}

/// The SQLSTATE of `result`'s error; panics (showing the value) if it succeeded.
pub fn expect_sqlstate<T: std::fmt::Debug>(result: Result<T, Error>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| panic!("error without SQLSTATE: {e:?}")),
    }
}
