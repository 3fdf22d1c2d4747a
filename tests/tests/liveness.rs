//! Edge failure detection with real processes: a SIGKILLed edge is down
//! within about a second (the time is printed) at the API and in the
//! event stream, classified undetermined, then edge-failure once its
//! devices report through another edge, and crash when it returns with a
//! new boot id; a SIGTERMed edge is down at once, classified shutdown; a
//! killed hub leader does not make its successor declare edges down; an
//! edge cut off by a UDP proxy is down, then back classified partition.
//!
//! No test asserts a latency beyond a loose bound far above the expected
//! one (the old liveness window was 10 s); the measured times are printed.
//! `detection_latency_over_kills` (ignored: about a minute) measures p50 and
//! p99 over 20 SIGKILLs (`STRATA_LIVENESS_KILLS` for more; flap holding is
//! off there, so each restarted edge is back at once):
//! `cargo test -p strata-tests --test liveness -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use strata_tests::cluster::serial;
use strata_tests::liveness::{
    edge_state, events_since, last_event_seq, wait_edge_state, EventStream,
};
use strata_tests::{percentiles, wait_until, Cluster, ClusterOpts};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

/// Far above the expected detection time (suspect-after + grace = 0.9 s
/// after the last heartbeat), far below the old 10 s liveness window.
const LOOSE: Duration = Duration::from_secs(5);
/// Deadline for things that take a reconnect, a restart or a redial.
const PATIENCE: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mosquitto_pub_bin() -> anyhow::Result<PathBuf> {
    ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("mosquitto_pub"))
        .find(|p| p.exists())
        .context(
            "`mosquitto_pub` not found: install it with `apt-get install -y mosquitto-clients`",
        )
}

/// One QoS 1 reading of `device` through the edge at `mqtt` (host:port).
async fn publish(mqtt: &str, device: &str, seq: u64) -> anyhow::Result<()> {
    let (host, port) = mqtt.rsplit_once(':').context("host:port")?;
    let payload = format!(
        r#"{{"ts": {}, "seq": {seq}, "metrics": {{"t": 1.5}}}}"#,
        now_ms()
    );
    let (user, password) = strata_tests::cluster::login("acme");
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(mosquitto_pub_bin()?)
            .args(["-h", host, "-p", port, "-q", "1", "-V", "mqttv5"])
            .args(["-u", &user, "-P", &password])
            .args([
                "-t",
                &format!("strata/acme/{device}/telemetry"),
                "-m",
                &payload,
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("mosquitto_pub hung")??;
    ensure!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until the region stores at least `n` readings of `device`.
async fn stored(c: &Cluster, device: &str, n: u64) -> anyhow::Result<()> {
    wait_until(&format!("{n} readings of {device}"), PATIENCE, || async {
        let counts = c.api.device_counts("acme").await.ok()?;
        (counts.get(device).copied().unwrap_or(0) >= n).then_some(())
    })
    .await
}

fn class(e: &serde_json::Value) -> &str {
    e["edge"]["liveness"]["classification"]
        .as_str()
        .unwrap_or("?")
}

fn evidence(e: &serde_json::Value) -> Vec<String> {
    e["edge"]["liveness"]["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_stopped_restarted_and_roaming_edges_are_classified() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = async {
        let region = c.opts.region.clone();
        for edge in ["edge-1", "edge-2"] {
            wait_edge_state(&c.api, edge, "up", PATIENCE).await?;
        }
        let boot_1 = edge_state(&c.api, "edge-1").await.context("edge-1")?.boot_id;
        ensure!(boot_1 != 0, "edge-1 sent a boot id");
        // A device that reports through edge-1.
        let mqtt = c.mqtt_addrs();
        publish(&mqtt[0], "roam-1", 1).await?;
        stored(&c, "roam-1", 1).await?;

        // SIGKILL: only silence reveals it.
        let since = last_event_seq(&c.api, &region).await?;
        let mut stream = EventStream::open(&c.api, &region, since).await?;
        let killed = Instant::now();
        c.edges[0].kill().await;
        let (down, seen) = wait_edge_state(&c.api, "edge-1", "down", PATIENCE).await?;
        let at_api = seen - killed;
        let event = stream.next_of("edge-down", "edge-1", PATIENCE).await?;
        let in_stream = killed.elapsed();
        let detection = event["edge"]["liveness"]["detection-ms"].as_u64().unwrap_or(0);
        eprintln!(
            "SIGKILL: edge-1 down at the API {} ms after the kill, in the event stream by {} ms; \
             {detection} ms after its last heartbeat",
            at_api.as_millis(),
            in_stream.as_millis()
        );
        ensure!(at_api < LOOSE, "down only after {at_api:?}");
        ensure!(
            (down.classification.as_str(), class(&event)) == ("undetermined", "undetermined"),
            "{down:?} {event}"
        );
        ensure!(
            evidence(&event).contains(&"missed-heartbeats".to_owned()),
            "{event}"
        );
        // The configured silence (suspect-after + grace) must have passed.
        ensure!(detection >= 900, "{event}");
        ensure!(down.detection_ms == Some(detection), "{down:?}");
        // The leader counted the decision and observed its latency.
        let leader = c.wait_for_leader(PATIENCE).await?;
        let metrics = c.hub_metrics_addr(leader)?;
        let downs = c
            .metric(
                &metrics,
                "strata_hub_edge_transitions_total{state=\"down\",classification=\"undetermined\"}",
            )
            .await?;
        let observed = c
            .metric(&metrics, "strata_hub_edge_detection_latency_seconds_count")
            .await?;
        let heartbeats = c.metric(&metrics, "strata_hub_heartbeats_total").await?;
        ensure!(
            downs >= 1.0 && observed >= 1.0 && heartbeats > 0.0,
            "leader {leader} metrics: downs {downs}, latencies {observed}, heartbeats {heartbeats}"
        );

        // Its device reconnects through edge-2: edge-1 is an edge failure.
        publish(&mqtt[1], "roam-1", 2).await?;
        let re = stream
            .next_of("edge-reclassified", "edge-1", PATIENCE)
            .await?;
        ensure!(class(&re) == "edge-failure", "{re}");
        ensure!(evidence(&re).contains(&"devices-moved".to_owned()), "{re}");

        // Restarted: a new boot id, so it was a crash.
        c.edges[0].start().await?;
        let back = stream.next_of("edge-back", "edge-1", PATIENCE).await?;
        ensure!(class(&back) == "crash", "{back}");
        ensure!(evidence(&back).contains(&"new-boot-id".to_owned()), "{back}");
        let (up, _) = wait_edge_state(&c.api, "edge-1", "up", PATIENCE).await?;
        ensure!(up.boot_id != boot_1 && up.boot_id != 0, "{up:?}");

        // SIGTERM: the edge closes its connection saying so.
        let stopped = Instant::now();
        ensure!(c.edges[1].terminate().await, "edge-2 exits cleanly");
        let down = stream.next_of("edge-down", "edge-2", PATIENCE).await?;
        eprintln!(
            "SIGTERM: edge-2 down in the event stream {} ms after the signal (its shutdown included)",
            stopped.elapsed().as_millis()
        );
        ensure!(class(&down) == "shutdown", "{down}");
        ensure!(evidence(&down) == ["shutdown-close"], "{down}");
        c.edges[1].start().await?;
        let back = stream.next_of("edge-back", "edge-2", PATIENCE).await?;
        ensure!(class(&back) == "shutdown", "restarted after a shutdown: {back}");

        // The page API has the same events, in order.
        let all = events_since(&c.api, &region, since).await?;
        let kinds: Vec<(String, String)> = all
            .iter()
            .filter(|e| e["kind"] != "edge-up" && e["kind"] != "edge-suspect")
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or("").to_owned(),
                    e["subject"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = [
            ("edge-down", "edge-1"),
            ("edge-reclassified", "edge-1"),
            ("edge-back", "edge-1"),
            ("edge-down", "edge-2"),
            ("edge-back", "edge-2"),
        ]
        .iter()
        .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
        .collect();
        ensure!(kinds == want, "{kinds:?}");
        Ok(())
    }
    .await;
    c.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_hub_leader_does_not_make_edges_down() -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    let r = async {
        let region = c.opts.region.clone();
        for edge in ["edge-1", "edge-2"] {
            wait_edge_state(&c.api, edge, "up", PATIENCE).await?;
        }
        let since = last_event_seq(&c.api, &region).await?;
        let old = c.wait_for_leader(PATIENCE).await?;
        let idx = c.hub_index(old);
        c.hubs[idx].kill().await;
        let new = wait_until("a new leader", PATIENCE, || async {
            c.api
                .leader(&region)
                .await
                .ok()
                .flatten()
                .filter(|l| *l != old)
        })
        .await?;
        eprintln!("leader {old} killed; {new} leads");
        // Past the new leader's grace (5 s) and then some: an edge it had
        // not heard from by then would be declared down.
        tokio::time::sleep(Duration::from_secs(8)).await;
        for edge in ["edge-1", "edge-2"] {
            let s = edge_state(&c.api, edge).await.context("edge state")?;
            ensure!(s.state == "up", "{edge}: {s:?}");
        }
        let events = events_since(&c.api, &region, since).await?;
        let downs: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["kind"] == "edge-down").collect();
        ensure!(downs.is_empty(), "edges declared down: {downs:?}");
        Ok(())
    }
    .await;
    c.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_edge_comes_back_as_a_partition() -> anyhow::Result<()> {
    let _serial = serial().await;
    // One hub, so no leader redirect can route edge-1 around its proxy.
    let c = Cluster::start(ClusterOpts {
        hubs: 1,
        proxied_edges: vec![0],
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        let region = c.opts.region.clone();
        for edge in ["edge-1", "edge-2"] {
            wait_edge_state(&c.api, edge, "up", PATIENCE).await?;
        }
        let since = last_event_seq(&c.api, &region).await?;
        let mut stream = EventStream::open(&c.api, &region, since).await?;
        let cut = Instant::now();
        c.cut_edge(0);
        let down = stream.next_of("edge-down", "edge-1", PATIENCE).await?;
        eprintln!(
            "partition: edge-1 down {} ms after the cut",
            cut.elapsed().as_millis()
        );
        ensure!(class(&down) == "undetermined", "{down}");
        ensure!(
            edge_state(&c.api, "edge-2").await.map(|s| s.state) == Some("up".into()),
            "edge-2 is not affected"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let healed = Instant::now();
        c.restore_edge(0);
        let back = stream.next_of("edge-back", "edge-1", PATIENCE).await?;
        eprintln!(
            "partition: edge-1 back {} ms after the link healed",
            healed.elapsed().as_millis()
        );
        ensure!(class(&back) == "partition", "{back}");
        ensure!(
            evidence(&back).contains(&"same-boot-id".to_owned()),
            "{back}"
        );
        let (up, _) = wait_edge_state(&c.api, "edge-1", "up", PATIENCE).await?;
        ensure!(up.classification == "partition", "{up:?}");
        cli_shows_it(&c).await
    }
    .await;
    c.finish(r)
}

/// `strata edges` and `strata events` (also `--follow`) show the same.
async fn cli_shows_it(c: &Cluster) -> anyhow::Result<()> {
    let api = c.central_metrics_addr()?;
    let token = c.operator_token()?;
    let bin = strata_tests::proc::bin_path("strata")?;
    let strata = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .args(["--api", &api, "--token", &token])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let out = strata(&["edges"]).output().await?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "strata edges: {out:?}");
    let row = table
        .lines()
        .find(|l| l.contains("edge-1"))
        .with_context(|| format!("no edge-1 row in:\n{table}"))?;
    ensure!(row.contains(" up ") && row.contains("partition"), "{table}");
    let out = strata(&["events", "--json"]).output().await?;
    ensure!(out.status.success(), "strata events: {out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        doc["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "edge-back")),
        "{doc}"
    );
    // --follow prints what the region holds, then keeps going.
    let mut follow = strata(&["events", "--follow"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().context("stdout")?).lines();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("edge-back") && line.contains("[partition]") {
                return Ok::<_, anyhow::Error>(line);
            }
        }
        anyhow::bail!("strata events --follow ended")
    })
    .await
    .context("strata events --follow printed no edge-back")??;
    eprintln!("strata events --follow: {found}");
    follow.kill().await?;
    Ok(())
}

/// p50 / p99 of a sorted list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement (a minute or two), not a check: run with --ignored --nocapture"]
async fn detection_latency_over_kills() -> anyhow::Result<()> {
    let _serial = serial().await;
    let kills: usize = std::env::var("STRATA_LIVENESS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut c = Cluster::start(ClusterOpts {
        edges: 1,
        // Killed every few seconds, the edge would be held down as flapping.
        hub_extra: "[liveness]\nflap-downs = 1000\n".into(),
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        let (mut at_api, mut from_heartbeat) = (Vec::new(), Vec::new());
        for i in 0..kills {
            wait_edge_state(&c.api, "edge-1", "up", PATIENCE).await?;
            // Kill at a random point between two heartbeats.
            tokio::time::sleep(Duration::from_millis(300 + (i as u64 * 37) % 250)).await;
            let killed = Instant::now();
            c.edges[0].kill().await;
            let (down, seen) = wait_edge_state(&c.api, "edge-1", "down", PATIENCE).await?;
            at_api.push((seen - killed).as_millis() as u64);
            from_heartbeat.push(down.detection_ms.unwrap_or(0));
            c.edges[0].start().await?;
        }
        at_api.sort_unstable();
        from_heartbeat.sort_unstable();
        let (a50, a99) = percentiles(&at_api);
        let (h50, h99) = percentiles(&from_heartbeat);
        eprintln!(
            "detection over {kills} SIGKILLs: kill -> down at the API p50 {a50} ms, p99 {a99} ms \
             (max {}); last heartbeat -> down decision p50 {h50} ms, p99 {h99} ms",
            at_api.last().copied().unwrap_or(0)
        );
        Ok(())
    }
    .await;
    c.finish(r)
}
