//! Strata's wire vocabulary, shared by every tier.
//!
//! This crate is pure: it has no async runtime, no sockets and no clock. It
//! must not depend on tokio, quinn or raft, so that decoders can be fuzzed and
//! property-tested in isolation (the quinn-proto rule).
//!
//! # Layout
//! - [`telemetry`]: the telemetry record, the MQTT topic scheme
//!   `strata/<tenant>/<device>/telemetry` and the JSON / compact binary
//!   payload decoders, each rejection carrying a [`telemetry::RejectReason`].
//! - [`frame`]: length-prefixed framing with a hard maximum frame size that is
//!   checked before anything is allocated, and bincode 2 bodies.
//! - [`messages`]: the versioned handshake and the request/response types for
//!   edge ↔ hub, hub ↔ hub (Raft) and central/CLI ↔ hub.
//! - [`membership`]: the leader's view of each member in a hub status, and
//!   why a membership change was refused.
//! - [`monitoring`]: spool entries (telemetry, alerts, derived metrics),
//!   the alert query and what edges report about monitor instances.
//! - [`workload`]: the device-monitor spec (TOML/JSON/bincode), its
//!   field-level validation and the device selector's glob matcher.
//! - [`liveness`]: the edge heartbeat with its boot id, what the hub's
//!   failure detector decides about an edge, and the region event log.
//! - [`scheduling`]: what the region scheduler tells edges (their
//!   allocations with fencing tokens and disconnect policy) and clients
//!   (allocations and evaluations with their reasons), and the node facts
//!   edges report (labels, pools).
//!
//! Depends on `strata-sched` (pure as well) for the placement intent in a
//! spec and the scheduler's vocabulary; nothing else.

pub mod frame;
pub mod liveness;
pub mod membership;
pub mod messages;
pub mod monitoring;
pub mod scheduling;
pub mod telemetry;
pub mod workload;

pub use frame::{decode_frame, encode_frame, FrameError, MAX_FRAME_LEN};
pub use membership::{MembershipRefusal, PeerProgress};
pub use messages::*;
pub use monitoring::{AlertRecord, Severity, SpoolEntry};
pub use telemetry::{DeviceRef, Metric, PayloadError, RejectReason, Tag, TelemetryRecord};

/// The wire protocol version spoken by this build. Bumped on any incompatible
/// change; the handshake refuses peers that speak another version.
/// Version 6: `SpoolEntry::Checkpoint` and `EdgeAllocation::checkpoint`.
/// Version 7: `Hello::boot`.
/// Version 8: `EdgeStatus::{sync_lag_ms, cert_expires_ms}`,
/// `HubStatus::cert_expires_ms`, `DeviceInfo::edge`, `InstanceStatus::slot`
/// sharded placement intents (`placement.shard`) and
/// `HubRequest::SearchDevices`.
pub const PROTOCOL_VERSION: u16 = 8;
