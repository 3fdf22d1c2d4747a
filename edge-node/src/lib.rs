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
//! - [`sched`]: the pure local scheduler for device-monitor instances:
//!   admission and preemption, restart backoff, crash-loop detection,
//!   resizing, reconcile by spec generation.
//! - [`runtime`]: sandboxes for monitor instances behind a driver trait:
//!   the wasmtime driver (fuel, epoch deadlines, memory limiter, host ABI).
//! - [`sysinfo`]: the node's CPU, memory, disk and network use from /proc
//!   and statvfs, for heartbeats and resize decisions.
//! - [`monitor`]: the device-monitor host: routes durable telemetry to
//!   monitor instances (bounded queues), runs them on a worker pool, spools
//!   their alerts and derived metrics, drives the local scheduler and
//!   persists assignments, modules and state for offline restarts.
//! - [`config`]: the TOML config, validated as a whole.
//! - [`node`]: wiring; [`run`] is what the binary calls.
//!
//! The crate must not depend on the region hub or central: it speaks to
//! them only through `strata-protocol` over `strata-net`.

pub mod config;
pub mod ingress;
pub mod monitor;
pub mod node;
pub mod runtime;
pub mod sched;
pub mod spool;
pub mod sysinfo;
pub mod uplink;

pub use config::EdgeConfig;
pub use node::{run, EdgeError, EdgeNode};
