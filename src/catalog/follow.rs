//! Following lifecycle cut-overs at once: `pgcloak encrypt`, `decrypt` and `reencrypt`
//! replace a column (and may move a deterministic pin) in one short transaction, then
//! NOTIFY [`CHANNEL`] with the database's name. Without this, running proxies would
//! learn the new schema only at their next refresh (`catalog.refresh_secs`), and lookups
//! by the converted column would fail until then.
//!
//! One long-lived catalog connection LISTENs, on `catalog.maintenance_database`
//! (`postgres` by default) and never on an application database, where an open
//! connection would make `DROP DATABASE` wait and fail (55006). The lifecycle commands
//! therefore NOTIFY the maintenance database too, after their cut-over commits (and after
//! `reencrypt` wrote its new pin into the keyring file).
//!
//! On each notification the named database's snapshot is forgotten and the caller's hook
//! runs (the server re-reads policy and keyring, which picks up a moved pin). When the
//! connection is lost, every snapshot is forgotten (a NOTIFY may have been missed) and it
//! reconnects with a backoff. It must never hold a connection to an application database,
//! and it reads no data.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::refresh::CatalogCache;

/// The channel a cut-over NOTIFYs (the same name as `lifecycle::plan::CATALOG_CHANNEL`).
pub const CHANNEL: &str = "pgcloak_catalog";

/// Called with the database a cut-over happened in, after its snapshot was forgotten.
pub type CutoverHook = Arc<dyn Fn(&str) + Send + Sync>;

const LOG: &str = "pgcloak::catalog";
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the follower looks again whether the policy protects anything (a policy
/// with `tables: {}` needs no catalog login, so the follower waits without one).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Runs until `stop` fires: LISTEN on the maintenance database, invalidate on NOTIFY.
pub async fn follow(cache: Arc<CatalogCache>, hook: CutoverHook, stop: CancellationToken) {
    let mut retry = RETRY_FIRST;
    let mut warned = false;
    loop {
        if !cache.protects_anything() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(IDLE_CHECK) => continue,
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        let listening = async {
            let conn = cache.connect_follower(tx).await?;
            conn.client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .map_err(|e| conn.query_err("LISTEN for cut-overs", &e))?;
            Ok::<_, super::CatalogError>(conn)
        };
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = listening => c,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    warn!(target: LOG, database = %cache.config().maintenance_database, error = %e,
                        "cannot LISTEN for cut-overs: running pgcloak follows `pgcloak encrypt`/`decrypt`/`reencrypt` only at its next catalog refresh (catalog.refresh_secs) or on SIGHUP; check catalog.maintenance_database");
                    warned = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        if warned {
            info!(target: LOG, database = %cache.config().maintenance_database, "listening for cut-overs again");
        }
        warned = false;
        retry = RETRY_FIRST;
        // Whatever happened while nobody listened is unknown: re-read everything.
        cache.invalidate_all();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                payload = rx.recv() => match payload {
                    Some(database) => {
                        info!(target: LOG, database = %database, "a cut-over happened: re-reading the schema");
                        cache.invalidate(&database);
                        hook(&database);
                    }
                    None => break,
                },
                // The connection's task ends (and drops the sender) when it is lost;
                // checked also on a timer in case it lingers half-open.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if conn.is_closed() {
                        break;
                    }
                }
            }
        }
        drop(conn);
        cache.invalidate_all();
    }
}
