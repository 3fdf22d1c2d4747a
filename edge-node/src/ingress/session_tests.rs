//! Deterministic tests of the session core: feed packets, assert on the
//! commands and packets it emits.

use super::*;
use proptest::prelude::*;

#[path = "session_bounds_tests.rs"]
mod bounds;

const GOOD: &[u8] = br#"{"ts":1700000000000,"metrics":{"t":21.5}}"#;
/// The wall clock of the tests: `GOOD` was stamped a minute ago.
const WALL: i64 = 1_700_000_060_000;

fn cfg(max_inflight: usize) -> SessionConfig {
    SessionConfig {
        max_inflight,
        max_packet_bytes: 4096,
        subscriber_queue: 2,
        time_bounds: TimeBounds {
            max_future_skew_ms: 300_000,
            max_past_age_ms: 7 * 86_400_000,
            past_from_region: false,
        },
        v3_refusal: V3Refusal::Drop,
        max_keep_alive_s: 1200,
    }
}

fn info(ka: u16) -> ConnectInfo {
    ConnectInfo {
        client_id: "c".into(),
        keep_alive_s: ka,
        clean_start: true,
        receive_maximum: u16::MAX,
        max_packet_size: None,
        request_problem_info: true,
        login: None,
    }
}

fn session(v: Version, max_inflight: usize) -> Session {
    Session::new(v, &info(10), cfg(max_inflight), 0)
}

fn publish(qos: u8, pid: u16, topic: &str, payload: &[u8]) -> Inbound {
    Inbound::Publish(InPublish {
        topic: topic.into(),
        pid,
        qos,
        dup: false,
        payload: Bytes::copy_from_slice(payload),
        topic_alias: None,
    })
}

fn good(qos: u8, pid: u16) -> Inbound {
    publish(qos, pid, "strata/acme/d1/telemetry", GOOD)
}

fn tx(s: &mut Session) -> Vec<Outbound> {
    s.take_transmit().collect()
}

fn submits(s: &mut Session) -> Vec<(u64, usize)> {
    s.take_commands()
        .filter_map(|c| match c {
            Command::Submit { id, records } => Some((id, records.len())),
            _ => None,
        })
        .collect()
}

fn rejects(s: &mut Session) -> Vec<&'static str> {
    s.take_commands()
        .filter_map(|c| match c {
            Command::Reject { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn puback(pid: u16) -> Outbound {
    Outbound::PubAck {
        pid,
        code: AckCode::Success,
        reason: None,
    }
}

fn pubrec(pid: u16) -> Outbound {
    Outbound::PubRec {
        pid,
        code: AckCode::Success,
        reason: None,
    }
}

#[test]
fn one_read_pass_is_one_submit_and_acks_wait_for_it() {
    let mut s = session(Version::V4, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_packet(publish(1, 2, "strata/acme/d1/telemetry", b"{nope"), 0, WALL);
    s.handle_packet(good(1, 3), 0, WALL);
    s.handle_packet(good(0, 0), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![(0, 3)]);
    // The rejected publish's ack (pid 2) must not overtake pid 1.
    assert_eq!(tx(&mut s), vec![]);
    s.handle_submit_done(0, true, 1);
    assert_eq!(tx(&mut s), vec![puback(1), puback(2), puback(3)]);
}

#[test]
fn acks_stay_in_order_when_submits_finish_out_of_order() {
    let mut s = session(Version::V4, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.end_of_read();
    s.handle_packet(good(1, 2), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![(0, 1), (1, 1)]);
    s.handle_submit_done(1, true, 1);
    assert_eq!(tx(&mut s), vec![]);
    s.handle_submit_done(0, true, 1);
    assert_eq!(tx(&mut s), vec![puback(1), puback(2)]);
}

#[test]
fn control_packets_are_not_held_behind_acks() {
    let mut s = session(Version::V4, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_packet(Inbound::PingReq, 0, WALL);
    assert_eq!(tx(&mut s), vec![Outbound::PingResp]);
}

#[test]
fn qos2_retransmission_is_acked_but_stored_once() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(good(2, 5), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![(0, 1)]);
    // Retransmitted while the first submit is still in flight.
    s.handle_packet(good(2, 5), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![], "duplicate must not be stored");
    assert_eq!(tx(&mut s), vec![], "PUBREC only after durable");
    s.handle_submit_done(0, true, 1);
    assert_eq!(tx(&mut s), vec![pubrec(5), pubrec(5)]);
    // Retransmitted again after PUBREC: acked at once, still not stored.
    s.handle_packet(good(2, 5), 2, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![]);
    assert_eq!(tx(&mut s), vec![pubrec(5)]);
    s.handle_packet(Inbound::PubRel(5), 3, WALL);
    assert_eq!(
        tx(&mut s),
        vec![Outbound::PubComp {
            pid: 5,
            found: true
        }]
    );
    // After PUBREL the id is free: a new publish with it is new data.
    s.handle_packet(good(2, 5), 4, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![(1, 1)]);
    // Unknown PUBREL.
    s.handle_packet(Inbound::PubRel(77), 5, WALL);
    assert_eq!(tx(&mut s), vec![]);
    s.handle_submit_done(1, true, 6);
    assert_eq!(
        tx(&mut s),
        vec![
            pubrec(5),
            Outbound::PubComp {
                pid: 77,
                found: false
            }
        ]
    );
}

#[test]
fn keepalive_is_one_and_a_half_times_and_paused_by_inflight_submits() {
    let mut s = session(Version::V5, 100);
    assert_eq!(s.poll_timeout(), Some(15_000));
    s.handle_packet(Inbound::PingReq, 4_000, WALL);
    assert_eq!(s.poll_timeout(), Some(19_000));
    s.handle_timeout(18_999);
    assert!(s.is_open());
    // A slow submit: the client is not at fault.
    s.handle_packet(good(1, 1), 5_000, WALL);
    s.end_of_read();
    s.handle_timeout(40_000);
    assert!(s.is_open());
    s.handle_submit_done(0, true, 41_000);
    assert_eq!(s.poll_timeout(), Some(56_000));
    let _ = tx(&mut s);
    let _ = s.take_commands().count();
    s.handle_timeout(56_000);
    assert!(s.is_done());
    assert_eq!(rejects(&mut s), vec!["keep_alive_timeout"]);
    assert_eq!(
        tx(&mut s),
        vec![Outbound::Disconnect(CloseReason::KeepAliveTimeout)]
    );
}

#[test]
fn backpressure_at_max_inflight() {
    let mut s = session(Version::V4, 2);
    assert!(s.can_read());
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_packet(good(0, 0), 0, WALL);
    assert!(!s.can_read());
    s.end_of_read();
    assert!(!s.can_read());
    s.handle_submit_done(0, true, 1);
    assert!(s.can_read());
}

#[test]
fn sink_failure_withholds_acks_and_closes_after_draining() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.end_of_read();
    s.handle_packet(good(1, 2), 0, WALL);
    s.end_of_read();
    s.handle_packet(good(1, 3), 0, WALL);
    s.end_of_read();
    s.handle_submit_done(0, true, 1);
    assert_eq!(tx(&mut s), vec![puback(1)]);
    s.handle_submit_done(1, false, 1);
    assert!(!s.is_done(), "submit 2 still in flight must finish first");
    assert!(!s.can_read());
    s.handle_submit_done(2, true, 1);
    assert!(s.is_done());
    // Neither pid 2 (not durable) nor pid 3 (ordered after it) is acked.
    assert_eq!(
        tx(&mut s),
        vec![Outbound::Disconnect(CloseReason::UnspecifiedError)]
    );
}

#[test]
fn v5_rejections_carry_reason_codes_v4_acks_anyway() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(publish(1, 1, "other/topic", GOOD), 0, WALL);
    s.handle_packet(
        publish(1, 2, "strata/acme/d1/telemetry", br#"{"ts":1}"#),
        0,
        WALL,
    );
    s.handle_packet(publish(2, 3, "strata/acme/d1/telemetry", b"[]"), 0, WALL);
    s.end_of_read();
    assert_eq!(
        rejects(&mut s),
        vec!["unknown_topic", "bad_metric_count", "invalid_json"]
    );
    let out = tx(&mut s);
    assert!(matches!(
        &out[0],
        Outbound::PubAck {
            pid: 1,
            code: AckCode::TopicNameInvalid,
            reason: Some(_)
        }
    ));
    assert!(matches!(
        &out[1],
        Outbound::PubAck {
            pid: 2,
            code: AckCode::PayloadFormatInvalid,
            ..
        }
    ));
    assert!(matches!(
        &out[2],
        Outbound::PubRec {
            pid: 3,
            code: AckCode::PayloadFormatInvalid,
            ..
        }
    ));
    // A refused v5 QoS 2 ends the exchange: the pid is not awaiting PUBREL.
    s.handle_packet(Inbound::PubRel(3), 0, WALL);
    assert_eq!(
        tx(&mut s),
        vec![Outbound::PubComp {
            pid: 3,
            found: false
        }]
    );

    let mut s = session(Version::V4, 100);
    s.handle_packet(publish(1, 1, "other/topic", GOOD), 0, WALL);
    s.handle_packet(publish(2, 2, "strata/acme/d1/telemetry", b"x"), 0, WALL);
    assert_eq!(tx(&mut s), vec![puback(1), pubrec(2)]);
    s.handle_packet(Inbound::PubRel(2), 0, WALL);
    assert_eq!(
        tx(&mut s),
        vec![Outbound::PubComp {
            pid: 2,
            found: true
        }]
    );
}

#[test]
fn protocol_violations_close_with_reason() {
    for (pkt, reason, code) in [
        (
            Inbound::Unexpected("CONNACK"),
            "protocol_error",
            CloseReason::ProtocolError,
        ),
        (
            Inbound::Connect(info(1)),
            "protocol_error",
            CloseReason::ProtocolError,
        ),
        (
            Inbound::Publish(InPublish {
                topic: "strata/a/b/telemetry".into(),
                pid: 0,
                qos: 0,
                dup: false,
                payload: Bytes::from_static(GOOD),
                topic_alias: Some(1),
            }),
            "topic_alias_invalid",
            CloseReason::TopicAliasInvalid,
        ),
    ] {
        let mut s = session(Version::V5, 100);
        s.handle_packet(pkt, 0, WALL);
        assert_eq!(rejects(&mut s), vec![reason]);
        assert!(s.is_done());
        assert_eq!(tx(&mut s), vec![Outbound::Disconnect(code)]);
    }
    let mut s = session(Version::V4, 100);
    s.handle_decode_error(&DecodeError::TooLarge { size: 10, max: 5 });
    assert_eq!(rejects(&mut s), vec!["packet_too_large"]);
    assert!(s.is_done());
    assert_eq!(tx(&mut s), vec![], "v3.1.1 has no server DISCONNECT");
}

#[test]
fn malformed_after_valid_publishes_still_stores_and_acks_them() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_decode_error(&DecodeError::Malformed("x".into()));
    assert_eq!(submits(&mut s), vec![(0, 1)]);
    assert!(!s.is_done());
    s.handle_submit_done(0, true, 1);
    assert!(s.is_done());
    assert_eq!(
        tx(&mut s),
        vec![
            puback(1),
            Outbound::Disconnect(CloseReason::MalformedPacket)
        ]
    );
}

#[test]
fn client_disconnect_drains_without_server_disconnect() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(good(1, 1), 0, WALL);
    s.handle_packet(Inbound::Disconnect(0), 0, WALL);
    assert_eq!(submits(&mut s), vec![(0, 1)]);
    s.handle_submit_done(0, true, 1);
    assert!(s.is_done());
    assert_eq!(tx(&mut s), vec![puback(1)]);
}

#[test]
fn subscribe_grants_are_truthful() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(
        Inbound::Subscribe {
            pid: 9,
            filters: vec![
                SubRequest {
                    filter: "strata/+/+/telemetry".into(),
                    qos: 2,
                    no_local: false,
                },
                SubRequest {
                    filter: "a/#/b".into(),
                    qos: 1,
                    no_local: false,
                },
                SubRequest {
                    filter: "x".into(),
                    qos: 0,
                    no_local: true,
                },
            ],
        },
        0,
        WALL,
    );
    let cmds: Vec<Command> = s.take_commands().collect();
    assert!(cmds.contains(&Command::Subscribe(vec![
        SubRequest {
            filter: "strata/+/+/telemetry".into(),
            qos: 1,
            no_local: false
        },
        SubRequest {
            filter: "x".into(),
            qos: 0,
            no_local: true
        },
    ])));
    assert_eq!(
        tx(&mut s),
        vec![Outbound::SubAck {
            pid: 9,
            granted: vec![Ok(1), Err(SubRefusal::InvalidFilter), Ok(0)]
        }]
    );
}

#[test]
fn delivery_window_bounds_unacked_qos1() {
    let mut s = session(Version::V4, 100); // subscriber_queue = 2
    let t: Arc<str> = Arc::from("strata/a/b/telemetry");
    assert!(s.deliver(t.clone(), Bytes::from_static(b"1"), 1));
    assert!(s.deliver(t.clone(), Bytes::from_static(b"2"), 2));
    assert!(
        !s.deliver(t.clone(), Bytes::from_static(b"3"), 1),
        "window full"
    );
    assert!(
        s.deliver(t.clone(), Bytes::from_static(b"4"), 0),
        "QoS 0 needs no window"
    );
    let out = tx(&mut s);
    let pids: Vec<(u16, u8)> = out
        .iter()
        .map(|o| match o {
            Outbound::Publish { pid, qos, .. } => (*pid, *qos),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pids, vec![(1, 1), (2, 1), (0, 0)]);
    s.handle_packet(Inbound::PubAck(1), 0, WALL);
    assert!(s.deliver(t, Bytes::from_static(b"5"), 1));
}

#[test]
fn connect_acceptance() {
    let c = cfg(10);
    let mut i = info(5);
    i.client_id.clear();
    i.clean_start = false;
    assert!(matches!(
        accept_connect(Version::V4, &i, &c, 1),
        Err(Outbound::ConnAck {
            code: ConnAckCode::BadClientId,
            ..
        })
    ));
    let a = accept_connect(Version::V5, &i, &c, 7).unwrap();
    assert_eq!(a.client_id, "strata-auto-7");
    assert!(matches!(
        a.connack,
        Outbound::ConnAck {
            code: ConnAckCode::Accepted,
            assigned_client_id: Some(_),
            receive_maximum: 10,
            ..
        }
    ));
}

proptest! {
    /// Any interleaving of valid/invalid publishes, read-pass boundaries
    /// and submit completions: acks come out exactly once each, in publish
    /// order, and never before the submit holding their record resolved.
    #[test]
    fn acks_ordered_and_after_durable(
        ops in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 1..60),
        completion_order in proptest::collection::vec(any::<prop::sample::Index>(), 60),
        v5: bool,
    ) {
        let version = if v5 { Version::V5 } else { Version::V4 };
        let mut s = session(version, 10_000);
        let mut pid: u16 = 0;
        let mut expected = Vec::new();
        let mut pid_submit: HashMap<u16, u64> = HashMap::new();
        let mut open_pids = Vec::new();
        let mut pending: Vec<u64> = Vec::new();
        let mut done: HashSet<u64> = HashSet::new();
        let mut sent = Vec::new();
        fn check(s: &mut Session, pid_submit: &HashMap<u16, u64>, done: &HashSet<u64>, sent: &mut Vec<u16>) {
            for o in s.take_transmit() {
                if let Outbound::PubAck { pid, .. } = o {
                    if let Some(id) = pid_submit.get(&pid) {
                        assert!(done.contains(id), "ack for pid {pid} before submit {id} done");
                    }
                    sent.push(pid);
                }
            }
        }
        for (valid, end_pass, complete) in ops {
            pid += 1;
            expected.push(pid);
            if valid {
                s.handle_packet(good(1, pid), 0, WALL);
                open_pids.push(pid);
            } else {
                s.handle_packet(publish(1, pid, "bad", GOOD), 0, WALL);
            }
            if end_pass {
                s.end_of_read();
                for c in s.take_commands() {
                    if let Command::Submit { id, .. } = c {
                        for p in open_pids.drain(..) {
                            pid_submit.insert(p, id);
                        }
                        pending.push(id);
                    }
                }
            }
            if complete && !pending.is_empty() {
                let i = completion_order[pid as usize % 60].index(pending.len());
                let id = pending.remove(i);
                done.insert(id);
                s.handle_submit_done(id, true, 0);
            }
            check(&mut s, &pid_submit, &done, &mut sent);
        }
        s.end_of_read();
        for c in s.take_commands() {
            if let Command::Submit { id, .. } = c {
                for p in open_pids.drain(..) {
                    pid_submit.insert(p, id);
                }
                pending.push(id);
            }
        }
        for id in pending.drain(..) {
            done.insert(id);
            s.handle_submit_done(id, true, 0);
        }
        check(&mut s, &pid_submit, &done, &mut sent);
        prop_assert_eq!(sent, expected);
    }
}

// ---- Authenticated sessions: ACLs and revocation, as command lists ----

use super::super::auth::credentials::{AuthMethod, CredentialsFile, IdentityEntry};

fn creds_with(tenant: &str, devices: &str) -> Credentials {
    let f = CredentialsFile {
        identity: vec![IdentityEntry {
            username: "fleet".into(),
            tenant: tenant.into(),
            devices: devices.into(),
            password_hash: None,
            client_cert: true,
        }],
    };
    Credentials::from_file(&f, 1)
}

fn authed(v: Version, creds: &Credentials) -> Session {
    let p = Principal {
        identity: creds.get("fleet").unwrap().clone(),
        method: AuthMethod::Certificate,
    };
    session(v, 100).with_principal(Some(p))
}

#[test]
fn v5_publish_outside_the_acl_gets_0x87_and_is_never_stored() {
    let creds = creds_with("acme", "d1");
    let mut s = authed(Version::V5, &creds);
    s.handle_packet(publish(1, 1, "strata/other/d1/telemetry", GOOD), 0, WALL);
    s.handle_packet(publish(2, 2, "strata/acme/d2/telemetry", GOOD), 0, WALL);
    s.handle_packet(publish(0, 0, "strata/acme/d2/telemetry", GOOD), 0, WALL);
    s.handle_packet(good(1, 3), 0, WALL);
    s.end_of_read();
    let cmds: Vec<Command> = s.take_commands().collect();
    let reasons: Vec<&str> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Reject { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec!["publish_not_authorized"; 3]);
    let stored: Vec<usize> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Submit { records, .. } => Some(records.len()),
            _ => None,
        })
        .collect();
    assert_eq!(stored, vec![1], "only the authorised publish is stored");
    let fanned = cmds
        .iter()
        .filter(|c| matches!(c, Command::FanOut { .. }))
        .count();
    assert_eq!(fanned, 1, "a refused publish is not fanned out");
    s.handle_submit_done(0, true, 1);
    let out = tx(&mut s);
    assert!(
        matches!(&out[0], Outbound::PubAck { pid: 1, code: AckCode::NotAuthorized, reason: Some(r) } if r.contains("other")),
        "{out:?}"
    );
    assert!(matches!(
        &out[1],
        Outbound::PubRec {
            pid: 2,
            code: AckCode::NotAuthorized,
            ..
        }
    ));
    assert_eq!(out[2], puback(3));
    assert!(s.is_open());
}

#[test]
fn v4_publish_outside_the_acl_closes_after_earlier_acks() {
    let creds = creds_with("acme", "*");
    let mut s = authed(Version::V4, &creds);
    s.handle_packet(good(1, 1), 0, WALL);
    s.end_of_read();
    s.handle_packet(publish(1, 2, "strata/demo/dev-7/telemetry", GOOD), 0, WALL);
    s.handle_packet(good(1, 3), 0, WALL);
    assert!(
        !s.is_open(),
        "v3.1.1 cannot be told no: the connection closes"
    );
    let cmds: Vec<Command> = s.take_commands().collect();
    assert!(cmds.contains(&Command::Reject {
        reason: "publish_not_authorized",
        detail: "fleet may not publish for tenant \"demo\"".into(),
    }));
    assert_eq!(
        cmds.iter()
            .filter(|c| matches!(c, Command::Submit { .. }))
            .count(),
        1,
        "pid 3 after the refusal is not read"
    );
    s.handle_submit_done(0, true, 1);
    assert_eq!(tx(&mut s), vec![puback(1)], "no ack for the refused pid 2");
    assert!(s.is_done());
}

#[test]
fn subscriptions_are_confined_to_the_tenant() {
    let creds = creds_with("acme", "*");
    for v in [Version::V4, Version::V5] {
        let mut s = authed(v, &creds);
        let filters = [
            "#",
            "+/acme/#",
            "strata/+/#",
            "strata/other/#",
            "$SYS/#",
            "strata/acme/#",
            "strata/acme/+/telemetry",
        ];
        s.handle_packet(
            Inbound::Subscribe {
                pid: 4,
                filters: filters
                    .iter()
                    .map(|f| SubRequest {
                        filter: (*f).into(),
                        qos: 1,
                        no_local: false,
                    })
                    .collect(),
            },
            0,
            WALL,
        );
        let cmds: Vec<Command> = s.take_commands().collect();
        assert!(cmds.contains(&Command::Subscribe(vec![
            SubRequest {
                filter: "strata/acme/#".into(),
                qos: 1,
                no_local: false
            },
            SubRequest {
                filter: "strata/acme/+/telemetry".into(),
                qos: 1,
                no_local: false
            },
        ])));
        let denied = cmds
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::Reject {
                        reason: "subscribe_not_authorized",
                        ..
                    }
                )
            })
            .count();
        assert_eq!(denied, 5);
        let no = Err(SubRefusal::NotAuthorized);
        assert_eq!(
            tx(&mut s),
            vec![Outbound::SubAck {
                pid: 4,
                granted: vec![no, no, no, no, no, Ok(1), Ok(1)]
            }]
        );
    }
}

#[test]
fn revoked_identity_is_disconnected_with_0x87_and_others_are_not() {
    let creds = creds_with("acme", "*");
    let mut s = authed(Version::V5, &creds);
    let mut anon = session(Version::V5, 100);
    // A reload that changes nothing about this identity keeps it.
    s.handle_credentials(&creds_with("acme", "*"));
    assert!(s.is_open());
    let emptied = Credentials::default();
    s.handle_credentials(&emptied);
    anon.handle_credentials(&emptied);
    assert!(
        anon.is_open(),
        "anonymous (allow-anonymous) sessions have nothing to revoke"
    );
    assert_eq!(rejects(&mut s), vec!["revoked"]);
    assert!(s.is_done());
    assert_eq!(
        tx(&mut s),
        vec![Outbound::Disconnect(CloseReason::NotAuthorized)]
    );
    // A changed device pattern revokes too.
    let mut s = authed(Version::V5, &creds);
    s.handle_credentials(&creds_with("acme", "d*"));
    assert!(!s.is_open());
}

#[test]
fn anonymous_sessions_keep_the_open_behaviour() {
    let mut s = session(Version::V5, 100);
    s.handle_packet(publish(1, 1, "strata/anyone/d1/telemetry", GOOD), 0, WALL);
    s.end_of_read();
    assert_eq!(submits(&mut s), vec![(0, 1)]);
}
