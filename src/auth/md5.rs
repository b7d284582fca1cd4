//! PostgreSQL's md5 password method and cleartext password checks.
//!
//! md5 response: `"md5" ‖ hex(md5(hex(md5(password ‖ role)) ‖ salt))`. The stored
//! `md5…` hash is password-equivalent, which is exactly what makes md5 pass-through to
//! an md5 upstream possible. Comparisons are constant time; nothing here logs.

use md5::{Digest, Md5};

use super::error::AuthError;
use super::scram::ct_eq;
use super::verifier::{Md5Verifier, Verifier};

/// Longest password message (md5 response or cleartext password) we look at.
pub const MAX_PASSWORD_MESSAGE: usize = 1024;

/// Lowercase hex of md5 over the concatenated parts.
pub(crate) fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The md5 response to `salt` computed from the stored hash (pass-through upstream).
pub fn md5_response_from_stored(stored: &Md5Verifier, salt: &[u8; 4]) -> String {
    format!("md5{}", md5_hex(&[stored.hex().as_bytes(), salt]))
}

/// The md5 response to `salt` computed from a password (a configured upstream password).
pub fn md5_response_from_password(password: &[u8], role: &str, salt: &[u8; 4]) -> String {
    md5_response_from_stored(&Md5Verifier::from_password(password, role), salt)
}

/// Strips the C-string terminator a PasswordMessage may still carry, and bounds size.
fn password_payload(message: &[u8]) -> Result<&[u8], AuthError> {
    if message.len() > MAX_PASSWORD_MESSAGE {
        return Err(AuthError::MessageTooLarge {
            what: "password message",
            len: message.len(),
            limit: MAX_PASSWORD_MESSAGE,
        });
    }
    Ok(message.strip_suffix(&[0]).unwrap_or(message))
}

/// Checks a client's md5 response against the stored verifier. A SCRAM verifier (which
/// is also what an unknown role's fake verifier is) cannot check md5 and fails the same
/// way a wrong password does.
pub fn verify_md5_response(
    stored: &Verifier,
    salt: &[u8; 4],
    response: &[u8],
) -> Result<(), AuthError> {
    let response = password_payload(response)?;
    match stored {
        Verifier::Md5(md5) => {
            let expected = md5_response_from_stored(md5, salt);
            if ct_eq(expected.as_bytes(), response) {
                Ok(())
            } else {
                Err(AuthError::PasswordMismatch)
            }
        }
        Verifier::Scram(_) => Err(AuthError::MethodNotSupportedByVerifier("md5")),
    }
}

/// Checks a cleartext password (sent only over TLS, as the config allows) against
/// either verifier kind.
pub fn verify_cleartext_password(
    stored: &Verifier,
    role: &str,
    password: &[u8],
) -> Result<(), AuthError> {
    let password = password_payload(password)?;
    match stored {
        Verifier::Scram(scram) => scram.verify_password(password),
        Verifier::Md5(md5) => {
            if Md5Verifier::from_password(password, role) == *md5 {
                Ok(())
            } else {
                Err(AuthError::PasswordMismatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hex_of_empty_input_is_the_known_digest() {
        assert_eq!(md5_hex(&[b""]), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
