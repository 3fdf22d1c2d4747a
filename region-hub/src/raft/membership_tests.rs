//! Membership safety on the in-memory harness (logical time: one tick is
//! 100 ms; see [`super::harness::MEMBERSHIP`] for the deadlines): a new
//! replica is a learner until it has caught up, an unreachable or lagging
//! one is refused with the reason and removed again, a leader change
//! answers the caller and leaves no half-added voter, and the leader's
//! view of each member says who is unreachable or behind.

use raft::eraftpb::MessageType;
use strata_protocol::{MembershipRefusal, ReplicaInfo};
use tokio::sync::oneshot;

use super::harness::{batch_cmd, member, Cluster, MEMBERSHIP};
use strata_consensus::transport::{DropTypes, Isolate};
use strata_consensus::{MemberChange, ProposeError};

type ChangeRx = oneshot::Receiver<Result<Vec<ReplicaInfo>, ProposeError>>;

/// Ticks until the change is answered (bounded: well past the deadline).
pub(super) fn answer(c: &mut Cluster, rx: &mut ChangeRx) -> Result<Vec<ReplicaInfo>, ProposeError> {
    let limit = 2 * (MEMBERSHIP.catch_up_timeout.as_millis() / 100) as usize;
    for _ in 0..limit {
        c.settle();
        if let Ok(r) = rx.try_recv() {
            return r;
        }
        c.tick();
    }
    panic!("membership change not answered within {limit} ticks");
}

fn refusal(r: Result<Vec<ReplicaInfo>, ProposeError>) -> MembershipRefusal {
    match r {
        Err(ProposeError::Refused { refusal, .. }) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// (voters, learners) in the conf state of node `id`, sorted.
fn conf(c: &Cluster, id: u64) -> (Vec<u64>, Vec<u64>) {
    c.nodes[&id].with(|n| {
        let cs = n.conf_state();
        let (mut v, mut l) = (cs.voters.clone(), cs.learners.clone());
        v.sort_unstable();
        l.sort_unstable();
        (v, l)
    })
}

fn refusals(c: &Cluster, id: u64, reason: &'static str) -> u64 {
    c.metrics[&id]
        .membership_refusals
        .get_or_create(&strata_consensus::metrics::RefusalLabel { reason })
        .get()
}

fn drop_replication_to(c: &Cluster, id: u64) {
    c.filters.add(DropTypes {
        to: id,
        types: vec![MessageType::MsgAppend, MessageType::MsgSnapshot],
    });
}

#[test]
fn a_reachable_learner_catches_up_by_snapshot_and_is_promoted() {
    // Log retention 0: after the checkpoints the new replica can only
    // catch up by snapshot.
    let mut c = Cluster::new(3, 0);
    c.elect(1);
    for b in 0..6 {
        c.propose(1, batch_cmd(b * 10, 10));
    }
    c.settle();
    for id in 1..=3 {
        c.checkpoint(id);
    }
    c.start(4, true);
    let mut rx = c.change(1, MemberChange::Add(member(4)));
    // Right after the learner entry is applied, 4 is a learner that is
    // joining: it does not vote yet.
    c.settle();
    let (voters, learners) = conf(&c, 1);
    assert!(
        !voters.contains(&4) && learners == vec![4],
        "{voters:?} {learners:?}"
    );
    let st = c.status(1);
    let p4 = st
        .peers
        .iter()
        .find(|p| p.id == 4)
        .expect("peer 4 in the view");
    assert!(!p4.voter && p4.joining, "{p4:?}");
    let members = answer(&mut c, &mut rx).expect("promoted");
    let four = members.iter().find(|m| m.id == 4).expect("member 4");
    assert!(four.voter, "{members:?}");
    assert_eq!(conf(&c, 1), (vec![1, 2, 3, 4], vec![]));
    assert_eq!(c.metrics[&1].learners_promoted.get(), 1);
    assert!(c.metrics[&4].snapshots_received.get() >= 1);
    assert_eq!(c.stored(4), (0..60).collect::<Vec<i64>>());
    // A voter now: the leader sees it reachable and caught up.
    c.tick();
    let st = c.status(1);
    let p4 = st.peers.iter().find(|p| p.id == 4).expect("peer 4");
    assert!(
        p4.voter && p4.reachable && !p4.lagging && !p4.joining,
        "{p4:?}"
    );
    // The retried request (its answer lost) succeeds without an entry.
    let last = st.last_index;
    let mut rx = c.change(1, MemberChange::Add(member(4)));
    assert_eq!(rx.try_recv().unwrap().unwrap(), members);
    c.settle();
    assert_eq!(c.status(1).last_index, last);
}

#[test]
fn an_unreachable_replica_is_refused_and_removed_again() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    let start = c.now();
    // Replica 4 is never started: nothing answers at its address.
    let mut rx = c.change(1, MemberChange::Add(member(4)));
    let r = answer(&mut c, &mut rx);
    let waited = c.now() - start;
    match refusal(r) {
        MembershipRefusal::NoAnswer {
            id,
            peer_addr,
            waited_ms,
        } => {
            assert_eq!((id, peer_addr.as_str()), (4, member(4).peer_addr.as_str()));
            assert!(waited_ms >= 3000, "{waited_ms}");
        }
        other => panic!("expected NoAnswer, got {other:?}"),
    }
    assert!(waited >= MEMBERSHIP.catch_up_timeout, "{waited:?}");
    // It never was a voter, and the learner is gone everywhere.
    for id in 1..=3 {
        assert_eq!(conf(&c, id), (vec![1, 2, 3], vec![]), "node {id}");
        assert_eq!(c.nodes[&id].members().len(), 3, "node {id}");
    }
    assert_eq!(refusals(&c, 1, "no_answer"), 1);
    // The region writes as before.
    let mut rx = c.propose(1, batch_cmd(0, 10));
    c.settle();
    assert!(rx.try_recv().unwrap().is_ok());
}

#[test]
fn a_replica_that_answers_but_cannot_catch_up_is_refused_with_its_progress() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    for b in 0..3 {
        c.propose(1, batch_cmd(b * 10, 10));
    }
    c.settle();
    c.start(4, true);
    // 4 answers heartbeats, but no entry or snapshot reaches it.
    drop_replication_to(&c, 4);
    let mut rx = c.change(1, MemberChange::Add(member(4)));
    match refusal(answer(&mut c, &mut rx)) {
        MembershipRefusal::Behind {
            id,
            matched,
            last_index,
            silent_ms,
            ..
        } => {
            assert_eq!(id, 4);
            assert_eq!(matched, 0);
            assert!(last_index > 3, "{last_index}");
            assert!(silent_ms <= 1000, "it kept answering: {silent_ms}");
        }
        other => panic!("expected Behind, got {other:?}"),
    }
    assert_eq!(conf(&c, 1), (vec![1, 2, 3], vec![]));
    assert_eq!(refusals(&c, 1, "behind"), 1);
}

#[test]
fn a_leader_change_during_catch_up_answers_and_leaves_no_half_added_voter() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    c.start(4, true);
    drop_replication_to(&c, 4);
    let mut rx = c.change(1, MemberChange::Add(member(4)));
    for _ in 0..3 {
        c.tick();
    }
    assert!(rx.try_recv().is_err(), "still catching up");
    assert_eq!(conf(&c, 1).1, vec![4], "4 is a learner");
    // The leader is cut off: the others elect a new one, and check_quorum
    // makes it step down, answering the waiting caller.
    c.filters.add(Isolate(1));
    let l = c.wait_leader_among(&[2, 3]);
    for _ in 0..25 {
        c.tick();
    }
    match rx.try_recv() {
        Ok(r) => assert_eq!(refusal(r), MembershipRefusal::LeaderChanged { id: 4 }),
        Err(e) => panic!("caller not answered: {e:?}"),
    }
    assert_eq!(refusals(&c, 1, "leader_changed"), 1);
    // 4 is at most a learner: the voters are the three.
    for id in [l, 1] {
        assert_eq!(conf(&c, id).0, vec![1, 2, 3], "node {id}");
    }
    // The new leader reports the left-over learner, not joining.
    let st = c.status(l);
    let p4 = st.peers.iter().find(|p| p.id == 4).expect("peer 4");
    assert!(!p4.voter && !p4.joining, "{p4:?}");
    // Retrying on the new leader, with the network healed, finishes it.
    c.filters.clear();
    let mut rx = c.change(l, MemberChange::Add(member(4)));
    let members = answer(&mut c, &mut rx).expect("promoted on retry");
    assert!(members.iter().any(|m| m.id == 4 && m.voter), "{members:?}");
    assert_eq!(conf(&c, l), (vec![1, 2, 3, 4], vec![]));
}

#[test]
fn one_add_at_a_time_and_removal_still_works() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    c.start(4, true);
    drop_replication_to(&c, 4);
    let mut first = c.change(1, MemberChange::Add(member(4)));
    c.settle();
    // The same request again waits with the first one.
    let mut again = c.change(1, MemberChange::Add(member(4)));
    // Anything else is refused while it runs, naming what runs.
    let mut other = c.change(1, MemberChange::Add(member(5)));
    let mut remove = c.change(1, MemberChange::Remove(3));
    for rx in [&mut other, &mut remove] {
        match refusal(rx.try_recv().unwrap()) {
            MembershipRefusal::Busy { reason } => {
                assert!(reason.contains("replica 4 is being added"), "{reason}")
            }
            r => panic!("expected Busy, got {r:?}"),
        }
    }
    assert_eq!(refusals(&c, 1, "busy"), 2);
    c.filters.clear();
    let members = answer(&mut c, &mut first).expect("promoted");
    assert_eq!(again.try_recv().unwrap().unwrap(), members);
    // Removing (a voter) goes straight through.
    let mut rx = c.change(1, MemberChange::Remove(3));
    let members = answer(&mut c, &mut rx).expect("removed");
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert_eq!(conf(&c, 1), (vec![1, 2, 4], vec![]));
}

#[test]
fn the_leader_reports_an_unreachable_voter() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    c.tick();
    assert!(c.status(1).peers.iter().all(|p| p.reachable), "all answer");
    assert!(c.status(2).peers.is_empty(), "followers have no view");
    c.crash(3);
    // Silent for longer than `unreachable_after` (10 ticks).
    for _ in 0..12 {
        c.tick();
    }
    let st = c.status(1);
    let p3 = st.peers.iter().find(|p| p.id == 3).expect("peer 3");
    assert!(p3.voter && !p3.reachable, "{p3:?}");
    assert!(p3.silent_ms > 1000, "{p3:?}");
    assert_eq!(c.metrics[&1].peers_unreachable.get(), 1);
    // Writes go on without it, so it falls behind.
    for b in 0..8 {
        c.propose(1, batch_cmd(b * 10, 10));
        c.settle();
    }
    let st = c.status(1);
    let p3 = st.peers.iter().find(|p| p.id == 3).expect("peer 3");
    assert!(p3.lagging && p3.lag >= 8, "{p3:?}");
    // Back: reachable and caught up again.
    c.start(3, false);
    for _ in 0..5 {
        c.tick();
    }
    let st = c.status(1);
    assert!(
        st.peers.iter().all(|p| p.reachable && !p.lagging),
        "{:?}",
        st.peers
    );
    assert_eq!(c.metrics[&1].peers_unreachable.get(), 0);
}
