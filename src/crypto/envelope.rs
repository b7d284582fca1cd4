//! Ciphertext envelope v1: the byte layout stored in a protected `bytea` column.
//!
//! ```text
//! 0  2  magic "pc"        2  1  version = 1        3  1  scheme: 1 randomized, 2 deterministic
//! 4  4  key id (u32 BE)   8  4  column tag (u32 BE)
//! 12 24 XChaCha20 nonce   36 n  ciphertext         36+n 16  Poly1305 tag
//! ```
//! Owns the layout and header parsing only; sealing and opening live in `suite.rs`.

use super::error::CryptoError;

/// The first two bytes of every envelope.
pub const MAGIC: [u8; 2] = *b"pc";
/// The envelope version this code writes and reads.
pub const VERSION: u8 = 1;
/// Header bytes (magic, version, scheme, key id, column tag).
pub const HEADER_LEN: usize = 12;
/// XChaCha20 nonce bytes.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag bytes.
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// How an envelope's nonce was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Random nonce from the OS CSPRNG.
    Randomized = 1,
    /// Nonce = HMAC-SHA256(nonce key, AAD || plaintext)[..24].
    Deterministic = 2,
}

impl Scheme {
    pub fn byte(self) -> u8 {
        self as u8
    }

    pub fn from_byte(b: u8) -> Result<Scheme, CryptoError> {
        match b {
            1 => Ok(Scheme::Randomized),
            2 => Ok(Scheme::Deterministic),
            other => Err(CryptoError::UnknownScheme(other)),
        }
    }
}

/// The parsed 12-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub scheme: Scheme,
    pub key_id: u32,
    pub column_tag: u32,
}

impl Header {
    /// The 12 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = VERSION;
        h[3] = self.scheme.byte();
        h[4..8].copy_from_slice(&self.key_id.to_be_bytes());
        h[8..12].copy_from_slice(&self.column_tag.to_be_bytes());
        h
    }
}

/// Cheap check used to recognise envelopes in results: magic and version only.
pub fn looks_like_envelope(bytes: &[u8]) -> bool {
    bytes.len() >= OVERHEAD && bytes.starts_with(&MAGIC) && bytes.get(2) == Some(&VERSION)
}

/// Parses and checks the header of `envelope` without decrypting anything.
pub fn peek_header(envelope: &[u8]) -> Result<Header, CryptoError> {
    let Some(h) = envelope.first_chunk::<HEADER_LEN>() else {
        return Err(CryptoError::NotAnEnvelope);
    };
    if h[0..2] != MAGIC {
        return Err(CryptoError::NotAnEnvelope);
    }
    if h[2] != VERSION {
        return Err(CryptoError::UnsupportedVersion(h[2]));
    }
    let scheme = Scheme::from_byte(h[3])?;
    if envelope.len() < OVERHEAD {
        return Err(CryptoError::NotAnEnvelope);
    }
    Ok(Header {
        scheme,
        key_id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        column_tag: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    })
}
