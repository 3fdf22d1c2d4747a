//! The scheduler's driver: owns the [`SchedulerCore`] on the hub's
//! runtime, feeds it the node's [`SchedSignal`]s (leadership with the
//! state to start from, applied changes, devices moving) and the clock,
//! runs its evaluations and executes its commands: proposals through
//! Raft, rebuilds and carrier refreshes as reads of the applied state.
//! The failure detector forwards each heartbeat's measured use
//! ([`SchedSignal::Usage`]) for pressure rebalancing.
//!
//! Signals are drained before every evaluation, so an evaluation sees
//! every change applied so far. Proposals run on their own tasks (many
//! workloads' plans in flight at once); a proposal that fails or times out
//! comes back as [`SchedulerCore::handle_propose_failed`].

use std::time::{Duration, Instant};

use rand::Rng;
use strata_sched::{EvalId, Resources, WorkloadId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::{Command, Observation, Rebuild, SchedulerCore};
use crate::fsm::{self, SchedChange};
use crate::metrics::{HubMetrics, ReasonLabel};
use crate::raft::driver::{now_ms, NodeHandle};

/// Longest a plan waits for its commit before its fate counts as unknown.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a leading driver looks at the clock when nothing happens
/// (follow-ups are due at most this late).
const TICK: Duration = Duration::from_millis(50);

/// What the Raft node tells the scheduler, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedSignal {
    /// This replica started leading; the applied state it starts from.
    Leading(Box<Rebuild>),
    /// This replica stopped leading.
    Following,
    /// The changes of the applied entry `index` (only while leading).
    Applied {
        /// The entry.
        index: u64,
        /// What it changed.
        changes: Vec<SchedChange>,
    },
    /// An applied batch moved devices to other edges.
    DevicesMoved,
    /// A heartbeat's measured use of an edge (from the failure detector,
    /// soft state: never a Raft entry).
    Usage {
        /// The edge.
        edge: String,
        /// Its instances' measured use.
        usage: Resources,
    },
}

/// Runs the core; see the module docs.
pub struct SchedulerDriver {
    core: SchedulerCore,
    signals: mpsc::UnboundedReceiver<SchedSignal>,
    failures_tx: mpsc::UnboundedSender<(WorkloadId, EvalId)>,
    failures: mpsc::UnboundedReceiver<(WorkloadId, EvalId)>,
    node: NodeHandle,
    metrics: HubMetrics,
}

impl SchedulerDriver {
    /// A driver of `core`, fed by `signals` from the node, proposing
    /// through `node`.
    pub fn new(
        core: SchedulerCore,
        signals: mpsc::UnboundedReceiver<SchedSignal>,
        node: NodeHandle,
        metrics: HubMetrics,
    ) -> Self {
        let (failures_tx, failures) = mpsc::unbounded_channel();
        SchedulerDriver {
            core,
            signals,
            failures_tx,
            failures,
            node,
            metrics,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            self.core.handle_tick(now_ms());
            while let Some(cmd) = self.core.poll_command() {
                self.execute(cmd).await;
            }
            // Everything applied so far first, then one evaluation.
            while let Ok(s) = self.signals.try_recv() {
                self.on_signal(s);
            }
            while let Ok((w, e)) = self.failures.try_recv() {
                self.core.handle_propose_failed(&w, e);
            }
            if self.core.has_commands() {
                continue;
            }
            if self.core.has_work() {
                let t0 = Instant::now();
                self.core.run_next(now_ms());
                self.metrics
                    .sched_decision_latency
                    .observe(t0.elapsed().as_secs_f64());
                self.metrics.sched_queue.set(self.core.queued() as i64);
                // Let the proposals and the rest of the runtime go on.
                tokio::task::yield_now().await;
                continue;
            }
            self.metrics.sched_queue.set(self.core.queued() as i64);
            let wake = match (self.core.is_leader(), self.core.poll_timeout()) {
                (true, Some(t)) => {
                    let ms = (t - now_ms()).clamp(0, TICK.as_millis() as i64) as u64;
                    Duration::from_millis(ms)
                }
                (true, None) => TICK,
                (false, _) => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                s = self.signals.recv() => match s {
                    Some(s) => self.on_signal(s),
                    None => return,
                },
                Some((w, e)) = self.failures.recv() => self.core.handle_propose_failed(&w, e),
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    fn on_signal(&mut self, s: SchedSignal) {
        match s {
            SchedSignal::Leading(r) => {
                let seed: u64 = rand::thread_rng().gen();
                tracing::info!(
                    index = r.index,
                    nodes = r.nodes.len(),
                    workloads = r.workloads.len(),
                    allocations = r.allocs.len(),
                    seed,
                    "scheduler: leading; evaluating every workload once"
                );
                self.core.handle_leadership_gained(*r, now_ms(), seed);
            }
            SchedSignal::Following => {
                self.core.handle_leadership_lost();
                self.metrics.pressured_edges.set(0);
            }
            SchedSignal::Usage { edge, usage } => self.core.handle_usage(&edge, usage),
            SchedSignal::Applied { index, changes } => {
                self.core.handle_changes(index, changes, now_ms())
            }
            SchedSignal::DevicesMoved => self.core.handle_devices_moved(now_ms()),
        }
    }

    async fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Propose(c) => {
                let (w, eval) = (c.workload.clone(), c.eval);
                let data = fsm::encode_command(&fsm::Command::ApplyPlan(c));
                let (node, tx) = (self.node.clone(), self.failures_tx.clone());
                tokio::spawn(async move {
                    let r = tokio::time::timeout(PROPOSE_TIMEOUT, node.propose(data)).await;
                    if !matches!(r, Ok(Ok(_))) {
                        tracing::info!(workload = %w, %eval, result = ?r, "plan not committed; rebuilding the scheduler's view");
                        let _ = tx.send((w, eval));
                    }
                });
            }
            Command::Rebuild => match self.node.with_state(|v| Rebuild::of(v.state)).await {
                Ok(r) => self.core.handle_rebuild(r),
                // The node is gone or this replica stopped leading: the
                // leadership signal follows.
                Err(e) => tracing::debug!(error = %e, "scheduler rebuild read failed"),
            },
            Command::RefreshCarriers => {
                if let Ok(c) = self.node.with_state(|v| v.state.carriers()).await {
                    self.core.handle_carriers(c);
                }
            }
            Command::Observe(o) => self.observe(o),
        }
    }

    fn observe(&self, o: Observation) {
        let m = &self.metrics;
        match o {
            Observation::Evaluated { trigger } => m.sched_evaluation(trigger),
            Observation::Plan { accepted, refused } => {
                m.sched_plans.inc();
                if refused > 0 {
                    m.sched_rejected_plan(if accepted > 0 { "partial" } else { "full" });
                }
            }
            Observation::Placements(n) => {
                m.sched_placements.inc_by(n);
            }
            Observation::PlacementFailures(n) => {
                m.sched_placement_failures.inc_by(n);
            }
            Observation::Replaced { latency_ms } => m
                .sched_replacement_latency
                .observe(latency_ms as f64 / 1000.0),
            Observation::Migrated { reason } => {
                m.migrations.get_or_create(&ReasonLabel { reason }).inc();
            }
            Observation::MigrationHeld { reason, count } => {
                m.migrations_held
                    .get_or_create(&ReasonLabel { reason })
                    .inc_by(count);
            }
            Observation::Pressured(n) => {
                m.pressured_edges.set(n as i64);
            }
        }
    }
}
