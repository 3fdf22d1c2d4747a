//! In-memory multi-node harness: several [`RaftNode`]s, real raft-engine
//! logs in temp dirs, and a message queue instead of QUIC. Time is logical:
//! the harness ticks and steps the nodes itself, one call at a time, so
//! runs do not depend on the wall clock. Machines are built by a factory
//! the test gives, which also models what survives a crash.
//!
//! Each node lives on its own thread ([`NodeThread`]) and the harness runs
//! every call there and waits for it: raft-engine's block cache is
//! thread-local and keyed by file position only, so two engines read from
//! one thread can be served each other's entries.
//!
//! Test support only: it panics on the failures a test wants to see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use strata_protocol::ReplicaInfo;
use tokio::sync::oneshot;

use crate::machine::Machine;
use crate::membership::MembershipConfig;
use crate::metrics::RaftMetrics;
use crate::node::{Inbox, MemberChange, NodeConfig, PeerEvent, ProposeError, RaftNode, RaftStatus};
use crate::transport::{FilteredTransport, Filters, Transport};

/// Pushes messages into the cluster's shared queue.
struct QueueTransport(Arc<Mutex<Vec<Message>>>);

impl Transport for QueueTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        if let Ok(mut q) = self.0.lock() {
            q.extend(msgs);
        }
    }
    fn update_peers(&mut self, _members: &[ReplicaInfo]) {}
}

type Job<M> = Box<dyn FnOnce(&mut RaftNode<M>) + Send>;

/// A node on its own thread; every call runs there, synchronously.
pub struct NodeThread<M: Machine> {
    id: u64,
    tx: Option<mpsc::Sender<Job<M>>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl<M: Machine> NodeThread<M> {
    fn spawn(id: u64, open: impl FnOnce() -> RaftNode<M> + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel::<Job<M>>();
        let join = std::thread::spawn(move || {
            let mut node = open();
            for job in rx {
                job(&mut node);
            }
        });
        NodeThread {
            id,
            tx: Some(tx),
            join: Some(join),
        }
    }

    /// Runs `f` on the node's thread and returns its result.
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RaftNode<M>) -> R + Send + 'static,
    ) -> R {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job<M> = Box::new(move |n| {
            let _ = rtx.send(f(n));
        });
        self.tx
            .as_ref()
            .expect("node thread alive")
            .send(job)
            .expect("node thread alive");
        rrx.recv().expect("node thread panicked")
    }

    /// Replica id.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// See [`RaftNode::is_leader`].
    pub fn is_leader(&self) -> bool {
        self.with(|n| n.is_leader())
    }
    /// See [`RaftNode::leader_id`].
    pub fn leader_id(&self) -> Option<u64> {
        self.with(|n| n.leader_id())
    }
    /// See [`RaftNode::applied`].
    pub fn applied(&self) -> u64 {
        self.with(|n| n.applied())
    }
    /// See [`RaftNode::status`].
    pub fn status(&self, now: Instant) -> RaftStatus {
        self.with(move |n| n.status(now))
    }
    /// See [`RaftNode::members`].
    pub fn members(&self) -> Vec<ReplicaInfo> {
        self.with(|n| n.members().to_vec())
    }
    /// Index and term of the log's truncation point.
    pub fn truncated(&self) -> (u64, u64) {
        self.with(|n| n.truncated())
    }
    /// Whether raft has a Ready pending.
    pub fn has_ready(&self) -> bool {
        self.with(|n| n.has_ready())
    }
    /// See [`RaftNode::handle`].
    pub fn handle(&self, msg: Inbox<M>, now: Instant) {
        self.with(move |n| n.handle(msg, now))
    }
}

impl<M: Machine> Drop for NodeThread<M> {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which drops the node there.
        self.tx.take();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Builds replica `id`'s machine as it comes up after a (re)start.
pub type Factory<M> = Arc<dyn Fn(u64) -> M + Send + Sync>;

/// A cluster of nodes, driven one call at a time.
pub struct Cluster<M: Machine> {
    dirs: BTreeMap<u64, tempfile::TempDir>,
    factory: Factory<M>,
    /// Running nodes.
    pub nodes: BTreeMap<u64, NodeThread<M>>,
    /// Each node's Raft metrics (kept across restarts).
    pub metrics: BTreeMap<u64, RaftMetrics>,
    queue: Arc<Mutex<Vec<Message>>>,
    /// Fault injection for every node's outgoing messages.
    pub filters: Filters,
    members: Vec<ReplicaInfo>,
    retain: u64,
    /// Membership settings of nodes started from now on.
    pub membership: MembershipConfig,
    now: Instant,
}

/// Membership settings of the harness, in its 100 ms ticks: 30 ticks to
/// catch up, 10 ticks of silence make a member unreachable.
pub const MEMBERSHIP: MembershipConfig = MembershipConfig {
    catch_up_timeout: Duration::from_secs(3),
    max_lag_entries: 5,
    unreachable_after: Duration::from_secs(1),
};

/// Address record of replica `id`.
pub fn member(id: u64) -> ReplicaInfo {
    ReplicaInfo {
        id,
        peer_addr: format!("127.0.0.1:{}", 7000 + id),
        client_addr: format!("127.0.0.1:{}", 8000 + id),
        voter: true,
    }
}

impl<M: Machine> Cluster<M> {
    /// `n` nodes, ids 1..=n, all started, machines from `factory`.
    /// `retain` is the Raft log tail kept behind a checkpoint.
    pub fn new(n: u64, retain: u64, factory: Factory<M>) -> Self {
        let mut c = Cluster {
            dirs: BTreeMap::new(),
            factory,
            nodes: BTreeMap::new(),
            metrics: BTreeMap::new(),
            queue: Arc::default(),
            filters: Filters::default(),
            members: (1..=n).map(member).collect(),
            retain,
            membership: MEMBERSHIP,
            now: Instant::now(),
        };
        for id in 1..=n {
            c.start(id, false);
        }
        c
    }

    /// Starts (or restarts from its disk) node `id`; `join` starts it with
    /// an empty membership.
    pub fn start(&mut self, id: u64, join: bool) {
        let dir = self
            .dirs
            .entry(id)
            .or_insert_with(|| tempfile::tempdir().unwrap())
            .path()
            .join("raft");
        let cfg = NodeConfig {
            group: "r1".into(),
            id,
            raft_dir: dir,
            initial_members: self.members.clone(),
            join,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 64,
            log_retain_entries: self.retain,
            membership: self.membership,
        };
        let metrics = self.metrics.entry(id).or_default().clone();
        let transport =
            FilteredTransport::new(QueueTransport(self.queue.clone()), self.filters.clone());
        let factory = self.factory.clone();
        let node = NodeThread::spawn(id, move || {
            RaftNode::open(cfg, factory(id), Box::new(transport), metrics).unwrap()
        });
        self.nodes.insert(id, node);
    }

    /// Crashes node `id`: its process state is gone, its disks stay.
    pub fn crash(&mut self, id: u64) {
        self.nodes.remove(&id);
    }

    /// One round: every node processes its Ready, then queued messages are
    /// delivered. Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let now = self.now;
        for n in self.nodes.values() {
            n.with(move |n| n.on_ready(now).unwrap());
        }
        let msgs = std::mem::take(&mut *self.queue.lock().unwrap());
        let busy = !msgs.is_empty();
        for m in msgs {
            let (from, to, snap) = (m.from, m.to, m.get_msg_type() == MessageType::MsgSnapshot);
            let delivered = match self.nodes.get(&to) {
                Some(n) => {
                    n.handle(Inbox::Peer(PeerEvent::Step(m)), now);
                    true
                }
                None => false,
            };
            if let Some(sender) = self.nodes.get(&from) {
                if snap {
                    sender.handle(
                        Inbox::Peer(PeerEvent::SnapshotStatus { to, delivered }),
                        now,
                    );
                } else if !delivered {
                    sender.handle(Inbox::Peer(PeerEvent::Unreachable(to)), now);
                }
            }
        }
        busy
    }

    /// Steps until no message is in flight (bounded).
    pub fn settle(&mut self) {
        for _ in 0..200 {
            if !self.step() && !self.nodes.values().any(|n| n.has_ready()) {
                return;
            }
        }
    }

    /// Ticks every node once and settles.
    pub fn tick(&mut self) {
        self.now += Duration::from_millis(100);
        let now = self.now;
        for n in self.nodes.values() {
            n.handle(Inbox::Tick, now);
        }
        self.settle();
    }

    /// Makes `id` campaign and settles; asserts it won.
    pub fn elect(&mut self, id: u64) {
        self.nodes[&id].with(|n| n.campaign().unwrap());
        self.settle();
        assert!(self.nodes[&id].is_leader(), "node {id} did not win");
    }

    /// The unique leader among running nodes, ticking until there is one.
    pub fn wait_leader(&mut self) -> u64 {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        self.wait_leader_among(&ids)
    }

    /// Ticks until one of `ids` leads with a majority agreeing.
    pub fn wait_leader_among(&mut self, ids: &[u64]) -> u64 {
        for _ in 0..300 {
            let leaders: Vec<u64> = self
                .nodes
                .values()
                .filter(|n| n.is_leader() && ids.contains(&n.id()))
                .map(|n| n.id())
                .collect();
            // A deposed leader may not know it yet; require agreement.
            if let [l] = leaders[..] {
                if self
                    .nodes
                    .values()
                    .filter(|n| n.leader_id() == Some(l))
                    .count()
                    * 2
                    > self.members.len()
                {
                    return l;
                }
            }
            self.tick();
        }
        panic!("no leader elected");
    }

    /// Proposes on `id`; the receiver completes after apply.
    pub fn propose(
        &mut self,
        id: u64,
        data: Vec<u8>,
    ) -> oneshot::Receiver<Result<M::Outcome, ProposeError>> {
        let (tx, rx) = oneshot::channel();
        let now = self.now;
        self.nodes[&id].handle(Inbox::Propose { data, reply: tx }, now);
        rx
    }

    /// Proposes a membership change on `id`.
    pub fn change(
        &mut self,
        id: u64,
        change: MemberChange,
    ) -> oneshot::Receiver<Result<Vec<ReplicaInfo>, ProposeError>> {
        let (tx, rx) = oneshot::channel();
        let now = self.now;
        self.nodes[&id].handle(Inbox::ConfChange { change, reply: tx }, now);
        rx
    }

    /// Starts a linearizable read of `f` on `id`: the first receiver gets
    /// its answer, the second why it failed.
    pub fn read<R: Send + 'static>(
        &mut self,
        id: u64,
        f: impl FnOnce(&RaftNode<M>) -> R + Send + 'static,
    ) -> (oneshot::Receiver<R>, oneshot::Receiver<ProposeError>) {
        let (tx, rx) = oneshot::channel();
        let (ftx, frx) = oneshot::channel();
        let now = self.now;
        self.nodes[&id].handle(
            Inbox::ReadIndex {
                f: crate::NodeFn(Box::new(move |n, _| {
                    let _ = tx.send(f(n));
                })),
                failed: ftx,
            },
            now,
        );
        (rx, frx)
    }

    /// Raft status of node `id` at the harness's time.
    pub fn status(&self, id: u64) -> RaftStatus {
        self.nodes[&id].status(self.now)
    }

    /// The harness's logical time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Checkpoints node `id` (and compacts its log).
    pub fn checkpoint(&mut self, id: u64) {
        let now = self.now;
        self.nodes[&id].with(move |n| n.checkpoint(now, 0).unwrap());
    }
}
