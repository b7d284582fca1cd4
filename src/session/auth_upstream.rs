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

/// How far a SCRAM exchange with upstream has got.
enum ScramState {
    Idle,
    First(ScramClientFirst),
    Final(ScramClientFinal),
}

/// One verified role's login to upstream in progress: its credentials, the upstream leg's
/// channel binding, and the SCRAM exchange state.
struct UpstreamLogin<'a> {
    creds: &'a UpstreamCredentials,
    binding: ChannelBinding,
    scram: ScramState,
}

/// What pgcloak does after reading one Authentication request from upstream.
enum AuthStep {
    /// AuthenticationOk: upstream admitted the role.
    Admitted,
    /// Send this message upstream.
    Answer(bytes::Bytes),
    /// Upstream's SCRAM server-final accepted; nothing to send.
    Wait,
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
    let mut login = UpstreamLogin {
        creds,
        binding: upstream_binding(&upstream),
        scram: ScramState::Idle,
    };
    let mut notices = Vec::new();
    loop {
        let frame = upstream_rd
            .next(&mut upstream)
            .await?
            .ok_or(SessionError::UpstreamGone)?;
        match frame.message_tag() {
            Tag::AUTHENTICATION => match login.answer(AuthRequest::decode(&frame)?)? {
                AuthStep::Admitted => break,
                AuthStep::Wait => {}
                AuthStep::Answer(answer) => {
                    upstream.write_all(&answer).await?;
                    upstream.flush().await?;
                }
            },
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

impl UpstreamLogin<'_> {
    /// The step answering one Authentication request from upstream.
    fn answer(&mut self, request: AuthRequest) -> Result<AuthStep, SessionError> {
        match request {
            AuthRequest::Ok => Ok(AuthStep::Admitted),
            AuthRequest::Cleartext => self.cleartext().map(AuthStep::Answer),
            AuthRequest::Md5 { salt } => self.md5(&salt).map(AuthStep::Answer),
            AuthRequest::Sasl { mechanisms } => self.scram_first(&mechanisms).map(AuthStep::Answer),
            AuthRequest::SaslContinue(data) => self.scram_continue(&data).map(AuthStep::Answer),
            AuthRequest::SaslFinal(data) => self.scram_final(&data).map(|()| AuthStep::Wait),
            AuthRequest::Other(code) => Err(SessionError::Refused(PgError::fatal(
                "28000",
                format!(
                    "upstream requested authentication method {code}, which pgcloak \
                     does not support (supported: password, md5, scram-sha-256, trust)"
                ),
            ))),
        }
    }

    /// A cleartext password answer; only a password the role has can give it.
    fn cleartext(&self) -> Result<bytes::Bytes, SessionError> {
        let p = self
            .creds
            .password
            .as_ref()
            .ok_or_else(|| self.no_credential("a cleartext password"))?;
        Ok(password_message(p))
    }

    /// An md5 answer: from the password when there is one, else from the stored verifier.
    fn md5(&self, salt: &[u8; 4]) -> Result<bytes::Bytes, SessionError> {
        let response = match (&self.creds.password, &self.creds.md5) {
            (Some(p), _) => md5_response_from_password(p, &self.creds.role, salt),
            (None, Some(v)) => md5_response_from_stored(v, salt),
            (None, None) => return Err(self.no_credential("an md5 password")),
        };
        Ok(password_message(response.as_bytes()))
    }

    /// The SASLInitialResponse: the secret is the client's SCRAM key when there is one,
    /// else the password; channel binding is used when the upstream leg offers it.
    fn scram_first(&mut self, mechanisms: &[String]) -> Result<bytes::Bytes, SessionError> {
        let secret = match (&self.creds.scram_key, &self.creds.password) {
            (Some(k), _) => ClientSecret::PassThrough(k.clone()),
            (None, Some(p)) => ClientSecret::Password(p.clone()),
            (None, None) => return Err(self.no_credential("SCRAM")),
        };
        let offered: Vec<&str> = mechanisms.iter().map(String::as_str).collect();
        let first = ScramClient::start(secret, &self.binding, ChannelBindingMode::Prefer, &offered)
            .map_err(|e| self.refused(e))?;
        let mut b = MessageBuilder::new(Tag::PASSWORD_MESSAGE);
        b.cstr(first.mechanism())
            .i32(i32::try_from(first.message().len()).unwrap_or(i32::MAX))
            .bytes(first.message());
        self.scram = ScramState::First(first);
        Ok(b.finish())
    }

    /// The SASLResponse to upstream's server-first message; only valid right after
    /// SASLInitialResponse.
    fn scram_continue(&mut self, data: &[u8]) -> Result<bytes::Bytes, SessionError> {
        let ScramState::First(first) = std::mem::replace(&mut self.scram, ScramState::Idle) else {
            return Err(SessionError::UpstreamProtocol("unexpected SASL continue"));
        };
        let fin = first.server_first(data).map_err(|e| self.refused(e))?;
        let mut b = MessageBuilder::new(Tag::PASSWORD_MESSAGE);
        b.bytes(fin.message());
        self.scram = ScramState::Final(fin);
        Ok(b.finish())
    }

    /// Checks upstream's server-final message (its signature, when the key allows); only
    /// valid right after the SASLResponse.
    fn scram_final(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let ScramState::Final(fin) = std::mem::replace(&mut self.scram, ScramState::Idle) else {
            return Err(SessionError::UpstreamProtocol("unexpected SASL final"));
        };
        fin.server_final(data).map_err(|e| self.refused(e))?;
        Ok(())
    }

    /// The FATAL error for a SCRAM exchange with upstream that failed.
    fn refused(&self, e: AuthError) -> SessionError {
        SessionError::Refused(PgError::fatal(
            e.sqlstate(),
            format!(
                "pgcloak could not log in to upstream as \"{}\": {e}",
                self.creds.role
            ),
        ))
    }

    /// The FATAL error for a method upstream asks for that the role has no credential for.
    fn no_credential(&self, what: &str) -> SessionError {
        SessionError::Refused(PgError::fatal(
            "28000",
            format!(
                "upstream asks for {what} for role \"{}\", and pgcloak has no credential for it \
                 (set auth.upstream_passwords)",
                self.creds.role
            ),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn login(creds: &UpstreamCredentials) -> UpstreamLogin<'_> {
        UpstreamLogin {
            creds,
            binding: ChannelBinding::Plain,
            scram: ScramState::Idle,
        }
    }

    fn creds(password: Option<&[u8]>, md5: Option<Md5Verifier>) -> UpstreamCredentials {
        UpstreamCredentials {
            role: "app".into(),
            scram_key: None,
            password: password.map(|p| Zeroizing::new(p.to_vec())),
            md5,
        }
    }

    fn refusal(step: Result<AuthStep, SessionError>) -> (&'static str, String) {
        match step {
            Err(SessionError::Refused(e)) => (e.code, e.message),
            Err(e) => panic!("not a refusal: {e}"),
            Ok(_) => panic!("not a refusal: an answer"),
        }
    }

    #[test]
    fn md5_is_answered_from_the_password_first_then_the_stored_verifier() {
        let salt = [1, 2, 3, 4];
        let stored = Md5Verifier::from_password(b"other", "app");
        let with_both = creds(Some(b"pw"), Some(stored.clone()));
        let Ok(AuthStep::Answer(a)) = login(&with_both).answer(AuthRequest::Md5 { salt }) else {
            panic!("md5 with a password is answered");
        };
        let from_password = md5_response_from_password(b"pw", "app", &salt);
        assert_eq!(a, password_message(from_password.as_bytes()));

        let stored_only = creds(None, Some(stored.clone()));
        let Ok(AuthStep::Answer(a)) = login(&stored_only).answer(AuthRequest::Md5 { salt }) else {
            panic!("md5 with a stored verifier is answered");
        };
        let from_stored = md5_response_from_stored(&stored, &salt);
        assert_eq!(a, password_message(from_stored.as_bytes()));
    }

    #[test]
    fn a_method_without_a_credential_is_refused_with_28000() {
        let none = creds(None, None);
        for (request, what) in [
            (AuthRequest::Cleartext, "a cleartext password"),
            (AuthRequest::Md5 { salt: [0; 4] }, "an md5 password"),
            (
                AuthRequest::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256".into()],
                },
                "SCRAM",
            ),
        ] {
            let (code, message) = refusal(login(&none).answer(request));
            assert_eq!(code, "28000");
            assert!(message.contains(what), "{message}");
            assert!(message.contains("\"app\""), "{message}");
        }
        // A stored md5 verifier answers md5 only, never a cleartext request.
        let stored_only = creds(None, Some(Md5Verifier::from_password(b"pw", "app")));
        let (code, _) = refusal(login(&stored_only).answer(AuthRequest::Cleartext));
        assert_eq!(code, "28000");
        let (code, message) = refusal(login(&none).answer(AuthRequest::Other(7)));
        assert_eq!(code, "28000");
        assert!(message.contains("method 7"), "{message}");
    }

    #[test]
    fn sasl_messages_out_of_order_are_an_upstream_protocol_error() {
        let c = creds(Some(b"pw"), None);
        let mut l = login(&c);
        for request in [
            AuthRequest::SaslContinue(bytes::Bytes::from_static(b"r=x,s=eA==,i=4096")),
            AuthRequest::SaslFinal(bytes::Bytes::from_static(b"v=AAAA")),
        ] {
            assert!(matches!(
                l.answer(request),
                Err(SessionError::UpstreamProtocol(_))
            ));
        }
        let first = l.answer(AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        });
        assert!(matches!(first, Ok(AuthStep::Answer(_))));
        // A server-final before the server-first is out of order too.
        let early_final = l.answer(AuthRequest::SaslFinal(bytes::Bytes::from_static(b"v=AAAA")));
        assert!(matches!(
            early_final,
            Err(SessionError::UpstreamProtocol(_))
        ));
    }
}
