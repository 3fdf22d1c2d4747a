//! The region's replicated state machine: a pure `apply(state, index, bytes)`.
//!
//! No IO, no clock, no Raft: every replica applies the same committed entries
//! in the same order and must reach the same state and emit the same records
//! for its telemetry store. Anything time-dependent (`received_ms`) is stamped
//! by the leader into the command before it is proposed.
//!
//! # Layout
//! - this file: the versioned [`CommandEnvelope`], [`Command`] encoding and [`apply`].
//! - [`state`]: [`RegionState`] — edges, devices and the dedup state.
//! - [`dedup`]: the per-device window of recent readings and the reading
//!   fingerprint (layer 2 below).
//! - [`alerts`]: [`AlertIndex`], the bounded, queryable alerts of the region.
//! - [`workloads`]: [`Workloads`] — monitors, artifacts, assignments version.
//! - [`interval`]: [`IntervalSet`], the compact "which sequence numbers are stored" set.
//! - [`liveness`]: each edge's last liveness decision ([`EdgeTransition`])
//!   and the region's bounded event log ([`EventLog`]).
//! - [`allocs`]: [`Scheduling`] — allocations, fencing tokens, evaluation
//!   history, edge facts; [`plan`]: applying a verified plan
//!   ([`PlanCommit`]) with the checks the state machine repeats.
//! - [`checkpoints`]: [`Checkpoints`] — the last state checkpoint of each
//!   monitor instance, handed to its replacement.
//! - [`sched_view`]: the scheduler's nodes, workloads and allocations over
//!   this state, and the [`SchedChange`]s each applied entry makes.
//! - `legacy`: decoding of protocol-version-1 entries, pre-scheduler
//!   monitor puts and state formats 1 to 5.
//!
//! # Scheduling
//! A workload's spec is replicated by `PutWorkload` / `DeleteWorkload`; the
//! leader's scheduler (`crate::scheduler`) decides where instances run and
//! replicates each decision as `ApplyPlan`, which assigns fencing tokens
//! and appends the scheduling events. Edges report instance states in
//! their replicated reports (`EdgeReport`, rate-limited by the failure
//! detector), which also carry their labels and pools.
//!
//! # Edge heartbeats
//! Heartbeats are not Raft entries: the leader keeps them as soft state
//! (`crate::liveness`). Only its liveness decisions are replicated
//! ([`Command::EdgeTransition`]), plus each edge's latest report when it
//! changed materially or every `liveness.report-interval`
//! ([`Command::EdgeHeartbeat`], the command older hubs wrote for every
//! heartbeat), so that followers and a new leader are not blind.
//!
//! # Exactly-once
//! Two layers, both inside [`apply`], so every replica drops the same records:
//! 1. **Edge resends.** Per `(edge, spool epoch)`, the edge sequence numbers
//!    already stored: a resent or re-cut batch stores only its new records,
//!    in any arrival order, however late.
//! 2. **Device retransmissions.** Per `(tenant, device)`, the exact keys of
//!    the device's last [`DEVICE_DEDUP_WINDOW`] stored readings: `seq`
//!    (or its absence), `ts_ms` and a 64-bit fingerprint of the content. A
//!    reading is dropped only when all of them match a stored reading, so a
//!    device's MQTT QoS 1 retransmission is dropped even when it reaches the
//!    region through another edge (as a new spool record), while a counter
//!    restart, a clock jump or a spoofed reading with the device's upcoming
//!    seqs can never make the region drop a different reading. A
//!    retransmission whose original has left the window is stored twice;
//!    [`dedup`] says why the window is enough.
//!
//! Every spool entry kind passes layer 1. Telemetry then passes layer 2;
//! state checkpoints go to [`Checkpoints`] (fenced, bounded, see
//! [`checkpoints`]);
//! derived metrics (no device seq) go to the store as telemetry
//! (`DerivedMetricRecord::to_telemetry`); alerts go to the replicated
//! [`AlertIndex`]. So a resent alert is indexed once, like a reading.
//!
//! What each layer drops is counted per reason in [`Outcome::Committed`]
//! (the hub's `strata_hub_duplicate_records_total{reason}`), per edge
//! (`EdgeInfo::resends_dropped`) and per device
//! (`DeviceInfo::retransmissions_dropped`, and `seq_reuses` for readings
//! stored although their seq was recently used by another reading).
//!
//! The edge sets are bounded ([`DEDUP_MAX_INTERVALS`]); see
//! [`IntervalSet::enforce_cap`] for the trade-off, counted in
//! [`RegionState::dedup_gaps_merged`].
//!
//! # Versioning
//! Each Raft entry holds a [`CommandEnvelope`] `{kind, ignorable, body}`. A
//! replica that does not know `kind` skips the entry when `ignorable` is set
//! and otherwise halts with [`FsmError::UnknownCommand`] (nomad `fsm.go`), so
//! a mixed-version group never silently diverges on data-bearing commands.
//! A kind's body layout never changes: when a body type changed (protocol
//! version 2: batches of spool entries, richer heartbeats) the command got a
//! new kind and the old kind is still decoded (`legacy`).

pub mod alerts;
pub mod allocs;
pub mod checkpoints;
pub mod dedup;
pub mod interval;
mod legacy;
pub mod liveness;
pub mod plan;
pub mod sched_view;
pub mod state;
pub mod workloads;

use bincode::{Decode, Encode};
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::workload::MonitorSpec;
use strata_protocol::{EdgeStatus, TelemetryBatch, TelemetryRecord};

pub use alerts::AlertIndex;
pub use allocs::{AllocRecord, FenceCheck, Scheduling};
pub use checkpoints::{CheckpointCounts, CheckpointKey, CheckpointLimits, Checkpoints};
pub use dedup::DEVICE_DEDUP_WINDOW;
pub use interval::IntervalSet;
pub use liveness::{EdgeTransition, EventLog};
pub use plan::{PlanApplied, PlanCommit};
pub use sched_view::{group_of, measured, node_of, workload_of, SchedChange};
pub use state::{
    add_device_dedup, DeviceDedup, DeviceMove, EdgeView, RegionState, DEDUP_MAX_INTERVALS,
};
pub use workloads::{MonitorEntry, Workloads};

/// Envelope kind of a protocol-version-1 store batch (telemetry records
/// only); decoded into [`Command::StoreBatch`], no longer written.
pub const KIND_STORE_BATCH: u16 = 1;
/// Envelope kind of a protocol-version-1 heartbeat; decoded into
/// [`Command::EdgeHeartbeat`], no longer written.
pub const KIND_EDGE_HEARTBEAT: u16 = 2;
/// Envelope kind of [`Command::StoreBatch`] (spool entries). Not ignorable.
pub const KIND_STORE_ENTRIES: u16 = 3;
/// Envelope kind of [`Command::EdgeHeartbeat`] (version-2 status). Ignorable.
pub const KIND_EDGE_STATUS: u16 = 4;
/// Envelope kind of [`Command::PutArtifact`]. Not ignorable.
pub const KIND_PUT_ARTIFACT: u16 = 5;
/// Envelope kind of [`Command::PutMonitor`]. Not ignorable.
pub const KIND_PUT_MONITOR: u16 = 6;
/// Envelope kind of [`Command::DeleteMonitor`]. Not ignorable.
pub const KIND_DELETE_MONITOR: u16 = 7;
/// Envelope kind of [`Command::EdgeTransition`]. Ignorable: a replica
/// that skips it only lacks a liveness decision and its event.
pub const KIND_EDGE_TRANSITION: u16 = 8;
/// Envelope kind of [`Command::PutWorkload`]. Not ignorable.
pub const KIND_PUT_WORKLOAD: u16 = 9;
/// Envelope kind of [`Command::DeleteWorkload`]. Not ignorable.
pub const KIND_DELETE_WORKLOAD: u16 = 10;
/// Envelope kind of [`Command::ApplyPlan`]. Not ignorable.
pub const KIND_APPLY_PLAN: u16 = 11;
/// Envelope kind of [`Command::EdgeReport`]. Not ignorable: it moves
/// allocations' client states, which scheduling depends on.
pub const KIND_EDGE_REPORT: u16 = 12;
/// Envelope kind of [`Command::StoreEntries`] (a batch with state
/// checkpoints and the limits they are held to). Not ignorable.
pub const KIND_STORE_ENTRIES_LIMITED: u16 = 13;

/// Largest envelope or body decoded, in bytes (64 MiB): an allocation limit so
/// a corrupt length inside an entry cannot exhaust memory.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_COMMAND_BYTES>()
}

/// Envelope stored in each Raft entry: versioned and forward compatible.
/// Unknown kinds carry `ignorable`, so a mixed-version group keeps working
/// (nomad fsm.go): an old replica skips an ignorable unknown command and
/// halts (returns an error) on a non-ignorable one.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CommandEnvelope {
    /// Command kind (`KIND_*`).
    pub kind: u16,
    /// Whether a replica that does not know `kind` may skip the entry.
    pub ignorable: bool,
    /// bincode body of the command.
    pub body: Vec<u8>,
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Store an edge's batch. `received_ms` is stamped by the leader when
    /// proposing (apply must not read a clock).
    StoreBatch {
        /// The batch as the edge sent it.
        batch: TelemetryBatch,
        /// Leader's clock when the batch arrived, ms since the Unix epoch.
        received_ms: i64,
    },
    /// Store an edge's batch that carries state checkpoints, held to the
    /// leader's checkpoint limits (stamped like `received_ms`, so every
    /// replica applies the same ones). Batches without checkpoints are
    /// written as [`Command::StoreBatch`], which older replicas read.
    StoreEntries {
        /// The batch as the edge sent it.
        batch: TelemetryBatch,
        /// Leader's clock when the batch arrived, ms since the Unix epoch.
        received_ms: i64,
        /// The leader's `[checkpoints]` limits.
        limits: CheckpointLimits,
    },
    /// An edge's status report: every heartbeat in older hubs; now the
    /// leader's rate-limited copy of its soft state (see the module docs).
    EdgeHeartbeat {
        /// The status the edge reported.
        status: EdgeStatus,
        /// Leader's clock when the heartbeat arrived, ms since the Unix epoch.
        received_ms: i64,
    },
    /// Store a validated module.
    PutArtifact {
        /// Its sha256, 64 lowercase hex digits (computed by the leader).
        sha256: String,
        /// The module.
        bytes: Vec<u8>,
    },
    /// Create or update a monitor placed on one edge (before the
    /// scheduler; decoded from old entries, no longer written): a workload
    /// put plus an allocation on `edge`.
    PutMonitor {
        /// The spec (its `generation` is assigned on apply). Boxed: it is
        /// far larger than the other commands.
        spec: Box<MonitorSpec>,
        /// The edge it was placed on.
        edge: String,
        /// Leader's clock when submitted, ms since the Unix epoch.
        now_ms: i64,
    },
    /// Delete a monitor (before the scheduler; decoded, no longer written).
    DeleteMonitor {
        /// Tenant.
        tenant: String,
        /// Monitor name.
        name: String,
    },
    /// A liveness decision of the leader's failure detector.
    EdgeTransition(EdgeTransition),
    /// Create or update a validated workload; the scheduler places it.
    PutWorkload {
        /// The spec (its `generation` is assigned on apply).
        spec: Box<MonitorSpec>,
        /// Leader's clock when submitted, ms since the Unix epoch.
        now_ms: i64,
    },
    /// Delete a workload; the scheduler stops its allocations.
    DeleteWorkload {
        /// Tenant.
        tenant: String,
        /// Workload name.
        name: String,
        /// Leader's clock, ms since the Unix epoch.
        now_ms: i64,
    },
    /// The accepted part of a verified plan.
    ApplyPlan(Box<PlanCommit>),
    /// An edge's report with its placement facts: the leader's
    /// rate-limited copy of its soft state (replaces `EdgeHeartbeat`).
    EdgeReport {
        /// The status the edge reported.
        status: EdgeStatus,
        /// Its labels and pools.
        facts: NodeFacts,
        /// Leader's clock when the heartbeat arrived, ms since the Unix epoch.
        received_ms: i64,
    },
}

#[derive(Encode, Decode)]
struct StoreBatchBody {
    batch: TelemetryBatch,
    received_ms: i64,
}

#[derive(Encode, Decode)]
struct StoreEntriesBody {
    batch: TelemetryBatch,
    received_ms: i64,
    limits: CheckpointLimits,
}

#[derive(Encode, Decode)]
struct HeartbeatBody {
    status: EdgeStatus,
    received_ms: i64,
}

#[derive(Encode, Decode)]
struct PutArtifactBody {
    sha256: String,
    bytes: Vec<u8>,
}

#[derive(Encode, Decode)]
struct DeleteMonitorBody {
    tenant: String,
    name: String,
}

#[derive(Encode, Decode)]
struct PutWorkloadBody {
    spec: MonitorSpec,
    now_ms: i64,
}

#[derive(Encode, Decode)]
struct DeleteWorkloadBody {
    tenant: String,
    name: String,
    now_ms: i64,
}

#[derive(Encode, Decode)]
struct EdgeReportBody {
    status: EdgeStatus,
    facts: NodeFacts,
    received_ms: i64,
}

/// Result of [`decode_command`].
// One short-lived value per entry: boxing the command would cost every
// apply an allocation for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A command this build understands.
    Command(Command),
    /// An unknown command marked ignorable: skip it.
    SkipIgnorable {
        /// Its kind.
        kind: u16,
    },
}

/// What [`apply`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Records the store must insert: already deduplicated, in batch order.
    pub records: Vec<TelemetryRecord>,
    /// What happened.
    pub outcome: Outcome,
    /// Devices whose readings now arrive through another edge (evidence
    /// for the failure detector), per (from, to) pair.
    pub device_moves: Vec<DeviceMove>,
    /// What changed for the scheduler, in order.
    pub changes: Vec<SchedChange>,
}

/// Effect of one applied entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A batch was committed (maybe entirely as duplicates).
    Committed {
        /// The batch's first edge sequence number.
        first_seq: u64,
        /// Entries in the batch.
        count: u32,
        /// Entries (of any kind) stored for the first time.
        new_records: u32,
        /// Entries dropped by layer 1: this edge had stored them already
        /// (a resent or re-cut batch).
        edge_resends: u32,
        /// Readings dropped by layer 2: the region had stored the same
        /// reading (a device retransmission). `count = new_records +
        /// edge_resends + device_retransmissions`.
        device_retransmissions: u32,
        /// New readings (part of `new_records`) whose device seq was in the
        /// device's window with another timestamp or content.
        seq_reuses: u32,
        /// New alerts (part of `new_records`), now in the alert index.
        new_alerts: u32,
        /// New derived metrics (part of `new_records`), stored as telemetry.
        new_metrics: u32,
        /// Monitor outputs refused because their allocation was replaced
        /// (a stale fence), and state checkpoints refused for a stale
        /// fence or older than the stored one. `count` includes them.
        stale_fences: u32,
        /// State checkpoints stored (part of `new_records`) and refused
        /// for other reasons (part of `count`).
        checkpoints: CheckpointCounts,
    },
    /// A heartbeat updated the edge's status.
    HeartbeatRecorded {
        /// The region's assignments version after the entry.
        assignments_version: u64,
    },
    /// An artifact is stored.
    ArtifactStored {
        /// False when it already was.
        created: bool,
    },
    /// A monitor put was applied.
    MonitorPut {
        /// Its generation now.
        generation: u64,
        /// False for an identical resubmit (nothing changed).
        changed: bool,
        /// True when the monitor is new.
        created: bool,
        /// First put, ms since the Unix epoch.
        created_ms: i64,
        /// Last change, ms since the Unix epoch.
        updated_ms: i64,
    },
    /// A monitor delete was applied.
    MonitorDeleted {
        /// False when there was no such monitor.
        existed: bool,
    },
    /// A liveness decision was recorded, as the event `event_seq`.
    TransitionRecorded {
        /// Its event's sequence number.
        event_seq: u64,
    },
    /// A plan was applied.
    PlanApplied {
        /// Instances placed.
        placed: u32,
        /// Instances stopped.
        stopped: u32,
        /// Instances updated in place.
        updated: u32,
        /// Node plans the state machine refused (the region changed since
        /// the leader verified the plan).
        refused: u32,
    },
    /// A write was refused by the state machine (deterministically, on
    /// every replica); the state is unchanged.
    Refused(Refusal),
    /// Nothing happened: an already-applied index or an ignorable unknown command.
    Skipped,
}

/// Why the state machine refused a write that validation let through
/// (a concurrent change came first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The module is empty or above `MAX_ARTIFACT_BYTES`.
    ArtifactSize,
    /// The artifact store is full of artifacts monitors still reference.
    ArtifactStoreFull,
    /// The monitor's artifact is not stored (it was evicted meanwhile).
    ArtifactMissing,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::ArtifactSize => "the module is empty or too large",
            Refusal::ArtifactStoreFull => {
                "the region's artifact store is full of modules that monitors still use; \
                 delete monitors or reuse an uploaded module"
            }
            Refusal::ArtifactMissing => "the module is no longer stored; upload it again",
        })
    }
}

/// Why a command or the state could not be decoded or applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsmError {
    /// The entry is not a valid [`CommandEnvelope`].
    #[error("malformed command envelope: {detail}")]
    MalformedEnvelope {
        /// What the decoder said.
        detail: String,
    },
    /// The body does not decode as the command its kind names.
    #[error("malformed body for command kind {kind}: {detail}")]
    MalformedBody {
        /// Command kind.
        kind: u16,
        /// What the decoder said.
        detail: String,
    },
    /// A command kind this build does not know and may not skip: the replica
    /// must halt (upgrade it) rather than diverge.
    #[error("unknown non-ignorable command kind {kind}: this replica is too old, upgrade it")]
    UnknownCommand {
        /// Command kind.
        kind: u16,
    },
    /// Applying the entry at `index` failed.
    #[error("cannot apply raft entry {index}: {source}")]
    Apply {
        /// Raft log index.
        index: u64,
        /// Why.
        #[source]
        source: Box<FsmError>,
    },
    /// Encoded region state (snapshot or checkpoint) is unreadable.
    #[error("corrupt region state: {detail}")]
    CorruptState {
        /// What is wrong.
        detail: String,
    },
}

impl FsmError {
    /// The innermost error (unwraps [`FsmError::Apply`]).
    pub fn root(&self) -> &FsmError {
        match self {
            FsmError::Apply { source, .. } => source.root(),
            other => other,
        }
    }
}

fn encode_body<T: Encode>(body: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail (no limit applies to encoding).
    bincode::encode_to_vec(body, bincode::config::standard()).unwrap_or_default()
}

/// Envelope bytes for a Raft entry.
pub fn encode_command(cmd: &Command) -> Vec<u8> {
    let (kind, ignorable, body) = match cmd {
        // Data-bearing: an old replica must not skip it.
        Command::StoreBatch { batch, received_ms } => (
            KIND_STORE_ENTRIES,
            false,
            encode_body(&StoreBatchBodyRef {
                batch,
                received_ms: *received_ms,
            }),
        ),
        Command::StoreEntries {
            batch,
            received_ms,
            limits,
        } => (
            KIND_STORE_ENTRIES_LIMITED,
            false,
            encode_body(&StoreEntriesBodyRef {
                batch,
                received_ms: *received_ms,
                limits: *limits,
            }),
        ),
        // Status only: losing it on an old replica costs a stale dashboard.
        Command::EdgeHeartbeat {
            status,
            received_ms,
        } => (
            KIND_EDGE_STATUS,
            true,
            encode_body(&HeartbeatBodyRef {
                status,
                received_ms: *received_ms,
            }),
        ),
        // Data-bearing (monitors depend on it): not ignorable.
        Command::PutArtifact { sha256, bytes } => (
            KIND_PUT_ARTIFACT,
            false,
            encode_body(&PutArtifactBodyRef { sha256, bytes }),
        ),
        // Kind 6 is only decoded now; writing it (tests of old logs)
        // uses the frozen layout.
        Command::PutMonitor { spec, edge, now_ms } => (
            KIND_PUT_MONITOR,
            false,
            legacy::encode_put_monitor(spec, edge, *now_ms),
        ),
        Command::DeleteMonitor { tenant, name } => (
            KIND_DELETE_MONITOR,
            false,
            encode_body(&DeleteMonitorBodyRef { tenant, name }),
        ),
        Command::EdgeTransition(t) => (KIND_EDGE_TRANSITION, true, encode_body(t)),
        // Workloads and plans: a replica skipping them would serve edges
        // other allocations than its peers. Not ignorable.
        Command::PutWorkload { spec, now_ms } => (
            KIND_PUT_WORKLOAD,
            false,
            encode_body(&PutWorkloadBodyRef {
                spec,
                now_ms: *now_ms,
            }),
        ),
        Command::DeleteWorkload {
            tenant,
            name,
            now_ms,
        } => (
            KIND_DELETE_WORKLOAD,
            false,
            encode_body(&DeleteWorkloadBodyRef {
                tenant,
                name,
                now_ms: *now_ms,
            }),
        ),
        Command::ApplyPlan(c) => (KIND_APPLY_PLAN, false, encode_body(c.as_ref())),
        Command::EdgeReport {
            status,
            facts,
            received_ms,
        } => (
            KIND_EDGE_REPORT,
            false,
            encode_body(&EdgeReportBodyRef {
                status,
                facts,
                received_ms: *received_ms,
            }),
        ),
    };
    encode_body(&CommandEnvelope {
        kind,
        ignorable,
        body,
    })
}

// Borrowing twins of the bodies, so encoding does not clone a batch.
#[derive(Encode)]
struct StoreBatchBodyRef<'a> {
    batch: &'a TelemetryBatch,
    received_ms: i64,
}

#[derive(Encode)]
struct StoreEntriesBodyRef<'a> {
    batch: &'a TelemetryBatch,
    received_ms: i64,
    limits: CheckpointLimits,
}

#[derive(Encode)]
struct HeartbeatBodyRef<'a> {
    status: &'a EdgeStatus,
    received_ms: i64,
}

#[derive(Encode)]
struct PutArtifactBodyRef<'a> {
    sha256: &'a String,
    bytes: &'a Vec<u8>,
}

#[derive(Encode)]
struct PutWorkloadBodyRef<'a> {
    spec: &'a MonitorSpec,
    now_ms: i64,
}

#[derive(Encode)]
struct DeleteWorkloadBodyRef<'a> {
    tenant: &'a String,
    name: &'a String,
    now_ms: i64,
}

#[derive(Encode)]
struct EdgeReportBodyRef<'a> {
    status: &'a EdgeStatus,
    facts: &'a NodeFacts,
    received_ms: i64,
}

#[derive(Encode)]
struct DeleteMonitorBodyRef<'a> {
    tenant: &'a String,
    name: &'a String,
}

fn decode_exact<T: Decode<()>>(bytes: &[u8]) -> Result<T, String> {
    let (v, used) =
        bincode::decode_from_slice(bytes, bincode_config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(v)
}

/// Decodes a Raft entry's bytes.
pub fn decode_command(data: &[u8]) -> Result<Decoded, FsmError> {
    let env: CommandEnvelope =
        decode_exact(data).map_err(|detail| FsmError::MalformedEnvelope { detail })?;
    let kind = env.kind;
    let body_err = |detail| FsmError::MalformedBody { kind, detail };
    let cmd = match kind {
        KIND_STORE_BATCH => {
            let b: legacy::StoreBatchBodyV1 = decode_exact(&env.body).map_err(body_err)?;
            Command::StoreBatch {
                batch: b.batch.into(),
                received_ms: b.received_ms,
            }
        }
        KIND_EDGE_HEARTBEAT => {
            let b: legacy::HeartbeatBodyV1 = decode_exact(&env.body).map_err(body_err)?;
            Command::EdgeHeartbeat {
                status: b.status.into(),
                received_ms: b.received_ms,
            }
        }
        KIND_STORE_ENTRIES => {
            let b: StoreBatchBody = decode_exact(&env.body).map_err(body_err)?;
            Command::StoreBatch {
                batch: b.batch,
                received_ms: b.received_ms,
            }
        }
        KIND_STORE_ENTRIES_LIMITED => {
            let b: StoreEntriesBody = decode_exact(&env.body).map_err(body_err)?;
            Command::StoreEntries {
                batch: b.batch,
                received_ms: b.received_ms,
                limits: b.limits,
            }
        }
        KIND_EDGE_STATUS => {
            let b: HeartbeatBody = decode_exact(&env.body).map_err(body_err)?;
            Command::EdgeHeartbeat {
                status: b.status,
                received_ms: b.received_ms,
            }
        }
        KIND_PUT_ARTIFACT => {
            let b: PutArtifactBody = decode_exact(&env.body).map_err(body_err)?;
            Command::PutArtifact {
                sha256: b.sha256,
                bytes: b.bytes,
            }
        }
        KIND_PUT_MONITOR => {
            let b: legacy::PutMonitorBodyV1 = decode_exact(&env.body).map_err(body_err)?;
            Command::PutMonitor {
                spec: Box::new(b.spec.into()),
                edge: b.edge,
                now_ms: b.now_ms,
            }
        }
        KIND_DELETE_MONITOR => {
            let b: DeleteMonitorBody = decode_exact(&env.body).map_err(body_err)?;
            Command::DeleteMonitor {
                tenant: b.tenant,
                name: b.name,
            }
        }
        KIND_EDGE_TRANSITION => Command::EdgeTransition(decode_exact(&env.body).map_err(body_err)?),
        KIND_PUT_WORKLOAD => {
            let b: PutWorkloadBody = decode_exact(&env.body).map_err(body_err)?;
            Command::PutWorkload {
                spec: Box::new(b.spec),
                now_ms: b.now_ms,
            }
        }
        KIND_DELETE_WORKLOAD => {
            let b: DeleteWorkloadBody = decode_exact(&env.body).map_err(body_err)?;
            Command::DeleteWorkload {
                tenant: b.tenant,
                name: b.name,
                now_ms: b.now_ms,
            }
        }
        KIND_APPLY_PLAN => Command::ApplyPlan(Box::new(decode_exact(&env.body).map_err(body_err)?)),
        KIND_EDGE_REPORT => {
            let b: EdgeReportBody = decode_exact(&env.body).map_err(body_err)?;
            Command::EdgeReport {
                status: b.status,
                facts: b.facts,
                received_ms: b.received_ms,
            }
        }
        _ if env.ignorable => return Ok(Decoded::SkipIgnorable { kind }),
        _ => return Err(FsmError::UnknownCommand { kind }),
    };
    Ok(Decoded::Command(cmd))
}

/// Applies the committed entry `index` holding `data`.
///
/// Pure: same state + same index + same bytes => same result on every
/// replica. An index at or below [`RegionState::applied_index`] is a no-op
/// returning [`Outcome::Skipped`], so replaying the log after a restart from
/// an older checkpoint is harmless. On error the state is unchanged and the
/// index is not consumed: the driver must halt the replica.
pub fn apply(state: &mut RegionState, index: u64, data: &[u8]) -> Result<Applied, FsmError> {
    if index <= state.applied_index() {
        return Ok(no_records(Outcome::Skipped));
    }
    let decoded = decode_command(data).map_err(|e| FsmError::Apply {
        index,
        source: Box::new(e),
    })?;
    state.set_applied_index(index);
    let mut changes = Vec::new();
    let mut applied = match decoded {
        Decoded::SkipIgnorable { .. } => no_records(Outcome::Skipped),
        Decoded::Command(Command::StoreBatch { batch, received_ms }) => {
            state.store_batch(batch, received_ms, CheckpointLimits::default())
        }
        Decoded::Command(Command::StoreEntries {
            batch,
            received_ms,
            limits,
        }) => state.store_batch(batch, received_ms, limits),
        Decoded::Command(Command::EdgeHeartbeat {
            status,
            received_ms,
        }) => {
            state.record_heartbeat(status, None, received_ms, index, &mut changes);
            no_records(Outcome::HeartbeatRecorded {
                assignments_version: state.workloads().assignments_version(),
            })
        }
        Decoded::Command(Command::EdgeReport {
            status,
            facts,
            received_ms,
        }) => {
            state.record_heartbeat(status, Some(facts), received_ms, index, &mut changes);
            no_records(Outcome::HeartbeatRecorded {
                assignments_version: state.workloads().assignments_version(),
            })
        }
        Decoded::Command(Command::PutArtifact { sha256, bytes }) => {
            no_records(state.workloads_mut().put_artifact(sha256, bytes, index))
        }
        Decoded::Command(Command::PutMonitor { spec, edge, now_ms }) => no_records(
            legacy::put_monitor(state, *spec, edge, now_ms, index, &mut changes),
        ),
        Decoded::Command(Command::DeleteMonitor { tenant, name }) => {
            no_records(state.delete_workload(&tenant, &name, 0, &mut changes))
        }
        Decoded::Command(Command::PutWorkload { spec, now_ms }) => {
            let outcome = if state.workloads().has_artifact(&spec.artifact.sha256) {
                state.put_workload(*spec, now_ms, &mut changes)
            } else {
                Outcome::Refused(Refusal::ArtifactMissing)
            };
            no_records(outcome)
        }
        Decoded::Command(Command::DeleteWorkload {
            tenant,
            name,
            now_ms,
        }) => no_records(state.delete_workload(&tenant, &name, now_ms, &mut changes)),
        Decoded::Command(Command::ApplyPlan(c)) => {
            let a = state.apply_plan(*c, index, &mut changes);
            no_records(Outcome::PlanApplied {
                placed: u32::try_from(a.placed.len()).unwrap_or(u32::MAX),
                stopped: a.stopped,
                updated: a.updated,
                refused: u32::try_from(a.refused.len()).unwrap_or(u32::MAX),
            })
        }
        Decoded::Command(Command::EdgeTransition(t)) => {
            let edge = t.edge.clone();
            let seq = state.record_transition(t);
            if let Some(l) = state.liveness(&edge) {
                changes.push(SchedChange::Transition {
                    node: Box::new(state.sched_node(&edge)),
                    liveness: l.clone(),
                });
            }
            no_records(Outcome::TransitionRecorded { event_seq: seq })
        }
    };
    applied.changes = changes;
    Ok(applied)
}

fn no_records(outcome: Outcome) -> Applied {
    Applied {
        records: Vec::new(),
        outcome,
        device_moves: Vec::new(),
        changes: Vec::new(),
    }
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod dedup_prop_tests;
#[cfg(test)]
mod liveness_tests;
#[cfg(test)]
mod sched_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod workload_tests;
