//! Per-address failed-login backoff, with time passed in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use pgcloak::auth::{AuthError, BackoffConfig, FailureTracker};

fn config() -> BackoffConfig {
    BackoffConfig {
        threshold: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(8),
        forget_after: Duration::from_secs(60),
        max_tracked: 4,
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn retry_ms(result: Result<(), AuthError>) -> u64 {
    match result {
        Err(AuthError::BackedOff { retry_after_ms }) => retry_after_ms,
        other => panic!("expected backoff, got {other:?}"),
    }
}

#[test]
fn backoff_starts_at_threshold_and_doubles_up_to_the_cap() {
    let mut t = FailureTracker::new(config());
    let t0 = Instant::now();
    let a = v4(1);
    t.record_failure(a, t0);
    t.record_failure(a, t0);
    assert!(t.check(a, t0).is_ok(), "below the threshold");
    t.record_failure(a, t0);
    assert_eq!(retry_ms(t.check(a, t0)), 1000);
    assert!(t.check(a, t0 + Duration::from_secs(1)).is_ok());
    t.record_failure(a, t0);
    assert_eq!(retry_ms(t.check(a, t0)), 2000);
    for _ in 0..10 {
        t.record_failure(a, t0);
    }
    assert_eq!(retry_ms(t.check(a, t0)), 8000, "capped at max_delay");
    // Other addresses are unaffected.
    assert!(t.check(v4(2), t0).is_ok());
}

#[test]
fn success_clears_and_quiet_addresses_are_forgotten() {
    let mut t = FailureTracker::new(config());
    let t0 = Instant::now();
    for _ in 0..5 {
        t.record_failure(v4(1), t0);
        t.record_failure(v4(2), t0);
    }
    t.record_success(v4(1));
    assert!(t.check(v4(1), t0).is_ok());
    assert!(t.check(v4(2), t0).is_err());
    let later = t0 + Duration::from_secs(61);
    assert!(t.check(v4(2), later).is_ok());
    // After forgetting, one failure does not block.
    t.record_failure(v4(2), later);
    assert!(t.check(v4(2), later).is_ok());
    t.prune(later + Duration::from_secs(61));
    assert_eq!(t.tracked(), 0);
}

#[test]
fn ipv6_is_grouped_by_64_and_mapped_ipv4_counts_as_ipv4() {
    let mut t = FailureTracker::new(config());
    let t0 = Instant::now();
    for i in 0..3u16 {
        t.record_failure(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i)),
            t0,
        );
    }
    assert!(t
        .check(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9)),
            t0
        )
        .is_err());
    assert!(t
        .check(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 0)),
            t0
        )
        .is_ok());
    for _ in 0..3 {
        t.record_failure(v4(7), t0);
    }
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
    assert!(t.check(mapped, t0).is_err());
}

#[test]
fn tracking_is_bounded_by_max_tracked() {
    let mut t = FailureTracker::new(config());
    let t0 = Instant::now();
    for i in 0..50u8 {
        t.record_failure(v4(i), t0 + Duration::from_millis(u64::from(i)));
    }
    assert_eq!(t.tracked(), 4);
}

#[test]
fn threshold_zero_disables_backoff() {
    let mut t = FailureTracker::new(BackoffConfig {
        threshold: 0,
        ..config()
    });
    let t0 = Instant::now();
    for _ in 0..100 {
        t.record_failure(v4(1), t0);
    }
    assert!(t.check(v4(1), t0).is_ok());
    assert_eq!(t.tracked(), 0);
}

#[test]
fn backoff_error_maps_to_too_many_connections() {
    let err = AuthError::BackedOff { retry_after_ms: 5 };
    assert_eq!(err.sqlstate(), "53300");
}
