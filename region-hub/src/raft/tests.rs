//! Multi-node Raft tests on the in-memory [`Cluster`] harness: election,
//! replication, leader crash and partition, restart from disk, snapshot
//! catch-up after compaction, and membership changes.

use super::harness::{batch_cmd, member, Cluster};
use crate::fsm::Outcome;
use strata_consensus::transport::{Isolate, Partition};
use strata_consensus::{MemberChange, ProposeError};
use strata_protocol::MembershipRefusal;

fn committed(rx: &mut tokio::sync::oneshot::Receiver<Result<Outcome, ProposeError>>) -> Outcome {
    rx.try_recv().expect("reply ready").expect("committed")
}

/// Expected ts values of batches `0..n` of 10 records each.
fn expect(n: u64) -> Vec<i64> {
    (0..n * 10).map(|i| i as i64).collect()
}

#[test]
fn elect_replicate_and_answer_proposers() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    let mut rxs: Vec<_> = (0..5)
        .map(|b| c.propose(1, batch_cmd(b * 10, 10)))
        .collect();
    c.settle();
    for (b, rx) in rxs.iter_mut().enumerate() {
        match committed(rx) {
            Outcome::Committed {
                first_seq,
                new_records,
                ..
            } => {
                assert_eq!((first_seq, new_records), (b as u64 * 10, 10));
            }
            o => panic!("unexpected {o:?}"),
        }
    }
    for id in 1..=3 {
        assert_eq!(c.stored(id), expect(5), "node {id}");
    }
    // A resent batch is committed again but stored once.
    let mut rx = c.propose(1, batch_cmd(0, 10));
    c.settle();
    assert!(matches!(
        committed(&mut rx),
        Outcome::Committed {
            edge_resends: 10,
            device_retransmissions: 0,
            ..
        }
    ));
    assert_eq!(c.stored(2), expect(5));
    let m = c.hub_metrics(1);
    assert_eq!(m.batches_stored.get(), 6);
    assert_eq!(m.duplicates_total(), 10);
}

#[test]
fn follower_refuses_with_a_leader_hint() {
    let mut c = Cluster::new(3, 1000);
    c.elect(2);
    let mut rx = c.propose(1, batch_cmd(0, 1));
    match rx.try_recv().unwrap() {
        Err(ProposeError::NotLeader {
            leader: Some(h), ..
        }) => {
            assert_eq!(h.hub_id, 2);
            assert_eq!(h.addr, member(2).client_addr);
        }
        other => panic!("unexpected {other:?}"),
    }
    let st = c.status(1);
    assert_eq!(st.leader, Some(2));
    assert_eq!(st.replicas.len(), 3);
}

#[test]
fn leader_crash_elects_a_new_leader_and_loses_nothing() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    for b in 0..3 {
        c.propose(1, batch_cmd(b * 10, 10));
    }
    c.settle();
    c.crash(1);
    let l = c.wait_leader_among(&[2, 3]);
    let mut rx = c.propose(l, batch_cmd(30, 10));
    c.settle();
    committed(&mut rx);
    // The old leader restarts from its raft-engine log alone (never
    // checkpointed) and catches up.
    c.start(1, false);
    for _ in 0..5 {
        c.tick();
    }
    for id in 1..=3 {
        assert_eq!(c.stored(id), expect(4), "node {id}");
    }
}

#[test]
fn isolated_leader_steps_down_and_fails_its_pending_proposals() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    c.propose(1, batch_cmd(0, 10));
    c.settle();
    c.filters.add(Isolate(1));
    let mut lost = c.propose(1, batch_cmd(10, 10));
    let l = c.wait_leader_among(&[2, 3]);
    // check_quorum makes the isolated leader step down within an election
    // timeout, failing what it could not commit.
    for _ in 0..25 {
        c.tick();
    }
    assert!(!c.nodes[&1].is_leader());
    assert!(matches!(
        lost.try_recv().unwrap(),
        Err(ProposeError::Unavailable { .. })
    ));
    let mut rx = c.propose(l, batch_cmd(20, 10));
    c.settle();
    committed(&mut rx);
    c.filters.clear();
    for _ in 0..5 {
        c.tick();
    }
    // The uncommitted entry of the old leader was overwritten everywhere;
    // everything committed is on every replica.
    let want: Vec<i64> = (0..10).chain(20..30).collect();
    for id in 1..=3 {
        assert_eq!(c.stored(id), want, "node {id}");
    }
}

#[test]
fn minority_partition_cannot_commit() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    c.filters.add(Partition {
        a: [1].into(),
        b: [2, 3].into(),
    });
    let mut rx = c.propose(1, batch_cmd(0, 10));
    c.settle();
    assert!(
        rx.try_recv().is_err(),
        "nothing may commit without a quorum"
    );
    assert!(c.stored(1).is_empty());
}

#[test]
fn restart_recovers_from_checkpoint_and_log() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    for b in 0..3 {
        c.propose(1, batch_cmd(b * 10, 10));
    }
    c.settle();
    for id in 1..=3 {
        c.checkpoint(id);
    }
    // Two more batches live only in the raft log (the store's WAL).
    for b in 3..5 {
        c.propose(1, batch_cmd(b * 10, 10));
    }
    c.settle();
    let applied = c.nodes[&2].applied();
    for id in 1..=3 {
        c.crash(id);
    }
    for id in 1..=3 {
        c.start(id, false);
        assert_eq!(c.stored(id), expect(3), "checkpointed part before replay");
    }
    let l = c.wait_leader();
    let mut rx = c.propose(l, batch_cmd(50, 10));
    c.settle();
    committed(&mut rx);
    for id in 1..=3 {
        assert_eq!(c.stored(id), expect(6), "node {id}");
        assert!(c.nodes[&id].applied() > applied);
    }
}

#[test]
fn lagging_follower_catches_up_by_snapshot_after_compaction() {
    let mut c = Cluster::new(3, 0);
    c.elect(1);
    c.filters.add(Isolate(3));
    for b in 0..6 {
        c.propose(1, batch_cmd(b * 10, 10));
    }
    c.settle();
    c.checkpoint(1);
    c.checkpoint(2);
    let (truncated, _) = c.nodes[&1].truncated();
    assert!(truncated > 1, "leader log compacted");
    c.filters.clear();
    for _ in 0..5 {
        c.tick();
    }
    assert_eq!(c.metrics[&3].snapshots_received.get(), 1);
    assert_eq!(c.stored(3), expect(6));
    // And it keeps replicating from the log afterwards, also after a restart.
    let mut rx = c.propose(1, batch_cmd(60, 10));
    c.settle();
    committed(&mut rx);
    assert_eq!(c.stored(3), expect(7));
    c.crash(3);
    c.start(3, false);
    c.tick();
    assert_eq!(c.stored(3), expect(7));
}

#[test]
fn add_and_remove_replicas() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    c.propose(1, batch_cmd(0, 10));
    c.settle();
    c.start(4, true);
    let mut rx = c.change(1, MemberChange::Add(member(4)));
    let members = super::membership_tests::answer(&mut c, &mut rx).unwrap();
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for _ in 0..3 {
        c.tick();
    }
    assert_eq!(c.stored(4), expect(1));
    assert_eq!(
        c.nodes[&4].members().len(),
        4,
        "the new replica learned the addresses"
    );
    let mut rx = c.change(1, MemberChange::Remove(2));
    c.settle();
    let members = rx.try_recv().unwrap().unwrap();
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 3, 4]
    );
    assert_eq!(c.status(1).replicas.len(), 3);
    // The leader refuses to remove itself.
    let mut rx = c.change(1, MemberChange::Remove(1));
    assert!(matches!(
        rx.try_recv().unwrap(),
        Err(ProposeError::Refused {
            refusal: MembershipRefusal::Conflict { .. },
            ..
        })
    ));
}

#[test]
fn conflicting_membership_changes_are_refused() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    let before = c.status(1);
    let rejected = |rx: &mut tokio::sync::oneshot::Receiver<_>| match rx.try_recv().unwrap() {
        Err(ProposeError::Refused {
            refusal: MembershipRefusal::Conflict { reason },
            ..
        }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    };
    // Id 2 at another replica's addresses would re-address a live member.
    let mut rx = c.change(
        1,
        MemberChange::Add(strata_protocol::ReplicaInfo { id: 2, ..member(4) }),
    );
    let reason = rejected(&mut rx);
    assert!(reason.contains("replica 2 is already a member"), "{reason}");
    assert!(reason.contains(&member(2).peer_addr), "{reason}");
    // Removing a stranger would commit a no-op.
    let mut rx = c.change(1, MemberChange::Remove(9));
    assert!(rejected(&mut rx).contains("replica 9 is not a member"));
    // The leader refuses to remove itself, saying how to get there.
    let mut rx = c.change(1, MemberChange::Remove(1));
    assert!(rejected(&mut rx).contains("replica 1 is the leader"));
    // Re-adding a voter at its own addresses (a retried request) succeeds
    // at once, without a log entry.
    let mut rx = c.change(1, MemberChange::Add(member(2)));
    let members = rx.try_recv().unwrap().unwrap();
    assert_eq!(members, before.replicas);
    c.settle();
    let after = c.status(1);
    assert_eq!(after.last_index, before.last_index);
    assert_eq!(after.replicas, before.replicas);
}

#[test]
fn a_long_reader_never_blocks_apply() {
    let mut c = Cluster::new(3, 1000);
    c.elect(1);
    let store = c.store(2);
    let guard = super::store::read(&store);
    let mut rx = c.propose(1, batch_cmd(0, 10));
    c.settle();
    committed(&mut rx);
    // Node 2 applied the entry but buffered its records behind the reader.
    assert_eq!(c.nodes[&2].applied(), c.nodes[&1].applied());
    assert_eq!(super::harness::records(&guard), 0);
    drop(guard);
    let mut rx = c.propose(1, batch_cmd(10, 10));
    c.settle();
    committed(&mut rx);
    assert_eq!(c.stored(2), expect(2));
}

/// Seeded random schedules of proposals, crashes, restarts, isolation,
/// checkpoints (with log compaction) and ticks. Afterwards, with the
/// network healed and every unacknowledged batch resent (as an edge
/// would), every replica holds every batch exactly once.
#[test]
fn random_faults_never_lose_or_duplicate_a_batch() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;
    for seed in 1u64..=8 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut c = Cluster::new(3, 4);
        let mut acked = BTreeSet::new();
        let mut inflight = Vec::new();
        let batches = 80u64;
        let mut next = 0u64;
        for step in 0..300 {
            let op = rng.gen_range(0..100);
            match op {
                0..=39 if next < batches => {
                    // Like an edge: write to the leader, or wait for one.
                    match c.nodes.values().find(|n| n.is_leader()).map(|n| n.id()) {
                        Some(l) => {
                            inflight.push((next, c.propose(l, batch_cmd(next * 10, 10))));
                            next += 1;
                        }
                        None => c.tick(),
                    }
                }
                40..=44 if c.nodes.len() == 3 => c.crash(rng.gen_range(1..=3)),
                45..=54 if c.nodes.len() < 3 => {
                    let down = (1..=3).find(|id| !c.nodes.contains_key(id)).unwrap();
                    c.start(down, false);
                }
                55..=59 => c.filters.add(Isolate(rng.gen_range(1..=3))),
                60..=69 => c.filters.clear(),
                70..=74 => {
                    let ids: Vec<u64> = c.nodes.keys().copied().collect();
                    c.checkpoint(ids[rng.gen_range(0..ids.len())]);
                }
                _ => c.tick(),
            }
            // Every replica's store holds exactly what its FSM says it stored.
            for (id, n) in &c.nodes {
                let (fsm, stored) = n.with(|n| {
                    let m = n.machine();
                    let fsm: u64 = m.state().edges().iter().map(|e| e.records_stored).sum();
                    let st = super::harness::records(&super::store::read(&m.store())) as u64;
                    (fsm, st + m.unflushed_records() as u64)
                });
                assert_eq!(fsm, stored, "seed {seed} step {step} op {op}: node {id}");
            }
            inflight.retain_mut(|(b, rx)| match rx.try_recv() {
                Ok(Ok(_)) => {
                    acked.insert(*b);
                    false
                }
                Ok(Err(_)) | Err(tokio::sync::oneshot::error::TryRecvError::Closed) => false,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => true,
            });
        }
        eprintln!(
            "seed {seed}: {} of {next} proposed batches acknowledged under faults",
            acked.len()
        );
        // Heal, restart everyone, and resend what was never acknowledged.
        c.filters.clear();
        for id in 1..=3 {
            if !c.nodes.contains_key(&id) {
                c.start(id, false);
            }
        }
        for b in 0..batches {
            if acked.contains(&b) {
                continue;
            }
            let mut done = false;
            for _ in 0..50 {
                let l = c.wait_leader();
                let mut rx = c.propose(l, batch_cmd(b * 10, 10));
                c.settle();
                if let Ok(Ok(_)) = rx.try_recv() {
                    done = true;
                    break;
                }
                c.tick();
            }
            assert!(done, "seed {seed}: batch {b} never committed");
        }
        // Long enough for the lost-snapshot-report safety net.
        for _ in 0..60 {
            c.tick();
        }
        for id in 1..=3 {
            assert_eq!(c.stored(id), expect(batches), "seed {seed}: node {id}");
        }
    }
}
