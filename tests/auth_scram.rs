//! SCRAM-SHA-256(-PLUS) server and client state machines, driven against an
//! independent reference client written here from RFC 5802 with the RustCrypto crates.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use pgcloak::auth::{
    tls_server_end_point, AuthError, ChannelBinding, ChannelBindingMode, ClientSecret,
    FakeVerifiers, ScramClient, ScramServer, ScramVerifier, ServerCredential, UpstreamAuthenticity,
    Verifier, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use sha2::{Digest, Sha256, Sha384};
use zeroize::Zeroizing;

// ---- reference client (independent of src/auth) ----

fn ref_hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

struct RefFinal {
    message: String,
    client_key: [u8; 32],
    server_signature: String,
}

/// Builds client-final for `password` given the exact client-first-bare, server-first
/// and the bytes that `c=` must carry (gs2 header plus binding data).
fn ref_client_final(password: &str, bare: &str, server_first: &str, cbind: &[u8]) -> RefFinal {
    let mut nonce = None;
    let mut salt = None;
    let mut iterations = None;
    for part in server_first.split(',') {
        let (k, v) = part.split_at(2);
        match k {
            "r=" => nonce = Some(v.to_string()),
            "s=" => salt = Some(STANDARD.decode(v).unwrap()),
            "i=" => iterations = Some(v.parse::<u32>().unwrap()),
            _ => {}
        }
    }
    let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(
        password.as_bytes(),
        &salt.unwrap(),
        iterations.unwrap(),
    );
    let client_key = ref_hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = ref_hmac(&salted, b"Server Key");
    let without_proof = format!("c={},r={}", STANDARD.encode(cbind), nonce.unwrap());
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = ref_hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(a, b)| a ^ b)
        .collect();
    RefFinal {
        message: format!("{without_proof},p={}", STANDARD.encode(proof)),
        client_key,
        server_signature: format!(
            "v={}",
            STANDARD.encode(ref_hmac(&server_key, auth_message.as_bytes()))
        ),
    }
}

const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";

fn verifier(password: &str) -> ScramVerifier {
    ScramVerifier::from_password(password.as_bytes(), b"pgcloak-test-salt", 4096).unwrap()
}

/// Runs a whole exchange; returns the server's outcome and the reference client's view.
fn exchange(
    credential: ServerCredential,
    binding: ChannelBinding,
    mechanism: &str,
    gs2: &str,
    cb_data: &[u8],
    password: &str,
) -> (
    Result<pgcloak::auth::ScramServerSuccess, AuthError>,
    RefFinal,
    String,
) {
    let server = ScramServer::new(credential, binding);
    let bare = format!("n=,r={CLIENT_NONCE}");
    let first = server
        .client_first_with_nonce(mechanism, format!("{gs2}{bare}").as_bytes(), "SERVERNONCE")
        .unwrap();
    let server_first = String::from_utf8(first.message().to_vec()).unwrap();
    let mut cbind = gs2.as_bytes().to_vec();
    cbind.extend_from_slice(cb_data);
    let fin = ref_client_final(password, &bare, &server_first, &cbind);
    (
        first.client_final(fin.message.as_bytes()),
        fin,
        server_first,
    )
}

fn p256_cert() -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

// ---- RFC 7677 ----

#[test]
fn rfc7677_test_vector_verifies_and_signs() {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let v = ScramVerifier::from_password(b"pencil", &salt, 4096).unwrap();
    let server = ScramServer::new(ServerCredential::Real(v), ChannelBinding::Plain);
    assert_eq!(server.mechanisms(), &[SCRAM_SHA_256]);
    let first = server
        .client_first_with_nonce(
            SCRAM_SHA_256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
    assert_eq!(
        first.message(),
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let success = first
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        success.message(),
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
    assert!(!success.channel_bound());
}

#[test]
fn rfc7677_vector_with_a_flipped_proof_bit_fails() {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let v = ScramVerifier::from_password(b"pencil", &salt, 4096).unwrap();
    let first = ScramServer::new(ServerCredential::Real(v), ChannelBinding::Plain)
        .client_first_with_nonce(
            SCRAM_SHA_256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
    let err = first
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=",
        )
        .unwrap_err();
    assert_eq!(err, AuthError::ProofMismatch);
}

// ---- full exchanges ----

#[test]
fn reference_client_authenticates_and_client_key_is_recovered() {
    let (result, fin, server_first) = exchange(
        ServerCredential::Real(verifier("s3cret")),
        ChannelBinding::Plain,
        SCRAM_SHA_256,
        "n,,",
        b"",
        "s3cret",
    );
    assert!(server_first.starts_with(&format!("r={CLIENT_NONCE}SERVERNONCE,s=")));
    let success = result.unwrap();
    assert_eq!(success.message(), fin.server_signature.as_bytes());
    assert_eq!(success.client_key().expose(), &fin.client_key);
}

#[test]
fn random_server_nonce_extends_client_nonce_by_24_chars() {
    let server = ScramServer::new(ServerCredential::Real(verifier("x")), ChannelBinding::Plain);
    let first = server
        .client_first(SCRAM_SHA_256, format!("n,,n=,r={CLIENT_NONCE}").as_bytes())
        .unwrap();
    let text = std::str::from_utf8(first.message()).unwrap();
    let nonce = text.split(',').next().unwrap().strip_prefix("r=").unwrap();
    assert_eq!(nonce.len(), CLIENT_NONCE.len() + 24);
    assert!(nonce.starts_with(CLIENT_NONCE));
}

#[test]
fn client_saying_y_over_tls_without_plus_offered_is_accepted() {
    let (result, _, _) = exchange(
        ServerCredential::Real(verifier("pw")),
        ChannelBinding::Tls {
            server_end_point: None,
        },
        SCRAM_SHA_256,
        "y,,",
        b"",
        "pw",
    );
    assert!(result.is_ok());
}

// ---- channel binding ----

#[test]
fn plus_exchange_binds_to_the_server_certificate() {
    let cert = p256_cert();
    let end_point = tls_server_end_point(&cert).unwrap();
    let binding = ChannelBinding::tls_from_certificate(&cert);
    let server = ScramServer::new(ServerCredential::Real(verifier("pw")), binding.clone());
    assert_eq!(server.mechanisms(), &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    let (result, fin, _) = exchange(
        ServerCredential::Real(verifier("pw")),
        binding,
        SCRAM_SHA_256_PLUS,
        "p=tls-server-end-point,,",
        &end_point,
        "pw",
    );
    let success = result.unwrap();
    assert!(success.channel_bound());
    assert_eq!(success.message(), fin.server_signature.as_bytes());
}

#[test]
fn plus_exchange_with_another_certificates_hash_is_refused() {
    let binding = ChannelBinding::tls_from_certificate(&p256_cert());
    let other = tls_server_end_point(&p256_cert()).unwrap();
    let (result, _, _) = exchange(
        ServerCredential::Real(verifier("pw")),
        binding,
        SCRAM_SHA_256_PLUS,
        "p=tls-server-end-point,,",
        &other,
        "pw",
    );
    assert_eq!(result.unwrap_err(), AuthError::ChannelBindingMismatch);
}

#[test]
fn y_flag_is_refused_as_downgrade_when_plus_is_offered() {
    let server = ScramServer::new(
        ServerCredential::Real(verifier("pw")),
        ChannelBinding::tls_from_certificate(&p256_cert()),
    );
    let err = server
        .client_first(SCRAM_SHA_256, format!("y,,n=,r={CLIENT_NONCE}").as_bytes())
        .unwrap_err();
    assert_eq!(err, AuthError::ChannelBindingDowngrade);
}

#[test]
fn binding_requests_that_do_not_fit_the_leg_are_refused() {
    let plain = || {
        ScramServer::new(
            ServerCredential::Real(verifier("pw")),
            ChannelBinding::Plain,
        )
    };
    let tls = || {
        ScramServer::new(
            ServerCredential::Real(verifier("pw")),
            ChannelBinding::tls_from_certificate(&p256_cert()),
        )
    };
    let msg = |gs2: &str| format!("{gs2}n=,r={CLIENT_NONCE}");
    // p= on a plain leg, with either mechanism.
    assert!(matches!(
        plain().client_first(SCRAM_SHA_256, msg("p=tls-server-end-point,,").as_bytes()),
        Err(AuthError::ChannelBindingNegotiation(_))
    ));
    assert_eq!(
        plain()
            .client_first(
                SCRAM_SHA_256_PLUS,
                msg("p=tls-server-end-point,,").as_bytes()
            )
            .unwrap_err(),
        AuthError::UnsupportedMechanism
    );
    // PLUS selected but no binding data.
    assert!(matches!(
        tls().client_first(SCRAM_SHA_256_PLUS, msg("n,,").as_bytes()),
        Err(AuthError::ChannelBindingNegotiation(_))
    ));
    // An unknown binding type.
    assert!(matches!(
        tls().client_first(SCRAM_SHA_256_PLUS, msg("p=tls-unique,,").as_bytes()),
        Err(AuthError::ChannelBindingNegotiation(_))
    ));
    // Unknown mechanism, authzid.
    assert_eq!(
        tls()
            .client_first("SCRAM-SHA-1", msg("n,,").as_bytes())
            .unwrap_err(),
        AuthError::UnsupportedMechanism
    );
    assert!(matches!(
        plain().client_first(SCRAM_SHA_256, msg("n,a=bob,").as_bytes()),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn tls_server_end_point_follows_the_signature_hash() {
    let p256 = p256_cert();
    assert_eq!(
        tls_server_end_point(&p256).unwrap(),
        Sha256::digest(&p256).to_vec()
    );

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let p384 = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    assert_eq!(
        tls_server_end_point(&p384).unwrap(),
        Sha384::digest(&p384).to_vec()
    );

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    assert!(matches!(
        tls_server_end_point(&ed),
        Err(AuthError::CertificateHash(_))
    ));
    assert_eq!(
        ChannelBinding::tls_from_certificate(&ed),
        ChannelBinding::Tls {
            server_end_point: None
        }
    );
}

#[test]
fn sha1_signed_certificate_is_hashed_with_sha256() {
    // SEQUENCE { SEQUENCE {}, SEQUENCE { OID sha1WithRSAEncryption, NULL }, BIT STRING }
    let cert: Vec<u8> = vec![
        0x30, 0x16, 0x30, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
        0x01, 0x05, 0x05, 0x00, 0x03, 0x03, 0x00, 0x01, 0x02,
    ];
    assert_eq!(
        tls_server_end_point(&cert).unwrap(),
        Sha256::digest(&cert).to_vec()
    );
}

// ---- no role enumeration ----

#[test]
fn wrong_password_unknown_role_and_no_password_fail_identically() {
    let fakes = FakeVerifiers::new([42; 32]);
    let real = Verifier::Scram(verifier("right"));
    let md5_only = Verifier::parse("md53175bce1d3201d16594cebf9d7eb3f9d").unwrap();
    let cases: Vec<(&str, Option<&Verifier>, &str)> = vec![
        ("wrong password", Some(&real), "wrong"),
        ("empty password", Some(&real), ""),
        ("unknown role", None, "wrong"),
        ("no password", None, ""),
        ("md5-only role", Some(&md5_only), "wrong"),
    ];
    let mut outcomes = Vec::new();
    for (label, stored, password) in cases {
        let credential = ServerCredential::for_role("alice", stored, &fakes);
        let (result, _, server_first) = exchange(
            credential,
            ChannelBinding::Plain,
            SCRAM_SHA_256,
            "n,,",
            b"",
            password,
        );
        let err = result.unwrap_err();
        // Same shape of server-first: nonce, a 16-byte salt (24 base64 chars), i=4096.
        let parts: Vec<&str> = server_first.split(',').collect();
        assert_eq!(parts.len(), 3, "{label}");
        assert_eq!(parts[1].len(), "s=".len() + 24, "{label}");
        assert_eq!(parts[2], "i=4096", "{label}");
        outcomes.push((
            label,
            err.clone(),
            err.sqlstate(),
            err.client_message("alice"),
        ));
    }
    for (label, err, sqlstate, message) in &outcomes {
        assert_eq!(*err, AuthError::ProofMismatch, "{label}");
        assert_eq!(*sqlstate, "28P01", "{label}");
        assert_eq!(
            message, "password authentication failed for user \"alice\"",
            "{label}"
        );
    }
}

#[test]
fn fake_salt_for_unknown_role_is_stable_across_attempts() {
    let fakes = FakeVerifiers::new([1; 32]);
    let salt_of = || {
        let (_, _, first) = exchange(
            ServerCredential::for_role("ghost", None, &fakes),
            ChannelBinding::Plain,
            SCRAM_SHA_256,
            "n,,",
            b"",
            "x",
        );
        first.split(',').nth(1).unwrap().to_string()
    };
    assert_eq!(salt_of(), salt_of());
}

#[test]
fn fake_verifier_refuses_even_a_proof_made_from_its_own_keys() {
    // Whatever the client sends, a fake credential never succeeds.
    let fake = FakeVerifiers::new([3; 32]).verifier_for("ghost");
    let real_clone = ScramVerifier::parse(&fake.to_pg_string()).unwrap();
    let (result, _, _) = exchange(
        ServerCredential::Fake(real_clone),
        ChannelBinding::Plain,
        SCRAM_SHA_256,
        "n,,",
        b"",
        "anything",
    );
    assert_eq!(result.unwrap_err(), AuthError::ProofMismatch);
}

#[test]
fn errors_never_carry_the_proof() {
    let (result, fin, _) = exchange(
        ServerCredential::Real(verifier("right")),
        ChannelBinding::Plain,
        SCRAM_SHA_256,
        "n,,",
        b"",
        "wrong",
    );
    let err = result.unwrap_err();
    let proof = fin.message.rsplit_once(",p=").unwrap().1;
    for text in [
        err.to_string(),
        format!("{err:?}"),
        err.client_message("alice"),
    ] {
        assert!(!text.contains(proof));
    }
}

#[test]
fn oversized_messages_are_refused() {
    let server = ScramServer::new(
        ServerCredential::Real(verifier("pw")),
        ChannelBinding::Plain,
    );
    let huge = format!("n,,n=,r={}", "a".repeat(2000));
    assert!(matches!(
        server.client_first(SCRAM_SHA_256, huge.as_bytes()),
        Err(AuthError::MessageTooLarge { limit: 1024, .. })
    ));
    let server = ScramServer::new(
        ServerCredential::Real(verifier("pw")),
        ChannelBinding::Plain,
    );
    let first = server
        .client_first(SCRAM_SHA_256, format!("n,,n=,r={CLIENT_NONCE}").as_bytes())
        .unwrap();
    let huge = format!("c=biws,r=x,{},p=AAAA", "e=".repeat(600));
    assert!(matches!(
        first.client_final(huge.as_bytes()),
        Err(AuthError::MessageTooLarge { limit: 1024, .. })
    ));
}

#[test]
fn wrong_nonce_in_client_final_is_refused() {
    let server = ScramServer::new(
        ServerCredential::Real(verifier("pw")),
        ChannelBinding::Plain,
    );
    let first = server
        .client_first_with_nonce(
            SCRAM_SHA_256,
            format!("n,,n=,r={CLIENT_NONCE}").as_bytes(),
            "S",
        )
        .unwrap();
    let server_first = std::str::from_utf8(first.message())
        .unwrap()
        .replace("S,s=", "T,s=");
    let fin = ref_client_final("pw", &format!("n=,r={CLIENT_NONCE}"), &server_first, b"n,,");
    assert_eq!(
        first.client_final(fin.message.as_bytes()).unwrap_err(),
        AuthError::NonceMismatch
    );
}

// ---- upstream client and pass-through ----

/// Authenticates a reference client to pgcloak's server and returns the success.
fn authenticated_client(v: &ScramVerifier, password: &str) -> pgcloak::auth::ScramServerSuccess {
    let (result, _, _) = exchange(
        ServerCredential::Real(v.clone()),
        ChannelBinding::Plain,
        SCRAM_SHA_256,
        "n,,",
        b"",
        password,
    );
    result.unwrap()
}

/// Drives `secret` against an upstream ScramServer holding `upstream`.
fn to_upstream(
    secret: ClientSecret,
    upstream: ScramVerifier,
    upstream_leg: ChannelBinding,
    our_view_of_leg: ChannelBinding,
    mode: ChannelBindingMode,
) -> Result<(UpstreamAuthenticity, bool), AuthError> {
    let server = ScramServer::new(ServerCredential::Real(upstream), upstream_leg);
    let offered = server.mechanisms();
    let client = ScramClient::start(secret, &our_view_of_leg, mode, offered)?;
    let mechanism = client.mechanism();
    let server_first = server.client_first(mechanism, client.message())?;
    let client_final = client.server_first(server_first.message())?;
    let success = server_first.client_final(client_final.message())?;
    let authenticity = client_final.server_final(success.message())?;
    Ok((authenticity, success.channel_bound()))
}

#[test]
fn pass_through_key_authenticates_to_upstream_with_same_verifier() {
    let v = verifier("hunter2");
    let success = authenticated_client(&v, "hunter2");
    let upstream = ScramVerifier::parse(&v.to_pg_string()).unwrap();
    let outcome = to_upstream(
        ClientSecret::PassThrough(success.pass_through_key()),
        upstream,
        ChannelBinding::Plain,
        ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
    )
    .unwrap();
    assert_eq!(outcome, (UpstreamAuthenticity::Verified, false));
}

#[test]
fn pass_through_uses_plus_toward_a_tls_upstream() {
    let v = verifier("hunter2");
    let success = authenticated_client(&v, "hunter2");
    let leg = ChannelBinding::tls_from_certificate(&p256_cert());
    let outcome = to_upstream(
        ClientSecret::PassThrough(success.pass_through_key()),
        v,
        leg.clone(),
        leg,
        ChannelBindingMode::Require,
    )
    .unwrap();
    assert_eq!(outcome, (UpstreamAuthenticity::Verified, true));
}

#[test]
fn pass_through_plus_with_a_different_certificate_is_refused_by_upstream() {
    let v = verifier("hunter2");
    let success = authenticated_client(&v, "hunter2");
    let err = to_upstream(
        ClientSecret::PassThrough(success.pass_through_key()),
        v,
        ChannelBinding::tls_from_certificate(&p256_cert()),
        ChannelBinding::tls_from_certificate(&p256_cert()),
        ChannelBindingMode::Prefer,
    )
    .unwrap_err();
    assert_eq!(err, AuthError::ChannelBindingMismatch);
}

#[test]
fn upstream_tls_without_plus_gets_y_and_accepts_it() {
    let v = verifier("pw");
    let success = authenticated_client(&v, "pw");
    // Upstream cannot hash its certificate so it offers no PLUS; we can, so we say y.
    let client = ScramClient::start(
        ClientSecret::PassThrough(success.pass_through_key()),
        &ChannelBinding::tls_from_certificate(&p256_cert()),
        ChannelBindingMode::Prefer,
        &[SCRAM_SHA_256],
    )
    .unwrap();
    assert!(client.message().starts_with(b"y,,n=,r="));
    let outcome = to_upstream(
        ClientSecret::PassThrough(success.pass_through_key()),
        v,
        ChannelBinding::Tls {
            server_end_point: None,
        },
        ChannelBinding::tls_from_certificate(&p256_cert()),
        ChannelBindingMode::Prefer,
    )
    .unwrap();
    assert_eq!(outcome, (UpstreamAuthenticity::Verified, false));
}

#[test]
fn require_channel_binding_fails_without_plus() {
    let v = verifier("pw");
    let key = authenticated_client(&v, "pw").pass_through_key();
    let plain = ScramClient::start(
        ClientSecret::PassThrough(key.clone()),
        &ChannelBinding::Plain,
        ChannelBindingMode::Require,
        &[SCRAM_SHA_256, SCRAM_SHA_256_PLUS],
    );
    assert!(matches!(plain, Err(AuthError::UpstreamChannelBinding(_))));
    let no_plus = ScramClient::start(
        ClientSecret::PassThrough(key),
        &ChannelBinding::tls_from_certificate(&p256_cert()),
        ChannelBindingMode::Require,
        &[SCRAM_SHA_256],
    );
    assert!(matches!(no_plus, Err(AuthError::UpstreamChannelBinding(_))));
}

#[test]
fn pass_through_against_a_different_salt_is_a_typed_error() {
    let v = verifier("pw");
    let key = authenticated_client(&v, "pw").pass_through_key();
    let other = ScramVerifier::from_password(b"pw", b"another-salt", 4096).unwrap();
    let err = to_upstream(
        ClientSecret::PassThrough(key),
        other,
        ChannelBinding::Plain,
        ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
    )
    .unwrap_err();
    assert_eq!(err, AuthError::PassThroughVerifierMismatch);
}

#[test]
fn pass_through_against_same_salt_but_other_password_is_refused_by_upstream() {
    let v = verifier("pw");
    let key = authenticated_client(&v, "pw").pass_through_key();
    let err = to_upstream(
        ClientSecret::PassThrough(key),
        verifier("changed-by-dba"),
        ChannelBinding::Plain,
        ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
    )
    .unwrap_err();
    assert_eq!(err, AuthError::ProofMismatch);
}

#[test]
fn forged_upstream_server_signature_is_detected() {
    let v = verifier("pw");
    let key = authenticated_client(&v, "pw").pass_through_key();
    let server = ScramServer::new(ServerCredential::Real(v), ChannelBinding::Plain);
    let client = ScramClient::start(
        ClientSecret::PassThrough(key),
        &ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
        server.mechanisms(),
    )
    .unwrap();
    let first = server
        .client_first(client.mechanism(), client.message())
        .unwrap();
    let fin = client.server_first(first.message()).unwrap();
    let forged = format!("v={}", STANDARD.encode([0u8; 32]));
    assert_eq!(
        fin.server_final(forged.as_bytes()).unwrap_err(),
        AuthError::UpstreamSignatureMismatch
    );
}

#[test]
fn upstream_error_attribute_is_reported() {
    let v = verifier("pw");
    let server = ScramServer::new(ServerCredential::Real(v), ChannelBinding::Plain);
    let client = ScramClient::start(
        ClientSecret::Password(Zeroizing::new(b"pw".to_vec())),
        &ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
        server.mechanisms(),
    )
    .unwrap();
    let first = server
        .client_first(client.mechanism(), client.message())
        .unwrap();
    let fin = client.server_first(first.message()).unwrap();
    assert_eq!(
        fin.server_final(b"e=invalid-proof").unwrap_err(),
        AuthError::UpstreamRejected("invalid-proof".into())
    );
}

#[test]
fn upstream_nonce_not_extending_ours_is_refused() {
    let client = ScramClient::start_with_nonce(
        ClientSecret::Password(Zeroizing::new(b"pw".to_vec())),
        &ChannelBinding::Plain,
        ChannelBindingMode::Prefer,
        &[SCRAM_SHA_256],
        "abc",
    )
    .unwrap();
    let err = client
        .server_first(b"r=xyzdef,s=c2FsdA==,i=4096")
        .unwrap_err();
    assert_eq!(err, AuthError::NonceMismatch);
}

#[test]
fn password_client_authenticates_to_upstream_with_and_without_tls() {
    let v = verifier("upstream-pw");
    let password = || ClientSecret::Password(Zeroizing::new(b"upstream-pw".to_vec()));
    assert_eq!(
        to_upstream(
            password(),
            v.clone(),
            ChannelBinding::Plain,
            ChannelBinding::Plain,
            ChannelBindingMode::Prefer
        )
        .unwrap(),
        (UpstreamAuthenticity::Verified, false)
    );
    let leg = ChannelBinding::tls_from_certificate(&p256_cert());
    assert_eq!(
        to_upstream(
            password(),
            v.clone(),
            leg.clone(),
            leg,
            ChannelBindingMode::Prefer
        )
        .unwrap(),
        (UpstreamAuthenticity::Verified, true)
    );
    let wrong = ClientSecret::Password(Zeroizing::new(b"nope".to_vec()));
    assert_eq!(
        to_upstream(
            wrong,
            v,
            ChannelBinding::Plain,
            ChannelBinding::Plain,
            ChannelBindingMode::Disable
        )
        .unwrap_err(),
        AuthError::ProofMismatch
    );
}

#[test]
fn debug_output_of_exchange_states_shows_no_secrets() {
    let v = verifier("pw");
    let success = authenticated_client(&v, "pw");
    let key = success.pass_through_key();
    let key_b64 = STANDARD.encode(success.client_key().expose());
    for shown in [
        format!("{success:?}"),
        format!("{key:?}"),
        format!("{:?}", ClientSecret::PassThrough(key.clone())),
        format!(
            "{:?}",
            ClientSecret::Password(Zeroizing::new(b"pw-secret".to_vec()))
        ),
        format!("{:?}", success.client_key()),
    ] {
        assert!(!shown.contains(&key_b64), "{shown}");
        assert!(!shown.contains("pw-secret"), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", success.client_key().expose())),
            "{shown}"
        );
    }
}
