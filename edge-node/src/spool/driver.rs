//! [`Spool`]: the tokio driver around the deterministic core.
//!
//! One writer task owns the [`SegmentWriter`]. Appends queue up in a channel
//! while it is busy; each loop it takes everything queued (up to
//! `max-batch-records`), writes it with one `write` per segment, fsyncs once
//! and then completes every caller: group commit. File I/O runs on the
//! blocking pool. Trims only move the ack point in the shared
//! [`SpoolIndex`] and wake the writer, which deletes segments and persists
//! the ack point (at most once per [`META_INTERVAL`]) between commits.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use super::config::SpoolConfig;
use super::error::SpoolError;
use super::fs::{SpoolFs, StdFs};
use super::index::{SpoolIndex, SpoolStats};
use super::recover::{persist_meta, recover, Recovered, TornTail};
use super::writer::{SegmentWriter, WritePlan};

/// Shortest time between two writes of the ack point to the meta file.
/// Losing an ack only causes a resend the hub deduplicates, so this trades
/// a few duplicate records after a crash for two fewer fsyncs per trim.
pub const META_INTERVAL: Duration = Duration::from_secs(1);

/// Append requests that may wait in the writer's queue.
const QUEUE_CAPACITY: usize = 1024;

type Reply = oneshot::Sender<Result<Range<u64>, SpoolError>>;

struct Pending {
    payloads: Vec<Vec<u8>>,
    /// Records already written (a request can span group commits).
    done: usize,
    first_seq: u64,
    reply: Reply,
}

enum Msg {
    Append(Pending),
    Close(oneshot::Sender<()>),
}

/// State shared by the handles and the writer task.
struct Shared {
    fs: Arc<dyn SpoolFs>,
    dir: PathBuf,
    index: Mutex<SpoolIndex>,
    /// Wakes the writer after a trim.
    wake: Notify,
    /// Set when the writer died of an I/O error.
    failure: Mutex<Option<String>>,
    /// Whether the writer is waiting for space.
    full: watch::Sender<bool>,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, SpoolIndex> {
        // A panic while holding the lock cannot leave the index half
        // updated in a way later calls would misread (each method finishes
        // its own invariants before returning), so poisoning is ignored.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_full(&self, full: bool) {
        self.index().set_full(full);
        self.full
            .send_if_modified(|f| std::mem::replace(f, full) != full);
    }

    fn gone(&self) -> SpoolError {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => SpoolError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            },
            None => SpoolError::Closed {
                dir: self.dir.clone(),
            },
        }
    }
}

struct Handle {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    durable: watch::Receiver<u64>,
    epoch: u64,
    max_payload: u64,
    segment_bytes: u64,
    torn: Vec<TornTail>,
}

/// The edge node's durable store-and-forward spool. Cheap to clone; all
/// clones share one writer, which stops when the last clone is dropped or
/// [`Spool::close`] is called.
#[derive(Clone)]
pub struct Spool {
    h: Arc<Handle>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.h.shared.dir)
            .field("epoch", &self.h.epoch)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens (creating or recovering) the spool and starts its writer task.
    /// Must be called inside a tokio runtime.
    pub async fn open(cfg: SpoolConfig, fs: Arc<dyn SpoolFs>) -> Result<Spool, SpoolError> {
        cfg.validate()?;
        let fs2 = fs.clone();
        let cfg2 = cfg.clone();
        let rec =
            tokio::task::spawn_blocking(move || recover(&*fs2, &cfg2, &mut rand::thread_rng()))
                .await
                .map_err(|e| SpoolError::Failed {
                    dir: cfg.dir.clone(),
                    reason: format!("recovery task panicked: {e}"),
                })??;
        Ok(Self::start(cfg, fs, rec))
    }

    /// [`Spool::open`] on the real filesystem.
    pub async fn open_std(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        Self::open(cfg, Arc::new(StdFs::new())).await
    }

    fn start(cfg: SpoolConfig, fs: Arc<dyn SpoolFs>, rec: Recovered) -> Spool {
        let Recovered {
            epoch,
            index,
            writer,
            torn,
        } = rec;
        let (durable_tx, durable) = watch::channel(index.next_seq());
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            fs,
            dir: cfg.dir.clone(),
            index: Mutex::new(index),
            wake: Notify::new(),
            failure: Mutex::new(None),
            full: watch::Sender::new(false),
        });
        let task = WriterTask {
            shared: shared.clone(),
            rx,
            durable: durable_tx,
            queue: VecDeque::new(),
            closers: Vec::new(),
            closing: false,
            max_batch: cfg.max_batch_records,
            last_meta: None,
            retry_removal_at: None,
            due: None,
        };
        tokio::spawn(task.run(writer));
        Spool {
            h: Arc::new(Handle {
                shared,
                tx,
                durable,
                epoch,
                max_payload: cfg.max_payload(),
                segment_bytes: cfg.segment_bytes,
                torn,
            }),
        }
    }

    /// Appends records and resolves once they are durable (fsynced),
    /// returning the sequence numbers they got, in order. Waits, without
    /// dropping anything, while the spool is full.
    pub async fn append(&self, payloads: Vec<Vec<u8>>) -> Result<Range<u64>, SpoolError> {
        for (index, p) in payloads.iter().enumerate() {
            if p.len() as u64 > self.h.max_payload {
                return Err(SpoolError::RecordTooLarge {
                    index,
                    len: p.len(),
                    max: self.h.max_payload,
                    segment_bytes: self.h.segment_bytes,
                });
            }
        }
        if payloads.is_empty() {
            let next = *self.h.durable.borrow();
            return Ok(next..next);
        }
        let (reply, rx) = oneshot::channel();
        let msg = Msg::Append(Pending {
            payloads,
            done: 0,
            first_seq: 0,
            reply,
        });
        self.h
            .tx
            .send(msg)
            .await
            .map_err(|_| self.h.shared.gone())?;
        rx.await.map_err(|_| self.h.shared.gone())?
    }

    /// Torn tails cut off while this spool was opened (normally empty;
    /// one entry after a crash interrupted a write), for reporting.
    pub fn torn_tails(&self) -> &[TornTail] {
        &self.h.torn
    }

    /// The spool's epoch: random, fixed when the directory was created.
    pub fn epoch(&self) -> u64 {
        self.h.epoch
    }

    /// Reads durable records from `from_seq` on (unacknowledged ones only;
    /// an older `from_seq` starts at the first unacknowledged record). At
    /// most `max_records`, and at most `max_bytes` of payload unless the
    /// first record alone is larger. Sequential calls continue from a
    /// cursor; rereading from an earlier seq seeks via sparse samples.
    /// Synchronous: it reads page-cached data with the index locked.
    pub fn read(
        &self,
        from_seq: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, SpoolError> {
        let fs = self.h.shared.fs.clone();
        self.h
            .shared
            .index()
            .read(&*fs, from_seq, max_records, max_bytes)
    }

    /// Returns once a durable record with sequence number `seq` exists (or
    /// the spool is closed).
    pub async fn wait_for(&self, seq: u64) {
        let mut rx = self.h.durable.clone();
        let _ = rx.wait_for(|&next| next > seq).await;
    }

    /// Acknowledges every record below `upto_exclusive`: they are no longer
    /// read, and segments holding only such records are deleted (never the
    /// newest one, which keeps the sequence numbers alive across restarts).
    /// Acks that do not advance the point are ignored, so acks for parallel
    /// batches may arrive in any order; acking beyond the last durable record
    /// is an error. Deletion and persisting the ack point happen in the
    /// writer task, so this never blocks on the disk.
    pub fn trim(&self, upto_exclusive: u64) -> Result<(), SpoolError> {
        self.h.shared.index().trim(upto_exclusive)?;
        self.h.shared.wake.notify_one();
        Ok(())
    }

    /// Returns once the spool's full state (appends waiting for trims to
    /// free space) equals `full`, or the spool is closed.
    pub async fn wait_full(&self, full: bool) {
        let mut rx = self.h.shared.full.subscribe();
        // Errors only once the writer is gone.
        let mut closed = self.h.durable.clone();
        tokio::select! {
            _ = rx.wait_for(|&f| f == full) => {}
            _ = closed.wait_for(|_| false) => {}
        }
    }

    /// Current counters.
    pub fn stats(&self) -> SpoolStats {
        self.h.shared.index().stats()
    }

    /// Completes every append already queued, persists the ack point and
    /// stops the writer. Appends waiting for space when close is called
    /// fail with [`SpoolError::Closed`] (they were never acknowledged).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.h.tx.send(Msg::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct WriterTask {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    durable: watch::Sender<u64>,
    queue: VecDeque<Pending>,
    closers: Vec<oneshot::Sender<()>>,
    closing: bool,
    max_batch: usize,
    /// When the ack point was last written (or tried).
    last_meta: Option<Instant>,
    /// When failed segment deletions may be retried.
    retry_removal_at: Option<Instant>,
    /// When deferred housekeeping becomes due.
    due: Option<Instant>,
}

impl WriterTask {
    async fn run(mut self, writer: SegmentWriter) {
        let result = self.serve(writer).await;
        let failed = match result {
            Ok(()) => {
                if let Err(e) = self.housekeep(true).await {
                    tracing::warn!(error = %e, "spool: final housekeeping failed");
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "spool writer failed; restart the edge node to recover from disk");
                *self
                    .shared
                    .failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                Some(e.to_string())
            }
        };
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            self.accept(msg);
        }
        for p in self.queue.drain(..) {
            let _ = p.reply.send(Err(self.shared.gone()));
        }
        for c in self.closers.drain(..) {
            let _ = c.send(());
        }
        if failed.is_none() {
            tracing::info!(dir = %self.shared.dir.display(), "spool closed");
        }
    }

    fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Append(p) => self.queue.push_back(p),
            Msg::Close(c) => {
                self.closing = true;
                self.closers.push(c);
                self.rx.close();
            }
        }
    }

    /// Waits for an append, a close, a trim or deferred housekeeping.
    async fn wait_event(&mut self) {
        let due = self.due;
        tokio::select! {
            msg = self.rx.recv() => match msg {
                Some(m) => self.accept(m),
                None => self.closing = true,
            },
            _ = self.shared.wake.notified() => {}
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
        }
    }

    async fn serve(&mut self, mut writer: SegmentWriter) -> Result<(), SpoolError> {
        loop {
            if let Err(e) = self.housekeep(false).await {
                // Only costs resends or disk space; the writer goes on.
                tracing::warn!(error = %e, "spool: cannot persist the ack point; will retry");
            }
            while let Ok(msg) = self.rx.try_recv() {
                self.accept(msg);
            }
            if self.queue.is_empty() {
                if self.closing {
                    return Ok(());
                }
                self.wait_event().await;
                continue;
            }
            let free = self.shared.index().free_bytes();
            let pending = self
                .queue
                .iter()
                .flat_map(|p| p.payloads[p.done..].iter().map(Vec::as_slice));
            let plan = writer.plan(pending, free, self.max_batch);
            if plan.count == 0 {
                self.shared.set_full(true);
                if self.closing {
                    return Ok(());
                }
                self.wait_event().await;
                continue;
            }
            let fs = self.shared.fs.clone();
            let (w, plan, res) = tokio::task::spawn_blocking(move || {
                let res = writer.execute(&*fs, &plan);
                (writer, plan, res)
            })
            .await
            .map_err(|e| SpoolError::Failed {
                dir: self.shared.dir.clone(),
                reason: format!("write task panicked: {e}"),
            })?;
            writer = w;
            let syncs = res?;
            let next = {
                let mut idx = self.shared.index();
                idx.commit(&plan, syncs);
                idx.next_seq()
            };
            self.shared.set_full(false);
            self.durable.send_replace(next);
            self.complete(&plan);
        }
    }

    /// Hands out results for every request the plan finished.
    fn complete(&mut self, plan: &WritePlan) {
        let mut seq = plan.first_seq;
        let mut left = plan.count;
        while left > 0 {
            let Some(p) = self.queue.front_mut() else {
                break;
            };
            if p.done == 0 {
                p.first_seq = seq;
            }
            let take = left.min((p.payloads.len() - p.done) as u64);
            p.done += take as usize;
            seq += take;
            left -= take;
            if p.done == p.payloads.len() {
                if let Some(p) = self.queue.pop_front() {
                    let range = p.first_seq..p.first_seq + p.payloads.len() as u64;
                    let _ = p.reply.send(Ok(range));
                }
            }
        }
    }

    /// Deletes trimmed segments and persists the ack point. Unless
    /// `force`, the ack point is written at most once per [`META_INTERVAL`]
    /// and failed deletions are retried after that long; `self.due` is set
    /// to when deferred work becomes allowed.
    async fn housekeep(&mut self, force: bool) -> Result<(), SpoolError> {
        let now = Instant::now();
        let meta_at = self.last_meta.map(|t| t + META_INTERVAL);
        let meta_ok = force || meta_at.is_none_or(|t| now >= t);
        let remove_ok = force || self.retry_removal_at.is_none_or(|t| now >= t);
        let work = {
            let mut idx = self.shared.index();
            let (removals, meta) = idx.housekeeping_pending();
            self.due = [
                meta_at.filter(|_| meta && !meta_ok),
                self.retry_removal_at.filter(|_| removals && !remove_ok),
            ]
            .into_iter()
            .flatten()
            .min();
            idx.take_housekeeping(remove_ok, meta_ok)
        };
        if work.remove.is_empty() && work.meta.is_none() {
            return Ok(());
        }
        let fs = self.shared.fs.clone();
        let dir = self.shared.dir.clone();
        let persisted_attempted = work.meta.is_some();
        let (freed, failed, persisted) = tokio::task::spawn_blocking(move || {
            let mut freed = 0;
            let mut failed = Vec::new();
            for (path, len) in work.remove {
                match fs.remove(&path) {
                    Ok(()) => freed += len,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => freed += len,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "spool: cannot delete trimmed segment; will retry");
                        failed.push((path, len));
                    }
                }
            }
            let persisted = work.meta.map(|m| persist_meta(&*fs, &dir, &m).map(|syncs| (m.acked, syncs)));
            (freed, failed, persisted)
        })
        .await
        .map_err(|e| SpoolError::Failed {
            dir: self.shared.dir.clone(),
            reason: format!("housekeeping task panicked: {e}"),
        })?;
        let mut idx = self.shared.index();
        if !failed.is_empty() {
            let retry = now + META_INTERVAL;
            self.retry_removal_at = Some(retry);
            self.due = Some(self.due.map_or(retry, |d| d.min(retry)));
        }
        let (ack, result) = match persisted {
            Some(Ok((ack, syncs))) => {
                idx.add_fsyncs(syncs);
                (Some(ack), Ok(()))
            }
            Some(Err(e)) => {
                self.due = Some(now + META_INTERVAL);
                (None, Err(e))
            }
            None => (None, Ok(())),
        };
        if persisted_attempted {
            // Failed attempts are throttled like successful ones.
            self.last_meta = Some(now);
        }
        idx.housekeeping_done(freed, failed, ack);
        result
    }
}
