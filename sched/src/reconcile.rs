//! Reconcile: desired instances versus existing allocations, in buckets as
//! in nomad's reconciler.
//!
//! Every allocation of the workload that is still desired to run lands in
//! exactly one bucket:
//!
//! | bucket | when | outcome |
//! |---|---|---|
//! | complete | exited cleanly for good | keeps its slot, untouched |
//! | failed | failed for good, or stopped itself (lease) | stopped; replaced |
//! | lost | its node left the region | stopped; replaced |
//! | disconnected | node suspect or down | `keep`: untouched, never replaced. `replace-after`: untouched until disconnected that long **and** its lease expired, then stopped and replaced; until then the plan's `follow_up_at` says when to look again |
//! | migrating | node draining, or named by a pressure eval | replaced elsewhere; stopped only together with that placement |
//! | untainted | node ready | kept; a new generation is applied in place when the node still allows and fits it, otherwise replaced (destructive) |
//!
//! Count workloads then reconcile by slot (`0..count`): holders of slots at
//! or above the count, and duplicates of a slot, are stopped; free slots are
//! placed. Per-node workloads reconcile by node: the desired set is the
//! ready nodes carrying the device group that pass the hard rules.

use std::collections::{BTreeMap, BTreeSet};

use crate::feasible::Rules;
use crate::ids::{AllocId, NodeId, Timestamp};
use crate::intent::{Cardinality, DisconnectPolicy};
use crate::model::{Allocation, ClientState, Desired, Evaluation, NodeStatus, PlaceReason};
use crate::plan::{AllocStop, InPlaceUpdate, StopReason};
use crate::resources::Resources;
use crate::snapshot::{ClusterSnapshot, Slot};

/// One instance to place.
#[derive(Debug, Clone)]
pub(crate) struct PlaceRequest {
    pub(crate) slot: u32,
    pub(crate) reason: PlaceReason,
    /// The allocation it replaces (state handoff).
    pub(crate) previous: Option<AllocId>,
    /// Stop `previous` (on its node) only if this placement succeeds.
    pub(crate) stop_previous: Option<NodeId>,
    /// Never place on this node (moving away from it).
    pub(crate) avoid: Option<Slot>,
    /// Rank this node lower (the previous attempt failed there).
    pub(crate) penalty: Option<Slot>,
    /// Only this node (per-node).
    pub(crate) pinned: Option<Slot>,
}

/// What reconciliation decided.
#[derive(Debug, Default)]
pub(crate) struct Reconciled<'a> {
    /// Unconditional stops, with the node each runs on.
    pub(crate) stops: Vec<(NodeId, AllocStop)>,
    /// In-place updates, with node and the budget growth to reserve.
    pub(crate) updates: Vec<(NodeId, InPlaceUpdate, Resources)>,
    /// Instances to place.
    pub(crate) place: Vec<PlaceRequest>,
    /// Allocations that stay where they are (for spread and anti-affinity
    /// counts).
    pub(crate) staying: Vec<&'a Allocation>,
    /// Earliest time a disconnected instance becomes replaceable.
    pub(crate) follow_up_at: Option<Timestamp>,
}

enum Bucket {
    Complete,
    Replace {
        reason: PlaceReason,
        stop: StopReason,
        penalty: bool,
    },
    Disconnected,
    Migrate(PlaceReason),
    Untainted,
}

fn min_time(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

pub(crate) fn reconcile<'a>(
    snap: &'a ClusterSnapshot,
    rules: &Rules<'a>,
    eval: &Evaluation,
    now: Timestamp,
) -> Reconciled<'a> {
    let w = rules.workload;
    let policy = w.intent.disconnect_policy();
    let migrate: BTreeSet<AllocId> = eval.migrate.iter().copied().collect();
    let mut out = Reconciled::default();
    let mut classified: Vec<(&'a Allocation, Bucket)> = Vec::new();
    for a in snap.allocs_of(&w.id).filter(|a| a.desired == Desired::Run) {
        let node = snap.node(&a.node);
        let bucket = match (a.client, node) {
            (ClientState::Complete, _) => Bucket::Complete,
            (ClientState::Failed, _) => Bucket::Replace {
                reason: PlaceReason::ReplaceFailed,
                stop: StopReason::Failed,
                penalty: true,
            },
            (ClientState::Lost, _) => Bucket::Replace {
                reason: PlaceReason::ReplaceDisconnected,
                stop: StopReason::Failed,
                penalty: false,
            },
            (_, None) => Bucket::Replace {
                reason: PlaceReason::ReplaceLost,
                stop: StopReason::NodeLost,
                penalty: false,
            },
            (_, Some(n)) if n.status.is_disconnected() => match policy {
                DisconnectPolicy::Keep => Bucket::Disconnected,
                DisconnectPolicy::ReplaceAfter(d) => {
                    let deadline = n.status_since.plus(d);
                    let lease_over = a.lease_expires_at.is_none_or(|t| t <= now);
                    if now >= deadline && lease_over {
                        Bucket::Replace {
                            reason: PlaceReason::ReplaceDisconnected,
                            stop: StopReason::Disconnected {
                                lease_expires_at: a.lease_expires_at,
                            },
                            penalty: false,
                        }
                    } else {
                        let at = a.lease_expires_at.map_or(deadline, |t| t.max(deadline));
                        out.follow_up_at = min_time(out.follow_up_at, at);
                        Bucket::Disconnected
                    }
                }
            },
            (_, Some(n)) if n.status == NodeStatus::Draining => {
                Bucket::Migrate(PlaceReason::MigrateDrain)
            }
            (_, Some(_)) if migrate.contains(&a.id) => {
                Bucket::Migrate(PlaceReason::MigratePressure)
            }
            (_, Some(_)) => Bucket::Untainted,
        };
        classified.push((a, bucket));
    }
    match w.intent.cardinality() {
        Cardinality::Count(n) => by_slot(snap, rules, n, classified, &mut out),
        Cardinality::PerNode => by_node(snap, rules, classified, &mut out),
    }
    out
}

/// Stops `a` unconditionally.
fn stop(out: &mut Reconciled<'_>, a: &Allocation, reason: StopReason) {
    out.stops.push((
        a.node.clone(),
        AllocStop {
            alloc: a.id,
            reason,
        },
    ));
}

/// An untainted allocation of an older generation: in place when its node
/// still allows and fits the new spec, else `false` (replace it).
fn try_in_place<'a>(
    snap: &'a ClusterSnapshot,
    rules: &Rules<'a>,
    a: &'a Allocation,
    out: &mut Reconciled<'a>,
) -> bool {
    let w = rules.workload;
    let Some(slot) = snap.slot_of(&a.node) else {
        return false;
    };
    let Some(e) = snap.entry(slot) else {
        return false;
    };
    let others = snap.live_count(&w.id, &a.node).saturating_sub(1);
    if rules.eligible(e, others).is_err() {
        return false;
    }
    let growth = w.resources.saturating_sub(a.resources);
    if e.reserved
        .saturating_add(growth)
        .exceeds(&e.node.capacity)
        .is_some()
    {
        return false;
    }
    out.updates.push((
        a.node.clone(),
        InPlaceUpdate {
            alloc: a.id,
            generation: w.generation,
            resources: w.resources,
        },
        growth,
    ));
    true
}

fn by_slot<'a>(
    snap: &'a ClusterSnapshot,
    rules: &Rules<'a>,
    count: u32,
    classified: Vec<(&'a Allocation, Bucket)>,
    out: &mut Reconciled<'a>,
) {
    let w = rules.workload;
    // Slot → holder. A holder keeps running for now; ready ones win a
    // contested slot so a duplicate on a cut-off node is the one stopped.
    let mut holders: BTreeMap<u32, (&'a Allocation, Bucket)> = BTreeMap::new();
    let mut replacing: Vec<(&'a Allocation, PlaceReason, bool)> = Vec::new();
    for (a, b) in classified {
        match b {
            Bucket::Replace {
                reason,
                stop: why,
                penalty,
            } => {
                stop(out, a, why);
                if a.slot < count {
                    replacing.push((a, reason, penalty));
                }
            }
            _ if a.slot >= count => stop(out, a, StopReason::NotNeeded),
            b => {
                let rank = |b: &Bucket| u8::from(matches!(b, Bucket::Untainted));
                match holders.get(&a.slot) {
                    Some((_, hb)) if rank(hb) >= rank(&b) => {
                        stop(out, a, StopReason::NotNeeded);
                    }
                    Some((held, _)) => {
                        stop(out, held, StopReason::NotNeeded);
                        holders.insert(a.slot, (a, b));
                    }
                    None => {
                        holders.insert(a.slot, (a, b));
                    }
                }
            }
        }
    }
    for (&slot_no, (a, b)) in &holders {
        match b {
            Bucket::Migrate(reason) => out.place.push(PlaceRequest {
                slot: slot_no,
                reason: reason.clone(),
                previous: Some(a.id),
                stop_previous: Some(a.node.clone()),
                avoid: snap.slot_of(&a.node),
                penalty: None,
                pinned: None,
            }),
            Bucket::Untainted if a.generation < w.generation => {
                if try_in_place(snap, rules, a, out) {
                    out.staying.push(a);
                } else {
                    out.place.push(PlaceRequest {
                        slot: slot_no,
                        reason: PlaceReason::DestructiveUpdate,
                        previous: Some(a.id),
                        stop_previous: Some(a.node.clone()),
                        avoid: None,
                        penalty: None,
                        pinned: None,
                    });
                }
            }
            _ => out.staying.push(a),
        }
    }
    let replaced: BTreeMap<u32, (&Allocation, PlaceReason, bool)> = replacing
        .into_iter()
        .map(|(a, r, p)| (a.slot, (a, r, p)))
        .collect();
    for slot_no in 0..count {
        if holders.contains_key(&slot_no) {
            continue;
        }
        match replaced.get(&slot_no) {
            Some((a, reason, penalty)) => out.place.push(PlaceRequest {
                slot: slot_no,
                reason: reason.clone(),
                previous: Some(a.id),
                stop_previous: None,
                avoid: None,
                penalty: if *penalty {
                    snap.slot_of(&a.node)
                } else {
                    None
                },
                pinned: None,
            }),
            None => out.place.push(PlaceRequest {
                slot: slot_no,
                reason: PlaceReason::Missing,
                previous: None,
                stop_previous: None,
                avoid: None,
                penalty: None,
                pinned: None,
            }),
        }
    }
}

fn by_node<'a>(
    snap: &'a ClusterSnapshot,
    rules: &Rules<'a>,
    classified: Vec<(&'a Allocation, Bucket)>,
    out: &mut Reconciled<'a>,
) {
    let w = rules.workload;
    // Desired: ready carriers passing the hard rules (capacity is checked
    // at placement, where a shortfall becomes a reported failure).
    let mut desired: BTreeMap<NodeId, Slot> = BTreeMap::new();
    if let Some(list) = w.device_group.as_ref().and_then(|g| snap.by_group.get(g)) {
        for &s in &list.slots {
            if let Some(e) = snap.entry(s) {
                let others = snap.live_count(&w.id, &e.node.id);
                if rules.eligible_ignoring_self(e, others).is_ok() {
                    desired.insert(e.node.id.clone(), s);
                }
            }
        }
    }
    let mut covered: BTreeSet<NodeId> = BTreeSet::new();
    let mut used_slots: BTreeSet<u32> = BTreeSet::new();
    let mut departing: Vec<AllocId> = Vec::new();
    let mut replace_here: Vec<(&'a Allocation, PlaceReason)> = Vec::new();
    for (a, b) in &classified {
        if matches!(b, Bucket::Complete | Bucket::Disconnected) {
            used_slots.insert(a.slot);
        }
    }
    for (a, b) in classified {
        match b {
            Bucket::Complete => {
                covered.insert(a.node.clone());
                out.staying.push(a);
            }
            Bucket::Disconnected => {
                // Kept where it is; its devices may have moved, in which case
                // the new carrier gets its own instance (another slot).
                out.staying.push(a);
                departing.push(a.id);
            }
            Bucket::Replace {
                reason, stop: why, ..
            } => {
                stop(out, a, why);
                departing.push(a.id);
                if desired.contains_key(&a.node) && !covered.contains(&a.node) {
                    replace_here.push((a, reason));
                    covered.insert(a.node.clone());
                }
            }
            Bucket::Migrate(PlaceReason::MigrateDrain) => {
                // A per-node instance cannot leave its devices: a drain
                // stops it.
                stop(out, a, StopReason::NodeDraining);
                departing.push(a.id);
            }
            Bucket::Migrate(_) => {
                // Nor can pressure move it (the rebalancer never asks).
                covered.insert(a.node.clone());
                out.staying.push(a);
            }
            Bucket::Untainted => {
                if !desired.contains_key(&a.node) {
                    stop(out, a, StopReason::NodeNoLongerEligible);
                    departing.push(a.id);
                } else if !covered.insert(a.node.clone()) {
                    stop(out, a, StopReason::NotNeeded);
                } else {
                    used_slots.insert(a.slot);
                    if a.generation < w.generation && !try_in_place(snap, rules, a, out) {
                        // A per-node instance cannot move: replace it on the
                        // same node, stopping the old one with the placement.
                        out.place.push(PlaceRequest {
                            slot: a.slot,
                            reason: PlaceReason::DestructiveUpdate,
                            previous: Some(a.id),
                            stop_previous: Some(a.node.clone()),
                            avoid: None,
                            penalty: None,
                            pinned: snap.slot_of(&a.node),
                        });
                    } else {
                        out.staying.push(a);
                    }
                }
            }
        }
    }
    let mut next_free = 0u32;
    let mut fresh_slot = |used: &mut BTreeSet<u32>| {
        while used.contains(&next_free) {
            next_free += 1;
        }
        used.insert(next_free);
        next_free
    };
    for (a, reason) in replace_here {
        out.place.push(PlaceRequest {
            slot: a.slot,
            reason,
            previous: Some(a.id),
            stop_previous: None,
            avoid: None,
            penalty: None,
            pinned: snap.slot_of(&a.node),
        });
    }
    let mut handoff = departing.into_iter();
    for (node, s) in desired {
        if covered.contains(&node) {
            continue;
        }
        out.place.push(PlaceRequest {
            slot: fresh_slot(&mut used_slots),
            reason: PlaceReason::Missing,
            previous: handoff.next(),
            stop_previous: None,
            avoid: None,
            penalty: None,
            pinned: Some(s),
        });
    }
}
