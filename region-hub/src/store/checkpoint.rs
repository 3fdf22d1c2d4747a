//! Making the store durable (checkpoint, chunk merging) and moving all of it
//! between replicas (Raft snapshot and restore).
//!
//! Checkpoint order, so that a crash at any point leaves the last completed
//! checkpoint intact: (1) write each partition's memtable as a new chunk file
//! and fsync it; (2) merge small files; (3) fsync the directory; (4) write the
//! manifest atomically; (5) only then delete files the new manifest no longer
//! names. Files written by a checkpoint that never reached (4) are not in the
//! manifest and are deleted by the next `open`.
//!
//! Merging follows the logarithmic method: after a partition gains a file,
//! its two newest files are merged while the newer is at least half the size
//! of the older. A partition then holds O(log n) files and each record is
//! rewritten O(log n) times, however often the driver checkpoints.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use bincode::{Decode, Encode};
use strata_protocol::TelemetryRecord;

use super::chunk::{self, BlockEntry, ChunkWriter, BLOCK_RECORDS};
use super::manifest::{self, FileMeta, Manifest};
use super::{with_device, BlockRef, StoreError, TelemetryStore};

const SNAP_MAGIC: &[u8; 8] = b"STSNAP01";
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

impl TelemetryStore {
    fn chunk_path(&self, id: u64) -> PathBuf {
        chunk::chunk_path(&self.cfg.dir, id)
    }

    fn take_file_id(&mut self) -> u64 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id
    }

    /// Makes everything inserted so far durable together with
    /// `applied_index` and the encoded region state `fsm_state`: chunk files
    /// are fsynced, then the manifest is replaced atomically (temp + fsync +
    /// rename + fsync dir). On error nothing inserted is lost from memory and
    /// the previous checkpoint stays the durable one; retry later.
    pub fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), StoreError> {
        let dirty: Vec<i64> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.mem_bytes > 0)
            .map(|(start, _)| *start)
            .collect();
        for start in &dirty {
            self.flush_partition(*start)?;
            self.merge_partition(*start)?;
        }
        if !dirty.is_empty() {
            // New chunk names must be durable before a manifest names them.
            manifest::sync_dir(&self.cfg.dir)?;
        }
        let m = Manifest {
            applied_index,
            fsm_state: fsm_state.to_vec(),
            partition_ms: self.cfg.partition_ms,
            next_file_id: self.next_file_id,
            files: self
                .partitions
                .values()
                .flat_map(|p| p.files.iter().copied())
                .collect(),
        };
        manifest::write(&self.cfg.dir, &m)?;
        for id in std::mem::take(&mut self.obsolete) {
            let path = self.chunk_path(id);
            // A leftover is harmless: open() deletes files the manifest does not name.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete obsolete chunk file");
            }
        }
        tracing::debug!(
            applied_index,
            partitions_flushed = dirty.len(),
            "store checkpoint"
        );
        Ok(())
    }

    /// Writes one partition's memtable as a new chunk file and moves it into
    /// the index.
    fn flush_partition(&mut self, start: i64) -> Result<(), StoreError> {
        let id = self.take_file_id();
        let path = self.chunk_path(id);
        let Some(part) = self.partitions.get_mut(&start) else {
            return Ok(());
        };
        let written = (|| {
            let mut w = ChunkWriter::create(path.clone(), start)?;
            for (tenant, devs) in part.devices.iter_mut() {
                for (device, data) in devs.iter_mut() {
                    if !data.mem.is_empty() {
                        w.add_device(tenant, device, &mut data.mem)?;
                    }
                }
            }
            w.finish()
        })();
        let (index, bytes) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        for b in &index.blocks {
            with_device(&mut part.devices, &b.tenant, &b.device, |d| {
                d.blocks.push(block_ref(id, b))
            });
        }
        for devs in part.devices.values_mut() {
            for data in devs.values_mut() {
                // take, not clear: a burst must not pin memory until the next one.
                drop(std::mem::take(&mut data.mem));
            }
        }
        self.mem_bytes -= part.mem_bytes;
        part.mem_bytes = 0;
        part.files.push(FileMeta {
            id,
            partition: start,
            bytes,
        });
        Ok(())
    }

    /// Merges the partition's newest two files while the newer is at least
    /// half the size of the older.
    fn merge_partition(&mut self, start: i64) -> Result<(), StoreError> {
        loop {
            let Some(part) = self.partitions.get(&start) else {
                return Ok(());
            };
            let n = part.files.len();
            if n < 2 || part.files[n - 1].bytes.saturating_mul(2) < part.files[n - 2].bytes {
                return Ok(());
            }
            let (older, newer) = (part.files[n - 2].id, part.files[n - 1].id);
            self.merge_two(start, older, newer)?;
        }
    }

    fn merge_two(&mut self, start: i64, a: u64, b: u64) -> Result<(), StoreError> {
        let id = self.take_file_id();
        let path = self.chunk_path(id);
        let (pa, pb) = (self.chunk_path(a), self.chunk_path(b));
        let Some(part) = self.partitions.get_mut(&start) else {
            return Ok(());
        };
        let written = (|| {
            let (fa, fb) = (chunk::open(&pa)?, chunk::open(&pb)?);
            let mut w = ChunkWriter::create(path.clone(), start)?;
            let mut recs = Vec::new();
            for (tenant, devs) in &part.devices {
                for (device, data) in devs {
                    recs.clear();
                    for r in data.blocks.iter().filter(|r| r.file == a || r.file == b) {
                        let (f, p) = if r.file == a { (&fa, &pa) } else { (&fb, &pb) };
                        recs.extend(chunk::read_block(f, p, r.offset, r.len, r.crc)?);
                    }
                    if !recs.is_empty() {
                        w.add_device(tenant, device, &mut recs)?;
                    }
                }
            }
            w.finish()
        })();
        let (index, bytes) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        for devs in part.devices.values_mut() {
            for data in devs.values_mut() {
                data.blocks.retain(|r| r.file != a && r.file != b);
            }
        }
        for e in &index.blocks {
            with_device(&mut part.devices, &e.tenant, &e.device, |d| {
                d.blocks.push(block_ref(id, e))
            });
        }
        part.files.retain(|f| f.id != a && f.id != b);
        part.files.push(FileMeta {
            id,
            partition: start,
            bytes,
        });
        self.obsolete.extend([a, b]);
        Ok(())
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
                    for piece in data.mem.chunks(BLOCK_RECORDS) {
                        blocks.push(chunk::encode_block(piece));
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
        let body = bincode::encode_to_vec(SnapshotBody { devices }, bincode::config::standard())
            .unwrap_or_default();
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
        if data.len() < 12 || &data[..8] != SNAP_MAGIC {
            return Err(bad("not a store snapshot (bad magic or too short)".into()));
        }
        let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        let body = &data[12..];
        if crc32fast::hash(body) != crc {
            return Err(bad("checksum mismatch".into()));
        }
        let cfg = bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>();
        let (snap, used): (SnapshotBody, usize) =
            bincode::decode_from_slice(body, cfg).map_err(|e| bad(e.to_string()))?;
        if used != body.len() {
            return Err(bad(format!("{} trailing bytes", body.len() - used)));
        }
        let mut records: Vec<TelemetryRecord> = Vec::new();
        for dev in &snap.devices {
            for block in &dev.blocks {
                let recs = chunk::decode_block(block)
                    .map_err(|d| bad(format!("block of {}/{}: {d}", dev.tenant, dev.device)))?;
                records.extend(recs);
            }
        }
        drop(snap);
        for part in std::mem::take(&mut self.partitions).into_values() {
            self.obsolete.extend(part.files.iter().map(|f| f.id));
        }
        self.mem_bytes = 0;
        self.stored = 0;
        self.insert_owned(records);
        self.checkpoint(applied_index, fsm_state)
    }
}
