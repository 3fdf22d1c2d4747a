//! Store tests: queries with hand-computed answers, partitions and retention,
//! checkpoint / crash / reopen, torn and corrupt files, snapshot / restore.

use super::*;
use proptest::prelude::*;
use strata_protocol::{Metric, QueryResult, Tag, TelemetryQuery};

pub(super) fn rec(device: &str, ts_ms: i64, metrics: &[(&str, f64)]) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "acme".into(),
        device: device.into(),
        ts_ms,
        seq: None,
        metrics: metrics
            .iter()
            .map(|(n, v)| Metric {
                name: (*n).into(),
                value: *v,
            })
            .collect(),
        tags: vec![Tag {
            key: "fw".into(),
            value: "1".into(),
        }],
    }
}

pub(super) fn cfg(dir: &std::path::Path, partition_ms: u64) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        partition_ms,
        retention_ms: 0,
        flush_bytes: 1 << 20,
    }
}

pub(super) fn q(
    device: &str,
    from_ms: i64,
    to_ms: i64,
    step_ms: Option<u64>,
    limit: u32,
) -> TelemetryQuery {
    TelemetryQuery {
        tenant: "acme".into(),
        device: device.into(),
        from_ms,
        to_ms,
        step_ms,
        limit,
    }
}

fn raw_ts(store: &TelemetryStore, query: &TelemetryQuery) -> Vec<i64> {
    match store.query(query).unwrap() {
        QueryResult::Raw(r) => r.iter().map(|r| r.ts_ms).collect(),
        other => panic!("expected raw, got {other:?}"),
    }
}

fn buckets(
    store: &TelemetryStore,
    query: &TelemetryQuery,
) -> Vec<(String, i64, f64, f64, f64, u64)> {
    match store.query(query).unwrap() {
        QueryResult::Downsampled(b) => b
            .into_iter()
            .map(|b| (b.metric, b.start_ms, b.min, b.max, b.avg, b.count))
            .collect(),
        other => panic!("expected buckets, got {other:?}"),
    }
}

pub(super) fn chunk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".chunk")
        })
        .count()
}

fn sample() -> Vec<TelemetryRecord> {
    vec![
        rec("d", 1500, &[("t", 4.0), ("h", 10.0)]),
        rec("d", 0, &[("t", 1.0)]),
        rec("d", 500, &[("t", 2.0)]),
        rec("d", 1000, &[("t", 3.0)]),
        rec("d", 2500, &[("t", 5.0)]),
        rec("d", -1, &[("t", -7.0)]),
        rec("other", 700, &[("t", 100.0)]),
    ]
}

fn check_sample_answers(store: &TelemetryStore) {
    assert_eq!(
        raw_ts(store, &q("d", 0, 2000, None, 10)),
        vec![0, 500, 1000, 1500]
    );
    assert_eq!(raw_ts(store, &q("d", 0, 2000, None, 2)), vec![0, 500]);
    assert_eq!(raw_ts(store, &q("d", -5, 1, None, 10)), vec![-1, 0]);
    assert_eq!(
        buckets(store, &q("d", -1000, 3000, Some(1000), 100)),
        vec![
            ("h".into(), 1000, 10.0, 10.0, 10.0, 1),
            ("t".into(), -1000, -7.0, -7.0, -7.0, 1),
            ("t".into(), 0, 1.0, 2.0, 1.5, 2),
            ("t".into(), 1000, 3.0, 4.0, 3.5, 2),
            ("t".into(), 2000, 5.0, 5.0, 5.0, 1),
        ]
    );
    assert_eq!(buckets(store, &q("d", 0, 3000, Some(1000), 2)).len(), 2);
    assert!(raw_ts(store, &q("nobody", 0, 3000, None, 10)).is_empty());
}

#[test]
fn raw_and_downsampled_from_memtable_files_and_both() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, rec0) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    assert_eq!(rec0, Recovered::default());
    let all = sample();
    store.insert(&all[..3]);
    check_partial(&store);
    store.checkpoint(1, b"").unwrap();
    store.insert(&all[3..]);
    check_sample_answers(&store); // files + memtable
    store.checkpoint(2, b"").unwrap();
    check_sample_answers(&store); // files only
    assert_eq!(store.stored_records(), 7);
    let devs = store.devices(Some("acme"));
    assert_eq!(devs.len(), 2);
    assert_eq!((devs[0].device.as_str(), devs[0].records), ("d", 6));
    assert_eq!((devs[0].first_ts_ms, devs[0].last_ts_ms), (-1, 2500));
    assert!(store.devices(Some("nope")).is_empty());
}

fn check_partial(store: &TelemetryStore) {
    assert_eq!(
        raw_ts(store, &q("d", 0, 2000, None, 10)),
        vec![0, 500, 1500]
    );
}

#[test]
fn bad_queries_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    for (query, needle) in [
        (q("d", 5, 5, None, 1), "before"),
        (q("d", 0, 5, Some(0), 1), "step"),
        (q("d", 0, 5, None, 0), "limit"),
        (q("d", 0, 5, None, 100_001), "limit"),
        (q("d", 0, 5, Some(u64::MAX), 1), "step"),
    ] {
        let err = store.query(&query).unwrap_err();
        assert!(matches!(err, StoreError::BadQuery { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(store.query(&q("d", 0, 5, None, 100_000)).is_ok());
}

#[test]
fn retention_drops_whole_partitions_and_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1000);
    c.retention_ms = 5000;
    let (mut store, _) = TelemetryStore::open(c.clone()).unwrap();
    let recs: Vec<_> = (0..20)
        .map(|i| rec("d", i * 500, &[("t", i as f64)]))
        .collect();
    store.insert(&recs);
    store.checkpoint(1, b"s").unwrap();
    assert_eq!(chunk_files(dir.path()), 10);
    // now 10_000 → cutoff 5000: partitions [0,1000) .. [4000,5000) go.
    assert_eq!(store.enforce_retention(10_000).unwrap(), 5);
    assert_eq!(store.stored_records(), 10);
    assert_eq!(raw_ts(&store, &q("d", 0, 20_000, None, 100))[0], 5000);
    assert_eq!(store.enforce_retention(10_000).unwrap(), 0);
    store.checkpoint(2, b"s").unwrap();
    assert_eq!(
        chunk_files(dir.path()),
        5,
        "expired files deleted after the checkpoint"
    );
    drop(store);
    let (store, r) = TelemetryStore::open(c).unwrap();
    assert_eq!(r.applied_index, 2);
    assert_eq!(store.stored_records(), 10);
    // retention 0 keeps everything.
    let dir2 = tempfile::tempdir().unwrap();
    let (mut keep, _) = TelemetryStore::open(cfg(dir2.path(), 1000)).unwrap();
    keep.insert(&recs);
    assert_eq!(keep.enforce_retention(i64::MAX).unwrap(), 0);
}

#[test]
fn checkpoint_survives_reopen_and_unflushed_data_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    let all = sample();
    store.insert(&all);
    store.checkpoint(5, b"fsm-5").unwrap();
    // Inserted after the checkpoint: lost on crash by design (Raft replays it).
    store.insert(&[
        rec("d", 1700, &[("t", 99.0)]),
        rec("late", 10, &[("t", 1.0)]),
    ]);
    drop(store);
    let (store, r) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    assert_eq!(
        r,
        Recovered {
            applied_index: 5,
            fsm_state: b"fsm-5".to_vec()
        }
    );
    check_sample_answers(&store);
    assert_eq!(store.stored_records(), 7);
    assert_eq!(store.devices(None).len(), 2);
}

#[test]
fn torn_leftovers_are_ignored_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    store.insert(&sample());
    store.checkpoint(3, b"x").unwrap();
    drop(store);
    // A crash mid-checkpoint leaves a half-written chunk and a temp manifest.
    let stray = chunk::chunk_path(dir.path(), 0xabc);
    std::fs::write(&stray, b"STCHUNK1 half a blo").unwrap();
    std::fs::write(dir.path().join(manifest::MANIFEST_TMP), b"junk").unwrap();
    let (store, r) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    assert_eq!(r.applied_index, 3);
    check_sample_answers(&store);
    assert!(!stray.exists());
    assert!(!dir.path().join(manifest::MANIFEST_TMP).exists());
}

#[test]
fn corrupt_chunk_is_a_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1_000_000)).unwrap();
    // One device in one partition: a single file whose first block is queried below.
    let only_d: Vec<_> = sample()
        .into_iter()
        .filter(|r| r.device == "d" && r.ts_ms >= 0)
        .collect();
    store.insert(&only_d);
    store.checkpoint(1, b"").unwrap();
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "chunk"))
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff; // inside the first block
    std::fs::write(&path, &bytes).unwrap();
    let err = store.query(&q("d", 0, 2000, None, 10)).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // A torn trailer is refused at open, naming the file.
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();
    drop(store);
    let err = TelemetryStore::open(cfg(dir.path(), 1_000_000)).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn snapshot_restore_gives_identical_answers() {
    let src_dir = tempfile::tempdir().unwrap();
    let (mut src, _) = TelemetryStore::open(cfg(src_dir.path(), 1000)).unwrap();
    for round in 0..6i64 {
        let recs: Vec<_> = (0..50)
            .map(|i| {
                let ts = (i * 97 + round * 13) % 5000;
                rec(
                    &format!("d{}", i % 4),
                    ts,
                    &[("t", (ts % 17) as f64 * 0.1), ("h", i as f64)],
                )
            })
            .collect();
        src.insert(&recs);
        if round < 5 {
            src.checkpoint(round as u64 + 1, b"").unwrap();
        }
    }
    let snap = src.snapshot().unwrap();
    // Restore into a store with another partition width: answers must not change.
    let dst_dir = tempfile::tempdir().unwrap();
    let (mut dst, _) = TelemetryStore::open(cfg(dst_dir.path(), 3000)).unwrap();
    dst.insert(&[rec("stale", 1, &[("t", 1.0)])]);
    dst.restore(&snap, 42, b"fsm").unwrap();
    let compare = |dst: &TelemetryStore| {
        assert_eq!(dst.stored_records(), src.stored_records());
        assert_eq!(dst.devices(None), src.devices(None));
        for d in ["d0", "d1", "d2", "d3"] {
            for query in [
                q(d, 0, 5000, None, 100_000),
                q(d, 1234, 4321, None, 7),
                q(d, 0, 5000, Some(700), 1000),
            ] {
                assert_eq!(dst.query(&query).unwrap(), src.query(&query).unwrap());
            }
        }
    };
    compare(&dst);
    drop(dst);
    let (dst, r) = TelemetryStore::open(cfg(dst_dir.path(), 3000)).unwrap();
    assert_eq!((r.applied_index, r.fsm_state.as_slice()), (42, &b"fsm"[..]));
    compare(&dst);
    // A damaged snapshot is refused before anything is replaced.
    let (mut other, _) = TelemetryStore::open(cfg(dst_dir.path(), 3000)).unwrap();
    let mut bad = snap.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        other.restore(&bad, 1, b""),
        Err(StoreError::BadSnapshot { .. })
    ));
    assert_eq!(other.stored_records(), src.stored_records());
}

#[test]
fn frequent_checkpoints_keep_few_files() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1_000_000)).unwrap();
    for i in 0..64i64 {
        store.insert(&[rec("d", i, &[("t", i as f64)])]);
        store.checkpoint(i as u64 + 1, b"").unwrap();
    }
    let files = chunk_files(dir.path());
    assert!(files <= 8, "{files} files after 64 checkpoints");
    assert_eq!(
        raw_ts(&store, &q("d", 0, 100, None, 1000)),
        (0..64).collect::<Vec<_>>()
    );
}

#[test]
fn needs_checkpoint_tracks_memtable_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 1000);
    c.flush_bytes = 1000;
    let (mut store, _) = TelemetryStore::open(c).unwrap();
    assert!(!store.needs_checkpoint());
    // The memtable holds records encoded (about 25 bytes each here).
    store.insert_owned(vec![rec("d", 0, &[("t", 1.0)])]);
    assert!(!store.needs_checkpoint());
    let recs: Vec<_> = (1..100).map(|i| rec("d", i, &[("t", 1.0)])).collect();
    store.insert_owned(recs);
    assert!(store.needs_checkpoint());
    store.checkpoint(1, b"").unwrap();
    assert!(!store.needs_checkpoint());
}

#[test]
fn config_validation_and_partition_change() {
    let bad = StoreConfig {
        dir: PathBuf::new(),
        partition_ms: 0,
        retention_ms: u64::MAX,
        flush_bytes: 0,
    };
    let StoreError::Config { problems } = bad.validate().unwrap_err() else {
        panic!("expected config error");
    };
    assert_eq!(problems.len(), 4, "{problems:?}");
    let parsed: StoreConfig = toml::from_str("dir = \"x\"\npartition-ms = 60000").unwrap();
    assert_eq!(parsed.partition_ms, 60_000);
    assert_eq!(parsed.flush_bytes, StoreConfig::default().flush_bytes);
    assert!(toml::from_str::<StoreConfig>("partition_ms = 1").is_err());

    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    store.checkpoint(1, b"").unwrap();
    drop(store);
    let err = TelemetryStore::open(cfg(dir.path(), 2000)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::PartitionMsChanged {
                on_disk: 1000,
                configured: 2000,
                ..
            }
        ),
        "{err}"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<(u8, i64)>),
    Checkpoint,
    Crash,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec((0u8..3, -3000i64..3000), 1..20).prop_map(Op::Insert),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Against a model: durable = what the last checkpoint covered; a crash
    /// rolls back to it; raw queries always equal the model, sorted.
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(arb_op(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 700);
        let (mut store, _) = TelemetryStore::open(c.clone()).unwrap();
        let mut live: Vec<TelemetryRecord> = Vec::new();
        let mut durable: Vec<TelemetryRecord> = Vec::new();
        let mut index = 0u64;
        for op in ops {
            match op {
                Op::Insert(rs) => {
                    let recs: Vec<_> = rs.iter().map(|(d, ts)| rec(&format!("d{d}"), *ts, &[("v", *ts as f64)])).collect();
                    store.insert(&recs);
                    live.extend(recs);
                }
                Op::Checkpoint => {
                    index += 1;
                    store.checkpoint(index, &index.to_le_bytes()).unwrap();
                    durable = live.clone();
                }
                Op::Crash => {
                    drop(store);
                    let (s, r) = TelemetryStore::open(c.clone()).unwrap();
                    prop_assert_eq!(r.applied_index, index);
                    store = s;
                    live = durable.clone();
                }
            }
            for d in 0..3u8 {
                let dev = format!("d{d}");
                let mut want: Vec<_> = live.iter().filter(|r| r.device == dev).cloned().collect();
                want.sort_by(chunk::record_order);
                let got = store.query(&q(&dev, -5000, 5000, None, 100_000)).unwrap();
                prop_assert_eq!(got, QueryResult::Raw(want));
            }
            prop_assert_eq!(store.stored_records(), live.len() as u64);
        }
    }
}
