//! One throwaway PostgreSQL cluster per test binary, started lazily on first use.
//!
//! It runs from the highest `/usr/lib/postgresql/*/bin`, through `runuser -u postgres` when we
//! are root (initdb refuses root), on a free port with its own unix socket dir, SCRAM password
//! auth over TCP (plus `trust` for the role [`TRUST_USER`]), TLS on, and `log_statement = 'all'`
//! so tests can assert what reached the server. It is stopped and its directory removed at
//! process exit (atexit), whether tests passed or panicked; clusters left behind by a killed
//! run are reaped at the next start.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, Config, NoTls};

use super::tls::{self, TlsFiles};

pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "super-Secret-pw1";
/// An ordinary login role with a SCRAM password; owner of every [`fresh_db`].
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-Secret-pw1";
/// A login role that pg_hba admits by `trust` over TCP (no password exchange at all).
pub const TRUST_USER: &str = "trusty";
/// A login role that pg_hba authenticates with MD5 (its password is stored as an MD5 hash).
pub const MD5_USER: &str = "md5_user";
/// A login role that pg_hba authenticates with a cleartext password.
pub const CLEARTEXT_USER: &str = "cleartext_user";
/// The password of [`MD5_USER`] and [`CLEARTEXT_USER`].
pub const LEGACY_PASSWORD: &str = "legacy-Secret-pw1";

const DIR_PREFIX: &str = "pgcloak-test-";

/// A running throwaway cluster. All paths live under `root`.
#[derive(Debug)]
pub struct Cluster {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    /// The server log (`log_statement = 'all'`): every statement text that reached PostgreSQL.
    pub log_path: PathBuf,
    pub port: u16,
    pub tls: TlsFiles,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster of this test binary, started on first call.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let started = Cluster::start();
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(stop_at_exit);
        }
        started
    })
}

extern "C" fn stop_at_exit() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop_and_remove();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` OS user.
fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out two ints at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root but there is no `postgres` OS user"
    );
    // SAFETY: checked non-null above.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// The bin dir of the highest installed PostgreSQL major version.
pub fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb found")
        .1
}

/// A port nobody listens on right now (best effort: the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A command for a PostgreSQL server binary, run as the postgres user when we are root.
fn pg_command(bin_dir: &Path, name: &str) -> Command {
    let exe = bin_dir.join(name);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(exe);
        cmd
    } else {
        Command::new(exe)
    }
}

/// Stops and deletes clusters whose owning test process no longer exists.
fn reap_stale_clusters(bin_dir: &Path) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = fs::read_to_string(dir.join("owner.pid")) else {
            continue;
        };
        let Ok(owner) = owner.trim().parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let data = dir.join("data");
        if data.join("postmaster.pid").exists() {
            let mut stop = pg_command(bin_dir, "pg_ctl");
            stop.args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(&data);
            let _ = stop.output();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

impl Cluster {
    fn start() -> Cluster {
        let bin_dir = pg_bin_dir();
        reap_stale_clusters(&bin_dir);

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
        fs::create_dir(&root).unwrap();
        // Traversable by the postgres user, which owns only what it must write.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("owner.pid"), std::process::id().to_string()).unwrap();

        let tls = tls::generate(&root.join("tls"));
        fs::set_permissions(root.join("tls"), fs::Permissions::from_mode(0o755)).unwrap();
        for f in [
            &tls.ca_cert,
            &tls.other_ca_cert,
            &tls.pg_cert,
            &tls.proxy_cert,
        ] {
            fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
        }
        // PostgreSQL refuses a key readable by others; pgcloak reads its own key as root.
        fs::set_permissions(&tls.pg_key, fs::Permissions::from_mode(0o600)).unwrap();
        give_to_postgres(&tls.pg_key);
        fs::set_permissions(&tls.proxy_key, fs::Permissions::from_mode(0o600)).unwrap();

        let data_dir = root.join("data");
        let socket_dir = root.join("sock");
        let log_path = root.join("postgres.log");
        let pwfile = root.join("pwfile");
        fs::create_dir(&data_dir).unwrap();
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(&socket_dir).unwrap();
        fs::write(&log_path, "").unwrap();
        fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        for p in [&data_dir, &socket_dir, &log_path, &pwfile] {
            give_to_postgres(p);
        }

        let mut initdb = pg_command(&bin_dir, "initdb");
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                SUPERUSER,
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]);
        run(initdb, "initdb");
        let _ = fs::remove_file(&pwfile);

        let port = free_port();
        // client_connection_check_interval lets a backend notice a closed socket mid-query,
        // so tests can see that pgcloak closes the upstream leg when its client goes away.
        let conf = format!(
            "\n# pgcloak test harness\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 300\nclient_connection_check_interval = 200ms\nshared_buffers = 64MB\n\
             log_statement = 'all'\nlog_line_prefix = '%m [%p] %q%u@%d '\n\
             ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n",
            sock = socket_dir.display(),
            cert = tls.pg_cert.display(),
            key = tls.pg_key.display(),
        );
        append(&data_dir.join("postgresql.conf"), &conf);
        // First match wins: the trust line for TRUST_USER precedes initdb's scram lines.
        let hba_path = data_dir.join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path).unwrap();
        fs::write(
            &hba_path,
            format!(
                "host all {TRUST_USER} 127.0.0.1/32 trust\nhost all {TRUST_USER} ::1/128 trust\n\
                 host all {MD5_USER} 127.0.0.1/32 md5\nhost all {CLEARTEXT_USER} 127.0.0.1/32 password\n{hba}"
            ),
        )
        .unwrap();

        let mut start = pg_command(&bin_dir, "pg_ctl");
        start
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(&data_dir)
            .arg("-l")
            .arg(&log_path);
        let out = start.output().unwrap();
        if !out.status.success() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let _ = fs::remove_dir_all(&root);
            panic!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let cluster = Cluster {
            root,
            bin_dir,
            data_dir,
            socket_dir,
            log_path,
            port,
            tls,
        };
        cluster.psql_admin(
            "postgres",
            &format!(
                "CREATE ROLE {APP_USER} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'; \
                 CREATE ROLE {TRUST_USER} LOGIN; \
                 CREATE ROLE {CLEARTEXT_USER} LOGIN PASSWORD '{LEGACY_PASSWORD}'; \
                 SET password_encryption = 'md5'; \
                 CREATE ROLE {MD5_USER} LOGIN PASSWORD '{LEGACY_PASSWORD}';"
            ),
        );
        cluster
    }

    fn stop_and_remove(&self) {
        let mut stop = pg_command(&self.bin_dir, "pg_ctl");
        stop.args(["stop", "-m", "immediate", "-w", "-s", "-D"])
            .arg(&self.data_dir);
        let _ = stop.output();
        if std::env::var_os("PGCLOAK_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    /// Path of a client binary (psql, pgbench) of the cluster's version.
    pub fn client_bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Runs SQL as the superuser over the unix socket with psql; returns its unaligned output.
    pub fn psql_admin(&self, db: &str, sql: &str) -> String {
        let mut cmd = Command::new(self.client_bin("psql"));
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
        let out = run(cmd, "psql (admin)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Superuser over the unix socket (trust): for setup and inspection, never through pgcloak.
    pub fn admin_config(&self, db: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db);
        config
    }

    /// A TCP connection straight to PostgreSQL, bypassing pgcloak.
    pub fn direct_config(&self, db: &str, user: &str, password: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db);
        config
    }

    /// A superuser client connected straight to PostgreSQL.
    pub async fn admin(&self, db: &str) -> Client {
        let (client, conn) = self.admin_config(db).connect(NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The current end of the server log, to read only what a test caused with [`Cluster::log_since`].
    pub fn log_offset(&self) -> u64 {
        fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0)
    }

    /// What the server logged after `offset` (other tests' lines may be interleaved).
    pub fn log_since(&self, offset: u64) -> String {
        let bytes = fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    /// A fresh directory under the cluster's root (removed at exit) for a test's own files.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = self.root.join(format!("scratch-{name}-{nanos}"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Creates (or resets the password of) a login role.
    pub async fn create_role(&self, name: &str, password: Option<&str>) {
        assert_identifier(name);
        let password = match password {
            Some(p) => format!("PASSWORD {}", quote_literal(p)),
            None => "PASSWORD NULL".to_string(),
        };
        let admin = self.admin("postgres").await;
        // Concurrent tests may race on the same name: tolerate either duplicate error.
        let sql = format!(
            "DO $$ BEGIN CREATE ROLE {name} LOGIN {password}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN ALTER ROLE {name} LOGIN {password}; END $$"
        );
        // Two tests resetting the same shared role at once (the fixture's catalog role) make
        // PostgreSQL report "tuple concurrently updated": the other one won, so try again.
        for attempt in 1.. {
            match admin.batch_execute(&sql).await {
                Ok(()) => return,
                Err(e)
                    if attempt < 10
                        && e.as_db_error()
                            .is_some_and(|d| d.message() == "tuple concurrently updated") =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("create role {name}: {e:?}"),
            }
        }
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn assert_identifier(name: &str) {
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "test identifiers must be lowercase [a-z0-9_]: {name:?}"
    );
}

/// A SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Drops and recreates database `name`, owned by [`APP_USER`]; returns the name.
pub async fn fresh_db(name: &str) -> String {
    assert_identifier(name);
    let admin = cluster().admin("postgres").await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {APP_USER}"))
        .await
        .unwrap();
    name.to_string()
}
