//! Per-client-address tracking of failed logins, with exponential backoff once a
//! threshold is crossed.
//!
//! Pure: the caller passes `now`. Memory is bounded by `max_tracked`; when full, the
//! stalest entry is dropped. IPv6 addresses are grouped by /64, since one host
//! usually owns a whole /64, and IPv4-mapped IPv6 counts as IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::error::AuthError;

/// Backoff settings (the `auth.backoff` config section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Failures allowed before a delay applies; 0 disables backoff.
    pub threshold: u32,
    /// Delay after the threshold is reached; doubles with each further failure.
    pub base_delay: Duration,
    /// Cap on the delay.
    pub max_delay: Duration,
    /// A quiet address is forgotten after this long without a failure.
    pub forget_after: Duration,
    /// Most addresses tracked at once.
    pub max_tracked: usize,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            threshold: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
}

/// Failure counts per client address.
#[derive(Debug)]
pub struct FailureTracker {
    config: BackoffConfig,
    entries: HashMap<IpAddr, Entry>,
}

fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl FailureTracker {
    pub fn new(config: BackoffConfig) -> Self {
        FailureTracker {
            config,
            entries: HashMap::new(),
        }
    }

    fn delay_for(&self, failures: u32) -> Duration {
        if self.config.threshold == 0 || failures < self.config.threshold {
            return Duration::ZERO;
        }
        let doublings = (failures - self.config.threshold).min(31);
        self.config
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.config.max_delay)
    }

    fn live_entry(&self, key: IpAddr, now: Instant) -> Option<Entry> {
        let entry = *self.entries.get(&key)?;
        let idle = now.saturating_duration_since(entry.last_failure);
        (idle < self.config.forget_after).then_some(entry)
    }

    /// `Ok` when a login from `addr` may proceed now, else how long it must wait.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), AuthError> {
        let Some(entry) = self.live_entry(bucket(addr), now) else {
            return Ok(());
        };
        let until = entry.last_failure + self.delay_for(entry.failures);
        let wait = until.saturating_duration_since(now);
        if wait.is_zero() {
            Ok(())
        } else {
            let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            Err(AuthError::BackedOff { retry_after_ms })
        }
    }

    /// Counts a failed login from `addr` at `now`.
    pub fn record_failure(&mut self, addr: IpAddr, now: Instant) {
        if self.config.threshold == 0 {
            return;
        }
        let key = bucket(addr);
        let failures = self.live_entry(key, now).map_or(0, |e| e.failures);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.config.max_tracked {
            self.prune(now);
            if self.entries.len() >= self.config.max_tracked {
                let stalest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure)
                    .map(|(k, _)| *k);
                if let Some(stalest) = stalest {
                    self.entries.remove(&stalest);
                }
            }
        }
        if self.config.max_tracked == 0 {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                failures: failures.saturating_add(1),
                last_failure: now,
            },
        );
    }

    /// A successful login clears the address's record.
    pub fn record_success(&mut self, addr: IpAddr) {
        self.entries.remove(&bucket(addr));
    }

    /// Drops addresses that have been quiet for `forget_after`.
    pub fn prune(&mut self, now: Instant) {
        let forget = self.config.forget_after;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_failure) < forget);
    }

    /// How many addresses are tracked.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}
