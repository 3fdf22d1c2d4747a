//! A focused micro-benchmark of insert + frequent checkpoints, run by hand:
//! `cargo test --release -p region-hub --lib store::bench -- --ignored --nocapture`.
//! It prints times; it asserts only correctness (record counts), never speed.

use std::time::{Duration, Instant};

use strata_protocol::{Metric, Tag, TelemetryRecord};

use super::{StoreConfig, TelemetryStore};

fn record(device: usize, i: usize) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "bench".into(),
        device: format!("dev-{device:04}"),
        ts_ms: 1_700_000_000_000 + i as i64,
        seq: Some(i as u64),
        metrics: vec![Metric {
            name: "temperature".into(),
            value: (i % 1000) as f64 * 0.1,
        }],
        tags: vec![Tag {
            key: "pad".into(),
            value: "x".repeat(24),
        }],
    }
}

fn run(background: bool) {
    let total: usize = 2_000_000;
    let per_checkpoint = 60_000;
    let devices = 1000;
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        dir: dir.path().to_path_buf(),
        partition_ms: 3_600_000,
        retention_ms: 0,
        flush_bytes: u64::MAX,
    };
    let (mut store, _) = TelemetryStore::open(cfg).unwrap();
    let start = Instant::now();
    let (mut insert_t, mut ckpt_t, mut ckpt_max) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut i, mut index, mut durable) = (0, 0, 0);
    while i < total {
        let batch: Vec<_> = (i..(i + per_checkpoint).min(total))
            .map(|k| record(k % devices, k))
            .collect();
        i += batch.len();
        let t = Instant::now();
        store.insert(&batch);
        insert_t += t.elapsed();
        // Dropped outside the timer: the records come from the FSM and are
        // freed somewhere either way (before this change, at flush time).
        drop(batch);
        index += 1;
        // What the Raft thread pays: the whole checkpoint, or only begin/finish.
        let t = Instant::now();
        if background {
            if let Some(d) = store.finish_checkpoint(false).unwrap() {
                durable = d;
            }
            if !store.checkpoint_in_flight() {
                store.begin_checkpoint(index, Vec::new()).unwrap();
            }
        } else {
            store.checkpoint(index, b"").unwrap();
            durable = index;
        }
        let d = t.elapsed();
        ckpt_t += d;
        ckpt_max = ckpt_max.max(d);
    }
    let t = Instant::now();
    store.checkpoint(index + 1, b"").unwrap();
    let last = t.elapsed();
    assert_eq!(store.stored_records(), total as u64);
    println!(
        "{} {total} records, {index} rounds: total {:?}, insert {:?}, checkpoint on caller {:?} (max {:?}), \
         durable {durable} before the final wait of {last:?}, files {}",
        if background { "background" } else { "sync" },
        start.elapsed(),
        insert_t,
        ckpt_t,
        ckpt_max,
        std::fs::read_dir(dir.path()).unwrap().count()
    );
}

#[test]
#[ignore = "benchmark; run by hand in release mode"]
fn insert_with_frequent_checkpoints() {
    run(false);
    run(true);
}
