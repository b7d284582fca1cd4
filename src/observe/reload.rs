//! Live reload of the policy and keyring: on SIGHUP, or when either file's
//! modification time or size changes (polled every `reload_poll_ms`, with a short
//! debounce). The new version is read, validated and swapped in atomically; an
//! invalid one leaves the current generation in force and is reported with its
//! file:line on `pgcloak::policy`, in the audit trail and in the metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use arc_swap::ArcSwap;

use super::{audit, metrics};
use crate::catalog::CatalogCache;
use crate::config::Config;
use crate::policy::ColumnRef;
use crate::protection::Protection;

const LOG: &str = "pgcloak::policy";
/// Time for a writer to finish a file after its first change is seen.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Publishes the generation in force and the key ids its columns write with.
pub fn publish(prot: &Protection) {
    let mut keys: Vec<(u32, usize)> = Vec::new();
    for i in 0..prot.policy.columns().len() {
        if let Ok(id) = prot.suite.write_key_id(ColumnRef(i as u32)) {
            match keys.iter_mut().find(|(k, _)| *k == id) {
                Some((_, n)) => *n += 1,
                None => keys.push((id, 1)),
            }
        }
    }
    metrics::policy_in_force(prot.generation(), &keys);
}

/// What a reload swaps: the protection generation in force and the catalog that resolves
/// its columns, with the config they were loaded from.
pub struct Reloader {
    pub config: Config,
    /// None without a policy: nothing to reload.
    pub protection: Option<Arc<ArcSwap<Protection>>>,
    pub catalog: Option<Arc<CatalogCache>>,
}

/// Re-reads and validates the policy and keyring; swaps them in when valid.
/// Returns the generation in force afterwards, or the validation error.
pub fn reload_now(reloader: &Reloader, trigger: &str) -> Result<u64, String> {
    let (Some(current), Some(sources)) =
        (&reloader.protection, reloader.config.protection_sources())
    else {
        return Err("no policy configured".into());
    };
    check_config_file(&reloader.config, trigger);
    let old = current.load_full();
    let old_gen = old.generation();
    match sources.load(old_gen + 1) {
        Ok(loaded) => {
            let policy = Arc::new(loaded.policy);
            let prot = Protection::new(
                policy.clone(),
                loaded.suite,
                reloader.config.limits.in_list_cap,
            );
            let new_gen = prot.generation();
            let (hits, misses) = old.cache.stats();
            metrics::cache_retired(hits, misses);
            publish(&prot);
            current.store(Arc::new(prot));
            if let Some(catalog) = &reloader.catalog {
                catalog.reload(policy);
            }
            metrics::reload_result(true);
            audit::reload(trigger, old_gen, Some(new_gen), None);
            info!(target: LOG, trigger, old_generation = old_gen, new_generation = new_gen, "policy and keyring reloaded");
            Ok(new_gen)
        }
        Err(e) => {
            let msg = e.to_string();
            metrics::reload_result(false);
            audit::reload(trigger, old_gen, None, Some(&msg));
            error!(target: LOG, trigger, generation = old_gen, error = %msg, "invalid policy or keyring: keeping the current generation");
            Err(msg)
        }
    }
}

/// A reload applies the policy and keyring files only. The proxy config is re-read
/// and validated so that an operator who edited it learns, in the log, that a broken
/// file or a change in it was not applied.
fn check_config_file(running: &Config, trigger: &str) {
    let Some(path) = &running.source else {
        return;
    };
    match Config::load(path) {
        Err(e) => {
            error!(target: LOG, trigger, file = %path.display(), error = %e, "the proxy config is invalid: nothing in it was applied (the running config stays in force; a reload applies only the policy and keyring files)");
        }
        Ok(new) => {
            if format!("{new:?}") != format!("{running:?}") {
                warn!(target: LOG, trigger, file = %path.display(), "the proxy config changed, but a reload applies only the policy and keyring files: restart pgcloak to apply the rest");
            }
        }
    }
}

/// A watched file's modification time and size (None: unreadable).
pub type Stamp = Option<(SystemTime, u64)>;

/// The stamps of `files`, in order.
pub fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(stamp).collect()
}

fn stamp(path: &PathBuf) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches SIGHUP (`hup`, registered by the caller before it started listening) and the
/// files until `shutdown` fires. `loaded` are the files' stamps taken before the
/// generation in force read them ([`stamps`]): a change made after that, even before this
/// task first runs, is reloaded. Without it the files are stamped when watching starts.
pub async fn watch(
    reloader: Reloader,
    loaded: Option<Vec<Stamp>>,
    shutdown: CancellationToken,
    #[cfg(unix)] hup: Option<tokio::signal::unix::Signal>,
) {
    #[cfg(unix)]
    let mut hup = hup;
    let Some(sources) = reloader.config.protection_sources() else {
        // No policy: nothing to reload, but SIGHUP must not kill the process.
        #[cfg(unix)]
        if let Some(mut hup) = hup.take() {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hup.recv() => info!(target: LOG, "SIGHUP: no policy configured, nothing to reload"),
                }
            }
        }
        return;
    };
    if let Some(p) = &reloader.protection {
        publish(&p.load());
    }
    let files = sources.files();
    let mut stamps: Vec<Stamp> = loaded
        .filter(|l| l.len() == files.len())
        .unwrap_or_else(|| files.iter().map(stamp).collect());
    let poll = Duration::from_millis(reloader.config.reload_poll_ms.max(50));
    let polling = reloader.config.reload_poll_ms > 0;
    loop {
        #[cfg(unix)]
        let hup_recv = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_recv = std::future::pending::<()>();
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup_recv => "sighup",
            _ = tokio::time::sleep(poll), if polling => {
                let now: Vec<Stamp> = files.iter().map(stamp).collect();
                if now == stamps {
                    continue;
                }
                tokio::time::sleep(DEBOUNCE).await;
                "file_change"
            }
        };
        stamps = files.iter().map(stamp).collect();
        let _ = reload_now(&reloader, trigger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str =
        "version: 1\nactive: 1\ndeterministic: 1\nkeys:\n  1: \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";

    fn policy(view: &str) -> String {
        format!("version: 1\ntables:\n  public.people:\n    phone: {{ type: text, access: {{ app: {view} }} }}\n")
    }

    /// A reloader over a policy and keyring in `dir`, generation 1 loaded, polling every 50 ms.
    fn reloader(dir: &std::path::Path) -> (Reloader, Arc<ArcSwap<Protection>>, Vec<PathBuf>) {
        std::fs::write(dir.join("policy.yaml"), policy("plaintext")).unwrap();
        let keys = dir.join("master.keys");
        std::fs::write(&keys, KEYS).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let text = format!(
            "upstream: {{ host: 127.0.0.1, port: 5432 }}\ncatalog: {{ user: pgcloak }}\npolicy: {}\nkeys: {{ file: {} }}\nreload_poll_ms: 50\n",
            dir.join("policy.yaml").display(),
            keys.display()
        );
        let config = Config::load_str(&text, "test.yaml", |_| None).unwrap();
        let sources = config.protection_sources().unwrap();
        let loaded = sources.load(1).unwrap();
        let prot = Protection::new(Arc::new(loaded.policy), loaded.suite, 100);
        let current = Arc::new(ArcSwap::from_pointee(prot));
        let files = sources.files();
        let r = Reloader {
            config,
            protection: Some(current.clone()),
            catalog: None,
        };
        (r, current, files)
    }

    async fn generation_after(current: &ArcSwap<Protection>, wait: Duration) -> u64 {
        let deadline = std::time::Instant::now() + wait;
        while current.load().generation() == 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        current.load().generation()
    }

    #[tokio::test]
    async fn a_change_made_before_the_watcher_starts_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (r, current, files) = reloader(dir.path());
        // Stamped before the load, as the server does; the file then changes before the
        // watcher's first poll (a slow start under load).
        let loaded = stamps(&files);
        std::fs::write(&files[0], policy("null")).unwrap();
        let stop = CancellationToken::new();
        #[cfg(unix)]
        let task = tokio::spawn(watch(r, Some(loaded), stop.clone(), None));
        #[cfg(not(unix))]
        let task = tokio::spawn(watch(r, Some(loaded), stop.clone()));
        assert_eq!(generation_after(&current, Duration::from_secs(5)).await, 2);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn without_a_baseline_that_change_would_be_missed() {
        // The race the baseline closes: stamped at watcher start, the earlier change is
        // the baseline itself and never applied.
        let dir = tempfile::tempdir().unwrap();
        let (r, current, _) = reloader(dir.path());
        std::fs::write(dir.path().join("policy.yaml"), policy("null")).unwrap();
        let stop = CancellationToken::new();
        #[cfg(unix)]
        let task = tokio::spawn(watch(r, None, stop.clone(), None));
        #[cfg(not(unix))]
        let task = tokio::spawn(watch(r, None, stop.clone()));
        assert_eq!(
            generation_after(&current, Duration::from_millis(600)).await,
            1
        );
        stop.cancel();
        task.await.unwrap();
    }
}
