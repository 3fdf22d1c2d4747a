//! Admission against a small region: e-small (zone a, pool cpu), e-big
//! (zone b, pools cpu and gpu) and e-dead (zone b, down), the module, and
//! one device of tenant acme tagged site = plant-1.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, LivenessState};
use strata_protocol::monitoring::MonitorCapacity;
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::{EdgeStatus, Metric, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord};

use super::*;
use crate::fsm::{apply, encode_command, Command};

const NOW: i64 = 1_000_000;
const MIN: Duration = Duration::from_secs(1);

fn report(edge: &str, memory_mib: u32, cpu: u32, zone: &str, pools: &[&str]) -> Command {
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_owned(), zone.to_owned());
    Command::EdgeReport {
        status: EdgeStatus {
            edge: edge.into(),
            capacity: MonitorCapacity {
                memory_mib,
                cpu_millicores: cpu,
            },
            ..EdgeStatus::default()
        },
        facts: NodeFacts {
            labels,
            pools: pools.iter().map(|p| (*p).to_owned()).collect(),
        },
        received_ms: NOW,
    }
}

fn region() -> (RegionState, String) {
    let mut s = RegionState::default();
    let reading = TelemetryRecord {
        tenant: "acme".into(),
        device: "boiler-1".into(),
        ts_ms: 1,
        seq: None,
        metrics: vec![Metric {
            name: "t".into(),
            value: 1.0,
        }],
        tags: vec![Tag {
            key: "site".into(),
            value: "plant-1".into(),
        }],
    };
    let sha = crate::artifact::sha256_hex(b"mod");
    let cmds = [
        Command::StoreBatch {
            batch: TelemetryBatch {
                edge: "e-small".into(),
                epoch: 1,
                first_seq: 0,
                entries: vec![SpoolEntry::Telemetry(reading)],
            },
            received_ms: NOW,
        },
        report("e-small", 64, 500, "a", &["cpu"]),
        report("e-big", 512, 2000, "b", &["cpu", "gpu"]),
        report("e-dead", 4096, 8000, "b", &["cpu"]),
        Command::EdgeTransition(crate::fsm::EdgeTransition {
            edge: "e-dead".into(),
            kind: EventKind::EdgeDown,
            from: LivenessState::Suspect,
            at_ms: NOW - 50_000,
            liveness: EdgeLiveness {
                state: LivenessState::Down,
                classification: Classification::Undetermined,
                evidence: vec![],
                boot_id: 1,
                since_ms: NOW - 50_000,
                last_heartbeat_ms: NOW - 60_000,
                detection_ms: None,
                event_seq: 0,
            },
            message: "down".into(),
        }),
        Command::PutArtifact {
            sha256: sha.clone(),
            bytes: b"mod".to_vec(),
        },
    ];
    for (i, c) in cmds.iter().enumerate() {
        apply(&mut s, i as u64 + 1, &encode_command(c)).unwrap();
    }
    (s, sha)
}

fn spec(sha: &str, placement: serde_json::Value) -> MonitorSpec {
    let mut v = serde_json::json!({
        "name": "m", "tenant": "acme",
        "artifact": {"sha256": sha, "size-bytes": 3},
        "selector": {"tenant": "acme", "tags": {"site": "plant-1"}},
        "resources": {"memory-mib": 32, "cpu-millicores": 100},
    });
    v["placement"] = placement;
    MonitorSpec::from_json_str(&v.to_string()).unwrap()
}

fn check(s: &RegionState, spec: &MonitorSpec) -> Result<Workload, SpecErrors> {
    let snap = snapshot(s, SchedulerConfig::default());
    admit(s, &snap, spec, MIN)
}

#[test]
fn capacity_is_the_target_edge_or_the_largest_one() {
    let (s, sha) = region();
    let snap = snapshot(&s, SchedulerConfig::default());
    let mut m = spec(&sha, serde_json::json!({}));
    let got = max_node_capacity(&snap, &m).unwrap();
    assert_eq!(
        (got.memory_mib, got.cpu_millicores),
        (4096, 8000),
        "a down edge may come back: it counts"
    );
    m.target = Placement::Node("e-small".into());
    assert_eq!(max_node_capacity(&snap, &m).unwrap().memory_mib, 64);
    m.target = Placement::Node("nope".into());
    assert!(max_node_capacity(&snap, &m).is_none());
}

#[test]
fn region_facts_are_checked_and_the_workload_comes_back() {
    let (s, sha) = region();
    let ok = spec(&sha, serde_json::json!({"count": 2, "pools": ["cpu"]}));
    let w = check(&s, &ok).unwrap();
    assert_eq!(w.resources.cpu_millicores, 100);
    assert_eq!(w.device_group.as_deref(), Some("acme/m"));

    let mut bad = ok.clone();
    bad.selector.tags.insert("site".into(), "plant-9".into());
    bad.artifact.size_bytes = 4;
    bad.runtime = RuntimeKind::MicroVm;
    bad.target = Placement::Node("e-nope".into());
    bad.placement.count = None;
    let e = check(&s, &bad).unwrap_err();
    assert_eq!(
        e.fields(),
        vec!["selector", "runtime", "artifact.size-bytes", "target.node"],
        "{e}"
    );

    let mut unknown = ok.clone();
    unknown.artifact.sha256 = "ab".repeat(32);
    let e = check(&s, &unknown).unwrap_err();
    assert_eq!(e.fields(), vec!["artifact.sha256"], "{e}");
}

/// The issue's bad inputs, each refused with a clear reason.
#[test]
fn bad_placements_are_refused_with_reasons() {
    let (s, sha) = region();
    let refused = |p: serde_json::Value| check(&s, &spec(&sha, p)).unwrap_err();

    // Constraints that no edge satisfies: the placement reasons.
    let e = refused(serde_json::json!({
        "pools": ["gpu"], "constraints": [{"label": "zone", "value": "a"}]
    }));
    assert_eq!(e.fields(), vec!["placement"], "{e}");
    let msg = &e.0[0].message;
    assert!(
        msg.contains("no edge in the region can ever run it"),
        "{msg}"
    );
    assert!(msg.contains("constraint zone = a: 1 filtered"), "{msg}");
    assert!(msg.contains("pool in [gpu]: 2 filtered"), "{msg}");

    // Unknown label, label value and pool: clear errors, all at once.
    let e = refused(serde_json::json!({
        "pools": ["tpu"],
        "constraints": [{"label": "rack", "value": "r1"}, {"label": "zone", "value": "z"}]
    }));
    assert_eq!(
        e.fields(),
        vec![
            "placement.pools[0]",
            "placement.constraints[0].label",
            "placement.constraints[1]"
        ],
        "{e}"
    );
    assert!(e.0[0]
        .message
        .contains("no node is in pool \"tpu\" (pools: cpu, gpu)"));
    assert!(e.0[2]
        .message
        .contains("no node has zone = z (values: a, b)"));

    // Contradictory affinity.
    let e = refused(serde_json::json!({
        "affinity": [{"label": "zone", "value": "a", "hard": true}],
        "anti-affinity": [{"label": "zone", "value": "a", "hard": true}]
    }));
    assert!(
        e.fields().iter().all(|f| f.starts_with("placement.")),
        "{e}"
    );
    assert!(e.to_string().contains("contradicts"), "{e}");

    // replace-after below the lease minimum.
    let e = refused(serde_json::json!({"replace-after": "500ms"}));
    assert_eq!(e.fields(), vec!["placement.replace-after"], "{e}");
    assert!(e.to_string().contains("lease minimum of 1s"), "{e}");

    // Bigger than any edge, ever.
    let mut huge = spec(&sha, serde_json::json!({"pools": ["gpu"]}));
    huge.resources.memory_mib = 1024;
    let e = check(&s, &huge).unwrap_err();
    assert_eq!(e.fields(), vec!["placement"], "{e}");
    assert!(e.0[0].message.contains("memory exhausted"), "{e}");

    // A count above the region's capacity is accepted: the scheduler
    // places what fits and says why not the rest.
    check(&s, &spec(&sha, serde_json::json!({"count": 50}))).unwrap();
}

#[test]
fn the_region_specs_stay_within_one_frame() {
    let (mut s, sha) = region();
    let big_params = format!(r#"{{"p":"{}"}}"#, "x".repeat(60_000));
    let n = MAX_ASSIGNMENT_BYTES / 60_000;
    for i in 0..n {
        let mut m = spec(&sha, serde_json::json!({}));
        m.name = format!("m{i}");
        m.params = big_params.clone();
        let cmd = Command::PutWorkload {
            spec: Box::new(m),
            now_ms: NOW,
        };
        let index = s.applied_index() + 1;
        apply(&mut s, index, &encode_command(&cmd)).unwrap();
    }
    let mut m = spec(&sha, serde_json::json!({}));
    m.params = big_params;
    let e = check(&s, &m).unwrap_err();
    assert_eq!(e.fields(), vec!["params"], "{e}");
    // A small spec still fits.
    m.params = "{}".into();
    check(&s, &m).unwrap();
}
