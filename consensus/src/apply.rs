//! The apply side of the node: committed entries into the machine,
//! membership changes, snapshots, and compaction behind the machine's
//! durable index.

use std::time::Instant;

use bincode::{Decode, Encode};
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Snapshot};
use strata_protocol::ReplicaInfo;

use crate::machine::Machine;
use crate::node::{NodeError, PendingReply, ProposeError, RaftNode};

/// What a Raft snapshot carries: the machine's data and the membership.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotData {
    /// [`Machine::snapshot`] output.
    pub machine: Vec<u8>,
    /// Members at the snapshot's index.
    pub members: Vec<ReplicaInfo>,
}

/// Largest snapshot decoded, in bytes (1 GiB): an allocation limit only.
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

impl SnapshotData {
    /// Encodes for the snapshot's `data` field.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain byte vectors into a Vec cannot fail.
        bincode::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    /// Decodes a snapshot's `data` field.
    pub fn decode(bytes: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        let cfg = bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>();
        bincode::decode_from_slice(bytes, cfg).map(|(d, _)| d)
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

/// The result of applying one entry, for its proposer.
pub(crate) enum EntryResult<O> {
    Noop,
    Outcome(O),
    Members(Vec<ReplicaInfo>),
    Refused(String),
}

impl<M: Machine> RaftNode<M> {
    /// Applies committed entries in order and answers their proposers.
    pub(crate) fn apply_entries(
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
                EntryType::EntryNormal => {
                    let view = self.view();
                    let outcome = self
                        .machine
                        .apply(index, &entry.data, &view)
                        .map_err(|e| self.machine_err(index, e))?;
                    EntryResult::Outcome(outcome)
                }
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

    fn apply_conf_change_v1(
        &mut self,
        index: u64,
        cc: ConfChange,
    ) -> Result<EntryResult<M::Outcome>, NodeError> {
        let cs = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => cs,
            // Deterministic on every replica (e.g. removing the last voter):
            // the membership stays as it was.
            Err(e) => {
                tracing::warn!(replica = self.cfg.id, index, error = %e, "conf change refused");
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
                    tracing::warn!(
                        replica = self.cfg.id,
                        "this replica was removed from the group"
                    );
                }
            }
        }
        self.set_membership(cs, members.clone())?;
        tracing::info!(replica = self.cfg.id, index, node = cc.node_id, change = ?cc.get_change_type(), "membership changed");
        Ok(EntryResult::Members(members))
    }

    fn apply_conf_change_v2(
        &mut self,
        cc: ConfChangeV2,
    ) -> Result<EntryResult<M::Outcome>, NodeError> {
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

    /// Answers the proposer of `index`, if this replica proposed it.
    fn complete(&mut self, index: u64, term: u64, result: EntryResult<M::Outcome>, now: Instant) {
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
        let group = self.cfg.group.clone();
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
                let _ = r.send(Err(ProposeError::Rejected { group, reason }));
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
    /// then the machine, then the Raft log (see `RaftLogStorage::begin_snapshot`).
    pub(crate) fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let meta = snap.get_metadata().clone();
        let id = self.cfg.id;
        let data = SnapshotData::decode(&snap.data).map_err(|e| NodeError::Apply {
            id,
            index: meta.index,
            reason: format!("snapshot data: {e}"),
        })?;
        self.raw.mut_store().begin_snapshot(&meta, &data.members)?;
        self.machine
            .restore(meta.index, &data.machine)
            .map_err(|e| self.machine_err(meta.index, e))?;
        self.raw
            .mut_store()
            .apply_snapshot(&meta, data.members.clone())?;
        self.transport.update_peers(&data.members);
        self.applied = meta.index;
        self.applied_term = meta.term;
        self.metrics.snapshots_received.inc();
        tracing::info!(
            replica = id,
            group = %self.cfg.group,
            index = meta.index,
            term = meta.term,
            "installed snapshot"
        );
        Ok(())
    }

    /// Builds a snapshot of the applied state for raft to send.
    pub(crate) fn build_snapshot(&mut self) -> Result<(), NodeError> {
        let machine = self
            .machine
            .snapshot()
            .map_err(|e| self.machine_err(self.applied, e))?;
        let data = SnapshotData {
            machine,
            members: self.members().to_vec(),
        };
        let mut snap = Snapshot::default();
        snap.data = data.encode().into();
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.applied_term;
        meta.set_conf_state(self.raw.store().conf_state().clone());
        tracing::info!(
            replica = self.cfg.id,
            group = %self.cfg.group,
            index = self.applied,
            bytes = snap.data.len(),
            "built snapshot"
        );
        self.raw.mut_store().set_prepared_snapshot(snap);
        Ok(())
    }

    /// Called on every loop: lets the machine start or finish making its
    /// state durable, then compacts the log behind what is durable.
    pub fn maybe_checkpoint(&mut self, now: Instant, now_ms: i64) -> Result<(), NodeError> {
        self.checkpoint_inner(now, now_ms, false)
    }

    /// Makes the machine durable at the applied index, waiting for it,
    /// then compacts the Raft log behind it.
    pub fn checkpoint(&mut self, now: Instant, now_ms: i64) -> Result<(), NodeError> {
        self.checkpoint_inner(now, now_ms, true)
    }

    fn checkpoint_inner(&mut self, now: Instant, now_ms: i64, wait: bool) -> Result<(), NodeError> {
        let applied = self.applied;
        self.machine
            .checkpoint(applied, now, now_ms, wait)
            .map_err(|e| self.machine_err(applied, e))?;
        // Only up to the durable index: entries after it exist nowhere
        // else on this replica.
        let durable = self.machine.durable_index().min(applied);
        let compact_index = (durable + 1).saturating_sub(self.cfg.log_retain_entries);
        if compact_index > raft::Storage::first_index(self.raw.store()).unwrap_or(1) {
            self.raw.mut_store().compact(compact_index)?;
        }
        Ok(())
    }
}
