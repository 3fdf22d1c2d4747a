//! The apply side of the node: committed entries into the FSM and the
//! telemetry store, membership changes, snapshots and checkpoints.
//!
//! The Raft log is the store's write-ahead log: inserted records live only
//! in the store's memtable until a checkpoint is durable, and the log is
//! compacted only up to the checkpointed index. On restart raft replays
//! every entry after that index.
//!
//! Checkpoints do not stall the Raft loop: the loop only starts one
//! ([`HubStore::begin_checkpoint`]: freeze the memtable, spawn the writer)
//! and later installs it ([`HubStore::finish_checkpoint`]); the durable
//! index, and with it log compaction, advances only then.
//!
//! The store sits behind a [`SharedStore`] lock so that reads (queries,
//! device lists) run on other threads and never stall the Raft loop. The
//! node is the only writer and never waits for readers on the hot path:
//! if a long query holds the lock, applied records are buffered and
//! inserted on a later loop; checkpoints are postponed likewise.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bincode::{Decode, Encode};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Snapshot};
use strata_protocol::{
    DeviceInfo, QueryResult, ReplicaInfo, RetentionReport, TelemetryQuery, TelemetryRecord,
    TenantRetention,
};

use super::node::{NodeError, PendingReply, ProposeError, RaftNode};
use crate::fsm::{self, Outcome, RegionState};
use crate::metrics::{DEVICE_RETRANSMISSION, EDGE_RESEND};
use crate::scheduler::SchedSignal;
use crate::store::{StoreError, TelemetryStore};

/// The telemetry store as the node sees it. Implemented by
/// [`TelemetryStore`]; tests use an in-memory model.
pub trait HubStore: Send + Sync + 'static {
    /// Error type of the store.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Adds deduplicated records (memtable only; the Raft log is the WAL).
    fn insert_owned(&mut self, records: Vec<TelemetryRecord>);
    /// Answers a telemetry read.
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, Self::Error>;
    /// Devices with stored data.
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo>;
    /// Records stored.
    fn stored_records(&self) -> u64;
    /// The memtable is big enough to checkpoint now.
    fn needs_checkpoint(&self) -> bool;
    /// Makes everything up to `applied_index` durable with the FSM state,
    /// before returning (finishing a background checkpoint first).
    fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), Self::Error>;
    /// Starts making everything up to `applied_index` durable; called only
    /// while [`HubStore::checkpoint_in_flight`] is false. Must be cheap: the
    /// slow part runs in the background. The default checkpoints in place.
    fn begin_checkpoint(
        &mut self,
        applied_index: u64,
        fsm_state: Vec<u8>,
    ) -> Result<CheckpointStart, Self::Error> {
        self.checkpoint(applied_index, &fsm_state)
            .map(|()| CheckpointStart::Durable)
    }
    /// A background checkpoint is running or awaits `finish_checkpoint`.
    fn checkpoint_in_flight(&self) -> bool {
        false
    }
    /// The background checkpoint is done: `finish_checkpoint` will not block.
    fn checkpoint_finished(&self) -> bool {
        false
    }
    /// Installs a finished background checkpoint (waiting for it if
    /// `wait`); returns the applied index that is now durable.
    fn finish_checkpoint(&mut self, _wait: bool) -> Result<Option<u64>, Self::Error> {
        Ok(None)
    }
    /// Serializes all data for a Raft snapshot.
    fn snapshot(&self) -> Result<Vec<u8>, Self::Error>;
    /// Replaces all contents by a snapshot's, durably.
    fn restore(
        &mut self,
        data: &[u8],
        applied_index: u64,
        fsm_state: &[u8],
    ) -> Result<(), Self::Error>;
    /// Drops data past retention.
    fn enforce_retention(&mut self, now_ms: i64) -> Result<(), Self::Error>;
    /// What retention dropped and was not reported yet, per tenant (for
    /// metrics and the log); rate-limited by the store. None by default.
    fn take_retention_drops(&mut self, _now_ms: i64) -> Vec<TenantRetention> {
        Vec::new()
    }
    /// What retention dropped, per tenant. Nothing by default.
    fn retention_report(&self, _tenant: Option<&str>) -> RetentionReport {
        RetentionReport {
            retention_ms: 0,
            retained_from_ms: None,
            tenants: Vec::new(),
        }
    }
}

/// How [`HubStore::begin_checkpoint`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStart {
    /// Already durable (the store checkpointed in place).
    Durable,
    /// Running in the background; `finish_checkpoint` reports it durable.
    Background,
}

impl HubStore for TelemetryStore {
    type Error = StoreError;
    fn insert_owned(&mut self, records: Vec<TelemetryRecord>) {
        TelemetryStore::insert_owned(self, records)
    }
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, StoreError> {
        TelemetryStore::query(self, q)
    }
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        TelemetryStore::devices(self, tenant)
    }
    fn stored_records(&self) -> u64 {
        TelemetryStore::stored_records(self)
    }
    fn needs_checkpoint(&self) -> bool {
        TelemetryStore::needs_checkpoint(self)
    }
    fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), StoreError> {
        TelemetryStore::checkpoint(self, applied_index, fsm_state)
    }
    fn begin_checkpoint(
        &mut self,
        applied_index: u64,
        fsm_state: Vec<u8>,
    ) -> Result<CheckpointStart, StoreError> {
        // `false` (one already in flight) cannot happen: callers check first.
        TelemetryStore::begin_checkpoint(self, applied_index, fsm_state)
            .map(|_| CheckpointStart::Background)
    }
    fn checkpoint_in_flight(&self) -> bool {
        TelemetryStore::checkpoint_in_flight(self)
    }
    fn checkpoint_finished(&self) -> bool {
        TelemetryStore::checkpoint_finished(self)
    }
    fn finish_checkpoint(&mut self, wait: bool) -> Result<Option<u64>, StoreError> {
        TelemetryStore::finish_checkpoint(self, wait)
    }
    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        TelemetryStore::snapshot(self)
    }
    fn restore(
        &mut self,
        data: &[u8],
        applied_index: u64,
        fsm_state: &[u8],
    ) -> Result<(), StoreError> {
        TelemetryStore::restore(self, data, applied_index, fsm_state)
    }
    fn enforce_retention(&mut self, now_ms: i64) -> Result<(), StoreError> {
        TelemetryStore::enforce_retention(self, now_ms).map(|_| ())
    }
    fn take_retention_drops(&mut self, now_ms: i64) -> Vec<TenantRetention> {
        TelemetryStore::take_retention_drops(self, now_ms)
    }
    fn retention_report(&self, tenant: Option<&str>) -> RetentionReport {
        TelemetryStore::retention_report(self, tenant)
    }
}

/// The store shared between the node (sole writer) and readers.
pub type SharedStore<S> = Arc<RwLock<S>>;

/// Read access to the store from any thread, without knowing its type.
pub trait StoreReader: Send + Sync {
    /// Answers a telemetry read.
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, String>;
    /// Devices with stored data.
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo>;
    /// What retention dropped, per tenant.
    fn retention(&self, tenant: Option<&str>) -> RetentionReport;
}

/// Read lock; a poisoned lock still holds consistent data (the node only
/// mutates through the store's own methods) so reads carry on.
pub fn read<S>(lock: &RwLock<S>) -> RwLockReadGuard<'_, S> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<S>(lock: &RwLock<S>) -> RwLockWriteGuard<'_, S> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl<S: HubStore> StoreReader for RwLock<S> {
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, String> {
        read(self).query(q).map_err(|e| e.to_string())
    }
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        read(self).devices(tenant)
    }
    fn retention(&self, tenant: Option<&str>) -> RetentionReport {
        read(self).retention_report(tenant)
    }
}

/// Largest snapshot decoded, in bytes (1 GiB): an allocation limit only.
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// Data of a Raft snapshot: the region state, the store's contents and the
/// group's addresses (a new replica knows nobody yet).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SnapshotData {
    /// `RegionState::encode()` at the snapshot index.
    pub fsm_state: Vec<u8>,
    /// `TelemetryStore::snapshot()`.
    pub store: Vec<u8>,
    /// Members at the snapshot index.
    pub members: Vec<ReplicaInfo>,
}

impl SnapshotData {
    /// bincode encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain byte vectors into a Vec cannot fail.
        bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// Decodes snapshot data received from the leader.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let cfg = bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>();
        bincode::decode_from_slice(bytes, cfg)
            .map(|(d, _)| d)
            .map_err(|e| e.to_string())
    }
}

/// Encodes a member's addresses for a conf change's context.
pub fn encode_member(info: &ReplicaInfo) -> Vec<u8> {
    bincode::encode_to_vec(info, bincode::config::standard()).unwrap_or_default()
}

fn decode_member(bytes: &[u8]) -> Option<ReplicaInfo> {
    bincode::decode_from_slice(bytes, bincode::config::standard())
        .ok()
        .map(|(m, _)| m)
}

/// What applying one entry produced, for the waiting proposer.
enum EntryResult {
    Noop,
    Outcome(Outcome),
    Members(Vec<ReplicaInfo>),
    Refused(String),
}

impl<S: HubStore> RaftNode<S> {
    fn store_err(&self, e: impl std::fmt::Display) -> NodeError {
        NodeError::Store {
            id: self.cfg.id,
            reason: e.to_string(),
        }
    }

    /// Applies committed entries in order and answers their proposers.
    pub(super) fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        now: Instant,
    ) -> Result<(), NodeError> {
        for entry in entries {
            let index = entry.index;
            if index <= self.applied {
                continue;
            }
            let result = match entry.get_entry_type() {
                // Empty entries are a new leader's no-op (or a conf change
                // raft dropped because another was in flight).
                EntryType::EntryNormal if entry.data.is_empty() => EntryResult::Noop,
                EntryType::EntryNormal => self.apply_command(index, &entry.data)?,
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| {
                        NodeError::Apply {
                            id: self.cfg.id,
                            index,
                            reason: format!("conf change: {e}"),
                        }
                    })?;
                    self.apply_conf_change_v1(index, cc)?
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| {
                        NodeError::Apply {
                            id: self.cfg.id,
                            index,
                            reason: format!("conf change v2: {e}"),
                        }
                    })?;
                    self.apply_conf_change_v2(cc)?
                }
            };
            self.applied = index;
            self.applied_term = entry.term;
            self.complete(index, entry.term, result, now);
        }
        Ok(())
    }

    fn apply_command(&mut self, index: u64, data: &[u8]) -> Result<EntryResult, NodeError> {
        let applied = fsm::apply(&mut self.state, index, data).map_err(|e| NodeError::Apply {
            id: self.cfg.id,
            index,
            reason: e.to_string(),
        })?;
        match applied.outcome {
            Outcome::Committed {
                edge_resends,
                device_retransmissions,
                seq_reuses,
                new_alerts,
                new_metrics,
                stale_fences,
                checkpoints,
                ..
            } => {
                self.metrics
                    .stale_fence_outputs
                    .inc_by(u64::from(stale_fences));
                self.metrics.checkpoints(&checkpoints);
                self.metrics
                    .checkpoint_bytes
                    .set(self.state.checkpoints().total_bytes() as i64);
                self.metrics.batches_stored.inc();
                self.metrics
                    .records_stored
                    .inc_by(applied.records.len() as u64);
                self.metrics.alerts_stored.inc_by(u64::from(new_alerts));
                self.metrics
                    .derived_metrics_stored
                    .inc_by(u64::from(new_metrics));
                self.metrics.duplicate(EDGE_RESEND, u64::from(edge_resends));
                self.metrics
                    .duplicate(DEVICE_RETRANSMISSION, u64::from(device_retransmissions));
                self.metrics.seq_reuses.inc_by(u64::from(seq_reuses));
            }
            Outcome::HeartbeatRecorded { .. } => {
                self.metrics.reports_replicated.inc();
            }
            Outcome::TransitionRecorded { event_seq } => {
                if let Some(ev) = self.state.events().page(event_seq, 1).events.pop() {
                    if let (Some(detail), true) = (ev.edge, ev.seq == event_seq) {
                        self.signal(super::node::NodeSignal::Transition {
                            edge: ev.subject,
                            liveness: detail.liveness,
                        });
                    }
                }
            }
            Outcome::Refused(r) => {
                tracing::warn!(hub = self.cfg.id, index, refusal = %r, "state machine refused a write");
            }
            Outcome::ArtifactStored { .. }
            | Outcome::MonitorPut { .. }
            | Outcome::MonitorDeleted { .. }
            | Outcome::PlanApplied { .. }
            | Outcome::Skipped => {}
        }
        if self.is_leader() {
            if !applied.changes.is_empty() {
                self.sched_signal(SchedSignal::Applied {
                    index,
                    changes: applied.changes,
                });
            }
            if !applied.device_moves.is_empty() {
                self.sched_signal(SchedSignal::DevicesMoved);
            }
        }
        if !applied.device_moves.is_empty() {
            self.signal(super::node::NodeSignal::DevicesMoved(applied.device_moves));
        }
        self.update_state_gauges();
        // Before the proposer is answered: an edge that hears "submitted"
        // must get the new assignments version in its next heartbeat ack.
        self.publish_view();
        if !applied.records.is_empty() {
            self.unflushed.extend(applied.records);
            self.flush_records(false);
        }
        Ok(EntryResult::Outcome(applied.outcome))
    }

    fn apply_conf_change_v1(
        &mut self,
        index: u64,
        cc: ConfChange,
    ) -> Result<EntryResult, NodeError> {
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            // Deterministic on every replica (e.g. removing the last voter):
            // the membership stays as it was.
            Err(e) => {
                tracing::warn!(hub = self.cfg.id, index, error = %e, "conf change refused");
                return Ok(EntryResult::Refused(e.to_string()));
            }
        };
        let mut members = self.members().to_vec();
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                members.retain(|m| m.id != cc.node_id);
                let info = decode_member(&cc.context).unwrap_or(ReplicaInfo {
                    id: cc.node_id,
                    peer_addr: String::new(),
                    client_addr: String::new(),
                    voter: true,
                });
                members.push(ReplicaInfo {
                    id: cc.node_id,
                    voter: cc.get_change_type() == ConfChangeType::AddNode,
                    ..info
                });
                members.sort_by_key(|m| m.id);
            }
            ConfChangeType::RemoveNode => {
                members.retain(|m| m.id != cc.node_id);
                if cc.node_id == self.cfg.id {
                    tracing::warn!(hub = self.cfg.id, "this replica was removed from the group");
                }
            }
        }
        self.set_membership(cs, members.clone())?;
        tracing::info!(hub = self.cfg.id, index, node = cc.node_id, change = ?cc.get_change_type(), "membership changed");
        Ok(EntryResult::Members(members))
    }

    fn apply_conf_change_v2(&mut self, cc: ConfChangeV2) -> Result<EntryResult, NodeError> {
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            Err(e) => return Ok(EntryResult::Refused(e.to_string())),
        };
        // v2 changes are never proposed by this hub; keep the addresses we
        // know for ids still in the configuration.
        let mut members = self.members().to_vec();
        members.retain(|m| cs.voters.contains(&m.id) || cs.learners.contains(&m.id));
        self.set_membership(cs, members.clone())?;
        Ok(EntryResult::Members(members))
    }

    fn set_membership(
        &mut self,
        cs: raft::eraftpb::ConfState,
        members: Vec<ReplicaInfo>,
    ) -> Result<(), NodeError> {
        self.transport.update_peers(&members);
        self.raw.mut_store().set_membership(cs, members)?;
        Ok(())
    }

    /// Inserts buffered records into the store: waiting for readers only
    /// when `wait` (snapshots, checkpoints at shutdown).
    pub(super) fn flush_records(&mut self, wait: bool) -> bool {
        if self.unflushed.is_empty() {
            return true;
        }
        let guard = if wait {
            Some(write(&self.store))
        } else {
            self.store.try_write().ok()
        };
        match guard {
            Some(mut st) => {
                st.insert_owned(std::mem::take(&mut self.unflushed));
                true
            }
            None => false,
        }
    }

    /// Answers the proposer of `index`, if this replica proposed it.
    fn complete(&mut self, index: u64, term: u64, result: EntryResult, now: Instant) {
        let Some(p) = self.pending.remove(&index) else {
            return;
        };
        if p.term != term {
            // A new leader overwrote our entry at this index.
            self.metrics.proposals_failed.inc();
            let err = self.unavailable("entry superseded by a new leader; retry");
            match p.reply {
                PendingReply::Command(r) => drop(r.send(Err(err))),
                PendingReply::ConfChange(r) => drop(r.send(Err(err))),
            }
            return;
        }
        let region = self.cfg.region.clone();
        match (p.reply, result) {
            (PendingReply::Command(r), EntryResult::Outcome(o)) => {
                self.metrics
                    .commit_latency
                    .observe(now.saturating_duration_since(p.started).as_secs_f64());
                let _ = r.send(Ok(o));
            }
            (PendingReply::ConfChange(r), EntryResult::Members(m)) => {
                let _ = r.send(Ok(m));
            }
            (PendingReply::ConfChange(r), EntryResult::Refused(reason)) => {
                let _ = r.send(Err(ProposeError::Rejected { region, reason }));
            }
            (PendingReply::ConfChange(r), _) => {
                let _ = r.send(Err(
                    self.unavailable("another membership change is in progress; retry")
                ));
            }
            (PendingReply::Command(r), _) => {
                let _ = r.send(Err(self.unavailable("proposal dropped; retry")));
            }
        }
    }

    /// Installs a snapshot from the leader: durably marked pending first,
    /// then the store, then the Raft log (see `RaftLogStorage::begin_snapshot`).
    pub(super) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let meta = snap.get_metadata().clone();
        let id = self.cfg.id;
        let data = SnapshotData::decode(&snap.data).map_err(|reason| NodeError::Apply {
            id,
            index: meta.index,
            reason: format!("snapshot data: {reason}"),
        })?;
        let state = if data.fsm_state.is_empty() {
            RegionState::default()
        } else {
            RegionState::decode(&data.fsm_state).map_err(|e| NodeError::Apply {
                id,
                index: meta.index,
                reason: format!("snapshot region state: {e}"),
            })?
        };
        self.raw.mut_store().begin_snapshot(&meta, &data.members)?;
        // Buffered records are of older entries, all inside the snapshot.
        self.unflushed.clear();
        write(&self.store)
            .restore(&data.store, meta.index, &data.fsm_state)
            .map_err(|e| self.store_err(e))?;
        self.raw
            .mut_store()
            .apply_snapshot(&meta, data.members.clone())?;
        self.transport.update_peers(&data.members);
        self.state = state;
        self.applied = meta.index;
        self.applied_term = meta.term;
        self.checkpointed = meta.index;
        self.metrics.snapshots_received.inc();
        tracing::info!(
            hub = id,
            index = meta.index,
            term = meta.term,
            "installed snapshot"
        );
        Ok(())
    }

    /// Builds a snapshot of the applied state for raft to send.
    pub(super) fn build_snapshot(&mut self) -> Result<(), NodeError> {
        // The snapshot must hold every record up to the applied index.
        self.flush_records(true);
        let store = read(&self.store)
            .snapshot()
            .map_err(|e| self.store_err(e))?;
        let data = SnapshotData {
            fsm_state: self.state.encode(),
            store,
            members: self.members().to_vec(),
        };
        let mut snap = Snapshot::default();
        snap.data = data.encode().into();
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.applied_term;
        meta.set_conf_state(self.raw.store().conf_state().clone());
        tracing::info!(
            hub = self.cfg.id,
            index = self.applied,
            bytes = snap.data.len(),
            "built snapshot"
        );
        self.raw.mut_store().set_prepared_snapshot(snap);
        Ok(())
    }

    /// Called on every loop: installs a finished background checkpoint,
    /// and starts one when the interval elapsed or the store asks for it
    /// and none is in flight. Never waits for the store's disk work.
    pub fn maybe_checkpoint(&mut self, now: Instant, now_ms: i64) -> Result<(), NodeError> {
        let due = match self.last_checkpoint_at {
            None => {
                self.last_checkpoint_at = Some(now);
                false
            }
            Some(t) => now.saturating_duration_since(t) >= self.cfg.checkpoint_interval,
        };
        let (in_flight, finished, needs) = {
            let st = read(&self.store);
            (
                st.checkpoint_in_flight(),
                st.checkpoint_finished(),
                st.needs_checkpoint(),
            )
        };
        let start = due || needs;
        if finished || (start && !in_flight) {
            self.checkpoint_inner(now, now_ms, false, start)?;
        }
        Ok(())
    }

    /// Makes the store durable at the applied index, waiting for it, then
    /// compacts the Raft log behind it (never before: the log is the
    /// store's WAL).
    pub fn checkpoint(&mut self, now: Instant, now_ms: i64) -> Result<(), NodeError> {
        self.checkpoint_inner(now, now_ms, true, true)
    }

    /// The store is durable up to `index`.
    fn note_durable(&mut self, index: u64) {
        if index > self.checkpointed {
            self.checkpointed = index;
            self.metrics.checkpoints.inc();
        }
    }

    fn checkpoint_inner(
        &mut self,
        now: Instant,
        now_ms: i64,
        wait: bool,
        start: bool,
    ) -> Result<(), NodeError> {
        if !self.flush_records(wait) {
            // A reader holds the store; try again on the next loop.
            return Ok(());
        }
        // A clone of the Arc, so the guard does not borrow `self`.
        let store = self.store.clone();
        let Some(mut st) = (if wait {
            Some(write(&store))
        } else {
            store.try_write().ok()
        }) else {
            return Ok(());
        };
        let id = self.cfg.id;
        let store_err = |e: S::Error| NodeError::Store {
            id,
            reason: e.to_string(),
        };
        // Install a finished background checkpoint (cheap: an index swap).
        if let Some(index) = st.finish_checkpoint(wait).map_err(store_err)? {
            self.note_durable(index);
        }
        if start && !st.checkpoint_in_flight() {
            self.last_checkpoint_at = Some(now);
            if self.applied > self.checkpointed {
                if wait {
                    st.checkpoint(self.applied, &self.state.encode())
                        .map_err(store_err)?;
                    self.note_durable(self.applied);
                } else {
                    match st
                        .begin_checkpoint(self.applied, self.state.encode())
                        .map_err(store_err)?
                    {
                        CheckpointStart::Durable => self.note_durable(self.applied),
                        CheckpointStart::Background => {}
                    }
                }
            }
            if let Err(e) = st.enforce_retention(now_ms) {
                tracing::warn!(hub = self.cfg.id, error = %e, "retention failed");
            }
        }
        let retention_drops = st.take_retention_drops(now_ms);
        drop(st);
        if !retention_drops.is_empty() {
            self.metrics.retention_drops(&retention_drops);
            warn_retention_drops(self.cfg.id, &retention_drops);
        }
        // Only up to the durable checkpoint: entries after it exist nowhere
        // else on this replica (the memtable is lost on a crash).
        let compact_index = (self.checkpointed + 1).saturating_sub(self.cfg.log_retain_entries);
        if compact_index > raft::Storage::first_index(self.raw.store()).unwrap_or(1) {
            self.raw.mut_store().compact(compact_index)?;
        }
        Ok(())
    }
}

/// Most tenants named in one retention warning (the rest are summed).
const WARN_TENANTS: usize = 20;

/// One WARN line for what retention dropped since the last one (the store
/// reports at most once per 10 s): acknowledged readings that are gone.
fn warn_retention_drops(hub: u64, drops: &[TenantRetention]) {
    let mut tenants: Vec<String> = drops
        .iter()
        .take(WARN_TENANTS)
        .map(|d| {
            format!(
                "{}: {} expired on arrival, {} expired",
                d.tenant, d.expired_on_arrival, d.expired
            )
        })
        .collect();
    if drops.len() > WARN_TENANTS {
        let rest: u64 = drops[WARN_TENANTS..]
            .iter()
            .map(|d| d.expired_on_arrival + d.expired)
            .sum();
        tenants.push(format!(
            "{} more tenants: {rest} records",
            drops.len() - WARN_TENANTS
        ));
    }
    let records: u64 = drops.iter().map(|d| d.expired_on_arrival + d.expired).sum();
    tracing::warn!(
        hub,
        records,
        tenants = %tenants.join("; "),
        "retention dropped acknowledged records (older than store.retention-ms; \
         see GET /api/v1/regions/<region>/retention)"
    );
}
