//! `region-hub --config hub.toml`: runs one region hub replica.
//! Wiring only: arguments, config, tracing, signals, then `region_hub::start`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use region_hub::HubConfig;
use strata_net::process;

/// One replica of a Strata region hub (a Raft-replicated telemetry store).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Path to the hub's TOML configuration.
    #[arg(long, short)]
    config: PathBuf,
    /// Only check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn load(path: &PathBuf) -> anyhow::Result<HubConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let cfg = HubConfig::from_toml(&text)
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(cfg)
}

#[tokio::main]
async fn main() -> ExitCode {
    // Whatever raft-engine or anything else creates: owner only.
    strata_net::files::restrict_umask();
    process::init_tracing();
    let args = Args::parse();
    // Exit code 2: the config is unusable; every problem is listed.
    let cfg = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    match serve(cfg, &args.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: HubConfig, path: &std::path::Path) -> anyhow::Result<()> {
    let shutdown = process::shutdown_on_signals();
    let (region, id) = (cfg.region.clone(), cfg.id);
    let listeners = region_hub::Listeners::bind(&cfg)?;
    let hub = region_hub::start(cfg, listeners, shutdown)
        .await
        .with_context(|| format!("region hub ({})", path.display()))?;
    process::announce_ready(&serde_json::json!({
        "kind": "region-hub",
        "region": region,
        "id": id,
        "peer": hub.peer_addr.to_string(),
        "client": hub.client_addr.to_string(),
        "metrics": hub.metrics_addr.map(|a| a.to_string()),
    }));
    hub.wait()
        .await
        .with_context(|| format!("region hub ({})", path.display()))
}
