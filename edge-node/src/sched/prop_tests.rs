//! Property test: random event sequences against the scheduler's invariants.
//!
//! A simulated driver executes the commands (starting some instances,
//! crashing others, sampling random usage) while the test checks after every
//! step that reserved budgets fit the node, that every preemption victim had
//! a strictly lower priority than the instance that displaced it, and that
//! budgets stay within their spec's bounds.

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::workload::{RestartMode, RestartPolicy, RuntimeKind};

use super::*;

const CAPACITY: Budget = Budget::new(256, 1000);

#[derive(Debug, Clone)]
enum Op {
    /// Desire this subset of the pool; `bump` changes one instance's generation.
    Desire {
        mask: u16,
        bump: Option<usize>,
    },
    Started(usize),
    Exited(usize, u8),
    Advance(u64),
    Usage {
        mem_pct: Vec<u8>,
        cpu_pct: Vec<u8>,
        node_mem_pct: u8,
    },
}

/// A request; the test names it `m<index>` afterwards.
fn arb_req() -> impl Strategy<Value = WorkloadRequest> {
    (0u8..5, 1u32..160, 1u32..600, 0u32..3, 0u32..3, 0u8..3).prop_map(
        |(prio, mem, cpu, grow, shrink, mode)| {
            let initial = Budget::new(mem, cpu);
            WorkloadRequest {
                key: InstanceKey::new("t", ""),
                generation: 1,
                artifact_sha256: "00".repeat(32),
                runtime: RuntimeKind::Wasm,
                priority: prio * 20,
                initial,
                min: Budget::new(mem - mem * shrink / 4, cpu - cpu * shrink / 4),
                max: Budget::new(mem + mem * grow, cpu + cpu * grow),
                restart: RestartPolicy {
                    mode: [
                        RestartMode::Always,
                        RestartMode::OnFailure,
                        RestartMode::Never,
                    ][mode as usize],
                    initial_backoff_ms: 100,
                    max_backoff_ms: 5_000,
                },
                constraints: Constraints::default(),
            }
        },
    )
}

fn arb_op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u16>(), proptest::option::of(0..n)).prop_map(|(mask, bump)| Op::Desire { mask, bump }),
        3 => (0..n).prop_map(Op::Started),
        2 => (0..n, 0u8..6).prop_map(|(i, k)| Op::Exited(i, k)),
        2 => (1u64..20_000).prop_map(Op::Advance),
        2 => (proptest::collection::vec(0u8..120, n), proptest::collection::vec(0u8..120, n), 0u8..100)
            .prop_map(|(mem_pct, cpu_pct, node_mem_pct)| Op::Usage { mem_pct, cpu_pct, node_mem_pct }),
    ]
}

fn check(
    s: &LocalScheduler,
    cmds: &[Command],
    pool: &[WorkloadRequest],
) -> Result<(), TestCaseError> {
    let reserved = s.reserved();
    prop_assert!(
        reserved.fits_in(CAPACITY),
        "reserved {:?} above capacity {:?}",
        reserved,
        CAPACITY
    );
    let prio = |k: &InstanceKey| pool.iter().find(|r| &r.key == k).map(|r| r.priority);
    for c in cmds {
        if let Command::Stop {
            key,
            reason:
                StopReason::Preempted {
                    by,
                    by_priority,
                    priority,
                    ..
                },
        } = c
        {
            prop_assert!(
                by_priority > priority,
                "{} preempted by {} of no higher priority",
                key,
                by
            );
            prop_assert!(
                prio(by) > prio(key),
                "{} preempted by {}: pool priorities disagree",
                key,
                by
            );
        }
    }
    for r in s.health() {
        if r.health.holds_budget() {
            let req = pool.iter().find(|q| q.key == r.key).map(|q| (q.min, q.max));
            if let Some((min, max)) = req {
                prop_assert!(
                    min.memory_mib <= r.budget.memory_mib
                        && r.budget.memory_mib <= max.memory_mib
                        && min.cpu_millicores <= r.budget.cpu_millicores
                        && r.budget.cpu_millicores <= max.cpu_millicores,
                    "{} budget {:?} outside [{:?}, {:?}]",
                    r.key,
                    r.budget,
                    min,
                    max
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn capacity_and_priority_invariants_hold(
        pool in proptest::collection::vec(arb_req(), 8),
        ops in proptest::collection::vec(arb_op(8), 1..60),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let node = NodeInfo {
            name: "edge-1".into(),
            capacity: CAPACITY,
            labels: Default::default(),
            pools: Default::default(),
            runtimes: [RuntimeKind::Wasm].into(),
        };
        let mut s = LocalScheduler::new(node, SchedConfig { resize_sustain_ms: 0, ..SchedConfig::default() });
        let mut pool = pool;
        for (i, r) in pool.iter_mut().enumerate() {
            r.key.name = format!("m{i}");
        }
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Desire { mask, bump } => {
                    if let Some(i) = bump {
                        pool[i].generation += 1;
                    }
                    let set = pool.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, r)| r.clone()).collect();
                    s.handle_desired(set, now);
                }
                Op::Started(i) => s.handle_started(&pool[i].key, pool[i].generation, now),
                Op::Exited(i, k) => {
                    let exit = match k {
                        0 => ExitKind::Completed,
                        1 => ExitKind::Timeout,
                        2 => ExitKind::OutOfMemory,
                        3 => ExitKind::Trap("t".into()),
                        _ => ExitKind::Crashed("c".into()),
                    };
                    s.handle_exited(&pool[i].key, pool[i].generation, exit, now, &mut rng);
                }
                Op::Advance(ms) => {
                    now += ms;
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
                Op::Usage { mem_pct, cpu_pct, node_mem_pct } => {
                    let samples: Vec<(InstanceKey, InstanceUsage)> = s.health().iter().filter(|r| r.health == Health::Running).map(|r| {
                        let i: usize = r.key.name[1..].parse().unwrap_or(0);
                        (r.key.clone(), InstanceUsage {
                            memory_bytes: u64::from(r.budget.memory_mib) * model::MIB * u64::from(mem_pct[i]) / 100,
                            cpu_millicores: r.budget.cpu_millicores * u32::from(cpu_pct[i]) / 100,
                        })
                    }).collect();
                    let node_usage = NodeUsage { memory_total_bytes: 100, memory_used_bytes: u64::from(node_mem_pct), ..NodeUsage::default() };
                    s.handle_usage(now, &node_usage, &samples);
                }
            }
            let cmds: Vec<Command> = std::iter::from_fn(|| s.poll_command()).collect();
            check(&s, &cmds, &pool)?;
        }
    }
}
