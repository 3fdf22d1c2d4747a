//! The worker pool that runs instance callbacks.
//!
//! A fixed set of OS threads (callbacks are CPU work, bounded by fuel and an
//! epoch deadline, so they stay off the async runtime) takes slots from one
//! FIFO run queue. A slot with more work after its turn goes to the back,
//! so instances take turns: a busy instance gets one batch per round, never
//! the whole pool.
//!
//! A turn first serves the driver's controls (resize, checkpoint), then one
//! batch. A fault ends only its instance: the worker drops the sandbox and
//! reports the fault with the state of its last good callback. Everything
//! the driver must know travels as a [`WorkerReport`] on a channel the
//! driver passed in; this module knows nothing of the driver.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::metrics::WorkloadMetrics;
use super::model::InstanceKey;
use super::output::{stamp, Output};
use super::sandbox::{InstanceFault, KvState, LogLevel};
use super::slot::{lock, Control, Slot};

/// What a worker tells the driver.
#[derive(Debug)]
pub(crate) enum WorkerReport {
    /// A callback faulted: the sandbox is gone.
    Faulted {
        /// Instance.
        key: InstanceKey,
        /// Generation it ran.
        generation: u64,
        /// Which start made the sandbox.
        incarnation: u64,
        /// The fault.
        fault: InstanceFault,
        /// State as of its last good callback, for the restart.
        state: KvState,
    },
    /// The state a `Control::Checkpoint` asked for.
    Checkpoint {
        /// Instance.
        key: InstanceKey,
        /// Which start made the sandbox.
        incarnation: u64,
        /// Its key-value state now.
        state: KvState,
    },
}

#[derive(Default)]
struct RunQueue {
    q: VecDeque<Arc<Slot>>,
    busy: usize,
    stop: bool,
}

struct Shared {
    run: Mutex<RunQueue>,
    work: Condvar,
    idle: Condvar,
}

/// What every worker needs besides the run queue.
#[derive(Clone)]
pub(crate) struct WorkerCtx {
    pub edge: String,
    pub max_batch: usize,
    pub outputs: mpsc::Sender<Vec<Output>>,
    pub reports: mpsc::UnboundedSender<WorkerReport>,
    pub metrics: WorkloadMetrics,
    /// Poked after each callback so waiters re-read counters.
    pub changed: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The worker pool.
pub(crate) struct Executor {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Executor {
    /// Starts `n` (at least 1) workers. Each holds its own clone of the
    /// output sender, so the output channel closes when the last exits.
    pub fn start(n: usize, ctx: WorkerCtx) -> std::io::Result<Executor> {
        let shared = Arc::new(Shared {
            run: Mutex::default(),
            work: Condvar::new(),
            idle: Condvar::new(),
        });
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (sh, cx) = (shared.clone(), ctx.clone());
            let t = std::thread::Builder::new()
                .name(format!("monitor-{i}"))
                .spawn(move || worker(&sh, &cx));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    lock(&shared.run).stop = true;
                    shared.work.notify_all();
                    return Err(e);
                }
            }
        }
        Ok(Executor {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Puts slots on the run queue (each is on it at most once: the caller
    /// got them from a `wake`).
    pub fn schedule(&self, slots: impl IntoIterator<Item = Arc<Slot>>) {
        let mut n = 0;
        {
            let mut rq = lock(&self.shared.run);
            for s in slots {
                rq.q.push_back(s);
                n += 1;
            }
        }
        match n {
            0 => {}
            1 => self.shared.work.notify_one(),
            _ => self.shared.work.notify_all(),
        }
    }

    /// Blocks until nothing is queued or running, or `timeout` passes.
    /// Returns whether it went idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rq = lock(&self.shared.run);
        loop {
            if rq.q.is_empty() && rq.busy == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            rq = self
                .shared
                .idle
                .wait_timeout(rq, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops the workers after their current callback and joins them.
    /// Blocking.
    pub fn stop(&self) {
        lock(&self.shared.run).stop = true;
        self.shared.work.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("monitor worker thread panicked");
            }
        }
    }
}

fn worker(sh: &Shared, cx: &WorkerCtx) {
    loop {
        let slot = {
            let mut rq = lock(&sh.run);
            loop {
                if rq.stop {
                    return;
                }
                if let Some(s) = rq.q.pop_front() {
                    rq.busy += 1;
                    break s;
                }
                rq = sh.work.wait(rq).unwrap_or_else(|p| p.into_inner());
            }
        };
        let again = run_turn(&slot, cx);
        let mut rq = lock(&sh.run);
        rq.busy -= 1;
        if again {
            rq.q.push_back(slot);
            drop(rq);
            sh.work.notify_one();
        } else if rq.q.is_empty() && rq.busy == 0 {
            drop(rq);
            sh.idle.notify_all();
        }
    }
}

/// One turn of one slot: its controls, then one batch. Returns whether the
/// slot has more to do.
fn run_turn(slot: &Slot, cx: &WorkerCtx) -> bool {
    let mut guard = lock(&slot.sandbox);
    let Some(sb) = guard.as_mut() else {
        drop(guard);
        return slot.finish_turn();
    };
    let limit = slot.batch_limit(cx.max_batch, sb.inst.fuel_per_callback());
    let work = slot.take_work(limit);
    for c in work.controls {
        match c {
            Control::Resize(budget) => {
                if let Err(e) = sb.inst.resize(budget) {
                    tracing::warn!(instance = %slot.key, error = %e, "resize failed");
                }
            }
            Control::Checkpoint => {
                slot.dirty.store(false, Ordering::Relaxed);
                let _ = cx.reports.send(WorkerReport::Checkpoint {
                    key: slot.key.clone(),
                    incarnation: sb.incarnation,
                    state: sb.inst.state(),
                });
            }
        }
    }
    let batch = work.records;
    if batch.is_empty() {
        drop(guard);
        return slot.finish_turn();
    }
    let n = batch.len() as u64;
    slot.stats.records_in.fetch_add(n, Ordering::Relaxed);
    cx.metrics.processed.inc_by(n);
    match sb.inst.on_shared_batch(&batch) {
        Ok(out) => {
            slot.dirty.store(true, Ordering::Relaxed);
            slot.fuel_total.fetch_add(out.fuel_used, Ordering::Relaxed);
            slot.record_fuel(batch.len(), out.fuel_used);
            slot.memory_bytes
                .store(sb.inst.usage().memory_bytes, Ordering::Relaxed);
            // Checked while the sandbox is still ours: the driver fences a
            // slot off before it takes the sandbox, so a callback that ends
            // after the lease ran out never reaches the spool.
            let fenced = slot.is_fenced();
            drop(guard);
            emit(slot, out, fenced, cx);
        }
        Err(fault) => {
            // The sandbox is dead; its last good state goes to the driver
            // for the restart, and the lifecycle core decides about it.
            let Some(dead) = guard.take() else {
                return slot.finish_turn();
            };
            drop(guard);
            slot.set_runnable(false);
            let state = dead.inst.state();
            let _ = cx.reports.send(WorkerReport::Faulted {
                key: slot.key.clone(),
                generation: slot.generation,
                incarnation: dead.incarnation,
                fault,
                state,
            });
        }
    }
    let again = slot.finish_turn();
    cx.changed.send_modify(|v| *v += 1);
    again
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Logs the guest's lines, stamps its alerts and metrics and hands them to
/// the spool writer. Waits (never drops) when the spool is behind: that
/// slows monitors, not ingest. A fenced-off instance's outputs are dropped
/// and counted instead.
fn emit(slot: &Slot, out: super::sandbox::BatchOutput, fenced: bool, cx: &WorkerCtx) {
    for l in &out.logs {
        let (instance, msg) = (&slot.key, &l.message);
        match l.level {
            LogLevel::Debug => tracing::debug!(%instance, "guest: {msg}"),
            LogLevel::Info => tracing::info!(%instance, "guest: {msg}"),
            LogLevel::Warn => tracing::warn!(%instance, "guest: {msg}"),
            LogLevel::Error => tracing::error!(%instance, "guest: {msg}"),
        }
    }
    if out.logs_dropped > 0 {
        cx.metrics.logs_dropped.inc_by(u64::from(out.logs_dropped));
    }
    if out.alerts.is_empty() && out.metrics.is_empty() {
        return;
    }
    let (na, nm) = (out.alerts.len() as u64, out.metrics.len() as u64);
    if fenced {
        cx.metrics.outputs_fenced.inc_by(na + nm);
        tracing::warn!(instance = %slot.key, fence = %slot.fence, dropped = na + nm, "outputs of an instance whose lease ran out dropped");
        return;
    }
    let outputs = stamp(&slot.key, &slot.fence, &cx.edge, out, now_ms());
    slot.stats.alerts.fetch_add(na, Ordering::Relaxed);
    slot.stats.metrics.fetch_add(nm, Ordering::Relaxed);
    cx.metrics.alerts.inc_by(na);
    cx.metrics.metrics.inc_by(nm);
    let n = outputs.len() as u64;
    if cx.outputs.blocking_send(outputs).is_err() {
        cx.metrics.outputs_lost.inc_by(n);
        tracing::error!(instance = %slot.key, lost = n, "monitor outputs lost: the spool writer is gone");
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use strata_protocol::workload::DeviceSelector;

    use super::*;
    use crate::workload::model::Fence;
    use crate::workload::sandbox::{Alert, BatchOutput, DerivedMetric, Severity};
    use crate::workload::slot::InstanceStats;

    fn out() -> BatchOutput {
        BatchOutput {
            alerts: vec![Alert {
                severity: Severity::Warning,
                device: "d".into(),
                code: "c".into(),
                message: "m".into(),
            }],
            metrics: vec![DerivedMetric {
                device: "d".into(),
                name: "n".into(),
                value: 1.0,
            }],
            ..BatchOutput::default()
        }
    }

    /// Outputs carry the slot's fence to the spool writer; once the slot is
    /// fenced off (its lease ran out) they are dropped and counted instead.
    #[test]
    fn outputs_carry_the_fence_and_a_fenced_off_instance_emits_nothing() {
        let fence = Fence {
            allocation: "acme/m".into(),
            token: 9,
        };
        let slot = Slot::new(
            InstanceKey::new("acme", "m"),
            1,
            DeviceSelector {
                tenant: "acme".into(),
                device_globs: vec!["*".into()],
                tags: Default::default(),
            },
            fence.clone(),
            10,
            Arc::new(InstanceStats::default()),
            Counter::default(),
        );
        let (outputs, mut rx) = mpsc::channel(4);
        let (reports, _r) = mpsc::unbounded_channel();
        let cx = WorkerCtx {
            edge: "edge-1".into(),
            max_batch: 10,
            outputs,
            reports,
            metrics: WorkloadMetrics::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        };
        emit(&slot, out(), false, &cx);
        let sent = rx.try_recv().unwrap();
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|o| o.fence == fence));
        assert!(sent[0].entry.as_alert().is_some_and(|a| a.edge == "edge-1"));
        assert_eq!(slot.stats.alerts.load(Ordering::Relaxed), 1);

        emit(&slot, out(), true, &cx);
        assert!(rx.try_recv().is_err(), "nothing of a fenced-off instance");
        assert_eq!(cx.metrics.outputs_fenced.get(), 2);
        assert_eq!(slot.stats.alerts.load(Ordering::Relaxed), 1);
    }
}
