//! Envelope sealing and opening: round trips, tampering, column binding, key pins.

#[path = "support/crypto_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;

use fixture::*;
use pgcloak::crypto::{peek_header, CipherSuite, CryptoError, Keyring, Scheme, OVERHEAD};
use proptest::prelude::*;

fn suite() -> CipherSuite {
    CipherSuite::new(&keyring(), &policy()).unwrap()
}

#[test]
fn randomized_column_seals_with_active_key_and_random_nonce() {
    let s = suite();
    let a = s.encrypt(EMAIL, b"alice@example.com").unwrap();
    let b = s.encrypt(EMAIL, b"alice@example.com").unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), OVERHEAD + 17);
    let h = peek_header(&a).unwrap();
    assert_eq!(h.scheme, Scheme::Randomized);
    assert_eq!(h.key_id, 2);
    assert_eq!(
        h.column_tag,
        pgcloak::crypto::column_tag("public.customers.email")
    );
    assert_eq!(s.decrypt(EMAIL, &a).unwrap(), b"alice@example.com");
}

#[test]
fn deterministic_column_is_pinned_and_repeatable() {
    let s = suite();
    let a = s.encrypt(PHONE, b"+84 912 345 678").unwrap();
    let b = s.encrypt(PHONE, b"+84 912 345 678").unwrap();
    assert_eq!(a, b);
    let h = peek_header(&a).unwrap();
    assert_eq!(h.scheme, Scheme::Deterministic);
    assert_eq!(
        h.key_id, 1,
        "deterministic columns stay on the pinned key, not the active one"
    );
    assert_ne!(a, s.encrypt(PHONE, b"+84 912 345 679").unwrap());
}

#[test]
fn key_group_members_share_ciphertexts() {
    let s = suite();
    let a = s.encrypt(NATIONAL_ID, b"079123456789").unwrap();
    let b = s.encrypt(PARTNER_ID, b"079123456789").unwrap();
    assert_eq!(a, b);
    assert_eq!(s.decrypt(PARTNER_ID, &a).unwrap(), b"079123456789");
    assert_eq!(
        s.columns_with_tag(peek_header(&a).unwrap().column_tag),
        &[NATIONAL_ID, PARTNER_ID]
    );
}

#[test]
fn explicit_pin_overrides_deterministic_default() {
    let mut keys = BTreeMap::new();
    keys.insert(1, key(1));
    keys.insert(2, key(2));
    let mut pins = BTreeMap::new();
    pins.insert("public.customers.phone".to_string(), 2);
    let ring = Keyring::from_parts(2, 1, pins, keys).unwrap();
    let s = CipherSuite::new(&ring, &policy()).unwrap();
    assert_eq!(s.write_key_id(PHONE).unwrap(), 2);
    assert_eq!(s.write_key_id(NATIONAL_ID).unwrap(), 1);
}

#[test]
fn old_key_still_opens_after_rotation_and_missing_key_is_typed() {
    let mut keys = BTreeMap::new();
    keys.insert(1, key(1));
    let old = CipherSuite::new(
        &Keyring::from_parts(1, 1, BTreeMap::new(), keys).unwrap(),
        &policy(),
    )
    .unwrap();
    let env = old.encrypt(EMAIL, b"x").unwrap();
    assert_eq!(suite().decrypt(EMAIL, &env).unwrap(), b"x");

    let mut keys = BTreeMap::new();
    keys.insert(2, key(2));
    let only2 = CipherSuite::new(
        &Keyring::from_parts(2, 2, BTreeMap::new(), keys).unwrap(),
        &policy(),
    )
    .unwrap();
    assert_eq!(
        only2.decrypt(EMAIL, &env),
        Err(CryptoError::UnknownKeyId(1))
    );
    assert_eq!(CryptoError::UnknownKeyId(1).sqlstate(), "F0000");
}

#[test]
fn garbage_is_not_an_envelope() {
    let s = suite();
    assert_eq!(s.decrypt(EMAIL, b""), Err(CryptoError::NotAnEnvelope));
    assert_eq!(
        s.decrypt(EMAIL, b"hello world"),
        Err(CryptoError::NotAnEnvelope)
    );
    let mut env = s.encrypt(EMAIL, b"v").unwrap();
    env[2] = 9;
    assert_eq!(
        s.decrypt(EMAIL, &env),
        Err(CryptoError::UnsupportedVersion(9))
    );
    env[2] = 1;
    env[3] = 7;
    assert_eq!(s.decrypt(EMAIL, &env), Err(CryptoError::UnknownScheme(7)));
    let short = &s.encrypt(EMAIL, b"").unwrap()[..OVERHEAD - 1];
    assert_eq!(s.decrypt(EMAIL, short), Err(CryptoError::NotAnEnvelope));
    assert_eq!(CryptoError::NotAnEnvelope.sqlstate(), "XX001");
}

#[test]
fn unknown_column_ref_is_an_error_not_a_panic() {
    let s = suite();
    let bad = pgcloak::policy::ColumnRef(99);
    assert_eq!(s.encrypt(bad, b"x"), Err(CryptoError::UnknownColumn(99)));
    assert!(s.pseudonym(bad, b"x").is_err());
}

#[test]
fn pseudonym_is_stable_per_domain_and_survives_rotation() {
    let s = suite();
    let t = s.pseudonym(PHONE, b"0912").unwrap();
    assert_eq!(t.len(), 16);
    assert_eq!(t, s.pseudonym(PHONE, b"0912").unwrap());
    assert_ne!(t, s.pseudonym(PHONE, b"0913").unwrap());
    assert_ne!(t, s.pseudonym(EMAIL, b"0912").unwrap());
    assert_eq!(
        s.pseudonym(NATIONAL_ID, b"1").unwrap(),
        s.pseudonym(PARTNER_ID, b"1").unwrap()
    );
    // A new active key (3) leaves pseudonyms alone: they use the deterministic key.
    let mut keys = BTreeMap::new();
    keys.insert(1, key(1));
    keys.insert(2, key(2));
    keys.insert(3, key(3));
    let rotated = CipherSuite::new(
        &Keyring::from_parts(3, 1, BTreeMap::new(), keys).unwrap(),
        &policy(),
    )
    .unwrap();
    assert_eq!(rotated.pseudonym(PHONE, b"0912").unwrap(), t);
}

#[test]
fn debug_output_holds_no_key_material() {
    let ring = keyring();
    let dbg = format!("{ring:?} {:?}", suite());
    assert!(dbg.contains("<redacted>"));
    assert!(!dbg.contains("AQEBAQEB"), "base64 of key 1 leaked: {dbg}");
    assert!(!dbg.contains("[1, 1, 1"), "raw key bytes leaked: {dbg}");
}

const COLS: [pgcloak::policy::ColumnRef; 5] = [EMAIL, PHONE, NATIONAL_ID, PARTNER_ID, BIRTH];

proptest! {
    #[test]
    fn round_trips_in_every_column(col in 0usize..5, pt in proptest::collection::vec(any::<u8>(), 0..300)) {
        let s = suite();
        let env = s.encrypt(COLS[col], &pt).unwrap();
        prop_assert_eq!(s.decrypt(COLS[col], &env).unwrap(), pt);
    }

    #[test]
    fn any_single_bit_flip_fails_with_a_typed_error(
        col in 0usize..5,
        pt in proptest::collection::vec(any::<u8>(), 0..100),
        bit in any::<proptest::sample::Index>(),
    ) {
        let s = suite();
        let mut env = s.encrypt(COLS[col], &pt).unwrap();
        let i = bit.index(env.len() * 8);
        env[i / 8] ^= 1 << (i % 8);
        let r = s.decrypt(COLS[col], &env);
        prop_assert!(matches!(
            r,
            Err(CryptoError::NotAnEnvelope
                | CryptoError::UnsupportedVersion(_)
                | CryptoError::UnknownScheme(_)
                | CryptoError::UnknownKeyId(_)
                | CryptoError::WrongColumn { .. }
                | CryptoError::AuthenticationFailed)
        ), "flip of bit {} gave {:?}", i, r);
    }

    #[test]
    fn envelope_of_one_column_never_opens_as_another(
        a in 0usize..5, b in 0usize..5,
        pt in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let s = suite();
        let same_domain = (a == b) || (COLS[a] == NATIONAL_ID || COLS[a] == PARTNER_ID) && (COLS[b] == NATIONAL_ID || COLS[b] == PARTNER_ID);
        let env = s.encrypt(COLS[a], &pt).unwrap();
        if !same_domain {
            let wrong = matches!(s.decrypt(COLS[b], &env), Err(CryptoError::WrongColumn { .. }));
            prop_assert!(wrong);
        }
    }

    #[test]
    fn forged_column_tag_fails_authentication(pt in proptest::collection::vec(any::<u8>(), 0..64)) {
        let s = suite();
        let mut env = s.encrypt(EMAIL, &pt).unwrap();
        // Relabel an email envelope as a birth_date one: the AAD binds the domain.
        let tag = s.column_tag(BIRTH).unwrap().to_be_bytes();
        env[8..12].copy_from_slice(&tag);
        prop_assert_eq!(s.decrypt(BIRTH, &env), Err(CryptoError::AuthenticationFailed));
    }
}

#[test]
fn cipher_suite_can_be_shared_across_session_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CipherSuite>();
    assert_send_sync::<Keyring>();
}
