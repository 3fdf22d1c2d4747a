//! The Raft node: one owner of the `RawNode`, its storage and the
//! replicated [`Machine`].
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
//! proposals fail with `Unavailable` when leadership is lost; the machine
//! makes the client's retry safe (exactly-once dedup, idempotent commands).
//!
//! Linearizable reads use ReadIndex ([`Inbox::ReadIndex`]): any replica
//! asks the leader for its commit index, confirmed by a quorum heartbeat
//! round, and answers once it has applied that far. raft-rs drops a read
//! silently when no leader is known or the leader has not yet committed in
//! its term, so a read not confirmed within an election timeout fails with
//! `Unavailable` and the caller retries.
//!
//! Membership changes live in `membership.rs`: a replica is added as a
//! learner and promoted to voter only once it has caught up, or refused
//! and removed again; the same file gives the leader's view of each member
//! (reachable, lag) for [`RaftNode::status`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use raft::eraftpb::{ConfState, Message};
use raft::{RawNode, StateRole};
use strata_protocol::{LeaderHint, MembershipRefusal, PeerProgress, RaftRole, ReplicaInfo};
use tokio::sync::oneshot;

use crate::machine::{Machine, RaftView};
use crate::membership::{Join, MembershipConfig};
use crate::metrics::RaftMetrics;
use crate::storage::{RaftLogStorage, StorageError, BOOTSTRAP_INDEX};
use crate::transport::Transport;

/// What the node core needs to know (a slice of the hub config).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The group's name (a region, or `central`), for errors and status.
    pub group: String,
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
    /// Entries kept in the Raft log behind the checkpoint, so briefly lagging
    /// followers catch up from the log instead of a snapshot.
    pub log_retain_entries: u64,
    /// Adding replicas safely, and when a member counts as unreachable.
    pub membership: MembershipConfig,
}

/// Why a proposal, read or membership change did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the leader.
    #[error("replica {id} of {group} is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The group (region name or `central`).
        group: String,
        /// This replica.
        id: u64,
        /// Where the leader is, if known.
        leader: Option<LeaderHint>,
    },
    /// The write may or may not have been committed; retry (idempotent).
    #[error("{group} unavailable: {reason}")]
    Unavailable {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// The request is invalid and retrying will not help.
    #[error("{group} rejected the request: {reason}")]
    Rejected {
        /// The group.
        group: String,
        /// Why.
        reason: String,
    },
    /// A membership change was refused; the refusal names the replica.
    #[error("{group}: {refusal}")]
    Refused {
        /// The group.
        group: String,
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
    #[error("raft on replica {id}: {source}")]
    Raft {
        /// Replica id.
        id: u64,
        /// raft-rs error.
        source: raft::Error,
    },
    /// A committed entry or snapshot could not be decoded: halting keeps
    /// replicas from diverging.
    #[error("replica {id} cannot apply entry {index}: {reason}")]
    Apply {
        /// Replica id.
        id: u64,
        /// Log index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The state machine failed (applying, snapshotting or checkpointing).
    #[error("replica {id} state machine at index {index}: {source}")]
    Machine {
        /// Replica id.
        id: u64,
        /// The applied index (or the entry being applied).
        index: u64,
        /// The machine's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The machine's durable state is older than the start of the Raft log.
    #[error(
        "replica {id}: state checkpoint {durable} is behind the raft log start {log_start}; \
         wipe this replica's data dir and re-add it"
    )]
    Hole {
        /// Replica id.
        id: u64,
        /// The machine's durable index.
        durable: u64,
        /// First index the log still has.
        log_start: u64,
    },
}

/// A function run on the Raft thread with the replica (its machine, its
/// role). It must be quick (no IO, no blocking): the Raft loop waits for
/// it. It answers through a channel it captured.
pub struct NodeFn<M: Machine>(pub BoxedNodeFn<M>);

/// The boxed function of a [`NodeFn`].
pub type BoxedNodeFn<M> = Box<dyn FnOnce(&RaftNode<M>, Instant) + Send>;

impl<M: Machine> std::fmt::Debug for NodeFn<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeFn")
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
pub type ProposeReply<O> = oneshot::Sender<Result<O, ProposeError>>;
/// Reply channel of a membership change.
pub type ConfChangeReply = oneshot::Sender<Result<Vec<ReplicaInfo>, ProposeError>>;

/// What the transport tells the node about its peers.
#[derive(Debug)]
pub enum PeerEvent {
    /// A Raft message from a peer.
    Step(Message),
    /// The transport could not reach this peer.
    Unreachable(u64),
    /// A snapshot to this peer was delivered (`true`) or failed.
    SnapshotStatus {
        /// Peer id.
        to: u64,
        /// Whether it was delivered.
        delivered: bool,
    },
    /// A peer dialed in, saying which start of its process it is.
    Connected {
        /// Peer id.
        from: u64,
        /// Its boot id (random per process start).
        boot: u64,
    },
}

/// Everything the node task can be asked to do.
pub enum Inbox<M: Machine> {
    /// From the peer transport.
    Peer(PeerEvent),
    /// Propose an encoded command (never empty).
    Propose {
        /// The machine's encoding of the command.
        data: Vec<u8>,
        /// Completed when the entry is applied (or fails).
        reply: ProposeReply<M::Outcome>,
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
    /// Run a function now, over the local applied state (a stale read, a
    /// status report).
    With(NodeFn<M>),
    /// Run a function once the local state is at least as new as the
    /// leader's commit index at the time of the request, confirmed by a
    /// quorum (a linearizable read); fails with `Unavailable` when no leader
    /// confirms it within an election timeout.
    ReadIndex {
        /// Run with the replica once the read index is applied.
        f: NodeFn<M>,
        /// Told when the read cannot be served (`f` is dropped then).
        failed: oneshot::Sender<ProposeError>,
    },
}

impl<M: Machine> std::fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbox::Peer(e) => f.debug_tuple("Peer").field(e).finish(),
            Inbox::Propose { data, .. } => write!(f, "Propose({} bytes)", data.len()),
            Inbox::ConfChange { change, .. } => f.debug_tuple("ConfChange").field(change).finish(),
            Inbox::Tick => f.write_str("Tick"),
            Inbox::With(_) => f.write_str("With"),
            Inbox::ReadIndex { .. } => f.write_str("ReadIndex"),
        }
    }
}

impl<M: Machine> From<PeerEvent> for Inbox<M> {
    fn from(e: PeerEvent) -> Self {
        Inbox::Peer(e)
    }
}

/// A replica's Raft status at some instant (the leader adds its view of
/// every member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// This replica.
    pub id: u64,
    /// Its role.
    pub role: RaftRole,
    /// Current term.
    pub term: u64,
    /// The leader's id, when known.
    pub leader: Option<u64>,
    /// Highest committed index.
    pub commit_index: u64,
    /// Highest applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Members, with whether each votes.
    pub replicas: Vec<ReplicaInfo>,
    /// The leader's view of each member (empty on followers).
    pub peers: Vec<PeerProgress>,
}

pub(crate) enum PendingReply<O> {
    Command(ProposeReply<O>),
    ConfChange(ConfChangeReply),
}

pub(crate) struct Pending<O> {
    pub(crate) term: u64,
    pub(crate) started: Instant,
    pub(crate) reply: PendingReply<O>,
}

/// A ReadIndex read waiting for its index to be confirmed, then applied.
pub(crate) struct PendingRead<M: Machine> {
    f: NodeFn<M>,
    failed: oneshot::Sender<ProposeError>,
    /// Ticks left before it fails.
    ticks_left: usize,
    /// The confirmed read index, once the leader answered.
    index: Option<u64>,
}

/// The Raft node core. See the module docs.
pub struct RaftNode<M: Machine> {
    pub(crate) cfg: NodeConfig,
    pub(crate) raw: RawNode<RaftLogStorage>,
    pub(crate) machine: M,
    pub(crate) transport: Box<dyn Transport>,
    pub(crate) metrics: RaftMetrics,
    pub(crate) pending: BTreeMap<u64, Pending<M::Outcome>>,
    /// ReadIndex reads by request id (the context raft echoes back).
    pub(crate) reads: BTreeMap<u64, PendingRead<M>>,
    pub(crate) next_read: u64,
    pub(crate) applied: u64,
    pub(crate) applied_term: u64,
    pub(crate) was_leader: bool,
    /// Ticks each follower has spent waiting for a snapshot.
    pub(crate) snapshot_ticks: BTreeMap<u64, usize>,
    /// The add in progress, on the leader (one at a time).
    pub(crate) join: Option<Join>,
    /// When each member was last heard from (any Raft message).
    pub(crate) last_heard: BTreeMap<u64, Instant>,
    /// The boot id each peer last dialed in with: a new one means it
    /// restarted, and the link to it is redialed at once.
    pub(crate) peer_boots: BTreeMap<u64, u64>,
    /// When this replica last became leader.
    pub(crate) leader_since: Option<Instant>,
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

impl<M: Machine> RaftNode<M> {
    /// Opens the Raft log, reconciles it with the machine's durable state
    /// ([`Machine::durable_index`]) and starts raft so that it replays
    /// every committed entry after it.
    pub fn open(
        cfg: NodeConfig,
        machine: M,
        transport: Box<dyn Transport>,
        metrics: RaftMetrics,
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
        let mut applied = machine.durable_index();
        // A snapshot install interrupted by a crash: finish it if the
        // machine got the data, forget it otherwise (raft sends it again).
        if let Some((meta, members)) = storage.pending_snapshot()? {
            if applied == meta.index {
                storage.apply_snapshot(&meta, members)?;
            } else {
                storage.abandon_snapshot()?;
            }
        }
        let (truncated, _) = storage.truncated();
        if applied == 0 && truncated == BOOTSTRAP_INDEX {
            // The bootstrap snapshot holds the empty state: nothing to apply.
            applied = BOOTSTRAP_INDEX;
        }
        if applied < truncated {
            // The machine lost data the Raft log no longer has. Refuse to
            // start rather than serve state with a silent hole.
            return Err(NodeError::Hole {
                id,
                durable: applied,
                log_start: truncated,
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
            machine,
            transport,
            metrics,
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            applied,
            applied_term,
            was_leader: false,
            snapshot_ticks: BTreeMap::new(),
            join: None,
            last_heard: BTreeMap::new(),
            peer_boots: BTreeMap::new(),
            leader_since: None,
        };
        node.transport.update_peers(&transport_members);
        node.update_gauges();
        Ok(node)
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.cfg.group
    }

    /// Highest applied index.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The state machine, as of the applied index.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The state machine, for its owner's bookkeeping (tests, wiring).
    /// Changing replicated state through it breaks replica equality.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
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

    /// The current configuration (voters, learners).
    pub fn conf_state(&self) -> &ConfState {
        self.raw.store().conf_state()
    }

    /// Index and term of the log's truncation point.
    pub fn truncated(&self) -> (u64, u64) {
        self.raw.store().truncated()
    }

    /// Whether raft has a Ready pending.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
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

    /// The replica's Raft position, as machines see it.
    pub fn view(&self) -> RaftView {
        RaftView {
            id: self.cfg.id,
            is_leader: self.is_leader(),
            term: self.raw.raft.term,
            leader: self.leader_hint(),
        }
    }

    pub(crate) fn not_leader(&self) -> ProposeError {
        ProposeError::NotLeader {
            group: self.cfg.group.clone(),
            id: self.cfg.id,
            leader: self.leader_hint(),
        }
    }

    pub(crate) fn unavailable(&self, reason: impl Into<String>) -> ProposeError {
        ProposeError::Unavailable {
            group: self.cfg.group.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn machine_err(&self, index: u64, e: M::Error) -> NodeError {
        NodeError::Machine {
            id: self.cfg.id,
            index,
            source: Box::new(e),
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
        self.expire_reads();
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
                    replica = self.cfg.id,
                    group = %self.cfg.group,
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
    pub fn handle(&mut self, msg: Inbox<M>, now: Instant) {
        match msg {
            Inbox::Peer(PeerEvent::Step(m)) => {
                self.note_heard(m.from, now);
                if let Err(e) = self.raw.step(m) {
                    tracing::debug!(replica = self.cfg.id, error = %e, "dropped raft message");
                }
            }
            Inbox::Peer(PeerEvent::Unreachable(id)) => self.raw.report_unreachable(id),
            Inbox::Peer(PeerEvent::Connected { from, boot }) => {
                // A killed peer sends no close: until the link to its old
                // process times out, everything sent to it is lost, which
                // keeps a restarted replica from voting or catching up for
                // seconds. Its new boot id says so at once.
                if self
                    .peer_boots
                    .insert(from, boot)
                    .is_some_and(|b| b != boot)
                {
                    tracing::info!(
                        replica = self.cfg.id,
                        peer = from,
                        "peer restarted; redialing it"
                    );
                    self.transport.reconnect(from);
                }
            }
            Inbox::Peer(PeerEvent::SnapshotStatus { to, delivered }) => {
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
            Inbox::Propose { data, reply } => self.propose(data, reply, now),
            Inbox::ConfChange { change, reply } => self.propose_conf_change(change, reply, now),
            Inbox::Tick => self.tick(),
            Inbox::With(f) => (f.0)(self, now),
            Inbox::ReadIndex { f, failed } => self.read_index(f, failed),
        }
    }

    fn propose(&mut self, data: Vec<u8>, reply: ProposeReply<M::Outcome>, now: Instant) {
        if !self.is_leader() {
            self.metrics.proposals_failed.inc();
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if data.is_empty() {
            // Empty entries are the leader's no-ops; a command never is.
            let _ = reply.send(Err(ProposeError::Rejected {
                group: self.cfg.group.clone(),
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

    /// Starts a ReadIndex read: its id goes to the leader as the request
    /// context and comes back in a `ReadState`.
    fn read_index(&mut self, f: NodeFn<M>, failed: oneshot::Sender<ProposeError>) {
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(
            id,
            PendingRead {
                f,
                failed,
                ticks_left: self.cfg.election_ticks.max(1),
                index: None,
            },
        );
        self.raw.read_index(id.to_be_bytes().to_vec());
    }

    /// Records confirmed read indexes (from a Ready).
    fn confirm_reads(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            let Ok(bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(r) = self.reads.get_mut(&u64::from_be_bytes(bytes)) {
                r.index = Some(rs.index);
            }
        }
    }

    /// Runs every confirmed read whose index is applied.
    fn serve_reads(&mut self, now: Instant) {
        let applied = self.applied;
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(r) = self.reads.remove(&id) {
                self.metrics.read("linearizable");
                (r.f.0)(self, now);
            }
        }
    }

    /// Fails reads no leader confirmed within an election timeout (raft
    /// drops a read it cannot serve without telling anyone).
    fn expire_reads(&mut self) {
        let mut expired = Vec::new();
        for (id, r) in self.reads.iter_mut() {
            if r.index.is_none() {
                r.ticks_left = r.ticks_left.saturating_sub(1);
                if r.ticks_left == 0 {
                    expired.push(*id);
                }
            }
        }
        for id in expired {
            if let Some(r) = self.reads.remove(&id) {
                self.metrics.read("failed");
                let _ = r
                    .failed
                    .send(self.unavailable("no leader confirmed the read in time; retry"));
            }
        }
    }

    /// Remembers the entry just appended by a successful propose.
    pub(crate) fn track(&mut self, reply: PendingReply<M::Outcome>, now: Instant) {
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
    pub(crate) fn fail_pending(&mut self, reason: &str) {
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
        // Read states: a read is served once its index is applied (below).
        if !ready.read_states().is_empty() {
            self.confirm_reads(ready.take_read_states());
        }
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
        self.serve_reads(now);
        let view = self.view();
        self.machine.published(&view);
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
            tracing::info!(replica = self.cfg.id, group = %self.cfg.group, "lost leadership");
            self.abort_join();
            self.fail_pending("leadership lost; retry");
            let view = self.view();
            self.machine.on_leadership(false, &view);
        } else if leader && !self.was_leader {
            self.leader_since = Some(now);
            tracing::info!(replica = self.cfg.id, group = %self.cfg.group, term, "became leader");
            let view = self.view();
            self.machine.on_leadership(true, &view);
        }
        self.was_leader = leader;
    }

    pub(crate) fn update_gauges(&self) {
        let r = &self.raw.raft;
        self.metrics.term.set(r.term as i64);
        self.metrics.commit_index.set(r.raft_log.committed as i64);
        self.metrics.applied_index.set(self.applied as i64);
        self.metrics.last_index.set(r.raft_log.last_index() as i64);
        self.metrics.leader.set(i64::from(self.is_leader()));
    }

    /// This replica's Raft status at `now` (the leader adds its view of
    /// every member).
    pub fn status(&self, now: Instant) -> RaftStatus {
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
        RaftStatus {
            id: self.cfg.id,
            role,
            term: r.term,
            leader: self.leader_id(),
            commit_index: r.raft_log.committed,
            applied_index: self.applied,
            last_index: r.raft_log.last_index(),
            replicas,
            peers: self.peer_view(now),
        }
    }

    /// Fails pending proposals and reads, and makes the state durable.
    pub fn shutdown(&mut self, now: Instant, now_ms: i64) -> Result<(), NodeError> {
        self.fail_pending("replica shutting down");
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.failed.send(self.unavailable("replica shutting down"));
        }
        self.checkpoint(now, now_ms)
    }
}
