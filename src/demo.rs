//! `pgcloak demo`: a throwaway PostgreSQL from the system's binaries, a sample CRM
//! database written through pgcloak (so it is stored encrypted), and pgcloak in front
//! of it, for a first look. Everything is deleted on Ctrl-C unless `--keep` is given.
//!
//! It uses the shipped `config/pgcloak.yaml` and `config/policy.yaml`, overriding only
//! addresses, the keyring (a fresh one in the temp directory) and the catalog password.
//! This is I/O glue for humans; it never runs inside `serve`.

mod guard;
mod sample;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use thiserror::Error;

pub use sample::{customers, Customer, COPY_COLUMNS};

use crate::catalog::{ConstraintProblem, MissingConstraint};
use crate::config::{Config, KeysConfig, UpstreamTlsMode};
use crate::policy::{Policy, TableName};

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(
        "no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin.\n\
         Install them with:\n\n    sudo apt-get install -y postgresql\n"
    )]
    NoPostgres,
    #[error(
        "cannot find the shipped config/pgcloak.yaml and config/policy.yaml; run the demo from \
         the repository root (cargo run --release -- demo)"
    )]
    NoConfig,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn step(step: &'static str) -> impl FnOnce(String) -> DemoError {
    move |detail| DemoError::Step { step, detail }
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

/// The demo's temp directory; removed on drop unless kept. Declared before the
/// [`Cluster`] living in it, so the cluster is stopped first.
struct TempRoot {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
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
    /// `dir` is created and, when running as root, given to the `postgres` OS user; its
    /// parent must be traversable by that user.
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
            run(
                "chown",
                Command::new("chown").args(["-R", "postgres"]).arg(&dir),
            )?;
        }
        // From here on, Drop stops and removes whatever was started.
        let cluster = Cluster {
            bin,
            dir,
            port,
            socket_dir,
            keep,
        };
        run(
            "initdb",
            pg_command(&cluster.bin, "initdb")
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
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            cluster.socket_dir.display()
        );
        run(
            "pg_ctl start",
            pg_command(&cluster.bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.join("postgres.log"))
                .args(["-o", &opts, "-w", "start"]),
        )?;
        Ok(cluster)
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

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn stop(&self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"])
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

/// Every demo role's password, and the superuser's. A throwaway cluster on 127.0.0.1.
pub const DEMO_PASSWORD: &str = "pgcloak-demo";
/// How many customers the demo loads.
pub const CUSTOMERS: usize = 10_000;
const SEED: u64 = 0x5EED_2026;
const ROLES: [&str; 4] = ["crm_app", "support_agent", "marketing", "auditor"];
/// pgcloak's own catalog login (`catalog.user` in the shipped config).
const CATALOG_ROLE: &str = "pgcloak";

/// The shipped config directory: `./config`, else the source tree's (for `cargo run`
/// from another directory).
fn shipped_config_dir() -> Result<PathBuf, DemoError> {
    let candidates = [
        std::env::current_dir()?.join("config"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
    ];
    candidates
        .into_iter()
        .find(|d| d.join("pgcloak.yaml").is_file() && d.join("policy.yaml").is_file())
        .ok_or(DemoError::NoConfig)
}

/// The customers table; every policy column of it is `bytea` and gets its envelope CHECK
/// constraint from the catalog module's DDL.
const SCHEMA_SQL: &str = "\
CREATE TABLE customers (
    id           int PRIMARY KEY,
    full_name    bytea,
    phone        bytea NOT NULL,
    email        bytea,
    national_id  bytea,
    birth_date   bytea,
    address      bytea,
    province     text NOT NULL,
    loyalty_tier text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_phone_key ON customers (phone);
CREATE UNIQUE INDEX customers_national_id_key ON customers (national_id);
CREATE INDEX customers_email_idx ON customers (email);
CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    placed_at   timestamptz NOT NULL,
    total_vnd   bigint NOT NULL,
    status      text NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders TO crm_app;
GRANT SELECT ON customers, orders TO support_agent, marketing, auditor;
";

/// Orders carry nothing sensitive, so they are generated inside PostgreSQL.
const ORDERS_SQL: &str = "\
INSERT INTO orders (customer_id, placed_at, total_vnd, status)
SELECT (1 + (g * 7919) % 10000)::int,
       timestamptz '2026-11-01 09:00+07' - (g % 700) * interval '1 day' - (g % 600) * interval '1 minute',
       (20 + (g * 104729) % 4980) * 1000,
       (ARRAY['paid', 'shipped', 'delivered', 'delivered', 'returned'])[1 + g % 5]
FROM generate_series(1::bigint, 25000) AS g;
ANALYZE customers; ANALYZE orders;
";

/// The envelope CHECK constraints for every policy column of `table`.
fn envelope_constraints(policy: &Policy, table: &TableName) -> String {
    policy
        .table_columns(table)
        .iter()
        .map(|r| {
            MissingConstraint {
                column: *r,
                table: table.clone(),
                column_name: policy.column(*r).column.clone(),
                problem: ConstraintProblem::Absent,
            }
            .ddl()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shipped config with the demo's addresses, keyring and catalog password.
fn demo_config(
    config_dir: &Path,
    listen_port: u16,
    pg_port: u16,
    keys: PathBuf,
) -> Result<Config, DemoError> {
    let file = config_dir.join("pgcloak.yaml");
    let text = std::fs::read_to_string(&file)?;
    let mut cfg = Config::load_str(&text, &file.display().to_string(), |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| step("config/pgcloak.yaml")(e.to_string()))?;
    cfg.listen = format!("127.0.0.1:{listen_port}");
    cfg.upstream.host = "127.0.0.1".into();
    cfg.upstream.port = pg_port;
    cfg.upstream.tls = UpstreamTlsMode::Disable;
    cfg.policy = Some(config_dir.join("policy.yaml"));
    cfg.keys = Some(KeysConfig {
        file: Some(keys),
        env: None,
    });
    let mut catalog = cfg.catalog.clone().unwrap_or_default();
    catalog.user = CATALOG_ROLE.into();
    catalog.password_env = None;
    catalog.password = Some(DEMO_PASSWORD.into());
    catalog.databases = vec!["crm".into()];
    cfg.catalog = Some(catalog);
    cfg.shutdown_timeout_secs = 2;
    Ok(cfg)
}

async fn connect(conninfo: &str, what: &'static str) -> Result<tokio_postgres::Client, DemoError> {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls)
        .await
        .map_err(|e| step(what)(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn db_error(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Loads the customers through pgcloak with COPY, so they are stored encrypted.
async fn load_customers(proxy_port: u16, rows: &[Customer]) -> Result<(), DemoError> {
    let app = connect(
        &format!(
            "host=127.0.0.1 port={proxy_port} user=crm_app password={DEMO_PASSWORD} dbname=crm"
        ),
        "connect to pgcloak as crm_app",
    )
    .await?;
    let sink = app
        .copy_in::<_, Bytes>(&format!("COPY customers ({COPY_COLUMNS}) FROM STDIN"))
        .await
        .map_err(|e| step("COPY customers through pgcloak")(db_error(e)))?;
    let mut sink = Box::pin(sink);
    for chunk in rows.chunks(500) {
        let text: String = chunk.iter().map(Customer::copy_line).collect();
        sink.send(Bytes::from(text))
            .await
            .map_err(|e| step("COPY customers through pgcloak")(db_error(e)))?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(|e| step("COPY customers through pgcloak")(db_error(e)))?;
    Ok(())
}

/// What the demo checked through pgcloak before printing: the refusal's SQLSTATE and message.
struct Checked {
    refusal: String,
}

/// Runs the printed search and refusal as support_agent, so the demo never prints an
/// example that does not behave as described.
async fn self_check(proxy_port: u16, phone: &str) -> Result<Checked, DemoError> {
    let agent = connect(
        &format!(
            "host=127.0.0.1 port={proxy_port} user=support_agent password={DEMO_PASSWORD} dbname=crm"
        ),
        "connect to pgcloak as support_agent",
    )
    .await?;
    let rows = agent
        .simple_query(&search_sql(phone))
        .await
        .map_err(|e| step("equality search as support_agent")(db_error(e)))?;
    let found = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    if found != 1 {
        return Err(step("equality search as support_agent")(format!(
            "expected one customer, got {found}"
        )));
    }
    match agent.simple_query(REFUSED_SQL).await {
        Ok(_) => Err(step("refused query")(
            "pgcloak accepted a LIKE on a deterministic column".into(),
        )),
        Err(e) => Ok(Checked {
            refusal: db_error(e),
        }),
    }
}

/// Three decoy customers after the real ones (ids and phones of their own).
fn decoy_customers(real: &[Customer]) -> Vec<Customer> {
    let taken: std::collections::HashSet<&str> = real.iter().map(|c| c.phone.as_str()).collect();
    let ids: std::collections::HashSet<&str> =
        real.iter().map(|c| c.national_id.as_str()).collect();
    customers(50, SEED ^ 0xDEC0_7000)
        .into_iter()
        .filter(|c| !taken.contains(c.phone.as_str()) && !ids.contains(c.national_id.as_str()))
        .take(3)
        .enumerate()
        .map(|(i, mut c)| {
            c.id = (CUSTOMERS + 1 + i) as i32;
            c.email = format!(
                "{}.demo{}@example.vn",
                c.email.split('@').next().unwrap_or("decoy"),
                i + 1
            );
            c
        })
        .collect()
}

/// The policy section naming the decoys (what `pgcloak honeytoken plant` prints).
fn honeytoken_section(decoys: &[Customer]) -> String {
    let list = |f: &dyn Fn(&Customer) -> &str| {
        decoys
            .iter()
            .map(|c| serde_json::Value::String(f(c).to_string()).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "guard:\n  honeytokens:\n    public.customers.phone: [{}]\n    public.customers.email: [{}]\n",
        list(&|c| &c.phone),
        list(&|c| &c.email)
    )
}

fn search_sql(phone: &str) -> String {
    format!(
        "SELECT id, full_name, phone, email, loyalty_tier FROM customers WHERE phone = '{phone}'"
    )
}

/// LIKE on an encrypted column cannot be answered on ciphertexts: refused with 0A000.
pub const REFUSED_SQL: &str = "SELECT id, full_name FROM customers WHERE phone LIKE '090%'";
/// The SQLSTATE the refused example is documented to give.
pub const REFUSED_SQLSTATE: &str = "0A000";

/// `psql` if it is on PATH as /usr/bin/psql (Debian's wrapper), else the cluster's own.
fn psql_program(bin: &Path) -> String {
    if Path::new("/usr/bin/psql").exists() {
        "psql".into()
    } else {
        bin.join("psql").display().to_string()
    }
}

/// The ready-to-paste block. Every command is preceded by a `# [tag]` comment line, so the
/// block can also be pasted into a shell whole (and tests can find each command).
fn commands(psql: &str, proxy_port: u16, pg_port: u16, phone: &str, refusal: &str) -> String {
    let through = |user: &str, sql: &str| {
        format!(
            "PGPASSWORD={DEMO_PASSWORD} {psql} \"host=127.0.0.1 port={proxy_port} user={user} dbname=crm\" -c \"{sql}\""
        )
    };
    let mut out = String::new();
    let mut add = |comment: String, cmd: String| {
        let _ = writeln!(out, "# {comment}");
        let _ = writeln!(out, "{cmd}\n");
    };
    add(
        "[crm_app] the application: plaintext".into(),
        through(
            "crm_app",
            "SELECT id, full_name, phone, email, national_id, birth_date FROM customers ORDER BY id LIMIT 5",
        ),
    );
    add(
        "[support_agent] names, masked phones, email tokens, masked birth dates; national_id is denied"
            .into(),
        through(
            "support_agent",
            "SELECT id, full_name, phone, email, birth_date, loyalty_tier FROM customers ORDER BY id LIMIT 5",
        ),
    );
    add(
        "[marketing] pseudonymised email only (phone and name read as NULL)".into(),
        through(
            "marketing",
            "SELECT id, email, phone, full_name, province, loyalty_tier FROM customers ORDER BY id LIMIT 5",
        ),
    );
    add(
        "[auditor] ciphertext only".into(),
        through(
            "auditor",
            "SELECT id, phone, national_id FROM customers ORDER BY id LIMIT 3",
        ),
    );
    add(
        "[direct] straight to PostgreSQL, as a stolen dump would hold it: envelopes only".into(),
        format!(
            "PGPASSWORD={DEMO_PASSWORD} {psql} \"host=127.0.0.1 port={pg_port} user=postgres dbname=crm\" -c \"SELECT id, full_name, phone, national_id, province FROM customers ORDER BY id LIMIT 3\""
        ),
    );
    add(
        "[search] support_agent looks a customer up by phone (a search grant), sees only the last 3 digits"
            .into(),
        through("support_agent", &search_sql(phone)),
    );
    add(
        format!(
            "[refused] LIKE cannot run on an encrypted column; pgcloak answers before PostgreSQL sees it: ERROR {refusal}"
        ),
        format!(
            "PGPASSWORD={DEMO_PASSWORD} {psql} -v VERBOSITY=verbose \"host=127.0.0.1 port={proxy_port} user=support_agent dbname=crm\" -c \"{REFUSED_SQL}\""
        ),
    );
    out
}

/// Runs the demo until Ctrl-C.
pub async fn run_demo(port: Option<u16>, keep: bool) -> Result<(), DemoError> {
    let started = Instant::now();
    // Listen for Ctrl-C from the start: during setup it only ends the demo early, and the
    // guards below still stop PostgreSQL and delete the data.
    let shutdown = ctrl_c_token();
    let config_dir = shipped_config_dir()?;
    let policy_path = config_dir.join("policy.yaml");
    let policy =
        Policy::load(&policy_path, 1).map_err(|e| step("config/policy.yaml")(e.to_string()))?;

    let (root, keyring) = make_root(keep)?;
    let cluster = Cluster::start(root.path.join("pg"), DEMO_PASSWORD, keep)?;
    create_crm(&cluster, &policy)?;
    // The second line of defence, compiled from the policy: column privileges, no
    // statistics on protected columns, no SQL-executing built-ins for PUBLIC.
    guard::apply_and_verify(&cluster, "crm", &policy).await?;

    let listen_port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut config = demo_config(&config_dir, listen_port, cluster.port, keyring)?;
    // The insider guard: a few decoy customers, loaded with the real ones, and the
    // shipped policy plus a `guard.honeytokens` section naming them.
    let rows = customers(CUSTOMERS, SEED);
    let decoys = decoy_customers(&rows);
    let demo_policy = write_demo_policy(&root.path, &policy_path, &decoys)?;
    config.policy = Some(demo_policy.clone());
    let server = crate::server::Server::bind(config)
        .await
        .map_err(|e| step("pgcloak")(e.to_string()))?;
    let serving = tokio::spawn(server.run(shutdown.clone()));

    let setup = load_and_check(&cluster, &policy, listen_port, &rows, &decoys);
    let (phone, checked) = tokio::select! {
        r = setup => r?,
        _ = shutdown.cancelled() => {
            let _ = serving.await;
            return Ok(());
        }
    };

    Banner {
        cluster: &cluster,
        root: &root.path,
        listen_port,
        policy_path: &policy_path,
        demo_policy: &demo_policy,
        decoys: &decoys,
        phone: &phone,
        refusal: &checked.refusal,
    }
    .print();
    println!(
        "Ready in {:.1} s. Press Ctrl-C to stop{}.",
        started.elapsed().as_secs_f64(),
        if keep {
            " (the data is kept)"
        } else {
            " and delete everything"
        }
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let _ = serving.await;
    // Give sessions' upstream connections a moment to close before stopping PostgreSQL.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(cluster);
    if keep {
        println!("kept {}", root.path.display());
    } else {
        println!("stopped; deleted {}", root.path.display());
    }
    drop(root);
    Ok(())
}

/// The shipped policy plus a `guard.honeytokens` section naming the decoys, written in
/// the demo's directory; returns its path.
fn write_demo_policy(
    root: &Path,
    policy_path: &Path,
    decoys: &[Customer],
) -> Result<PathBuf, DemoError> {
    let demo_policy = root.join("policy.yaml");
    std::fs::write(
        &demo_policy,
        format!(
            "{}\n{}",
            std::fs::read_to_string(policy_path)?,
            honeytoken_section(decoys)
        ),
    )?;
    Ok(demo_policy)
}

/// A token cancelled on Ctrl-C (or SIGTERM).
fn ctrl_c_token() -> tokio_util::sync::CancellationToken {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        trigger.cancel();
    });
    shutdown
}

/// The demo's temp directory with a fresh keyring in it; returns the keyring's path.
fn make_root(keep: bool) -> Result<(TempRoot, PathBuf), DemoError> {
    let root = TempRoot {
        path: std::env::temp_dir().join(format!("pgcloak-demo-{}", std::process::id())),
        keep,
    };
    std::fs::create_dir_all(&root.path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Traversable, so the postgres OS user reaches its own subdirectory; the keyring
        // below is 0600 and stays ours.
        std::fs::set_permissions(&root.path, std::fs::Permissions::from_mode(0o755))?;
    }
    let keys = root.path.join("keys");
    std::fs::create_dir_all(&keys)?;
    let keyring = keys.join("master.keys");
    crate::crypto::keygen_to_file(&keyring).map_err(|e| step("keygen")(e.to_string()))?;
    Ok((root, keyring))
}

/// The demo's login roles, the `crm` database and its schema with the envelope CHECKs.
fn create_crm(cluster: &Cluster, policy: &Policy) -> Result<(), DemoError> {
    let mut roles = String::new();
    for r in ROLES.iter().chain([&CATALOG_ROLE]) {
        let _ = writeln!(roles, "CREATE ROLE {r} LOGIN PASSWORD '{DEMO_PASSWORD}';");
    }
    cluster.psql("postgres", &roles)?;
    // CREATE DATABASE cannot share a transaction with anything else.
    cluster.psql("postgres", "CREATE DATABASE crm")?;
    let customers_table = TableName::new("public", "customers");
    cluster.psql(
        "crm",
        &format!(
            "{SCHEMA_SQL}{}",
            envelope_constraints(policy, &customers_table)
        ),
    )?;
    Ok(())
}

/// Loads the customers (and decoys) through pgcloak and the orders directly, checks the
/// guard again after ANALYZE, and runs the printed examples; returns the example phone.
async fn load_and_check(
    cluster: &Cluster,
    policy: &Policy,
    listen_port: u16,
    rows: &[Customer],
    decoys: &[Customer],
) -> Result<(String, Checked), DemoError> {
    let all: Vec<Customer> = rows.iter().chain(decoys.iter()).cloned().collect();
    load_customers(listen_port, &all).await?;
    cluster.psql("crm", ORDERS_SQL)?;
    // ANALYZE ran: check again that no protected column has statistics.
    guard::apply_and_verify(cluster, "crm", policy).await?;
    let phone = rows.get(41).map(|c| c.phone.clone()).unwrap_or_default();
    let checked = self_check(listen_port, &phone).await?;
    Ok((phone, checked))
}

/// What the demo prints once it is ready: where everything is and what to try.
struct Banner<'a> {
    cluster: &'a Cluster,
    root: &'a Path,
    listen_port: u16,
    policy_path: &'a Path,
    demo_policy: &'a Path,
    decoys: &'a [Customer],
    phone: &'a str,
    refusal: &'a str,
}

impl Banner<'_> {
    fn print(&self) {
        let (cluster, listen_port) = (self.cluster, self.listen_port);
        println!(
            "pgcloak demo: {CUSTOMERS} customers written through pgcloak (stored encrypted), PostgreSQL {} on port {}",
            cluster.bin.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("?"),
            cluster.port
        );
        println!("pgcloak listens on 127.0.0.1:{listen_port}");
        println!(
            "policy: {} (with {} honeytokens: {})",
            self.policy_path.display(),
            self.decoys.len(),
            self.demo_policy.display()
        );
        println!(
            "temporary data: {} (keyring {}, PostgreSQL log {})",
            self.root.display(),
            self.root.join("keys/master.keys").display(),
            cluster.dir.join("postgres.log").display()
        );
        println!(
            "PostgreSQL data directory: {}",
            cluster.data_dir().display()
        );
        println!();
        print!(
            "{}",
            commands(
                &psql_program(&cluster.bin),
                listen_port,
                cluster.port,
                self.phone,
                self.refusal
            )
        );
        if let Some(d) = self.decoys.first() {
            println!(
                "# [honeytoken] {} is a decoy planted by the demo: looking it up raises a `honeytoken` audit event and a WARN in pgcloak's log",
                d.full_name
            );
            println!(
                "PGPASSWORD={DEMO_PASSWORD} {} \"host=127.0.0.1 port={listen_port} user=support_agent dbname=crm\" -c \"{}\"\n",
                psql_program(&cluster.bin),
                search_sql(&d.phone)
            );
        }
    }
}
