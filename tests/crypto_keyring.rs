//! Keyring file format, permissions, keygen and rotation semantics.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use pgcloak::crypto::{
    keygen, keygen_to_file, CryptoError, KeygenOutcome, Keyring, KEYRING_LOSS_WARNING,
};

const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 x 0x01
const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 x 0x02

fn ring_text() -> String {
    format!("version: 1\nactive: 2\ndeterministic: 1\npins:\n  public.customers.phone: 2\nkeys:\n  1: \"{K1}\"\n  2: \"{K2}\"\n")
}

#[test]
fn parses_keys_active_and_pins() {
    let k = Keyring::parse(&ring_text(), "test.keys").unwrap();
    assert_eq!(k.active_key_id(), 2);
    assert_eq!(k.deterministic_default_key_id(), 1);
    assert_eq!(k.deterministic_key_id("public.customers.phone"), 2);
    assert_eq!(k.deterministic_key_id("people"), 1);
    assert_eq!(k.key_ids().collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn short_key_is_reported_with_file_and_line_without_the_key() {
    let text = ring_text().replace(K2, "AgICAg==");
    let e = Keyring::parse(&text, "test.keys").unwrap_err();
    assert_eq!(
        e.to_string(),
        "keyring test.keys:8: key 2 is 4 bytes long, expected 32"
    );
    let text = ring_text().replace(K1, "not base64!!");
    let e = Keyring::parse(&text, "test.keys").unwrap_err();
    assert_eq!(
        e.to_string(),
        "keyring test.keys:7: key 1 is not valid base64"
    );
    assert!(!e.to_string().contains("not base64!!"));
}

#[test]
fn active_key_must_exist() {
    let text = ring_text().replace("active: 2", "active: 5");
    let e = Keyring::parse(&text, "k").unwrap_err();
    assert_eq!(e.to_string(), "keyring k:2: active key 5 is not in keys");
    let text = ring_text().replace("phone: 2", "phone: 9");
    let e = Keyring::parse(&text, "k").unwrap_err();
    assert_eq!(
        e.to_string(),
        "keyring k:5: pin for public.customers.phone names key 9, which is not in keys"
    );
}

#[test]
fn unknown_fields_and_empty_text_are_refused_without_echoing_input() {
    let text = format!("{}secret_field: {K1}\n", ring_text());
    let e = Keyring::parse(&text, "k").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("keyring k:"), "{msg}");
    assert!(msg.contains("malformed keyring"), "{msg}");
    assert!(!msg.contains(K1), "{msg}");
    assert_eq!(e.sqlstate(), "F0000");
    assert_eq!(
        Keyring::parse("  \n", "k").unwrap_err().to_string(),
        "keyring k: the keyring is empty"
    );
    let e = Keyring::parse(
        &format!("version: 1\nactive: 1\nkeys:\n  1: \"{K1}\"\n"),
        "k",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("malformed keyring"),
        "deterministic is required: {e}"
    );
}

#[test]
fn file_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.keys");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(ring_text().as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Keyring::from_file(&path).unwrap_err();
    assert!(matches!(
        e,
        CryptoError::InsecurePermissions { mode: 0o644, .. }
    ));
    let shown = path.display().to_string();
    assert!(e.to_string().contains(&format!("chmod 600 {shown}")), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(Keyring::from_file(&path).unwrap().active_key_id(), 2);
}

#[test]
fn keyring_from_env_var() {
    std::env::set_var("PGCLOAK_TEST_KEYS_ENV", ring_text());
    assert_eq!(
        Keyring::from_env("PGCLOAK_TEST_KEYS_ENV")
            .unwrap()
            .active_key_id(),
        2
    );
    let e = Keyring::from_env("PGCLOAK_TEST_KEYS_UNSET").unwrap_err();
    assert_eq!(
        e.to_string(),
        "keyring env PGCLOAK_TEST_KEYS_UNSET: environment variable is not set"
    );
}

#[test]
fn keygen_creates_then_appends_keeping_deterministic_pin() {
    let first = keygen(None).unwrap();
    let k = Keyring::parse(&first, "new").unwrap();
    assert_eq!(
        (k.active_key_id(), k.deterministic_default_key_id()),
        (1, 1)
    );
    let second = keygen(Some(&first)).unwrap();
    let k2 = Keyring::parse(&second, "appended").unwrap();
    assert_eq!(k2.active_key_id(), 2);
    assert_eq!(
        k2.deterministic_default_key_id(),
        1,
        "deterministic columns stay on key 1"
    );
    // Key 1 is carried over unchanged.
    let line1 = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("1:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(line1(&first), line1(&second));
    assert!(second.contains("losing it means losing the data"));
}

#[test]
fn keygen_preserves_pins() {
    let out = keygen(Some(&ring_text())).unwrap();
    let k = Keyring::parse(&out, "x").unwrap();
    assert_eq!(k.active_key_id(), 3);
    assert_eq!(k.deterministic_key_id("public.customers.phone"), 2);
}

#[test]
fn keygen_to_file_creates_0600_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.keys");
    assert_eq!(
        keygen_to_file(&path).unwrap(),
        KeygenOutcome::Created { key_id: 1 }
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        keygen_to_file(&path).unwrap(),
        KeygenOutcome::Appended {
            key_id: 2,
            previous_active: 1,
            deterministic_key_id: 1
        }
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let k = Keyring::from_file(&path).unwrap();
    assert_eq!(k.key_ids().collect::<Vec<_>>(), vec![1, 2]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        keygen_to_file(&path),
        Err(CryptoError::InsecurePermissions { .. })
    ));
}

#[test]
fn loss_warning_says_data_is_lost() {
    assert!(KEYRING_LOSS_WARNING.contains("Losing it means losing"));
}
