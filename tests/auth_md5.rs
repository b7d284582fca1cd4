//! md5 and cleartext password checks, both directions.

use pgcloak::auth::md5::{
    md5_response_from_password, md5_response_from_stored, verify_cleartext_password,
    verify_md5_response,
};
use pgcloak::auth::{AuthError, Md5Verifier, ScramVerifier, Verifier};

const SALT: [u8; 4] = [0x01, 0x02, 0x03, 0x04];

#[test]
fn stored_md5_hash_matches_postgres_for_postgres_postgres() {
    // The well-known pg_authid value for role postgres with password postgres.
    let v = Md5Verifier::from_password(b"postgres", "postgres");
    assert_eq!(v.to_pg_string(), "md53175bce1d3201d16594cebf9d7eb3f9d");
}

#[test]
fn md5_response_from_password_verifies_against_stored_hash() {
    let stored = Verifier::parse("md53175bce1d3201d16594cebf9d7eb3f9d").unwrap();
    let response = md5_response_from_password(b"postgres", "postgres", &SALT);
    assert_eq!(response.len(), 35);
    assert!(response.starts_with("md5"));
    assert!(verify_md5_response(&stored, &SALT, response.as_bytes()).is_ok());
    // A PasswordMessage still carrying its NUL terminator is accepted too.
    let mut with_nul = response.clone().into_bytes();
    with_nul.push(0);
    assert!(verify_md5_response(&stored, &SALT, &with_nul).is_ok());
}

#[test]
fn md5_pass_through_from_stored_hash_equals_password_response() {
    let stored = Md5Verifier::from_password(b"s3cret", "alice");
    assert_eq!(
        md5_response_from_stored(&stored, &SALT),
        md5_response_from_password(b"s3cret", "alice", &SALT)
    );
}

#[test]
fn md5_wrong_password_other_salt_and_scram_verifier_all_fail_alike() {
    let stored = Verifier::Md5(Md5Verifier::from_password(b"right", "alice"));
    let scram = Verifier::Scram(ScramVerifier::from_password(b"right", b"salt", 16).unwrap());
    let good = md5_response_from_password(b"right", "alice", &SALT);
    let failures = [
        verify_md5_response(
            &stored,
            &SALT,
            md5_response_from_password(b"wrong", "alice", &SALT).as_bytes(),
        ),
        verify_md5_response(&stored, &[9, 9, 9, 9], good.as_bytes()),
        verify_md5_response(&stored, &SALT, b""),
        verify_md5_response(&scram, &SALT, good.as_bytes()),
    ];
    for failure in failures {
        let err = failure.unwrap_err();
        assert!(err.is_credential_failure(), "{err:?}");
        assert_eq!(err.sqlstate(), "28P01");
        assert_eq!(
            err.client_message("alice"),
            "password authentication failed for user \"alice\""
        );
    }
}

#[test]
fn oversized_password_message_is_refused() {
    let stored = Verifier::Md5(Md5Verifier::from_password(b"x", "alice"));
    let huge = vec![b'a'; 5000];
    assert!(matches!(
        verify_md5_response(&stored, &SALT, &huge),
        Err(AuthError::MessageTooLarge { .. })
    ));
}

#[test]
fn cleartext_password_checks_against_scram_and_md5_verifiers() {
    let scram = Verifier::Scram(ScramVerifier::from_password(b"pencil", b"salt", 4096).unwrap());
    let md5 = Verifier::Md5(Md5Verifier::from_password(b"pencil", "alice"));
    for stored in [&scram, &md5] {
        assert!(verify_cleartext_password(stored, "alice", b"pencil").is_ok());
        assert!(verify_cleartext_password(stored, "alice", b"pencil\0").is_ok());
        assert_eq!(
            verify_cleartext_password(stored, "alice", b"pen").unwrap_err(),
            AuthError::PasswordMismatch
        );
    }
    // md5 hashes are salted with the role name: another role does not match.
    assert!(verify_cleartext_password(&md5, "bob", b"pencil").is_err());
}
