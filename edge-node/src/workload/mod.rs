//! The workload layer: runs the instances the region places on this edge
//! (device monitors, in wasmtime sandboxes) next to the devices, feeds them
//! the telemetry they selected, and puts their alerts and derived metrics
//! into the spool.
//!
//! ```text
//!  region ─ assignments ─▶ WorkloadHost::apply ─┐        (desired sets, lease renewals)
//!                                                ▼
//!                   ┌──────────── WorkloadDriver (one tokio task) ────────────┐
//!                   │  Lifecycle (pure core): events in ─▶ commands out       │
//!                   │  executes: FetchModule/CompileModule (store, cache),   │
//!                   │  Start/Stop/Resize/PersistState (sandbox, slots),      │
//!                   │  Report; publishes the routing table and the status   │
//!                   └──────┬───────────────────────────────▲──────────────────┘
//!                publishes │ Table (Snapshot)               │ WorkerReport (fault, checkpoint)
//!                          ▼                                │
//!  ingest ─durable─▶ Router ─▶ per-instance bounded queues ─▶ worker threads ─▶ outputs ─▶ spool
//!                             (full: drop + count)           on_batch, round-robin   (stamped with
//!                                                                                     the fence)
//! ```
//!
//! One owner per piece of state: the driver owns the core, the slots, the
//! modules and the instances' state; the workers own a sandbox for the
//! length of a callback; the handle only sends requests and reads what the
//! driver published. The one structure ingest reads without asking is the
//! routing table, published by its only writer (see [`router`]).
//!
//! Offline autonomy: assignments, modules, compiled modules and kv state
//! live under `<data-dir>/monitors/`; on start the host reloads them and
//! starts the `keep` instances without any hub, from the compiled-module
//! cache. New assignment sets arrive through
//! [`crate::uplink::AssignmentTarget`] and are reconciled by generation,
//! module hash and fencing token, so unchanged instances keep running.
//! `replace-after` instances run only under a lease the region renews
//! ([`lifecycle`]'s `lease`).
//!
//! State moves too: each instance's kv state is checkpointed into the
//! spool as a fenced `SpoolEntry::Checkpoint` (when it changed, at most
//! every `monitors.checkpoint-interval-ms`, and on a clean stop), so it
//! reaches the region exactly once like any output. The region hands the
//! last checkpoint it holds to a replacement (or to a per-edge instance
//! following its devices) inline in its allocation, and the driver starts
//! the instance from it unless its own state is newer ([`checkpoint`]).
//!
//! Sharded monitors (`placement.shard`) may run several instances here,
//! one per region slot ([`InstanceKey::sharded`]). The router sends each
//! device's records to exactly one of them by consistent hashing over the
//! local slots, and when those change the driver hands the moved devices'
//! kv state over in record order: gainers paused, table switched, losers
//! drained and their moved keys imported into the gainers, states
//! persisted, gainers resumed ([`handover`] states the procedure and the
//! kv-key contract `<prefix>/<device>/...`).
//!
//! # Layout
//! - the core, pure: [`lifecycle`] (the instance state machine: modules,
//!   admission, restarts, leases, resizes), with its vocabulary in
//!   [`model`] and [`command`], and pure helpers [`admission`],
//!   [`backoff`], [`resize`].
//! - [`desired`]: the thin adapter from the region's `MonitorSpec`s to the
//!   core's desired instances.
//! - `driver`: [`WorkloadDriver`](driver), the task that owns the core and
//!   executes its commands.
//! - [`handle`]: [`WorkloadHost`], the public handle (route, status, apply,
//!   lease renewals, shutdown).
//! - [`sandbox`]: the sandbox trait, the wasmtime driver, the host ABI, the
//!   compiled-module disk cache and the conformance suite.
//! - [`router`]: the (tenant, device, tags) → instances match on the
//!   ingest path; `slot`: one started instance's queue, sandbox cell and
//!   counters; `executor`: the worker threads; `output`: stamping outputs
//!   and the spool writer.
//! - [`handover`]: the pure half of sharding (which kv keys are whose
//!   device's, which instances lose and gain in a slot change, where each
//!   moved key goes); `driver/handover` executes it.
//! - [`checkpoint`]: the pure policy of state checkpoints to the region
//!   (when an instance's kv state goes into the spool, and whether a new
//!   instance starts from the checkpoint the region handed it).
//! - [`store`]: atomic persistence of assignments, modules and kv state
//!   (`atomic_file` writes every file); `snapshot`: the single-writer
//!   publication cell; [`status`]: what is published and reported.
//! - [`config`]: `[monitors]` in the edge config; [`metrics`]:
//!   `strata_monitor_*` counters.

pub mod admission;
pub(crate) mod atomic_file;
pub mod backoff;
pub mod checkpoint;
pub mod command;
pub mod config;
pub mod desired;
mod driver;
mod executor;
pub mod handle;
pub mod handover;
pub mod lifecycle;
pub mod metrics;
pub mod model;
mod output;
pub mod resize;
pub mod router;
pub mod sandbox;
pub(crate) mod slot;
mod snapshot;
pub mod status;
pub mod store;

#[cfg(test)]
mod boot_tests;
#[cfg(test)]
mod checkpoint_handle_tests;
#[cfg(test)]
mod handle_tests;
#[cfg(test)]
mod shard_handle_tests;

pub use config::{LifecycleConfig, WorkloadConfig};
pub use driver::NodeSampleFn;
pub use handle::{HostOptions, WorkloadError, WorkloadHost};
pub use metrics::WorkloadMetrics;
pub use model::{Budget, DesiredInstance, DesiredSet, DisconnectPolicy, Fence, InstanceKey};
pub use router::RouteStats;
pub use slot::InstanceStats;
pub use status::WorkloadStatus;
pub use store::{Assignments, StoreError, WorkloadStore};
