//! [`Lifecycle`]: the pure core of the workload layer. One state machine
//! for every instance this node should run, from "desired" to "stopped":
//!
//! ```text
//!  desired ──▶ waiting-for-module ──▶ (waiting-for-lease) ──▶ admission ──▶ starting ──▶ running
//!              (FetchModule,           replace-after only       │ refused /     ▲            │ exit
//!               CompileModule)                                  ▼ preempted     │            ▼
//!                                                            waits for room    └── backoff ◀─┤ failure
//!                                                                                            ├─▶ crash-looping
//!  running ── lease not renewed ──▶ stopping (Stop lease-expired) ──▶ stopped                └─▶ stopped (policy)
//! ```
//!
//! No IO, no clock, no tokio: time comes in as `now_ms` (a monotonic clock
//! the driver reads), randomness as `&mut impl Rng` (backoff jitter),
//! measurements as values; decisions go out as [`Command`]s in the order
//! they must be executed.
//!
//! # Shape: events in, commands out
//! A long-lived state machine in the quinn-proto / openraft style
//! (`handle_*` inputs, [`Lifecycle::poll_command`] and
//! [`Lifecycle::poll_timeout`] outputs) rather than a nomad-style
//! `schedule(snapshot) -> Plan`, because most of what it decides depends on
//! history a snapshot would have to carry anyway: backoff attempts, failure
//! windows, how long an instance has been hot or cold, admission order for
//! "newest first" preemption, leases. The decisions that *are* functions of
//! a snapshot are pure helpers tested on their own: [`admission::admit`],
//! [`backoff`], [`resize::decide`].
//!
//! Policies that used to hide in drivers are states here: an instance whose
//! module is missing waits in [`Phase::WaitingForModule`] (no capacity
//! held, no crash loop) until the module arrives; a `replace-after`
//! instance without a lease waits in [`Phase::WaitingForLease`].
//!
//! # Invariants (checked by the property test)
//! - The budgets of instances that hold capacity (starting, running, in
//!   backoff) never sum above the node's capacity.
//! - An instance is only ever preempted by a strictly higher priority.
//! - A budget only moves within its spec's min/max.
//! - A `replace-after` instance only starts while it holds a lease, and
//!   once its lease ran out it is stopped and stays stopped until a new
//!   desired set grants a lease (`lease_tests.rs`).
//!
//! # Layout
//! - this file: the instance table, desired sets, starts, exits, stops,
//!   admission glue, timers and reports.
//! - `modules`: the module table (fetch, compile, drop).
//! - `lease`: leases of `replace-after` instances (grant, renew, expire).
//! - `usage`: measurements, node pressure and resizes.
//!
//! [`admission::admit`]: super::admission::admit
//! [`backoff`]: super::backoff
//! [`resize::decide`]: super::resize::decide

mod lease;
mod modules;
mod usage;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod module_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod test_harness;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use strata_protocol::workload::RestartMode;

pub use self::lease::Lease;
pub use self::modules::ModuleState;
use super::admission::{admit, Holder};
use super::backoff::{delay_ms, FailureWindow};
use super::command::{Command, Event, StopReason};
use super::config::LifecycleConfig;
use super::model::{
    Budget, DesiredInstance, DesiredSet, ExitKind, Fence, InstanceKey, InstanceUsage, NodeInfo,
    Refusal,
};
use super::resize::Trend;

/// Where one desired instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Its module is being fetched or compiled, or waits for the region to
    /// deliver it. Holds no capacity.
    WaitingForModule,
    /// A `replace-after` instance whose module is ready but which holds no
    /// lease (after a reboot, until the region grants one). Holds no
    /// capacity.
    WaitingForLease,
    /// Start commanded; waiting for the driver to report it running.
    Starting,
    /// Running.
    Running,
    /// Exited; restarts at `until_ms` (its budget stays reserved meanwhile).
    Backoff {
        /// Restart time, ms.
        until_ms: u64,
        /// Consecutive restart number (1 = first).
        attempt: u32,
        /// Why it exited.
        last_exit: ExitKind,
    },
    /// Failed too often within the window; not restarted until the spec changes.
    CrashLooping {
        /// Failure count, window and last exit.
        reason: String,
    },
    /// Stop commanded while it stays desired (its lease ran out); waiting
    /// for the driver to confirm.
    Stopping {
        /// Why.
        reason: StopReason,
    },
    /// Not running and not restarted: its restart policy said so, its lease
    /// ran out, or its module is invalid.
    Stopped {
        /// Why.
        reason: String,
    },
    /// A `replace-after` instance whose lease ran out: stopped, and not
    /// started again until a new desired set grants a lease.
    LeaseLost {
        /// The incarnation that was fenced off.
        fence: Fence,
        /// When the lease ran out, ms.
        expired_at_ms: u64,
    },
    /// Stopped to make room for a higher priority; waits for room.
    Preempted {
        /// The instance that took its place.
        by: InstanceKey,
    },
    /// Not admitted; waits for room if the refusal is transient.
    Refused(Refusal),
}

impl Phase {
    /// Whether the instance holds its budget (counts against capacity).
    /// A stopping instance does not: its `Stop` runs before any later
    /// `Start` (commands execute in order), so the room is free by then.
    pub fn holds_budget(&self) -> bool {
        matches!(
            self,
            Phase::Starting | Phase::Running | Phase::Backoff { .. }
        )
    }

    /// Whether only a lease keeps it from running.
    fn waits_for_lease(&self) -> bool {
        matches!(
            self,
            Phase::WaitingForLease
                | Phase::LeaseLost { .. }
                | Phase::Stopping {
                    reason: StopReason::LeaseExpired { .. }
                }
        )
    }

    /// Whether a sandbox exists or is being made, so stopping it takes a
    /// `Stop` command.
    fn has_sandbox(&self) -> bool {
        matches!(self, Phase::Starting | Phase::Running)
    }
}

/// One desired instance and its history.
#[derive(Debug, Clone)]
struct Instance {
    want: DesiredInstance,
    phase: Phase,
    budget: Budget,
    /// Admission order, for "newest first" preemption.
    seq: u64,
    /// Consecutive restarts since the last stable run.
    attempt: u32,
    /// Restarts since the spec was applied.
    restarts: u64,
    failures: FailureWindow,
    started_at_ms: Option<u64>,
    /// When it was last admitted, ms.
    admitted_at_ms: Option<u64>,
    usage: Option<InstanceUsage>,
    mem_trend: Trend,
    cpu_trend: Trend,
    lease: Lease,
}

/// Per-instance report for heartbeats, the API and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    /// Which instance.
    pub key: InstanceKey,
    /// Spec generation it runs.
    pub generation: u64,
    /// Its priority.
    pub priority: u8,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Current budget (reserved only while the phase holds it).
    pub budget: Budget,
    /// Last measured use, if any.
    pub usage: Option<InstanceUsage>,
    /// Restarts since this generation was applied.
    pub restarts: u64,
    /// When it was last admitted, ms (`None` while it waits).
    pub admitted_at_ms: Option<u64>,
    /// Its allocation and fencing token.
    pub fence: Fence,
    /// Its lease (`NotNeeded` for `keep` instances).
    pub lease: Lease,
    /// Its module's hash and state.
    pub module: (String, ModuleState),
}

/// The lifecycle core. Deterministic: the same inputs give the same
/// commands.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    cfg: LifecycleConfig,
    /// Period of the key-value checkpoints of running instances, ms (0 = none).
    checkpoint_ms: u64,
    node: NodeInfo,
    instances: BTreeMap<InstanceKey, Instance>,
    modules: BTreeMap<String, ModuleState>,
    commands: VecDeque<Command>,
    next_seq: u64,
    next_checkpoint_ms: Option<u64>,
}

impl Lifecycle {
    /// A core for `node` with nothing desired yet; running instances'
    /// state is checkpointed every `checkpoint_ms` (0: only on stop).
    pub fn new(node: NodeInfo, cfg: LifecycleConfig, checkpoint_ms: u64) -> Self {
        Lifecycle {
            cfg,
            checkpoint_ms,
            node,
            instances: BTreeMap::new(),
            modules: BTreeMap::new(),
            commands: VecDeque::new(),
            next_seq: 0,
            next_checkpoint_ms: None,
        }
    }

    /// This node's description.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The next command for the driver, oldest first.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Lifecycle::handle_timeout`] must next be called, ms: the
    /// earliest backoff end, lease expiry or checkpoint.
    pub fn poll_timeout(&self) -> Option<u64> {
        let backoff = self.instances.values().filter_map(|i| match i.phase {
            Phase::Backoff { until_ms, .. } => Some(until_ms),
            _ => None,
        });
        let leases = self.instances.values().filter_map(|i| i.lease.expires_at());
        backoff.chain(leases).chain(self.next_checkpoint_ms).min()
    }

    /// Sum of the budgets that hold capacity.
    pub fn reserved(&self) -> Budget {
        self.instances
            .values()
            .filter(|i| i.phase.holds_budget())
            .fold(Budget::default(), |a, i| a.plus(i.budget))
    }

    /// One instance's report.
    pub fn instance(&self, key: &InstanceKey) -> Option<InstanceReport> {
        self.instances.get(key).map(|i| self.report(i))
    }

    /// Every desired instance's report, by key.
    pub fn instances(&self) -> Vec<InstanceReport> {
        self.instances.values().map(|i| self.report(i)).collect()
    }

    fn report(&self, i: &Instance) -> InstanceReport {
        let sha = &i.want.artifact_sha256;
        InstanceReport {
            key: i.want.key.clone(),
            generation: i.want.generation,
            priority: i.want.priority,
            phase: i.phase.clone(),
            budget: i.budget,
            usage: i.usage,
            restarts: i.restarts,
            admitted_at_ms: i.admitted_at_ms,
            fence: i.want.fence.clone(),
            lease: i.lease,
            module: (
                sha.clone(),
                self.modules
                    .get(sha)
                    .cloned()
                    .unwrap_or(ModuleState::Fetching),
            ),
        }
    }

    /// Reconciles to the full desired set for this node. Instances with the
    /// same generation, artifact hash, fence and disconnect policy are left
    /// alone whatever their phase; changed ones are stopped and enter
    /// afresh; missing ones are stopped and forgotten; new ones enter,
    /// highest priority first. If a key appears twice, the last one wins.
    /// A set from the region grants leases (see `lease`).
    pub fn handle_desired(&mut self, set: DesiredSet, now_ms: u64) {
        // Leases that ran out before this set arrived are expired first, so
        // a late set cannot extend them.
        self.expire_leases(now_ms);
        let mut desired: BTreeMap<InstanceKey, DesiredInstance> = set
            .instances
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect();
        let gone: Vec<InstanceKey> = self
            .instances
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            // Whatever its phase: a removed instance's persisted state is
            // deleted too, not only a running sandbox stopped.
            self.instances.remove(&key);
            self.commands.push_back(Command::Stop {
                key,
                reason: StopReason::Removed,
            });
        }
        let mut to_enter = Vec::new();
        for (key, want) in std::mem::take(&mut desired) {
            match self.instances.get_mut(&key) {
                Some(cur)
                    if cur.want.same_version(&want) && cur.want.disconnect == want.disconnect =>
                {
                    let regained = cur.lease.grant(want.disconnect, set.granted_at_ms, now_ms);
                    // A lease again after none or an expired one: the
                    // instance may run (again), if the lease is what kept
                    // it from running.
                    if regained && cur.phase.waits_for_lease() {
                        to_enter.push(key);
                    }
                }
                Some(cur) => {
                    if cur.phase.has_sandbox() || cur.phase.holds_budget() {
                        self.commands.push_back(Command::Stop {
                            key: key.clone(),
                            reason: StopReason::Replaced {
                                old_generation: cur.want.generation,
                                new_generation: want.generation,
                            },
                        });
                    }
                    let inst = Instance::new(want, set.granted_at_ms, now_ms);
                    self.instances.insert(key.clone(), inst);
                    to_enter.push(key);
                }
                None => {
                    let inst = Instance::new(want, set.granted_at_ms, now_ms);
                    self.instances.insert(key.clone(), inst);
                    to_enter.push(key);
                }
            }
        }
        self.sync_modules();
        self.enter_in_order(to_enter, now_ms);
        self.retry_waiting(now_ms);
        if self.next_checkpoint_ms.is_none() && self.checkpoint_ms > 0 {
            self.next_checkpoint_ms = Some(now_ms.saturating_add(self.checkpoint_ms));
        }
    }

    /// The driver reports that an instance is running.
    pub fn handle_started(&mut self, key: &InstanceKey, generation: u64, now_ms: u64) {
        if let Some(i) = self.instances.get_mut(key) {
            if i.want.generation == generation && i.phase == Phase::Starting {
                i.phase = Phase::Running;
                i.started_at_ms = Some(now_ms);
                i.mem_trend = Trend::default();
                i.cpu_trend = Trend::default();
            }
        }
    }

    /// The driver reports that an instance exited on its own, or failed to
    /// start (exits caused by a `Stop`, or of an older generation, are
    /// ignored).
    pub fn handle_exited(
        &mut self,
        key: &InstanceKey,
        generation: u64,
        exit: ExitKind,
        now_ms: u64,
        rng: &mut impl Rng,
    ) {
        let cfg = &self.cfg;
        let Some(i) = self.instances.get_mut(key) else {
            return;
        };
        if i.want.generation != generation || !i.phase.has_sandbox() {
            return;
        }
        if i.started_at_ms
            .is_some_and(|s| now_ms.saturating_sub(s) >= cfg.stable_after_ms)
        {
            i.attempt = 0;
        }
        i.started_at_ms = None;
        i.usage = None;
        let failures = if exit.is_failure() {
            i.failures.record(now_ms, cfg.crash_loop_window_ms)
        } else {
            0
        };
        let policy = i.want.restart;
        let restart = match policy.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => exit.is_failure(),
            RestartMode::Never => false,
        };
        let mut released = true;
        if exit.is_failure() && failures >= cfg.crash_loop_failures as usize && restart {
            let reason = format!(
                "{failures} failures within {} ms (limit {}); last: {exit}",
                cfg.crash_loop_window_ms, cfg.crash_loop_failures
            );
            i.phase = Phase::CrashLooping {
                reason: reason.clone(),
            };
            self.commands.push_back(Command::Report {
                key: key.clone(),
                generation,
                event: Event::CrashLooping { reason },
            });
        } else if !restart {
            let mode = match policy.mode {
                RestartMode::Always => "always",
                RestartMode::OnFailure => "on-failure",
                RestartMode::Never => "never",
            };
            let reason = format!("exited ({exit}); restart policy is {mode}");
            i.phase = Phase::Stopped {
                reason: reason.clone(),
            };
            self.commands.push_back(Command::Report {
                key: key.clone(),
                generation,
                event: Event::Stopped { reason },
            });
        } else {
            i.attempt = i.attempt.saturating_add(1);
            i.restarts += 1;
            i.phase = Phase::Backoff {
                until_ms: now_ms.saturating_add(delay_ms(&policy, i.attempt, rng)),
                attempt: i.attempt,
                last_exit: exit,
            };
            released = false;
        }
        if released {
            self.retry_waiting(now_ms);
        }
    }

    /// The driver confirms a `Stop` of an instance that stays desired.
    pub fn handle_stopped(&mut self, key: &InstanceKey, generation: u64) {
        if let Some(i) = self.instances.get_mut(key) {
            if i.want.generation == generation {
                if let Phase::Stopping { reason } = &i.phase {
                    i.phase = match reason {
                        StopReason::LeaseExpired {
                            fence,
                            expired_at_ms,
                            ..
                        } => Phase::LeaseLost {
                            fence: fence.clone(),
                            expired_at_ms: *expired_at_ms,
                        },
                        other => Phase::Stopped {
                            reason: other.to_string(),
                        },
                    };
                }
            }
        }
    }

    /// Acts on everything due at `now_ms`: expired leases stop their
    /// instances, backoffs that ended restart theirs (the budget stayed
    /// reserved, so no admission is needed), and running instances are
    /// checkpointed when their period came.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.expire_leases(now_ms);
        let mut gated = Vec::new();
        for (key, i) in self.instances.iter_mut() {
            if let Phase::Backoff {
                until_ms, attempt, ..
            } = i.phase
            {
                if until_ms <= now_ms {
                    if !i.lease.may_run(now_ms) {
                        gated.push(key.clone());
                        continue;
                    }
                    i.phase = Phase::Starting;
                    self.commands.push_back(Command::Start {
                        key: key.clone(),
                        generation: i.want.generation,
                        artifact_sha256: i.want.artifact_sha256.clone(),
                        budget: i.budget,
                        attempt,
                        fence: i.want.fence.clone(),
                    });
                }
            }
        }
        if !gated.is_empty() {
            // Defensive: an expired lease stops a backoff above, so only a
            // lease that was never granted lands here; it waits without
            // capacity.
            for key in gated {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.phase = Phase::WaitingForLease;
                }
            }
            self.retry_waiting(now_ms);
        }
        if let Some(due) = self.next_checkpoint_ms.filter(|&t| t <= now_ms) {
            for (key, i) in &self.instances {
                if i.phase == Phase::Running {
                    self.commands
                        .push_back(Command::PersistState { key: key.clone() });
                }
            }
            let period = self.checkpoint_ms.max(1);
            // The next period boundary after now: periods missed while
            // nobody called are skipped, not replayed.
            let periods = (now_ms - due) / period + 1;
            self.next_checkpoint_ms = Some(due.saturating_add(periods.saturating_mul(period)));
        }
    }

    /// Moves each of `keys` as far toward running as it can go now, highest
    /// priority first.
    fn enter_in_order(&mut self, mut keys: Vec<InstanceKey>, now_ms: u64) {
        keys.sort_by(|a, b| {
            let pa = self.instances.get(a).map_or(0, |i| i.want.priority);
            let pb = self.instances.get(b).map_or(0, |i| i.want.priority);
            pb.cmp(&pa).then(a.cmp(b))
        });
        for key in keys {
            self.enter(&key, now_ms);
        }
    }

    /// One instance, from wherever it waits: module, then lease, then
    /// admission.
    fn enter(&mut self, key: &InstanceKey, now_ms: u64) -> bool {
        let Some(i) = self.instances.get(key) else {
            return false;
        };
        let sha = i.want.artifact_sha256.clone();
        match self.modules.get(&sha) {
            Some(ModuleState::Ready) => {}
            Some(ModuleState::Invalid { reason }) => {
                let reason = reason.clone();
                let generation = i.want.generation;
                if let Some(i) = self.instances.get_mut(key) {
                    i.phase = Phase::Stopped {
                        reason: format!("module {sha} is invalid: {reason}"),
                    };
                }
                self.commands.push_back(Command::Report {
                    key: key.clone(),
                    generation,
                    event: Event::ModuleInvalid {
                        sha256: sha,
                        reason,
                    },
                });
                return false;
            }
            _ => {
                if let Some(i) = self.instances.get_mut(key) {
                    i.phase = Phase::WaitingForModule;
                }
                return false;
            }
        }
        if !i.lease.may_run(now_ms) {
            if let Some(i) = self.instances.get_mut(key) {
                i.phase = match i.lease {
                    Lease::Expired { at_ms, .. } => Phase::LeaseLost {
                        fence: i.want.fence.clone(),
                        expired_at_ms: at_ms,
                    },
                    _ => Phase::WaitingForLease,
                };
            }
            return false;
        }
        self.try_admit(key, now_ms)
    }

    /// Re-admits preempted, transiently refused and lease-waiting
    /// instances, highest priority first, until a pass admits nothing.
    /// Terminates: each pass either admits nobody or preempts only strictly
    /// lower priorities.
    fn retry_waiting(&mut self, now_ms: u64) {
        for _ in 0..=self.instances.len() {
            let keys: Vec<InstanceKey> = self
                .instances
                .iter()
                .filter(|(_, i)| waiting(i, now_ms))
                .map(|(k, _)| k.clone())
                .collect();
            if keys.is_empty() {
                return;
            }
            let before = self.commands.len();
            self.enter_in_order(keys, now_ms);
            if self.commands.len() == before {
                return;
            }
        }
    }

    /// Admits one instance (preempting if needed) or records the refusal.
    fn try_admit(&mut self, key: &InstanceKey, now_ms: u64) -> bool {
        let holders: Vec<Holder> = self
            .instances
            .iter()
            .filter(|(k, i)| *k != key && i.phase.holds_budget())
            .map(|(k, i)| Holder {
                key: k.clone(),
                priority: i.want.priority,
                budget: i.budget,
                seq: i.seq,
            })
            .collect();
        let Some(inst) = self.instances.get(key) else {
            return false;
        };
        let want = inst.want.clone();
        match admit(&self.node, &holders, &want) {
            Ok(adm) => {
                for victim in adm.preempt {
                    if let Some(v) = self.instances.get_mut(&victim.key) {
                        v.phase = Phase::Preempted { by: key.clone() };
                        v.budget = v.want.initial;
                        v.started_at_ms = None;
                        v.admitted_at_ms = None;
                        v.usage = None;
                    }
                    self.commands.push_back(Command::Stop {
                        key: victim.key,
                        reason: StopReason::Preempted {
                            by: key.clone(),
                            by_priority: want.priority,
                            priority: victim.priority,
                            shortfall: adm.shortfall,
                        },
                    });
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                if let Some(i) = self.instances.get_mut(key) {
                    i.phase = Phase::Starting;
                    i.budget = want.initial;
                    i.seq = seq;
                    i.attempt = 0;
                    i.admitted_at_ms = Some(now_ms);
                }
                self.commands.push_back(Command::Start {
                    key: key.clone(),
                    generation: want.generation,
                    artifact_sha256: want.artifact_sha256,
                    budget: want.initial,
                    attempt: 0,
                    fence: want.fence,
                });
                true
            }
            Err(refusal) => {
                if let Some(i) = self.instances.get_mut(key) {
                    // A preempted instance keeps saying who took its place.
                    if !(matches!(i.phase, Phase::Preempted { .. }) && refusal.is_transient()) {
                        i.phase = Phase::Refused(refusal);
                    }
                }
                false
            }
        }
    }
}

/// Waits for capacity or a lease (and is retried when either appears).
fn waiting(i: &Instance, now_ms: u64) -> bool {
    match &i.phase {
        Phase::Preempted { .. } => i.lease.may_run(now_ms),
        Phase::Refused(r) => r.is_transient() && i.lease.may_run(now_ms),
        Phase::WaitingForLease => i.lease.may_run(now_ms),
        _ => false,
    }
}

impl Instance {
    fn new(want: DesiredInstance, granted_at_ms: Option<u64>, now_ms: u64) -> Self {
        let mut lease = Lease::initial(want.disconnect);
        lease.grant(want.disconnect, granted_at_ms, now_ms);
        Instance {
            budget: want.initial,
            // Holds no capacity, so instances entering in the same batch do
            // not count each other; `enter` replaces it before
            // `handle_desired` returns.
            phase: Phase::WaitingForModule,
            want,
            seq: 0,
            attempt: 0,
            restarts: 0,
            failures: FailureWindow::default(),
            started_at_ms: None,
            admitted_at_ms: None,
            usage: None,
            mem_trend: Trend::default(),
            cpu_trend: Trend::default(),
            lease,
        }
    }
}
