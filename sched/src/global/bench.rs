//! Global scheduling throughput over 100 simulated regions:
//!
//! ```text
//! cargo test --release -p strata-sched global_split_throughput -- --ignored --nocapture
//! ```
//!
//! Each region is a real [`ClusterSnapshot`] of 50-1000 edges (1-4 cores,
//! 1-8 GiB, 0-60 % reserved, 2 % not ready, `one-per-node` as regions run)
//! summarised by [`estimate_region`]; 50 tenants' devices report through a
//! random third of the regions each. 2000 global workloads (count 1-40,
//! 50-500 millicores; 30 % even spread, 15 % spread targets over 2-4
//! regions, 20 % device locality, 15 % hard affinity to 5-20 regions, 10 %
//! soft affinity) are split one after another, each plan verified and
//! committed before the next, so later ones see earlier ones' pending
//! shares. Then every region reports again (placing what it was given)
//! with 10 regions down, and every workload is split again. Reported:
//! splits/s (over the time inside `split`), p50/p99/max of one split, and
//! the cost of summarising a region. Seeded (printed): the same seed gives
//! the same plans; timings vary with the machine.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::ids::{AllocId, EvalId, NodeId, Timestamp, WorkloadId};
use crate::model::{
    Allocation, ClientState, Desired, Node, NodeStatus, PlaceReason, PlacementMeta,
};
use crate::resources::Resources;
use crate::snapshot::ClusterSnapshot;
use crate::SchedulerConfig;

const SEED: u64 = 0x61_0ba1;
const REGIONS: usize = 100;
const WORKLOADS: usize = 2000;
const TENANTS: usize = 50;
const MIB: u64 = 1 << 20;
const NOW: Timestamp = Timestamp(1_000_000);

fn reservation(id: u128, node: &NodeId, r: Resources) -> Allocation {
    Allocation {
        id: AllocId(id),
        workload: WorkloadId::new("local", "load"),
        slot: 0,
        node: node.clone(),
        generation: 1,
        resources: r,
        fencing_token: 1,
        desired: Desired::Run,
        client: ClientState::Running,
        created_index: 1,
        modified_index: 1,
        lease_expires_at: None,
        previous: None,
        placement: PlacementMeta {
            eval: EvalId(0),
            reason: PlaceReason::Missing,
            score: 0.0,
            score_parts: vec![],
            nodes_evaluated: 0,
            nodes_feasible: 0,
        },
    }
}

fn region_snapshot(r: &mut ChaCha8Rng, name: &str) -> ClusterSnapshot {
    let edges = r.gen_range(50..=1000);
    let mut nodes = Vec::with_capacity(edges);
    let mut allocs = Vec::with_capacity(edges);
    for i in 0..edges {
        let cap = Resources::new(1000 * r.gen_range(1..=4), 1024 * MIB * r.gen_range(1..=8));
        let mut n = Node::new(&format!("{name}-e{i:04}"), cap);
        if r.gen_bool(0.02) {
            n = n.status(NodeStatus::Suspect, Timestamp(0));
        }
        let pct = r.gen_range(0..=60);
        let used = Resources::new(cap.cpu_millicores * pct / 100, cap.memory_bytes * pct / 100);
        allocs.push(reservation(i as u128 + 1, &n.id, used));
        nodes.push(n);
    }
    let cfg = SchedulerConfig {
        one_per_node: true,
        ..SchedulerConfig::default()
    };
    ClusterSnapshot::from_parts(1, cfg, nodes, vec![], allocs)
}

fn intent(r: &mut ChaCha8Rng, names: &[String]) -> String {
    let mut t = format!(
        "count = {}\nsize = {{ cpu-millicores = {}, memory-bytes = {} }}\n",
        r.gen_range(1..=40),
        r.gen_range(1..=10) * 50,
        r.gen_range(1..=8) * 32 * MIB
    );
    let some = |r: &mut ChaCha8Rng, n: usize| -> Vec<&String> {
        let mut v: Vec<&String> = Vec::new();
        while v.len() < n {
            let c = &names[r.gen_range(0..names.len())];
            if !v.contains(&c) {
                v.push(c);
            }
        }
        v
    };
    match r.gen_range(0..100) {
        0..30 => t.push_str("spread = {}\n"),
        30..45 => {
            let k = r.gen_range(2..=4);
            let regions = some(r, k);
            let each = 100 / k as u32;
            let parts: Vec<String> = regions
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let pct = if i + 1 == k {
                        100 - each * (k as u32 - 1)
                    } else {
                        each
                    };
                    format!("{n} = {pct}")
                })
                .collect();
            t.push_str(&format!(
                "spread = {{ targets = {{ {} }} }}\n",
                parts.join(", ")
            ));
        }
        45..65 => t.push_str("locality = \"devices\"\n"),
        65..80 => {
            let k = r.gen_range(5..=20);
            let list: Vec<String> = some(r, k)
                .iter()
                .map(|n| format!("{{ region = \"{n}\", hard = true }}"))
                .collect();
            t.push_str(&format!("regions = [{}]\n", list.join(", ")));
        }
        80..90 => {
            let n = &names[r.gen_range(0..names.len())];
            t.push_str(&format!(
                "regions = [{{ region = \"{n}\", weight = 80 }}]\n"
            ));
        }
        _ => {}
    }
    t
}

fn percentiles(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

/// One pass of splits over every workload; returns (splits, seconds in
/// `split`, instances moved, failures, histogram in ns).
fn pass(
    snap: &mut GlobalSnapshot,
    ids: &[WorkloadId],
    rng: &mut ChaCha8Rng,
    eval_base: u64,
) -> (usize, f64, u64, usize, Histogram<u64>) {
    let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("histogram: {e}"));
    let mut busy = 0.0;
    let mut moves = 0;
    let mut failed = 0;
    for (i, id) in ids.iter().enumerate() {
        let w = snap.workload(id).cloned().unwrap_or_else(|| panic!("{id}"));
        let eval = GlobalEval {
            id: EvalId(eval_base + i as u64),
            workload: id.clone(),
            snapshot_index: snap.index(),
        };
        let t = Instant::now();
        let plan = split(snap, &w, &eval, NOW, rng).unwrap_or_else(|e| panic!("seed {SEED}: {e}"));
        let dt = t.elapsed();
        busy += dt.as_secs_f64();
        hist.record(u64::try_from(dt.as_nanos()).unwrap_or(u64::MAX).max(1))
            .unwrap_or_else(|e| panic!("record: {e}"));
        moves += plan.moves();
        failed += usize::from(plan.failed.is_some());
        let verdict = verify_global_plan(snap, &plan);
        let next = snap.index() + 1;
        snap.apply_verdict(&verdict, next);
    }
    (ids.len(), busy, moves, failed, hist)
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn global_split_throughput() {
    println!("global_split_throughput: seed {SEED:#x}, {REGIONS} regions, {WORKLOADS} workloads");
    let mut r = ChaCha8Rng::seed_from_u64(SEED);
    let names: Vec<String> = (0..REGIONS).map(|i| format!("region-{i:03}")).collect();
    let mut regions = Vec::new();
    let mut clusters = Vec::new();
    let mut summarise = Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("histogram: {e}"));
    let mut edges = 0;
    let mut wire = 0;
    let global: Vec<WorkloadId> = (0..WORKLOADS)
        .map(|i| WorkloadId::new(&format!("t{:02}", i % TENANTS), &format!("w{i:04}")))
        .collect();
    for name in &names {
        let cs = region_snapshot(&mut r, name);
        edges += cs.node_count();
        let mut devices = BTreeMap::new();
        for t in 0..TENANTS {
            if r.gen_bool(0.33) {
                devices.insert(format!("t{t:02}"), r.gen_range(1..200u32));
            }
        }
        let t = Instant::now();
        let mut s = RegionSummary::from_snapshot(name, &cs, &STANDARD_SIZES, devices, &global, NOW);
        summarise
            .record(
                u64::try_from(t.elapsed().as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .unwrap_or_else(|e| panic!("record: {e}"));
        s.health.state = RegionHealth::Ok;
        wire += bincode::encode_to_vec(&s, bincode::config::standard())
            .map(|b| b.len())
            .unwrap_or(0);
        regions.push(s);
        clusters.push(cs);
    }
    println!(
        "  {edges} edges; summarising a region: {}; summaries {:.1} KiB on the wire on average",
        percentiles(&summarise),
        wire as f64 / REGIONS as f64 / 1024.0
    );
    let mut snap = GlobalSnapshot::new(1, GlobalConfig::default());
    for s in regions {
        snap.upsert_region(s);
    }
    let known = snap.region_names();
    for id in &global {
        let text = intent(&mut r, &names);
        let w = GlobalWorkload {
            id: id.clone(),
            generation: 1,
            intent: toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")),
            stacks: false,
        };
        w.intent
            .validate(&known)
            .unwrap_or_else(|e| panic!("seed {SEED}: {text}\n{e}"));
        snap.upsert_workload(w);
    }

    let (n, busy, moves, failed, hist) = pass(&mut snap, &global, &mut r, 0);
    println!(
        "  first split of each workload: {n} splits, {:.0} splits/s, {}; {moves} instances placed, {failed} with a failure",
        n as f64 / busy,
        percentiles(&hist)
    );

    // Each region places what it was given on its edges (first fit, one
    // instance of a workload per edge) and reports again; 10 go down.
    let splits: Vec<(WorkloadId, BTreeMap<String, u32>)> = global
        .iter()
        .map(|id| (id.clone(), snap.split_of(id).clone()))
        .collect();
    let (mut wanted, mut placed, mut next_id) = (0u64, 0u64, 1u128 << 64);
    for (i, (name, cs)) in names.iter().zip(clusters.iter_mut()).enumerate() {
        let ready: Vec<(NodeId, Resources)> = cs
            .nodes()
            .filter(|n| n.status == NodeStatus::Ready)
            .map(|n| (n.id.clone(), n.capacity))
            .collect();
        for (id, sp) in &splits {
            let Some(&n) = sp.get(name) else { continue };
            let size = snap.workload(id).map(|w| w.intent.size).unwrap_or_default();
            wanted += u64::from(n);
            let mut left = n;
            for (node, cap) in &ready {
                if left == 0 {
                    break;
                }
                if cs
                    .reserved(node)
                    .saturating_add(size)
                    .exceeds(cap)
                    .is_none()
                {
                    let mut a = reservation(next_id, node, size);
                    a.workload = id.clone();
                    next_id += 1;
                    cs.upsert_alloc(a);
                    left -= 1;
                }
            }
            placed += u64::from(n - left);
        }
        let mut s = RegionSummary::from_snapshot(
            name,
            cs,
            &STANDARD_SIZES,
            snap.region(name)
                .map(|s| s.device_locality.clone())
                .unwrap_or_default(),
            &global,
            NOW,
        );
        s.health.state = if i % 10 == 3 {
            RegionHealth::Down
        } else {
            RegionHealth::Ok
        };
        snap.upsert_region(s);
    }
    println!(
        "  regions placed {placed} of the {wanted} instances assigned (first fit on their edges)"
    );
    let (n, busy, moves, failed, hist) = pass(&mut snap, &global, &mut r, WORKLOADS as u64);
    println!(
        "  re-split with 10 regions down: {n} splits, {:.0} splits/s, {}; {moves} instances moved, {failed} with a failure",
        n as f64 / busy,
        percentiles(&hist)
    );
    // Those still down keep their shares: nothing was taken from them.
    for (id, before) in &splits {
        for (region, &n) in before {
            let s = snap.region(region).unwrap_or_else(|| unreachable!());
            if !s.health.state.is_reachable()
                && !snap
                    .workload(id)
                    .is_some_and(|w| w.intent.follows_devices())
            {
                assert_eq!(
                    snap.split_of(id).get(region).copied().unwrap_or(0),
                    n,
                    "{id} in {region}"
                );
            }
        }
    }
}
