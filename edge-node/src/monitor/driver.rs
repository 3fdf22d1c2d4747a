//! The scheduler driver: the one tokio task that owns the pure
//! [`LocalScheduler`] and carries out its commands.
//!
//! It reads the clock (ms since the task started) and owns the seeded RNG
//! the core's backoff jitter uses; the core itself stays pure. Blocking work
//! (reading modules, compiling, instantiating, writing state) runs on
//! `spawn_blocking`, one command at a time, so commands apply in order:
//! a `Stop` of generation 1 is done before the `Start` of generation 2.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::monitoring::NodeResources;
use strata_protocol::workload::{MonitorSpec, RuntimeKind};
use tokio::sync::{mpsc, oneshot};

use super::host::{Inner, NodeSampleFn};
use super::metrics::InstanceLabels;
use super::slot::{lock, Live, Slot};
use super::store::StoreError;
use super::HostEvent;
use crate::runtime::{InstanceConfig, KvState, RuntimeError};
use crate::sched::{
    millicores_from_fuel, Budget, Command, Dimension, ExitKind, InstanceKey, InstanceUsage,
    LocalScheduler, NodeInfo, NodeUsage, StopReason, WorkloadRequest,
};

/// Maps the /proc sample to what the scheduler judges pressure by.
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

fn stop_text(r: &StopReason) -> String {
    match r {
        StopReason::Removed => "removed from this edge's assignments".to_owned(),
        StopReason::Replaced {
            old_generation,
            new_generation,
        } => format!("generation {old_generation} replaced by {new_generation}"),
        StopReason::Preempted {
            by,
            by_priority,
            priority,
            shortfall,
        } => format!(
            "preempted by {by} (priority {by_priority} > {priority}; short {} MiB / {} millicores)",
            shortfall.memory_mib, shortfall.cpu_millicores
        ),
    }
}

/// Why a start failed, with the scheduler's view and a counter label.
struct StartFailure {
    exit: ExitKind,
    label: &'static str,
    text: String,
    corrupt_artifact: bool,
}

impl StartFailure {
    fn store(e: StoreError) -> Self {
        StartFailure {
            corrupt_artifact: matches!(e, StoreError::Corrupt { .. }),
            exit: ExitKind::Crashed(e.to_string()),
            label: "module-unavailable",
            text: e.to_string(),
        }
    }

    fn runtime(e: RuntimeError) -> Self {
        let text = e.to_string();
        match e {
            RuntimeError::Fault { fault, .. } => StartFailure {
                exit: fault.exit_kind(),
                label: fault.label(),
                text,
                corrupt_artifact: false,
            },
            _ => StartFailure {
                exit: ExitKind::Crashed(text.clone()),
                label: "start-failed",
                text,
                corrupt_artifact: false,
            },
        }
    }
}

pub(crate) struct SchedTask {
    inner: Arc<Inner>,
    sched: LocalScheduler,
    specs: HashMap<InstanceKey, MonitorSpec>,
    slots: HashMap<InstanceKey, Arc<Slot>>,
    rx: mpsc::UnboundedReceiver<HostEvent>,
    rng: ChaCha8Rng,
    epoch: Instant,
    sampler: NodeSampleFn,
    /// Version of the last desired set, published after its commands ran.
    reconciled: u64,
    /// Desired monitors held back for a missing module: key, generation, why.
    waiting: Vec<(InstanceKey, u64, String)>,
    /// Per slot: (time, fuel total) at the previous usage sample.
    fuel_seen: HashMap<InstanceKey, (Instant, u64)>,
}

impl SchedTask {
    pub fn new(
        inner: Arc<Inner>,
        rx: mpsc::UnboundedReceiver<HostEvent>,
        sampler: NodeSampleFn,
    ) -> Self {
        let cfg = &inner.cfg;
        let node = NodeInfo {
            name: inner.edge.clone(),
            capacity: Budget::new(cfg.memory_mib, cfg.cpu_millicores),
            labels: cfg.labels.clone(),
            pools: cfg.pools.clone(),
            runtimes: [RuntimeKind::Wasm].into_iter().collect(),
        };
        let seed: u64 = rand::random();
        tracing::debug!(edge = %inner.edge, seed, "monitor scheduler jitter seed");
        SchedTask {
            sched: LocalScheduler::new(node, cfg.sched.clone()),
            inner,
            specs: HashMap::new(),
            slots: HashMap::new(),
            rx,
            rng: ChaCha8Rng::seed_from_u64(seed),
            epoch: Instant::now(),
            sampler,
            reconciled: 0,
            waiting: Vec::new(),
            fuel_seen: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub async fn run(mut self) {
        let cfg = self.inner.cfg.clone();
        let mut sample = tokio::time::interval(Duration::from_millis(cfg.sample_interval_ms));
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(Duration::from_millis(cfg.state_flush_interval_ms));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.tick().await;
        let reply = loop {
            self.execute().await;
            self.publish();
            let wake = self
                .sched
                .poll_timeout()
                .map(|ms| tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms)));
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    None => break None,
                    Some(HostEvent::Shutdown(tx)) => break Some(tx),
                    Some(HostEvent::Desired { version, monitors }) => self.desired(version, monitors),
                    Some(HostEvent::Exited { key, generation, fault }) => {
                        let now = self.now_ms();
                        self.sched.handle_exited(&key, generation, fault.exit_kind(), now, &mut self.rng);
                    }
                },
                _ = async { tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)).await },
                    if wake.is_some() => {
                    let now = self.now_ms();
                    self.sched.handle_timeout(now);
                }
                _ = sample.tick() => self.sample(),
                _ = flush.tick() => self.flush_states(false).await,
            }
        };
        self.drain(reply).await;
    }

    fn desired(&mut self, version: u64, monitors: Vec<MonitorSpec>) {
        self.specs = monitors
            .into_iter()
            .map(|m| (InstanceKey::new(&m.tenant, &m.name), m))
            .collect();
        lock(&self.inner.stats).retain(|k, _| self.specs.contains_key(k));
        // A monitor whose module is missing (or was found corrupt) waits
        // outside the scheduler until the uplink delivers the module; it
        // then enters as a new instance instead of crash-looping meanwhile.
        let missing = lock(&self.inner.missing).clone();
        let mut waiting = Vec::new();
        let mut reqs = Vec::with_capacity(self.specs.len());
        for (k, spec) in &self.specs {
            let sha = &spec.artifact.sha256;
            if missing.contains(sha) || !self.inner.store.has_artifact(sha) {
                waiting.push((
                    k.clone(),
                    spec.generation,
                    format!("waiting for module {sha}"),
                ));
            } else {
                reqs.push(WorkloadRequest::from_spec(spec));
            }
        }
        tracing::info!(
            edge = %self.inner.edge,
            version,
            monitors = reqs.len(),
            waiting_for_modules = waiting.len(),
            "reconciling monitor assignments"
        );
        let now = self.now_ms();
        self.sched.handle_desired(reqs, now);
        self.reconciled = version;
        self.waiting = waiting;
    }

    /// Carries out every pending command, in order.
    async fn execute(&mut self) {
        while let Some(cmd) = self.sched.poll_command() {
            match cmd {
                Command::Start {
                    key,
                    generation,
                    artifact_sha256,
                    budget,
                    attempt,
                } => {
                    self.start(key, generation, artifact_sha256, budget, attempt)
                        .await
                }
                Command::Stop { key, reason } => self.stop(key, reason).await,
                Command::Resize {
                    key,
                    budget,
                    reason,
                } => {
                    let Some(slot) = self.slots.get(&key) else {
                        continue;
                    };
                    match slot.instance.try_lock() {
                        Ok(mut g) => {
                            if let Some(live) = g.as_mut() {
                                if let Err(e) = live.inst.resize(budget) {
                                    tracing::warn!(instance = %key, error = %e, "resize failed");
                                }
                            }
                        }
                        // A callback runs: the worker applies it next turn.
                        Err(_) => *lock(&slot.pending_resize) = Some(budget),
                    }
                    let dim = match reason.dimension {
                        Dimension::Memory => "memory MiB",
                        Dimension::Cpu => "cpu millicores",
                    };
                    tracing::info!(instance = %key, "resized {dim} {} -> {}: {}", reason.from, reason.to, reason.text);
                    slot.stats.event(format!(
                        "resized {dim} {} -> {}: {}",
                        reason.from, reason.to, reason.text
                    ));
                }
            }
        }
    }

    fn sync_router(&self) {
        self.inner
            .router
            .set_slots(self.slots.values().cloned().collect());
    }

    async fn start(
        &mut self,
        key: InstanceKey,
        generation: u64,
        sha256: String,
        budget: Budget,
        attempt: u32,
    ) {
        let Some(spec) = self.specs.get(&key).cloned() else {
            tracing::warn!(instance = %key, "start of an instance without a spec ignored");
            return;
        };
        let slot = match self.slots.get(&key) {
            Some(s) if s.generation == generation => s.clone(),
            _ => {
                let stats = self.inner.stats_for(&key);
                let counter = self
                    .inner
                    .metrics
                    .dropped
                    .get_or_create(&InstanceLabels {
                        tenant: key.tenant.clone(),
                        monitor: key.name.clone(),
                    })
                    .clone();
                let slot = Arc::new(Slot::new(
                    key.clone(),
                    generation,
                    spec.selector.clone(),
                    self.inner.cfg.queue_records,
                    stats,
                    counter,
                ));
                if let Some(old) = self.slots.insert(key.clone(), slot.clone()) {
                    retire(&old);
                }
                self.sync_router();
                slot
            }
        };
        let saved = lock(&slot.saved_state).take();
        let inner = self.inner.clone();
        let k = key.clone();
        let result = tokio::task::spawn_blocking(move || {
            let state = match saved {
                Some(s) => s,
                None => inner.store.load_state(&k).unwrap_or_else(|e| {
                    inner.metrics.corrupt_files.inc();
                    tracing::error!(instance = %k, error = %e, "persisted monitor state unusable; starting empty");
                    KvState::new()
                }),
            };
            let r = (|| {
                let bytes = inner
                    .store
                    .load_artifact(&sha256)
                    .map_err(StartFailure::store)?;
                let module = inner
                    .driver
                    .prepare(&sha256, &bytes)
                    .map_err(StartFailure::runtime)?;
                let cfg = InstanceConfig {
                    key: k,
                    params_json: spec.params,
                    budget,
                    state: state.clone(),
                    limits: inner.cfg.limits.clone(),
                };
                inner
                    .driver
                    .instantiate(&module, cfg)
                    .map_err(StartFailure::runtime)
            })();
            (r, state)
        })
        .await;
        let now = self.now_ms();
        match result {
            Ok((Ok(inst), state)) => {
                *lock(&slot.persisted) = Some(state);
                slot.memory_bytes
                    .store(inst.usage().memory_bytes, Ordering::Relaxed);
                *lock(&slot.instance) = Some(Live { inst });
                slot.stats.starts.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.starts.inc();
                let text = format!(
                    "started generation {generation} (attempt {attempt}) with {} MiB / {} millicores",
                    budget.memory_mib, budget.cpu_millicores
                );
                tracing::info!(instance = %key, "{text}");
                slot.stats.event(text);
                self.sched.handle_started(&key, generation, now);
                if slot.set_runnable(true) {
                    self.inner.executor.schedule([slot]);
                }
            }
            Ok((Err(f), state)) => {
                // Keep the state for the next attempt.
                *lock(&slot.saved_state) = Some(state);
                self.start_failed(&key, &slot, generation, f, now)
            }
            Err(e) => self.start_failed(
                &key,
                &slot,
                generation,
                StartFailure {
                    exit: ExitKind::Crashed(e.to_string()),
                    label: "start-failed",
                    text: format!("start task failed: {e}"),
                    corrupt_artifact: false,
                },
                now,
            ),
        }
    }

    fn start_failed(
        &mut self,
        key: &InstanceKey,
        slot: &Slot,
        generation: u64,
        f: StartFailure,
        now: u64,
    ) {
        if f.corrupt_artifact {
            self.inner.metrics.corrupt_files.inc();
            if let Some(spec) = self.specs.get(key) {
                let sha = &spec.artifact.sha256;
                let _ = self.inner.store.remove_artifact(sha);
                lock(&self.inner.missing).insert(sha.clone());
            }
        }
        self.inner.metrics.fault(f.label);
        slot.stats.faults.fetch_add(1, Ordering::Relaxed);
        let reason = format!("{}: {}", f.label, f.text);
        tracing::warn!(instance = %key, generation, %reason, "monitor instance failed to start");
        slot.stats.event(format!("start failed: {reason}"));
        *lock(&slot.stats.last_fault) = Some(reason);
        self.sched
            .handle_exited(key, generation, f.exit, now, &mut self.rng);
    }

    async fn stop(&mut self, key: InstanceKey, reason: StopReason) {
        let Some(slot) = self.slots.remove(&key) else {
            return;
        };
        self.sync_router();
        retire(&slot);
        let remove = matches!(reason, StopReason::Removed);
        let inner = self.inner.clone();
        let s = slot.clone();
        // Taking the sandbox waits for a running callback (bounded by its
        // deadline), so it happens off the async workers.
        let r = tokio::task::spawn_blocking(move || {
            let live = lock(&s.instance).take();
            let state = live
                .map(|l| l.inst.state())
                .or_else(|| lock(&s.saved_state).take());
            if remove {
                inner.store.remove_state(&s.key)
            } else if let Some(state) = state {
                inner.store.save_state(&s.key, &state)
            } else {
                Ok(())
            }
        })
        .await;
        match r {
            Ok(Err(e)) => tracing::error!(instance = %key, error = %e, "persisting monitor state"),
            Err(e) => tracing::error!(instance = %key, error = %e, "stop task failed"),
            Ok(Ok(())) => {}
        }
        let text = format!("stopped: {}", stop_text(&reason));
        tracing::info!(instance = %key, "{text}");
        slot.stats.event(text);
    }

    fn sample(&mut self) {
        let node = (self.sampler)(Instant::now());
        // From the counters the workers keep after every callback: a busy
        // instance (the one that matters most) is measured without waiting
        // for its callback to end.
        let per_core_s = self.inner.cfg.limits.fuel_per_core_ms.saturating_mul(1000);
        let at = Instant::now();
        let mut samples = Vec::with_capacity(self.slots.len());
        self.fuel_seen.retain(|k, _| self.slots.contains_key(k));
        for (k, s) in &self.slots {
            let fuel = s.fuel_total.load(Ordering::Relaxed);
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
                    memory_bytes: s.memory_bytes.load(Ordering::Relaxed),
                },
            ));
        }
        let now = self.now_ms();
        self.sched.handle_usage(now, &node_usage(&node), &samples);
        lock(&self.inner.snapshot).node = node;
    }

    /// Persists changed states (`all`: every instance's, for shutdown).
    async fn flush_states(&mut self, all: bool) {
        let mut writes: Vec<(Arc<Slot>, KvState)> = Vec::new();
        for s in self.slots.values() {
            if !all && !s.dirty.swap(false, Ordering::Relaxed) {
                continue;
            }
            let state = match s.instance.try_lock() {
                Ok(g) => match g.as_ref() {
                    Some(live) => Some(live.inst.state()),
                    None => lock(&s.saved_state).clone(),
                },
                Err(_) if all => lock(&s.instance).as_ref().map(|l| l.inst.state()),
                Err(_) => {
                    s.dirty.store(true, Ordering::Relaxed);
                    None
                }
            };
            let Some(state) = state else { continue };
            if lock(&s.persisted).as_ref() != Some(&state) {
                writes.push((s.clone(), state));
            }
        }
        if writes.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let r = tokio::task::spawn_blocking(move || {
            for (s, state) in writes {
                match inner.store.save_state(&s.key, &state) {
                    Ok(()) => *lock(&s.persisted) = Some(state),
                    Err(e) => {
                        s.dirty.store(true, Ordering::Relaxed);
                        tracing::error!(instance = %s.key, error = %e, "persisting monitor state");
                    }
                }
            }
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "state flush task failed");
        }
    }

    fn publish(&self) {
        {
            let mut snap = lock(&self.inner.snapshot);
            snap.reports = self.sched.health();
            let running = snap
                .reports
                .iter()
                .filter(|r| r.health == crate::sched::Health::Running)
                .count();
            self.inner.metrics.running.set(running as i64);
            snap.reserved = self.sched.reserved();
            snap.reconciled_version = self.reconciled;
            snap.waiting = self.waiting.clone();
        }
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Shutdown: process what is queued (bounded), stop routing and the
    /// workers, persist every state.
    async fn drain(mut self, reply: Option<oneshot::Sender<()>>) {
        let inner = self.inner.clone();
        let timeout = Duration::from_millis(inner.cfg.drain_timeout_ms);
        let idle = tokio::task::spawn_blocking(move || {
            let idle = inner.executor.wait_idle(timeout);
            inner.router.set_slots(Vec::new());
            inner.executor.stop();
            idle
        })
        .await
        .unwrap_or(false);
        if !idle {
            tracing::warn!(edge = %self.inner.edge, "monitor queues not drained within the drain timeout");
        }
        self.flush_states(true).await;
        for s in self.slots.values() {
            let left = s.close();
            if left > 0 {
                s.count_dropped(left as u64, "shutting down");
            }
        }
        self.publish();
        if let Some(tx) = reply {
            let _ = tx.send(());
        }
    }
}

/// A slot leaving the router: its queued records are discarded and counted.
fn retire(slot: &Slot) {
    let left = slot.close();
    if left > 0 {
        slot.count_dropped(left as u64, "instance stopped");
    }
}
