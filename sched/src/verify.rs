//! The plan applier's optimistic-concurrency check (nomad's
//! `plan_apply.go` `evaluatePlan`), pure.
//!
//! A plan was made on a snapshot that may be stale by the time the single
//! applier on the leader gets to it. [`verify_plan`] re-checks it, node by
//! node, against the newest state and accepts the nodes that still hold:
//!
//! - a node plan that only stops is always accepted (stopping is safe and
//!   idempotent), except as below;
//! - placements and updates need the node to exist and be ready, and the
//!   node's newest reservations, minus what the plan stops there, plus what
//!   it places and grows, to fit its capacity;
//! - a placement whose slot (count) or node (per-node) already holds a live
//!   instance not stopped by this plan is refused: another plan for the
//!   same workload committed first, and accepting would duplicate it;
//! - the whole plan is refused when the workload's generation changed (or
//!   it was deleted) since the snapshot, unless the plan only stops;
//! - a stop of a disconnected instance is refused if its lease was renewed
//!   since the decision (the node is back), together with its replacement;
//! - a stop that depends on a placement (`Replaced { by }`) is refused when
//!   that placement's node is, so nothing is stopped without its successor.
//!
//! Refusing per node rather than per plan keeps the accepted part useful
//! (nomad's partial commit); the verdict's `refresh_index` tells the
//! scheduler to re-evaluate on a snapshot at least that new.

use std::collections::{BTreeMap, HashMap, HashSet};

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, EvalId, NodeId, WorkloadId};
use crate::intent::Cardinality;
use crate::model::{Allocation, NodeStatus};
use crate::plan::{NodePlan, Plan, StopReason};
use crate::resources::{Dimension, Resources};
use crate::snapshot::ClusterSnapshot;

/// Why the applier refused one node's part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum Rejection {
    /// The node is no longer in the region.
    NodeUnknown,
    /// The node is no longer ready.
    NodeNotReady(NodeStatus),
    /// What committed since leaves too little room.
    Exhausted {
        /// The dimension short.
        dimension: Dimension,
        /// What the node would hold.
        need: u64,
        /// Its capacity.
        capacity: u64,
    },
    /// The slot already has a live instance (another plan won).
    SlotTaken {
        /// Slot.
        slot: u32,
        /// The instance holding it.
        holder: AllocId,
    },
    /// The workload's generation changed or it was deleted since.
    WorkloadChanged {
        /// Generation the plan was made for.
        planned: Option<u64>,
        /// Generation now (`None`: deleted).
        now: Option<u64>,
    },
    /// An in-place update names an allocation that is gone or not live.
    AllocGone(AllocId),
    /// A disconnected instance's lease was renewed after the decision.
    LeaseRenewed(AllocId),
    /// A stop depends on a placement that was refused.
    ReplacementRefused(AllocId),
    /// The node already runs a live instance of the workload and the
    /// snapshot allows one per node (`one-per-node`).
    NodeTaken {
        /// The instance already there.
        holder: AllocId,
    },
}

/// The applier's answer to one plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct PlanVerdict {
    /// The plan's evaluation.
    pub eval: EvalId,
    /// The plan's workload.
    pub workload: WorkloadId,
    /// Node plans to commit, unchanged from the plan.
    pub accepted: BTreeMap<NodeId, NodePlan>,
    /// Node plans refused, with why.
    pub rejected: BTreeMap<NodeId, Rejection>,
    /// When anything was refused: the index the re-evaluation must see.
    pub refresh_index: Option<u64>,
}

impl PlanVerdict {
    /// Whether the whole plan was accepted.
    pub fn is_full(&self) -> bool {
        self.rejected.is_empty()
    }

    /// Whether the workload must be evaluated again (part was refused).
    pub fn needs_reevaluation(&self) -> bool {
        !self.rejected.is_empty()
    }

    /// Accepted placements, in node order.
    pub fn placements(&self) -> impl Iterator<Item = &Allocation> {
        self.accepted.values().flat_map(|n| n.place.iter())
    }

    /// Gives every accepted placement the next fencing token, in node then
    /// plan order, starting at `next_token`; returns the next unused token.
    /// Tokens only grow, so a node can refuse any instruction carrying a
    /// token lower than one it has seen for the same slot.
    pub fn assign_tokens(&mut self, next_token: u64) -> u64 {
        let mut t = next_token;
        for np in self.accepted.values_mut() {
            for a in &mut np.place {
                a.fencing_token = t;
                t += 1;
            }
        }
        t
    }
}

/// Re-checks `plan` against the newest state (see the module docs).
pub fn verify_plan(latest: &ClusterSnapshot, plan: &Plan) -> PlanVerdict {
    let mut verdict = PlanVerdict {
        eval: plan.eval,
        workload: plan.workload.clone(),
        accepted: BTreeMap::new(),
        rejected: BTreeMap::new(),
        refresh_index: None,
    };
    let workload = latest.workload(&plan.workload);
    let now_gen = workload.map(|w| w.generation);
    let grows = plan
        .nodes
        .values()
        .any(|n| !n.place.is_empty() || !n.update.is_empty());
    if grows && now_gen != plan.generation {
        for node in plan.nodes.keys() {
            verdict.rejected.insert(
                node.clone(),
                Rejection::WorkloadChanged {
                    planned: plan.generation,
                    now: now_gen,
                },
            );
        }
        verdict.refresh_index = Some(latest.index());
        return verdict;
    }
    let per_node = workload.is_some_and(|w| w.intent.cardinality() == Cardinality::PerNode);
    // A sharded workload may run several instances on one node (see
    // `Rules::compile`).
    let one_per_node = latest.config().one_per_node && !workload.is_some_and(|w| w.intent.shard);
    let stopped: HashSet<AllocId> = plan.stops().map(|(_, s)| s.alloc).collect();
    // Live instances by slot and by node, not counting what this plan stops.
    let mut by_slot: HashMap<u32, AllocId> = HashMap::new();
    let mut on_node: HashMap<&NodeId, AllocId> = HashMap::new();
    for a in latest
        .allocs_of(&plan.workload)
        .filter(|a| a.is_live() && !stopped.contains(&a.id))
    {
        by_slot.insert(a.slot, a.id);
        on_node.insert(&a.node, a.id);
    }
    let mut placed_on: HashMap<AllocId, &NodeId> = HashMap::new();
    for (node, np) in &plan.nodes {
        for a in &np.place {
            placed_on.insert(a.id, node);
        }
    }
    for (node, np) in &plan.nodes {
        if let Some(r) = check_node(latest, node, np, per_node, one_per_node, &by_slot, &on_node) {
            verdict.rejected.insert(node.clone(), r);
        }
    }
    // Leases renewed since the decision: refuse the stop and its successor.
    for (node, s) in plan.stops() {
        if let StopReason::Disconnected { lease_expires_at } = s.reason {
            let now_lease = latest.alloc(s.alloc).and_then(|a| a.lease_expires_at);
            if now_lease > lease_expires_at {
                verdict
                    .rejected
                    .insert(node.clone(), Rejection::LeaseRenewed(s.alloc));
                for (succ_node, np) in &plan.nodes {
                    if np.place.iter().any(|a| a.previous == Some(s.alloc)) {
                        verdict
                            .rejected
                            .insert(succ_node.clone(), Rejection::LeaseRenewed(s.alloc));
                    }
                }
            }
        }
    }
    // A stop must not outlive the placement it depends on.
    loop {
        let mut more = Vec::new();
        for (node, np) in &plan.nodes {
            if verdict.rejected.contains_key(node) {
                continue;
            }
            for s in &np.stop {
                if let Some(by) = s.reason.depends_on() {
                    let refused = placed_on
                        .get(&by)
                        .is_none_or(|n| verdict.rejected.contains_key(*n));
                    if refused {
                        more.push((node.clone(), by));
                        break;
                    }
                }
            }
        }
        if more.is_empty() {
            break;
        }
        for (node, by) in more {
            verdict
                .rejected
                .insert(node, Rejection::ReplacementRefused(by));
        }
    }
    for (node, np) in &plan.nodes {
        if !verdict.rejected.contains_key(node) && !np.is_empty() {
            verdict.accepted.insert(node.clone(), np.clone());
        }
    }
    if !verdict.rejected.is_empty() {
        verdict.refresh_index = Some(latest.index());
    }
    verdict
}

fn check_node(
    latest: &ClusterSnapshot,
    node: &NodeId,
    np: &NodePlan,
    per_node: bool,
    one_per_node: bool,
    by_slot: &HashMap<u32, AllocId>,
    on_node: &HashMap<&NodeId, AllocId>,
) -> Option<Rejection> {
    if np.place.is_empty() && np.update.is_empty() {
        return None;
    }
    let Some(n) = latest.node(node) else {
        return Some(Rejection::NodeUnknown);
    };
    if n.status != NodeStatus::Ready {
        return Some(Rejection::NodeNotReady(n.status));
    }
    for a in &np.place {
        let holder = if per_node {
            on_node.get(node)
        } else {
            by_slot.get(&a.slot)
        };
        if let Some(h) = holder {
            return Some(Rejection::SlotTaken {
                slot: a.slot,
                holder: *h,
            });
        }
        if one_per_node {
            if let Some(h) = on_node.get(node) {
                return Some(Rejection::NodeTaken { holder: *h });
            }
        }
    }
    if one_per_node && np.place.len() > 1 {
        return Some(Rejection::NodeTaken {
            holder: np.place[0].id,
        });
    }
    let mut used = latest.reserved(node);
    for s in &np.stop {
        if let Some(a) = latest
            .alloc(s.alloc)
            .filter(|a| a.is_live() && &a.node == node)
        {
            used = used.saturating_sub(a.resources);
        }
    }
    for u in &np.update {
        match latest
            .alloc(u.alloc)
            .filter(|a| a.is_live() && &a.node == node)
        {
            Some(a) => {
                used = used.saturating_sub(a.resources).saturating_add(u.resources);
            }
            None => return Some(Rejection::AllocGone(u.alloc)),
        }
    }
    let placed = np
        .place
        .iter()
        .fold(Resources::ZERO, |acc, a| acc.saturating_add(a.resources));
    let used = used.saturating_add(placed);
    used.exceeds(&n.capacity)
        .map(|dimension| Rejection::Exhausted {
            dimension,
            need: used.get(dimension),
            capacity: n.capacity.get(dimension),
        })
}
