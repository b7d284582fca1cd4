//! Fake SCRAM verifiers for roles that do not exist or have no usable SCRAM verifier.
//!
//! PostgreSQL answers such logins with a "mock" exchange so that a client cannot tell
//! an unknown role from a wrong password. We do the same: the salt is stable per role
//! name (derived with a server secret, so it survives reconnects and, with a persistent
//! secret, restarts), the iteration count is PostgreSQL's default, and the keys are
//! random-looking values that no password produces. Nothing here is ever logged.

use super::scram::{hmac_sha256, SecretKey, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN, KEY_LEN};
use super::verifier::ScramVerifier;

/// Derives fake verifiers from a 32-byte server secret.
#[derive(Clone)]
pub struct FakeVerifiers {
    secret: SecretKey,
}

impl FakeVerifiers {
    /// Uses `secret` (keep it persistent, e.g. derived from the master key, so a role's
    /// fake salt does not change across restarts while real salts do not either).
    pub fn new(secret: [u8; KEY_LEN]) -> Self {
        FakeVerifiers {
            secret: SecretKey(secret),
        }
    }

    /// A random secret for this process (fake salts then change on restart).
    pub fn generate() -> Self {
        let mut secret = [0u8; KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        FakeVerifiers::new(secret)
    }

    /// The fake verifier for `role`: same salt every time for the same role and secret.
    pub fn verifier_for(&self, role: &str) -> ScramVerifier {
        let derive = |label: &[u8]| hmac_sha256(self.secret.expose(), &[label, role.as_bytes()]);
        let salt = derive(b"pgcloak fake scram salt\0");
        let stored_key = derive(b"pgcloak fake scram stored key\0");
        let server_key = derive(b"pgcloak fake scram server key\0");
        let salt = salt.get(..DEFAULT_SALT_LEN).unwrap_or(&salt).to_vec();
        ScramVerifier::from_trusted_parts(DEFAULT_ITERATIONS, salt, stored_key, server_key)
    }
}

impl std::fmt::Debug for FakeVerifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeVerifiers(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_salt_is_stable_per_role_and_differs_between_roles() {
        let fakes = FakeVerifiers::new([9; KEY_LEN]);
        let a1 = fakes.verifier_for("alice");
        let a2 = fakes.verifier_for("alice");
        let b = fakes.verifier_for("bob");
        assert_eq!(a1, a2);
        assert_eq!(a1.salt().len(), DEFAULT_SALT_LEN);
        assert_eq!(a1.iterations(), DEFAULT_ITERATIONS);
        assert_ne!(a1.salt(), b.salt());
        let other_secret = FakeVerifiers::new([8; KEY_LEN]).verifier_for("alice");
        assert_ne!(a1.salt(), other_secret.salt());
    }
}
