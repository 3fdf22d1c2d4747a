//! Interoperability with MQTT software we did not write, at the cluster
//! level: an edge in bridge mode consuming a real Mosquitto broker (also
//! across a SIGKILL of the edge), and the Mosquitto command-line clients
//! publishing to and subscribing on an edge's own MQTT server.
//!
//! These tests FAIL (they do not skip) when Mosquitto is not installed:
//! `apt-get install -y mosquitto mosquitto-clients`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context};
use strata_tests::cluster::{free_tcp_ports, login, serial};
use strata_tests::fleet::{assert_exactly_once, run_fleet, Phase};
use strata_tests::{wait_until, Cluster, ClusterOpts};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Path of a Mosquitto binary, or an error saying how to install it.
fn require(bin: &str) -> anyhow::Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
        .with_context(|| {
            format!("`{bin}` not found: install it with `apt-get install -y mosquitto mosquitto-clients`")
        })
}

/// A Mosquitto broker on a free 127.0.0.1 port, killed on drop.
struct Mosquitto {
    port: u16,
    log: PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    async fn start() -> anyhow::Result<Mosquitto> {
        let bin = require("mosquitto")?;
        let dir = tempfile::Builder::new()
            .prefix("strata-mosquitto-")
            .tempdir()?;
        let port = free_tcp_ports(1)?[0];
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        // No queue limit: while the bridge edge is down, everything
        // published must wait for it in its persistent session (the default
        // of 1000 queued messages would drop the rest).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 100\n"
            ),
        )?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let m = Mosquitto {
            port,
            log,
            _child: child,
            _dir: dir,
        };
        wait_until("mosquitto listening", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await
        .with_context(|| m.log_text())?;
        Ok(m)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        format!(
            "mosquitto log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// One hub-backed edge that serves no MQTT itself and bridges `broker`.
async fn bridge_cluster(broker: &str) -> anyhow::Result<Cluster> {
    Cluster::start(ClusterOpts {
        hubs: 3,
        edges: 1,
        edge_extra: format!(
            "serve-mqtt = false\n[bridge]\nbroker = \"{broker}\"\nclient-id = \"strata-test-bridge\"\n\
             min-backoff-ms = 50\nmax-backoff-ms = 500\n"
        ),
        ..Default::default()
    })
    .await
}

/// Waits until the bridge edge holds its subscription at the broker:
/// publishes before that would have no subscriber and be dropped.
async fn wait_subscribed(c: &Cluster) -> anyhow::Result<()> {
    let m = c.edge_metrics_addr(0)?;
    wait_until("bridge subscribed", Duration::from_secs(15), || async {
        (c.metric(&m, "strata_bridge_subscribed").await.ok()? == 1.0).then_some(())
    })
    .await
}

/// A phase of `devices` devices sending `count` readings each to the broker.
fn fleet(broker: &str, seed: u64, phase: &Phase, rate: f64) -> firmware_sim::FleetConfig {
    let mut cfg = phase.fleet(vec![broker.to_owned()], seed, rate);
    cfg.connections = Some(phase.devices.min(10));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_from_mosquitto_stores_every_reading_once() -> anyhow::Result<()> {
    let _g = serial().await;
    let broker = Mosquitto::start().await?;
    let c = bridge_cluster(&broker.addr()).await?;
    let r = async {
        wait_subscribed(&c).await?;
        let (phase, seed) = (Phase::new("dev", 20, 100), 41);
        run_fleet(fleet(&broker.addr(), seed, &phase, 0.0)).await?;
        assert_exactly_once(&c, std::slice::from_ref(&phase), seed).await?;
        // The edge took them through the bridge, not some other way.
        let m = c.edge_metrics_addr(0)?;
        let accepted = c.metric(&m, "strata_bridge_accepted_total").await?;
        ensure!(
            accepted >= phase.total() as f64,
            "bridge accepted {accepted}"
        );
        Ok(())
    }
    .await;
    c.finish(r.with_context(|| broker.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_edge_sigkill_mid_stream_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _g = serial().await;
    let broker = Mosquitto::start().await?;
    let mut c = bridge_cluster(&broker.addr()).await?;
    let r = bridge_sigkill(&mut c, &broker, 42).await;
    c.finish(r.with_context(|| broker.log_text()))
}

async fn bridge_sigkill(c: &mut Cluster, broker: &Mosquitto, seed: u64) -> anyhow::Result<()> {
    wait_subscribed(c).await?;
    let phase = Phase::new("dev", 20, 200);
    // ~50 readings/s per device: publishing lasts about 4 s.
    let sim = tokio::spawn(run_fleet(fleet(&broker.addr(), seed, &phase, 50.0)));
    // Kill once the bridge is well into the stream (counted at the bridge,
    // not at the hubs, which lag behind it).
    let m = c.edge_metrics_addr(0)?;
    let at_kill = wait_until(
        "bridged ingest under way",
        Duration::from_secs(20),
        || async {
            let n = c.metric(&m, "strata_bridge_received_total").await.ok()?;
            (n > 800.0).then_some(n)
        },
    )
    .await?;
    c.edges[0].kill().await;
    println!(
        "SIGKILL of the bridge edge after it received {at_kill} of {} readings",
        phase.total()
    );
    ensure!(
        !sim.is_finished(),
        "the fleet finished before the kill: test too fast"
    );
    // The broker keeps the session and queues for it while the edge is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.edges[0].start().await?;
    let s = sim.await??;
    assert_exactly_once(c, std::slice::from_ref(&phase), seed).await?;
    // The restarted edge (on a new metrics port) got its backlog from the
    // broker's session.
    let m = c.edge_metrics_addr(0)?;
    let received = c.metric(&m, "strata_bridge_received_total").await?;
    ensure!(received > 0.0, "the restarted bridge received nothing");
    let dup: f64 = {
        let mut sum = 0.0;
        for h in &c.hub_addrs {
            let a = c.hub_metrics_addr(h.id)?;
            for reason in ["edge_resend", "device_retransmission"] {
                let series = format!("strata_hub_duplicate_records_total{{reason=\"{reason}\"}}");
                sum += c.metric(&a, &series).await?;
            }
        }
        sum
    };
    println!(
        "restarted bridge received {received} publishes; hubs dropped {dup} duplicates; {s:?}"
    );
    Ok(())
}

// ----- Mosquitto clients against an edge's own MQTT server ------------------

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn mosquitto_pub(
    addr: &str,
    version: &str,
    topic: &str,
    payload: &str,
) -> anyhow::Result<()> {
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(require("mosquitto_pub")?)
            .args(["-h", host, "-p", port, "-q", "1", "-V", version])
            .args(["-u", &login("acme").0, "-P", &login("acme").1])
            .args(["-t", topic, "-m", payload])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("mosquitto_pub hung")??;
    ensure!(
        out.status.success(),
        "mosquitto_pub -V {version} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until `device` has exactly one stored reading with `seq`.
async fn stored_once(c: &Cluster, device: &str, seq: u64) -> anyhow::Result<()> {
    let (from, to) = (now_ms() - 3_600_000, now_ms() + 3_600_000);
    let recs = wait_until(
        &format!("{device} stored"),
        Duration::from_secs(15),
        || async {
            let r = c.api.telemetry("acme", device, from, to).await.ok()?;
            (!r.is_empty()).then_some(r)
        },
    )
    .await?;
    ensure!(
        recs.len() == 1 && recs[0]["seq"].as_u64() == Some(seq),
        "{device}: {recs:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_and_subscribe_through_an_edge() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 1,
        ..Default::default()
    })
    .await?;
    let r = mosquitto_clients(&c).await;
    c.finish(r)
}

async fn mosquitto_clients(c: &Cluster) -> anyhow::Result<()> {
    let addr = c.mqtt_addrs()[0].clone();
    let reading = |seq: u64| {
        format!(
            r#"{{"ts":{},"seq":{seq},"metrics":{{"t":21.5}}}}"#,
            now_ms()
        )
    };
    for (version, device) in [("mqttv311", "cli-311"), ("mqttv5", "cli-5")] {
        mosquitto_pub(
            &addr,
            version,
            &format!("strata/acme/{device}/telemetry"),
            &reading(7),
        )
        .await?;
        stored_once(c, device, 7)
            .await
            .with_context(|| version.to_owned())?;
    }

    // A subscriber on the edge sees a reading another client publishes.
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let mut sub = Command::new(require("mosquitto_sub")?)
        .args(["-h", host, "-p", port, "-V", "mqttv5", "-q", "1"])
        .args(["-u", &login("acme").0, "-P", &login("acme").1])
        .args(["-t", "strata/acme/+/telemetry", "-C", "1", "-W", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = sub.stdout.take().context("mosquitto_sub stdout")?;
    let m = c.edge_metrics_addr(0)?;
    wait_until(
        "mosquitto_sub subscribed",
        Duration::from_secs(10),
        || async { (c.metric(&m, "strata_ingress_subscribers").await.ok()? == 1.0).then_some(()) },
    )
    .await?;
    let payload = reading(3);
    mosquitto_pub(
        &addr,
        "mqttv311",
        "strata/acme/cli-fanout/telemetry",
        &payload,
    )
    .await?;
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .context("mosquitto_sub received nothing")??;
    ensure!(
        line.as_deref() == Some(payload.as_str()),
        "mosquitto_sub got {line:?}, want {payload}"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), sub.wait()).await??;
    ensure!(status.success(), "mosquitto_sub -C 1 exited with {status}");
    stored_once(c, "cli-fanout", 3).await
}
