//! Keys and encryption: the keyring, column key derivation, the envelope format and
//! the randomized and deterministic XChaCha20-Poly1305 schemes.
//!
//! Pure code apart from reading and writing the keyring file. It must never log,
//! print or put into an error any key, plaintext or ciphertext byte.

pub mod envelope;
pub mod error;
pub mod kdf;
pub mod keygen;
pub mod keyring;
pub mod suite;

pub use envelope::{looks_like_envelope, peek_header, Header, Scheme, OVERHEAD};
pub use error::CryptoError;
pub use kdf::column_tag;
pub use keygen::{keygen, keygen_to_file, KeygenOutcome};
pub use keyring::{Keyring, MasterKey, KEYRING_LOSS_WARNING};
pub use suite::CipherSuite;
