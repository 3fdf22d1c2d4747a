//! Unit tests of [`RaftLogStorage`] against a temporary directory, checking
//! raft-rs's storage semantics (mirroring its `MemStorage` tests).

use super::*;
use protobuf::Message as _;
use raft::StorageError as RaftStorageError;

fn ent(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = vec![index as u8; 10].into();
    e
}

fn members(ids: &[u64]) -> Vec<ReplicaInfo> {
    ids.iter()
        .map(|id| ReplicaInfo {
            id: *id,
            peer_addr: format!("127.0.0.1:{}", 7000 + id),
            client_addr: format!("127.0.0.1:{}", 8000 + id),
            voter: true,
        })
        .collect()
}

fn boot(dir: &Path) -> RaftLogStorage {
    let cs = ConfState::from((vec![1, 2, 3], vec![]));
    RaftLogStorage::open(dir, Some((cs, members(&[1, 2, 3])))).unwrap()
}

/// A log without the bootstrap snapshot, so entries start at 1.
fn open_log(dir: &Path) -> RaftLogStorage {
    RaftLogStorage::open(dir, None).unwrap()
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

fn is(e: raft::Error, want: RaftStorageError) -> bool {
    matches!(e, raft::Error::Store(got) if got == want)
}

#[test]
fn fresh_log_is_bootstrapped() {
    let dir = tempfile::tempdir().unwrap();
    let s = boot(dir.path());
    let st = s.initial_state().unwrap();
    assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
    assert_eq!((st.hard_state.term, st.hard_state.commit), (1, 1));
    assert_eq!(s.first_index().unwrap(), 2);
    assert_eq!(s.last_index().unwrap(), 1);
    assert_eq!(s.term(1).unwrap(), 1);
    assert_eq!(s.members().len(), 3);
    assert!(s.entries(2, 2, None, ctx()).unwrap().is_empty());
}

#[test]
fn joining_replica_is_uninitialized() {
    let dir = tempfile::tempdir().unwrap();
    let s = RaftLogStorage::open(dir.path(), None).unwrap();
    assert!(!s.is_initialized());
    assert!(s.initial_state().unwrap().conf_state.voters.is_empty());
}

#[test]
fn entries_terms_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_log(dir.path());
    let ents: Vec<Entry> = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)]
        .iter()
        .map(|(i, t)| ent(*i, *t))
        .collect();
    s.persist(&ents, None, true).unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(s.entries(2, 5, None, ctx()).unwrap(), ents[1..4].to_vec());
    // max_size: always at least one entry, then whole entries that fit.
    let one = ents[0].compute_size() as u64;
    assert_eq!(s.entries(1, 6, Some(0), ctx()).unwrap().len(), 1);
    assert_eq!(s.entries(1, 6, Some(one * 2), ctx()).unwrap().len(), 2);
    assert!(is(
        s.entries(1, 7, None, ctx()).unwrap_err(),
        RaftStorageError::Unavailable
    ));
    for (i, t) in [(1, 1), (3, 2), (5, 3)] {
        assert_eq!(s.term(i).unwrap(), t);
    }
    assert!(is(s.term(6).unwrap_err(), RaftStorageError::Unavailable));
}

#[test]
fn conflicting_append_truncates_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_log(dir.path());
    s.persist(&[ent(1, 1), ent(2, 1), ent(3, 1)], None, true)
        .unwrap();
    s.persist(&[ent(2, 2)], None, true).unwrap();
    assert_eq!(s.last_index().unwrap(), 2);
    assert_eq!(s.term(2).unwrap(), 2);
    assert!(s.persist(&[ent(5, 2)], None, true).is_err(), "gap refused");
}

#[test]
fn compaction_keeps_the_term_of_the_truncation_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_log(dir.path());
    let ents: Vec<Entry> = (1..=6).map(|i| ent(i, 1 + i / 3)).collect();
    s.persist(&ents, None, true).unwrap();
    s.compact(4).unwrap();
    assert_eq!(s.first_index().unwrap(), 4);
    assert_eq!(s.term(3).unwrap(), 2, "term of the last compacted entry");
    assert!(is(s.term(2).unwrap_err(), RaftStorageError::Compacted));
    assert!(is(
        s.entries(3, 5, None, ctx()).unwrap_err(),
        RaftStorageError::Compacted
    ));
    assert_eq!(s.entries(4, 7, None, ctx()).unwrap(), ents[3..].to_vec());
    // Compacting backwards is a no-op; beyond the log is refused.
    s.compact(2).unwrap();
    assert_eq!(s.first_index().unwrap(), 4);
    assert!(s.compact(9).is_err());
    // Appending below the truncation point is refused, not a panic.
    assert!(s.persist(&[ent(3, 5)], None, true).is_err());
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ents: Vec<Entry> = (1..=5).map(|i| ent(i, 2)).collect();
    {
        let mut s = open_log(dir.path());
        let mut hs = HardState::default();
        hs.term = 2;
        hs.vote = 1;
        hs.commit = 4;
        s.persist(&ents, Some(&hs), true).unwrap();
        s.compact(3).unwrap();
        s.set_membership(ConfState::from((vec![1, 2], vec![])), members(&[1, 2]))
            .unwrap();
        s.persist(&[], None, true).unwrap();
    }
    // Bootstrap data passed again must not override what is stored.
    let s = boot(dir.path());
    let st = s.initial_state().unwrap();
    assert_eq!(
        (st.hard_state.term, st.hard_state.vote, st.hard_state.commit),
        (2, 1, 4)
    );
    assert_eq!(st.conf_state.voters, vec![1, 2]);
    assert_eq!(s.members(), &members(&[1, 2])[..]);
    assert_eq!(s.first_index().unwrap(), 3);
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(s.term(2).unwrap(), 2);
    assert_eq!(s.entries(3, 6, None, ctx()).unwrap(), ents[2..].to_vec());
}

#[test]
fn applying_a_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_log(dir.path());
    s.persist(&(1..=12).map(|i| ent(i, 1)).collect::<Vec<_>>(), None, true)
        .unwrap();
    let mut meta = SnapshotMetadata::default();
    meta.index = 10;
    meta.term = 5;
    meta.set_conf_state(ConfState::from((vec![1, 2, 4], vec![])));
    s.begin_snapshot(&meta, &members(&[1, 2, 4])).unwrap();
    let (pending, m) = s.pending_snapshot().unwrap().unwrap();
    assert_eq!((pending.index, m.len()), (10, 3));
    s.apply_snapshot(&meta, members(&[1, 2, 4])).unwrap();
    assert!(s.pending_snapshot().unwrap().is_none());
    assert_eq!(s.first_index().unwrap(), 11);
    assert_eq!(s.last_index().unwrap(), 10, "the old suffix is dropped too");
    assert_eq!(s.term(10).unwrap(), 5);
    assert_eq!(s.hard_state().commit, 10);
    assert_eq!(s.hard_state().term, 5);
    assert_eq!(s.conf_state().voters, vec![1, 2, 4]);
    s.persist(&[ent(11, 5)], None, true).unwrap();
    assert_eq!(s.last_index().unwrap(), 11);
    drop(s);
    let s = boot(dir.path());
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (11, 11)
    );
    assert_eq!(s.term(10).unwrap(), 5);
    // An older snapshot cannot rewind the log.
    let mut s = s;
    meta.index = 3;
    assert!(s.apply_snapshot(&meta, vec![]).is_err());
}

#[test]
fn snapshot_is_requested_then_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open_log(dir.path());
    assert!(is(
        s.snapshot(0, 2).unwrap_err(),
        RaftStorageError::SnapshotTemporarilyUnavailable
    ));
    assert!(s.take_snapshot_request());
    assert!(!s.take_snapshot_request(), "the request is taken once");
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 7;
    snap.mut_metadata().term = 2;
    s.set_prepared_snapshot(snap.clone());
    assert_eq!(s.snapshot(5, 2).unwrap(), snap);
    // A request for a newer index than prepared is not served.
    assert!(s.snapshot(9, 2).is_err());
    assert!(s.take_snapshot_request());
}
