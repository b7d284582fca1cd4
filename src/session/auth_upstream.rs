//! Logging in to upstream as the role pgcloak has just verified, then reading upstream's
//! startup messages up to the first ReadyForQuery.
//!
//! Upstream may ask for SCRAM (answered with the ClientKey recovered from the client's
//! proof, with channel binding when the upstream leg is TLS, or with a password), md5 (a
//! password, or the stored md5 verifier), a cleartext password, or nothing (trust). If
//! upstream refuses, the client gets upstream's own ErrorResponse. Never logs a secret.

use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use crate::auth::md5::{md5_response_from_password, md5_response_from_stored};
use crate::auth::{
    AuthError, ChannelBinding, ChannelBindingMode, ClientSecret, Md5Verifier, PassThroughKey,
    ScramClient, ScramClientFinal, ScramClientFirst,
};
use crate::net::{ClientStream, Upstream, UpstreamStream};
use crate::wire::messages::{error_code, AuthRequest, MessageBuilder};
use crate::wire::startup::StartupMessage;
use crate::wire::{Frame, PgError, Tag};

use super::auth_relay::{read_startup_messages, AuthMethod, Established, StartupEnd};
use super::reader::FrameReader;
use super::SessionError;

/// What pgcloak can answer upstream with, for one verified role.
pub(super) struct UpstreamCredentials {
    pub role: String,
    /// From a verified SCRAM exchange.
    pub scram_key: Option<PassThroughKey>,
    /// The client's cleartext password, or the role's configured upstream password.
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// The role's stored md5 verifier (answers an md5 challenge without the password).
    pub md5: Option<Md5Verifier>,
}

enum ScramState {
    Idle,
    First(ScramClientFirst),
    Final(ScramClientFinal),
}

/// Connects upstream, sends the startup packet and authenticates as `creds.role`. On
/// success returns the stream and what the startup phase established (`method` is set by
/// the caller to the client-facing method).
pub(super) async fn login_upstream(
    upstream_leg: &Upstream,
    client: &mut ClientStream,
    upstream_rd: &mut FrameReader,
    startup: &StartupMessage,
    creds: &UpstreamCredentials,
) -> Result<(UpstreamStream, Established), SessionError> {
    let mut upstream = upstream_leg.connect().await?;
    upstream.write_all(&startup.encode_v30()).await?;
    upstream.flush().await?;
    let binding = upstream_binding(&upstream);
    let refuse = |e: AuthError| {
        SessionError::Refused(PgError::fatal(
            e.sqlstate(),
            format!(
                "pgcloak could not log in to upstream as \"{}\": {e}",
                creds.role
            ),
        ))
    };
    let no_credential = |what: &str| {
        SessionError::Refused(PgError::fatal(
            "28000",
            format!(
                "upstream asks for {what} for role \"{}\", and pgcloak has no credential for it \
                 (set auth.upstream_passwords)",
                creds.role
            ),
        ))
    };
    let mut notices = Vec::new();
    let mut scram = ScramState::Idle;
    loop {
        let frame = upstream_rd
            .next(&mut upstream)
            .await?
            .ok_or(SessionError::UpstreamGone)?;
        match frame.message_tag() {
            Tag::AUTHENTICATION => {
                let answer = match AuthRequest::decode(&frame)? {
                    AuthRequest::Ok => break,
                    AuthRequest::Cleartext => {
                        let p = creds
                            .password
                            .as_ref()
                            .ok_or_else(|| no_credential("a cleartext password"))?;
                        password_message(p)
                    }
                    AuthRequest::Md5 { salt } => {
                        let response = match (&creds.password, &creds.md5) {
                            (Some(p), _) => md5_response_from_password(p, &creds.role, &salt),
                            (None, Some(v)) => md5_response_from_stored(v, &salt),
                            (None, None) => return Err(no_credential("an md5 password")),
                        };
                        password_message(response.as_bytes())
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        let secret = match (&creds.scram_key, &creds.password) {
                            (Some(k), _) => ClientSecret::PassThrough(k.clone()),
                            (None, Some(p)) => ClientSecret::Password(p.clone()),
                            (None, None) => return Err(no_credential("SCRAM")),
                        };
                        let offered: Vec<&str> = mechanisms.iter().map(String::as_str).collect();
                        let first = ScramClient::start(
                            secret,
                            &binding,
                            ChannelBindingMode::Prefer,
                            &offered,
                        )
                        .map_err(refuse)?;
                        let mut b = MessageBuilder::new(Tag::PASSWORD_MESSAGE);
                        b.cstr(first.mechanism())
                            .i32(i32::try_from(first.message().len()).unwrap_or(i32::MAX))
                            .bytes(first.message());
                        let message = b.finish();
                        scram = ScramState::First(first);
                        message
                    }
                    AuthRequest::SaslContinue(data) => {
                        let ScramState::First(first) =
                            std::mem::replace(&mut scram, ScramState::Idle)
                        else {
                            return Err(SessionError::UpstreamProtocol("unexpected SASL continue"));
                        };
                        let fin = first.server_first(&data).map_err(refuse)?;
                        let mut b = MessageBuilder::new(Tag::PASSWORD_MESSAGE);
                        b.bytes(fin.message());
                        let message = b.finish();
                        scram = ScramState::Final(fin);
                        message
                    }
                    AuthRequest::SaslFinal(data) => {
                        let ScramState::Final(fin) =
                            std::mem::replace(&mut scram, ScramState::Idle)
                        else {
                            return Err(SessionError::UpstreamProtocol("unexpected SASL final"));
                        };
                        fin.server_final(&data).map_err(refuse)?;
                        continue;
                    }
                    AuthRequest::Other(code) => {
                        return Err(SessionError::Refused(PgError::fatal(
                            "28000",
                            format!(
                                "upstream requested authentication method {code}, which pgcloak \
                                 does not support (supported: password, md5, scram-sha-256, trust)"
                            ),
                        )))
                    }
                };
                upstream.write_all(&answer).await?;
                upstream.flush().await?;
            }
            Tag::ERROR_RESPONSE => return Err(upstream_refused(client, &frame).await),
            Tag::NOTICE_RESPONSE => notices.push(frame),
            Tag::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => {
                return Err(SessionError::UpstreamProtocol(
                    "unexpected message during authentication",
                ))
            }
        }
    }
    let mut est = Established {
        method: AuthMethod::Trust,
        upstream_key: None,
        parameters: Vec::new(),
        to_client: notices,
    };
    match read_startup_messages(&mut upstream, upstream_rd, &mut est).await? {
        StartupEnd::Ready => Ok((upstream, est)),
        StartupEnd::Refused(frame) => Err(upstream_refused(client, &frame).await),
    }
}

/// Relays upstream's refusal to the client as is.
async fn upstream_refused(client: &mut ClientStream, frame: &Frame) -> SessionError {
    if client.write_all(frame.as_bytes()).await.is_ok() {
        let _ = client.flush().await;
    }
    SessionError::AuthFailed {
        sqlstate: error_code(frame),
    }
}

fn password_message(password: &[u8]) -> bytes::Bytes {
    let mut b = MessageBuilder::new(Tag::PASSWORD_MESSAGE);
    b.bytes(password).u8(0);
    b.finish()
}

/// Channel binding data of the upstream leg: upstream's certificate when it is TLS.
fn upstream_binding(upstream: &UpstreamStream) -> ChannelBinding {
    match upstream {
        UpstreamStream::Tls(s) => match s.get_ref().1.peer_certificates() {
            Some([cert, ..]) => ChannelBinding::tls_from_certificate(cert.as_ref()),
            _ => ChannelBinding::Tls {
                server_end_point: None,
            },
        },
        _ => ChannelBinding::Plain,
    }
}
