//! The cipher suite of one policy generation: every column's derived keys, ready to
//! seal and open envelopes on the hot path.
//!
//! Owns key derivation at build time and the AEAD/HMAC calls per value. Encrypting or
//! decrypting never runs a KDF and allocates only the output. Must never return a
//! plaintext that did not authenticate, nor open an envelope under another column.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::envelope::{peek_header, Header, Scheme, HEADER_LEN, NONCE_LEN, OVERHEAD, TAG_LEN};
use super::error::CryptoError;
use super::kdf::{column_tag, derive_key, length_prefixed, Purpose};
use super::keyring::Keyring;
use crate::policy::{ColumnRef, Encryption, Policy};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of HMAC output kept in a pseudonym token (encoded as 16 base64url characters).
const PSEUDONYM_BYTES: usize = 12;

/// Keys of one crypto domain under one master key.
struct DomainKeys {
    key_id: u32,
    aead: XChaCha20Poly1305,
    /// Pre-keyed; cloned per value (cheaper than re-keying).
    nonce_mac: HmacSha256,
    /// Full AAD (header || length-prefixed domain) for each scheme under this key.
    aad_randomized: Vec<u8>,
    aad_deterministic: Vec<u8>,
}

impl DomainKeys {
    fn aad(&self, scheme: Scheme) -> &[u8] {
        match scheme {
            Scheme::Randomized => &self.aad_randomized,
            Scheme::Deterministic => &self.aad_deterministic,
        }
    }
}

struct ColumnCipher {
    scheme: Scheme,
    tag: u32,
    /// The key new values are sealed with (active key, or the pinned one).
    write: Arc<DomainKeys>,
    /// Every key of the keyring for this domain, for opening.
    all: Vec<Arc<DomainKeys>>,
    /// Pre-keyed pseudonym HMAC, under the domain's deterministic key so tokens
    /// survive a change of active key.
    pseudonym_mac: HmacSha256,
}

/// Derived keys for every column of one policy generation.
pub struct CipherSuite {
    generation: u64,
    columns: Vec<ColumnCipher>,
    by_tag: HashMap<u32, Vec<ColumnRef>>,
}

impl fmt::Debug for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CipherSuite")
            .field("generation", &self.generation)
            .field("columns", &self.columns.len())
            .finish_non_exhaustive()
    }
}

fn hmac_from(key: &[u8; 32]) -> HmacSha256 {
    // HMAC accepts keys of any length; 32 bytes cannot be rejected.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => <HmacSha256 as KeyInit>::new(&Default::default()),
    }
}

impl CipherSuite {
    /// Derives every key the policy generation needs, for every key id in the keyring.
    pub fn new(keyring: &Keyring, policy: &Policy) -> Result<CipherSuite, CryptoError> {
        let mut derived: HashMap<(String, u32), Arc<DomainKeys>> = HashMap::new();
        let mut columns = Vec::with_capacity(policy.columns().len());
        let mut by_tag: HashMap<u32, Vec<ColumnRef>> = HashMap::new();
        for (i, c) in policy.columns().iter().enumerate() {
            let domain = c.crypto_domain();
            let tag = column_tag(domain);
            let scheme = match c.encryption {
                Encryption::Randomized => Scheme::Randomized,
                Encryption::Deterministic => Scheme::Deterministic,
            };
            let mut all = Vec::new();
            for key_id in keyring.key_ids() {
                let dk = derived
                    .entry((domain.to_string(), key_id))
                    .or_insert_with(|| Arc::new(derive_domain(keyring, key_id, domain, tag)))
                    .clone();
                all.push(dk);
            }
            let det_id = keyring.deterministic_key_id(domain);
            let write_id = match scheme {
                Scheme::Randomized => keyring.active_key_id(),
                Scheme::Deterministic => det_id,
            };
            let find = |id: u32, purpose: &str| {
                all.iter().find(|k| k.key_id == id).cloned().ok_or_else(|| {
                    CryptoError::MissingKey {
                        key_id: id,
                        purpose: format!("{purpose} of {domain}"),
                    }
                })
            };
            let write = find(write_id, "encryption")?;
            let det_master = keyring.key(det_id).ok_or_else(|| CryptoError::MissingKey {
                key_id: det_id,
                purpose: format!("pseudonyms of {domain}"),
            })?;
            let pkey = derive_key(det_master, Purpose::Pseudonym, domain);
            columns.push(ColumnCipher {
                scheme,
                tag,
                write,
                all,
                pseudonym_mac: hmac_from(&pkey),
            });
            by_tag.entry(tag).or_default().push(ColumnRef(i as u32));
        }
        Ok(CipherSuite {
            generation: policy.generation(),
            columns,
            by_tag,
        })
    }

    /// The policy generation the suite was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn column(&self, col: ColumnRef) -> Result<&ColumnCipher, CryptoError> {
        self.columns
            .get(col.0 as usize)
            .ok_or(CryptoError::UnknownColumn(col.0))
    }

    /// The column tag written into this column's envelopes.
    pub fn column_tag(&self, col: ColumnRef) -> Result<u32, CryptoError> {
        Ok(self.column(col)?.tag)
    }

    /// The key id new values of the column are sealed with.
    pub fn write_key_id(&self, col: ColumnRef) -> Result<u32, CryptoError> {
        Ok(self.column(col)?.write.key_id)
    }

    /// Columns whose envelopes carry `tag` (several for a key group), to open an
    /// envelope found where the result's origin is unknown.
    pub fn columns_with_tag(&self, tag: u32) -> &[ColumnRef] {
        self.by_tag.get(&tag).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `key_id` names a key of the keyring this suite was derived from
    /// (the egress check uses it to tell an envelope header from look-alike bytes).
    pub fn knows_key_id(&self, key_id: u32) -> bool {
        self.columns
            .first()
            .is_some_and(|c| c.all.iter().any(|k| k.key_id == key_id))
    }

    /// Seals `plaintext` (a canonical value) into an envelope for `col`.
    pub fn encrypt(&self, col: ColumnRef, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let c = self.column(col)?;
        let keys = &c.write;
        let aad = keys.aad(c.scheme);
        let mut nonce = [0u8; NONCE_LEN];
        match c.scheme {
            Scheme::Randomized => {
                getrandom::fill(&mut nonce).map_err(|_| CryptoError::RandomnessUnavailable)?
            }
            Scheme::Deterministic => {
                let mut mac = keys.nonce_mac.clone();
                mac.update(aad);
                mac.update(plaintext);
                let full = mac.finalize().into_bytes();
                nonce.copy_from_slice(&full[..NONCE_LEN]);
            }
        }
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&aad[..HEADER_LEN]);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let body = &mut out[HEADER_LEN + NONCE_LEN..];
        let tag = keys
            .aead
            .encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
            .map_err(|_| CryptoError::ValueTooLarge)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens an envelope of `col`. Fails with a typed error, never a wrong plaintext.
    /// Either scheme opens (both are authenticated), so a column whose encryption
    /// changed still reads its older values.
    pub fn decrypt(&self, col: ColumnRef, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let c = self.column(col)?;
        let h: Header = peek_header(envelope)?;
        if h.column_tag != c.tag {
            return Err(CryptoError::WrongColumn {
                expected: c.tag,
                found: h.column_tag,
            });
        }
        let keys = c
            .all
            .iter()
            .find(|k| k.key_id == h.key_id)
            .ok_or(CryptoError::UnknownKeyId(h.key_id))?;
        let aad = keys.aad(h.scheme);
        let ct_end = envelope.len() - TAG_LEN; // peek_header checked len >= OVERHEAD
        let (Some(nonce), Some(ct), Some(tag)) = (
            envelope.get(HEADER_LEN..HEADER_LEN + NONCE_LEN),
            envelope.get(HEADER_LEN + NONCE_LEN..ct_end),
            envelope.get(ct_end..),
        ) else {
            return Err(CryptoError::NotAnEnvelope);
        };
        let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::NotAnEnvelope)?;
        let tag = Tag::try_from(tag).map_err(|_| CryptoError::NotAnEnvelope)?;
        let mut out = ct.to_vec();
        match keys
            .aead
            .decrypt_inout_detached(&nonce, aad, out.as_mut_slice().into(), &tag)
        {
            Ok(()) => Ok(out),
            Err(_) => {
                out.zeroize();
                Err(CryptoError::AuthenticationFailed)
            }
        }
    }

    /// A keyed, stable token for a canonical value: equal values of one domain give
    /// equal tokens; the value cannot be recovered. 16 base64url characters.
    pub fn pseudonym(
        &self,
        col: ColumnRef,
        canonical_plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let c = self.column(col)?;
        let mut mac = c.pseudonym_mac.clone();
        mac.update(canonical_plaintext);
        let full = mac.finalize().into_bytes();
        Ok(URL_SAFE_NO_PAD.encode(&full[..PSEUDONYM_BYTES]))
    }
}

fn derive_domain(keyring: &Keyring, key_id: u32, domain: &str, tag: u32) -> DomainKeys {
    // key_ids() only yields ids present in the keyring.
    let (enc, nonce) = match keyring.key(key_id) {
        Some(master) => (
            derive_key(master, Purpose::Encryption, domain),
            derive_key(master, Purpose::Nonce, domain),
        ),
        None => (Default::default(), Default::default()),
    };
    let aead = XChaCha20Poly1305::new(&(*enc).into());
    let tail = length_prefixed(domain);
    let aad_for = |scheme: Scheme| {
        let mut v = Header {
            scheme,
            key_id,
            column_tag: tag,
        }
        .to_bytes()
        .to_vec();
        v.extend_from_slice(&tail);
        v
    };
    DomainKeys {
        key_id,
        aead,
        nonce_mac: hmac_from(&nonce),
        aad_randomized: aad_for(Scheme::Randomized),
        aad_deterministic: aad_for(Scheme::Deterministic),
    }
}
