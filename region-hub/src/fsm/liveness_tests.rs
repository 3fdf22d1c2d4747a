//! Tests of the state machine's liveness parts: the `EdgeTransition`
//! command (kind, ignorable, apply), the event log it feeds, devices
//! changing edges, state format 4 and reading format 3.

use super::*;
use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, Evidence, LivenessState};
use strata_protocol::{Metric, SpoolEntry};

fn transition(edge: &str, kind: EventKind, state: LivenessState, at_ms: i64) -> Command {
    Command::EdgeTransition(EdgeTransition {
        edge: edge.into(),
        kind,
        from: LivenessState::Up,
        at_ms,
        liveness: EdgeLiveness {
            state,
            classification: Classification::Crash,
            evidence: vec![Evidence::ConnectionReset],
            boot_id: 9,
            since_ms: at_ms,
            last_heartbeat_ms: at_ms - 900,
            detection_ms: Some(900),
            event_seq: 0,
        },
        message: format!("{edge} is {}", state.as_str()),
    })
}

fn reading(device: &str, ts_ms: i64) -> SpoolEntry {
    SpoolEntry::Telemetry(TelemetryRecord {
        tenant: "acme".into(),
        device: device.into(),
        ts_ms,
        seq: Some(ts_ms as u64),
        metrics: vec![Metric {
            name: "t".into(),
            value: 1.0,
        }],
        tags: vec![],
    })
}

fn batch(edge: &str, first_seq: u64, entries: Vec<SpoolEntry>) -> Vec<u8> {
    encode_command(&Command::StoreBatch {
        batch: TelemetryBatch {
            edge: edge.into(),
            epoch: 1,
            first_seq,
            entries,
        },
        received_ms: 1,
    })
}

#[test]
fn a_transition_is_an_ignorable_kind_that_round_trips() {
    let cmd = transition("e1", EventKind::EdgeDown, LivenessState::Down, 5_000);
    let bytes = encode_command(&cmd);
    let (env, _): (CommandEnvelope, usize) =
        bincode::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!((env.kind, env.ignorable), (KIND_EDGE_TRANSITION, true));
    assert_eq!(decode_command(&bytes).unwrap(), Decoded::Command(cmd));
}

#[test]
fn a_transition_records_the_decision_and_appends_its_event() {
    let mut s = RegionState::default();
    let a = apply(
        &mut s,
        1,
        &encode_command(&transition(
            "e1",
            EventKind::EdgeUp,
            LivenessState::Up,
            1_000,
        )),
    )
    .unwrap();
    assert_eq!(a.outcome, Outcome::TransitionRecorded { event_seq: 1 });
    let a = apply(
        &mut s,
        2,
        &encode_command(&transition(
            "e1",
            EventKind::EdgeDown,
            LivenessState::Down,
            2_000,
        )),
    )
    .unwrap();
    assert_eq!(a.outcome, Outcome::TransitionRecorded { event_seq: 2 });
    let l = s.liveness("e1").unwrap();
    assert_eq!(
        (l.state, l.event_seq, l.boot_id),
        (LivenessState::Down, 2, 9)
    );
    let page = s.events().page(1, 10);
    assert_eq!(page.events.len(), 2);
    let down = &page.events[1];
    assert_eq!(
        (down.seq, down.at_ms, down.kind, down.subject.as_str()),
        (2, 2_000, EventKind::EdgeDown, "e1")
    );
    let detail = down.edge.as_ref().unwrap();
    assert_eq!(detail.from, LivenessState::Up);
    assert_eq!(detail.liveness.detection_ms, Some(900));
    assert_eq!(detail.liveness.event_seq, 2);
    // An edge known only by its decisions is listed, with them.
    let edges = s.edges();
    assert_eq!(edges.len(), 1);
    assert_eq!(
        edges[0].liveness.as_ref().unwrap().state,
        LivenessState::Down
    );
    // A replayed index changes nothing.
    let again = apply(
        &mut s,
        2,
        &encode_command(&transition(
            "e1",
            EventKind::EdgeUp,
            LivenessState::Up,
            3_000,
        )),
    )
    .unwrap();
    assert_eq!(again.outcome, Outcome::Skipped);
    assert_eq!(s.events().end_seq(), 3);
}

#[test]
fn the_event_log_stays_bounded_and_in_order() {
    let mut s = RegionState::default();
    let n = liveness::MAX_EVENTS as u64 + 5;
    for i in 1..=n {
        let state = if i % 2 == 0 {
            LivenessState::Down
        } else {
            LivenessState::Up
        };
        apply(
            &mut s,
            i,
            &encode_command(&transition("e1", EventKind::EdgeUp, state, i as i64)),
        )
        .unwrap();
    }
    assert_eq!(s.events().len(), liveness::MAX_EVENTS);
    let page = s.events().page(1, 3);
    assert_eq!(page.missed, 5);
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
}

#[test]
fn devices_arriving_through_another_edge_are_reported_as_moves() {
    let mut s = RegionState::default();
    let a = apply(
        &mut s,
        1,
        &batch("e1", 0, vec![reading("d1", 10), reading("d2", 10)]),
    )
    .unwrap();
    assert!(a.device_moves.is_empty(), "first sight is not a move");
    let b = apply(
        &mut s,
        2,
        &batch(
            "e2",
            0,
            vec![reading("d1", 20), reading("d2", 20), reading("d3", 20)],
        ),
    )
    .unwrap();
    assert_eq!(
        b.device_moves,
        vec![DeviceMove {
            from: "e1".into(),
            to: "e2".into(),
            devices: 2
        }]
    );
    // An old reading arriving late through e1 does not move them back.
    let c = apply(&mut s, 3, &batch("e1", 2, vec![reading("d1", 15)])).unwrap();
    assert!(c.device_moves.is_empty());
}

#[test]
fn state_format_4_carries_liveness_and_events() {
    let mut s = RegionState::default();
    apply(
        &mut s,
        1,
        &encode_command(&transition(
            "e1",
            EventKind::EdgeDown,
            LivenessState::Down,
            7,
        )),
    )
    .unwrap();
    let bytes = s.encode();
    assert_eq!(bytes[0], 6);
    let back = RegionState::decode(&bytes).unwrap();
    assert_eq!(back, s);
    // Format 4 is format 6 without the scheduling state (an empty one
    // encodes as: no allocations, next token 1, no evaluations, no facts,
    // two zero counters) and the checkpoints (no map entries, zero bytes).
    assert_eq!(&bytes[bytes.len() - 8..], &[0, 1, 0, 0, 0, 0, 0, 0]);
    let mut v4 = vec![4u8];
    v4.extend_from_slice(&bytes[1..bytes.len() - 8]);
    let back = RegionState::decode(&v4).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.events().page(1, 10).events.len(), 1);
    assert_eq!(back.liveness("e1").unwrap().state, LivenessState::Down);
}

/// A format-3 state (written before edge liveness) decodes with no
/// decisions and an empty event log. Format 3 is format 4 without its two
/// last fields, so the bytes are rebuilt from a state that has none.
#[test]
fn state_format_3_is_still_read() {
    let mut s = RegionState::default();
    let status = EdgeStatus {
        edge: "e1".into(),
        spool_records: 4,
        ..EdgeStatus::default()
    };
    apply(
        &mut s,
        1,
        &encode_command(&Command::EdgeHeartbeat {
            status: status.clone(),
            received_ms: 50,
        }),
    )
    .unwrap();
    apply(&mut s, 2, &batch("e1", 0, vec![reading("d1", 10)])).unwrap();
    let v6 = s.encode();
    // The tail: an empty liveness map (0), then the log: next_seq 1, no
    // events, then the empty scheduling state and checkpoints (see above).
    assert_eq!(&v6[v6.len() - 11..], &[0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    let mut v3 = vec![3u8];
    v3.extend_from_slice(&v6[1..v6.len() - 11]);
    let back = RegionState::decode(&v3).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.edges()[0].status, status);
    assert_eq!(back.devices(None)[0].records, 1);
    assert_eq!(back.events().end_seq(), 1);
    // A format-3 body with anything after it is refused.
    let mut long = v3.clone();
    long.push(0);
    assert!(RegionState::decode(&long).is_err());
}

/// Older hubs wrote a heartbeat entry per heartbeat (kinds 2 and 4);
/// replaying them still records the status.
#[test]
fn old_heartbeat_entries_still_apply() {
    let mut s = RegionState::default();
    let status = EdgeStatus {
        edge: "e1".into(),
        connected_clients: 3,
        ..EdgeStatus::default()
    };
    let a = apply(
        &mut s,
        1,
        &encode_command(&Command::EdgeHeartbeat {
            status: status.clone(),
            received_ms: 77,
        }),
    )
    .unwrap();
    assert!(matches!(a.outcome, Outcome::HeartbeatRecorded { .. }));
    assert_eq!(s.edges()[0].status, status);
    assert_eq!(s.edges()[0].last_seen_ms, 77);
    assert!(s.edges()[0].liveness.is_none());
}
