//! `verify_plan`: stale plans are refused per node, tokens are assigned at
//! acceptance.

mod common;

use std::time::Duration;

use common::*;
use strata_sched::*;

fn two_nodes() -> Vec<Node> {
    vec![node("e1", 1000, 1024), node("e2", 1000, 1024)]
}

#[test]
fn a_fresh_plan_is_accepted_whole_and_gets_increasing_tokens() {
    let mut s = snap(two_nodes(), vec![wl("w", 100, 64, "count = 4")], vec![]);
    let plan = run(&s, "w");
    let mut next = 42;
    let v = commit(&mut s, &plan, &mut next);
    assert!(v.is_full() && !v.needs_reevaluation());
    assert_eq!(v.refresh_index, None);
    let tokens: Vec<u64> = v.placements().map(|a| a.fencing_token).collect();
    assert_eq!(tokens, vec![42, 43, 44, 45]);
    assert_eq!(next, 46);
    assert_eq!(s.alloc_count(), 4);
    assert_eq!(s.reserved(&NodeId::from("e1")).cpu_millicores, 200);
    assert!(run(&s, "w").is_noop(), "reconciled");
}

#[test]
fn stale_plans_are_refused_per_node_with_reasons() {
    // The plan places one instance each on e1 and e2; in the meantime e1
    // filled up, so only e2's part is accepted.
    let w = wl("w", 600, 64, "count = 2");
    let filler = wl("filler", 600, 64, "");
    let s0 = snap(two_nodes(), vec![w.clone(), filler.clone()], vec![]);
    let plan = run(&s0, "w");
    assert_eq!(placed(&plan), vec!["e1", "e2"]);
    let mut latest = snap(
        two_nodes(),
        vec![w.clone(), filler.clone()],
        vec![alloc(&filler, 9, 0, "e1")],
    );
    latest.set_index(20);
    let v = verify_plan(&latest, &plan);
    assert_eq!(
        v.rejected,
        [(
            NodeId::from("e1"),
            Rejection::Exhausted {
                dimension: Dimension::Cpu,
                need: 1200,
                capacity: 1000
            }
        )]
        .into()
    );
    assert_eq!(
        v.accepted.keys().collect::<Vec<_>>(),
        vec![&NodeId::from("e2")]
    );
    assert_eq!(v.refresh_index, Some(20));
    assert!(v.needs_reevaluation());
    // A node that went down or left since.
    for (status, want) in [
        (
            Some(NodeStatus::Suspect),
            Rejection::NodeNotReady(NodeStatus::Suspect),
        ),
        (
            Some(NodeStatus::Draining),
            Rejection::NodeNotReady(NodeStatus::Draining),
        ),
        (None, Rejection::NodeUnknown),
    ] {
        let mut latest = snap(two_nodes(), vec![w.clone()], vec![]);
        match status {
            Some(st) => latest.upsert_node(node("e1", 1000, 1024).status(st, NOW)),
            None => latest.remove_node(&NodeId::from("e1")),
        }
        let v = verify_plan(&latest, &plan);
        assert_eq!(v.rejected.get(&NodeId::from("e1")), Some(&want));
        assert!(v.accepted.contains_key(&NodeId::from("e2")));
    }
}

#[test]
fn a_plan_for_an_old_generation_or_a_taken_slot_is_refused() {
    let w = wl("w", 100, 64, "count = 1");
    let s0 = snap(two_nodes(), vec![w.clone()], vec![]);
    let plan = run(&s0, "w");
    // Updated since.
    let mut w2 = w.clone();
    w2.generation = 2;
    let latest = snap(two_nodes(), vec![w2], vec![]);
    let v = verify_plan(&latest, &plan);
    assert!(v.accepted.is_empty());
    assert!(matches!(
        v.rejected.values().next(),
        Some(Rejection::WorkloadChanged {
            planned: Some(1),
            now: Some(2)
        })
    ));
    // Another plan for the same workload committed slot 0 first.
    let latest = snap(two_nodes(), vec![w.clone()], vec![alloc(&w, 5, 0, "e2")]);
    let v = verify_plan(&latest, &plan);
    assert!(v.accepted.is_empty());
    assert!(matches!(
        v.rejected.values().next(),
        Some(Rejection::SlotTaken {
            slot: 0,
            holder: AllocId(5)
        })
    ));
}

#[test]
fn a_dependent_stop_is_refused_with_its_replacement() {
    // Drain e1: the plan places on e2 and stops e1's instance with it.
    let w = wl("w", 600, 64, "count = 1");
    let other = wl("other", 600, 64, "");
    let nodes = || {
        vec![
            node("e1", 1000, 1024).status(NodeStatus::Draining, NOW),
            node("e2", 1000, 1024),
        ]
    };
    let s0 = snap(
        nodes(),
        vec![w.clone(), other.clone()],
        vec![alloc(&w, 1, 0, "e1")],
    );
    let plan = run(&s0, "w");
    assert_eq!(placed(&plan), vec!["e2"]);
    // Meanwhile e2 filled up: both parts are refused, nothing is stopped.
    let latest = snap(
        nodes(),
        vec![w.clone(), other.clone()],
        vec![alloc(&w, 1, 0, "e1"), alloc(&other, 2, 0, "e2")],
    );
    let v = verify_plan(&latest, &plan);
    assert!(v.accepted.is_empty(), "{v:?}");
    assert!(matches!(
        v.rejected.get(&NodeId::from("e1")),
        Some(Rejection::ReplacementRefused(_))
    ));
}

#[test]
fn a_renewed_lease_refuses_the_replacement() {
    let w = wl("w", 100, 64, r#"replace-after = "30s""#);
    let nodes = || {
        vec![
            node("e1", 1000, 1024).status(NodeStatus::Down, Timestamp(0)),
            node("e2", 1000, 1024),
        ]
    };
    let mut a = alloc(&w, 1, 0, "e1");
    a.lease_expires_at = Some(Timestamp(NOW.0 - 1));
    let s0 = snap(nodes(), vec![w.clone()], vec![a.clone()]);
    let plan = run(&s0, "w");
    assert_eq!(placed(&plan), vec!["e2"]);
    // e1 came back and its lease was renewed before the plan was applied.
    a.lease_expires_at = Some(NOW.plus(Duration::from_secs(10)));
    let latest = snap(nodes(), vec![w], vec![a]);
    let v = verify_plan(&latest, &plan);
    assert!(v.accepted.is_empty(), "{v:?}");
    assert_eq!(
        v.rejected.get(&NodeId::from("e2")),
        Some(&Rejection::LeaseRenewed(AllocId(1)))
    );
}

#[test]
fn stop_only_plans_are_always_accepted() {
    let w = wl("w", 100, 64, "");
    let s = snap(two_nodes(), vec![], vec![alloc(&w, 1, 0, "e1")]);
    let plan = schedule(&s, &eval("w", Trigger::Delete), NOW, &mut rng(1)).unwrap();
    let mut latest = s.clone();
    latest.upsert_node(node("e1", 1000, 1024).status(NodeStatus::Down, NOW));
    let v = verify_plan(&latest, &plan);
    assert!(v.is_full());
    assert_eq!(v.accepted[&NodeId::from("e1")].stop.len(), 1);
}

#[test]
fn one_per_node_refuses_a_second_instance_on_a_node() {
    let cfg = SchedulerConfig {
        one_per_node: true,
        ..SchedulerConfig::default()
    };
    let w = wl("w", 100, 64, "count = 2");
    let s0 = ClusterSnapshot::from_parts(10, cfg, two_nodes(), vec![w.clone()], vec![]);
    let plan = run(&s0, "w");
    assert_eq!(placed(&plan), vec!["e1", "e2"]);
    // Meanwhile another plan put the instance of the *other* slot on e1:
    // no slot clash, but e1 would run the workload twice.
    let on_e1 = plan.nodes[&NodeId::from("e1")].place[0].slot;
    let other = alloc(&w, 5, 1 - on_e1, "e1");
    let latest = ClusterSnapshot::from_parts(20, cfg, two_nodes(), vec![w], vec![other]);
    let v = verify_plan(&latest, &plan);
    assert_eq!(
        v.rejected.get(&NodeId::from("e1")),
        Some(&Rejection::NodeTaken { holder: AllocId(5) }),
        "{v:?}"
    );
}
