//! The few messages pgcloak itself writes or reads inside.
//!
//! Builders for backend messages the proxy originates (errors, keys, protocol
//! negotiation) and small typed views over the messages it must look into.
//! Everything else is forwarded as raw frames and never passes through here.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{BodyReader, Frame};
use super::{Tag, WireError};

/// The field type bytes of an ErrorResponse or NoticeResponse.
pub mod field {
    /// Severity, localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized.
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// The SQLSTATE.
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
    pub const DETAIL: u8 = b'D';
    pub const HINT: u8 = b'H';
    /// Cursor position in the statement text.
    pub const POSITION: u8 = b'P';
    pub const INTERNAL_POSITION: u8 = b'p';
    pub const INTERNAL_QUERY: u8 = b'q';
    /// Context (call stack).
    pub const WHERE: u8 = b'W';
    pub const SCHEMA: u8 = b's';
    pub const TABLE: u8 = b't';
    pub const COLUMN: u8 = b'c';
    pub const DATA_TYPE: u8 = b'd';
    pub const CONSTRAINT: u8 = b'n';
    pub const FILE: u8 = b'F';
    pub const LINE: u8 = b'L';
    pub const ROUTINE: u8 = b'R';
}

/// Severity of an ErrorResponse we originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error pgcloak reports to a client, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> PgError {
        PgError::new(Severity::Fatal, code, message)
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> PgError {
        PgError::new(Severity::Error, code, message)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> PgError {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    /// Encodes the ErrorResponse ('E') message.
    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(Tag::ERROR_RESPONSE);
        b.field(field::SEVERITY, self.severity.as_str());
        b.field(field::SEVERITY_NONLOCALIZED, self.severity.as_str());
        b.field(field::CODE, self.code);
        b.field(field::MESSAGE, &self.message);
        if let Some(d) = &self.detail {
            b.field(field::DETAIL, d);
        }
        if let Some(h) = &self.hint {
            b.field(field::HINT, h);
        }
        b.buf.put_u8(0);
        b.finish()
    }
}

/// Writes one tagged message, patching its length at the end.
pub struct MessageBuilder {
    buf: BytesMut,
}

impl MessageBuilder {
    pub fn new(tag: Tag) -> Self {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(tag.byte());
        buf.put_i32(0);
        MessageBuilder { buf }
    }

    fn field(&mut self, code: u8, value: &str) {
        self.buf.put_u8(code);
        self.cstr(value);
    }

    pub fn cstr(&mut self, s: &str) -> &mut Self {
        // NUL cannot be represented; drop it rather than cut the message short.
        for b in s.bytes().filter(|&b| b != 0) {
            self.buf.put_u8(b);
        }
        self.buf.put_u8(0);
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.put_i32(v);
        self
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.put_i16(v);
        self
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.put_slice(v);
        self
    }

    pub fn finish(mut self) -> Bytes {
        let len = (self.buf.len() - 1) as i32;
        self.buf[1..5].copy_from_slice(&len.to_be_bytes());
        self.buf.freeze()
    }
}

/// BackendKeyData ('K') with a 4-byte secret (protocol 3.0).
pub fn backend_key_data(pid: i32, secret: u32) -> Bytes {
    let mut b = MessageBuilder::new(Tag::BACKEND_KEY_DATA);
    b.i32(pid).bytes(&secret.to_be_bytes());
    b.finish()
}

/// NegotiateProtocolVersion ('v'): the newest version we speak (full number) and the options we do not.
pub fn negotiate_protocol_version(newest_version: i32, unsupported: &[String]) -> Bytes {
    let mut b = MessageBuilder::new(Tag::NEGOTIATE_PROTOCOL_VERSION);
    b.i32(newest_version).i32(unsupported.len() as i32);
    for o in unsupported {
        b.cstr(o);
    }
    b.finish()
}

/// The transaction status byte of a ReadyForQuery.
pub mod transaction_status {
    /// Not in a transaction block.
    pub const IDLE: u8 = b'I';
    /// In a transaction block.
    pub const IN_TRANSACTION: u8 = b'T';
    /// In a failed transaction block (statements refused until it ends).
    pub const FAILED: u8 = b'E';
}

/// ReadyForQuery ('Z') with a [`transaction_status`] byte.
pub fn ready_for_query(status: u8) -> Bytes {
    let mut b = MessageBuilder::new(Tag::READY_FOR_QUERY);
    b.u8(status);
    b.finish()
}

/// An authentication request from upstream ('R'), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    Cleartext,
    Md5 {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<String>,
    },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// Kerberos, GSS, SSPI: not supported through the proxy.
    Other(i32),
}

pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT: i32 = 3;
pub const AUTH_MD5: i32 = 5;
pub const AUTH_SASL: i32 = 10;
pub const AUTH_SASL_CONTINUE: i32 = 11;
pub const AUTH_SASL_FINAL: i32 = 12;

impl AuthRequest {
    pub fn decode(frame: &Frame) -> Result<AuthRequest, WireError> {
        let mut r = BodyReader::new(frame.body(), "authentication");
        let code = r.i32()?;
        Ok(match code {
            AUTH_OK => AuthRequest::Ok,
            AUTH_CLEARTEXT => AuthRequest::Cleartext,
            AUTH_MD5 => {
                let s = r.bytes(4)?;
                AuthRequest::Md5 {
                    salt: [s[0], s[1], s[2], s[3]],
                }
            }
            AUTH_SASL => {
                let mut mechanisms = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(String::from_utf8_lossy(m).into_owned());
                }
                AuthRequest::Sasl { mechanisms }
            }
            AUTH_SASL_CONTINUE => AuthRequest::SaslContinue(Bytes::copy_from_slice(r.rest())),
            AUTH_SASL_FINAL => AuthRequest::SaslFinal(Bytes::copy_from_slice(r.rest())),
            other => AuthRequest::Other(other),
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut b = MessageBuilder::new(Tag::AUTHENTICATION);
        match self {
            AuthRequest::Ok => {
                b.i32(AUTH_OK);
            }
            AuthRequest::Cleartext => {
                b.i32(AUTH_CLEARTEXT);
            }
            AuthRequest::Md5 { salt } => {
                b.i32(AUTH_MD5).bytes(salt);
            }
            AuthRequest::Sasl { mechanisms } => {
                b.i32(AUTH_SASL);
                for m in mechanisms {
                    b.cstr(m);
                }
                b.u8(0);
            }
            AuthRequest::SaslContinue(d) => {
                b.i32(AUTH_SASL_CONTINUE).bytes(d);
            }
            AuthRequest::SaslFinal(d) => {
                b.i32(AUTH_SASL_FINAL).bytes(d);
            }
            AuthRequest::Other(code) => {
                b.i32(*code);
            }
        }
        b.finish()
    }
}

/// BackendKeyData ('K') from upstream. Protocol 3.0 secrets are 4 bytes.
pub fn decode_backend_key_data(frame: &Frame) -> Result<(i32, Vec<u8>), WireError> {
    let mut r = BodyReader::new(frame.body(), "BackendKeyData");
    let pid = r.i32()?;
    let secret = r.rest().to_vec();
    if secret.is_empty() || secret.len() > 256 {
        return Err(WireError::Malformed {
            what: "BackendKeyData",
        });
    }
    Ok((pid, secret))
}

/// ParameterStatus ('S'): name and value.
pub fn decode_parameter_status(frame: &Frame) -> Result<(String, String), WireError> {
    let mut r = BodyReader::new(frame.body(), "ParameterStatus");
    let name = String::from_utf8_lossy(r.cstr()?).into_owned();
    let value = String::from_utf8_lossy(r.cstr()?).into_owned();
    Ok((name, value))
}

/// The fields of an ErrorResponse/NoticeResponse we may log: severity and SQLSTATE only.
pub fn error_code(frame: &Frame) -> Option<String> {
    let mut r = BodyReader::new(frame.body(), "ErrorResponse");
    loop {
        let code = r.u8().ok()?;
        if code == 0 {
            return None;
        }
        let value = r.cstr().ok()?;
        if code == field::CODE {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
    }
}

/// Terminate ('X'), whole: it has no body.
pub const TERMINATE: [u8; 5] = [Tag::TERMINATE.byte(), 0, 0, 0, 4];

/// The CancelRequest packet (untagged), protocol 3.0.
pub fn cancel_request(pid: i32, secret: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(12 + secret.len());
    b.put_i32(12 + secret.len() as i32);
    b.put_i32(super::startup::CANCEL_REQUEST_CODE);
    b.put_i32(pid);
    b.put_slice(secret);
    b.freeze()
}

/// The SSLRequest packet.
pub fn ssl_request() -> Bytes {
    let mut b = BytesMut::with_capacity(8);
    b.put_i32(8);
    b.put_i32(super::startup::SSL_REQUEST_CODE);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips_its_code() {
        let e = PgError::fatal("53300", "sorry, too many clients already").encode();
        let f = Frame::from_encoded(e);
        assert_eq!(f.message_tag(), Tag::ERROR_RESPONSE);
        assert_eq!(error_code(&f).as_deref(), Some("53300"));
        let len = i32::from_be_bytes([
            f.as_bytes()[1],
            f.as_bytes()[2],
            f.as_bytes()[3],
            f.as_bytes()[4],
        ]);
        assert_eq!(len as usize + 1, f.len());
    }

    #[test]
    fn sasl_mechanisms_round_trip() {
        let req = AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
        };
        let f = Frame::from_encoded(req.encode());
        assert_eq!(AuthRequest::decode(&f).unwrap(), req);
    }

    #[test]
    fn terminate_is_a_whole_message() {
        let mut buf = BytesMut::from(&TERMINATE[..]);
        let f = super::super::split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.message_tag(), Tag::TERMINATE);
        assert!(f.body().is_empty());
    }

    #[test]
    fn cancel_request_has_the_right_length() {
        let c = cancel_request(42, &[1, 2, 3, 4]);
        assert_eq!(c.len(), 16);
        assert_eq!(&c[..4], &16i32.to_be_bytes());
    }
}
