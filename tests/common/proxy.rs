//! Spawns `pgcloak serve` as a child process on a free port with a generated config file,
//! waits until it accepts TCP connections, and kills it on drop. Its stderr (the tracing
//! log) goes to a file whose path and content tests can read.
//!
//! With `PGCLOAK_TEST_TARGET=direct` no proxy is spawned: the handle points at PostgreSQL.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::{Client, Config};

use super::cluster::{cluster, free_port, APP_PASSWORD, APP_USER};
use super::yaml;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// A running pgcloak (or, in direct mode, a stand-in pointing at PostgreSQL).
#[derive(Debug)]
pub struct Proxy {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log_path: PathBuf,
    config_path: PathBuf,
}

/// True when `PGCLOAK_TEST_TARGET=direct`: tests talk to PostgreSQL without the proxy.
pub fn is_direct() -> bool {
    std::env::var("PGCLOAK_TEST_TARGET").is_ok_and(|v| v == "direct")
}

impl Proxy {
    /// The harness's default config: relay auth, no TLS on either leg, upstream = the cluster.
    pub fn default_config(port: u16) -> Value {
        let c = cluster();
        json!({
            "listen": format!("127.0.0.1:{port}"),
            "instance_id": 1,
            "upstream": { "host": "127.0.0.1", "port": c.port, "tls": "disable" },
            "tls": { "mode": "disabled" },
            "auth": { "mode": "relay" },
            "trust_upstream_identity": false,
            "max_connections": 1000,
            "shutdown_timeout_secs": 5,
            "log": { "format": "text", "level": "info" },
        })
    }

    /// Override for TLS on the client leg with the harness's proxy certificate.
    pub fn client_tls(mode: &str) -> Value {
        let tls = &cluster().tls;
        json!({ "tls": { "mode": mode, "cert": tls.proxy_cert, "key": tls.proxy_key } })
    }

    /// Override for TLS on the upstream leg; verify-full checks against the harness CA.
    pub fn upstream_tls(mode: &str) -> Value {
        json!({ "upstream": { "tls": mode, "ca_file": cluster().tls.ca_cert, "server_name": "localhost" } })
    }

    /// Merges several overrides (later ones win).
    pub fn overrides(parts: &[Value]) -> Value {
        let mut out = json!({});
        for part in parts {
            yaml::merge(&mut out, part);
        }
        out
    }

    /// Starts pgcloak with `overrides` deep-merged into [`Proxy::default_config`]. Panics
    /// (with the proxy's log) if it does not become ready.
    pub fn start(overrides: Value) -> Proxy {
        Self::start_with_env(overrides, &[])
    }

    /// Like [`Proxy::start`] with extra environment variables for the child.
    pub fn start_with_env(overrides: Value, env: &[(&str, &str)]) -> Proxy {
        Self::try_start_with_env(overrides, env)
            .unwrap_or_else(|log| panic!("pgcloak did not start:\n{log}"))
    }

    /// Starts pgcloak; `Err(log)` if it exits or is not accepting within 10 s.
    pub fn try_start_with_env(overrides: Value, env: &[(&str, &str)]) -> Result<Proxy, String> {
        let c = cluster();
        if is_direct() {
            return Ok(Proxy {
                child: None,
                port: c.port,
                dir: c.root.clone(),
                log_path: c.log_path.clone(),
                config_path: PathBuf::new(),
            });
        }
        let mut last_log = String::new();
        // A free port can be taken between our probe and the child's bind: retry a little.
        for _ in 0..3 {
            let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
            let dir = c.root.join(format!("proxy-{id}"));
            fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            let mut config = Self::default_config(port);
            yaml::merge(&mut config, &overrides);
            let config_path = dir.join("pgcloak.yaml");
            fs::write(&config_path, yaml::to_yaml(&config)).unwrap();
            let log_path = dir.join("pgcloak.log");
            let child = spawn_serve(&config_path, &log_path, env);
            let mut proxy = Proxy {
                child: Some(child),
                port,
                dir,
                log_path,
                config_path,
            };
            match proxy.wait_ready() {
                Ok(()) => return Ok(proxy),
                Err(log) => last_log = log,
            }
        }
        Err(last_log)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("pgcloak exited with {status}:\n{}", self.log()));
                }
            }
            let addr = ([127, 0, 0, 1], self.port).into();
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "pgcloak not accepting on {} after 10 s:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// OS pid of the proxy process (None in direct mode).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The proxy's stderr log file (the cluster log in direct mode).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// A directory private to this proxy for extra files a test needs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A tokio-postgres config for `user` on `db` through the proxy (no TLS).
    pub fn config(&self, db: &str, user: &str, password: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db);
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        config
    }

    /// The config of [`APP_USER`] on `db`.
    pub fn app_config(&self, db: &str) -> Config {
        self.config(db, APP_USER, APP_PASSWORD)
    }

    /// [`APP_USER`] connected to `db` through the proxy.
    pub async fn connect(&self, db: &str) -> Client {
        super::client::connect(&self.app_config(db)).await
    }

    /// A libpq conninfo string for psql/pgbench (password goes in PGPASSWORD).
    pub fn conninfo(&self, db: &str, user: &str) -> String {
        format!("host=127.0.0.1 port={} dbname={db} user={user}", self.port)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// CPU time (user + system) the proxy has used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let after_comm = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of /proc/PID/stat; index 0 here is field 3.
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }
}

/// Runs `pgcloak check --config FILE` with `overrides` merged into the default config.
pub fn check(overrides: Value) -> std::process::Output {
    let c = cluster();
    let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
    let dir = c.root.join(format!("check-{id}"));
    fs::create_dir_all(&dir).unwrap();
    let mut config = Proxy::default_config(free_port());
    yaml::merge(&mut config, &overrides);
    let path = dir.join("pgcloak.yaml");
    fs::write(&path, yaml::to_yaml(&config)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgcloak"));
    cmd.arg("check").arg("--config").arg(&path);
    clear_pgcloak_env(&mut cmd);
    cmd.output().unwrap()
}

fn clear_pgcloak_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PGCLOAK_") {
            cmd.env_remove(key);
        }
    }
}

fn spawn_serve(config_path: &Path, log_path: &Path, env: &[(&str, &str)]) -> Child {
    use std::os::unix::process::CommandExt;
    let log = fs::File::create(log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgcloak"));
    cmd.arg("serve").arg("--config").arg(config_path);
    clear_pgcloak_env(&mut cmd);
    cmd.env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: prctl is async-signal-safe. If the test process dies without unwinding
    // (SIGKILL), the kernel kills the proxy too instead of leaving it behind.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("cannot spawn the pgcloak binary")
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
