//! Statement fingerprints: a keyed hash of the literal-free statement text, its
//! kinds and the protected tables it touches. Logs and audit events identify
//! statements by this, never by raw SQL (which could carry a sensitive literal).
//!
//! The key comes from `audit.fingerprint_key_env`, or is random per process; with
//! a random key, fingerprints only compare within one process lifetime.

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

static KEY: OnceLock<HmacSha256> = OnceLock::new();

/// Sets the fingerprint key (first call wins). Called once at startup.
pub fn init_key(secret: Option<&[u8]>) {
    let mut random = [0u8; 32];
    let key: &[u8] = match secret {
        Some(s) if !s.is_empty() => s,
        _ => {
            let _ = getrandom::fill(&mut random);
            &random
        }
    };
    if let Ok(mac) = <HmacSha256 as KeyInit>::new_from_slice(key) {
        let _ = KEY.set(mac);
    }
}

fn key() -> &'static HmacSha256 {
    if KEY.get().is_none() {
        init_key(None);
    }
    // init_key always succeeds for HMAC (any key length); fall back defensively.
    KEY.get_or_init(|| <HmacSha256 as KeyInit>::new(&Default::default()))
}

/// The fingerprint of a normalised statement: 16 hex digits.
/// `normalised` is `crate::sql::fingerprint(sql).text` (literals already removed).
pub fn fingerprint(normalised: &str, kinds: &[&str], tables: &[String]) -> String {
    let mut mac = key().clone();
    mac.update(normalised.as_bytes());
    for k in kinds {
        mac.update(b"\0k");
        mac.update(k.as_bytes());
    }
    for t in tables {
        mac.update(b"\0t");
        mac.update(t.as_bytes());
    }
    let out = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(16);
    for b in out.iter().take(8) {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The statement with each literal shown as `?` (for `log.statements: redacted`).
pub fn redacted(normalised: &str) -> String {
    let mut out = String::with_capacity(normalised.len());
    let mut chars = normalised.chars();
    while let Some(c) = chars.next() {
        if c == '\0' {
            // `\0` is followed by a one-letter literal kind.
            let _ = chars.next();
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_literal_values_but_not_kind_or_tables() {
        let a = crate::sql::fingerprint("SELECT * FROM t WHERE phone = '0912345678'");
        let b = crate::sql::fingerprint("SELECT * FROM t WHERE phone = '0987654321'");
        let fa = fingerprint(&a.text, &["select"], &["public.t".into()]);
        assert_eq!(fa, fingerprint(&b.text, &["select"], &["public.t".into()]));
        assert_ne!(fa, fingerprint(&a.text, &["delete"], &["public.t".into()]));
        assert_ne!(fa, fingerprint(&a.text, &["select"], &["public.u".into()]));
        assert_eq!(fa.len(), 16);
    }

    #[test]
    fn redacted_form_has_no_literal() {
        let f = crate::sql::fingerprint("SELECT 1 FROM t WHERE phone = 'SECRET-0912' AND x = 42");
        let r = redacted(&f.text);
        assert!(!r.contains("SECRET"), "{r}");
        assert!(r.contains('?'), "{r}");
    }
}
