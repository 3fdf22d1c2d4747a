//! `strata`: the one command that runs a whole cluster on a laptop.
//! Wiring only; see `up.rs`, `bench.rs`, `monitor_cli.rs` and
//! `cluster_cli.rs`.

mod api_token;
mod bench;
mod bench_monitors;
mod cluster_cli;
mod cluster_table;
mod device_cli;
mod edge_proc;
mod global_cli;
mod monitor_cli;
mod monitor_spec;
mod monitor_table;
mod up;
mod up_banner;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Strata: edge-to-cloud telemetry and workloads.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start central, two regions (north and south) of hubs and edge nodes,
    /// and a simulated fleet; --single-region runs one region.
    Up(up::UpOptions),
    /// Measure ingest: Strata's durable committed rate and PUBACK latency,
    /// and Mosquitto's with the same load generator.
    Bench(bench::BenchArgs),
    /// Measure device monitors: cold start, dispatch overhead, instances
    /// per edge at a telemetry rate, and the edge binary's size and memory.
    BenchMonitors(bench_monitors::MonitorBenchArgs),
    /// Create the cluster CA (if needed) and certificates for named nodes.
    Pki {
        /// Directory for the CA and certificates.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Node names (repeatable), e.g. --node hub-1 --node edge-1.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Device client certificates for MQTT over TLS (repeatable), from
        /// a device CA beside the cluster CA; CN = the name.
        #[arg(long = "device")]
        devices: Vec<String>,
    },
    /// Manage the device credentials file edges authenticate MQTT clients
    /// against (add, list, remove).
    #[command(subcommand)]
    Device(device_cli::DeviceCmd),
    /// Submit, list, inspect and delete device monitors (via central's API).
    #[command(subcommand)]
    Monitor(monitor_cli::MonitorCmd),
    /// Alerts raised by device monitors, newest first (via central's API).
    Alerts(monitor_cli::AlertsArgs),
    /// Edge nodes with their liveness, backlog and use (via central's API).
    Edges(cluster_cli::EdgesArgs),
    /// Regions central federates: health, capacity, device locality.
    Regions(global_cli::RegionsArgs),
    /// Global workloads and their split over regions.
    Workloads(global_cli::WorkloadsArgs),
    /// Submit, inspect or delete a global workload.
    #[command(subcommand)]
    Workload(global_cli::WorkloadCmd),
    /// A global workload's scale decisions with their inputs.
    ScaleHistory(global_cli::ScaleHistoryArgs),
    /// The region's events (edges up, suspect, down, back), or follow them
    /// as they happen with --follow (via central's API).
    Events(cluster_cli::EventsArgs),
    /// Run one edge node from its config: what the `edge-node` binary runs.
    /// `strata up` starts its edges this way, one process each.
    #[command(hide = true)]
    EdgeNode {
        /// Path to the edge's TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    // `strata up` runs every tier in this process: whatever a library
    // creates with default modes (raft-engine's log) is owner only.
    strata_net::files::restrict_umask();
    let cli = Cli::parse();
    if matches!(
        cli.cmd,
        Cmd::Bench(_)
            | Cmd::BenchMonitors(_)
            | Cmd::Monitor(_)
            | Cmd::Alerts(_)
            | Cmd::Edges(_)
            | Cmd::Events(_)
            | Cmd::Device(_)
    ) {
        // Only problems: output is the command's own (stdout / stderr).
        quiet_tracing();
    } else {
        strata_net::process::init_tracing();
    }
    let result = match cli.cmd {
        // Their own messages and exit codes (2: fix the input, 1: retry).
        Cmd::Monitor(cmd) => return monitor_cli::monitor(cmd).await,
        Cmd::Device(cmd) => return device_cli::device(cmd),
        Cmd::Alerts(args) => return monitor_cli::alerts(args).await,
        Cmd::Edges(args) => return cluster_cli::edges(args).await,
        Cmd::Regions(args) => return global_cli::regions(args).await,
        Cmd::Workloads(args) => return global_cli::workloads(args).await,
        Cmd::Workload(cmd) => return global_cli::workload(cmd).await,
        Cmd::ScaleHistory(args) => return global_cli::scale_history(args).await,
        Cmd::Events(args) => return cluster_cli::events(args).await,
        Cmd::EdgeNode { config } => return edge_node::run_config_file(&config).await,
        Cmd::Up(o) => match o.check() {
            Ok(()) => up::up(o, strata_net::process::shutdown_on_signals()).await,
            Err(e) => Err(e),
        },
        Cmd::Bench(args) => bench::bench(args, strata_net::process::shutdown_on_signals()).await,
        Cmd::BenchMonitors(args) => bench_monitors::bench_monitors(args).await,
        Cmd::Pki {
            dir,
            nodes,
            devices,
        } => up::pki(&dir, &nodes, &devices),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // As `main() -> anyhow::Result` used to print it.
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Tracing at `warn` unless `RUST_LOG` says otherwise.
fn quiet_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
