//! The `strata` command line: every subcommand, and which function runs
//! it. Exit codes are the same for every command that talks to central:
//! 0 done, 2 bad input or refused (4xx: the request must change), 1 central
//! unreachable or failing (retry later).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::{
    bench, bench_monitors, cluster_cli, device_cli, global_cli, monitor_cli, observe_cli, up,
};

/// Strata: edge-to-cloud telemetry and workloads.
#[derive(Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start central, two regions (north and south) of hubs and edge nodes,
    /// and a simulated fleet; --single-region runs one region.
    Up(up::UpOptions),
    /// One screen: central, regions, edges, devices and recent alerts
    /// (via central's API).
    Status(observe_cli::StatusArgs),
    /// Regions central federates: health, capacity, device locality.
    Regions(global_cli::RegionsArgs),
    /// Edge nodes with their liveness, backlog and use (via central's API).
    Edges(cluster_cli::EdgesArgs),
    /// Devices with stored telemetry, by region (via central's API).
    Devices(observe_cli::DevicesArgs),
    /// A device's readings, raw or downsampled (--step); --follow prints
    /// new ones as they are stored.
    Telemetry(observe_cli::TelemetryArgs),
    /// Alerts raised by device monitors, newest first; --follow prints new
    /// ones as they are stored (via central's API).
    Alerts(monitor_cli::AlertsArgs),
    /// Submit, list, inspect and delete device monitors (via central's API).
    #[command(subcommand)]
    Monitor(monitor_cli::MonitorCmd),
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
    /// Print a shell completion script, e.g.
    /// `strata completions bash > /etc/bash_completion.d/strata`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run one edge node from its config: what the `edge-node` binary runs.
    /// `strata up` starts its edges this way, one process each.
    #[command(hide = true)]
    EdgeNode {
        /// Path to the edge's TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match &cli.cmd {
        // Logs are the product here.
        Cmd::Bench(_) | Cmd::BenchMonitors(_) | Cmd::Pki { .. } | Cmd::EdgeNode { .. } => {
            strata_net::process::init_tracing()
        }
        // `strata up` sets up its own: a file, or stderr with --verbose.
        Cmd::Up(_) => {}
        // Only problems: output is the command's own (stdout / stderr).
        _ => quiet_tracing(),
    }
    let result = match cli.cmd {
        // Their own messages and exit codes (2: fix the input, 1: retry).
        Cmd::Monitor(cmd) => return monitor_cli::monitor(cmd).await,
        Cmd::Device(cmd) => return device_cli::device(cmd),
        Cmd::Alerts(args) if args.follow => return observe_cli::follow_alerts(args).await,
        Cmd::Alerts(args) => return monitor_cli::alerts(args).await,
        Cmd::Status(args) => return observe_cli::status(args).await,
        Cmd::Devices(args) => return observe_cli::devices(args).await,
        Cmd::Telemetry(args) => return observe_cli::telemetry(args).await,
        Cmd::Edges(args) => return cluster_cli::edges(args).await,
        Cmd::Regions(args) => return global_cli::regions(args).await,
        Cmd::Workloads(args) => return global_cli::workloads(args).await,
        Cmd::Workload(cmd) => return global_cli::workload(cmd).await,
        Cmd::ScaleHistory(args) => return global_cli::scale_history(args).await,
        Cmd::Events(args) => return cluster_cli::events(args).await,
        Cmd::EdgeNode { config } => return edge_node::run_config_file(&config).await,
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut out);
            return match std::io::stdout().write_all(&out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Cmd::Up(o) => match o.check() {
            Ok(()) => match up::init_logs(&o) {
                Ok(()) => up::up(o, strata_net::process::shutdown_on_signals()).await,
                Err(e) => Err(e),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_name_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut out);
            let text = String::from_utf8(out).unwrap();
            for cmd in ["status", "devices", "telemetry", "alerts", "scale-history"] {
                assert!(text.contains(cmd), "{shell:?} completion lacks {cmd}");
            }
        }
    }
}
