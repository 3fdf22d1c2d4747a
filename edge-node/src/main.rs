//! `edge-node --config edge.toml`: wiring only; see the `edge_node` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use strata_net::process;

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
    process::init_tracing();
    // Exit code 2: the config is unusable; every problem is listed.
    let cfg: edge_node::EdgeConfig =
        match process::load_toml(&args.config).and_then(|c: edge_node::EdgeConfig| {
            process::check_problems(&args.config, c.problems()).map(|()| c)
        }) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    let shutdown = process::shutdown_on_signals();
    let name = cfg.name.clone();
    let result = async {
        let node = edge_node::EdgeNode::start(cfg).await?;
        node.run_with(shutdown, |mqtt, metrics| {
            process::announce_ready(&serde_json::json!({
                "kind": "edge-node",
                "name": name,
                "mqtt": mqtt.map(|a| a.to_string()),
                "metrics": metrics.map(|a| a.to_string()),
            }));
        })
        .await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
