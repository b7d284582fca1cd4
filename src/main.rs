//! The `pgcloak` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgcloak::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pgcloak",
    version,
    about = "A transparent encrypting proxy for PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short, default_value = "config/pgcloak.yaml")]
        config: PathBuf,
    },
    /// Validate the configuration, policy and keys and exit (non-zero on errors).
    Check {
        #[arg(long, short, default_value = "config/pgcloak.yaml")]
        config: PathBuf,
        /// Also check the policy against the live schema: every column exists and is
        /// bytea, carries the envelope CHECK constraint, is closed (no SELECT) to roles
        /// whose view is null or deny, keeps no statistics; SQL-executing built-ins are
        /// not executable by PUBLIC. The DDL for each gap is printed (exit 1). Names the
        /// databases to check (default: catalog.databases).
        #[arg(long, num_args = 0..)]
        database: Option<Vec<String>>,
    },
    /// Print a new keyring, or with --file create one (mode 0600) or append a new
    /// active key to it. Deterministic columns stay pinned to their key.
    Keygen {
        /// The keyring file to create or extend (default: print a new keyring).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Start a throwaway PostgreSQL with pgcloak in front of it, until Ctrl-C.
    Demo {
        /// Port pgcloak listens on (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Keep the PostgreSQL data directory after stopping.
        #[arg(long)]
        keep: bool,
    },
    /// Encrypt the policy's plaintext columns in place, online (docs/lifecycle.md).
    Encrypt {
        #[command(flatten)]
        args: LifecycleArgs,
        /// Drop the plaintext column at cut-over instead of keeping it as <col>_plaintext.
        #[arg(long)]
        drop_plaintext: bool,
    },
    /// Convert encrypted columns back to plain columns of their type, online.
    Decrypt {
        #[command(flatten)]
        args: LifecycleArgs,
        /// Drop the encrypted column at cut-over instead of keeping it as <col>_ciphertext.
        #[arg(long)]
        drop_ciphertext: bool,
    },
    /// Re-encrypt columns under the active key, online; switches deterministic pins.
    Reencrypt {
        #[command(flatten)]
        args: LifecycleArgs,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The audit trail (docs/security.md, "Insider threats").
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Honeytokens: decoy rows that no legitimate workflow reads.
    Honeytoken {
        #[command(subcommand)]
        action: HoneytokenAction,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the keyed hash chain of audit files: exit 0 when intact, else 1 naming
    /// the first bad line and why (tampered, deleted, truncated).
    Verify {
        #[arg(long, short, default_value = "config/pgcloak.yaml")]
        config: PathBuf,
        /// The audit file; repeat for rotated files, oldest first.
        #[arg(long, required = true)]
        file: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum HoneytokenAction {
    /// Insert decoy customers (encrypted like real rows, straight into the database)
    /// and print their values as a policy `guard.honeytokens` section.
    Plant {
        #[arg(long, short, default_value = "config/pgcloak.yaml")]
        config: PathBuf,
        #[arg(long)]
        database: String,
        /// `schema.table` or `table` (its protected columns get decoy values).
        #[arg(long)]
        table: String,
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Which key ids the stored values of each policy column reference.
    Status {
        #[arg(long, short, default_value = "config/pgcloak.yaml")]
        config: PathBuf,
        #[arg(long)]
        database: String,
    },
}

#[derive(clap::Args)]
struct LifecycleArgs {
    #[arg(long, short, default_value = "config/pgcloak.yaml")]
    config: PathBuf,
    /// The database to convert.
    #[arg(long)]
    database: String,
    /// Only this table (`table` or `schema.table`).
    #[arg(long)]
    table: Option<String>,
    /// Only this column.
    #[arg(long)]
    column: Option<String>,
    /// Print the plan and its DDL; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rows per batch (each batch is one short transaction).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Throttle the backfill to at most this many rows per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_rows_per_sec: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config, database } => check(config, database),
        Command::Demo { port, keep } => demo(port, keep),
        Command::Keygen { file } => keygen(file),
        Command::Encrypt {
            args,
            drop_plaintext,
        } => lifecycle(pgcloak::lifecycle::Kind::Encrypt, args, drop_plaintext),
        Command::Decrypt {
            args,
            drop_ciphertext,
        } => lifecycle(pgcloak::lifecycle::Kind::Decrypt, args, drop_ciphertext),
        Command::Reencrypt { args } => lifecycle(pgcloak::lifecycle::Kind::Reencrypt, args, true),
        Command::Keys {
            action: KeysAction::Status { config, database },
        } => keys_status(config, database),
        Command::Audit {
            action: AuditAction::Verify { config, file },
        } => audit_verify(config, file),
        Command::Honeytoken {
            action:
                HoneytokenAction::Plant {
                    config,
                    database,
                    table,
                    count,
                },
        } => honeytoken_plant(config, database, table, count),
    }
}

fn audit_verify(config: PathBuf, files: Vec<PathBuf>) -> ExitCode {
    let cfg = match load_config(&config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let keys = match pgcloak::observe::chain::audit_verify_keys(&cfg) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut contents = Vec::new();
    for f in &files {
        match std::fs::read(f) {
            Ok(b) => contents.push(b),
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    let slices: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    match pgcloak::observe::chain::verify(&slices, &|id| keys.get(&id).copied()) {
        Ok(ok) => {
            println!(
                "OK: {} records intact in {} file(s); last hash {}",
                ok.records,
                files.len(),
                ok.head
            );
            ExitCode::SUCCESS
        }
        Err(b) => {
            let (file, line) = b.location();
            let name = files
                .get(file.saturating_sub(1))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            println!("FAILED: {name}:{line}: {}", b.reason());
            ExitCode::from(1)
        }
    }
}

fn honeytoken_plant(config: PathBuf, database: String, table: String, count: usize) -> ExitCode {
    let Some(runtime) = runtime(false) else {
        return ExitCode::from(2);
    };
    match runtime.block_on(pgcloak::lifecycle::plant::plant(
        &config, &database, &table, count,
    )) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn check(path: PathBuf, databases: Option<Vec<String>>) -> ExitCode {
    let cfg = match load_config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut found = CheckOutcome {
        ok: check_userlist(&cfg, &path),
        ..CheckOutcome::default()
    };
    // When the userlist is bad, Shared::new would report the same problems again.
    if found.ok {
        match pgcloak::server::Shared::new(cfg.clone()) {
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                found.ok = false;
            }
            Ok(shared) => {
                if let Some(dbs) = databases {
                    if let Err(code) = check_live(&cfg, &path, &shared, dbs, &mut found) {
                        return code;
                    }
                }
            }
        }
    }
    for w in cfg.warnings() {
        eprintln!("warning: {}: {}", path.display(), w.0);
    }
    found.exit_code(&path)
}

/// What `check` found, and so its exit code.
#[derive(Default)]
struct CheckOutcome {
    ok: bool,
    missing_constraints: bool,
    looser: bool,
    warnings: bool,
}

impl CheckOutcome {
    fn exit_code(&self, path: &std::path::Path) -> ExitCode {
        if !self.ok {
            ExitCode::from(2)
        } else if self.missing_constraints || self.looser {
            println!(
                "{}: OK, but the database is looser than the policy{} (see above for the DDL)",
                path.display(),
                if self.missing_constraints {
                    ": protected columns lack their envelope CHECK constraint"
                } else {
                    ""
                }
            );
            ExitCode::from(1)
        } else if self.warnings {
            println!(
                "{}: OK, with warnings to act on (see above)",
                path.display()
            );
            ExitCode::from(1)
        } else {
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
    }
}

/// The userlist is checked on its own so that every bad line is reported as FILE:LINE.
fn check_userlist(cfg: &Config, path: &std::path::Path) -> bool {
    use pgcloak::auth::state::{load_userlist, AuthSetupError};
    use pgcloak::auth::AuthError;
    let Some(file) = &cfg.auth.file else {
        return true;
    };
    match load_userlist(file) {
        Ok(_) => true,
        Err(AuthSetupError::Userlist(AuthError::Userlist(problems))) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            false
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            false
        }
    }
}

/// `check --database`: the policy against each database's live schema. Err: stop now
/// with that exit code.
fn check_live(
    cfg: &Config,
    path: &std::path::Path,
    shared: &pgcloak::server::Shared,
    dbs: Vec<String>,
    out: &mut CheckOutcome,
) -> Result<(), ExitCode> {
    let dbs = if dbs.is_empty() {
        cfg.catalog
            .as_ref()
            .map(|c| c.databases.clone())
            .unwrap_or_default()
    } else {
        dbs
    };
    if shared.protection.is_none() {
        eprintln!("error: {}: --database needs a `policy`", path.display());
        out.ok = false;
        return Ok(());
    }
    if dbs.is_empty() {
        eprintln!(
            "error: {}: name the databases (--database NAME) or list them in catalog.databases",
            path.display()
        );
        out.ok = false;
        return Ok(());
    }
    let Some(rt) = runtime(false) else {
        return Err(ExitCode::FAILURE);
    };
    let found = rt.block_on(pgcloak::server::check_databases(shared, &dbs));
    for e in &found.errors {
        eprintln!("error: {e}");
        out.ok = false;
    }
    for (what, ddl) in &found.missing_constraints {
        eprintln!("warning: {what}; add it with:\n    {ddl}");
        out.missing_constraints = true;
    }
    print_guard(&found);
    out.looser = !found.guard.is_empty();
    for e in &found.adoption.errors {
        eprintln!("error: {e}");
        out.ok = false;
    }
    for w in &found.adoption.warnings {
        eprintln!("warning: {w}");
        out.warnings = true;
    }
    Ok(())
}

/// The database-side guard's findings (each with the DDL that fixes it, to run as a
/// superuser in the named database) and its warnings.
fn print_guard(found: &pgcloak::server::DatabaseCheck) {
    for (what, ddl) in &found.guard {
        if ddl.is_empty() {
            eprintln!("warning: {what}");
        } else {
            eprintln!("warning: {what}; fix with:\n    {}", ddl.join("\n    "));
        }
    }
    for w in &found.guard_warnings {
        eprintln!("note: {w}");
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let cfg = match load_config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    pgcloak::observe::log::init(&cfg.log);
    for w in cfg.warnings() {
        tracing::warn!(target: "pgcloak::session", "{}", w.0);
    }
    let Some(runtime) = runtime(true) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let server = match pgcloak::server::Server::bind(cfg).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "pgcloak::session", error = %e, "cannot start");
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            pgcloak::server::shutdown_signal().await;
            trigger.cancel();
        });
        server.run(shutdown).await;
        // Every audit record emitted before the drain ended reaches the file.
        pgcloak::observe::audit::flush(std::time::Duration::from_secs(5));
        ExitCode::SUCCESS
    })
}

fn demo(port: Option<u16>, keep: bool) -> ExitCode {
    pgcloak::observe::log::init(&pgcloak::config::LogConfig {
        format: pgcloak::config::LogFormat::Text,
        level: "warn".into(),
        ..Default::default()
    });
    let Some(runtime) = runtime(true) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(pgcloak::demo::run_demo(port, keep)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(file: Option<PathBuf>) -> ExitCode {
    use pgcloak::crypto::{keygen, keygen_to_file, KeygenOutcome, KEYRING_LOSS_WARNING};
    match file {
        None => match keygen(None) {
            Ok(text) => {
                print!("{}", text.as_str());
                eprintln!("{KEYRING_LOSS_WARNING}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(path) => match keygen_to_file(&path) {
            Ok(KeygenOutcome::Created { key_id }) => {
                eprintln!(
                    "created {} (mode 0600) with key {key_id}, active.\n{KEYRING_LOSS_WARNING}",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Ok(KeygenOutcome::Appended {
                key_id,
                previous_active,
                deterministic_key_id,
            }) => {
                eprintln!(
                    "added key {key_id} to {} and made it active (was {previous_active}). \
                     Randomized columns use it now; deterministic columns stay on key \
                     {deterministic_key_id} until re-encrypted.\n{KEYRING_LOSS_WARNING}",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn keys_status(config: PathBuf, database: String) -> ExitCode {
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(pgcloak::lifecycle::keys_status(&config, &database)) {
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn lifecycle(kind: pgcloak::lifecycle::Kind, args: LifecycleArgs, drop_old: bool) -> ExitCode {
    use pgcloak::lifecycle::{Options, Outcome};
    let opts = Options {
        config: args.config,
        database: args.database,
        table: args.table,
        column: args.column,
        dry_run: args.dry_run,
        batch_size: args.batch_size,
        max_rows_per_sec: args.max_rows_per_sec,
        drop_old,
    };
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(pgcloak::lifecycle::run(kind, &opts)) {
        Ok(outcomes) => {
            for o in outcomes {
                match o.state {
                    Outcome::AlreadyDone => println!("{}: already done", o.column),
                    Outcome::Planned => {}
                    Outcome::Converted => println!(
                        "{}: {} done: {} rows backfilled in {:.2} s ({:.0} rows/s), \
                         {} caught up, cut-over {:.0} ms",
                        o.column,
                        kind.name(),
                        o.stats.backfilled,
                        o.stats.backfill_time.as_secs_f64(),
                        o.stats.rows_per_sec(),
                        o.stats.caught_up,
                        o.stats.cutover_time.as_secs_f64() * 1000.0
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A tokio runtime for one command, or None after printing why it could not start.
fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}
