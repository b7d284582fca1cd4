//! The tamper-evident audit chain: each record carries the MAC of the record before
//! it (`prev`) and its own (`mac`), both HMAC-SHA-256 under a key derived from the
//! keyring with HKDF (info [`KEY_INFO`]), so whoever can edit the file but has no
//! keyring cannot rebuild the chain.
//!
//! A record is one JSON object on one line. Its `mac` is computed over the line's
//! bytes without the trailing `,"mac":"…"` member, so verification needs no JSON
//! re-serialisation. The first record a writer puts in a file is an `audit_start`
//! naming its key id and the previous record's MAC: the last record of the rotated
//! file, or of the same file when pgcloak restarts. A crash mid-write leaves an
//! incomplete line; the next `audit_start` then names that line
//! (`after_truncated_line`) and the chain goes on across it.
//!
//! The chain itself is pure (no I/O); `pgcloak audit verify` reads the files and calls
//! [`verify`]. [`audit_chain_key`] and [`audit_verify_keys`] read the keyring the config
//! names to derive the keys.

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HKDF info label of the audit chain key (distinct from every data key's label).
pub const KEY_INFO: &[u8] = b"pgcloak audit chain v1";
const KEY_SALT: &[u8] = b"pgcloak-audit";
/// The `prev` of the very first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The event kind that starts a file (or a run) and names the key.
pub const START: &str = "audit_start";

const MAC_HEAD: &str = ",\"mac\":\"";
const MAC_SUFFIX_LEN: usize = MAC_HEAD.len() + 64 + 2;

/// The chain key for one master key.
pub fn derive_key(master: &[u8; 32]) -> [u8; 32] {
    let hk = Hkdf::<sha2::Sha256>::new(Some(KEY_SALT), master);
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = hk.expand(KEY_INFO, &mut out);
    out
}

fn mac(key: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut m = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => <HmacSha256 as KeyInit>::new(&Default::default()),
    };
    m.update(body);
    m.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Seals one record: sets `prev`, serialises, appends `mac`. Returns the line
/// (without newline) and its MAC in hex (the next record's `prev`).
pub fn seal(key: &[u8; 32], mut record: Map<String, Value>, prev: &str) -> (String, String) {
    record.remove("mac");
    record.insert("prev".into(), Value::String(prev.to_string()));
    let body = Value::Object(record).to_string();
    let m = hex(&mac(key, body.as_bytes()));
    let mut line = String::with_capacity(body.len() + MAC_SUFFIX_LEN);
    line.push_str(&body[..body.len() - 1]);
    line.push_str(MAC_HEAD);
    line.push_str(&m);
    line.push_str("\"}");
    (line, m)
}

/// The `mac` member of a line, without checking it (the writer continues a chain
/// from the last complete record of an existing file).
pub fn mac_of(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    Some(v.get("mac")?.as_str()?.to_string())
}

/// Why a chain is broken, at a 1-based line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// The record was changed (its MAC does not match its bytes, or it is not a record).
    Tampered { file: usize, line: usize },
    /// The record is intact but does not follow the one before it: records were
    /// deleted (or inserted) before it.
    Deleted { file: usize, line: usize },
    /// The last line is incomplete (a crash mid-write), not tampered with.
    Truncated { file: usize, line: usize },
    /// The first record is not an `audit_start`: records were deleted from the start.
    NoStart { file: usize, line: usize },
    /// The record names a key id the keyring does not hold.
    UnknownKey {
        file: usize,
        line: usize,
        key_id: u64,
    },
}

impl Break {
    pub fn location(&self) -> (usize, usize) {
        match *self {
            Break::Tampered { file, line }
            | Break::Deleted { file, line }
            | Break::Truncated { file, line }
            | Break::NoStart { file, line }
            | Break::UnknownKey { file, line, .. } => (file, line),
        }
    }

    /// What went wrong, for the operator.
    pub fn reason(&self) -> String {
        match self {
            Break::Tampered { .. } => "tampered: the record's MAC does not match its contents".into(),
            Break::Deleted { .. } => "deleted: the record does not follow the one before it (a record was removed or inserted before this line)".into(),
            Break::Truncated { .. } => "truncated: the last line is incomplete (pgcloak stopped mid-write)".into(),
            Break::NoStart { .. } => "deleted: the file does not begin with an audit_start record (records were removed from its start)".into(),
            Break::UnknownKey { key_id, .. } => format!("the record names key id {key_id}, which the keyring does not hold"),
        }
    }
}

/// What an intact chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub records: usize,
    /// The last record's MAC (the next file's first `prev`).
    pub head: String,
}

/// One parsed, authenticated record.
struct Checked {
    prev: String,
    mac: String,
    start: Option<(u64, Option<u64>)>,
}

/// Why one line does not check.
enum LineError {
    Bad,
    UnknownKey(u64),
    /// A record before any `audit_start` (no key known yet).
    NoStart,
}

fn check_line(
    line: &str,
    key: Option<&[u8; 32]>,
    key_for: &dyn Fn(u64) -> Option<[u8; 32]>,
) -> Result<Checked, LineError> {
    use LineError::Bad;
    if line.len() < MAC_SUFFIX_LEN + 2 || !line.ends_with("\"}") {
        return Err(Bad);
    }
    let split = line.len() - MAC_SUFFIX_LEN;
    if !line.is_char_boundary(split) || !line[split..].starts_with(MAC_HEAD) {
        return Err(Bad);
    }
    let given = &line[split + MAC_HEAD.len()..line.len() - 2];
    let mut body = String::with_capacity(split + 1);
    body.push_str(&line[..split]);
    body.push('}');
    let v: Value = serde_json::from_str(&body).map_err(|_| Bad)?;
    let prev = v
        .get("prev")
        .and_then(Value::as_str)
        .ok_or(Bad)?
        .to_string();
    let start = if v.get("event").and_then(Value::as_str) == Some(START) {
        let id = v.get("key_id").and_then(Value::as_u64).ok_or(Bad)?;
        Some((id, v.get("after_truncated_line").and_then(Value::as_u64)))
    } else {
        None
    };
    let k = match (&start, key) {
        (Some((id, _)), _) => key_for(*id).ok_or(LineError::UnknownKey(*id))?,
        (None, Some(k)) => *k,
        (None, None) => return Err(LineError::NoStart),
    };
    let want = hex(&mac(&k, body.as_bytes()));
    if !bool::from(want.as_bytes().ct_eq(given.as_bytes())) {
        return Err(Bad);
    }
    Ok(Checked {
        prev,
        mac: want,
        start,
    })
}

/// Verifies files of one chain, in order (a rotated file first). `key_for` gives
/// the chain key of a key id. Returns the first break.
pub fn verify(files: &[&[u8]], key_for: &dyn Fn(u64) -> Option<[u8; 32]>) -> Result<Intact, Break> {
    let mut head: Option<String> = None;
    let mut key: Option<[u8; 32]> = None;
    let mut records = 0;
    for (fi, bytes) in files.iter().enumerate() {
        let file = fi + 1;
        let complete = bytes.last().is_none_or(|&b| b == b'\n');
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        // A bad line followed only by the audit_start that names it (a restart after a crash).
        let mut pending_truncated: Option<usize> = None;
        for (li, raw) in lines.iter().enumerate() {
            let line = li + 1;
            let last = li + 1 == lines.len();
            let checked = match check_line(raw, key.as_ref(), key_for) {
                Ok(c) => c,
                Err(LineError::UnknownKey(key_id)) => {
                    return Err(Break::UnknownKey { file, line, key_id })
                }
                Err(LineError::NoStart) if pending_truncated.is_none() => {
                    return Err(Break::NoStart { file, line })
                }
                Err(_) => {
                    if last && !complete {
                        return Err(Break::Truncated { file, line });
                    }
                    if pending_truncated.is_none() && head.is_some() {
                        pending_truncated = Some(line);
                        continue;
                    }
                    return Err(Break::Tampered { file, line });
                }
            };
            if let Some(bad) = pending_truncated.take() {
                // Only a restart's audit_start naming exactly that line excuses it.
                if checked.start.and_then(|s| s.1) != Some(bad as u64) {
                    return Err(Break::Tampered { file, line: bad });
                }
            }
            if line == 1 && checked.start.is_none() {
                return Err(Break::NoStart { file, line });
            }
            if let Some(h) = &head {
                // The first file's first record may follow a file not given.
                if !bool::from(h.as_bytes().ct_eq(checked.prev.as_bytes())) {
                    return Err(Break::Deleted { file, line });
                }
            }
            if let Some((id, _)) = checked.start {
                key = key_for(id);
            }
            head = Some(checked.mac);
            records += 1;
        }
        if let Some(bad) = pending_truncated {
            return Err(if complete {
                Break::Tampered { file, line: bad }
            } else {
                Break::Truncated { file, line: bad }
            });
        }
    }
    Ok(Intact {
        records,
        head: head.unwrap_or_else(|| GENESIS.to_string()),
    })
}

/// The keyring named by the config, if any (for the audit chain).
fn keyring(config: &crate::config::Config) -> Result<Option<crate::crypto::Keyring>, String> {
    let Some(keys) = &config.keys else {
        return Ok(None);
    };
    match (&keys.file, &keys.env) {
        (Some(f), _) => crate::crypto::Keyring::from_file(f).map(Some),
        (None, Some(v)) => crate::crypto::Keyring::from_env(v).map(Some),
        (None, None) => return Ok(None),
    }
    .map_err(|e| format!("keys: {e}"))
}

/// The audit chain key: derived from the keyring's active key (None without a keyring:
/// the audit file is then not chained).
pub fn audit_chain_key(
    config: &crate::config::Config,
) -> Result<Option<super::audit::ChainKey>, String> {
    let Some(ring) = keyring(config)? else {
        return Ok(None);
    };
    let id = ring.active_key_id();
    Ok(ring.key(id).map(|m| super::audit::ChainKey {
        key_id: id,
        key: derive_key(m.expose()),
    }))
}

/// Every chain key the keyring can derive, by key id (for `pgcloak audit verify`).
pub fn audit_verify_keys(
    config: &crate::config::Config,
) -> Result<std::collections::HashMap<u64, [u8; 32]>, String> {
    let ring = keyring(config)?
        .ok_or("the config names no keyring (`keys:`); the audit chain is keyed by it")?;
    let ids: Vec<u32> = ring.key_ids().collect();
    Ok(ids
        .into_iter()
        .filter_map(|id| {
            ring.key(id)
                .map(|m| (u64::from(id), derive_key(m.expose())))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K: [u8; 32] = [7; 32];

    fn key_for(id: u64) -> Option<[u8; 32]> {
        (id == 1).then_some(K)
    }

    fn rec(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// A file of `n` records after an audit_start, continuing from `prev`.
    fn file(n: usize, prev: &str) -> (String, String) {
        let mut out = String::new();
        let (l, mut head) = seal(&K, rec(json!({"event": START, "key_id": 1})), prev);
        out.push_str(&l);
        out.push('\n');
        for i in 0..n {
            let (l, h) = seal(
                &K,
                rec(json!({"event": "session", "role": format!("r{i}")})),
                &head,
            );
            out.push_str(&l);
            out.push('\n');
            head = h;
        }
        (out, head)
    }

    #[test]
    fn an_intact_chain_verifies_across_rotation() {
        let (a, head) = file(3, GENESIS);
        let (b, last) = file(2, &head);
        let r = verify(&[a.as_bytes(), b.as_bytes()], &key_for).unwrap();
        assert_eq!(
            r,
            Intact {
                records: 7,
                head: last
            }
        );
        // The second file alone verifies too (its start may follow a file not given).
        assert!(verify(&[b.as_bytes()], &key_for).is_ok());
        // But in the wrong order the chain breaks.
        assert_eq!(
            verify(&[b.as_bytes(), a.as_bytes()], &key_for),
            Err(Break::Deleted { file: 2, line: 1 })
        );
    }

    #[test]
    fn one_changed_byte_is_tampering_at_its_line() {
        let (a, _) = file(4, GENESIS);
        let mut bytes = a.into_bytes();
        let third = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(1)
            .unwrap()
            .0;
        // A byte inside line 3's role value.
        let pos = third
            + 1
            + bytes[third + 1..]
                .windows(2)
                .position(|w| w == b"r1")
                .unwrap()
            + 1;
        bytes[pos] = b'9';
        assert_eq!(
            verify(&[&bytes], &key_for),
            Err(Break::Tampered { file: 1, line: 3 })
        );
    }

    #[test]
    fn a_deleted_record_breaks_the_chain_at_the_next_line() {
        let (a, _) = file(4, GENESIS);
        let mut lines: Vec<&str> = a.lines().collect();
        lines.remove(2);
        let cut = lines.join("\n") + "\n";
        assert_eq!(
            verify(&[cut.as_bytes()], &key_for),
            Err(Break::Deleted { file: 1, line: 3 })
        );
        // The first record deleted: no audit_start.
        let (a, _) = file(2, GENESIS);
        let headless: String = a.lines().skip(1).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            verify(&[headless.as_bytes()], &key_for),
            Err(Break::NoStart { file: 1, line: 1 })
        );
        // The last record deleted is only visible against the next file or a stored head.
        let (a, head) = file(2, GENESIS);
        let (b, _) = file(1, &head);
        let short: String = a.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            verify(&[short.as_bytes(), b.as_bytes()], &key_for),
            Err(Break::Deleted { file: 2, line: 1 })
        );
    }

    #[test]
    fn an_incomplete_last_line_is_truncated_not_tampered() {
        let (a, _) = file(3, GENESIS);
        let cut = &a.as_bytes()[..a.len() - 20];
        assert_eq!(
            verify(&[cut], &key_for),
            Err(Break::Truncated { file: 1, line: 4 })
        );
        // The same bad line followed by anything else is tampering.
        let mut more = cut.to_vec();
        more.extend_from_slice(b"\n");
        let (b, _) = file(0, GENESIS);
        more.extend_from_slice(b.as_bytes());
        assert_eq!(
            verify(&[&more], &key_for),
            Err(Break::Tampered { file: 1, line: 4 })
        );
    }

    #[test]
    fn a_restart_after_a_crash_continues_across_the_truncated_line() {
        let (a, head) = file(2, GENESIS);
        let mut text = a.clone();
        text.push_str("{\"ts\":\"2026-01-01\",\"event\":\"sess"); // the crash
        text.push('\n');
        let (l, _) = seal(
            &K,
            rec(json!({"event": START, "key_id": 1, "after_truncated_line": 4})),
            &head,
        );
        text.push_str(&l);
        text.push('\n');
        let r = verify(&[text.as_bytes()], &key_for).unwrap();
        assert_eq!(r.records, 4);
    }

    #[test]
    fn a_forged_chain_without_the_key_fails_and_unknown_keys_are_named() {
        let (a, _) = file(1, GENESIS);
        let other = |id: u64| (id == 1).then_some([8u8; 32]);
        assert_eq!(
            verify(&[a.as_bytes()], &other),
            Err(Break::Tampered { file: 1, line: 1 })
        );
        let none = |_: u64| None;
        assert_eq!(
            verify(&[a.as_bytes()], &none),
            Err(Break::UnknownKey {
                file: 1,
                line: 1,
                key_id: 1
            })
        );
        assert_ne!(derive_key(&[1; 32]), derive_key(&[2; 32]));
    }
}
