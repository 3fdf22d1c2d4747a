//! Command-list tests of [`Lifecycle`] ported from the local scheduler:
//! admission, preemption, reconcile, backoff, crash loops, restart policy,
//! resizing. Events in, commands and phases out; modules are answered at
//! once by the harness (`module_tests.rs` covers them), leases are in
//! `lease_tests.rs`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::workload::{RestartMode, RestartPolicy, RuntimeKind};

use super::test_harness::{core, drain, key, phase, running, set, start, want};
use super::*;
use crate::workload::command::{Command, Event, StopReason};
use crate::workload::model::{millicores_from_fuel, InstanceUsage, NodeUsage, MIB};
use crate::workload::resize::Dimension;

#[test]
fn admits_in_priority_order_and_refuses_with_reason() {
    let mut s = core();
    let (a, b, c) = (
        want("a", 10, 128, 100),
        want("b", 90, 128, 100),
        want("c", 10, 64, 100),
    );
    s.handle_desired(set(&[a.clone(), b.clone(), c.clone()]), 0);
    // b first (priority 90), then a and c by key; c does not fit (equal priority, no preemption).
    assert_eq!(drain(&mut s), vec![start(&b, 0), start(&a, 0)]);
    assert_eq!(
        phase(&s, "c"),
        Phase::Refused(Refusal::InsufficientMemory {
            need_mib: 64,
            free_mib: 0,
            capacity_mib: 256
        })
    );
    assert_eq!(phase(&s, "a"), Phase::Starting);
    assert_eq!(s.instance(&key("a")).unwrap().admitted_at_ms, Some(0));
    assert_eq!(s.instance(&key("c")).unwrap().admitted_at_ms, None);
    s.handle_started(&key("a"), 1, 5);
    assert_eq!(phase(&s, "a"), Phase::Running);
    assert_eq!(s.reserved(), Budget::new(256, 200));
}

#[test]
fn micro_vm_is_refused_as_unknown_runtime() {
    let mut s = core();
    let mut vm = want("vm", 50, 16, 10);
    vm.runtime = RuntimeKind::MicroVm;
    s.handle_desired(set(&[vm]), 0);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(
        phase(&s, "vm"),
        Phase::Refused(Refusal::UnknownRuntime {
            runtime: RuntimeKind::MicroVm,
            node: "edge-1".into()
        })
    );
}

#[test]
fn higher_priority_preempts_lowest_newest_and_victim_returns_when_room_frees() {
    let (old, new, mid) = (
        want("old", 10, 100, 100),
        want("new", 10, 100, 100),
        want("mid", 20, 56, 100),
    );
    let mut s = running(&[old.clone(), mid.clone()]);
    s.handle_desired(set(&[old.clone(), mid.clone(), new.clone()]), 1);
    assert_eq!(drain(&mut s), vec![start(&new, 0)]);
    s.handle_started(&key("new"), 1, 1);

    let vip = want("vip", 80, 100, 100);
    let all = vec![old.clone(), mid.clone(), new.clone(), vip.clone()];
    s.handle_desired(set(&all), 2);
    assert_eq!(
        drain(&mut s),
        vec![
            Command::Stop {
                key: key("new"),
                reason: StopReason::Preempted {
                    by: key("vip"),
                    by_priority: 80,
                    priority: 10,
                    shortfall: Budget::new(100, 0)
                },
            },
            start(&vip, 0),
        ]
    );
    assert_eq!(phase(&s, "new"), Phase::Preempted { by: key("vip") });
    assert_eq!(
        phase(&s, "old"),
        Phase::Running,
        "older of equal priority is kept"
    );
    assert_eq!(
        phase(&s, "mid"),
        Phase::Running,
        "higher priority victim not needed"
    );

    // The preempted instance's late exit report changes nothing.
    s.handle_exited(
        &key("new"),
        1,
        ExitKind::Completed,
        3,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    assert_eq!(phase(&s, "new"), Phase::Preempted { by: key("vip") });

    // vip removed: its room goes back to the preempted instance.
    s.handle_desired(set(&[old, mid, new.clone()]), 4);
    assert_eq!(
        drain(&mut s),
        vec![
            Command::Stop {
                key: key("vip"),
                reason: StopReason::Removed
            },
            start(&new, 0)
        ]
    );
}

#[test]
fn reconcile_leaves_unchanged_replaces_changed_stops_removed() {
    let (keep, change, gone) = (
        want("keep", 50, 32, 100),
        want("change", 50, 32, 100),
        want("gone", 50, 32, 100),
    );
    let mut s = running(&[keep.clone(), change.clone(), gone.clone()]);
    // Same desired set again (as after a reconnect): nothing at all happens.
    s.handle_desired(set(&[keep.clone(), change.clone(), gone.clone()]), 10);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(phase(&s, "keep"), Phase::Running);

    let mut changed = change.clone();
    changed.generation = 2;
    let mut rehashed = keep.clone();
    rehashed.artifact_sha256 = "cd".repeat(32);
    s.handle_desired(set(&[keep.clone(), changed.clone()]), 20);
    assert_eq!(
        drain(&mut s),
        vec![
            Command::Stop {
                key: key("gone"),
                reason: StopReason::Removed
            },
            Command::Stop {
                key: key("change"),
                reason: StopReason::Replaced {
                    old_generation: 1,
                    new_generation: 2
                }
            },
            start(&changed, 0),
        ]
    );
    assert_eq!(phase(&s, "keep"), Phase::Running);
    assert!(s.instance(&key("gone")).is_none());

    // Same generation but a new artifact hash is a change too.
    s.handle_desired(set(&[rehashed.clone(), changed]), 30);
    assert_eq!(
        drain(&mut s),
        vec![
            Command::Stop {
                key: key("keep"),
                reason: StopReason::Replaced {
                    old_generation: 1,
                    new_generation: 1
                }
            },
            start(&rehashed, 0),
        ]
    );
}

#[test]
fn backoff_grows_and_caps_across_restarts() {
    let seed = 0x5eed_u64;
    println!("seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut r = want("flaky", 50, 16, 10);
    r.restart = RestartPolicy {
        mode: RestartMode::Always,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
    };
    // Crash-loop detection off for this test: only the backoff is observed.
    let cfg = LifecycleConfig {
        crash_loop_failures: 1000,
        ..LifecycleConfig::default()
    };
    let mut s = Lifecycle::new(super::test_harness::node(), cfg, 0);
    s.handle_desired(set(&[r.clone()]), 0);
    drain(&mut s);
    let mut now = 0;
    let mut delays = Vec::new();
    for attempt in 1..=8u32 {
        s.handle_started(&r.key, 1, now);
        now += 10; // crashes right away: never stable
        s.handle_exited(
            &r.key,
            1,
            ExitKind::Trap("unreachable".into()),
            now,
            &mut rng,
        );
        let Phase::Backoff {
            until_ms,
            attempt: a,
            ..
        } = phase(&s, "flaky")
        else {
            panic!("seed {seed}: not in backoff")
        };
        assert_eq!(a, attempt);
        assert_eq!(s.poll_timeout(), Some(until_ms));
        delays.push(until_ms - now);
        s.handle_timeout(until_ms - 1);
        assert_eq!(drain(&mut s), vec![], "seed {seed}: restarted early");
        s.handle_timeout(until_ms);
        assert_eq!(drain(&mut s), vec![start(&r, attempt)]);
        now = until_ms;
    }
    let bounds = [
        (50, 100),
        (100, 200),
        (200, 400),
        (400, 800),
        (500, 1000),
        (500, 1000),
        (500, 1000),
        (500, 1000),
    ];
    for (i, (d, (lo, hi))) in delays.iter().zip(bounds).enumerate() {
        assert!(
            (lo..=hi).contains(d),
            "seed {seed}: attempt {} delay {d} outside [{lo}, {hi}]: {delays:?}",
            i + 1
        );
    }
    assert_eq!(s.instance(&r.key).unwrap().restarts, 8);

    // A stable run (>= stable-after-ms) starts the ladder again.
    s.handle_started(&r.key, 1, now);
    now += 60_000;
    s.handle_exited(&r.key, 1, ExitKind::Timeout, now, &mut rng);
    assert!(
        matches!(phase(&s, "flaky"), Phase::Backoff { attempt: 1, .. }),
        "seed {seed}"
    );
}

#[test]
fn crash_loop_after_five_failures_in_a_minute() {
    let seed = 7;
    println!("seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = want("bomb", 50, 64, 10);
    let waiting = want("waiting", 50, 200, 10);
    let mut s = running(&[r.clone(), waiting.clone()]);
    assert!(matches!(phase(&s, "waiting"), Phase::Refused(_)));
    let mut now = 0;
    for n in 1..=5 {
        now += 1_000;
        s.handle_exited(&r.key, 1, ExitKind::OutOfMemory, now, &mut rng);
        if n < 5 {
            let Phase::Backoff { until_ms, .. } = phase(&s, "bomb") else {
                panic!("failure {n}")
            };
            s.handle_timeout(until_ms);
            drain(&mut s);
            now = until_ms;
            s.handle_started(&r.key, 1, now);
        }
    }
    let Phase::CrashLooping { reason } = phase(&s, "bomb") else {
        panic!("seed {seed}: {:?}", phase(&s, "bomb"))
    };
    assert!(
        reason.starts_with("5 failures within 60000 ms (limit 5); last: memory limit reached"),
        "{reason}"
    );
    // It is reported, its budget is released and the waiting instance gets it.
    assert_eq!(
        drain(&mut s),
        vec![
            Command::Report {
                key: r.key.clone(),
                generation: 1,
                event: Event::CrashLooping { reason },
            },
            start(&waiting, 0)
        ]
    );
    // It stays crash-looping through an unchanged reconcile; a new generation clears it.
    s.handle_desired(set(&[r.clone(), waiting.clone()]), now);
    assert!(matches!(phase(&s, "bomb"), Phase::CrashLooping { .. }));
    let mut fixed = r.clone();
    fixed.generation = 2;
    fixed.initial = Budget::new(56, 10);
    s.handle_desired(set(&[fixed.clone(), waiting]), now);
    assert_eq!(drain(&mut s), vec![start(&fixed, 0)]);
}

#[test]
fn failures_spread_out_are_not_a_crash_loop() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let r = want("slow", 50, 16, 10);
    let mut s = running(std::slice::from_ref(&r));
    let mut now = 0;
    for _ in 0..10 {
        now += 20_000; // 3 failures per minute at most
        s.handle_exited(&r.key, 1, ExitKind::Crashed("x".into()), now, &mut rng);
        let Phase::Backoff { until_ms, .. } = phase(&s, "slow") else {
            panic!("{:?}", phase(&s, "slow"))
        };
        s.handle_timeout(until_ms);
        now = now.max(until_ms);
        s.handle_started(&r.key, 1, now);
    }
    assert_eq!(phase(&s, "slow"), Phase::Running);
}

#[test]
fn restart_policy_table() {
    let trap = ExitKind::Trap("unreachable".into());
    let cases = [
        (RestartMode::Always, ExitKind::Completed, None),
        (RestartMode::Always, trap.clone(), None),
        (RestartMode::OnFailure, trap.clone(), None),
        (
            RestartMode::OnFailure,
            ExitKind::Completed,
            Some("exited (completed); restart policy is on-failure"),
        ),
        (
            RestartMode::Never,
            trap,
            Some("exited (trap: unreachable); restart policy is never"),
        ),
        (
            RestartMode::Never,
            ExitKind::Completed,
            Some("exited (completed); restart policy is never"),
        ),
    ];
    for (mode, exit, stopped) in cases {
        let mut r = want("m", 50, 16, 10);
        r.restart.mode = mode;
        let mut s = running(std::slice::from_ref(&r));
        s.handle_exited(
            &r.key,
            1,
            exit.clone(),
            100,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        match (phase(&s, "m"), stopped) {
            (
                Phase::Backoff {
                    attempt: 1,
                    last_exit,
                    ..
                },
                None,
            ) => assert_eq!(last_exit, exit),
            (Phase::Stopped { reason }, Some(want)) => {
                assert_eq!(reason, want);
                assert_eq!(
                    drain(&mut s),
                    vec![Command::Report {
                        key: r.key.clone(),
                        generation: 1,
                        event: Event::Stopped {
                            reason: want.to_owned()
                        },
                    }],
                    "{mode:?}: the policy stop is reported"
                );
                assert_eq!(
                    s.reserved(),
                    Budget::default(),
                    "{mode:?}: stopped releases its budget"
                );
            }
            (h, want) => panic!("{mode:?} {exit:?}: got {h:?}, want stopped={want:?}"),
        }
    }
}

#[test]
fn stale_exit_of_old_generation_is_ignored() {
    let r = want("m", 50, 16, 10);
    let mut s = running(std::slice::from_ref(&r));
    s.handle_exited(
        &r.key,
        0,
        ExitKind::Timeout,
        5,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    assert_eq!(phase(&s, "m"), Phase::Running);
    s.handle_exited(
        &key("unknown"),
        1,
        ExitKind::Timeout,
        5,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    assert_eq!(drain(&mut s), vec![]);
}

fn resizable(name: &str) -> DesiredInstance {
    let mut r = want(name, 50, 64, 100);
    r.min = Budget::new(16, 50);
    r.max = Budget::new(128, 400);
    r
}

fn usage(mem_mib: u64, cpu: u32) -> InstanceUsage {
    InstanceUsage {
        cpu_millicores: cpu,
        memory_bytes: mem_mib * MIB,
    }
}

#[test]
fn resize_grows_hot_instance_with_reason() {
    let r = resizable("hot");
    let mut s = running(std::slice::from_ref(&r));
    let idle_node = NodeUsage {
        memory_total_bytes: 1 << 30,
        memory_used_bytes: 1 << 28,
        ..NodeUsage::default()
    };
    for t in [0, 10_000, 20_000] {
        s.handle_usage(t, &idle_node, &[(r.key.clone(), usage(60, 95))]);
        assert_eq!(drain(&mut s), vec![], "not sustained yet at {t}");
    }
    s.handle_usage(30_000, &idle_node, &[(r.key.clone(), usage(60, 95))]);
    let cmds = drain(&mut s);
    assert_eq!(cmds.len(), 2, "{cmds:#?}");
    let Command::Resize { budget, reason, .. } = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(
        (
            *budget,
            reason.dimension,
            reason.used,
            reason.from,
            reason.to
        ),
        (Budget::new(96, 100), Dimension::Memory, 60, 64, 96)
    );
    assert_eq!((reason.utilization_pct, reason.sustained_ms), (93, 30_000));
    assert!(
        reason
            .text
            .starts_with("grow memory 64->96 MiB: use 60 MiB is 93% of budget"),
        "{}",
        reason.text
    );
    let Command::Resize { budget, reason, .. } = &cmds[1] else {
        panic!("{cmds:?}")
    };
    assert_eq!((*budget, reason.to), (Budget::new(96, 150), 150));
    assert_eq!(s.reserved(), Budget::new(96, 150));
}

#[test]
fn resize_shrinks_cold_instance_only_under_pressure() {
    let r = resizable("cold");
    let mut s = running(std::slice::from_ref(&r));
    let calm = NodeUsage {
        memory_total_bytes: 1_000_000_000,
        memory_used_bytes: 250_000_000,
        cpu_total_millicores: 2000,
        cpu_used_millicores: 100,
        ..NodeUsage::default()
    };
    for t in (0..=60_000).step_by(10_000) {
        s.handle_usage(t, &calm, &[(r.key.clone(), usage(6, 80))]);
    }
    assert_eq!(drain(&mut s), vec![], "no pressure: keeps its headroom");

    let pressed = NodeUsage {
        memory_used_bytes: 920_000_000,
        ..calm
    };
    for t in (70_000..=100_000).step_by(10_000) {
        s.handle_usage(t, &pressed, &[(r.key.clone(), usage(6, 80))]);
    }
    let cmds = drain(&mut s);
    let [Command::Resize { budget, reason, .. }] = cmds.as_slice() else {
        panic!("{cmds:#?}")
    };
    assert_eq!(
        (*budget, reason.from, reason.to),
        (Budget::new(16, 100), 64, 16)
    );
    assert!(
        reason
            .text
            .contains("node under pressure: node memory 92% used"),
        "{}",
        reason.text
    );
    // The cold stretch began at t=0; pressure appearing at t=70 s acts at once.
    assert!(
        reason
            .text
            .contains("use 6 MiB is 9% of budget, below 30% for 70000 ms"),
        "{}",
        reason.text
    );
}

#[test]
fn shrink_makes_room_for_a_waiting_instance() {
    let r = resizable("big");
    // 214 of 256 MiB reserved (83%, below the 85% pressure mark).
    let mut s = running(&[r.clone(), want("filler", 50, 150, 10)]);
    let waiting = want("waiting", 50, 64, 10);
    s.handle_desired(
        set(&[r.clone(), want("filler", 50, 150, 10), waiting.clone()]),
        0,
    );
    assert!(matches!(
        phase(&s, "waiting"),
        Phase::Refused(Refusal::InsufficientMemory { .. })
    ));
    drain(&mut s);
    let calm = NodeUsage::default(); // the waiting instance is the pressure
    for t in (0..=30_000).step_by(10_000) {
        s.handle_usage(t, &calm, &[(r.key.clone(), usage(10, 80))]);
    }
    let cmds = drain(&mut s);
    assert_eq!(cmds.len(), 2, "{cmds:#?}");
    let Command::Resize { reason, .. } = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(reason.to, 17);
    assert!(
        reason.text.contains("1 instance(s) waiting for room"),
        "{}",
        reason.text
    );
    assert_eq!(cmds[1], start(&waiting, 0));
}

#[test]
fn config_defaults_validate_and_bad_values_are_all_reported() {
    LifecycleConfig::default().validate().unwrap();
    let bad = LifecycleConfig {
        crash_loop_failures: 0,
        grow_factor_pct: 100,
        pressure_pct: 0,
        ..LifecycleConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().len(), 3);
    assert_eq!(millicores_from_fuel(500, 1000), 500);
    assert_eq!(millicores_from_fuel(3_000_000, 1_000_000), 3000);
    assert_eq!(millicores_from_fuel(5, 0), 0);
}

#[test]
fn a_removed_instance_is_stopped_whatever_its_phase_so_its_state_goes_too() {
    let (big, waiting) = (want("big", 50, 256, 100), want("waiting", 50, 64, 100));
    let mut s = running(std::slice::from_ref(&big));
    s.handle_desired(set(&[big.clone(), waiting.clone()]), 1);
    assert_eq!(drain(&mut s), vec![]);
    assert!(matches!(phase(&s, "waiting"), Phase::Refused(_)));
    s.handle_desired(set(std::slice::from_ref(&big)), 2);
    assert_eq!(
        drain(&mut s),
        vec![Command::Stop {
            key: key("waiting"),
            reason: StopReason::Removed
        }]
    );
    assert!(s.instance(&key("waiting")).is_none());
}
