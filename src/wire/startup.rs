//! The untagged packets a connection opens with: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage.
//!
//! These are read before any tagged framing starts, so their size limit is
//! small and checked before allocation.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::BodyReader;
use super::WireError;

pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;

/// PostgreSQL's own limit for a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// The first packet of a connection, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(StartupMessage),
}

/// A StartupMessage: protocol version and its parameters, in client order.
#[derive(Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for StartupMessage {
    // Parameter values such as `options` are the client's business; show names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StartupMessage")
            .field("version", &format_args!("{}.{}", self.major, self.minor))
            .field("params", &names)
            .finish()
    }
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The role name the client asked for.
    pub fn user(&self) -> &str {
        self.param("user").unwrap_or("")
    }

    /// The database, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> &str {
        self.param("database").unwrap_or_else(|| self.user())
    }

    /// Protocol extension options (`_pq_.*`) that we do not support.
    pub fn protocol_options(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Encodes the message for upstream at protocol 3.0, without `_pq_.` options.
    pub fn encode_v30(&self) -> Bytes {
        let mut body = BytesMut::with_capacity(128);
        body.put_i32(3 << 16);
        for (k, v) in &self.params {
            if k.starts_with("_pq_.") {
                continue;
            }
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::with_capacity(body.len() + 4);
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
        out.freeze()
    }
}

/// Reads one untagged startup-phase packet. Refuses lengths outside [8, MAX_STARTUP_PACKET].
pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StartupPacket, WireError> {
    let mut len_buf = [0u8; 4];
    read_exact_or_truncated(r, &mut len_buf).await?;
    let len = i32::from_be_bytes(len_buf) as i64;
    if !(8..=MAX_STARTUP_PACKET as i64).contains(&len) {
        return Err(WireError::InvalidStartupLength(len));
    }
    let mut body = vec![0u8; len as usize - 4];
    read_exact_or_truncated(r, &mut body).await?;
    parse_startup_body(&body)
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), WireError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Err(e) => Err(WireError::Io(e)),
    }
}

/// Decodes a startup packet body (everything after the length word).
pub fn parse_startup_body(body: &[u8]) -> Result<StartupPacket, WireError> {
    let mut r = BodyReader::new(body, "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST_CODE if r.remaining() == 0 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if r.remaining() == 0 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            let secret = r.rest().to_vec();
            if secret.is_empty() || secret.len() > 256 {
                return Err(WireError::MalformedStartup("cancel request key"));
            }
            Ok(StartupPacket::Cancel { pid, secret })
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            Err(WireError::MalformedStartup("negotiation request"))
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let key = r.cstr()?;
                if key.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                let key = std::str::from_utf8(key)
                    .map_err(|_| WireError::MalformedStartup("parameter name is not UTF-8"))?;
                // Values are forwarded as the client sent them; PostgreSQL itself
                // validates their encoding. We keep a lossless String only if valid.
                let value = String::from_utf8(value.to_vec())
                    .map_err(|_| WireError::MalformedStartup("parameter value is not UTF-8"))?;
                params.push((key.to_string(), value));
            }
            if r.remaining() != 0 {
                return Err(WireError::MalformedStartup("trailing bytes"));
            }
            if !params.iter().any(|(k, _)| k == "user") {
                return Err(WireError::MalformedStartup(
                    "no PostgreSQL user name specified",
                ));
            }
            Ok(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn reads_ssl_request() {
        let p = packet(&SSL_REQUEST_CODE.to_be_bytes());
        let got = read_startup_packet(&mut &p[..]).await.unwrap();
        assert_eq!(got, StartupPacket::SslRequest);
    }

    #[tokio::test]
    async fn reads_startup_and_reencodes_without_protocol_options() {
        let mut body = (3i32 << 16 | 2).to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0db\0_pq_.x\0y\0options\0-c a=b\0\0");
        let p = packet(&body);
        let StartupPacket::Startup(m) = read_startup_packet(&mut &p[..]).await.unwrap() else {
            panic!("not a startup")
        };
        assert_eq!((m.major, m.minor), (3, 2));
        assert_eq!(m.user(), "alice");
        assert_eq!(m.protocol_options(), vec!["_pq_.x".to_string()]);
        let enc = m.encode_v30();
        let StartupPacket::Startup(again) = parse_startup_body(&enc[4..]).unwrap() else {
            panic!()
        };
        assert_eq!(again.minor, 0);
        assert_eq!(again.params.len(), 3);
        assert_eq!(again.param("options"), Some("-c a=b"));
    }

    #[tokio::test]
    async fn refuses_oversized_and_tiny_lengths() {
        let big = (1i32 << 30).to_be_bytes();
        assert!(matches!(
            read_startup_packet(&mut &big[..]).await,
            Err(WireError::InvalidStartupLength(_))
        ));
        let tiny = 3i32.to_be_bytes();
        assert!(read_startup_packet(&mut &tiny[..]).await.is_err());
    }

    #[tokio::test]
    async fn truncated_packet_is_an_error() {
        let mut p = packet(&SSL_REQUEST_CODE.to_be_bytes());
        p.truncate(6);
        assert!(matches!(
            read_startup_packet(&mut &p[..]).await,
            Err(WireError::Truncated)
        ));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for body in [
            &b""[..],
            b"\0\0",
            b"\x00\x02\x00\x00user",
            b"\x00\x03\x00\x00user\0",
        ] {
            assert!(parse_startup_body(body).is_err());
        }
    }

    #[test]
    fn cancel_request_is_decoded() {
        let mut body = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            parse_startup_body(&body).unwrap(),
            StartupPacket::Cancel {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            }
        );
    }
}
