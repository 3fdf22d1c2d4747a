//! [`raft::Storage`] over raft-engine: the durable Raft log of one hub replica.
//!
//! Layout inside raft-engine (one Raft group per hub, id [`RAFT_GROUP`]):
//! - log entries, appended with [`LogBatch::add_entries`];
//! - `hard-state` (`HardState`), `conf-state` (`ConfState`),
//!   `truncated` (`SnapshotMetadata`: index and term of the last entry
//!   removed from the log, by compaction or by an installed snapshot),
//!   `members` (bincode `Vec<ReplicaInfo>`: addresses of the group), and
//!   `pending-snapshot` (`SnapshotMetadata` of a snapshot whose data is being
//!   installed into the telemetry store; see [`RaftLogStorage::begin_snapshot`]).
//!
//! The Raft log is also the telemetry store's write-ahead log: entries are
//! only compacted up to an index the store has checkpointed.
//!
//! Snapshots: raft-rs asks [`Storage::snapshot`] while stepping, but only
//! the node can serialize the FSM and the store. So the storage answers
//! `SnapshotTemporarilyUnavailable` and raises a flag; the node builds the
//! snapshot after the Ready ([`RaftLogStorage::take_snapshot_request`],
//! [`RaftLogStorage::set_prepared_snapshot`]) and raft retries on the next
//! heartbeat response.

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};
use raft_engine::{Command, Engine, LogBatch, MessageExt};
use strata_protocol::ReplicaInfo;

/// raft-engine group id of the hub's single Raft group.
pub const RAFT_GROUP: u64 = 1;

/// Index of the (empty) bootstrap snapshot every initial member starts from.
pub const BOOTSTRAP_INDEX: u64 = 1;

const KEY_HARD_STATE: &[u8] = b"hard-state";
const KEY_CONF_STATE: &[u8] = b"conf-state";
const KEY_TRUNCATED: &[u8] = b"truncated";
const KEY_MEMBERS: &[u8] = b"members";
const KEY_PENDING_SNAPSHOT: &[u8] = b"pending-snapshot";
const KEY_PENDING_MEMBERS: &[u8] = b"pending-members";

/// Most recent entry terms kept in memory: raft asks `term()` of stable
/// entries on every append it receives, and a file read each time is waste.
const TERM_CACHE: usize = 8192;

/// Errors of the Raft log storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// raft-engine failed to open, read or write.
    #[error("raft log at {path}: {source}")]
    Engine {
        /// Directory of the raft-engine log.
        path: String,
        /// The engine's error.
        source: raft_engine::Error,
    },
    /// A stored key could not be decoded.
    #[error("raft log at {path}: corrupt key {key}: {reason}")]
    Corrupt {
        /// Directory of the raft-engine log.
        path: String,
        /// Which key.
        key: String,
        /// Why it did not decode.
        reason: String,
    },
    /// A compaction or snapshot asked for something the log cannot do.
    #[error("raft log at {path}: {reason}")]
    Invalid {
        /// Directory of the raft-engine log.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

impl From<StorageError> for raft::Error {
    fn from(e: StorageError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(e)))
    }
}

/// Tells raft-engine where the index of an `eraftpb::Entry` is.
#[derive(Clone, Copy)]
pub struct EntryExt;

impl MessageExt for EntryExt {
    type Entry = Entry;

    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// The hub's Raft log, hard state and membership on raft-engine.
pub struct RaftLogStorage {
    engine: Arc<Engine>,
    path: String,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last entry no longer in the log.
    truncated: SnapshotMetadata,
    members: Vec<ReplicaInfo>,
    /// Terms of a contiguous suffix of the log, starting at `terms_first`.
    terms: VecDeque<u64>,
    terms_first: u64,
    prepared: Option<Snapshot>,
    snapshot_wanted: Cell<bool>,
    /// The in-memory hard state has a newer commit index than the stored one.
    commit_dirty: bool,
}

impl RaftLogStorage {
    /// Opens (or creates) the log in `dir`. On first start, `bootstrap`
    /// (the initial voters and their addresses) is written as the conf
    /// state; a joining replica passes `None` and waits for the leader.
    pub fn open(
        dir: &Path,
        bootstrap: Option<(ConfState, Vec<ReplicaInfo>)>,
    ) -> Result<Self, StorageError> {
        let path = dir.display().to_string();
        let cfg = raft_engine::Config {
            dir: path.clone(),
            ..Default::default()
        };
        let engine = Engine::open(cfg).map_err(|source| StorageError::Engine {
            path: path.clone(),
            source,
        })?;
        let mut s = RaftLogStorage {
            engine: Arc::new(engine),
            path,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated: SnapshotMetadata::default(),
            members: Vec::new(),
            terms: VecDeque::new(),
            terms_first: 0,
            prepared: None,
            snapshot_wanted: Cell::new(false),
            commit_dirty: false,
        };
        let hs: Option<HardState> = s.get_message(KEY_HARD_STATE)?;
        let cs: Option<ConfState> = s.get_message(KEY_CONF_STATE)?;
        let truncated: Option<SnapshotMetadata> = s.get_message(KEY_TRUNCATED)?;
        let fresh = hs.is_none() && cs.is_none() && truncated.is_none();
        s.hard_state = hs.unwrap_or_default();
        s.conf_state = cs.unwrap_or_default();
        s.truncated = truncated.unwrap_or_default();
        if let Some(raw) = s.engine.get(RAFT_GROUP, KEY_MEMBERS) {
            s.members = decode_members(&raw).map_err(|reason| StorageError::Corrupt {
                path: s.path.clone(),
                key: "members".into(),
                reason,
            })?;
        }
        if let (true, Some((cs, members))) = (fresh, bootstrap) {
            s.bootstrap(cs, members)?;
        }
        Ok(s)
    }

    /// First start of an initial member: the log starts as if a snapshot
    /// of the empty state at index [`BOOTSTRAP_INDEX`] (term 1) with the
    /// initial voters had been installed. Every initial member agrees on
    /// it, and a replica added later has no entry 1 to be sent, so it is
    /// brought up by a real snapshot (raft-rs's recommended bootstrap).
    fn bootstrap(&mut self, cs: ConfState, members: Vec<ReplicaInfo>) -> Result<(), StorageError> {
        let mut meta = SnapshotMetadata::default();
        meta.index = BOOTSTRAP_INDEX;
        meta.term = 1;
        meta.set_conf_state(cs);
        self.apply_snapshot(&meta, members)
    }

    fn engine_err(&self, source: raft_engine::Error) -> StorageError {
        StorageError::Engine {
            path: self.path.clone(),
            source,
        }
    }

    fn get_message<M: protobuf::Message>(&self, key: &[u8]) -> Result<Option<M>, StorageError> {
        self.engine
            .get_message::<M>(RAFT_GROUP, key)
            .map_err(|e| StorageError::Corrupt {
                path: self.path.clone(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason: e.to_string(),
            })
    }

    fn write(&self, batch: &mut LogBatch, sync: bool) -> Result<(), StorageError> {
        self.engine
            .write(batch, sync)
            .map(|_| ())
            .map_err(|e| self.engine_err(e))
    }

    /// Directory of the log.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The persisted conf state (as of the last applied conf change).
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Addresses of the group's members.
    pub fn members(&self) -> &[ReplicaInfo] {
        &self.members
    }

    /// Index and term of the last entry removed from the log.
    pub fn truncated(&self) -> (u64, u64) {
        (self.truncated.index, self.truncated.term)
    }

    /// True when nothing was ever stored: no hard state, conf state or log.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || self.truncated.index > 0
    }

    /// Durably appends `entries` (overwriting any conflicting suffix) and
    /// the new hard state, in one raft-engine write: a crash can never
    /// leave a vote or term persisted without the entries that justify it.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StorageError> {
        if entries.is_empty() && hs.is_none() && !(sync && self.commit_dirty) {
            return Ok(());
        }
        // A commit index noted by `set_commit` rides along with this write.
        let hs = match hs {
            Some(hs) => Some(hs.clone()),
            None if self.commit_dirty => Some(self.hard_state.clone()),
            None => None,
        };
        let hs = hs.as_ref();
        let mut batch = LogBatch::with_capacity(entries.len());
        if let Some(first) = entries.first() {
            if first.index <= self.truncated.index {
                return Err(StorageError::Invalid {
                    path: self.path.clone(),
                    reason: format!(
                        "append at {} overwrites compacted log (truncated at {})",
                        first.index, self.truncated.index
                    ),
                });
            }
            let last = self.last_index_inner();
            if first.index > last + 1 {
                return Err(StorageError::Invalid {
                    path: self.path.clone(),
                    reason: format!("append at {} leaves a gap after {last}", first.index),
                });
            }
            batch
                .add_entries::<EntryExt>(RAFT_GROUP, entries)
                .map_err(|e| self.engine_err(e))?;
        }
        if let Some(hs) = hs {
            batch
                .put_message(RAFT_GROUP, KEY_HARD_STATE.to_vec(), hs)
                .map_err(|e| self.engine_err(e))?;
        }
        self.write(&mut batch, sync)?;
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
            self.commit_dirty = false;
        }
        self.cache_terms(entries);
        Ok(())
    }

    fn cache_terms(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let end = self.terms_first + self.terms.len() as u64;
        if self.terms.is_empty() || first.index < self.terms_first || first.index > end {
            self.terms.clear();
            self.terms_first = first.index;
        } else {
            self.terms
                .truncate((first.index - self.terms_first) as usize);
        }
        self.terms.extend(entries.iter().map(|e| e.term));
        while self.terms.len() > TERM_CACHE {
            self.terms.pop_front();
            self.terms_first += 1;
        }
    }

    /// Records a new commit index (from a `LightReady`) in memory; it is
    /// written with the next append or hard state, saving a log write per
    /// Ready. A lost commit index is relearned from the leader, and on
    /// restart the store's applied index bounds it from below.
    pub fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.commit_dirty = true;
        }
    }

    /// Durably records a new membership (after a conf change is applied).
    pub fn set_membership(
        &mut self,
        cs: ConfState,
        members: Vec<ReplicaInfo>,
    ) -> Result<(), StorageError> {
        let mut batch = LogBatch::default();
        batch
            .put_message(RAFT_GROUP, KEY_CONF_STATE.to_vec(), &cs)
            .map_err(|e| self.engine_err(e))?;
        batch
            .put(RAFT_GROUP, KEY_MEMBERS.to_vec(), encode_members(&members))
            .map_err(|e| self.engine_err(e))?;
        self.write(&mut batch, true)?;
        self.conf_state = cs;
        self.members = members;
        Ok(())
    }

    /// Discards entries before `compact_index`, like raft-rs's
    /// `MemStorage::compact`. The caller guarantees everything before it is
    /// checkpointed by the telemetry store.
    pub fn compact(&mut self, compact_index: u64) -> Result<(), StorageError> {
        if compact_index <= self.first_index_inner() {
            return Ok(());
        }
        let last = self.last_index_inner();
        if compact_index > last + 1 {
            return Err(StorageError::Invalid {
                path: self.path.clone(),
                reason: format!("compact to {compact_index} beyond last index {last}"),
            });
        }
        let term = self
            .term_inner(compact_index - 1)
            .map_err(|e| StorageError::Invalid {
                path: self.path.clone(),
                reason: format!("term of {}: {e}", compact_index - 1),
            })?;
        let mut meta = SnapshotMetadata::default();
        meta.index = compact_index - 1;
        meta.term = term;
        let mut batch = LogBatch::default();
        batch
            .put_message(RAFT_GROUP, KEY_TRUNCATED.to_vec(), &meta)
            .map_err(|e| self.engine_err(e))?;
        batch.add_command(
            RAFT_GROUP,
            Command::Compact {
                index: compact_index,
            },
        );
        self.write(&mut batch, false)?;
        self.truncated = meta;
        while self.terms_first < compact_index && !self.terms.is_empty() {
            self.terms.pop_front();
            self.terms_first += 1;
        }
        // Frees whole log files once nothing in them is live any more.
        if let Err(e) = self.engine.purge_expired_files() {
            tracing::warn!(path = %self.path, error = %e, "raft log purge failed");
        }
        Ok(())
    }

    /// Durably notes that a snapshot is about to be installed into the
    /// telemetry store, before the store is touched. If the process dies
    /// in between, [`RaftLogStorage::pending_snapshot`] says so on restart.
    pub fn begin_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        members: &[ReplicaInfo],
    ) -> Result<(), StorageError> {
        let mut batch = LogBatch::default();
        batch
            .put_message(RAFT_GROUP, KEY_PENDING_SNAPSHOT.to_vec(), meta)
            .map_err(|e| self.engine_err(e))?;
        batch
            .put(
                RAFT_GROUP,
                KEY_PENDING_MEMBERS.to_vec(),
                encode_members(members),
            )
            .map_err(|e| self.engine_err(e))?;
        self.write(&mut batch, true)
    }

    /// A snapshot (metadata and membership) whose installation began but
    /// did not finish.
    pub fn pending_snapshot(
        &self,
    ) -> Result<Option<(SnapshotMetadata, Vec<ReplicaInfo>)>, StorageError> {
        let Some(meta) = self.get_message::<SnapshotMetadata>(KEY_PENDING_SNAPSHOT)? else {
            return Ok(None);
        };
        let raw = self
            .engine
            .get(RAFT_GROUP, KEY_PENDING_MEMBERS)
            .unwrap_or_default();
        let members = decode_members(&raw).map_err(|reason| StorageError::Corrupt {
            path: self.path.clone(),
            key: "pending-members".into(),
            reason,
        })?;
        Ok(Some((meta, members)))
    }

    /// Forgets a pending snapshot that never reached the store.
    pub fn abandon_snapshot(&mut self) -> Result<(), StorageError> {
        let mut batch = LogBatch::default();
        batch.delete(RAFT_GROUP, KEY_PENDING_SNAPSHOT.to_vec());
        batch.delete(RAFT_GROUP, KEY_PENDING_MEMBERS.to_vec());
        self.write(&mut batch, true)
    }

    /// Replaces the log by the snapshot's metadata, like raft-rs's
    /// `MemStorage::apply_snapshot`: the whole log is dropped, the commit
    /// index and term move up to the snapshot, the conf state is taken
    /// from it. Also clears the pending-snapshot marker.
    pub fn apply_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        members: Vec<ReplicaInfo>,
    ) -> Result<(), StorageError> {
        if meta.index < self.truncated.index {
            return Err(StorageError::Invalid {
                path: self.path.clone(),
                reason: format!(
                    "snapshot at {} is older than the log's truncation point {}",
                    meta.index, self.truncated.index
                ),
            });
        }
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        let mut truncated = SnapshotMetadata::default();
        truncated.index = meta.index;
        truncated.term = meta.term;
        let cs = meta.get_conf_state().clone();
        let drop_to = self.last_index_inner().max(meta.index) + 1;
        let mut batch = LogBatch::default();
        let e = |e| self.engine_err(e);
        batch
            .put_message(RAFT_GROUP, KEY_HARD_STATE.to_vec(), &hs)
            .map_err(e)?;
        batch
            .put_message(RAFT_GROUP, KEY_TRUNCATED.to_vec(), &truncated)
            .map_err(e)?;
        batch
            .put_message(RAFT_GROUP, KEY_CONF_STATE.to_vec(), &cs)
            .map_err(e)?;
        batch
            .put(RAFT_GROUP, KEY_MEMBERS.to_vec(), encode_members(&members))
            .map_err(e)?;
        batch.delete(RAFT_GROUP, KEY_PENDING_SNAPSHOT.to_vec());
        batch.delete(RAFT_GROUP, KEY_PENDING_MEMBERS.to_vec());
        batch.add_command(RAFT_GROUP, Command::Compact { index: drop_to });
        self.write(&mut batch, true)?;
        self.hard_state = hs;
        self.commit_dirty = false;
        self.truncated = truncated;
        self.conf_state = cs;
        self.members = members;
        self.terms.clear();
        self.prepared = None;
        Ok(())
    }

    /// True (once) when raft asked for a snapshot that is not prepared.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// Installs a snapshot built by the node for raft to send.
    pub fn set_prepared_snapshot(&mut self, snap: Snapshot) {
        self.prepared = Some(snap);
    }

    /// Drops the prepared snapshot (after it was sent) to free memory.
    pub fn clear_prepared_snapshot(&mut self) {
        self.prepared = None;
    }

    fn first_index_inner(&self) -> u64 {
        self.truncated.index + 1
    }

    fn last_index_inner(&self) -> u64 {
        match self.engine.last_index(RAFT_GROUP) {
            Some(last) if last > self.truncated.index => last,
            _ => self.truncated.index,
        }
    }

    fn term_inner(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if idx < self.first_index_inner() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if idx > self.last_index_inner() {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        if idx >= self.terms_first {
            if let Some(t) = self.terms.get((idx - self.terms_first) as usize) {
                return Ok(*t);
            }
        }
        match self.engine.get_entry::<EntryExt>(RAFT_GROUP, idx) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(raft::Error::Store(raft::StorageError::Unavailable)),
            Err(e) => Err(self.engine_err(e).into()),
        }
    }
}

impl Storage for RaftLogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index_inner() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > self.last_index_inner() + 1 {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        if low >= high {
            return Ok(out);
        }
        let max = max_size.into().map(|m| m as usize);
        self.engine
            .fetch_entries_to::<EntryExt>(RAFT_GROUP, low, high, max, &mut out)
            .map_err(|e| match e {
                raft_engine::Error::EntryCompacted => {
                    raft::Error::Store(raft::StorageError::Compacted)
                }
                raft_engine::Error::EntryNotFound => {
                    raft::Error::Store(raft::StorageError::Unavailable)
                }
                e => self.engine_err(e).into(),
            })?;
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_inner(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_inner())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_inner())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if let Some(s) = &self.prepared {
            let idx = s.get_metadata().index;
            // A snapshot older than the log's start would leave a gap the
            // follower could never fill; one older than requested is refused.
            if idx >= request_index && idx >= self.truncated.index {
                return Ok(s.clone());
            }
        }
        self.snapshot_wanted.set(true);
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

fn encode_members(members: &[ReplicaInfo]) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    bincode::encode_to_vec(members, bincode::config::standard()).unwrap_or_default()
}

fn decode_members(raw: &[u8]) -> Result<Vec<ReplicaInfo>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    bincode::decode_from_slice(raw, bincode::config::standard())
        .map(|(m, _)| m)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
