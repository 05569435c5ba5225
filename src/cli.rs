//! Command line: `serve`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config;
use crate::server::{Server, reload};

/// A security gateway for HTTP APIs.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate and compile a config file; print every error with its TOML
    /// path (exit 1) and every warning.
    Check {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Run a sample API behind the gateway, with a commented example config.
    Demo {
        /// Where to write the config, certificate and key.
        #[arg(long, default_value = "./portcullis-demo")]
        dir: PathBuf,
        /// HTTPS port on 127.0.0.1.
        #[arg(long, default_value_t = 8443)]
        https_port: u16,
        /// HTTP port on 127.0.0.1 (redirects to HTTPS).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Write the files and compile the config, then exit without serving.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::install_crypto_provider();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Serve { config } => serve(&config),
        Command::Demo {
            dir,
            https_port,
            http_port,
            dry_run,
        } => {
            init_tracing("info");
            let rt = match runtime(0) {
                Ok(rt) => rt,
                Err(e) => return fail(format!("cannot start the runtime: {e}")),
            };
            match rt.block_on(crate::demo::run(&dir, https_port, http_port, dry_run)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

fn check(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(plan) => {
            for w in &plan.warnings {
                println!("warning: {w}");
            }
            println!(
                "ok: {} routes, {} upstreams, {} CORS policies",
                plan.routes.len(),
                plan.upstreams.len(),
                plan.cors.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!("{}: {} error(s)", file.display(), errs.0.len());
            ExitCode::FAILURE
        }
    }
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    // One worker: a current-thread runtime does the same work without the
    // work-stealing scheduler's cross-thread synchronisation.
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            b.worker_threads(workers);
        }
        b
    };
    b.enable_all().thread_name("portcullis").build()
}

/// JSON diagnostics on stderr (`RUST_LOG` overrides the configured level).
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
}

fn serve(path: &std::path::Path) -> ExitCode {
    let plan = match config::load(path) {
        Ok(p) => p,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&plan.log_level);
    for w in &plan.warnings {
        tracing::warn!(warning = %w, "unsafe or unusual setting");
    }
    let rt = match runtime(plan.worker_threads) {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let path = path.to_path_buf();
    match rt.block_on(serve_until_signal(plan, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Binds, serves, reloads on SIGHUP and file change, and drains on
/// SIGTERM/SIGINT.
pub async fn serve_until_signal(plan: config::Plan, path: PathBuf) -> std::io::Result<()> {
    let server = Server::bind(plan, Some(path)).await?;
    tracing::info!(https = ?server.https_addr(), http = ?server.http_addr(), "portcullis listening");
    let handle = server.handle();
    reload::spawn_sighup(handle.shared());
    reload::spawn_watcher(handle.shared(), Duration::from_secs(1));
    spawn_shutdown_signals(handle.clone());
    server.run().await?;
    tracing::info!("portcullis stopped");
    Ok(())
}

/// SIGTERM and SIGINT start a graceful shutdown.
pub fn spawn_shutdown_signals(handle: crate::server::Handle) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM/SIGINT");
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down: draining in-flight requests");
        handle.shutdown();
    });
}
