//! One admitted instance as the router and the workers see it: its selector,
//! its bounded record queue, the sandbox (absent while it restarts) and its
//! counters.
//!
//! Locks, in the only order they are ever nested: `instance`, then `queue`.
//! The router takes only `queue`, briefly, so ingest never waits for a
//! callback. A slot is on the executor's run queue at most once
//! (`scheduled`), which is what makes a worker the single owner of the
//! sandbox for the length of a callback.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use strata_protocol::workload::DeviceSelector;
use strata_protocol::TelemetryRecord;

use crate::runtime::{KvState, SandboxInstance};
use crate::sched::{Budget, InstanceKey};

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every critical section here is a few plain assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one instance key; they survive restarts of the instance and
/// are reported in heartbeats.
#[derive(Debug, Default)]
pub struct InstanceStats {
    /// Records handed to `on_batch`.
    pub records_in: AtomicU64,
    /// Records dropped because the queue was full (or discarded at stop).
    pub records_dropped: AtomicU64,
    /// Alerts raised.
    pub alerts: AtomicU64,
    /// Derived metrics emitted.
    pub metrics: AtomicU64,
    /// Successful instantiations in this process.
    pub starts: AtomicU64,
    /// Faults and failed starts.
    pub faults: AtomicU64,
    /// Last lifecycle event with its reason.
    pub last_event: Mutex<Option<String>>,
    /// Last fault, reported while the instance runs again.
    pub last_fault: Mutex<Option<String>>,
}

impl InstanceStats {
    /// Records an event line.
    pub fn event(&self, text: String) {
        *lock(&self.last_event) = Some(text);
    }
}

#[derive(Debug, Default)]
struct SlotQueue {
    /// Shared with every other instance that selected the same record.
    records: VecDeque<Arc<TelemetryRecord>>,
    /// On the run queue or being run by a worker.
    scheduled: bool,
    /// Has a live sandbox (false while pending or in backoff).
    runnable: bool,
    /// Stopped: accepts nothing more.
    closed: bool,
}

/// The sandbox of a running instance.
#[derive(Debug)]
pub(crate) struct Live {
    pub inst: Box<dyn SandboxInstance>,
}

/// One admitted instance.
#[derive(Debug)]
pub(crate) struct Slot {
    pub key: InstanceKey,
    pub generation: u64,
    pub selector: DeviceSelector,
    pub stats: Arc<InstanceStats>,
    pub capacity: usize,
    pub dropped_counter: Counter,
    queue: Mutex<SlotQueue>,
    /// The sandbox; `None` while it is (re)starting.
    pub instance: Mutex<Option<Live>>,
    /// State of the last sandbox, kept across a fault for the restart.
    pub saved_state: Mutex<Option<KvState>>,
    /// State as last persisted, to skip writing an unchanged one.
    pub persisted: Mutex<Option<KvState>>,
    /// A callback succeeded since the last state flush.
    pub dirty: AtomicBool,
    /// A resize the driver could not apply because a callback was running.
    pub pending_resize: Mutex<Option<Budget>>,
    /// Last time a drop was logged, for rate limiting.
    last_drop_log: Mutex<Option<Instant>>,
    /// Fuel burnt by this slot's sandboxes so far (all incarnations),
    /// updated by the worker after each callback, so the sampler measures a
    /// busy instance without waiting for it.
    pub fuel_total: AtomicU64,
    /// The sandbox's memory (linear memory + kv state) after its last
    /// callback, bytes.
    pub memory_bytes: AtomicU64,
    /// Recent fuel per record (0 = not measured yet), to size batches so a
    /// callback stays well inside its fuel budget.
    fuel_per_record: AtomicU64,
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enqueued {
    pub accepted: usize,
    pub dropped: usize,
    /// The caller must put the slot on the run queue.
    pub wake: bool,
}

impl Slot {
    pub fn new(
        key: InstanceKey,
        generation: u64,
        selector: DeviceSelector,
        capacity: usize,
        stats: Arc<InstanceStats>,
        dropped_counter: Counter,
    ) -> Self {
        Slot {
            key,
            generation,
            selector,
            stats,
            capacity,
            dropped_counter,
            queue: Mutex::default(),
            instance: Mutex::new(None),
            saved_state: Mutex::new(None),
            persisted: Mutex::new(None),
            dirty: AtomicBool::new(false),
            pending_resize: Mutex::new(None),
            last_drop_log: Mutex::new(None),
            fuel_total: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            fuel_per_record: AtomicU64::new(0),
        }
    }

    /// Queues `records[i]` for every `i` in `picks`, up to the capacity;
    /// the rest are dropped and counted. Never blocks beyond the queue lock.
    pub fn enqueue(
        &self,
        picks: &[u32],
        record: &mut dyn FnMut(u32) -> Arc<TelemetryRecord>,
    ) -> Enqueued {
        let (accepted, wake) = {
            let mut q = lock(&self.queue);
            let room = if q.closed {
                0
            } else {
                self.capacity.saturating_sub(q.records.len())
            };
            let accepted = room.min(picks.len());
            q.records
                .extend(picks[..accepted].iter().map(|&i| record(i)));
            let wake = accepted > 0 && q.runnable && !q.scheduled;
            if wake {
                q.scheduled = true;
            }
            (accepted, wake)
        };
        let dropped = picks.len() - accepted;
        if dropped > 0 {
            self.count_dropped(dropped as u64, "queue full");
        }
        Enqueued {
            accepted,
            dropped,
            wake,
        }
    }

    /// Counts dropped records and logs at most every 10 s per instance.
    pub fn count_dropped(&self, n: u64, why: &str) {
        let total = self.stats.records_dropped.fetch_add(n, Ordering::Relaxed) + n;
        self.dropped_counter.inc_by(n);
        let now = Instant::now();
        let mut last = lock(&self.last_drop_log);
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            *last = Some(now);
            tracing::warn!(
                instance = %self.key,
                dropped = n,
                total_dropped = total,
                capacity = self.capacity,
                "monitor records dropped: {why} (the instance is too slow or not running)"
            );
        }
    }

    /// Takes up to `max` queued records for one callback.
    /// How many records the next callback may take: `max`, or fewer so the
    /// measured fuel per record times the batch stays within half of
    /// `fuel_budget`. Batching amortises the call, but one callback that
    /// runs out of fuel kills the instance; the headroom absorbs records
    /// that cost more than the recent average.
    pub fn batch_limit(&self, max: usize, fuel_budget: u64) -> usize {
        let per = self.fuel_per_record.load(Ordering::Relaxed);
        if per == 0 {
            // Unmeasured: start small, then grow from the measurement.
            return max.clamp(1, 64);
        }
        let fit = (fuel_budget / 2 / per).max(1);
        max.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
    }

    /// Records a callback's cost. Rises at once (a costlier input must not
    /// overrun the next batch), falls slowly.
    pub fn record_fuel(&self, records: usize, fuel: u64) {
        let now = (fuel / records.max(1) as u64).max(1);
        let old = self.fuel_per_record.load(Ordering::Relaxed);
        let next = if now >= old { now } else { (old * 7 + now) / 8 };
        self.fuel_per_record.store(next.max(1), Ordering::Relaxed);
    }

    pub fn take_batch(&self, max: usize) -> Vec<Arc<TelemetryRecord>> {
        let mut q = lock(&self.queue);
        let n = q.records.len().min(max);
        q.records.drain(..n).collect()
    }

    /// After a callback: whether the slot goes back on the run queue (it
    /// stays scheduled) or leaves it.
    pub fn finish_turn(&self) -> bool {
        let mut q = lock(&self.queue);
        let again = q.runnable && !q.closed && !q.records.is_empty();
        q.scheduled = again;
        again
    }

    /// Marks the sandbox present or gone. Returns whether the caller must
    /// put the slot on the run queue.
    pub fn set_runnable(&self, runnable: bool) -> bool {
        let mut q = lock(&self.queue);
        q.runnable = runnable;
        let wake = runnable && !q.closed && !q.scheduled && !q.records.is_empty();
        if wake {
            q.scheduled = true;
        }
        wake
    }

    /// Stops accepting records; returns how many were still queued (they
    /// are discarded).
    pub fn close(&self) -> usize {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.runnable = false;
        let n = q.records.len();
        q.records.clear();
        n
    }

    /// Records waiting.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        lock(&self.queue).records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot::new(
            InstanceKey::new("t", "m"),
            1,
            DeviceSelector {
                tenant: "t".into(),
                device_globs: vec!["*".into()],
                tags: Default::default(),
            },
            100,
            Arc::new(InstanceStats::default()),
            Counter::default(),
        )
    }

    #[test]
    fn batches_start_small_then_fit_half_the_fuel_budget() {
        let s = slot();
        assert_eq!(s.batch_limit(1000, 1_000_000), 64, "unmeasured");
        assert_eq!(s.batch_limit(10, 1_000_000), 10, "never above max");
        // 64 records cost 64 000 fuel: 1000 per record; half of 1 M fits 500.
        s.record_fuel(64, 64_000);
        assert_eq!(s.batch_limit(1000, 1_000_000), 500);
        assert_eq!(s.batch_limit(100, 1_000_000), 100);
        // A costlier batch takes effect at once...
        s.record_fuel(10, 50_000);
        assert_eq!(s.batch_limit(1000, 1_000_000), 100);
        // ...a cheaper one only slowly.
        s.record_fuel(100, 100_000);
        let after = s.batch_limit(1000, 1_000_000);
        assert!(after > 100 && after < 500, "{after}");
        // A budget too small for even one record still makes progress.
        assert_eq!(s.batch_limit(1000, 10), 1);
        // No fuel accounting (u64::MAX): the configured maximum.
        assert_eq!(s.batch_limit(1000, u64::MAX), 1000);
    }
}
