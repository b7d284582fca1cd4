//! Channel binding: what a leg's TLS state allows, and the tls-server-end-point data
//! (RFC 5929 §4.1) computed from a DER certificate.
//!
//! Only enough DER is parsed to find the certificate's outer signature algorithm; this
//! module never validates certificates (that is rustls's job on the TLS leg).

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use super::error::AuthError;

/// The channel binding facts of the leg between pgcloak and the client.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Plain TCP or Unix socket: only `n` is valid, `p=` is refused.
    Plain,
    /// TLS, with the tls-server-end-point data of pgcloak's certificate when it could be
    /// computed (then SCRAM-SHA-256-PLUS is offered and `y` is a downgrade).
    Tls { server_end_point: Option<Vec<u8>> },
}

impl ChannelBinding {
    /// The binding data when SCRAM-SHA-256-PLUS can be offered on this leg.
    pub fn end_point(&self) -> Option<&[u8]> {
        match self {
            ChannelBinding::Tls {
                server_end_point: Some(data),
            } => Some(data),
            _ => None,
        }
    }

    /// Builds the TLS variant from the leg's certificate; an unhashable signature
    /// algorithm (Ed25519, RSA-PSS) leaves PLUS unoffered, as PostgreSQL does.
    pub fn tls_from_certificate(cert_der: &[u8]) -> Self {
        ChannelBinding::Tls {
            server_end_point: tls_server_end_point(cert_der).ok(),
        }
    }
}

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelBinding::Plain => f.write_str("Plain"),
            ChannelBinding::Tls { server_end_point } => f
                .debug_struct("Tls")
                .field("plus", &server_end_point.is_some())
                .finish(),
        }
    }
}

enum EndPointHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

// DER encodings of the signature algorithm OIDs we map to a hash.
const RSA_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_SHA2_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];

fn hash_for_signature_oid(oid: &[u8]) -> Option<EndPointHash> {
    // RFC 5929: MD5 and SHA-1 are replaced by SHA-256; otherwise the signature's hash.
    if let Some(rest) = oid.strip_prefix(RSA_PREFIX) {
        return match rest {
            [0x04] | [0x05] | [0x0b] => Some(EndPointHash::Sha256),
            [0x0c] => Some(EndPointHash::Sha384),
            [0x0d] => Some(EndPointHash::Sha512),
            [0x0e] => Some(EndPointHash::Sha224),
            _ => None,
        };
    }
    if oid == ECDSA_SHA1 {
        return Some(EndPointHash::Sha256);
    }
    if let Some(rest) = oid.strip_prefix(ECDSA_SHA2_PREFIX) {
        return match rest {
            [0x01] => Some(EndPointHash::Sha224),
            [0x02] => Some(EndPointHash::Sha256),
            [0x03] => Some(EndPointHash::Sha384),
            [0x04] => Some(EndPointHash::Sha512),
            _ => None,
        };
    }
    None
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first_len, rest) = rest.split_first()?;
    let (len, rest) = if first_len < 0x80 {
        (usize::from(first_len), rest)
    } else {
        let count = usize::from(first_len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// The tls-server-end-point channel binding data for a DER certificate: its hash with
/// the hash function of its signature algorithm (SHA-256 for MD5/SHA-1 signatures).
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>, AuthError> {
    let not_cert = AuthError::CertificateHash("not a DER certificate");
    let (tag, cert, _) = der_element(cert_der).ok_or(not_cert.clone())?;
    if tag != SEQUENCE {
        return Err(not_cert);
    }
    let (tag, _tbs, rest) = der_element(cert).ok_or(not_cert.clone())?;
    if tag != SEQUENCE {
        return Err(not_cert);
    }
    let (tag, algorithm, _) = der_element(rest).ok_or(not_cert.clone())?;
    if tag != SEQUENCE {
        return Err(not_cert);
    }
    let (tag, oid, _) = der_element(algorithm).ok_or(not_cert.clone())?;
    if tag != OID {
        return Err(not_cert);
    }
    let hash = hash_for_signature_oid(oid).ok_or(AuthError::CertificateHash(
        "the certificate's signature algorithm names no single hash",
    ))?;
    Ok(match hash {
        EndPointHash::Sha224 => Sha224::digest(cert_der).to_vec(),
        EndPointHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(tls_server_end_point(b"").is_err());
        assert!(tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(tls_server_end_point(&[0x30, 0x02, 0x30, 0x00]).is_err());
    }

    #[test]
    fn debug_hides_binding_data() {
        let cb = ChannelBinding::Tls {
            server_end_point: Some(vec![0xAB; 32]),
        };
        assert_eq!(format!("{cb:?}"), "Tls { plus: true }");
    }
}
