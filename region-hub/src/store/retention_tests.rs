//! Tests of retention accounting: every record retention drops is counted
//! per tenant and reason, durably with the checkpoint, across snapshots,
//! and reported at a bounded rate.

use super::tests::{cfg, q, rec};
use super::*;
use strata_protocol::{QueryResult, TenantRetention};

fn tenant_rec(tenant: &str, ts_ms: i64) -> TelemetryRecord {
    TelemetryRecord {
        tenant: tenant.into(),
        ..rec("d", ts_ms, &[("t", 1.0)])
    }
}

fn counts(store: &TelemetryStore) -> Vec<(String, u64, u64)> {
    store
        .retention_report(None)
        .tenants
        .into_iter()
        .map(|t| (t.tenant, t.expired_on_arrival, t.expired))
        .collect()
}

fn open_with_retention(dir: &std::path::Path) -> TelemetryStore {
    let mut c = cfg(dir, 1000);
    c.retention_ms = 5000;
    TelemetryStore::open(c).unwrap().0
}

/// acme: ts 0, 500, …, 9500; beta: ts 100 and 6100.
fn fill(store: &mut TelemetryStore) {
    let mut recs: Vec<_> = (0..20).map(|i| tenant_rec("acme", i * 500)).collect();
    recs.push(tenant_rec("beta", 100));
    recs.push(tenant_rec("beta", 6100));
    store.insert(&recs);
}

#[test]
fn every_dropped_record_is_counted_per_tenant_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with_retention(dir.path());
    fill(&mut store);
    assert_eq!(store.retention_report(None).retained_from_ms, None);
    // now 10 000 → cutoff 5000: partitions [0, 1000) … [4000, 5000) go.
    assert_eq!(store.enforce_retention(10_000).unwrap(), 5);
    assert_eq!(
        counts(&store),
        vec![("acme".into(), 0, 10), ("beta".into(), 0, 1)]
    );
    assert_eq!(store.stored_records(), 11);
    // Late readings for a dropped partition are counted, not stored (they
    // would only recreate the partition); newer ones are stored.
    store.insert(&[
        tenant_rec("acme", 4999),
        tenant_rec("gamma", -3),
        tenant_rec("acme", 5000),
    ]);
    assert_eq!(store.stored_records(), 12);
    let report = store.retention_report(None);
    assert_eq!(report.retention_ms, 5000);
    assert_eq!(report.retained_from_ms, Some(5000));
    assert_eq!(
        counts(&store),
        vec![
            ("acme".into(), 1, 10),
            ("beta".into(), 0, 1),
            ("gamma".into(), 1, 0)
        ]
    );
    let QueryResult::Raw(left) = store.query(&q("d", 0, 5000, None, 100)).unwrap() else {
        panic!("raw expected")
    };
    assert!(left.is_empty(), "{left:?}");
    // One tenant only.
    let beta = store.retention_report(Some("beta")).tenants;
    assert_eq!(
        beta,
        vec![TenantRetention {
            tenant: "beta".into(),
            expired_on_arrival: 0,
            expired: 1
        }]
    );
    // A clock step back does not lower the bound.
    store.enforce_retention(7000).unwrap();
    assert_eq!(store.retention_report(None).retained_from_ms, Some(5000));
}

#[test]
fn drops_are_reported_once_and_at_most_every_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with_retention(dir.path());
    assert!(store.take_retention_drops(0).is_empty(), "nothing yet");
    fill(&mut store);
    store.enforce_retention(10_000).unwrap();
    let first = store.take_retention_drops(10_000);
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].tenant.as_str(), first[0].expired), ("acme", 10));
    assert!(
        store.take_retention_drops(30_000).is_empty(),
        "reported once"
    );
    store.insert(&[tenant_rec("acme", 1)]);
    assert!(store.take_retention_drops(15_000).is_empty(), "within 10 s");
    let later = store.take_retention_drops(20_000);
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].expired_on_arrival, later[0].expired), (1, 0));
    // Totals are not consumed by reporting.
    assert_eq!(counts(&store)[0], ("acme".into(), 1, 10));
}

#[test]
fn counts_are_as_durable_as_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_with_retention(dir.path());
    fill(&mut store);
    store.checkpoint(1, b"").unwrap();
    store.enforce_retention(10_000).unwrap();
    store.insert(&[tenant_rec("acme", 10)]);
    let before_crash = counts(&store);
    // Crash before the next checkpoint: the drops are undone with the
    // partitions, and counted once again when retention runs again and the
    // Raft log replays the late record.
    drop(store);
    let mut store = open_with_retention(dir.path());
    assert!(counts(&store).is_empty());
    assert_eq!(store.stored_records(), 22);
    store.enforce_retention(10_000).unwrap();
    store.insert(&[tenant_rec("acme", 10)]);
    assert_eq!(counts(&store), before_crash);
    // After a checkpoint they survive a restart.
    store.checkpoint(2, b"").unwrap();
    drop(store);
    let store = open_with_retention(dir.path());
    assert_eq!(counts(&store), before_crash);
    // The bound is learnt again from the next retention pass.
    assert_eq!(store.retention_report(None).retained_from_ms, None);
}

#[test]
fn manifest_version_1_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let body = bincode::encode_to_vec(
        (
            9u64,
            b"fsm".to_vec(),
            1000u64,
            5u64,
            Vec::<manifest::FileMeta>::new(),
        ),
        bincode::config::standard(),
    )
    .unwrap();
    let mut bytes = b"STMANIF1".to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(dir.path().join(manifest::MANIFEST), bytes).unwrap();
    let (mut store, r) = TelemetryStore::open(cfg(dir.path(), 1000)).unwrap();
    assert_eq!((r.applied_index, r.fsm_state.as_slice()), (9, &b"fsm"[..]));
    assert!(counts(&store).is_empty());
    // It is rewritten as version 2.
    store.insert(&[rec("d", 1, &[("t", 1.0)])]);
    store.checkpoint(10, b"").unwrap();
    let written = std::fs::read(dir.path().join(manifest::MANIFEST)).unwrap();
    assert_eq!(&written[..8], b"STMANIF2");
}

#[test]
fn snapshots_carry_the_counts() {
    let src_dir = tempfile::tempdir().unwrap();
    let mut src = open_with_retention(src_dir.path());
    fill(&mut src);
    src.enforce_retention(10_000).unwrap();
    let snap = src.snapshot().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let (mut dst, _) = TelemetryStore::open(cfg(dst_dir.path(), 1000)).unwrap();
    dst.restore(&snap, 7, b"").unwrap();
    assert_eq!(counts(&dst), counts(&src));
    assert_eq!(dst.stored_records(), src.stored_records());
    drop(dst);
    let (dst, _) = TelemetryStore::open(cfg(dst_dir.path(), 1000)).unwrap();
    assert_eq!(counts(&dst), counts(&src), "checkpointed by the restore");

    // A version-1 snapshot (no counts) keeps the replica's own.
    let body = bincode::encode_to_vec(
        Vec::<(String, String, Vec<Vec<u8>>)>::new(),
        bincode::config::standard(),
    )
    .unwrap();
    let mut v1 = b"STSNAP01".to_vec();
    v1.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    v1.extend_from_slice(&body);
    let mut src = src;
    src.restore(&v1, 8, b"").unwrap();
    assert_eq!(src.stored_records(), 0);
    assert_eq!(counts(&src)[0], ("acme".into(), 0, 10));
}
