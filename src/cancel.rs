//! Cancel keys: the BackendKeyData pgcloak gives each client, and the map from
//! it to the upstream backend's own key.
//!
//! Our pid embeds the instance id in bits 23..31, so a fleet can route a cancel
//! to the instance that owns the session. The secret is random per session and
//! compared in constant time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Bits of the pid that count sessions; the bits above hold the instance id.
const COUNTER_BITS: u32 = 23;
const COUNTER_MASK: u32 = (1 << COUNTER_BITS) - 1;

/// What we need to cancel a session's current query upstream.
#[derive(Clone)]
pub struct UpstreamKey {
    pub pid: i32,
    pub secret: Vec<u8>,
}

struct Entry {
    secret: u32,
    upstream: UpstreamKey,
}

/// The live sessions' cancel keys on this instance.
pub struct CancelMap {
    instance_id: u8,
    next: AtomicU32,
    entries: Mutex<HashMap<i32, Entry>>,
}

impl CancelMap {
    pub fn new(instance_id: u8) -> Self {
        CancelMap {
            instance_id,
            next: AtomicU32::new(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The instance id embedded in a pid we handed out.
    pub fn instance_of(pid: i32) -> u8 {
        ((pid as u32) >> COUNTER_BITS) as u8
    }

    /// Registers a session and returns the (pid, secret) to give its client.
    pub fn register(&self, upstream: UpstreamKey) -> (i32, u32) {
        let secret: u32 = rand::random();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed) & COUNTER_MASK;
            if n == 0 {
                continue;
            }
            let pid = (((self.instance_id as u32) << COUNTER_BITS) | n) as i32;
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(pid) {
                v.insert(Entry { secret, upstream });
                return (pid, secret);
            }
        }
    }

    pub fn unregister(&self, pid: i32) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&pid);
    }

    /// The upstream key for a cancel request, if pid and secret match a live session.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<UpstreamKey> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.get(&pid)?;
        let expected = e.secret.to_be_bytes();
        if secret.len() != expected.len() {
            return None;
        }
        let diff = secret
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| e.upstream.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i32) -> UpstreamKey {
        UpstreamKey {
            pid,
            secret: vec![9, 9, 9, 9],
        }
    }

    #[test]
    fn pid_carries_instance_id_and_is_positive() {
        for id in [0u8, 1, 7, 255] {
            let m = CancelMap::new(id);
            let (pid, _) = m.register(key(1));
            assert!(pid > 0);
            assert_eq!(CancelMap::instance_of(pid), id);
        }
    }

    #[test]
    fn lookup_needs_the_exact_secret() {
        let m = CancelMap::new(3);
        let (pid, secret) = m.register(key(4242));
        assert_eq!(m.lookup(pid, &secret.to_be_bytes()).unwrap().pid, 4242);
        assert!(m.lookup(pid, &(secret ^ 1).to_be_bytes()).is_none());
        assert!(m.lookup(pid, &[1, 2]).is_none());
        m.unregister(pid);
        assert!(m.lookup(pid, &secret.to_be_bytes()).is_none());
    }

    #[test]
    fn pids_are_unique_among_live_sessions() {
        let m = CancelMap::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(m.register(key(1)).0));
        }
    }
}
