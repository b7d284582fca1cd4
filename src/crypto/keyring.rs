//! The keyring: master keys by id, which one is active, and the deterministic pins.
//!
//! Owns parsing and validating the keyring text (from a file or an environment
//! variable) and producing it for `keygen`. Must never print, log or put key
//! material into an error: errors point at a line and say what is wrong, nothing more.
//!
//! Format (YAML, documented in docs/format.md):
//! ```yaml
//! version: 1
//! active: 2            # key id new randomized values are sealed with
//! deterministic: 1     # key id deterministic columns are pinned to by default
//! pins:                # optional: crypto domain (column id or key group) -> key id
//!   public.customers.phone: 1
//! keys:
//!   1: "<base64 of 32 random bytes>"
//!   2: "<base64 of 32 random bytes>"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::error::CryptoError;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Printed by `pgcloak keygen`: the keyring is the only way back to the data.
pub const KEYRING_LOSS_WARNING: &str = "WARNING: keep a safe, offline backup of this keyring. \
Losing it means losing every value encrypted with it: there is no recovery.";

/// One 32-byte master key. Zeroized on drop; Debug never shows the bytes.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl MasterKey {
    /// Wraps raw key bytes (tests and known-answer vectors use this).
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<MasterKey, CryptoError> {
        let mut k = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        getrandom::fill(k.as_mut()).map_err(|_| CryptoError::RandomnessUnavailable)?;
        Ok(MasterKey(k))
    }

    pub(crate) fn expose(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// A parsed, validated keyring.
#[derive(Clone, Debug)]
pub struct Keyring {
    active: u32,
    deterministic: u32,
    pins: BTreeMap<String, u32>,
    keys: BTreeMap<u32, MasterKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyring {
    version: u32,
    active: u32,
    deterministic: u32,
    #[serde(default)]
    pins: BTreeMap<String, u32>,
    keys: BTreeMap<u32, String>,
}

impl Drop for RawKeyring {
    fn drop(&mut self) {
        for v in self.keys.values_mut() {
            v.zeroize();
        }
    }
}

impl Keyring {
    /// Builds a keyring from parts (tests, vectors). Validates like [`Keyring::parse`].
    pub fn from_parts(
        active: u32,
        deterministic: u32,
        pins: BTreeMap<String, u32>,
        keys: BTreeMap<u32, MasterKey>,
    ) -> Result<Keyring, CryptoError> {
        let k = Keyring {
            active,
            deterministic,
            pins,
            keys,
        };
        k.validate("<memory>", None)?;
        Ok(k)
    }

    /// Parses keyring text. `source_name` (a path or `env PGCLOAK_MASTER_KEYS`) only
    /// labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Keyring, CryptoError> {
        if text.trim().is_empty() {
            return Err(CryptoError::keyring(
                source_name,
                None,
                "the keyring is empty",
            ));
        }
        let mut opts = serde_saphyr::Options::default();
        // Snippets would quote the input, and the input holds keys.
        opts.with_snippet = false;
        let raw: RawKeyring = serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
            CryptoError::keyring(
                source_name,
                e.location().map(|l| l.line()),
                "malformed keyring: expected the keys version, active, deterministic, \
                 pins (optional) and keys (id: base64 of 32 bytes), and nothing else",
            )
        })?;
        if raw.version != 1 {
            return Err(CryptoError::keyring(
                source_name,
                find_line(text, None, "version"),
                format!("unsupported keyring version {}, expected 1", raw.version),
            ));
        }
        let mut keys = BTreeMap::new();
        for (id, b64) in &raw.keys {
            let line = find_line(text, Some("keys"), &id.to_string());
            let mut decoded = Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN));
            if STANDARD.decode_vec(b64.trim(), &mut decoded).is_err() {
                return Err(CryptoError::keyring(
                    source_name,
                    line,
                    format!("key {id} is not valid base64"),
                ));
            }
            let arr: [u8; MASTER_KEY_LEN] = match decoded.as_slice().try_into() {
                Ok(a) => a,
                Err(_) => {
                    return Err(CryptoError::keyring(
                        source_name,
                        line,
                        format!(
                            "key {id} is {} bytes long, expected {MASTER_KEY_LEN}",
                            decoded.len()
                        ),
                    ))
                }
            };
            keys.insert(*id, MasterKey::from_bytes(arr));
        }
        let k = Keyring {
            active: raw.active,
            deterministic: raw.deterministic,
            pins: raw.pins.clone(),
            keys,
        };
        k.validate(source_name, Some(text))?;
        Ok(k)
    }

    fn validate(&self, source: &str, text: Option<&str>) -> Result<(), CryptoError> {
        let line = |section: Option<&str>, key: &str| text.and_then(|t| find_line(t, section, key));
        if self.keys.is_empty() {
            return Err(CryptoError::keyring(
                source,
                line(None, "keys"),
                "the keyring holds no key",
            ));
        }
        if self.keys.contains_key(&0) {
            return Err(CryptoError::keyring(
                source,
                line(Some("keys"), "0"),
                "key id 0 is reserved; ids start at 1",
            ));
        }
        if !self.keys.contains_key(&self.active) {
            return Err(CryptoError::keyring(
                source,
                line(None, "active"),
                format!("active key {} is not in keys", self.active),
            ));
        }
        if !self.keys.contains_key(&self.deterministic) {
            return Err(CryptoError::keyring(
                source,
                line(None, "deterministic"),
                format!("deterministic key {} is not in keys", self.deterministic),
            ));
        }
        for (domain, id) in &self.pins {
            if !self.keys.contains_key(id) {
                return Err(CryptoError::keyring(
                    source,
                    line(Some("pins"), domain),
                    format!("pin for {domain} names key {id}, which is not in keys"),
                ));
            }
        }
        Ok(())
    }

    /// Reads a keyring file, refusing one that group or others may access.
    pub fn from_file(path: &Path) -> Result<Keyring, CryptoError> {
        let text = read_private_file(path)?;
        Keyring::parse(&text, &path.display().to_string())
    }

    /// Reads a keyring from the contents of an environment variable.
    pub fn from_env(var: &str) -> Result<Keyring, CryptoError> {
        let source = format!("env {var}");
        match std::env::var(var) {
            Ok(v) => {
                let v = Zeroizing::new(v);
                Keyring::parse(&v, &source)
            }
            Err(std::env::VarError::NotPresent) => Err(CryptoError::Io {
                source_name: source,
                reason: "environment variable is not set".into(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(CryptoError::Io {
                source_name: source,
                reason: "environment variable is not valid UTF-8".into(),
            }),
        }
    }

    /// The key id new randomized values are sealed with.
    pub fn active_key_id(&self) -> u32 {
        self.active
    }

    /// The default key id for deterministic columns.
    pub fn deterministic_default_key_id(&self) -> u32 {
        self.deterministic
    }

    /// The key id deterministic values of `domain` are sealed with: its pin, else the default.
    pub fn deterministic_key_id(&self, domain: &str) -> u32 {
        self.pins.get(domain).copied().unwrap_or(self.deterministic)
    }

    /// Explicit pins, domain -> key id.
    pub fn pins(&self) -> &BTreeMap<String, u32> {
        &self.pins
    }

    /// All key ids, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.keys().copied()
    }

    pub(crate) fn key(&self, id: u32) -> Option<&MasterKey> {
        self.keys.get(&id)
    }

    /// The keyring in its file format. The text holds key material: callers write it
    /// to a 0600 file and drop it; it is zeroized on drop.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        s.push_str("# pgcloak keyring (docs/format.md). Keep it secret, keep a backup:\n");
        s.push_str("# losing it means losing the data encrypted with it.\n");
        s.push_str("version: 1\n");
        s.push_str(&format!("active: {}\n", self.active));
        s.push_str(&format!("deterministic: {}\n", self.deterministic));
        if !self.pins.is_empty() {
            s.push_str("pins:\n");
            for (domain, id) in &self.pins {
                // Domains are policy identifiers; quote them as JSON strings (valid YAML).
                let quoted = serde_json::to_string(domain).unwrap_or_default();
                s.push_str(&format!("  {quoted}: {id}\n"));
            }
        }
        s.push_str("keys:\n");
        for (id, key) in &self.keys {
            s.push_str(&format!("  {id}: \"{}\"\n", key.to_base64().as_str()));
        }
        s
    }

    /// A copy with a fresh key added and made active. Deterministic columns keep their
    /// pin (the `deterministic` default and `pins` are unchanged).
    pub fn with_new_active_key(&self) -> Result<(Keyring, u32), CryptoError> {
        let next = self
            .keys
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| CryptoError::keyring("<memory>", None, "key ids exhausted"))?;
        let mut k = self.clone();
        k.keys.insert(next, MasterKey::generate()?);
        k.active = next;
        Ok((k, next))
    }

    /// A new keyring with one fresh key (id 1), active and the deterministic default.
    pub fn generate() -> Result<Keyring, CryptoError> {
        let mut keys = BTreeMap::new();
        keys.insert(1, MasterKey::generate()?);
        Ok(Keyring {
            active: 1,
            deterministic: 1,
            pins: BTreeMap::new(),
            keys,
        })
    }
}

/// The 1-based line where `key:` appears, inside the top-level `section:` if given.
fn find_line(text: &str, section: Option<&str>, key: &str) -> Option<u64> {
    let mut in_section = section.is_none();
    for (i, line) in text.lines().enumerate() {
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let t = line.trim_start();
        if let Some(sec) = section {
            if !indented && !t.is_empty() && !t.starts_with('#') {
                in_section = t
                    .strip_prefix(sec)
                    .is_some_and(|r| r.trim_start().starts_with(':'));
                continue;
            }
        }
        if !in_section || (section.is_none() && indented) {
            continue;
        }
        let t = t.trim_start_matches(['"', '\'']);
        if let Some(rest) = t.strip_prefix(key) {
            if rest
                .trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
            {
                return Some(i as u64 + 1);
            }
        }
    }
    None
}

/// Reads a file that must not be accessible by group or others.
pub(crate) fn read_private_file(path: &Path) -> Result<Zeroizing<String>, CryptoError> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| CryptoError::Io {
        source_name: shown.clone(),
        reason: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    #[cfg(unix)]
    {
        let mode = f.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::InsecurePermissions { path: shown, mode });
        }
    }
    let mut bytes = Zeroizing::new(Vec::new());
    f.read_to_end(&mut bytes).map_err(io)?;
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_string())),
        Err(_) => Err(CryptoError::keyring(
            &shown,
            None,
            "the keyring is not valid UTF-8",
        )),
    }
}
