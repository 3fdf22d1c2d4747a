//! Pressure rebalancing, pure: which allocations to move off nodes under
//! sustained measured CPU or memory pressure.
//!
//! [`Rebalancer`] is an events-in, decisions-out core owned by the leader
//! (soft state: a new leader starts calm, which only delays moves). Each
//! [`Rebalancer::observe`] takes the snapshot's measured usage at `now`:
//!
//! - **Hysteresis.** A node *enters* pressure when a dimension has stayed
//!   at or above `enter-percent` of capacity for `sustain`, continuously (one
//!   calmer sample restarts the clock), and *leaves* only when every
//!   dimension is below `leave-percent`. Between the two it stays as it was,
//!   so usage hovering at one threshold cannot toggle it.
//! - **What moves.** The lowest-priority movable live allocations first
//!   (count workloads; per-node instances cannot leave their devices),
//!   larger budgets first among equals, until their budgets cover the
//!   excess over `leave-percent` — at least one.
//! - **Budget.** At most `moves-per-window` moves per region in any
//!   `window`; the rest wait (counted as deferred).
//! - **No flapping.** A moved instance (its workload and slot; the
//!   replacement keeps the slot) is not moved again within `cooldown`, and
//!   a node that just shed load (or tried to: over budget, nothing
//!   movable) waits another `sustain` before it is looked at again, since
//!   measured usage lags the move. The scheduler never places a
//!   migration back on the node it leaves, and ranks by measured usage, so
//!   a hot node is the last choice for anything else.
//!
//! - **Targets.** The caller gives the evaluation a [`crate::Headroom`]
//!   ([`Rebalancer::hot`] and `enter-percent`): the scheduler never moves
//!   an instance onto a node that is hot, or that its budget would push to
//!   `enter-percent`. A move that finds no such node is handed back with
//!   [`Rebalancer::not_moved`]: its budget and cooldown return and it is
//!   counted as `no_target`; the node's next shed, `sustain` later, tries
//!   the lowest priority again.
//! - **Movable.** Count instances only, and only those the caller's
//!   predicate admits ([`Rebalancer::observe_with`]; the region hub keeps
//!   instances pinned to their edge in place).
//!
//! Each decision becomes an evaluation ([`Rebalance::evaluation`]) whose
//! `migrate` list [`crate::schedule`] moves, stopping each old instance
//! only together with its replacement.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, NodeId, Timestamp, WorkloadId};
use crate::intent::{Cardinality, FieldError};
use crate::model::{Allocation, ClientState, Evaluation, NodeStatus, Trigger, Workload};
use crate::resources::{Dimension, Resources};
use crate::snapshot::ClusterSnapshot;

/// Pressure rebalancing settings of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PressureConfig {
    /// Move anything at all. Default true.
    pub enabled: bool,
    /// Measured use, percent of capacity, at or above which a dimension is
    /// hot. Default 90.
    pub enter_percent: u8,
    /// Percent below which every dimension must fall for the node to calm
    /// down (below `enter-percent`). Default 75.
    pub leave_percent: u8,
    /// How long a node must stay hot before it sheds load, and how long it
    /// waits between sheds. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub sustain: Duration,
    /// Moves allowed per region per `window`. Default 4.
    pub moves_per_window: u32,
    /// The budget's window. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A moved instance is not moved again for this long. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// How often the leader samples every node's measured usage (each
    /// sample is one [`Rebalancer::observe`]). At most `sustain`. Default
    /// 5 s.
    #[serde(with = "humantime_serde")]
    pub sample_every: Duration,
}

impl Default for PressureConfig {
    fn default() -> Self {
        PressureConfig {
            enabled: true,
            enter_percent: 90,
            leave_percent: 75,
            sustain: Duration::from_secs(30),
            moves_per_window: 4,
            window: Duration::from_secs(300),
            cooldown: Duration::from_secs(600),
            sample_every: Duration::from_secs(5),
        }
    }
}

impl PressureConfig {
    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut bad = |f: &str, m: String| {
            errs.push(FieldError {
                field: f.to_owned(),
                message: m,
            })
        };
        if self.enter_percent == 0 || self.enter_percent > 100 {
            bad(
                "enter-percent",
                format!("{} must be 1-100", self.enter_percent),
            );
        }
        if self.leave_percent >= self.enter_percent {
            bad(
                "leave-percent",
                format!(
                    "{} must be below enter-percent ({}) so the thresholds form a band",
                    self.leave_percent, self.enter_percent
                ),
            );
        }
        if self.window.is_zero() {
            bad("window", "must be longer than 0".to_owned());
        }
        if self.sample_every.is_zero() || self.sample_every > self.sustain {
            bad(
                "sample-every",
                format!(
                    "{} must be longer than 0 and at most sustain ({}), or pressure is seen too late",
                    humantime_serde::re::humantime::format_duration(self.sample_every),
                    humantime_serde::re::humantime::format_duration(self.sustain)
                ),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Why an allocation is moved.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum MoveReason {
    /// Sustained CPU pressure.
    CpuPressure,
    /// Sustained memory pressure.
    MemoryPressure,
}

impl MoveReason {
    fn of(d: Dimension) -> Self {
        match d {
            Dimension::Cpu => MoveReason::CpuPressure,
            Dimension::Memory => MoveReason::MemoryPressure,
        }
    }

    /// Stable kebab-case name, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::CpuPressure => "cpu-pressure",
            MoveReason::MemoryPressure => "memory-pressure",
        }
    }
}

/// One decision: move these allocations of one workload off one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Rebalance {
    /// The workload.
    pub workload: WorkloadId,
    /// The pressured node.
    pub node: NodeId,
    /// The allocations to move.
    pub migrate: Vec<AllocId>,
    /// Why.
    pub reason: MoveReason,
}

impl Rebalance {
    /// The evaluation that carries it out, with the queue's id and the
    /// snapshot index it was decided on.
    pub fn evaluation(&self, id: u64, snapshot_index: u64) -> Evaluation {
        Evaluation {
            id: crate::ids::EvalId(id),
            workload: self.workload.clone(),
            trigger: Trigger::Pressure(self.node.clone()),
            snapshot_index,
            migrate: self.migrate.clone(),
            headroom: None,
        }
    }
}

/// Counters, for metrics: moves by reason, and why others did not happen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MoveCounts {
    /// Allocations chosen to move, by reason.
    pub moves: BTreeMap<MoveReason, u64>,
    /// Moves wanted but over the region's budget.
    pub deferred_budget: u64,
    /// Pressured nodes with nothing movable on them.
    pub nothing_movable: u64,
    /// Moves decided that found no node to go to ([`Rebalancer::not_moved`]).
    pub no_target: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heat {
    Calm,
    /// Hot since.
    Rising(Timestamp),
    /// Pressured in this dimension; may shed from this time on.
    Pressured(Dimension, Timestamp),
}

/// The rebalancing core (see the module docs).
#[derive(Debug, Clone)]
pub struct Rebalancer {
    config: PressureConfig,
    heat: HashMap<NodeId, Heat>,
    recent: VecDeque<Timestamp>,
    moved: HashMap<(WorkloadId, u32), Timestamp>,
    counts: MoveCounts,
}

fn percent(used: u64, cap: u64) -> f64 {
    if cap == 0 {
        0.0
    } else {
        used as f64 * 100.0 / cap as f64
    }
}

impl Rebalancer {
    /// A calm region.
    pub fn new(config: PressureConfig) -> Self {
        Rebalancer {
            config,
            heat: HashMap::new(),
            recent: VecDeque::new(),
            moved: HashMap::new(),
            counts: MoveCounts::default(),
        }
    }

    /// Counters so far.
    pub fn counts(&self) -> &MoveCounts {
        &self.counts
    }

    /// Whether `node` is currently considered pressured.
    pub fn is_pressured(&self, node: &NodeId) -> bool {
        matches!(self.heat.get(node), Some(Heat::Pressured(..)))
    }

    /// How many nodes are pressured now.
    pub fn pressured(&self) -> usize {
        self.heat
            .values()
            .filter(|h| matches!(h, Heat::Pressured(..)))
            .count()
    }

    /// Nodes that are hot now: pressured, or at or above `enter-percent`
    /// and counting towards `sustain`. Never targets of a migration.
    pub fn hot(&self) -> BTreeSet<NodeId> {
        self.heat
            .iter()
            .filter(|(_, h)| !matches!(h, Heat::Calm))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A move of `workload`'s `slot` decided for `reason` did not happen
    /// (no node could take the instance): its share of the budget and its
    /// cooldown are given back, and it is counted under `no_target`
    /// instead of `moves`. The node's next shed (`sustain` later) tries the
    /// lowest priority again, so priority order holds however long no node
    /// has room.
    pub fn not_moved(&mut self, workload: &WorkloadId, slot: u32, reason: MoveReason) {
        self.recent.pop_back();
        self.moved.remove(&(workload.clone(), slot));
        if let Some(n) = self.counts.moves.get_mut(&reason) {
            *n = n.saturating_sub(1);
        }
        self.counts.no_target += 1;
    }

    /// Takes one sample of every node's measured usage at `now` and returns
    /// the moves to make, in node order.
    pub fn observe(&mut self, snap: &ClusterSnapshot, now: Timestamp) -> Vec<Rebalance> {
        self.observe_with(snap, now, |_, _| true)
    }

    /// [`Rebalancer::observe`], where only the allocations `movable`
    /// admits may move (besides the rule that per-node instances never
    /// do): e.g. not those pinned to their node by a hard rule.
    pub fn observe_with(
        &mut self,
        snap: &ClusterSnapshot,
        now: Timestamp,
        movable: impl Fn(&Workload, &Allocation) -> bool,
    ) -> Vec<Rebalance> {
        let cfg = self.config;
        let enter = f64::from(cfg.enter_percent);
        let leave = f64::from(cfg.leave_percent);
        while self
            .recent
            .front()
            .is_some_and(|t| now.since(*t) >= cfg.window)
        {
            self.recent.pop_front();
        }
        self.moved.retain(|_, t| now.since(*t) < cfg.cooldown);
        let mut nodes: Vec<_> = snap
            .nodes()
            .filter(|n| n.status == NodeStatus::Ready)
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        self.heat
            .retain(|id, _| snap.node(id).is_some_and(|n| n.status == NodeStatus::Ready));
        let mut out = Vec::new();
        for n in nodes {
            let pct = |d: Dimension| percent(n.usage.get(d), n.capacity.get(d));
            let hottest = Dimension::ALL
                .into_iter()
                .filter(|&d| pct(d) >= enter)
                .max_by(|a, b| pct(*a).total_cmp(&pct(*b)));
            let calm = Dimension::ALL.into_iter().all(|d| pct(d) < leave);
            let prev = self.heat.get(&n.id).copied().unwrap_or(Heat::Calm);
            let next = match (prev, hottest) {
                (Heat::Pressured(..), _) if calm => Heat::Calm,
                (Heat::Pressured(d, at), h) => Heat::Pressured(h.unwrap_or(d), at),
                (Heat::Calm, Some(_)) => Heat::Rising(now),
                (Heat::Rising(since), Some(d)) if now.since(since) >= cfg.sustain => {
                    Heat::Pressured(d, now)
                }
                (Heat::Rising(since), Some(_)) => Heat::Rising(since),
                (_, None) => Heat::Calm,
            };
            self.heat.insert(n.id.clone(), next);
            let Heat::Pressured(dim, shed_at) = next else {
                continue;
            };
            if !cfg.enabled || now < shed_at {
                continue;
            }
            let moves = self.pick(snap, n, dim, leave, now, &movable);
            // Shed or not (over budget, nothing movable), the node is looked
            // at again only `sustain` later: measured use lags a move, and a
            // held move is counted once per look, not once per sample.
            self.heat
                .insert(n.id.clone(), Heat::Pressured(dim, now.plus(cfg.sustain)));
            out.extend(moves);
        }
        out
    }

    /// Chooses what to move off `n` for `dim`, within budget and cooldown.
    fn pick(
        &mut self,
        snap: &ClusterSnapshot,
        n: &crate::model::Node,
        dim: Dimension,
        leave: f64,
        now: Timestamp,
        movable: &impl Fn(&Workload, &Allocation) -> bool,
    ) -> Vec<Rebalance> {
        let target = (n.capacity.get(dim) as f64 * leave / 100.0) as u64;
        let excess = n.usage.get(dim).saturating_sub(target);
        let mut movable: Vec<(u8, u64, AllocId, WorkloadId, u32, Resources)> = snap
            .allocs_on(&n.id)
            .filter(|a| a.is_live() && a.client == ClientState::Running)
            .filter(|a| !self.moved.contains_key(&(a.workload.clone(), a.slot)))
            .filter_map(|a| {
                let w = snap.workload(&a.workload)?;
                let count = matches!(w.intent.cardinality(), Cardinality::Count(_));
                (count && movable(w, a)).then(|| {
                    (
                        w.priority,
                        a.resources.get(dim),
                        a.id,
                        a.workload.clone(),
                        a.slot,
                        a.resources,
                    )
                })
            })
            .collect();
        if movable.is_empty() {
            self.counts.nothing_movable += 1;
            return Vec::new();
        }
        // Lowest priority first; among equals the largest budget, then id.
        movable.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let reason = MoveReason::of(dim);
        let mut by_workload: BTreeMap<WorkloadId, Vec<AllocId>> = BTreeMap::new();
        let mut covered = 0u64;
        for (_, amount, id, wid, slot, _) in movable {
            if covered >= excess && !by_workload.is_empty() {
                break;
            }
            if self.recent.len() >= self.config.moves_per_window as usize {
                self.counts.deferred_budget += 1;
                break;
            }
            self.recent.push_back(now);
            self.moved.insert((wid.clone(), slot), now);
            *self.counts.moves.entry(reason).or_default() += 1;
            by_workload.entry(wid).or_default().push(id);
            covered = covered.saturating_add(amount);
        }
        by_workload
            .into_iter()
            .map(|(workload, migrate)| Rebalance {
                workload,
                node: n.id.clone(),
                migrate,
                reason,
            })
            .collect()
    }
}
