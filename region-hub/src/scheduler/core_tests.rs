//! The scheduler core as command lists, against the real state machine:
//! a [`World`] applies every command through `fsm::apply` and feeds the
//! core the changes it returns, as the Raft node does, with a hand-moved
//! clock. Triggers, coalescing, one plan per workload in flight, refusal
//! and re-evaluation, rebuilds, follow-ups, leases across disconnects and
//! leader changes.

use std::collections::BTreeMap;

use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, LivenessState};
use strata_protocol::monitoring::{InstanceStatus, MonitorCapacity};
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::workload::MonitorSpec;
use strata_protocol::{EdgeStatus, Metric, SpoolEntry, TelemetryBatch, TelemetryRecord};
use strata_sched::{ClientState, Desired, PlaceReason, StopReason, WorkloadId};

use super::core::*;
use super::lease::LeaseConfig;
use crate::fsm::{self, Applied, Command as Fsm, EdgeTransition, PlanCommit, RegionState};

const T0: i64 = 10_000_000;
const MARGIN: u64 = 1_000;
const BOUND: u64 = 2_000;

struct World {
    state: RegionState,
    core: SchedulerCore,
    now: i64,
    /// Plans proposed and not yet applied.
    proposed: Vec<PlanCommit>,
}

fn cfg() -> CoreConfig {
    CoreConfig {
        lease: LeaseConfig {
            margin_ms: MARGIN,
            leader_bound_ms: BOUND,
        },
        ..CoreConfig::default()
    }
}

fn spec(name: &str, placement: serde_json::Value) -> MonitorSpec {
    let v = serde_json::json!({
        "name": name, "tenant": "acme",
        "artifact": {"sha256": "ab".repeat(32), "size-bytes": 3},
        "selector": {"tenant": "acme", "device-globs": ["*"]},
        "resources": {"memory-mib": 64, "cpu-millicores": 100},
        "placement": placement,
    });
    MonitorSpec::from_json_str(&v.to_string()).unwrap()
}

fn w(name: &str) -> WorkloadId {
    WorkloadId::new("acme", name)
}

impl World {
    /// Edges e1..=en, each with a device, and the artifact; not leading.
    fn new(edges: usize) -> World {
        let mut w = World {
            state: RegionState::default(),
            core: SchedulerCore::new(cfg()),
            now: T0,
            proposed: Vec::new(),
        };
        for i in 1..=edges {
            let e = format!("e{i}");
            w.apply(Fsm::StoreBatch {
                batch: TelemetryBatch {
                    edge: e.clone(),
                    epoch: 1,
                    first_seq: 0,
                    entries: vec![SpoolEntry::Telemetry(TelemetryRecord {
                        tenant: "acme".into(),
                        device: format!("d{i}"),
                        ts_ms: 1,
                        seq: None,
                        metrics: vec![Metric {
                            name: "t".into(),
                            value: 1.0,
                        }],
                        tags: vec![],
                    })],
                },
                received_ms: T0,
            });
            w.report(&e, 1000, vec![]);
            w.liveness(&e, LivenessState::Up, T0);
        }
        w.apply(Fsm::PutArtifact {
            sha256: "ab".repeat(32),
            bytes: vec![1, 2, 3],
        });
        w
    }

    /// Applies `cmd` at the next index and feeds the core its changes.
    fn apply(&mut self, cmd: Fsm) -> Applied {
        let index = self.state.applied_index() + 1;
        let a = fsm::apply(&mut self.state, index, &fsm::encode_command(&cmd)).unwrap();
        self.core.handle_changes(index, a.changes.clone(), self.now);
        if !a.device_moves.is_empty() {
            self.core.handle_devices_moved(self.now);
        }
        a
    }

    fn report(&mut self, edge: &str, cpu: u32, instances: Vec<InstanceStatus>) {
        self.apply(Fsm::EdgeReport {
            status: EdgeStatus {
                edge: edge.into(),
                capacity: MonitorCapacity {
                    memory_mib: 1024,
                    cpu_millicores: cpu,
                },
                instances,
                ..EdgeStatus::default()
            },
            facts: NodeFacts::default(),
            received_ms: self.now,
        });
    }

    fn liveness(&mut self, edge: &str, state: LivenessState, last_heartbeat_ms: i64) {
        let now = self.now;
        self.apply(Fsm::EdgeTransition(EdgeTransition {
            edge: edge.into(),
            kind: EventKind::EdgeUp,
            from: LivenessState::Unknown,
            at_ms: now,
            liveness: EdgeLiveness {
                state,
                classification: Classification::Undetermined,
                evidence: vec![],
                boot_id: 1,
                since_ms: now,
                last_heartbeat_ms,
                detection_ms: None,
                event_seq: 0,
            },
            message: String::new(),
        }));
    }

    fn lead(&mut self) {
        self.core
            .handle_leadership_gained(Rebuild::of(&self.state), self.now, 7);
    }

    fn submit(&mut self, name: &str, placement: serde_json::Value) {
        self.apply(Fsm::PutWorkload {
            spec: Box::new(spec(name, placement)),
            now_ms: self.now,
        });
    }

    /// Runs every ready evaluation; returns the commands, keeping the
    /// proposals to apply later.
    fn evaluate(&mut self) -> Vec<Command> {
        while self.core.run_next(self.now) {}
        let cmds = self.core.take_commands();
        for c in &cmds {
            if let Command::Propose(p) = c {
                self.proposed.push((**p).clone());
            }
        }
        cmds
    }

    /// Applies every proposed plan, in order.
    fn commit(&mut self) -> Vec<Applied> {
        let plans = std::mem::take(&mut self.proposed);
        plans
            .into_iter()
            .map(|p| self.apply(Fsm::ApplyPlan(Box::new(p))))
            .collect()
    }

    /// Evaluates and commits until nothing more is proposed.
    fn settle(&mut self) {
        for _ in 0..20 {
            self.evaluate();
            if self.proposed.is_empty() {
                return;
            }
            self.commit();
        }
        panic!("the scheduler never settled");
    }

    fn running(&self, name: &str) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .state
            .sched()
            .allocs_of(&w(name))
            .filter(|r| r.runs())
            .map(|r| (r.alloc.node.0.clone(), r.alloc.slot))
            .collect();
        v.sort();
        v
    }
}

fn evaluated(cmds: &[Command]) -> Vec<&'static str> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Observe(Observation::Evaluated { trigger }) => Some(*trigger),
            _ => None,
        })
        .collect()
}

fn proposals(cmds: &[Command]) -> Vec<&PlanCommit> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Propose(p) => Some(p.as_ref()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_leader_evaluates_every_workload_once_and_places_them() {
    let mut wd = World::new(3);
    wd.submit("a", serde_json::json!({"count": 2}));
    wd.submit("b", serde_json::json!({}));
    assert!(wd.core.take_commands().is_empty(), "not leading: nothing");
    wd.lead();
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["leader-change", "leader-change"]);
    let p = proposals(&cmds);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].workload, w("a"));
    assert_eq!(p[0].nodes.values().map(|n| n.place.len()).sum::<usize>(), 2);
    wd.commit();
    assert_eq!(wd.running("a").len(), 2);
    assert_eq!(wd.running("b").len(), 1);
    // Placed and reconciled: another look changes nothing, and proposes
    // nothing.
    assert!(proposals(&wd.evaluate()).is_empty());
}

#[test]
fn a_rebuilds_snapshot_reserves_what_the_cores_own_does() {
    // The capacity summary is estimated from `Rebuild::into_snapshot`: it
    // must count room as the leading core does, one instance per edge.
    let mut wd = World::new(3);
    wd.submit("a", serde_json::json!({"count": 2}));
    wd.lead();
    wd.settle();
    let mut plain = CoreConfig::default().sched;
    plain.one_per_node = false;
    let rebuilt = Rebuild::of(&wd.state).into_snapshot(plain);
    assert!(rebuilt.config().one_per_node, "forced, as the core does");
    let core = wd.core.snapshot().expect("leading");
    assert_eq!(rebuilt.index(), core.index());
    let reserved = |s: &strata_sched::ClusterSnapshot| -> Vec<_> {
        s.nodes()
            .map(|n| (n.id.clone(), s.reserved(&n.id)))
            .collect()
    };
    assert_eq!(reserved(&rebuilt), reserved(core));
    let busy = reserved(&rebuilt)
        .iter()
        .filter(|(_, r)| !r.is_zero())
        .count();
    assert_eq!(busy, 2, "two of the three edges run an instance of a");
}

#[test]
fn triggers_coalesce_and_a_workload_has_one_plan_in_flight() {
    let mut wd = World::new(2);
    wd.lead();
    wd.submit("a", serde_json::json!({}));
    // An update before the submit was evaluated: one evaluation.
    wd.submit("a", serde_json::json!({"count": 2}));
    wd.submit("b", serde_json::json!({}));
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["submit", "submit"]);
    assert_eq!(wd.core.in_flight(), 2);
    // While a's plan is in flight, a trigger for it waits; b is free.
    wd.submit("a", serde_json::json!({"count": 1}));
    let cmds = wd.evaluate();
    assert!(
        evaluated(&cmds).is_empty(),
        "a waits for its plan: {cmds:?}"
    );
    // The plans apply; a's was made for the generation before the update,
    // so the state machine refuses it and the core reads the truth again.
    wd.commit();
    assert_eq!(wd.core.in_flight(), 0);
    assert_eq!(wd.core.take_commands(), vec![Command::Rebuild]);
    assert_eq!(wd.running("b").len(), 1);
    assert!(wd.running("a").is_empty());
    wd.core.handle_rebuild(Rebuild::of(&wd.state));
    let cmds = wd.evaluate();
    // a's update waited all along (coalesced with the rebuild's look).
    assert_eq!(evaluated(&cmds), vec!["update", "plan-rejected"]);
    wd.commit();
    assert_eq!(wd.running("a").len(), 1);
}

#[test]
fn plans_in_flight_count_so_no_edge_is_overcommitted() {
    // Two edges of 1000 millicores; workloads of 600: one per edge.
    let mut wd = World::new(2);
    wd.lead();
    for n in ["a", "b", "c"] {
        wd.apply(Fsm::PutWorkload {
            spec: Box::new({
                let mut s = spec(n, serde_json::json!({}));
                s.resources.cpu_millicores = 600;
                s
            }),
            now_ms: wd.now,
        });
    }
    let cmds = wd.evaluate();
    let placed: usize = proposals(&cmds)
        .iter()
        .map(|p| p.nodes.values().map(|n| n.place.len()).sum::<usize>())
        .sum();
    assert_eq!(
        placed, 2,
        "the third does not fit next to the in-flight two"
    );
    let failed = proposals(&cmds)
        .iter()
        .filter(|p| p.failure.is_some())
        .count();
    assert_eq!(failed, 1, "and says why");
    wd.commit();
    // More room: the blocked workload is evaluated and placed.
    wd.report("e1", 2000, vec![]);
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["capacity-changed"]);
    wd.commit();
    assert_eq!(
        ["a", "b", "c"]
            .iter()
            .map(|n| wd.running(n).len())
            .sum::<usize>(),
        3
    );
}

#[test]
fn a_refused_plan_is_re_evaluated_on_rebuilt_state() {
    let mut wd = World::new(2);
    wd.lead();
    wd.submit("a", serde_json::json!({}));
    wd.evaluate();
    // Something the leader did not know committed first: the spec changed
    // under the plan (as another leader's write would).
    let plan = wd.proposed.pop().unwrap();
    wd.proposed.clear();
    let index = wd.state.applied_index() + 1;
    let other = spec("a", serde_json::json!({"count": 2}));
    // Applied without telling the core (it was not leading then).
    fsm::apply(
        &mut wd.state,
        index,
        &fsm::encode_command(&Fsm::PutWorkload {
            spec: Box::new(other),
            now_ms: wd.now,
        }),
    )
    .unwrap();
    let a = wd.apply(Fsm::ApplyPlan(Box::new(plan)));
    assert!(matches!(
        a.outcome,
        fsm::Outcome::PlanApplied { refused: 1, .. }
    ));
    let cmds = wd.core.take_commands();
    assert_eq!(cmds, vec![Command::Rebuild]);
    assert!(!wd.core.run_next(wd.now), "paused until rebuilt");
    wd.core.handle_rebuild(Rebuild::of(&wd.state));
    wd.settle();
    assert_eq!(wd.running("a").len(), 2);
}

#[test]
fn a_failed_proposal_rebuilds_before_anything_else() {
    let mut wd = World::new(2);
    wd.lead();
    wd.submit("a", serde_json::json!({}));
    let cmds = wd.evaluate();
    let p = proposals(&cmds)[0].clone();
    wd.proposed.clear();
    wd.core.handle_propose_failed(&p.workload, p.eval);
    assert_eq!(wd.core.take_commands(), vec![Command::Rebuild]);
    assert!(!wd.core.has_work());
    wd.core.handle_rebuild(Rebuild::of(&wd.state));
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["plan-rejected"]);
    wd.commit();
    assert_eq!(wd.running("a").len(), 1);
}

#[test]
fn replace_after_waits_for_the_lease_then_replaces_and_keep_never_does() {
    let mut wd = World::new(3);
    wd.submit("r", serde_json::json!({"replace-after": "3s", "constraints": [{"label": "node", "op": "!=", "value": "e3"}]}));
    wd.submit(
        "k",
        serde_json::json!({"constraints": [{"label": "node", "op": "!=", "value": "e3"}]}),
    );
    wd.lead();
    wd.settle();
    let r_edge = wd.running("r")[0].0.clone();
    let placed = wd
        .state
        .sched()
        .allocs_of(&w("r"))
        .next()
        .unwrap()
        .alloc
        .clone();
    assert!(
        placed.lease_expires_at.is_some(),
        "a lease deadline from placement"
    );
    // Move k onto r's edge's fate too: both on the edge that dies.
    let k_edge = wd.running("k")[0].0.clone();
    // Past the new leader's floor.
    wd.now += (BOUND + 10_000) as i64;
    let last_hb = wd.now - 900;
    wd.liveness(&r_edge, LivenessState::Down, last_hb);
    if k_edge != r_edge {
        wd.liveness(&k_edge, LivenessState::Down, last_hb);
    }
    let cmds = wd.evaluate();
    assert!(evaluated(&cmds).contains(&"node-down"));
    assert!(
        proposals(&cmds).is_empty(),
        "nothing before the lease: {cmds:?}"
    );
    let due = wd.core.poll_timeout().expect("a follow-up");
    // The lease counted from the last heartbeat, plus the margin.
    assert_eq!(due, last_hb + 3_000 + MARGIN as i64 + 1);
    wd.now = due - 2;
    wd.core.handle_tick(wd.now);
    assert!(evaluated(&wd.evaluate()).is_empty(), "not yet");
    wd.now = due;
    wd.core.handle_tick(wd.now);
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["follow-up"]);
    let p = proposals(&cmds);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].workload, w("r"));
    let stops: Vec<&StopReason> = p[0]
        .nodes
        .values()
        .flat_map(|n| n.stop.iter().map(|s| &s.reason))
        .collect();
    assert!(
        matches!(stops[..], [StopReason::Disconnected { .. }]),
        "{stops:?}"
    );
    wd.commit();
    let now_on = wd.running("r");
    assert_eq!(now_on.len(), 1);
    assert_ne!(now_on[0].0, r_edge, "replaced elsewhere");
    let new = wd
        .state
        .sched()
        .allocs_of(&w("r"))
        .find(|r| r.runs())
        .unwrap()
        .alloc
        .clone();
    assert_eq!(new.placement.reason, PlaceReason::ReplaceDisconnected);
    assert!(new.fencing_token > placed.fencing_token);
    // keep: still where it was, however long.
    wd.now += 3_600_000;
    wd.core.handle_tick(wd.now);
    wd.settle();
    assert_eq!(wd.running("k"), vec![(k_edge.clone(), 0)]);
    // The replacement reported running: its latency is observed.
    wd.report(
        &new.node.0,
        1000,
        vec![InstanceStatus {
            tenant: "acme".into(),
            name: "r".into(),
            generation: new.generation,
            state: "running".into(),
            ..InstanceStatus::default()
        }],
    );
    let obs = wd.core.take_commands();
    assert!(
        obs.iter()
            .any(|c| matches!(c, Command::Observe(Observation::Replaced { .. }))),
        "{obs:?}"
    );
    assert_eq!(
        wd.state.sched().alloc(new.id).unwrap().alloc.client,
        ClientState::Running
    );
}

#[test]
fn an_edge_back_before_the_lease_ends_keeps_its_instance() {
    let mut wd = World::new(2);
    wd.submit("r", serde_json::json!({"replace-after": "3s"}));
    wd.lead();
    wd.settle();
    let edge = wd.running("r")[0].0.clone();
    wd.now += (BOUND + 10_000) as i64;
    wd.liveness(&edge, LivenessState::Suspect, wd.now - 700);
    wd.evaluate();
    wd.now += 1_000;
    wd.liveness(&edge, LivenessState::Up, wd.now);
    let cmds = wd.evaluate();
    assert!(evaluated(&cmds).contains(&"node-back"));
    // Long after the old deadline nothing moves: it is up.
    wd.now += 60_000;
    wd.core.handle_tick(wd.now);
    wd.settle();
    assert_eq!(wd.running("r"), vec![(edge, 0)]);
}

#[test]
fn a_new_leader_waits_out_what_the_old_one_may_have_granted() {
    let mut wd = World::new(2);
    wd.submit("r", serde_json::json!({"replace-after": "3s"}));
    wd.lead();
    wd.settle();
    let edge = wd.running("r")[0].0.clone();
    // The edge went down long ago under another leader.
    wd.now += 100_000;
    wd.liveness(&edge, LivenessState::Down, wd.now - 90_000);
    wd.core.handle_leadership_lost();
    wd.now += 50_000;
    let took_over = wd.now;
    wd.lead();
    let cmds = wd.evaluate();
    assert!(proposals(&cmds).is_empty(), "{cmds:?}");
    // Not before took over + bound + lease + margin.
    let due = wd.core.poll_timeout().unwrap();
    assert_eq!(due, took_over + BOUND as i64 + 3_000 + MARGIN as i64 + 1);
    wd.now = due;
    wd.core.handle_tick(wd.now);
    wd.settle();
    let on = wd.running("r");
    assert_eq!(on.len(), 1);
    assert_ne!(on[0].0, edge);
}

#[test]
fn failed_instances_are_replaced_and_deleted_workloads_stopped() {
    let mut wd = World::new(2);
    wd.submit("a", serde_json::json!({}));
    wd.lead();
    wd.settle();
    let (edge, _) = wd.running("a")[0].clone();
    let gen = wd
        .state
        .sched()
        .allocs_of(&w("a"))
        .next()
        .unwrap()
        .alloc
        .generation;
    wd.report(
        &edge,
        1000,
        vec![InstanceStatus {
            tenant: "acme".into(),
            name: "a".into(),
            generation: gen,
            state: "crash-looping".into(),
            ..InstanceStatus::default()
        }],
    );
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["alloc-failed"]);
    wd.commit();
    let on = wd.running("a");
    assert_eq!(on.len(), 1);
    assert_ne!(on[0].0, edge, "away from the edge where it failed");
    wd.apply(Fsm::DeleteWorkload {
        tenant: "acme".into(),
        name: "a".into(),
        now_ms: wd.now,
    });
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["delete"]);
    wd.commit();
    assert!(wd.running("a").is_empty());
    assert!(wd
        .state
        .sched()
        .allocs_of(&w("a"))
        .all(|r| r.alloc.desired == Desired::Stop));
}

#[test]
fn a_per_edge_workload_submitted_under_a_leader_gets_its_carriers() {
    let mut wd = World::new(3);
    wd.lead();
    wd.settle();
    wd.submit("p", serde_json::json!({"per-edge": true}));
    let cmds = wd.core.take_commands();
    assert!(cmds.contains(&Command::RefreshCarriers), "{cmds:?}");
    wd.core.handle_carriers(wd.state.carriers());
    wd.settle();
    assert_eq!(wd.running("p").len(), 3, "one per edge carrying a device");
}

#[test]
fn per_edge_workloads_follow_their_carriers() {
    let mut wd = World::new(3);
    wd.submit("p", serde_json::json!({"per-edge": true}));
    wd.lead();
    wd.settle();
    assert_eq!(wd.running("p").len(), 3, "one per edge carrying a device");
    // Device d1 moves from e1 to e2: e1 no longer carries any.
    wd.apply(Fsm::StoreBatch {
        batch: TelemetryBatch {
            edge: "e2".into(),
            epoch: 1,
            first_seq: 1,
            entries: vec![SpoolEntry::Telemetry(TelemetryRecord {
                tenant: "acme".into(),
                device: "d1".into(),
                ts_ms: 2,
                seq: None,
                metrics: vec![Metric {
                    name: "t".into(),
                    value: 2.0,
                }],
                tags: vec![],
            })],
        },
        received_ms: wd.now,
    });
    let cmds = wd.core.take_commands();
    assert_eq!(cmds, vec![Command::RefreshCarriers]);
    wd.core.handle_carriers(wd.state.carriers());
    let cmds = wd.evaluate();
    assert_eq!(evaluated(&cmds), vec!["devices-moved"]);
    wd.commit();
    let edges: Vec<String> = wd.running("p").into_iter().map(|(e, _)| e).collect();
    assert_eq!(edges, vec!["e2".to_owned(), "e3".to_owned()]);
    let _ = BTreeMap::<u8, u8>::new();
}

#[path = "pressure_tests.rs"]
mod pressure_tests;
