//! Known-answer vectors for envelope v1 (tests/vectors/envelope_v1.json, docs/format.md).
//!
//! The check recomputes every vector from the documented primitives (HKDF labels,
//! SHA-256 column tag, HMAC nonce, XChaCha20-Poly1305) as well as through pgcloak's
//! API, so a change to either side is caught. Regenerate (only when the format version
//! changes) with `PGCLOAK_WRITE_VECTORS=1 cargo test --test crypto_vectors -- --ignored`.

#[path = "support/crypto_fixture.rs"]
mod fixture;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use pgcloak::crypto::kdf::{derive_key, Purpose};
use pgcloak::crypto::{column_tag, peek_header, CipherSuite};
use pgcloak::policy::ColumnRef;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/envelope_v1.json"
);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn lp(domain: &str) -> Vec<u8> {
    let mut v = (domain.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(domain.as_bytes());
    v
}

const CASES: [(ColumnRef, &str, &str); 4] = [
    (fixture::PHONE, "public.customers.phone", "+84 912 345 678"),
    (fixture::PHONE, "public.customers.phone", ""),
    (fixture::NATIONAL_ID, "people", "079123456789"),
    (fixture::PARTNER_ID, "people", "Nguyễn Văn An"),
];

fn case_json(suite: &CipherSuite, col: ColumnRef, domain: &str, pt: &str, env: &[u8]) -> Value {
    let h = peek_header(env).unwrap();
    let master = fixture::key(h.key_id as u8);
    json!({
        "domain": domain,
        "column_tag": format!("{:08x}", column_tag(domain)),
        "scheme": if h.scheme == pgcloak::crypto::Scheme::Deterministic { "deterministic" } else { "randomized" },
        "key_id": h.key_id,
        "enc_key": hex(derive_key(&master, Purpose::Encryption, domain).as_ref()),
        "nonce_key": hex(derive_key(&master, Purpose::Nonce, domain).as_ref()),
        "plaintext_utf8": pt,
        "nonce": hex(&env[12..36]),
        "envelope": hex(env),
        "pseudonym": suite.pseudonym(col, pt.as_bytes()).unwrap(),
    })
}

#[test]
#[ignore]
fn regenerate_vectors() {
    if std::env::var("PGCLOAK_WRITE_VECTORS").is_err() {
        return;
    }
    let suite = CipherSuite::new(&fixture::keyring(), &fixture::policy()).unwrap();
    let mut cases: Vec<Value> = CASES
        .iter()
        .map(|(col, domain, pt)| {
            case_json(
                &suite,
                *col,
                domain,
                pt,
                &suite.encrypt(*col, pt.as_bytes()).unwrap(),
            )
        })
        .collect();
    let env = suite.encrypt(fixture::EMAIL, b"alice@example.com").unwrap();
    cases.push(case_json(
        &suite,
        fixture::EMAIL,
        "public.customers.email",
        "alice@example.com",
        &env,
    ));
    let doc = json!({
        "format": "pgcloak envelope v1 (docs/format.md)",
        "master_keys": { "1": hex(&[1u8; 32]), "2": hex(&[2u8; 32]) },
        "keyring": { "active": 2, "deterministic": 1 },
        "cases": cases,
    });
    std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}

#[test]
fn known_answer_vectors_hold() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let suite = CipherSuite::new(&fixture::keyring(), &fixture::policy()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for (i, c) in cases.iter().enumerate() {
        let domain = c["domain"].as_str().unwrap();
        let pt = c["plaintext_utf8"].as_str().unwrap().as_bytes();
        let env = unhex(c["envelope"].as_str().unwrap());
        let key_id = c["key_id"].as_u64().unwrap() as u32;
        let master = unhex(doc["master_keys"][key_id.to_string()].as_str().unwrap());
        // Independent recomputation from the documented primitives.
        let prk = hkdf::Hkdf::<Sha256>::new(None, &master);
        let mut enc = [0u8; 32];
        prk.expand(
            &[b"pgcloak v1 enc".as_slice(), &lp(domain)].concat(),
            &mut enc,
        )
        .unwrap();
        let mut nk = [0u8; 32];
        prk.expand(
            &[b"pgcloak v1 nonce".as_slice(), &lp(domain)].concat(),
            &mut nk,
        )
        .unwrap();
        assert_eq!(hex(&enc), c["enc_key"], "case {i}");
        assert_eq!(hex(&nk), c["nonce_key"], "case {i}");
        let tag = Sha256::digest(domain.as_bytes());
        assert_eq!(hex(&tag[..4]), c["column_tag"], "case {i}");
        let scheme = if c["scheme"] == "deterministic" {
            2u8
        } else {
            1
        };
        let mut aad = vec![b'p', b'c', 1, scheme];
        aad.extend_from_slice(&key_id.to_be_bytes());
        aad.extend_from_slice(&tag[..4]);
        aad.extend_from_slice(&lp(domain));
        let nonce = unhex(c["nonce"].as_str().unwrap());
        if scheme == 2 {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&nk).unwrap();
            mac.update(&aad);
            mac.update(pt);
            assert_eq!(
                &mac.finalize().into_bytes()[..24],
                nonce.as_slice(),
                "case {i}"
            );
        }
        let aead = XChaCha20Poly1305::new(&enc.into());
        let mut body = pt.to_vec();
        let t = aead
            .encrypt_inout_detached(
                &XNonce::try_from(nonce.as_slice()).unwrap(),
                &aad,
                body.as_mut_slice().into(),
            )
            .unwrap();
        let expected = [&aad[..12], &nonce, &body, t.as_slice()].concat();
        assert_eq!(hex(&expected), c["envelope"], "case {i}");
        // And through pgcloak's API.
        let col = [
            fixture::PHONE,
            fixture::PHONE,
            fixture::NATIONAL_ID,
            fixture::PARTNER_ID,
            fixture::EMAIL,
        ][i];
        assert_eq!(suite.decrypt(col, &env).unwrap(), pt, "case {i}");
        if scheme == 2 {
            assert_eq!(suite.encrypt(col, pt).unwrap(), env, "case {i}");
        }
        assert_eq!(
            suite.pseudonym(col, pt).unwrap(),
            c["pseudonym"],
            "case {i}"
        );
    }
}
