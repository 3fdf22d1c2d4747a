//! [`Checkpoints`]: the last checkpoint of each monitor instance's
//! key-value state that reached the region, so a replacement (or a new
//! instance following its devices) starts from it.
//!
//! # What "the state of an instance" is
//! - A **count** workload (`count = n`) has instances `0..n` (slots); a
//!   replacement keeps its slot. Its state is kept per
//!   `(workload, slot)` ([`CheckpointKey::Slot`]), so two instances of one
//!   workload never overwrite each other's state.
//! - A **per-edge** workload (`placement.per-edge = true`) has one instance
//!   per edge carrying its devices, and its state is about those devices:
//!   it is kept per `(workload, edge)` ([`CheckpointKey::Edge`]). When the
//!   devices move to another edge, the scheduler places the new carrier's
//!   instance with `previous` = the departing allocation, and that instance
//!   starts from the checkpoint of the edge the devices came from
//!   ([`Checkpoints::for_allocation`] looks the key up through `previous`).
//!   An instance already running on the new edge keeps its own state
//!   (states of two device groups are not merged).
//!
//! # Rules applied here (deterministically, on every replica)
//! - A checkpoint whose fence is stale (its allocation was replaced, or its
//!   token is not the allocation's) is refused and counted with the stale
//!   outputs; so is one older than the stored one of its key (lower token,
//!   or the same token and an earlier `taken_ms`).
//! - A checkpoint naming no allocation the region holds, or an allocation
//!   of another workload, is refused (`unknown`): it cannot be keyed.
//! - Size bounds come from the [`CheckpointLimits`] the leader stamped into
//!   the entry (from its config), so every replica applies the same ones:
//!   a checkpoint above `max_bytes` is refused (`too-large`). One that
//!   would take the region's total above `max_region_bytes` first evicts
//!   orphaned checkpoints — of keys no allocation desired to run has any
//!   more (a lowered count's slots, an edge a per-edge instance left) —
//!   oldest first (`evicted`); if it still does not fit it is refused
//!   (`region-full`) and the stored one of its key stays. A checkpoint
//!   that an allocation still runs under is never evicted.
//! - A deleted workload's checkpoints are dropped with it.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use strata_protocol::monitoring::StateCheckpoint;
use strata_sched::{AllocId, Cardinality, WorkloadId};

use super::allocs::AllocRecord;

/// Which instance of a workload a checkpoint belongs to (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum CheckpointKey {
    /// Instance `slot` of a count workload.
    Slot(u32),
    /// The per-edge instance on this edge.
    Edge(String),
}

impl CheckpointKey {
    /// The key of an allocation of a workload with this cardinality.
    pub fn of(r: &AllocRecord, cardinality: Cardinality) -> CheckpointKey {
        match cardinality {
            Cardinality::Count(_) => CheckpointKey::Slot(r.alloc.slot),
            Cardinality::PerNode => CheckpointKey::Edge(r.alloc.node.0.clone()),
        }
    }
}

/// Size bounds on checkpoints, stamped by the leader into each batch that
/// carries one (from `[checkpoints]` in its config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct CheckpointLimits {
    /// Largest state of one checkpoint, bytes.
    pub max_bytes: u64,
    /// Most state bytes the region keeps over all checkpoints.
    pub max_region_bytes: u64,
}

impl Default for CheckpointLimits {
    /// What a batch without stamped limits (an older entry kind) is held to.
    fn default() -> Self {
        CheckpointLimits {
            max_bytes: 64 * 1024,
            max_region_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a batch's checkpoints came to (all zero for a batch without any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointCounts {
    /// Stored (replacing the key's previous one).
    pub stored: u32,
    /// Refused: above `max_bytes`.
    pub too_large: u32,
    /// Refused: the region's total would exceed `max_region_bytes`.
    pub region_full: u32,
    /// Refused: no allocation held by that id for that workload.
    pub unknown: u32,
    /// Orphaned checkpoints evicted to make room (not entries of the batch).
    pub evicted: u32,
}

impl CheckpointCounts {
    /// Refused for a reason other than a stale fence.
    pub fn refused(&self) -> u32 {
        self.too_large + self.region_full + self.unknown
    }
}

/// What became of one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored.
    Stored,
    /// Its fence is stale (the allocation was replaced).
    Stale,
    /// Its fence names no allocation of its workload that the region holds.
    Unknown,
    /// Older than the stored one of its key.
    Older,
    /// Above `max_bytes`.
    TooLarge,
    /// Would exceed `max_region_bytes`.
    RegionFull,
}

/// The stored checkpoints; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct Checkpoints {
    by_key: BTreeMap<WorkloadId, BTreeMap<CheckpointKey, StateCheckpoint>>,
    /// Sum of the stored states' lengths.
    total_bytes: u64,
}

impl Checkpoints {
    /// State bytes held over all checkpoints.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Number of checkpoints held.
    pub fn len(&self) -> usize {
        self.by_key.values().map(BTreeMap::len).sum()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The checkpoint of one key.
    pub fn get(&self, w: &WorkloadId, key: &CheckpointKey) -> Option<&StateCheckpoint> {
        self.by_key.get(w)?.get(key)
    }

    /// What [`Checkpoints::put`] of `c` under `key` would come to:
    /// [`Verdict::Stored`] unless it is older than the stored one or breaks
    /// a bound.
    pub(super) fn judge(
        &self,
        w: &WorkloadId,
        key: &CheckpointKey,
        c: &StateCheckpoint,
        limits: CheckpointLimits,
    ) -> Verdict {
        let old = self.get(w, key);
        if let Some(old) = old {
            if (c.fence.token, c.taken_ms) < (old.fence.token, old.taken_ms) {
                return Verdict::Older;
            }
        }
        let new_len = c.state.len() as u64;
        if new_len > limits.max_bytes {
            return Verdict::TooLarge;
        }
        let old_len = old.map_or(0, |o| o.state.len() as u64);
        if self.total_bytes - old_len + new_len > limits.max_region_bytes {
            return Verdict::RegionFull;
        }
        Verdict::Stored
    }

    /// Stores `c` under `key`, replacing the key's checkpoint (after
    /// [`Checkpoints::judge`] said [`Verdict::Stored`]).
    pub(super) fn put(&mut self, w: &WorkloadId, key: CheckpointKey, c: StateCheckpoint) {
        let new_len = c.state.len() as u64;
        let old = self.by_key.entry(w.clone()).or_default().insert(key, c);
        let old_len = old.map_or(0, |o| o.state.len() as u64);
        self.total_bytes = self.total_bytes - old_len + new_len;
    }

    /// Evicts checkpoints whose key `in_use` says no running allocation
    /// has, oldest (`taken_ms`, then key order) first, until `need` more
    /// bytes fit under `max_region_bytes`. Returns how many it evicted.
    pub(super) fn evict_orphans(
        &mut self,
        need: u64,
        max_region_bytes: u64,
        in_use: impl Fn(&WorkloadId, &CheckpointKey) -> bool,
    ) -> u32 {
        let mut orphans: Vec<(i64, WorkloadId, CheckpointKey)> = self
            .by_key
            .iter()
            .flat_map(|(w, m)| {
                m.iter()
                    .map(move |(k, c)| (c.taken_ms, w.clone(), k.clone()))
            })
            .filter(|(_, w, k)| !in_use(w, k))
            .collect();
        orphans.sort();
        let mut evicted = 0;
        for (_, w, k) in orphans {
            if self.total_bytes + need <= max_region_bytes {
                break;
            }
            if let Some(m) = self.by_key.get_mut(&w) {
                if let Some(c) = m.remove(&k) {
                    self.total_bytes -= c.state.len() as u64;
                    evicted += 1;
                }
                if m.is_empty() {
                    self.by_key.remove(&w);
                }
            }
        }
        evicted
    }

    /// Drops a deleted workload's checkpoints.
    pub(super) fn remove_workload(&mut self, w: &WorkloadId) {
        if let Some(m) = self.by_key.remove(w) {
            let freed: u64 = m.values().map(|c| c.state.len() as u64).sum();
            self.total_bytes -= freed;
        }
    }

    /// The checkpoint an allocation starts from: the one of its
    /// `previous` allocation's key when that allocation is still held (a
    /// per-edge instance following its devices starts from the edge they
    /// came from), else the one of its own key; `None` when there is none
    /// or it was taken by this very allocation (its edge has it).
    pub fn for_allocation<'a>(
        &'a self,
        r: &AllocRecord,
        previous: Option<&AllocRecord>,
        cardinality: Cardinality,
    ) -> Option<&'a StateCheckpoint> {
        let src = previous.unwrap_or(r);
        let c = self.get(&r.alloc.workload, &CheckpointKey::of(src, cardinality))?;
        (AllocId::parse(&c.fence.allocation) != Some(r.alloc.id)).then_some(c)
    }
}
