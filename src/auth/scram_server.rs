//! The server side of SCRAM-SHA-256(-PLUS) on a stored verifier (RFC 5802, RFC 7677),
//! PostgreSQL flavour: the user name in client-first is ignored (the startup packet
//! names the role), no authzid, tls-server-end-point is the only binding type.
//!
//! The exchange is a chain of types: [`ScramServer`] → [`ScramServerFirst`] →
//! [`ScramServerSuccess`]; a step consumes the previous state, so a step cannot be
//! replayed or skipped. It never does I/O. Every credential failure is
//! [`AuthError::ProofMismatch`], whether the role is unknown (fake verifier), has no
//! password, or the password is wrong, and no error carries a proof or key.

pub use super::channel_binding::tls_server_end_point;
use super::channel_binding::ChannelBinding;
use super::error::AuthError;
use super::fake::FakeVerifiers;
use super::scram::{
    attribute, b64_decode, b64_encode, ct_eq, hmac_sha256, is_valid_nonce, message_text,
    random_nonce, sha256, xor, Gs2Flag, SecretKey, KEY_LEN, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
    TLS_SERVER_END_POINT,
};
use super::scram_client::PassThroughKey;
use super::verifier::{ScramVerifier, Verifier};

/// Size limit of the SASLInitialResponse data (client-first).
pub const MAX_CLIENT_FIRST: usize = 1024;
/// Size limit of the SASLResponse data (client-final).
pub const MAX_CLIENT_FINAL: usize = 1024;

/// The verifier the exchange runs on: the role's own, or a fake one that looks the same
/// on the wire and always fails at the proof.
#[derive(Debug, Clone)]
pub enum ServerCredential {
    Real(ScramVerifier),
    Fake(ScramVerifier),
}

impl ServerCredential {
    /// Picks the credential for a login: the role's SCRAM verifier, otherwise (unknown
    /// role, no password, md5 hash) the role's fake verifier.
    pub fn for_role(role: &str, stored: Option<&Verifier>, fakes: &FakeVerifiers) -> Self {
        match stored {
            Some(Verifier::Scram(v)) => ServerCredential::Real(v.clone()),
            _ => ServerCredential::Fake(fakes.verifier_for(role)),
        }
    }

    fn verifier(&self) -> &ScramVerifier {
        match self {
            ServerCredential::Real(v) | ServerCredential::Fake(v) => v,
        }
    }
}

/// Start of a server-side exchange.
#[derive(Debug)]
pub struct ScramServer {
    credential: ServerCredential,
    binding: ChannelBinding,
}

impl ScramServer {
    pub fn new(credential: ServerCredential, binding: ChannelBinding) -> Self {
        ScramServer {
            credential,
            binding,
        }
    }

    /// The mechanisms to list in AuthenticationSASL, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.binding.end_point().is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Handles SASLInitialResponse (`mechanism` and its data, the client-first message)
    /// and produces the server-first message.
    pub fn client_first(
        self,
        mechanism: &str,
        message: &[u8],
    ) -> Result<ScramServerFirst, AuthError> {
        let suffix = random_nonce();
        self.client_first_with_nonce(mechanism, message, &suffix)
    }

    /// [`ScramServer::client_first`] with a chosen server nonce part, for test vectors.
    /// Production code must use `client_first`, whose nonce is random.
    #[doc(hidden)]
    pub fn client_first_with_nonce(
        self,
        mechanism: &str,
        message: &[u8],
        server_nonce: &str,
    ) -> Result<ScramServerFirst, AuthError> {
        let text = message_text(message, "SCRAM client-first message", MAX_CLIENT_FIRST)?;
        let plus = match mechanism {
            SCRAM_SHA_256_PLUS if self.binding.end_point().is_some() => true,
            SCRAM_SHA_256 => false,
            _ => return Err(AuthError::UnsupportedMechanism),
        };
        let (flag, gs2_header, bare) = split_gs2_header(text)?;
        match (&flag, plus) {
            (Gs2Flag::TlsServerEndPoint, true) | (Gs2Flag::NotSupported, false) => {}
            (Gs2Flag::SupportedNotUsed, false) => {
                if self.binding.end_point().is_some() {
                    return Err(AuthError::ChannelBindingDowngrade);
                }
            }
            (Gs2Flag::TlsServerEndPoint, false) => {
                return Err(AuthError::ChannelBindingNegotiation(
                    "client sent channel binding data with SCRAM-SHA-256",
                ))
            }
            (_, true) => {
                return Err(AuthError::ChannelBindingNegotiation(
                    "client selected SCRAM-SHA-256-PLUS without channel binding data",
                ))
            }
        }
        let client_nonce = parse_client_first_bare(bare)?;
        if !is_valid_nonce(server_nonce) {
            return Err(AuthError::Malformed("server nonce has invalid characters"));
        }

        let mut expected_cbind = gs2_header.as_bytes().to_vec();
        if plus {
            expected_cbind.extend_from_slice(self.binding.end_point().unwrap_or_default());
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let verifier = self.credential.verifier();
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64_encode(verifier.salt()),
            verifier.iterations()
        );
        Ok(ScramServerFirst {
            credential: self.credential,
            channel_bound: plus,
            expected_cbind,
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        })
    }
}

/// Splits `gs2-header` (`n,,` / `y,,` / `p=<type>,,`, no authzid) from client-first-bare.
fn split_gs2_header(text: &str) -> Result<(Gs2Flag, &str, &str), AuthError> {
    let (flag, after_flag) = if let Some(rest) = text.strip_prefix("n,") {
        (Gs2Flag::NotSupported, rest)
    } else if let Some(rest) = text.strip_prefix("y,") {
        (Gs2Flag::SupportedNotUsed, rest)
    } else if let Some(rest) = text.strip_prefix("p=") {
        let (cb_name, rest) = rest
            .split_once(',')
            .ok_or(AuthError::Malformed("unterminated channel binding type"))?;
        if cb_name != TLS_SERVER_END_POINT {
            return Err(AuthError::ChannelBindingNegotiation(
                "unsupported channel binding type",
            ));
        }
        (Gs2Flag::TlsServerEndPoint, rest)
    } else {
        return Err(AuthError::Malformed("unexpected channel binding flag"));
    };
    if after_flag.starts_with("a=") {
        return Err(AuthError::Malformed(
            "authorization identity is not supported",
        ));
    }
    let bare = after_flag
        .strip_prefix(',')
        .ok_or(AuthError::Malformed("gs2 header is not terminated by ','"))?;
    let header_len = text.len() - bare.len();
    let header = text
        .get(..header_len)
        .ok_or(AuthError::Malformed("gs2 header"))?;
    Ok((flag, header, bare))
}

/// Returns the client nonce of `[reserved-mext ","] n=<user>,r=<nonce>[,ext…]`.
fn parse_client_first_bare(bare: &str) -> Result<&str, AuthError> {
    let mut parts = bare.split(',');
    let first = parts.next();
    if first.is_some_and(|p| p.starts_with("m=")) {
        return Err(AuthError::Malformed("mandatory extension is not supported"));
    }
    // PostgreSQL ignores the user name: the startup packet named the role.
    attribute(first, 'n', "client-first lacks n=")?;
    let nonce = attribute(parts.next(), 'r', "client-first lacks r=")?;
    if !is_valid_nonce(nonce) {
        return Err(AuthError::Malformed("client nonce has invalid characters"));
    }
    Ok(nonce)
}

/// After server-first: waiting for client-final.
pub struct ScramServerFirst {
    credential: ServerCredential,
    channel_bound: bool,
    expected_cbind: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl std::fmt::Debug for ScramServerFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServerFirst")
            .field("channel_bound", &self.channel_bound)
            .finish_non_exhaustive()
    }
}

impl ScramServerFirst {
    /// The server-first message, to send in AuthenticationSASLContinue.
    pub fn message(&self) -> &[u8] {
        self.server_first.as_bytes()
    }

    /// Handles the client-final message: channel binding, nonce, then the proof.
    pub fn client_final(self, message: &[u8]) -> Result<ScramServerSuccess, AuthError> {
        let text = message_text(message, "SCRAM client-final message", MAX_CLIENT_FINAL)?;
        let (without_proof, proof_b64) = text.rsplit_once(",p=").ok_or(AuthError::Malformed(
            "client-final lacks p= as last attribute",
        ))?;
        let mut parts = without_proof.split(',');
        let cbind_b64 = attribute(parts.next(), 'c', "client-final lacks c=")?;
        let nonce = attribute(parts.next(), 'r', "client-final lacks r=")?;
        // Anything between r= and p= is an extension: ignored, but covered by the proof.
        let cbind = b64_decode(cbind_b64, "channel binding is not base64")?;
        if cbind != self.expected_cbind {
            return Err(AuthError::ChannelBindingMismatch);
        }
        if nonce != self.nonce {
            return Err(AuthError::NonceMismatch);
        }
        let proof = b64_decode(proof_b64, "client proof is not base64")?;
        let proof = <[u8; KEY_LEN]>::try_from(proof.as_slice())
            .map_err(|_| AuthError::Malformed("client proof is not 32 bytes"))?;

        let verifier = self.credential.verifier();
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(verifier.stored_key().expose(), &auth_message);
        let client_key = SecretKey(xor(&proof, &client_signature));
        // The fake path does the same work and fails at the same place.
        let proof_ok = ct_eq(&sha256(client_key.expose()), verifier.stored_key().expose());
        let is_real = matches!(self.credential, ServerCredential::Real(_));
        if !(proof_ok && is_real) {
            return Err(AuthError::ProofMismatch);
        }
        let server_signature = hmac_sha256(verifier.server_key().expose(), &auth_message);
        let server_final = format!("v={}", b64_encode(&server_signature));
        let verifier = verifier.clone();
        Ok(ScramServerSuccess {
            server_final,
            client_key,
            verifier,
            channel_bound: self.channel_bound,
        })
    }
}

/// A verified exchange: the server-final message to send, and the recovered ClientKey.
pub struct ScramServerSuccess {
    server_final: String,
    client_key: SecretKey,
    verifier: ScramVerifier,
    channel_bound: bool,
}

impl std::fmt::Debug for ScramServerSuccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServerSuccess")
            .field("channel_bound", &self.channel_bound)
            .finish_non_exhaustive()
    }
}

impl ScramServerSuccess {
    /// The server-final message (`v=<ServerSignature>`), for AuthenticationSASLFinal.
    pub fn message(&self) -> &[u8] {
        self.server_final.as_bytes()
    }

    /// ClientKey = ClientSignature XOR ClientProof, checked against StoredKey = H(ClientKey).
    pub fn client_key(&self) -> &SecretKey {
        &self.client_key
    }

    /// Whether the client used SCRAM-SHA-256-PLUS.
    pub fn channel_bound(&self) -> bool {
        self.channel_bound
    }

    /// What the upstream SCRAM client needs to authenticate as the same role.
    pub fn pass_through_key(&self) -> PassThroughKey {
        PassThroughKey::new(self.client_key.clone(), &self.verifier)
    }
}
