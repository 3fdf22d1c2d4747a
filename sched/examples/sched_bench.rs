//! Scheduler benchmark: the pure scheduler over synthetic regions of 1k,
//! 10k and 100k nodes. Reports placements per second (placements over the
//! time spent inside `schedule`) and the p50/p99/max latency of one
//! decision (one `schedule` call, 1-5 placements), plus the time the plan
//! applier's `verify_plan` takes per plan.
//!
//! ```text
//! cargo run --release -p strata-sched --example sched_bench [-- --sizes 1000,10000 --placements 50000 --seed 7]
//! ```
//!
//! Each size places `--placements` instances (default 50,000), capped at
//! 15 per node (about 55 % of the region's CPU) so a small region measures
//! placing rather than refusing.
//!
//! The region: nodes of 4 cores / 8 GiB with 10 zones, 10 % in a gpu pool,
//! 0-30 % measured usage, 1 % carrying one of 50 device groups. The
//! workloads: 60 % plain `count = 1-5`, 20 % with a zone constraint, 10 %
//! spread over zones, 10 % with a soft zone affinity; 50-250 millicores and
//! 32-256 MiB each. Each plan is verified and applied before the next
//! evaluation, so the region fills up as it would. Seeded: the same flags
//! give the same placements (timings vary with the machine).
//!
//! The Raft half (the applier committing through a 3-replica group) is
//! measured where the hub wires this in, not here.

use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_sched::*;

const MIB: u64 = 1 << 20;

struct Args {
    sizes: Vec<usize>,
    placements: usize,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![1_000, 10_000, 100_000],
        placements: 50_000,
        seed: 7,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--sizes" => {
                a.sizes = v
                    .split(',')
                    .map(|s| s.parse().expect("--sizes: comma-separated node counts"))
                    .collect()
            }
            "--placements" => a.placements = v.parse().expect("--placements: a number"),
            "--seed" => a.seed = v.parse().expect("--seed: a number"),
            other => panic!("unknown flag {other}; see the example's docs"),
        }
        i += 2;
    }
    a
}

fn region(n: usize, rng: &mut ChaCha8Rng) -> ClusterSnapshot {
    let mut snap = ClusterSnapshot::new(1, SchedulerConfig::default());
    for i in 0..n {
        let mut node = Node::new(&format!("edge-{i:06}"), Resources::new(4000, 8192 * MIB))
            .label("zone", &format!("z{}", i % 10))
            .pool(if rng.gen_bool(0.1) { "gpu" } else { "cpu" });
        if rng.gen_bool(0.01) {
            node = node.carries(&format!("g{}", rng.gen_range(0..50)));
        }
        node.usage = Resources::new(rng.gen_range(0..1200), rng.gen_range(0..2458) * MIB);
        snap.upsert_node(node);
    }
    snap
}

fn workload(i: usize, rng: &mut ChaCha8Rng) -> Workload {
    let count = rng.gen_range(1..=5);
    let kind = rng.gen_range(0..10);
    let zone = rng.gen_range(0..10);
    let intent = match kind {
        0..=5 => format!("count = {count}"),
        6 | 7 => format!("count = {count}\nconstraints = [{{ label = \"zone\", value = \"z{zone}\" }}]"),
        8 => format!("count = {count}\nspread = [{{ label = \"zone\" }}]"),
        _ => format!("count = {count}\naffinity = [{{ label = \"zone\", value = \"z{zone}\", weight = 50 }}]"),
    };
    Workload {
        id: WorkloadId::new("bench", &format!("w{i}")),
        priority: rng.gen_range(0..100),
        resources: Resources::new(rng.gen_range(50..250), rng.gen_range(32..256) * MIB),
        intent: toml::from_str(&intent).expect("bench intent parses"),
        device_group: rng
            .gen_bool(0.2)
            .then(|| format!("g{}", rng.gen_range(0..50))),
        generation: 1,
    }
}

fn main() {
    let a = args();
    println!(
        "{:>8} {:>8} {:>10} {:>9} {:>14} {:>9} {:>9} {:>9} {:>10}",
        "nodes",
        "evals",
        "placements",
        "failed",
        "placements/s",
        "p50 µs",
        "p99 µs",
        "max µs",
        "verify p99"
    );
    for &n in &a.sizes {
        let mut rng = ChaCha8Rng::seed_from_u64(a.seed ^ n as u64);
        let build = Instant::now();
        let mut snap = region(n, &mut rng);
        let build = build.elapsed();
        let mut decide = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let mut verify = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let (mut placed, mut failed, mut evals) = (0usize, 0u64, 0u64);
        let mut in_schedule = std::time::Duration::ZERO;
        let mut token = 1u64;
        let mut i = 0usize;
        // A 1k-node region holds about 26k of these instances (CPU-bound):
        // stay at ~55 % of that so the run measures placing, not refusing.
        let target = a.placements.min(n * 15);
        while placed < target {
            let w = workload(i, &mut rng);
            i += 1;
            let id = w.id.clone();
            snap.upsert_workload(w);
            let idx = snap.index() + 1;
            snap.set_index(idx);
            let eval = Evaluation::new(i as u64, id, Trigger::Submit, idx);
            let seed = rng.gen();
            let mut srng = ChaCha8Rng::seed_from_u64(seed);
            let t = Instant::now();
            let plan = schedule(&snap, &eval, Timestamp(1_000_000), &mut srng).expect("schedule");
            let dt = t.elapsed();
            in_schedule += dt;
            decide
                .record(dt.as_micros().max(1) as u64)
                .expect("in range");
            evals += 1;
            failed += plan.failed.as_ref().map_or(0, |f| u64::from(f.unplaced));
            let t = Instant::now();
            let mut verdict = verify_plan(&snap, &plan);
            verify
                .record(t.elapsed().as_micros().max(1) as u64)
                .expect("in range");
            token = verdict.assign_tokens(token);
            placed += verdict.placements().count();
            let idx = snap.index() + 1;
            snap.apply_verdict(&verdict, idx);
            if evals > 10 * a.placements as u64 {
                eprintln!("region full after {placed} placements");
                break;
            }
        }
        println!(
            "{:>8} {:>8} {:>10} {:>9} {:>14.0} {:>9} {:>9} {:>9} {:>10}",
            n,
            evals,
            placed,
            failed,
            placed as f64 / in_schedule.as_secs_f64(),
            decide.value_at_quantile(0.5),
            decide.value_at_quantile(0.99),
            decide.max(),
            verify.value_at_quantile(0.99),
        );
        eprintln!(
            "  ({n} nodes: region built in {:.0} ms, {} allocations at the end)",
            build.as_secs_f64() * 1000.0,
            snap.alloc_count()
        );
    }
}
