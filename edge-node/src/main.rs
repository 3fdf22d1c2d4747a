//! `edge-node --config edge.toml`: wiring only; see the `edge_node` crate.

use std::path::PathBuf;

use anyhow::Context;
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
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    process::init_tracing();
    let cfg: edge_node::EdgeConfig = process::load_toml(&args.config)?;
    process::check_problems(&args.config, cfg.problems())?;
    let shutdown = process::shutdown_on_signals();
    let node = edge_node::EdgeNode::start(cfg.clone())
        .await
        .context("starting edge node")?;
    node.run_with(shutdown, |mqtt, metrics| {
        process::announce_ready(&serde_json::json!({
            "kind": "edge-node",
            "name": cfg.name,
            "mqtt": mqtt.map(|a| a.to_string()),
            "metrics": metrics.map(|a| a.to_string()),
        }));
    })
    .await?;
    Ok(())
}
