//! The scheduler's vocabulary: nodes, workloads, allocations, evaluations.
//!
//! Generic over what a node is: an edge inside a region today, a region
//! inside the global tier later. Nothing here knows about devices beyond an
//! opaque device-group name, or about monitors beyond a resource ask.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, EvalId, NodeId, Timestamp, WorkloadId};
use crate::intent::PlacementIntent;
use crate::resources::Resources;

/// A node's liveness and schedulability, as the region's failure detector
/// last replicated it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Heartbeating; takes new placements.
    Ready,
    /// Missed heartbeats or lost its connection, within the grace period:
    /// no new placements; its instances are disconnected.
    Suspect,
    /// Declared down: no new placements; its instances are disconnected.
    Down,
    /// Alive but being emptied: no new placements; its instances migrate.
    Draining,
}

impl NodeStatus {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Suspect => "suspect",
            NodeStatus::Down => "down",
            NodeStatus::Draining => "draining",
        }
    }

    /// Suspect or down: cut off from the region.
    pub fn is_disconnected(self) -> bool {
        matches!(self, NodeStatus::Suspect | NodeStatus::Down)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node as the scheduler sees it.
///
/// Its reservations are not a field: the snapshot sums them from the
/// allocations it holds ([`crate::ClusterSnapshot::reserved`]), so they can
/// never disagree with the allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Node {
    /// Name.
    pub id: NodeId,
    /// Liveness / schedulability.
    pub status: NodeStatus,
    /// When `status` last changed (replicated with the transition).
    pub status_since: Timestamp,
    /// Labels, e.g. `zone = "a"`, `arch = "arm64"`.
    pub labels: BTreeMap<String, String>,
    /// Pools it belongs to, e.g. `cpu`, `gpu`.
    pub pools: BTreeSet<String>,
    /// What it offers to workloads.
    pub capacity: Resources,
    /// What it measured in use at its last report (instances and anything
    /// else on the machine). Ranking and pressure use it; feasibility uses
    /// reservations, which the plan applier can check deterministically.
    pub usage: Resources,
    /// Device groups at least one of whose devices last reported through it.
    pub device_groups: BTreeSet<String>,
}

impl Node {
    /// A ready node with `capacity` and nothing else.
    pub fn new(id: &str, capacity: Resources) -> Self {
        Node {
            id: NodeId(id.to_owned()),
            status: NodeStatus::Ready,
            status_since: Timestamp(0),
            labels: BTreeMap::new(),
            pools: BTreeSet::new(),
            capacity,
            usage: Resources::ZERO,
            device_groups: BTreeSet::new(),
        }
    }

    /// Builder: adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Builder: adds a pool.
    pub fn pool(mut self, pool: &str) -> Self {
        self.pools.insert(pool.to_owned());
        self
    }

    /// Builder: adds a device group.
    pub fn carries(mut self, group: &str) -> Self {
        self.device_groups.insert(group.to_owned());
        self
    }

    /// Builder: sets the status and since when.
    pub fn status(mut self, status: NodeStatus, since: Timestamp) -> Self {
        self.status = status;
        self.status_since = since;
        self
    }
}

/// A workload: what to run, how much of it, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Workload {
    /// `(tenant, name)`.
    pub id: WorkloadId,
    /// 0-100; higher wins. Pressure rebalancing moves the lowest first.
    pub priority: u8,
    /// The budget each instance reserves on its node.
    pub resources: Resources,
    /// Placement rules.
    pub intent: PlacementIntent,
    /// The device group whose devices it watches: per-node instances run on
    /// the nodes carrying it; count instances prefer those nodes. `None`:
    /// no device affinity.
    pub device_group: Option<String>,
    /// Spec version; an allocation of an older generation is updated in
    /// place when it still fits, or replaced when it does not.
    pub generation: u64,
}

/// Whether an allocation should run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum Desired {
    /// Run it.
    Run,
    /// Stop it (the node stops it when it hears; terminal for the scheduler).
    Stop,
}

/// What the node last reported about an allocation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum ClientState {
    /// Not yet reported running (new, or fetching its module).
    Pending,
    /// Running.
    Running,
    /// Gave up after its restart policy: replaced elsewhere.
    Failed,
    /// Exited cleanly and will not restart: keeps its slot, not replaced.
    Complete,
    /// Stopped by its node (a `replace-after` instance whose lease ran out).
    Lost,
}

impl ClientState {
    /// Whether the instance no longer runs on its node.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ClientState::Failed | ClientState::Complete | ClientState::Lost
        )
    }
}

/// Why an allocation was placed where it is: kept for `inspect` and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct PlacementMeta {
    /// The evaluation that placed it.
    pub eval: EvalId,
    /// Why a new instance was needed.
    pub reason: PlaceReason,
    /// Final score of the chosen node (about -1 to 1, higher is better).
    pub score: f64,
    /// The score's parts, e.g. `("binpack", 0.71)`, `("spread", 0.5)`.
    pub score_parts: Vec<(String, f64)>,
    /// Nodes looked at to choose it.
    pub nodes_evaluated: u32,
    /// Of those, how many could take it.
    pub nodes_feasible: u32,
}

/// Why a placement was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum PlaceReason {
    /// Fewer instances than desired (new workload, count raised, a new
    /// carrier node for per-node).
    Missing,
    /// Replaces an instance whose disconnected node's lease ran out.
    ReplaceDisconnected,
    /// Replaces an instance whose node left the region.
    ReplaceLost,
    /// Replaces an instance that failed for good.
    ReplaceFailed,
    /// Moves an instance off a draining node.
    MigrateDrain,
    /// Moves an instance off a node under sustained pressure.
    MigratePressure,
    /// A new generation that no longer fits or is no longer allowed where
    /// the old instance runs.
    DestructiveUpdate,
}

/// One instance of a workload on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Allocation {
    /// Unique id.
    pub id: AllocId,
    /// Its workload.
    pub workload: WorkloadId,
    /// Instance index `0..count` (per-node: a free index), kept by
    /// replacements so state checkpoints follow the slot.
    pub slot: u32,
    /// Where it runs.
    pub node: NodeId,
    /// The workload generation it runs.
    pub generation: u64,
    /// The budget it reserves on its node.
    pub resources: Resources,
    /// Fencing token, monotonically increasing per region; 0 in a plan, set
    /// by the plan applier ([`crate::PlanVerdict::assign_tokens`]).
    pub fencing_token: u64,
    /// Run or stop.
    pub desired: Desired,
    /// Last reported state.
    pub client: ClientState,
    /// Raft index that created it (0 in a plan; set by the applier).
    pub created_index: u64,
    /// Raft index of its last change (0 in a plan; set by the applier).
    pub modified_index: u64,
    /// When the lease of a `replace-after` instance expires on the hub's
    /// clock, lease duration plus safety margin included. `None`: no lease
    /// was ever granted, so the node never started it (a node starts a
    /// `replace-after` instance only under a lease). Unused for `keep`.
    pub lease_expires_at: Option<Timestamp>,
    /// The allocation it replaces, whose state checkpoint it starts from.
    pub previous: Option<AllocId>,
    /// Why it is where it is.
    pub placement: PlacementMeta,
}

impl Allocation {
    /// Whether it holds its node's resources and counts as an instance:
    /// desired to run and not terminal on its node.
    pub fn is_live(&self) -> bool {
        self.desired == Desired::Run && !self.client.is_terminal()
    }
}

/// What made an evaluation necessary.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The workload was submitted.
    Submit,
    /// The workload's spec changed.
    Update,
    /// The workload was deleted.
    Delete,
    /// A node joined or became ready.
    NodeUp(NodeId),
    /// A node became suspect.
    NodeSuspect(NodeId),
    /// A node was declared down.
    NodeDown(NodeId),
    /// A disconnected node came back.
    NodeBack(NodeId),
    /// A node started draining.
    NodeDrain(NodeId),
    /// Devices of the workload's group now report through other nodes.
    DevicesMoved,
    /// Pressure rebalancing chose allocations to move (`Evaluation::migrate`).
    Pressure(NodeId),
    /// A node's capacity changed.
    CapacityChanged(NodeId),
    /// A deadline from a previous plan's `follow_up_at` passed.
    FollowUp,
    /// A previous plan was rejected in part by the applier.
    PlanRejected,
    /// Allocations reported failed.
    AllocFailed,
    /// A new leader took over and evaluates every workload once.
    LeaderChange,
}

impl Trigger {
    /// Stable kebab-case name, for metrics and history.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Submit => "submit",
            Trigger::Update => "update",
            Trigger::Delete => "delete",
            Trigger::NodeUp(_) => "node-up",
            Trigger::NodeSuspect(_) => "node-suspect",
            Trigger::NodeDown(_) => "node-down",
            Trigger::NodeBack(_) => "node-back",
            Trigger::NodeDrain(_) => "node-drain",
            Trigger::DevicesMoved => "devices-moved",
            Trigger::Pressure(_) => "pressure",
            Trigger::CapacityChanged(_) => "capacity-changed",
            Trigger::FollowUp => "follow-up",
            Trigger::PlanRejected => "plan-rejected",
            Trigger::AllocFailed => "alloc-failed",
            Trigger::LeaderChange => "leader-change",
        }
    }
}

/// A request to bring one workload's allocations in line with its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Evaluation {
    /// Id, assigned by the queue.
    pub id: EvalId,
    /// The workload to reconcile.
    pub workload: WorkloadId,
    /// Why.
    pub trigger: Trigger,
    /// The scheduler must see at least this snapshot index (the index that
    /// created the eval, or a plan's refresh index).
    pub snapshot_index: u64,
    /// Allocations to move elsewhere (pressure rebalancing); each is stopped
    /// only once its replacement is placed.
    pub migrate: Vec<AllocId>,
    /// Where the `migrate` allocations may go (`None`: anywhere the
    /// workload's rules allow).
    pub headroom: Option<Headroom>,
}

/// Where a pressure migration may land: never on a node that is hot
/// itself, nor on one the move would make hot. Measured usage is soft
/// state, so only the scheduler checks this, on the snapshot it plans
/// with; the plan applier checks reservations as for every plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Headroom {
    /// Nodes hot now (pressured, or above the high watermark and counting
    /// towards it): never targets.
    pub hot: BTreeSet<NodeId>,
    /// A target's measured usage, plus what the plan already adds there,
    /// plus the moved instance's budget, must stay below this percent of
    /// its capacity in every dimension (the rebalancer's `enter-percent`).
    pub below_percent: u8,
}

impl Headroom {
    /// Whether `node` may take `ask` more on top of `added` (this plan's
    /// other placements there).
    pub fn admits(&self, node: &Node, added: Resources, ask: Resources) -> bool {
        if self.hot.contains(&node.id) {
            return false;
        }
        let projected = node.usage.saturating_add(added).saturating_add(ask);
        crate::resources::Dimension::ALL.into_iter().all(|d| {
            let cap = u128::from(node.capacity.get(d));
            u128::from(projected.get(d)) * 100 < cap * u128::from(self.below_percent)
        })
    }
}

impl Evaluation {
    /// An evaluation with nothing to migrate.
    pub fn new(id: u64, workload: WorkloadId, trigger: Trigger, snapshot_index: u64) -> Self {
        Evaluation {
            id: EvalId(id),
            workload,
            trigger,
            snapshot_index,
            migrate: Vec::new(),
            headroom: None,
        }
    }
}
