//! `pgcloak demo`: a throwaway PostgreSQL from the system's binaries, with
//! pgcloak in front of it, for a first look. Everything is deleted on Ctrl-C
//! unless `--keep` is given.
//!
//! This is I/O glue for humans; it never runs inside `serve`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(
        "no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin.\n\
         Install them with:\n\n    sudo apt-get install -y postgresql\n"
    )]
    NoPostgres,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The newest PostgreSQL server binaries on this machine.
pub fn find_pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL tool, as the `postgres` OS user when we are root (initdb refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(step: &'static str, cmd: &mut Command) -> Result<String, DemoError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DemoError::Step {
            step,
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(DemoError::Step {
            step,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn free_port() -> Result<u16, DemoError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running throwaway cluster. Stopped and deleted on drop unless kept.
pub struct Cluster {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    keep: bool,
}

impl Cluster {
    /// initdb + start, with SCRAM for TCP and trust on the cluster's own unix socket.
    pub fn start(dir: PathBuf, superuser_password: &str, keep: bool) -> Result<Cluster, DemoError> {
        let bin = find_pg_bin().ok_or(DemoError::NoPostgres)?;
        let port = free_port()?;
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let socket_dir = dir.join("socket");
        std::fs::create_dir_all(&socket_dir)?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, superuser_password)?;
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            run(
                "chown",
                Command::new("chown").args(["-R", "postgres"]).arg(&dir),
            )?;
        }
        run(
            "initdb",
            pg_command(&bin, "initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
        )?;
        let _ = std::fs::remove_file(&pwfile);
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            socket_dir.display()
        );
        run(
            "pg_ctl start",
            pg_command(&bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("postgres.log"))
                .args(["-o", &opts, "-w", "start"]),
        )?;
        Ok(Cluster {
            bin,
            dir,
            port,
            socket_dir,
            keep,
        })
    }

    /// Runs SQL as the superuser over the unix socket with psql.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, DemoError> {
        run(
            "psql",
            pg_command(&self.bin, "psql")
                .arg("-h")
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                ])
                .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql]),
        )
    }

    pub fn stop(&self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const DEMO_PASSWORD: &str = "pgcloak-demo";

/// Runs the demo until Ctrl-C.
pub async fn run_demo(port: Option<u16>, keep: bool) -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("pgcloak-demo-{}", std::process::id()));
    let cluster = Cluster::start(dir.clone(), DEMO_PASSWORD, keep)?;
    cluster.psql(
        "postgres",
        &format!("CREATE ROLE crm_app LOGIN PASSWORD '{DEMO_PASSWORD}'"),
    )?;
    // CREATE DATABASE cannot share a transaction with anything else.
    cluster.psql("postgres", "CREATE DATABASE crm OWNER crm_app")?;
    let listen_port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let yaml = format!(
        "listen: 127.0.0.1:{listen_port}\nupstream: {{ host: 127.0.0.1, port: {}, tls: disable }}\n",
        cluster.port
    );
    let config =
        crate::config::Config::load_str(&yaml, "demo", |_| None).map_err(|e| DemoError::Step {
            step: "config",
            detail: e.to_string(),
        })?;
    let server = crate::server::Server::bind(config)
        .await
        .map_err(|e| DemoError::Step {
            step: "pgcloak",
            detail: e.to_string(),
        })?;
    println!(
        "pgcloak demo is running. PostgreSQL data: {}",
        dir.display()
    );
    println!();
    println!("Through pgcloak:");
    println!("  PGPASSWORD={DEMO_PASSWORD} psql \"host=127.0.0.1 port={listen_port} user=crm_app dbname=crm\"");
    println!("Straight to PostgreSQL:");
    println!(
        "  PGPASSWORD={DEMO_PASSWORD} psql \"host=127.0.0.1 port={} user=postgres dbname=crm\"",
        cluster.port
    );
    println!();
    println!(
        "Press Ctrl-C to stop{}.",
        if keep { "" } else { " and delete everything" }
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        trigger.cancel();
    });
    server.run(shutdown).await;
    drop(cluster);
    if keep {
        println!("kept {}", dir.display());
    }
    Ok(())
}
