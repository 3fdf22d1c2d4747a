//! Real-socket tests: the simulator against a tiny in-test MQTT acceptor
//! built on the same rumqttc codec, bound to 127.0.0.1:0.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use firmware_sim::{reading, run, FleetConfig, SimError};
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PubAck};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use strata_protocol::telemetry::{decode_payload, parse_topic, TelemetryRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How the acceptor misbehaves.
#[derive(Clone, Copy, Default)]
struct Fault {
    /// Close the first `times` connections after this many publishes each,
    /// without acking the last `hold` of them.
    drop_after: Option<usize>,
    hold: usize,
    times: usize,
    /// Refuse every CONNECT with this code.
    refuse: Option<ConnectReturnCode>,
    /// The first `times` connections go silent after CONNACK: socket open,
    /// nothing read or written (a hung edge).
    stall: bool,
}

#[derive(Default)]
struct Seen {
    /// Every publish received: decoded record and DUP flag.
    publishes: Mutex<Vec<(TelemetryRecord, bool)>>,
    /// The (username, password) of every CONNECT.
    logins: Mutex<Vec<Option<(String, String)>>>,
    connections: AtomicUsize,
    /// Connections whose serving task ended, and its wake-up.
    closed: AtomicUsize,
    closed_notify: tokio::sync::Notify,
}

impl Seen {
    /// Waits until `n` connections have been fully served: with QoS 0 there
    /// is no ack to prove the broker read everything.
    async fn wait_closed(&self, n: usize) {
        loop {
            let notified = self.closed_notify.notified();
            if self.closed.load(SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

async fn broker(fault: Fault) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let n = s.connections.fetch_add(1, SeqCst);
            let faulty = n < fault.times;
            let s = s.clone();
            tokio::spawn(async move {
                serve(sock, s.clone(), fault, faulty).await;
                s.closed.fetch_add(1, SeqCst);
                s.closed_notify.notify_waiters();
            });
        }
    });
    (addr, seen)
}

async fn serve(mut sock: TcpStream, seen: Arc<Seen>, fault: Fault, faulty: bool) {
    let (mut rbuf, mut wbuf) = (BytesMut::new(), BytesMut::new());
    let mut count = 0usize;
    loop {
        if sock.read_buf(&mut rbuf).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            match Packet::read(&mut rbuf, 1 << 20) {
                Ok(Packet::Connect(c)) => {
                    seen.logins
                        .lock()
                        .unwrap()
                        .push(c.login.map(|l| (l.username, l.password)));
                    let code = fault.refuse.unwrap_or(ConnectReturnCode::Success);
                    ConnAck::new(code, false).write(&mut wbuf).unwrap();
                    if fault.stall && faulty {
                        sock.write_all(&wbuf).await.unwrap();
                        std::future::pending::<()>().await;
                    }
                }
                Ok(Packet::Publish(p)) => {
                    count += 1;
                    let dev = parse_topic(&p.topic).unwrap();
                    let rec = decode_payload(&dev, &p.payload).unwrap();
                    seen.publishes.lock().unwrap().push((rec, p.dup));
                    let limit = fault.drop_after.filter(|_| faulty);
                    if limit.is_some_and(|l| count + fault.hold > l) {
                        if limit.is_some_and(|l| count >= l) {
                            let _ = sock.write_all(&wbuf).await;
                            return; // drop the connection, holding the last acks
                        }
                    } else if p.qos == QoS::AtLeastOnce {
                        PubAck::new(p.pkid).write(&mut wbuf).unwrap();
                    }
                }
                Ok(Packet::PingReq) => {
                    Packet::PingResp.write(&mut wbuf, 16).unwrap();
                }
                Ok(Packet::Disconnect) => return,
                Ok(_) => {}
                Err(CodecError::InsufficientBytes(_)) => break,
                Err(e) => panic!("bad packet from the simulator: {e}"),
            }
        }
        if sock.write_all(&wbuf).await.is_err() {
            return;
        }
        wbuf.clear();
    }
}

fn config(endpoints: Vec<String>, devices: u32, count: u64) -> FleetConfig {
    FleetConfig {
        tenant: "acme".into(),
        devices,
        seed: 20_26,
        endpoints,
        rate_per_device: 0.0,
        count: Some(count),
        start_ts_ms: Some(1_700_000_000_000),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ack_deadline: Duration::from_secs(5),
        ..FleetConfig::default()
    }
}

/// (device index, seq) → times received; also checks every payload equals
/// the model's reading.
fn tally(cfg: &FleetConfig, seen: &Seen) -> BTreeMap<(u32, u64), usize> {
    let mut out = BTreeMap::new();
    for (rec, _) in seen.publishes.lock().unwrap().iter() {
        let d: u32 = rec.device.strip_prefix("dev-").unwrap().parse().unwrap();
        let seq = rec.seq.unwrap();
        assert_eq!(
            Some(rec),
            reading(cfg, d, seq).as_ref(),
            "payload of {d}/{seq}"
        );
        *out.entry((d, seq)).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn count_readings_arrive_exactly_once_over_two_endpoints() {
    for (binary, qos) in [(false, 1), (true, 1), (false, 0)] {
        let (a, seen_a) = broker(Fault::default()).await;
        let (b, seen_b) = broker(Fault::default()).await;
        let cfg = FleetConfig {
            connections: Some(4),
            inflight: 8,
            binary,
            qos,
            ..config(vec![a, b], 10, 25)
        };
        let summary = run(cfg.clone(), CancellationToken::new(), None)
            .await
            .unwrap();
        let acked = if qos == 1 { 250 } else { 0 };
        assert_eq!(
            (summary.sent, summary.acked, summary.unacked),
            (250, acked, 0)
        );
        assert!(summary.complete && summary.reconnects == 0 && summary.retransmits == 0);
        assert_eq!(summary.latency_us.count, acked);
        for (seen, parity) in [(&seen_a, 0), (&seen_b, 1)] {
            let closed = tokio::time::timeout(Duration::from_secs(5), seen.wait_closed(2));
            closed.await.expect("the simulator disconnects when done");
            assert_eq!(
                seen.connections.load(SeqCst),
                2,
                "two connections per endpoint"
            );
            let got = tally(&cfg, seen);
            let want: BTreeMap<(u32, u64), usize> = (0..10)
                .filter(|d| d % 2 == parity)
                .flat_map(|d| (0..25).map(move |i| ((d, i), 1)))
                .collect();
            assert_eq!(got, want, "endpoint {parity}, binary {binary}");
        }
    }
}

#[tokio::test]
async fn reconnect_retransmits_every_unacked_publish() {
    let fault = Fault {
        drop_after: Some(40),
        hold: 6,
        times: 2,
        ..Fault::default()
    };
    let (a, seen) = broker(fault).await;
    let cfg = FleetConfig {
        connections: Some(1),
        inflight: 16,
        ..config(vec![a], 4, 50)
    };
    let summary = run(cfg.clone(), CancellationToken::new(), None)
        .await
        .unwrap();
    let got = tally(&cfg, &seen);
    let missing: Vec<_> = (0..4u32)
        .flat_map(|d| (0..50u64).map(move |i| (d, i)))
        .filter(|k| !got.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "never received: {missing:?}");
    assert_eq!(seen.connections.load(SeqCst), 3);
    assert_eq!(summary.reconnects, 2);
    assert!(summary.retransmits >= 12, "{summary:?}");
    assert!(
        summary.complete && summary.sent == 200 && summary.acked == 200,
        "{summary:?}"
    );
    // Retransmissions queued behind a connection that died again may never
    // reach the broker, so received DUPs are at most the count.
    let dups = seen
        .publishes
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, dup)| *dup)
        .count() as u64;
    assert!(
        (12..=summary.retransmits).contains(&dups),
        "{dups} DUPs, {summary:?}"
    );
}

#[tokio::test]
async fn dropout_leaves_a_seq_gap_and_reduces_the_count() {
    let (a, seen) = broker(Fault::default()).await;
    let cfg = FleetConfig {
        anomalies: vec!["dropout:devices=1,start=5,duration=3".parse().unwrap()],
        ..config(vec![a], 3, 10)
    };
    let summary = run(cfg.clone(), CancellationToken::new(), None)
        .await
        .unwrap();
    assert_eq!((summary.sent, summary.dropped, summary.acked), (27, 3, 27));
    let seqs: BTreeSet<u64> = tally(&cfg, &seen)
        .keys()
        .filter(|(d, _)| *d == 1)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 8, 9].into_iter().collect());
}

#[tokio::test]
async fn paced_run_stops_at_duration_and_reports_progress() {
    let (a, seen) = broker(Fault::default()).await;
    let cfg = FleetConfig {
        rate_per_device: 10.0,
        count: None,
        duration: Some(Duration::from_millis(1300)),
        ..config(vec![a], 2, 0)
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let progress = Box::new(move |p: &firmware_sim::Progress| l.lock().unwrap().push(p.clone()));
    let summary = run(cfg.clone(), CancellationToken::new(), Some(progress))
        .await
        .unwrap();
    // 2 devices × 10/s × 1.3 s ≈ 26 readings; unpaced it would be thousands.
    assert!((15..=32).contains(&summary.sent), "{summary:?}");
    assert!(summary.complete && summary.acked == summary.sent);
    assert_eq!(tally(&cfg, &seen).len() as u64, summary.sent);
    let lines = lines.lock().unwrap();
    assert!(
        (1..=2).contains(&lines.len()),
        "one progress line per second: {}",
        lines.len()
    );
    assert_eq!(lines[0].connected, 2);
    assert!(lines[0].to_string().contains("conn 2/2"));
}

#[tokio::test]
async fn shutdown_token_stops_and_drains() {
    let (a, _seen) = broker(Fault::default()).await;
    let cfg = FleetConfig {
        count: None,
        ..config(vec![a], 50, 0)
    };
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.cancel();
    });
    let summary = run(cfg, token, None).await.unwrap();
    assert!(
        summary.sent > 0 && summary.complete && summary.unacked == 0,
        "{summary:?}"
    );
}

#[tokio::test]
async fn refusal_and_bad_config_are_errors() {
    let fault = Fault {
        refuse: Some(ConnectReturnCode::NotAuthorized),
        ..Fault::default()
    };
    let (a, _) = broker(fault).await;
    let err = run(
        config(vec![a.clone()], 3, 5),
        CancellationToken::new(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, SimError::Refused { endpoint, .. } if *endpoint == a),
        "{err}"
    );
    assert!(err.to_string().contains("NotAuthorized"));

    let bad = FleetConfig {
        devices: 0,
        qos: 3,
        ..config(vec![], 1, 1)
    };
    let err = run(bad, CancellationToken::new(), None).await.unwrap_err();
    let SimError::Config(c) = err else {
        panic!("expected a config error")
    };
    assert_eq!(c.problems.len(), 3, "{c}");
}

#[tokio::test]
async fn stopping_early_or_never_connecting_is_incomplete() {
    let (a, _seen) = broker(Fault::default()).await;
    let cfg = FleetConfig {
        duration: Some(Duration::from_millis(200)),
        rate_per_device: 20.0,
        ..config(vec![a], 2, 1_000_000)
    };
    let summary = run(cfg, CancellationToken::new(), None).await.unwrap();
    assert!(summary.sent > 0 && summary.unacked == 0, "{summary:?}");
    assert!(!summary.complete, "count not reached: {summary:?}");

    // A port nobody listens on (bound, then released).
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let cfg = FleetConfig {
        duration: Some(Duration::from_millis(200)),
        ack_deadline: Duration::from_millis(100),
        ..config(vec![closed], 1, 5)
    };
    let summary = run(cfg, CancellationToken::new(), None).await.unwrap();
    assert!(
        !summary.complete && summary.sent == 0 && summary.connect_failures >= 1,
        "{summary:?}"
    );
}

#[tokio::test]
async fn silent_broker_is_detected_by_keepalive_and_replaced() {
    let fault = Fault {
        stall: true,
        times: 1,
        ..Fault::default()
    };
    let (a, seen) = broker(fault).await;
    let cfg = FleetConfig {
        connections: Some(1),
        keep_alive_secs: 2, // ping after 1 s idle, give up 2 s later
        ..config(vec![a], 2, 5)
    };
    let summary = run(cfg.clone(), CancellationToken::new(), None)
        .await
        .unwrap();
    assert!(summary.complete && summary.reconnects == 1, "{summary:?}");
    assert_eq!(
        summary.retransmits, 10,
        "all 10 were unacked on the hung connection"
    );
    assert_eq!(tally(&cfg, &seen).len(), 10);
}

#[tokio::test]
async fn credentials_go_into_every_connect() {
    let (a, seen) = broker(Fault::default()).await;
    let cfg = FleetConfig {
        connections: Some(3),
        username: Some("demo-fleet".into()),
        password: Some("s3cret".into()),
        ..config(vec![a], 3, 2)
    };
    let s = run(cfg, CancellationToken::new(), None).await.unwrap();
    assert!(s.complete, "{s:?}");
    let logins = seen.logins.lock().unwrap().clone();
    assert_eq!(logins.len(), 3);
    assert!(logins
        .iter()
        .all(|l| l.as_ref() == Some(&("demo-fleet".to_owned(), "s3cret".to_owned()))));
    let bad = FleetConfig {
        password: Some("x".into()),
        ..config(vec!["127.0.0.1:1".into()], 1, 1)
    };
    let err = run(bad, CancellationToken::new(), None).await.unwrap_err();
    assert!(
        err.to_string().contains("password is set without username"),
        "{err}"
    );
}

/// With `failover`, devices whose gateway is gone roam to the next one: the
/// connections assigned to a dead endpoint get in at the live one, and every
/// reading of every device arrives there. Without it they keep retrying
/// their own and the run is incomplete.
#[tokio::test]
async fn failover_moves_connections_off_a_dead_endpoint() {
    // A port nothing listens on: bound, then released.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (live, seen) = broker(Fault::default()).await;
    let cfg = FleetConfig {
        connections: Some(4),
        inflight: 8,
        failover: true,
        ..config(vec![dead.clone(), live.clone()], 10, 20)
    };
    let summary = run(cfg.clone(), CancellationToken::new(), None)
        .await
        .unwrap();
    assert!(summary.complete, "{summary}");
    assert_eq!((summary.sent, summary.acked), (200, 200), "{summary}");
    // Connections 0 and 2 started at the dead endpoint and moved once each.
    assert_eq!(summary.failovers, 2, "{summary}");
    assert_eq!(seen.connections.load(SeqCst), 4);
    let got = tally(&cfg, &seen);
    assert_eq!(got.len(), 200);
    assert!(got.values().all(|n| *n == 1), "each reading exactly once");

    let stuck = FleetConfig {
        failover: false,
        ack_deadline: Duration::from_millis(300),
        duration: Some(Duration::from_millis(300)),
        count: None,
        ..config(vec![dead, live], 4, 20)
    };
    let summary = run(stuck, CancellationToken::new(), None).await.unwrap();
    assert!(!summary.complete && summary.failovers == 0, "{summary}");
}
