//! Tests of the pure state machine: determinism, exactly-once under resend,
//! re-cut, reorder and device retransmission, and versioned commands. The
//! adversarial dedup properties are in `dedup_prop_tests`.

use super::*;
use proptest::prelude::*;
use strata_protocol::{DeviceInfo, Metric, SpoolEntry};

fn rec(device: &str, ts_ms: i64, seq: Option<u64>) -> TelemetryRecord {
    TelemetryRecord {
        tenant: "acme".into(),
        device: device.into(),
        ts_ms,
        seq,
        metrics: vec![Metric {
            name: "t".into(),
            value: ts_ms as f64 / 10.0,
        }],
        tags: vec![],
    }
}

fn batch_cmd(edge: &str, epoch: u64, first_seq: u64, records: Vec<TelemetryRecord>) -> Vec<u8> {
    entries_cmd(
        edge,
        epoch,
        first_seq,
        records.into_iter().map(SpoolEntry::Telemetry).collect(),
    )
}

fn entries_cmd(edge: &str, epoch: u64, first_seq: u64, entries: Vec<SpoolEntry>) -> Vec<u8> {
    encode_command(&Command::StoreBatch {
        batch: TelemetryBatch {
            edge: edge.into(),
            epoch,
            first_seq,
            entries,
        },
        received_ms: 1_000,
    })
}

fn raw_envelope(kind: u16, ignorable: bool) -> Vec<u8> {
    bincode::encode_to_vec(
        CommandEnvelope {
            kind,
            ignorable,
            body: vec![1, 2, 3],
        },
        bincode::config::standard(),
    )
    .unwrap()
}

#[test]
fn command_round_trip() {
    let cmds = [
        Command::StoreBatch {
            batch: TelemetryBatch {
                edge: "e1".into(),
                epoch: 9,
                first_seq: 4,
                entries: vec![
                    SpoolEntry::Telemetry(rec("d", 5, Some(1))),
                    SpoolEntry::Telemetry(rec("d", 6, None)),
                ],
            },
            received_ms: 77,
        },
        Command::EdgeHeartbeat {
            status: EdgeStatus {
                edge: "e1".into(),
                spool_records: 3,
                ..EdgeStatus::default()
            },
            received_ms: -5,
        },
    ];
    for cmd in cmds {
        assert_eq!(
            decode_command(&encode_command(&cmd)).unwrap(),
            Decoded::Command(cmd)
        );
    }
}

#[test]
fn resend_stores_nothing_and_old_index_is_skipped() {
    let mut s = RegionState::default();
    let data = batch_cmd("e1", 1, 0, vec![rec("d", 1, None), rec("d", 2, None)]);
    let a = apply(&mut s, 1, &data).unwrap();
    assert_eq!(a.records.len(), 2);
    let b = apply(&mut s, 2, &data).unwrap();
    assert!(b.records.is_empty());
    assert_eq!(
        b.outcome,
        Outcome::Committed {
            first_seq: 0,
            count: 2,
            new_records: 0,
            edge_resends: 2,
            device_retransmissions: 0,
            seq_reuses: 0,
            new_alerts: 0,
            new_metrics: 0,
            stale_fences: 0,
            checkpoints: Default::default(),
        }
    );
    // Replaying an already applied index does nothing, even with other bytes.
    let other = batch_cmd("e1", 1, 10, vec![rec("d", 3, None)]);
    let c = apply(&mut s, 2, &other).unwrap();
    assert_eq!(c.outcome, Outcome::Skipped);
    assert_eq!(s.applied_index(), 2);
    // A new epoch (wiped spool) with the same seqs is new data.
    let d = apply(&mut s, 3, &batch_cmd("e1", 2, 0, vec![rec("d", 9, None)])).unwrap();
    assert_eq!(d.records.len(), 1);
    let edges = s.edges();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].records_stored, 3);
    assert_eq!(edges[0].last_seen_ms, 1_000);
}

#[test]
fn overlapping_recut_stores_only_the_new_part() {
    let mut s = RegionState::default();
    let all: Vec<_> = (0..10).map(|i| rec("d", i, None)).collect();
    apply(&mut s, 1, &batch_cmd("e", 1, 2, all[2..5].to_vec())).unwrap();
    let a = apply(&mut s, 2, &batch_cmd("e", 1, 0, all[0..8].to_vec())).unwrap();
    let ts: Vec<i64> = a.records.iter().map(|r| r.ts_ms).collect();
    assert_eq!(ts, vec![0, 1, 5, 6, 7]);
}

#[test]
fn device_retransmission_through_another_edge_is_dropped() {
    let mut s = RegionState::default();
    let a = apply(
        &mut s,
        1,
        &batch_cmd("e1", 1, 0, vec![rec("d", 10, Some(5))]),
    )
    .unwrap();
    assert_eq!(a.records.len(), 1);
    let b = apply(
        &mut s,
        2,
        &batch_cmd("e2", 1, 0, vec![rec("d", 10, Some(5))]),
    )
    .unwrap();
    assert!(b.records.is_empty(), "same reading via another edge");
    assert!(matches!(
        b.outcome,
        Outcome::Committed {
            new_records: 0,
            edge_resends: 0,
            device_retransmissions: 1,
            ..
        }
    ));
    // Without a seq the reading is recognised by its time and content.
    apply(&mut s, 3, &batch_cmd("e1", 1, 1, vec![rec("d", 11, None)])).unwrap();
    let c = apply(&mut s, 4, &batch_cmd("e2", 1, 1, vec![rec("d", 11, None)])).unwrap();
    assert!(c.records.is_empty());
    // Another value at the same time is another reading.
    let mut other = rec("d", 11, None);
    other.metrics[0].value = 42.0;
    let c = apply(&mut s, 44, &batch_cmd("e2", 1, 2, vec![other])).unwrap();
    assert_eq!(c.records.len(), 1);
    // Same device seq inside one batch: the second copy is a duplicate.
    let d = apply(
        &mut s,
        45,
        &batch_cmd(
            "e1",
            1,
            2,
            vec![rec("d", 20, Some(9)), rec("d", 20, Some(9))],
        ),
    )
    .unwrap();
    assert_eq!(d.records.len(), 1);
    let devs = s.devices(Some("acme"));
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].records, 4);
    assert_eq!(devs[0].retransmissions_dropped, 3);
    assert_eq!(devs[0].seq_reuses, 0);
    assert_eq!((devs[0].first_ts_ms, devs[0].last_ts_ms), (10, 20));
    assert_eq!(
        s.device_dedup("acme", "d"),
        Some(DeviceDedup {
            retransmissions_dropped: 3,
            seq_reuses: 0,
            // The copy through e2 was dropped: the device still reports
            // through e1.
            edge: "e1".into(),
        })
    );
    assert_eq!(s.edges()[1].resends_dropped, 0);
    assert_eq!(s.device_count(), 1);
    assert!(s.devices(Some("other")).is_empty());
}

#[test]
fn counter_restarts_and_clock_jumps_never_drop_a_reading() {
    let mut s = RegionState::default();
    apply(
        &mut s,
        1,
        &batch_cmd(
            "e",
            1,
            0,
            vec![rec("d", 100, Some(0)), rec("d", 101, Some(1))],
        ),
    )
    .unwrap();
    // Device rebooted: seq 0 again with a newer reading, then with an
    // older one (its clock is behind). Both are readings of their own.
    let a = apply(
        &mut s,
        2,
        &batch_cmd(
            "e",
            1,
            2,
            vec![rec("d", 200, Some(0)), rec("d", 50, Some(1))],
        ),
    )
    .unwrap();
    assert_eq!(a.records.len(), 2);
    assert!(matches!(
        a.outcome,
        Outcome::Committed {
            new_records: 2,
            seq_reuses: 2,
            ..
        }
    ));
    // Retransmissions of old and new readings are all still recognised.
    let b = apply(
        &mut s,
        3,
        &batch_cmd(
            "e2",
            1,
            0,
            vec![
                rec("d", 200, Some(0)),
                rec("d", 100, Some(0)),
                rec("d", 50, Some(1)),
                rec("d", 101, Some(1)),
            ],
        ),
    )
    .unwrap();
    assert!(b.records.is_empty());
    assert_eq!(
        s.device_dedup("acme", "d"),
        Some(DeviceDedup {
            retransmissions_dropped: 4,
            seq_reuses: 2,
            edge: "e".into(),
        })
    );
    assert_eq!(s.devices(None)[0].records, 4);
}

#[test]
fn unknown_commands_skip_or_halt() {
    let mut s = RegionState::default();
    let a = apply(&mut s, 1, &raw_envelope(999, true)).unwrap();
    assert_eq!(a.outcome, Outcome::Skipped);
    assert_eq!(s.applied_index(), 1);
    let err = apply(&mut s, 2, &raw_envelope(999, false)).unwrap_err();
    assert_eq!(err.root(), &FsmError::UnknownCommand { kind: 999 });
    assert!(err.to_string().contains("raft entry 2"), "{err}");
    assert_eq!(s.applied_index(), 1, "a failed entry is not consumed");
    assert!(matches!(
        apply(&mut s, 2, &[0xff, 0xff]).unwrap_err().root(),
        FsmError::MalformedEnvelope { .. }
    ));
    // A known kind with a broken body is an error, even if marked ignorable.
    assert!(matches!(
        decode_command(&raw_envelope(KIND_STORE_BATCH, true)).unwrap_err(),
        FsmError::MalformedBody { kind: 1, .. }
    ));
}

#[test]
fn heartbeat_updates_edge() {
    let mut s = RegionState::default();
    let status = EdgeStatus {
        edge: "e9".into(),
        spool_records: 42,
        connected_clients: 3,
        ..EdgeStatus::default()
    };
    let cmd = encode_command(&Command::EdgeHeartbeat {
        status: status.clone(),
        received_ms: 5_000,
    });
    assert_eq!(
        apply(&mut s, 1, &cmd).unwrap().outcome,
        Outcome::HeartbeatRecorded {
            assignments_version: 0
        }
    );
    let edges = s.edges();
    assert_eq!(edges[0].status, status);
    assert_eq!(edges[0].last_seen_ms, 5_000);
}

#[test]
fn state_round_trips_and_rejects_garbage() {
    let mut s = RegionState::default();
    apply(
        &mut s,
        1,
        &batch_cmd("e", 3, 0, vec![rec("d", 1, Some(1)), rec("x", 2, None)]),
    )
    .unwrap();
    apply(&mut s, 2, &batch_cmd("e", 3, 5, vec![rec("d", 3, Some(7))])).unwrap();
    let bytes = s.encode();
    assert_eq!(RegionState::decode(&bytes).unwrap(), s);
    assert_eq!(RegionState::decode(&[]).unwrap(), RegionState::default());
    assert!(matches!(
        RegionState::decode(&[9, 1, 2]),
        Err(FsmError::CorruptState { .. })
    ));
    assert!(matches!(
        RegionState::decode(&bytes[..bytes.len() - 1]),
        Err(FsmError::CorruptState { .. })
    ));
}

#[test]
fn dedup_sets_are_bounded() {
    let mut s = RegionState::default();
    // Every other seq: one interval each, a broken sender's pattern.
    let n = DEDUP_MAX_INTERVALS as u64 + 10;
    for i in 0..n {
        apply(
            &mut s,
            i + 1,
            &batch_cmd("e", 1, i * 2, vec![rec("d", i as i64, None)]),
        )
        .unwrap();
    }
    assert_eq!(s.dedup_gaps_merged(), 10);
    assert_eq!(s.edges()[0].records_stored, n);
}

/// Builds the original sequence: unique device seqs per device, some `None`.
fn original(n: usize) -> Vec<TelemetryRecord> {
    (0..n)
        .map(|i| {
            let device = format!("d{}", i % 3);
            let seq = (i % 4 != 0).then_some(i as u64);
            rec(&device, i as i64, seq)
        })
        .collect()
}

fn sorted(mut v: Vec<TelemetryRecord>) -> Vec<TelemetryRecord> {
    v.sort_by(|a, b| (a.ts_ms, &a.device).cmp(&(b.ts_ms, &b.device)));
    v
}

/// (length, cut points, extra re-cut batches `(start, len)`, device retransmits).
type Plan = (usize, Vec<usize>, Vec<(usize, usize)>, Vec<usize>);

fn arb_plan() -> impl Strategy<Value = Plan> {
    (1usize..60).prop_flat_map(|n| {
        (
            Just(n),
            proptest::collection::vec(1..=n, 0..6), // cut points
            proptest::collection::vec((0..n, 1..=n), 0..8), // extra re-cut batches
            proptest::collection::vec(0..n, 0..10), // device retransmits via e2
        )
    })
}

proptest! {
    #[test]
    fn exactly_once_under_recut_duplication_and_reorder(
        (n, cuts, extra, retrans) in arb_plan(),
        order_seed in any::<u64>(),
    ) {
        let all = original(n);
        let mut bounds: Vec<usize> = cuts;
        bounds.push(0);
        bounds.push(n);
        bounds.sort_unstable();
        bounds.dedup();
        let mut batches: Vec<Vec<u8>> = bounds
            .windows(2)
            .map(|w| batch_cmd("e1", 7, w[0] as u64, all[w[0]..w[1]].to_vec()))
            .collect();
        for (start, len) in extra {
            let end = (start + len).min(n);
            batches.push(batch_cmd("e1", 7, start as u64, all[start..end].to_vec()));
        }
        // Device retransmissions arriving through another edge (only records
        // with a device seq can be recognised).
        for (k, i) in retrans.iter().enumerate() {
            if all[*i].seq.is_some() {
                batches.push(batch_cmd("e2", 1, k as u64, vec![all[*i].clone()]));
            }
        }
        // Deterministic shuffle from the generated seed (printed by proptest on failure).
        let mut order: Vec<usize> = (0..batches.len()).collect();
        let mut x = order_seed | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut s1 = RegionState::default();
        let mut s2 = RegionState::default();
        let mut stored = Vec::new();
        for (idx, b) in order.iter().enumerate() {
            let a1 = apply(&mut s1, idx as u64 + 1, &batches[*b]).unwrap();
            // Determinism: a second replica applying the same entries agrees.
            let a2 = apply(&mut s2, idx as u64 + 1, &batches[*b]).unwrap();
            prop_assert_eq!(&a1, &a2);
            stored.extend(a1.records);
        }
        prop_assert_eq!(s1.encode(), s2.encode());
        prop_assert_eq!(sorted(stored), sorted(all));
    }
}

/// The store's device list (sorted) gets the replicated dedup counters of
/// the devices that have any; others keep zeros.
#[test]
fn device_lists_get_dedup_counters() {
    let mut s = RegionState::default();
    let data = batch_cmd("e1", 1, 0, vec![rec("b", 1, Some(1)), rec("d", 1, Some(1))]);
    apply(&mut s, 1, &data).unwrap();
    let again = batch_cmd("e2", 1, 0, vec![rec("d", 1, Some(1)), rec("d", 2, Some(1))]);
    apply(&mut s, 2, &again).unwrap();
    let counts = s.device_facts(Some("acme"));
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(s.device_facts(Some("other")).is_empty());
    let info = |tenant: &str, device: &str| DeviceInfo {
        tenant: tenant.into(),
        device: device.into(),
        records: 1,
        first_ts_ms: 0,
        last_ts_ms: 0,
        retransmissions_dropped: 0,
        seq_reuses: 0,
        edge: None,
    };
    let mut listed = vec![
        info("acme", "a"),
        info("acme", "d"),
        info("acme", "e"),
        info("zeta", "d"),
    ];
    add_device_dedup(&mut listed, &counts);
    let got: Vec<(u64, u64)> = listed
        .iter()
        .map(|d| (d.retransmissions_dropped, d.seq_reuses))
        .collect();
    assert_eq!(got, vec![(0, 0), (1, 1), (0, 0), (0, 0)]);
    let edges: Vec<Option<&str>> = listed.iter().map(|d| d.edge.as_deref()).collect();
    assert_eq!(
        edges,
        vec![None, Some("e2"), None, None],
        "where each reports through"
    );
}
