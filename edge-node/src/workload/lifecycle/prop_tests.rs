//! Property test: random event sequences against the core's invariants.
//!
//! A simulated driver executes the commands (fetching and compiling
//! modules, one of which never compiles; starting some instances, crashing
//! others, confirming stops, sampling random usage, renewing leases late or
//! in time) while the test checks after every step that reserved budgets
//! fit the node, that every preemption victim had a strictly lower priority
//! than the instance that displaced it, that budgets stay within their
//! spec's bounds, that a `replace-after` instance is only starting or
//! running while it holds a lease, and that once its lease ran out it is
//! not started again before a new desired set grants one.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::workload::{RestartMode, RestartPolicy, RuntimeKind};

use super::*;
use crate::workload::command::ModuleFailure;
use crate::workload::model::{Constraints, DisconnectPolicy, NodeUsage, MIB};

const CAPACITY: Budget = Budget::new(256, 1000);
/// The module of pool entries with this index never compiles.
const BAD: usize = 7;

#[derive(Debug, Clone)]
enum Op {
    /// Desire this subset of the pool; `bump` changes one instance's
    /// generation; `grant`: the set comes from the region (grants leases).
    Desire {
        mask: u16,
        bump: Option<usize>,
        grant: bool,
    },
    Started(usize),
    Exited(usize, u8),
    Stopped(usize),
    Advance(u64),
    /// A heartbeat sent this long ago was acknowledged.
    Renewed(u64),
    Usage {
        mem_pct: Vec<u8>,
        cpu_pct: Vec<u8>,
        node_mem_pct: u8,
    },
}

/// A desired instance; the test names it `m<index>` afterwards.
fn arb_want() -> impl Strategy<Value = DesiredInstance> {
    (
        (0u8..5, 1u32..160, 1u32..600, 0u32..3, 0u32..3, 0u8..3),
        proptest::option::of(1_000u64..10_000),
    )
        .prop_map(|((prio, mem, cpu, grow, shrink, mode), lease)| {
            let initial = Budget::new(mem, cpu);
            DesiredInstance {
                key: InstanceKey::new("t", ""),
                generation: 1,
                artifact_sha256: String::new(),
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
                fence: Fence {
                    allocation: String::new(),
                    token: 1,
                },
                disconnect: lease.map_or(DisconnectPolicy::Keep, |lease_ms| {
                    DisconnectPolicy::ReplaceAfter { lease_ms }
                }),
            }
        })
}

fn arb_op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (any::<u16>(), proptest::option::of(0..n), any::<bool>())
            .prop_map(|(mask, bump, grant)| Op::Desire { mask, bump, grant }),
        3 => (0..n).prop_map(Op::Started),
        2 => (0..n, 0u8..6).prop_map(|(i, k)| Op::Exited(i, k)),
        1 => (0..n).prop_map(Op::Stopped),
        2 => (1u64..20_000).prop_map(Op::Advance),
        2 => (0u64..15_000).prop_map(Op::Renewed),
        2 => (proptest::collection::vec(0u8..120, n), proptest::collection::vec(0u8..120, n), 0u8..100)
            .prop_map(|(mem_pct, cpu_pct, node_mem_pct)| Op::Usage { mem_pct, cpu_pct, node_mem_pct }),
    ]
}

/// Answers module commands (one module never compiles) and returns the
/// other commands.
fn drive(s: &mut Lifecycle, now: u64, bad_sha: &str) -> Vec<Command> {
    let mut out = Vec::new();
    while let Some(c) = s.poll_command() {
        match &c {
            Command::FetchModule { sha256 } => s.handle_module_fetched(sha256),
            Command::CompileModule { sha256 } if sha256 == bad_sha => s.handle_module_failed(
                sha256,
                ModuleFailure::Invalid {
                    reason: "no".into(),
                },
                now,
            ),
            Command::CompileModule { sha256 } => s.handle_module_ready(sha256, now),
            _ => {}
        }
        out.push(c);
    }
    out
}

fn check(
    s: &Lifecycle,
    cmds: &[Command],
    pool: &[DesiredInstance],
    lost: &mut BTreeSet<InstanceKey>,
    now: u64,
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
        match c {
            Command::Stop {
                key,
                reason:
                    StopReason::Preempted {
                        by,
                        by_priority,
                        priority,
                        ..
                    },
            } => {
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
            Command::Report {
                key,
                event: Event::LeaseExpired { .. },
                ..
            } => {
                lost.insert(key.clone());
            }
            Command::Start { key, .. } => {
                prop_assert!(
                    !lost.contains(key),
                    "{} started again after its lease ran out, with no new grant",
                    key
                );
            }
            _ => {}
        }
    }
    for r in s.instances() {
        if r.phase.holds_budget() {
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
        if matches!(r.phase, Phase::Starting | Phase::Running) {
            prop_assert!(
                r.lease.may_run(now),
                "{} is {:?} at {} with lease {:?}",
                r.key,
                r.phase,
                now,
                r.lease
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn capacity_priority_and_lease_invariants_hold(
        pool in proptest::collection::vec(arb_want(), 8),
        ops in proptest::collection::vec(arb_op(8), 1..80),
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
        let cfg = LifecycleConfig { resize_sustain_ms: 0, ..LifecycleConfig::default() };
        let mut s = Lifecycle::new(node, cfg, 5_000);
        let mut pool = pool;
        for (i, r) in pool.iter_mut().enumerate() {
            r.key.name = format!("m{i}");
            // Two instances per module, so modules are shared.
            r.artifact_sha256 = format!("{:064x}", i / 2);
            r.fence.allocation = format!("alloc-m{i}");
        }
        let bad_sha = pool[BAD].artifact_sha256.clone();
        let mut now = 0u64;
        let mut lost = BTreeSet::new();
        for op in ops {
            match op {
                Op::Desire { mask, bump, grant } => {
                    if let Some(i) = bump {
                        pool[i].generation += 1;
                        lost.remove(&pool[i].key);
                    }
                    let instances: Vec<DesiredInstance> = pool.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, r)| r.clone()).collect();
                    if grant {
                        for r in &instances {
                            lost.remove(&r.key);
                        }
                    }
                    for r in pool.iter().enumerate().filter(|(i, _)| mask & (1 << i) == 0).map(|(_, r)| r) {
                        // Removed: a later desire enters it afresh.
                        lost.remove(&r.key);
                    }
                    s.handle_desired(DesiredSet { instances, granted_at_ms: grant.then_some(now) }, now);
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
                Op::Stopped(i) => s.handle_stopped(&pool[i].key, pool[i].generation),
                Op::Advance(ms) => {
                    now += ms;
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
                Op::Renewed(ago) => s.handle_lease_renewed(now.saturating_sub(ago), now),
                Op::Usage { mem_pct, cpu_pct, node_mem_pct } => {
                    let samples: Vec<(InstanceKey, InstanceUsage)> = s.instances().iter().filter(|r| r.phase == Phase::Running).map(|r| {
                        let i: usize = r.key.name[1..].parse().unwrap_or(0);
                        (r.key.clone(), InstanceUsage {
                            memory_bytes: u64::from(r.budget.memory_mib) * MIB * u64::from(mem_pct[i]) / 100,
                            cpu_millicores: r.budget.cpu_millicores * u32::from(cpu_pct[i]) / 100,
                        })
                    }).collect();
                    let node_usage = NodeUsage { memory_total_bytes: 100, memory_used_bytes: u64::from(node_mem_pct), ..NodeUsage::default() };
                    s.handle_usage(now, &node_usage, &samples);
                }
            }
            let cmds = drive(&mut s, now, &bad_sha);
            check(&s, &cmds, &pool, &mut lost, now)?;
        }
    }
}
