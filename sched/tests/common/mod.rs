//! Builders shared by the scheduler's integration tests.
#![allow(dead_code)]

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_sched::*;

pub const NOW: Timestamp = Timestamp(10_000_000);
pub const MIB: u64 = 1 << 20;

/// A ready node with `cpu` millicores and `mem` MiB.
pub fn node(id: &str, cpu: u64, mem_mib: u64) -> Node {
    Node::new(id, Resources::new(cpu, mem_mib * MIB))
}

/// A workload of tenant `acme` asking `cpu` / `mem` MiB with the intent in TOML.
pub fn wl(name: &str, cpu: u64, mem_mib: u64, intent: &str) -> Workload {
    Workload {
        id: WorkloadId::new("acme", name),
        priority: 50,
        resources: Resources::new(cpu, mem_mib * MIB),
        intent: toml::from_str(intent).unwrap_or_else(|e| panic!("intent {intent:?}: {e}")),
        device_group: None,
        generation: 1,
    }
}

pub fn snap(
    nodes: Vec<Node>,
    workloads: Vec<Workload>,
    allocs: Vec<Allocation>,
) -> ClusterSnapshot {
    ClusterSnapshot::from_parts(10, SchedulerConfig::default(), nodes, workloads, allocs)
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn eval(name: &str, trigger: Trigger) -> Evaluation {
    Evaluation::new(1, WorkloadId::new("acme", name), trigger, 0)
}

/// A running allocation of `w` in `slot` on `node`.
pub fn alloc(w: &Workload, id: u128, slot: u32, node: &str) -> Allocation {
    Allocation {
        id: AllocId(id),
        workload: w.id.clone(),
        slot,
        node: NodeId::from(node),
        generation: w.generation,
        resources: w.resources,
        fencing_token: u64::try_from(id).unwrap_or(0),
        desired: Desired::Run,
        client: ClientState::Running,
        created_index: 1,
        modified_index: 1,
        lease_expires_at: None,
        previous: None,
        placement: PlacementMeta {
            eval: EvalId(0),
            reason: PlaceReason::Missing,
            score: 0.0,
            score_parts: vec![],
            nodes_evaluated: 0,
            nodes_feasible: 0,
        },
    }
}

/// Schedules workload `name` with seed 1 at NOW.
pub fn run(s: &ClusterSnapshot, name: &str) -> Plan {
    schedule(s, &eval(name, Trigger::Submit), NOW, &mut rng(1)).expect("schedule")
}

/// Node names of the plan's placements, sorted.
pub fn placed(plan: &Plan) -> Vec<String> {
    let mut v: Vec<String> = plan.placements().map(|a| a.node.0.clone()).collect();
    v.sort();
    v
}

/// `(node, alloc, reason)` of every stop.
pub fn stopped(plan: &Plan) -> Vec<(String, AllocId, StopReason)> {
    plan.stops()
        .map(|(n, s)| (n.0.clone(), s.alloc, s.reason.clone()))
        .collect()
}

/// Verifies and applies `plan` at the next index; returns the verdict.
pub fn commit(s: &mut ClusterSnapshot, plan: &Plan, next_token: &mut u64) -> PlanVerdict {
    let mut v = verify_plan(s, plan);
    *next_token = v.assign_tokens(*next_token);
    let idx = s.index() + 1;
    s.apply_verdict(&v, idx);
    v
}
