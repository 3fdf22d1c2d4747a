//! One started instance as ingest, the workers and the driver meet it: its
//! bounded record queue, its sandbox, its counters.
//!
//! Who owns what:
//! - `queue` (records, control requests, run-queue flags): ingest appends
//!   records, the worker running the slot takes them, the driver appends
//!   controls and closes it. One short lock, never held across a callback,
//!   so ingest never waits for a guest.
//! - `sandbox`: a hand-off cell, not shared state. The driver puts a sandbox
//!   in after a start and takes it out to stop it; in between, the worker
//!   whose turn it is owns it for the length of one callback. A slot is on
//!   the executor's run queue at most once (`scheduled`), so there is never
//!   more than one worker. The driver never touches a live sandbox: it asks
//!   through `Control` (resize, checkpoint), served between two callbacks.
//! - Counters are atomics, each with one writer: the worker (fuel, memory,
//!   records in, outputs), ingest (drops), the driver (`fenced`).
//!
//! - `hold` (in the queue): a shard hand-over pauses the slot at a point in
//!   its queue; records queued after it wait (and may overflow, counted)
//!   until the driver resumes the slot. Controls are still served.
//!
//! Lock order, the only nesting there is: `sandbox`, then `queue`. The
//! worker takes records under both, so whoever holds the sandbox cell
//! knows no taken record is still unprocessed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use strata_protocol::workload::DeviceSelector;
use strata_protocol::TelemetryRecord;
use strata_sched::scale::ShardKey;

use super::model::{Budget, Fence, InstanceKey};
use super::sandbox::SandboxInstance;

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every critical section here is a few plain assignments).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one instance key; they survive restarts of the instance and
/// are reported in heartbeats. Plain atomics, each written by one party.
#[derive(Debug, Default)]
pub struct InstanceStats {
    /// Records handed to `on_batch` (worker).
    pub records_in: AtomicU64,
    /// Records dropped because the queue was full, or discarded at stop
    /// (ingest, driver).
    pub records_dropped: AtomicU64,
    /// Alerts raised (worker).
    pub alerts: AtomicU64,
    /// Derived metrics emitted (worker).
    pub metrics: AtomicU64,
    /// Successful instantiations in this process (driver).
    pub starts: AtomicU64,
    /// Faults and failed starts (driver).
    pub faults: AtomicU64,
    /// Records waiting in the queue now, a gauge (ingest, worker, driver:
    /// whoever last changed the queue, under its lock).
    pub queue_depth: AtomicU64,
}

/// A request from the driver, served by the worker between two callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Change the sandbox's budget in place.
    Resize(Budget),
    /// Send the sandbox's key-value state to the driver.
    Checkpoint,
}

#[derive(Debug, Default)]
struct SlotQueue {
    /// Shared with every other instance that selected the same record.
    records: VecDeque<Arc<TelemetryRecord>>,
    /// The driver's requests, oldest first.
    controls: VecDeque<Control>,
    /// On the run queue or being run by a worker.
    scheduled: bool,
    /// Has a live sandbox (false while starting or in backoff).
    runnable: bool,
    /// Stopped: accepts nothing more.
    closed: bool,
    /// Paused for a shard hand-over: only this many records at the front
    /// may still be taken.
    hold: Option<usize>,
}

impl SlotQueue {
    /// Records a worker may take now.
    fn takeable(&self) -> usize {
        self.hold
            .map_or(self.records.len(), |h| h.min(self.records.len()))
    }

    fn has_work(&self) -> bool {
        self.takeable() > 0 || !self.controls.is_empty()
    }
}

/// The sandbox of a running instance, and which start made it (so reports
/// of an older incarnation are recognised and ignored).
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub inst: Box<dyn SandboxInstance>,
    pub incarnation: u64,
}

/// One started instance.
#[derive(Debug)]
pub(crate) struct Slot {
    pub key: InstanceKey,
    pub generation: u64,
    pub selector: DeviceSelector,
    /// Allocation and fencing token every output carries.
    pub fence: Fence,
    pub stats: Arc<InstanceStats>,
    pub capacity: usize,
    pub dropped_counter: Counter,
    /// The sharded monitor's shard key (set once, before publication).
    pub shard: Option<ShardKey>,
    /// Records dropped while paused for a hand-over (a subset of
    /// `dropped_counter`'s, counted apart as their own reason).
    pub handover_dropped: Counter,
    queue: Mutex<SlotQueue>,
    /// The hand-off cell (see the module docs).
    pub sandbox: Mutex<Option<Sandbox>>,
    /// A callback succeeded since the last checkpoint (worker sets, driver
    /// clears).
    pub dirty: AtomicBool,
    /// Its lease ran out: outputs of a callback that ends after this was
    /// set are dropped and counted, not spooled (driver sets).
    fenced: AtomicBool,
    /// Last time a drop was logged, ms since the Unix epoch.
    last_drop_log_ms: AtomicU64,
    /// Fuel burnt by this slot's sandboxes so far (all incarnations),
    /// after each callback, so the sampler measures a busy instance
    /// without waiting for it (worker writes, driver reads).
    pub fuel_total: AtomicU64,
    /// The sandbox's memory (linear memory + kv state) after its last
    /// callback, bytes (worker, and driver at start).
    pub memory_bytes: AtomicU64,
    /// Recent fuel per record (0 = not measured yet), to size batches so a
    /// callback stays well inside its fuel budget (worker).
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

/// One turn's work, taken under one lock.
pub(crate) struct Work {
    pub controls: Vec<Control>,
    pub records: Vec<Arc<TelemetryRecord>>,
}

impl Slot {
    pub fn new(
        key: InstanceKey,
        generation: u64,
        selector: DeviceSelector,
        fence: Fence,
        capacity: usize,
        stats: Arc<InstanceStats>,
        dropped_counter: Counter,
    ) -> Self {
        Slot {
            key,
            generation,
            selector,
            fence,
            stats,
            capacity,
            dropped_counter,
            shard: None,
            handover_dropped: Counter::default(),
            queue: Mutex::default(),
            sandbox: Mutex::new(None),
            dirty: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            last_drop_log_ms: AtomicU64::new(0),
            fuel_total: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            fuel_per_record: AtomicU64::new(0),
        }
    }

    /// Makes it an instance of a sharded monitor; `dropped` counts records
    /// dropped while it is paused for a hand-over.
    pub fn with_shard(mut self, shard: Option<ShardKey>, dropped: Counter) -> Self {
        self.shard = shard;
        self.handover_dropped = dropped;
        self
    }

    /// Queues `records[i]` for every `i` in `picks`, up to the capacity;
    /// the rest are dropped and counted. Never blocks beyond the queue lock.
    pub fn enqueue(
        &self,
        picks: &[u32],
        record: &mut dyn FnMut(u32) -> Arc<TelemetryRecord>,
    ) -> Enqueued {
        let (accepted, wake, held) = {
            let mut q = lock(&self.queue);
            let room = if q.closed {
                0
            } else {
                self.capacity.saturating_sub(q.records.len())
            };
            let accepted = room.min(picks.len());
            q.records
                .extend(picks[..accepted].iter().map(|&i| record(i)));
            self.set_depth(&q);
            let wake = accepted > 0 && q.runnable && !q.scheduled && q.has_work();
            if wake {
                q.scheduled = true;
            }
            (accepted, wake, q.hold.is_some())
        };
        let dropped = picks.len() - accepted;
        if dropped > 0 && held {
            // Durable in the spool like any record, so the same loss class
            // as a full queue, but its own cause.
            self.handover_dropped.inc_by(dropped as u64);
            self.count_dropped(
                dropped as u64,
                "queue full while paused for a shard hand-over",
            );
        } else if dropped > 0 {
            self.count_dropped(dropped as u64, "queue full");
        }
        Enqueued {
            accepted,
            dropped,
            wake,
        }
    }

    /// Asks the worker for something; returns whether the caller must put
    /// the slot on the run queue. Ignored once the slot is closed.
    pub fn push_control(&self, c: Control) -> bool {
        let mut q = lock(&self.queue);
        if q.closed {
            return false;
        }
        q.controls.push_back(c);
        let wake = q.runnable && !q.scheduled;
        if wake {
            q.scheduled = true;
        }
        wake
    }

    /// Counts dropped records and logs at most every 10 s per instance.
    pub fn count_dropped(&self, n: u64, why: &str) {
        let total = self.stats.records_dropped.fetch_add(n, Ordering::Relaxed) + n;
        self.dropped_counter.inc_by(n);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                instance = %self.key,
                dropped = n,
                total_dropped = total,
                capacity = self.capacity,
                "monitor records dropped: {why} (the instance is too slow or not running)"
            );
        }
    }

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

    /// Takes the pending controls and up to `max` queued records.
    pub fn take_work(&self, max: usize) -> Work {
        let mut q = lock(&self.queue);
        let n = q.takeable().min(max);
        if let Some(h) = q.hold.as_mut() {
            *h -= n;
        }
        let work = Work {
            controls: q.controls.drain(..).collect(),
            records: q.records.drain(..n).collect(),
        };
        self.set_depth(&q);
        work
    }

    /// Publishes the queue's length (called under the queue lock, so the
    /// gauge never goes back to an older length).
    fn set_depth(&self, q: &SlotQueue) {
        let n = u64::try_from(q.records.len()).unwrap_or(u64::MAX);
        self.stats.queue_depth.store(n, Ordering::Relaxed);
    }

    /// Takes up to `max` queued records.
    #[cfg(test)]
    pub fn take_batch(&self, max: usize) -> Vec<Arc<TelemetryRecord>> {
        self.take_work(max).records
    }

    /// After a turn: whether the slot goes back on the run queue (it stays
    /// scheduled) or leaves it.
    pub fn finish_turn(&self) -> bool {
        let mut q = lock(&self.queue);
        let again = q.runnable && !q.closed && q.has_work();
        q.scheduled = again;
        again
    }

    /// Marks the sandbox present or gone. Returns whether the caller must
    /// put the slot on the run queue.
    pub fn set_runnable(&self, runnable: bool) -> bool {
        let mut q = lock(&self.queue);
        q.runnable = runnable;
        if !runnable {
            // Requests for a sandbox that is gone have nothing to act on.
            q.controls.clear();
        }
        let wake = runnable && !q.closed && !q.scheduled && q.has_work();
        if wake {
            q.scheduled = true;
        }
        wake
    }

    /// Pauses the slot after the records queued now (see the module docs).
    pub fn pause(&self) {
        let mut q = lock(&self.queue);
        q.hold = Some(q.records.len());
    }

    /// Ends a pause; returns whether the caller must put the slot on the
    /// run queue.
    pub fn resume(&self) -> bool {
        let mut q = lock(&self.queue);
        q.hold = None;
        let wake = q.runnable && !q.closed && !q.scheduled && q.has_work();
        if wake {
            q.scheduled = true;
        }
        wake
    }

    /// Whether it has a live sandbox (a worker will take its records).
    pub fn is_runnable(&self) -> bool {
        lock(&self.queue).runnable
    }

    /// Records still to be taken before the pause point (all queued records
    /// when not paused). With the sandbox cell held, 0 means every record
    /// queued before the pause has been processed.
    pub fn before_hold(&self) -> usize {
        lock(&self.queue).takeable()
    }

    /// Stops accepting records; returns how many were still queued (they
    /// are discarded).
    pub fn close(&self) -> usize {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.runnable = false;
        q.controls.clear();
        let n = q.records.len();
        q.records.clear();
        self.set_depth(&q);
        n
    }

    /// Its lease ran out: no output of it reaches the spool from now on.
    pub fn fence_off(&self) {
        self.fenced.store(true, Ordering::Release);
    }

    /// Whether [`Slot::fence_off`] was called.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
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

    pub(crate) fn slot() -> Slot {
        Slot::new(
            InstanceKey::new("t", "m"),
            1,
            DeviceSelector {
                tenant: "t".into(),
                device_globs: vec!["*".into()],
                tags: Default::default(),
            },
            Fence {
                allocation: "t/m".into(),
                token: 1,
            },
            100,
            Arc::new(InstanceStats::default()),
            Counter::default(),
        )
    }

    #[test]
    fn queue_depth_gauge_follows_the_queue() {
        let s = slot();
        let rec = Arc::new(TelemetryRecord {
            tenant: "t".into(),
            device: "d".into(),
            ts_ms: 1,
            seq: None,
            metrics: vec![strata_protocol::telemetry::Metric {
                name: "x".into(),
                value: 1.0,
            }],
            tags: Vec::new(),
        });
        let depth = || s.stats.queue_depth.load(Ordering::Relaxed);
        // 120 offered to a queue of 100: 100 wait, 20 are dropped.
        let picks: Vec<u32> = (0..120).collect();
        s.enqueue(&picks, &mut |_| rec.clone());
        assert_eq!(depth(), 100);
        s.take_work(30);
        assert_eq!(depth(), 70);
        s.close();
        assert_eq!(depth(), 0, "a closed slot holds nothing");
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

    #[test]
    fn controls_wake_a_runnable_slot_and_die_with_its_sandbox() {
        let s = slot();
        assert!(!s.push_control(Control::Checkpoint), "no sandbox: no wake");
        assert!(
            s.set_runnable(true),
            "a pending control makes it runnable work"
        );
        assert!(
            !s.push_control(Control::Resize(Budget::new(8, 8))),
            "already scheduled"
        );
        let w = s.take_work(10);
        assert_eq!(
            w.controls,
            vec![Control::Checkpoint, Control::Resize(Budget::new(8, 8))]
        );
        assert!(!s.finish_turn());
        s.push_control(Control::Checkpoint);
        s.set_runnable(false);
        assert!(
            s.take_work(10).controls.is_empty(),
            "dropped with the sandbox"
        );
        s.close();
        assert!(!s.push_control(Control::Checkpoint), "closed");
        assert!(!s.is_fenced());
        s.fence_off();
        assert!(s.is_fenced());
    }

    #[test]
    fn a_paused_slot_serves_what_came_before_and_holds_the_rest() {
        let s = slot();
        let rec = |d: &str| {
            Arc::new(TelemetryRecord {
                tenant: "t".into(),
                device: d.into(),
                ts_ms: 1,
                seq: None,
                metrics: Vec::new(),
                tags: Vec::new(),
            })
        };
        s.enqueue(&[0, 1, 2], &mut |i| rec(&format!("old-{i}")));
        s.set_runnable(true);
        s.pause();
        s.enqueue(&[0, 1], &mut |i| rec(&format!("new-{i}")));
        assert_eq!(s.before_hold(), 3);
        assert_eq!(s.take_work(2).records.len(), 2);
        assert_eq!(s.before_hold(), 1);
        let w = s.take_work(10);
        assert_eq!(w.records.len(), 1, "not past the pause point");
        assert_eq!(w.records[0].device, "old-2");
        assert!(!s.finish_turn(), "held records are no work");
        s.push_control(Control::Checkpoint);
        assert_eq!(
            s.take_work(10).controls,
            vec![Control::Checkpoint],
            "controls still served"
        );
        assert!(!s.finish_turn());
        assert_eq!(s.before_hold(), 0);
        assert!(s.resume(), "held records wake it");
        let w = s.take_work(10);
        let got: Vec<&str> = w.records.iter().map(|r| r.device.as_str()).collect();
        assert_eq!(got, vec!["new-0", "new-1"]);
    }
}
