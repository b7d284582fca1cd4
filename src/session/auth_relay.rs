//! Relay authentication: upstream runs the password exchange, pgcloak carries
//! the messages and watches which method was used.
//!
//! A session counts as password-verified only when upstream asked for a
//! password (cleartext, MD5 or SASL) and then said AuthenticationOk. A role let
//! in by `trust` is recorded as such, and later issues give it no rights.
//! SCRAM-SHA-256-PLUS is removed from the mechanisms offered: channel binding
//! cannot cross a proxy that terminates TLS.

use tokio::io::AsyncWriteExt;

use crate::net::{ClientStream, UpstreamStream};
use crate::wire::messages::{decode_backend_key_data, decode_parameter_status, AuthRequest};
use crate::wire::{Frame, PgError, Tag};

use super::reader::FrameReader;
use super::SessionError;

/// How upstream admitted the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Trust,
    Cleartext,
    Md5,
    Scram,
}

impl AuthMethod {
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Cleartext => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::Scram => "scram-sha-256",
        }
    }

    /// Whether a password exchange verified the role.
    pub fn verified_by_password(self) -> bool {
        self != AuthMethod::Trust
    }
}

/// What the startup phase learned.
pub struct Established {
    pub method: AuthMethod,
    /// Upstream's BackendKeyData (pid, secret), if it sent one.
    pub upstream_key: Option<(i32, Vec<u8>)>,
    /// ParameterStatus values as upstream reported them.
    pub parameters: Vec<(String, String)>,
    /// Messages from upstream's startup to replay to the client, with
    /// BackendKeyData left out (the caller sends its own) and ReadyForQuery last.
    pub to_client: Vec<Frame>,
}

/// Largest SASL/password message accepted from the client.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

pub async fn relay_auth(
    client: &mut ClientStream,
    client_rd: &mut FrameReader,
    upstream: &mut UpstreamStream,
    upstream_rd: &mut FrameReader,
) -> Result<Established, SessionError> {
    let mut method = AuthMethod::Trust;
    // Phase 1: the authentication exchange.
    loop {
        let frame = upstream_rd
            .next(upstream)
            .await?
            .ok_or(SessionError::UpstreamGone)?;
        match frame.message_tag() {
            Tag::AUTHENTICATION => {
                let req = AuthRequest::decode(&frame)?;
                let expects_answer = match &req {
                    AuthRequest::Ok => {
                        client.write_all(frame.as_bytes()).await?;
                        break;
                    }
                    AuthRequest::Cleartext => {
                        method = AuthMethod::Cleartext;
                        client.write_all(frame.as_bytes()).await?;
                        true
                    }
                    AuthRequest::Md5 { .. } => {
                        method = AuthMethod::Md5;
                        client.write_all(frame.as_bytes()).await?;
                        true
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        method = AuthMethod::Scram;
                        let offered: Vec<String> = mechanisms
                            .iter()
                            .filter(|m| !m.ends_with("-PLUS"))
                            .cloned()
                            .collect();
                        if offered.is_empty() {
                            return Err(SessionError::Refused(PgError::fatal(
                                "28000",
                                "upstream offers only SASL mechanisms with channel binding, \
                                 which cannot be relayed through pgcloak",
                            )));
                        }
                        let msg = AuthRequest::Sasl {
                            mechanisms: offered,
                        }
                        .encode();
                        client.write_all(&msg).await?;
                        true
                    }
                    AuthRequest::SaslContinue(_) => {
                        client.write_all(frame.as_bytes()).await?;
                        true
                    }
                    AuthRequest::SaslFinal(_) => {
                        client.write_all(frame.as_bytes()).await?;
                        false
                    }
                    AuthRequest::Other(code) => {
                        return Err(SessionError::Refused(PgError::fatal(
                            "28000",
                            format!(
                                "upstream requested authentication method {code}, which pgcloak \
                                 cannot relay (supported: password, md5, scram-sha-256, trust)"
                            ),
                        )));
                    }
                };
                client.flush().await?;
                if expects_answer {
                    let answer = client_rd
                        .next(client)
                        .await
                        .map_err(|_| SessionError::ClientGone)?
                        .ok_or(SessionError::ClientGone)?;
                    if answer.message_tag() != Tag::PASSWORD_MESSAGE {
                        return Err(SessionError::Protocol(
                            "expected a password or SASL response message",
                        ));
                    }
                    if answer.len() > MAX_AUTH_MESSAGE {
                        return Err(SessionError::Protocol("authentication message too large"));
                    }
                    upstream.write_all(answer.as_bytes()).await?;
                    upstream.flush().await?;
                }
            }
            Tag::ERROR_RESPONSE => {
                // Upstream refused the login: the client gets upstream's own error.
                client.write_all(frame.as_bytes()).await?;
                client.flush().await?;
                return Err(SessionError::AuthFailed {
                    sqlstate: crate::wire::messages::error_code(&frame),
                });
            }
            Tag::NOTICE_RESPONSE => {
                client.write_all(frame.as_bytes()).await?;
            }
            // We negotiated the protocol version with the client ourselves.
            Tag::NEGOTIATE_PROTOCOL_VERSION => {}
            _ => {
                return Err(SessionError::UpstreamProtocol(
                    "unexpected message during authentication",
                ))
            }
        }
    }

    // Phase 2: parameters and keys until the first ReadyForQuery.
    let mut established = Established {
        method,
        upstream_key: None,
        parameters: Vec::new(),
        to_client: Vec::new(),
    };
    match read_startup_messages(upstream, upstream_rd, &mut established).await? {
        StartupEnd::Ready => Ok(established),
        StartupEnd::Refused(frame) => {
            client.write_all(frame.as_bytes()).await?;
            client.flush().await?;
            Err(SessionError::AuthFailed {
                sqlstate: crate::wire::messages::error_code(&frame),
            })
        }
    }
}

/// How upstream's startup phase (after authentication) ended.
pub(super) enum StartupEnd {
    /// ReadyForQuery: the session is established.
    Ready,
    /// An ErrorResponse, for the caller to relay.
    Refused(Frame),
}

/// Reads what upstream sends after authentication up to the first ReadyForQuery:
/// BackendKeyData into `est.upstream_key`, ParameterStatus into `est.parameters`, and
/// everything to replay to the client (ReadyForQuery last) into `est.to_client`.
pub(super) async fn read_startup_messages(
    upstream: &mut UpstreamStream,
    upstream_rd: &mut FrameReader,
    est: &mut Established,
) -> Result<StartupEnd, SessionError> {
    loop {
        let frame = upstream_rd
            .next(upstream)
            .await?
            .ok_or(SessionError::UpstreamGone)?;
        match frame.message_tag() {
            Tag::BACKEND_KEY_DATA => est.upstream_key = Some(decode_backend_key_data(&frame)?),
            Tag::PARAMETER_STATUS => {
                est.parameters.push(decode_parameter_status(&frame)?);
                est.to_client.push(frame);
            }
            Tag::NOTICE_RESPONSE => est.to_client.push(frame),
            Tag::ERROR_RESPONSE => return Ok(StartupEnd::Refused(frame)),
            Tag::READY_FOR_QUERY => {
                est.to_client.push(frame);
                return Ok(StartupEnd::Ready);
            }
            _ => {
                return Err(SessionError::UpstreamProtocol(
                    "unexpected message before the first ReadyForQuery",
                ))
            }
        }
    }
}
