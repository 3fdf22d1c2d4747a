//! Interoperability with clients and a broker we did not write:
//! `mosquitto_pub` / `mosquitto_sub` against our server (MQTT 3.1.1 and 5),
//! and the bridge against a real `mosquitto` broker. These tests fail (not
//! skip) when the Debian `mosquitto` / `mosquitto-clients` binaries are
//! missing.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::driver::wall_ms;
use super::metrics::ReasonLabel;
use super::test_util::{good_payload, reading_at, Harness, TestSink, PASSWORD, USER};
use super::{run_bridge, BridgeConfig, BridgeMetrics, IngressConfig, RegionRetention, V3Refusal};

const TOPIC: &str = "strata/acme/dev-9/telemetry";

fn require(bin: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = format!("{dir}/{bin}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("`{bin}` not found: install it with `apt-get install -y mosquitto mosquitto-clients`");
}

/// `login` = (username, password) sent with `-u` / `-P`.
async fn mosquitto_pub(
    port: u16,
    version: &str,
    login: Option<(&str, &str)>,
    messages: &[Vec<u8>],
) {
    let out = mosquitto_pub_output(port, version, login, messages).await;
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `mosquitto_pub -d` (debug: one line per packet, with reason codes)
/// and returns what it printed and its exit status.
async fn mosquitto_pub_output(
    port: u16,
    version: &str,
    login: Option<(&str, &str)>,
    messages: &[Vec<u8>],
) -> std::process::Output {
    let child = spawn_mosquitto_pub(port, version, login, messages).await;
    tokio::time::timeout(Duration::from_secs(8), child.wait_with_output())
        .await
        .expect("mosquitto_pub hung")
        .unwrap()
}

/// Starts `mosquitto_pub -d -l` with `messages` on its stdin (closed).
async fn spawn_mosquitto_pub(
    port: u16,
    version: &str,
    login: Option<(&str, &str)>,
    messages: &[Vec<u8>],
) -> Child {
    // -l publishes each stdin line as one message over a single connection.
    let login: Vec<&str> = login.map_or(Vec::new(), |(u, p)| vec!["-u", u, "-P", p]);
    let mut child = Command::new(require("mosquitto_pub"))
        .args(login)
        .args([
            "-d",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            version,
            "-q",
            "1",
            "-t",
            TOPIC,
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mosquitto_pub");
    let mut stdin = child.stdin.take().unwrap();
    for m in messages {
        stdin.write_all(m).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    drop(stdin);
    child
}

/// mosquitto_sub -C 3 on a wildcard filter receives what mosquitto_pub -q 1
/// sent, and the sink has every record, for both protocol versions.
#[tokio::test]
async fn mosquitto_pub_and_sub_against_our_server() {
    for version in ["mqttv311", "mqttv5"] {
        let h = Harness::default_open().await;
        let port = h.addr.port().to_string();
        let mut sub = Command::new(require("mosquitto_sub"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-q",
                "1",
                "-t",
                "strata/acme/+/telemetry",
                "-u",
                USER,
                "-P",
                PASSWORD,
            ])
            .args(["-C", "3", "-W", "9", "-i", &format!("sub-{version}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto_sub");
        let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
        // Publish only once the server has registered the subscription.
        let m = h.metrics.clone();
        let subscribed = tokio::time::timeout(Duration::from_secs(8), async move {
            while m.subscribers.get() != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            subscribed.is_ok(),
            "{version}: mosquitto_sub never subscribed"
        );
        let msgs: Vec<Vec<u8>> = (0..3).map(good_payload).collect();
        mosquitto_pub(h.addr.port(), version, Some((USER, PASSWORD)), &msgs).await;
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(8), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                received.push(l);
            }
        })
        .await
        .expect("mosquitto_sub did not finish");
        let status = sub.wait().await.unwrap();
        assert!(status.success(), "{version}: mosquitto_sub exit {status}");
        let want: Vec<String> = msgs
            .iter()
            .map(|m| String::from_utf8(m.clone()).unwrap())
            .collect();
        assert_eq!(received, want, "{version}");
        h.sink.wait_records(3).await;
        assert_eq!(h.sink.records().len(), 3, "{version}");
        assert!(h.sink.records().iter().all(|r| r.device == "dev-9"));
    }
}

const DAY_MS: i64 = 86_400_000;

/// Readings from the far future and the far past, published by
/// `mosquitto_pub` over MQTT 5: refused with PUBACK 0x83 (the reason string
/// names the bound), never stored, counted; the good reading between them is
/// stored. Over 3.1.1 with the default policy ("drop") they are acked,
/// counted and not stored; with "disconnect" the client is disconnected
/// without an ack.
#[tokio::test]
async fn mosquitto_pub_far_past_and_future_readings_are_refused_and_counted() {
    let now = wall_ms();
    let msgs = vec![
        reading_at(now + 10 * 365 * DAY_MS, 1),
        good_payload(2),
        reading_at(now - 30 * DAY_MS, 3),
    ];

    let h = Harness::default_open().await;
    let out = mosquitto_pub_output(h.addr.port(), "mqttv5", Some((USER, PASSWORD)), &msgs).await;
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // -d prints each PUBACK with its reason code (131 = 0x83).
    let rcs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("received PUBACK"))
        .collect();
    assert_eq!(rcs.len(), 3, "{log}");
    assert!(
        rcs[0].contains("RC:131") && rcs[2].contains("RC:131"),
        "{log}"
    );
    assert!(rcs[1].contains("RC:0"), "{log}");
    // mosquitto_pub prints the reason strings: which bound, by how much.
    assert!(
        log.contains("ahead of the edge clock; max-future-skew is 5m"),
        "{log}"
    );
    assert!(
        log.contains("is 30days")
            && log.contains("old; the oldest accepted is 7days (max-past-age)"),
        "{log}"
    );
    h.sink.wait_records(1).await;
    assert_eq!(h.sink.records().len(), 1);
    assert_eq!(h.sink.records()[0].seq, Some(2));
    assert_eq!(h.metrics.rejects_for("too_far_future"), 1);
    assert_eq!(h.metrics.rejects_for("too_old"), 1);

    // 3.1.1, default policy: acked (the device moves on), dropped, counted.
    let h = Harness::default_open().await;
    mosquitto_pub(h.addr.port(), "mqttv311", Some((USER, PASSWORD)), &msgs).await;
    h.sink.wait_records(1).await;
    assert_eq!(h.metrics.rejects_for("too_far_future"), 1);
    assert_eq!(h.metrics.rejects_for("too_old"), 1);
    assert_eq!(h.sink.records().len(), 1);

    // 3.1.1, "disconnect": the reading is refused and the connection closed
    // without its PUBACK. mosquitto_pub reconnects and sends it again, and
    // again: the livelock that makes "drop" the default (see ingress docs).
    let cfg = IngressConfig {
        v3_refusal: V3Refusal::Disconnect,
        ..Default::default()
    };
    let h = Harness::start(cfg, TestSink::new()).await;
    let mut child = spawn_mosquitto_pub(
        h.addr.port(),
        "mqttv311",
        Some((USER, PASSWORD)),
        &msgs[..1],
    )
    .await;
    let m = h.metrics.clone();
    let retried = tokio::time::timeout(Duration::from_secs(8), async move {
        while m.rejects_for("too_far_future") < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(retried.is_ok(), "never refused twice: {log}");
    assert!(!log.contains("received PUBACK"), "{log}");
    assert!(h.metrics.connections_total.get() >= 2, "{log}");
    assert!(h.sink.records().is_empty());
}

/// A real broker on a free port, killed on drop.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start() -> Broker {
        let bin = require("mosquitto");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto");
        // Readiness: the port accepts connections (bounded wait).
        let ready = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "mosquitto did not start on port {port}");
        Broker {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

struct RunningBridge {
    metrics: BridgeMetrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), super::IngressError>>,
}

async fn start_bridge(port: u16, client_id: &str, sink: Arc<TestSink>) -> RunningBridge {
    let cfg = BridgeConfig {
        broker: format!("127.0.0.1:{port}"),
        client_id: client_id.into(),
        min_backoff_ms: 50,
        max_backoff_ms: 400,
        ..Default::default()
    };
    let metrics = BridgeMetrics::unregistered();
    let shutdown = CancellationToken::new();
    let bounds = IngressConfig::default().live_bounds(RegionRetention::new());
    let task = tokio::spawn(run_bridge(
        cfg,
        sink,
        metrics.clone(),
        bounds,
        shutdown.clone(),
    ));
    let m = metrics.clone();
    let subscribed = tokio::time::timeout(Duration::from_secs(8), async move {
        while m.subscribed.get() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(subscribed.is_ok(), "bridge never subscribed");
    RunningBridge {
        metrics,
        shutdown,
        task,
    }
}

impl RunningBridge {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(8), self.task)
            .await
            .expect("bridge did not stop")
            .unwrap()
            .unwrap();
    }
}

fn seq_counts(sink: &TestSink) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for r in sink.records() {
        *m.entry(r.seq.unwrap()).or_insert(0) += 1;
    }
    m
}

/// Every message published to the broker reaches the sink exactly once and
/// is acked; a bad one, and readings outside the time bounds, are counted,
/// acked and not stored.
#[tokio::test]
async fn bridge_delivers_each_message_once() {
    let broker = Broker::start().await;
    let sink = TestSink::new();
    let bridge = start_bridge(broker.port, "bridge-once", sink.clone()).await;
    let mut msgs: Vec<Vec<u8>> = (0..20).map(good_payload).collect();
    msgs.push(b"{broken".to_vec());
    msgs.push(reading_at(wall_ms() + 10 * 365 * DAY_MS, 98));
    msgs.push(reading_at(wall_ms() - 30 * DAY_MS, 99));
    mosquitto_pub(broker.port, "mqttv311", None, &msgs).await;
    sink.wait_records(20).await;
    let m = bridge.metrics.clone();
    let acked = tokio::time::timeout(Duration::from_secs(8), async move {
        while m.acks_sent.get() < 23 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        acked.is_ok(),
        "acks_sent = {}",
        bridge.metrics.acks_sent.get()
    );
    let metrics = bridge.metrics.clone();
    bridge.stop().await;
    let counts = seq_counts(&sink);
    assert_eq!(counts.len(), 20);
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
    let invalid = metrics
        .rejects
        .get_or_create(&ReasonLabel {
            reason: "invalid_json",
        })
        .get();
    assert_eq!(invalid, 1);
    for reason in ["too_far_future", "too_old"] {
        let n = metrics.rejects.get_or_create(&ReasonLabel { reason }).get();
        assert_eq!(n, 1, "{reason}");
    }
}

/// A failing sink never acks, so the broker keeps the messages; after the
/// bridge restarts (same client id, persistent session) they are
/// redelivered and stored.
#[tokio::test]
async fn unacked_messages_are_redelivered_after_bridge_restart() {
    let broker = Broker::start().await;
    let failing = TestSink::new();
    failing.set_fail(true);
    let first = start_bridge(broker.port, "bridge-redeliver", failing.clone()).await;
    let msgs: Vec<Vec<u8>> = (100..103).map(good_payload).collect();
    mosquitto_pub(broker.port, "mqttv5", None, &msgs).await;
    failing
        .wait_until("3 attempts", |s| s.attempts() >= 3)
        .await;
    assert!(first.metrics.submit_failures.get() >= 1);
    assert_eq!(
        first.metrics.acks_sent.get(),
        0,
        "acked what was not stored"
    );
    first.stop().await;
    assert!(failing.records().is_empty());

    let good = TestSink::new();
    let second = start_bridge(broker.port, "bridge-redeliver", good.clone()).await;
    good.wait_records(3).await;
    second.stop().await;
    let counts = seq_counts(&good);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        vec![100, 101, 102]
    );
}
