//! Bad input against a running cluster of real processes. After every bad
//! input the test proves the process still serves (a device publish is
//! PUBACKed and later stored, the hub answers `Status`, central answers) and
//! that the bad input was counted on the process's `/metrics`.
//!
//! MQTT is spoken as raw bytes here, so the tests control every byte (a
//! truncated CONNECT, a lying remaining length) and see every reason code.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use rand::{Rng, SeedableRng};
use strata_net::rpc::{read_frame, write_frame, write_raw};
use strata_net::{NetError, NodeTls, Pki};
use strata_protocol::telemetry::{encode_binary, Metric, TelemetryRecord};
use strata_protocol::{
    Hello, HelloReply, HubRequest, HubResponse, NodeIdentity, NodeKind, RefuseReason,
    PROTOCOL_VERSION,
};
use strata_tests::cluster::{login, scrape, serial};
use strata_tests::{wait_until, Cluster, ClusterOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TENANT: &str = "acme";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn good_payload(seq: u64) -> Vec<u8> {
    format!(
        r#"{{"ts":{},"seq":{seq},"metrics":{{"t":21.5}}}}"#,
        now_ms()
    )
    .into_bytes()
}

fn topic(device: &str) -> String {
    format!("strata/{TENANT}/{device}/telemetry")
}

// ----- raw MQTT ------------------------------------------------------------

/// MQTT variable-length "remaining length".
fn remaining_len(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![byte1];
    p.extend(remaining_len(body.len()));
    p.extend_from_slice(body);
    p
}

fn str16(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// CONNECT with clean start, keep-alive 60 s, for protocol `level` (4 or
/// 5), logged in as the harness's `acme` identity.
fn connect_packet(level: u8, client: &str) -> Vec<u8> {
    let (user, password) = login(TENANT);
    let mut b = str16(b"MQTT");
    b.extend([level, 0x02 | 0x80 | 0x40, 0, 60]); // clean, username, password
    if level == 5 {
        b.push(0); // no properties
    }
    b.extend(str16(client.as_bytes()));
    b.extend(str16(user.as_bytes()));
    b.extend(str16(password.as_bytes()));
    packet(0x10, &b)
}

/// QoS 1 PUBLISH.
fn publish_packet(level: u8, topic: &str, pid: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = str16(topic.as_bytes());
    b.extend(pid.to_be_bytes());
    if level == 5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    packet(0x32, &b)
}

/// A raw MQTT connection that reads whole packets as (type, body).
struct Mqtt {
    s: TcpStream,
    buf: Vec<u8>,
    level: u8,
    pid: u16,
}

impl Mqtt {
    async fn tcp(addr: &str) -> anyhow::Result<Mqtt> {
        Ok(Mqtt {
            s: TcpStream::connect(addr).await?,
            buf: Vec::new(),
            level: 0,
            pid: 0,
        })
    }

    /// TCP + CONNECT + a successful CONNACK.
    async fn open(addr: &str, level: u8, client: &str) -> anyhow::Result<Mqtt> {
        let mut m = Mqtt::tcp(addr).await?;
        m.level = level;
        m.send(&connect_packet(level, client)).await?;
        match m.next().await? {
            Some((2, body)) if body.get(1) == Some(&0) => Ok(m),
            other => bail!("{client}: expected a successful CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(self.s.write_all(bytes).await?)
    }

    /// Next packet as (type, body) within 5 s; `None` once the server has
    /// closed the connection (EOF or reset).
    async fn next(&mut self) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(p) = self.parse() {
                    return Ok(Some(p));
                }
                let mut chunk = [0u8; 4096];
                match self.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Ok(None),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("no packet and no close from the edge within 5 s"))?
    }

    fn parse(&mut self) -> Option<(u8, Vec<u8>)> {
        let (mut len, mut i) = (0usize, 1usize);
        loop {
            let b = *self.buf.get(i)?;
            len |= ((b & 0x7f) as usize) << (7 * (i - 1));
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if self.buf.len() < i + len {
            return None;
        }
        let ty = self.buf[0] >> 4;
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some((ty, body))
    }

    /// Publishes at QoS 1 and returns the PUBACK reason code (0 = success).
    async fn publish(&mut self, topic: &str, payload: &[u8]) -> anyhow::Result<u8> {
        self.pid = self.pid % 60_000 + 1;
        let pid = self.pid;
        self.send(&publish_packet(self.level, topic, pid, payload))
            .await?;
        match self.next().await? {
            Some((4, body)) if body[..2] == pid.to_be_bytes() => Ok(*body.get(2).unwrap_or(&0)),
            other => bail!("expected PUBACK for packet id {pid}, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the packet types it sent first.
    async fn closed(&mut self) -> anyhow::Result<Vec<(u8, Vec<u8>)>> {
        let mut seen = Vec::new();
        while let Some(p) = self.next().await? {
            seen.push(p);
        }
        Ok(seen)
    }
}

/// Waits until `device` has exactly the sequence numbers `0..count` stored.
async fn assert_stored(c: &Cluster, device: &str, count: u64) -> anyhow::Result<()> {
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 3_600_000);
    let seqs = wait_until(
        &format!("{count} readings of {device}"),
        Duration::from_secs(20),
        || async {
            let recs = c.api.telemetry(TENANT, device, from, to).await.ok()?;
            let seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
            (seqs.len() as u64 >= count).then_some(seqs)
        },
    )
    .await?;
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    ensure!(
        seqs.len() as u64 == count && distinct == (0..count).collect(),
        "{device}: stored seqs {seqs:?}, want exactly 0..{count}"
    );
    Ok(())
}

fn rejects(reason: &str) -> String {
    format!("strata_ingress_rejects_total{{reason=\"{reason}\"}}")
}

fn small_cluster() -> ClusterOpts {
    ClusterOpts {
        hubs: 1,
        edges: 1,
        ..Default::default()
    }
}

// ----- malformed MQTT ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mqtt_closes_only_that_connection() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(small_cluster()).await?;
    let r = malformed_mqtt(&c, 21).await;
    c.finish(r)
}

async fn malformed_mqtt(c: &Cluster, seed: u64) -> anyhow::Result<()> {
    let addr = c.mqtt_addrs()[0].clone();
    let metrics = c.edge_metrics_addr(0)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut garbage: Vec<u8> = (0..512).map(|_| rng.gen()).collect();
    if garbage[0] == 0x10 {
        garbage[0] = 0xff; // anything but the CONNECT type byte
    }
    let huge_publish = [0x32, 0xff, 0xff, 0xff, 0x7f, 0, 1, b'x'];
    // (name, protocol level to CONNECT with first (0 = none), bytes, half-close
    // after sending, reason counted)
    let cases: Vec<(&str, u8, Vec<u8>, bool, &str)> = vec![
        ("random bytes", 0, garbage, false, "malformed_packet"),
        (
            "CONNECT cut short by EOF",
            0,
            connect_packet(4, "cut")[..9].to_vec(),
            true,
            "malformed_packet",
        ),
        (
            "CONNECT whose body ends inside the protocol name",
            0,
            vec![0x10, 0x03, 0x00, 0x04, b'M'],
            false,
            "malformed_packet",
        ),
        (
            "PUBLISH before CONNECT",
            0,
            publish_packet(4, &topic("early"), 1, &good_payload(0)),
            false,
            "malformed_packet",
        ),
        (
            "CONNECT with a 256 MiB remaining length",
            0,
            vec![0x10, 0xff, 0xff, 0xff, 0x7f],
            false,
            "packet_too_large",
        ),
        (
            "unsupported protocol level",
            0,
            connect_packet(6, "future"),
            false,
            "protocol_error",
        ),
        (
            "v3.1.1 PUBLISH with a 256 MiB remaining length",
            4,
            huge_publish.to_vec(),
            false,
            "packet_too_large",
        ),
        (
            "v5 PUBLISH with a 256 MiB remaining length",
            5,
            huge_publish.to_vec(),
            false,
            "packet_too_large",
        ),
        (
            "PUBLISH whose topic overruns the packet",
            4,
            vec![0x32, 0x02, 0x00, 0x09],
            false,
            "malformed_packet",
        ),
    ];
    // A well-behaved device, connected throughout.
    let mut good = Mqtt::open(&addr, 5, "good-device").await?;
    let mut seq = 0u64;
    for (name, level, bytes, half_close, reason) in cases {
        let ctx = || format!("seed {seed}: {name}");
        let before = c.metric(&metrics, &rejects(reason)).await?;
        let mut bad = if level == 0 {
            Mqtt::tcp(&addr).await?
        } else {
            Mqtt::open(&addr, level, &format!("bad-{level}")).await?
        };
        bad.send(&bytes).await.with_context(ctx)?;
        if half_close {
            bad.s.shutdown().await?;
        }
        let sent_back = bad.closed().await.with_context(ctx)?;
        if name.starts_with("v5 PUBLISH") {
            // v5 says why before closing: DISCONNECT 0x95 (packet too large).
            ensure!(
                sent_back
                    .iter()
                    .any(|(ty, b)| *ty == 14 && b.first() == Some(&0x95)),
                "{}: want DISCONNECT 0x95 first, got {sent_back:?}",
                ctx()
            );
        }
        wait_until(&ctx(), Duration::from_secs(5), || async {
            let now = c.metric(&metrics, &rejects(reason)).await.ok()?;
            (now == before + 1.0).then_some(())
        })
        .await
        .with_context(|| format!("{}: {reason} counter did not move by 1", ctx()))?;
        let code = good.publish(&topic("good"), &good_payload(seq)).await?;
        ensure!(code == 0, "{}: good publish got reason {code:#x}", ctx());
        seq += 1;
    }
    // Only the good connection is left open: nothing leaked.
    wait_until("one open connection", Duration::from_secs(5), || async {
        let n = c
            .metric(&metrics, "strata_ingress_connections")
            .await
            .ok()?;
        (n == 1.0).then_some(())
    })
    .await?;
    assert_stored(c, "good", seq).await
}

// ----- bad payloads ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_get_reason_codes_and_are_not_stored() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(small_cluster()).await?;
    let r = bad_payloads(&c).await;
    c.finish(r)
}

async fn bad_payloads(c: &Cluster) -> anyhow::Result<()> {
    let addr = c.mqtt_addrs()[0].clone();
    let metrics = c.edge_metrics_addr(0)?;
    let ts = now_ms();
    let nan = encode_binary(&TelemetryRecord {
        tenant: TENANT.into(),
        device: "bad-nan".into(),
        ts_ms: ts,
        seq: Some(0),
        metrics: vec![Metric {
            name: "t".into(),
            value: f64::NAN,
        }],
        tags: vec![],
    });
    let oversize = format!(
        r#"{{"ts":{ts},"metrics":{{"t":1}},"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    // (topic, payload, v5 reason code, reject reason)
    let cases: Vec<(String, Vec<u8>, u8, &str)> = vec![
        (
            topic("bad-json"),
            b"{not json".to_vec(),
            0x99,
            "invalid_json",
        ),
        (
            topic("bad-num"),
            format!(r#"{{"ts":{ts},"metrics":{{"t":"hot"}}}}"#).into_bytes(),
            0x99,
            "non_numeric_metric",
        ),
        (topic("bad-nan"), nan, 0x99, "non_finite_metric"),
        (
            topic("bad-nots"),
            br#"{"metrics":{"t":1}}"#.to_vec(),
            0x99,
            "missing_timestamp",
        ),
        (topic("bad-big"), oversize.into_bytes(), 0x99, "oversize"),
        (
            format!("strata/{TENANT}/bad-topic/alerts"),
            good_payload(0),
            0x90,
            "unknown_topic",
        ),
        (
            format!("strata/{TENANT}/bad name/telemetry"),
            good_payload(0),
            0x90,
            "bad_name",
        ),
    ];
    let mut v5 = Mqtt::open(&addr, 5, "v5-device").await?;
    let mut seq = 0u64;
    for (t, payload, want_code, reason) in &cases {
        let before = c.metric(&metrics, &rejects(reason)).await?;
        let code = v5.publish(t, payload).await?;
        ensure!(
            code == *want_code,
            "{reason}: PUBACK reason {code:#x}, want {want_code:#x}"
        );
        let after = c.metric(&metrics, &rejects(reason)).await?;
        ensure!(
            after == before + 1.0,
            "{reason}: counter {before} -> {after}"
        );
        // The same connection keeps working.
        let code = v5.publish(&topic("good"), &good_payload(seq)).await?;
        ensure!(code == 0, "good publish after {reason}: {code:#x}");
        seq += 1;
    }
    // v3.1.1 cannot say no: the bad publish is PUBACKed, dropped and counted.
    let mut v4 = Mqtt::open(&addr, 4, "v4-device").await?;
    let before = c.metric(&metrics, &rejects("invalid_json")).await?;
    v4.publish(&topic("bad-v4"), b"]]").await?;
    let after = c.metric(&metrics, &rejects("invalid_json")).await?;
    ensure!(
        after == before + 1.0,
        "v3.1.1 invalid_json: {before} -> {after}"
    );
    ensure!(v4.publish(&topic("good"), &good_payload(seq)).await? == 0);
    seq += 1;

    assert_stored(c, "good", seq).await?;
    // Everything stored was seen by now: no bad device has a record.
    let devices = c.api.device_counts(TENANT).await?;
    let stored_bad: Vec<&String> = devices.keys().filter(|d| d.starts_with("bad")).collect();
    ensure!(stored_bad.is_empty(), "bad devices stored: {stored_bad:?}");
    Ok(())
}

// ----- hubs: garbage datagrams, foreign certificates, refused hellos --------

/// A v1 QUIC long-header Initial that announces 1200 bytes but carries
/// `len` bytes in total.
fn fake_initial(rng: &mut impl Rng, len: usize) -> Vec<u8> {
    let mut p = vec![0xc3, 0, 0, 0, 1, 8];
    p.extend((0..8).map(|_| rng.gen::<u8>())); // destination connection id
    p.extend([0, 0, 0x44, 0xb0]); // no source id, no token, length 1200
    while p.len() < len {
        p.push(rng.gen());
    }
    p.truncate(len);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_to_hub_ports_are_ignored() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        edges: 1,
        ..Default::default()
    })
    .await?;
    let r = garbage_datagrams(&c, 31).await;
    c.finish(r)
}

async fn garbage_datagrams(c: &Cluster, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let targets: Vec<std::net::SocketAddr> = c
        .hub_addrs
        .iter()
        .flat_map(|h| [h.client, h.peer])
        .collect();
    for _round in 0..300 {
        for t in &targets {
            let n = rng.gen_range(1..1400);
            let random: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let cut = rng.gen_range(6..60);
            for d in [
                random,
                fake_initial(&mut rng, cut),
                fake_initial(&mut rng, 1200),
            ] {
                // A full socket buffer may drop some: that is fine here.
                let _ = sock.send_to(&d, t).await;
            }
        }
        tokio::task::yield_now().await;
    }
    for h in &c.hub_addrs {
        c.hub_status(h.id, Duration::from_secs(5))
            .await
            .with_context(|| format!("seed {seed}: hub {} after garbage", h.id))?;
    }
    let mut dev = Mqtt::open(&c.mqtt_addrs()[0], 4, "after-garbage").await?;
    for seq in 0..3 {
        ensure!(
            dev.publish(&topic("after-garbage"), &good_payload(seq))
                .await?
                == 0
        );
    }
    assert_stored(c, "after-garbage", 3).await
}

fn failures(reason: &str) -> String {
    format!("strata_handshake_failures_total{{reason=\"{reason}\"}}")
}

/// Waits until `series` on `addr` is `before + 1`.
async fn counted(c: &Cluster, addr: &str, series: &str, before: f64) -> anyhow::Result<()> {
    wait_until(
        &format!("{series} to reach {}", before + 1.0),
        Duration::from_secs(5),
        || async {
            let v = c.metric(addr, series).await.ok()?;
            (v == before + 1.0).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_refuses_foreign_ca_wrong_region_and_wrong_version() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        edges: 1,
        ..Default::default()
    })
    .await?;
    let r = refused_handshakes(&c).await;
    c.finish(r)
}

async fn refused_handshakes(c: &Cluster) -> anyhow::Result<()> {
    let hub = c.hub_addrs[0];
    let metrics = c.hub_metrics_addr(hub.id)?;
    let cluster_pki = Pki::ensure(&c.root().join("pki"))?;
    let tool_tls = NodeTls::load(&cluster_pki.node("tool")?)?;
    let edge = |region: &str| NodeIdentity {
        kind: NodeKind::Edge,
        id: "intruder".into(),
        region: region.into(),
    };

    // 1. A certificate from another CA (trusting ours, so only the hub can
    //    be the one saying no).
    let other = tempfile::tempdir()?;
    let foreign = Pki::ensure(other.path())?;
    let mut ftls = (*NodeTls::load(&foreign.node("edge-1")?)?).clone();
    ftls.ca = tool_tls.ca.clone();
    let fep = strata_net::client_endpoint(&ftls)?;
    let before = c.metric(&metrics, &failures("tls")).await?;
    let err = strata_net::connect(&fep, hub.client, &edge(&c.opts.region)).await;
    ensure!(err.is_err(), "a foreign certificate was accepted");
    counted(c, &metrics, &failures("tls"), before).await?;
    c.hub_status(hub.id, Duration::from_secs(5)).await?;

    // 2. The right CA, the wrong region: refused with the reason.
    let before = c.metric(&metrics, &failures("policy")).await?;
    match strata_net::connect(&c.tool, hub.client, &edge("elsewhere")).await {
        Err(NetError::Refused {
            reason:
                RefuseReason::WrongRegion {
                    client_region,
                    server_region,
                    ..
                },
            ..
        }) => ensure!(client_region == "elsewhere" && server_region == c.opts.region),
        other => bail!(
            "wrong region: want WrongRegion refusal, got {:?}",
            other.map(|_| ())
        ),
    }
    counted(c, &metrics, &failures("policy"), before).await?;

    // 3. The wrong protocol version, in a hand-made Hello.
    let before = c.metric(&metrics, &failures("version")).await?;
    let conn = c
        .tool
        .connect(hub.client, strata_net::CLUSTER_SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Hello {
        version: 999,
        node: edge(&c.opts.region),
        boot: 1,
    };
    write_frame(&mut send, &hello, "hub").await?;
    let _ = send.finish();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        read_frame::<HelloReply>(&mut recv, "hub"),
    )
    .await??;
    ensure!(
        reply
            == Some(HelloReply::Refused(RefuseReason::VersionMismatch {
                server: PROTOCOL_VERSION,
                client: 999,
            })),
        "version 999: got {reply:?}"
    );
    counted(c, &metrics, &failures("version"), before).await?;

    // 4. A hello that is not a Hello at all.
    let before = c.metric(&metrics, &failures("frame")).await?;
    let conn = c
        .tool
        .connect(hub.client, strata_net::CLUSTER_SERVER_NAME)?
        .await?;
    let (mut send, _recv) = conn.open_bi().await?;
    write_raw(&mut send, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff], "hub").await?;
    let _ = send.finish();
    counted(c, &metrics, &failures("frame"), before).await?;

    // The hub still serves, and its group still takes writes.
    c.hub_status(hub.id, Duration::from_secs(5)).await?;
    let mut dev = Mqtt::open(&c.mqtt_addrs()[0], 4, "after-refusals").await?;
    ensure!(
        dev.publish(&topic("after-refusals"), &good_payload(0))
            .await?
            == 0
    );
    assert_stored(c, "after-refusals", 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_refused_from_its_header() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 0,
        ..Default::default()
    })
    .await?;
    let r = oversize_frame(&c).await;
    c.finish(r)
}

async fn oversize_frame(c: &Cluster) -> anyhow::Result<()> {
    let hub = c.hub_addrs[0];
    let metrics = c.hub_metrics_addr(hub.id)?;
    let series = r#"strata_hub_request_errors_total{kind="decode"}"#;
    let me = NodeIdentity {
        kind: NodeKind::Tool,
        id: "oversize".into(),
        region: String::new(),
    };
    let (conn, _) = strata_net::connect(&c.tool, hub.client, &me).await?;
    let before = c.metric(&metrics, series).await?;
    const STREAMS: usize = 8;
    for i in 0..STREAMS {
        let (mut send, mut recv) = conn.open_bi().await?;
        // Only the header, announcing 64 MiB; no body, no finish. A hub that
        // waited for the body (or allocated it) would keep the stream open.
        send.write_all(&(64u32 << 20).to_be_bytes()).await?;
        let answer = tokio::time::timeout(
            Duration::from_secs(3),
            read_frame::<HubResponse>(&mut recv, "hub"),
        )
        .await
        .with_context(|| format!("stream {i}: the hub kept a 64 MiB frame's stream open"))?;
        ensure!(
            !matches!(answer, Ok(Some(_))),
            "stream {i}: answered an oversize frame: {answer:?}"
        );
    }
    let after = c.metric(&metrics, series).await?;
    ensure!(
        after == before + STREAMS as f64,
        "decode errors {before} -> {after}, want +{STREAMS}"
    );
    // The same connection still serves requests.
    let resp: HubResponse = strata_net::rpc::call(&conn, &HubRequest::Status).await?;
    ensure!(matches!(resp, HubResponse::Status(_)), "{resp:?}");
    Ok(())
}

// ----- central's API -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_requests_get_json_errors() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 0,
        ..Default::default()
    })
    .await?;
    let r = bad_api(&c).await;
    c.finish(r)
}

/// Sum of central's HTTP request counters with a 4xx status.
fn client_errors(text: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("strata_central_http_requests_total{") && l.contains("status=\"4")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Bad requests, one per line: `METHOD path [json|text] [body] -> status
/// code`. `{r}` is the cluster's region; `json` sends the body as
/// `application/json`, `text` without a content type.
const API_CASES: &[&str] = &[
    "GET /api/v1/regions/nowhere -> 404 unknown-region",
    r#"POST /api/v1/regions/nowhere/replicas json {"id":9,"peer-addr":"127.0.0.1:1","client-addr":"127.0.0.1:2"} -> 404 unknown-region"#,
    "GET /api/v1/telemetry/acme/dev-0?from=yesterday -> 400 invalid-parameter",
    "GET /api/v1/telemetry/acme/dev-0?limit=0 -> 400 invalid-parameter",
    "GET /api/v1/telemetry/acme/dev-0?limit=many -> 400 invalid-parameter",
    "GET /api/v1/telemetry/acme/dev-0?form=1 -> 400 invalid-parameter",
    "GET /api/v1/telemetry/acme/dev-0?from=2000&to=1000 -> 400 invalid-parameter",
    "GET /api/v1/devices?tenant=a&tenant=b -> 400 invalid-parameter",
    "POST /api/v1/regions/{r}/replicas json {not json -> 400 invalid-body",
    r#"POST /api/v1/regions/{r}/replicas json {"id":"nine"} -> 400 invalid-body"#,
    r#"POST /api/v1/regions/{r}/replicas json {"id":9,"peer-addr":"x:1","client-addr":"y:2","extra":1} -> 400 invalid-body"#,
    r#"POST /api/v1/regions/{r}/replicas json {"id":0,"peer-addr":"127.0.0.1:1","client-addr":"127.0.0.1:2"} -> 400 invalid-body"#,
    r#"POST /api/v1/regions/{r}/replicas json {"id":9,"peer-addr":"nowhere","client-addr":"127.0.0.1:2"} -> 400 invalid-body"#,
    r#"POST /api/v1/regions/{r}/replicas text {"id":9,"peer-addr":"127.0.0.1:1","client-addr":"127.0.0.1:2"} -> 415 unsupported-media-type"#,
    "DELETE /api/v1/regions/{r}/replicas/abc -> 400 invalid-parameter",
    "GET /api/v1/nothing-here -> 404 not-found",
    "PUT /api/v1/regions -> 405 method-not-allowed",
];

async fn bad_api(c: &Cluster) -> anyhow::Result<()> {
    let central = c.central_metrics_addr()?;
    let before = client_errors(&scrape(&central).await?);
    for case in API_CASES {
        let case = case.replace("{r}", &c.opts.region);
        let (request, expect) = case.split_once(" -> ").context("case without ->")?;
        let (want_status, want_code) = expect.split_once(' ').context("status code")?;
        let want_status: u16 = want_status.parse()?;
        let mut parts = request.splitn(4, ' ');
        let method: reqwest::Method = parts.next().unwrap_or_default().parse()?;
        let path = parts.next().context("path")?;
        let (ctype, body) = match (parts.next(), parts.next()) {
            (Some("json"), Some(b)) => (Some("application/json"), b),
            (Some("text"), Some(b)) => (None, b),
            _ => (None, ""),
        };
        let what = case.as_str();
        let (status, resp) = c
            .api
            .send_raw(method, path, ctype, body)
            .await
            .with_context(|| what.to_owned())?;
        ensure!(
            status == want_status,
            "{what}: status {status}, want {want_status}: {resp}"
        );
        let err = &resp["error"];
        ensure!(
            err["code"].as_str() == Some(want_code)
                && err["message"].as_str().is_some_and(|m| !m.is_empty())
                && resp.as_object().map(|o| o.len()) == Some(1),
            "{what}: body {resp} is not {{\"error\":{{\"code\":\"{want_code}\",\"message\":...}}}}"
        );
        // Central still answers.
        let (status, _) = c
            .api
            .get(&format!("/api/v1/regions/{}", c.opts.region))
            .await?;
        ensure!(
            status == 200,
            "{what}: central stopped answering ({status})"
        );
    }
    let after = client_errors(&scrape(&central).await?);
    ensure!(
        after == before + API_CASES.len() as f64,
        "central counted {} client errors, want {}",
        after - before,
        API_CASES.len()
    );
    let (status, _, _) = strata_tests::cluster::http_get_text(&central, "/health").await?;
    ensure!(status == 200, "central /health: {status}");
    Ok(())
}
