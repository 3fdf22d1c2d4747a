//! Sharded monitors on one edge, end to end: the real driver, wasmtime and
//! spool, and the `rate` sample monitor, whose per-device kv state (the
//! previous reading and whether the device is in an excursion) shows
//! whether a device's state continued across a scale step. Scaling 1 → 2 → 3 → 2 instances while records flow, every
//! record must be handled exactly once, by the instance the shard hash
//! names, with the device's state as its previous record left it.

use std::collections::BTreeMap;

use strata_protocol::scheduling::{AllocId, EdgeAllocation};
use strata_protocol::workload::MonitorSpec;
use strata_protocol::{Metric, TelemetryRecord};
use strata_sched::scale::{shard_among, ShardKey};
use strata_sched::{PlacementIntent, WorkloadId};

use super::handle_tests::{
    apply_allocations, entries_and_next, open, sample_module, spec, test_cfg, wait,
};
use super::*;
use crate::workload::sandbox::sha256_hex;

const DEVICES: usize = 40;
const ROUNDS_PER_PHASE: u64 = 5;

fn alloc_id(slot: u32) -> AllocId {
    AllocId(0x5100 + u128::from(slot))
}

/// The region's allocations of `spec`, one per slot of `slots`, all on
/// this edge.
async fn assign_slots(
    host: &WorkloadHost,
    version: u64,
    spec: &MonitorSpec,
    module: &[u8],
    slots: &[u32],
) {
    let allocations = slots
        .iter()
        .map(|&slot| EdgeAllocation {
            id: alloc_id(slot),
            fencing_token: 1,
            slot,
            spec: spec.clone(),
            replace_after_ms: None,
            previous: None,
            checkpoint: None,
        })
        .collect();
    let artifacts = vec![(sha256_hex(module), module.to_vec())];
    apply_allocations(host, version, allocations, artifacts).await;
}

/// Metric `v` of every device at round `i`: it rises by 20 in odd rounds
/// and by 1 in even ones, one second apart, so with `max-rate = 10` and
/// `clear-rate = 5` every round from 1 on raises exactly one alert, exceeded
/// (odd) or recovered (even), when the device's state holds the previous
/// round. A reset state raises nothing for that round, a stale one the
/// wrong alert, a duplicate delivery a second one.
fn value(i: u64) -> f64 {
    (1..=i).map(|j| if j % 2 == 1 { 20.0 } else { 1.0 }).sum()
}

fn round(i: u64) -> Vec<TelemetryRecord> {
    (0..DEVICES)
        .map(|d| TelemetryRecord {
            tenant: "acme".into(),
            device: format!("dev-{d:02}"),
            ts_ms: 1_700_000_000_000 + i as i64 * 1000,
            seq: Some(i),
            metrics: vec![Metric {
                name: "v".into(),
                value: value(i),
            }],
            tags: Vec::new(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_sharded_monitor_on_one_edge_keeps_every_devices_state() {
    let rate = sample_module("rate").expect(
        "the sample monitors must be built for this test (monitors/build.sh, run by ./scripts/test)",
    );
    let dir = tempfile::tempdir().unwrap();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    let mut s = spec(
        "acme",
        "r",
        &rate,
        &["dev-*"],
        r#"{"metrics":["v"],"max-rate":10,"clear-rate":5}"#,
    );
    s.target = strata_protocol::workload::Placement::LeastLoaded;
    s.placement = PlacementIntent {
        count: Some(3),
        shard: true,
        ..PlacementIntent::default()
    };
    let shard = ShardKey::of(&WorkloadId::new("acme", "r"));
    let phases: [&[u32]; 4] = [&[0], &[0, 1], &[0, 1, 2], &[0, 1]];
    let mut queued = 0u64;
    let mut owner_of_round: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (p, slots) in phases.iter().enumerate() {
        assign_slots(&host, p as u64 + 1, &s, &rate, slots).await;
        if p == 0 {
            // Nothing routes to a monitor before its first instance exists.
            let k = InstanceKey::sharded("acme", "r", 0);
            wait(&host, "slot 0 running", |h| {
                h.instance(&k).is_some_and(|i| i.state == "running")
            })
            .await;
        }
        // Later steps: records flow at once, while instances start and
        // hand over (routed by the old table or the new one).
        for i in p as u64 * ROUNDS_PER_PHASE..(p as u64 + 1) * ROUNDS_PER_PHASE {
            let st = host.route(&round(i));
            assert_eq!((st.queued, st.dropped), (DEVICES as u64, 0), "round {i}");
            queued += st.queued;
            owner_of_round.insert(i, slots.to_vec());
        }
        wait(&host, "every queued record processed", |h| {
            h.metrics().processed.get() >= queued
        })
        .await;
        for &slot in *slots {
            let k = InstanceKey::sharded("acme", "r", slot);
            let i = host.instance(&k).expect("desired");
            assert_eq!(i.slot, Some(slot), "the status names the slot");
        }
    }
    assert_eq!(host.metrics().processed.get(), queued, "exactly once");
    let rounds = 4 * ROUNDS_PER_PHASE;
    let want = DEVICES * (rounds as usize - 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // (device, code, message, allocation) in spool order.
    let alerts = loop {
        let (e, _) = entries_and_next(&spool);
        let a: Vec<(String, String, String, String)> = e
            .iter()
            .filter_map(|x| {
                let a = x.as_alert()?;
                Some((
                    a.device.clone(),
                    a.code.clone(),
                    a.message.clone(),
                    x.fence()?.allocation.clone(),
                ))
            })
            .collect();
        if a.len() >= want || std::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let round_of: BTreeMap<String, u64> = (0..rounds)
        .map(|i| (format!("-> {} in", value(i)), i))
        .collect();
    let mut per_device: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut allocs = std::collections::BTreeSet::new();
    for (device, code, message, alloc) in &alerts {
        per_device.entry(device).or_default().push(code);
        allocs.insert(alloc.clone());
        if code == "rate.exceeded" {
            // "v changed <prev> -> <x> in 1 s: ...": the round is x's.
            let i = round_of
                .iter()
                .find(|(k, _)| message.contains(k.as_str()))
                .map(|(_, i)| *i)
                .unwrap_or_else(|| panic!("{device}: {message}"));
            assert!(
                message.contains(" in 1 s"),
                "{device}: stale state: {message}"
            );
            let slot = shard_among(device, &owner_of_round[&i], shard).unwrap();
            assert_eq!(
                *alloc,
                format!("{:032x}", alloc_id(slot).0),
                "{device} round {i} handled by the wrong instance"
            );
        }
    }
    let expect: Vec<&str> = (1..rounds)
        .map(|i| {
            if i % 2 == 1 {
                "rate.exceeded"
            } else {
                "rate.recovered"
            }
        })
        .collect();
    assert_eq!(per_device.len(), DEVICES);
    for (device, codes) in &per_device {
        assert_eq!(codes, &expect, "{device}: its state did not continue");
    }
    assert_eq!(alerts.len(), want);
    // Three instances really shared the devices.
    assert_eq!(allocs.len(), 3, "{allocs:?}");
    let m = host.metrics();
    assert!(
        m.shard_devices_moved.get() > 0 && m.shard_keys_moved.get() >= m.shard_devices_moved.get()
    );
    assert_eq!(m.shard_handovers.get(), 4, "none→1, 1→2, 2→3, 3→2");
    assert_eq!(m.handover_dropped.get(), 0);
    host.shutdown().await;
    spool.close().await;
}
