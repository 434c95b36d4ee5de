//! The pgmux binary: run the pooler, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::config::{Config, ConfigError, LogFormat};

#[derive(Parser)]
#[command(name = "pgmux", version, about = "A PostgreSQL connection pooler")]
struct Cli {
    /// Config file (TOML). Default: $PGMUX_CONFIG.
    #[arg(short, long, value_name = "FILE", env = "PGMUX_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file (default: --config or $PGMUX_CONFIG); print every problem with
    /// its key, exit 1 if any.
    CheckConfig {
        /// Config file to check.
        file: Option<PathBuf>,
    },
    /// Print an auth_file line for USER with a SCRAM-SHA-256 verifier of a password read
    /// from standard input (asked for without echo on a terminal).
    Passwd {
        /// The user name.
        user: String,
        /// PBKDF2 iterations (Postgres' default scram_iterations is 4096).
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
        iterations: u32,
    },
    /// Translate a PgBouncer config (pgbouncer.ini) into a pgmux config, printed on standard
    /// output; what is not carried over as it was is listed at its top and on standard error.
    Import {
        /// The pgbouncer.ini to read (its %include files too).
        file: PathBuf,
        /// A userlist.txt to use as auth_file (checked), instead of the ini's.
        #[arg(long, value_name = "FILE")]
        auth_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let Some(file) = file.or(cli.config) else {
                eprintln!("pgmux: give a config file to check (or set PGMUX_CONFIG)");
                return ExitCode::from(2);
            };
            check_config(&file)
        }
        Some(Command::Passwd { user, iterations }) => passwd(&user, iterations),
        Some(Command::Import { file, auth_file }) => import(&file, auth_file.as_deref()),
        None => {
            let Some(file) = cli.config else {
                eprintln!(
                    "pgmux: give a config file with --config FILE or PGMUX_CONFIG (see --help)"
                );
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

fn check_config(file: &std::path::Path) -> ExitCode {
    let (_, skipped) = Config::env_overrides();
    for v in skipped {
        eprintln!("warning: {v} names no config key: skipped");
    }
    match Config::load(file) {
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
            report(file, &e);
            ExitCode::FAILURE
        }
    }
}

/// `pgmux import pgbouncer.ini`: the translation on stdout, its notes on stderr; exit 1 when
/// the ini cannot be read or the result would not pass check-config.
fn import(file: &std::path::Path, auth_file: Option<&std::path::Path>) -> ExitCode {
    let imported = match pgmux::config::import::import(file, auth_file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("pgmux import: {e}");
            return ExitCode::FAILURE;
        }
    };
    for n in &imported.notes {
        eprintln!("{}: {}: {}", n.key, n.kind.as_str(), n.reason);
    }
    if let Err(e) = Config::parse(&imported.toml) {
        eprintln!("pgmux import: the result does not pass check-config:\n{e}");
        return ExitCode::FAILURE;
    }
    print!("{}", imported.toml);
    ExitCode::SUCCESS
}

/// `pgmux passwd USER`: one userlist.txt line, the password never echoed nor stored.
fn passwd(user: &str, iterations: u32) -> ExitCode {
    use std::io::IsTerminal;
    let read = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("Password for {user}: ")).and_then(|first| {
            let again = rpassword::prompt_password("Again: ")?;
            if first == again {
                Ok(first)
            } else {
                Err(std::io::Error::other("the passwords differ"))
            }
        })
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| {
            let end = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(end);
            line
        })
    };
    let password = match read {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("pgmux passwd: empty password");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("pgmux passwd: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verifier = pgmux::auth::scram_verifier(&password, iterations);
    print!(
        "{}",
        pgmux::auth::userlist::write(&[(user.to_string(), verifier)])
    );
    ExitCode::SUCCESS
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
    let (overridden, skipped) = Config::env_overrides();
    if !overridden.is_empty() {
        tracing::info!(keys = ?overridden, "config keys set by the environment");
    }
    if !skipped.is_empty() {
        tracing::warn!(variables = ?skipped, "environment variables naming no config key, skipped");
    }
    // One worker: a current-thread runtime (one epoll loop, as PgBouncer), which needs no
    // cross-thread wake-ups or work stealing. More: tokio's multi-thread scheduler.
    let workers = config.general.runtime_workers();
    tracing::info!(
        "{workers} worker thread(s) (workers = {})",
        config.general.workers
    );
    let mut rt = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
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

/// Serve until told to stop, with PgBouncer's signals: SIGHUP reloads; SIGTERM drains
/// (SHUTDOWN WAIT_FOR_CLIENTS); SIGINT is the safe shutdown (SHUTDOWN WAIT_FOR_SERVERS);
/// SIGQUIT stops at once, as does a second SIGTERM or SIGINT during a shutdown; SIGUSR1
/// pauses every pool (PAUSE) and SIGUSR2 resumes them (RESUME). The admin console's
/// SHUTDOWN too. systemd hears of readiness, reloads and the stop through sd_notify.
async fn serve(running: &mut pgmux::app::Running) {
    use pgmux::shared::Request;
    use pgmux::systemd::notify;
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
    let mut usr2 = signal(SignalKind::user_defined2()).expect("SIGUSR2 handler");
    let timeout = || running.shared.config().general.shutdown_timeout.get();
    notify(&format!(
        "READY=1\nSTATUS=listening on {:?}\nMAINPID={}",
        running.addrs,
        std::process::id()
    ));
    let how = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                notify("RELOADING=1");
                let _ = pgmux::reload::reload(&running.shared);
                notify("READY=1");
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: pausing every pool");
                running.pause();
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: resuming every pool");
                running.resume();
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining (shutdown_timeout {:?})", timeout());
                break Request::ShutdownWaitForClients;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: safe shutdown, waiting for servers to be released");
                break Request::ShutdownWaitForServers;
            }
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: stopping at once");
                break Request::Shutdown;
            }
            r = running.next_request() => break r,
        }
    };
    notify("STOPPING=1");
    let t = timeout();
    let drain = async {
        match how {
            Request::ShutdownWaitForClients => running.drain(t).await,
            Request::ShutdownWaitForServers => running.drain_servers(t).await,
            Request::Shutdown => {}
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = term.recv() => tracing::info!("second SIGTERM: stopping at once"),
        _ = int.recv() => tracing::info!("SIGINT during the shutdown: stopping at once"),
        _ = quit.recv() => tracing::info!("SIGQUIT: stopping at once"),
    }
}
