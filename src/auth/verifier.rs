//! Stored password verifiers in PostgreSQL's `pg_authid.rolpassword` formats:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` and `md5<32 hex>`.
//!
//! A verifier is password-equivalent for md5 and enables an offline attack for SCRAM,
//! so neither Debug nor any error ever shows its key material; only an explicit
//! `to_pg_string` renders it.

use rand::RngCore;

use super::error::AuthError;
use super::scram::{
    self, b64_encode, ct_eq, parse_iterations, SecretKey, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN,
    KEY_LEN, MAX_ITERATIONS, MAX_SALT_LEN,
};

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";
const MD5_PREFIX: &str = "md5";

/// A SCRAM-SHA-256 verifier: what the server needs to check a proof, and nothing that
/// lets it compute one.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: SecretKey,
    server_key: SecretKey,
}

impl ScramVerifier {
    /// Derives the verifier PostgreSQL would store for `password` (SASLprepped when it
    /// is valid UTF-8, as PostgreSQL does) with this salt and iteration count.
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Result<Self, AuthError> {
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(AuthError::IterationCount(iterations));
        }
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(AuthError::InvalidVerifier("salt length out of range"));
        }
        let salted = scram::salted_password(password, salt, iterations);
        let client_key = scram::client_key(&salted);
        Ok(ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: scram::stored_key(&client_key),
            server_key: scram::server_key(&salted),
        })
    }

    /// Like [`ScramVerifier::from_password`] with a fresh random 16-byte salt and
    /// PostgreSQL's default 4096 iterations.
    pub fn generate(password: &[u8]) -> Self {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        let salted = scram::salted_password(password, &salt, DEFAULT_ITERATIONS);
        let client_key = scram::client_key(&salted);
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt.to_vec(),
            stored_key: scram::stored_key(&client_key),
            server_key: scram::server_key(&salted),
        }
    }

    /// Builds a verifier from its parts (fake verifiers, tests).
    pub fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    ) -> Result<Self, AuthError> {
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(AuthError::IterationCount(iterations));
        }
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(AuthError::InvalidVerifier("salt length out of range"));
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: SecretKey(stored_key),
            server_key: SecretKey(server_key),
        })
    }

    /// For parts that are valid by construction (fake verifiers).
    pub(crate) fn from_trusted_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; KEY_LEN],
        server_key: [u8; KEY_LEN],
    ) -> Self {
        ScramVerifier {
            iterations,
            salt,
            stored_key: SecretKey(stored_key),
            server_key: SecretKey(server_key),
        }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let rest = text
            .strip_prefix(SCRAM_PREFIX)
            .ok_or(AuthError::InvalidVerifier(
                "does not start with SCRAM-SHA-256$",
            ))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(AuthError::InvalidVerifier("lacks the '$' before the keys"))?;
        let (iter_text, salt_b64) = params
            .split_once(':')
            .ok_or(AuthError::InvalidVerifier("lacks '<iterations>:<salt>'"))?;
        let (stored_b64, server_b64) = keys.split_once(':').ok_or(AuthError::InvalidVerifier(
            "lacks '<StoredKey>:<ServerKey>'",
        ))?;
        let iterations = parse_iterations(iter_text)
            .map_err(|_| AuthError::InvalidVerifier("iteration count out of range"))?;
        let salt = scram::b64_decode(salt_b64, "")
            .map_err(|_| AuthError::InvalidVerifier("salt is not base64"))?;
        let stored_key = decode_key(stored_b64, "StoredKey is not 32 bytes of base64")?;
        let server_key = decode_key(server_b64, "ServerKey is not 32 bytes of base64")?;
        ScramVerifier::from_parts(iterations, salt, stored_key, server_key)
    }

    /// The PostgreSQL text form. This is secret material: never log it.
    pub fn to_pg_string(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            b64_encode(&self.salt),
            b64_encode(self.stored_key.expose()),
            b64_encode(self.server_key.expose())
        )
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn stored_key(&self) -> &SecretKey {
        &self.stored_key
    }

    pub fn server_key(&self) -> &SecretKey {
        &self.server_key
    }

    /// Checks a cleartext password against this verifier (PBKDF2 with the stored salt
    /// and iterations, then StoredKey compared in constant time).
    pub fn verify_password(&self, password: &[u8]) -> Result<(), AuthError> {
        let salted = scram::salted_password(password, &self.salt, self.iterations);
        let stored = scram::stored_key(&scram::client_key(&salted));
        if stored == self.stored_key {
            Ok(())
        } else {
            Err(AuthError::PasswordMismatch)
        }
    }
}

fn decode_key(text: &str, reason: &'static str) -> Result<[u8; KEY_LEN], AuthError> {
    let bytes = scram::b64_decode(text, "").map_err(|_| AuthError::InvalidVerifier(reason))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| AuthError::InvalidVerifier(reason))
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL md5 hash: `md5` followed by hex(md5(password ‖ role)).
#[derive(Clone)]
pub struct Md5Verifier {
    /// The 32 lowercase hex digits, as PostgreSQL hashes them in the challenge.
    hex: String,
}

impl Md5Verifier {
    /// Parses `md5<32 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let hex = text
            .strip_prefix(MD5_PREFIX)
            .ok_or(AuthError::InvalidVerifier("does not start with md5"))?;
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(AuthError::InvalidVerifier(
                "md5 verifier is not 32 lowercase hex digits",
            ));
        }
        Ok(Md5Verifier {
            hex: hex.to_owned(),
        })
    }

    /// The hash PostgreSQL stores for this role and password.
    pub fn from_password(password: &[u8], role: &str) -> Self {
        Md5Verifier {
            hex: super::md5::md5_hex(&[password, role.as_bytes()]),
        }
    }

    /// The 32 hex digits (password-equivalent: never log them).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The PostgreSQL text form (password-equivalent: never log it).
    pub fn to_pg_string(&self) -> String {
        format!("{MD5_PREFIX}{}", self.hex)
    }
}

impl PartialEq for Md5Verifier {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(self.hex.as_bytes(), other.hex.as_bytes())
    }
}
impl Eq for Md5Verifier {}

impl Drop for Md5Verifier {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.hex);
    }
}

impl std::fmt::Debug for Md5Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5Verifier(<redacted>)")
    }
}

/// Any stored verifier pgcloak understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifier {
    Scram(ScramVerifier),
    Md5(Md5Verifier),
}

impl Verifier {
    /// Parses either format. Plaintext passwords are refused: pgcloak stores verifiers only.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        if text.starts_with(SCRAM_PREFIX) {
            ScramVerifier::parse(text).map(Verifier::Scram)
        } else if text.starts_with(MD5_PREFIX) && text.len() == 35 {
            Md5Verifier::parse(text).map(Verifier::Md5)
        } else {
            Err(AuthError::InvalidVerifier(
                "not a SCRAM-SHA-256 or md5 verifier (plaintext passwords are not accepted)",
            ))
        }
    }

    /// The PostgreSQL text form (secret material: never log it).
    pub fn to_pg_string(&self) -> String {
        match self {
            Verifier::Scram(v) => v.to_pg_string(),
            Verifier::Md5(v) => v.to_pg_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_verifier_round_trips() {
        let v = ScramVerifier::from_password(b"pencil", b"0123456789abcdef", 4096).unwrap();
        let text = v.to_pg_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$"));
        assert_eq!(ScramVerifier::parse(&text).unwrap(), v);
        assert_eq!(Verifier::parse(&text).unwrap(), Verifier::Scram(v));
    }

    #[test]
    fn scram_verifier_debug_shows_no_keys() {
        let v = ScramVerifier::from_password(b"pencil", b"salt", 1).unwrap();
        let shown = format!("{v:?}");
        assert!(!shown.contains(&b64_encode(v.stored_key().expose())));
        assert!(!shown.contains(&b64_encode(v.server_key().expose())));
        assert!(shown.contains("iterations: 1"));
    }

    #[test]
    fn malformed_verifiers_are_refused_without_quoting_them() {
        for bad in [
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$x:y",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$abc:c2FsdA==$x:y",
            "md5zzzz",
            "md5ABCDEF0123456789ABCDEF0123456789",
            "hunter2",
            "",
        ] {
            let err = Verifier::parse(bad).unwrap_err();
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn md5_verifier_matches_postgres_formula() {
        // SELECT 'md5' || md5('secret' || 'alice')
        let v = Md5Verifier::from_password(b"secret", "alice");
        let direct = super::super::md5::md5_hex(&[b"secretalice"]);
        assert_eq!(v.to_pg_string(), format!("md5{direct}"));
        assert_eq!(Md5Verifier::parse(&v.to_pg_string()).unwrap(), v);
        assert_eq!(format!("{v:?}"), "Md5Verifier(<redacted>)");
    }

    #[test]
    fn verify_password_against_scram_verifier() {
        let v = ScramVerifier::from_password(b"pencil", b"salty", 16).unwrap();
        assert!(v.verify_password(b"pencil").is_ok());
        assert_eq!(
            v.verify_password(b"pencil!"),
            Err(AuthError::PasswordMismatch)
        );
    }
}
