//! The pgmux binary: run the pooler, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::config::{Config, ConfigError};

#[derive(Parser)]
#[command(name = "pgmux", version, about = "A PostgreSQL connection pooler")]
struct Cli {
    /// Config file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file; print every problem with its key, exit 1 if any.
    CheckConfig {
        /// Config file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                report(&file, &e);
                ExitCode::FAILURE
            }
        },
        None => {
            let Some(file) = cli.config else {
                eprintln!("pgmux: give a config file with --config FILE (see --help)");
                return ExitCode::from(2);
            };
            let config = match Config::load(&file) {
                Ok(c) => c,
                Err(e) => {
                    report(&file, &e);
                    return ExitCode::FAILURE;
                }
            };
            run(config)
        }
    }
}

fn report(file: &std::path::Path, e: &ConfigError) {
    match e {
        ConfigError::Invalid(problems) => {
            eprintln!("{}: {} problem(s):", file.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
        }
        e => eprintln!("{e}"),
    }
}

fn run(config: Config) -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.general.workers > 0 {
        rt.worker_threads(config.general.workers);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgmux: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let running = match pgmux::app::start(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop();
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
