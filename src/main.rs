//! The pgmux binary: run the pooler, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::config::{Config, ConfigError, LogFormat};

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
            Ok(config) => match pgmux::shared::Live::new(std::sync::Arc::new(config)) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: 1 problem(s):\n  {e}", file.display());
                    ExitCode::FAILURE
                }
            },
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
            run(config, file)
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

fn run(config: Config, file: PathBuf) -> ExitCode {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match config.general.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    // One worker: a current-thread runtime (one epoll loop, as PgBouncer), which needs no
    // cross-thread wake-ups or work stealing. More: tokio's multi-thread scheduler.
    let mut rt = match config.general.workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                b.worker_threads(n);
            }
            b
        }
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgmux: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut running = match pgmux::app::start(config).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        running.set_config_path(file);
        serve(&mut running).await;
        running.stop();
        tracing::info!("pgmux stopped");
        ExitCode::SUCCESS
    })
}

/// Serve until told to stop: SIGHUP reloads; SIGTERM drains (a second SIGTERM or a SIGINT
/// during the drain stops at once); SIGINT stops at once; the admin console's SHUTDOWN too.
async fn serve(running: &mut pgmux::app::Running) {
    use pgmux::shared::Request;
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let timeout = || running.shared.config().general.shutdown_timeout.get();
    let how = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = pgmux::reload::reload(&running.shared);
            }
            _ = term.recv() => break Some(Request::ShutdownWaitForClients),
            _ = int.recv() => break None,
            r = running.next_request() => break Some(r),
        }
    };
    let t = timeout();
    let drain = async {
        match how {
            Some(Request::ShutdownWaitForClients) => running.drain(t).await,
            Some(Request::ShutdownWaitForServers) => running.drain_servers(t).await,
            Some(Request::Shutdown) | None => {}
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = term.recv() => tracing::info!("second SIGTERM: stopping at once"),
        _ = int.recv() => tracing::info!("SIGINT: stopping at once"),
    }
}
