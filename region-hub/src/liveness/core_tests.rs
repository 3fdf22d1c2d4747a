//! Command-list tests of the failure detector core: inputs with explicit
//! times, assertions on the decisions it proposes.

use std::sync::Arc;

use proptest::prelude::*;
use strata_protocol::liveness::{
    Classification as C, EdgeLiveness, EventKind as K, Evidence as Ev, LivenessState as S,
};
use strata_protocol::monitoring::{InstanceStatus, MonitorCapacity};
use strata_protocol::EdgeStatus;

use super::core::{CloseKind, Command, CoreConfig, LivenessCore, Now, RETRY_MS};
use super::view::SoftEdges;
use crate::fsm::EdgeTransition;

const WALL: i64 = 1_700_000_000_000;

fn t(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: WALL + ms as i64,
    }
}

fn status(edge: &str) -> Arc<EdgeStatus> {
    Arc::new(EdgeStatus {
        edge: edge.into(),
        ..EdgeStatus::default()
    })
}

/// No leader grace unless a test wants one; otherwise the defaults
/// (suspect after 600 ms, down 300 ms later).
fn cfg() -> CoreConfig {
    CoreConfig {
        leader_grace_ms: 0,
        ..CoreConfig::default()
    }
}

/// A core that leads since `t(0)`, whose proposals are applied at once
/// (as Raft would), so tests see decisions as a plain list.
struct H {
    core: LivenessCore,
    seq: u64,
}

impl H {
    fn new(cfg: CoreConfig) -> H {
        let mut core = LivenessCore::new(cfg);
        core.handle_leadership_gained(vec![], t(0));
        H { core, seq: 0 }
    }

    fn with_priors(cfg: CoreConfig, priors: Vec<(&str, Option<EdgeLiveness>)>) -> H {
        let mut core = LivenessCore::new(cfg);
        core.handle_leadership_gained(
            priors.into_iter().map(|(n, p)| (n.to_owned(), p)).collect(),
            t(0),
        );
        H { core, seq: 100 }
    }

    /// Drains the commands, applying every decision.
    fn take(&mut self, now: Now) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(c) = self.core.poll_command() {
            if let Command::Replicate(tr) = &c {
                self.seq += 1;
                let mut l = tr.liveness.clone();
                l.event_seq = self.seq;
                self.core.handle_applied(&tr.edge, l, now);
            }
            out.push(c);
        }
        out
    }

    /// The decisions only (reports left out).
    fn decisions(&mut self, now: Now) -> Vec<EdgeTransition> {
        self.take(now)
            .into_iter()
            .filter_map(|c| match c {
                Command::Replicate(t) => Some(t),
                Command::ReplicateReport { .. } => None,
            })
            .collect()
    }

    fn hb(&mut self, edge: &str, boot: u64, ms: u64) -> Vec<EdgeTransition> {
        self.core.handle_heartbeat(edge, boot, status(edge), t(ms));
        self.decisions(t(ms))
    }

    fn tick(&mut self, ms: u64) -> Vec<EdgeTransition> {
        self.core.handle_tick(t(ms));
        self.decisions(t(ms))
    }

    fn state(&self, edge: &str) -> S {
        SoftEdges::of(&self.core).edges[edge].liveness.state
    }
}

/// (kind, state, classification) of each decision.
fn kinds(ts: &[EdgeTransition]) -> Vec<(K, S, C)> {
    ts.iter()
        .map(|t| (t.kind, t.liveness.state, t.liveness.classification))
        .collect()
}

fn prior(state: S, class: C, boot_id: u64) -> Option<EdgeLiveness> {
    Some(EdgeLiveness {
        state,
        classification: class,
        evidence: vec![],
        boot_id,
        since_ms: WALL - 60_000,
        last_heartbeat_ms: WALL - 61_000,
        detection_ms: None,
        event_seq: 7,
    })
}

#[test]
fn missed_heartbeats_make_an_edge_suspect_then_down() {
    let mut h = H::new(cfg());
    let up = h.hb("e1", 7, 1_000);
    assert_eq!(kinds(&up), vec![(K::EdgeUp, S::Up, C::None)]);
    assert_eq!(up[0].from, S::Unknown);
    assert_eq!(up[0].liveness.boot_id, 7);
    assert_eq!(h.core.poll_timeout(), Some(1_600));
    assert!(h.tick(1_599).is_empty());
    let suspect = h.tick(1_600);
    assert_eq!(
        kinds(&suspect),
        vec![(K::EdgeSuspect, S::Suspect, C::Undetermined)]
    );
    assert_eq!(suspect[0].liveness.evidence, vec![Ev::MissedHeartbeats]);
    assert_eq!(h.core.poll_timeout(), Some(1_900));
    assert!(h.tick(1_899).is_empty());
    let down = h.tick(1_900);
    assert_eq!(kinds(&down), vec![(K::EdgeDown, S::Down, C::Undetermined)]);
    let l = &down[0].liveness;
    assert_eq!(l.detection_ms, Some(900), "from the last heartbeat");
    assert_eq!(l.last_heartbeat_ms, WALL + 1_000);
    assert_eq!(l.since_ms, WALL + 1_900);
    assert_eq!(down[0].at_ms, WALL + 1_900);
    assert!(
        down[0].message.contains("no heartbeat for 900 ms"),
        "{}",
        down[0].message
    );
    // Down is final until it is heard from again: nothing more to do.
    assert!(h.tick(60_000).is_empty());
    assert_eq!(h.state("e1"), S::Down);
}

#[test]
fn steady_heartbeats_and_batches_keep_an_edge_up() {
    let mut h = H::new(cfg());
    h.hb("e1", 7, 0);
    for ms in (250..10_000).step_by(250) {
        assert!(h.hb("e1", 7, ms).is_empty());
        assert!(h.tick(ms + 10).is_empty());
    }
    // Batches prove it alive too (a heartbeat stuck behind a backlog).
    for ms in (10_000..11_000).step_by(200) {
        h.core.handle_activity("e1", t(ms));
        assert!(h.tick(ms + 1).is_empty());
    }
    assert_eq!(h.state("e1"), S::Up);
}

#[test]
fn a_suspect_edge_heard_within_the_grace_is_up_again() {
    let mut h = H::new(cfg());
    h.hb("e1", 7, 1_000);
    assert_eq!(h.tick(1_700).len(), 1);
    let back = h.hb("e1", 7, 1_800);
    assert_eq!(kinds(&back), vec![(K::EdgeUp, S::Up, C::Undetermined)]);
    assert_eq!(back[0].from, S::Suspect);
    assert!(
        back[0].message.contains("after 100 ms suspect"),
        "{}",
        back[0].message
    );
    // A batch clears suspicion as well.
    assert_eq!(h.tick(2_400).len(), 1);
    h.core.handle_activity("e1", t(2_500));
    assert_eq!(kinds(&h.decisions(t(2_500)))[0].1, S::Up);
}

#[test]
fn losing_the_last_connection_speeds_suspicion() {
    let mut h = H::new(cfg());
    h.core.handle_connection_opened("e1", 1);
    h.core.handle_connection_opened("e1", 2);
    h.hb("e1", 7, 1_000);
    // Another connection is still open: no evidence.
    h.core
        .handle_connection_closed("e1", 1, CloseKind::Closed, t(1_050));
    assert!(h.decisions(t(1_050)).is_empty());
    h.core
        .handle_connection_closed("e1", 2, CloseKind::TimedOut, t(1_100));
    let suspect = h.decisions(t(1_100));
    assert_eq!(
        kinds(&suspect),
        vec![(K::EdgeSuspect, S::Suspect, C::Undetermined)]
    );
    assert_eq!(suspect[0].liveness.evidence, vec![Ev::IdleTimeout]);
    // Down after the grace from the suspicion: 400 ms after the last
    // heartbeat instead of 900.
    assert!(h.tick(1_399).is_empty());
    let down = h.tick(1_400);
    assert_eq!(down[0].liveness.detection_ms, Some(400));
    assert_eq!(
        down[0].liveness.evidence,
        vec![Ev::IdleTimeout, Ev::MissedHeartbeats]
    );
}

#[test]
fn a_shutdown_close_is_down_at_once_and_its_restart_is_not_a_crash() {
    let mut h = H::new(cfg());
    h.core.handle_connection_opened("e1", 1);
    h.hb("e1", 7, 1_000);
    h.core
        .handle_connection_closed("e1", 1, CloseKind::Shutdown, t(1_010));
    let down = h.decisions(t(1_010));
    assert_eq!(kinds(&down), vec![(K::EdgeDown, S::Down, C::Shutdown)]);
    assert_eq!(down[0].liveness.evidence, vec![Ev::ShutdownClose]);
    assert_eq!(down[0].liveness.detection_ms, Some(10));
    let back = h.hb("e1", 8, 5_000);
    assert_eq!(kinds(&back), vec![(K::EdgeBack, S::Up, C::Shutdown)]);
    assert_eq!(
        back[0].liveness.evidence,
        vec![Ev::ShutdownClose, Ev::NewBootId]
    );
    assert_eq!(back[0].liveness.boot_id, 8);
    assert!(
        back[0].message.contains("after 3990 ms down"),
        "{}",
        back[0].message
    );
}

#[test]
fn a_reset_is_a_crash() {
    let mut h = H::new(cfg());
    h.core.handle_connection_opened("e1", 1);
    h.hb("e1", 7, 1_000);
    h.core
        .handle_connection_closed("e1", 1, CloseKind::Reset, t(1_100));
    assert_eq!(
        kinds(&h.decisions(t(1_100))),
        vec![(K::EdgeSuspect, S::Suspect, C::Crash)]
    );
    assert_eq!(
        kinds(&h.tick(1_400)),
        vec![(K::EdgeDown, S::Down, C::Crash)]
    );
}

#[test]
fn the_boot_id_tells_a_crash_from_a_partition_on_return() {
    for (boot, class, evidence) in [
        (8, C::Crash, Ev::NewBootId),
        (7, C::Partition, Ev::SameBootId),
    ] {
        let mut h = H::new(cfg());
        h.hb("e1", 7, 1_000);
        h.tick(1_600);
        h.tick(1_900);
        let back = h.hb("e1", boot, 20_000);
        assert_eq!(
            kinds(&back),
            vec![(K::EdgeBack, S::Up, class)],
            "boot {boot}"
        );
        assert_eq!(back[0].from, S::Down);
        assert_eq!(
            back[0].liveness.evidence,
            vec![Ev::MissedHeartbeats, evidence]
        );
    }
    // An edge that sends no boot id (older than protocol 4) stays
    // undetermined.
    let mut h = H::new(cfg());
    h.hb("e1", 0, 1_000);
    h.tick(1_600);
    h.tick(1_900);
    assert_eq!(
        kinds(&h.hb("e1", 0, 3_000)),
        vec![(K::EdgeBack, S::Up, C::Undetermined)]
    );
}

#[test]
fn a_restart_faster_than_the_grace_is_still_recorded_as_a_crash() {
    let mut h = H::new(cfg());
    h.hb("e1", 7, 1_000);
    let back = h.hb("e1", 9, 1_200);
    assert_eq!(kinds(&back), vec![(K::EdgeBack, S::Up, C::Crash)]);
    assert_eq!(back[0].from, S::Up);
    assert_eq!(back[0].liveness.evidence, vec![Ev::NewBootId]);
    // From suspect too.
    h.tick(1_800);
    let back = h.hb("e1", 10, 1_850);
    assert_eq!(kinds(&back), vec![(K::EdgeBack, S::Up, C::Crash)]);
    assert_eq!(
        back[0].liveness.evidence,
        vec![Ev::MissedHeartbeats, Ev::NewBootId]
    );
}

#[test]
fn devices_moving_away_from_a_silent_edge_make_it_an_edge_failure() {
    let mut h = H::new(cfg());
    h.hb("e1", 7, 1_000);
    h.hb("e2", 5, 1_000);
    // Devices roaming between live edges say nothing.
    h.core.handle_devices_moved("e1", "e2", 3, t(1_100));
    assert!(h.decisions(t(1_100)).is_empty());
    h.hb("e2", 5, 1_500);
    h.tick(1_600); // e1 suspect
    h.hb("e2", 5, 1_800);
    h.tick(1_900); // e1 down
    h.core.handle_devices_moved("e1", "e2", 2, t(2_500));
    let re = h.decisions(t(2_500));
    assert_eq!(
        kinds(&re),
        vec![(K::EdgeReclassified, S::Down, C::EdgeFailure)]
    );
    assert_eq!(re[0].from, S::Down);
    assert_eq!(re[0].at_ms, WALL + 2_500);
    assert_eq!(
        re[0].liveness.since_ms,
        WALL + 1_900,
        "still down since then"
    );
    assert!(re[0]
        .message
        .contains("2 of its devices now report through e2"));
    // More devices: no new event.
    h.core.handle_devices_moved("e1", "e2", 5, t(2_600));
    assert!(h.decisions(t(2_600)).is_empty());
    // While suspect, it decides the classification of the down decision.
    let mut h = H::new(cfg());
    h.hb("e1", 7, 1_000);
    h.tick(1_600);
    h.core.handle_devices_moved("e1", "e2", 1, t(1_700));
    assert!(h.decisions(t(1_700)).is_empty());
    assert_eq!(
        kinds(&h.tick(1_900)),
        vec![(K::EdgeDown, S::Down, C::EdgeFailure)]
    );
}

#[test]
fn a_new_leader_waits_a_full_grace_and_does_not_see_a_mass_failure() {
    let cfg = CoreConfig {
        leader_grace_ms: 5_000,
        ..CoreConfig::default()
    };
    let mut h = H::with_priors(
        cfg,
        vec![
            ("a", prior(S::Up, C::None, 1)),
            ("b", prior(S::Up, C::None, 2)),
            ("c", prior(S::Down, C::Undetermined, 3)),
            ("d", None),
        ],
    );
    for name in ["a", "b", "c", "d"] {
        assert_eq!(h.state(name), S::Unknown);
    }
    assert_eq!(h.core.poll_timeout(), Some(5_000));
    // Edges find the new leader over the next seconds: quietly up again.
    assert!(h.hb("a", 1, 1_500).is_empty());
    assert_eq!(h.state("a"), S::Up);
    // One it heard and then lost is judged as usual, grace or not: its
    // silence is no artifact of the leader change.
    assert_eq!(
        kinds(&h.tick(2_100)),
        vec![(K::EdgeSuspect, S::Suspect, C::Undetermined)]
    );
    assert_eq!(
        kinds(&h.tick(2_400)),
        vec![(K::EdgeDown, S::Down, C::Undetermined)]
    );
    // The ones it never heard from wait for the end of the grace; c was
    // down already and stays so without a new decision.
    assert!(h.tick(4_999).is_empty());
    let downs = h.tick(5_000);
    let names: Vec<(&str, K)> = downs.iter().map(|t| (t.edge.as_str(), t.kind)).collect();
    assert_eq!(names, vec![("b", K::EdgeDown), ("d", K::EdgeDown)]);
    assert_eq!(downs[0].liveness.evidence, vec![Ev::LeaderChange]);
    assert_eq!(
        downs[0].liveness.detection_ms, None,
        "never heard by this leader"
    );
    assert_eq!(h.state("c"), S::Down);
    // c returns with its old boot id: a partition.
    assert_eq!(
        kinds(&h.hb("c", 3, 6_000)),
        vec![(K::EdgeBack, S::Up, C::Partition)]
    );
    // b returns with another: a crash.
    assert_eq!(
        kinds(&h.hb("b", 22, 6_000)),
        vec![(K::EdgeBack, S::Up, C::Crash)]
    );
}

#[test]
fn a_new_leader_that_hears_a_new_boot_id_records_the_restart() {
    let mut h = H::with_priors(cfg(), vec![("a", prior(S::Up, C::None, 1))]);
    let back = h.hb("a", 2, 100);
    assert_eq!(kinds(&back), vec![(K::EdgeBack, S::Up, C::Crash)]);
    assert_eq!(back[0].from, S::Unknown);
}

#[test]
fn a_follower_decides_nothing_and_a_lost_leadership_drops_the_soft_state() {
    let mut core = LivenessCore::new(cfg());
    core.handle_heartbeat("e1", 1, status("e1"), t(0));
    core.handle_tick(t(10_000));
    assert_eq!(core.poll_command(), None);
    assert_eq!(core.poll_timeout(), None);
    core.handle_leadership_gained(vec![], t(0));
    core.handle_heartbeat("e1", 1, status("e1"), t(100));
    assert!(core.poll_command().is_some());
    core.handle_leadership_lost();
    assert!(core.is_empty());
    assert_eq!(core.poll_command(), None, "undelivered commands dropped");
    core.handle_tick(t(20_000));
    assert_eq!(core.poll_command(), None);
}

#[test]
fn a_flapping_edge_is_held_down_until_it_heartbeats_steadily() {
    let mut h = H::new(cfg()); // 3 downs in 60 s, hold 10 s
    let mut now = 1_000;
    for round in 0..3 {
        let d = h.hb("e1", 7, now);
        if round > 0 {
            assert_eq!(kinds(&d), vec![(K::EdgeBack, S::Up, C::Partition)]);
        }
        h.tick(now + 600);
        assert_eq!(kinds(&h.tick(now + 900))[0].1, S::Down);
        now += 2_000;
    }
    // The third return is held: heartbeats, but still down.
    assert!(h.hb("e1", 7, now).is_empty());
    assert_eq!(h.state("e1"), S::Down);
    // A gap resets the hold.
    assert!(h.hb("e1", 7, now + 250).is_empty());
    assert!(h.tick(now + 900).is_empty());
    let restart = now + 1_000;
    for ms in (restart..restart + 10_000).step_by(250) {
        assert!(h.hb("e1", 7, ms).is_empty(), "held at {ms}");
        assert!(h.tick(ms + 1).is_empty());
    }
    let back = h.hb("e1", 7, restart + 10_000);
    assert_eq!(kinds(&back), vec![(K::EdgeBack, S::Up, C::Partition)]);
}

#[test]
fn a_decision_that_did_not_commit_is_proposed_again() {
    let mut core = LivenessCore::new(cfg());
    core.handle_leadership_gained(vec![], t(0));
    core.handle_heartbeat("e1", 7, status("e1"), t(100));
    let Some(Command::Replicate(up)) = core.poll_command() else {
        panic!("up")
    };
    while core.poll_command().is_some() {}
    core.handle_replicate_failed("e1", up.liveness.state, up.liveness.since_ms, t(200));
    core.handle_heartbeat("e1", 7, status("e1"), t(700));
    core.handle_tick(t(200 + RETRY_MS - 1));
    assert_eq!(core.poll_command(), None, "waits {RETRY_MS} ms");
    core.handle_heartbeat("e1", 7, status("e1"), t(1_150));
    core.handle_tick(t(200 + RETRY_MS));
    let Some(Command::Replicate(again)) = core.poll_command() else {
        panic!("again")
    };
    assert_eq!((again.kind, again.liveness.state), (K::EdgeUp, S::Up));
    assert_eq!(
        again.liveness.since_ms, up.liveness.since_ms,
        "same decision"
    );
    // Applied now: nothing more.
    let mut l = again.liveness.clone();
    l.event_seq = 1;
    core.handle_applied("e1", l, t(1_210));
    core.handle_heartbeat("e1", 7, status("e1"), t(3_000));
    core.handle_tick(t(3_001));
    assert!(!matches!(core.poll_command(), Some(Command::Replicate(_))));
}

#[test]
fn reports_are_replicated_on_material_change_and_at_least_every_interval() {
    let mut h = H::new(cfg());
    let report = |instances: u32, used: u64| {
        Arc::new(EdgeStatus {
            edge: "e1".into(),
            capacity: MonitorCapacity {
                memory_mib: 256,
                cpu_millicores: 1000,
            },
            instances: (0..instances)
                .map(|i| InstanceStatus {
                    tenant: "t".into(),
                    name: format!("m{i}"),
                    state: "running".into(),
                    used_memory_bytes: used,
                    ..InstanceStatus::default()
                })
                .collect(),
            ..EdgeStatus::default()
        })
    };
    let mut reports = Vec::new();
    let mut feed = |h: &mut H, ms: u64, instances: u32, used: u64| {
        h.core
            .handle_heartbeat("e1", 7, report(instances, used), t(ms));
        h.core.handle_tick(t(ms));
        for c in h.take(t(ms)) {
            if let Command::ReplicateReport { received_ms, .. } = c {
                reports.push(received_ms - WALL);
            }
        }
    };
    feed(&mut h, 0, 0, 0); // first report
    for ms in (250..1_000).step_by(250) {
        feed(&mut h, ms, 0, ms); // measurements only
    }
    feed(&mut h, 1_000, 1, 0); // an instance appears: material
    feed(&mut h, 1_250, 2, 0); // another, but within 1 s: later
    for ms in (1_500..32_500).step_by(250) {
        feed(&mut h, ms, 2, ms);
    }
    assert_eq!(reports, vec![0, 1_000, 2_000, 32_000]);
}

#[test]
fn the_soft_view_shows_the_current_decision_and_report() {
    let mut h = H::new(cfg());
    h.hb("e1", 7, 1_000);
    let v = SoftEdges::of(&h.core);
    assert!(v.leader);
    let e = &v.edges["e1"];
    assert_eq!(e.liveness.state, S::Up);
    assert_eq!(e.liveness.boot_id, 7);
    assert_eq!(e.last_seen_ms, Some(WALL + 1_000));
    assert_eq!(e.status.as_ref().unwrap().edge, "e1");
    assert!(e.liveness.event_seq > 0, "replicated");
    h.tick(1_600);
    h.tick(1_900);
    let v = SoftEdges::of(&h.core);
    assert_eq!(v.edges["e1"].liveness.state, S::Down);
    assert_eq!(v.edges["e1"].liveness.detection_ms, Some(900));
}

proptest! {
    /// Whatever the heartbeat gaps, an edge is declared down only after a
    /// silence of at least suspect-after + grace, and an edge whose gaps
    /// all stay under suspect-after is never even suspected.
    #[test]
    fn down_only_after_the_full_silence(gaps in proptest::collection::vec(10u64..1_500, 1..60)) {
        let c = cfg();
        let mut h = H::new(c.clone());
        let mut now = 0;
        let mut decisions = h.hb("e1", 1, 0);
        for gap in &gaps {
            // Tick every 10 ms through the gap, as the driver would.
            let mut at = now + 10;
            while at < now + gap {
                decisions.extend(h.tick(at));
                at += 10;
            }
            now += gap;
            decisions.extend(h.hb("e1", 1, now));
        }
        for d in &decisions {
            if d.kind == K::EdgeDown {
                let det = d.liveness.detection_ms.unwrap();
                prop_assert!(det >= c.suspect_after_ms + c.grace_ms, "{det}");
            }
        }
        if gaps.iter().all(|g| *g < c.suspect_after_ms) {
            prop_assert_eq!(decisions.len(), 1, "only the first up: {:?}", kinds(&decisions));
        }
    }
}

/// Leases are renewable exactly while the edge is up and that is in the
/// log: not while down, not while held down for flapping, again after.
#[test]
fn leases_are_renewable_again_after_a_flap_hold() {
    let mut h = H::new(cfg());
    let mut now = 1_000;
    for _round in 0..3 {
        h.hb("e1", 7, now);
        assert!(h.core.lease_renewable("e1"), "up at {now}");
        h.tick(now + 600);
        h.tick(now + 900);
        assert!(!h.core.lease_renewable("e1"));
        now += 2_000;
    }
    for ms in (now..now + 12_000).step_by(250) {
        h.hb("e1", 7, ms);
        h.tick(ms + 1);
    }
    assert_eq!(h.state("e1"), S::Up);
    assert!(
        h.core.lease_renewable("e1"),
        "renewable once back from the hold"
    );
}

/// Found by the chaos soak: a held edge whose first down leaves the flap
/// window before the hold ends is declared back by a heartbeat, and the
/// hold must go with it (it kept leases from being granted for ever).
#[test]
fn a_hold_outlived_by_the_flap_window_ends_when_the_edge_is_back() {
    let mut h = H::new(cfg()); // 3 downs in 60 s, hold 10 s
    for start in [1_000, 21_000, 52_000] {
        h.hb("e1", 7, start);
        h.tick(start + 600);
        h.tick(start + 900); // down at start + 900
    }
    // Held: the third return is within 60 s of the first down (1.9 s).
    assert!(h.hb("e1", 7, 54_000).is_empty());
    assert_eq!(h.state("e1"), S::Down);
    // Heartbeating steadily: when the first down leaves the window
    // (61.9 s), before the hold's 10 s are over, it is back.
    let mut back = Vec::new();
    for ms in (54_250..63_000).step_by(250) {
        back.extend(h.hb("e1", 7, ms));
        h.tick(ms + 1);
    }
    assert_eq!(kinds(&back), vec![(K::EdgeBack, S::Up, C::Partition)]);
    assert!(
        h.core.lease_renewable("e1"),
        "{}",
        h.core.lease_refusal("e1")
    );
}
