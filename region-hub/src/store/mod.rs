//! The durable per-replica telemetry store.
//!
//! The Raft log is the store's write-ahead log: [`TelemetryStore::insert`]
//! only appends to an in-memory memtable (no syscall, no fsync), and
//! durability comes from checkpoints, which the Raft driver starts every few
//! seconds or when [`TelemetryStore::needs_checkpoint`] says so. A
//! checkpoint writes the memtable as compressed chunk files, fsyncs them,
//! and then atomically replaces the manifest, which pairs the live files
//! with the applied Raft index and the encoded region state. After a crash,
//! [`TelemetryStore::open`] returns that index and state, and the driver
//! replays Raft entries after it; records inserted after the last completed
//! checkpoint are lost from the store by design and come back from the log.
//!
//! Checkpoints run in the background so the Raft thread never waits for
//! compression, merging or fsync: [`TelemetryStore::begin_checkpoint`]
//! only freezes the memtable (a pointer swap per device) and starts a
//! thread; [`TelemetryStore::finish_checkpoint`] later swaps the written
//! files into the index and reports the index that is now durable. Reads
//! see the memtable, the frozen memtable and the files throughout.
//!
//! # Layout
//! - this file: config, errors, the in-memory index, open / insert / retention.
//! - [`checkpoint`](self::checkpoint): begin / finish / checkpoint, snapshot and restore.
//! - `job`: the background part of a checkpoint; `merge`: which files to
//!   merge (size-tiered) and merging by block copy.
//! - [`query`](self::query): raw and downsampled reads.
//! - `memtable`: encoded per-device memtables; `chunk`: the chunk file
//!   format; `manifest`: the atomic manifest.
//! - `retention`: the per-tenant ledger of what retention dropped.
//!
//! Data is time-partitioned (`partition-ms`); inside a partition each
//! (tenant, device) has a memtable and a list of compressed blocks in chunk
//! files, so retention drops whole partitions and a query reads only its
//! device's blocks in the partitions it overlaps.
//!
//! Nothing retention drops goes unseen: readings that arrive for a
//! partition it already dropped, and readings dropped with their partition,
//! are counted per tenant (`retention`), checkpointed with the manifest and
//! reported through [`TelemetryStore::retention_report`] and
//! [`TelemetryStore::take_retention_drops`].

#[cfg(test)]
mod background_tests;
#[cfg(test)]
mod bench;
mod checkpoint;
mod chunk;
mod job;
mod manifest;
mod memtable;
mod merge;
mod query;
mod retention;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use strata_protocol::{DeviceInfo, RetentionReport, TelemetryRecord, TenantRetention};

use manifest::FileMeta;
use memtable::MemBuf;
use retention::{RetentionCounts, RetentionLedger};

/// Telemetry store configuration (`[store]` in the hub's TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// Directory holding chunk files and the manifest. Default `"store"`.
    pub dir: PathBuf,
    /// Width of a time partition, in ms. Default 3 600 000 (one hour). Fixed
    /// for the life of a store: opening a store with another value is refused.
    pub partition_ms: u64,
    /// Partitions entirely older than this many ms before "now" are dropped
    /// by [`TelemetryStore::enforce_retention`], and readings arriving for
    /// them are not stored; both are counted per tenant. 0 keeps data for
    /// ever. Default 604 800 000 (7 days).
    pub retention_ms: u64,
    /// Memtable size in bytes above which [`TelemetryStore::needs_checkpoint`]
    /// says a checkpoint is due. Default 33 554 432 (32 MiB).
    pub flush_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::from("store"),
            partition_ms: 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            flush_bytes: 32 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    /// Checks every field; reports all problems at once.
    pub fn validate(&self) -> Result<(), StoreError> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push("store.dir must not be empty".to_owned());
        }
        if self.partition_ms == 0 || self.partition_ms > i64::MAX as u64 {
            problems.push(format!(
                "store.partition-ms must be between 1 and {}, got {}",
                i64::MAX,
                self.partition_ms
            ));
        }
        if self.retention_ms > i64::MAX as u64 {
            problems.push(format!(
                "store.retention-ms must be at most {} (0 keeps data for ever), got {}",
                i64::MAX,
                self.retention_ms
            ));
        }
        if self.flush_bytes == 0 {
            problems.push("store.flush-bytes must be at least 1".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Config { problems })
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The configuration is invalid.
    #[error("invalid store configuration: {}", problems.join("; "))]
    Config {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// A filesystem operation failed.
    #[error("store I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file the manifest names is damaged.
    #[error("corrupt store file {}: {detail}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The store on disk was created with another partition width.
    #[error(
        "store in {} was created with partition-ms {on_disk}, config says {configured}; \
         set partition-ms back to {on_disk} (or move the directory away to start empty)",
        dir.display()
    )]
    PartitionMsChanged {
        /// The store directory.
        dir: PathBuf,
        /// Width recorded in the manifest.
        on_disk: u64,
        /// Width in the configuration.
        configured: u64,
    },
    /// A Raft snapshot given to [`TelemetryStore::restore`] is invalid.
    #[error("invalid store snapshot: {detail}")]
    BadSnapshot {
        /// What is wrong.
        detail: String,
    },
    /// The background checkpoint thread died or was stopped.
    #[error("background checkpoint of the store in {} failed: {detail}", dir.display())]
    Checkpoint {
        /// The store directory.
        dir: PathBuf,
        /// What happened.
        detail: String,
    },
    /// The query is invalid.
    #[error("bad query: {detail}")]
    BadQuery {
        /// What is wrong.
        detail: String,
    },
}

/// What [`TelemetryStore::open`] found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Raft index of the last checkpoint (0 when new).
    pub applied_index: u64,
    /// Encoded region state of the last checkpoint (empty when new).
    pub fsm_state: Vec<u8>,
}

/// A block of one device in a chunk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockRef {
    file: u64,
    offset: u64,
    len: u32,
    count: u32,
    min_ts: i64,
    max_ts: i64,
    crc: u32,
}

/// One device's data in one partition.
#[derive(Debug, Default)]
struct DeviceData {
    /// Not yet checkpointed.
    mem: MemBuf,
    /// Being written by the background checkpoint; shared with it.
    frozen: Option<Arc<MemBuf>>,
    /// Checkpointed blocks.
    blocks: Vec<BlockRef>,
    records: u64,
    first_ts: i64,
    last_ts: i64,
}

impl DeviceData {
    fn note(&mut self, count: u64, min_ts: i64, max_ts: i64) {
        if self.records == 0 {
            self.first_ts = min_ts;
            self.last_ts = max_ts;
        } else {
            self.first_ts = self.first_ts.min(min_ts);
            self.last_ts = self.last_ts.max(max_ts);
        }
        self.records += count;
    }
}

/// tenant → device → data; nested so lookups by `&str` do not allocate.
type Devices = HashMap<String, HashMap<String, DeviceData>>;

/// Runs `f` on the device's data, creating it if needed. A closure rather
/// than a returned `&mut` so the lookup allocates only on a miss (returning
/// the borrow would hit the NLL "conditional return" limitation).
fn with_device<R>(
    devices: &mut Devices,
    tenant: &str,
    device: &str,
    f: impl FnOnce(&mut DeviceData) -> R,
) -> R {
    let devs = match devices.get_mut(tenant) {
        Some(d) => d,
        None => devices.entry(tenant.to_owned()).or_default(),
    };
    let data = match devs.get_mut(device) {
        Some(d) => d,
        None => devs.entry(device.to_owned()).or_default(),
    };
    f(data)
}

/// One time partition `[start, start + partition-ms)`.
#[derive(Debug, Default)]
struct Partition {
    /// Unique per partition object, so a background checkpoint does not
    /// install files into a partition retention dropped and inserts
    /// recreated meanwhile.
    gen: u64,
    devices: Devices,
    /// Live chunk files, oldest first.
    files: Vec<FileMeta>,
    /// Memtable bytes (encoded).
    mem_bytes: u64,
    /// Frozen memtable bytes (a background checkpoint is writing them).
    frozen_bytes: u64,
    records: u64,
}

/// The partition starting at `start`, created (with a fresh `gen`) if needed.
fn partition_mut<'a>(
    partitions: &'a mut BTreeMap<i64, Partition>,
    next_gen: &mut u64,
    start: i64,
) -> &'a mut Partition {
    partitions.entry(start).or_insert_with(|| {
        *next_gen += 1;
        Partition {
            gen: *next_gen,
            ..Partition::default()
        }
    })
}

/// Start of the partition (or bucket) of width `width` holding `ts`, aligned
/// to the Unix epoch. Saturates for timestamps within one width of
/// `i64::MIN`, which all share one partition.
fn align(ts: i64, width: i64) -> i64 {
    ts.div_euclid(width).checked_mul(width).unwrap_or(i64::MIN)
}

/// The store. One per replica; owned by the Raft driver.
#[derive(Debug)]
pub struct TelemetryStore {
    cfg: StoreConfig,
    partitions: BTreeMap<i64, Partition>,
    mem_bytes: u64,
    stored: u64,
    /// Shared with the background checkpoint, which allocates ids too.
    next_file_id: Arc<AtomicU64>,
    next_gen: u64,
    /// Files dropped from the index (merged or expired); deleted once a
    /// manifest without them is durable.
    obsolete: Vec<u64>,
    /// The background checkpoint, if one is running or finished but not
    /// yet installed.
    inflight: Option<checkpoint::Inflight>,
    /// What retention dropped, per tenant.
    retention: RetentionLedger,
    /// Tests hold a background checkpoint before its manifest with this.
    #[cfg(test)]
    gate: Option<Arc<job::Gate>>,
}

impl Drop for TelemetryStore {
    /// Stops a background checkpoint before its manifest if it has not got
    /// there yet (as a crash would) and waits for its thread, so no writer
    /// outlives the store and races a reopened one.
    fn drop(&mut self) {
        if let Some(inflight) = self.inflight.take() {
            inflight.cancel();
        }
    }
}

impl TelemetryStore {
    /// Opens (or creates) the store in `cfg.dir`: reads the manifest, loads
    /// the index of every chunk file it names, and deletes files it does not
    /// name (leftovers of a checkpoint interrupted by a crash).
    pub fn open(cfg: StoreConfig) -> Result<(TelemetryStore, Recovered), StoreError> {
        cfg.validate()?;
        let dir = cfg.dir.clone();
        // 0700 (the hub checked its data directory, and this one when it
        // lies outside); chunk and manifest files are created 0600.
        strata_net::files::create_private_dir(&dir).map_err(|e| StoreError::Io {
            path: dir.clone(),
            source: e.into(),
        })?;
        let manifest = manifest::read(&dir)?;
        let mut store = TelemetryStore {
            cfg,
            partitions: BTreeMap::new(),
            mem_bytes: 0,
            stored: 0,
            next_file_id: Arc::new(AtomicU64::new(1)),
            next_gen: 0,
            obsolete: Vec::new(),
            inflight: None,
            retention: RetentionLedger::default(),
            #[cfg(test)]
            gate: None,
        };
        let mut recovered = Recovered::default();
        let mut live = std::collections::HashSet::new();
        if let Some(m) = manifest {
            if m.partition_ms != store.cfg.partition_ms {
                return Err(StoreError::PartitionMsChanged {
                    dir,
                    on_disk: m.partition_ms,
                    configured: store.cfg.partition_ms,
                });
            }
            store.next_file_id.store(m.next_file_id, Ordering::Relaxed);
            for meta in &m.files {
                let path = chunk::chunk_path(&dir, meta.id);
                let index = chunk::read_index(&path)?;
                if index.partition != meta.partition {
                    return Err(StoreError::Corrupt {
                        path,
                        detail: format!(
                            "holds partition {} but the manifest says {}",
                            index.partition, meta.partition
                        ),
                    });
                }
                store.add_file(*meta, index);
                live.insert(meta.id);
            }
            store.retention = RetentionLedger::from_durable(m.retention_dropped);
            recovered = Recovered {
                applied_index: m.applied_index,
                fsm_state: m.fsm_state,
            };
        }
        store.remove_unreferenced(&live)?;
        tracing::info!(
            dir = %dir.display(),
            applied_index = recovered.applied_index,
            records = store.stored,
            files = live.len(),
            "telemetry store opened"
        );
        Ok((store, recovered))
    }

    /// Deletes chunk files and temp manifests not in `live`.
    fn remove_unreferenced(&self, live: &std::collections::HashSet<u64>) -> Result<(), StoreError> {
        let dir = &self.cfg.dir;
        let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = match chunk::chunk_id(name) {
                Some(id) => !live.contains(&id),
                None => name == manifest::MANIFEST_TMP,
            };
            if stale {
                tracing::warn!(file = %entry.path().display(), "removing file not in the manifest (interrupted checkpoint)");
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove stale file");
                }
            }
        }
        Ok(())
    }

    /// Adds a written chunk file to the in-memory index.
    fn add_file(&mut self, meta: FileMeta, index: chunk::FileIndex) {
        let part = partition_mut(&mut self.partitions, &mut self.next_gen, meta.partition);
        for b in index.blocks {
            with_device(&mut part.devices, &b.tenant, &b.device, |dev| {
                dev.note(u64::from(b.count), b.min_ts, b.max_ts);
                dev.blocks.push(BlockRef {
                    file: meta.id,
                    offset: b.offset,
                    len: b.len,
                    count: b.count,
                    min_ts: b.min_ts,
                    max_ts: b.max_ts,
                    crc: b.crc,
                });
            });
            part.records += u64::from(b.count);
            self.stored += u64::from(b.count);
        }
        part.files.push(meta);
    }

    /// Adds records to the memtable: no IO, no fsync (the Raft log is the
    /// write-ahead log). Records are encoded into their device's buffer, so
    /// nothing is cloned or allocated per record.
    pub fn insert(&mut self, records: &[TelemetryRecord]) {
        for r in records {
            self.insert_one(r);
        }
    }

    /// Like [`TelemetryStore::insert`], taking the records by value.
    pub fn insert_owned(&mut self, records: Vec<TelemetryRecord>) {
        self.insert(&records);
    }

    fn insert_one(&mut self, r: &TelemetryRecord) {
        if self.retention.expired_on_arrival(r.ts_ms) {
            let n = RetentionCounts {
                expired_on_arrival: 1,
                expired: 0,
            };
            self.retention.count(&r.tenant, n);
            return;
        }
        // partition-ms fits in i64: checked by validate().
        let start = align(r.ts_ms, self.cfg.partition_ms as i64);
        let part = partition_mut(&mut self.partitions, &mut self.next_gen, start);
        // Look up by &str; the names are copied only for a new device.
        let size = with_device(&mut part.devices, &r.tenant, &r.device, |dev| {
            let size = dev.mem.push(r) as u64;
            if size > 0 {
                dev.note(1, r.ts_ms, r.ts_ms);
            }
            size
        });
        if size > 0 {
            part.mem_bytes += size;
            part.records += 1;
            self.mem_bytes += size;
            self.stored += 1;
        }
    }

    /// Devices with stored data, optionally of one tenant, sorted by tenant
    /// then device.
    pub fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        let mut acc: BTreeMap<(&str, &str), DeviceInfo> = BTreeMap::new();
        for part in self.partitions.values() {
            for (t, devs) in &part.devices {
                if tenant.is_some_and(|want| want != t) {
                    continue;
                }
                for (d, data) in devs {
                    if data.records == 0 {
                        continue;
                    }
                    let info = acc.entry((t, d)).or_insert_with(|| DeviceInfo {
                        tenant: t.clone(),
                        device: d.clone(),
                        records: 0,
                        first_ts_ms: data.first_ts,
                        last_ts_ms: data.last_ts,
                        // Replicated counters; the hub adds them from the
                        // region state (`fsm::add_device_dedup`).
                        retransmissions_dropped: 0,
                        seq_reuses: 0,
                        edge: None,
                    });
                    info.records += data.records;
                    info.first_ts_ms = info.first_ts_ms.min(data.first_ts);
                    info.last_ts_ms = info.last_ts_ms.max(data.last_ts);
                }
            }
        }
        acc.into_values().collect()
    }

    /// Records held (checkpointed or not).
    pub fn stored_records(&self) -> u64 {
        self.stored
    }

    /// Whether the memtable has grown past `flush-bytes`.
    pub fn needs_checkpoint(&self) -> bool {
        self.mem_bytes >= self.cfg.flush_bytes
    }

    /// Drops every partition that ends at or before `now_ms - retention-ms`;
    /// returns how many. Their files are deleted after the next checkpoint
    /// (the durable manifest must stop naming them first); until then a
    /// crash brings them back and the next call drops them again. Their
    /// records are counted per tenant, and from now on a reading for a
    /// dropped partition is counted as expired on arrival, not inserted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        if self.cfg.retention_ms == 0 {
            return Ok(0);
        }
        let width = self.cfg.partition_ms as i64;
        let cutoff = now_ms.saturating_sub(self.cfg.retention_ms as i64);
        // A partition ends at or before the cutoff iff it starts before the
        // start of the partition holding the cutoff.
        let retained_from = align(cutoff, width);
        self.retention.retain_from(retained_from);
        let expired: Vec<i64> = self
            .partitions
            .keys()
            .copied()
            .take_while(|start| *start < retained_from)
            .collect();
        for start in &expired {
            if let Some(part) = self.partitions.remove(start) {
                self.mem_bytes -= part.mem_bytes;
                self.stored -= part.records;
                self.obsolete.extend(part.files.iter().map(|f| f.id));
                for (tenant, devs) in &part.devices {
                    let expired = devs.values().map(|d| d.records).sum();
                    if expired > 0 {
                        let n = RetentionCounts {
                            expired_on_arrival: 0,
                            expired,
                        };
                        self.retention.count(tenant, n);
                    }
                }
                tracing::debug!(
                    partition_start_ms = start,
                    records = part.records,
                    "retention dropped partition"
                );
            }
        }
        Ok(expired.len())
    }

    /// What retention dropped since the store was created, per tenant
    /// (optionally one), with the retention bound now in force.
    pub fn retention_report(&self, tenant: Option<&str>) -> RetentionReport {
        self.retention.report(tenant, self.cfg.retention_ms)
    }

    /// Drops not reported yet, per tenant, for metrics and the log: empty
    /// unless there are some and the last report is at least 10 s before
    /// `now_ms` (so a steady stream of expired readings is reported once
    /// per 10 s).
    pub fn take_retention_drops(&mut self, now_ms: i64) -> Vec<TenantRetention> {
        self.retention.take_report(now_ms)
    }
}
