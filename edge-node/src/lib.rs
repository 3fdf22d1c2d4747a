//! Strata edge node: runs on an edge gateway, takes device telemetry over
//! MQTT, makes it durable in a local spool, and streams it to the region's
//! hubs over QUIC. It keeps accepting telemetry while no hub is reachable.
//!
//! # Layout
//! - [`ingress`]: the embedded MQTT 3.1.1/5 server for devices (PUBACK only
//!   after the spool commit; device logins and topic ACLs checked offline
//!   against a hot-reloaded credentials file; optional MQTT over TLS) and
//!   bridge mode from an existing broker.
//! - [`spool`]: the durable segmented log with group commit, torn-tail
//!   recovery and backpressure, behind a small filesystem trait.
//! - [`uplink`]: a sans-IO session core and its quinn driver that batch
//!   spool ranges to the hub leader, resend after failures and trim the
//!   spool once the hub has committed.
//! - [`workload`]: the device-monitor workloads: a pure instance
//!   lifecycle core (modules, admission and preemption, restart backoff,
//!   crash loops, resizing, leases and fencing tokens) and the one driver
//!   that executes it on wasmtime sandboxes (with a compiled-module disk
//!   cache), routes durable telemetry to instances through bounded queues,
//!   runs them on a worker pool, spools their outputs and persists
//!   assignments, modules and state for offline restarts.
//! - [`sync_lag`]: the age of the oldest record the region has not yet
//!   acknowledged, reported with each heartbeat.
//! - [`sysinfo`]: the node's CPU, memory, disk and network use from /proc
//!   and statvfs, for heartbeats and resize decisions.
//! - [`config`]: the TOML config, validated as a whole.
//! - [`node`]: wiring; [`run`] starts a node from a config, and
//!   [`run_config_file`] is what the `edge-node` binary (and `strata up`'s
//!   edge processes) call.
//!
//! The crate must not depend on the region hub or central: it speaks to
//! them only through `strata-protocol` over `strata-net`.

pub mod config;
pub mod ingress;
pub mod node;
pub mod spool;
pub mod sync_lag;
pub mod sysinfo;
pub mod uplink;
pub mod workload;

pub use config::EdgeConfig;
pub use node::{run, EdgeError, EdgeNode};

/// Loads, checks and runs the edge config at `path` until SIGINT or
/// SIGTERM, printing the ready line and errors like every Strata binary:
/// the whole `edge-node --config` program after tracing is set up. Exit
/// code 2 means the config is unusable (every problem is listed), 1 that
/// the node failed while starting or running.
pub async fn run_config_file(path: &std::path::Path) -> std::process::ExitCode {
    use std::process::ExitCode;
    use strata_net::process;
    let cfg: EdgeConfig = match process::load_toml(path)
        .and_then(|c: EdgeConfig| process::check_problems(path, c.problems()).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = process::shutdown_on_signals();
    let name = cfg.name.clone();
    let result = async {
        let node = EdgeNode::start(cfg).await?;
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
