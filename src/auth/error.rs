//! Errors of the authentication core.
//!
//! Every variant is typed so logs can say *why* a login failed, but no variant ever
//! carries a proof, key, password, verifier or nonce. What the client is told comes from
//! [`AuthError::client_message`], which is the same for every failure that could depend
//! on whether the role exists or what its password is (no role enumeration).

use thiserror::Error;

/// SQLSTATE 28P01 invalid_password.
pub const SQLSTATE_INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE 28000 invalid_authorization_specification.
pub const SQLSTATE_INVALID_AUTHORIZATION: &str = "28000";
/// SQLSTATE 08P01 protocol_violation.
pub const SQLSTATE_PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE 53300 too_many_connections (used for the failed-login backoff).
pub const SQLSTATE_TOO_MANY_CONNECTIONS: &str = "53300";
/// SQLSTATE F0000 config_file_error.
pub const SQLSTATE_CONFIG_FILE_ERROR: &str = "F0000";

/// One problem found in an `auth.file` userlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserlistProblem {
    pub path: String,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for UserlistProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.reason)
    }
}

/// Everything that can go wrong in the authentication core.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// A SASL or password message is longer than its limit.
    #[error("{what} is {len} bytes, more than the {limit}-byte limit")]
    MessageTooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// A SCRAM message does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism the server did not offer.
    #[error("client selected a SASL mechanism that was not offered")]
    UnsupportedMechanism,
    /// The client answered `y` although the server offers SCRAM-SHA-256-PLUS.
    #[error("channel binding downgrade: client sent 'y' although SCRAM-SHA-256-PLUS is offered")]
    ChannelBindingDowngrade,
    /// The gs2 header's channel binding flag does not fit the mechanism or the leg.
    #[error("channel binding negotiation error: {0}")]
    ChannelBindingNegotiation(&'static str),
    /// The client-final `c=` attribute does not repeat the gs2 header and binding data.
    #[error("channel binding data does not match")]
    ChannelBindingMismatch,
    /// The client-final nonce is not the one the server sent.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The client proof does not verify (wrong password, unknown role, or no password).
    #[error("SCRAM client proof does not verify")]
    ProofMismatch,
    /// A cleartext or md5 password does not match the stored verifier.
    #[error("password does not match")]
    PasswordMismatch,
    /// The stored credential cannot be used with the method the client used.
    #[error("stored credential does not support {0} authentication")]
    MethodNotSupportedByVerifier(&'static str),
    /// A stored verifier string could not be parsed. The reason never quotes it.
    #[error("invalid verifier: {0}")]
    InvalidVerifier(&'static str),
    /// The certificate's signature algorithm does not name a hash (RFC 5929 leaves
    /// tls-server-end-point undefined then), or the DER is not a certificate.
    #[error("cannot compute tls-server-end-point: {0}")]
    CertificateHash(&'static str),
    /// Upstream's SCRAM salt or iteration count differs from the verifier the client's
    /// ClientKey was recovered against: pass-through cannot work.
    #[error(
        "SCRAM pass-through impossible: upstream uses a different salt or iteration count \
         than the verifier pgcloak authenticated the client against (the role's verifier in \
         pgcloak and in PostgreSQL must be the same)"
    )]
    PassThroughVerifierMismatch,
    /// Upstream requires channel binding we cannot give, or we require it and upstream
    /// does not offer it.
    #[error("upstream channel binding: {0}")]
    UpstreamChannelBinding(&'static str),
    /// Upstream offered no SASL mechanism we speak.
    #[error("upstream offered no supported SASL mechanism")]
    UpstreamNoMechanism,
    /// Upstream's server-final signature does not verify: it does not know the verifier.
    #[error("upstream SCRAM server signature does not verify")]
    UpstreamSignatureMismatch,
    /// Upstream ended the exchange with `e=<reason>` (a short token from RFC 5802).
    #[error("upstream SCRAM error: {0}")]
    UpstreamRejected(String),
    /// An iteration count outside what we accept.
    #[error("SCRAM iteration count {0} is out of range")]
    IterationCount(u32),
    /// Too many recent failures from this client address.
    #[error("too many failed logins from this address; retry in {retry_after_ms} ms")]
    BackedOff { retry_after_ms: u64 },
    /// An `auth.file` userlist has problems; one `path:line: reason` per line.
    #[error("{}", join_problems(.0))]
    Userlist(Vec<UserlistProblem>),
}

fn join_problems(problems: &[UserlistProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl AuthError {
    /// True for failures whose cause could depend on the role or its password. These
    /// must all look the same to the client.
    pub fn is_credential_failure(&self) -> bool {
        matches!(
            self,
            AuthError::ProofMismatch
                | AuthError::PasswordMismatch
                | AuthError::MethodNotSupportedByVerifier(_)
                | AuthError::InvalidVerifier(_)
        )
    }

    /// The SQLSTATE for the client's ErrorResponse.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::ProofMismatch
            | AuthError::PasswordMismatch
            | AuthError::MethodNotSupportedByVerifier(_)
            | AuthError::InvalidVerifier(_) => SQLSTATE_INVALID_PASSWORD,
            AuthError::MessageTooLarge { .. }
            | AuthError::Malformed(_)
            | AuthError::UnsupportedMechanism
            | AuthError::NonceMismatch => SQLSTATE_PROTOCOL_VIOLATION,
            AuthError::ChannelBindingDowngrade
            | AuthError::ChannelBindingNegotiation(_)
            | AuthError::ChannelBindingMismatch
            | AuthError::CertificateHash(_)
            | AuthError::PassThroughVerifierMismatch
            | AuthError::UpstreamChannelBinding(_)
            | AuthError::UpstreamNoMechanism
            | AuthError::UpstreamSignatureMismatch
            | AuthError::UpstreamRejected(_)
            | AuthError::IterationCount(_) => SQLSTATE_INVALID_AUTHORIZATION,
            AuthError::BackedOff { .. } => SQLSTATE_TOO_MANY_CONNECTIONS,
            AuthError::Userlist(_) => SQLSTATE_CONFIG_FILE_ERROR,
        }
    }

    /// The message the client may see. Credential failures all read exactly like
    /// PostgreSQL's own `password authentication failed for user "<role>"`, whatever the
    /// internal reason; other errors depend only on what the client sent, so they may be
    /// specific.
    pub fn client_message(&self, role: &str) -> String {
        // Configuration problems are the operator's business, not the client's.
        if self.is_credential_failure() || matches!(self, AuthError::Userlist(_)) {
            format!("password authentication failed for user \"{role}\"")
        } else {
            self.to_string()
        }
    }
}
