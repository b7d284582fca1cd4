//! Terminated authentication (`auth.mode: scram`): pgcloak verifies the client's password
//! itself, on the role's stored verifier, and only then connects upstream and logs in as the
//! same role (see `auth_upstream`).
//!
//! The identity of the session comes from this verification alone. A failed exchange ends
//! the connection: nothing the client sent after it is read, and upstream is never contacted.
//! An unknown role, a role without a password and a wrong password get the same exchange
//! and byte-identical errors. Proofs and passwords are never logged.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};
use zeroize::Zeroizing;

use crate::auth::config::ClientAuthMethod;
use crate::auth::md5::{verify_cleartext_password, verify_md5_response};
use crate::auth::AuthState;
use crate::auth::{
    AuthError, ChannelBinding, PassThroughKey, ScramServer, ServerCredential, Verifier,
};
use crate::net::{ClientStream, Upstream, UpstreamStream};
use crate::wire::frame::BodyReader;
use crate::wire::messages::AuthRequest;
use crate::wire::startup::StartupMessage;
use crate::wire::{Frame, PgError, Tag, WireError};

use super::auth_relay::{AuthMethod, Established};
use super::auth_upstream::{login_upstream, UpstreamCredentials};
use super::reader::FrameReader;
use super::SessionError;

const LOG: &str = "pgcloak::auth";

/// Largest password or SASL message accepted from a client before it is authenticated.
pub const MAX_AUTH_MESSAGE: usize = 4096;

/// What a verified client leaves behind for the upstream login and the client's reply.
struct Verified {
    method: AuthMethod,
    credentials: UpstreamCredentials,
    /// SCRAM server-final, sent to the client once upstream accepted the role.
    server_final: Option<Bytes>,
}

/// Why the client-facing exchange ended without a verified role.
enum Failure {
    /// The client left (e.g. psql asking for a password): not a failed login.
    Gone(SessionError),
    /// A failed login: counted, logged, answered with this error.
    Refused(AuthError),
}

/// Runs `auth.mode: scram` for one session: client verification, upstream login, and the
/// startup messages up to ReadyForQuery. `client_rd` receives whatever the client sent after
/// its last authentication message.
#[allow(clippy::too_many_arguments)]
pub(super) async fn terminate_auth(
    auth: &AuthState,
    upstream_leg: &Upstream,
    client: &mut ClientStream,
    client_rd: &mut FrameReader,
    upstream_rd: &mut FrameReader,
    startup: &StartupMessage,
    peer: SocketAddr,
) -> Result<(UpstreamStream, Established), SessionError> {
    let role = startup.user();
    if let Err(e) = auth.check_backoff(peer.ip()) {
        warn!(target: LOG, %peer, role, "login refused: too many recent failures from this address");
        return Err(SessionError::Refused(PgError::fatal(
            e.sqlstate(),
            e.to_string(),
        )));
    }
    let stored = auth.verifier_for(role).await.map_err(|e| {
        warn!(target: LOG, %peer, role, error = %e, "cannot verify login");
        SessionError::Refused(PgError::fatal(
            "08006",
            "pgcloak cannot verify credentials right now (its auth query failed); see pgcloak's log",
        ))
    })?;

    // A small frame limit while the client is not authenticated; the buffer moves on after.
    let mut auth_rd = FrameReader::new(MAX_AUTH_MESSAGE);
    let outcome = verify_client(auth, client, &mut auth_rd, role, stored.as_ref()).await;
    let verified = match outcome {
        Ok(v) => v,
        Err(Failure::Gone(e)) => return Err(e),
        Err(Failure::Refused(e)) => {
            auth.record_failure(peer.ip());
            debug!(target: LOG, %peer, role, reason = %e, "client authentication failed");
            let error = PgError::fatal(e.sqlstate(), e.client_message(role));
            client.write_all(&error.encode()).await?;
            client.flush().await?;
            return Err(SessionError::AuthFailed {
                sqlstate: Some(e.sqlstate().to_string()),
            });
        }
    };
    auth.record_success(peer.ip());
    std::mem::swap(&mut client_rd.buf, &mut auth_rd.buf);

    let login = login_upstream(
        upstream_leg,
        client,
        upstream_rd,
        startup,
        &verified.credentials,
    )
    .await;
    let (upstream, mut est) = login.inspect_err(|_| auth.forget(role))?;
    est.method = verified.method;
    let mut hello = Vec::with_capacity(128);
    if let Some(final_message) = &verified.server_final {
        hello.extend_from_slice(&AuthRequest::SaslFinal(final_message.clone()).encode());
    }
    hello.extend_from_slice(&AuthRequest::Ok.encode());
    client.write_all(&hello).await?;
    Ok((upstream, est))
}

/// The method to ask this role's client for. An unknown role is treated like a role with a
/// SCRAM verifier, so the choice never tells whether it exists.
fn choose_method(
    methods: &[ClientAuthMethod],
    stored: Option<&Verifier>,
    tls: bool,
) -> ClientAuthMethod {
    let is_md5 = matches!(stored, Some(Verifier::Md5(_)));
    methods
        .iter()
        .copied()
        .find(|m| match m {
            ClientAuthMethod::ScramSha256 => !is_md5,
            ClientAuthMethod::Md5 => is_md5,
            ClientAuthMethod::Password => tls,
        })
        .unwrap_or(ClientAuthMethod::ScramSha256)
}

async fn verify_client(
    auth: &AuthState,
    client: &mut ClientStream,
    rd: &mut FrameReader,
    role: &str,
    stored: Option<&Verifier>,
) -> Result<Verified, Failure> {
    match choose_method(&auth.methods, stored, client.is_tls()) {
        ClientAuthMethod::ScramSha256 => verify_scram(auth, client, rd, role, stored).await,
        ClientAuthMethod::Md5 => {
            let salt: [u8; 4] = rand::random();
            send(client, &AuthRequest::Md5 { salt }.encode()).await?;
            let answer = read_password_message(client, rd).await?;
            let stored = stored.ok_or(Failure::Refused(AuthError::PasswordMismatch))?;
            verify_md5_response(stored, &salt, answer.body()).map_err(Failure::Refused)?;
            let md5 = match stored {
                Verifier::Md5(v) => Some(v.clone()),
                Verifier::Scram(_) => None,
            };
            Ok(Verified {
                method: AuthMethod::Md5,
                credentials: UpstreamCredentials {
                    role: role.to_owned(),
                    scram_key: None,
                    password: auth
                        .upstream_password(role)
                        .map(|p| p.as_bytes().to_vec().into()),
                    md5,
                },
                server_final: None,
            })
        }
        ClientAuthMethod::Password => {
            send(client, &AuthRequest::Cleartext.encode()).await?;
            let answer = read_password_message(client, rd).await?;
            let body = answer.body();
            let password = body.strip_suffix(&[0]).unwrap_or(body);
            // An unknown role runs the same key derivation on its fake verifier.
            let fake;
            let against = match stored {
                Some(v) => v,
                None => {
                    fake = Verifier::Scram(auth.fakes.verifier_for(role));
                    &fake
                }
            };
            let check = verify_cleartext_password(against, role, password);
            if stored.is_none() || check.is_err() {
                return Err(Failure::Refused(
                    check.err().unwrap_or(AuthError::PasswordMismatch),
                ));
            }
            Ok(Verified {
                method: AuthMethod::Cleartext,
                credentials: UpstreamCredentials {
                    role: role.to_owned(),
                    scram_key: None,
                    password: Some(Zeroizing::new(password.to_vec())),
                    md5: None,
                },
                server_final: None,
            })
        }
    }
}

async fn verify_scram(
    auth: &AuthState,
    client: &mut ClientStream,
    rd: &mut FrameReader,
    role: &str,
    stored: Option<&Verifier>,
) -> Result<Verified, Failure> {
    let binding = if client.is_tls() {
        ChannelBinding::Tls {
            server_end_point: auth.client_end_point.clone(),
        }
    } else {
        ChannelBinding::Plain
    };
    let server = ScramServer::new(
        ServerCredential::for_role(role, stored, &auth.fakes),
        binding,
    );
    let mechanisms = server.mechanisms().iter().map(|m| m.to_string()).collect();
    send(client, &AuthRequest::Sasl { mechanisms }.encode()).await?;

    let initial = read_password_message(client, rd).await?;
    let (mechanism, data) = parse_sasl_initial(initial.body()).map_err(Failure::Refused)?;
    let first = server
        .client_first(&mechanism, &data)
        .map_err(Failure::Refused)?;
    send(
        client,
        &AuthRequest::SaslContinue(Bytes::copy_from_slice(first.message())).encode(),
    )
    .await?;

    let response = read_password_message(client, rd).await?;
    let success = first
        .client_final(response.body())
        .map_err(Failure::Refused)?;
    let scram_key: PassThroughKey = success.pass_through_key();
    Ok(Verified {
        method: AuthMethod::Scram,
        credentials: UpstreamCredentials {
            role: role.to_owned(),
            scram_key: Some(scram_key),
            password: auth
                .upstream_password(role)
                .map(|p| p.as_bytes().to_vec().into()),
            md5: None,
        },
        server_final: Some(Bytes::copy_from_slice(success.message())),
    })
}

/// SASLInitialResponse body: mechanism name, then an Int32 length (-1: none) and the data.
fn parse_sasl_initial(body: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
    let mut r = BodyReader::new(body, "SASLInitialResponse");
    let malformed = |_| AuthError::Malformed("SASLInitialResponse");
    let mechanism = r.cstr().map_err(malformed)?;
    let len = r.i32().map_err(malformed)?;
    let data = if len < 0 {
        Vec::new()
    } else {
        let len = usize::try_from(len).map_err(|_| AuthError::Malformed("SASL length"))?;
        r.bytes(len).map_err(malformed)?.to_vec()
    };
    let mechanism = std::str::from_utf8(mechanism)
        .map_err(|_| AuthError::Malformed("mechanism name is not UTF-8"))?
        .to_owned();
    Ok((mechanism, data))
}

async fn send(client: &mut ClientStream, message: &[u8]) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::Gone(SessionError::Io(e));
    client.write_all(message).await.map_err(io)?;
    client.flush().await.map_err(io)
}

/// The client's next message, which must be a password/SASL message ('p').
async fn read_password_message(
    client: &mut ClientStream,
    rd: &mut FrameReader,
) -> Result<Frame, Failure> {
    match rd.next(client).await {
        Ok(Some(f)) if f.message_tag() == Tag::PASSWORD_MESSAGE => Ok(f),
        Ok(Some(f)) if f.message_tag() == Tag::TERMINATE => {
            Err(Failure::Gone(SessionError::ClientGone))
        }
        Ok(Some(_)) => Err(Failure::Refused(AuthError::Malformed(
            "expected a password or SASL response message",
        ))),
        Ok(None) => Err(Failure::Gone(SessionError::ClientGone)),
        Err(WireError::TooLarge { .. }) => Err(Failure::Refused(AuthError::MessageTooLarge {
            what: "authentication message",
            len: MAX_AUTH_MESSAGE + 1,
            limit: MAX_AUTH_MESSAGE,
        })),
        Err(_) => Err(Failure::Gone(SessionError::ClientGone)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_role_gets_the_method_of_a_scram_role_and_cleartext_needs_tls() {
        use crate::auth::{Md5Verifier, ScramVerifier};
        use ClientAuthMethod::*;
        let scram = Verifier::Scram(ScramVerifier::from_password(b"pw", b"salt", 1).unwrap());
        let md5 = Verifier::Md5(Md5Verifier::from_password(b"pw", "r"));
        let all = [Md5, ScramSha256];
        assert_eq!(choose_method(&all, None, false), ScramSha256);
        assert_eq!(choose_method(&all, Some(&scram), false), ScramSha256);
        assert_eq!(choose_method(&all, Some(&md5), false), Md5);
        // md5 not allowed: the md5 role gets SCRAM (and fails), like PostgreSQL.
        assert_eq!(choose_method(&[ScramSha256], Some(&md5), true), ScramSha256);
        let cleartext_first = [Password, ScramSha256];
        assert_eq!(choose_method(&cleartext_first, None, false), ScramSha256);
        assert_eq!(choose_method(&cleartext_first, None, true), Password);
        assert_eq!(choose_method(&cleartext_first, Some(&md5), true), Password);
    }

    #[test]
    fn sasl_initial_response_is_parsed_and_bounded() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"n,,n=");
        let (m, d) = parse_sasl_initial(&body).unwrap();
        assert_eq!(m, "SCRAM-SHA-256");
        assert_eq!(d, b"n,,n=");
        let mut lying = b"SCRAM-SHA-256\0".to_vec();
        lying.extend_from_slice(&1000i32.to_be_bytes());
        assert!(parse_sasl_initial(&lying).is_err());
        assert!(parse_sasl_initial(b"no-nul").is_err());
    }
}
