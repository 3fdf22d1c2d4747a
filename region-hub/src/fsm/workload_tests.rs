//! Tests of the state machine's issue-3 parts: alerts and derived metrics
//! on the exactly-once path, device tags, monitors (generation and
//! assignments-version rules), artifacts (eviction), the new command kinds,
//! snapshots, and reading what protocol-version-1 hubs wrote.

use std::collections::BTreeMap;

use super::*;
use strata_protocol::monitoring::{AlertQuery, DerivedMetricRecord};
use strata_protocol::workload::{ArtifactRef, DeviceSelector, Placement, Resources, RestartPolicy};
use strata_protocol::{AlertRecord, Metric, Severity, SpoolEntry, Tag};

use super::workloads::MAX_ARTIFACT_STORE_BYTES;

fn rec(device: &str, ts_ms: i64, seq: Option<u64>, tags: &[(&str, &str)]) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "acme".into(),
        device: device.into(),
        ts_ms,
        seq,
        metrics: vec![Metric {
            name: "t".into(),
            value: 1.0,
        }],
        tags: tags
            .iter()
            .map(|(k, v)| Tag {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

fn alert(device: &str, ts_ms: i64) -> AlertRecord {
    AlertRecord {
        tenant: "acme".into(),
        device: device.into(),
        monitor: "z".into(),
        edge: "e1".into(),
        severity: Severity::Warning,
        code: "anomaly".into(),
        message: "hot".into(),
        ts_ms,
    }
}

fn metric(device: &str, ts_ms: i64) -> DerivedMetricRecord {
    DerivedMetricRecord {
        tenant: "acme".into(),
        device: device.into(),
        monitor: "z".into(),
        name: "score".into(),
        value: 2.0,
        ts_ms,
    }
}

fn batch(first_seq: u64, entries: Vec<SpoolEntry>) -> Vec<u8> {
    encode_command(&Command::StoreBatch {
        batch: TelemetryBatch {
            edge: "e1".into(),
            epoch: 1,
            first_seq,
            entries,
        },
        received_ms: 1_000,
    })
}

fn entries_cmd(edge: &str, epoch: u64, first_seq: u64, records: Vec<TelemetryRecord>) -> Vec<u8> {
    encode_command(&Command::StoreBatch {
        batch: TelemetryBatch {
            edge: edge.into(),
            epoch,
            first_seq,
            entries: records.into_iter().map(SpoolEntry::Telemetry).collect(),
        },
        received_ms: 1_000,
    })
}

fn all_alerts() -> AlertQuery {
    AlertQuery {
        tenant: None,
        device: None,
        monitor: None,
        min_severity: None,
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        limit: 1000,
    }
}

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn spec(name: &str, artifact: &str) -> MonitorSpec {
    MonitorSpec {
        name: name.into(),
        tenant: "acme".into(),
        runtime: Default::default(),
        artifact: ArtifactRef {
            sha256: artifact.into(),
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
        placement: Default::default(),
    }
}

/// Applies commands at consecutive indexes after the current one.
fn run(s: &mut RegionState, cmds: &[Command]) -> Vec<Outcome> {
    cmds.iter()
        .map(|c| {
            let index = s.applied_index() + 1;
            apply(s, index, &encode_command(c)).unwrap().outcome
        })
        .collect()
}

fn put_artifact(n: u8, len: usize) -> Command {
    Command::PutArtifact {
        sha256: sha(n),
        bytes: vec![n; len],
    }
}

/// A workload put (the edge is the scheduler's business now; kept in the
/// calls to show where the pre-scheduler tests pinned it).
fn put(spec: MonitorSpec, _edge: &str, now_ms: i64) -> Command {
    Command::PutWorkload {
        spec: Box::new(spec),
        now_ms,
    }
}

#[test]
fn alerts_and_metrics_ride_the_exactly_once_path() {
    let mut s = RegionState::default();
    let entries = vec![
        SpoolEntry::Telemetry(rec("d", 10, Some(1), &[])),
        SpoolEntry::Alert(alert("d", 10)),
        SpoolEntry::Metric(metric("d", 10)),
        // A derived metric has no device seq: a second one at the same
        // time is not mistaken for a retransmission.
        SpoolEntry::Metric(metric("d", 10)),
    ];
    let a = apply(&mut s, 1, &batch(0, entries.clone())).unwrap();
    assert_eq!(
        a.outcome,
        Outcome::Committed {
            first_seq: 0,
            count: 4,
            new_records: 4,
            edge_resends: 0,
            device_retransmissions: 0,
            seq_reuses: 0,
            new_alerts: 1,
            new_metrics: 2,
            stale_fences: 0,
            checkpoints: Default::default(),
        }
    );
    assert_eq!(
        a.records.len(),
        3,
        "telemetry and both metrics go to the store"
    );
    assert_eq!(a.records[1], metric("d", 10).to_telemetry());
    // The resent batch (and a re-cut overlapping it) stores nothing new.
    let b = apply(&mut s, 2, &batch(0, entries.clone())).unwrap();
    assert!(b.records.is_empty());
    assert!(matches!(
        b.outcome,
        Outcome::Committed {
            edge_resends: 4,
            device_retransmissions: 0,
            new_alerts: 0,
            ..
        }
    ));
    let c = apply(&mut s, 3, &batch(1, entries[1..].to_vec())).unwrap();
    assert!(c.records.is_empty());
    assert_eq!(s.alerts().query(&all_alerts()), vec![alert("d", 10)]);
    assert_eq!(s.edges()[0].records_stored, 4);
    // Metrics do not create devices (they skip the device layer).
    let d = apply(
        &mut s,
        4,
        &batch(4, vec![SpoolEntry::Metric(metric("ghost", 1))]),
    )
    .unwrap();
    assert_eq!(d.records.len(), 1);
    assert_eq!(s.device_count(), 1);
}

#[test]
fn devices_remember_their_newest_tags_bounded() {
    let mut s = RegionState::default();
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let entries = vec![
        SpoolEntry::Telemetry(rec("a", 10, None, &[("site", "p1")])),
        SpoolEntry::Telemetry(rec("a", 5, None, &[("site", "old")])), // older: ignored
        SpoolEntry::Telemetry(rec("a", 12, None, &[])),               // untagged: kept
        SpoolEntry::Telemetry(rec("b", 1, None, &many)),
    ];
    apply(&mut s, 1, &batch(0, entries)).unwrap();
    let known = s.known_devices("acme");
    assert_eq!(known.len(), 2);
    assert_eq!((known[0].device, known[0].tags.len()), ("a", 1));
    assert_eq!(known[0].tags[0].value, "p1");
    assert_eq!(known[1].tags.len(), state::MAX_DEVICE_TAGS);
    assert_eq!(s.tenants(), vec!["acme".to_owned()]);
    assert!(s.known_devices("globex").is_empty());
}

#[test]
fn devices_remember_the_edge_their_telemetry_comes_through() {
    let mut s = RegionState::default();
    let from = |edge: &str, first_seq: u64, entries: Vec<SpoolEntry>| {
        encode_command(&Command::StoreBatch {
            batch: TelemetryBatch {
                edge: edge.into(),
                epoch: 1,
                first_seq,
                entries,
            },
            received_ms: 1_000,
        })
    };
    let t = |d: &str, ts: i64| SpoolEntry::Telemetry(rec(d, ts, None, &[]));
    apply(&mut s, 1, &from("e1", 0, vec![t("a", 10), t("b", 10)])).unwrap();
    apply(&mut s, 2, &from("e2", 0, vec![t("c", 10), t("a", 5)])).unwrap();
    let all = |_: &str, _: &[Tag]| true;
    // `a`'s reading through e2 is older than the one through e1: still e1.
    let want: BTreeMap<String, usize> = [("e1".into(), 2), ("e2".into(), 1)].into();
    assert_eq!(s.device_edges("acme", all), want);
    // The device moves to e2 with a newer reading; the selector filters.
    apply(&mut s, 3, &from("e2", 2, vec![t("a", 20)])).unwrap();
    let want: BTreeMap<String, usize> = [("e1".into(), 1), ("e2".into(), 2)].into();
    assert_eq!(s.device_edges("acme", all), want);
    let only_a = |d: &str, _: &[Tag]| d == "a";
    assert_eq!(s.device_edges("acme", only_a), [("e2".into(), 1)].into());
    assert!(s.device_edges("globex", all).is_empty());
}

#[test]
fn generation_and_assignments_version_rules() {
    let mut s = RegionState::default();
    run(&mut s, &[put_artifact(1, 3), put_artifact(2, 3)]);
    let v = |s: &RegionState| s.workloads().assignments_version();
    let gen = |s: &RegionState| {
        s.workloads()
            .monitor("acme", "m")
            .map(|m| m.spec.generation)
    };

    // New: generation = the new version.
    let o = run(&mut s, &[put(spec("m", &sha(1)), "e1", 100)]);
    assert!(matches!(
        o[0],
        Outcome::MonitorPut {
            generation: 1,
            changed: true,
            created: true,
            created_ms: 100,
            updated_ms: 100
        }
    ));
    assert_eq!((v(&s), gen(&s)), (1, Some(1)));
    // Identical resubmit (even with another generation field): no-op.
    let mut same = spec("m", &sha(1));
    same.generation = 77;
    let o = run(&mut s, &[put(same, "e1", 200)]);
    assert!(matches!(
        o[0],
        Outcome::MonitorPut {
            generation: 1,
            changed: false,
            created: false,
            updated_ms: 100,
            ..
        }
    ));
    assert_eq!(v(&s), 1);
    // A changed field bumps both; created_ms stays.
    let mut p = spec("m", &sha(1));
    p.params = r#"{"x":1}"#.into();
    let o = run(&mut s, &[put(p.clone(), "e1", 300)]);
    assert!(matches!(
        o[0],
        Outcome::MonitorPut {
            generation: 2,
            changed: true,
            created: false,
            created_ms: 100,
            updated_ms: 300
        }
    ));
    // Resubmitting it unchanged changes nothing; a new artifact does.
    run(&mut s, &[put(p.clone(), "e2", 400)]);
    assert_eq!((v(&s), gen(&s)), (2, Some(2)));
    p.artifact.sha256 = sha(2);
    run(&mut s, &[put(p, "e2", 500)]);
    assert_eq!((v(&s), gen(&s)), (3, Some(3)));
    // Another monitor bumps the version, not m's generation.
    run(&mut s, &[put(spec("n", &sha(1)), "e1", 600)]);
    assert_eq!((v(&s), gen(&s)), (4, Some(3)));

    // Delete: bumps once; deleting again changes nothing.
    let o = run(
        &mut s,
        &[
            Command::DeleteMonitor {
                tenant: "acme".into(),
                name: "m".into(),
            },
            Command::DeleteMonitor {
                tenant: "acme".into(),
                name: "m".into(),
            },
        ],
    );
    assert_eq!(
        o,
        vec![
            Outcome::MonitorDeleted { existed: true },
            Outcome::MonitorDeleted { existed: false }
        ]
    );
    assert_eq!((v(&s), gen(&s)), (5, None));
    // Re-created, it never reuses a generation an edge may still run.
    run(&mut s, &[put(spec("m", &sha(1)), "e1", 700)]);
    assert_eq!(gen(&s), Some(6));
    assert!(gen(&s).unwrap() > 3);
    assert_eq!(s.workloads().monitor_count(), 2);
}

#[test]
fn monitors_need_a_stored_artifact() {
    let mut s = RegionState::default();
    let before = s.workloads().clone();
    let o = run(&mut s, &[put(spec("m", &sha(9)), "e1", 1)]);
    assert_eq!(o, vec![Outcome::Refused(Refusal::ArtifactMissing)]);
    assert_eq!(s.workloads(), &before, "a refused put changes nothing");
    let o = run(&mut s, &[put_artifact(9, 0)]);
    assert_eq!(o, vec![Outcome::Refused(Refusal::ArtifactSize)]);
}

#[test]
fn artifacts_evict_oldest_unreferenced_and_never_referenced_ones() {
    const MIB: usize = 1 << 20;
    let mut s = RegionState::default();
    let per = 8 * MIB;
    let fit = (MAX_ARTIFACT_STORE_BYTES as usize) / per; // 8
    let puts: Vec<Command> = (1..=fit as u8).map(|n| put_artifact(n, per)).collect();
    let o = run(&mut s, &puts);
    assert!(o
        .iter()
        .all(|o| *o == Outcome::ArtifactStored { created: true }));
    // Artifact 1 is in use; re-putting 2 refreshes it (created: false).
    run(&mut s, &[put(spec("m", &sha(1)), "e1", 1)]);
    assert_eq!(
        run(&mut s, &[put_artifact(2, per)]),
        vec![Outcome::ArtifactStored { created: false }]
    );
    // A new one evicts the oldest unreferenced: 3 (1 is used, 2 is fresh).
    run(&mut s, &[put_artifact(20, per)]);
    let w = s.workloads();
    assert!(w.has_artifact(&sha(1)) && w.has_artifact(&sha(2)) && !w.has_artifact(&sha(3)));
    assert_eq!(w.artifacts_evicted(), 1);
    assert_eq!(w.artifact_usage(), (fit, MAX_ARTIFACT_STORE_BYTES));

    // When every stored artifact is in use, a new one is refused and
    // nothing is evicted.
    let mut full = RegionState::default();
    let mut cmds: Vec<Command> = (1..=fit as u8).map(|n| put_artifact(n, per)).collect();
    cmds.extend((1..=fit as u8).map(|n| put(spec(&format!("m{n}"), &sha(n)), "e1", 1)));
    run(&mut full, &cmds);
    assert_eq!(
        run(&mut full, &[put_artifact(50, MIB)]),
        vec![Outcome::Refused(Refusal::ArtifactStoreFull)]
    );
    assert_eq!(full.workloads().artifact_usage().0, fit);
}

#[test]
fn snapshot_round_trip_carries_monitors_artifacts_and_alerts() {
    let mut s = RegionState::default();
    apply(
        &mut s,
        1,
        &batch(
            0,
            vec![
                SpoolEntry::Telemetry(rec("d", 1, Some(1), &[("site", "p1")])),
                SpoolEntry::Alert(alert("d", 1)),
            ],
        ),
    )
    .unwrap();
    run(
        &mut s,
        &[put_artifact(1, 3), put(spec("m", &sha(1)), "e1", 5)],
    );
    let bytes = s.encode();
    let back = RegionState::decode(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.alerts().len(), 1);
    assert_eq!(
        back.workloads().artifact(&sha(1)).unwrap().as_slice(),
        &[1, 1, 1]
    );
    assert_eq!(back.workloads().assignments_version(), 1);
    assert_eq!(back.known_devices("acme")[0].tags.len(), 1);
}

#[test]
fn new_kinds_round_trip_and_only_heartbeats_are_ignorable() {
    let cmds = [
        (put_artifact(1, 3), KIND_PUT_ARTIFACT, false),
        (
            Command::PutMonitor {
                spec: Box::new(spec("m", &sha(1))),
                edge: "e1".into(),
                now_ms: 5,
            },
            KIND_PUT_MONITOR,
            false,
        ),
        (put(spec("m", &sha(1)), "e1", 5), KIND_PUT_WORKLOAD, false),
        (
            Command::DeleteWorkload {
                tenant: "acme".into(),
                name: "m".into(),
                now_ms: 9,
            },
            KIND_DELETE_WORKLOAD,
            false,
        ),
        (
            Command::EdgeReport {
                status: EdgeStatus::default(),
                facts: strata_protocol::scheduling::NodeFacts::default(),
                received_ms: 1,
            },
            KIND_EDGE_REPORT,
            false,
        ),
        (
            Command::DeleteMonitor {
                tenant: "acme".into(),
                name: "m".into(),
            },
            KIND_DELETE_MONITOR,
            false,
        ),
        (
            Command::StoreBatch {
                batch: TelemetryBatch {
                    edge: "e".into(),
                    epoch: 1,
                    first_seq: 0,
                    entries: vec![SpoolEntry::Alert(alert("d", 1))],
                },
                received_ms: 1,
            },
            KIND_STORE_ENTRIES,
            false,
        ),
        (
            Command::EdgeHeartbeat {
                status: EdgeStatus::default(),
                received_ms: 1,
            },
            KIND_EDGE_STATUS,
            true,
        ),
    ];
    for (cmd, kind, ignorable) in cmds {
        let bytes = encode_command(&cmd);
        let (env, _): (CommandEnvelope, usize) =
            bincode::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!((env.kind, env.ignorable), (kind, ignorable), "{cmd:?}");
        assert_eq!(decode_command(&bytes).unwrap(), Decoded::Command(cmd));
    }
}

fn envelope(kind: u16, ignorable: bool, body: Vec<u8>) -> Vec<u8> {
    bincode::encode_to_vec(
        CommandEnvelope {
            kind,
            ignorable,
            body,
        },
        bincode::config::standard(),
    )
    .unwrap()
}

/// Entries and state written by protocol-version-1 hubs still apply. The
/// old layouts are rebuilt from tuples, which bincode encodes exactly like
/// structs with the same fields.
#[test]
fn version_1_entries_and_state_are_still_read() {
    let cfg = bincode::config::standard();
    let r = rec("d", 7, Some(3), &[]);
    let old_batch = (("e1".to_owned(), 4u64, 10u64, vec![r.clone()]), 99i64);
    let data = envelope(
        KIND_STORE_BATCH,
        false,
        bincode::encode_to_vec(&old_batch, cfg).unwrap(),
    );
    let mut s = RegionState::default();
    let a = apply(&mut s, 1, &data).unwrap();
    assert_eq!(a.records, vec![r]);
    assert_eq!(s.edges()[0].last_seen_ms, 99);
    let old_status = (("e1".to_owned(), 5u64, 6u64, 1.5f64, 2u32, 3u64), 120i64);
    let data = envelope(
        KIND_EDGE_HEARTBEAT,
        true,
        bincode::encode_to_vec(&old_status, cfg).unwrap(),
    );
    apply(&mut s, 2, &data).unwrap();
    let e = &s.edges()[0];
    assert_eq!(
        (e.status.spool_records, e.status.uptime_ms, e.last_seen_ms),
        (5, 3, 120)
    );
    assert_eq!(e.status.capacity, Default::default());

    // State format 1: (applied, edges, devices, gaps, restarts).
    let mut epochs = BTreeMap::new();
    epochs.insert(4u64, IntervalSet::new());
    let mut edges = BTreeMap::new();
    edges.insert(
        "e1".to_owned(),
        (
            99i64,
            ("e1".to_owned(), 0u64, 0u64, 0.0f64, 0u32, 0u64),
            1u64,
            epochs,
        ),
    );
    let mut devs = BTreeMap::new();
    devs.insert("d".to_owned(), (1u64, 7i64, 7i64, IntervalSet::new()));
    let mut devices = BTreeMap::new();
    devices.insert("acme".to_owned(), devs);
    let mut bytes = vec![1u8];
    bytes.extend(bincode::encode_to_vec((42u64, edges, devices, 0u64, 0u64), cfg).unwrap());
    let v1 = RegionState::decode(&bytes).unwrap();
    assert_eq!(v1.applied_index(), 42);
    assert_eq!(v1.devices(None)[0].records, 1);
    assert_eq!(v1.edges()[0].records_stored, 1);
    assert_eq!(v1.workloads().assignments_version(), 0);
    // It re-encodes in the current format.
    assert_eq!(v1.encode()[0], 6);
}

/// State format 2 (device seq sets) still decodes: the seq sets become
/// empty windows, so a retransmission of a reading stored before the
/// upgrade is stored again (never is a reading dropped).
#[test]
fn state_format_2_is_still_read() {
    let cfg = bincode::config::standard();
    let mut seqs = IntervalSet::new();
    seqs.insert(0..5);
    let mut epochs = BTreeMap::new();
    epochs.insert(1u64, seqs.clone());
    let status = EdgeStatus {
        edge: "e1".into(),
        spool_records: 3,
        ..EdgeStatus::default()
    };
    let mut edges = BTreeMap::new();
    edges.insert("e1".to_owned(), (99i64, status.clone(), 5u64, epochs));
    let tags = vec![Tag {
        key: "site".into(),
        value: "lab".into(),
    }];
    let mut devs = BTreeMap::new();
    devs.insert(
        "d".to_owned(),
        (5u64, 0i64, 4i64, seqs, tags.clone(), "e1".to_owned()),
    );
    let mut devices = BTreeMap::new();
    devices.insert("acme".to_owned(), devs);
    let v2 = (
        42u64,
        edges,
        devices,
        0u64,
        7u64, // device seq restarts of the old heuristic: dropped
        AlertIndex::default(),
        Workloads::default(),
    );
    let mut bytes = vec![2u8];
    bytes.extend(bincode::encode_to_vec(&v2, cfg).unwrap());
    let mut s = RegionState::decode(&bytes).unwrap();
    assert_eq!(s.applied_index(), 42);
    assert_eq!(s.edges()[0].status, status);
    assert_eq!(s.edges()[0].records_stored, 5);
    let d = &s.devices(None)[0];
    assert_eq!((d.records, d.first_ts_ms, d.last_ts_ms), (5, 0, 4));
    assert_eq!(s.known_devices("acme")[0].tags, tags.as_slice());
    assert_eq!(
        s.device_dedup("acme", "d"),
        Some(DeviceDedup {
            edge: "e1".into(),
            ..DeviceDedup::default()
        })
    );
    // Layer 1 kept its sets: the edge's old records are still resends.
    let old = vec![rec("d", 3, Some(3), &[])];
    let a = apply(&mut s, 43, &entries_cmd("e1", 1, 3, old.clone())).unwrap();
    assert!(a.records.is_empty());
    // The device window starts empty: the same reading via another edge is
    // stored again, once.
    let b = apply(&mut s, 44, &entries_cmd("e2", 1, 0, old.clone())).unwrap();
    assert_eq!(b.records, old);
    let c = apply(&mut s, 45, &entries_cmd("e2", 1, 1, old)).unwrap();
    assert!(c.records.is_empty());
    assert_eq!(s.encode()[0], 6);
    assert_eq!(RegionState::decode(&s.encode()).unwrap(), s);
}
