//! Column key derivation: HKDF-SHA256 over a master key, one `info` per purpose,
//! bound to the length-prefixed crypto domain (column id or key group).
//!
//! Runs only when a [`super::CipherSuite`] is built (once per policy generation),
//! never per value. Derived keys live in zeroizing buffers.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::keyring::MasterKey;

/// What a derived key is for. The purpose strings are part of the format (docs/format.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The XChaCha20-Poly1305 key.
    Encryption,
    /// The HMAC key for deterministic (SIV-style) nonces.
    Nonce,
    /// The HMAC key for pseudonym tokens.
    Pseudonym,
}

impl Purpose {
    pub fn label(self) -> &'static [u8] {
        match self {
            Purpose::Encryption => b"pgcloak v1 enc",
            Purpose::Nonce => b"pgcloak v1 nonce",
            Purpose::Pseudonym => b"pgcloak v1 pseudonym",
        }
    }
}

/// `u32 BE length || domain bytes`: the form bound into HKDF info and the AAD.
pub fn length_prefixed(domain: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + domain.len());
    v.extend_from_slice(&(domain.len() as u32).to_be_bytes());
    v.extend_from_slice(domain.as_bytes());
    v
}

/// HKDF-SHA256 (no salt), info = purpose label || length-prefixed domain, 32 bytes out.
pub fn derive_key(master: &MasterKey, purpose: Purpose, domain: &str) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, master.expose());
    let mut info = purpose.label().to_vec();
    info.extend_from_slice(&length_prefixed(domain));
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(&info, out.as_mut()).is_err() {
        out.as_mut().fill(0);
    }
    out
}

/// The column tag in the envelope header: the first 4 bytes of SHA-256(domain), big endian.
pub fn column_tag(domain: &str) -> u32 {
    let d = Sha256::digest(domain.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}
