//! `strata`: the one command that runs a whole cluster on a laptop.
//! Wiring only: the commands are declared in `cli.rs`; see `up.rs`,
//! `bench.rs`, `monitor_cli.rs`, `cluster_cli.rs` and `observe_cli.rs`.

mod api_token;
mod bench;
mod bench_monitors;
mod cli;
mod cluster_cli;
mod cluster_table;
mod device_cli;
mod edge_proc;
mod global_cli;
mod monitor_cli;
mod monitor_spec;
mod monitor_table;
mod observe_cli;
mod up;
mod up_banner;
mod up_summary;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // `strata up` runs every tier in this process: whatever a library
    // creates with default modes (raft-engine's log) is owner only.
    strata_net::files::restrict_umask();
    cli::run(cli::Cli::parse()).await
}
