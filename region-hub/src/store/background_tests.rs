//! Tests of background checkpoints and block-copy merging: reads while a
//! checkpoint is in flight, a crash in the middle of one, and merged files
//! answering exactly like the files they replace.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use strata_protocol::{QueryResult, TelemetryQuery};

use super::job::Gate;
use super::tests::{cfg, chunk_files, q, rec};
use super::*;

fn batch(device: &str, from: i64, n: i64) -> Vec<TelemetryRecord> {
    (from..from + n)
        .map(|ts| rec(device, ts, &[("v", ts as f64)]))
        .collect()
}

fn raw(store: &TelemetryStore, query: &TelemetryQuery) -> Vec<TelemetryRecord> {
    match store.query(query).unwrap() {
        QueryResult::Raw(r) => r,
        other => panic!("expected raw, got {other:?}"),
    }
}

fn sorted(mut v: Vec<TelemetryRecord>) -> Vec<TelemetryRecord> {
    v.sort_by(chunk::record_order);
    v
}

/// Every answer `store` gives for `devices` over [from, to), raw and downsampled.
fn answers(
    store: &TelemetryStore,
    devices: &[&str],
    from: i64,
    to: i64,
) -> Vec<Result<QueryResult, String>> {
    let mut out = Vec::new();
    for d in devices {
        for query in [
            q(d, from, to, None, 100_000),
            q(
                d,
                from + (to - from) / 3,
                to - (to - from) / 4,
                None,
                100_000,
            ),
            q(d, from, to, None, 7),
            q(d, from, to, Some(333), 100_000),
        ] {
            out.push(store.query(&query).map_err(|e| e.to_string()));
        }
    }
    out
}

#[test]
fn reads_during_a_background_checkpoint_see_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    let a = batch("d", 0, 1500);
    store.insert(&a);
    store.checkpoint(1, b"one").unwrap();
    let b = batch("d", 1500, 1500);
    store.insert(&b);
    let gate = Arc::new(Gate::default());
    store.gate = Some(gate.clone());
    assert!(store.begin_checkpoint(2, b"two".to_vec()).unwrap());
    assert!(store.checkpoint_in_flight());
    assert!(
        !store.begin_checkpoint(3, Vec::new()).unwrap(),
        "one at a time"
    );
    // Files + frozen memtable, then + a new memtable.
    let all = q("d", -10_000, 10_000, None, 100_000);
    let mut want: Vec<_> = a.iter().chain(&b).cloned().collect();
    assert_eq!(raw(&store, &all), sorted(want.clone()));
    let c = batch("d", 3000, 10);
    store.insert(&c);
    want.extend(c);
    assert_eq!(raw(&store, &all), sorted(want.clone()));
    assert_eq!(store.stored_records(), want.len() as u64);
    let snap = store.snapshot().unwrap();
    // Not installed before the job finishes; the job waits at the gate.
    assert!(!store.checkpoint_finished());
    assert_eq!(store.finish_checkpoint(false).unwrap(), None);
    gate.open();
    assert_eq!(store.finish_checkpoint(true).unwrap(), Some(2));
    assert!(!store.checkpoint_in_flight());
    assert_eq!(raw(&store, &all), sorted(want.clone()));
    // A snapshot taken mid-checkpoint holds everything.
    let other = tempfile::tempdir().unwrap();
    let (mut restored, _) = TelemetryStore::open(cfg(other.path(), 1000)).unwrap();
    restored.restore(&snap, 9, b"").unwrap();
    assert_eq!(raw(&restored, &all), sorted(want.clone()));
    // Durable: index 2 with a and b; c lives only in the memtable.
    drop(store);
    let (store, r) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    assert_eq!((r.applied_index, r.fsm_state.as_slice()), (2, &b"two"[..]));
    assert_eq!(raw(&store, &all), sorted(a.into_iter().chain(b).collect()));
}

#[test]
fn crash_during_a_background_checkpoint_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 1_000_000);
    let (mut store, _) = TelemetryStore::open(c.clone()).unwrap();
    // Enough checkpoints that the one in flight also merges files.
    let mut durable = Vec::new();
    for i in 0..3 {
        let recs = batch(&format!("d{}", i % 2), i * 700, 700);
        store.insert(&recs);
        durable.extend(recs);
        store.checkpoint(i as u64 + 1, b"before").unwrap();
    }
    let files_before = chunk_files(dir.path());
    store.insert(&batch("d0", 5000, 2000));
    store.gate = Some(Arc::new(Gate::default()));
    assert!(store.begin_checkpoint(4, b"after".to_vec()).unwrap());
    store.insert(&batch("d1", 9000, 5));
    // The job has written (and fsynced) its chunk files and waits before
    // its manifest: dropping the store now is a crash at that point.
    drop(store);
    assert!(
        chunk_files(dir.path()) > files_before,
        "the job left its files, as a crash would"
    );
    let (store, r) = TelemetryStore::open(c).unwrap();
    assert_eq!(
        (r.applied_index, r.fsm_state.as_slice()),
        (3, &b"before"[..])
    );
    assert_eq!(store.stored_records(), durable.len() as u64);
    for d in ["d0", "d1"] {
        let want: Vec<_> = durable.iter().filter(|r| r.device == d).cloned().collect();
        assert_eq!(
            raw(&store, &q(d, -100_000, 100_000, None, 100_000)),
            sorted(want)
        );
    }
    assert_eq!(
        chunk_files(dir.path()),
        files_before,
        "open deleted the job's files"
    );
}

#[test]
fn merging_copies_big_blocks_verbatim_and_packs_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1_000_000)).unwrap();
    let mut big_crcs = HashSet::new();
    for i in 0..merge::FANOUT as i64 {
        // "big": 2000 records in one checkpoint; "small": 10.
        store.insert(&batch("big", i * 2000, 2000));
        store.insert(&batch("small", i * 10, 10));
        let before = answers(&store, &["big", "small"], -10, 10_000);
        store.checkpoint(i as u64 + 1, b"").unwrap();
        let part = &store.partitions[&0];
        if i + 1 < merge::FANOUT as i64 {
            let dev = &part.devices["acme"]["big"];
            big_crcs.extend(dev.blocks.iter().map(|b| b.crc));
        }
        assert_eq!(answers(&store, &["big", "small"], -10, 10_000), before);
    }
    let part = &store.partitions[&0];
    assert_eq!(part.files.len(), 1, "four tier-0 files merged into one");
    let big = &part.devices["acme"]["big"];
    let small = &part.devices["acme"]["small"];
    let crcs: HashSet<u32> = big.blocks.iter().map(|b| b.crc).collect();
    assert!(big_crcs.is_subset(&crcs), "big blocks copied verbatim");
    assert_eq!(small.blocks.len(), 1, "small blocks packed into one");
    assert_eq!(small.blocks[0].count, 40);
    assert_eq!((small.blocks[0].min_ts, small.blocks[0].max_ts), (0, 39));
    drop(store);
    let (store, _) = TelemetryStore::open(cfg(dir.path(), 1_000_000)).unwrap();
    assert_eq!(
        raw(&store, &q("small", 0, 100, None, 1000)),
        sorted(batch("small", 0, 40))
    );
}

#[test]
fn retention_during_a_background_checkpoint_drops_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1000);
    c.retention_ms = 1000;
    let (mut store, _) = TelemetryStore::open(c.clone()).unwrap();
    store.insert(&batch("d", 0, 10));
    store.insert(&batch("d", 5000, 10));
    let gate = Arc::new(Gate::default());
    store.gate = Some(gate.clone());
    assert!(store.begin_checkpoint(1, Vec::new()).unwrap());
    // Partition [0, 1000) expires; a late record for it does not recreate
    // it (it is counted as expired on arrival).
    assert_eq!(store.enforce_retention(2000).unwrap(), 1);
    let late = rec("d", 500, &[("v", 1.0)]);
    store.insert(std::slice::from_ref(&late));
    let counts = store.retention_report(None).tenants;
    assert_eq!((counts[0].expired, counts[0].expired_on_arrival), (10, 1));
    gate.open();
    assert_eq!(store.finish_checkpoint(true).unwrap(), Some(1));
    let all = q("d", -10_000, 10_000, None, 1000);
    let want = sorted(batch("d", 5000, 10));
    assert_eq!(
        raw(&store, &all),
        want,
        "the old partition's files are not resurrected"
    );
    store.gate = None;
    store.checkpoint(2, b"").unwrap();
    drop(store);
    let (store, r) = TelemetryStore::open(c).unwrap();
    assert_eq!(r.applied_index, 2);
    assert_eq!(raw(&store, &all), want);
    assert_eq!(
        chunk_files(dir.path()),
        1,
        "expired partition's files deleted"
    );
}

#[derive(Debug, Clone)]
enum Op {
    /// (device, first ts, count): counts cross the block-copy threshold.
    Insert(u8, i64, i64),
    Checkpoint,
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, -2000i64..2000, prop_oneof![1i64..40, 1000i64..1300])
            .prop_map(|(d, ts, n)| Op::Insert(d, ts, n)),
        3 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Checkpoints (with their merges) never change an answer: the store
    /// answers like the model before and after each one, and after a reopen
    /// from the merged files alone.
    #[test]
    fn merged_files_answer_like_the_originals(ops in proptest::collection::vec(arb_op(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 3000);
        let (mut store, _) = TelemetryStore::open(c.clone()).unwrap();
        let devices = ["d0", "d1", "d2"];
        let mut index = 0;
        let mut model: Vec<TelemetryRecord> = Vec::new();
        for op in ops {
            let before = answers(&store, &devices, -3000, 5000);
            match op {
                Op::Insert(d, ts, n) => {
                    let recs = batch(devices[d as usize], ts, n);
                    store.insert(&recs);
                    model.extend(recs);
                }
                Op::Checkpoint => {
                    index += 1;
                    store.checkpoint(index, b"").unwrap();
                    prop_assert_eq!(answers(&store, &devices, -3000, 5000), before);
                }
                Op::Reopen => {
                    index += 1;
                    store.checkpoint(index, b"").unwrap();
                    drop(store);
                    store = TelemetryStore::open(c.clone()).unwrap().0;
                    prop_assert_eq!(answers(&store, &devices, -3000, 5000), before);
                }
            }
            for d in devices {
                let want: Vec<_> = model.iter().filter(|r| r.device == d).cloned().collect();
                prop_assert_eq!(raw(&store, &q(d, -3000, 5000, None, 100_000)), sorted(want));
            }
            for part in store.partitions.values() {
                prop_assert!(part.files.len() < merge::FANOUT * 4, "{} files", part.files.len());
            }
        }
    }
}
