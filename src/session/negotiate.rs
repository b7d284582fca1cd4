//! The client's side of connection start: direct TLS, SSLRequest, GSSENCRequest,
//! CancelRequest and finally the StartupMessage.

use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::net::ClientStream;
use crate::tls::ClientTlsMode;
use crate::tls::ALPN_POSTGRESQL;
use crate::wire::messages::negotiate_protocol_version;
use crate::wire::startup::{read_startup_packet, StartupMessage, StartupPacket};
use crate::wire::{PgError, WireError};

use super::SessionError;

/// What the first packets of a connection asked for.
pub enum Negotiated {
    Session {
        client: ClientStream,
        startup: StartupMessage,
    },
    /// A CancelRequest. The connection is kept until the cancel has been dealt with and
    /// closed only then, as PostgreSQL does: a driver that waits for the close (libpq's
    /// PQcancel, asyncpg) knows the cancel was delivered before it sends its next statement.
    Cancel {
        pid: i32,
        secret: Vec<u8>,
        client: ClientStream,
    },
}

/// The TLS handshake byte that opens a direct-TLS connection (PostgreSQL 17).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

pub async fn negotiate(
    tcp: TcpStream,
    acceptor: Option<&TlsAcceptor>,
    tls_mode: ClientTlsMode,
) -> Result<Negotiated, (Option<ClientStream>, SessionError)> {
    let mut stream = direct_tls_or_plain(tcp, acceptor).await?;

    // PostgreSQL accepts at most one SSLRequest and one GSSENCRequest per connection.
    let mut ssl_seen = false;
    let mut gss_seen = false;
    loop {
        let packet = match read_startup_packet(&mut stream).await {
            Ok(p) => p,
            Err(e) => return Err((Some(stream), SessionError::Wire(e))),
        };
        match packet {
            StartupPacket::SslRequest if ssl_seen => {
                return Err((Some(stream), SessionError::Protocol("duplicate SSLRequest")));
            }
            StartupPacket::GssEncRequest if gss_seen => {
                return Err((
                    Some(stream),
                    SessionError::Protocol("duplicate GSSENCRequest"),
                ));
            }
            StartupPacket::SslRequest => {
                ssl_seen = true;
                stream = answer_ssl_request(stream, acceptor).await?;
            }
            StartupPacket::GssEncRequest => {
                gss_seen = true;
                if let Err(e) = stream.write_all(b"N").await {
                    return Err((None, SessionError::Io(e)));
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok(Negotiated::Cancel {
                    pid,
                    secret,
                    client: stream,
                })
            }
            StartupPacket::Startup(startup) => {
                if tls_mode == ClientTlsMode::Required && !stream.is_tls() {
                    return Err((Some(stream), SessionError::TlsRequired));
                }
                let options = startup.protocol_options();
                if startup.minor > 0 || !options.is_empty() {
                    // We speak 3.0 to upstream, so we answer for the server here.
                    // PostgreSQL sends the full version number (major << 16 | minor), as libpq expects.
                    let msg = negotiate_protocol_version(3 << 16, &options);
                    if let Err(e) = stream.write_all(&msg).await {
                        return Err((None, SessionError::Io(e)));
                    }
                }
                return Ok(Negotiated::Session {
                    client: stream,
                    startup,
                });
            }
        }
    }
}

/// The connection's first byte tells direct TLS (PostgreSQL 17's `sslnegotiation=direct`)
/// from a plain startup.
async fn direct_tls_or_plain(
    tcp: TcpStream,
    acceptor: Option<&TlsAcceptor>,
) -> Result<ClientStream, (Option<ClientStream>, SessionError)> {
    let mut first = [0u8; 1];
    let n = tcp
        .peek(&mut first)
        .await
        .map_err(|e| (None, SessionError::Io(e)))?;
    if n == 0 {
        return Err((None, SessionError::ClientGone));
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(ClientStream::Plain(tcp));
    }
    let Some(acceptor) = acceptor else {
        return Err((None, SessionError::DirectTlsNotConfigured));
    };
    let tls = accept_tls(acceptor, tcp).await.map_err(|e| (None, e))?;
    // Direct TLS must say it is PostgreSQL, or a cross-protocol attack could use us.
    if tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err((None, SessionError::DirectTlsWithoutAlpn));
    }
    Ok(ClientStream::Tls(Box::new(tls)))
}

/// Answers an SSLRequest: "N" without TLS configured, else "S" and the handshake.
async fn answer_ssl_request(
    stream: ClientStream,
    acceptor: Option<&TlsAcceptor>,
) -> Result<ClientStream, (Option<ClientStream>, SessionError)> {
    let ClientStream::Plain(mut tcp) = stream else {
        return Err((
            Some(stream),
            SessionError::Protocol("SSLRequest received on an encrypted connection"),
        ));
    };
    let Some(acceptor) = acceptor else {
        write_or_fail(&mut tcp, b"N").await?;
        return Ok(ClientStream::Plain(tcp));
    };
    // CVE-2021-23214: bytes sent before the handshake would be taken
    // as if they had come through TLS. Refuse them.
    let mut probe = [0u8; 1];
    if let Some(Ok(n)) = tcp.peek(&mut probe).now_or_never() {
        if n > 0 {
            return Err((
                Some(ClientStream::Plain(tcp)),
                SessionError::Protocol("received unencrypted data after SSL request"),
            ));
        }
    }
    write_or_fail(&mut tcp, b"S").await?;
    let tls = accept_tls(acceptor, tcp).await.map_err(|e| (None, e))?;
    Ok(ClientStream::Tls(Box::new(tls)))
}

async fn write_or_fail(
    tcp: &mut TcpStream,
    bytes: &[u8],
) -> Result<(), (Option<ClientStream>, SessionError)> {
    tcp.write_all(bytes)
        .await
        .map_err(|e| (None, SessionError::Io(e)))
}

async fn accept_tls(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, SessionError> {
    acceptor
        .accept(tcp)
        .await
        .map_err(|e| SessionError::TlsHandshake(e.to_string()))
}

/// The error a client sees when negotiation fails, if it should see one.
pub fn negotiation_error(e: &SessionError) -> Option<PgError> {
    match e {
        SessionError::Wire(w @ WireError::UnsupportedProtocol { .. }) => {
            Some(PgError::fatal(w.sqlstate(), w.to_string()))
        }
        SessionError::Wire(WireError::Io(_)) | SessionError::Wire(WireError::Truncated) => None,
        SessionError::Wire(w) => Some(PgError::fatal(
            "08P01",
            format!("invalid startup packet: {w}"),
        )),
        SessionError::Protocol(m) => Some(PgError::fatal("08P01", *m)),
        SessionError::TlsRequired => Some(
            PgError::fatal("28000", "pgcloak accepts only TLS connections")
                .with_hint("Connect with sslmode=require (or stronger)."),
        ),
        _ => None,
    }
}

/// The bytes a client gets when negotiation fails, if it should get any.
///
/// PostgreSQL answers a startup packet in the client's own protocol: a client
/// that asked for protocol 1.x or 2.x gets the version-2 error message (`E`, the
/// text, a NUL, no length word), which is all such a client can read; every other
/// version gets a version-3 ErrorResponse.
pub fn negotiation_error_bytes(e: &SessionError) -> Option<Vec<u8>> {
    let pe = negotiation_error(e)?;
    match e {
        SessionError::Wire(WireError::UnsupportedProtocol { major, .. }) if *major < 3 => {
            let mut out = b"E".to_vec();
            out.extend_from_slice(format!("FATAL:  {}\n", pe.message).as_bytes());
            out.push(0);
            Some(out)
        }
        _ => Some(pe.encode().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Tag;

    #[test]
    fn old_protocols_get_the_version_2_error_format() {
        let e = SessionError::Wire(WireError::UnsupportedProtocol { major: 2, minor: 0 });
        assert_eq!(
            negotiation_error_bytes(&e).unwrap(),
            b"EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0"
        );
        let e = SessionError::Wire(WireError::UnsupportedProtocol { major: 4, minor: 1 });
        let v3 = negotiation_error_bytes(&e).unwrap();
        assert_eq!(Tag(v3[0]), Tag::ERROR_RESPONSE);
        assert!(String::from_utf8_lossy(&v3).contains("C0A000"));
    }
}
