//! [`LocalScheduler`]: the per-node lifecycle state machine for monitor
//! instances. See the module doc of `sched` for the shape and invariants.

use std::collections::{BTreeMap, VecDeque};

use rand::Rng;
use strata_protocol::workload::RestartMode;

use super::admission::{admit, Holder};
use super::backoff::{delay_ms, FailureWindow};
use super::model::{
    Budget, Command, Dimension, ExitKind, Health, InstanceKey, InstanceUsage, NodeInfo, NodeUsage,
    StopReason, WorkloadRequest, MIB,
};
use super::resize::{decide, ResizeInput, Trend};
use super::SchedConfig;

/// One desired instance and its history.
#[derive(Debug, Clone)]
struct Instance {
    req: WorkloadRequest,
    health: Health,
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
}

/// Per-instance report for heartbeats and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    /// Which instance.
    pub key: InstanceKey,
    /// Spec generation it runs.
    pub generation: u64,
    /// Its priority.
    pub priority: u8,
    /// Lifecycle state.
    pub health: Health,
    /// Current budget (reserved only while the health holds it).
    pub budget: Budget,
    /// Last measured use, if any.
    pub usage: Option<InstanceUsage>,
    /// Restarts since this generation was applied.
    pub restarts: u64,
    /// When it was last admitted, ms (`None` while it waits).
    pub admitted_at_ms: Option<u64>,
}

/// The local scheduler core. Deterministic: the same inputs give the same
/// commands.
#[derive(Debug, Clone)]
pub struct LocalScheduler {
    cfg: SchedConfig,
    node: NodeInfo,
    instances: BTreeMap<InstanceKey, Instance>,
    commands: VecDeque<Command>,
    next_seq: u64,
}

impl LocalScheduler {
    /// A scheduler for `node` with nothing desired yet.
    pub fn new(node: NodeInfo, cfg: SchedConfig) -> Self {
        LocalScheduler {
            cfg,
            node,
            instances: BTreeMap::new(),
            commands: VecDeque::new(),
            next_seq: 0,
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

    /// When [`LocalScheduler::handle_timeout`] must next be called, ms.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.instances
            .values()
            .filter_map(|i| match i.health {
                Health::Backoff { until_ms, .. } => Some(until_ms),
                _ => None,
            })
            .min()
    }

    /// Sum of the budgets that hold capacity.
    pub fn reserved(&self) -> Budget {
        self.instances
            .values()
            .filter(|i| i.health.holds_budget())
            .fold(Budget::default(), |a, i| a.plus(i.budget))
    }

    /// One instance's report.
    pub fn instance(&self, key: &InstanceKey) -> Option<InstanceReport> {
        self.instances.get(key).map(report)
    }

    /// Every desired instance's report, by key.
    pub fn health(&self) -> Vec<InstanceReport> {
        self.instances.values().map(report).collect()
    }

    /// Reconciles to the full desired set for this node. Instances with the
    /// same generation and artifact hash are left alone whatever their state;
    /// changed ones are stopped and admitted afresh; missing ones are
    /// stopped and forgotten; new ones are admitted, highest priority first.
    /// If a key appears twice, the last request wins.
    pub fn handle_desired(&mut self, desired: Vec<WorkloadRequest>, now_ms: u64) {
        let mut desired: BTreeMap<InstanceKey, WorkloadRequest> =
            desired.into_iter().map(|r| (r.key.clone(), r)).collect();
        let gone: Vec<InstanceKey> = self
            .instances
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = self.instances.remove(&key) {
                if old.health.holds_budget() {
                    self.commands.push_back(Command::Stop {
                        key,
                        reason: StopReason::Removed,
                    });
                }
            }
        }
        let mut to_admit = Vec::new();
        for (key, req) in std::mem::take(&mut desired) {
            match self.instances.get(&key) {
                Some(cur) if cur.req.same_version(&req) => {}
                Some(cur) => {
                    if cur.health.holds_budget() {
                        self.commands.push_back(Command::Stop {
                            key: key.clone(),
                            reason: StopReason::Replaced {
                                old_generation: cur.req.generation,
                                new_generation: req.generation,
                            },
                        });
                    }
                    self.instances.insert(key.clone(), Instance::new(req));
                    to_admit.push(key);
                }
                None => {
                    self.instances.insert(key.clone(), Instance::new(req));
                    to_admit.push(key);
                }
            }
        }
        self.admit_in_order(to_admit, now_ms);
        self.retry_waiting(now_ms);
    }

    /// The driver reports that an instance is running.
    pub fn handle_started(&mut self, key: &InstanceKey, generation: u64, now_ms: u64) {
        if let Some(i) = self.instances.get_mut(key) {
            if i.req.generation == generation && i.health == Health::Pending {
                i.health = Health::Running;
                i.started_at_ms = Some(now_ms);
                i.mem_trend = Trend::default();
                i.cpu_trend = Trend::default();
            }
        }
    }

    /// The driver reports that an instance exited on its own (exits caused
    /// by a `Stop` command, or of an older generation, are ignored).
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
        if i.req.generation != generation || !matches!(i.health, Health::Running | Health::Pending)
        {
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
        let policy = i.req.restart;
        let restart = match policy.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => exit.is_failure(),
            RestartMode::Never => false,
        };
        let mut released = true;
        if exit.is_failure() && failures >= cfg.crash_loop_failures as usize && restart {
            i.health = Health::CrashLooping {
                reason: format!(
                    "{failures} failures within {} ms (limit {}); last: {exit}",
                    cfg.crash_loop_window_ms, cfg.crash_loop_failures
                ),
            };
        } else if !restart {
            let mode = match policy.mode {
                RestartMode::Always => "always",
                RestartMode::OnFailure => "on-failure",
                RestartMode::Never => "never",
            };
            i.health = Health::Stopped {
                reason: format!("exited ({exit}); restart policy is {mode}"),
            };
        } else {
            i.attempt = i.attempt.saturating_add(1);
            i.restarts += 1;
            i.health = Health::Backoff {
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

    /// Restarts every instance whose backoff has expired. Its budget stayed
    /// reserved, so no admission is needed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        for (key, i) in self.instances.iter_mut() {
            if let Health::Backoff {
                until_ms, attempt, ..
            } = i.health
            {
                if until_ms <= now_ms {
                    i.health = Health::Pending;
                    self.commands.push_back(Command::Start {
                        key: key.clone(),
                        generation: i.req.generation,
                        artifact_sha256: i.req.artifact_sha256.clone(),
                        budget: i.budget,
                        attempt,
                    });
                }
            }
        }
    }

    /// Takes one round of measurements: the node's /proc sample and each
    /// running instance's use. Emits resizes; a shrink may let a waiting
    /// instance in.
    pub fn handle_usage(
        &mut self,
        now_ms: u64,
        node: &NodeUsage,
        samples: &[(InstanceKey, InstanceUsage)],
    ) {
        for (key, usage) in samples {
            if let Some(i) = self.instances.get_mut(key) {
                if i.health == Health::Running {
                    i.usage = Some(*usage);
                }
            }
        }
        // Pressure is judged once per round, at sample time; the free room is
        // tracked as resizes are decided so one round cannot over-commit.
        let pressure = [
            self.pressure(Dimension::Memory, node),
            self.pressure(Dimension::Cpu, node),
        ];
        let mut reserved = self.reserved();
        let mut shrunk = false;
        let cfg = &self.cfg;
        for (key, i) in self.instances.iter_mut() {
            if i.health != Health::Running {
                continue;
            }
            let Some(usage) = i.usage else { continue };
            for (dim, pressure) in [Dimension::Memory, Dimension::Cpu]
                .into_iter()
                .zip(&pressure)
            {
                let free = self.node.capacity.minus(reserved);
                let (used, budget, min, max, free, trend) = match dim {
                    Dimension::Memory => (
                        u32::try_from(usage.memory_bytes.div_ceil(MIB)).unwrap_or(u32::MAX),
                        i.budget.memory_mib,
                        i.req.min.memory_mib,
                        i.req.max.memory_mib,
                        free.memory_mib,
                        &mut i.mem_trend,
                    ),
                    Dimension::Cpu => (
                        usage.cpu_millicores,
                        i.budget.cpu_millicores,
                        i.req.min.cpu_millicores,
                        i.req.max.cpu_millicores,
                        free.cpu_millicores,
                        &mut i.cpu_trend,
                    ),
                };
                let input = ResizeInput {
                    dimension: dim,
                    used,
                    budget,
                    min,
                    max,
                    free,
                    pressure: pressure.as_deref(),
                };
                if let Some(reason) = decide(cfg, input, trend, now_ms) {
                    reserved = reserved.minus(i.budget);
                    match dim {
                        Dimension::Memory => i.budget.memory_mib = reason.to,
                        Dimension::Cpu => i.budget.cpu_millicores = reason.to,
                    }
                    reserved = reserved.plus(i.budget);
                    shrunk |= reason.to < reason.from;
                    self.commands.push_back(Command::Resize {
                        key: key.clone(),
                        budget: i.budget,
                        reason,
                    });
                }
            }
        }
        if shrunk {
            self.retry_waiting(now_ms);
        }
    }

    /// Why the node is under pressure in `dim`, if it is: measured use or
    /// reservations at or above `pressure-pct`, or instances waiting for room.
    fn pressure(&self, dim: Dimension, node: &NodeUsage) -> Option<String> {
        let pct = |used: u64, total: u64| (total > 0).then(|| used.saturating_mul(100) / total);
        let limit = u64::from(self.cfg.pressure_pct);
        let reserved = self.reserved();
        let (what, measured, reserved_pct) = match dim {
            Dimension::Memory => (
                "memory",
                pct(node.memory_used_bytes, node.memory_total_bytes),
                pct(
                    u64::from(reserved.memory_mib),
                    u64::from(self.node.capacity.memory_mib),
                ),
            ),
            Dimension::Cpu => (
                "cpu",
                pct(
                    u64::from(node.cpu_used_millicores),
                    u64::from(node.cpu_total_millicores),
                ),
                pct(
                    u64::from(reserved.cpu_millicores),
                    u64::from(self.node.capacity.cpu_millicores),
                ),
            ),
        };
        if let Some(p) = measured.filter(|&p| p >= limit) {
            return Some(format!("node {what} {p}% used"));
        }
        if let Some(p) = reserved_pct.filter(|&p| p >= limit) {
            return Some(format!("{p}% of monitor {what} reserved"));
        }
        let waiting = self
            .instances
            .values()
            .filter(|i| waiting(&i.health))
            .count();
        (waiting > 0).then(|| format!("{waiting} instance(s) waiting for room"))
    }

    fn admit_in_order(&mut self, mut keys: Vec<InstanceKey>, now_ms: u64) {
        keys.sort_by(|a, b| {
            let pa = self.instances.get(a).map_or(0, |i| i.req.priority);
            let pb = self.instances.get(b).map_or(0, |i| i.req.priority);
            pb.cmp(&pa).then(a.cmp(b))
        });
        for key in keys {
            self.try_admit(&key, now_ms);
        }
    }

    /// Re-admits preempted and transiently refused instances, highest
    /// priority first, until a pass admits nothing. Terminates: each pass
    /// either admits nobody or preempts only strictly lower priorities.
    fn retry_waiting(&mut self, now_ms: u64) {
        for _ in 0..=self.instances.len() {
            let keys: Vec<InstanceKey> = self
                .instances
                .iter()
                .filter(|(_, i)| waiting(&i.health))
                .map(|(k, _)| k.clone())
                .collect();
            if keys.is_empty() {
                return;
            }
            let before = self.commands.len();
            self.admit_in_order(keys, now_ms);
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
            .filter(|(k, i)| *k != key && i.health.holds_budget())
            .map(|(k, i)| Holder {
                key: k.clone(),
                priority: i.req.priority,
                budget: i.budget,
                seq: i.seq,
            })
            .collect();
        let Some(inst) = self.instances.get(key) else {
            return false;
        };
        let req = inst.req.clone();
        match admit(&self.node, &holders, &req) {
            Ok(adm) => {
                for victim in adm.preempt {
                    if let Some(v) = self.instances.get_mut(&victim.key) {
                        v.health = Health::Preempted { by: key.clone() };
                        v.budget = v.req.initial;
                        v.started_at_ms = None;
                        v.admitted_at_ms = None;
                        v.usage = None;
                    }
                    self.commands.push_back(Command::Stop {
                        key: victim.key,
                        reason: StopReason::Preempted {
                            by: key.clone(),
                            by_priority: req.priority,
                            priority: victim.priority,
                            shortfall: adm.shortfall,
                        },
                    });
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                if let Some(i) = self.instances.get_mut(key) {
                    i.health = Health::Pending;
                    i.budget = req.initial;
                    i.seq = seq;
                    i.attempt = 0;
                    i.admitted_at_ms = Some(now_ms);
                }
                self.commands.push_back(Command::Start {
                    key: key.clone(),
                    generation: req.generation,
                    artifact_sha256: req.artifact_sha256,
                    budget: req.initial,
                    attempt: 0,
                });
                true
            }
            Err(refusal) => {
                if let Some(i) = self.instances.get_mut(key) {
                    // A preempted instance keeps saying who took its place.
                    if !(matches!(i.health, Health::Preempted { .. }) && refusal.is_transient()) {
                        i.health = Health::Refused(refusal);
                    }
                }
                false
            }
        }
    }
}

/// Waits for capacity (and is retried when some frees up).
fn waiting(h: &Health) -> bool {
    match h {
        Health::Preempted { .. } => true,
        Health::Refused(r) => r.is_transient(),
        _ => false,
    }
}

impl Instance {
    fn new(req: WorkloadRequest) -> Self {
        Instance {
            budget: req.initial,
            // Placeholder that holds no capacity, so instances admitted in the
            // same batch do not count each other; `handle_desired` replaces it
            // with the admission outcome before returning.
            health: Health::Stopped {
                reason: "awaiting admission".to_owned(),
            },
            req,
            seq: 0,
            attempt: 0,
            restarts: 0,
            failures: FailureWindow::default(),
            started_at_ms: None,
            admitted_at_ms: None,
            usage: None,
            mem_trend: Trend::default(),
            cpu_trend: Trend::default(),
        }
    }
}

fn report(i: &Instance) -> InstanceReport {
    InstanceReport {
        key: i.req.key.clone(),
        generation: i.req.generation,
        priority: i.req.priority,
        health: i.health.clone(),
        budget: i.budget,
        usage: i.usage,
        restarts: i.restarts,
        admitted_at_ms: i.admitted_at_ms,
    }
}
