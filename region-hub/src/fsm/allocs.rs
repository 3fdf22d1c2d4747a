//! [`Scheduling`]: what the region's scheduler decided, as every replica
//! agrees on it — each workload's allocations (where an instance runs,
//! with its fencing token and lease deadline), the region-wide fencing
//! token counter, a bounded history of evaluations with their
//! placement-failure reasons, and each edge's placement facts (labels and
//! pools). The leader's scheduler proposes plans (`super::plan`); this is
//! where they land.
//!
//! # Rules applied here (deterministically, on every replica)
//! - Fencing tokens come from [`Scheduling::next_token`], assigned at apply
//!   in plan order, so they follow commit order and never repeat, across
//!   leader changes.
//! - An edge reports instance states by `(tenant, name)`; the state lands
//!   on the workload's allocation on that edge that is desired to run (an
//!   edge runs a workload once) when the generations match:
//!   `running` → running, `crash-looping` → failed, `stopped` by an
//!   expired lease → lost, any other `stopped` → complete. Other states
//!   (pending, backoff, preempted, refused) change nothing.
//! - Stopped allocations are kept, newest first, up to
//!   [`MAX_STOPPED_KEPT`] per workload (for inspection and for refusing
//!   outputs of replaced allocations); those of a deleted workload go once
//!   none of its allocations runs any more.
//! - An output whose fence names an allocation that was replaced is stale
//!   (refused and counted); one naming an allocation no longer held (or
//!   never issued, as the pre-scheduler edges' `tenant/name` fences) is
//!   accepted and counted as unknown.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bincode::de::{BorrowDecoder, Decoder};
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{BorrowDecode, Decode, Encode};
use strata_protocol::monitoring::{FenceStamp, InstanceStatus};
use strata_protocol::scheduling::{AllocationInfo, EvaluationInfo, NodeFacts};
use strata_sched::{AllocId, Allocation, ClientState, Desired, StopReason, WorkloadId};

/// Evaluations kept per workload.
pub const MAX_EVALS_KEPT: usize = 16;
/// Stopped allocations kept per workload.
pub const MAX_STOPPED_KEPT: usize = 16;

/// One allocation as stored: the scheduler's [`Allocation`] plus what the
/// region adds (times, why it stopped, what replaced it).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct AllocRecord {
    /// The allocation (fencing token and Raft indexes set at apply).
    pub alloc: Allocation,
    /// When it was placed, ms since the Unix epoch (leader clock).
    pub created_ms: i64,
    /// Its last change, ms since the Unix epoch.
    pub modified_ms: i64,
    /// Why it was stopped.
    pub stop_reason: Option<StopReason>,
    /// The allocation that replaced it.
    pub replaced_by: Option<AllocId>,
}

impl AllocRecord {
    /// Whether it is desired to run.
    pub fn runs(&self) -> bool {
        self.alloc.desired == Desired::Run
    }

    /// As clients see it.
    pub fn info(&self) -> AllocationInfo {
        let a = &self.alloc;
        AllocationInfo {
            id: a.id,
            edge: a.node.0.clone(),
            slot: a.slot,
            generation: a.generation,
            desired: a.desired,
            client: a.client,
            fencing_token: a.fencing_token,
            cpu_millicores: a.resources.cpu_millicores,
            memory_bytes: a.resources.memory_bytes,
            reason: a.placement.reason.clone(),
            score: a.placement.score,
            score_parts: a.placement.score_parts.clone(),
            nodes_evaluated: a.placement.nodes_evaluated,
            nodes_feasible: a.placement.nodes_feasible,
            eval: a.placement.eval,
            created_ms: self.created_ms,
            modified_ms: self.modified_ms,
            created_index: a.created_index,
            modified_index: a.modified_index,
            lease_expires_ms: a.lease_expires_at.map(|t| t.as_millis()),
            previous: a.previous,
            replaced_by: self.replaced_by,
            stop_reason: self.stop_reason.as_ref().map(stop_words),
        }
    }
}

/// `ms` since the Unix epoch as an RFC 3339 UTC time with milliseconds
/// (messages are for people; the raw value is in the allocation).
pub fn rfc3339_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// A stop reason in a few words (API, events).
pub fn stop_words(r: &StopReason) -> String {
    match r {
        StopReason::WorkloadDeleted => "workload deleted".to_owned(),
        StopReason::NotNeeded => "not needed (count lowered or a duplicate)".to_owned(),
        StopReason::NodeNoLongerEligible => {
            "its edge no longer carries its devices or meets its rules".to_owned()
        }
        StopReason::Disconnected { lease_expires_at } => match lease_expires_at {
            Some(t) => format!(
                "edge disconnected past replace-after; lease expired at {}",
                rfc3339_ms(t.as_millis())
            ),
            None => "edge disconnected past replace-after; it never held a lease".to_owned(),
        },
        StopReason::NodeLost => "its edge left the region".to_owned(),
        StopReason::Failed => "failed or stopped by its edge".to_owned(),
        StopReason::Replaced { by } => format!("replaced by {by}"),
        StopReason::NodeDraining => "its edge is draining".to_owned(),
    }
}

/// Whether an output's fence is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceCheck {
    /// Its allocation is current (or at least not replaced).
    Current,
    /// Its allocation was replaced: refuse the output.
    Stale,
    /// Not an allocation the region holds: accepted.
    Unknown,
}

/// The region's scheduling state; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduling {
    /// workload → allocation id → record.
    allocs: BTreeMap<WorkloadId, BTreeMap<AllocId, AllocRecord>>,
    /// The next fencing token to issue (starts at 1).
    next_token: u64,
    /// workload → its most recent evaluations, newest first.
    evals: BTreeMap<WorkloadId, VecDeque<EvaluationInfo>>,
    /// edge → its labels and pools, as last reported.
    facts: BTreeMap<String, NodeFacts>,
    /// Outputs refused for a stale fence.
    stale_outputs: u64,
    /// Outputs accepted with a fence naming no allocation held.
    unknown_fences: u64,
    /// Derived (not encoded): edge → allocations desired to run there.
    by_edge: BTreeMap<String, BTreeSet<(WorkloadId, AllocId)>>,
    /// Derived: allocation → workload.
    by_id: BTreeMap<AllocId, WorkloadId>,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            allocs: BTreeMap::new(),
            next_token: 1,
            evals: BTreeMap::new(),
            facts: BTreeMap::new(),
            stale_outputs: 0,
            unknown_fences: 0,
            by_edge: BTreeMap::new(),
            by_id: BTreeMap::new(),
        }
    }
}

impl Encode for Scheduling {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        self.allocs.encode(e)?;
        self.next_token.encode(e)?;
        self.evals.encode(e)?;
        self.facts.encode(e)?;
        self.stale_outputs.encode(e)?;
        self.unknown_fences.encode(e)
    }
}

impl<C> Decode<C> for Scheduling {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let mut s = Scheduling {
            allocs: Decode::decode(d)?,
            next_token: Decode::decode(d)?,
            evals: Decode::decode(d)?,
            facts: Decode::decode(d)?,
            stale_outputs: Decode::decode(d)?,
            unknown_fences: Decode::decode(d)?,
            by_edge: BTreeMap::new(),
            by_id: BTreeMap::new(),
        };
        s.reindex();
        Ok(s)
    }
}

impl<'de, C> BorrowDecode<'de, C> for Scheduling {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        Decode::decode(d)
    }
}

impl Scheduling {
    fn reindex(&mut self) {
        self.by_edge.clear();
        self.by_id.clear();
        for (w, m) in &self.allocs {
            for (id, r) in m {
                self.by_id.insert(*id, w.clone());
                if r.runs() {
                    self.by_edge
                        .entry(r.alloc.node.0.clone())
                        .or_default()
                        .insert((w.clone(), *id));
                }
            }
        }
    }

    /// The next fencing token to issue.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// Takes `n` tokens; returns the first.
    pub(super) fn take_tokens(&mut self, n: u64) -> u64 {
        let first = self.next_token;
        self.next_token = self.next_token.saturating_add(n);
        first
    }

    /// One allocation.
    pub fn alloc(&self, id: AllocId) -> Option<&AllocRecord> {
        let w = self.by_id.get(&id)?;
        self.allocs.get(w)?.get(&id)
    }

    /// A workload's allocations (any state), in id order.
    pub fn allocs_of<'a>(&'a self, w: &WorkloadId) -> impl Iterator<Item = &'a AllocRecord> + 'a {
        self.allocs.get(w).into_iter().flat_map(|m| m.values())
    }

    /// Every allocation (any state), by workload then id.
    pub fn all(&self) -> impl Iterator<Item = &AllocRecord> {
        self.allocs.values().flat_map(|m| m.values())
    }

    /// Allocations desired to run on `edge`, by workload then id.
    pub fn running_on<'a>(&'a self, edge: &str) -> impl Iterator<Item = &'a AllocRecord> + 'a {
        self.by_edge
            .get(edge)
            .into_iter()
            .flatten()
            .filter_map(|(w, id)| self.allocs.get(w).and_then(|m| m.get(id)))
    }

    /// The allocation of `w` desired to run on `edge` (an edge runs a
    /// workload at most once).
    pub fn running_of_on(&self, w: &WorkloadId, edge: &str) -> Option<&AllocRecord> {
        self.allocs
            .get(w)?
            .values()
            .find(|r| r.runs() && r.alloc.node.0 == edge)
    }

    /// The allocation in `slot` of `w` desired to run on `edge`, if any.
    pub fn running_slot_on(&self, w: &WorkloadId, edge: &str, slot: u32) -> Option<&AllocRecord> {
        self.allocs
            .get(w)?
            .values()
            .find(|r| r.runs() && r.alloc.node.0 == edge && r.alloc.slot == slot)
    }

    /// Number of allocations desired to run.
    pub fn running_count(&self) -> usize {
        self.by_edge.values().map(BTreeSet::len).sum()
    }

    /// A workload's evaluations, newest first.
    pub fn evals_of<'a>(&'a self, w: &WorkloadId) -> impl Iterator<Item = &'a EvaluationInfo> + 'a {
        self.evals.get(w).into_iter().flatten()
    }

    /// An edge's reported labels and pools.
    pub fn facts(&self, edge: &str) -> Option<&NodeFacts> {
        self.facts.get(edge)
    }

    /// Records an edge's facts; returns whether they changed.
    pub(super) fn set_facts(&mut self, edge: &str, facts: NodeFacts) -> bool {
        if self.facts.get(edge) == Some(&facts) {
            return false;
        }
        self.facts.insert(edge.to_owned(), facts);
        true
    }

    /// Outputs refused for a stale fence, and outputs whose fence named no
    /// allocation held.
    pub fn fence_counts(&self) -> (u64, u64) {
        (self.stale_outputs, self.unknown_fences)
    }

    /// Judges an output's fence (see the module docs) and counts it.
    pub(super) fn check_fence(&mut self, f: &FenceStamp) -> FenceCheck {
        let verdict = match AllocId::parse(&f.allocation).and_then(|id| self.alloc(id)) {
            Some(r) if r.replaced_by.is_some() => FenceCheck::Stale,
            Some(r) if r.alloc.fencing_token != f.token => FenceCheck::Stale,
            Some(_) => FenceCheck::Current,
            None => FenceCheck::Unknown,
        };
        match verdict {
            FenceCheck::Stale => self.stale_outputs += 1,
            FenceCheck::Unknown => self.unknown_fences += 1,
            FenceCheck::Current => {}
        }
        verdict
    }

    /// Counts an output refused as stale by a later check (a checkpoint
    /// older than the stored one).
    pub(super) fn count_stale(&mut self) {
        self.stale_outputs += 1;
    }

    /// Inserts or replaces an allocation record, keeping the indexes.
    pub(super) fn upsert(&mut self, r: AllocRecord) {
        let (w, id) = (r.alloc.workload.clone(), r.alloc.id);
        if let Some(old) = self.allocs.get(&w).and_then(|m| m.get(&id)) {
            if let Some(set) = self.by_edge.get_mut(&old.alloc.node.0) {
                set.remove(&(w.clone(), id));
                if set.is_empty() {
                    self.by_edge.remove(&old.alloc.node.0);
                }
            }
        }
        if r.runs() {
            self.by_edge
                .entry(r.alloc.node.0.clone())
                .or_default()
                .insert((w.clone(), id));
        }
        self.by_id.insert(id, w.clone());
        self.allocs.entry(w).or_default().insert(id, r);
    }

    /// A mutable record (callers must not change its workload, node or
    /// desired state: use [`Scheduling::upsert`] for that).
    pub(super) fn record_mut(&mut self, id: AllocId) -> Option<&mut AllocRecord> {
        let w = self.by_id.get(&id)?;
        self.allocs.get_mut(w)?.get_mut(&id)
    }

    /// Adds an evaluation to a workload's history (newest first, bounded).
    pub(super) fn record_eval(&mut self, w: &WorkloadId, e: EvaluationInfo) {
        let h = self.evals.entry(w.clone()).or_default();
        h.push_front(e);
        h.truncate(MAX_EVALS_KEPT);
    }

    /// The last recorded evaluation of `w`.
    pub fn last_eval(&self, w: &WorkloadId) -> Option<&EvaluationInfo> {
        self.evals.get(w).and_then(|h| h.front())
    }

    /// Drops stopped allocations beyond [`MAX_STOPPED_KEPT`] for `w`, and
    /// everything of `w` when it is deleted (`exists` false) and nothing
    /// of it runs. Returns the ids dropped.
    pub(super) fn collect(&mut self, w: &WorkloadId, exists: bool) -> Vec<AllocId> {
        let Some(m) = self.allocs.get(w) else {
            if !exists {
                self.evals.remove(w);
            }
            return Vec::new();
        };
        let mut stopped: Vec<(u64, AllocId)> = m
            .values()
            .filter(|r| !r.runs())
            .map(|r| (r.alloc.modified_index, r.alloc.id))
            .collect();
        let any_running = stopped.len() < m.len();
        let drop: Vec<AllocId> = if !exists && !any_running {
            m.keys().copied().collect()
        } else if stopped.len() > MAX_STOPPED_KEPT {
            // Newest first; the oldest beyond the limit go.
            stopped.sort_unstable_by(|a, b| b.cmp(a));
            stopped[MAX_STOPPED_KEPT..]
                .iter()
                .map(|(_, id)| *id)
                .collect()
        } else {
            Vec::new()
        };
        if let Some(m) = self.allocs.get_mut(w) {
            for id in &drop {
                m.remove(id);
                self.by_id.remove(id);
            }
            if m.is_empty() {
                self.allocs.remove(w);
                if !exists {
                    self.evals.remove(w);
                }
            }
        }
        drop
    }

    /// Applies the instance states `edge` reported (see the module docs);
    /// returns the allocations whose client state changed, as they are now.
    pub(super) fn client_states(
        &mut self,
        edge: &str,
        instances: &[InstanceStatus],
        now_ms: i64,
        index: u64,
    ) -> Vec<Allocation> {
        let mut changed = Vec::new();
        for i in instances {
            let w = WorkloadId::new(&i.tenant, &i.name);
            // A sharded monitor may run several instances on one edge:
            // its status names the slot.
            let found = match i.slot {
                Some(slot) => self.running_slot_on(&w, edge, slot),
                None => self.running_of_on(&w, edge),
            };
            let Some(id) = found.map(|r| r.alloc.id) else {
                continue;
            };
            let Some(r) = self.record_mut(id) else {
                continue;
            };
            if r.alloc.generation != i.generation {
                continue;
            }
            let lease_lost = i
                .reason
                .as_deref()
                .is_some_and(|x| x.starts_with("lease-expired"));
            let next = match i.state.as_str() {
                "running" => ClientState::Running,
                "crash-looping" => ClientState::Failed,
                "stopped" if lease_lost => ClientState::Lost,
                "stopped" => ClientState::Complete,
                _ => continue,
            };
            if r.alloc.client != next {
                r.alloc.client = next;
                r.alloc.modified_index = index;
                r.modified_ms = now_ms;
                changed.push(r.alloc.clone());
            }
        }
        changed
    }
}
