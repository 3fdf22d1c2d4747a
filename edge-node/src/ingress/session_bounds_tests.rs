//! Session tests of the limits on what a client may do: the time bounds
//! on readings (v5 refusals, the v3.1.1 policies, the region's retention)
//! and the keep-alive cap. Helpers come from the parent test module.

use super::*;

#[test]
fn keepalive_zero_or_above_the_cap_gets_the_cap_and_is_counted_as_idle() {
    for (version, asked) in [(Version::V4, 0), (Version::V5, 0), (Version::V5, 5000)] {
        let mut s = Session::new(version, &info(asked), cfg(10), 0);
        // 1.5 × max-keep-alive (1200 s), as for a client's own keep-alive.
        assert_eq!(s.poll_timeout(), Some(1_800_000), "{version:?} {asked}");
        s.handle_packet(Inbound::PingReq, 1_000_000, WALL);
        let _ = tx(&mut s);
        s.handle_timeout(2_799_999);
        assert!(s.is_open());
        s.handle_timeout(2_800_000);
        assert!(s.is_done());
        assert_eq!(rejects(&mut s), vec![IDLE_TIMEOUT]);
        let close = match version {
            Version::V5 => vec![Outbound::Disconnect(CloseReason::KeepAliveTimeout)],
            Version::V4 => vec![],
        };
        assert_eq!(tx(&mut s), close);
    }
}

#[test]
fn v5_clients_are_told_the_capped_keep_alive() {
    let c = cfg(10);
    let keep_alive = |v, asked| match accept_connect(v, &info(asked), &c, 1).unwrap().connack {
        Outbound::ConnAck {
            server_keep_alive, ..
        } => server_keep_alive,
        other => panic!("{other:?}"),
    };
    assert_eq!(keep_alive(Version::V5, 0), Some(1200));
    assert_eq!(keep_alive(Version::V5, 1201), Some(1200));
    assert_eq!(keep_alive(Version::V5, 1200), None, "granted as asked");
    assert_eq!(keep_alive(Version::V5, 30), None);
    assert_eq!(
        keep_alive(Version::V4, 0),
        None,
        "v3.1.1 has no way to say it"
    );
    assert_eq!(granted_keep_alive(0, 60), 60);
    assert_eq!(granted_keep_alive(61, 60), 60);
    assert_eq!(granted_keep_alive(59, 60), 59);
}

/// A reading stamped `ts` (ms).
fn reading(qos: u8, pid: u16, ts: i64) -> Inbound {
    publish(
        qos,
        pid,
        "strata/acme/d1/telemetry",
        format!(r#"{{"ts":{ts},"metrics":{{"t":1}}}}"#).as_bytes(),
    )
}

const DAY: i64 = 86_400_000;

#[test]
fn v5_out_of_bounds_readings_are_refused_with_0x83_and_which_bound() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_packet(reading(1, 2, WALL + 10 * 365 * DAY), 0, WALL);
    s.handle_packet(reading(1, 3, WALL - 30 * DAY), 0, WALL);
    s.handle_packet(reading(2, 4, i64::MAX), 0, WALL);
    s.handle_packet(reading(0, 0, i64::MIN), 0, WALL);
    // The inclusive edges are accepted.
    s.handle_packet(reading(1, 5, WALL + 300_000), 0, WALL);
    s.handle_packet(reading(1, 6, WALL - 7 * DAY), 0, WALL);
    s.end_of_read();
    let cmds: Vec<Command> = s.take_commands().collect();
    let reasons: Vec<&str> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Reject { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec!["too_far_future", "too_old", "too_far_future", "too_old"]
    );
    let stored: Vec<usize> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Submit { records, .. } => Some(records.len()),
            _ => None,
        })
        .collect();
    assert_eq!(stored, vec![3], "only pids 1, 5 and 6 are spooled");
    assert_eq!(tx(&mut s), vec![], "every ack waits for pid 1's submit");
    s.handle_submit_done(0, true, 1);
    let out = tx(&mut s);
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(out[0], puback(1));
    let refused = |o: &Outbound| match o {
        Outbound::PubAck {
            code: AckCode::ImplementationSpecificError,
            reason: Some(r),
            ..
        }
        | Outbound::PubRec {
            code: AckCode::ImplementationSpecificError,
            reason: Some(r),
            ..
        } => r.clone(),
        other => panic!("expected a 0x83 refusal, got {other:?}"),
    };
    let future = refused(&out[1]);
    assert!(
        future.contains("ahead of the edge clock; max-future-skew is 5m"),
        "{future}"
    );
    let old = refused(&out[2]);
    assert!(
        old.contains("is 30days old; the oldest accepted is 7days (max-past-age)"),
        "{old}"
    );
    assert!(refused(&out[3]).contains("ahead"));
    assert!(matches!(out[3], Outbound::PubRec { pid: 4, .. }));
    assert_eq!(&out[4..], &[puback(5), puback(6)]);
    // A refused QoS 2 ends its exchange.
    s.handle_packet(Inbound::PubRel(4), 2, WALL);
    assert_eq!(
        tx(&mut s),
        vec![Outbound::PubComp {
            pid: 4,
            found: false
        }]
    );
}

#[test]
fn reason_strings_respect_problem_info_and_max_packet_size() {
    for (problem_info, max_packet) in [(false, None), (true, Some(100))] {
        let mut i = info(10);
        i.request_problem_info = problem_info;
        i.max_packet_size = max_packet;
        let mut s = Session::new(Version::V5, &i, cfg(100), 0);
        s.handle_packet(reading(1, 1, WALL + DAY), 0, WALL);
        assert_eq!(
            tx(&mut s),
            vec![Outbound::PubAck {
                pid: 1,
                code: AckCode::ImplementationSpecificError,
                reason: None
            }]
        );
    }
}

#[test]
fn v3_refusal_policy_drop_acks_and_discards() {
    let mut s = session(Version::V4, 100);
    s.handle_packet(reading(1, 1, WALL + DAY), 0, WALL);
    s.handle_packet(good(1, 2), 0, WALL);
    s.end_of_read();
    let cmds: Vec<Command> = s.take_commands().collect();
    assert!(matches!(
        &cmds[0],
        Command::Reject { reason: "too_far_future", detail } if detail.contains("max-future-skew")
    ));
    assert!(matches!(&cmds[2], Command::Submit { id: 0, records } if records.len() == 1));
    s.handle_submit_done(0, true, 1);
    assert_eq!(tx(&mut s), vec![puback(1), puback(2)]);
    assert!(s.is_open());
}

#[test]
fn v3_refusal_policy_disconnect_withholds_the_ack_and_closes() {
    let mut c = cfg(100);
    c.v3_refusal = V3Refusal::Disconnect;
    let mut s = Session::new(Version::V4, &info(10), c, 0);
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_packet(reading(1, 2, WALL - 30 * DAY), 0, WALL);
    // Already buffered behind it: not processed, so not acked either.
    s.handle_packet(good(1, 3), 0, WALL);
    s.end_of_read();
    assert_eq!(rejects(&mut s), vec!["too_old"]);
    assert!(!s.is_open());
    s.handle_submit_done(0, true, 1);
    assert!(s.is_done());
    assert_eq!(tx(&mut s), vec![puback(1)], "no ack for pid 2 or 3");
}

#[test]
fn the_region_retention_tightens_the_past_bound_mid_session() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(reading(1, 1, WALL - 2 * DAY), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![(0, 1)]);
    s.set_time_bounds(TimeBounds {
        max_future_skew_ms: 300_000,
        max_past_age_ms: DAY as u64,
        past_from_region: true,
    });
    s.handle_packet(reading(1, 2, WALL - 2 * DAY), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![]);
    s.handle_submit_done(0, true, 1);
    let out = tx(&mut s);
    assert_eq!(out[0], puback(1));
    assert!(
        matches!(&out[1], Outbound::PubAck { pid: 2, reason: Some(r), .. } if r.ends_with("(the region's retention)")),
        "{out:?}"
    );
}
