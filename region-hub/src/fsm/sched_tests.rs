//! Tests of the scheduling part of the state machine: workloads, plans
//! (tokens, the checks repeated at apply, evaluation history, events),
//! client states from reports, stale fences, bounds, and reading what the
//! pre-scheduler hubs wrote (kind-6 puts, state format 4).

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, LivenessState};
use strata_protocol::monitoring::{FenceStamp, InstanceStatus, MonitorCapacity};
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::workload::{ArtifactRef, DeviceSelector, Placement, Resources, RestartPolicy};
use strata_protocol::{AlertRecord, Metric, Severity, SpoolEntry, TelemetryRecord};
use strata_sched::{
    schedule, verify_plan, AllocId, AllocStop, ClientState, ClusterSnapshot, Desired, Evaluation,
    NodeId, NodePlan, SchedulerConfig, StopReason, Timestamp, Trigger, WorkloadId,
};

use super::allocs::{MAX_EVALS_KEPT, MAX_STOPPED_KEPT};
use super::*;

pub(super) const NOW: i64 = 1_000_000;

pub(super) fn sha() -> String {
    "ab".repeat(32)
}

pub(super) fn spec(name: &str, placement: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        tenant: "acme".into(),
        runtime: Default::default(),
        artifact: ArtifactRef {
            sha256: sha(),
            size_bytes: 3,
        },
        selector: DeviceSelector {
            tenant: "acme".into(),
            device_globs: vec!["*".into()],
            tags: Default::default(),
        },
        params: "{}".into(),
        resources: Resources {
            memory_mib: 8,
            cpu_millicores: 10,
            min_memory_mib: None,
            max_memory_mib: None,
            min_cpu_millicores: None,
            max_cpu_millicores: None,
        },
        priority: 50,
        restart: RestartPolicy::default(),
        target: Placement::LeastLoaded,
        generation: 0,
        placement: intent(placement),
    }
}

pub(super) fn intent(text: &str) -> strata_sched::PlacementIntent {
    // The intent's serde shape, written as JSON here (no TOML parser in
    // this crate's dev-dependencies): `count=2` style keys only.
    let mut obj = serde_json::Map::new();
    for kv in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, v) = kv.split_once('=').expect("key=value");
        let v = v.trim();
        let val = v
            .parse::<u64>()
            .map(serde_json::Value::from)
            .or_else(|_| v.parse::<bool>().map(serde_json::Value::from))
            .unwrap_or_else(|_| serde_json::Value::from(v.trim_matches('"')));
        obj.insert(k.trim().to_owned(), val);
    }
    serde_json::from_value(serde_json::Value::Object(obj)).expect("intent")
}

pub(super) fn report(edge: &str, instances: Vec<InstanceStatus>, at: i64) -> Command {
    let mut labels = BTreeMap::new();
    labels.insert(
        "zone".to_owned(),
        if edge == "e1" { "a" } else { "b" }.to_owned(),
    );
    Command::EdgeReport {
        status: EdgeStatus {
            edge: edge.into(),
            capacity: MonitorCapacity {
                memory_mib: 256,
                cpu_millicores: 1000,
            },
            instances,
            ..EdgeStatus::default()
        },
        facts: NodeFacts {
            labels,
            pools: ["cpu".to_owned()].into(),
        },
        received_ms: at,
    }
}

pub(super) fn instance(
    name: &str,
    generation: u64,
    state: &str,
    reason: Option<&str>,
) -> InstanceStatus {
    InstanceStatus {
        tenant: "acme".into(),
        name: name.into(),
        generation,
        state: state.into(),
        reason: reason.map(str::to_owned),
        ..InstanceStatus::default()
    }
}

fn transition(edge: &str, state: LivenessState, at: i64) -> Command {
    Command::EdgeTransition(EdgeTransition {
        edge: edge.into(),
        kind: match state {
            LivenessState::Down => EventKind::EdgeDown,
            LivenessState::Suspect => EventKind::EdgeSuspect,
            _ => EventKind::EdgeUp,
        },
        from: LivenessState::Up,
        at_ms: at,
        liveness: EdgeLiveness {
            state,
            classification: Classification::Undetermined,
            evidence: vec![],
            boot_id: 1,
            since_ms: at,
            last_heartbeat_ms: at - 900,
            detection_ms: None,
            event_seq: 0,
        },
        message: format!("{edge} {}", state.as_str()),
    })
}

pub(super) fn run(s: &mut RegionState, cmds: &[Command]) -> Vec<Applied> {
    cmds.iter()
        .map(|c| {
            let index = s.applied_index() + 1;
            apply(s, index, &encode_command(c)).unwrap()
        })
        .collect()
}

/// Two edges (e1 zone a, e2 zone b) with a device each, the artifact.
pub(super) fn region() -> RegionState {
    let mut s = RegionState::default();
    let reading = |edge: &str, device: &str| Command::StoreBatch {
        batch: TelemetryBatch {
            edge: edge.into(),
            epoch: 1,
            first_seq: 0,
            entries: vec![SpoolEntry::Telemetry(TelemetryRecord {
                tenant: "acme".into(),
                device: device.into(),
                ts_ms: 1,
                seq: None,
                metrics: vec![Metric {
                    name: "t".into(),
                    value: 1.0,
                }],
                tags: vec![],
            })],
        },
        received_ms: NOW,
    };
    run(
        &mut s,
        &[
            reading("e1", "d1"),
            reading("e2", "d2"),
            report("e1", vec![], NOW),
            report("e2", vec![], NOW),
            Command::PutArtifact {
                sha256: sha(),
                bytes: vec![1, 2, 3],
            },
        ],
    );
    s
}

pub(super) fn snap(s: &RegionState) -> ClusterSnapshot {
    ClusterSnapshot::from_parts(
        s.applied_index(),
        SchedulerConfig {
            one_per_node: true,
            ..SchedulerConfig::default()
        },
        s.sched_nodes(),
        s.sched_workloads(),
        s.sched_allocs(),
    )
}

/// The commit of one evaluation of `name` over the state as it is.
pub(super) fn plan(s: &RegionState, name: &str, seed: u64) -> PlanCommit {
    let sn = snap(s);
    let ev = Evaluation::new(
        seed,
        WorkloadId::new("acme", name),
        Trigger::Submit,
        sn.index(),
    );
    let p = schedule(
        &sn,
        &ev,
        Timestamp(NOW),
        &mut ChaCha8Rng::seed_from_u64(seed),
    )
    .unwrap();
    let v = verify_plan(&sn, &p);
    PlanCommit {
        eval: ev.id,
        trigger: ev.trigger.as_str().into(),
        workload: ev.workload.clone(),
        generation: p.generation,
        nodes: v.accepted,
        refused: Vec::new(),
        failure: p.failed,
        now_ms: NOW,
    }
}

pub(super) fn put(sp: MonitorSpec) -> Command {
    Command::PutWorkload {
        spec: Box::new(sp),
        now_ms: NOW,
    }
}

pub(super) fn w(name: &str) -> WorkloadId {
    WorkloadId::new("acme", name)
}

#[test]
fn a_plan_places_with_tokens_in_commit_order_and_records_why() {
    let mut s = region();
    let a = run(&mut s, &[put(spec("zs", "count=3"))]);
    assert!(matches!(
        a[0].changes.as_slice(),
        [SchedChange::Workload(_)]
    ));
    let v0 = s.workloads().assignments_version();
    let c = plan(&s, "zs", 1);
    assert!(c.failure.is_some(), "three instances, two edges");
    let index = s.applied_index() + 1;
    let a = apply(
        &mut s,
        index,
        &encode_command(&Command::ApplyPlan(Box::new(c))),
    )
    .unwrap();
    assert_eq!(
        a.outcome,
        Outcome::PlanApplied {
            placed: 2,
            stopped: 0,
            updated: 0,
            refused: 0
        }
    );
    assert_eq!(s.workloads().assignments_version(), v0 + 1);
    let mut tokens: Vec<u64> = s
        .sched()
        .allocs_of(&w("zs"))
        .map(|r| r.alloc.fencing_token)
        .collect();
    tokens.sort();
    assert_eq!(tokens, vec![1, 2]);
    assert_eq!(s.sched().next_token(), 3);
    for r in s.sched().allocs_of(&w("zs")) {
        assert_eq!((r.alloc.created_index, r.created_ms), (index, NOW));
    }
    // One per edge, each edge fetches its own.
    assert_eq!(s.edge_allocations("e1").len(), 1);
    assert_eq!(s.edge_allocations("e2").len(), 1);
    let e = s.sched().last_eval(&w("zs")).unwrap();
    assert_eq!(
        (e.status.as_str(), e.placed, e.index),
        ("partial", 2, index)
    );
    let f = e.failure.as_ref().unwrap();
    assert_eq!((f.unplaced, f.wanted), (1, 3));
    assert!(
        f.metric
            .filtered
            .keys()
            .any(|k| k.contains("distinct nodes exhausted")),
        "{f}"
    );
    let kinds: Vec<EventKind> = s
        .events()
        .page(1, 100)
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::WorkloadSubmitted));
    assert!(kinds.contains(&EventKind::AllocPlaced));
    assert!(kinds.contains(&EventKind::PlacementFailed));
    assert!(matches!(
        a.changes.as_slice(),
        [SchedChange::Allocs(v), SchedChange::Plan { refused: 0, .. }] if v.len() == 2
    ));
    // The API view.
    let m = s.workloads().monitor("acme", "zs").unwrap().clone();
    let info = s.monitor_info("r", &m, |_| None);
    assert_eq!(
        (info.wanted, info.placed, info.allocations.len()),
        (3, 2, 2)
    );
    assert_eq!(info.evaluations.len(), 1);
    // Round trip through the encoded state (indexes are rebuilt).
    let back = RegionState::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.edge_allocations("e2"), s.edge_allocations("e2"));
}

#[test]
fn the_state_machine_refuses_what_changed_since_the_plan() {
    let mut s = region();
    run(&mut s, &[put(spec("zs", "count=1"))]);
    // Made for generation 1, applied after generation 2: refused whole.
    let stale = plan(&s, "zs", 1);
    let mut sp = spec("zs", "count=1");
    sp.params = r#"{"x":1}"#.into();
    run(&mut s, &[put(sp)]);
    let before = s.sched().clone();
    let a = run(&mut s, &[Command::ApplyPlan(Box::new(stale))]);
    assert!(matches!(
        a[0].outcome,
        Outcome::PlanApplied {
            placed: 0,
            refused: 1,
            ..
        }
    ));
    assert_eq!(s.sched().allocs_of(&w("zs")).count(), 0);
    assert_eq!(
        s.sched().next_token(),
        before.next_token(),
        "no token spent"
    );
    let e = s.sched().last_eval(&w("zs")).unwrap();
    assert!(e.refused[0].reason.contains("generation"), "{e:?}");

    // Two plans for the same slot made on one snapshot: the second loses.
    let first = plan(&s, "zs", 1);
    let second = plan(&s, "zs", 2);
    run(&mut s, &[Command::ApplyPlan(Box::new(first))]);
    let a = run(&mut s, &[Command::ApplyPlan(Box::new(second))]);
    assert!(matches!(
        a[0].outcome,
        Outcome::PlanApplied {
            placed: 0,
            refused: 1,
            ..
        }
    ));
    assert_eq!(
        s.sched().allocs_of(&w("zs")).filter(|r| r.runs()).count(),
        1
    );

    // A stop "because its edge is cut off" while the log says the edge is
    // up is refused, and the replacement with it.
    let old = s.sched().allocs_of(&w("zs")).next().unwrap().alloc.clone();
    let other = if old.node.0 == "e1" { "e2" } else { "e1" };
    let mut new = old.clone();
    new.id = AllocId(77);
    new.node = NodeId::from(other);
    new.previous = Some(old.id);
    let mut nodes = BTreeMap::new();
    nodes.insert(
        old.node.clone(),
        NodePlan {
            stop: vec![AllocStop {
                alloc: old.id,
                reason: StopReason::Disconnected {
                    lease_expires_at: None,
                },
            }],
            ..NodePlan::default()
        },
    );
    nodes.insert(
        NodeId::from(other),
        NodePlan {
            place: vec![new],
            ..NodePlan::default()
        },
    );
    let replace = PlanCommit {
        eval: strata_sched::EvalId(9),
        trigger: "node-down".into(),
        workload: w("zs"),
        generation: Some(2),
        nodes,
        refused: Vec::new(),
        failure: None,
        now_ms: NOW,
    };
    run(&mut s, &[transition(&old.node.0, LivenessState::Up, NOW)]);
    let a = run(&mut s, &[Command::ApplyPlan(Box::new(replace.clone()))]);
    assert!(
        matches!(
            a[0].outcome,
            Outcome::PlanApplied {
                placed: 0,
                stopped: 0,
                refused: 2,
                ..
            }
        ),
        "{:?}",
        a[0].outcome
    );
    assert!(s.sched().alloc(old.id).unwrap().runs());
    // Once the log says it is down, the same plan goes through.
    run(&mut s, &[transition(&old.node.0, LivenessState::Down, NOW)]);
    let a = run(&mut s, &[Command::ApplyPlan(Box::new(replace))]);
    assert!(matches!(
        a[0].outcome,
        Outcome::PlanApplied {
            placed: 1,
            stopped: 1,
            refused: 0,
            ..
        }
    ));
    let r = s.sched().alloc(old.id).unwrap();
    assert_eq!(
        (r.alloc.desired, r.replaced_by),
        (Desired::Stop, Some(AllocId(77)))
    );
    let kinds: Vec<EventKind> = s
        .events()
        .page(1, 100)
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::LeaseExpired) && kinds.contains(&EventKind::AllocReplaced));
}

/// Two instances of a sharded monitor on one edge: each report names its
/// slot and moves only that slot's allocation.
#[test]
fn a_sharded_monitors_reports_match_their_slots_on_one_edge() {
    let mut s = region();
    let mut sh = spec("sh", "count=2,shard=true");
    sh.placement.constraints.push(strata_sched::LabelRule {
        label: "zone".into(),
        value: Some("a".into()),
        ..Default::default()
    });
    run(&mut s, &[put(sh)]);
    let c = plan(&s, "sh", 1);
    run(&mut s, &[Command::ApplyPlan(Box::new(c))]);
    let allocs: Vec<_> = s
        .sched()
        .allocs_of(&w("sh"))
        .map(|r| r.alloc.clone())
        .collect();
    assert_eq!(allocs.len(), 2, "both placed");
    assert_eq!(allocs[0].node, allocs[1].node, "on the one zone-a edge");
    let edge = allocs[0].node.0.clone();
    let client = |s: &RegionState, slot: u32| {
        s.sched()
            .allocs_of(&w("sh"))
            .find(|r| r.alloc.slot == slot)
            .unwrap()
            .alloc
            .client
    };
    let mut one = instance("sh", 1, "running", None);
    one.slot = Some(1);
    run(&mut s, &[report(&edge, vec![one.clone()], NOW + 1)]);
    assert_eq!(
        (client(&s, 0), client(&s, 1)),
        (ClientState::Pending, ClientState::Running)
    );
    let mut zero = instance("sh", 1, "crash-looping", None);
    zero.slot = Some(0);
    run(&mut s, &[report(&edge, vec![zero, one], NOW + 2)]);
    assert_eq!(
        (client(&s, 0), client(&s, 1)),
        (ClientState::Failed, ClientState::Running)
    );
}

#[test]
fn reports_move_client_states_and_replaced_allocations_lose_their_outputs() {
    let mut s = region();
    run(&mut s, &[put(spec("zs", "count=1"))]);
    let c = plan(&s, "zs", 1);
    run(&mut s, &[Command::ApplyPlan(Box::new(c))]);
    let a = s.sched().allocs_of(&w("zs")).next().unwrap().alloc.clone();
    let edge = a.node.0.clone();
    let client = |s: &RegionState| s.sched().alloc(a.id).unwrap().alloc.client;
    assert_eq!(client(&s), ClientState::Pending);
    let out = run(
        &mut s,
        &[report(
            &edge,
            vec![instance("zs", 1, "running", None)],
            NOW + 1,
        )],
    );
    assert_eq!(client(&s), ClientState::Running);
    assert!(out[0]
        .changes
        .iter()
        .any(|c| matches!(c, SchedChange::Allocs(v) if v[0].client == ClientState::Running)));
    // Another generation's report says nothing about this allocation.
    run(
        &mut s,
        &[report(
            &edge,
            vec![instance("zs", 9, "crash-looping", None)],
            NOW + 2,
        )],
    );
    assert_eq!(client(&s), ClientState::Running);
    run(
        &mut s,
        &[report(
            &edge,
            vec![instance("zs", 1, "crash-looping", Some("trap"))],
            NOW + 3,
        )],
    );
    assert_eq!(client(&s), ClientState::Failed);
    run(
        &mut s,
        &[report(
            &edge,
            vec![instance(
                "zs",
                1,
                "stopped",
                Some("lease-expired: allocation x not renewed"),
            )],
            NOW + 4,
        )],
    );
    assert_eq!(client(&s), ClientState::Lost);

    // Outputs: current fence stored, a replaced allocation's refused and
    // counted, an unknown one stored.
    let alert = |ts: i64| AlertRecord {
        tenant: "acme".into(),
        device: "d1".into(),
        monitor: "zs".into(),
        edge: edge.clone(),
        severity: Severity::Warning,
        code: "c".into(),
        message: "m".into(),
        ts_ms: ts,
    };
    let fenced = |ts: i64, alloc: String, token: u64| SpoolEntry::FencedAlert {
        alert: alert(ts),
        fence: FenceStamp {
            allocation: alloc,
            token,
        },
    };
    let batch = |seq: u64, entries: Vec<SpoolEntry>| Command::StoreBatch {
        batch: TelemetryBatch {
            edge: edge.clone(),
            epoch: 7,
            first_seq: seq,
            entries,
        },
        received_ms: NOW,
    };
    let current = a.id.to_string();
    let out = run(
        &mut s,
        &[batch(0, vec![fenced(1, current.clone(), a.fencing_token)])],
    );
    assert!(matches!(
        out[0].outcome,
        Outcome::Committed {
            new_alerts: 1,
            stale_fences: 0,
            ..
        }
    ));
    // Replace it (as a plan would after a failure).
    let mut new = a.clone();
    new.id = AllocId(5);
    new.previous = Some(a.id);
    let mut nodes = BTreeMap::new();
    nodes.insert(
        a.node.clone(),
        NodePlan {
            stop: vec![AllocStop {
                alloc: a.id,
                reason: StopReason::Replaced { by: new.id },
            }],
            place: vec![new],
            ..NodePlan::default()
        },
    );
    run(
        &mut s,
        &[Command::ApplyPlan(Box::new(PlanCommit {
            eval: strata_sched::EvalId(2),
            trigger: "alloc-failed".into(),
            workload: w("zs"),
            generation: Some(1),
            nodes,
            refused: Vec::new(),
            failure: None,
            now_ms: NOW,
        }))],
    );
    let out = run(
        &mut s,
        &[batch(
            1,
            vec![
                fenced(2, current, a.fencing_token),
                fenced(3, "f".repeat(32), 99),
                SpoolEntry::Alert(alert(4)),
            ],
        )],
    );
    assert!(
        matches!(
            out[0].outcome,
            Outcome::Committed {
                count: 3,
                new_records: 2,
                new_alerts: 2,
                stale_fences: 1,
                edge_resends: 0,
                ..
            }
        ),
        "{:?}",
        out[0].outcome
    );
    assert_eq!(s.sched().fence_counts(), (1, 1));
}

#[test]
fn history_and_stopped_allocations_are_bounded_and_a_deleted_workload_goes() {
    let mut s = region();
    run(&mut s, &[put(spec("zs", "count=1"))]);
    for i in 0..(MAX_STOPPED_KEPT + 4) {
        // Place, then stop it "not needed", again and again.
        let c = plan(&s, "zs", i as u64 + 1);
        run(&mut s, &[Command::ApplyPlan(Box::new(c))]);
        let live = s
            .sched()
            .allocs_of(&w("zs"))
            .find(|r| r.runs())
            .unwrap()
            .alloc
            .clone();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            live.node.clone(),
            NodePlan {
                stop: vec![AllocStop {
                    alloc: live.id,
                    reason: StopReason::NotNeeded,
                }],
                ..NodePlan::default()
            },
        );
        run(
            &mut s,
            &[Command::ApplyPlan(Box::new(PlanCommit {
                eval: strata_sched::EvalId(1000 + i as u64),
                trigger: "update".into(),
                workload: w("zs"),
                generation: Some(1),
                nodes,
                refused: Vec::new(),
                failure: None,
                now_ms: NOW,
            }))],
        );
    }
    assert_eq!(s.sched().allocs_of(&w("zs")).count(), MAX_STOPPED_KEPT);
    assert_eq!(s.sched().evals_of(&w("zs")).count(), MAX_EVALS_KEPT);
    // Deleted with nothing running: everything of it goes.
    let a = run(
        &mut s,
        &[Command::DeleteWorkload {
            tenant: "acme".into(),
            name: "zs".into(),
            now_ms: NOW,
        }],
    );
    assert_eq!(s.sched().allocs_of(&w("zs")).count(), 0);
    assert_eq!(s.sched().evals_of(&w("zs")).count(), 0);
    assert!(a[0]
        .changes
        .iter()
        .any(|c| matches!(c, SchedChange::WorkloadRemoved(_))));
}

#[test]
fn pre_scheduler_puts_and_format_4_state_keep_monitors_on_their_edge() {
    // A kind-6 entry (spec without placement, pinned to e2).
    let mut s = region();
    let old = Command::PutMonitor {
        spec: Box::new(spec("zs", "")),
        edge: "e2".into(),
        now_ms: NOW,
    };
    run(&mut s, std::slice::from_ref(&old));
    let on = |s: &RegionState, e: &str| s.edge_allocations(e).len();
    assert_eq!((on(&s, "e1"), on(&s, "e2")), (0, 1));
    let first = s.edge_allocations("e2")[0].clone();
    assert_eq!(first.fencing_token, 1);
    // The same put again changes nothing; a new spec updates in place;
    // another edge replaces.
    run(&mut s, &[old]);
    assert_eq!(s.edge_allocations("e2"), vec![first.clone()]);
    let mut sp = spec("zs", "");
    sp.params = r#"{"x":2}"#.into();
    run(
        &mut s,
        &[Command::PutMonitor {
            spec: Box::new(sp.clone()),
            edge: "e2".into(),
            now_ms: NOW,
        }],
    );
    let now = s.edge_allocations("e2");
    assert_eq!((now[0].id, now[0].spec.generation), (first.id, 2));
    run(
        &mut s,
        &[Command::PutMonitor {
            spec: Box::new(sp),
            edge: "e1".into(),
            now_ms: NOW,
        }],
    );
    assert_eq!((on(&s, "e1"), on(&s, "e2")), (1, 0));
    assert_eq!(
        s.sched().alloc(first.id).unwrap().replaced_by,
        Some(s.edge_allocations("e1")[0].id)
    );

    // State format 4: the monitor pinned to e1 gets its allocation there.
    let cfg = bincode::config::standard();
    let v1_spec = super::legacy::MonitorSpecV1::from(&spec("zs", ""));
    let mut by_name = BTreeMap::new();
    by_name.insert("zs".to_owned(), (v1_spec, "e1".to_owned(), 5i64, 6i64));
    let mut monitors = BTreeMap::new();
    monitors.insert("acme".to_owned(), by_name);
    let mut artifacts = BTreeMap::new();
    artifacts.insert(sha(), (vec![1u8, 2, 3], 1u64));
    let workloads_v4 = (monitors, artifacts, 3u64, 0u64, 4u64);
    let edges: BTreeMap<String, u8> = BTreeMap::new();
    let devices: BTreeMap<String, u8> = BTreeMap::new();
    let v4 = (
        42u64,
        edges,
        devices,
        0u64,
        AlertIndex::default(),
        workloads_v4,
        BTreeMap::<String, EdgeLiveness>::new(),
        EventLog::default(),
    );
    let mut bytes = vec![4u8];
    bytes.extend(bincode::encode_to_vec(&v4, cfg).unwrap());
    let s4 = RegionState::decode(&bytes).unwrap();
    assert_eq!(
        s4.workloads()
            .monitor("acme", "zs")
            .unwrap()
            .spec
            .generation,
        0
    );
    assert_eq!(s4.workloads().assignments_version(), 4);
    let a = s4.edge_allocations("e1");
    assert_eq!(
        (a.len(), a[0].fencing_token, a[0].replace_after_ms),
        (1, 1, None)
    );
    assert_eq!(s4.encode()[0], 6);
    assert_eq!(RegionState::decode(&s4.encode()).unwrap(), s4);
    // Every replica derives the same allocation id.
    assert_eq!(
        RegionState::decode(&bytes).unwrap().edge_allocations("e1")[0].id,
        a[0].id
    );
}
