//! The Raft node: one owner of the `RawNode`, its storage, the region state
//! and the telemetry store.
//!
//! [`RaftNode`] is a synchronous core: it is fed [`Inbox`] messages,
//! [`RaftNode::tick`] and [`RaftNode::on_ready`] calls, with the time passed
//! in, and it talks to peers only through a [`Transport`]. The driver
//! (`driver.rs`) runs it on its own thread against the clock; the test
//! harness runs several in one thread, deterministically.
//!
//! Proposals are tracked by the `(term, index)` their entry got: the reply
//! is sent when that index is applied with the same term; a different term
//! at that index means the entry was overwritten by a new leader. Pending
//! proposals fail with `Unavailable` when leadership is lost; the FSM's
//! exactly-once dedup makes the client's retry safe.
//!
//! Membership changes live in `membership.rs`: a replica is added as a
//! learner and promoted to voter only once it has caught up, or refused
//! and removed again; the same file gives the leader's view of each member
//! (reachable, lag) for [`RaftNode::status`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Message};
use raft::{RawNode, StateRole};
use strata_protocol::liveness::EdgeLiveness;
use strata_protocol::{
    HubResponse, HubStatus, LeaderHint, MembershipRefusal, RaftRole, ReplicaInfo, TelemetryQuery,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::{read, HubStore, SharedStore};
use super::membership::{Join, MembershipConfig};
use super::storage::{RaftLogStorage, StorageError, BOOTSTRAP_INDEX};
use super::transport::Transport;
use crate::fsm::{DeviceMove, Outcome, RegionState};
use crate::metrics::HubMetrics;
use crate::scheduler::{Rebuild, SchedSignal};

/// What the node core needs to know (a slice of the hub config).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Region name (for errors and status).
    pub region: String,
    /// This replica's Raft id (≥ 1).
    pub id: u64,
    /// Directory of the raft-engine log.
    pub raft_dir: PathBuf,
    /// Initial group, used on first start when `join` is false; when
    /// `join` is true, only the addresses of existing members to answer
    /// until the leader's snapshot brings the real membership.
    pub initial_members: Vec<ReplicaInfo>,
    /// Start with an empty membership and wait to be added by the leader.
    pub join: bool,
    /// Ticks without a leader before campaigning.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Byte limit of entries in one append message.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Time between store checkpoints.
    pub checkpoint_interval: Duration,
    /// Entries kept in the Raft log behind the checkpoint, so briefly lagging
    /// followers catch up from the log instead of a snapshot.
    pub log_retain_entries: u64,
    /// Adding replicas safely, and when a member counts as unreachable.
    pub membership: MembershipConfig,
}

/// Why a proposal or membership change did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the leader.
    #[error("hub {id} of region {region} is not the leader (leader: {leader:?})")]
    NotLeader {
        /// Region.
        region: String,
        /// This replica.
        id: u64,
        /// Where the leader is, if known.
        leader: Option<LeaderHint>,
    },
    /// The write may or may not have been committed; retry (idempotent).
    #[error("region {region} unavailable: {reason}")]
    Unavailable {
        /// Region.
        region: String,
        /// Why.
        reason: String,
    },
    /// The request is invalid and retrying will not help.
    #[error("region {region} rejected the request: {reason}")]
    Rejected {
        /// Region.
        region: String,
        /// Why.
        reason: String,
    },
    /// A membership change was refused; the refusal names the replica.
    #[error("region {region}: {refusal}")]
    Refused {
        /// Region.
        region: String,
        /// Why, as answered to the caller.
        refusal: MembershipRefusal,
    },
}

/// Fatal errors: the replica must stop (it cannot keep its log or state).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Raft log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// raft-rs refused to start or failed.
    #[error("raft on hub {id}: {source}")]
    Raft {
        /// Replica id.
        id: u64,
        /// raft-rs error.
        source: raft::Error,
    },
    /// The FSM could not apply a committed entry: halting keeps replicas
    /// from diverging.
    #[error("hub {id} cannot apply entry {index}: {reason}")]
    Apply {
        /// Replica id.
        id: u64,
        /// Log index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The telemetry store failed.
    #[error("hub {id} telemetry store: {reason}")]
    Store {
        /// Replica id.
        id: u64,
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
}

/// What a [`StateFn`] sees: the applied region state and this replica's
/// role, on the Raft thread.
#[derive(Clone, Copy)]
pub struct StateView<'a> {
    /// Region name.
    pub region: &'a str,
    /// The region state as of the applied index.
    pub state: &'a RegionState,
    /// True while this replica leads (writes may be proposed here).
    pub is_leader: bool,
    /// Where the leader is, when known (for `NotLeader` answers).
    pub leader: Option<&'a LeaderHint>,
}

/// A read of the region state, run on the Raft thread. It must be quick
/// (no IO, no blocking): the Raft loop waits for it. It answers through a
/// channel it captured.
pub struct StateFn(pub Box<dyn FnOnce(StateView<'_>) + Send>);

impl std::fmt::Debug for StateFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateFn")
    }
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voter: as a learner first, promoted once caught up, or
    /// refused and removed again (see `membership.rs`). Refused for an id
    /// that is a member at other addresses; answered at once, without a log
    /// entry, when it already is a voter at these addresses (a retried
    /// request).
    Add(ReplicaInfo),
    /// Remove a member. Refused for a non-member and for the leader itself.
    Remove(u64),
}

/// Reply channel of a command proposal.
pub type ProposeReply = oneshot::Sender<Result<Outcome, ProposeError>>;
/// Reply channel of a membership change.
pub type ConfChangeReply = oneshot::Sender<Result<Vec<ReplicaInfo>, ProposeError>>;

/// Everything the node task can be asked to do.
#[derive(Debug)]
pub enum Inbox {
    /// A Raft message from a peer.
    Step(Message),
    /// Propose an encoded FSM command (never empty).
    Propose {
        /// `fsm::encode_command` output.
        data: Vec<u8>,
        /// Completed when the entry is applied (or fails).
        reply: ProposeReply,
    },
    /// Propose a membership change (leader only).
    ConfChange {
        /// The change.
        change: MemberChange,
        /// Completed when the change is applied.
        reply: ConfChangeReply,
    },
    /// Advance the Raft logical clock by one tick.
    Tick,
    /// Report this replica's status.
    Status(oneshot::Sender<HubStatus>),
    /// Answer a read from local state.
    Query(ReadRequest, oneshot::Sender<HubResponse>),
    /// Run a read of the region state (monitors, alerts, placement input).
    WithState(StateFn),
    /// The transport could not reach this peer.
    Unreachable(u64),
    /// A snapshot to this peer was delivered (`true`) or failed.
    SnapshotStatus {
        /// Peer id.
        to: u64,
        /// Whether it was delivered.
        delivered: bool,
    },
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

/// What the node tells the edge failure detector, from its own thread and
/// in apply order (so a signal never overtakes the state it describes).
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

/// Where the node publishes [`NodeView`]s and sends [`NodeSignal`]s.
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

pub(super) enum PendingReply {
    Command(ProposeReply),
    ConfChange(ConfChangeReply),
}

pub(super) struct Pending {
    pub(super) term: u64,
    pub(super) started: Instant,
    pub(super) reply: PendingReply,
}

/// The Raft node core. See the module docs.
pub struct RaftNode<S: HubStore> {
    pub(super) cfg: NodeConfig,
    pub(super) raw: RawNode<RaftLogStorage>,
    pub(super) state: RegionState,
    pub(super) store: SharedStore<S>,
    /// Applied records not yet in the store (it was busy with a reader).
    pub(super) unflushed: Vec<strata_protocol::TelemetryRecord>,
    pub(super) transport: Box<dyn Transport>,
    pub(super) metrics: HubMetrics,
    pub(super) pending: BTreeMap<u64, Pending>,
    pub(super) applied: u64,
    pub(super) applied_term: u64,
    pub(super) checkpointed: u64,
    pub(super) last_checkpoint_at: Option<Instant>,
    pub(super) was_leader: bool,
    /// Ticks each follower has spent waiting for a snapshot.
    pub(super) snapshot_ticks: BTreeMap<u64, usize>,
    /// The add in progress, on the leader (one at a time).
    pub(super) join: Option<Join>,
    /// When each member was last heard from (any Raft message).
    pub(super) last_heard: BTreeMap<u64, Instant>,
    /// When this replica last became leader.
    pub(super) leader_since: Option<Instant>,
    /// Where views and signals go (none in tests that do not look).
    pub(super) observer: Option<Observer>,
}

/// A follower waiting this many election timeouts for a snapshot whose
/// delivery was never reported gets it re-sent: raft-rs itself waits for
/// the report for ever, and a report can be lost (dropped message,
/// restarted link).
const SNAPSHOT_WAIT_ELECTIONS: usize = 5;

fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

/// Bridges raft-rs's slog records to `tracing` (debug and above only:
/// raft-rs is chatty at trace level).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}"),
            slog::Level::Trace => {}
        }
        Ok(())
    }
}

impl<S: HubStore> RaftNode<S> {
    /// Opens the Raft log, reconciles it with the store's last checkpoint
    /// (`recovered_applied`, `fsm_state`) and starts raft so that it replays
    /// every committed entry after the checkpoint.
    pub fn open(
        cfg: NodeConfig,
        store: S,
        recovered_applied: u64,
        fsm_state: &[u8],
        transport: Box<dyn Transport>,
        metrics: HubMetrics,
    ) -> Result<Self, NodeError> {
        let id = cfg.id;
        let bootstrap = (!cfg.join).then(|| {
            let voters = cfg.initial_members.iter().map(|m| m.id).collect::<Vec<_>>();
            (
                ConfState::from((voters, vec![])),
                cfg.initial_members.clone(),
            )
        });
        let mut storage = RaftLogStorage::open(&cfg.raft_dir, bootstrap)?;
        let mut applied = recovered_applied;
        // A snapshot install interrupted by a crash: finish it if the store
        // got the data, forget it otherwise (raft will send it again).
        if let Some((meta, members)) = storage.pending_snapshot()? {
            if applied == meta.index {
                storage.apply_snapshot(&meta, members)?;
            } else {
                storage.abandon_snapshot()?;
            }
        }
        let state = if fsm_state.is_empty() {
            RegionState::default()
        } else {
            RegionState::decode(fsm_state).map_err(|e| NodeError::Apply {
                id,
                index: applied,
                reason: format!("checkpointed region state: {e}"),
            })?
        };
        let (truncated, _) = storage.truncated();
        if applied == 0 && truncated == BOOTSTRAP_INDEX {
            // The bootstrap snapshot holds the empty state: nothing to apply.
            applied = BOOTSTRAP_INDEX;
        }
        if applied < truncated {
            // The store lost data the Raft log no longer has. Refuse to
            // start rather than serve a region with a silent hole.
            return Err(NodeError::Store {
                id,
                reason: format!(
                    "store checkpoint {applied} is behind the raft log start {truncated}; \
                     wipe this replica's data dir and re-add it"
                ),
            });
        }
        if applied > storage.hard_state().commit {
            // Applied entries were committed, even if the commit index that
            // said so was not yet persisted.
            storage.set_commit(applied);
            storage.persist(&[], None, true)?;
        }
        let applied_term = raft::Storage::term(&storage, applied).unwrap_or(0);
        let mut transport_members = storage.members().to_vec();
        if transport_members.is_empty() {
            // A joining replica knows nobody until the leader's snapshot;
            // its configured peers serve as the address book meanwhile, so
            // it can answer the leader's probes.
            transport_members = cfg.initial_members.clone();
        }
        let rcfg = raft::Config {
            id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&rcfg, storage, &raft_logger())
            .map_err(|source| NodeError::Raft { id, source })?;
        let mut node = RaftNode {
            cfg,
            raw,
            state,
            store: std::sync::Arc::new(std::sync::RwLock::new(store)),
            unflushed: Vec::new(),
            transport,
            metrics,
            pending: BTreeMap::new(),
            applied,
            applied_term,
            checkpointed: applied,
            last_checkpoint_at: None,
            was_leader: false,
            snapshot_ticks: BTreeMap::new(),
            join: None,
            last_heard: BTreeMap::new(),
            leader_since: None,
            observer: None,
        };
        node.transport.update_peers(&transport_members);
        node.update_gauges();
        Ok(node)
    }

    /// Publishes views and sends signals to `observer` from now on.
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
        self.publish_view();
    }

    /// Sends `signal` to the scheduler, if any (a gone receiver is fine).
    pub(super) fn sched_signal(&self, signal: SchedSignal) {
        if let Some(tx) = self.observer.as_ref().and_then(|o| o.sched.as_ref()) {
            let _ = tx.send(signal);
        }
    }

    /// Sends `signal` to the observer, if any (a gone receiver is fine:
    /// the hub is stopping).
    pub(super) fn signal(&self, signal: NodeSignal) {
        if let Some(o) = &self.observer {
            let _ = o.signals.send(signal);
        }
    }

    /// Publishes the current [`NodeView`] when it changed.
    pub(super) fn publish_view(&self) {
        let Some(o) = &self.observer else { return };
        let view = NodeView {
            is_leader: self.is_leader(),
            term: self.raw.raft.term,
            leader: self.leader_hint(),
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

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// Highest applied index.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The region state as of the applied index.
    pub fn state(&self) -> &RegionState {
        &self.state
    }

    /// The telemetry store, shared with readers.
    pub fn store(&self) -> SharedStore<S> {
        self.store.clone()
    }

    /// True while this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader's id, when known.
    pub fn leader_id(&self) -> Option<u64> {
        let l = self.raw.raft.leader_id;
        (l != raft::INVALID_ID).then_some(l)
    }

    /// Members of the group.
    pub fn members(&self) -> &[ReplicaInfo] {
        self.raw.store().members()
    }

    /// Where clients should go for writes, when a leader is known.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let id = self.leader_id()?;
        let m = self.members().iter().find(|m| m.id == id)?;
        Some(LeaderHint {
            hub_id: id,
            addr: m.client_addr.clone(),
        })
    }

    pub(super) fn not_leader(&self) -> ProposeError {
        ProposeError::NotLeader {
            region: self.cfg.region.clone(),
            id: self.cfg.id,
            leader: self.leader_hint(),
        }
    }

    pub(super) fn unavailable(&self, reason: impl Into<String>) -> ProposeError {
        ProposeError::Unavailable {
            region: self.cfg.region.clone(),
            reason: reason.into(),
        }
    }

    /// Campaigns immediately (tests and single-replica groups).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        self.raw.campaign().map_err(|source| NodeError::Raft {
            id: self.cfg.id,
            source,
        })
    }

    /// Advances the Raft logical clock.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.check_snapshot_waits();
    }

    /// Safety net for lost snapshot reports (see [`SNAPSHOT_WAIT_ELECTIONS`]).
    fn check_snapshot_waits(&mut self) {
        if !self.is_leader() {
            self.snapshot_ticks.clear();
            return;
        }
        let waiting: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, p)| p.state == raft::ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        self.snapshot_ticks.retain(|id, _| waiting.contains(id));
        let limit = self.cfg.election_ticks * SNAPSHOT_WAIT_ELECTIONS;
        for id in waiting {
            let t = self.snapshot_ticks.entry(id).or_insert(0);
            *t += 1;
            if *t > limit {
                tracing::warn!(
                    hub = self.cfg.id,
                    peer = id,
                    "no snapshot report in time; re-sending"
                );
                self.snapshot_ticks.remove(&id);
                self.raw.report_snapshot(id, raft::SnapshotStatus::Failure);
            }
        }
    }

    /// Handles one inbox message. Nothing is sent or persisted until
    /// [`RaftNode::on_ready`], so a burst of messages becomes one Ready.
    pub fn handle(&mut self, msg: Inbox, now: Instant) {
        match msg {
            Inbox::Step(m) => {
                self.note_heard(m.from, now);
                if let Err(e) = self.raw.step(m) {
                    tracing::debug!(hub = self.cfg.id, error = %e, "dropped raft message");
                }
            }
            Inbox::Propose { data, reply } => self.propose(data, reply, now),
            Inbox::ConfChange { change, reply } => self.propose_conf_change(change, reply, now),
            Inbox::Tick => self.tick(),
            Inbox::Status(reply) => {
                let _ = reply.send(self.status(now));
            }
            Inbox::Query(req, reply) => {
                let _ = reply.send(self.read(req));
            }
            Inbox::WithState(f) => {
                let leader = self.leader_hint();
                (f.0)(StateView {
                    region: &self.cfg.region,
                    state: &self.state,
                    is_leader: self.is_leader(),
                    leader: leader.as_ref(),
                });
            }
            Inbox::Unreachable(id) => self.raw.report_unreachable(id),
            Inbox::SnapshotStatus { to, delivered } => {
                let status = if delivered {
                    self.metrics.snapshots_sent.inc();
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
                // Free the (possibly large) snapshot; it is rebuilt on demand.
                self.raw.mut_store().clear_prepared_snapshot();
            }
        }
    }

    fn propose(&mut self, data: Vec<u8>, reply: ProposeReply, now: Instant) {
        if !self.is_leader() {
            self.metrics.proposals_failed.inc();
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if data.is_empty() {
            // Empty entries are the leader's no-ops; a command never is.
            let _ = reply.send(Err(ProposeError::Rejected {
                region: self.cfg.region.clone(),
                reason: "empty command".into(),
            }));
            return;
        }
        match self.raw.propose(vec![], data) {
            Ok(()) => self.track(PendingReply::Command(reply), now),
            Err(e) => {
                self.metrics.proposals_failed.inc();
                let _ = reply.send(Err(self.unavailable(format!("proposal dropped: {e}"))));
            }
        }
    }

    /// Remembers the entry just appended by a successful propose.
    pub(super) fn track(&mut self, reply: PendingReply, now: Instant) {
        self.metrics.proposals.inc();
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        self.pending.insert(
            index,
            Pending {
                term,
                started: now,
                reply,
            },
        );
    }

    /// Fails every pending proposal and an add in progress (leadership lost
    /// or shutdown).
    pub(super) fn fail_pending(&mut self, reason: &str) {
        let err = self.unavailable(reason);
        if let Some(join) = self.join.take() {
            self.finish_join(join, Err(err.clone()));
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            self.metrics.proposals_failed.inc();
            match p.reply {
                PendingReply::Command(r) => {
                    let _ = r.send(Err(err.clone()));
                }
                PendingReply::ConfChange(r) => {
                    let _ = r.send(Err(err.clone()));
                }
            }
        }
    }

    /// Processes one Ready, in exactly raft-rs's documented order.
    pub fn on_ready(&mut self, now: Instant) -> Result<(), NodeError> {
        // An add in progress looks at what was applied so far and may
        // propose (like an inbox message, before the Ready is taken).
        self.poll_join(now);
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if ready.ss().is_some() {
            self.on_role_change(now);
        }
        // 1. Send messages first: a leader's appends can go out in parallel
        //    with its own fsync (raft thesis 10.2.1); these never depend on
        //    unpersisted local state.
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        // 2. Install a snapshot before anything else touches the state:
        //    committed entries of this Ready follow it.
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(snap)?;
        }
        // 3. Apply committed entries: they are already durable on a quorum
        //    (and locally), so applying before the append below is safe.
        self.apply_entries(ready.take_committed_entries(), now)?;
        // 4 + 5. Append new entries, then the hard state, in one raft-engine
        //    batch (order kept inside it), synced when raft requires it: a
        //    vote or acknowledgement must not be sent before it is durable.
        let hs = ready.hs().cloned();
        self.raw
            .mut_store()
            .persist(ready.entries(), hs.as_ref(), ready.must_sync())?;
        // 6. Messages that promise durability (votes, append responses) go
        //    out only now that the log and hard state are persisted.
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        // 7. Tell raft the Ready is handled; it may produce a LightReady.
        let mut light = self.raw.advance(ready);
        // 8. LightReady: record the new commit index, send the messages it
        //    unlocked, and apply the entries it committed.
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        let msgs = light.take_messages();
        if !msgs.is_empty() {
            self.transport.send(msgs);
        }
        self.apply_entries(light.take_committed_entries(), now)?;
        // 9. Everything handed out is applied.
        self.raw.advance_apply();
        self.publish_view();
        // raft asked for a snapshot while stepping: build it now so the
        // next heartbeat response can send it.
        if self.raw.store().take_snapshot_request() {
            self.build_snapshot()?;
        }
        self.update_gauges();
        Ok(())
    }

    fn on_role_change(&mut self, now: Instant) {
        let leader = self.is_leader();
        let term = self.raw.raft.term;
        if self.was_leader && !leader {
            tracing::info!(hub = self.cfg.id, region = %self.cfg.region, "lost leadership");
            self.abort_join();
            self.fail_pending("leadership lost; retry");
            self.signal(NodeSignal::Leadership {
                leader: false,
                term,
                edges: Vec::new(),
            });
            self.sched_signal(SchedSignal::Following);
        } else if leader && !self.was_leader {
            self.leader_since = Some(now);
            tracing::info!(hub = self.cfg.id, region = %self.cfg.region, term, "became leader");
            if self.observer.is_some() {
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
                    term,
                    edges: edges.into_iter().collect(),
                });
                if self.observer.as_ref().is_some_and(|o| o.sched.is_some()) {
                    self.sched_signal(SchedSignal::Leading(Box::new(Rebuild::of(&self.state))));
                }
            }
        }
        self.was_leader = leader;
    }

    pub(super) fn update_gauges(&self) {
        let r = &self.raw.raft;
        self.metrics.term.set(r.term as i64);
        self.metrics.commit_index.set(r.raft_log.committed as i64);
        self.metrics.applied_index.set(self.applied as i64);
        self.metrics.last_index.set(r.raft_log.last_index() as i64);
        self.metrics.leader.set(i64::from(self.is_leader()));
    }

    /// Region-state gauges (alerts, monitors, artifacts), after an apply.
    pub(super) fn update_state_gauges(&self) {
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

    /// This replica's status at `now` (the leader adds its view of every
    /// member).
    pub fn status(&self, now: Instant) -> HubStatus {
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Follower => RaftRole::Follower,
            StateRole::Candidate => RaftRole::Candidate,
            StateRole::PreCandidate => RaftRole::PreCandidate,
            StateRole::Leader => RaftRole::Leader,
        };
        let cs = self.raw.store().conf_state();
        let replicas = self
            .members()
            .iter()
            .map(|m| ReplicaInfo {
                voter: cs.voters.contains(&m.id),
                ..m.clone()
            })
            .collect();
        HubStatus {
            region: self.cfg.region.clone(),
            id: self.cfg.id,
            role,
            term: r.term,
            leader: self.leader_id(),
            commit_index: r.raft_log.committed,
            applied_index: self.applied,
            last_index: r.raft_log.last_index(),
            replicas,
            // Only this thread writes, so this read never waits.
            stored_records: read(&self.store).stored_records(),
            peers: self.peer_view(now),
        }
    }

    /// Answers a read from this replica's applied state. Followers answer
    /// too: their data may lag the leader by the replication delay. The
    /// service reads the store from its own threads ([`RaftNode::store`]);
    /// this is for region state and tests.
    pub fn read(&self, req: ReadRequest) -> HubResponse {
        match req {
            ReadRequest::ListEdges => HubResponse::Edges(self.state.edges()),
            ReadRequest::ListDevices { tenant } => {
                HubResponse::Devices(read(&self.store).devices(tenant.as_deref()))
            }
            ReadRequest::Query(q) => match read(&self.store).query(&q) {
                Ok(r) => HubResponse::Telemetry(r),
                Err(e) => HubResponse::Error {
                    message: e.to_string(),
                },
            },
        }
    }

    /// Fails pending proposals and takes a final checkpoint.
    pub fn shutdown(&mut self, now: Instant, now_ms: i64) -> Result<(), NodeError> {
        self.fail_pending("hub shutting down");
        self.flush_records(true);
        self.checkpoint(now, now_ms)
    }
}
