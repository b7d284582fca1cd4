//! TLS configuration for both legs, with one crypto provider (ring).
//!
//! The client leg serves the configured certificate and advertises ALPN
//! `postgresql` (required for PostgreSQL 17's direct TLS). The upstream leg
//! verifies the server only under `verify-full`, as libpq does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;

use serde::Deserialize;

pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificate(s): {reason}")]
    Cert { path: String, reason: String },
    #[error("{path}: cannot read private key: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Cert {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::Cert {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: path.display().to_string(),
            reason: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// The rustls server configuration for the client leg.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(cfg))
}

/// The rustls client configuration for the upstream leg, or None for `disable`.
pub fn upstream_client_config(
    mode: UpstreamTlsMode,
    ca_file: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let ca = ca_file
                .ok_or_else(|| TlsError::Config("verify-full needs upstream.ca_file".into()))?;
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| TlsError::Cert {
                    path: ca.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// The name presented in SNI and checked under verify-full (`upstream.server_name`,
/// else `upstream.host`).
pub fn upstream_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string())
        .map_err(|_| TlsError::Config(format!("`{name}` is not a valid TLS server name")))
}

/// `prefer`/`require`: encrypt, but do not authenticate the server (libpq's semantics).
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The `tls:` section: TLS on the client leg.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    #[serde(default)]
    pub mode: ClientTlsMode,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    #[default]
    Disabled,
    Optional,
    Required,
}

/// The client leg's acceptor, or None when `tls.mode` is `disabled`.
pub fn acceptor(cfg: &ClientTlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    match (cfg.mode, &cfg.cert, &cfg.key) {
        (ClientTlsMode::Disabled, _, _) => Ok(None),
        (_, Some(cert), Some(key)) => Ok(Some(tokio_rustls::TlsAcceptor::from(server_config(
            cert, key,
        )?))),
        _ => Err(TlsError::Config("tls.cert and tls.key are required".into())),
    }
}

/// `upstream.tls`: TLS on the upstream leg, with libpq's semantics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

impl UpstreamTlsMode {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamTlsMode::Disable => "disable",
            UpstreamTlsMode::Prefer => "prefer",
            UpstreamTlsMode::Require => "require",
            UpstreamTlsMode::VerifyFull => "verify-full",
        }
    }
}
