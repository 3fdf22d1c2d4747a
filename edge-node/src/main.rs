//! `edge-node --config edge.toml`: wiring only; see the `edge_node` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Strata edge node: MQTT ingress, durable spool, QUIC uplink.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Path to the TOML config.
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Whatever a library creates with default modes: owner only.
    strata_net::files::restrict_umask();
    let args = Args::parse();
    strata_net::process::init_tracing();
    edge_node::run_config_file(&args.config).await
}
