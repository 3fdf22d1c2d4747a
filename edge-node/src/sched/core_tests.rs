//! Deterministic tests of [`LocalScheduler`]: events in, commands and
//! health out.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::workload::{MonitorSpec, RestartMode, RestartPolicy, RuntimeKind};

use super::*;

fn node() -> NodeInfo {
    NodeInfo {
        name: "edge-1".into(),
        capacity: Budget::new(256, 1000),
        labels: Default::default(),
        pools: Default::default(),
        runtimes: [RuntimeKind::Wasm].into(),
    }
}

fn key(name: &str) -> InstanceKey {
    InstanceKey::new("acme", name)
}

fn req(name: &str, prio: u8, mem: u32, cpu: u32) -> WorkloadRequest {
    let b = Budget::new(mem, cpu);
    WorkloadRequest {
        key: key(name),
        generation: 1,
        artifact_sha256: "ab".repeat(32),
        runtime: RuntimeKind::Wasm,
        priority: prio,
        initial: b,
        min: b,
        max: b,
        restart: RestartPolicy::default(),
        constraints: Constraints::default(),
    }
}

fn drain(s: &mut LocalScheduler) -> Vec<Command> {
    std::iter::from_fn(|| s.poll_command()).collect()
}

fn start(r: &WorkloadRequest, attempt: u32) -> Command {
    Command::Start {
        key: r.key.clone(),
        generation: r.generation,
        artifact_sha256: r.artifact_sha256.clone(),
        budget: r.initial,
        attempt,
    }
}

fn health(s: &LocalScheduler, name: &str) -> Health {
    s.instance(&key(name)).unwrap().health
}

/// A scheduler running `reqs` (all admitted and started at t=0).
fn running(reqs: &[WorkloadRequest]) -> LocalScheduler {
    let mut s = LocalScheduler::new(node(), SchedConfig::default());
    s.handle_desired(reqs.to_vec(), 0);
    for c in drain(&mut s) {
        if let Command::Start {
            key, generation, ..
        } = c
        {
            s.handle_started(&key, generation, 0);
        }
    }
    s
}

#[test]
fn admits_in_priority_order_and_refuses_with_reason() {
    let mut s = LocalScheduler::new(node(), SchedConfig::default());
    let (a, b, c) = (
        req("a", 10, 128, 100),
        req("b", 90, 128, 100),
        req("c", 10, 64, 100),
    );
    s.handle_desired(vec![a.clone(), b.clone(), c.clone()], 0);
    // b first (priority 90), then a and c by key; c does not fit (equal priority, no preemption).
    assert_eq!(drain(&mut s), vec![start(&b, 0), start(&a, 0)]);
    assert_eq!(
        health(&s, "c"),
        Health::Refused(Refusal::InsufficientMemory {
            need_mib: 64,
            free_mib: 0,
            capacity_mib: 256
        })
    );
    assert_eq!(health(&s, "a"), Health::Pending);
    assert_eq!(s.instance(&key("a")).unwrap().admitted_at_ms, Some(0));
    assert_eq!(s.instance(&key("c")).unwrap().admitted_at_ms, None);
    s.handle_started(&key("a"), 1, 5);
    assert_eq!(health(&s, "a"), Health::Running);
    assert_eq!(s.reserved(), Budget::new(256, 200));
}

#[test]
fn micro_vm_is_refused_as_unknown_runtime() {
    let mut s = LocalScheduler::new(node(), SchedConfig::default());
    let mut vm = req("vm", 50, 16, 10);
    vm.runtime = RuntimeKind::MicroVm;
    s.handle_desired(vec![vm], 0);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(
        health(&s, "vm"),
        Health::Refused(Refusal::UnknownRuntime {
            runtime: RuntimeKind::MicroVm,
            node: "edge-1".into()
        })
    );
}

#[test]
fn higher_priority_preempts_lowest_newest_and_victim_returns_when_room_frees() {
    let (old, new, mid) = (
        req("old", 10, 100, 100),
        req("new", 10, 100, 100),
        req("mid", 20, 56, 100),
    );
    let mut s = running(&[old.clone(), mid.clone()]);
    s.handle_desired(vec![old.clone(), mid.clone(), new.clone()], 1);
    assert_eq!(drain(&mut s), vec![start(&new, 0)]);
    s.handle_started(&key("new"), 1, 1);

    let vip = req("vip", 80, 100, 100);
    let all = vec![old.clone(), mid.clone(), new.clone(), vip.clone()];
    s.handle_desired(all.clone(), 2);
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
    assert_eq!(health(&s, "new"), Health::Preempted { by: key("vip") });
    assert_eq!(
        health(&s, "old"),
        Health::Running,
        "older of equal priority is kept"
    );
    assert_eq!(
        health(&s, "mid"),
        Health::Running,
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
    assert_eq!(health(&s, "new"), Health::Preempted { by: key("vip") });

    // vip removed: its room goes back to the preempted instance.
    s.handle_desired(vec![old, mid, new.clone()], 4);
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
        req("keep", 50, 32, 100),
        req("change", 50, 32, 100),
        req("gone", 50, 32, 100),
    );
    let mut s = running(&[keep.clone(), change.clone(), gone.clone()]);
    // Same desired set again (as after a reconnect): nothing at all happens.
    s.handle_desired(vec![keep.clone(), change.clone(), gone.clone()], 10);
    assert_eq!(drain(&mut s), vec![]);
    assert_eq!(health(&s, "keep"), Health::Running);

    let mut changed = change.clone();
    changed.generation = 2;
    let mut rehashed = keep.clone();
    rehashed.artifact_sha256 = "cd".repeat(32);
    s.handle_desired(vec![keep.clone(), changed.clone()], 20);
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
    assert_eq!(health(&s, "keep"), Health::Running);
    assert!(s.instance(&key("gone")).is_none());

    // Same generation but a new artifact hash is a change too.
    s.handle_desired(vec![rehashed.clone(), changed], 30);
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
    let mut r = req("flaky", 50, 16, 10);
    r.restart = RestartPolicy {
        mode: RestartMode::Always,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
    };
    // Crash-loop detection off for this test: only the backoff is observed.
    let cfg = SchedConfig {
        crash_loop_failures: 1000,
        ..SchedConfig::default()
    };
    let mut s = LocalScheduler::new(node(), cfg);
    s.handle_desired(vec![r.clone()], 0);
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
        let Health::Backoff {
            until_ms,
            attempt: a,
            ..
        } = health(&s, "flaky")
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
        matches!(health(&s, "flaky"), Health::Backoff { attempt: 1, .. }),
        "seed {seed}"
    );
}

#[test]
fn crash_loop_after_five_failures_in_a_minute() {
    let seed = 7;
    println!("seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let r = req("bomb", 50, 64, 10);
    let waiting = req("waiting", 50, 200, 10);
    let mut s = running(&[r.clone(), waiting.clone()]);
    assert!(matches!(health(&s, "waiting"), Health::Refused(_)));
    let mut now = 0;
    for n in 1..=5 {
        now += 1_000;
        s.handle_exited(&r.key, 1, ExitKind::OutOfMemory, now, &mut rng);
        if n < 5 {
            let Health::Backoff { until_ms, .. } = health(&s, "bomb") else {
                panic!("failure {n}")
            };
            s.handle_timeout(until_ms);
            drain(&mut s);
            now = until_ms;
            s.handle_started(&r.key, 1, now);
        }
    }
    let Health::CrashLooping { reason } = health(&s, "bomb") else {
        panic!("seed {seed}: {:?}", health(&s, "bomb"))
    };
    assert!(
        reason.starts_with("5 failures within 60000 ms (limit 5); last: memory limit reached"),
        "{reason}"
    );
    // Its budget is released and the waiting instance gets it.
    assert_eq!(drain(&mut s), vec![start(&waiting, 0)]);
    // It stays crash-looping through an unchanged reconcile; a new generation clears it.
    s.handle_desired(vec![r.clone(), waiting.clone()], now);
    assert!(matches!(health(&s, "bomb"), Health::CrashLooping { .. }));
    let mut fixed = r.clone();
    fixed.generation = 2;
    fixed.initial = Budget::new(56, 10);
    s.handle_desired(vec![fixed.clone(), waiting], now);
    assert_eq!(drain(&mut s), vec![start(&fixed, 0)]);
}

#[test]
fn failures_spread_out_are_not_a_crash_loop() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let r = req("slow", 50, 16, 10);
    let mut s = running(std::slice::from_ref(&r));
    let mut now = 0;
    for _ in 0..10 {
        now += 20_000; // 3 failures per minute at most
        s.handle_exited(&r.key, 1, ExitKind::Crashed("x".into()), now, &mut rng);
        let Health::Backoff { until_ms, .. } = health(&s, "slow") else {
            panic!("{:?}", health(&s, "slow"))
        };
        s.handle_timeout(until_ms);
        now = now.max(until_ms);
        s.handle_started(&r.key, 1, now);
    }
    assert_eq!(health(&s, "slow"), Health::Running);
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
        let mut r = req("m", 50, 16, 10);
        r.restart.mode = mode;
        let mut s = running(std::slice::from_ref(&r));
        s.handle_exited(
            &r.key,
            1,
            exit.clone(),
            100,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        match (health(&s, "m"), stopped) {
            (
                Health::Backoff {
                    attempt: 1,
                    last_exit,
                    ..
                },
                None,
            ) => assert_eq!(last_exit, exit),
            (Health::Stopped { reason }, Some(want)) => {
                assert_eq!(reason, want);
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
    let r = req("m", 50, 16, 10);
    let mut s = running(std::slice::from_ref(&r));
    s.handle_exited(
        &r.key,
        0,
        ExitKind::Timeout,
        5,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    assert_eq!(health(&s, "m"), Health::Running);
    s.handle_exited(
        &key("unknown"),
        1,
        ExitKind::Timeout,
        5,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    assert_eq!(drain(&mut s), vec![]);
}

fn resizable(name: &str) -> WorkloadRequest {
    let mut r = req(name, 50, 64, 100);
    r.min = Budget::new(16, 50);
    r.max = Budget::new(128, 400);
    r
}

fn usage(mem_mib: u64, cpu: u32) -> InstanceUsage {
    InstanceUsage {
        cpu_millicores: cpu,
        memory_bytes: mem_mib * model::MIB,
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
    let mut s = running(&[r.clone(), req("filler", 50, 150, 10)]);
    let waiting = req("waiting", 50, 64, 10);
    s.handle_desired(
        vec![r.clone(), req("filler", 50, 150, 10), waiting.clone()],
        0,
    );
    assert!(matches!(
        health(&s, "waiting"),
        Health::Refused(Refusal::InsufficientMemory { .. })
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
fn toml_spec_becomes_a_request() {
    let text = r#"
        name = "boiler-temp"
        tenant = "acme"
        priority = 70
        target = { node = "edge-1" }
        params = { threshold = 80.5, window = 10 }
        [artifact]
        sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        size-bytes = 48213
        [selector]
        tenant = "acme"
        device-globs = ["boiler-*"]
        tags = { site = "plant-1" }
        [resources]
        memory-mib = 16
        cpu-millicores = 50
        max-memory-mib = 64
        [restart]
        mode = "never"
    "#;
    let spec: MonitorSpec = toml::from_str(text).unwrap();
    spec.validate(&Default::default()).unwrap();
    assert_eq!(spec.params, r#"{"threshold":80.5,"window":10}"#);
    let back: MonitorSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec, "TOML round trip");
    let r = WorkloadRequest::from_spec(&spec);
    assert_eq!(
        (r.key.clone(), r.priority, r.restart.mode),
        (key("boiler-temp"), 70, RestartMode::Never)
    );
    assert_eq!(
        (r.initial, r.min, r.max),
        (
            Budget::new(16, 50),
            Budget::new(16, 50),
            Budget::new(64, 50)
        )
    );
    assert_eq!(r.constraints.node.as_deref(), Some("edge-1"));

    let err = toml::from_str::<MonitorSpec>(&text.replace("priority", "prio")).unwrap_err();
    assert!(err.to_string().contains("unknown field `prio`"), "{err}");
}

#[test]
fn config_defaults_validate_and_bad_values_are_all_reported() {
    SchedConfig::default().validate().unwrap();
    let bad = SchedConfig {
        crash_loop_failures: 0,
        grow_factor_pct: 100,
        pressure_pct: 0,
        ..SchedConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().len(), 3);
    assert_eq!(millicores_from_fuel(500, 1000), 500);
    assert_eq!(millicores_from_fuel(3_000_000, 1_000_000), 3000);
    assert_eq!(millicores_from_fuel(5, 0), 0);
}
