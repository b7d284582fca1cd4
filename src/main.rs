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
    /// Validate the configuration and exit (non-zero on errors).
    Check {
        #[arg(long, short, default_value = "config/pgcloak.yaml")]
        config: PathBuf,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config } => check(config),
        Command::Demo { port, keep } => demo(port, keep),
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn check(path: PathBuf) -> ExitCode {
    let cfg = match load_config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut ok = true;
    // The userlist is checked on its own so that every bad line is reported as FILE:LINE.
    if let Some(file) = &cfg.auth.file {
        use pgcloak::auth::AuthError;
        use pgcloak::session::auth_state::{load_userlist, AuthSetupError};
        match load_userlist(file) {
            Ok(_) => {}
            Err(AuthSetupError::Userlist(AuthError::Userlist(problems))) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                ok = false;
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                ok = false;
            }
        }
    }
    if !ok {
        // Shared::new would report the same userlist problems again.
    } else if let Err(e) = pgcloak::server::Shared::new(cfg.clone()) {
        eprintln!("error: {}: {e}", path.display());
        ok = false;
    }
    for w in cfg.warnings() {
        eprintln!("warning: {}: {}", path.display(), w.0);
    }
    if ok {
        println!("{}: OK", path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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
        ExitCode::SUCCESS
    })
}

fn demo(port: Option<u16>, keep: bool) -> ExitCode {
    pgcloak::observe::log::init(&pgcloak::config::LogConfig {
        format: pgcloak::config::LogFormat::Text,
        level: "warn".into(),
        ..Default::default()
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pgcloak::demo::run_demo(port, keep)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
