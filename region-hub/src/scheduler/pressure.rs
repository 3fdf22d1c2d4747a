//! Rebalancing under pressure, on the leader: the scheduler core's part of
//! `strata_sched::Rebalancer`.
//!
//! ```text
//!  heartbeat ──▶ LivenessDriver ──SchedSignal::Usage──▶ SchedulerCore::handle_usage
//!  (soft state, never a Raft entry)                     measured use → snapshot node
//!  every sample-every: Rebalancer::observe_with(snapshot, now)
//!       └─▶ Rebalance { workload, node, migrate, reason }
//!             └─▶ evaluation (trigger `pressure`, `migrate`, Headroom)
//!                   └─▶ schedule → verify_plan → ApplyPlan through Raft
//! ```
//!
//! - **Measured use** is what the edge's instances use (the sum of the
//!   `used-*` its heartbeat reports for each), against the capacity the
//!   edge offers monitors (`[monitors] cpu-millicores` / `memory-mib`):
//!   the same units as the budgets the scheduler places by, so "shed
//!   enough budget to fall below `leave-percent`" is arithmetic on one
//!   scale. It comes from every heartbeat the leader receives, not from
//!   the rate-limited replicated report, and overrides the report's copy
//!   in the snapshot. Soft state: a new leader starts calm and measures
//!   again, which only delays moves by `sustain`.
//! - **Movable**: count instances (per-edge instances belong to their
//!   edge's devices) that no hard rule pins to their edge: a `target`
//!   node, or a hard constraint or affinity `node = x` / `node in [..]`.
//! - **Where to**: the evaluation carries a [`Headroom`]: never an edge
//!   that is hot (pressured, or above `enter-percent` and counting), nor
//!   one the instance's budget would push to `enter-percent`; and never
//!   back onto the edge it leaves (the scheduler's own rule).
//! - **Counted**: every move once its replacement is committed
//!   (`strata_hub_migrations_total{reason="cpu-pressure"|"memory-pressure"}`),
//!   every move wanted but not made
//!   (`strata_hub_migrations_held_total{reason="budget"|"nothing-movable"|"no-target"|"refused"}`),
//!   and the edges pressured now (`strata_hub_pressured_edges`). A move
//!   that found no target gives its budget back and is tried again at the
//!   edge's next shed ([`Rebalancer::not_moved`]).

use std::collections::{BTreeMap, HashMap};

use strata_protocol::workload::NODE_LABEL;
use strata_sched::{
    AllocId, Allocation, ClusterSnapshot, Evaluation, Headroom, MoveReason, Node, NodeId, Operator,
    PlacementIntent, Plan, PressureConfig, Rebalance, Rebalancer, Resources, Timestamp, Workload,
    WorkloadId,
};

use super::core::Observation;

/// The leader's pressure state (soft: gone with the leadership).
pub(super) struct Pressure {
    cfg: PressureConfig,
    rebalancer: Rebalancer,
    /// Per edge, the measured use of its last heartbeat.
    measured: HashMap<NodeId, Resources>,
    /// When the next sample is due (ms, wall clock).
    next_sample_ms: i64,
    /// Moves decided and not yet evaluated: allocation → reason.
    reasons: HashMap<AllocId, MoveReason>,
    /// Moves proposed and not yet seen committed: the replacement's id →
    /// (reason, workload, slot).
    proposed: BTreeMap<AllocId, (MoveReason, WorkloadId, u32)>,
}

impl Pressure {
    /// Calm, leading from `now_ms`: the first sample is one interval away.
    pub(super) fn new(cfg: PressureConfig, now_ms: i64) -> Self {
        Pressure {
            cfg,
            rebalancer: Rebalancer::new(cfg),
            measured: HashMap::new(),
            next_sample_ms: now_ms.saturating_add(interval_ms(&cfg)),
            reasons: HashMap::new(),
            proposed: BTreeMap::new(),
        }
    }

    /// When [`Pressure::sample`] is due next (ms); `None` until some edge's
    /// heartbeat measured something (nothing to sample yet).
    pub(super) fn due_ms(&self) -> Option<i64> {
        (!self.measured.is_empty()).then_some(self.next_sample_ms)
    }

    /// A heartbeat's measured use of `node`.
    pub(super) fn record(&mut self, node: NodeId, usage: Resources) {
        self.measured.insert(node, usage);
    }

    /// `node` is no longer ready: its last measurement is stale.
    pub(super) fn forget(&mut self, node: &NodeId) {
        self.measured.remove(node);
    }

    /// `n` with the measured use of its last heartbeat (fresher than the
    /// replicated report's).
    pub(super) fn overlay(&self, n: &mut Node) {
        if let Some(u) = self.measured.get(&n.id) {
            n.usage = *u;
        }
    }

    /// One sample at `now_ms`: the moves to evaluate, and what to count.
    pub(super) fn sample(
        &mut self,
        snap: &ClusterSnapshot,
        now_ms: i64,
    ) -> (Vec<Rebalance>, Vec<Observation>) {
        self.next_sample_ms = now_ms.saturating_add(interval_ms(&self.cfg));
        let before = self.rebalancer.counts().clone();
        let moves = self
            .rebalancer
            .observe_with(snap, Timestamp::from_millis(now_ms), movable);
        let after = self.rebalancer.counts();
        let mut obs = Vec::new();
        let deferred = after.deferred_budget.saturating_sub(before.deferred_budget);
        if deferred > 0 {
            obs.push(Observation::MigrationHeld {
                reason: "budget",
                count: deferred,
            });
        }
        let stuck = after.nothing_movable.saturating_sub(before.nothing_movable);
        if stuck > 0 {
            obs.push(Observation::MigrationHeld {
                reason: "nothing-movable",
                count: stuck,
            });
        }
        obs.push(Observation::Pressured(self.rebalancer.pressured() as u64));
        for m in &moves {
            tracing::info!(
                edge = %m.node,
                workload = %m.workload,
                instances = m.migrate.len(),
                reason = m.reason.as_str(),
                "pressure: moving instances off a pressured edge"
            );
            for id in &m.migrate {
                self.reasons.insert(*id, m.reason);
            }
        }
        (moves, obs)
    }

    /// Limits on where `migrate` allocations may go.
    pub(super) fn headroom(&self) -> Headroom {
        Headroom {
            hot: self.rebalancer.hot(),
            below_percent: self.cfg.enter_percent,
        }
    }

    /// The outcome of an evaluation that carried migrations, on the
    /// snapshot it ran on: those in `placed` (moved allocation → its
    /// replacement, as the applier accepted them) are proposed, and counted
    /// once their replacement is committed ([`Pressure::committed`]). The
    /// others give their budget and cooldown back, counted as `no-target`
    /// when the scheduler found no edge (`plan.not_migrated`), `refused`
    /// when the applier refused the node plan, and not at all when the
    /// instance or its workload is gone.
    pub(super) fn settle(
        &mut self,
        snap: &ClusterSnapshot,
        eval: &Evaluation,
        plan: &Plan,
        placed: &BTreeMap<AllocId, AllocId>,
    ) -> Vec<Observation> {
        let mut obs = Vec::new();
        for id in &eval.migrate {
            let Some(reason) = self.reasons.remove(id) else {
                continue;
            };
            let alloc = snap.alloc(*id);
            let slot = alloc.map_or(0, |a| a.slot);
            if let Some(new) = placed.get(id) {
                self.proposed
                    .insert(*new, (reason, eval.workload.clone(), slot));
                continue;
            }
            self.rebalancer.not_moved(&eval.workload, slot, reason);
            let held = if let Some((_, why)) = plan.not_migrated.iter().find(|(a, _)| a == id) {
                tracing::info!(
                    workload = %eval.workload,
                    alloc = %id,
                    reason = reason.as_str(),
                    filtered = ?why.filtered,
                    exhausted = ?why.exhausted,
                    "pressure: no edge can take the instance without becoming hot; it stays"
                );
                "no-target"
            } else if alloc.is_some_and(|a| a.is_live()) && snap.workload(&eval.workload).is_some()
            {
                "refused"
            } else {
                continue;
            };
            obs.push(Observation::MigrationHeld {
                reason: held,
                count: 1,
            });
        }
        obs
    }
}

impl Pressure {
    /// Allocation `id` is in the applied log: if it is a move's
    /// replacement, the move happened.
    pub(super) fn committed(&mut self, id: AllocId) -> Option<Observation> {
        self.proposed
            .remove(&id)
            .map(|(reason, _, _)| Observation::Migrated {
                reason: reason.as_str(),
            })
    }

    /// The snapshot was rebuilt from the applied state: a proposed move
    /// whose replacement is in it happened; one whose replacement is not
    /// never will (its plan's fate was unknown, or it was refused), so its
    /// budget and cooldown are given back and the next shed decides again.
    pub(super) fn rebuilt(&mut self, snap: &ClusterSnapshot) -> Vec<Observation> {
        let mut obs = Vec::new();
        for (id, (reason, workload, slot)) in std::mem::take(&mut self.proposed) {
            if snap.alloc(id).is_some() {
                obs.push(Observation::Migrated {
                    reason: reason.as_str(),
                });
            } else {
                // (Counted as `no_target` inside the rebalancer; the hub's
                // metrics count only what the core observes.)
                self.rebalancer.not_moved(&workload, slot, reason);
            }
        }
        obs
    }
}

fn interval_ms(cfg: &PressureConfig) -> i64 {
    i64::try_from(cfg.sample_every.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Whether pressure may move `a`: not when a hard rule pins its workload
/// to one edge (the rebalancer itself keeps per-edge instances).
fn movable(w: &Workload, _a: &Allocation) -> bool {
    !pinned_to_edge(&w.intent)
}

/// A hard rule that names edges by their `node` label: `target`, a
/// constraint or a hard affinity `node = x` or `node in [..]`.
pub(super) fn pinned_to_edge(i: &PlacementIntent) -> bool {
    let names = |label: &str, op: &Operator| {
        label == NODE_LABEL && matches!(op, Operator::Eq | Operator::In)
    };
    i.constraints.iter().any(|c| names(&c.label, &c.op))
        || i.affinity.iter().any(|a| a.hard && names(&a.label, &a.op))
}
