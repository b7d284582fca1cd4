//! The client side of SCRAM-SHA-256(-PLUS), used toward upstream PostgreSQL.
//!
//! Two secrets can drive it: a password (a configured per-role upstream password) or a
//! [`PassThroughKey`], the ClientKey recovered from the client's own proof. With a
//! ClientKey the proof is `ClientKey XOR HMAC(H(ClientKey), AuthMessage)`; that only
//! works when upstream holds the very verifier (salt, iterations) pgcloak checked the
//! client against, which is checked and reported as
//! [`AuthError::PassThroughVerifierMismatch`]. Upstream's server signature is verified
//! whenever the ServerKey is known. No I/O, and no secret in Debug or errors.

use zeroize::Zeroizing;

use super::channel_binding::ChannelBinding;
use super::error::AuthError;
use super::scram::{
    self, b64_decode, b64_encode, ct_eq, hmac_sha256, is_valid_nonce, message_text,
    parse_server_first, random_nonce, sha256, xor, Gs2Flag, SecretKey, KEY_LEN, SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
};
use super::verifier::ScramVerifier;

/// Size limit of upstream's server-first and server-final messages.
pub const MAX_SERVER_MESSAGE: usize = 2048;

/// The ClientKey recovered from a verified client, with the verifier it matched.
#[derive(Clone)]
pub struct PassThroughKey {
    client_key: SecretKey,
    salt: Vec<u8>,
    iterations: u32,
    server_key: Option<SecretKey>,
}

impl PassThroughKey {
    /// A ClientKey recovered against `verifier`; its ServerKey checks upstream's signature.
    pub fn new(client_key: SecretKey, verifier: &ScramVerifier) -> Self {
        PassThroughKey {
            client_key,
            salt: verifier.salt().to_vec(),
            iterations: verifier.iterations(),
            server_key: Some(verifier.server_key().clone()),
        }
    }

    /// A ClientKey without a ServerKey: upstream's signature cannot be verified.
    pub fn without_server_key(client_key: SecretKey, salt: Vec<u8>, iterations: u32) -> Self {
        PassThroughKey {
            client_key,
            salt,
            iterations,
            server_key: None,
        }
    }
}

impl std::fmt::Debug for PassThroughKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassThroughKey")
            .field("iterations", &self.iterations)
            .field("has_server_key", &self.server_key.is_some())
            .finish_non_exhaustive()
    }
}

/// What the upstream client authenticates with.
#[derive(Clone)]
pub enum ClientSecret {
    /// A cleartext password (SASLprepped like PostgreSQL does).
    Password(Zeroizing<Vec<u8>>),
    /// A ClientKey recovered from the client (SCRAM pass-through).
    PassThrough(PassThroughKey),
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientSecret::Password(_) => f.write_str("Password(<redacted>)"),
            ClientSecret::PassThrough(k) => k.fmt(f),
        }
    }
}

/// libpq's `channel_binding` setting, applied to the upstream leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBindingMode {
    /// Never bind (`n`).
    Disable,
    /// Bind when upstream offers PLUS on TLS; otherwise say `y` on TLS so upstream can
    /// detect a downgrade.
    #[default]
    Prefer,
    /// Fail unless SCRAM-SHA-256-PLUS is used.
    Require,
}

/// Start of a client-side exchange.
pub struct ScramClient;

impl ScramClient {
    /// Chooses the mechanism from upstream's AuthenticationSASL list and builds the
    /// client-first message.
    pub fn start(
        secret: ClientSecret,
        leg: &ChannelBinding,
        mode: ChannelBindingMode,
        offered: &[&str],
    ) -> Result<ScramClientFirst, AuthError> {
        ScramClient::start_with_nonce(secret, leg, mode, offered, &random_nonce())
    }

    /// [`ScramClient::start`] with a chosen nonce, for test vectors only.
    #[doc(hidden)]
    pub fn start_with_nonce(
        secret: ClientSecret,
        leg: &ChannelBinding,
        mode: ChannelBindingMode,
        offered: &[&str],
        nonce: &str,
    ) -> Result<ScramClientFirst, AuthError> {
        if !is_valid_nonce(nonce) {
            return Err(AuthError::Malformed("client nonce has invalid characters"));
        }
        let offers = |m: &str| offered.contains(&m);
        let end_point = leg.end_point();
        let (mechanism, flag) = match (mode, leg, end_point) {
            (ChannelBindingMode::Require, ChannelBinding::Plain, _) => {
                return Err(AuthError::UpstreamChannelBinding(
                    "channel binding is required but the upstream leg is not TLS",
                ))
            }
            (ChannelBindingMode::Require, _, None) => {
                return Err(AuthError::UpstreamChannelBinding(
                    "channel binding is required but upstream's certificate hash is unknown",
                ))
            }
            (ChannelBindingMode::Require, _, Some(_)) if !offers(SCRAM_SHA_256_PLUS) => {
                return Err(AuthError::UpstreamChannelBinding(
                    "channel binding is required but upstream does not offer SCRAM-SHA-256-PLUS",
                ))
            }
            (ChannelBindingMode::Disable, _, _) | (_, ChannelBinding::Plain, _) => {
                (SCRAM_SHA_256, Gs2Flag::NotSupported)
            }
            (_, _, Some(_)) if offers(SCRAM_SHA_256_PLUS) => {
                (SCRAM_SHA_256_PLUS, Gs2Flag::TlsServerEndPoint)
            }
            // TLS and we could bind, but upstream does not offer PLUS: say so with `y`.
            (_, _, Some(_)) => (SCRAM_SHA_256, Gs2Flag::SupportedNotUsed),
            // TLS without the certificate hash: we cannot bind at all.
            (_, _, None) => (SCRAM_SHA_256, Gs2Flag::NotSupported),
        };
        if !offers(mechanism) {
            return Err(AuthError::UpstreamNoMechanism);
        }
        let mut cbind = flag.header().as_bytes().to_vec();
        if flag == Gs2Flag::TlsServerEndPoint {
            cbind.extend_from_slice(end_point.unwrap_or_default());
        }
        // PostgreSQL takes the role from the startup packet, so the user name is empty.
        let client_first_bare = format!("n=,r={nonce}");
        let message = format!("{}{client_first_bare}", flag.header());
        Ok(ScramClientFirst {
            secret,
            mechanism,
            cbind,
            client_first_bare,
            nonce: nonce.to_owned(),
            message,
        })
    }
}

/// After client-first: waiting for upstream's server-first.
pub struct ScramClientFirst {
    secret: ClientSecret,
    mechanism: &'static str,
    cbind: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    message: String,
}

impl std::fmt::Debug for ScramClientFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClientFirst")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramClientFirst {
    /// The mechanism to name in SASLInitialResponse.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// The client-first message (SASLInitialResponse data).
    pub fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// Handles upstream's server-first and builds the client-final message.
    pub fn server_first(self, message: &[u8]) -> Result<ScramClientFinal, AuthError> {
        let text = message_text(message, "SCRAM server-first message", MAX_SERVER_MESSAGE)?;
        let first = parse_server_first(text)?;
        if first.nonce.len() <= self.nonce.len() || !first.nonce.starts_with(&self.nonce) {
            return Err(AuthError::NonceMismatch);
        }
        let (client_key, stored_key, server_key) = match &self.secret {
            ClientSecret::Password(password) => {
                let salted = scram::salted_password(password, &first.salt, first.iterations);
                let client_key = scram::client_key(&salted);
                let stored_key = scram::stored_key(&client_key);
                (client_key, stored_key, Some(scram::server_key(&salted)))
            }
            ClientSecret::PassThrough(key) => {
                if key.salt != first.salt || key.iterations != first.iterations {
                    return Err(AuthError::PassThroughVerifierMismatch);
                }
                let stored_key = SecretKey(sha256(key.client_key.expose()));
                (key.client_key.clone(), stored_key, key.server_key.clone())
            }
        };
        let without_proof = format!("c={},r={}", b64_encode(&self.cbind), first.nonce);
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            text.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(stored_key.expose(), &auth_message);
        let proof = xor(client_key.expose(), &client_signature);
        let expected_server_signature = server_key.map(|k| hmac_sha256(k.expose(), &auth_message));
        Ok(ScramClientFinal {
            message: format!("{without_proof},p={}", b64_encode(&proof)),
            expected_server_signature,
        })
    }
}

/// After client-final: waiting for upstream's server-final.
pub struct ScramClientFinal {
    message: String,
    expected_server_signature: Option<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for ScramClientFinal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClientFinal").finish_non_exhaustive()
    }
}

/// How far upstream proved it knows the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuthenticity {
    /// The server signature verified.
    Verified,
    /// No ServerKey was available, so the signature was not checked.
    Unverified,
}

impl ScramClientFinal {
    /// The client-final message (SASLResponse data). Contains the proof: never log it.
    pub fn message(&self) -> &[u8] {
        self.message.as_bytes()
    }

    /// Handles upstream's server-final (`v=` or `e=`).
    pub fn server_final(self, message: &[u8]) -> Result<UpstreamAuthenticity, AuthError> {
        let text = message_text(message, "SCRAM server-final message", MAX_SERVER_MESSAGE)?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(reason) = first.strip_prefix("e=") {
            let reason: String = reason
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(AuthError::UpstreamRejected(reason));
        }
        let signature = first
            .strip_prefix("v=")
            .ok_or(AuthError::Malformed("server-final lacks v="))?;
        let signature = b64_decode(signature, "server signature is not base64")?;
        match self.expected_server_signature {
            Some(expected) if ct_eq(&expected, &signature) => Ok(UpstreamAuthenticity::Verified),
            Some(_) => Err(AuthError::UpstreamSignatureMismatch),
            None => Ok(UpstreamAuthenticity::Unverified),
        }
    }
}
