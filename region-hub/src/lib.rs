//! Strata region hub: a Raft group (1, 3 or 5 replicas) per region that
//! durably stores the telemetry batches of the region's edge nodes exactly
//! once, keeps the region's state (edges, devices) and answers central's
//! queries.
//!
//! Built on `strata-consensus` (tikv's `raft` RawNode with `raft-engine` as
//! the durable log), the Raft glue it shares with central.
//! The Raft log doubles as the telemetry store's write-ahead log: records
//! live in the store's memtable until a checkpoint, and the log is only
//! compacted up to a checkpointed index.
//!
//! # Layout
//! - [`fsm`]: the pure replicated state machine `apply(state, index, bytes)`.
//! - [`store`]: the per-replica telemetry store (memtable + checkpoints).
//! - [`raft`]: the hub's Raft machine (region state + telemetry store,
//!   background checkpoints, the views and signals it sends the rest of
//!   the hub) and the handle the service and drivers use; the node core,
//!   log, membership and transport are `strata-consensus`.
//! - [`service`]: the client-facing QUIC server (edges, central, tools).
//! - [`liveness`]: the leader's edge failure detector (heartbeats as soft
//!   state; only its decisions are replicated) and what reads see of it.
//! - [`admission`]: validation of a submitted monitor against the region
//!   (spec fields, placement names, whether any edge could ever take it).
//! - [`scheduler`]: the leader's scheduler — a sans-IO core over a
//!   `strata_sched::ClusterSnapshot` kept current from the applied log,
//!   evaluations, the single plan applier, leases — and its driver.
//! - [`artifact`]: monitor module validation (wasmparser) and hashing.
//! - [`config`]: `hub.toml` and its validation.
//! - [`metrics`]: Prometheus metrics.
//! - [`hub`]: wiring; [`run`] is the entry point of the binary.
//!
//! The `fsm` module must not depend on Raft, IO or the clock.

pub mod admission;
pub mod artifact;
pub mod config;
pub mod fsm;
pub mod hub;
pub mod liveness;
pub mod metrics;
pub mod raft;
pub mod scheduler;
pub mod service;
pub mod store;

pub use config::HubConfig;
pub use hub::{run, start, HubError, Listeners, RunningHub};
