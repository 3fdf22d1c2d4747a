//! [`RegionState`]: what every replica of a region agrees on besides the
//! telemetry itself — edges, devices, and the dedup state that makes the
//! telemetry store exactly-once.
//!
//! Maps are `BTreeMap`s so the encoded state (snapshots, checkpoints) is
//! byte-identical across replicas, which makes divergence easy to detect.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use strata_protocol::{DeviceInfo, EdgeInfo, EdgeStatus, TelemetryBatch, TelemetryRecord};

use super::interval::IntervalSet;
use super::{Applied, FsmError, Outcome};

/// Most intervals kept per dedup set (per edge epoch and per device). See
/// [`IntervalSet::enforce_cap`] for what is traded when it is exceeded: with
/// in-order spools and a bounded number of batches in flight an edge set
/// stays at one or two intervals, so 1024 is only reached by a broken sender.
pub const DEDUP_MAX_INTERVALS: usize = 1024;

/// Format byte leading [`RegionState::encode`]; bump on incompatible change.
const STATE_FORMAT: u8 = 1;

/// Allocation limit when decoding state (1 GiB): state is local or comes
/// from a peer's CRC-checked snapshot, but a bound keeps a corrupt length
/// field from aborting the process.
const MAX_STATE_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
struct EdgeEntry {
    last_seen_ms: i64,
    status: EdgeStatus,
    records_stored: u64,
    /// Edge sequence numbers stored, per spool epoch. Epochs are kept for
    /// ever: an edge gets a new one only when its spool is wiped, which is
    /// rare, and each costs a few dozen bytes.
    epochs: BTreeMap<u64, IntervalSet>,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
struct DeviceEntry {
    records: u64,
    first_ts_ms: i64,
    last_ts_ms: i64,
    /// Device `seq`s stored (since the device's last detected seq restart).
    seqs: IntervalSet,
}

/// The replicated region state. Encoded with [`RegionState::encode`] into
/// snapshots and store checkpoints.
#[derive(Debug, Default, Clone, PartialEq, Encode, Decode)]
pub struct RegionState {
    applied_index: u64,
    edges: BTreeMap<String, EdgeEntry>,
    /// tenant → device → entry; nested so lookups by `&str` do not allocate.
    devices: BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: u64,
    device_seq_restarts: u64,
}

impl RegionState {
    /// Highest Raft index applied (0 when new).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub(super) fn set_applied_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// Edges known to the region, sorted by name.
    pub fn edges(&self) -> Vec<EdgeInfo> {
        self.edges
            .iter()
            .map(|(edge, e)| EdgeInfo {
                edge: edge.clone(),
                last_seen_ms: e.last_seen_ms,
                status: e.status.clone(),
                records_stored: e.records_stored,
            })
            .collect()
    }

    /// Devices with at least one stored record, optionally of one tenant,
    /// sorted by tenant then device.
    pub fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        self.devices
            .iter()
            .filter(|(t, _)| tenant.is_none_or(|want| want == t.as_str()))
            .flat_map(|(t, devs)| {
                devs.iter().map(move |(d, e)| DeviceInfo {
                    tenant: t.clone(),
                    device: d.clone(),
                    records: e.records,
                    first_ts_ms: e.first_ts_ms,
                    last_ts_ms: e.last_ts_ms,
                })
            })
            .collect()
    }

    /// Number of devices with at least one stored record.
    pub fn device_count(&self) -> usize {
        self.devices.values().map(BTreeMap::len).sum()
    }

    /// Gaps filled in dedup sets to bound their size (see
    /// [`IntervalSet::enforce_cap`]); non-zero means a very late record may
    /// have been dropped as a duplicate.
    pub fn dedup_gaps_merged(&self) -> u64 {
        self.dedup_gaps_merged
    }

    /// Times a device's seq was seen again with a newer timestamp than any
    /// stored reading, taken as a device seq restart (reboot).
    pub fn device_seq_restarts(&self) -> u64 {
        self.device_seq_restarts
    }

    /// Versioned bytes for snapshots and checkpoints.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT];
        // Encoding plain data into a Vec cannot fail.
        let _ = bincode::encode_into_std_write(self, &mut out, bincode::config::standard());
        out
    }

    /// Inverse of [`RegionState::encode`]. Empty bytes decode to the empty
    /// state (a brand-new store has no state yet).
    pub fn decode(bytes: &[u8]) -> Result<RegionState, FsmError> {
        let Some((&format, body)) = bytes.split_first() else {
            return Ok(RegionState::default());
        };
        if format != STATE_FORMAT {
            return Err(FsmError::CorruptState {
                detail: format!(
                    "state format {format} is not supported (this build reads {STATE_FORMAT})"
                ),
            });
        }
        let cfg = bincode::config::standard().with_limit::<MAX_STATE_BYTES>();
        let (state, used): (RegionState, usize) =
            bincode::decode_from_slice(body, cfg).map_err(|e| FsmError::CorruptState {
                detail: e.to_string(),
            })?;
        if used != body.len() {
            return Err(FsmError::CorruptState {
                detail: format!("{} trailing bytes", body.len() - used),
            });
        }
        Ok(state)
    }

    pub(super) fn record_heartbeat(&mut self, status: EdgeStatus, received_ms: i64) {
        let e = edge_entry(&mut self.edges, status.edge.clone());
        // max: a new leader's clock may be slightly behind the old one's.
        e.last_seen_ms = e.last_seen_ms.max(received_ms);
        e.status = status;
    }

    /// Layer 1 (edge seq) then layer 2 (device seq) dedup; returns what to store.
    pub(super) fn store_batch(&mut self, batch: TelemetryBatch, received_ms: i64) -> Applied {
        let TelemetryBatch {
            edge,
            epoch,
            first_seq,
            records,
        } = batch;
        let count = records.len();
        // Saturating: a batch reaching past u64::MAX cannot come from a real
        // spool; records beyond it bypass edge dedup (stored, never dropped).
        let end = first_seq.saturating_add(count as u64);
        let representable = (end - first_seq) as usize;

        let RegionState {
            edges,
            devices,
            dedup_gaps_merged,
            device_seq_restarts,
            ..
        } = self;
        let e = edge_entry(edges, edge);
        e.last_seen_ms = e.last_seen_ms.max(received_ms);
        let set = e.epochs.entry(epoch).or_default();
        let new_ranges = set.insert(first_seq..end);
        *dedup_gaps_merged += set.enforce_cap(DEDUP_MAX_INTERVALS);

        let new_at_edge: u64 = new_ranges.iter().map(|r| r.end - r.start).sum();
        let mut out = Vec::with_capacity(new_at_edge as usize + (count - representable));
        let mut next_range = new_ranges.iter().peekable();
        for (i, rec) in records.into_iter().enumerate() {
            if i < representable {
                let seq = first_seq + i as u64;
                while next_range.peek().is_some_and(|r| r.end <= seq) {
                    next_range.next();
                }
                if next_range.peek().is_none_or(|r| r.start > seq) {
                    continue; // layer 1: this edge already stored it
                }
            }
            if device_accepts(devices, dedup_gaps_merged, device_seq_restarts, &rec) {
                out.push(rec);
            }
        }
        let new_records = out.len();
        e.records_stored += new_records as u64;
        Applied {
            outcome: Outcome::Committed {
                first_seq,
                count: count as u32,
                new_records: new_records as u32,
                duplicates: (count - new_records) as u32,
            },
            records: out,
        }
    }
}

fn edge_entry(edges: &mut BTreeMap<String, EdgeEntry>, edge: String) -> &mut EdgeEntry {
    edges.entry(edge).or_insert_with_key(|edge| EdgeEntry {
        last_seen_ms: i64::MIN,
        status: EdgeStatus {
            edge: edge.clone(),
            ..EdgeStatus::default()
        },
        records_stored: 0,
        epochs: BTreeMap::new(),
    })
}

/// Layer 2: device seq dedup and device stats. Returns whether to store.
fn device_accepts(
    devices: &mut BTreeMap<String, BTreeMap<String, DeviceEntry>>,
    dedup_gaps_merged: &mut u64,
    device_seq_restarts: &mut u64,
    rec: &TelemetryRecord,
) -> bool {
    let devs = match devices.get_mut(rec.tenant.as_str()) {
        Some(d) => d,
        None => devices.entry(rec.tenant.clone()).or_default(),
    };
    let dev = match devs.get_mut(rec.device.as_str()) {
        Some(d) => d,
        None => devs.entry(rec.device.clone()).or_insert(DeviceEntry {
            records: 0,
            first_ts_ms: rec.ts_ms,
            last_ts_ms: rec.ts_ms,
            seqs: IntervalSet::new(),
        }),
    };
    if let Some(seq) = rec.seq {
        if dev.seqs.contains(seq) {
            // A retransmission repeats a stored reading, so its ts is at
            // most the newest stored ts. A *newer* reading with a known
            // seq means the device restarted its counter (reboot): keep
            // it and start a fresh seq set rather than drop new data.
            if rec.ts_ms <= dev.last_ts_ms {
                return false;
            }
            dev.seqs = IntervalSet::new();
            *device_seq_restarts += 1;
        }
        dev.seqs.insert_one(seq);
        *dedup_gaps_merged += dev.seqs.enforce_cap(DEDUP_MAX_INTERVALS);
    }
    dev.records += 1;
    dev.first_ts_ms = dev.first_ts_ms.min(rec.ts_ms);
    dev.last_ts_ms = dev.last_ts_ms.max(rec.ts_ms);
    true
}
