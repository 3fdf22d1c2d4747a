//! `central --config central.toml`: loads the config, sets up logging and
//! runs the central server until Ctrl-C or SIGTERM. Wiring only; see the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Strata central: federates regions and serves the HTTP JSON API.
#[derive(Debug, Parser)]
#[command(name = "central", version, about)]
struct Args {
    /// Path of the TOML configuration file.
    #[arg(long, short, value_name = "FILE", default_value = "central.toml")]
    config: PathBuf,
}

/// Cancels `shutdown` on Ctrl-C or (on Unix) SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        r = tokio::signal::ctrl_c() => if let Err(e) = r {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            return;
        },
        () = term => {}
    }
    tracing::info!("signal received: shutting down");
    shutdown.cancel();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    // The error names the file and lists every problem.
    let cfg = match central::CentralConfig::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match central::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: central (config {}): {e}", args.config.display());
            ExitCode::FAILURE
        }
    }
}
