//! Disconnect policies: `keep` instances on a cut-off node are never
//! replaced; `replace-after` ones only once disconnected that long and
//! their lease expired.

mod common;

use std::time::Duration;

use common::*;
use strata_sched::*;

const GONE_AT: Timestamp = Timestamp(NOW.0 - 60_000);

fn region(status: NodeStatus) -> Vec<Node> {
    vec![
        node("e1", 1000, 1024).status(status, GONE_AT),
        node("e2", 1000, 1024),
    ]
}

#[test]
fn keep_instances_on_a_disconnected_node_are_never_replaced() {
    let w = wl("w", 100, 64, r#"on-disconnect = "keep""#);
    for status in [NodeStatus::Suspect, NodeStatus::Down] {
        let s = snap(region(status), vec![w.clone()], vec![alloc(&w, 1, 0, "e1")]);
        for later in [0, 3_600_000, 86_400_000 * 30] {
            let plan = schedule(
                &s,
                &eval("w", Trigger::NodeDown(NodeId::from("e1"))),
                Timestamp(NOW.0 + later),
                &mut rng(1),
            )
            .unwrap();
            assert!(plan.is_noop(), "{status}: {plan:?}");
            assert_eq!(plan.follow_up_at, None);
        }
    }
}

/// `(now, lease_expires_at)` → replaced?, follow-up.
#[test]
fn replace_after_waits_for_the_deadline_and_the_lease() {
    let w = wl("w", 100, 64, r#"replace-after = "90s""#);
    let deadline = GONE_AT.plus(Duration::from_secs(90)); // NOW + 30 s
    /// (name, now, lease expiry, replaced?, follow-up)
    type Case = (
        &'static str,
        Timestamp,
        Option<Timestamp>,
        bool,
        Option<Timestamp>,
    );
    let cases: Vec<Case> = vec![
        (
            "before the deadline",
            NOW,
            Some(Timestamp(NOW.0 - 1)),
            false,
            Some(deadline),
        ),
        (
            "deadline passed, lease still valid",
            Timestamp(deadline.0 + 1),
            Some(Timestamp(deadline.0 + 5_000)),
            false,
            Some(Timestamp(deadline.0 + 5_000)),
        ),
        (
            "both passed",
            Timestamp(deadline.0 + 5_000),
            Some(Timestamp(deadline.0 + 5_000)),
            true,
            None,
        ),
        ("never held a lease", deadline, None, true, None),
    ];
    for status in [NodeStatus::Suspect, NodeStatus::Down] {
        for (name, now, lease, replaced, follow) in &cases {
            let mut a = alloc(&w, 1, 0, "e1");
            a.lease_expires_at = *lease;
            let s = snap(region(status), vec![w.clone()], vec![a]);
            let plan = schedule(&s, &eval("w", Trigger::FollowUp), *now, &mut rng(1)).unwrap();
            assert_eq!(plan.follow_up_at, *follow, "{status} {name}");
            if *replaced {
                assert_eq!(placed(&plan), vec!["e2"], "{status} {name}");
                let new = plan.placements().next().unwrap();
                assert_eq!(new.slot, 0);
                assert_eq!(new.previous, Some(AllocId(1)));
                assert_eq!(new.placement.reason, PlaceReason::ReplaceDisconnected);
                assert_eq!(
                    stopped(&plan),
                    vec![(
                        "e1".into(),
                        AllocId(1),
                        StopReason::Disconnected {
                            lease_expires_at: *lease
                        }
                    )]
                );
            } else {
                assert!(plan.is_noop(), "{status} {name}: {plan:?}");
            }
        }
    }
}

#[test]
fn lost_nodes_and_self_stopped_instances_are_replaced_whatever_the_policy() {
    for intent in [r#"on-disconnect = "keep""#, r#"replace-after = "1h""#] {
        let w = wl("w", 100, 64, intent);
        // e1 left the region.
        let s = snap(
            vec![node("e2", 1000, 1024)],
            vec![w.clone()],
            vec![alloc(&w, 1, 0, "e1")],
        );
        let plan = run(&s, "w");
        assert_eq!(placed(&plan), vec!["e2"], "{intent}");
        assert_eq!(
            stopped(&plan),
            vec![("e1".into(), AllocId(1), StopReason::NodeLost)]
        );
        // The node reports it stopped the instance itself.
        let mut lost = alloc(&w, 1, 0, "e1");
        lost.client = ClientState::Lost;
        let s = snap(region(NodeStatus::Ready), vec![w.clone()], vec![lost]);
        let plan = run(&s, "w");
        assert_eq!(placed(&plan).len(), 1, "{intent}");
        assert_eq!(
            stopped(&plan),
            vec![("e1".into(), AllocId(1), StopReason::Failed)]
        );
    }
}

#[test]
fn disconnected_instances_keep_their_slot_and_ready_duplicates_win() {
    // count = 2; slot 0 on a down node (keep), slot 1 missing → one
    // placement, for slot 1 only.
    let w = wl("w", 100, 64, "count = 2");
    let s = snap(
        region(NodeStatus::Down),
        vec![w.clone()],
        vec![alloc(&w, 1, 0, "e1")],
    );
    let plan = run(&s, "w");
    assert_eq!(placed(&plan), vec!["e2"]);
    assert_eq!(plan.placements().next().unwrap().slot, 1);
    // Two holders of slot 0 (a race): the one on the ready node stays.
    let s = snap(
        region(NodeStatus::Down),
        vec![w.clone()],
        vec![
            alloc(&w, 1, 0, "e1"),
            alloc(&w, 2, 0, "e2"),
            alloc(&w, 3, 1, "e2"),
        ],
    );
    let plan = run(&s, "w");
    assert_eq!(
        stopped(&plan),
        vec![("e1".into(), AllocId(1), StopReason::NotNeeded)]
    );
    assert!(placed(&plan).is_empty());
}

#[test]
fn per_node_keep_instances_stay_while_their_devices_get_a_new_instance() {
    let mut w = wl("w", 100, 64, "per-node = true");
    w.device_group = Some("g".into());
    // e1 is down and its devices now report through e2.
    let s = snap(
        vec![
            node("e1", 1000, 1024).status(NodeStatus::Down, GONE_AT),
            node("e2", 1000, 1024).carries("g"),
        ],
        vec![w.clone()],
        vec![alloc(&w, 1, 0, "e1")],
    );
    let plan = run(&s, "w");
    assert_eq!(placed(&plan), vec!["e2"]);
    assert!(stopped(&plan).is_empty(), "the keep instance is left alone");
    let new = plan.placements().next().unwrap();
    assert_eq!(new.slot, 1, "a new slot: the old one still holds 0");
    assert_eq!(new.previous, Some(AllocId(1)), "its state hands over");
}
