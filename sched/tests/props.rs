//! Property tests over random regions and event sequences. Each case is
//! built from one `u64` seed (printed by proptest on failure; rerun it with
//! `world(seed)`); the proptest runner itself is seeded too, so a run is
//! reproducible.
//!
//! Invariants:
//! - no plan over-commits a node, and no committed state is over-committed;
//! - a hard constraint (status, pools, label rules) is never violated;
//! - a `keep` allocation on a disconnected node is never replaced;
//! - a `replace-after` one never before its node has been gone that long and
//!   its lease expired;
//! - `verify_plan` never accepts a node that no longer fits;
//! - the same inputs give the same plan.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use strata_sched::*;

const ZONES: [&str; 3] = ["a", "b", "c"];

struct World {
    snap: ClusterSnapshot,
    now: Timestamp,
    token: u64,
    rng: ChaCha8Rng,
    eval_id: u64,
    /// Nodes whose capacity shrank under their instances (a legitimate
    /// over-commit the scheduler did not cause).
    shrunk: std::collections::BTreeSet<NodeId>,
}

fn lease(r: &mut ChaCha8Rng) -> Duration {
    Duration::from_secs(r.gen_range(10..90))
}

fn random_intent(r: &mut ChaCha8Rng) -> String {
    let mut t = String::new();
    if r.gen_bool(0.2) {
        t.push_str("per-node = true\n");
    } else {
        t.push_str(&format!("count = {}\n", r.gen_range(1..8)));
        if r.gen_bool(0.3) {
            t.push_str("spread = [{ label = \"zone\" }]\n");
        }
        if r.gen_bool(0.2) {
            t.push_str("keep-apart-from = [{ workload = \"self\", hard = true }]\n");
        }
    }
    if r.gen_bool(0.4) {
        let z = ZONES[r.gen_range(0..3)];
        let op = if r.gen_bool(0.5) { "=" } else { "!=" };
        t.push_str(&format!(
            "constraints = [{{ label = \"zone\", op = \"{op}\", value = \"{z}\" }}]\n"
        ));
    }
    if r.gen_bool(0.3) {
        t.push_str("pools = [\"gpu\"]\n");
    }
    if r.gen_bool(0.3) {
        t.push_str("affinity = [{ label = \"zone\", value = \"b\", weight = 70 }]\n");
    }
    if r.gen_bool(0.5) {
        t.push_str("replace-after = \"30s\"\n");
    }
    t
}

fn world(seed: u64) -> World {
    let mut r = rng(seed);
    let mut nodes = Vec::new();
    for i in 0..r.gen_range(3..30) {
        let mut n = node(
            &format!("n{i:02}"),
            r.gen_range(200..4000),
            r.gen_range(64..4096),
        );
        if r.gen_bool(0.8) {
            n = n.label("zone", ZONES[r.gen_range(0..3)]);
        }
        n = n.pool(if r.gen_bool(0.3) { "gpu" } else { "cpu" });
        if r.gen_bool(0.4) {
            n = n.carries("g");
        }
        n.usage = Resources::new(
            r.gen_range(0..n.capacity.cpu_millicores),
            r.gen_range(0..n.capacity.memory_bytes),
        );
        nodes.push(n);
    }
    let mut workloads = Vec::new();
    for i in 0..r.gen_range(1..6) {
        let name = format!("w{i}");
        let intent = random_intent(&mut r).replace("\"self\"", &format!("\"{name}\""));
        let mut w = wl(&name, r.gen_range(10..800), r.gen_range(8..512), &intent);
        if w.intent.validate(&ValidationContext::default()).is_err() {
            // The random soft affinity contradicts the random constraint.
            w.intent.affinity.clear();
        }
        w.intent
            .validate(&ValidationContext::default())
            .expect("valid intent");
        w.device_group = Some("g".into());
        w.priority = r.gen_range(0..100);
        workloads.push(w);
    }
    let snap = ClusterSnapshot::from_parts(1, SchedulerConfig::default(), nodes, workloads, vec![]);
    World {
        snap,
        now: NOW,
        token: 1,
        rng: r,
        eval_id: 0,
        shrunk: Default::default(),
    }
}

/// Checks the plan's invariants against the snapshot it was made on.
fn check_plan(s: &ClusterSnapshot, plan: &Plan, now: Timestamp) -> Result<(), TestCaseError> {
    let w = s.workload(&plan.workload);
    for (node_id, np) in &plan.nodes {
        // Stops: keep instances on disconnected nodes are never replaced;
        // replace-after ones only when due.
        for st in &np.stop {
            let a = s.alloc(st.alloc).expect("stop of a known allocation");
            let n = s.node(&a.node);
            let policy = w.map(|w| w.intent.disconnect_policy());
            if let (Some(n), Some(policy)) = (n, policy) {
                if n.status.is_disconnected() {
                    match policy {
                        DisconnectPolicy::Keep => prop_assert!(
                            false,
                            "keep instance {} on disconnected {} stopped: {:?}",
                            a.id,
                            n.id,
                            st.reason
                        ),
                        DisconnectPolicy::ReplaceAfter(d) => {
                            prop_assert!(
                                now >= n.status_since.plus(d),
                                "stopped before replace-after"
                            );
                            prop_assert!(
                                a.lease_expires_at.is_none_or(|t| t <= now),
                                "stopped {} before its lease expired",
                                a.id
                            );
                        }
                    }
                }
            }
        }
        if np.place.is_empty() {
            continue;
        }
        // Placements: hard rules hold and the node is not over-committed.
        let n = s.node(node_id).expect("placement on a known node");
        prop_assert_eq!(n.status, NodeStatus::Ready);
        let w = w.expect("placement for a live workload");
        let i = &w.intent;
        prop_assert!(i.pools.is_empty() || i.pools.iter().any(|p| n.pools.contains(p)));
        for c in &i.constraints {
            prop_assert!(
                c.predicate().matches(&n.labels),
                "{} violated on {}",
                c,
                n.id
            );
        }
        let mut used = s.reserved(node_id);
        for st in &np.stop {
            if let Some(a) = s.alloc(st.alloc).filter(|a| a.is_live()) {
                used = used.saturating_sub(a.resources);
            }
        }
        for u in &np.update {
            let a = s.alloc(u.alloc).expect("update of a known allocation");
            used = used.saturating_sub(a.resources).saturating_add(u.resources);
        }
        for a in &np.place {
            used = used.saturating_add(a.resources);
        }
        prop_assert!(
            used.exceeds(&n.capacity).is_none(),
            "plan over-commits {}: {} > {}",
            n.id,
            used,
            n.capacity
        );
    }
    Ok(())
}

/// Every node's committed reservations fit its capacity.
fn check_state(w: &World) -> Result<(), TestCaseError> {
    let s = &w.snap;
    for n in s.nodes().filter(|n| !w.shrunk.contains(&n.id)) {
        let r = s.reserved(&n.id);
        prop_assert!(
            r.exceeds(&n.capacity).is_none(),
            "{} over-committed: {r}",
            n.id
        );
    }
    Ok(())
}

/// One random event: schedule a workload (possibly on a stale snapshot),
/// change a node's status, or let time pass.
fn step(w: &mut World) -> Result<(), TestCaseError> {
    let workloads: Vec<WorkloadId> = w.snap.workloads().map(|x| x.id.clone()).collect();
    let nodes: Vec<Node> = w.snap.nodes().cloned().collect();
    match w.rng.gen_range(0..10) {
        0..=5 => {
            let wid = workloads[w.rng.gen_range(0..workloads.len())].clone();
            w.eval_id += 1;
            let ev = Evaluation::new(w.eval_id, wid, Trigger::FollowUp, w.snap.index());
            let seed = w.rng.gen();
            let plan = schedule(&w.snap, &ev, w.now, &mut rng(seed)).expect("schedule");
            let again = schedule(&w.snap, &ev, w.now, &mut rng(seed)).expect("schedule");
            prop_assert_eq!(&plan, &again, "same inputs, same plan");
            check_plan(&w.snap, &plan, w.now)?;
            // Sometimes the state moves on before the applier sees the plan:
            // another workload's plan commits, or a node shrinks.
            let mut latest = w.snap.clone();
            if w.rng.gen_bool(0.5) {
                let other = workloads[w.rng.gen_range(0..workloads.len())].clone();
                let ev2 = Evaluation::new(w.eval_id + 1000, other, Trigger::FollowUp, 0);
                let p2 = schedule(&latest, &ev2, w.now, &mut rng(seed ^ 1)).expect("schedule");
                let mut v2 = verify_plan(&latest, &p2);
                w.token = v2.assign_tokens(w.token);
                let idx = latest.index() + 1;
                latest.apply_verdict(&v2, idx);
            }
            if w.rng.gen_bool(0.3) {
                let mut n = nodes[w.rng.gen_range(0..nodes.len())].clone();
                n.capacity =
                    Resources::new(n.capacity.cpu_millicores / 2, n.capacity.memory_bytes / 2);
                w.shrunk.insert(n.id.clone());
                latest.upsert_node(n);
            }
            let mut v = verify_plan(&latest, &plan);
            for (node_id, np) in &v.accepted {
                if np.place.is_empty() && np.update.is_empty() {
                    continue;
                }
                let n = latest.node(node_id).expect("accepted node exists");
                prop_assert_eq!(n.status, NodeStatus::Ready);
                let mut used = latest.reserved(node_id);
                for st in &np.stop {
                    if let Some(a) = latest
                        .alloc(st.alloc)
                        .filter(|a| a.is_live() && &a.node == node_id)
                    {
                        used = used.saturating_sub(a.resources);
                    }
                }
                for u in &np.update {
                    let a = latest.alloc(u.alloc).expect("known");
                    used = used.saturating_sub(a.resources).saturating_add(u.resources);
                }
                for a in &np.place {
                    used = used.saturating_add(a.resources);
                }
                prop_assert!(
                    used.exceeds(&n.capacity).is_none(),
                    "verify_plan accepted {} which no longer fits",
                    node_id
                );
            }
            let before = w.token;
            w.token = v.assign_tokens(w.token);
            let tokens: Vec<u64> = v.placements().map(|a| a.fencing_token).collect();
            prop_assert_eq!(tokens, (before..w.token).collect::<Vec<_>>());
            // The hub grants a lease with each placement; some leases
            // outlast replace-after (30 s), some do not.
            for np in v.accepted.values_mut() {
                for a in &mut np.place {
                    a.lease_expires_at = Some(w.now.plus(lease(&mut w.rng)));
                }
            }
            let idx = latest.index() + 1;
            latest.apply_verdict(&v, idx);
            w.snap = latest;
            check_state(w)?;
        }
        6 | 7 => {
            let mut n = nodes[w.rng.gen_range(0..nodes.len())].clone();
            let st = [
                NodeStatus::Ready,
                NodeStatus::Suspect,
                NodeStatus::Down,
                NodeStatus::Draining,
            ][w.rng.gen_range(0..4)];
            if n.status != st {
                n.status = st;
                n.status_since = w.now;
                w.snap.upsert_node(n);
                let idx = w.snap.index() + 1;
                w.snap.set_index(idx);
            }
        }
        _ => {
            w.now = w.now.plus(Duration::from_secs(w.rng.gen_range(0..40)));
            // Live nodes renew their leases.
            let renew: Vec<Allocation> = w
                .snap
                .nodes()
                .filter(|n| n.status == NodeStatus::Ready)
                .flat_map(|n| w.snap.allocs_on(&n.id))
                .filter(|a| a.is_live() && a.lease_expires_at.is_some())
                .cloned()
                .collect();
            for mut a in renew {
                a.lease_expires_at = Some(w.now.plus(lease(&mut w.rng)));
                w.snap.upsert_alloc(a);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 96,
        rng_seed: RngSeed::Fixed(0x0005_eed5_c4ed),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn scheduling_invariants_hold_over_random_event_sequences(seed in any::<u64>()) {
        let mut w = world(seed);
        for _ in 0..60 {
            step(&mut w)?;
        }
    }
}
