//! Prometheus metrics: the recorder, the metric names, and small typed helpers so
//! that call sites in the data path stay one line.
//!
//! Labels are drawn only from bounded sets: statement kinds, error labels, policy
//! column names and views. Nothing a client sends becomes a label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_ACTIVE: &str = "pgcloak_connections_active";
pub const CONNECTIONS_TOTAL: &str = "pgcloak_connections_total";
pub const CONNECTION_ERRORS: &str = "pgcloak_connection_errors_total";
pub const STATEMENTS: &str = "pgcloak_statements_total";
pub const REJECTIONS: &str = "pgcloak_rejections_total";
pub const VALUES_ENCRYPTED: &str = "pgcloak_values_encrypted_total";
pub const VALUES_DECRYPTED: &str = "pgcloak_values_out_total";
pub const CACHE_HITS: &str = "pgcloak_analysis_cache_hits_total";
pub const CACHE_MISSES: &str = "pgcloak_analysis_cache_misses_total";
pub const PROXY_SECONDS: &str = "pgcloak_proxy_seconds";
pub const UPSTREAM_SECONDS: &str = "pgcloak_upstream_seconds";
pub const POLICY_GENERATION: &str = "pgcloak_policy_generation";
pub const RELOADS: &str = "pgcloak_reloads_total";
pub const LAST_RELOAD_OK: &str = "pgcloak_last_reload_success";
pub const KEY_COLUMNS: &str = "pgcloak_key_columns";
pub const READY: &str = "pgcloak_ready";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Cache counters of retired policy generations (each generation has its own cache).
static RETIRED_HITS: AtomicU64 = AtomicU64::new(0);
static RETIRED_MISSES: AtomicU64 = AtomicU64::new(0);

/// Latency buckets in seconds: 50 µs .. 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Handles of the metrics recorded every statement cycle, registered once (after the
/// recorder is installed) instead of looked up by name and labels at every use.
struct Hot {
    proxy: metrics::Histogram,
    upstream: metrics::Histogram,
    passthrough: metrics::Counter,
}

fn hot() -> Option<&'static Hot> {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HANDLE.get()?;
    Some(HOT.get_or_init(|| Hot {
        proxy: histogram!(PROXY_SECONDS),
        upstream: histogram!(UPSTREAM_SECONDS),
        passthrough: counter!(STATEMENTS, "kind" => "unanalysed", "outcome" => "passthrough"),
    }))
}

/// Installs the process-wide recorder once; later calls return the same handle.
/// None if another recorder was installed first (then metrics are not served).
pub fn install() -> Option<&'static PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Some(h);
    }
    let builder = PrometheusBuilder::new();
    let builder = match builder.set_buckets(BUCKETS) {
        Ok(b) => b,
        Err(_) => PrometheusBuilder::new(),
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return HANDLE.get();
    }
    let _ = HANDLE.set(handle);
    let installed = HANDLE.get();
    if let Some(h) = installed {
        spawn_upkeep(h);
    }
    installed
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample in a buffer until an upkeep folds it into
/// the buckets; without one, the buffers grow with every statement until /metrics is
/// scraped (a soak with no scraper grew ~25 bytes per transaction). One small thread,
/// off the async path, does it on a timer as `PrometheusBuilder::install` would.
fn spawn_upkeep(handle: &'static PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("pgcloak-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "pgcloak::metrics", error = %e, "cannot start the metrics upkeep thread: histogram samples are folded only when /metrics is scraped");
    }
}

/// The Prometheus text exposition of every metric, with the cache counters
/// brought up to date from `current_cache` (hits, misses of the live generation).
pub fn render(current_cache: Option<(u64, u64)>) -> String {
    let Some(h) = HANDLE.get() else {
        return String::new();
    };
    if let Some((hits, misses)) = current_cache {
        counter!(CACHE_HITS).absolute(RETIRED_HITS.load(Ordering::Relaxed) + hits);
        counter!(CACHE_MISSES).absolute(RETIRED_MISSES.load(Ordering::Relaxed) + misses);
    }
    h.run_upkeep();
    h.render()
}

/// A policy generation was replaced: keep its cache counters in the totals.
pub fn cache_retired(hits: u64, misses: u64) {
    RETIRED_HITS.fetch_add(hits, Ordering::Relaxed);
    RETIRED_MISSES.fetch_add(misses, Ordering::Relaxed);
}

pub fn connection_opened() {
    counter!(CONNECTIONS_TOTAL).increment(1);
    gauge!(CONNECTIONS_ACTIVE).increment(1.0);
}

pub fn connection_closed() {
    gauge!(CONNECTIONS_ACTIVE).decrement(1.0);
}

/// A session ended with an error; `cause` is `SessionError::label()`.
pub fn connection_error(cause: &'static str) {
    counter!(CONNECTION_ERRORS, "cause" => cause).increment(1);
}

pub fn statement(kind: &'static str, outcome: &'static str) {
    statements(kind, outcome, 1);
}

/// `n` statements of one kind and outcome (recorded in one step per cycle).
pub fn statements(kind: &'static str, outcome: &'static str, n: u64) {
    if let Some(h) = hot().filter(|_| (kind, outcome) == ("unanalysed", "passthrough")) {
        h.passthrough.increment(n);
        return;
    }
    counter!(STATEMENTS, "kind" => kind, "outcome" => outcome).increment(n);
}

pub fn rejection(reason: &'static str) {
    counter!(REJECTIONS, "reason" => reason).increment(1);
}

pub fn value_encrypted(column: String, n: u64) {
    counter!(VALUES_ENCRYPTED, "column" => column).increment(n);
}

/// Protected values sent to a client, by the view they got.
pub fn value_out(column: String, view: &'static str, n: u64) {
    counter!(VALUES_DECRYPTED, "column" => column, "view" => view).increment(n);
}

pub fn latency(proxy_secs: f64, upstream_secs: f64) {
    if let Some(h) = hot() {
        h.proxy.record(proxy_secs);
        h.upstream.record(upstream_secs);
        return;
    }
    histogram!(PROXY_SECONDS).record(proxy_secs);
    histogram!(UPSTREAM_SECONDS).record(upstream_secs);
}

/// The generation in force and, per key id, how many columns write with it.
pub fn policy_in_force(generation: u64, key_columns: &[(u32, usize)]) {
    gauge!(POLICY_GENERATION).set(generation as f64);
    for (key_id, n) in key_columns {
        gauge!(KEY_COLUMNS, "key_id" => key_id.to_string()).set(*n as f64);
    }
}

/// Registers the reload series at start (0 reloads, last load successful), so that
/// dashboards and alerts see them before the first reload.
pub fn reloads_registered() {
    counter!(RELOADS, "result" => "ok").increment(0);
    counter!(RELOADS, "result" => "invalid").increment(0);
    gauge!(LAST_RELOAD_OK).set(1.0);
}

pub fn reload_result(ok: bool) {
    counter!(RELOADS, "result" => if ok { "ok" } else { "invalid" }).increment(1);
    gauge!(LAST_RELOAD_OK).set(if ok { 1.0 } else { 0.0 });
}

pub fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}
