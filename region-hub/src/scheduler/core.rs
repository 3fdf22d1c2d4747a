//! The scheduler's core: events in, commands out, no IO, no clock.
//!
//! While this replica leads, the core holds a [`ClusterSnapshot`] that it
//! keeps current from the applied log ([`SchedulerCore::handle_changes`])
//! — never rebuilt per evaluation — and an evaluation queue with at most
//! one pending evaluation per workload (later triggers coalesce into it)
//! and at most one plan in flight per workload. [`SchedulerCore::run_next`]
//! evaluates one workload: `schedule` over the snapshot, then the single
//! plan applier's `verify_plan` against the same snapshot, which already
//! counts the plans still in flight (their accepted part is applied to it
//! optimistically when proposed). The accepted part goes out as a
//! [`Command::Propose`] of an `ApplyPlan`; its application comes back as
//! changes. A plan refused in part is re-evaluated; a refusal by the state
//! machine, or a proposal whose fate is unknown, makes the core ask for a
//! rebuild from the replicated state first ([`Command::Rebuild`]).
//!
//! Triggers: submit / update / delete, edge up, suspect, down and back
//! (for the workloads with an allocation there, and for the blocked ones
//! when an edge comes up), an edge's capacity or facts changing (blocked
//! workloads), failed or lost allocations, devices changing edges (new
//! carrier sets), plan refusals, `follow_up_at` deadlines, and pressure
//! (every `sample-every`, the rebalancer looks at the measured use that
//! [`SchedulerCore::handle_usage`] fed it from heartbeats; see
//! [`super::pressure`]). A new leader evaluates every workload once.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::liveness::EdgeLiveness;
use strata_protocol::scheduling::RefusedNode;
use strata_sched::{
    schedule, verify_plan, AllocId, Allocation, ClusterSnapshot, Desired, EvalId, Evaluation, Node,
    NodeId, PlaceReason, PlacementFailure, PressureConfig, Rebalance, Resources, SchedError,
    SchedulerConfig, Timestamp, Trigger, Workload, WorkloadId,
};

use super::lease::{self, LeaseConfig};
use super::pressure::Pressure;

mod changes;
use crate::fsm::{PlanCommit, RegionState, SchedChange};

/// The core's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Ranking and sampling (`one_per_node` is forced on: an edge runs a
    /// workload once).
    pub sched: SchedulerConfig,
    /// Lease margin and the leader-change bound.
    pub lease: LeaseConfig,
    /// Device carriers are recomputed at most this often (ms) when devices
    /// move between edges.
    pub carrier_refresh_ms: u64,
    /// Rebalancing under pressure.
    pub pressure: PressureConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            sched: SchedulerConfig::default(),
            lease: LeaseConfig {
                margin_ms: 1_000,
                leader_bound_ms: 2_000,
            },
            carrier_refresh_ms: 1_000,
            pressure: PressureConfig::default(),
        }
    }
}

/// Everything a new snapshot is built from (the replicated state at
/// `index`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rebuild {
    /// The applied index it reflects.
    pub index: u64,
    /// Every edge, with the device groups it carries.
    pub nodes: Vec<Node>,
    /// Every workload.
    pub workloads: Vec<Workload>,
    /// Every allocation held.
    pub allocs: Vec<Allocation>,
    /// Each edge's last replicated liveness decision.
    pub liveness: Vec<(String, EdgeLiveness)>,
}

impl Rebuild {
    /// Reads everything from the applied state (on the Raft thread: once
    /// per leadership change or refused plan, O(state)).
    pub fn of(state: &RegionState) -> Rebuild {
        Rebuild {
            index: state.applied_index(),
            nodes: state.sched_nodes(),
            workloads: state.sched_workloads(),
            allocs: state.sched_allocs(),
            liveness: state
                .liveness_table()
                .iter()
                .map(|(e, l)| (e.clone(), l.clone()))
                .collect(),
        }
    }

    /// The snapshot the core schedules over, before it lays its soft state
    /// on it (measured use, leases): the replicated state alone, with `cfg`
    /// as the core runs it ([`region_config`]). Also what the region's
    /// capacity summary is estimated from, so central counts room the way
    /// the region's own scheduler does.
    pub fn into_snapshot(self, cfg: SchedulerConfig) -> ClusterSnapshot {
        ClusterSnapshot::from_parts(
            self.index,
            region_config(cfg),
            self.nodes,
            self.workloads,
            self.allocs,
        )
    }
}

/// `cfg` as a region's scheduler runs it: `one_per_node` forced on, since
/// an edge runs a workload once.
pub fn region_config(mut cfg: SchedulerConfig) -> SchedulerConfig {
    cfg.one_per_node = true;
    cfg
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Propose this plan through Raft. Its application comes back as
    /// changes; a failed proposal as [`SchedulerCore::handle_propose_failed`].
    Propose(Box<PlanCommit>),
    /// Read a [`Rebuild`] from the applied state and hand it to
    /// [`SchedulerCore::handle_rebuild`].
    Rebuild,
    /// Recompute which edges carry which device groups and hand the result
    /// to [`SchedulerCore::handle_carriers`].
    RefreshCarriers,
    /// Something to count.
    Observe(Observation),
}

/// What metrics count.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// An evaluation ran, for this trigger.
    Evaluated {
        /// `Trigger::as_str`.
        trigger: &'static str,
    },
    /// A plan was proposed; `refused` node plans were refused by the
    /// applier (`partial` when some were accepted, `full` when none).
    Plan {
        /// Node plans accepted.
        accepted: usize,
        /// Node plans refused.
        refused: usize,
    },
    /// Placements proposed.
    Placements(u64),
    /// Instances that could not be placed.
    PlacementFailures(u64),
    /// A replacement runs: ms from its predecessor's edge going
    /// disconnected (or the failure) to the replacement reported running.
    Replaced {
        /// The latency, ms.
        latency_ms: u64,
    },
    /// An instance moved off a pressured edge (its replacement is
    /// committed).
    Migrated {
        /// `MoveReason::as_str`: `cpu-pressure` or `memory-pressure`.
        reason: &'static str,
    },
    /// Moves wanted but not made.
    MigrationHeld {
        /// `budget` (over the region's migration budget),
        /// `nothing-movable` (a pressured edge runs nothing that may move),
        /// `no-target` (no edge could take it without becoming hot),
        /// `refused` (the plan applier refused the move's node plan).
        reason: &'static str,
        /// How many.
        count: u64,
    },
    /// Edges under pressure now (after each sample).
    Pressured(u64),
}

/// A pending evaluation.
#[derive(Debug, Clone)]
struct Pending {
    trigger: Trigger,
    /// Allocations pressure moves elsewhere.
    migrate: Vec<AllocId>,
}

/// A plan in flight.
#[derive(Debug, Clone)]
struct InFlight {
    eval: EvalId,
}

/// The leader's scheduling state.
struct Lead {
    snap: ClusterSnapshot,
    floor_ms: i64,
    next_eval: u64,
    queue: VecDeque<WorkloadId>,
    pending: HashMap<WorkloadId, Pending>,
    in_flight: HashMap<WorkloadId, InFlight>,
    follow_ups: BTreeSet<(Timestamp, WorkloadId)>,
    blocked: BTreeSet<WorkloadId>,
    /// The failure of each workload's last proposed plan.
    last_failure: HashMap<WorkloadId, Option<PlacementFailure>>,
    /// Per node, the last renewal this leader knows of (its last heartbeat
    /// before a disconnect decision, or the time it was declared up).
    heard: HashMap<NodeId, i64>,
    /// Device groups per node (carriers).
    carriers: BTreeMap<String, BTreeSet<String>>,
    /// Replacements waiting to run: allocation → when its predecessor's
    /// trouble began (ms).
    replacing: HashMap<AllocId, i64>,
    /// Waiting for a rebuild: evaluations pause.
    rebuilding: bool,
    carriers_at: Option<i64>,
    carriers_wanted: bool,
    rng: ChaCha8Rng,
    /// Measured use and the rebalancer (soft state).
    pressure: Pressure,
}

/// The scheduler core. See the module docs.
pub struct SchedulerCore {
    cfg: CoreConfig,
    lead: Option<Lead>,
    commands: VecDeque<Command>,
}

impl SchedulerCore {
    /// A core that is not leading.
    pub fn new(mut cfg: CoreConfig) -> Self {
        cfg.sched = region_config(cfg.sched);
        SchedulerCore {
            cfg,
            lead: None,
            commands: VecDeque::new(),
        }
    }

    /// The next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Whether commands wait.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Drains every command (tests).
    pub fn take_commands(&mut self) -> Vec<Command> {
        self.commands.drain(..).collect()
    }

    /// True while leading.
    pub fn is_leader(&self) -> bool {
        self.lead.is_some()
    }

    /// The snapshot, while leading.
    pub fn snapshot(&self) -> Option<&ClusterSnapshot> {
        self.lead.as_ref().map(|l| &l.snap)
    }

    /// Whether an evaluation is ready to run.
    pub fn has_work(&self) -> bool {
        self.lead
            .as_ref()
            .is_some_and(|l| !l.rebuilding && l.queue.iter().any(|w| !l.in_flight.contains_key(w)))
    }

    /// Evaluations waiting (queued or blocked behind a plan in flight).
    pub fn queued(&self) -> usize {
        self.lead.as_ref().map_or(0, |l| l.pending.len())
    }

    /// Plans in flight.
    pub fn in_flight(&self) -> usize {
        self.lead.as_ref().map_or(0, |l| l.in_flight.len())
    }

    /// When [`SchedulerCore::handle_tick`] must run next (ms, wall clock).
    pub fn poll_timeout(&self) -> Option<i64> {
        let l = self.lead.as_ref()?;
        let follow = l.follow_ups.first().map(|(t, _)| t.as_millis());
        let carriers = l
            .carriers_wanted
            .then(|| l.carriers_at.unwrap_or(0) + self.cfg.carrier_refresh_ms as i64);
        [follow, carriers, l.pressure.due_ms()]
            .into_iter()
            .flatten()
            .min()
    }

    /// This replica leads from `now_ms` on, with the replicated state in
    /// `r`: build the snapshot and evaluate every workload once.
    pub fn handle_leadership_gained(&mut self, r: Rebuild, now_ms: i64, seed: u64) {
        let floor_ms = now_ms.saturating_add(self.cfg.lease.leader_bound_ms as i64);
        let mut lead = Lead {
            snap: ClusterSnapshot::new(0, self.cfg.sched),
            floor_ms,
            next_eval: 1,
            queue: VecDeque::new(),
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            follow_ups: BTreeSet::new(),
            blocked: BTreeSet::new(),
            last_failure: HashMap::new(),
            heard: HashMap::new(),
            carriers: BTreeMap::new(),
            replacing: HashMap::new(),
            rebuilding: false,
            carriers_at: None,
            carriers_wanted: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
            pressure: Pressure::new(self.cfg.pressure, now_ms),
        };
        self.install(&mut lead, r);
        self.lead = Some(lead);
        self.enqueue_all(Trigger::LeaderChange);
    }

    /// This replica no longer leads: everything goes.
    pub fn handle_leadership_lost(&mut self) {
        self.lead = None;
        self.commands.clear();
    }

    /// A rebuild asked for with [`Command::Rebuild`] arrived.
    pub fn handle_rebuild(&mut self, r: Rebuild) {
        let Some(mut lead) = self.lead.take() else {
            return;
        };
        lead.in_flight.clear();
        lead.rebuilding = false;
        self.install(&mut lead, r);
        self.lead = Some(lead);
        self.enqueue_all(Trigger::PlanRejected);
    }

    /// Replaces the snapshot with `r`.
    fn install(&mut self, lead: &mut Lead, mut r: Rebuild) {
        lead.carriers = r
            .nodes
            .iter()
            .map(|n| (n.id.0.clone(), n.device_groups.clone()))
            .collect();
        for (edge, l) in &r.liveness {
            let node = NodeId::from(edge.as_str());
            let heard = lead.heard.entry(node).or_insert(l.last_heartbeat_ms);
            *heard = (*heard).max(l.last_heartbeat_ms);
        }
        for n in &mut r.nodes {
            lead.pressure.overlay(n);
        }
        lead.snap = r.into_snapshot(self.cfg.sched);
        let moved = lead.pressure.rebuilt(&lead.snap);
        self.commands
            .extend(moved.into_iter().map(Command::Observe));
        let ids: Vec<AllocId> = lead
            .snap
            .workloads()
            .flat_map(|w| lead.snap.allocs_of(&w.id).map(|a| a.id))
            .collect();
        for id in ids {
            if let Some(a) = lead.snap.alloc(id).cloned() {
                let a = self.with_lease(lead, a);
                lead.snap.upsert_alloc(a);
            }
        }
    }

    /// Every workload, and the deleted ones that still have allocations
    /// desired to run, gets an evaluation.
    fn enqueue_all(&mut self, trigger: Trigger) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let mut ids: BTreeSet<WorkloadId> = lead.snap.workloads().map(|w| w.id.clone()).collect();
        for n in lead.snap.nodes() {
            for a in lead.snap.allocs_on(&n.id) {
                if a.desired == Desired::Run && lead.snap.workload(&a.workload).is_none() {
                    ids.insert(a.workload.clone());
                }
            }
        }
        for id in ids {
            enqueue(lead, id, trigger.clone());
        }
    }

    /// Applied changes of the entry `index` (in apply order).
    pub fn handle_changes(&mut self, index: u64, changes: Vec<SchedChange>, now_ms: i64) {
        let Some(mut lead) = self.lead.take() else {
            return;
        };
        if index <= lead.snap.index() {
            // Already part of the snapshot (a rebuild read past it).
            self.lead = Some(lead);
            return;
        }
        for c in changes {
            self.change(&mut lead, c, now_ms);
        }
        lead.snap.set_index(index);
        self.lead = Some(lead);
        // A new or changed selector has carriers the snapshot lacks (a
        // per-edge workload places nothing without them).
        self.maybe_refresh_carriers(now_ms);
    }

    /// A heartbeat from `edge` measured `usage` (its instances' measured
    /// use): soft state, fresher than the replicated report. The snapshot
    /// ranks with it and the rebalancer samples it.
    pub fn handle_usage(&mut self, edge: &str, usage: Resources) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let id = NodeId::from(edge);
        lead.pressure.record(id.clone(), usage);
        if let Some(n) = lead.snap.node(&id).filter(|n| n.usage != usage) {
            let mut n = n.clone();
            n.usage = usage;
            lead.snap.upsert_node(n);
        }
    }

    /// Devices reported through other edges: carriers are recomputed (rate
    /// limited).
    pub fn handle_devices_moved(&mut self, now_ms: i64) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        lead.carriers_wanted = true;
        self.maybe_refresh_carriers(now_ms);
    }

    fn maybe_refresh_carriers(&mut self, now_ms: i64) {
        let refresh = self.cfg.carrier_refresh_ms as i64;
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.carriers_wanted && lead.carriers_at.is_none_or(|t| now_ms >= t + refresh) {
            lead.carriers_wanted = false;
            lead.carriers_at = Some(now_ms);
            self.commands.push_back(Command::RefreshCarriers);
        }
    }

    /// New carriers (edge → device groups): nodes are updated and the
    /// workloads whose carriers changed are evaluated.
    pub fn handle_carriers(&mut self, carriers: BTreeMap<String, BTreeSet<String>>) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        let mut changed_groups: BTreeSet<String> = BTreeSet::new();
        let empty = BTreeSet::new();
        let edges: BTreeSet<String> = carriers
            .keys()
            .chain(lead.carriers.keys())
            .cloned()
            .collect();
        for edge in edges {
            let new = carriers.get(&edge).unwrap_or(&empty);
            let old = lead.carriers.get(&edge).unwrap_or(&empty);
            if new == old {
                continue;
            }
            changed_groups.extend(new.symmetric_difference(old).cloned());
            let id = NodeId::from(edge.as_str());
            if let Some(mut n) = lead.snap.node(&id).cloned() {
                n.device_groups = new.clone();
                lead.snap.upsert_node(n);
            }
        }
        lead.carriers = carriers;
        let ids: Vec<WorkloadId> = lead
            .snap
            .workloads()
            .filter(|w| {
                w.device_group
                    .as_ref()
                    .is_some_and(|g| changed_groups.contains(g))
            })
            .map(|w| w.id.clone())
            .collect();
        for id in ids {
            enqueue(lead, id, Trigger::DevicesMoved);
        }
    }

    /// Time passed: due follow-ups are evaluated, due carrier refreshes
    /// asked for.
    pub fn handle_tick(&mut self, now_ms: i64) {
        self.maybe_refresh_carriers(now_ms);
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.pressure.due_ms().is_some_and(|t| now_ms >= t) {
            let (moves, obs) = lead.pressure.sample(&lead.snap, now_ms);
            for m in moves {
                enqueue_migration(lead, m);
            }
            self.commands.extend(obs.into_iter().map(Command::Observe));
        }
        let now = Timestamp::from_millis(now_ms);
        while let Some((t, _)) = lead.follow_ups.first() {
            if *t > now {
                break;
            }
            if let Some((_, w)) = lead.follow_ups.pop_first() {
                enqueue(lead, w, Trigger::FollowUp);
            }
        }
    }

    /// A proposed plan's fate is unknown (timeout, leadership change in
    /// progress): the snapshot may hold what never committed, so it is
    /// rebuilt before anything else is evaluated.
    pub fn handle_propose_failed(&mut self, workload: &WorkloadId, eval: EvalId) {
        let Some(lead) = self.lead.as_mut() else {
            return;
        };
        if lead.in_flight.get(workload).is_some_and(|f| f.eval == eval) {
            lead.in_flight.remove(workload);
        }
        if !lead.rebuilding {
            lead.rebuilding = true;
            self.commands.push_back(Command::Rebuild);
        }
        enqueue(lead, workload.clone(), Trigger::PlanRejected);
    }

    /// Runs the next ready evaluation at `now_ms`. Returns whether one ran.
    pub fn run_next(&mut self, now_ms: i64) -> bool {
        let Some(mut lead) = self.lead.take() else {
            return false;
        };
        let ran = self.run_one(&mut lead, now_ms);
        self.lead = Some(lead);
        ran
    }

    fn run_one(&mut self, lead: &mut Lead, now_ms: i64) -> bool {
        if lead.rebuilding {
            return false;
        }
        // The first queued workload without a plan in flight.
        let Some(pos) = lead
            .queue
            .iter()
            .position(|w| !lead.in_flight.contains_key(w))
        else {
            return false;
        };
        let Some(w) = lead.queue.remove(pos) else {
            return false;
        };
        let Some(p) = lead.pending.remove(&w) else {
            return false;
        };
        let mut eval = Evaluation::new(lead.next_eval, w.clone(), p.trigger, lead.snap.index());
        lead.next_eval += 1;
        if !p.migrate.is_empty() {
            eval.migrate = p.migrate;
            eval.headroom = Some(lead.pressure.headroom());
        }
        self.commands
            .push_back(Command::Observe(Observation::Evaluated {
                trigger: eval.trigger.as_str(),
            }));
        let now = Timestamp::from_millis(now_ms);
        let plan = match schedule(&lead.snap, &eval, now, &mut lead.rng) {
            Ok(p) => p,
            Err(SchedError::SnapshotBehind { .. }) => {
                // Cannot happen (the eval is made at the snapshot's index);
                // try again later rather than lose it.
                enqueue(lead, w, eval.trigger);
                return true;
            }
            Err(e @ SchedError::InvalidIntent { .. }) => {
                tracing::error!(workload = %w, error = %e, "stored workload has an invalid placement intent; not scheduled");
                return true;
            }
        };
        if let Some(at) = plan.follow_up_at {
            lead.follow_ups
                .insert((Timestamp::from_millis(at.as_millis() + 1), w.clone()));
        }
        let mut verdict = verify_plan(&lead.snap, &plan);
        if !eval.migrate.is_empty() {
            let moved: BTreeMap<AllocId, AllocId> = verdict
                .placements()
                .filter(|a| a.placement.reason == PlaceReason::MigratePressure)
                .filter_map(|a| a.previous.map(|p| (p, a.id)))
                .collect();
            let obs = lead.pressure.settle(&lead.snap, &eval, &plan, &moved);
            self.commands.extend(obs.into_iter().map(Command::Observe));
        }
        let workload = lead.snap.workload(&w).cloned();
        if let Some(wl) = &workload {
            for np in verdict.accepted.values_mut() {
                for a in &mut np.place {
                    a.lease_expires_at = lease::at_placement(wl, now, &self.cfg.lease);
                }
            }
        }
        let failure = plan.failed.clone();
        match &failure {
            Some(f) => {
                lead.blocked.insert(w.clone());
                self.commands
                    .push_back(Command::Observe(Observation::PlacementFailures(u64::from(
                        f.unplaced,
                    ))));
            }
            None => {
                lead.blocked.remove(&w);
            }
        }
        let refused: Vec<RefusedNode> = verdict
            .rejected
            .iter()
            .map(|(n, r)| RefusedNode {
                edge: n.0.clone(),
                reason: format!("{r:?}"),
            })
            .collect();
        let changes = !verdict.accepted.is_empty();
        if verdict.needs_reevaluation() {
            if changes {
                // Progress was made: look again once it is committed.
                enqueue(lead, w.clone(), Trigger::PlanRejected);
            } else {
                // Nothing fits as planned on the very snapshot the plan
                // was made on: wait for the region to change rather than
                // spin on the same answer.
                lead.blocked.insert(w.clone());
            }
        }
        let prev = lead.last_failure.get(&w).cloned().unwrap_or(None);
        let failure_news = prev != failure;
        if !changes && !failure_news && refused.is_empty() {
            return true;
        }
        lead.last_failure.insert(w.clone(), failure.clone());
        let placements: u64 = verdict.placements().count() as u64;
        self.commands.push_back(Command::Observe(Observation::Plan {
            accepted: verdict.accepted.len(),
            refused: refused.len(),
        }));
        if placements > 0 {
            self.commands
                .push_back(Command::Observe(Observation::Placements(placements)));
        }
        let placed: Vec<Allocation> = verdict.placements().cloned().collect();
        for a in &placed {
            self.note_replacement(lead, a, now_ms);
        }
        // Counted as committed until the log says otherwise: the next
        // evaluations see what this one takes.
        lead.snap.apply_verdict(&verdict, lead.snap.index());
        lead.in_flight.insert(w.clone(), InFlight { eval: eval.id });
        self.commands
            .push_back(Command::Propose(Box::new(PlanCommit {
                eval: eval.id,
                trigger: eval.trigger.as_str().to_owned(),
                workload: w,
                generation: plan.generation,
                nodes: verdict.accepted,
                refused,
                failure,
                now_ms,
            })));
        true
    }
}

fn enqueue(lead: &mut Lead, w: WorkloadId, trigger: Trigger) {
    if lead.pending.contains_key(&w) {
        // Coalesced: the queued evaluation will see everything anyway.
        return;
    }
    lead.pending.insert(
        w.clone(),
        Pending {
            trigger,
            migrate: Vec::new(),
        },
    );
    lead.queue.push_back(w);
}

/// Queues a pressure move; an evaluation already pending for the workload
/// takes it on (its trigger becomes `pressure`).
fn enqueue_migration(lead: &mut Lead, m: Rebalance) {
    let trigger = Trigger::Pressure(m.node);
    match lead.pending.get_mut(&m.workload) {
        Some(p) => {
            p.trigger = trigger;
            p.migrate.extend(m.migrate);
        }
        None => {
            lead.pending.insert(
                m.workload.clone(),
                Pending {
                    trigger,
                    migrate: m.migrate,
                },
            );
            lead.queue.push_back(m.workload);
        }
    }
}
