//! Rebalancing under pressure as command lists: measured use fed as
//! heartbeats would (`handle_usage`), time moved by hand through
//! `handle_tick`, plans applied through the real state machine.
//!
//! The region: edges e1..e3 offering 1000 millicores and 1 GiB each; two
//! monitors of 100 millicores that prefer e1 — `low` (priority 10) and
//! `high` (priority 90). Pressure: hot at 90 %, calm below 75 %, sustained
//! 30 s, sampled every 5 s, one move per 5 minutes in the region.

use std::time::Duration;

use strata_sched::{PressureConfig, Resources};

use super::*;

const SECOND: i64 = 1_000;

fn pressure() -> PressureConfig {
    PressureConfig {
        enabled: true,
        enter_percent: 90,
        leave_percent: 75,
        sustain: Duration::from_secs(30),
        moves_per_window: 1,
        window: Duration::from_secs(300),
        cooldown: Duration::from_secs(600),
        sample_every: Duration::from_secs(5),
    }
}

fn prioritized(name: &str, priority: u8, placement: serde_json::Value) -> MonitorSpec {
    let mut s = spec(name, placement);
    s.priority = priority;
    s
}

fn prefer_e1() -> serde_json::Value {
    serde_json::json!({"count": 1, "affinity": [{"label": "node", "value": "e1", "weight": 100}]})
}

/// `low` and `high` running on e1; every edge at `cpu` measured millicores
/// (e1 at `e1_cpu`).
fn region(e1_cpu: u64, cpu: u64, high: MonitorSpec) -> World {
    let mut wd = World::new(3);
    wd.core = SchedulerCore::new(CoreConfig {
        pressure: pressure(),
        ..cfg()
    });
    wd.lead();
    wd.apply(Fsm::PutWorkload {
        spec: Box::new(prioritized("low", 10, prefer_e1())),
        now_ms: wd.now,
    });
    wd.apply(Fsm::PutWorkload {
        spec: Box::new(high),
        now_ms: wd.now,
    });
    wd.settle();
    assert_eq!(wd.running("low"), vec![("e1".to_owned(), 0)]);
    assert_eq!(wd.running("high"), vec![("e1".to_owned(), 0)]);
    let both = vec![wd.instance("low"), wd.instance("high")];
    wd.report("e1", 1000, both);
    wd.core.take_commands();
    wd.usage("e1", e1_cpu);
    for e in ["e2", "e3"] {
        wd.usage(e, cpu);
    }
    wd
}

impl World {
    /// `name`'s instance, reported running.
    fn instance(&self, name: &str) -> InstanceStatus {
        let generation = self
            .state
            .sched()
            .allocs_of(&w(name))
            .map(|r| r.alloc.generation)
            .max()
            .unwrap_or(0);
        InstanceStatus {
            tenant: "acme".into(),
            name: name.into(),
            generation,
            state: "running".into(),
            ..InstanceStatus::default()
        }
    }

    /// A heartbeat from `edge` measuring `cpu` millicores in use.
    fn usage(&mut self, edge: &str, cpu: u64) {
        self.core
            .handle_usage(edge, Resources::new(cpu, 100 * fsm::sched_view::MIB));
    }

    /// `secs` later: a tick, then every ready evaluation.
    fn after(&mut self, secs: i64) -> Vec<Command> {
        self.now += secs * SECOND;
        self.core.handle_tick(self.now);
        let mut cmds = self.core.take_commands();
        cmds.extend(self.evaluate());
        cmds
    }

    /// Samples every 5 s for `secs`; every command.
    fn sample_for(&mut self, secs: i64) -> Vec<Command> {
        (0..secs / 5).flat_map(|_| self.after(5)).collect()
    }
}

fn observed(cmds: &[Command]) -> Vec<&Observation> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Observe(
                o @ (Observation::Migrated { .. } | Observation::MigrationHeld { .. }),
            ) => Some(o),
            _ => None,
        })
        .collect()
}

fn pressured(cmds: &[Command]) -> Option<u64> {
    cmds.iter().rev().find_map(|c| match c {
        Command::Observe(Observation::Pressured(n)) => Some(*n),
        _ => None,
    })
}

#[test]
fn sustained_pressure_moves_the_lowest_priority_instance_once() {
    let mut wd = region(950, 100, prioritized("high", 90, prefer_e1()));
    // Hot from the first sample on; nothing moves before 30 s of it.
    let cmds = wd.sample_for(30);
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(pressured(&cmds), Some(0), "rising, not yet pressured");
    let cmds = wd.after(5);
    assert_eq!(pressured(&cmds), Some(1));
    assert_eq!(evaluated(&cmds), vec!["pressure"]);
    // 950 → below 750 needs 200 millicores: low's 100 and high's 100. The
    // budget allows one move: low goes, high is deferred (counted).
    assert_eq!(
        observed(&cmds),
        vec![&Observation::MigrationHeld {
            reason: "budget",
            count: 1
        }]
    );
    let p = proposals(&cmds);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].workload.clone(), p[0].trigger.as_str()),
        (w("low"), "pressure")
    );
    let placed: Vec<_> = p[0].nodes.values().flat_map(|n| &n.place).collect();
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0].placement.reason, PlaceReason::MigratePressure);
    assert_ne!(placed[0].node.0, "e1");
    let stops: Vec<_> = p[0].nodes.values().flat_map(|n| &n.stop).collect();
    assert_eq!(
        stops[0].reason,
        StopReason::Replaced { by: placed[0].id },
        "the old instance stops only with its replacement"
    );
    wd.commit();
    // Counted once the move is in the log.
    assert_eq!(
        observed(&wd.core.take_commands()),
        vec![&Observation::Migrated {
            reason: "cpu-pressure"
        }]
    );
    let low = wd.running("low");
    assert_eq!(low.len(), 1);
    assert_ne!(low[0].0, "e1");
    assert_eq!(wd.running("high"), vec![("e1".to_owned(), 0)]);
    let migrated = wd
        .state
        .events()
        .page(1, 100)
        .events
        .into_iter()
        .filter(|e| e.kind == EventKind::AllocMigrated)
        .count();
    assert_eq!(migrated, 1, "the region's event log says so");

    // Still hot (measured use lags the move): after another `sustain` the
    // budget (one move per window) is still spent, so high stays, counted.
    let cmds = wd.sample_for(30);
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(
        observed(&cmds),
        vec![&Observation::MigrationHeld {
            reason: "budget",
            count: 1
        }]
    );
    assert_eq!(wd.running("high"), vec![("e1".to_owned(), 0)]);
    // Between the watermarks it stays pressured; below leave it calms.
    wd.usage("e1", 800);
    assert_eq!(pressured(&wd.after(5)), Some(1));
    wd.usage("e1", 700);
    assert_eq!(pressured(&wd.after(5)), Some(0));
}

#[test]
fn a_brief_spike_moves_nothing() {
    let mut wd = region(950, 100, prioritized("high", 90, prefer_e1()));
    let mut cmds = wd.sample_for(25);
    // One calm sample restarts the clock.
    wd.usage("e1", 500);
    cmds.extend(wd.after(5));
    wd.usage("e1", 950);
    cmds.extend(wd.sample_for(25));
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    assert!(observed(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(pressured(&cmds), Some(0));
    assert_eq!(wd.running("low"), vec![("e1".to_owned(), 0)]);
}

#[test]
fn a_target_that_is_or_would_become_hot_is_refused() {
    // e2 and e3 at 850: 100 more millicores would take them to 95 %.
    let mut wd = region(950, 850, prioritized("high", 90, prefer_e1()));
    let mut cmds = wd.sample_for(35);
    assert_eq!(evaluated(&cmds), vec!["pressure"]);
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(
        observed(&cmds),
        vec![
            &Observation::MigrationHeld {
                reason: "budget",
                count: 1
            },
            &Observation::MigrationHeld {
                reason: "no-target",
                count: 1
            }
        ]
    );
    // e3 calms down. The failed move gave its budget back; the next shed
    // (`sustain` later) tries the lowest priority again, and goes to e3.
    wd.usage("e3", 100);
    cmds = wd.sample_for(30);
    assert_eq!(
        observed(&cmds),
        vec![&Observation::MigrationHeld {
            reason: "budget",
            count: 1
        }]
    );
    assert_eq!(proposals(&cmds).len(), 1);
    wd.commit();
    assert_eq!(wd.running("low"), vec![("e3".to_owned(), 0)]);
    assert_eq!(wd.running("high"), vec![("e1".to_owned(), 0)]);
}

#[test]
fn pinned_instances_stay_and_disabled_rebalancing_only_measures() {
    // low is pinned to e1 by `target`: not movable, so high (the only
    // movable one) goes, whatever its priority.
    let mut wd = World::new(3);
    wd.core = SchedulerCore::new(CoreConfig {
        pressure: pressure(),
        ..cfg()
    });
    wd.lead();
    let mut low = prioritized("low", 10, serde_json::json!({"count": 1}));
    low.target = strata_protocol::workload::Placement::Node("e1".into());
    wd.apply(Fsm::PutWorkload {
        spec: Box::new(low),
        now_ms: wd.now,
    });
    wd.apply(Fsm::PutWorkload {
        spec: Box::new(prioritized("high", 90, prefer_e1())),
        now_ms: wd.now,
    });
    wd.settle();
    let both = vec![wd.instance("low"), wd.instance("high")];
    wd.report("e1", 1000, both);
    wd.core.take_commands();
    wd.usage("e1", 950);
    let cmds = wd.sample_for(35);
    assert_eq!(proposals(&cmds).len(), 1);
    assert_eq!(proposals(&cmds)[0].workload, w("high"));
    wd.commit();
    assert_eq!(wd.running("low"), vec![("e1".to_owned(), 0)]);

    // Disabled: pressure is measured (the gauge) but nothing moves.
    let mut wd = World::new(3);
    wd.core = SchedulerCore::new(CoreConfig {
        pressure: PressureConfig {
            enabled: false,
            ..pressure()
        },
        ..cfg()
    });
    wd.lead();
    wd.apply(Fsm::PutWorkload {
        spec: Box::new(prioritized("low", 10, prefer_e1())),
        now_ms: wd.now,
    });
    wd.settle();
    let low = vec![wd.instance("low")];
    wd.report("e1", 1000, low);
    wd.usage("e1", 950);
    let cmds = wd.sample_for(60);
    assert_eq!(pressured(&cmds), Some(1));
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
}

#[test]
fn a_move_whose_plan_never_commits_is_not_counted() {
    let mut wd = region(950, 100, prioritized("high", 90, prefer_e1()));
    let cmds = wd.sample_for(35);
    let p = proposals(&cmds);
    assert_eq!(p.len(), 1);
    let (workload, eval) = (p[0].workload.clone(), p[0].eval);
    // The proposal's fate is unknown (a timeout): the core rebuilds from
    // the applied state, where the replacement is not.
    wd.proposed.clear();
    wd.core.handle_propose_failed(&workload, eval);
    assert_eq!(wd.core.take_commands(), vec![Command::Rebuild]);
    wd.core.handle_rebuild(Rebuild::of(&wd.state));
    let cmds = wd.core.take_commands();
    assert!(observed(&cmds).is_empty(), "{cmds:?}");
    wd.settle();
    assert_eq!(wd.running("low"), vec![("e1".to_owned(), 0)]);
    // Its budget and cooldown came back: the next shed moves low again,
    // not high.
    let cmds = wd.sample_for(30);
    let p = proposals(&cmds);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].workload, w("low"));
}

#[test]
fn a_new_leader_starts_calm_and_measures_again() {
    let mut wd = region(950, 100, prioritized("high", 90, prefer_e1()));
    let cmds = wd.sample_for(30);
    assert!(proposals(&cmds).is_empty());
    // Leadership moves just before e1 would shed: heartbeats were soft
    // state, so the new leader knows nothing of the last 30 s.
    wd.core.handle_leadership_lost();
    wd.lead();
    wd.settle();
    let cmds = wd.sample_for(10);
    assert!(
        pressured(&cmds).is_none(),
        "nothing measured yet, nothing sampled: {cmds:?}"
    );
    wd.usage("e1", 950);
    wd.usage("e2", 100);
    wd.usage("e3", 100);
    let cmds = wd.sample_for(30);
    assert!(
        proposals(&cmds).is_empty(),
        "sustain counts again: {cmds:?}"
    );
    assert_eq!(pressured(&cmds), Some(0));
    let cmds = wd.after(5);
    assert_eq!(proposals(&cmds).len(), 1);
    assert_eq!(proposals(&cmds)[0].workload, w("low"));
}

#[test]
fn a_pressured_edge_takes_nothing_until_it_has_calmed_down() {
    // Every edge hot and sustained: e2 and e3 are pressured too (nothing
    // runs there to shed), so e1's low has nowhere to go.
    let mut wd = region(950, 950, prioritized("high", 90, prefer_e1()));
    let cmds = wd.sample_for(35);
    assert_eq!(pressured(&cmds), Some(3));
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    let held: Vec<&Observation> = observed(&cmds);
    assert!(
        held.contains(&&Observation::MigrationHeld {
            reason: "no-target",
            count: 1
        }) && held.contains(&&Observation::MigrationHeld {
            reason: "nothing-movable",
            count: 2
        }),
        "{held:?}"
    );
    // e2 drops to 76 %: still pressured (above leave-percent, 75), so still
    // no target although 76 + 10 stays below 90.
    wd.usage("e2", 760);
    let cmds = wd.sample_for(30);
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(pressured(&cmds), Some(3));
    // Each pressured edge is looked at once per `sustain`, so each held
    // move is counted once, not once per sample (high over the budget,
    // e2 and e3 with nothing to move, low with nowhere to go).
    assert_eq!(
        observed(&cmds),
        vec![
            &Observation::MigrationHeld {
                reason: "budget",
                count: 1
            },
            &Observation::MigrationHeld {
                reason: "nothing-movable",
                count: 2
            },
            &Observation::MigrationHeld {
                reason: "no-target",
                count: 1
            }
        ]
    );
    // Calm at 70 %: the next shed moves low there.
    wd.usage("e2", 700);
    let cmds = wd.sample_for(30);
    assert_eq!(pressured(&cmds), Some(2));
    let p = proposals(&cmds);
    assert_eq!(p.len(), 1, "{cmds:?}");
    wd.commit();
    assert_eq!(wd.running("low"), vec![("e2".to_owned(), 0)]);
}
