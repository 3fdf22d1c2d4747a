//! The worker pool that runs instance callbacks.
//!
//! A fixed set of OS threads (callbacks are CPU work, bounded by fuel and an
//! epoch deadline, so they stay off the async runtime) takes slots from one
//! FIFO run queue. A slot with more records after its turn goes to the back,
//! so instances take turns: a busy instance gets one batch per round, never
//! the whole pool. Faults stop only their instance: the sandbox is dropped,
//! its last good state is kept for the restart, and the scheduler driver is
//! told.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_protocol::monitoring::{AlertRecord, DerivedMetricRecord};
use strata_protocol::SpoolEntry;
use tokio::sync::mpsc;

use super::metrics::HostMetrics;
use super::slot::{lock, Slot};
use super::HostEvent;
use crate::runtime::{BatchOutput, LogLevel};
use crate::uplink::driver::encode_entry;

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
    pub outputs: mpsc::Sender<Vec<Vec<u8>>>,
    pub events: mpsc::UnboundedSender<HostEvent>,
    pub metrics: HostMetrics,
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

/// One callback of one slot. Returns whether the slot has more to do.
fn run_turn(slot: &Slot, cx: &WorkerCtx) -> bool {
    let mut guard = lock(&slot.instance);
    let Some(live) = guard.as_mut() else {
        drop(guard);
        return slot.finish_turn();
    };
    if let Some(budget) = lock(&slot.pending_resize).take() {
        if let Err(e) = live.inst.resize(budget) {
            tracing::warn!(instance = %slot.key, error = %e, "deferred resize failed");
        }
    }
    let limit = slot.batch_limit(cx.max_batch, live.inst.fuel_per_callback());
    let batch = slot.take_batch(limit);
    if batch.is_empty() {
        drop(guard);
        return slot.finish_turn();
    }
    let n = batch.len() as u64;
    slot.stats.records_in.fetch_add(n, Ordering::Relaxed);
    cx.metrics.processed.inc_by(n);
    match live.inst.on_shared_batch(&batch) {
        Ok(out) => {
            slot.dirty.store(true, Ordering::Relaxed);
            slot.fuel_total.fetch_add(out.fuel_used, Ordering::Relaxed);
            slot.record_fuel(batch.len(), out.fuel_used);
            slot.memory_bytes
                .store(live.inst.usage().memory_bytes, Ordering::Relaxed);
            drop(guard);
            emit(slot, out, cx);
        }
        Err(fault) => {
            // The sandbox is dead; keep the state of its last good callback
            // for the restart, and let the scheduler decide about it.
            let state = live.inst.state();
            *guard = None;
            drop(guard);
            *lock(&slot.saved_state) = Some(state);
            slot.set_runnable(false);
            let reason = format!("{}: {fault}", fault.label());
            slot.stats.faults.fetch_add(1, Ordering::Relaxed);
            slot.stats.event(format!("fault: {reason}"));
            *lock(&slot.stats.last_fault) = Some(reason.clone());
            cx.metrics.fault(fault.label());
            tracing::warn!(instance = %slot.key, generation = slot.generation, %reason, "monitor instance faulted");
            let _ = cx.events.send(HostEvent::Exited {
                key: slot.key.clone(),
                generation: slot.generation,
                fault,
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

/// Stamps alerts and metrics with the instance's tenant and name, this edge
/// and the time, and hands them to the spool writer. Waits (never drops)
/// when the spool is behind: that slows monitors, not ingest.
fn emit(slot: &Slot, out: BatchOutput, cx: &WorkerCtx) {
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
    let ts_ms = now_ms();
    let (na, nm) = (out.alerts.len() as u64, out.metrics.len() as u64);
    let mut payloads = Vec::with_capacity(out.alerts.len() + out.metrics.len());
    for a in out.alerts {
        payloads.push(encode_entry(&SpoolEntry::Alert(AlertRecord {
            tenant: slot.key.tenant.clone(),
            device: a.device,
            monitor: slot.key.name.clone(),
            edge: cx.edge.clone(),
            severity: a.severity,
            code: a.code,
            message: a.message,
            ts_ms,
        })));
    }
    for m in out.metrics {
        payloads.push(encode_entry(&SpoolEntry::Metric(DerivedMetricRecord {
            tenant: slot.key.tenant.clone(),
            device: m.device,
            monitor: slot.key.name.clone(),
            name: m.name,
            value: m.value,
            ts_ms,
        })));
    }
    slot.stats.alerts.fetch_add(na, Ordering::Relaxed);
    slot.stats.metrics.fetch_add(nm, Ordering::Relaxed);
    cx.metrics.alerts.inc_by(na);
    cx.metrics.metrics.inc_by(nm);
    let n = payloads.len() as u64;
    if cx.outputs.blocking_send(payloads).is_err() {
        cx.metrics.outputs_lost.inc_by(n);
        tracing::error!(instance = %slot.key, lost = n, "monitor outputs lost: the spool writer is gone");
    }
}

/// Appends monitor outputs to the spool in batches until every sender is
/// gone. Runs as a tokio task.
pub(crate) async fn spool_outputs(
    spool: crate::spool::Spool,
    mut rx: mpsc::Receiver<Vec<Vec<u8>>>,
    max_batch: usize,
    metrics: HostMetrics,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match spool.append(batch).await {
            Ok(_) => {
                metrics.outputs_spooled.inc_by(n);
            }
            Err(e) => {
                metrics.outputs_lost.inc_by(n);
                tracing::error!(lost = n, error = %e, "monitor outputs could not be spooled");
            }
        }
    }
}
