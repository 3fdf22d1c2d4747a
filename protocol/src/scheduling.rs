//! What the region scheduler says to edges and to clients.
//!
//! - [`NodeFacts`]: the labels and pools an edge reports in its heartbeat
//!   (from its `[monitors]` config), which placement rules match against.
//! - [`EdgeAllocation`]: one instance an edge must run, as it fetches it:
//!   the allocation id and fencing token the region issued, the spec, and
//!   the disconnect policy (a lease for `replace-after` instances), and the
//!   state checkpoint a new instance starts from.
//! - [`AllocationInfo`] / [`EvaluationInfo`]: a workload's allocations (where,
//!   in which state, why there) and its recent evaluations (what triggered
//!   them, what they placed, why the rest could not be placed), as the
//!   hub serves them to central and central to users.
//!
//! [`EvaluationInfo`] is kept in replicated region state (the bounded
//! evaluation history): its layout never changes; a change is a new type
//! and a new state format. The others cross the wire only.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
pub use strata_sched::{
    AllocId, AllocMetric, ClientState, Desired, EvalId, PlaceReason, PlacementFailure,
};

use crate::workload::MonitorSpec;

/// An edge's placement facts: what `constraints`, `affinity`, `spread` and
/// `pools` in a placement intent match against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(default, rename_all = "kebab-case")]
pub struct NodeFacts {
    /// Labels, e.g. `zone = "a"`. The hub adds `node = <edge name>`.
    pub labels: BTreeMap<String, String>,
    /// Pools the edge belongs to, e.g. `cpu`, `gpu`.
    pub pools: BTreeSet<String>,
}

/// One allocation an edge must run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct EdgeAllocation {
    /// Allocation id, unique in the region.
    pub id: AllocId,
    /// Fencing token: increases with every allocation the region issues.
    /// The edge stamps the instance's outputs with it; the region refuses
    /// outputs of an allocation that was replaced.
    pub fencing_token: u64,
    /// Instance index of the workload (`0..count`), kept by replacements.
    pub slot: u32,
    /// The spec it runs (its `generation` included).
    pub spec: MonitorSpec,
    /// `Some(lease)` for a `replace-after` instance: it runs only under a
    /// lease of this many ms that the region renews with heartbeat acks,
    /// and stops itself when the lease runs out. `None`: `keep`.
    pub replace_after_ms: Option<u64>,
    /// The allocation it replaces, if any (whose state it would start from).
    pub previous: Option<AllocId>,
    /// The last checkpoint of this instance's state that reached the region,
    /// when another allocation took it (protocol version 6): the edge seeds
    /// the instance's state from it before its first start unless its own
    /// state is newer. `None` when the region holds none, or holds only
    /// this allocation's own (the edge has that state already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<crate::monitoring::StateCheckpoint>,
}

/// One allocation of a workload, as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct AllocationInfo {
    /// Allocation id (32 hex digits in JSON).
    pub id: AllocId,
    /// Edge it is placed on.
    pub edge: String,
    /// Instance index.
    pub slot: u32,
    /// Spec generation it runs.
    pub generation: u64,
    /// Run or stop.
    pub desired: Desired,
    /// What its edge last reported: pending, running, failed, complete, lost.
    pub client: ClientState,
    /// Fencing token.
    pub fencing_token: u64,
    /// CPU it reserves, millicores.
    pub cpu_millicores: u64,
    /// Memory it reserves, bytes.
    pub memory_bytes: u64,
    /// Why a new instance was needed.
    pub reason: PlaceReason,
    /// Final score of its edge (about -1 to 1, higher is better).
    pub score: f64,
    /// The score's parts, e.g. `binpack 0.71`.
    pub score_parts: Vec<(String, f64)>,
    /// Edges looked at to choose it.
    pub nodes_evaluated: u32,
    /// Of those, how many could take it.
    pub nodes_feasible: u32,
    /// The evaluation that placed it.
    pub eval: EvalId,
    /// When it was placed, ms since the Unix epoch (leader clock).
    pub created_ms: i64,
    /// Its last change, ms since the Unix epoch.
    pub modified_ms: i64,
    /// Raft index that created it.
    pub created_index: u64,
    /// Raft index of its last change.
    pub modified_index: u64,
    /// For a `replace-after` instance: until when the region counts its
    /// lease (lease plus safety margin) as of its last recorded grant,
    /// ms since the Unix epoch.
    pub lease_expires_ms: Option<i64>,
    /// The allocation it replaced.
    pub previous: Option<AllocId>,
    /// The allocation that replaced it.
    pub replaced_by: Option<AllocId>,
    /// Why it was stopped, when it was.
    pub stop_reason: Option<String>,
}

/// One `replace-after` instance's lease on an edge, as the region counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct EdgeLease {
    /// Tenant.
    pub tenant: String,
    /// Workload (monitor) name.
    pub workload: String,
    /// Instance index.
    pub slot: u32,
    /// Allocation id (32 hex digits in JSON).
    pub allocation: AllocId,
    /// Fencing token.
    pub fencing_token: u64,
    /// Until when the region counts the lease (lease plus safety margin) as
    /// of its last recorded grant, ms since the Unix epoch; `None` before a
    /// grant is recorded.
    pub expires_ms: Option<i64>,
}

/// One node plan the applier (or the state machine) refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct RefusedNode {
    /// The edge.
    pub edge: String,
    /// Why its part of the plan was refused.
    pub reason: String,
}

/// Most refused node plans an [`EvaluationInfo`] lists.
pub const MAX_REFUSED_LISTED: usize = 8;

/// One evaluation of a workload: kept in the region's bounded history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct EvaluationInfo {
    /// Evaluation id (per leader term; with `index` it is unique).
    pub id: EvalId,
    /// What triggered it (`submit`, `node-down`, `follow-up`, …).
    pub trigger: String,
    /// When its plan was committed, ms since the Unix epoch.
    pub at_ms: i64,
    /// Raft index of its plan.
    pub index: u64,
    /// `complete` (everything placed), `partial` (some instances could not
    /// be placed, or part of the plan was refused), or `blocked` (nothing
    /// could be placed).
    pub status: String,
    /// Instances placed.
    pub placed: u32,
    /// Instances stopped.
    pub stopped: u32,
    /// Instances updated in place.
    pub updated: u32,
    /// Node plans refused because the region changed since the snapshot
    /// (the workload is evaluated again), at most
    /// [`MAX_REFUSED_LISTED`].
    pub refused: Vec<RefusedNode>,
    /// Why instances could not be placed: per rule, how many edges it
    /// filtered out.
    pub failure: Option<PlacementFailure>,
}
