//! `pgcloak keygen`: creates a 0600 keyring, appends active keys, keeps
//! deterministic columns pinned, and warns that losing the keyring loses the data.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use pgcloak::crypto::Keyring;

fn keygen(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .arg("keygen")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_creates_then_appends_an_active_key_and_keeps_the_deterministic_pin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.keys");
    let p = path.to_str().unwrap();
    let (ok, err) = keygen(&["--file", p]);
    assert!(ok, "{err}");
    assert!(err.contains("Losing it means losing"), "{err}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let first = Keyring::from_file(&path).unwrap();
    let (ok, err) = keygen(&["--file", p]);
    assert!(ok, "{err}");
    let second = Keyring::from_file(&path).unwrap();
    assert_ne!(second.active_key_id(), first.active_key_id());
    assert_eq!(
        second.deterministic_default_key_id(),
        first.deterministic_default_key_id()
    );
    assert_eq!(second.key_ids().count(), 2);
}

#[test]
fn keygen_without_a_file_prints_a_keyring_that_parses() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgcloak"))
        .arg("keygen")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    Keyring::parse(&text, "stdout").unwrap();
}

#[test]
fn keygen_into_a_missing_directory_creates_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config").join("keys").join("master.keys");
    let (ok, err) = keygen(&["--file", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert!(Keyring::from_file(&path).is_ok());
}

#[test]
fn keygen_names_the_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("keys").join("master.keys");
    let (ok, err) = keygen(&["--file", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "its directory {} does not exist",
            blocker.join("keys").display()
        )),
        "{err}"
    );
}
