//! The background part of a checkpoint: everything slow, off the Raft
//! thread. It works only on immutable inputs (frozen memtables, chunk files
//! that the index names and nobody deletes while it runs) and on files it
//! creates, so it needs no lock on the store.
//!
//! Order, so that a crash at any point leaves the previous checkpoint
//! intact: (1) write each frozen partition as a new chunk file, fsynced;
//! (2) merge files as `merge::plan` says, fsynced; (3) fsync the directory;
//! (4) write the manifest atomically; (5) delete the files the manifest
//! before this one had already dropped (no reader or manifest names them).
//! Files written before (4) are named by no manifest: `open` deletes them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::chunk::{self, ChunkWriter, FileIndex};
use super::manifest::{self, FileMeta, Manifest};
use super::memtable::MemBuf;
use super::retention::DurableCounts;
use super::{merge, StoreError};

/// One partition with a frozen memtable.
pub(super) struct JobPartition {
    pub start: i64,
    pub gen: u64,
    /// (tenant, device, records) of every device with frozen records.
    pub frozen: Vec<(String, String, Arc<MemBuf>)>,
    /// The partition's live files when the checkpoint began, oldest first.
    pub files: Vec<FileMeta>,
}

/// Everything a background checkpoint needs.
pub(super) struct CheckpointJob {
    pub dir: PathBuf,
    pub applied_index: u64,
    pub fsm_state: Vec<u8>,
    /// The retention ledger's totals when the checkpoint began.
    pub retention_dropped: DurableCounts,
    pub partition_ms: u64,
    pub next_file_id: Arc<AtomicU64>,
    pub parts: Vec<JobPartition>,
    /// Live files of the partitions without frozen data.
    pub other_files: Vec<FileMeta>,
    /// Files no longer named by the index when the checkpoint began.
    pub delete_after: Vec<u64>,
    /// Set when the store is dropped: stop before the manifest, as a crash would.
    pub cancel: Arc<AtomicBool>,
    #[cfg(test)]
    pub gate: Option<Arc<Gate>>,
}

/// What a finished job changed in one partition.
pub(super) struct PartitionDone {
    pub start: i64,
    pub gen: u64,
    /// Files to add to the index.
    pub added: Vec<(FileMeta, FileIndex)>,
    /// Files (live at the start) merged away.
    pub removed: Vec<u64>,
}

/// What a finished job made durable.
pub(super) struct CheckpointDone {
    pub parts: Vec<PartitionDone>,
}

impl CheckpointJob {
    fn take_file_id(&self) -> u64 {
        self.next_file_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs the checkpoint; on error deletes every file it created.
    pub fn run(self) -> Result<CheckpointDone, StoreError> {
        let mut created = Vec::new();
        let result = self.run_inner(&mut created);
        // Cancelled means "as if crashed": leave the files to `open`.
        if result.is_err() && !self.cancel.load(Ordering::Acquire) {
            for id in created {
                let _ = std::fs::remove_file(chunk::chunk_path(&self.dir, id));
            }
        }
        result
    }

    fn run_inner(&self, created: &mut Vec<u64>) -> Result<CheckpointDone, StoreError> {
        let mut done = CheckpointDone {
            parts: Vec::with_capacity(self.parts.len()),
        };
        let mut files_now = self.other_files.clone();
        // Files made and then merged away by this job: named by no manifest.
        let mut scratch = Vec::new();
        for part in &self.parts {
            let mut files = part.files.clone();
            let mut added: Vec<(FileMeta, FileIndex)> = Vec::new();
            let mut removed = Vec::new();
            if !part.frozen.is_empty() {
                let id = self.take_file_id();
                created.push(id);
                let (index, bytes) = self.write_frozen(id, part)?;
                let meta = FileMeta {
                    id,
                    partition: part.start,
                    bytes,
                };
                files.push(meta);
                added.push((meta, index));
            }
            while let Some(inputs) = merge::plan(&files) {
                let id = self.take_file_id();
                created.push(id);
                let out = chunk::chunk_path(&self.dir, id);
                let (index, bytes) = merge::merge_files(&self.dir, part.start, &inputs, &out)?;
                let new: HashSet<u64> = added.iter().map(|(m, _)| m.id).collect();
                for input in &inputs {
                    if new.contains(input) {
                        scratch.push(*input);
                    } else {
                        removed.push(*input);
                    }
                }
                files.retain(|f| !inputs.contains(&f.id));
                added.retain(|(m, _)| !inputs.contains(&m.id));
                let meta = FileMeta {
                    id,
                    partition: part.start,
                    bytes,
                };
                files.push(meta);
                added.push((meta, index));
            }
            files_now.extend(files);
            done.parts.push(PartitionDone {
                start: part.start,
                gen: part.gen,
                added,
                removed,
            });
        }
        if !created.is_empty() {
            // New chunk names must be durable before a manifest names them.
            manifest::sync_dir(&self.dir)?;
        }
        #[cfg(test)]
        if let Some(gate) = &self.gate {
            gate.wait();
        }
        if self.cancel.load(Ordering::Acquire) {
            return Err(StoreError::Checkpoint {
                dir: self.dir.clone(),
                detail: "stopped before its manifest: the store was dropped".into(),
            });
        }
        files_now.sort_by_key(|f| (f.partition, f.id));
        let m = Manifest {
            applied_index: self.applied_index,
            fsm_state: self.fsm_state.clone(),
            partition_ms: self.partition_ms,
            next_file_id: self.next_file_id.load(Ordering::Relaxed),
            files: files_now,
            retention_dropped: self.retention_dropped.clone(),
        };
        // From here on a failure may leave the new manifest durable, naming
        // the new files: they must stay (an unreferenced one is removed by `open`).
        created.clear();
        manifest::write(&self.dir, &m)?;
        for id in self.delete_after.iter().chain(&scratch) {
            let path = chunk::chunk_path(&self.dir, *id);
            // A leftover is harmless: open() deletes files the manifest does not name.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete obsolete chunk file");
            }
        }
        Ok(done)
    }

    /// Writes a partition's frozen memtables as one chunk file: each
    /// memtable segment becomes one block, compressed as is.
    fn write_frozen(&self, id: u64, part: &JobPartition) -> Result<(FileIndex, u64), StoreError> {
        let mut w = ChunkWriter::create(chunk::chunk_path(&self.dir, id), part.start)?;
        for (tenant, device, mem) in &part.frozen {
            for (seg, bytes) in mem.segments() {
                let block = chunk::raw_block(seg.count, bytes);
                w.add_raw_block(tenant, device, &block, seg.count, seg.min_ts, seg.max_ts)?;
            }
        }
        w.finish()
    }
}

/// Test hook: holds a background checkpoint just before its manifest until
/// opened.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct Gate {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}
