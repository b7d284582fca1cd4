//! `pgcloak keygen`: a new keyring, or a new active key appended to an existing one.
//!
//! Owns creating and rewriting the keyring file with mode 0600. Must never print key
//! material itself (the CLI decides whether to print the returned text) and never
//! weaken the file's permissions.

use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::error::CryptoError;
use super::keyring::{read_private_file, Keyring};

/// What `keygen_to_file` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeygenOutcome {
    /// A new keyring file was created holding key `key_id` (active and deterministic default).
    Created { key_id: u32 },
    /// A key was appended and made active; deterministic columns stay on `deterministic_key_id`.
    Appended {
        key_id: u32,
        previous_active: u32,
        deterministic_key_id: u32,
    },
}

/// Produces keyring text: a new keyring when `existing` is `None`, else `existing`
/// (validated) with a fresh key appended and made active. Deterministic pins are kept.
pub fn keygen(existing: Option<&str>) -> Result<Zeroizing<String>, CryptoError> {
    let ring = match existing {
        None => Keyring::generate()?,
        Some(text) => {
            Keyring::parse(text, "<existing keyring>")?
                .with_new_active_key()?
                .0
        }
    };
    Ok(ring.to_text())
}

/// Creates `path` with mode 0600 holding a new keyring, or appends a new active key
/// to the keyring already there (refusing a file readable by group or others).
/// The rewrite goes through a 0600 temporary file in the same directory and a rename.
pub fn keygen_to_file(path: &Path) -> Result<KeygenOutcome, CryptoError> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| CryptoError::Io {
        source_name: shown.clone(),
        reason: e.to_string(),
    };
    if !path.exists() {
        // A missing directory is created private (0700): the keyring is the only
        // thing it is for. Failing that, the error names the directory, not the file.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                let mut b = std::fs::DirBuilder::new();
                b.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                b.create(dir).map_err(|e| CryptoError::Io {
                    source_name: shown.clone(),
                    reason: format!(
                        "its directory {} does not exist and cannot be created: {e}",
                        dir.display()
                    ),
                })?;
            }
        }
        let ring = Keyring::generate()?;
        write_new_private(path, ring.to_text().as_bytes()).map_err(io)?;
        return Ok(KeygenOutcome::Created {
            key_id: ring.active_key_id(),
        });
    }
    let text = read_private_file(path)?;
    let old = Keyring::parse(&text, &shown)?;
    let (ring, key_id) = old.with_new_active_key()?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    write_new_private(&tmp, ring.to_text().as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(KeygenOutcome::Appended {
        key_id,
        previous_active: old.active_key_id(),
        deterministic_key_id: ring.deterministic_default_key_id(),
    })
}

fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
