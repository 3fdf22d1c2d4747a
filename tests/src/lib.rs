//! Test harness: spawns the real Strata binaries with generated configs,
//! waits for their ready lines, and kills, restarts and inspects them.
//!
//! # Layout
//! - [`proc`]: one child process: spawn, ready line, SIGKILL, restart, logs.
//! - [`cluster`]: a whole cluster (hubs, edges, central) in a temp dir with
//!   its own PKI and free ports, plus an HTTP client for central's API.
//! - [`central_group`]: central replicas alone (their own Raft group).
//! - [`wait`]: polling helpers with deadlines.
//! - [`udp_proxy`]: a UDP proxy a test can cut (an edge's partition).
//! - [`tcp_proxy`]: a TCP proxy a test can cut (a browser losing central).
//! - [`liveness`]: edge liveness and the region event stream, as central
//!   serves them.
//!
//! The binaries are taken from the cargo target directory next to the test
//! executable; `./scripts/test` builds them first. Cluster tests run one at
//! a time (see [`cluster::serial`]) because each already loads both cores.
#![allow(clippy::unwrap_used)]

pub mod central_group;
pub mod cluster;
pub mod fleet;
pub mod liveness;
pub mod monitors;
pub mod proc;
pub mod tcp_proxy;
pub mod udp_proxy;
pub mod wait;

pub use cluster::{Api, Cluster, ClusterOpts};
pub use proc::Proc;
pub use wait::wait_until;

/// p50 and p99 of sorted, non-empty samples (nearest rank), for the
/// measurements some ignored tests print.
pub fn percentiles(sorted: &[u64]) -> (u64, u64) {
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}
