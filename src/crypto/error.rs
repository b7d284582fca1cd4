//! Errors of the crypto module. They name keys by id and columns by tag, never by
//! material: no key byte, plaintext or ciphertext byte ever appears in one.

use thiserror::Error;

/// Everything that can go wrong loading keys or sealing and opening envelopes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The bytes do not start with the `pc` magic or are shorter than an envelope.
    #[error("value is not a pgcloak envelope")]
    NotAnEnvelope,
    /// The magic matched but the version byte is not one we can read.
    #[error("unsupported pgcloak envelope version {0}")]
    UnsupportedVersion(u8),
    /// The scheme byte is neither randomized (1) nor deterministic (2).
    #[error("unknown pgcloak envelope scheme {0}")]
    UnknownScheme(u8),
    /// The envelope was sealed under a key id the keyring does not hold.
    #[error(
        "envelope was encrypted with key id {0}, which is not in the keyring (pgcloak runs with \
         another keyring than the data's; docs/troubleshooting.md)"
    )]
    UnknownKeyId(u32),
    /// The envelope's column tag belongs to another column or key group.
    #[error(
        "envelope belongs to another column (column tag {found:08x}, expected {expected:08x})"
    )]
    WrongColumn { expected: u32, found: u32 },
    /// The Poly1305 tag did not verify: the envelope was corrupted or tampered with.
    #[error(
        "envelope failed authentication: pgcloak's keyring is not the one that encrypted it, \
         or it was corrupted, tampered with, or moved (run `pgcloak check --database` to sample \
         the column against the keyring; docs/troubleshooting.md)"
    )]
    AuthenticationFailed,
    /// The column reference is not part of the cipher suite's policy generation.
    #[error("column #{0} is not in this cipher suite's policy generation")]
    UnknownColumn(u32),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    RandomnessUnavailable,
    /// The AEAD refused to seal (only possible for absurdly large values).
    #[error("value too large to encrypt")]
    ValueTooLarge,
    /// The keyring text is malformed. `line` is 1-based where known.
    #[error("{}", keyring_message(.source_name, *.line, .message))]
    Keyring {
        source_name: String,
        line: Option<u64>,
        message: String,
    },
    /// The keyring file may be read by group or others.
    #[error("keyring file {path} is accessible by group or others (mode {mode:04o}); refusing to use it. Fix: chmod 600 {path}")]
    InsecurePermissions { path: String, mode: u32 },
    /// The keyring file or environment variable could not be read or written.
    #[error("keyring {source_name}: {reason}")]
    Io { source_name: String, reason: String },
    /// A key id the policy or keyring needs is missing.
    #[error("keyring has no key with id {key_id} (needed for {purpose})")]
    MissingKey { key_id: u32, purpose: String },
}

fn keyring_message(source: &str, line: Option<u64>, message: &str) -> String {
    match line {
        Some(l) => format!("keyring {source}:{l}: {message}"),
        None => format!("keyring {source}: {message}"),
    }
}

impl CryptoError {
    /// The SQLSTATE a client sees when this error ends a statement.
    ///
    /// Stored data that fails any envelope check is `XX001` (data_corrupted): it is
    /// not the client's input that is wrong but what the database holds. Keyring and
    /// configuration problems are `F0000` (config_file_error); a failing OS RNG is
    /// `58000` (system_error); a bad column reference is `XX000` (internal_error).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CryptoError::NotAnEnvelope
            | CryptoError::UnsupportedVersion(_)
            | CryptoError::UnknownScheme(_)
            | CryptoError::WrongColumn { .. }
            | CryptoError::AuthenticationFailed => "XX001",
            CryptoError::UnknownKeyId(_)
            | CryptoError::Keyring { .. }
            | CryptoError::InsecurePermissions { .. }
            | CryptoError::Io { .. }
            | CryptoError::MissingKey { .. } => "F0000",
            CryptoError::RandomnessUnavailable => "58000",
            CryptoError::UnknownColumn(_) | CryptoError::ValueTooLarge => "XX000",
        }
    }

    pub(crate) fn keyring(source: &str, line: Option<u64>, message: impl Into<String>) -> Self {
        CryptoError::Keyring {
            source_name: source.to_string(),
            line,
            message: message.into(),
        }
    }
}
