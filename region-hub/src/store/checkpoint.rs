//! Making the store durable (checkpoints, split between the Raft thread
//! and a background thread) and moving all of it between replicas (Raft
//! snapshot and restore).
//!
//! [`TelemetryStore::begin_checkpoint`] is the cheap part, on the caller's
//! thread: it freezes every partition's memtable (moves each device's
//! buffer into an `Arc` that readers and the job share), takes the list of
//! files to delete, and spawns the job (see `job`), which writes, merges and
//! fsyncs files and then the manifest. [`TelemetryStore::finish_checkpoint`]
//! is cheap too: it swaps the job's files into the index in place of the
//! frozen memtables and merged files. Until then readers see the frozen
//! memtable; after it they see the files; both under the caller's lock.
//! At most one checkpoint is in flight; the durable index is the one of
//! the last finished checkpoint.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bincode::{Decode, Encode};
use strata_protocol::TelemetryRecord;

use super::chunk::{self, BlockEntry};
use super::job::{CheckpointDone, CheckpointJob, JobPartition};
use super::retention::DurableCounts;
use super::{with_device, BlockRef, StoreError, TelemetryStore};

/// Snapshot format 2 carries the retention ledger; format 1 ("STSNAP01",
/// without it) is still restored, keeping this replica's own counts.
const SNAP_MAGIC: &[u8; 8] = b"STSNAP02";
const SNAP_MAGIC_V1: &[u8; 8] = b"STSNAP01";
/// Allocation limit when decoding a snapshot body (64 GiB): the CRC has been
/// checked first, so this only guards against a buggy sender.
const MAX_SNAPSHOT_BYTES: usize = 64 << 30;

#[derive(Encode, Decode)]
struct SnapDevice {
    tenant: String,
    device: String,
    /// Compressed blocks, as in chunk files.
    blocks: Vec<Vec<u8>>,
}

#[derive(Encode, Decode)]
struct SnapshotBody {
    devices: Vec<SnapDevice>,
    /// The sender's retention ledger totals.
    retention_dropped: DurableCounts,
}

/// Format 1 body: frozen, never edit.
#[derive(Decode)]
struct SnapshotBodyV1 {
    devices: Vec<SnapDevice>,
}

fn block_ref(file: u64, b: &BlockEntry) -> BlockRef {
    BlockRef {
        file,
        offset: b.offset,
        len: b.len,
        count: b.count,
        min_ts: b.min_ts,
        max_ts: b.max_ts,
        crc: b.crc,
    }
}

/// A background checkpoint: its thread and what to undo if it fails.
#[derive(Debug)]
pub(super) struct Inflight {
    handle: JoinHandle<Result<CheckpointDone, StoreError>>,
    applied_index: u64,
    /// Taken from `obsolete`; given back if the job fails.
    deleting: Vec<u64>,
    cancel: Arc<AtomicBool>,
    #[cfg(test)]
    gate: Option<Arc<super::job::Gate>>,
}

impl Inflight {
    /// Stops the job before its manifest if it is not past it, and waits.
    pub(super) fn cancel(self) {
        self.cancel.store(true, Ordering::Release);
        #[cfg(test)]
        if let Some(g) = &self.gate {
            g.open();
        }
        let _ = self.handle.join();
    }
}

impl TelemetryStore {
    fn chunk_path(&self, id: u64) -> PathBuf {
        chunk::chunk_path(&self.cfg.dir, id)
    }

    /// Makes everything inserted so far durable together with
    /// `applied_index` and the encoded region state `fsm_state`, and waits
    /// for it: [`TelemetryStore::begin_checkpoint`] then
    /// [`TelemetryStore::finish_checkpoint`] (after finishing one already in
    /// flight). On error nothing inserted is lost from memory and the
    /// previous checkpoint stays the durable one; retry later.
    pub fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), StoreError> {
        self.finish_checkpoint(true)?;
        self.begin_checkpoint(applied_index, fsm_state.to_vec())?;
        self.finish_checkpoint(true)?;
        Ok(())
    }

    /// Whether a background checkpoint is running or awaits
    /// [`TelemetryStore::finish_checkpoint`].
    pub fn checkpoint_in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    /// Whether the background checkpoint has finished, so that
    /// [`TelemetryStore::finish_checkpoint`] will not wait.
    pub fn checkpoint_finished(&self) -> bool {
        self.inflight
            .as_ref()
            .is_some_and(|i| i.handle.is_finished())
    }

    /// Starts making everything inserted so far durable with
    /// `applied_index` and `fsm_state`, in the background. Cheap: freezes
    /// the memtable and spawns a thread. Returns `false` (and does nothing)
    /// while another checkpoint is in flight.
    pub fn begin_checkpoint(
        &mut self,
        applied_index: u64,
        fsm_state: Vec<u8>,
    ) -> Result<bool, StoreError> {
        if self.inflight.is_some() {
            return Ok(false);
        }
        let mut parts = Vec::new();
        let mut other_files = Vec::new();
        for (start, part) in self.partitions.iter_mut() {
            if part.mem_bytes == 0 {
                other_files.extend(part.files.iter().copied());
                continue;
            }
            let mut frozen = Vec::new();
            for (tenant, devs) in part.devices.iter_mut() {
                for (device, data) in devs.iter_mut() {
                    if data.mem.is_empty() {
                        continue;
                    }
                    let mem = Arc::new(std::mem::take(&mut data.mem));
                    data.frozen = Some(mem.clone());
                    frozen.push((tenant.clone(), device.clone(), mem));
                }
            }
            self.mem_bytes -= part.mem_bytes;
            part.frozen_bytes = std::mem::take(&mut part.mem_bytes);
            parts.push(JobPartition {
                start: *start,
                gen: part.gen,
                frozen,
                files: part.files.clone(),
            });
        }
        let deleting = std::mem::take(&mut self.obsolete);
        let cancel = Arc::new(AtomicBool::new(false));
        let job = CheckpointJob {
            dir: self.cfg.dir.clone(),
            applied_index,
            fsm_state,
            // Every record up to `applied_index` is inserted (or counted)
            // by now: the counts match the files this manifest will name.
            retention_dropped: self.retention.durable(),
            partition_ms: self.cfg.partition_ms,
            next_file_id: self.next_file_id.clone(),
            parts,
            other_files,
            delete_after: deleting.clone(),
            cancel: cancel.clone(),
            #[cfg(test)]
            gate: self.gate.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || job.run());
        let handle = match spawned {
            Ok(h) => h,
            Err(source) => {
                self.obsolete.extend(deleting);
                self.unfreeze();
                return Err(StoreError::Io {
                    path: self.cfg.dir.clone(),
                    source,
                });
            }
        };
        self.inflight = Some(Inflight {
            handle,
            applied_index,
            deleting,
            cancel,
            #[cfg(test)]
            gate: self.gate.clone(),
        });
        Ok(true)
    }

    /// Installs the background checkpoint once it has finished (or, with
    /// `wait`, after waiting for it) and returns the applied index that is
    /// now durable; `None` when none was in flight or (without `wait`) it
    /// is still running. On error the frozen records are back in the
    /// memtable, the previous checkpoint stays the durable one, and a later
    /// checkpoint retries.
    pub fn finish_checkpoint(&mut self, wait: bool) -> Result<Option<u64>, StoreError> {
        match &self.inflight {
            None => return Ok(None),
            Some(i) if !wait && !i.handle.is_finished() => return Ok(None),
            Some(_) => {}
        }
        let Some(inflight) = self.inflight.take() else {
            return Ok(None);
        };
        let applied_index = inflight.applied_index;
        let result = inflight.handle.join().unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into());
            Err(StoreError::Checkpoint {
                dir: self.cfg.dir.clone(),
                detail,
            })
        });
        match result {
            Ok(done) => {
                self.install(done);
                tracing::debug!(applied_index, "store checkpoint durable");
                Ok(Some(applied_index))
            }
            Err(e) => {
                self.obsolete.extend(inflight.deleting);
                self.unfreeze();
                Err(e)
            }
        }
    }

    /// Swaps a finished job's files into the index in place of the frozen
    /// memtables and the files it merged.
    fn install(&mut self, done: CheckpointDone) {
        for pd in done.parts {
            let part = match self.partitions.get_mut(&pd.start) {
                Some(p) if p.gen == pd.gen => p,
                _ => {
                    // Retention dropped the partition meanwhile: its new
                    // files go once a manifest without them is durable.
                    self.obsolete.extend(pd.added.iter().map(|(m, _)| m.id));
                    continue;
                }
            };
            let removed: HashSet<u64> = pd.removed.iter().copied().collect();
            for devs in part.devices.values_mut() {
                for data in devs.values_mut() {
                    data.frozen = None;
                    if !removed.is_empty() {
                        data.blocks.retain(|b| !removed.contains(&b.file));
                    }
                }
            }
            part.frozen_bytes = 0;
            for (meta, index) in &pd.added {
                for b in &index.blocks {
                    with_device(&mut part.devices, &b.tenant, &b.device, |d| {
                        d.blocks.push(block_ref(meta.id, b))
                    });
                }
            }
            part.files.retain(|f| !removed.contains(&f.id));
            part.files.extend(pd.added.iter().map(|(m, _)| *m));
            self.obsolete.extend(pd.removed);
        }
    }

    /// Puts frozen memtables back after a failed checkpoint (before the
    /// records inserted since, though order does not matter: reads sort).
    fn unfreeze(&mut self) {
        for part in self.partitions.values_mut() {
            if part.frozen_bytes == 0 {
                continue;
            }
            for devs in part.devices.values_mut() {
                for data in devs.values_mut() {
                    if let Some(frozen) = data.frozen.take() {
                        let mut mem = Arc::unwrap_or_clone(frozen);
                        mem.append(&data.mem);
                        data.mem = mem;
                    }
                }
            }
            part.mem_bytes += part.frozen_bytes;
            self.mem_bytes += part.frozen_bytes;
            part.frozen_bytes = 0;
        }
    }

    /// Everything the store holds (checkpointed or not, and nothing else) as
    /// one buffer for a Raft snapshot. Checkpointed blocks are copied
    /// compressed, after their CRC is checked.
    pub fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        let mut files: HashMap<u64, (PathBuf, File)> = HashMap::new();
        let mut devices = Vec::new();
        for part in self.partitions.values() {
            for (tenant, devs) in &part.devices {
                for (device, data) in devs {
                    let mut blocks = Vec::with_capacity(data.blocks.len() + 1);
                    for r in &data.blocks {
                        let (p, f) = match files.entry(r.file) {
                            Entry::Occupied(o) => o.into_mut(),
                            Entry::Vacant(v) => {
                                let p = self.chunk_path(r.file);
                                let f = chunk::open(&p)?;
                                v.insert((p, f))
                            }
                        };
                        blocks.push(chunk::read_block_raw(f, p, r.offset, r.len, r.crc)?);
                    }
                    let mems = data.frozen.as_deref().into_iter().chain([&data.mem]);
                    for (seg, bytes) in mems.flat_map(|m| m.segments()) {
                        blocks.push(chunk::raw_block(seg.count, bytes));
                    }
                    if !blocks.is_empty() {
                        devices.push(SnapDevice {
                            tenant: tenant.clone(),
                            device: device.clone(),
                            blocks,
                        });
                    }
                }
            }
        }
        let body = SnapshotBody {
            devices,
            retention_dropped: self.retention.durable(),
        };
        let body = bincode::encode_to_vec(body, chunk::BINCODE).unwrap_or_default();
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(SNAP_MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Replaces all contents with a [`TelemetryStore::snapshot`] (possibly
    /// from another replica, with another partition width) and checkpoints it
    /// with `applied_index` and `fsm_state`. The snapshot is fully decoded
    /// and checked before anything is replaced.
    pub fn restore(
        &mut self,
        data: &[u8],
        applied_index: u64,
        fsm_state: &[u8],
    ) -> Result<(), StoreError> {
        let bad = |detail: String| StoreError::BadSnapshot { detail };
        if data.len() < 12 || (&data[..8] != SNAP_MAGIC && &data[..8] != SNAP_MAGIC_V1) {
            return Err(bad("not a store snapshot (bad magic or too short)".into()));
        }
        let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        let body = &data[12..];
        if crc32fast::hash(body) != crc {
            return Err(bad("checksum mismatch".into()));
        }
        let cfg = chunk::BINCODE.with_limit::<MAX_SNAPSHOT_BYTES>();
        let snap = if &data[..8] == SNAP_MAGIC_V1 {
            let (v1, used): (SnapshotBodyV1, usize) =
                bincode::decode_from_slice(body, cfg).map_err(|e| bad(e.to_string()))?;
            if used != body.len() {
                return Err(bad(format!("{} trailing bytes", body.len() - used)));
            }
            SnapshotBody {
                devices: v1.devices,
                retention_dropped: self.retention.durable(),
            }
        } else {
            let (snap, used): (SnapshotBody, usize) =
                bincode::decode_from_slice(body, cfg).map_err(|e| bad(e.to_string()))?;
            if used != body.len() {
                return Err(bad(format!("{} trailing bytes", body.len() - used)));
            }
            snap
        };
        let mut records: Vec<TelemetryRecord> = Vec::new();
        for dev in &snap.devices {
            for block in &dev.blocks {
                let recs = chunk::decode_block(block)
                    .map_err(|d| bad(format!("block of {}/{}: {d}", dev.tenant, dev.device)))?;
                records.extend(recs);
            }
        }
        let retention_dropped = snap.retention_dropped;
        drop(snap.devices);
        // A checkpoint in flight must not write its older manifest after ours.
        if let Err(e) = self.finish_checkpoint(true) {
            tracing::warn!(error = %e, "background checkpoint failed before a restore replaced it");
        }
        for part in std::mem::take(&mut self.partitions).into_values() {
            self.obsolete.extend(part.files.iter().map(|f| f.id));
        }
        self.mem_bytes = 0;
        self.stored = 0;
        // The sender's counts, then its records: those this replica's
        // retention already dropped count on top, as expired on arrival.
        self.retention.set_totals(retention_dropped);
        self.insert_owned(records);
        self.checkpoint(applied_index, fsm_state)
    }
}
