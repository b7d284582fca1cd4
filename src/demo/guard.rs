//! The demo's second line of defence: after the schema is created, and again after the
//! data is loaded (statistics), it runs what `pgcloak check --database` prints, as the
//! superuser, so the demo database is exactly as tight as the policy asks.

use std::path::Path;

use crate::catalog::{CatalogConfig, CatalogConn};
use crate::config::{UpstreamConfig, UpstreamTlsMode};
use crate::policy::Policy;

use super::{step, Cluster, DemoError};

/// The DDL `pgcloak check --database` would print for `database`, read as the superuser
/// (who can see stored statistics). Err when a gap has no DDL (the demo must be clean).
async fn guard_ddl(
    socket_dir: &Path,
    port: u16,
    database: &str,
    policy: &Policy,
) -> Result<Vec<String>, DemoError> {
    let upstream = UpstreamConfig {
        host: socket_dir.display().to_string(),
        port,
        tls: UpstreamTlsMode::Disable,
        ca_file: None,
        server_name: None,
        connect_timeout_ms: 5000,
    };
    let catalog = CatalogConfig {
        user: "postgres".into(),
        ..CatalogConfig::default()
    };
    let fail = step("database-side guard");
    let conn = CatalogConn::connect(&upstream, &catalog, None, database)
        .await
        .map_err(|e| step("database-side guard")(e.to_string()))?;
    let snapshot = conn
        .load_snapshot(policy)
        .await
        .map_err(|e| step("database-side guard")(e.to_string()))?;
    let mut ddl: Vec<String> = conn
        .check_constraints(policy)
        .await
        .map_err(|e| step("database-side guard")(e.to_string()))?
        .iter()
        .map(|m| m.ddl())
        .collect();
    let report = conn
        .guard_check(policy, &snapshot)
        .await
        .map_err(|e| step("database-side guard")(e.to_string()))?;
    for f in report.findings {
        if f.ddl.is_empty() {
            return Err(fail(f.what));
        }
        ddl.extend(f.ddl);
    }
    Ok(ddl)
}

/// Applies the guard's DDL to `database`; returns how many statements ran.
pub(super) async fn apply(
    cluster: &Cluster,
    database: &str,
    policy: &Policy,
) -> Result<usize, DemoError> {
    let ddl = guard_ddl(&cluster.socket_dir, cluster.port, database, policy).await?;
    if !ddl.is_empty() {
        cluster.psql(database, &ddl.join("\n"))?;
    }
    Ok(ddl.len())
}

/// Applies the guard, then checks that nothing is left (the demo is as tight as the
/// policy asks: `pgcloak check --database` exits 0 on it).
pub(super) async fn apply_and_verify(
    cluster: &Cluster,
    database: &str,
    policy: &Policy,
) -> Result<(), DemoError> {
    apply(cluster, database, policy).await?;
    let left = guard_ddl(&cluster.socket_dir, cluster.port, database, policy).await?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(step("database-side guard")(format!(
            "still looser than the policy after applying its DDL: {}",
            left.join(" ")
        )))
    }
}
