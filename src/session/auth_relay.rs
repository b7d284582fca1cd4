//! Relay authentication: upstream runs the password exchange, pgcloak carries
//! the messages and watches which method was used.
//!
//! A session counts as password-verified only when upstream asked for a
//! password (cleartext, MD5 or SASL) and then said AuthenticationOk. A role let
//! in by `trust` is recorded as such, and later issues give it no rights.
//! SCRAM-SHA-256-PLUS is removed from the mechanisms offered: channel binding
//! cannot cross a proxy that terminates TLS.

use bytes::Bytes;
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

/// Runs the login through pgcloak: upstream's authentication exchange relayed both ways,
/// then upstream's startup messages up to the first ReadyForQuery.
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
                let step = relay_step(&AuthRequest::decode(&frame)?)?;
                if let Some(shown) = step.method {
                    method = shown;
                }
                let to_client = step.rewritten.as_ref().unwrap_or(frame.as_bytes());
                client.write_all(to_client).await?;
                match step.then {
                    Then::Admitted => break,
                    Then::UpstreamContinues => client.flush().await?,
                    Then::ClientAnswers => {
                        client.flush().await?;
                        relay_client_answer(client, client_rd, upstream).await?;
                    }
                }
            }
            // Upstream refused the login: the client gets upstream's own error.
            Tag::ERROR_RESPONSE => return Err(relay_refusal(client, &frame).await),
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
        StartupEnd::Refused(frame) => Err(relay_refusal(client, &frame).await),
    }
}

/// How one Authentication request from upstream is passed on to the client.
#[derive(Debug, PartialEq, Eq)]
struct RelayStep {
    /// The password method the request shows upstream is using (None: no change).
    method: Option<AuthMethod>,
    /// What the client gets instead of upstream's own message, if anything.
    rewritten: Option<Bytes>,
    /// What happens once the client has the message.
    then: Then,
}

/// What follows an Authentication request relayed to the client.
#[derive(Debug, PartialEq, Eq)]
enum Then {
    /// AuthenticationOk: the exchange is over (sent without a flush; the startup
    /// messages follow).
    Admitted,
    /// The client answers with a password or SASL message, relayed upstream.
    ClientAnswers,
    /// Upstream speaks next (after SASL final).
    UpstreamContinues,
}

/// Decides how one Authentication request is relayed: which method it shows, whether the
/// SASL offer is narrowed to mechanisms without channel binding, and who speaks next.
fn relay_step(request: &AuthRequest) -> Result<RelayStep, SessionError> {
    let (method, rewritten, then) = match request {
        AuthRequest::Ok => (None, None, Then::Admitted),
        AuthRequest::Cleartext => (Some(AuthMethod::Cleartext), None, Then::ClientAnswers),
        AuthRequest::Md5 { .. } => (Some(AuthMethod::Md5), None, Then::ClientAnswers),
        AuthRequest::Sasl { mechanisms } => (
            Some(AuthMethod::Scram),
            Some(sasl_offer_without_binding(mechanisms)?),
            Then::ClientAnswers,
        ),
        AuthRequest::SaslContinue(_) => (None, None, Then::ClientAnswers),
        AuthRequest::SaslFinal(_) => (None, None, Then::UpstreamContinues),
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
    Ok(RelayStep {
        method,
        rewritten,
        then,
    })
}

/// Upstream's SASL offer with the `-PLUS` (channel binding) mechanisms removed; refused
/// when nothing is left.
fn sasl_offer_without_binding(mechanisms: &[String]) -> Result<Bytes, SessionError> {
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
    Ok(AuthRequest::Sasl {
        mechanisms: offered,
    }
    .encode())
}

/// Relays the client's answer (a password or SASL message, bounded in size) upstream.
async fn relay_client_answer(
    client: &mut ClientStream,
    client_rd: &mut FrameReader,
    upstream: &mut UpstreamStream,
) -> Result<(), SessionError> {
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
    Ok(())
}

/// Relays upstream's ErrorResponse to the client; the error is the failed login, or the
/// I/O error that stopped the relay.
async fn relay_refusal(client: &mut ClientStream, frame: &Frame) -> SessionError {
    if let Err(e) = client.write_all(frame.as_bytes()).await {
        return e.into();
    }
    if let Err(e) = client.flush().await {
        return e.into();
    }
    SessionError::AuthFailed {
        sqlstate: crate::wire::messages::error_code(frame),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn step(request: AuthRequest) -> RelayStep {
        match relay_step(&request) {
            Ok(step) => step,
            Err(e) => panic!("{request:?} refused: {e}"),
        }
    }

    fn refused_code(request: AuthRequest) -> &'static str {
        match relay_step(&request) {
            Err(SessionError::Refused(e)) => e.code,
            other => panic!("{request:?} not refused: {:?}", other.ok()),
        }
    }

    #[test]
    fn each_request_sets_the_method_and_who_speaks_next() {
        let passed_on = |method, then| RelayStep {
            method,
            rewritten: None,
            then,
        };
        for (request, want) in [
            (AuthRequest::Ok, passed_on(None, Then::Admitted)),
            (
                AuthRequest::Cleartext,
                passed_on(Some(AuthMethod::Cleartext), Then::ClientAnswers),
            ),
            (
                AuthRequest::Md5 { salt: [9; 4] },
                passed_on(Some(AuthMethod::Md5), Then::ClientAnswers),
            ),
            (
                AuthRequest::SaslContinue(Bytes::from_static(b"r=x")),
                passed_on(None, Then::ClientAnswers),
            ),
            (
                AuthRequest::SaslFinal(Bytes::from_static(b"v=x")),
                passed_on(None, Then::UpstreamContinues),
            ),
        ] {
            assert_eq!(step(request), want);
        }
        assert_eq!(refused_code(AuthRequest::Other(7)), "28000");
    }

    #[test]
    fn the_sasl_offer_loses_its_channel_binding_mechanisms() {
        let offer = step(AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
        });
        let narrowed = AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        };
        assert_eq!(offer.method, Some(AuthMethod::Scram));
        assert_eq!(offer.rewritten, Some(narrowed.encode()));
        assert_eq!(offer.then, Then::ClientAnswers);
        let only_plus = AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS".into()],
        };
        assert_eq!(refused_code(only_plus), "28000");
    }
}
