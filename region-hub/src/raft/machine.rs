//! The hub's replicated state machine: the region state ([`RegionState`],
//! the FSM) and the telemetry store, plugged into the shared Raft node
//! (`strata-consensus`).
//!
//! The Raft log is the store's write-ahead log: inserted records live only
//! in the store's memtable until a checkpoint is durable, and the node
//! compacts the log only up to [`HubMachine::durable_index`]. On restart
//! raft replays every entry after that index.
//!
//! Checkpoints do not stall the Raft loop: the machine only starts one
//! ([`HubStore::begin_checkpoint`]: freeze the memtable, spawn the writer)
//! and later installs it ([`HubStore::finish_checkpoint`]); the durable
//! index advances only then.
//!
//! Besides applying, the machine tells the rest of the hub what happened,
//! in apply order: views for the client service, signals for the failure
//! detector and (while leading) the scheduler. None of that feeds back into
//! the state.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bincode::{Decode, Encode};
use strata_consensus::{Machine, RaftView};
use strata_protocol::liveness::EdgeLiveness;
use strata_protocol::{LeaderHint, TelemetryQuery, TelemetryRecord, TenantRetention};
use tokio::sync::{mpsc, watch};

use super::store::{read, write, CheckpointStart, HubStore, SharedStore};
use crate::fsm::{self, DeviceMove, Outcome, RegionState};
use crate::metrics::{HubMetrics, DEVICE_RETRANSMISSION, EDGE_RESEND};
use crate::scheduler::{Rebuild, SchedSignal};

/// Why the hub's machine failed: the replica halts (see `NodeError::Machine`).
#[derive(Debug, thiserror::Error)]
pub enum HubMachineError {
    /// A committed command could not be decoded or applied.
    #[error("region {region}: cannot apply entry {index}: {reason}")]
    Apply {
        /// Region.
        region: String,
        /// Log index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The telemetry store failed.
    #[error("region {region}: telemetry store: {reason}")]
    Store {
        /// Region.
        region: String,
        /// Why.
        reason: String,
    },
    /// A snapshot's or checkpoint's region state does not decode.
    #[error("region {region}: region state at index {index} does not decode: {reason}")]
    State {
        /// Region.
        region: String,
        /// Index of the snapshot or checkpoint.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// A read answered from this replica's local state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    /// Edges known to the region.
    ListEdges,
    /// Devices, optionally of one tenant.
    ListDevices {
        /// Tenant filter.
        tenant: Option<String>,
    },
    /// Telemetry read.
    Query(TelemetryQuery),
    /// The first matches of a device search and their counts.
    SearchDevices(strata_protocol::DeviceSearch),
}

/// What a replica publishes after every Ready and applied entry, so that
/// the client service answers edges without a round trip to the Raft
/// thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// True while this replica leads.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// Where the leader is, when known.
    pub leader: Option<LeaderHint>,
    /// The region's assignments version as applied here.
    pub assignments_version: u64,
    /// One past the newest event of the region's event log, as applied here.
    pub events_end: u64,
}

/// What the machine tells the edge failure detector, in apply order (so a
/// signal never overtakes the state it describes).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeSignal {
    /// This replica started or stopped leading. When it starts, `edges`
    /// holds every edge the applied state knows, with its last replicated
    /// liveness decision if any: what the new leader starts from.
    Leadership {
        /// Whether it leads now.
        leader: bool,
        /// The term.
        term: u64,
        /// Known edges (empty when `leader` is false).
        edges: Vec<(String, Option<EdgeLiveness>)>,
    },
    /// A liveness decision was applied.
    Transition {
        /// The edge.
        edge: String,
        /// The decision as stored (with its event's sequence number).
        liveness: EdgeLiveness,
    },
    /// An applied batch moved devices from one edge to another.
    DevicesMoved(Vec<DeviceMove>),
}

/// Where the machine publishes [`NodeView`]s and sends [`NodeSignal`]s.
#[derive(Debug, Clone)]
pub struct Observer {
    /// The latest view.
    pub view: watch::Sender<NodeView>,
    /// Signals. Unbounded: they are rare (leadership changes, liveness
    /// decisions, devices changing edges), and the node thread must never
    /// wait on the failure detector.
    pub signals: mpsc::UnboundedSender<NodeSignal>,
    /// The scheduler's signals (leadership with the state to start from,
    /// and, while leading, what each applied entry changed), in apply
    /// order. Unbounded for the same reason; `None` without a scheduler.
    pub sched: Option<mpsc::UnboundedSender<SchedSignal>>,
}

/// What a hub's Raft snapshot carries besides the membership.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
struct HubSnapshot {
    /// `RegionState::encode()` at the snapshot index.
    fsm_state: Vec<u8>,
    /// `TelemetryStore::snapshot()`.
    store: Vec<u8>,
}

/// Largest snapshot decoded, in bytes (1 GiB): an allocation limit only.
const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// The hub's machine. See the module docs.
pub struct HubMachine<S: HubStore> {
    region: String,
    state: RegionState,
    store: SharedStore<S>,
    /// Applied records not yet in the store (it was busy with a reader).
    unflushed: Vec<TelemetryRecord>,
    metrics: HubMetrics,
    /// Where views and signals go (none in tests that do not look).
    observer: Option<Observer>,
    /// The store is durable up to here.
    checkpointed: u64,
    last_checkpoint_at: Option<Instant>,
    checkpoint_interval: Duration,
    /// The last Raft position seen (for views published outside a Ready).
    raft: RaftView,
}

impl<S: HubStore> HubMachine<S> {
    /// The machine over `store`, recovered from its last checkpoint
    /// (`recovered_applied`, `fsm_state`).
    pub fn open(
        region: String,
        store: S,
        recovered_applied: u64,
        fsm_state: &[u8],
        checkpoint_interval: Duration,
        metrics: HubMetrics,
    ) -> Result<Self, HubMachineError> {
        let state = if fsm_state.is_empty() {
            RegionState::default()
        } else {
            RegionState::decode(fsm_state).map_err(|e| HubMachineError::State {
                region: region.clone(),
                index: recovered_applied,
                reason: e.to_string(),
            })?
        };
        Ok(HubMachine {
            region,
            state,
            store: std::sync::Arc::new(std::sync::RwLock::new(store)),
            unflushed: Vec::new(),
            metrics,
            observer: None,
            checkpointed: recovered_applied,
            last_checkpoint_at: None,
            checkpoint_interval,
            raft: RaftView {
                id: 0,
                is_leader: false,
                term: 0,
                leader: None,
            },
        })
    }

    /// Publishes views and sends signals to `observer` from now on.
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
        self.publish_view();
    }

    /// The region state as of the applied index.
    pub fn state(&self) -> &RegionState {
        &self.state
    }

    /// The region's name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The telemetry store, shared with readers.
    pub fn store(&self) -> SharedStore<S> {
        self.store.clone()
    }

    /// Applied records waiting for the store (a reader held it).
    pub fn unflushed_records(&self) -> usize {
        self.unflushed.len()
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &HubMetrics {
        &self.metrics
    }

    fn store_err(&self, e: impl std::fmt::Display) -> HubMachineError {
        HubMachineError::Store {
            region: self.region.clone(),
            reason: e.to_string(),
        }
    }

    /// Sends `signal` to the scheduler, if any (a gone receiver is fine).
    fn sched_signal(&self, signal: SchedSignal) {
        if let Some(tx) = self.observer.as_ref().and_then(|o| o.sched.as_ref()) {
            let _ = tx.send(signal);
        }
    }

    /// Sends `signal` to the observer, if any (a gone receiver is fine:
    /// the hub is stopping).
    fn signal(&self, signal: NodeSignal) {
        if let Some(o) = &self.observer {
            let _ = o.signals.send(signal);
        }
    }

    /// Publishes the current [`NodeView`] when it changed.
    fn publish_view(&self) {
        let Some(o) = &self.observer else { return };
        let view = NodeView {
            is_leader: self.raft.is_leader,
            term: self.raft.term,
            leader: self.raft.leader.clone(),
            assignments_version: self.state.workloads().assignments_version(),
            events_end: self.state.events().end_seq(),
        };
        o.view.send_if_modified(|v| {
            let changed = *v != view;
            if changed {
                *v = view;
            }
            changed
        });
    }

    /// Region-state gauges (alerts, monitors, artifacts), after an apply.
    fn update_state_gauges(&self) {
        let w = self.state.workloads();
        let m = &self.metrics;
        m.alerts_held.set(self.state.alerts().len() as i64);
        m.alerts_evicted.set(self.state.alerts().evicted() as i64);
        m.monitors.set(w.monitor_count() as i64);
        m.sched_allocations
            .set(self.state.sched().running_count() as i64);
        m.artifact_bytes.set(w.artifact_usage().1 as i64);
        m.assignments_version.set(w.assignments_version() as i64);
    }

    fn count(&self, outcome: &Outcome, records: usize) {
        match outcome {
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
                let m = &self.metrics;
                m.stale_fence_outputs.inc_by(u64::from(*stale_fences));
                m.checkpoints(checkpoints);
                m.checkpoint_bytes
                    .set(self.state.checkpoints().total_bytes() as i64);
                m.batches_stored.inc();
                m.records_stored.inc_by(records as u64);
                m.alerts_stored.inc_by(u64::from(*new_alerts));
                m.derived_metrics_stored.inc_by(u64::from(*new_metrics));
                m.duplicate(EDGE_RESEND, u64::from(*edge_resends));
                m.duplicate(DEVICE_RETRANSMISSION, u64::from(*device_retransmissions));
                m.seq_reuses.inc_by(u64::from(*seq_reuses));
            }
            Outcome::HeartbeatRecorded { .. } => {
                self.metrics.reports_replicated.inc();
            }
            Outcome::TransitionRecorded { event_seq } => {
                if let Some(ev) = self.state.events().page(*event_seq, 1).events.pop() {
                    if let (Some(detail), true) = (ev.edge, ev.seq == *event_seq) {
                        self.signal(NodeSignal::Transition {
                            edge: ev.subject,
                            liveness: detail.liveness,
                        });
                    }
                }
            }
            Outcome::Refused(r) => {
                tracing::warn!(region = %self.region, refusal = %r, "state machine refused a write");
            }
            Outcome::ArtifactStored { .. }
            | Outcome::MonitorPut { .. }
            | Outcome::MonitorDeleted { .. }
            | Outcome::PlanApplied { .. }
            | Outcome::Skipped => {}
        }
    }

    /// Inserts buffered records into the store: waiting for readers only
    /// when `wait` (snapshots, checkpoints at shutdown).
    fn flush_records(&mut self, wait: bool) -> bool {
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

    /// The store is durable up to `index`.
    fn note_durable(&mut self, index: u64) {
        if index > self.checkpointed {
            self.checkpointed = index;
            self.metrics.checkpoints.inc();
        }
    }

    /// Installs a finished background checkpoint, and starts one when the
    /// interval elapsed or the store asks for it and none is in flight
    /// (always, and waiting for it, when `wait`).
    fn checkpoint_store(
        &mut self,
        applied: u64,
        now: Instant,
        now_ms: i64,
        wait: bool,
    ) -> Result<(), HubMachineError> {
        let due = match self.last_checkpoint_at {
            None => {
                self.last_checkpoint_at = Some(now);
                false
            }
            Some(t) => now.saturating_duration_since(t) >= self.checkpoint_interval,
        };
        let (in_flight, finished, needs) = {
            let st = read(&self.store);
            (
                st.checkpoint_in_flight(),
                st.checkpoint_finished(),
                st.needs_checkpoint(),
            )
        };
        let start = wait || due || needs;
        if !(wait || finished || (start && !in_flight)) {
            return Ok(());
        }
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
        // Install a finished background checkpoint (cheap: an index swap).
        if let Some(index) = st.finish_checkpoint(wait).map_err(|e| self.store_err(e))? {
            self.note_durable(index);
        }
        if start && !st.checkpoint_in_flight() {
            self.last_checkpoint_at = Some(now);
            if applied > self.checkpointed {
                if wait {
                    st.checkpoint(applied, &self.state.encode())
                        .map_err(|e| self.store_err(e))?;
                    self.note_durable(applied);
                } else {
                    match st
                        .begin_checkpoint(applied, self.state.encode())
                        .map_err(|e| self.store_err(e))?
                    {
                        CheckpointStart::Durable => self.note_durable(applied),
                        CheckpointStart::Background => {}
                    }
                }
            }
            if let Err(e) = st.enforce_retention(now_ms) {
                tracing::warn!(region = %self.region, error = %e, "retention failed");
            }
        }
        let retention_drops = st.take_retention_drops(now_ms);
        drop(st);
        if !retention_drops.is_empty() {
            self.metrics.retention_drops(&retention_drops);
            warn_retention_drops(&self.region, &retention_drops);
        }
        Ok(())
    }
}

impl<S: HubStore> Machine for HubMachine<S> {
    type Outcome = Outcome;
    type Error = HubMachineError;

    fn apply(
        &mut self,
        index: u64,
        data: &[u8],
        raft: &RaftView,
    ) -> Result<Outcome, HubMachineError> {
        self.raft = raft.clone();
        let applied =
            fsm::apply(&mut self.state, index, data).map_err(|e| HubMachineError::Apply {
                region: self.region.clone(),
                index,
                reason: e.to_string(),
            })?;
        self.count(&applied.outcome, applied.records.len());
        if raft.is_leader {
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
            self.signal(NodeSignal::DevicesMoved(applied.device_moves));
        }
        self.update_state_gauges();
        // Before the proposer is answered: an edge that hears "submitted"
        // must get the new assignments version in its next heartbeat ack.
        self.publish_view();
        if !applied.records.is_empty() {
            self.unflushed.extend(applied.records);
            self.flush_records(false);
        }
        Ok(applied.outcome)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, HubMachineError> {
        // The snapshot must hold every record up to the applied index.
        self.flush_records(true);
        let store = read(&self.store)
            .snapshot()
            .map_err(|e| self.store_err(e))?;
        let snap = HubSnapshot {
            fsm_state: self.state.encode(),
            store,
        };
        bincode::encode_to_vec(&snap, bincode::config::standard()).map_err(|e| self.store_err(e))
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), HubMachineError> {
        let cfg = bincode::config::standard().with_limit::<MAX_SNAPSHOT_BYTES>();
        let (snap, _): (HubSnapshot, _) =
            bincode::decode_from_slice(data, cfg).map_err(|e| HubMachineError::State {
                region: self.region.clone(),
                index,
                reason: e.to_string(),
            })?;
        let state = if snap.fsm_state.is_empty() {
            RegionState::default()
        } else {
            RegionState::decode(&snap.fsm_state).map_err(|e| HubMachineError::State {
                region: self.region.clone(),
                index,
                reason: e.to_string(),
            })?
        };
        // Buffered records are of older entries, all inside the snapshot.
        self.unflushed.clear();
        write(&self.store)
            .restore(&snap.store, index, &snap.fsm_state)
            .map_err(|e| self.store_err(e))?;
        self.state = state;
        self.checkpointed = index;
        Ok(())
    }

    fn durable_index(&self) -> u64 {
        self.checkpointed
    }

    fn checkpoint(
        &mut self,
        applied: u64,
        now: Instant,
        now_ms: i64,
        wait: bool,
    ) -> Result<(), HubMachineError> {
        self.checkpoint_store(applied, now, now_ms, wait)
    }

    fn on_leadership(&mut self, leader: bool, raft: &RaftView) {
        self.raft = raft.clone();
        if !leader {
            self.signal(NodeSignal::Leadership {
                leader: false,
                term: raft.term,
                edges: Vec::new(),
            });
            self.sched_signal(SchedSignal::Following);
            return;
        }
        if self.observer.is_none() {
            return;
        }
        let mut edges: BTreeMap<String, Option<EdgeLiveness>> = self
            .state
            .edge_views()
            .map(|e| (e.edge.to_owned(), None))
            .collect();
        for (edge, l) in self.state.liveness_table() {
            edges.insert(edge.clone(), Some(l.clone()));
        }
        self.signal(NodeSignal::Leadership {
            leader: true,
            term: raft.term,
            edges: edges.into_iter().collect(),
        });
        if self.observer.as_ref().is_some_and(|o| o.sched.is_some()) {
            self.sched_signal(SchedSignal::Leading(Box::new(Rebuild::of(&self.state))));
        }
    }

    fn published(&mut self, raft: &RaftView) {
        self.raft = raft.clone();
        self.publish_view();
    }
}

/// Most tenants named in one retention warning (the rest are summed).
const WARN_TENANTS: usize = 20;

/// One WARN line for what retention dropped since the last one (the store
/// reports at most once per 10 s): acknowledged readings that are gone.
fn warn_retention_drops(region: &str, drops: &[TenantRetention]) {
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
        region,
        records,
        tenants = %tenants.join("; "),
        "retention dropped acknowledged records (older than store.retention-ms; \
         see GET /api/v1/regions/<region>/retention)"
    );
}
