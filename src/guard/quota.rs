//! The quota ledger: plaintext values delivered per quota over a sliding window.
//!
//! Pure: time is passed in. Each quota's window is split into [`BUCKETS`] buckets;
//! usage is the sum of the buckets that overlap the window ending now, so a value
//! stops counting between `window` and `window + window/BUCKETS` after it was
//! delivered (never earlier). Memory per quota is bounded by the bucket count.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Buckets per window (the resolution of the sliding window).
pub const BUCKETS: u64 = 60;

/// One quota as the ledger needs it: its name, limit and window.
#[derive(Debug, Clone, Copy)]
pub struct Limit<'a> {
    pub name: &'a str,
    pub max_values: u64,
    pub window: Duration,
}

/// A charge that would take a quota over its limit (nothing was charged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub quota: String,
    pub used: u64,
    pub max_values: u64,
    pub window: Duration,
}

#[derive(Debug, Default)]
struct Window {
    width_ms: u64,
    /// (bucket index, values), oldest first.
    buckets: VecDeque<(u64, u64)>,
}

impl Window {
    fn width_for(window: Duration) -> u64 {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        (ms / BUCKETS).max(1)
    }

    /// Drops buckets that no longer overlap the window; adapts to a new window width.
    fn prune(&mut self, window: Duration, now_ms: u64) {
        let width = Self::width_for(window);
        if width != self.width_ms {
            // The window changed on reload: keep what was counted, as of now (conservative).
            let total: u64 = self.buckets.iter().map(|b| b.1).sum();
            self.buckets.clear();
            self.width_ms = width;
            if total > 0 {
                self.buckets.push_back((now_ms / width, total));
            }
            return;
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let oldest = now_ms.saturating_sub(window_ms) / width;
        while self.buckets.front().is_some_and(|b| b.0 < oldest) {
            self.buckets.pop_front();
        }
    }

    fn used(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum()
    }

    fn add(&mut self, n: u64, now_ms: u64) {
        let idx = now_ms / self.width_ms.max(1);
        match self.buckets.back_mut() {
            Some(b) if b.0 == idx => b.1 = b.1.saturating_add(n),
            _ => self.buckets.push_back((idx, n)),
        }
    }
}

/// Usage of every quota on this instance, keyed by quota name.
#[derive(Debug, Default)]
pub struct Ledger {
    windows: HashMap<String, Window>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Charges `n` values to each quota in `charges`, all or nothing: if any would go
    /// over its limit, nothing is charged and the first such quota is returned.
    /// On success, returns each quota's usage after the charge (for the gauge).
    pub fn charge(
        &mut self,
        charges: &[(Limit<'_>, u64)],
        now_ms: u64,
    ) -> Result<Vec<u64>, Exceeded> {
        for (limit, n) in charges {
            let w = self.windows.entry(limit.name.to_string()).or_default();
            w.prune(limit.window, now_ms);
            let used = w.used();
            if used.saturating_add(*n) > limit.max_values {
                return Err(Exceeded {
                    quota: limit.name.to_string(),
                    used,
                    max_values: limit.max_values,
                    window: limit.window,
                });
            }
        }
        let mut after = Vec::with_capacity(charges.len());
        for (limit, n) in charges {
            let w = self.windows.entry(limit.name.to_string()).or_default();
            w.add(*n, now_ms);
            after.push(w.used());
        }
        Ok(after)
    }

    /// Values counted against `limit` in the window ending at `now_ms`.
    pub fn used(&mut self, limit: Limit<'_>, now_ms: u64) -> u64 {
        match self.windows.get_mut(limit.name) {
            Some(w) => {
                w.prune(limit.window, now_ms);
                w.used()
            }
            None => 0,
        }
    }

    /// Forgets quotas no longer in the policy (after a reload).
    pub fn retain(&mut self, names: &[&str]) {
        self.windows.retain(|k, _| names.contains(&k.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(max: u64, secs: u64) -> Limit<'static> {
        Limit {
            name: "q",
            max_values: max,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn counts_up_to_the_limit_and_refuses_the_charge_that_would_pass_it() {
        let mut l = Ledger::new();
        assert_eq!(l.charge(&[(lim(5, 60), 3)], 0), Ok(vec![3]));
        assert_eq!(l.charge(&[(lim(5, 60), 2)], 10), Ok(vec![5]));
        let e = l.charge(&[(lim(5, 60), 1)], 20).unwrap_err();
        assert_eq!((e.used, e.max_values), (5, 5));
        // The refused charge counted nothing.
        assert_eq!(l.used(lim(5, 60), 20), 5);
    }

    #[test]
    fn the_window_slides() {
        let mut l = Ledger::new();
        l.charge(&[(lim(10, 60), 10)], 0).unwrap();
        assert!(l.charge(&[(lim(10, 60), 1)], 59_000).is_err());
        // After window + one bucket, the values no longer count.
        assert_eq!(l.used(lim(10, 60), 61_001), 0);
        assert!(l.charge(&[(lim(10, 60), 10)], 61_001).is_ok());
    }

    #[test]
    fn values_stop_counting_gradually() {
        let mut l = Ledger::new();
        l.charge(&[(lim(100, 60), 4)], 0).unwrap();
        l.charge(&[(lim(100, 60), 6)], 30_000).unwrap();
        assert_eq!(l.used(lim(100, 60), 61_500), 6);
        assert_eq!(l.used(lim(100, 60), 92_000), 0);
    }

    #[test]
    fn several_quotas_are_charged_all_or_nothing() {
        let mut l = Ledger::new();
        let a = Limit {
            name: "a",
            max_values: 10,
            window: Duration::from_secs(60),
        };
        let b = Limit {
            name: "b",
            max_values: 2,
            window: Duration::from_secs(60),
        };
        assert!(l.charge(&[(a, 2), (b, 2)], 0).is_ok());
        let e = l.charge(&[(a, 1), (b, 1)], 1).unwrap_err();
        assert_eq!(e.quota, "b");
        assert_eq!(l.used(a, 1), 2, "a was not charged when b refused");
    }

    #[test]
    fn a_reload_that_lowers_the_limit_applies_to_what_was_counted() {
        let mut l = Ledger::new();
        l.charge(&[(lim(100, 60), 50)], 0).unwrap();
        assert!(l.charge(&[(lim(40, 60), 1)], 1).is_err());
        // A changed window keeps the count.
        assert_eq!(l.used(lim(100, 3600), 2), 50);
        l.retain(&[]);
        assert_eq!(l.used(lim(100, 3600), 3), 0);
    }
}
