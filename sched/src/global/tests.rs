//! Split and verify, rule by rule. Regions are built so each node has room
//! for exactly one instance of [`SIZE`]: a region's fit is its free nodes.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::ids::{EvalId, Timestamp, WorkloadId};
use crate::resources::Resources;

pub(crate) const SIZE: Resources = Resources::new(250, 128 << 20);
pub(crate) const NOW: Timestamp = Timestamp(1_000_000);

/// A region with `free` nodes of room for one [`SIZE`] each, `health`,
/// tenant `acme` reporting `devices` through it.
pub(crate) fn region(name: &str, free: u32, health: RegionHealth, devices: u32) -> RegionSummary {
    let frees = vec![SIZE; free as usize];
    let all = PoolCapacity {
        nodes_ready: free,
        total: Resources::new(250 * u64::from(free), (128 << 20) * u64::from(free)),
        free: Resources::new(250 * u64::from(free), (128 << 20) * u64::from(free)),
        largest_free: if free > 0 { SIZE } else { Resources::ZERO },
        ladder: vec![],
        free_nodes: FreeHistogram::build(&frees),
    };
    RegionSummary {
        region: name.to_owned(),
        health: HealthAsOf {
            state: health,
            as_of: NOW,
        },
        capacity: RegionCapacity {
            max_per_node: None,
            all,
            pools: BTreeMap::new(),
        },
        device_locality: if devices > 0 {
            BTreeMap::from([("acme".to_owned(), devices)])
        } else {
            BTreeMap::new()
        },
        placed: vec![],
        reported_at: NOW,
    }
}

pub(crate) fn workload(name: &str, intent: &str) -> GlobalWorkload {
    let toml = format!(
        "size = {{ cpu-millicores = 250, memory-bytes = {} }}\n{intent}",
        128 << 20
    );
    GlobalWorkload {
        id: WorkloadId::new("acme", name),
        generation: 1,
        intent: toml::from_str(&toml).unwrap_or_else(|e| panic!("{toml}: {e}")),
        stacks: false,
    }
}

pub(crate) fn fed(regions: Vec<RegionSummary>, workloads: &[&GlobalWorkload]) -> GlobalSnapshot {
    let mut s = GlobalSnapshot::new(5, GlobalConfig::default());
    for r in regions {
        s.upsert_region(r);
    }
    for w in workloads {
        s.upsert_workload((*w).clone());
    }
    s
}

pub(crate) fn run(snap: &GlobalSnapshot, w: &GlobalWorkload, seed: u64) -> GlobalPlan {
    let eval = GlobalEval {
        id: EvalId(1),
        workload: w.id.clone(),
        snapshot_index: 0,
    };
    split(snap, w, &eval, NOW, &mut ChaCha8Rng::seed_from_u64(seed))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
}

/// The current split of `w`, with the regions having placed all of it
/// (their capacity reduced by what they run).
pub(crate) fn settle(snap: &mut GlobalSnapshot, w: &WorkloadId, split: &[(&str, u32)]) {
    snap.set_split(
        w,
        split.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
    );
    for (r, n) in split {
        let Some(mut s) = snap.region(r).cloned() else {
            continue;
        };
        let free = s.capacity.all.nodes_ready.saturating_sub(*n);
        let mut fresh = region(r, free, s.health.state, 0);
        fresh.device_locality = s.device_locality.clone();
        s.capacity = fresh.capacity;
        s.placed.retain(|p| &p.workload != w);
        s.placed.push(Placed {
            workload: w.clone(),
            instances: *n,
        });
        s.placed.sort_by(|a, b| a.workload.cmp(&b.workload));
        snap.upsert_region(s);
    }
}

fn split_of(p: &GlobalPlan) -> Vec<(&str, u32)> {
    p.shares
        .iter()
        .filter(|(_, s)| s.instances > 0)
        .map(|(r, s)| (r.as_str(), s.instances))
        .collect()
}

fn reasons<'p>(p: &'p GlobalPlan, r: &str) -> &'p [ShareReason] {
    &p.shares[r].reasons
}

/// Commits `plan` and splits again with another seed: nothing may change.
fn assert_stable(snap: &GlobalSnapshot, w: &GlobalWorkload, plan: &GlobalPlan) {
    let mut next = snap.clone();
    let verdict = verify_global_plan(&next, plan);
    assert!(verdict.is_full(), "{verdict:?}");
    next.apply_verdict(&verdict, next.index() + 1);
    let again = run(&next, w, 99);
    assert!(
        again.is_noop(),
        "re-split moved: {:?} → {:?}",
        plan.split(),
        again.split()
    );
}

use RegionHealth::{Degraded, Down, Ok as Up, Unknown};

#[test]
fn hard_region_affinity_uses_only_the_listed_regions() {
    let w = workload(
        "w",
        r#"count = 6
regions = [{ region = "a", hard = true }, { region = "b", hard = true }]"#,
    );
    let snap = fed(
        vec![
            region("a", 2, Up, 0),
            region("b", 10, Up, 0),
            region("c", 50, Up, 0),
        ],
        &[&w],
    );
    // No preference among them: the roomiest first, c never.
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("b", 6)]);
    assert!(p.failed.is_none());
    assert!(reasons(&p, "b").contains(&ShareReason::HardAffinity));
    assert_stable(&snap, &w, &p);
    // More than the hard regions hold: what fits, and why not the rest.
    let mut big = w.clone();
    big.intent.count = Some(20);
    let p = run(&snap, &big, 1);
    assert_eq!(split_of(&p), vec![("a", 2), ("b", 10)]);
    let f = p.failed.expect("8 unplaced");
    assert_eq!((f.unplaced, f.wanted), (8, 20));
    assert_eq!(f.metric.filtered["region affinity (hard)"], 1);
    assert_eq!(f.metric.exhausted["full"], 2);
    assert_eq!(f.regions["c"], "region affinity (hard)");
}

#[test]
fn soft_affinity_fills_the_preferred_region_first() {
    let w = workload(
        "w",
        r#"count = 8
regions = [{ region = "b", weight = 80 }, { region = "c", weight = 20 }]"#,
    );
    let snap = fed(
        vec![
            region("a", 100, Up, 0),
            region("b", 5, Up, 0),
            region("c", 2, Up, 0),
        ],
        &[&w],
    );
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 1), ("b", 5), ("c", 2)]);
    assert!(reasons(&p, "b").contains(&ShareReason::Affinity { weight: 80 }));
    assert!(reasons(&p, "b").contains(&ShareReason::CapacityLimited { cap: 5 }));
    assert_stable(&snap, &w, &p);
}

#[test]
fn without_rules_instances_go_where_there_is_most_room_and_stay_there() {
    let w = workload("w", "count = 9");
    let mut snap = fed(
        vec![
            region("a", 10, Up, 0),
            region("b", 10, Up, 0),
            region("c", 1, Up, 0),
        ],
        &[&w],
    );
    let p = run(&snap, &w, 3);
    let s = p.split();
    assert_eq!(p.total(), 9);
    assert!(s["a"].abs_diff(s["b"]) <= 1, "{s:?}");
    assert!(!s.contains_key("c"), "{s:?}: the roomiest first");
    assert_stable(&snap, &w, &p);
    // A feasible current split is kept even though another region has
    // become roomier: stability over balance.
    settle(&mut snap, &w.id, &[("a", 2), ("c", 1), ("b", 6)]);
    snap.upsert_region(region("d", 500, Up, 0));
    let p = run(&snap, &w, 3);
    assert!(p.is_noop(), "{:?}", p.split());
    assert!(reasons(&p, "a").contains(&ShareReason::Kept));
    // Lowering the count removes from the largest share first.
    let mut fewer = w.clone();
    fewer.intent.count = Some(6);
    let p = run(&snap, &fewer, 3);
    assert_eq!(split_of(&p), vec![("a", 2), ("b", 3), ("c", 1)]);
    assert!(reasons(&p, "b").contains(&ShareReason::Reduced));
}

#[test]
fn spread_targets_split_by_percent_and_overflow_when_a_target_is_full() {
    let w = workload("w", "count = 10\nspread = { targets = { a = 70, b = 30 } }");
    let snap = fed(
        vec![
            region("a", 50, Up, 0),
            region("b", 50, Up, 0),
            region("c", 50, Up, 0),
        ],
        &[&w],
    );
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 7), ("b", 3)]);
    assert!(reasons(&p, "a").contains(&ShareReason::SpreadTarget { percent: 70 }));
    assert_stable(&snap, &w, &p);
    // a holds only 4: b takes its proportional excess first, up to its room.
    let snap = fed(
        vec![
            region("a", 4, Up, 0),
            region("b", 4, Up, 0),
            region("c", 50, Up, 0),
        ],
        &[&w],
    );
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 4), ("b", 4), ("c", 2)]);
    assert!(reasons(&p, "a").contains(&ShareReason::CapacityLimited { cap: 4 }));
    assert!(reasons(&p, "c").contains(&ShareReason::SpreadOverflow));
    assert!(p.failed.is_none());
    assert_stable(&snap, &w, &p);
}

#[test]
fn an_even_spread_rounds_to_exactly_the_count() {
    let w = workload("w", "count = 10\nspread = {}");
    let snap = fed(
        vec![
            region("a", 50, Up, 0),
            region("b", 50, Up, 0),
            region("c", 50, Up, 0),
        ],
        &[&w],
    );
    for seed in 0..8 {
        let p = run(&snap, &w, seed);
        let mut shares: Vec<u32> = p.split().into_values().collect();
        shares.sort_unstable();
        assert_eq!(shares, vec![3, 3, 4], "seed {seed}");
        assert_stable(&snap, &w, &p);
    }
}

#[test]
fn device_locality_splits_in_proportion_and_rounds_to_the_count() {
    let w = workload("w", "count = 7\nlocality = \"devices\"");
    let snap = fed(
        vec![
            region("a", 50, Up, 5),
            region("b", 50, Up, 3),
            region("c", 50, Up, 2),
            region("d", 50, Up, 0),
        ],
        &[&w],
    );
    // 3.5, 2.1, 1.4: floors 3, 2, 1 and the one left to the largest part.
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 4), ("b", 2), ("c", 1)]);
    assert!(reasons(&p, "a").contains(&ShareReason::DeviceLocality { devices: 5, of: 10 }));
    assert_stable(&snap, &w, &p);
    // No devices anywhere reachable: fits no region, named by the rule.
    let snap = fed(vec![region("d", 50, Up, 0)], &[&w]);
    let p = run(&snap, &w, 1);
    let f = p.failed.expect("fails");
    assert!(f.fits_no_region());
    assert_eq!(f.metric.filtered["no devices of tenant acme"], 1);
}

#[test]
fn an_unreachable_region_keeps_its_share_and_it_is_not_doubled() {
    let w = workload("w", "count = 8");
    for health in [Down, Unknown] {
        let mut snap = fed(vec![region("a", 20, Up, 0), region("b", 20, Up, 0)], &[&w]);
        settle(&mut snap, &w.id, &[("a", 4), ("b", 4)]);
        let mut b = snap.region("b").cloned().expect("b");
        b.health.state = health;
        snap.upsert_region(b);
        let p = run(&snap, &w, 1);
        assert!(p.is_noop(), "{health}: {:?}", p.split());
        assert_eq!(p.total(), 8, "not doubled");
        assert_eq!(p.held_by_unreachable, 4);
        assert_eq!(
            reasons(&p, "b"),
            &[ShareReason::RegionUnreachable { health }][..]
        );
    }
    // A summary that stopped arriving is the same as unknown.
    let mut snap = fed(vec![region("a", 20, Up, 0), region("b", 20, Up, 0)], &[&w]);
    settle(&mut snap, &w.id, &[("a", 4), ("b", 4)]);
    let mut b = snap.region("b").cloned().expect("b");
    b.reported_at = Timestamp(NOW.0 - 31_000);
    snap.upsert_region(b);
    let p = run(&snap, &w, 1);
    assert!(p.is_noop());
    assert_eq!(
        reasons(&p, "b"),
        &[ShareReason::RegionUnreachable { health: Unknown }][..]
    );
    // Degraded still takes instances.
    let mut big = w.clone();
    big.intent.count = Some(10);
    let mut b = snap.region("b").cloned().expect("b");
    b.reported_at = NOW;
    b.health.state = Degraded;
    snap.upsert_region(b);
    let p = run(&snap, &big, 1);
    assert_eq!(p.total(), 10);
    assert!(p.shares["b"].instances >= 4);
}

#[test]
fn when_devices_move_away_from_a_down_region_only_the_moved_share_is_re_placed() {
    let w = workload("w", "count = 8\nlocality = \"devices\"");
    let mut snap = fed(
        vec![
            region("a", 20, Up, 4),
            region("b", 20, Up, 4),
            region("c", 20, Up, 0),
        ],
        &[&w],
    );
    settle(&mut snap, &w.id, &[("a", 4), ("b", 4)]);
    // b goes down and 3 of its 4 devices now report through a.
    let mut b = snap.region("b").cloned().expect("b");
    b.health.state = Down;
    b.device_locality.insert("acme".into(), 1);
    snap.upsert_region(b);
    let mut a = snap.region("a").cloned().expect("a");
    a.device_locality.insert("acme".into(), 7);
    snap.upsert_region(a);
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 7), ("b", 1)]);
    assert_eq!(
        reasons(&p, "b"),
        &[
            ShareReason::RegionUnreachable { health: Down },
            ShareReason::DevicesMoved {
                devices: 1,
                released: 3
            }
        ][..]
    );
    assert_eq!(p.moves(), 3, "only the moved share");
    assert_stable(&snap, &w, &p);
    // Devices unchanged in the down region: nothing moves.
    let mut snap2 = fed(
        vec![
            region("a", 20, Up, 4),
            region("b", 20, Down, 4),
            region("c", 20, Up, 0),
        ],
        &[&w],
    );
    settle(&mut snap2, &w.id, &[("a", 4), ("b", 4)]);
    let p = run(&snap2, &w, 1);
    assert!(p.is_noop(), "{:?}", p.split());
}

#[test]
fn a_workload_that_fits_no_region_fails_naming_each_rule_and_changes_nothing() {
    let w = workload(
        "w",
        r#"count = 5
regions = [{ region = "a", hard = true }, { region = "b", hard = true }, { region = "c", hard = true }, { region = "d", hard = true }]"#,
    );
    // a's nodes are all too small in cpu.
    let mut a = region("a", 0, Up, 0);
    let small = Resources::new(100, 1 << 30);
    a.capacity.all = PoolCapacity {
        nodes_ready: 3,
        largest_free: small,
        free_nodes: FreeHistogram::build(&[small; 3]),
        ..Default::default()
    };
    let mut snap = fed(
        vec![
            a,
            region("b", 9, Down, 0),
            region("c", 9, Unknown, 0),
            region("d", 3, Up, 0),
            region("e", 99, Up, 0),
        ],
        &[&w],
    );
    // d is full of another workload's pending share.
    let other = workload("other", "count = 3");
    snap.upsert_workload(other.clone());
    snap.set_split(&other.id, BTreeMap::from([("d".to_owned(), 3)]));
    settle(&mut snap, &w.id, &[("b", 2)]);
    let p = run(&snap, &w, 1);
    let f = p.failed.clone().expect("fails");
    assert!(f.fits_no_region(), "{f:?}");
    assert_eq!((f.unplaced, f.wanted), (3, 3), "b's 2 are held");
    assert_eq!(f.metric.filtered["health down"], 1);
    assert_eq!(f.metric.filtered["health unknown"], 1);
    assert_eq!(f.metric.filtered["region affinity (hard)"], 1);
    assert_eq!(f.metric.exhausted["cpu"], 1, "{:?}", f.metric);
    assert_eq!(
        f.metric.exhausted["taken by other workloads' pending shares"],
        1
    );
    assert_eq!(f.metric.nodes_in_region, 5);
    assert!(f.regions["a"].starts_with("cpu"), "{}", f.regions["a"]);
    assert!(p.is_noop());
    assert_eq!(split_of(&p), vec![("b", 2)]);
}

#[test]
fn other_workloads_unplaced_shares_reduce_a_regions_room() {
    let w = workload("w", "count = 10");
    let big = GlobalWorkload {
        intent: GlobalIntent {
            size: Resources::new(500, 128 << 20),
            ..workload("big", "count = 2").intent
        },
        ..workload("big", "count = 2")
    };
    let mut snap = fed(
        vec![region("a", 10, Up, 0), region("b", 10, Up, 0)],
        &[&w, &big],
    );
    // big has 2 assigned in a, unplaced: they displace up to 2 × 2 of w.
    snap.set_split(&big.id, BTreeMap::from([("a".to_owned(), 2)]));
    let a = snap.region("a").cloned().expect("a");
    assert_eq!(snap.region_cap(&a, &w.id, SIZE, &[]).cap, 6);
    let p = run(&snap, &w, 1);
    assert!(p.shares["a"].instances <= 6);
    assert_eq!(p.total(), 10);
    // Once big is placed (the summary says so), the room comes back as
    // reported free capacity, not twice.
    let mut a = snap.region("a").cloned().expect("a");
    a.placed = vec![Placed {
        workload: big.id.clone(),
        instances: 2,
    }];
    a.capacity = region("a", 6, Up, 0).capacity;
    snap.upsert_region(a.clone());
    assert_eq!(snap.region_cap(&a, &w.id, SIZE, &[]).cap, 6);
}

/// An edge region runs an unsharded monitor once per edge; a sharded one
/// (an autoscaled workload) stacks several instances on an edge, so its
/// share is bounded by room, not by the number of edges.
#[test]
fn a_stacking_workload_is_not_bounded_by_one_per_node() {
    // Two edges, each with room for four instances of SIZE.
    let mut a = region("a", 2, Up, 0);
    a.capacity.max_per_node = Some(1);
    let big = Resources::new(4 * SIZE.cpu_millicores, 4 * SIZE.memory_bytes);
    a.capacity.all.free = Resources::new(2 * big.cpu_millicores, 2 * big.memory_bytes);
    a.capacity.all.free_nodes = FreeHistogram::build(&[big, big]);
    let once = workload("once", "count = 6");
    let stacked = GlobalWorkload {
        stacks: true,
        ..workload("stacked", "count = 6")
    };
    let snap = fed(vec![a.clone()], &[&once, &stacked]);
    assert_eq!(
        snap.region_cap(&a, &once.id, SIZE, &[]).cap,
        2,
        "one per edge"
    );
    assert_eq!(
        snap.region_cap(&a, &stacked.id, SIZE, &[]).cap,
        8,
        "four per edge"
    );
    assert_eq!(run(&snap, &stacked, 1).total(), 6);
    assert_eq!(run(&snap, &once, 1).total(), 2);
}

#[test]
fn per_region_runs_the_same_number_in_every_eligible_region() {
    let w = workload(
        "w",
        r#"per-region = 3
regions = [{ region = "a", hard = true }, { region = "b", hard = true }, { region = "c", hard = true }]"#,
    );
    let snap = fed(
        vec![
            region("a", 9, Up, 0),
            region("b", 2, Up, 0),
            region("c", 9, Down, 0),
            region("d", 9, Up, 0),
        ],
        &[&w],
    );
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 3), ("b", 2)]);
    assert!(reasons(&p, "b").contains(&ShareReason::CapacityLimited { cap: 2 }));
    let f = p.failed.clone().expect("b is short");
    assert_eq!((f.unplaced, f.wanted), (1, 6));
    assert_stable(&snap, &w, &p);
}

#[test]
fn a_region_that_left_has_its_share_re_placed() {
    let w = workload("w", "count = 4");
    let mut snap = fed(vec![region("a", 20, Up, 0), region("b", 20, Up, 0)], &[&w]);
    settle(&mut snap, &w.id, &[("a", 2), ("b", 2)]);
    snap.remove_region("b");
    let p = run(&snap, &w, 1);
    assert_eq!(split_of(&p), vec![("a", 4)]);
    assert_eq!(
        reasons(&p, "b"),
        &[ShareReason::NotEligible {
            rule: "region removed".into()
        }][..]
    );
}

#[test]
fn split_refuses_a_behind_snapshot_a_bad_intent_and_the_wrong_workload() {
    let w = workload("w", "count = 1");
    let snap = fed(vec![region("a", 1, Up, 0)], &[&w]);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let eval = GlobalEval {
        id: EvalId(7),
        workload: w.id.clone(),
        snapshot_index: 6,
    };
    let e = split(&snap, &w, &eval, NOW, &mut rng).unwrap_err();
    assert_eq!(
        e,
        GlobalSplitError::SnapshotBehind {
            eval: EvalId(7),
            workload: w.id.clone(),
            need: 6,
            have: 5
        }
    );
    let eval = GlobalEval {
        snapshot_index: 5,
        ..eval
    };
    let mut bad = w.clone();
    bad.intent.count = Some(0);
    let e = split(&snap, &bad, &eval, NOW, &mut rng).unwrap_err();
    assert!(
        e.to_string().contains("acme/w has an invalid intent"),
        "{e}"
    );
    let other = workload("other", "count = 1");
    let e = split(&snap, &other, &eval, NOW, &mut rng).unwrap_err();
    assert!(matches!(e, GlobalSplitError::WrongWorkload { .. }), "{e}");
}

#[test]
fn verify_trims_a_stale_plan_to_the_room_left_and_refuses_what_changed() {
    let w = workload("w", "count = 10");
    let other = workload("other", "count = 8");
    let snap = fed(
        vec![region("a", 10, Up, 0), region("b", 10, Up, 0)],
        &[&w, &other],
    );
    let p = run(&snap, &w, 1);
    assert_eq!(p.total(), 10);
    // Meanwhile `other` committed 8 in a (unplaced yet) and 8 in b.
    let mut latest = snap.clone();
    latest.set_split(
        &other.id,
        BTreeMap::from([("a".to_owned(), 8), ("b".to_owned(), 8)]),
    );
    latest.set_index(6);
    let v = verify_global_plan(&latest, &p);
    assert_eq!(v.refresh_index, Some(6));
    assert_eq!(
        v.accepted,
        BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 2)])
    );
    assert!(matches!(
        v.rejected["a"],
        GlobalRejection::Trimmed {
            planned: 5,
            accepted: 2,
            cap: 2
        }
    ));
    latest.apply_verdict(&v, 7);
    assert_eq!(latest.split_of(&w.id).values().sum::<u32>(), 4);
    // The same plan again: its starting split is gone.
    let v = verify_global_plan(&latest, &p);
    assert!(v.accepted.is_empty());
    assert!(matches!(
        v.rejected["a"],
        GlobalRejection::SplitChanged {
            planned_from: 0,
            now: 2
        }
    ));
    // A new generation refuses a growing plan outright.
    let mut newer = snap.clone();
    let mut w2 = w.clone();
    w2.generation = 2;
    newer.upsert_workload(w2);
    let v = verify_global_plan(&newer, &p);
    assert!(v.accepted.is_empty());
    assert!(matches!(
        v.rejected["a"],
        GlobalRejection::WorkloadChanged {
            planned: 1,
            now: Some(2)
        }
    ));
    // A region that went down since refuses growth; a shrink is accepted.
    let mut down = snap.clone();
    let mut a = down.region("a").cloned().expect("a");
    a.health.state = Down;
    down.upsert_region(a);
    let v = verify_global_plan(&down, &p);
    assert_eq!(v.rejected["a"], GlobalRejection::RegionUnreachable(Down));
    assert_eq!(v.accepted["b"], p.shares["b"].instances);
    let mut shrink = snap.clone();
    settle(&mut shrink, &w.id, &[("a", 5), ("b", 5)]);
    let mut fewer = w.clone();
    fewer.intent.count = Some(2);
    shrink.upsert_workload(fewer.clone());
    let p = run(&shrink, &fewer, 1);
    let v = verify_global_plan(&shrink, &p);
    assert!(v.is_full(), "{v:?}");
    assert_eq!(v.accepted.values().sum::<u32>(), 2);
}
