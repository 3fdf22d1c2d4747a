//! The node core over a small machine (a list of applied values), on the
//! in-memory harness: proposals, ReadIndex reads on leader and followers,
//! reads without a leader, restarts from the machine's checkpoint and
//! snapshots after compaction.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::harness::Cluster;
use crate::machine::{Machine, RaftView};
use crate::transport::Isolate;
use crate::ProposeError;

#[derive(Debug, thiserror::Error)]
#[error("list machine: {0}")]
struct ListError(String);

/// What survives a crash: the values at a checkpoint.
type Disk = Arc<Mutex<(u64, Vec<u64>)>>;

struct List {
    values: Vec<u64>,
    disk: Disk,
    durable: u64,
}

impl Machine for List {
    type Outcome = usize;
    type Error = ListError;

    fn apply(&mut self, _index: u64, data: &[u8], _raft: &RaftView) -> Result<usize, ListError> {
        let v = u64::from_be_bytes(
            data.try_into()
                .map_err(|_| ListError(format!("{} bytes", data.len())))?,
        );
        self.values.push(v);
        Ok(self.values.len())
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, ListError> {
        Ok(self.values.iter().flat_map(|v| v.to_be_bytes()).collect())
    }
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), ListError> {
        self.values = data
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        *self.disk.lock().unwrap() = (index, self.values.clone());
        self.durable = index;
        Ok(())
    }
    fn durable_index(&self) -> u64 {
        self.durable
    }
    fn checkpoint(
        &mut self,
        applied: u64,
        _now: Instant,
        _now_ms: i64,
        wait: bool,
    ) -> Result<(), ListError> {
        if wait {
            *self.disk.lock().unwrap() = (applied, self.values.clone());
            self.durable = applied;
        }
        Ok(())
    }
}

fn cluster(n: u64, retain: u64) -> Cluster<List> {
    let disks: Arc<Mutex<BTreeMap<u64, Disk>>> = Arc::default();
    Cluster::new(
        n,
        retain,
        Arc::new(move |id| {
            let disk = disks.lock().unwrap().entry(id).or_default().clone();
            let (durable, values) = disk.lock().unwrap().clone();
            List {
                values,
                disk,
                durable,
            }
        }),
    )
}

fn value(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn values(c: &Cluster<List>, id: u64) -> Vec<u64> {
    c.nodes[&id].with(|n| n.machine().values.clone())
}

#[test]
fn proposals_apply_everywhere_and_answer_the_proposer() {
    let mut c = cluster(3, 100);
    c.elect(1);
    let mut rx = c.propose(1, value(7));
    c.settle();
    assert_eq!(rx.try_recv().unwrap().unwrap(), 1);
    for id in 1..=3 {
        assert_eq!(values(&c, id), vec![7]);
    }
    let mut rx = c.propose(2, value(8));
    c.settle();
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(ProposeError::NotLeader { leader: Some(ref l), .. }) if l.hub_id == 1
    ));
}

#[test]
fn read_index_on_a_follower_sees_every_committed_write() {
    let mut c = cluster(3, 100);
    c.elect(1);
    // Committed on the leader and node 2; node 3 has not heard of it yet.
    c.filters.add(crate::transport::DropTo([3].into()));
    let mut w = c.propose(1, value(1));
    c.settle();
    assert_eq!(w.try_recv().unwrap().unwrap(), 1);
    assert!(values(&c, 3).is_empty());
    c.filters.clear();
    // A stale read on 3 would see nothing; ReadIndex waits until 3 has
    // applied the leader's commit index.
    let (mut answer, _failed) = c.read(3, |n| n.machine().values.clone());
    for _ in 0..5 {
        c.tick();
    }
    assert_eq!(answer.try_recv().unwrap(), vec![1]);
    let m = &c.metrics[&3];
    assert_eq!(
        m.reads
            .get_or_create(&crate::metrics::ReadLabel {
                outcome: "linearizable"
            })
            .get(),
        1
    );
}

#[test]
fn read_without_a_reachable_leader_fails_instead_of_hanging() {
    let mut c = cluster(3, 100);
    c.elect(1);
    c.filters.add(Isolate(3));
    let (mut answer, mut failed) = c.read(3, |n| n.applied());
    // Within an election timeout (10 ticks) the read is given up.
    for _ in 0..12 {
        c.tick();
        if failed.try_recv().is_ok() {
            assert!(answer.try_recv().is_err());
            return;
        }
    }
    panic!("read neither answered nor failed");
}

#[test]
fn a_restarted_replica_replays_the_log_after_its_checkpoint() {
    let mut c = cluster(3, 100);
    c.elect(1);
    for v in 0..5 {
        drop(c.propose(1, value(v)));
    }
    c.settle();
    c.checkpoint(2);
    drop(c.propose(1, value(5)));
    c.settle();
    c.crash(2);
    c.start(2, false);
    c.tick();
    assert_eq!(values(&c, 2), (0..6).collect::<Vec<_>>());
}

#[test]
fn a_lagging_replica_catches_up_by_snapshot_after_compaction() {
    let mut c = cluster(3, 0);
    c.elect(1);
    c.crash(3);
    for v in 0..20 {
        drop(c.propose(1, value(v)));
    }
    c.settle();
    c.checkpoint(1);
    assert!(c.nodes[&1].truncated().0 > 10);
    c.start(3, false);
    for _ in 0..20 {
        c.tick();
    }
    assert_eq!(values(&c, 3), (0..20).collect::<Vec<_>>());
}

/// Records which peers it was told to redial.
struct Redials(Arc<Mutex<Vec<u64>>>);

impl crate::transport::Transport for Redials {
    fn send(&mut self, _msgs: Vec<raft::eraftpb::Message>) {}
    fn update_peers(&mut self, _members: &[strata_protocol::ReplicaInfo]) {}
    fn reconnect(&mut self, peer: u64) {
        self.0.lock().unwrap().push(peer);
    }
}

/// A killed peer sends no close, so the link to it looks up until it times
/// out; when it dials in again with a new boot id, the node redials it at
/// once, and only then (the first hello and a repeated one change nothing).
#[test]
fn a_peer_dialing_in_from_a_new_process_gets_its_link_redialed() {
    use crate::node::{Inbox, NodeConfig, PeerEvent, RaftNode};
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig {
        group: "r1".into(),
        id: 1,
        raft_dir: dir.path().join("raft"),
        initial_members: (1..=3).map(crate::harness::member).collect(),
        join: false,
        election_ticks: 10,
        heartbeat_ticks: 2,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 64,
        log_retain_entries: 100,
        membership: crate::harness::MEMBERSHIP,
    };
    let redials = Arc::new(Mutex::new(Vec::new()));
    let machine = List {
        values: vec![],
        disk: Disk::default(),
        durable: 0,
    };
    let mut node: RaftNode<List> = RaftNode::open(
        cfg,
        machine,
        Box::new(Redials(redials.clone())),
        crate::metrics::RaftMetrics::default(),
    )
    .unwrap();
    let now = Instant::now();
    let hello = |from, boot| Inbox::Peer(PeerEvent::Connected { from, boot });
    node.handle(hello(2, 7), now);
    node.handle(hello(3, 9), now);
    node.handle(hello(2, 7), now);
    assert_eq!(*redials.lock().unwrap(), Vec::<u64>::new());
    node.handle(hello(2, 8), now);
    node.handle(hello(2, 8), now);
    assert_eq!(*redials.lock().unwrap(), vec![2]);
}
