//! Property tests of `split` over random federations. Each case is built
//! from one `u64` seed (proptest prints it on failure; every assertion
//! names it too; rebuild the case with `world(seed)`); the runner itself
//! is seeded, so a run is reproducible.
//!
//! Invariants:
//! - the same inputs and seed give the same plan;
//! - no region grows past what it can hold of the workload, and only a
//!   reachable region grows;
//! - an unreachable region never gains;
//! - when the reachable eligible regions can hold what is wanted, the
//!   shares sum to exactly `count` and nothing fails; when they cannot,
//!   the plan says so;
//! - the plan is accepted whole on the snapshot it was made on, and
//!   splitting again after committing it (with another seed) changes
//!   nothing.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tests::{fed, region, run, workload, NOW};
use super::*;

struct World {
    snap: GlobalSnapshot,
    w: GlobalWorkload,
}

fn world(seed: u64) -> World {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let n = r.gen_range(1..10);
    let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let mut regions = Vec::new();
    for name in &names {
        let health = match r.gen_range(0..10) {
            0 => RegionHealth::Degraded,
            1 => RegionHealth::Down,
            2 => RegionHealth::Unknown,
            _ => RegionHealth::Ok,
        };
        let devices = if r.gen_bool(0.3) {
            0
        } else {
            r.gen_range(1..7)
        };
        let mut s = region(name, r.gen_range(0..25), health, devices);
        if r.gen_bool(0.05) {
            s.reported_at = crate::ids::Timestamp(NOW.0 - 60_000);
        }
        regions.push(s);
    }
    let mut intent = format!("count = {}\n", r.gen_range(1..60));
    let pick = |r: &mut ChaCha8Rng| -> Vec<&String> {
        let mut v: Vec<&String> = names.iter().filter(|_| r.gen_bool(0.5)).collect();
        if v.is_empty() {
            v.push(&names[r.gen_range(0..names.len())]);
        }
        v
    };
    let hard = if r.gen_bool(0.2) {
        Some(pick(&mut r))
    } else {
        None
    };
    let mut entries: Vec<String> = hard
        .iter()
        .flatten()
        .map(|n| format!("{{ region = \"{n}\", hard = true }}"))
        .collect();
    if r.gen_bool(0.3) {
        let pool: Vec<&String> = hard.clone().unwrap_or_else(|| names.iter().collect());
        let n = pool[r.gen_range(0..pool.len())];
        if hard.is_none() {
            entries.push(format!(
                "{{ region = \"{n}\", weight = {} }}",
                r.gen_range(1..101)
            ));
        }
    }
    if !entries.is_empty() {
        intent.push_str(&format!("regions = [{}]\n", entries.join(", ")));
    }
    match r.gen_range(0..4) {
        0 => intent.push_str("spread = {}\n"),
        1 => {
            let targets: Vec<&String> = hard.clone().unwrap_or_else(|| pick(&mut r));
            let mut left = 100u32;
            let mut parts = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                let pct = if i + 1 == targets.len() {
                    left
                } else {
                    let max = left - u32::try_from(targets.len() - i - 1).unwrap_or(0);
                    r.gen_range(1..=max.clamp(1, 60))
                };
                left -= pct;
                parts.push(format!("{t} = {pct}"));
            }
            intent.push_str(&format!(
                "spread = {{ targets = {{ {} }} }}\n",
                parts.join(", ")
            ));
        }
        2 => intent.push_str("locality = \"devices\"\n"),
        _ => {}
    }
    let w = workload("w", &intent);
    let mut snap = fed(regions, &[&w]);
    if let Err(e) = w.intent.validate(&snap.region_names()) {
        panic!("seed {seed}: generated an invalid intent:\n{intent}\n{e}");
    }
    // A current split, partly placed by its regions.
    if r.gen_bool(0.6) {
        let mut split = BTreeMap::new();
        for name in &names {
            if r.gen_bool(0.5) {
                let share = r.gen_range(1..8);
                split.insert(name.clone(), share);
                let mut s = snap.region(name).cloned().unwrap_or_else(|| unreachable!());
                s.placed = vec![Placed {
                    workload: w.id.clone(),
                    instances: r.gen_range(0..=share),
                }];
                snap.upsert_region(s);
            }
        }
        snap.set_split(&w.id, split);
    }
    // Another workload's unplaced share somewhere.
    if r.gen_bool(0.3) {
        let other = workload("other", "count = 5");
        snap.upsert_workload(other.clone());
        let name = names[r.gen_range(0..names.len())].clone();
        snap.set_split(&other.id, BTreeMap::from([(name, r.gen_range(1..10))]));
    }
    World { snap, w }
}

/// Which regions may take new instances, by the rules as documented.
fn eligible(snap: &GlobalSnapshot, w: &GlobalWorkload, s: &RegionSummary) -> bool {
    s.health_at(NOW, snap.config().stale_after).is_reachable()
        && w.intent
            .hard_regions()
            .is_none_or(|h| h.contains(s.region.as_str()))
        && (!w.intent.follows_devices() || s.devices_of(&w.id.tenant) > 0)
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let World { snap, w } = world(seed);
    let plan = run(&snap, &w, seed);
    prop_assert_eq!(
        &plan,
        &run(&snap, &w, seed),
        "seed {}: not deterministic",
        seed
    );

    let GlobalCardinality::Count(count) = w.intent.cardinality() else {
        unreachable!("only count intents are generated")
    };
    let mut held = 0u32;
    let mut room = 0u64;
    for s in snap.regions() {
        let prev = snap.split_of(&w.id).get(&s.region).copied().unwrap_or(0);
        let got = plan.shares.get(&s.region).map_or(0, |x| x.instances);
        let reachable = s.health_at(NOW, snap.config().stale_after).is_reachable();
        let cap = snap
            .region_cap(s, &w.id, w.intent.size, &w.intent.pools)
            .cap;
        if !reachable {
            prop_assert!(
                got <= prev,
                "seed {}: unreachable {} gained {} → {}",
                seed,
                s.region,
                prev,
                got
            );
            held += if w.intent.follows_devices() {
                prev.min(s.devices_of(&w.id.tenant))
            } else {
                prev
            };
        }
        if got > prev {
            prop_assert!(
                reachable,
                "seed {}: {} grew while unreachable",
                seed,
                s.region
            );
            prop_assert!(
                got <= cap,
                "seed {}: {} got {} over its room {}",
                seed,
                s.region,
                got,
                cap
            );
        }
        if eligible(&snap, &w, s) {
            room += u64::from(cap);
        }
    }
    let want = count.saturating_sub(held);
    if held <= count && room >= u64::from(want) {
        prop_assert_eq!(
            plan.total(),
            u64::from(count),
            "seed {}: {:?}",
            seed,
            plan.split()
        );
        prop_assert!(plan.failed.is_none(), "seed {}: {:?}", seed, plan.failed);
    } else if want > 0 {
        prop_assert!(
            plan.failed.is_some(),
            "seed {}: room {} for {} yet no failure",
            seed,
            room,
            want
        );
    }

    // Whole on its own snapshot; then a fixed point.
    let verdict = verify_global_plan(&snap, &plan);
    prop_assert!(verdict.is_full(), "seed {}: {:?}", seed, verdict.rejected);
    let mut next = snap.clone();
    next.apply_verdict(&verdict, next.index() + 1);
    let again = run(&next, &w, seed ^ 0x5eed);
    prop_assert!(
        again.is_noop(),
        "seed {}: re-split moved {:?} → {:?}",
        seed,
        plan.split(),
        again.split()
    );
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x0061_0ba1),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn split_invariants_hold_over_random_federations(seed in any::<u64>()) {
        check(seed)?;
    }
}
