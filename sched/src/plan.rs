//! Plans: what one evaluation wants changed, per node, and why anything
//! could not be placed.

use std::collections::BTreeMap;
use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, EvalId, NodeId, Timestamp, WorkloadId};
use crate::model::Allocation;
use crate::resources::Resources;

/// The changes one evaluation proposes. The plan applier verifies it
/// against the newest state ([`crate::verify_plan`]) before committing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    /// The evaluation that made it.
    pub eval: EvalId,
    /// The workload it reconciles.
    pub workload: WorkloadId,
    /// The workload generation it was made for; `None`: the workload was
    /// deleted and the plan only stops.
    pub generation: Option<u64>,
    /// Index of the snapshot it was made on.
    pub snapshot_index: u64,
    /// Per node: placements, stops and in-place updates.
    pub nodes: BTreeMap<NodeId, NodePlan>,
    /// Instances that could not be placed, and why.
    pub failed: Option<PlacementFailure>,
    /// When the workload must be evaluated again even if nothing else
    /// happens: the earliest moment a disconnected `replace-after`
    /// instance becomes replaceable.
    pub follow_up_at: Option<Timestamp>,
    /// Pressure migrations (`Evaluation::migrate`) that found no node to
    /// go to, with why (empty when an earlier placement of the plan already
    /// found none): the instance stays where it is. Not a failure of the
    /// workload, so not in `failed`.
    pub not_migrated: Vec<(AllocId, AllocMetric)>,
}

impl Plan {
    /// An empty plan.
    pub fn new(eval: EvalId, workload: WorkloadId, generation: Option<u64>, index: u64) -> Self {
        Plan {
            eval,
            workload,
            generation,
            snapshot_index: index,
            nodes: BTreeMap::new(),
            failed: None,
            follow_up_at: None,
            not_migrated: Vec::new(),
        }
    }

    /// Whether it changes nothing (it may still report a failure).
    pub fn is_noop(&self) -> bool {
        self.nodes.values().all(NodePlan::is_empty)
    }

    /// Every placement, in node order.
    pub fn placements(&self) -> impl Iterator<Item = &Allocation> {
        self.nodes.values().flat_map(|n| n.place.iter())
    }

    /// Every stop, in node order.
    pub fn stops(&self) -> impl Iterator<Item = (&NodeId, &AllocStop)> {
        self.nodes
            .iter()
            .flat_map(|(id, n)| n.stop.iter().map(move |s| (id, s)))
    }

    /// The node plan for `node`, created empty on first use.
    pub(crate) fn node_mut(&mut self, node: &NodeId) -> &mut NodePlan {
        if !self.nodes.contains_key(node) {
            self.nodes.insert(node.clone(), NodePlan::default());
        }
        self.nodes
            .get_mut(node)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }
}

/// Changes on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct NodePlan {
    /// New allocations (fencing token 0 until the applier assigns one).
    pub place: Vec<Allocation>,
    /// Allocations to stop.
    pub stop: Vec<AllocStop>,
    /// Allocations moved to a new generation where they run.
    pub update: Vec<InPlaceUpdate>,
}

impl NodePlan {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty() && self.stop.is_empty() && self.update.is_empty()
    }
}

/// One allocation to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct AllocStop {
    /// The allocation.
    pub alloc: AllocId,
    /// Why.
    pub reason: StopReason,
}

/// Why an allocation is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Its workload was deleted.
    WorkloadDeleted,
    /// More instances than desired (count lowered, or a duplicate).
    NotNeeded,
    /// Its node no longer carries the workload's devices, or no longer
    /// satisfies its hard rules (per-node).
    NodeNoLongerEligible,
    /// Its node was disconnected past `replace-after` and its lease expired
    /// at `lease_expires_at` (`None`: it never held one). The applier
    /// refuses the stop if the lease has moved since.
    Disconnected {
        /// The lease expiry the decision saw.
        lease_expires_at: Option<Timestamp>,
    },
    /// Its node left the region.
    NodeLost,
    /// It failed for good or stopped itself; replaced.
    Failed,
    /// Replaced by `by` (drain, pressure, or a destructive update); stopped
    /// only together with that placement.
    Replaced {
        /// The replacement.
        by: AllocId,
    },
    /// Its node is draining (per-node instances cannot move).
    NodeDraining,
}

impl StopReason {
    /// The placement this stop depends on, if it must not happen alone.
    pub fn depends_on(&self) -> Option<AllocId> {
        match self {
            StopReason::Replaced { by } => Some(*by),
            _ => None,
        }
    }
}

/// An allocation moved to a new generation in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct InPlaceUpdate {
    /// The allocation.
    pub alloc: AllocId,
    /// The generation it moves to.
    pub generation: u64,
    /// Its new budget.
    pub resources: Resources,
}

/// Why instances could not be placed, in the shape of nomad's AllocMetric:
/// how many nodes were looked at, and per constraint or dimension how many
/// each ruled out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct PlacementFailure {
    /// Instances not placed.
    pub unplaced: u32,
    /// Instances wanted in this evaluation (placed + unplaced).
    pub wanted: u32,
    /// The filter counts of the first failed attempt (later attempts in
    /// the same evaluation are coalesced into `unplaced`).
    pub metric: AllocMetric,
}

/// Per-attempt accounting of nodes looked at and ruled out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct AllocMetric {
    /// Nodes in the region.
    pub nodes_in_region: u32,
    /// Nodes checked one by one.
    pub nodes_evaluated: u32,
    /// Nodes ruled out by a status or rule, by reason (`status down`,
    /// `constraint zone = a`, `pool in [gpu]`, …). A node counts once, under
    /// the first reason that ruled it out; nodes an index ruled out without
    /// a visit count under that index's rule.
    pub filtered: BTreeMap<String, u32>,
    /// Nodes that passed every rule but lacked room, by dimension.
    pub exhausted: BTreeMap<String, u32>,
}

impl AllocMetric {
    /// Nodes ruled out by a rule or status.
    pub fn nodes_filtered(&self) -> u32 {
        self.filtered.values().sum()
    }

    /// Nodes ruled out for lack of room.
    pub fn nodes_exhausted(&self) -> u32 {
        self.exhausted.values().sum()
    }
}

impl fmt::Display for AllocMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} nodes evaluated",
            self.nodes_evaluated, self.nodes_in_region
        )?;
        for (reason, n) in &self.filtered {
            write!(f, "; {reason}: {n} filtered")?;
        }
        for (dim, n) in &self.exhausted {
            write!(f, "; {dim} exhausted: {n}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PlacementFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} instances not placed: {}",
            self.unplaced, self.wanted, self.metric
        )
    }
}
