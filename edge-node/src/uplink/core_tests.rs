//! Deterministic tests of the uplink session core.

use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn hubs() -> Vec<SocketAddr> {
    vec![
        "127.0.0.1:7001".parse().unwrap(),
        "127.0.0.1:7002".parse().unwrap(),
        "127.0.0.1:7003".parse().unwrap(),
    ]
}

fn cfg() -> CoreConfig {
    CoreConfig {
        hubs: hubs(),
        max_batch_records: 10,
        max_inflight: 2,
        backoff_min_ms: 100,
        backoff_max_ms: 2_000,
        heartbeat_ms: 1_000,
        heartbeat_timeout_ms: 1_500,
    }
}

fn drain(core: &mut UplinkCore) -> Vec<Command> {
    std::iter::from_fn(|| core.poll_command()).collect()
}

fn committed(first_seq: u64, count: u32) -> EdgeResponse {
    EdgeResponse::Committed { first_seq, count }
}

#[test]
fn connects_sends_and_trims_in_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    c.handle_timeout(0, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Connect { hub: hubs()[0] }]);
    let conn = c.handle_connected(0);
    assert_eq!(drain(&mut c), vec![Command::SendHeartbeat { conn }]);

    c.handle_records_available(26);
    assert_eq!(
        drain(&mut c),
        vec![Command::SendBatch {
            conn,
            first_seq: 1,
            max_records: 10
        }]
    );
    c.handle_batch_cut(conn, 1, 11);
    assert_eq!(
        drain(&mut c),
        vec![Command::SendBatch {
            conn,
            first_seq: 11,
            max_records: 10
        }]
    );
    c.handle_batch_cut(conn, 11, 21);
    // Window of 2 is full.
    assert_eq!(drain(&mut c), vec![]);
    assert_eq!(c.inflight(), 2);

    // The second batch commits first: nothing may be trimmed yet.
    c.handle_batch_response(conn, 11, &committed(11, 10), 5, &mut rng);
    assert_eq!(
        drain(&mut c),
        vec![Command::SendBatch {
            conn,
            first_seq: 21,
            max_records: 5
        }]
    );
    c.handle_batch_cut(conn, 21, 26);
    c.handle_batch_response(conn, 1, &committed(1, 10), 6, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Trim { upto: 21 }]);
    c.handle_batch_response(conn, 21, &committed(21, 5), 7, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Trim { upto: 26 }]);
    assert_eq!(c.stats().records_committed, 25);
}

#[test]
fn connection_loss_resends_only_uncommitted_ranges() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut c = UplinkCore::new(cfg(), 1, 31, 0);
    c.handle_timeout(0, &mut rng);
    drain(&mut c);
    let conn = c.handle_connected(0);
    drain(&mut c);
    c.handle_batch_cut(conn, 1, 11);
    drain(&mut c);
    c.handle_batch_cut(conn, 11, 21);
    c.handle_batch_response(conn, 11, &committed(11, 10), 1, &mut rng);
    drain(&mut c);
    c.handle_connection_lost(conn, 10, &mut rng);
    let t = c.poll_timeout().unwrap();
    // Equal jitter: between half and all of the first backoff step.
    assert!((60..=110).contains(&t), "retry at {t}");
    c.handle_timeout(t, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Connect { hub: hubs()[1] }]);
    let conn2 = c.handle_connected(t);
    let cmds = drain(&mut c);
    // Resends [1, 11) but stops before the committed [11, 21).
    assert_eq!(
        cmds,
        vec![
            Command::SendHeartbeat { conn: conn2 },
            Command::SendBatch {
                conn: conn2,
                first_seq: 1,
                max_records: 10
            }
        ]
    );
    c.handle_batch_cut(conn2, 1, 11);
    // Then jumps over it to 21.
    assert_eq!(
        drain(&mut c),
        vec![Command::SendBatch {
            conn: conn2,
            first_seq: 21,
            max_records: 10
        }]
    );
    assert_eq!(c.stats().batches_resent, 1);
}

#[test]
fn redirect_goes_straight_to_the_leader() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut c = UplinkCore::new(cfg(), 1, 5, 0);
    c.handle_timeout(0, &mut rng);
    drain(&mut c);
    let conn = c.handle_connected(0);
    drain(&mut c);
    c.handle_batch_cut(conn, 1, 5);
    let hint = LeaderHint {
        hub_id: 3,
        addr: "127.0.0.1:7003".into(),
    };
    c.handle_batch_response(
        conn,
        1,
        &EdgeResponse::NotLeader { leader: Some(hint) },
        50,
        &mut rng,
    );
    assert_eq!(drain(&mut c), vec![Command::Disconnect]);
    assert_eq!(c.poll_timeout(), Some(50));
    c.handle_timeout(50, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Connect { hub: hubs()[2] }]);
}

#[test]
fn unavailable_pauses_then_retries_the_same_records() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut c = UplinkCore::new(cfg(), 1, 5, 0);
    c.handle_timeout(0, &mut rng);
    drain(&mut c);
    let conn = c.handle_connected(0);
    drain(&mut c);
    c.handle_batch_cut(conn, 1, 5);
    c.handle_batch_response(
        conn,
        1,
        &EdgeResponse::Unavailable {
            reason: "electing".into(),
        },
        100,
        &mut rng,
    );
    assert_eq!(drain(&mut c), vec![]);
    let t = c.poll_timeout().unwrap();
    assert!(t > 100 && t <= 200, "{t}");
    c.handle_timeout(t, &mut rng);
    assert_eq!(
        drain(&mut c),
        vec![Command::SendBatch {
            conn,
            first_seq: 1,
            max_records: 4
        }]
    );
}

#[test]
fn backoff_grows_and_is_capped() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..10 {
        c.handle_timeout(now, &mut rng);
        drain(&mut c);
        c.handle_connect_failed(now, &mut rng);
        let t = c.poll_timeout().unwrap();
        delays.push(t - now);
        now = t;
    }
    assert!(delays[0] <= 100 && delays[3] >= 400, "{delays:?}");
    assert!(delays.iter().all(|d| *d <= 2_000), "{delays:?}");
    // Round robin over the hubs while no leader is known.
    assert_eq!(c.stats().link_failures, 10);
}

/// Random hub behaviour against the real core: whatever happens, the core
/// never trims a record the hub has not stored, and once the hub behaves,
/// everything is stored and trimmed.
#[test]
fn random_faults_never_trim_uncommitted_and_always_converge() {
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut hub_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xdead_beef);
        run_sim(seed, &mut rng, &mut hub_rng);
    }
}

fn run_sim(seed: u64, rng: &mut ChaCha8Rng, hub_rng: &mut ChaCha8Rng) {
    use std::collections::BTreeSet;
    let mut core = UplinkCore::new(cfg(), 1, 1, 0);
    let mut stored: BTreeSet<u64> = BTreeSet::new();
    let mut durable = 1u64;
    let mut now = 0u64;
    let mut conn_up: Option<u64> = None;
    // Responses not yet delivered: (conn, first, end, committed?)
    let mut pending: Vec<(u64, u64, u64, EdgeResponse)> = Vec::new();
    let mut trimmed = 1u64;
    for step in 0..2_000 {
        let calm = step > 1_500; // the hub behaves at the end
        now += hub_rng.gen_range(0..50);
        if durable < 200 && hub_rng.gen_bool(0.3) {
            durable += hub_rng.gen_range(1..15);
            core.handle_records_available(durable);
        }
        while let Some(cmd) = core.poll_command() {
            match cmd {
                Command::SyncAssignments { .. } => core.handle_sync_done(None),
                Command::Connect { .. } => {
                    if calm || hub_rng.gen_bool(0.7) {
                        conn_up = Some(core.handle_connected(now));
                    } else {
                        core.handle_connect_failed(now, rng);
                    }
                }
                Command::Disconnect => conn_up = None,
                Command::SendBatch {
                    conn,
                    first_seq,
                    max_records,
                } => {
                    let n = if calm {
                        max_records
                    } else {
                        hub_rng.gen_range(1..=max_records)
                    };
                    let end = (first_seq + n).min(durable);
                    core.handle_batch_cut(conn, first_seq, end);
                    if end > first_seq {
                        let resp = if !calm && hub_rng.gen_bool(0.1) {
                            EdgeResponse::Unavailable { reason: "x".into() }
                        } else if !calm && hub_rng.gen_bool(0.05) {
                            EdgeResponse::NotLeader { leader: None }
                        } else {
                            // The hub stores before answering.
                            stored.extend(first_seq..end);
                            committed(first_seq, (end - first_seq) as u32)
                        };
                        pending.push((conn, first_seq, end, resp));
                    }
                }
                Command::SendHeartbeat { conn } => {
                    // A hub under faults sometimes stays silent.
                    if calm || hub_rng.gen_bool(0.9) {
                        core.handle_heartbeat_response(
                            conn,
                            &EdgeResponse::HeartbeatAck {
                                assignments_version: 0,
                                store_retention_ms: 0,
                            },
                            now,
                            rng,
                        );
                    }
                }
                Command::RegionRetention { .. } => {}
                Command::Trim { upto } => {
                    assert!(upto >= trimmed, "seed {seed}: trim went backwards");
                    assert!(
                        (trimmed..upto).all(|s| stored.contains(&s)),
                        "seed {seed}: trimmed [{trimmed},{upto}) not all stored"
                    );
                    trimmed = upto;
                }
            }
        }
        // Deliver some responses, in random order; sometimes lose the link.
        if !pending.is_empty() {
            let i = hub_rng.gen_range(0..pending.len());
            let (conn, first, _end, resp) = pending.swap_remove(i);
            core.handle_batch_response(conn, first, &resp, now, rng);
        }
        if !calm && hub_rng.gen_bool(0.02) {
            if let Some(c) = conn_up.take() {
                pending.clear(); // responses on a dead link are lost
                core.handle_connection_lost(c, now, rng);
            }
        }
        if let Some(t) = core.poll_timeout() {
            if t <= now {
                core.handle_timeout(now, rng);
            }
        }
    }
    // Let it finish calmly.
    for _ in 0..10_000 {
        now += 10;
        core.handle_timeout(now, rng);
        while let Some(cmd) = core.poll_command() {
            match cmd {
                Command::SyncAssignments { .. } => core.handle_sync_done(None),
                Command::Connect { .. } => conn_up = Some(core.handle_connected(now)),
                Command::SendBatch {
                    conn,
                    first_seq,
                    max_records,
                } => {
                    let end = (first_seq + max_records).min(durable);
                    core.handle_batch_cut(conn, first_seq, end);
                    stored.extend(first_seq..end);
                    pending.push((
                        conn,
                        first_seq,
                        end,
                        committed(first_seq, (end - first_seq) as u32),
                    ));
                }
                Command::Trim { upto } => {
                    assert!((trimmed..upto).all(|s| stored.contains(&s)), "seed {seed}");
                    trimmed = upto;
                }
                Command::Disconnect => conn_up = None,
                Command::RegionRetention { .. } => {}
                Command::SendHeartbeat { conn } => core.handle_heartbeat_response(
                    conn,
                    &EdgeResponse::HeartbeatAck {
                        assignments_version: 0,
                        store_retention_ms: 0,
                    },
                    now,
                    rng,
                ),
            }
        }
        for (conn, first, _end, resp) in std::mem::take(&mut pending) {
            core.handle_batch_response(conn, first, &resp, now, rng);
        }
        if trimmed == durable {
            break;
        }
    }
    let _ = conn_up;
    assert_eq!(trimmed, durable, "seed {seed}: did not converge");
    assert!((1..durable).all(|s| stored.contains(&s)), "seed {seed}");
}

#[test]
fn a_silent_hub_is_declared_dead_after_the_heartbeat_timeout() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    c.handle_timeout(0, &mut rng);
    drain(&mut c);
    let conn = c.handle_connected(0);
    assert_eq!(drain(&mut c), vec![Command::SendHeartbeat { conn }]);
    // Answered: the link stays up through the next heartbeat.
    c.handle_heartbeat_response(
        conn,
        &EdgeResponse::HeartbeatAck {
            assignments_version: 0,
            store_retention_ms: 0,
        },
        0,
        &mut rng,
    );
    assert_eq!(
        drain(&mut c),
        vec![Command::RegionRetention { retention_ms: 0 }]
    );
    c.handle_timeout(1_000, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::SendHeartbeat { conn }]);
    // Not answered: the deadline is 1_000 + 1_500.
    assert_eq!(c.poll_timeout(), Some(2_000));
    c.handle_timeout(2_000, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::SendHeartbeat { conn }]);
    assert!(c.is_connected());
    assert_eq!(c.poll_timeout(), Some(2_500));
    c.handle_timeout(2_500, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Disconnect]);
    assert!(!c.is_connected());
    assert_eq!(c.stats().link_failures, 1);
}

#[test]
fn losing_the_hinted_leader_moves_on_to_another_hub() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut c = UplinkCore::new(cfg(), 1, 5, 0);
    c.handle_timeout(0, &mut rng);
    drain(&mut c);
    let conn = c.handle_connected(0);
    drain(&mut c);
    c.handle_batch_cut(conn, 1, 5);
    let hint = LeaderHint {
        hub_id: 2,
        addr: "127.0.0.1:7002".into(),
    };
    c.handle_batch_response(
        conn,
        1,
        &EdgeResponse::NotLeader { leader: Some(hint) },
        10,
        &mut rng,
    );
    drain(&mut c);
    c.handle_timeout(10, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Connect { hub: hubs()[1] }]);
    let conn2 = c.handle_connected(10);
    drain(&mut c);
    // The leader dies: the next dial must not go back to it.
    c.handle_connection_lost(conn2, 20, &mut rng);
    let t = c.poll_timeout().unwrap();
    c.handle_timeout(t, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Connect { hub: hubs()[2] }]);
}

#[test]
fn a_heartbeat_redirect_moves_an_idle_edge_to_the_leader() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    c.handle_timeout(0, &mut rng);
    drain(&mut c);
    let conn = c.handle_connected(0);
    assert_eq!(drain(&mut c), vec![Command::SendHeartbeat { conn }]);
    let hint = LeaderHint {
        hub_id: 3,
        addr: "127.0.0.1:7003".into(),
    };
    c.handle_heartbeat_response(
        conn,
        &EdgeResponse::NotLeader { leader: Some(hint) },
        5,
        &mut rng,
    );
    assert_eq!(drain(&mut c), vec![Command::Disconnect]);
    c.handle_timeout(5, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::Connect { hub: hubs()[2] }]);
    // An Unavailable answer is not an ack: the deadline still stands.
    let conn2 = c.handle_connected(5);
    drain(&mut c);
    c.handle_heartbeat_response(
        conn2,
        &EdgeResponse::Unavailable { reason: "x".into() },
        6,
        &mut rng,
    );
    assert_eq!(c.poll_timeout(), Some(1_005));
    c.handle_heartbeat_response(
        conn2,
        &EdgeResponse::HeartbeatAck {
            assignments_version: 0,
            store_retention_ms: 0,
        },
        7,
        &mut rng,
    );
    assert_eq!(
        drain(&mut c),
        vec![Command::RegionRetention { retention_ms: 0 }]
    );
    c.handle_timeout(1_005, &mut rng);
    assert_eq!(drain(&mut c), vec![Command::SendHeartbeat { conn: conn2 }]);
    assert!(c.is_connected());
}

#[test]
fn heartbeat_ack_with_a_new_assignments_version_asks_for_one_sync() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    c.set_applied_assignments(3);
    c.handle_timeout(0, &mut rng);
    let conn = c.handle_connected(0);
    drain(&mut c);
    let ack = |v| EdgeResponse::HeartbeatAck {
        assignments_version: v,
        store_retention_ms: 0,
    };
    // Same version: nothing to do.
    c.handle_heartbeat_response(conn, &ack(3), 1, &mut rng);
    assert!(drain(&mut c)
        .iter()
        .all(|x| !matches!(x, Command::SyncAssignments { .. })));
    // A new version: exactly one sync, even if acks keep coming.
    c.handle_heartbeat_response(conn, &ack(5), 2, &mut rng);
    c.handle_heartbeat_response(conn, &ack(5), 3, &mut rng);
    let syncs: Vec<_> = drain(&mut c)
        .into_iter()
        .filter(|x| matches!(x, Command::SyncAssignments { .. }))
        .collect();
    assert_eq!(syncs, vec![Command::SyncAssignments { conn, version: 5 }]);
    // A failed sync is retried on the next ack; a done one is not.
    c.handle_sync_done(None);
    c.handle_heartbeat_response(conn, &ack(5), 4, &mut rng);
    assert_eq!(
        drain(&mut c)
            .iter()
            .filter(|x| matches!(x, Command::SyncAssignments { .. }))
            .count(),
        1
    );
    c.handle_sync_done(Some(5));
    c.handle_heartbeat_response(conn, &ack(5), 5, &mut rng);
    assert!(drain(&mut c)
        .iter()
        .all(|x| !matches!(x, Command::SyncAssignments { .. })));
    // Lower than applied (a rebuilt region) also syncs.
    c.handle_heartbeat_response(conn, &ack(1), 6, &mut rng);
    assert!(drain(&mut c)
        .iter()
        .any(|x| matches!(x, Command::SyncAssignments { version: 1, .. })));
}

#[test]
fn heartbeat_ack_publishes_the_region_retention_when_it_changes() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    c.handle_timeout(0, &mut rng);
    let conn = c.handle_connected(0);
    drain(&mut c);
    let ack = |r| EdgeResponse::HeartbeatAck {
        assignments_version: 0,
        store_retention_ms: r,
    };
    let retention = |c: &mut UplinkCore| -> Vec<Command> {
        drain(c)
            .into_iter()
            .filter(|x| matches!(x, Command::RegionRetention { .. }))
            .collect()
    };
    c.handle_heartbeat_response(conn, &ack(86_400_000), 1, &mut rng);
    assert_eq!(
        retention(&mut c),
        vec![Command::RegionRetention {
            retention_ms: 86_400_000
        }]
    );
    c.handle_heartbeat_response(conn, &ack(86_400_000), 2, &mut rng);
    assert_eq!(retention(&mut c), vec![], "unchanged: nothing to publish");
    // A replica with another retention answers (or the config changed).
    c.handle_heartbeat_response(conn, &ack(0), 3, &mut rng);
    assert_eq!(
        retention(&mut c),
        vec![Command::RegionRetention { retention_ms: 0 }]
    );
}

/// The workload host asks for its set again (an instance whose lease ran
/// out while the hub was unreachable, or never granted after a reboot)
/// although the region's version did not change: the next ack syncs. Not
/// while a sync is in flight.
#[test]
fn a_host_waiting_for_a_lease_syncs_at_the_same_version() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut c = UplinkCore::new(cfg(), 1, 1, 0);
    c.set_applied_assignments(4);
    c.handle_timeout(0, &mut rng);
    let conn = c.handle_connected(0);
    drain(&mut c);
    let ack = EdgeResponse::HeartbeatAck {
        assignments_version: 4,
        store_retention_ms: 0,
    };
    let syncs = |c: &mut UplinkCore| {
        drain(c)
            .into_iter()
            .filter(|x| matches!(x, Command::SyncAssignments { .. }))
            .count()
    };
    c.handle_heartbeat_response(conn, &ack, 1, &mut rng);
    assert_eq!(syncs(&mut c), 0, "up to date");
    c.refresh_applied_assignments(0);
    c.handle_heartbeat_response(conn, &ack, 2, &mut rng);
    assert_eq!(syncs(&mut c), 1, "the host wants a grant");
    // In flight: a refresh does not start another.
    c.refresh_applied_assignments(0);
    c.handle_heartbeat_response(conn, &ack, 3, &mut rng);
    assert_eq!(syncs(&mut c), 0);
    c.handle_sync_done(Some(4));
    c.refresh_applied_assignments(4);
    c.handle_heartbeat_response(conn, &ack, 4, &mut rng);
    assert_eq!(syncs(&mut c), 0, "granted");
}
