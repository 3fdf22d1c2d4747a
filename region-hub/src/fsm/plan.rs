//! Applying a verified plan: the body of the `ApplyPlan` command
//! ([`PlanCommit`]), the checks the state machine repeats, token
//! assignment, the evaluation record and the events it appends.
//!
//! The leader's plan applier verified the plan against its newest view
//! before proposing (`strata_sched::verify_plan`), but other entries may
//! commit between that check and this one. So the state machine repeats
//! the checks that keep two copies of an instance from ever existing, on
//! every replica, in log order, refusing a node's whole part of the plan
//! when one fails:
//! - the workload's generation changed or it was deleted (placements and
//!   updates only; stops always apply);
//! - a placement whose id exists, whose slot (count) is held by a running
//!   allocation this plan does not stop, or whose edge already runs the
//!   workload (an edge runs a workload once);
//! - a stop because the edge was disconnected, when the replicated
//!   liveness says the edge is up again (it may renew its lease now), and
//!   with it the placement that replaces it;
//! - a stop that depends on a refused placement (`replaced by`).
//!
//! What it refuses is recorded in the evaluation and the leader
//! re-evaluates the workload.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};
use strata_protocol::liveness::{EdgeLiveness, EventAttr, EventKind, LivenessState};
use strata_protocol::scheduling::{EvaluationInfo, RefusedNode, MAX_REFUSED_LISTED};
use strata_sched::{
    AllocId, Allocation, Cardinality, Desired, EvalId, NodeId, NodePlan, PlaceReason,
    PlacementFailure, StopReason, WorkloadId,
};

use super::allocs::{stop_words, AllocRecord, Scheduling};
use super::liveness::EventLog;
use super::workloads::Workloads;

/// The body of the `ApplyPlan` command: the accepted part of one
/// evaluation's plan. Stored in the Raft log: its layout never changes.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct PlanCommit {
    /// The evaluation.
    pub eval: EvalId,
    /// What triggered it (kebab-case, `strata_sched::Trigger::as_str`).
    pub trigger: String,
    /// The workload.
    pub workload: WorkloadId,
    /// The generation the plan was made for (`None`: deleted, stops only).
    pub generation: Option<u64>,
    /// Per edge: placements (fencing token 0: assigned on apply; lease
    /// deadline set by the leader), stops and in-place updates.
    pub nodes: BTreeMap<NodeId, NodePlan>,
    /// Node plans the leader's applier refused, with why.
    pub refused: Vec<RefusedNode>,
    /// Instances that could not be placed, and why.
    pub failure: Option<PlacementFailure>,
    /// Leader's clock at proposal, ms since the Unix epoch.
    pub now_ms: i64,
}

/// What applying a plan did.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanApplied {
    /// Placements made, with their fencing tokens.
    pub placed: Vec<(AllocId, u64)>,
    /// Allocations stopped.
    pub stopped: u32,
    /// Allocations updated in place.
    pub updated: u32,
    /// Node plans refused here (not counting the leader's refusals).
    pub refused: Vec<RefusedNode>,
    /// Every allocation created or changed, as it is now.
    pub changed: Vec<Allocation>,
    /// Allocations garbage-collected.
    pub removed: Vec<AllocId>,
}

/// The parts of the region state a plan touches.
pub(super) struct PlanParts<'a> {
    pub(super) workloads: &'a mut Workloads,
    pub(super) sched: &'a mut Scheduling,
    pub(super) liveness: &'a BTreeMap<String, EdgeLiveness>,
    pub(super) events: &'a mut EventLog,
}

fn disconnected(liveness: &BTreeMap<String, EdgeLiveness>, edge: &str) -> bool {
    liveness
        .get(edge)
        .is_some_and(|l| matches!(l.state, LivenessState::Suspect | LivenessState::Down))
}

/// Which node plans fail the state machine's checks, with why.
fn refusals(p: &PlanParts<'_>, c: &PlanCommit) -> BTreeMap<NodeId, String> {
    let mut refused: BTreeMap<NodeId, String> = BTreeMap::new();
    let entry = p.workloads.monitor(&c.workload.tenant, &c.workload.name);
    let now_gen = entry.map(|m| m.spec.generation);
    let per_node = entry.is_some_and(|m| m.spec.intent().cardinality() == Cardinality::PerNode);
    // A sharded monitor's instances split its devices, so an edge may run
    // several of them (one per slot).
    let sharded = entry.is_some_and(|m| m.spec.placement.shard);
    let stopped: BTreeSet<AllocId> = c
        .nodes
        .values()
        .flat_map(|n| n.stop.iter().map(|s| s.alloc))
        .collect();
    let running: Vec<&AllocRecord> = p
        .sched
        .allocs_of(&c.workload)
        .filter(|r| r.runs() && !stopped.contains(&r.alloc.id))
        .collect();
    for (node, np) in &c.nodes {
        let grows = !np.place.is_empty() || !np.update.is_empty();
        let why = if grows && now_gen != c.generation {
            Some(format!(
                "workload changed since the plan (generation {:?} planned, {:?} now)",
                c.generation, now_gen
            ))
        } else if let Some(a) = np.place.iter().find(|a| p.sched.alloc(a.id).is_some()) {
            Some(format!("allocation {} exists already", a.id))
        } else if let Some((a, h)) = np.place.iter().find_map(|a| {
            running
                .iter()
                .find(|r| {
                    (!per_node && r.alloc.slot == a.slot) || (!sharded && r.alloc.node == *node)
                })
                .map(|h| (a, h))
        }) {
            Some(format!(
                "slot {} or edge {node} already runs allocation {} of the workload",
                a.slot, h.alloc.id
            ))
        } else if np.place.len() > 1 && !sharded {
            Some(format!("{} placements on one edge", np.place.len()))
        } else {
            np.stop.iter().find_map(|s| match s.reason {
                StopReason::Disconnected { .. } if !disconnected(p.liveness, &node.0) => {
                    Some(format!(
                        "edge {node} is up again: allocation {} keeps its lease",
                        s.alloc
                    ))
                }
                _ => None,
            })
        };
        if let Some(why) = why {
            refused.insert(node.clone(), why);
        }
    }
    // A placement replacing a refused disconnected stop goes with it; a
    // stop depending on a refused placement too. Until nothing changes.
    loop {
        let mut more: Vec<(NodeId, String)> = Vec::new();
        for (node, np) in c.nodes.iter().filter(|(n, _)| !refused.contains_key(*n)) {
            for a in &np.place {
                let Some(prev) = a.previous else { continue };
                let held_back = c.nodes.iter().any(|(n2, np2)| {
                    refused.contains_key(n2)
                        && np2.stop.iter().any(|s| {
                            s.alloc == prev && matches!(s.reason, StopReason::Disconnected { .. })
                        })
                });
                if held_back {
                    more.push((
                        node.clone(),
                        format!("the allocation it replaces, {prev}, keeps running"),
                    ));
                }
            }
            for s in &np.stop {
                let Some(by) = s.reason.depends_on() else {
                    continue;
                };
                let placed_ok = c.nodes.iter().any(|(n2, np2)| {
                    !refused.contains_key(n2) && np2.place.iter().any(|a| a.id == by)
                });
                if !placed_ok {
                    more.push((node.clone(), format!("its replacement {by} was refused")));
                }
            }
        }
        if more.is_empty() {
            break;
        }
        for (n, why) in more {
            refused.entry(n).or_insert(why);
        }
    }
    refused
}

/// Applies `c` at `index` (see the module docs).
pub(super) fn apply_plan(p: &mut PlanParts<'_>, c: PlanCommit, index: u64) -> PlanApplied {
    let refused = refusals(p, &c);
    let now = c.now_ms;
    let mut out = PlanApplied {
        placed: Vec::new(),
        stopped: 0,
        updated: 0,
        refused: refused
            .iter()
            .map(|(n, r)| RefusedNode {
                edge: n.0.clone(),
                reason: r.clone(),
            })
            .collect(),
        changed: Vec::new(),
        removed: Vec::new(),
    };
    let accepted: Vec<(&NodeId, &NodePlan)> = c
        .nodes
        .iter()
        .filter(|(n, _)| !refused.contains_key(*n))
        .collect();
    let n_place: u64 = accepted.iter().map(|(_, np)| np.place.len() as u64).sum();
    let mut token = p.sched.take_tokens(n_place);
    let mut notes = Notes::default();
    for (node, np) in &accepted {
        for s in &np.stop {
            let Some(r) = p.sched.alloc(s.alloc).filter(|r| r.runs()) else {
                continue;
            };
            let mut r = r.clone();
            r.alloc.desired = Desired::Stop;
            r.alloc.modified_index = index;
            r.modified_ms = now;
            r.stop_reason = Some(s.reason.clone());
            if let StopReason::Replaced { by } = s.reason {
                r.replaced_by = Some(by);
            }
            notes.stop(&r, node);
            out.changed.push(r.alloc.clone());
            p.sched.upsert(r);
            out.stopped += 1;
        }
        for u in &np.update {
            let Some(r) = p.sched.record_mut(u.alloc).filter(|r| r.runs()) else {
                continue;
            };
            r.alloc.generation = u.generation;
            r.alloc.resources = u.resources;
            r.alloc.modified_index = index;
            r.modified_ms = now;
            out.changed.push(r.alloc.clone());
            out.updated += 1;
        }
        for a in &np.place {
            let mut a = a.clone();
            a.fencing_token = token;
            token += 1;
            a.created_index = index;
            a.modified_index = index;
            a.node = (*node).clone();
            if let Some(prev) = a.previous {
                if let Some(r) = p.sched.record_mut(prev) {
                    r.replaced_by = Some(a.id);
                    r.alloc.modified_index = index;
                    r.modified_ms = now;
                    out.changed.push(r.alloc.clone());
                }
            }
            notes.place(&a, p.sched);
            out.placed.push((a.id, a.fencing_token));
            out.changed.push(a.clone());
            p.sched.upsert(AllocRecord {
                alloc: a,
                created_ms: now,
                modified_ms: now,
                stop_reason: None,
                replaced_by: None,
            });
        }
    }
    let exists = p
        .workloads
        .monitor(&c.workload.tenant, &c.workload.name)
        .is_some();
    out.removed = p.sched.collect(&c.workload, exists);
    if !out.placed.is_empty() || out.stopped > 0 || out.updated > 0 {
        p.workloads.bump_version();
    }
    let mut all_refused = c.refused.clone();
    all_refused.extend(out.refused.iter().cloned());
    let previous_failure = p
        .sched
        .last_eval(&c.workload)
        .and_then(|e| e.failure.clone());
    let placed = out.placed.len() as u32;
    let status = match (&c.failure, all_refused.is_empty()) {
        (Some(_), _) if placed == 0 => "blocked",
        (Some(_), _) | (None, false) => "partial",
        (None, true) => "complete",
    };
    all_refused.truncate(MAX_REFUSED_LISTED);
    p.sched.record_eval(
        &c.workload,
        EvaluationInfo {
            id: c.eval,
            trigger: c.trigger.clone(),
            at_ms: now,
            index,
            status: status.to_owned(),
            placed,
            stopped: out.stopped,
            updated: out.updated,
            refused: all_refused,
            failure: c.failure.clone(),
        },
    );
    notes.events(p.events, &c, now, previous_failure.as_ref());
    out
}

/// What a plan did, gathered for its events.
#[derive(Default)]
struct Notes {
    /// (slot, edge, token, reason, previous edge) of each placement.
    placed: Vec<(u32, String, u64, PlaceReason, Option<String>)>,
    /// (slot, edge, words) of each stop that is not a replacement.
    stopped: Vec<(u32, String, String)>,
    /// (slot, edge, lease expiry) of each disconnected stop.
    expired: Vec<(u32, String, Option<i64>)>,
}

impl Notes {
    fn stop(&mut self, r: &AllocRecord, node: &NodeId) {
        match &r.stop_reason {
            Some(StopReason::Replaced { .. }) => {}
            Some(StopReason::Disconnected { lease_expires_at }) => self.expired.push((
                r.alloc.slot,
                node.0.clone(),
                lease_expires_at.map(|t| t.as_millis()),
            )),
            Some(other) => self
                .stopped
                .push((r.alloc.slot, node.0.clone(), stop_words(other))),
            None => {}
        }
    }

    fn place(&mut self, a: &Allocation, sched: &Scheduling) {
        let prev_edge = a
            .previous
            .and_then(|p| sched.alloc(p))
            .map(|r| r.alloc.node.0.clone());
        self.placed.push((
            a.slot,
            a.node.0.clone(),
            a.fencing_token,
            a.placement.reason.clone(),
            prev_edge,
        ));
    }

    fn events(
        self,
        log: &mut EventLog,
        c: &PlanCommit,
        now: i64,
        previous_failure: Option<&PlacementFailure>,
    ) {
        let subject = c.workload.to_string();
        let attrs = |extra: Vec<(&str, String)>| -> Vec<EventAttr> {
            let mut v = vec![
                attr("workload", subject.clone()),
                attr("eval", c.eval.to_string()),
                attr("trigger", c.trigger.clone()),
            ];
            v.extend(extra.into_iter().map(|(k, val)| attr(k, val)));
            v
        };
        for (slot, edge, expires) in &self.expired {
            let when = expires.map_or_else(
                || "it never held one".to_owned(),
                |t| format!("at {}", super::allocs::rfc3339_ms(t)),
            );
            log.append(
                now,
                EventKind::LeaseExpired,
                subject.clone(),
                format!("{subject} slot {slot} on {edge}: its edge is cut off and its lease expired ({when}); stopped so it can be replaced"),
                None,
                attrs(vec![("slot", slot.to_string()), ("edge", edge.clone())]),
            );
        }
        let (replaced, fresh): (Vec<_>, Vec<_>) =
            self.placed.into_iter().partition(|p| p.4.is_some());
        for (slot, edge, token, reason, prev) in replaced {
            let from = prev.unwrap_or_default();
            // A move off a pressured edge is its own kind, so operators
            // can follow rebalancing apart from failures.
            let kind = match reason {
                PlaceReason::MigratePressure => EventKind::AllocMigrated,
                _ => EventKind::AllocReplaced,
            };
            log.append(
                now,
                kind,
                subject.clone(),
                format!(
                    "{subject} slot {slot} {}: {from} → {edge} (token {token}, {})",
                    if kind == EventKind::AllocMigrated {
                        "moved"
                    } else {
                        "replaced"
                    },
                    reason_words(&reason)
                ),
                None,
                attrs(vec![
                    ("slot", slot.to_string()),
                    ("from", from),
                    ("edge", edge),
                    ("token", token.to_string()),
                ]),
            );
        }
        if !fresh.is_empty() {
            let listed: Vec<String> = fresh
                .iter()
                .take(4)
                .map(|(slot, edge, token, _, _)| format!("slot {slot} on {edge} (token {token})"))
                .collect();
            let more = fresh.len().saturating_sub(listed.len());
            log.append(
                now,
                EventKind::AllocPlaced,
                subject.clone(),
                format!(
                    "{subject}: placed {}{}",
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
                None,
                attrs(vec![
                    ("count", fresh.len().to_string()),
                    (
                        "edges",
                        fresh
                            .iter()
                            .map(|p| p.1.clone())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ]),
            );
        }
        if !self.stopped.is_empty() {
            let listed: Vec<String> = self
                .stopped
                .iter()
                .take(4)
                .map(|(slot, edge, why)| format!("slot {slot} on {edge} ({why})"))
                .collect();
            let more = self.stopped.len().saturating_sub(listed.len());
            log.append(
                now,
                EventKind::AllocStopped,
                subject.clone(),
                format!(
                    "{subject}: stopped {}{}",
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
                None,
                attrs(vec![("count", self.stopped.len().to_string())]),
            );
        }
        // A failure is an event when it is new or changed, not on every
        // re-evaluation that finds the same.
        if let Some(f) = &c.failure {
            if previous_failure != Some(f) {
                log.append(
                    now,
                    EventKind::PlacementFailed,
                    subject.clone(),
                    format!("{subject}: {f}"),
                    None,
                    attrs(vec![
                        ("unplaced", f.unplaced.to_string()),
                        ("wanted", f.wanted.to_string()),
                    ]),
                );
            }
        }
    }
}

fn attr(key: &str, value: String) -> EventAttr {
    EventAttr {
        key: key.to_owned(),
        value,
    }
}

/// Why a placement was needed, in a few words.
pub fn reason_words(r: &PlaceReason) -> &'static str {
    match r {
        PlaceReason::Missing => "missing",
        PlaceReason::ReplaceDisconnected => "its edge was cut off past replace-after",
        PlaceReason::ReplaceLost => "its edge left the region",
        PlaceReason::ReplaceFailed => "it failed",
        PlaceReason::MigrateDrain => "its edge is draining",
        PlaceReason::MigratePressure => "its edge is under sustained pressure",
        PlaceReason::DestructiveUpdate => "the new generation did not fit in place",
    }
}
