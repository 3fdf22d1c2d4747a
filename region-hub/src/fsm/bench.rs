//! A micro-measurement of `apply` for telemetry batches and of the encoded
//! region state, run by hand:
//! `cargo test -p region-hub --lib fsm::bench -- --ignored --nocapture
//! --test-threads 1` (add `--release` for representative numbers). It prints
//! times and sizes; it asserts only correctness (record counts), never speed.

use std::time::{Duration, Instant};

use strata_protocol::{Metric, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord};

use super::{apply, encode_command, Command, RegionState};

fn record(device: usize, i: usize, with_seq: bool) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "bench".into(),
        device: format!("dev-{device:06}"),
        ts_ms: 1_700_000_000_000 + i as i64 * 1000,
        seq: with_seq.then_some(i as u64),
        metrics: vec![Metric {
            name: "temperature".into(),
            value: (i % 1000) as f64 * 0.1,
        }],
        tags: vec![Tag {
            key: "site".into(),
            value: "plant-1".into(),
        }],
    }
}

/// Batches of `per_batch` records, `rounds` readings per device, devices
/// interleaved (as an edge's spool holds them).
fn batches(devices: usize, rounds: usize, per_batch: usize, with_seq: bool) -> Vec<Vec<u8>> {
    let all: Vec<_> = (0..rounds)
        .flat_map(|i| (0..devices).map(move |d| (d, i)))
        .collect();
    all.chunks(per_batch)
        .enumerate()
        .map(|(b, chunk)| {
            encode_command(&Command::StoreBatch {
                batch: TelemetryBatch {
                    edge: "edge-1".into(),
                    epoch: 1,
                    first_seq: (b * per_batch) as u64,
                    entries: chunk
                        .iter()
                        .map(|&(d, i)| SpoolEntry::Telemetry(record(d, i, with_seq)))
                        .collect(),
                },
                received_ms: 0,
            })
        })
        .collect()
}

/// CPU time of this thread (Linux `schedstat`), so that other load on the
/// machine does not count; wall time elsewhere.
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

fn run(label: &str, devices: usize, rounds: usize, with_seq: bool) -> RegionState {
    let cmds = batches(devices, rounds, 1000, with_seq);
    let mut s = RegionState::default();
    let (start, cpu0) = (Instant::now(), cpu_time());
    let mut stored = 0;
    for (i, c) in cmds.iter().enumerate() {
        stored += apply(&mut s, i as u64 + 1, c).unwrap().records.len();
    }
    let t = match (cpu0, cpu_time()) {
        (Some(a), Some(b)) => b - a,
        _ => start.elapsed(),
    };
    assert_eq!(stored, devices * rounds);
    let t_enc = Instant::now();
    let bytes = s.encode();
    let enc = t_enc.elapsed();
    println!(
        "{label}: {} records in {:.3} s (CPU) = {:.0} ns/record; state {} devices: {} bytes \
         ({:.0} B/device), encoded in {:.1} ms",
        stored,
        t.as_secs_f64(),
        t.as_nanos() as f64 / stored as f64,
        devices,
        bytes.len(),
        bytes.len() as f64 / devices as f64,
        enc.as_secs_f64() * 1000.0,
    );
    s
}

#[test]
#[ignore = "measurement, run by hand"]
fn apply_1k_devices_with_seq() {
    run("1k devices, seq, 200 rounds", 1000, 200, true);
}

#[test]
#[ignore = "measurement, run by hand"]
fn apply_1k_devices_without_seq() {
    run("1k devices, no seq, 200 rounds", 1000, 200, false);
}

#[test]
#[ignore = "measurement, run by hand"]
fn apply_100k_devices_with_seq() {
    run("100k devices, seq, 40 rounds", 100_000, 40, true);
}
