//! Interoperability with verifiers PostgreSQL 15 itself wrote to pg_authid.
//!
//! Captured once with `CREATE ROLE ... PASSWORD ...` (password_encryption scram-sha-256,
//! then md5) and `SELECT rolname, rolpassword FROM pg_authid`; these are throwaway
//! test passwords.

use pgcloak::auth::md5::{md5_response_from_password, verify_md5_response};
use pgcloak::auth::{ScramVerifier, Verifier};

const PG_PENCIL: &str = "SCRAM-SHA-256$4096:+N3mjswiSUnt/trbqv03oA==$DnpSM8T08KiV8gqzFEbHohpCEcr1D58bwj9ElKqjWIk=:F9kE+U2it7vQuRdcOIyPiQImbF8t7QXphYqJEyZBhT0=";
// E'pen\u00ADcil': SASLprep maps the soft hyphen to nothing.
const PG_SOFT_HYPHEN: &str = "SCRAM-SHA-256$4096:1fJaF5AmfBNIjIx+eWfWVw==$7hXQlXg7ovKC0AChvaLV12XHgo59rj/HHav4vXFq3zo=:iUkReIAxvVfaLNUlbBr5AL8CpzBtQ+cXJBzCOVKC3hY=";
// E'a\u00A0b': SASLprep maps the no-break space to a space.
const PG_NBSP: &str = "SCRAM-SHA-256$4096:z6u4k9iReUSi3FUzHq6BpA==$IHrqo9r5FnftypeTX4lnS3Tjbfr1VasSFDNpg5e/7vo=:K88vs/4gQmWx4ogqM69s5x0kZcCakTCNOmnq+kTwdoQ=";
// E'a\u0007b': SASLprep prohibits control characters, so the raw bytes are used.
const PG_CONTROL: &str = "SCRAM-SHA-256$4096:KJX+/msPyrNvt59PArtazg==$gq8yXxvvQ1yIhHbYt0e7M4IvECpPr8BbPoEM1gXTYiI=:Z1phP/jD1b/JdrHU7Cvp0sH6atesNViQRJwBDxlfYg8=";
// Role r_md5, password 'postgres'.
const PG_MD5: &str = "md5aa50dc74f7a4b7c3a3658f986c8699a5";

#[test]
fn postgres_scram_verifiers_parse_and_rederive_identically() {
    for (stored, password) in [
        (PG_PENCIL, "pencil"),
        (PG_SOFT_HYPHEN, "pen\u{AD}cil"),
        (PG_NBSP, "a\u{A0}b"),
        (PG_CONTROL, "a\u{7}b"),
    ] {
        let parsed = ScramVerifier::parse(stored).unwrap();
        assert_eq!(parsed.to_pg_string(), stored);
        let derived =
            ScramVerifier::from_password(password.as_bytes(), parsed.salt(), parsed.iterations())
                .unwrap();
        assert_eq!(derived, parsed, "{password:?}");
        assert!(parsed.verify_password(password.as_bytes()).is_ok());
        assert!(parsed.verify_password(b"wrong").is_err());
    }
    // SASLprep equivalence: the prepared form verifies too, as in PostgreSQL.
    let soft = ScramVerifier::parse(PG_SOFT_HYPHEN).unwrap();
    assert!(soft.verify_password(b"pencil").is_ok());
    let nbsp = ScramVerifier::parse(PG_NBSP).unwrap();
    assert!(nbsp.verify_password(b"a b").is_ok());
}

#[test]
fn postgres_md5_hash_verifies_md5_responses() {
    let stored = Verifier::parse(PG_MD5).unwrap();
    let salt = [0xde, 0xad, 0xbe, 0xef];
    let response = md5_response_from_password(b"postgres", "r_md5", &salt);
    assert!(verify_md5_response(&stored, &salt, response.as_bytes()).is_ok());
    let wrong_role = md5_response_from_password(b"postgres", "r_md6", &salt);
    assert!(verify_md5_response(&stored, &salt, wrong_role.as_bytes()).is_err());
}
