//! The "policy + keyring + catalog role + proxy" fixture in one call, and an `eventually`
//! helper for conditions that become true after a while (a log line, a metric, a reload).
//!
//! ```ignore
//! let p = ProtectedProxy::builder("dp_views")
//!     .roles(&["app", "agent"])
//!     .setup("CREATE TABLE customers (id int PRIMARY KEY, phone bytea);
//!             GRANT ALL ON customers TO {p}_app, {p}_agent;")
//!     .policy("version: 1\ntables:\n  public.customers:\n    phone: { type: text, access: { {p}_app: plaintext } }\n")
//!     .start()
//!     .await;
//! let app = p.client("app").await;
//! ```
//!
//! `{p}` in the setup SQL and in the policy stands for the fixture's prefix (its name), so
//! role names stay unique per test in the binary's shared cluster. Every role gets the
//! password [`ROLE_PASSWORD`]. pgcloak reads the catalog as [`CATALOG_ROLE`], an ordinary
//! login role without any privilege (as the shipped config recommends), not as a superuser.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::{Client, Config};

use super::cluster::{cluster, fresh_db};
use super::proxy::Proxy;
use super::yaml;

/// The password of every role a [`ProtectedProxy`] creates.
pub const ROLE_PASSWORD: &str = "Protected-Role-pw1";
/// pgcloak's catalog login in the fixture: LOGIN, no other privilege.
pub const CATALOG_ROLE: &str = "pgcloak_catalog";
const CATALOG_PASSWORD: &str = "Catalog-Secret-pw1";

/// What [`ProtectedProxy::start`] needs; built with [`ProtectedProxy::builder`].
#[derive(Debug, Clone)]
pub struct ProtectedBuilder {
    name: String,
    roles: Vec<String>,
    setup: String,
    policy: String,
    overrides: Value,
}

impl ProtectedBuilder {
    /// Login roles `{name}_{role}` to create (password [`ROLE_PASSWORD`]).
    pub fn roles(mut self, roles: &[&str]) -> Self {
        self.roles.extend(roles.iter().map(|r| r.to_string()));
        self
    }

    /// SQL run as the superuser in the fresh database before the proxy starts (`{p}` = prefix).
    pub fn setup(mut self, sql: &str) -> Self {
        self.setup.push_str(sql);
        self.setup.push('\n');
        self
    }

    /// The policy YAML (`{p}` = prefix).
    pub fn policy(mut self, yaml: &str) -> Self {
        self.policy = yaml.to_string();
        self
    }

    /// Config overrides deep-merged last (see [`Proxy::start`]).
    pub fn overrides(mut self, overrides: Value) -> Self {
        yaml::merge(&mut self.overrides, &overrides);
        self
    }

    /// Creates the database, roles, tables, policy file and keyring, and starts pgcloak.
    pub async fn start(self) -> ProtectedProxy {
        let c = cluster();
        let prefix = self.name.clone();
        let db = fresh_db(&self.name).await;
        c.create_role(CATALOG_ROLE, Some(CATALOG_PASSWORD)).await;
        for role in &self.roles {
            c.create_role(&format!("{prefix}_{role}"), Some(ROLE_PASSWORD))
                .await;
        }
        if !self.setup.trim().is_empty() {
            let admin = c.admin(&db).await;
            admin
                .batch_execute(&self.setup.replace("{p}", &prefix))
                .await
                .unwrap_or_else(|e| panic!("fixture setup SQL failed: {e:?}"));
        }
        let dir = tempfile::tempdir().unwrap();
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(&policy_path, self.policy.replace("{p}", &prefix)).unwrap();
        let keys_path = dir.path().join("master.keys");
        let keys = pgcloak::crypto::keygen(None).unwrap();
        std::fs::write(&keys_path, keys.as_bytes()).unwrap();
        std::fs::set_permissions(&keys_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut overrides = json!({
            "policy": policy_path,
            "keys": { "file": keys_path },
            "catalog": {
                "user": CATALOG_ROLE,
                "password_env": "PGCLOAK_CATALOG_PASSWORD",
                "databases": [db],
            },
        });
        yaml::merge(&mut overrides, &self.overrides);
        let proxy =
            Proxy::start_with_env(overrides, &[("PGCLOAK_CATALOG_PASSWORD", CATALOG_PASSWORD)]);
        ProtectedProxy {
            db,
            prefix,
            proxy,
            policy_path,
            keys_path,
            _dir: dir,
        }
    }
}

/// A fresh database with roles and tables, a policy, a keyring and pgcloak in front.
#[derive(Debug)]
pub struct ProtectedProxy {
    pub db: String,
    pub prefix: String,
    pub proxy: Proxy,
    pub policy_path: PathBuf,
    pub keys_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProtectedProxy {
    /// A builder for a fixture named `name` (also its database name and role prefix).
    pub fn builder(name: &str) -> ProtectedBuilder {
        ProtectedBuilder {
            name: name.to_string(),
            roles: Vec::new(),
            setup: String::new(),
            policy: String::new(),
            overrides: json!({}),
        }
    }

    /// The one-call form: `policy_yaml` and `setup_sql` may use `{p}` for the prefix.
    pub async fn start(
        name: &str,
        roles: &[&str],
        setup_sql: &str,
        policy_yaml: &str,
    ) -> ProtectedProxy {
        Self::builder(name)
            .roles(roles)
            .setup(setup_sql)
            .policy(policy_yaml)
            .start()
            .await
    }

    /// The full name of a fixture role (`{prefix}_{role}`).
    pub fn role(&self, role: &str) -> String {
        format!("{}_{role}", self.prefix)
    }

    /// A tokio-postgres config for a fixture role through the proxy.
    pub fn config(&self, role: &str) -> Config {
        self.proxy.config(&self.db, &self.role(role), ROLE_PASSWORD)
    }

    /// A fixture role connected through the proxy.
    pub async fn client(&self, role: &str) -> Client {
        super::client::connect(&self.config(role)).await
    }

    /// The superuser connected straight to PostgreSQL (setup and inspection only).
    pub async fn admin(&self) -> Client {
        cluster().admin(&self.db).await
    }

    /// Rewrites the policy file (`{p}` = prefix); send SIGHUP to apply it.
    pub fn write_policy(&self, yaml: &str) {
        std::fs::write(&self.policy_path, yaml.replace("{p}", &self.prefix)).unwrap();
    }

    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }
}

/// Polls `f` until it returns `Some`, every 20 ms, for at most `timeout`; panics (at the
/// caller) naming `what` if it never does.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("not within {timeout:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`eventually`] for an async condition (it does not block the runtime while waiting).
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("not within {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
