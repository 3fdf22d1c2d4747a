//! How the driver carries out each [`Command`] of the lifecycle core.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ModuleDone, WorkloadDriver};
use crate::workload::checkpoint::{seed_decision, SeedDecision};
use crate::workload::command::{Command, Event, ModuleFailure, StopReason};
use crate::workload::model::{Budget, ExitKind, Fence, InstanceKey};
use crate::workload::resize::{Dimension, ResizeReason};
use crate::workload::sandbox::{Cached, InstanceConfig, KvState, RuntimeError};
use crate::workload::slot::{lock, Control, Sandbox, Slot};
use crate::workload::store::{StateOrigin, StoreError};
use strata_protocol::monitoring::StateCheckpoint;

/// Why a start failed, with the core's view and a counter label.
struct StartFailure {
    exit: ExitKind,
    label: &'static str,
    text: String,
}

impl StartFailure {
    fn runtime(e: RuntimeError) -> Self {
        let text = e.to_string();
        match e {
            RuntimeError::Fault { fault, .. } => StartFailure {
                exit: fault.exit_kind(),
                label: fault.label(),
                text,
            },
            _ => StartFailure {
                exit: ExitKind::Crashed(text.clone()),
                label: "start-failed",
                text,
            },
        }
    }

    fn other(text: String) -> Self {
        StartFailure {
            exit: ExitKind::Crashed(text.clone()),
            label: "start-failed",
            text,
        }
    }
}

impl WorkloadDriver {
    /// Carries out every pending command, in order (answers to a command
    /// may add more; they run in the same pass).
    pub(super) async fn execute_all(&mut self) {
        while let Some(cmd) = self.core.poll_command() {
            match cmd {
                Command::FetchModule { sha256 } => self.fetch_module(sha256),
                Command::CompileModule { sha256 } => self.compile_module(sha256),
                Command::DropModule { sha256 } => {
                    self.modules.remove(&sha256);
                }
                Command::Start {
                    key,
                    generation,
                    artifact_sha256,
                    budget,
                    attempt,
                    fence,
                } => {
                    self.start(key, generation, &artifact_sha256, budget, attempt, fence)
                        .await
                }
                Command::Stop { key, reason } => self.stop(key, reason).await,
                Command::Resize {
                    key,
                    budget,
                    reason,
                } => self.resize(&key, budget, &reason),
                Command::PersistState { key } => self.checkpoint(&key),
                Command::Report {
                    key,
                    generation,
                    event,
                } => self.report(&key, generation, event),
            }
        }
    }

    /// Verifies the module's file (or knows it verified already).
    fn fetch_module(&mut self, sha256: String) {
        if self.verified.contains(&sha256) {
            self.core.handle_module_fetched(&sha256);
            return;
        }
        if let Some(reason) = self.boot_missing.remove(&sha256) {
            // Boot just looked: no need to read it again.
            let now = self.now_ms();
            self.core
                .handle_module_failed(&sha256, ModuleFailure::Missing { reason }, now);
            return;
        }
        let (store, tx, jobs) = (
            self.store.clone(),
            self.module_tx.clone(),
            self.module_jobs.clone(),
        );
        tokio::spawn(async move {
            let _permit = jobs.acquire_owned().await;
            let sha = sha256.clone();
            let r = tokio::task::spawn_blocking(move || {
                match store.load_artifact(&sha) {
                    Ok(_) => (Ok(()), false),
                    Err(e) => {
                        let corrupt = matches!(e, StoreError::Corrupt { .. });
                        if corrupt {
                            // Deleted, so the region sends it again.
                            let _ = store.remove_artifact(&sha);
                        }
                        let reason = e.to_string();
                        (Err(ModuleFailure::Missing { reason }), corrupt)
                    }
                }
            })
            .await;
            let (result, corrupt) = r.unwrap_or_else(|e| {
                let reason = format!("fetch task failed: {e}");
                (Err(ModuleFailure::Missing { reason }), false)
            });
            let _ = tx.send(ModuleDone::Fetched {
                sha256,
                result,
                corrupt,
            });
        });
    }

    /// Loads the module's compiled form from the cache, or compiles it.
    fn compile_module(&mut self, sha256: String) {
        let (store, sandbox, tx, jobs) = (
            self.store.clone(),
            self.sandbox.clone(),
            self.module_tx.clone(),
            self.module_jobs.clone(),
        );
        tokio::spawn(async move {
            let _permit = jobs.acquire_owned().await;
            let sha = sha256.clone();
            let r = tokio::task::spawn_blocking(move || {
                let discarded = match sandbox.prepare_cached(&sha) {
                    Cached::Hit { module, from_disk } => {
                        let how = if from_disk { "disk" } else { "memory" };
                        return (Ok((module, how)), false);
                    }
                    Cached::Miss => false,
                    Cached::Discarded { reason } => {
                        tracing::warn!(module = %sha, %reason, "compiled-module cache file discarded; compiling again");
                        true
                    }
                };
                let bytes = match store.load_artifact(&sha) {
                    Ok(b) => b,
                    Err(e) => {
                        let corrupt = matches!(e, StoreError::Corrupt { .. });
                        if corrupt {
                            let _ = store.remove_artifact(&sha);
                        }
                        let reason = e.to_string();
                        return (Err(ModuleFailure::Missing { reason }), corrupt);
                    }
                };
                match sandbox.prepare(&sha, &bytes) {
                    Ok(m) => (Ok((m, if discarded { "discarded" } else { "compiled" })), false),
                    Err(e) => (
                        Err(ModuleFailure::Invalid {
                            reason: e.to_string(),
                        }),
                        false,
                    ),
                }
            })
            .await;
            let (result, corrupt) = r.unwrap_or_else(|e| {
                let reason = format!("compile task failed: {e}");
                (Err(ModuleFailure::Invalid { reason }), false)
            });
            let _ = tx.send(ModuleDone::Compiled {
                sha256,
                result,
                corrupt,
            });
        });
    }

    /// The slot for this start: the current one when it runs the same
    /// generation and fence (its queue survives restarts), else a new one.
    fn slot_for(&mut self, key: &InstanceKey, generation: u64, fence: &Fence) -> Option<Arc<Slot>> {
        if let Some(s) = self.slots.get(key) {
            if s.generation == generation && &s.fence == fence {
                return Some(s.clone());
            }
        }
        let launch = self.launches.get(key)?.clone();
        let stats = self.stats_for(key);
        let counter = self
            .metrics
            .dropped
            .get_or_create(&crate::workload::metrics::InstanceLabels {
                tenant: key.tenant.clone(),
                monitor: key.name.clone(),
            })
            .clone();
        let slot = Arc::new(
            Slot::new(
                key.clone(),
                generation,
                launch.selector,
                fence.clone(),
                self.cfg.queue_records,
                stats,
                counter,
            )
            .with_shard(launch.shard, self.metrics.handover_dropped.clone()),
        );
        if let Some(old) = self.slots.insert(key.clone(), slot.clone()) {
            retire(&old);
        }
        // Published by the caller, which may have to hand devices over.
        self.table_stale = true;
        Some(slot)
    }

    async fn start(
        &mut self,
        key: InstanceKey,
        generation: u64,
        sha256: &str,
        budget: Budget,
        attempt: u32,
        fence: Fence,
    ) {
        let now = self.now_ms();
        // Whose state a dead sandbox of this key left (for the seed check).
        let saved_origin = self
            .slots
            .get(&key)
            .map(|s| WorkloadDriver::origin(&s.fence));
        let slot = self.slot_for(&key, generation, &fence);
        if std::mem::take(&mut self.table_stale) {
            // Before the state is loaded: a new instance of a sharded
            // monitor starts from the device state handed to it.
            self.publish_slots(None).await;
        }
        let (Some(slot), Some(module), Some(launch)) = (
            slot,
            self.modules.get(sha256).cloned(),
            self.launches.get(&key).cloned(),
        ) else {
            // The core starts only desired instances of ready modules.
            let f = StartFailure::other(format!(
                "no launch details or prepared module {sha256} (internal)"
            ));
            return self.start_failed(&key, generation, f, now);
        };
        let saved = self.saved.remove(&key);
        // The region's checkpoint, when it was handed to this allocation.
        let seed = self
            .seeds
            .get(&key)
            .filter(|(alloc, _)| *alloc == fence.allocation)
            .map(|(_, c)| c.clone());
        let (store, sandbox, limits, metrics) = (
            self.store.clone(),
            self.sandbox.clone(),
            self.cfg.limits.clone(),
            self.metrics.clone(),
        );
        let k = key.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (local, origin) = match saved {
                Some(s) => (s, saved_origin),
                None => store.load_state_with_origin(&k).unwrap_or_else(|e| {
                    metrics.corrupt_files.inc();
                    tracing::error!(instance = %k, error = %e, "persisted monitor state unusable; starting empty");
                    (KvState::new(), None)
                }),
            };
            let state = match seed {
                Some(c) => seeded_state(&store, &metrics, &k, local, origin, c),
                None => local,
            };
            let cfg = InstanceConfig {
                key: k,
                params_json: launch.params_json,
                budget,
                state: state.clone(),
                limits,
            };
            (sandbox.instantiate(&module, cfg), state)
        })
        .await;
        let now = self.now_ms();
        match result {
            Ok((Ok(inst), state)) => {
                // Considered once: a restart keeps what the instance made.
                self.seeds.remove(&key);
                self.persisted.entry(key.clone()).or_insert(state);
                slot.memory_bytes
                    .store(inst.usage().memory_bytes, Ordering::Relaxed);
                self.next_incarnation += 1;
                let incarnation = self.next_incarnation;
                *lock(&slot.sandbox) = Some(Sandbox { inst, incarnation });
                self.live.insert(key.clone(), incarnation);
                slot.stats.starts.fetch_add(1, Ordering::Relaxed);
                self.metrics.starts.inc();
                let text = format!(
                    "started generation {generation} (attempt {attempt}) with {} MiB / {} millicores",
                    budget.memory_mib, budget.cpu_millicores
                );
                tracing::info!(instance = %key, %fence, "{text}");
                self.notes.entry(key.clone()).or_default().last_event = Some(text);
                self.core.handle_started(&key, generation, now);
                if slot.set_runnable(true) {
                    self.executor.schedule([slot]);
                }
            }
            Ok((Err(e), state)) => {
                // Keep the state for the next attempt.
                self.saved.insert(key.clone(), state);
                self.start_failed(&key, generation, StartFailure::runtime(e), now)
            }
            Err(e) => self.start_failed(
                &key,
                generation,
                StartFailure::other(format!("start task failed: {e}")),
                now,
            ),
        }
    }

    fn start_failed(&mut self, key: &InstanceKey, generation: u64, f: StartFailure, now: u64) {
        self.count_fault(key, f.label);
        let reason = format!("{}: {}", f.label, f.text);
        tracing::warn!(instance = %key, generation, %reason, "monitor instance failed to start");
        let n = self.notes.entry(key.clone()).or_default();
        n.last_event = Some(format!("start failed: {reason}"));
        n.last_fault = Some(reason);
        self.core
            .handle_exited(key, generation, f.exit, now, &mut self.rng);
    }

    async fn stop(&mut self, key: InstanceKey, reason: StopReason) {
        self.metrics.stop(reason.label());
        let remove = matches!(reason, StopReason::Removed);
        let slot = self.slots.remove(&key);
        self.live.remove(&key);
        if let Some(s) = &slot {
            if matches!(reason, StopReason::LeaseExpired { .. }) {
                // Before the sandbox is taken: nothing it still emits
                // reaches the spool.
                s.fence_off();
            }
            // A sharded instance first works through its queue and hands
            // its devices' state to the instances that take them over.
            self.publish_slots(Some(s.clone())).await;
            retire(s);
        }
        let saved = self.saved.remove(&key);
        let fence = slot.as_ref().map(|s| s.fence.clone());
        let origin = fence.as_ref().map(WorkloadDriver::origin);
        let (store, k) = (self.store.clone(), key.clone());
        // Taking the sandbox waits for a running callback (bounded by its
        // deadline), so it happens off the async workers.
        let r = tokio::task::spawn_blocking(move || {
            let live = slot.as_ref().and_then(|s| lock(&s.sandbox).take());
            let state = live.map(|l| l.inst.state()).or(saved);
            if remove {
                store.remove_state(&k).map(|()| None)
            } else if let Some(state) = state {
                store
                    .save_state_from(&k, &state, origin.as_ref())
                    .map(|()| Some(state))
            } else {
                Ok(None)
            }
        })
        .await;
        // The final checkpoint of a clean stop. Not for a removed instance
        // (its allocation is gone or replaced: the region would refuse it)
        // nor a fenced-off one.
        match (&r, &fence) {
            (Ok(Ok(Some(state))), Some(fence))
                if !matches!(reason, StopReason::LeaseExpired { .. }) =>
            {
                let (now, taken) = (self.now_ms(), super::wall_ms());
                self.checkpoints
                    .handle_stop(&key, fence, super::encode_kv(state), now, taken);
            }
            _ => self.checkpoints.handle_forget(&key),
        }
        self.spool_checkpoints();
        match r {
            Ok(Ok(Some(state))) => {
                self.persisted.insert(key.clone(), state);
            }
            Ok(Ok(None)) => {
                self.persisted.remove(&key);
            }
            Ok(Err(e)) => tracing::error!(instance = %key, error = %e, "persisting monitor state"),
            Err(e) => tracing::error!(instance = %key, error = %e, "stop task failed"),
        }
        let text = format!("stopped: {reason}");
        tracing::info!(instance = %key, "{text}");
        self.notes.entry(key.clone()).or_default().last_event = Some(text);
        if let Some(r) = self.core.instance(&key) {
            self.core.handle_stopped(&key, r.generation);
        }
    }

    fn resize(&mut self, key: &InstanceKey, budget: Budget, reason: &ResizeReason) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if slot.push_control(Control::Resize(budget)) {
            self.executor.schedule([slot.clone()]);
        }
        let dim = match reason.dimension {
            Dimension::Memory => "memory MiB",
            Dimension::Cpu => "cpu millicores",
        };
        let text = format!(
            "resized {dim} {} -> {}: {}",
            reason.from, reason.to, reason.text
        );
        tracing::info!(instance = %key, "{text}");
        self.notes.entry(key.clone()).or_default().last_event = Some(text);
    }

    /// Asks the worker for the state of a sandbox that changed since the
    /// last checkpoint; it arrives as a `WorkerReport::Checkpoint`.
    fn checkpoint(&mut self, key: &InstanceKey) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if slot.dirty.load(Ordering::Relaxed) && slot.push_control(Control::Checkpoint) {
            self.executor.schedule([slot.clone()]);
        }
    }

    fn report(&mut self, key: &InstanceKey, generation: u64, event: Event) {
        if matches!(event, Event::LeaseExpired { .. }) {
            self.metrics.lease_expiries.inc();
        }
        let text = event.to_string();
        tracing::warn!(instance = %key, generation, "{text}");
        self.notes.entry(key.clone()).or_default().last_event = Some(text);
    }
}

/// The state a new instance starts from when the region handed its
/// allocation a checkpoint: the checkpoint's (written through, with its
/// origin) unless the local state is newer (`checkpoint::seed_decision`).
fn seeded_state(
    store: &crate::workload::store::WorkloadStore,
    metrics: &crate::workload::metrics::WorkloadMetrics,
    key: &InstanceKey,
    local: KvState,
    origin: Option<StateOrigin>,
    c: StateCheckpoint,
) -> KvState {
    if seed_decision(local.is_empty(), origin.as_ref(), &c) == SeedDecision::KeepLocal {
        metrics.checkpoint_seed("kept-local");
        tracing::info!(instance = %key, checkpoint = %c.fence.allocation, "local monitor state is newer than the region's checkpoint; kept");
        return local;
    }
    match super::decode_kv(&c.state) {
        Ok(state) => {
            let o = StateOrigin {
                allocation: c.fence.allocation.clone(),
                token: c.fence.token,
                taken_ms: c.taken_ms,
            };
            if let Err(e) = store.save_state_from(key, &state, Some(&o)) {
                tracing::error!(instance = %key, error = %e, "persisting the seeded monitor state");
            }
            metrics.checkpoint_seed("seeded");
            tracing::info!(instance = %key, from = %c.fence.allocation, token = c.fence.token, taken_ms = c.taken_ms, keys = state.len(), "monitor state seeded from the region's checkpoint");
            state
        }
        Err(reason) => {
            metrics.checkpoint_seed("unusable");
            tracing::error!(instance = %key, %reason, "the region's checkpoint does not decode; starting from local state");
            local
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
