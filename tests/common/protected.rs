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
//! login role without any privilege (as the shipped config recommends), not as a superuser;
//! [`ProtectedBuilder::catalog_login`] picks another login where a test is about what that
//! login can see.
//!
//! Tests of `pgcloak check` or of a refused startup stop at [`ProtectedBuilder::prepare`]:
//! the database, policy and keyring exist, and [`Prepared`] runs `check`, tries `serve`, or
//! starts the proxy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::{Client, Config};

use super::cluster::{cluster, free_port, fresh_db, SUPERUSER};
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
    catalog_user: String,
    catalog_password: String,
    startup_check: bool,
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

    /// pgcloak reads the catalog as `user` (created with `password` unless it is the
    /// harness superuser) instead of [`CATALOG_ROLE`].
    pub fn catalog_login(mut self, user: &str, password: &str) -> Self {
        self.catalog_user = user.to_string();
        self.catalog_password = password.to_string();
        self
    }

    /// Leaves the database out of `catalog.databases`, so that startup does not check the
    /// policy against its schema (for a policy that names a column the schema lacks).
    pub fn without_startup_check(mut self) -> Self {
        self.startup_check = false;
        self
    }

    /// Creates the database, roles, tables, policy file and keyring, and starts pgcloak.
    pub async fn start(self) -> ProtectedProxy {
        self.prepare().await.start()
    }

    /// [`Self::start`], or `Err(log)` when pgcloak refuses to start.
    pub async fn try_start(self) -> Result<ProtectedProxy, String> {
        self.prepare().await.try_start()
    }

    /// Creates the database, roles, tables, policy file and keyring; pgcloak is not started.
    pub async fn prepare(self) -> Prepared {
        let c = cluster();
        let prefix = self.name.clone();
        let db = fresh_db(&self.name).await;
        if self.catalog_user != SUPERUSER {
            c.create_role(&self.catalog_user, Some(&self.catalog_password))
                .await;
        }
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
                "user": self.catalog_user,
                "password_env": "PGCLOAK_CATALOG_PASSWORD",
            },
        });
        if self.startup_check {
            overrides["catalog"]["databases"] = json!([db]);
        }
        yaml::merge(&mut overrides, &self.overrides);
        Prepared {
            db,
            prefix,
            policy_path,
            keys_path,
            overrides,
            catalog_password: self.catalog_password,
            dir,
        }
    }
}

/// A fixture's database, roles, policy file and keyring, before pgcloak runs.
#[derive(Debug)]
pub struct Prepared {
    pub db: String,
    pub prefix: String,
    pub policy_path: PathBuf,
    pub keys_path: PathBuf,
    overrides: Value,
    catalog_password: String,
    dir: tempfile::TempDir,
}

impl Prepared {
    /// The directory holding the policy file and the keyring.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a complete pgcloak config (the harness defaults on a free port plus the
    /// fixture's settings) into [`Self::dir`] and returns its path.
    pub fn config_file(&self) -> PathBuf {
        let mut config = Proxy::default_config(free_port());
        yaml::merge(&mut config, &self.overrides);
        let path = self.dir.path().join("pgcloak.yaml");
        std::fs::write(&path, yaml::to_yaml(&config)).unwrap();
        path
    }

    /// Runs `pgcloak check --database` for the fixture's database with the catalog login's
    /// password: (exit code, stdout + stderr).
    pub fn check(&self) -> (i32, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgcloak"))
            .args(["check", "--config"])
            .arg(self.config_file())
            .args(["--database", &self.db])
            .env("PGCLOAK_CATALOG_PASSWORD", &self.catalog_password)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts pgcloak on the fixture; `Err(log)` if it refuses to start. The fixture stays
    /// usable either way (check again, fix the database, start again).
    pub fn try_serve(&self) -> Result<Proxy, String> {
        Proxy::try_start_with_env(
            self.overrides.clone(),
            &[("PGCLOAK_CATALOG_PASSWORD", &self.catalog_password)],
        )
    }

    /// Starts pgcloak on the fixture; panics with its log if it does not start.
    pub fn start(self) -> ProtectedProxy {
        self.try_start()
            .unwrap_or_else(|log| panic!("pgcloak did not start:\n{log}"))
    }

    /// [`Self::start`], or `Err(log)` when pgcloak refuses to start.
    pub fn try_start(self) -> Result<ProtectedProxy, String> {
        let proxy = self.try_serve()?;
        Ok(ProtectedProxy {
            db: self.db,
            prefix: self.prefix,
            proxy,
            policy_path: self.policy_path,
            keys_path: self.keys_path,
            _dir: self.dir,
        })
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
            catalog_user: CATALOG_ROLE.to_string(),
            catalog_password: CATALOG_PASSWORD.to_string(),
            startup_check: true,
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
pub fn eventually<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_with(timeout, f, || what.to_string())
}

/// [`eventually`] whose panic message is built when it fails (to carry a log, say).
#[track_caller]
pub fn eventually_with<T>(
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("not within {timeout:?}: {}", why());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`eventually`] for an async condition (it does not block the runtime while waiting).
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_async_with(timeout, f, || what.to_string()).await
}

/// [`eventually_async`] whose panic message is built when it fails.
pub async fn eventually_async_with<T, F, Fut>(
    timeout: Duration,
    mut f: F,
    why: impl FnOnce() -> String,
) -> T
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
            panic!("not within {timeout:?}: {}", why());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
