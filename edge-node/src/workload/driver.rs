//! [`WorkloadDriver`]: the one tokio task that owns the [`Lifecycle`] core
//! and carries out its commands against the sandbox, the store, the router
//! and the worker pool.
//!
//! It reads the clock (ms since it started, monotonic) and owns the seeded
//! RNG the core's backoff jitter uses; the core itself stays pure. It is the
//! only owner of the core, the slots, the prepared modules, the instances'
//! saved and persisted state, the checkpoint policy (which states go to the
//! region through the spool) with the region's seeds for new allocations,
//! and the notes behind `last_event`; others
//! reach it by message ([`Request`] from the handle, `WorkerReport` from
//! the workers) and read what it [publishes](super::status::Published).
//!
//! Commands run in order, one at a time, so a `Stop` of generation 1 is
//! done before the `Start` of generation 2; their blocking parts (reading
//! modules, instantiating, writing state) run on `spawn_blocking`. Module
//! work is the exception: fetches and compiles run concurrently (up to one
//! per worker thread) and come back as events, so a reboot with many
//! modules loads them in parallel while nothing else waits.
//!
//! # Layout
//! - this file: the task, its inputs, publication, shutdown.
//! - `execute`: one function per command.

mod execute;
mod handover;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::monitoring::NodeResources;
use strata_protocol::workload::RuntimeKind;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::checkpoint::{CheckpointCommand, CheckpointPolicy};
use super::command::ModuleFailure;
use super::config::WorkloadConfig;
use super::desired::{from_assignments, Launch};
use super::executor::{Executor, WorkerReport};
use super::lifecycle::Lifecycle;
use super::metrics::WorkloadMetrics;
use super::model::{
    millicores_from_fuel, Budget, DesiredSet, InstanceKey, InstanceUsage, NodeInfo, NodeUsage,
};
use super::output::Output;
use super::router::Router;
use super::sandbox::{KvState, PreparedModule, SandboxDriver};
use super::slot::{InstanceStats, Slot};
use super::snapshot::Snapshot;
use super::status::{InstanceView, Published};
use super::store::{Assignments, StateOrigin, StoreError, WorkloadStore};
use crate::uplink::{ApplyError, AssignmentUpdate};
use strata_protocol::monitoring::StateCheckpoint;
use tokio::sync::mpsc::error::TrySendError;

/// Samples the node's resources (`sysinfo::NodeSampler::sample` in the
/// node; a fake in tests).
pub type NodeSampleFn = Box<dyn FnMut(Instant) -> NodeResources + Send>;

/// What the handle asks of the driver.
#[derive(Debug)]
pub(crate) enum Request {
    /// Persist and apply a full assignment set from the region.
    Apply {
        /// The set, its modules, and when it was requested.
        update: AssignmentUpdate,
        /// The version applied, or why not.
        reply: oneshot::Sender<Result<u64, ApplyError>>,
    },
    /// The region acknowledged a heartbeat sent at `sent_at`.
    LeaseRenewed {
        /// When that heartbeat was sent.
        sent_at: Instant,
    },
    /// Drain and stop; the reply says it is done.
    Shutdown(oneshot::Sender<()>),
}

/// The outcome of one module job.
#[derive(Debug)]
enum ModuleDone {
    Fetched {
        sha256: String,
        result: Result<(), ModuleFailure>,
        corrupt: bool,
    },
    Compiled {
        sha256: String,
        result: Result<(PreparedModule, &'static str), ModuleFailure>,
        corrupt: bool,
    },
}

/// What the driver learns at boot, before it runs.
pub(crate) struct Boot {
    /// The persisted assignments (empty if none or unusable).
    pub assignments: Assignments,
    /// Module files whose content was verified at boot.
    pub verified: BTreeSet<String>,
    /// Module files present.
    pub stored: BTreeSet<String>,
    /// Modules of the assignments that were missing or corrupt, and why.
    pub missing: BTreeMap<String, String>,
}

/// Everything the driver owns or shares, handed over by the handle.
pub(crate) struct Parts {
    pub edge: String,
    pub cfg: WorkloadConfig,
    pub store: WorkloadStore,
    pub sandbox: Arc<dyn SandboxDriver>,
    pub router: Arc<Router>,
    pub executor: Arc<Executor>,
    pub metrics: WorkloadMetrics,
    pub changed: Arc<watch::Sender<u64>>,
    pub published: Arc<Snapshot<Published>>,
    pub sampler: NodeSampleFn,
    pub requests: mpsc::UnboundedReceiver<Request>,
    pub reports: mpsc::UnboundedReceiver<WorkerReport>,
    pub boot: Boot,
    /// The spool writer's queue, for state checkpoints.
    pub outputs: mpsc::Sender<Vec<Output>>,
}

/// The driver's notes about one instance key.
#[derive(Debug, Default, Clone)]
struct Notes {
    last_event: Option<String>,
    last_fault: Option<String>,
}

/// The task that owns the lifecycle core.
pub(crate) struct WorkloadDriver {
    core: Lifecycle,
    epoch: Instant,
    rng: ChaCha8Rng,
    edge: String,
    cfg: WorkloadConfig,
    store: WorkloadStore,
    sandbox: Arc<dyn SandboxDriver>,
    router: Arc<Router>,
    executor: Arc<Executor>,
    metrics: WorkloadMetrics,
    changed: Arc<watch::Sender<u64>>,
    published: Arc<Snapshot<Published>>,
    sampler: NodeSampleFn,
    requests: mpsc::UnboundedReceiver<Request>,
    reports: mpsc::UnboundedReceiver<WorkerReport>,
    module_tx: mpsc::UnboundedSender<ModuleDone>,
    module_rx: mpsc::UnboundedReceiver<ModuleDone>,
    /// Concurrent module jobs.
    module_jobs: Arc<Semaphore>,
    /// Selector and parameters per desired instance.
    launches: HashMap<InstanceKey, Launch>,
    /// Started instances (with or without a live sandbox).
    slots: HashMap<InstanceKey, Arc<Slot>>,
    /// Incarnation of each live sandbox; worker reports of others are stale.
    live: HashMap<InstanceKey, u64>,
    next_incarnation: u64,
    /// Counters per key; they survive restarts.
    stats: HashMap<InstanceKey, Arc<InstanceStats>>,
    notes: HashMap<InstanceKey, Notes>,
    /// State of a dead sandbox, for its restart.
    saved: HashMap<InstanceKey, KvState>,
    /// State as last persisted, to skip unchanged writes.
    persisted: HashMap<InstanceKey, KvState>,
    /// Prepared modules of the core's ready modules.
    modules: HashMap<String, PreparedModule>,
    /// Module files whose content was verified.
    verified: BTreeSet<String>,
    /// Module files present.
    stored: BTreeSet<String>,
    /// Modules boot found missing or corrupt, until their first fetch.
    boot_missing: BTreeMap<String, String>,
    applied_version: u64,
    reconciled_version: u64,
    /// Per slot: (time, fuel total) at the previous usage sample.
    fuel_seen: HashMap<InstanceKey, (Instant, u64)>,
    node: NodeResources,
    /// When instance states go to the region (pure policy).
    checkpoints: CheckpointPolicy,
    /// The spool writer's queue.
    outputs: mpsc::Sender<Vec<Output>>,
    /// The region's checkpoint for an instance's allocation (id), used at
    /// its first start (see `checkpoint::seed_decision`).
    seeds: HashMap<InstanceKey, (String, StateCheckpoint)>,
    /// Each sharded monitor's local slots as last published (what a
    /// hand-over moves devices from).
    shard_sets: HashMap<handover::MonitorId, (strata_sched::scale::ShardKey, Vec<u32>)>,
    /// A slot was added since the routing table was last published.
    table_stale: bool,
}

impl WorkloadDriver {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            edge,
            cfg,
            store,
            sandbox,
            router,
            executor,
            metrics,
            changed,
            published,
            sampler,
            requests,
            reports,
            boot,
            outputs,
        } = parts;
        let node = NodeInfo {
            name: edge.clone(),
            capacity: Budget::new(cfg.memory_mib, cfg.cpu_millicores),
            labels: cfg.labels.clone(),
            pools: cfg.pools.clone(),
            runtimes: [RuntimeKind::Wasm].into_iter().collect(),
        };
        let seed: u64 = rand::random();
        tracing::debug!(%edge, seed, "workload lifecycle jitter seed");
        let (module_tx, module_rx) = mpsc::unbounded_channel();
        let mut d = WorkloadDriver {
            core: Lifecycle::new(node, cfg.sched.clone(), cfg.state_flush_interval_ms),
            epoch: Instant::now(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            module_jobs: Arc::new(Semaphore::new(cfg.workers())),
            edge,
            store,
            sandbox,
            router,
            executor,
            metrics,
            changed,
            published,
            sampler,
            requests,
            reports,
            module_tx,
            module_rx,
            launches: HashMap::new(),
            slots: HashMap::new(),
            live: HashMap::new(),
            next_incarnation: 0,
            stats: HashMap::new(),
            notes: HashMap::new(),
            saved: HashMap::new(),
            persisted: HashMap::new(),
            modules: HashMap::new(),
            verified: boot.verified,
            stored: boot.stored,
            boot_missing: boot.missing,
            applied_version: boot.assignments.version,
            reconciled_version: 0,
            fuel_seen: HashMap::new(),
            node: NodeResources::default(),
            checkpoints: CheckpointPolicy::new(
                cfg.checkpoint_interval_ms,
                cfg.checkpoint_max_bytes,
            ),
            outputs,
            seeds: HashMap::new(),
            shard_sets: HashMap::new(),
            table_stale: false,
            cfg,
        };
        tracing::info!(
            edge = %d.edge,
            version = boot.assignments.version,
            instances = boot.assignments.len(),
            "workloads starting from their persisted assignments"
        );
        // A set read from disk grants no lease (see `lifecycle::lease`).
        d.desired(&boot.assignments, None);
        d
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// The origin of a state an instance with `fence` holds now.
    fn origin(fence: &super::model::Fence) -> StateOrigin {
        StateOrigin {
            allocation: fence.allocation.clone(),
            token: fence.token,
            taken_ms: wall_ms(),
        }
    }

    /// Hands the policy a state the instance `key` (still started) holds
    /// now: changed (`stop` false) or final (`stop` true).
    fn offer_checkpoint(&mut self, key: &InstanceKey, state: &KvState, stop: bool) {
        let Some(fence) = self.slots.get(key).map(|s| s.fence.clone()) else {
            return;
        };
        let bytes = encode_kv(state);
        let (now, taken) = (self.now_ms(), wall_ms());
        if stop {
            self.checkpoints.handle_stop(key, &fence, bytes, now, taken);
        } else {
            self.checkpoints
                .handle_state(key, &fence, bytes, now, taken);
        }
    }

    /// Carries out the checkpoint policy's commands without waiting: a
    /// full spool queue defers a checkpoint to the next sample.
    pub(super) fn spool_checkpoints(&mut self) {
        while let Some(cmd) = self.checkpoints.poll_command() {
            let Some(out) = self.checkpoint_output(&cmd) else {
                continue;
            };
            match self.outputs.try_send(vec![out]) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.metrics.checkpoint_skipped("queue-full");
                    self.checkpoints.handle_not_spooled(cmd);
                }
                Err(TrySendError::Closed(_)) => self.metrics.checkpoint_skipped("spool-refused"),
            }
        }
    }

    /// The spool output of a `Spool` command; counts and logs a `Skip`.
    fn checkpoint_output(&self, cmd: &CheckpointCommand) -> Option<Output> {
        match cmd {
            CheckpointCommand::Spool {
                key,
                fence,
                taken_ms,
                state,
            } => Some(super::output::checkpoint(
                key,
                fence,
                *taken_ms,
                state.clone(),
            )),
            CheckpointCommand::Skip { key, reason } => {
                self.metrics.checkpoint_skipped(reason.label());
                tracing::warn!(instance = %key, ?reason, "monitor state not checkpointed");
                None
            }
        }
    }

    /// `t` on the core's clock.
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Runs the commands of the boot reconcile that need no waiting, and
    /// publishes, so what the uplink reads (applied version, missing
    /// modules) is right before the host's `start` returns.
    pub async fn settle(&mut self) {
        self.execute_all().await;
        self.publish();
    }

    pub async fn run(mut self) {
        let mut sample = tokio::time::interval(Duration::from_millis(self.cfg.sample_interval_ms));
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether the last event may have changed what readers see (a
        // checkpoint does not: with many instances it is the most common
        // event, and publishing copies every instance's report).
        let mut changed = true;
        let reply = loop {
            self.execute_all().await;
            if changed {
                self.publish();
            }
            let wake = self
                .core
                .poll_timeout()
                .map(|ms| tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms)));
            changed = true;
            tokio::select! {
                req = self.requests.recv() => match req {
                    None => break None,
                    Some(Request::Shutdown(tx)) => break Some(tx),
                    Some(r) => self.on_request(r).await,
                },
                Some(r) = self.reports.recv() => changed = self.on_report(r).await,
                Some(done) = self.module_rx.recv() => self.on_module(done),
                _ = async { tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)).await },
                    if wake.is_some() => {
                    let now = self.now_ms();
                    self.core.handle_timeout(now);
                }
                _ = sample.tick() => self.sample(),
            }
        };
        self.drain(reply).await;
    }

    /// Hands a full desired set to the core.
    fn desired(&mut self, a: &Assignments, granted_at_ms: Option<u64>) {
        let version = a.version;
        let (instances, launches) = from_assignments(a);
        self.launches = launches;
        self.seeds = a
            .allocations
            .iter()
            .filter_map(|x| {
                let c = x.checkpoint.clone()?;
                // Another instance's state never seeds this one.
                if c.tenant != x.spec.tenant || c.workload != x.spec.name {
                    self.metrics.checkpoint_seed("unusable");
                    tracing::error!(edge = %self.edge, allocation = %x.id, tenant = %c.tenant, workload = %c.workload, "checkpoint handed with an allocation of another monitor; ignored");
                    return None;
                }
                let key = InstanceKey::new(&x.spec.tenant, &x.spec.name);
                Some((key, (x.id.to_string(), c)))
            })
            .collect();
        self.stats.retain(|k, _| self.launches.contains_key(k));
        self.notes.retain(|k, _| self.launches.contains_key(k));
        tracing::info!(edge = %self.edge, version, monitors = instances.len(), "reconciling workload assignments");
        let now = self.now_ms();
        self.core.handle_desired(
            DesiredSet {
                instances,
                granted_at_ms,
            },
            now,
        );
        self.reconciled_version = version;
    }

    async fn on_request(&mut self, r: Request) {
        match r {
            Request::Apply { update, reply } => {
                let r = self.apply(update).await;
                // Readers see the reconciled set (and what it still
                // misses) by the time `apply` returns.
                self.execute_all().await;
                self.publish();
                let _ = reply.send(r);
            }
            Request::LeaseRenewed { sent_at } => {
                let (sent, now) = (self.ms(sent_at), self.now_ms());
                self.core.handle_lease_renewed(sent, now);
            }
            // Handled by the loop.
            Request::Shutdown(_) => {}
        }
    }

    /// Persists an assignment set and its modules, then reconciles to it.
    /// Nothing is applied when a file cannot be written.
    async fn apply(&mut self, update: AssignmentUpdate) -> Result<u64, ApplyError> {
        let AssignmentUpdate {
            version,
            allocations,
            artifacts,
            requested_at,
            lease_granted,
        } = update;
        let store = self.store.clone();
        let a = Assignments {
            version,
            monitors: Vec::new(),
            allocations,
        };
        let delivered: Vec<String> = artifacts.iter().map(|(s, _)| s.clone()).collect();
        let edge = self.edge.clone();
        let (a, kept) = tokio::task::spawn_blocking(move || {
            let fail = |e: StoreError| ApplyError::Failed {
                edge: edge.clone(),
                source: Box::new(e),
            };
            for (sha, bytes) in &artifacts {
                store.put_artifact(sha, bytes).map_err(fail)?;
            }
            store.save_assignments(&a).map_err(fail)?;
            let keep = a.modules();
            if let Err(e) = store.retain_artifacts(&|sha| keep.contains(sha)) {
                tracing::warn!(%edge, error = %e, "removing unused monitor modules");
            }
            Ok((a, keep))
        })
        .await
        .map_err(|e| ApplyError::Failed {
            edge: self.edge.clone(),
            source: Box::new(e),
        })??;
        self.verified.extend(delivered.iter().cloned());
        self.stored.extend(delivered);
        self.stored.retain(|s| kept.contains(s));
        self.verified.retain(|s| kept.contains(s));
        let sandbox = self.sandbox.clone();
        let keep = kept.clone();
        // Compiled forms of modules nobody needs any more.
        tokio::task::spawn_blocking(move || sandbox.retain_cached(&|sha| keep.contains(sha)));
        self.applied_version = a.version;
        tracing::info!(edge = %self.edge, version = a.version, allocations = a.allocations.len(), lease_granted, "workload allocations applied");
        // A set grants leases only when the leader said so (it considers
        // this edge up); counted from when the request was sent.
        let granted = lease_granted.then(|| self.ms(requested_at));
        self.desired(&a, granted);
        Ok(a.version)
    }

    /// Handles a worker's report, and every other report already waiting
    /// (so checkpoints are written in one batch). Returns whether the
    /// published state may have changed.
    async fn on_report(&mut self, first: WorkerReport) -> bool {
        let mut states = Vec::new();
        let mut changed = false;
        let mut next = Some(first);
        while let Some(r) = next.take() {
            match r {
                WorkerReport::Checkpoint {
                    key,
                    incarnation,
                    state,
                } => {
                    if self.live.get(&key) == Some(&incarnation) {
                        states.push((key, state));
                    }
                }
                faulted => {
                    changed = true;
                    self.on_fault(faulted);
                }
            }
            next = self.reports.try_recv().ok();
        }
        for (key, state) in self.persist_all(states).await {
            self.offer_checkpoint(&key, &state, false);
        }
        self.spool_checkpoints();
        changed
    }

    fn on_fault(&mut self, r: WorkerReport) {
        match r {
            WorkerReport::Faulted {
                key,
                generation,
                incarnation,
                fault,
                state,
            } => {
                if self.live.get(&key) != Some(&incarnation) {
                    return; // an older sandbox of this key
                }
                self.live.remove(&key);
                let state = self.own_devices_only(&key, state);
                self.saved.insert(key.clone(), state);
                let reason = format!("{}: {fault}", fault.label());
                tracing::warn!(instance = %key, generation, %reason, "monitor instance faulted");
                self.count_fault(&key, fault.label());
                let n = self.notes.entry(key.clone()).or_default();
                n.last_event = Some(format!("fault: {reason}"));
                n.last_fault = Some(reason);
                let now = self.now_ms();
                self.core
                    .handle_exited(&key, generation, fault.exit_kind(), now, &mut self.rng);
            }
            WorkerReport::Checkpoint { .. } => {}
        }
    }

    fn count_fault(&mut self, key: &InstanceKey, label: &str) {
        self.metrics.fault(label);
        if let Some(s) = self.stats.get(key) {
            s.faults.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Writes the states that differ from what was last persisted, in one
    /// blocking task, each with its instance's fence as origin. Returns
    /// what it wrote.
    async fn persist_all(
        &mut self,
        states: Vec<(InstanceKey, KvState)>,
    ) -> Vec<(InstanceKey, KvState)> {
        let writes: Vec<(InstanceKey, KvState, Option<StateOrigin>)> = states
            .into_iter()
            .filter(|(k, st)| self.persisted.get(k) != Some(st))
            .map(|(k, st)| {
                let origin = self.slots.get(&k).map(|s| Self::origin(&s.fence));
                (k, st, origin)
            })
            .collect();
        if writes.is_empty() {
            return Vec::new();
        }
        let store = self.store.clone();
        let r =
            tokio::task::spawn_blocking(move || {
                writes
                .into_iter()
                .filter_map(|(k, st, o)| match store.save_state_from(&k, &st, o.as_ref()) {
                    Ok(()) => Some((k, st)),
                    Err(e) => {
                        tracing::error!(instance = %k, error = %e, "persisting monitor state");
                        None
                    }
                })
                .collect::<Vec<_>>()
            })
            .await;
        match r {
            Ok(done) => {
                self.persisted.extend(done.iter().cloned());
                done
            }
            Err(e) => {
                tracing::error!(edge = %self.edge, error = %e, "state write task failed");
                Vec::new()
            }
        }
    }

    fn on_module(&mut self, done: ModuleDone) {
        let now = self.now_ms();
        match done {
            ModuleDone::Fetched {
                sha256,
                result,
                corrupt,
            } => {
                self.module_corrupt(&sha256, corrupt);
                match result {
                    Ok(()) => {
                        self.verified.insert(sha256.clone());
                        self.core.handle_module_fetched(&sha256);
                    }
                    Err(f) => {
                        tracing::error!(edge = %self.edge, module = %sha256, failure = %f, "monitor module unavailable; waiting for the region to send it");
                        self.core.handle_module_failed(&sha256, f, now);
                    }
                }
            }
            ModuleDone::Compiled {
                sha256,
                result,
                corrupt,
            } => {
                self.module_corrupt(&sha256, corrupt);
                match result {
                    Ok((module, how)) => {
                        self.metrics.module_load(how);
                        if self.core.module(&sha256).is_some() {
                            self.modules.insert(sha256.clone(), module);
                        }
                        self.core.handle_module_ready(&sha256, now);
                    }
                    Err(f) => {
                        tracing::error!(edge = %self.edge, module = %sha256, failure = %f, "monitor module not loadable");
                        self.core.handle_module_failed(&sha256, f, now);
                    }
                }
            }
        }
    }

    /// A module file was found corrupt (and deleted): count it and forget it.
    fn module_corrupt(&mut self, sha256: &str, corrupt: bool) {
        if corrupt {
            self.metrics.corrupt_files.inc();
            self.verified.remove(sha256);
            self.stored.remove(sha256);
        }
    }

    fn stats_for(&mut self, key: &InstanceKey) -> Arc<InstanceStats> {
        self.stats.entry(key.clone()).or_default().clone()
    }

    fn publish_router(&self) {
        self.router.publish(self.slots.values().cloned().collect());
    }

    fn sample(&mut self) {
        let node = (self.sampler)(Instant::now());
        // From the counters the workers keep after every callback: a busy
        // instance (the one that matters most) is measured without waiting
        // for its callback to end.
        let per_core_s = self.cfg.limits.fuel_per_core_ms.saturating_mul(1000);
        let at = Instant::now();
        let mut samples = Vec::with_capacity(self.slots.len());
        self.fuel_seen.retain(|k, _| self.slots.contains_key(k));
        for (k, s) in &self.slots {
            let fuel = s.fuel_total.load(std::sync::atomic::Ordering::Relaxed);
            // The first sample of a slot has no CPU window yet (0), but
            // its memory is known at once.
            let (t0, fuel0) = self
                .fuel_seen
                .insert(k.clone(), (at, fuel))
                .unwrap_or((at, fuel));
            let ms = at.duration_since(t0).as_millis() as u64;
            let fuel_per_s = fuel
                .saturating_sub(fuel0)
                .saturating_mul(1000)
                .checked_div(ms)
                .unwrap_or(0);
            samples.push((
                k.clone(),
                InstanceUsage {
                    cpu_millicores: millicores_from_fuel(fuel_per_s, per_core_s),
                    memory_bytes: s.memory_bytes.load(std::sync::atomic::Ordering::Relaxed),
                },
            ));
        }
        let now = self.now_ms();
        self.core.handle_usage(now, &node_usage(&node), &samples);
        self.node = node;
        self.checkpoints.handle_tick(now);
        self.spool_checkpoints();
    }

    /// Publishes the state readers see, and pokes waiters.
    fn publish(&self) {
        let instances: Vec<InstanceView> = self
            .core
            .instances()
            .into_iter()
            .map(|report| {
                let notes = self.notes.get(&report.key).cloned().unwrap_or_default();
                InstanceView {
                    stats: self.stats.get(&report.key).cloned(),
                    last_event: notes.last_event,
                    last_fault: notes.last_fault,
                    report,
                }
            })
            .collect();
        let running = instances
            .iter()
            .filter(|v| v.report.phase == super::lifecycle::Phase::Running)
            .count();
        self.metrics.running.set(running as i64);
        self.published.publish(Published {
            instances,
            reserved: self.core.reserved(),
            node: self.node,
            applied_version: self.applied_version,
            reconciled_version: self.reconciled_version,
            missing_modules: self.core.missing_modules().into_iter().collect(),
            stored_modules: self.stored.clone(),
            awaiting_grant: self.core.awaiting_grant(),
        });
        self.changed.send_modify(|v| *v += 1);
    }

    /// Shutdown: process what is queued (bounded), stop routing and the
    /// workers, persist every state.
    async fn drain(mut self, reply: Option<oneshot::Sender<()>>) {
        let (executor, router) = (self.executor.clone(), self.router.clone());
        let timeout = Duration::from_millis(self.cfg.drain_timeout_ms);
        let idle = tokio::task::spawn_blocking(move || {
            let idle = executor.wait_idle(timeout);
            router.publish(Vec::new());
            executor.stop();
            idle
        })
        .await
        .unwrap_or(false);
        if !idle {
            tracing::warn!(edge = %self.edge, "monitor queues not drained within the drain timeout");
        }
        // The workers are gone: the driver is the only owner of every
        // sandbox now.
        let mut states = Vec::new();
        for (key, slot) in &self.slots {
            let left = slot.close();
            if left > 0 {
                slot.count_dropped(left as u64, "shutting down");
            }
            let live = super::slot::lock(&slot.sandbox).take();
            let state = live
                .map(|l| l.inst.state())
                .or_else(|| self.saved.remove(key));
            if let Some(state) = state {
                states.push((key.clone(), state));
            }
        }
        self.persist_all(states.clone()).await;
        // Final checkpoints, waiting for room (the workers are gone; the
        // spool writer runs until the driver drops its sender).
        for (key, state) in &states {
            self.offer_checkpoint(key, state, true);
        }
        while let Some(cmd) = self.checkpoints.poll_command() {
            if let Some(out) = self.checkpoint_output(&cmd) {
                if self.outputs.send(vec![out]).await.is_err() {
                    self.metrics.checkpoint_skipped("spool-refused");
                }
            }
        }
        self.publish();
        if let Some(tx) = reply {
            let _ = tx.send(());
        }
    }
}

/// Wall-clock ms since the Unix epoch: when a state was taken.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A state as checkpoints carry it (bincode of the map, as the store
/// writes it).
pub(super) fn encode_kv(state: &KvState) -> Vec<u8> {
    // Encoding plain owned data into a Vec cannot fail.
    bincode::encode_to_vec(state, bincode::config::standard()).unwrap_or_default()
}

/// Inverse of [`encode_kv`] for a checkpoint from the region, bounded.
pub(super) fn decode_kv(bytes: &[u8]) -> Result<KvState, String> {
    let cfg = bincode::config::standard()
        .with_limit::<{ super::config::MAX_CHECKPOINT_BYTES as usize * 2 }>();
    let (s, used): (KvState, usize) =
        bincode::decode_from_slice(bytes, cfg).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(s)
}

/// Maps the /proc sample to what the core judges pressure by.
pub(crate) fn node_usage(n: &NodeResources) -> NodeUsage {
    NodeUsage {
        cpu_used_millicores: n.cpu_used_millicores,
        cpu_total_millicores: n.cpu_total_millicores,
        memory_used_bytes: n.memory_used_bytes,
        memory_total_bytes: n.memory_total_bytes,
        disk_used_bytes: n.disk_used_bytes,
        disk_total_bytes: n.disk_total_bytes,
        net_rx_bytes_per_s: n.net_rx_bytes_per_s,
        net_tx_bytes_per_s: n.net_tx_bytes_per_s,
    }
}
