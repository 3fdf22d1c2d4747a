//! Pressure rebalancing: hysteresis, lowest priority first, budget,
//! cooldown, counts by reason.

mod common;

use std::time::Duration;

use common::*;
use strata_sched::*;

fn cfg() -> PressureConfig {
    PressureConfig {
        enabled: true,
        enter_percent: 90,
        leave_percent: 70,
        sustain: Duration::from_secs(30),
        moves_per_window: 2,
        window: Duration::from_secs(300),
        cooldown: Duration::from_secs(600),
        sample_every: Duration::from_secs(5),
    }
}

fn at(s: u64) -> Timestamp {
    NOW.plus(Duration::from_secs(s))
}

/// Region with `hot` at `cpu_pct` measured CPU, running three instances of
/// different priority.
fn region(cpu_pct: u64) -> ClusterSnapshot {
    let mut low = wl("low", 200, 64, "");
    low.priority = 10;
    let mut mid = wl("mid", 200, 64, "");
    mid.priority = 50;
    let mut high = wl("high", 200, 64, "");
    high.priority = 90;
    let mut per = wl("per", 200, 64, "per-node = true");
    per.priority = 0;
    per.device_group = Some("g".into());
    let mut hot = node("hot", 1000, 1024).carries("g");
    hot.usage = Resources::new(cpu_pct * 10, 100 * MIB);
    snap(
        vec![hot, node("cool", 1000, 1024)],
        vec![low.clone(), mid.clone(), high.clone(), per.clone()],
        vec![
            alloc(&low, 1, 0, "hot"),
            alloc(&mid, 2, 0, "hot"),
            alloc(&high, 3, 0, "hot"),
            alloc(&per, 4, 0, "hot"),
        ],
    )
}

#[test]
fn only_sustained_pressure_moves_the_lowest_priority_movable_instance() {
    let mut r = Rebalancer::new(cfg());
    let hot = region(95);
    assert!(r.observe(&hot, at(0)).is_empty(), "just got hot");
    assert!(r.observe(&hot, at(20)).is_empty(), "not sustained yet");
    // A dip below enter restarts the clock.
    assert!(r.observe(&region(85), at(25)).is_empty());
    assert!(r.observe(&hot, at(30)).is_empty());
    assert!(r.observe(&hot, at(50)).is_empty());
    let moves = r.observe(&hot, at(60));
    // 95 % → below 70 % needs 250 millicores: low (200) and mid (200).
    // The per-node instance (priority 0) cannot move.
    assert_eq!(
        moves,
        vec![
            Rebalance {
                workload: WorkloadId::new("acme", "low"),
                node: NodeId::from("hot"),
                migrate: vec![AllocId(1)],
                reason: MoveReason::CpuPressure,
            },
            Rebalance {
                workload: WorkloadId::new("acme", "mid"),
                node: NodeId::from("hot"),
                migrate: vec![AllocId(2)],
                reason: MoveReason::CpuPressure,
            },
        ]
    );
    assert_eq!(r.counts().moves.get(&MoveReason::CpuPressure), Some(&2));
    let ev = moves[0].evaluation(7, hot.index());
    assert_eq!(ev.migrate, vec![AllocId(1)]);
    assert_eq!(ev.trigger, Trigger::Pressure(NodeId::from("hot")));
    // And the scheduler moves it to the cool node.
    let plan = schedule(&hot, &ev, at(60), &mut rng(1)).unwrap();
    assert_eq!(placed(&plan), vec!["cool"]);
}

#[test]
fn hysteresis_budget_and_cooldown_prevent_flapping() {
    let mut r = Rebalancer::new(cfg());
    let hot = region(95);
    r.observe(&hot, at(0));
    assert_eq!(r.observe(&hot, at(30)).len(), 2, "budget of 2 spent");
    assert!(r.is_pressured(&NodeId::from("hot")));
    // Still hot: waits `sustain` after shedding, then the budget is gone.
    assert!(r.observe(&hot, at(40)).is_empty());
    assert!(r.observe(&hot, at(61)).is_empty());
    assert_eq!(r.counts().deferred_budget, 1);
    // Between the thresholds it stays pressured; below leave it calms.
    assert!(r.observe(&region(80), at(70)).is_empty());
    assert!(r.is_pressured(&NodeId::from("hot")));
    assert!(r.observe(&region(60), at(80)).is_empty());
    assert!(!r.is_pressured(&NodeId::from("hot")));
    // After the window the budget is back, but the moved slots are still in
    // cooldown: only "high" is left to move.
    r.observe(&hot, at(400));
    let moves = r.observe(&hot, at(430));
    assert_eq!(moves.len(), 1);
    assert_eq!(moves[0].workload, WorkloadId::new("acme", "high"));
    // After the cooldown the low-priority slot may move again.
    r.observe(&region(60), at(1000));
    r.observe(&hot, at(1100));
    let moves = r.observe(&hot, at(1130));
    assert_eq!(moves[0].workload, WorkloadId::new("acme", "low"));
}

#[test]
fn memory_pressure_is_its_own_reason_and_config_is_validated() {
    let mut s = region(10);
    let mut n = s.node(&NodeId::from("hot")).unwrap().clone();
    n.usage = Resources::new(100, 1000 * MIB);
    s.upsert_node(n);
    let mut r = Rebalancer::new(cfg());
    r.observe(&s, at(0));
    let moves = r.observe(&s, at(30));
    assert_eq!(moves[0].reason, MoveReason::MemoryPressure);
    let bad = PressureConfig {
        enter_percent: 70,
        leave_percent: 80,
        ..cfg()
    };
    let e = bad.validate().unwrap_err();
    assert_eq!(e[0].field, "leave-percent");
    let parsed: PressureConfig = toml::from_str("sustain = \"1m\"\nmoves-per-window = 9").unwrap();
    assert_eq!(parsed.sustain, Duration::from_secs(60));
    assert_eq!(parsed.leave_percent, 75);
    parsed.validate().unwrap();
}

#[test]
fn a_migration_never_lands_on_a_hot_node_nor_one_it_would_make_hot() {
    let hot = region(95);
    let mut r = Rebalancer::new(cfg());
    r.observe(&hot, at(0));
    let moves = r.observe(&hot, at(30));
    let mut ev = moves[0].evaluation(7, hot.index());
    // "cool" at 85 % CPU: the 200 millicores of "low" would take it to
    // 105 % of its capacity, above enter-percent (90).
    let mut warm = hot.clone();
    let mut c = warm.node(&NodeId::from("cool")).unwrap().clone();
    c.usage = Resources::new(850, 0);
    warm.upsert_node(c);
    ev.headroom = Some(Headroom {
        hot: r.hot(),
        below_percent: 90,
    });
    let plan = schedule(&warm, &ev, at(30), &mut rng(3)).unwrap();
    assert!(placed(&plan).is_empty(), "{plan:?}");
    assert_eq!(plan.not_migrated.len(), 1);
    assert_eq!(plan.not_migrated[0].0, AllocId(1));
    assert_eq!(
        plan.not_migrated[0].1.filtered,
        [
            ("moving away from this node".to_owned(), 1),
            ("under pressure, or would be with it".to_owned(), 1)
        ]
        .into()
    );
    assert!(plan.failed.is_none(), "not a failure of the workload");
    assert!(plan.nodes.values().all(|n| n.stop.is_empty()), "it stays");
    // The move is given back to the budget, counted as having no target.
    r.not_moved(&WorkloadId::new("acme", "low"), 0, MoveReason::CpuPressure);
    assert_eq!(r.counts().no_target, 1);
    assert_eq!(r.counts().moves.get(&MoveReason::CpuPressure), Some(&1));
    // At 60 % it fits (60 + 20 < 90) and the move is made.
    let mut c = warm.node(&NodeId::from("cool")).unwrap().clone();
    c.usage = Resources::new(600, 0);
    warm.upsert_node(c);
    let plan = schedule(&warm, &ev, at(30), &mut rng(3)).unwrap();
    assert_eq!(placed(&plan), vec!["cool"]);
    // A node that is hot itself (in `hot`) is never a target, however
    // much room its measurement shows.
    ev.headroom = Some(Headroom {
        hot: [NodeId::from("hot"), NodeId::from("cool")].into(),
        below_percent: 90,
    });
    let plan = schedule(&warm, &ev, at(30), &mut rng(3)).unwrap();
    assert_eq!(plan.not_migrated.len(), 1);
}

#[test]
fn instances_the_caller_pins_are_not_movable() {
    let hot = region(95);
    let mut r = Rebalancer::new(cfg());
    let pinned = |w: &Workload, _: &Allocation| w.id.name != "low";
    r.observe_with(&hot, at(0), pinned);
    let moves = r.observe_with(&hot, at(30), pinned);
    let names: Vec<&str> = moves.iter().map(|m| m.workload.name.as_str()).collect();
    // (in workload order) 250 millicores to shed: mid, then high.
    assert_eq!(
        names,
        vec!["high", "mid"],
        "low is skipped, the next ones go"
    );
    let mut r = Rebalancer::new(cfg());
    r.observe_with(&hot, at(0), |_, _| false);
    assert!(r.observe_with(&hot, at(30), |_, _| false).is_empty());
    assert_eq!(r.counts().nothing_movable, 1);
    assert_eq!(r.pressured(), 1);
}
