//! The device-monitor host: runs the local scheduler's decisions in the
//! sandbox runtime, feeds instances the telemetry they selected, and puts
//! their alerts and derived metrics into the spool.
//!
//! ```text
//! SpoolSink::submit ──durable──▶ MonitorHost::route ──▶ per-instance bounded queues
//!                                                          │ (full: drop + count)
//!                                       worker threads ◀───┘ on_batch, fair round-robin
//!                                          │ alerts/metrics          │ faults
//!                                          ▼                         ▼
//!                         bounded channel → spool append    scheduler driver task
//!                                                            (LocalScheduler, Start/Stop/
//!                                                             Resize, backoff, usage, state)
//! ```
//!
//! Offline autonomy: assignments, modules and kv state live under
//! `<data-dir>/monitors/` ([`store`]); on start the host reloads them and
//! starts the instances without any hub. New assignment sets arrive through
//! [`crate::uplink::AssignmentTarget`] and are reconciled by generation and
//! module hash, so unchanged instances keep running.
//!
//! # Layout
//! - [`config`]: `[monitors]` in the edge config.
//! - [`store`]: atomic persistence of assignments, modules and kv state.
//! - `slot`: one admitted instance: queue, sandbox, counters.
//! - `router`: the cached (tenant, device, tags) → instances match.
//! - `executor`: worker threads running callbacks; output stamping and the
//!   spool batching task.
//! - `driver`: the tokio task that owns the `LocalScheduler`.
//! - [`host`]: [`MonitorHost`], the public handle.
//! - [`metrics`]: prometheus counters.

pub mod config;
mod driver;
mod executor;
pub mod host;
pub mod metrics;
mod router;
mod slot;
pub mod store;

#[cfg(test)]
mod host_tests;

pub use config::MonitorsConfig;
pub use host::{HostOptions, MonitorError, MonitorHost, MonitorStatus, NodeSampleFn};
pub use metrics::HostMetrics;
pub use router::RouteStats;
pub use slot::InstanceStats;
pub use store::{Assignments, MonitorStore, StoreError};

use strata_protocol::workload::MonitorSpec;

use crate::runtime::InstanceFault;
use crate::sched::InstanceKey;

/// What reaches the scheduler driver task.
#[derive(Debug)]
pub(crate) enum HostEvent {
    /// A new full desired set (at boot from disk, later from the hub).
    Desired {
        /// Assignments version.
        version: u64,
        /// Every monitor assigned here.
        monitors: Vec<MonitorSpec>,
    },
    /// A sandbox faulted in a callback.
    Exited {
        /// Instance.
        key: InstanceKey,
        /// Generation it ran.
        generation: u64,
        /// The fault.
        fault: InstanceFault,
    },
    /// Drain and stop; the reply says it is done.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}
