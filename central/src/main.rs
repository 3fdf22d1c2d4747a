//! `central --config central.toml`: loads the config, sets up logging and
//! runs the central server until Ctrl-C or SIGTERM. Wiring only; see the
//! library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata_net::process;

/// Strata central: federates regions and serves the HTTP JSON API.
#[derive(Debug, Parser)]
#[command(name = "central", version, about)]
struct Args {
    /// Path of the TOML configuration file.
    #[arg(long, short, value_name = "FILE", default_value = "central.toml")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything creates a file: nothing central writes is for others.
    strata_net::files::restrict_umask();
    let args = Args::parse();
    process::init_tracing();
    // The error names the file and lists every problem.
    let cfg = match central::CentralConfig::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = process::shutdown_on_signals();
    let server = match central::bind(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: central (config {}): {e}", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    process::announce_ready(&serde_json::json!({
        "kind": "central",
        "http": server.local_addr().to_string(),
        "peer": server.peer_addr().to_string(),
        "token-file": server.token_file().display().to_string(),
    }));
    match server.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: central (config {}): {e}", args.config.display());
            ExitCode::FAILURE
        }
    }
}
