//! Authentication building blocks: SCRAM-SHA-256(-PLUS) server and client, md5 and
//! cleartext checks, stored verifiers, fake verifiers against role enumeration, the
//! `auth.file` userlist, and per-address failure backoff.
//!
//! The building blocks are pure: no sockets, no clock (time is passed in), no logging.
//! `config` is the `auth:` section and `state` the cross-session state built from it
//! (verifier source, fake verifiers, backoff), which the session layer drives. This module must never put a password,
//! proof, key or verifier into an error, a Debug string or a panic, and must never tell
//! a client whether a role exists.

pub mod backoff;
pub mod channel_binding;
pub mod config;
pub mod error;
pub mod fake;
pub mod md5;
pub mod scram;
pub mod scram_client;
pub mod scram_server;
pub mod state;
pub mod userlist;
pub mod verifier;

pub use backoff::{BackoffConfig, FailureTracker};
pub use channel_binding::{tls_server_end_point, ChannelBinding};
pub use error::AuthError;
pub use fake::FakeVerifiers;
pub use scram::{SecretKey, SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
pub use scram_client::{
    ChannelBindingMode, ClientSecret, PassThroughKey, ScramClient, ScramClientFinal,
    ScramClientFirst, UpstreamAuthenticity,
};
pub use scram_server::{ScramServer, ScramServerFirst, ScramServerSuccess, ServerCredential};
pub use state::{AuthSetupError, AuthState};
pub use userlist::Userlist;
pub use verifier::{Md5Verifier, ScramVerifier, Verifier};
