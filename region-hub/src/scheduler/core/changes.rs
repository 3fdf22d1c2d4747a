//! Applied changes into the leader's snapshot, one handler per kind of
//! [`SchedChange`], and the lease deadlines this leader counts for each
//! allocation (see [`super::super::lease`]).

use std::collections::BTreeSet;

use strata_protocol::liveness::LivenessState;
use strata_sched::{
    AllocId, Allocation, ClientState, Desired, NodeId, NodeStatus, PlaceReason, Timestamp, Trigger,
    WorkloadId,
};

use super::super::lease::{self, Basis};
use super::{enqueue, Command, Lead, Observation, SchedulerCore};
use crate::fsm::SchedChange;

impl SchedulerCore {
    pub(super) fn change(&mut self, lead: &mut Lead, c: SchedChange, now_ms: i64) {
        match c {
            SchedChange::Workload(w) => {
                let trigger = if lead.snap.workload(&w.id).is_some() {
                    Trigger::Update
                } else {
                    Trigger::Submit
                };
                let id = w.id.clone();
                lead.carriers_wanted = true;
                lead.snap.upsert_workload(*w);
                // Leases depend on the policy, which may have changed.
                self.relase_workload(lead, &id);
                enqueue(lead, id, trigger);
            }
            SchedChange::WorkloadRemoved(id) => {
                lead.snap.remove_workload(&id);
                lead.blocked.remove(&id);
                enqueue(lead, id, Trigger::Delete);
            }
            SchedChange::Allocs(list) => {
                for a in list {
                    let before = lead.snap.alloc(a.id).map(|b| b.client);
                    let became = (before != Some(a.client)).then_some(a.client);
                    if became == Some(ClientState::Running) {
                        if let Some(t0) = lead.replacing.remove(&a.id) {
                            self.commands
                                .push_back(Command::Observe(Observation::Replaced {
                                    latency_ms: u64::try_from(now_ms.saturating_sub(t0))
                                        .unwrap_or(0),
                                }));
                        }
                    }
                    if let Some(o) = lead.pressure.committed(a.id) {
                        self.commands.push_back(Command::Observe(o));
                    }
                    let w = a.workload.clone();
                    let failed = matches!(became, Some(ClientState::Failed | ClientState::Lost))
                        && a.desired == Desired::Run;
                    let a = self.with_lease(lead, a);
                    lead.snap.upsert_alloc(a);
                    if failed {
                        enqueue(lead, w, Trigger::AllocFailed);
                    }
                }
            }
            SchedChange::AllocsRemoved(ids) => {
                for id in ids {
                    lead.replacing.remove(&id);
                    lead.snap.remove_alloc(id);
                }
            }
            SchedChange::Plan {
                workload,
                eval,
                refused,
            } => {
                if lead
                    .in_flight
                    .get(&workload)
                    .is_some_and(|f| f.eval == eval)
                {
                    lead.in_flight.remove(&workload);
                }
                if refused > 0 {
                    // The state machine refused what the snapshot accepted:
                    // the optimistic part is wrong; read the truth again.
                    lead.rebuilding = true;
                    self.commands.push_back(Command::Rebuild);
                    enqueue(lead, workload, Trigger::PlanRejected);
                }
            }
            SchedChange::Node(mut n) => {
                let id = n.id.clone();
                n.device_groups = lead.carriers.get(&id.0).cloned().unwrap_or_default();
                lead.pressure.overlay(&mut n);
                let grew = match lead.snap.node(&id) {
                    Some(old) => {
                        old.capacity != n.capacity || old.labels != n.labels || old.pools != n.pools
                    }
                    None => true,
                };
                lead.snap.upsert_node(*n);
                if grew {
                    let blocked: Vec<WorkloadId> = lead.blocked.iter().cloned().collect();
                    for w in blocked {
                        enqueue(lead, w, Trigger::CapacityChanged(id.clone()));
                    }
                }
            }
            SchedChange::Transition { mut node, liveness } => {
                let id = node.id.clone();
                node.device_groups = lead.carriers.get(&id.0).cloned().unwrap_or_default();
                let before = lead.snap.node(&id).map(|n| n.status);
                let heard = match liveness.state {
                    // Up again: it may renew from now on.
                    LivenessState::Up | LivenessState::Unknown => {
                        now_ms.max(liveness.last_heartbeat_ms)
                    }
                    LivenessState::Suspect | LivenessState::Down => liveness.last_heartbeat_ms,
                };
                let h = lead.heard.entry(id.clone()).or_insert(heard);
                *h = (*h).max(heard);
                let status = node.status;
                if status == NodeStatus::Ready {
                    lead.pressure.overlay(&mut node);
                } else {
                    lead.pressure.forget(&id);
                }
                lead.snap.upsert_node(*node);
                if status == NodeStatus::Ready {
                    // Renewals resume: a stop of one of its allocations
                    // decided before must now fail verification.
                    let until = Timestamp::from_millis(now_ms);
                    self.renew_node(lead, &id, until);
                } else {
                    self.relase_node(lead, &id);
                }
                let trigger = match (before, status) {
                    (_, NodeStatus::Suspect) => Trigger::NodeSuspect(id.clone()),
                    (_, NodeStatus::Down) => Trigger::NodeDown(id.clone()),
                    (Some(NodeStatus::Suspect | NodeStatus::Down), NodeStatus::Ready) => {
                        Trigger::NodeBack(id.clone())
                    }
                    (_, NodeStatus::Draining) => Trigger::NodeDrain(id.clone()),
                    _ => Trigger::NodeUp(id.clone()),
                };
                let mut ids: BTreeSet<WorkloadId> = lead
                    .snap
                    .allocs_on(&id)
                    .filter(|a| a.desired == Desired::Run)
                    .map(|a| a.workload.clone())
                    .collect();
                if status == NodeStatus::Ready {
                    ids.extend(lead.blocked.iter().cloned());
                }
                for w in ids {
                    enqueue(lead, w, trigger.clone());
                }
            }
        }
    }

    /// A new placement replacing one whose edge went away or which
    /// failed: remember since when, for the re-placement latency.
    pub(super) fn note_replacement(&self, lead: &mut Lead, a: &Allocation, now_ms: i64) {
        let since = match a.placement.reason {
            PlaceReason::ReplaceDisconnected | PlaceReason::ReplaceLost => a
                .previous
                .and_then(|p| lead.snap.alloc(p))
                .and_then(|p| lead.snap.node(&p.node))
                .map(|n| n.status_since.as_millis()),
            PlaceReason::ReplaceFailed => Some(now_ms),
            _ => None,
        };
        if let Some(t0) = since {
            lead.replacing.insert(a.id, t0);
        }
    }

    fn basis(&self, lead: &Lead, node: &NodeId) -> Basis {
        Basis {
            heard_ms: lead.heard.get(node).copied().unwrap_or(0),
            floor_ms: lead.floor_ms,
        }
    }

    /// `a` with the lease deadline this leader counts.
    pub(super) fn with_lease(&self, lead: &Lead, mut a: Allocation) -> Allocation {
        let w = lead.snap.workload(&a.workload);
        let node = lead.snap.node(&a.node);
        a.lease_expires_at =
            lease::effective(&a, w, node, self.basis(lead, &a.node), &self.cfg.lease);
        a
    }

    fn relase_node(&self, lead: &mut Lead, node: &NodeId) {
        let ids: Vec<AllocId> = lead.snap.allocs_on(node).map(|a| a.id).collect();
        self.relase(lead, ids);
    }

    fn relase_workload(&self, lead: &mut Lead, w: &WorkloadId) {
        let ids: Vec<AllocId> = lead.snap.allocs_of(w).map(|a| a.id).collect();
        self.relase(lead, ids);
    }

    fn relase(&self, lead: &mut Lead, ids: Vec<AllocId>) {
        for id in ids {
            if let Some(a) = lead.snap.alloc(id).cloned() {
                let a = self.with_lease(lead, a);
                lead.snap.upsert_alloc(a);
            }
        }
    }

    /// The edge is up again: the leases of its `replace-after`
    /// allocations run at least until `from` plus lease plus margin.
    fn renew_node(&self, lead: &mut Lead, node: &NodeId, from: Timestamp) {
        let ids: Vec<AllocId> = lead.snap.allocs_on(node).map(|a| a.id).collect();
        for id in ids {
            let Some(mut a) = lead.snap.alloc(id).cloned() else {
                continue;
            };
            let Some(l) = lead.snap.workload(&a.workload).and_then(lease::lease_of) else {
                continue;
            };
            let until = from
                .plus(l)
                .plus(std::time::Duration::from_millis(self.cfg.lease.margin_ms));
            a.lease_expires_at = Some(a.lease_expires_at.map_or(until, |t| t.max(until)));
            lead.snap.upsert_alloc(a);
        }
    }
}
