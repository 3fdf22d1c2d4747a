//! How the driver carries out a shard hand-over (the procedure of
//! [`crate::workload::handover`]) whenever a sharded monitor's set of
//! instances on this edge changes.
//!
//! Besides `start` and `stop`, this is the one place the driver locks a
//! sandbox cell, and only while the slot is paused: the worker takes
//! records under that lock, so holding it with no record left before the
//! pause point means every record queued before the switch has been
//! processed. The instances involved then restart from their new kv state
//! (`refresh`), so no guest keeps a cached copy of what moved.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_sched::scale::ShardKey;

use super::WorkloadDriver;
use crate::workload::handover::{moved_to, plan, Moved, Plan};
use crate::workload::model::InstanceKey;
use crate::workload::router::Retired;
use crate::workload::sandbox::KvState;
use crate::workload::slot::{lock, Slot};

/// A sharded monitor on this edge: (tenant, name).
pub(super) type MonitorId = (String, String);

/// How long a hand-over waits for ingest to leave the old table and for a
/// loser to work through its queue. Both are short (a routing call; at
/// most `queue-records` records, each callback bounded by its deadline);
/// past this the state moves anyway and the log says so.
const WAIT: Duration = Duration::from_secs(10);

/// One monitor's change, as the blocking half executes it.
struct Change {
    monitor: MonitorId,
    shard: ShardKey,
    after: Arc<[u32]>,
    plan: Plan,
    /// Loser slot → its instance (kept or leaving), when it has one here.
    losers: Vec<(u32, Arc<Slot>)>,
}

/// What the blocking half found, per change.
struct Taken {
    monitor: MonitorId,
    moved: Moved,
    /// Kept losers' states after the take (to persist).
    remaining: Vec<(InstanceKey, KvState)>,
    /// Losers without a live sandbox (their state is the driver's).
    cold: Vec<InstanceKey>,
    late: bool,
}

/// Each sharded monitor's local slots, as `slots` has them.
pub(super) fn local_shards(
    slots: &HashMap<InstanceKey, Arc<Slot>>,
) -> HashMap<MonitorId, (ShardKey, Vec<u32>)> {
    let mut out: HashMap<MonitorId, (ShardKey, Vec<u32>)> = HashMap::new();
    for s in slots.values() {
        if let (Some(key), Some(slot)) = (s.shard, s.key.shard) {
            let e = out
                .entry((s.key.tenant.clone(), s.key.name.clone()))
                .or_insert((key, Vec::new()));
            e.1.push(slot);
        }
    }
    for v in out.values_mut() {
        v.1.sort_unstable();
    }
    out
}

/// Waits until `f` holds or [`WAIT`] passed; whether it held.
fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Takes the moved entries out of a loser once it processed every record
/// queued before its pause point (a kept loser) or every record (a leaving
/// one, which gets no more). `None` when it has no live sandbox.
fn take_from(
    slot: &Slot,
    from: u32,
    after: &[u32],
    shard: ShardKey,
) -> (Option<(KvState, KvState)>, bool) {
    let mut late = false;
    let mut got = None;
    let done = wait_until(|| {
        let mut cell = lock(&slot.sandbox);
        let Some(sb) = cell.as_mut() else {
            return true;
        };
        if slot.before_hold() > 0 && slot.is_runnable() {
            return false;
        }
        let taken = sb
            .inst
            .take_state(&|k| moved_to(k, from, after, shard).is_some());
        got = Some((taken, sb.inst.state()));
        true
    });
    if !done {
        late = true;
        // Moved anyway: a stuck loser must not stall the driver for ever.
        if let Some(sb) = lock(&slot.sandbox).as_mut() {
            let taken = sb
                .inst
                .take_state(&|k| moved_to(k, from, after, shard).is_some());
            got = Some((taken, sb.inst.state()));
        }
    }
    (got, late)
}

impl WorkloadDriver {
    /// Publishes the routing table for the current slots, first handing
    /// over device state for every sharded monitor whose local slots
    /// changed. `leaving` is an instance just removed from `slots` whose
    /// sandbox is still in its cell (a stop), so its state can move.
    pub(super) async fn publish_slots(&mut self, leaving: Option<Arc<Slot>>) {
        let now = local_shards(&self.slots);
        let mut changes = Vec::new();
        let mut monitors: Vec<&MonitorId> = self.shard_sets.keys().chain(now.keys()).collect();
        monitors.sort();
        monitors.dedup();
        for m in monitors {
            let before = self.shard_sets.get(m).map_or(&[][..], |v| &v.1[..]);
            let (shard, after) = match (now.get(m), self.shard_sets.get(m)) {
                (Some((k, a)), _) => (*k, a.clone()),
                (None, Some((k, _))) => (*k, Vec::new()),
                (None, None) => continue,
            };
            let Some(plan) = plan(before, &after) else {
                continue;
            };
            let losers = plan
                .losers
                .iter()
                .filter_map(|&s| {
                    let key = InstanceKey::sharded(&m.0, &m.1, s);
                    let slot = self
                        .slots
                        .get(&key)
                        .cloned()
                        .or_else(|| leaving.clone().filter(|l| l.key == key))?;
                    Some((s, slot))
                })
                .collect();
            changes.push(Change {
                monitor: m.clone(),
                shard,
                after: after.into(),
                plan,
                losers,
            });
        }
        self.shard_sets = now;
        if changes.is_empty() {
            self.publish_router();
            return;
        }
        // 1. Gainers hold what the new table sends them until their state
        //    has arrived.
        let gainers: Vec<Arc<Slot>> = changes
            .iter()
            .flat_map(|c| {
                c.plan
                    .gainers
                    .iter()
                    .map(move |&s| InstanceKey::sharded(&c.monitor.0, &c.monitor.1, s))
            })
            .filter_map(|k| self.slots.get(&k).cloned())
            .collect();
        for g in &gainers {
            g.pause();
        }
        // 2. The switch.
        let retired: Retired = self.router.replace(self.slots.values().cloned().collect());
        let leaving_key = leaving.as_ref().map(|l| l.key.clone());
        let jobs: Vec<_> = changes
            .into_iter()
            .map(|c| (c.monitor, c.shard, c.after, c.losers))
            .collect();
        // 3. Losers finish what they had, then give up the moved state.
        let r = tokio::task::spawn_blocking(move || {
            let quiet = wait_until(|| !retired.in_use());
            let mut out = Vec::new();
            for (monitor, shard, after, losers) in jobs {
                // Pause kept losers only now: every record routed with the
                // old table is queued, so the pause point is after all of
                // a moved device's old-owner records.
                for (_, s) in &losers {
                    if Some(&s.key) != leaving_key.as_ref() {
                        s.pause();
                    }
                }
                let mut t = Taken {
                    monitor,
                    moved: Moved::default(),
                    remaining: Vec::new(),
                    cold: Vec::new(),
                    late: !quiet,
                };
                for (from, s) in &losers {
                    let (got, late) = take_from(s, *from, &after, shard);
                    t.late |= late;
                    match got {
                        Some((taken, rest)) => {
                            t.moved.merge(Moved::split(taken, *from, &after, shard));
                            if Some(&s.key) != leaving_key.as_ref() {
                                t.remaining.push((s.key.clone(), rest));
                            }
                        }
                        None => t.cold.push(s.key.clone()),
                    }
                }
                out.push((t, losers, shard, after));
            }
            out
        })
        .await;
        let done = match r {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "shard hand-over task failed; instances resume without it");
                Vec::new()
            }
        };
        for (mut t, losers, shard, after) in done {
            // A loser without a sandbox (starting, in backoff): its state
            // is what the driver keeps for its restart.
            for key in std::mem::take(&mut t.cold) {
                let from = key.shard.unwrap_or(0);
                let mut state = match self.saved.remove(&key) {
                    Some(s) => s,
                    None => self.store.load_state(&key).unwrap_or_default(),
                };
                let taken: KvState;
                (taken, state) = std::mem::take(&mut state)
                    .into_iter()
                    .partition(|(k, _)| moved_to(k, from, &after, shard).is_some());
                t.moved.merge(Moved::split(taken, from, &after, shard));
                if let Err(e) = self.store.save_state(&key, &state) {
                    tracing::error!(instance = %key, error = %e, "persisting monitor state after a hand-over");
                }
                self.persisted.insert(key.clone(), state.clone());
                self.saved.insert(key, state);
            }
            self.deliver_moved(&t.monitor, t.moved.to.clone()).await;
            // Gainers are persisted (above): now the losers' rest, so a
            // crash never leaves a moved key only with its old owner.
            for (key, state) in t.remaining {
                if let Err(e) = self.store.save_state(&key, &state) {
                    tracing::error!(instance = %key, error = %e, "persisting monitor state after a hand-over");
                }
                self.persisted.insert(key, state);
            }
            // Fresh sandboxes from the new states before anything runs (see
            // `refresh`): kept losers here, gainers below.
            let kept: Vec<Arc<Slot>> = losers
                .iter()
                .filter(|(_, s)| self.slots.get(&s.key).is_some_and(|k| Arc::ptr_eq(k, s)))
                .map(|(_, s)| s.clone())
                .collect();
            self.refresh(&kept).await;
            for s in &kept {
                s.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                if s.resume() {
                    self.executor.schedule([s.clone()]);
                }
            }
            self.metrics.shard_handovers.inc();
            self.metrics.shard_devices_moved.inc_by(t.moved.devices);
            self.metrics.shard_keys_moved.inc_by(t.moved.keys);
            let text = format!(
                "shard hand-over to local slots {after:?}: {} devices, {} keys moved",
                t.moved.devices, t.moved.keys
            );
            if t.late {
                tracing::warn!(monitor = %format!("{}/{}", t.monitor.0, t.monitor.1), "{text} (an instance did not drain in time; records of moved devices may be handled out of order)");
            } else {
                tracing::info!(monitor = %format!("{}/{}", t.monitor.0, t.monitor.1), "{text}");
            }
        }
        // 5. Gainers run again, now holding their devices' state.
        self.refresh(&gainers).await;
        for g in gainers {
            if g.resume() {
                self.executor.schedule([g]);
            }
        }
    }

    /// `state` of sharded instance `key` without the device state of
    /// devices another local instance owns now. A fault report can still be
    /// on its way while a hand-over takes a dead instance's state from the
    /// store; its state must not bring the moved devices back to their old
    /// owner (their new owner has the stored copy and runs on from it).
    pub(super) fn own_devices_only(&self, key: &InstanceKey, state: KvState) -> KvState {
        let (Some(slot), Some((shard, local))) = (
            key.shard,
            self.shard_sets.get(&(key.tenant.clone(), key.name.clone())),
        ) else {
            return state;
        };
        let before = state.len();
        let kept: KvState = state
            .into_iter()
            .filter(|(k, _)| moved_to(k, slot, local, *shard).is_none())
            .collect();
        if kept.len() < before {
            tracing::warn!(instance = %key, dropped = before - kept.len(), "a faulted instance's state of devices handed over meanwhile was dropped");
        }
        kept
    }

    /// Replaces each live sandbox of `slots` (paused, so no record is being
    /// processed) by a new instance started from its current kv state. A
    /// guest may cache its kv in memory (the SDK's `SeriesStore` does, per
    /// series): after keys were taken out or imported underneath it, only
    /// a fresh instance is sure not to work from a stale copy of a device
    /// it lost, or to ignore the state of one it gained.
    async fn refresh(&mut self, slots: &[Arc<Slot>]) {
        for slot in slots {
            let Some(r) = self.core.instance(&slot.key) else {
                continue;
            };
            let (Some(module), Some(launch)) = (
                self.modules.get(&r.module.0).cloned(),
                self.launches.get(&slot.key).cloned(),
            ) else {
                continue;
            };
            self.next_incarnation += 1;
            let incarnation = self.next_incarnation;
            let (sandbox, limits, budget, slot2) = (
                self.sandbox.clone(),
                self.cfg.limits.clone(),
                r.budget,
                slot.clone(),
            );
            let res = tokio::task::spawn_blocking(move || {
                let mut cell = lock(&slot2.sandbox);
                let Some(old) = cell.as_ref() else {
                    return Ok(false);
                };
                let cfg = crate::workload::sandbox::InstanceConfig {
                    key: slot2.key.clone(),
                    params_json: launch.params_json,
                    budget,
                    state: old.inst.state(),
                    limits,
                };
                let inst = sandbox.instantiate(&module, cfg)?;
                slot2.memory_bytes.store(
                    inst.usage().memory_bytes,
                    std::sync::atomic::Ordering::Relaxed,
                );
                *cell = Some(crate::workload::slot::Sandbox { inst, incarnation });
                Ok(true)
            })
            .await;
            match res {
                Ok(Ok(true)) => {
                    self.live.insert(slot.key.clone(), incarnation);
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    // The old sandbox keeps running: its kv is right, only a
                    // guest-side cache may be stale.
                    let e: crate::workload::sandbox::RuntimeError = e;
                    tracing::warn!(instance = %slot.key, error = %e, "restarting an instance after a shard hand-over failed; it keeps running");
                }
                Err(e) => {
                    tracing::error!(instance = %slot.key, error = %e, "hand-over restart task failed")
                }
            }
        }
    }

    /// Imports moved entries into their new owners and persists them: a
    /// live instance takes them into its sandbox (it is paused, so it has
    /// processed nothing of its new devices yet); one not started yet
    /// starts from them (`handed`).
    async fn deliver_moved(&mut self, monitor: &MonitorId, to: BTreeMap<u32, KvState>) {
        for (slot_no, entries) in to {
            let key = InstanceKey::sharded(&monitor.0, &monitor.1, slot_no);
            let slot = self.slots.get(&key).cloned();
            let (store, k) = (self.store.clone(), key.clone());
            let r = tokio::task::spawn_blocking(move || {
                let Some(slot) = slot else {
                    return Err(entries);
                };
                let mut cell = lock(&slot.sandbox);
                let Some(sb) = cell.as_mut() else {
                    return Err(entries);
                };
                let dropped = sb.inst.import_state(entries);
                let state = sb.inst.state();
                drop(cell);
                slot.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = store.save_state(&k, &state) {
                    tracing::error!(instance = %k, error = %e, "persisting monitor state after a hand-over");
                }
                Ok((state, dropped))
            })
            .await;
            match r {
                Ok(Ok((state, dropped))) => {
                    if dropped > 0 {
                        tracing::warn!(instance = %key, dropped, "handed-over kv entries beyond the kv quota were dropped");
                    }
                    self.persisted.insert(key, state);
                }
                Ok(Err(entries)) => {
                    // Not started (or in backoff): merged into what it starts
                    // from, and persisted now so a crash keeps them.
                    let mut state = match self.saved.remove(&key) {
                        Some(s) => s,
                        None => self.store.load_state(&key).unwrap_or_default(),
                    };
                    state.extend(entries);
                    if let Err(e) = self.store.save_state(&key, &state) {
                        tracing::error!(instance = %key, error = %e, "persisting monitor state after a hand-over");
                    }
                    self.saved.insert(key, state);
                }
                Err(e) => {
                    tracing::error!(instance = %key, error = %e, "hand-over import task failed")
                }
            }
        }
    }
}
