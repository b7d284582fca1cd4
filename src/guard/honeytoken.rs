//! The honeytoken matcher: is this canonical plaintext one of the column's decoys?
//!
//! Decoys are held as keyed hashes (HMAC-SHA-256 under a key drawn at startup), and
//! a delivered value is hashed and looked up, so no value is compared byte by byte
//! with early exit and no value is kept. Values are compared in canonical form, so
//! `0900000009` matches however the client spells or encodes it.

use std::collections::{HashMap, HashSet};

use hmac::{KeyInit, Mac};

use crate::policy::ColumnRef;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Decoy hashes per column.
pub struct Matcher {
    key: [u8; 32],
    columns: HashMap<ColumnRef, HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("columns", &self.columns.len())
            .finish_non_exhaustive()
    }
}

impl Matcher {
    /// A matcher with a fresh random key (falls back to a fixed key only if the OS
    /// has no randomness, which costs nothing but the hash's secrecy in memory).
    pub fn new() -> Matcher {
        let mut key = [0u8; 32];
        let _ = getrandom::fill(&mut key);
        Matcher::with_key(key)
    }

    pub fn with_key(key: [u8; 32]) -> Matcher {
        Matcher {
            key,
            columns: HashMap::new(),
        }
    }

    fn hash(&self, canonical: &[u8]) -> [u8; 32] {
        let mut mac = match <HmacSha256 as KeyInit>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => <HmacSha256 as KeyInit>::new(&Default::default()),
        };
        mac.update(canonical);
        mac.finalize().into_bytes().into()
    }

    /// Adds a decoy (canonical plaintext) for `col`.
    pub fn add(&mut self, col: ColumnRef, canonical: &[u8]) {
        let h = self.hash(canonical);
        self.columns.entry(col).or_default().insert(h);
    }

    /// Whether `col` has any decoy (only then is a value worth hashing).
    pub fn watches(&self, col: ColumnRef) -> bool {
        self.columns.contains_key(&col)
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Whether `canonical` is one of `col`'s decoys.
    pub fn matches(&self, col: ColumnRef, canonical: &[u8]) -> bool {
        match self.columns.get(&col) {
            Some(set) => set.contains(&self.hash(canonical)),
            None => false,
        }
    }
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_decoys_of_their_column_only() {
        let mut m = Matcher::new();
        m.add(ColumnRef(1), b"0900000009");
        assert!(m.watches(ColumnRef(1)));
        assert!(!m.watches(ColumnRef(0)));
        assert!(m.matches(ColumnRef(1), b"0900000009"));
        assert!(!m.matches(ColumnRef(1), b"0900000008"));
        assert!(!m.matches(ColumnRef(1), b"0900000009 "));
        assert!(!m.matches(ColumnRef(0), b"0900000009"));
        assert!(!format!("{m:?}").contains("09"));
    }

    #[test]
    fn two_matchers_hash_differently() {
        let (a, b) = (Matcher::new(), Matcher::new());
        assert_ne!(a.hash(b"x"), b.hash(b"x"));
    }
}
