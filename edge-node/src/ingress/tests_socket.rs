//! Socket tests of the embedded server on 127.0.0.1:0 with an in-memory
//! sink: rumqttc v4/v5 clients, byte-exact raw clients, bad input.

use std::time::Duration;

use bytes::BytesMut;

use super::test_util::{good_payload, Got, Harness, Proto, RawClient, TestSink, PASSWORD, USER};
use super::IngressConfig;

const TOPIC: &str = "strata/acme/dev-1/telemetry";

#[tokio::test]
async fn rumqttc_v4_publishes_qos_0_1_2() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let h = Harness::default_open().await;
    let mut opts = MqttOptions::new("v4-client", "127.0.0.1", h.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_credentials(USER, PASSWORD);
    let (client, mut el) = AsyncClient::new(opts, 10);
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        client
            .publish(TOPIC, q, false, good_payload(i as u64))
            .await
            .unwrap();
    }
    let (mut acked, mut completed) = (0, 0);
    tokio::time::timeout(Duration::from_secs(8), async {
        while acked < 1 || completed < 1 {
            match el.poll().await.unwrap() {
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                Event::Incoming(Packet::PubComp(_)) => completed += 1,
                Event::Outgoing(Outgoing::PubRel(_)) | Event::Incoming(_) | Event::Outgoing(_) => {}
            }
        }
    })
    .await
    .unwrap();
    h.sink.wait_records(3).await;
    let mut seqs: Vec<_> = h.sink.records().iter().map(|r| r.seq.unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, vec![0, 1, 2]);
    assert_eq!(h.metrics.publishes_accepted.get(), 3);
}

#[tokio::test]
async fn rumqttc_v5_publishes_qos_0_1_2() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let h = Harness::default_open().await;
    let mut opts = MqttOptions::new("v5-client", "127.0.0.1", h.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_credentials(USER, PASSWORD);
    let (client, mut el) = AsyncClient::new(opts, 10);
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        client
            .publish(TOPIC, q, false, good_payload(i as u64))
            .await
            .unwrap();
    }
    let (mut acked, mut completed) = (0, 0);
    tokio::time::timeout(Duration::from_secs(8), async {
        while acked < 1 || completed < 1 {
            match el.poll().await.unwrap() {
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                Event::Incoming(Packet::PubComp(_)) => completed += 1,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    h.sink.wait_records(3).await;
    assert_eq!(h.connected.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The ack is the durability promise: none may arrive while the sink holds
/// the record, and it must arrive once the sink resolves.
#[tokio::test]
async fn ack_only_after_sink_resolves() {
    for proto in [Proto::V4, Proto::V5] {
        let h = Harness::start(IngressConfig::default(), TestSink::gated()).await;
        let mut c = RawClient::connect(h.addr, proto, "gated", 30).await;
        c.publish(TOPIC, 1, 1, &good_payload(1)).await;
        c.publish(TOPIC, 2, 2, &good_payload(2)).await;
        h.sink
            .wait_until("both submitted", |s| s.attempts() == 2)
            .await;
        assert_eq!(
            c.recv_within(300).await,
            Err(()),
            "{proto:?}: ack before durable"
        );
        assert!(h.sink.records().is_empty());
        h.sink.open();
        assert_eq!(c.recv().await, Some(Got::PubAck(1, 0)));
        assert_eq!(c.recv().await, Some(Got::PubRec(2, 0)));
        assert_eq!(
            h.sink.records().len(),
            2,
            "records durable before their acks"
        );
        // QoS 2: a retransmission awaiting PUBREL is acked, not stored again.
        c.publish(TOPIC, 2, 2, &good_payload(2)).await;
        assert_eq!(c.recv().await, Some(Got::PubRec(2, 0)));
        c.pubrel(2).await;
        assert_eq!(c.recv().await, Some(Got::PubComp(2)));
        assert_eq!(h.sink.attempts(), 2, "{proto:?}: duplicate stored");
    }
}

/// Everything already buffered goes into one submit; acks come back in
/// order, coalesced.
#[tokio::test]
async fn pipelined_publishes_are_batched_and_acked_in_order() {
    let h = Harness::start(IngressConfig::default(), TestSink::gated()).await;
    let mut c = RawClient::connect(h.addr, Proto::V4, "batcher", 30).await;
    let mut b = BytesMut::new();
    for pid in 1..=200u16 {
        c.publish_bytes(&mut b, TOPIC, 1, pid, &good_payload(pid as u64));
    }
    c.send_raw(&b).await;
    h.sink
        .wait_until("200 submitted", |s| s.attempts() == 200)
        .await;
    let calls = h.sink.calls();
    assert!(calls.len() < 20, "not batched: {} submits", calls.len());
    h.sink.open();
    for pid in 1..=200u16 {
        assert_eq!(c.recv().await, Some(Got::PubAck(pid, 0)));
    }
    assert_eq!(h.metrics.acks_sent.get(), 200);
}

/// At max-inflight the connection stops reading; nothing is dropped.
#[tokio::test]
async fn backpressure_never_drops() {
    let cfg = IngressConfig {
        max_inflight: 8,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::gated()).await;
    let mut c = RawClient::connect(h.addr, Proto::V5, "pressure", 30).await;
    let mut b = BytesMut::new();
    for pid in 1..=100u16 {
        c.publish_bytes(&mut b, TOPIC, 1, pid, &good_payload(pid as u64));
    }
    c.send_raw(&b).await;
    h.sink
        .wait_until("8 submitted", |s| s.attempts() == 8)
        .await;
    assert_eq!(c.recv_within(200).await, Err(()));
    assert_eq!(h.sink.attempts(), 8, "read past the in-flight limit");
    h.sink.open();
    for pid in 1..=100u16 {
        assert_eq!(c.recv().await, Some(Got::PubAck(pid, 0)));
    }
    assert_eq!(h.sink.records().len(), 100);
    assert!(h.sink.max_inflight_seen() <= 8);
}

#[tokio::test]
async fn bad_payloads_are_refused_with_reasons_and_counted() {
    let h = Harness::default_open().await;
    let mut v5 = RawClient::connect(h.addr, Proto::V5, "bad5", 30).await;
    // Within the identity's ACL but not a telemetry topic.
    v5.publish("strata/acme/dev-1/status", 1, 1, &good_payload(1))
        .await;
    v5.publish(TOPIC, 1, 2, b"{not json").await;
    v5.publish(TOPIC, 1, 3, br#"{"ts":1,"metrics":{"t":"hot"}}"#)
        .await;
    v5.publish(TOPIC, 1, 4, &good_payload(4)).await;
    // NaN can only arrive in the binary form.
    let mut rec = strata_protocol::telemetry::decode_payload(
        &strata_protocol::telemetry::parse_topic(TOPIC).unwrap(),
        &good_payload(5),
    )
    .unwrap();
    rec.metrics[0].value = f64::NAN;
    v5.publish(
        TOPIC,
        1,
        5,
        &strata_protocol::telemetry::encode_binary(&rec),
    )
    .await;
    // Above the 64 KiB payload limit but within the packet limit.
    v5.publish(TOPIC, 1, 6, &vec![b' '; 70_000]).await;
    assert_eq!(v5.recv().await, Some(Got::PubAck(1, 0x90)));
    assert_eq!(v5.recv().await, Some(Got::PubAck(2, 0x99)));
    assert_eq!(v5.recv().await, Some(Got::PubAck(3, 0x99)));
    assert_eq!(v5.recv().await, Some(Got::PubAck(4, 0)));
    assert_eq!(v5.recv().await, Some(Got::PubAck(5, 0x99)));
    assert_eq!(v5.recv().await, Some(Got::PubAck(6, 0x99)));
    // v3.1.1 has no negative ack: acked, dropped, counted.
    let mut v4 = RawClient::connect(h.addr, Proto::V4, "bad4", 30).await;
    v4.publish(TOPIC, 1, 1, br#"{"metrics":{"t":1}}"#).await;
    assert_eq!(v4.recv().await, Some(Got::PubAck(1, 0)));
    assert_eq!(h.sink.records().len(), 1);
    for (reason, n) in [
        ("unknown_topic", 1),
        ("invalid_json", 1),
        ("non_numeric_metric", 1),
        ("missing_timestamp", 1),
        ("non_finite_metric", 1),
        ("oversize", 1),
    ] {
        assert_eq!(h.metrics.rejects_for(reason), n, "{reason}");
    }
}

async fn assert_closed(c: &mut RawClient) {
    loop {
        match c.recv().await {
            None => return,
            Some(Got::Disconnect(_)) => {}
            Some(other) => panic!("expected close, got {other:?}"),
        }
    }
}

/// Garbage, a truncated CONNECT, an oversize remaining length: each
/// connection is closed and counted; a healthy client keeps working.
#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let cfg = IngressConfig {
        max_packet_bytes: 4096,
        connect_timeout_ms: 300,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    let mut healthy = RawClient::connect(h.addr, Proto::V5, "healthy", 30).await;

    let mut garbage = RawClient::tcp(h.addr, Proto::V4).await;
    garbage
        .send_raw(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02])
        .await;
    assert_closed(&mut garbage).await;

    // Truncated CONNECT, then silence: closed by the connect timeout.
    let mut trunc = RawClient::tcp(h.addr, Proto::V4).await;
    trunc.send_raw(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q']).await;
    assert_closed(&mut trunc).await;

    // Oversize remaining length (~2 MiB) announced in the CONNECT header.
    let mut huge = RawClient::tcp(h.addr, Proto::V4).await;
    huge.send_raw(&[0x10, 0xff, 0xff, 0x7f]).await;
    assert_closed(&mut huge).await;

    // Oversize PUBLISH on an established v5 connection: DISCONNECT 0x95.
    let mut big = RawClient::connect(h.addr, Proto::V5, "big", 30).await;
    big.send_raw(&[0x32, 0xff, 0xff, 0x7f]).await;
    assert_eq!(big.recv().await, Some(Got::Disconnect(0x95)));
    assert_eq!(big.recv().await, None);

    // Malformed packet mid-stream on v5: valid publish before it is still
    // stored and acked, then DISCONNECT 0x81.
    let mut mid = RawClient::connect(h.addr, Proto::V5, "mid", 30).await;
    let mut b = BytesMut::new();
    mid.publish_bytes(&mut b, TOPIC, 1, 7, &good_payload(7));
    b.extend_from_slice(&[0x82, 0x01, 0x00]); // SUBSCRIBE too short
    mid.send_raw(&b).await;
    assert_eq!(mid.recv().await, Some(Got::PubAck(7, 0)));
    assert_eq!(mid.recv().await, Some(Got::Disconnect(0x81)));
    assert_eq!(mid.recv().await, None);

    healthy.publish(TOPIC, 1, 9, &good_payload(9)).await;
    assert_eq!(healthy.recv().await, Some(Got::PubAck(9, 0)));
    // garbage, the timed-out truncated CONNECT, the bad SUBSCRIBE.
    assert_eq!(h.metrics.rejects_for("malformed_packet"), 3);
    assert_eq!(h.metrics.rejects_for("packet_too_large"), 2);
}

/// A CONNECT cut short by the client closing, and a complete CONNECT too
/// short to name its protocol: both closed at once and counted (they used to
/// be dropped silently, or held until the connect timeout).
#[tokio::test]
async fn truncated_connect_is_counted() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::default_open().await; // connect timeout 10 s
    let mut cut = RawClient::tcp(h.addr, Proto::V4).await;
    cut.send_raw(&[0x10, 0x20, 0x00, 0x04, b'M', b'Q']).await;
    cut.stream.shutdown().await.unwrap();
    let mut short = RawClient::tcp(h.addr, Proto::V4).await;
    short.send_raw(&[0x10, 0x03, 0x00, 0x04, b'M']).await;
    tokio::time::timeout(Duration::from_secs(3), async {
        assert_closed(&mut cut).await;
        assert_closed(&mut short).await;
    })
    .await
    .expect("truncated CONNECTs must be closed before the connect timeout");
    let m = h.metrics.clone();
    tokio::time::timeout(Duration::from_secs(3), async move {
        while m.rejects_for("malformed_packet") != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both truncated CONNECTs counted as malformed_packet");
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_refusal() {
    let h = Harness::default_open().await;
    let mut c = RawClient::tcp(h.addr, Proto::V4).await;
    // MQTT 3.1 CONNECT ("MQIsdp", level 3).
    let body = [
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0x00, 0x0a, 0x00, 0x01, b'x',
    ];
    let mut b = vec![0x10, body.len() as u8];
    b.extend_from_slice(&body);
    c.send_raw(&b).await;
    assert_eq!(c.recv().await, Some(Got::ConnAck(1)));
    assert_eq!(c.recv().await, None);
}

#[tokio::test]
async fn keepalive_closes_silent_clients() {
    let h = Harness::default_open().await;
    let mut c = RawClient::connect(h.addr, Proto::V5, "sleepy", 1).await;
    let started = std::time::Instant::now();
    assert_eq!(c.recv().await, Some(Got::Disconnect(0x8d)));
    assert_eq!(c.recv().await, None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "closed too early: {took:?}"
    );
    // A client that pings stays.
    let mut p = RawClient::connect(h.addr, Proto::V4, "pinger", 1).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        p.send_raw(&[0xc0, 0x00]).await;
        assert_eq!(p.recv().await, Some(Got::PingResp));
    }
}

#[tokio::test]
async fn second_connect_with_same_client_id_takes_over() {
    let h = Harness::default_open().await;
    let mut old = RawClient::connect(h.addr, Proto::V5, "same-id", 30).await;
    let mut new = RawClient::connect(h.addr, Proto::V5, "same-id", 30).await;
    assert_eq!(old.recv().await, Some(Got::Disconnect(0x8e)));
    assert_eq!(old.recv().await, None);
    new.publish(TOPIC, 1, 1, &good_payload(1)).await;
    assert_eq!(new.recv().await, Some(Got::PubAck(1, 0)));
}

#[tokio::test]
async fn subscribers_receive_live_publishes() {
    let h = Harness::default_open().await;
    let mut sub = RawClient::connect(h.addr, Proto::V4, "sub", 30).await;
    sub.subscribe(5, "strata/acme/+/telemetry", 2).await;
    assert_eq!(
        sub.recv().await,
        Some(Got::SubAck(5, vec![1])),
        "QoS 2 is granted as 1"
    );
    let mut sub5 = RawClient::connect(h.addr, Proto::V5, "sub5", 30).await;
    sub5.subscribe(6, "strata/acme/#", 0).await;
    assert_eq!(sub5.recv().await, Some(Got::SubAck(6, vec![0])));
    let mut pubr = RawClient::connect(h.addr, Proto::V5, "pub", 30).await;
    pubr.publish(TOPIC, 1, 3, &good_payload(3)).await;
    pubr.publish("strata/acme/dev-1/other", 1, 4, &good_payload(4))
        .await;
    assert_eq!(pubr.recv().await, Some(Got::PubAck(3, 0)));
    match sub.recv().await {
        Some(Got::Publish(t, 1, pid)) => {
            assert_eq!(t, TOPIC);
            assert!(pid != 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sub5.recv().await, Some(Got::Publish(TOPIC.into(), 0, 0)));
    // The rejected publish is not fanned out.
    assert_eq!(sub5.recv_within(200).await, Err(()));
}

#[tokio::test]
async fn slow_subscriber_copies_are_dropped_and_counted() {
    let cfg = IngressConfig {
        subscriber_queue: 4,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    // Never acks: its QoS 1 window (4) fills, further copies are dropped.
    let mut sub = RawClient::connect(h.addr, Proto::V4, "slow", 30).await;
    sub.subscribe(1, "strata/acme/#", 1).await;
    assert_eq!(sub.recv().await, Some(Got::SubAck(1, vec![1])));
    let mut p = RawClient::connect(h.addr, Proto::V4, "fast", 30).await;
    for pid in 1..=20u16 {
        p.publish(TOPIC, 1, pid, &good_payload(pid as u64)).await;
    }
    for pid in 1..=20u16 {
        assert_eq!(p.recv().await, Some(Got::PubAck(pid, 0)));
    }
    h.sink.wait_records(20).await;
    let mut got = 0;
    while let Ok(Some(Got::Publish(..))) = sub.recv_within(300).await {
        got += 1;
    }
    assert_eq!(got, 4);
    assert_eq!(h.metrics.subscriber_drops.get(), 16);
}

/// Shutdown stops accepting, lets the in-flight submit finish and sends
/// its ack (and v5 DISCONNECT 0x8B) before closing.
#[tokio::test]
async fn shutdown_drains_inflight_acks() {
    let h = Harness::start(IngressConfig::default(), TestSink::gated()).await;
    let mut c = RawClient::connect(h.addr, Proto::V5, "drain", 30).await;
    c.publish(TOPIC, 1, 1, &good_payload(1)).await;
    h.sink.wait_until("submitted", |s| s.attempts() == 1).await;
    h.shutdown.cancel();
    assert_eq!(
        c.recv_within(200).await,
        Err(()),
        "no ack before durable, even on shutdown"
    );
    h.sink.open();
    assert_eq!(c.recv().await, Some(Got::PubAck(1, 0)));
    assert_eq!(c.recv().await, Some(Got::Disconnect(0x8b)));
    assert_eq!(c.recv().await, None);
    tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(h.addr).await.is_err(),
        "still accepting"
    );
}

/// A failing sink: no ack for what was not stored; the connection closes
/// so the client retransmits.
#[tokio::test]
async fn sink_failure_withholds_ack_and_closes() {
    let sink = TestSink::new();
    sink.set_fail(true);
    let h = Harness::start(IngressConfig::default(), sink).await;
    let mut c = RawClient::connect(h.addr, Proto::V5, "unlucky", 30).await;
    c.publish(TOPIC, 1, 1, &good_payload(1)).await;
    assert_eq!(c.recv().await, Some(Got::Disconnect(0x80)));
    assert_eq!(c.recv().await, None);
    assert_eq!(h.metrics.submit_failures.get(), 1);
}

#[tokio::test]
async fn max_connections_refuses_extra() {
    let cfg = IngressConfig {
        max_connections: 1,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    let _first = RawClient::connect(h.addr, Proto::V4, "one", 30).await;
    let mut second = RawClient::tcp(h.addr, Proto::V4).await;
    assert_eq!(second.recv().await, None);
    assert_eq!(h.metrics.connections_refused.get(), 1);
}

/// A real client keeping many QoS 1 publishes in flight: every record
/// arrives once, in far fewer submits than publishes.
#[tokio::test]
async fn rumqttc_burst_is_pipelined_and_batched() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    const N: usize = 5000;
    let h = Harness::default_open().await;
    let mut opts = MqttOptions::new("burst", "127.0.0.1", h.addr.port());
    opts.set_credentials(super::test_util::USER, super::test_util::PASSWORD);
    opts.set_inflight(500);
    let (client, mut el) = AsyncClient::new(opts, 1000);
    let started = std::time::Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..N {
            client
                .publish(TOPIC, QoS::AtLeastOnce, false, good_payload(i as u64))
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(9), async {
        while acked < N {
            if let Event::Incoming(Packet::PubAck(_)) = el.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("burst not acked in time");
    let _client = producer.await.unwrap();
    let took = started.elapsed();
    let records = h.sink.records();
    assert_eq!(records.len(), N);
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq.unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N);
    let calls = h.sink.calls().len();
    assert!(calls < N / 2, "{calls} submits for {N} publishes");
    eprintln!("{N} QoS 1 publishes in {took:?} with {calls} submits");
}

/// Keep-alive 0 (or one above the cap) is capped by `max-keep-alive`: an
/// idle session is closed after 1.5 × the cap and counted as `idle_timeout`;
/// a v5 client is told the cap in the CONNACK's Server Keep Alive.
#[tokio::test]
async fn idle_keep_alive_zero_clients_are_closed_after_the_cap() {
    use rumqttc::v5::mqttbytes::v5;
    use tokio::io::AsyncReadExt;
    let cfg = IngressConfig {
        max_keep_alive: Duration::from_secs(1),
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;

    let mut v4 = RawClient::connect(h.addr, Proto::V4, "idle-v4", 0).await;
    let started = std::time::Instant::now();
    assert_eq!(v4.recv().await, None, "v3.1.1: closed without DISCONNECT");
    assert!(started.elapsed() >= Duration::from_millis(1400));

    // v5, raw, to read the CONNACK's properties.
    let mut v5c = RawClient::tcp(h.addr, Proto::V5).await;
    let mut b = BytesMut::new();
    let connect = v5::Connect {
        keep_alive: 5000,
        client_id: "idle-v5".into(),
        clean_start: true,
        properties: None,
    };
    let login = v5::Login {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    v5::Packet::Connect(connect, None, Some(login))
        .write(&mut b, None)
        .unwrap();
    v5c.send_raw(&b).await;
    let mut rb = BytesMut::new();
    let connack = loop {
        match v5::Packet::read(&mut rb, None) {
            Ok(v5::Packet::ConnAck(a)) => break a,
            Ok(other) => panic!("{other:?}"),
            Err(_) => {
                let n = tokio::time::timeout(Duration::from_secs(8), v5c.stream.read_buf(&mut rb))
                    .await
                    .expect("no CONNACK")
                    .unwrap();
                assert!(n > 0, "closed before CONNACK");
            }
        }
    };
    assert_eq!(connack.properties.unwrap().server_keep_alive, Some(1));
    assert_eq!(v5c.recv().await, Some(Got::Disconnect(0x8d)));
    assert_eq!(v5c.recv().await, None);
    assert_eq!(h.metrics.rejects_for("idle_timeout"), 2);
    assert_eq!(h.metrics.rejects_for("keep_alive_timeout"), 0);
}

/// One source may hold `max-connections-per-ip` connections; the next is
/// closed at once and counted, and a slot freed by a leaving client is
/// reused.
#[tokio::test]
async fn per_ip_cap_refuses_the_next_connection_and_counts_it() {
    let cfg = IngressConfig {
        max_connections_per_ip: 2,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    let first = RawClient::connect(h.addr, Proto::V4, "ip-1", 30).await;
    let mut second = RawClient::connect(h.addr, Proto::V5, "ip-2", 30).await;
    let mut third = RawClient::tcp(h.addr, Proto::V4).await;
    assert_eq!(third.recv().await, None, "refused at once");
    assert_eq!(h.metrics.connections_refused_per_ip.get(), 1);
    assert_eq!(h.metrics.connections_refused.get(), 0, "not the global cap");
    // The two admitted connections still work.
    second.publish(TOPIC, 1, 1, &good_payload(1)).await;
    assert_eq!(second.recv().await, Some(Got::PubAck(1, 0)));
    // Once a client leaves, its slot is free again.
    drop(first);
    let m = h.metrics.clone();
    tokio::time::timeout(Duration::from_secs(8), async move {
        while m.connections.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the closed connection was never released");
    let mut again = RawClient::connect(h.addr, Proto::V4, "ip-3", 30).await;
    again.send_raw(&[0xc0, 0x00]).await;
    assert_eq!(again.recv().await, Some(Got::PingResp));
    assert_eq!(h.metrics.connections_refused_per_ip.get(), 1);
}

/// A connection that never sends its CONNECT is closed at the connect
/// timeout and counted as `connect_timeout`.
#[tokio::test]
async fn silent_connection_is_closed_at_the_connect_timeout_and_counted() {
    let cfg = IngressConfig {
        connect_timeout_ms: 200,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    let mut silent = RawClient::tcp(h.addr, Proto::V4).await;
    assert_eq!(silent.recv().await, None);
    let m = h.metrics.clone();
    tokio::time::timeout(Duration::from_secs(8), async move {
        while m.rejects_for("connect_timeout") != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("connect timeout not counted");
    assert_eq!(h.metrics.rejects_for("malformed_packet"), 0);
}
