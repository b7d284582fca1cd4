//! SCRAM-SHA-256 primitives shared by the server and the client state machines:
//! the key derivations of RFC 5802 §3, the message attribute grammar, and nonces.
//!
//! Nothing here keeps state or does I/O. Secrets live in zeroize-on-drop wrappers and
//! never appear in Debug output.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::AuthError;

/// SASL mechanism name without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name with channel binding (tls-server-end-point).
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type PostgreSQL supports.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";
/// Length of SHA-256 output and of every SCRAM key.
pub const KEY_LEN: usize = 32;
/// Random bytes in a nonce we generate (PostgreSQL uses 18 too).
pub const NONCE_RANDOM_BYTES: usize = 18;
/// PostgreSQL's default iteration count (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// PostgreSQL's salt length.
pub const DEFAULT_SALT_LEN: usize = 16;
/// Highest iteration count we accept from a verifier or an upstream server-first: it
/// bounds the PBKDF2 work an input can make us do.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest salt we accept (decoded bytes).
pub const MAX_SALT_LEN: usize = 256;

/// HMAC-SHA-256 keyed by a 32-byte key. A key shorter than the 64-byte block is
/// zero-padded by HMAC itself, so padding it here is the same function and avoids
/// a fallible `new_from_slice`.
pub(crate) fn hmac_sha256(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    block.zeroize();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

pub(crate) fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Constant-time equality of two byte strings (length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// SaltedPassword := Hi(Normalize(password), salt, i).
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> SecretKey {
    let normalized = normalize_password(password);
    SecretKey(pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(
        &normalized,
        salt,
        iterations,
    ))
}

/// Normalize(password) as PostgreSQL does it: SASLprep (RFC 4013) when the password is
/// UTF-8 and SASLprep accepts it, otherwise the raw bytes.
pub(crate) fn normalize_password(password: &[u8]) -> Zeroizing<Vec<u8>> {
    let prepared = std::str::from_utf8(password)
        .ok()
        .and_then(|text| stringprep::saslprep(text).ok());
    match prepared {
        Some(text) => Zeroizing::new(text.as_bytes().to_vec()),
        None => Zeroizing::new(password.to_vec()),
    }
}

/// A 32-byte secret (SaltedPassword, ClientKey, StoredKey, ServerKey). Zeroized on drop,
/// redacted in Debug.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub(crate) [u8; KEY_LEN]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// The raw key bytes. Callers must not log them.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for SecretKey {}

/// ClientKey := HMAC(SaltedPassword, "Client Key").
pub(crate) fn client_key(salted: &SecretKey) -> SecretKey {
    SecretKey(hmac_sha256(&salted.0, &[b"Client Key"]))
}

/// ServerKey := HMAC(SaltedPassword, "Server Key").
pub(crate) fn server_key(salted: &SecretKey) -> SecretKey {
    SecretKey(hmac_sha256(&salted.0, &[b"Server Key"]))
}

/// StoredKey := H(ClientKey).
pub(crate) fn stored_key(client_key: &SecretKey) -> SecretKey {
    SecretKey(sha256(&client_key.0))
}

/// A fresh nonce: 18 random bytes, base64 (only printable characters, no ',').
pub(crate) fn random_nonce() -> String {
    let mut bytes = [0u8; NONCE_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

pub(crate) fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub(crate) fn b64_decode(text: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(text)
        .map_err(|_| AuthError::Malformed(what))
}

/// `printable = %x21-2B / %x2D-7E` (RFC 5802): a valid nonce is non-empty and made of these.
pub(crate) fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Splits `name=value` and checks the attribute name.
pub(crate) fn attribute<'a>(
    part: Option<&'a str>,
    name: char,
    missing: &'static str,
) -> Result<&'a str, AuthError> {
    let part = part.ok_or(AuthError::Malformed(missing))?;
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some('=')) if c == name => Ok(chars.as_str()),
        _ => Err(AuthError::Malformed(missing)),
    }
}

/// Checks the size limit, then requires UTF-8 (SCRAM messages are UTF-8 text).
pub(crate) fn message_text<'a>(
    message: &'a [u8],
    what: &'static str,
    limit: usize,
) -> Result<&'a str, AuthError> {
    if message.len() > limit {
        return Err(AuthError::MessageTooLarge {
            what,
            len: message.len(),
            limit,
        });
    }
    std::str::from_utf8(message).map_err(|_| AuthError::Malformed("message is not UTF-8"))
}

/// The parsed gs2 header of a client-first message (RFC 5802 §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    SupportedNotUsed,
    /// `p=tls-server-end-point`: the client uses channel binding.
    TlsServerEndPoint,
}

impl Gs2Flag {
    /// The gs2 header text (PostgreSQL never sends an authzid).
    pub fn header(&self) -> &'static str {
        match self {
            Gs2Flag::NotSupported => "n,,",
            Gs2Flag::SupportedNotUsed => "y,,",
            Gs2Flag::TlsServerEndPoint => "p=tls-server-end-point,,",
        }
    }
}

/// Fields of a server-first message (`r=`, `s=`, `i=`).
pub(crate) struct ServerFirst {
    pub nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

pub(crate) fn parse_server_first(text: &str) -> Result<ServerFirst, AuthError> {
    let mut parts = text.split(',');
    let first = parts.next();
    if first.is_some_and(|p| p.starts_with("m=")) {
        return Err(AuthError::Malformed(
            "server-first carries an unsupported extension",
        ));
    }
    let nonce = attribute(first, 'r', "server-first lacks r=")?;
    if !is_valid_nonce(nonce) {
        return Err(AuthError::Malformed(
            "server-first nonce has invalid characters",
        ));
    }
    let salt_b64 = attribute(parts.next(), 's', "server-first lacks s=")?;
    let salt = b64_decode(salt_b64, "server-first salt is not base64")?;
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(AuthError::Malformed(
            "server-first salt length out of range",
        ));
    }
    let iter_text = attribute(parts.next(), 'i', "server-first lacks i=")?;
    let iterations = parse_iterations(iter_text)?;
    // Extensions after i= are allowed by the grammar and ignored.
    Ok(ServerFirst {
        nonce: nonce.to_owned(),
        salt,
        iterations,
    })
}

pub(crate) fn parse_iterations(text: &str) -> Result<u32, AuthError> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("iteration count is not a number"));
    }
    let value: u64 = text
        .parse()
        .map_err(|_| AuthError::Malformed("iteration count is not a number"))?;
    let value = u32::try_from(value).map_err(|_| AuthError::IterationCount(u32::MAX))?;
    if value == 0 || value > MAX_ITERATIONS {
        return Err(AuthError::IterationCount(value));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_hmac_equals_hmac_over_short_key() {
        let key = [7u8; KEY_LEN];
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(b"abc");
        let expected: [u8; KEY_LEN] = mac.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, &[b"a", b"bc"]), expected);
    }

    #[test]
    fn nonce_is_printable_base64_of_18_bytes() {
        let n = random_nonce();
        assert_eq!(n.len(), 24);
        assert!(is_valid_nonce(&n));
        assert_ne!(n, random_nonce());
    }

    #[test]
    fn iterations_reject_zero_huge_and_signs() {
        assert!(parse_iterations("0").is_err());
        assert!(parse_iterations("-1").is_err());
        assert!(parse_iterations("+5").is_err());
        assert!(parse_iterations("99999999999").is_err());
        assert_eq!(parse_iterations("4096").unwrap(), 4096);
    }

    #[test]
    fn passwords_are_saslprepped_like_postgres() {
        // U+00AD (soft hyphen) maps to nothing; U+00A0 (no-break space) to a space.
        assert_eq!(&*normalize_password("pen\u{AD}cil".as_bytes()), b"pencil");
        assert_eq!(&*normalize_password("a\u{A0}b".as_bytes()), b"a b");
        // Not UTF-8, or prohibited by SASLprep (control character): used raw.
        assert_eq!(&*normalize_password(b"\xff\xfe"), b"\xff\xfe");
        assert_eq!(&*normalize_password(b"a\x07b"), b"a\x07b");
        assert_eq!(&*normalize_password(b"plain"), b"plain");
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let k = SecretKey([0xAB; KEY_LEN]);
        let shown = format!("{k:?}");
        assert!(!shown.to_lowercase().contains("ab"));
    }
}
