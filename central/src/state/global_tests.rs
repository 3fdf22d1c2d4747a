//! Global workloads in the state machine: bad input refused with every
//! field named and nothing changed, plans verified and applied by the
//! state (the single applier), deletion as a tombstone until every region
//! dropped its monitor.

use std::collections::BTreeMap;

use strata_protocol::workload::MonitorSpec;
use strata_sched::global::{
    FreeHistogram, GlobalIntent, HealthAsOf, PoolCapacity, RegionCapacity, RegionHealth,
    RegionSummary,
};
use strata_sched::{Resources, Timestamp, WorkloadId};

use super::*;

pub(crate) const SIZE: Resources = Resources::new(50, 16 << 20);

/// A monitor spec of tenant `acme` (valid offline).
pub(crate) fn monitor(name: &str) -> MonitorSpec {
    MonitorSpec::from_json_str(
        &serde_json::json!({
            "name": name, "tenant": "acme",
            "artifact": {"sha256": "a".repeat(64), "size-bytes": 8},
            "selector": {"tenant": "acme", "device-globs": ["d*"]},
            "resources": {"memory-mib": 16, "cpu-millicores": 50},
        })
        .to_string(),
    )
    .unwrap()
}

pub(crate) fn intent(toml_text: &str) -> GlobalIntent {
    let text = format!(
        "size = {{ cpu-millicores = 50, memory-bytes = {} }}\n{toml_text}",
        16 << 20
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A summary of `region` with `free` nodes of room for one [`SIZE`] each
/// and `devices` of tenant `acme`, reported at `at` ms.
pub(crate) fn summary(region: &str, free: u32, devices: u32, at: i64) -> RegionSummary {
    let frees = vec![SIZE; free as usize];
    let n = u64::from(free);
    RegionSummary {
        region: region.to_owned(),
        health: HealthAsOf {
            state: RegionHealth::Ok,
            as_of: Timestamp::from_millis(at),
        },
        capacity: RegionCapacity {
            max_per_node: None,
            all: PoolCapacity {
                nodes_ready: free,
                total: Resources::new(50 * n, (16 << 20) * n),
                free: Resources::new(50 * n, (16 << 20) * n),
                largest_free: if free > 0 { SIZE } else { Resources::ZERO },
                ladder: vec![],
                free_nodes: FreeHistogram::build(&frees),
            },
            pools: BTreeMap::new(),
        },
        device_locality: BTreeMap::from([("acme".to_owned(), devices)]),
        placed: vec![],
        reported_at: Timestamp::from_millis(at),
    }
}

/// A state with regions `north` and `south` registered and reported.
pub(crate) fn two_regions() -> CentralState {
    let mut s = CentralState::default();
    for (i, name) in ["north", "south"].into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            s.apply(
                1 + i,
                Command::PutRegion {
                    name: name.into(),
                    hubs: vec![format!("127.0.0.1:{}", 7000 + i)],
                    now_ms: 0,
                }
            ),
            Outcome::Applied
        );
        assert_eq!(
            s.apply(
                3 + i,
                Command::ReportRegion {
                    summary: Box::new(summary(name, 4, 10, 1_000)),
                }
            ),
            Outcome::Applied
        );
    }
    s
}

/// Evaluates `s` (rng seeded with `seed`) and applies the first plan at
/// `index`; returns what applying it did.
fn plan_and_apply(s: &mut CentralState, index: u64, seed: u64) -> Outcome {
    let plans = crate::global::evaluate(
        s,
        1_000,
        index,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
    );
    let plan = plans
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("seed {seed}: no plan"));
    s.apply(
        index,
        Command::ApplyGlobalPlan {
            plan: Box::new(plan),
            now_ms: 1_000,
        },
    )
}

fn put(s: &mut CentralState, index: u64, name: &str, intent_toml: &str) -> Outcome {
    s.apply(
        index,
        Command::PutGlobal {
            monitor: Box::new(monitor(name)),
            intent: intent(intent_toml),
            scale: None,
            now_ms: 1_000,
        },
    )
}

#[test]
fn bad_global_workloads_name_every_field_and_change_nothing() {
    let mut s = two_regions();
    let before = s.clone();
    let mut m = monitor("w");
    m.placement.count = Some(3);
    m.resources.memory_mib = 0;
    let out = s.apply(
        10,
        Command::PutGlobal {
            monitor: Box::new(m),
            intent: intent("count = 0\nregions = [{ region = \"east\", hard = true }]"),
            scale: None,
            now_ms: 1,
        },
    );
    let Outcome::Refused { reason } = out else {
        panic!("accepted: {out:?}")
    };
    for field in [
        "resources.memory-mib",
        "placement.count",
        "global.count",
        "east",
    ] {
        assert!(reason.contains(field), "{field} missing in {reason}");
    }
    // Only the applied index moved.
    assert_eq!(s.global(), before.global());
    assert_eq!(s.changes(), before.changes());
}

#[test]
fn a_plan_is_verified_and_applied_by_the_state_and_a_retry_changes_nothing() {
    let mut s = two_regions();
    assert_eq!(
        put(&mut s, 10, "w", "count = 4\nspread = {}"),
        Outcome::Applied
    );
    assert_eq!(
        put(&mut s, 11, "w", "count = 4\nspread = {}"),
        Outcome::Unchanged
    );
    let plans =
        crate::global::evaluate(&s, 1_000, 1, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    assert_eq!(plans.len(), 1);
    let plan = plans[0].clone();
    assert_eq!(
        plan.split(),
        BTreeMap::from([("north".into(), 2), ("south".into(), 2)])
    );
    assert_eq!(
        s.apply(
            12,
            Command::ApplyGlobalPlan {
                plan: Box::new(plan.clone()),
                now_ms: 1_000
            }
        ),
        Outcome::Applied
    );
    let id = WorkloadId::new("acme", "w");
    let r = &s.global()[&id];
    assert_eq!(r.split, plan.split());
    assert_eq!(r.plans.len(), 1);
    assert_eq!(r.regions_ever.len(), 2);
    // Nothing more to do: the next evaluation proposes nothing.
    let again =
        crate::global::evaluate(&s, 1_000, 2, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    assert!(again.is_empty(), "{again:?}");
    // The regional monitor carries the region's share as its count.
    let north = r.regional_monitor("north").unwrap();
    assert_eq!(north.placement.count, Some(2));
    assert!(!north.placement.shard, "not autoscaled: not sharded");
    // State survives encode/decode, snapshot included.
    let back = CentralState::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.snapshot().split_of(&id), s.snapshot().split_of(&id));
}

#[test]
fn a_plan_made_for_an_older_generation_is_refused_on_apply() {
    let mut s = two_regions();
    put(&mut s, 10, "w", "count = 2");
    let old = crate::global::evaluate(&s, 1_000, 1, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    put(&mut s, 11, "w", "count = 3");
    let out = s.apply(
        12,
        Command::ApplyGlobalPlan {
            plan: Box::new(old[0].clone()),
            now_ms: 1_000,
        },
    );
    assert!(matches!(out, Outcome::Refused { .. }), "{out:?}");
    assert!(s.global()[&WorkloadId::new("acme", "w")].split.is_empty());
}

#[test]
fn a_region_that_stopped_reporting_keeps_its_share_and_gets_no_more() {
    let mut s = two_regions();
    put(&mut s, 10, "w", "count = 4\nspread = {}");
    plan_and_apply(&mut s, 11, 3);
    // North keeps reporting, south went silent for more than stale-after.
    let later = 1_000 + 60_000;
    s.apply(
        12,
        Command::ReportRegion {
            summary: Box::new(summary("north", 4, 10, later)),
        },
    );
    let plans =
        crate::global::evaluate(&s, later, 2, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3));
    for p in &plans {
        // South's 2 are held, not doubled in north.
        assert_eq!(p.split().get("south"), Some(&2), "{p:?}");
        assert_eq!(p.split().get("north"), Some(&2), "{p:?}");
    }
}

#[test]
fn deleted_workloads_are_tombstones_until_every_region_dropped_them() {
    let mut s = two_regions();
    put(
        &mut s,
        10,
        "w",
        "count = 2\nregions = [{ region = \"north\", hard = true }]",
    );
    plan_and_apply(&mut s, 11, 3);
    let id = WorkloadId::new("acme", "w");
    // North runs it; the reconciler submits nothing more.
    let mut running = BTreeMap::new();
    running.insert(
        id.clone(),
        s.global()[&id].regional_monitor("north").unwrap(),
    );
    let actual: crate::global::RegionMonitors = BTreeMap::from([
        ("north".to_owned(), Some(running.clone())),
        ("south".to_owned(), Some(BTreeMap::new())),
    ]);
    assert!(crate::global::reconcile(&s, &actual).is_empty());
    assert_eq!(
        s.apply(12, Command::DeleteGlobal { id: id.clone() }),
        Outcome::Applied
    );
    assert_eq!(
        s.apply(13, Command::ForgetGlobal { id: id.clone() }),
        Outcome::Applied,
        "forgetting is the reconciler's call, but the state allows it once deleted"
    );
    // Re-create and delete: while north still runs it, reconcile deletes it
    // there and does not forget; once gone, it forgets.
    put(
        &mut s,
        14,
        "w",
        "count = 2\nregions = [{ region = \"north\", hard = true }]",
    );
    plan_and_apply(&mut s, 15, 3);
    s.apply(16, Command::DeleteGlobal { id: id.clone() });
    let actions = crate::global::reconcile(&s, &actual);
    assert_eq!(
        actions,
        vec![crate::global::Action::Delete {
            region: "north".into(),
            id: id.clone()
        }]
    );
    let gone: crate::global::RegionMonitors = BTreeMap::from([
        ("north".to_owned(), Some(BTreeMap::new())),
        ("south".to_owned(), None),
    ]);
    // South unreachable but never had a share: forgetting needs only north.
    assert_eq!(
        crate::global::reconcile(&s, &gone),
        vec![crate::global::Action::Forget { id }]
    );
}

#[test]
fn regions_and_tenants_in_use_cannot_be_removed() {
    let mut s = two_regions();
    put(
        &mut s,
        10,
        "w",
        "count = 1\nregions = [{ region = \"south\", hard = true }]",
    );
    plan_and_apply(&mut s, 11, 3);
    assert!(matches!(
        s.apply(
            12,
            Command::DeleteRegion {
                name: "south".into()
            }
        ),
        Outcome::Refused { .. }
    ));
    assert_eq!(
        s.apply(
            13,
            Command::DeleteRegion {
                name: "north".into()
            }
        ),
        Outcome::Applied
    );
    s.apply(
        14,
        Command::PutTenant {
            name: "acme".into(),
            description: String::new(),
            now_ms: 0,
        },
    );
    assert!(matches!(
        s.apply(
            15,
            Command::DeleteTenant {
                name: "acme".into()
            }
        ),
        Outcome::Refused { .. }
    ));
}

use rand::SeedableRng as _;

fn scale(text: &str) -> strata_sched::scale::ScaleSpec {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn put_scaled(s: &mut CentralState, index: u64, intent_toml: &str, scale_toml: &str) -> Outcome {
    s.apply(
        index,
        Command::PutGlobal {
            monitor: Box::new(monitor("w")),
            intent: intent(intent_toml),
            scale: Some(scale(scale_toml)),
            now_ms: 1_000,
        },
    )
}

fn decision(generation: u64, desired: u32) -> ScaleRecord {
    ScaleRecord {
        index: 0,
        at_ms: 2_000,
        generation,
        current: 0,
        desired,
        reason: "surge".into(),
        total: Some(50.0),
        per_instance: Some(50.0),
        target: 10.0,
        recommended: desired,
        metric: "records-per-second".into(),
        forecast: Some(60.0),
        forecast_horizon_ms: Some(1_800_000),
        forecast_recommended: Some(6),
    }
}

fn load(id: &WorkloadId, metric: &str, step: i64, value: f64) -> Command {
    Command::RecordLoad {
        id: id.clone(),
        metric: metric.into(),
        step_ms: 1000,
        step,
        value,
    }
}

const RPS: &str = "min = 1\nmax = 4\nmetric = \"records-per-second\"\ntarget = 10.0";

#[test]
fn load_points_build_a_replicated_history_once_per_step() {
    let mut s = two_regions();
    put_scaled(&mut s, 10, "count = 1\nspread = {}", RPS);
    let id = WorkloadId::new("acme", "w");
    let m = "records-per-second";
    assert_eq!(s.apply(11, load(&id, m, 100, 5.0)), Outcome::Applied);
    assert_eq!(s.apply(12, load(&id, m, 101, 7.0)), Outcome::Applied);
    // A retried or late point changes nothing: one write per step.
    assert_eq!(s.apply(13, load(&id, m, 101, 9.0)), Outcome::Unchanged);
    assert_eq!(s.apply(14, load(&id, m, 99, 9.0)), Outcome::Unchanged);
    // Another metric than the spec's, a bad value, an unknown workload.
    assert!(matches!(
        s.apply(15, load(&id, "cpu", 102, 1.0)),
        Outcome::Refused { .. }
    ));
    assert!(matches!(
        s.apply(16, load(&id, m, 102, f64::NAN)),
        Outcome::Refused { .. }
    ));
    assert!(matches!(
        s.apply(17, load(&WorkloadId::new("acme", "x"), m, 102, 1.0)),
        Outcome::NotFound { .. }
    ));
    let h = s.global()[&id].load_history.clone().unwrap();
    assert_eq!((h.first_step, h.to_vec()), (100, vec![5.0, 7.0]));
    // It survives a snapshot, and every replica applying the same log
    // holds the same history.
    let back = CentralState::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.global()[&id].load_history, Some(h.clone()));
    // A spec change that keeps the metric keeps the history; another
    // metric drops it, as does deletion.
    put_scaled(
        &mut s,
        18,
        "count = 1\nspread = {}",
        "min = 1\nmax = 5\nmetric = \"records-per-second\"\ntarget = 20.0",
    );
    assert_eq!(s.global()[&id].load_history, Some(h));
    put_scaled(
        &mut s,
        19,
        "count = 1\nspread = {}",
        "min = 1\nmax = 5\nmetric = \"cpu\"\ntarget = 200.0",
    );
    assert_eq!(s.global()[&id].load_history, None);
    assert_eq!(s.apply(20, load(&id, "cpu", 5, 1.0)), Outcome::Applied);
    assert_eq!(
        s.apply(21, Command::DeleteGlobal { id: id.clone() }),
        Outcome::Applied
    );
    assert_eq!(s.global()[&id].load_history, None);
    assert!(matches!(
        s.apply(22, load(&id, "cpu", 6, 1.0)),
        Outcome::Refused { .. }
    ));
}

#[test]
fn the_history_stays_bounded_through_apply() {
    let mut s = two_regions();
    put_scaled(&mut s, 10, "count = 1\nspread = {}", RPS);
    let id = WorkloadId::new("acme", "w");
    let n = HISTORY_POINTS as i64 + 50;
    for step in 0..n {
        s.apply(
            11 + step as u64,
            load(&id, "records-per-second", step, step as f64),
        );
    }
    let h = s.global()[&id].load_history.clone().unwrap();
    assert_eq!(h.len(), HISTORY_POINTS);
    assert_eq!((h.first_step, h.next_step()), (50, n));
    let back = CentralState::decode(&s.encode()).unwrap();
    assert_eq!(back.global()[&id].load_history, Some(h));
}

#[test]
fn a_bad_scale_block_names_every_field_and_stores_nothing() {
    let mut s = two_regions();
    let out = put_scaled(
        &mut s,
        10,
        "count = 1",
        "min = 5\nmax = 2\nmetric = \"bogus\"\ntarget = 0.0",
    );
    let Outcome::Refused { reason } = out else {
        panic!("accepted: {out:?}")
    };
    for field in ["scale.max", "scale.metric", "scale.target"] {
        assert!(reason.contains(field), "{field} missing in {reason}");
    }
    assert!(s.global().is_empty());
    let out = put_scaled(
        &mut s,
        11,
        "per-region = 1",
        "min = 1\nmax = 2\nmetric = \"records-per-second\"\ntarget = 10.0",
    );
    assert!(
        matches!(&out, Outcome::Refused { reason } if reason.contains("per-region")),
        "{out:?}"
    );
}

#[test]
fn scale_decisions_change_the_count_the_split_divides_and_are_recorded() {
    let mut s = two_regions();
    let spec = "min = 1\nmax = 4\nmetric = \"records-per-second\"\ntarget = 10.0";
    // The count starts inside the bounds.
    assert_eq!(
        put_scaled(&mut s, 10, "count = 9\nspread = {}", spec),
        Outcome::Applied
    );
    let id = WorkloadId::new("acme", "w");
    assert_eq!(s.global()[&id].scaled, Some(4));
    assert_eq!(
        s.apply(
            11,
            Command::ScaleGlobal {
                id: id.clone(),
                record: decision(1, 2)
            }
        ),
        Outcome::Applied
    );
    let r = &s.global()[&id];
    assert_eq!(r.scaled, Some(2));
    assert_eq!(r.workload().intent.count, Some(2));
    assert_eq!(
        r.scale_history
            .back()
            .map(|d| (d.current, d.desired, d.index)),
        Some((4, 2, 11))
    );
    // The splitter divides the new count.
    plan_and_apply(&mut s, 12, 1);
    assert_eq!(s.global()[&id].split.values().sum::<u32>(), 2);
    // Each region's share of an autoscaled workload is sharded.
    let r = &s.global()[&id];
    for region in r.split.keys().filter(|g| r.split[*g] > 0) {
        let m = r.regional_monitor(region).unwrap();
        assert!(m.placement.shard, "{region}");
    }
    // Clamped to max; the same count again changes nothing; a decision
    // for an older generation is refused.
    s.apply(
        13,
        Command::ScaleGlobal {
            id: id.clone(),
            record: decision(1, 40),
        },
    );
    assert_eq!(s.global()[&id].scaled, Some(4));
    assert_eq!(
        s.apply(
            14,
            Command::ScaleGlobal {
                id: id.clone(),
                record: decision(1, 4)
            }
        ),
        Outcome::Unchanged
    );
    put_scaled(
        &mut s,
        15,
        "count = 1\nspread = {}",
        "min = 1\nmax = 3\nmetric = \"records-per-second\"\ntarget = 10.0",
    );
    assert_eq!(
        s.global()[&id].scaled,
        Some(3),
        "kept, clamped into the new bounds"
    );
    assert!(matches!(
        s.apply(
            16,
            Command::ScaleGlobal {
                id,
                record: decision(1, 1)
            }
        ),
        Outcome::Refused { .. }
    ));
}
