//! Device monitors end to end, with real processes: a module and spec go in
//! through central's HTTP API, the region replicates and places them, the
//! edge fetches and runs them next to the devices, and the alerts they raise
//! come back out of central's API. Plus the offline reboot: an edge that
//! restarts with no hub reachable runs its workloads again from disk.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use strata_tests::fleet::{run_fleet, Phase};
use strata_tests::monitors::{self, alerts, inspect, sample_module, status_of, wait_running};
use strata_tests::{cluster::serial, wait_until, Cluster, ClusterOpts};

const REGION: &str = "local";

/// The fleet phase with a +40 °C spike on device 3 at reading 80.
fn spiked(prefix: &str, seed: u64, c: &Cluster) -> firmware_sim::FleetConfig {
    let mut f = Phase::new(prefix, 6, 120).fleet(c.mqtt_addrs(), seed, 0.0);
    f.anomalies = vec![
        "spike:devices=3,start=80,duration=1,metric=temperature,magnitude=40"
            .parse()
            .unwrap(),
    ];
    f
}

const ZS_OFF_TOML: &str = r#"
name = "zs-off"
tenant = "acme"
target = { node = "edge-1" }
params = { metrics = ["temperature"], window = 40, min-samples = 30 }
[selector]
tenant = "acme"
device-globs = ["off-*"]
[resources]
memory-mib = 16
cpu-millicores = 100
[restart]
initial-backoff-ms = 200
max-backoff-ms = 2000
"#;

/// Submits a spec that must be refused; returns the fields at fault.
async fn refused_fields(c: &Cluster, spec: &serde_json::Value) -> anyhow::Result<Vec<String>> {
    let (status, body) = c
        .api
        .post(
            &format!("/api/v1/regions/{REGION}/monitors"),
            "application/json",
            serde_json::to_vec(spec)?,
        )
        .await?;
    anyhow::ensure!(status == 422, "expected 422, got {status} {body}");
    Ok(body["error"]["fields"]
        .as_array()
        .context("fields")?
        .iter()
        .filter_map(|f| f["field"].as_str().map(str::to_owned))
        .collect())
}

/// One reading from device `<prefix>-0`, stored, so that selectors matching
/// it validate (the region refuses a selector that matches no known device).
async fn warm_up(c: &Cluster, prefix: &str, seed: u64) -> anyhow::Result<()> {
    run_fleet(Phase::new(prefix, 1, 1).fleet(c.mqtt_addrs(), seed, 0.0)).await?;
    let dev = format!("{prefix}-0");
    wait_until(
        &format!("{dev} stored"),
        Duration::from_secs(20),
        || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            n.contains_key(&dev).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zscore_monitor_from_the_api_alerts_on_an_injected_spike() -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 31;
    let c = Cluster::start(ClusterOpts {
        edges: 1,
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        // A selector is checked against the devices the region knows: one
        // reading from a device that matches `spk-*` first.
        warm_up(&c, "spk-w", seed).await?;

        let (sha, size) = monitors::upload(&c.api, REGION, sample_module("zscore")?).await?;
        // A bad spec is refused field by field, and nothing is stored.
        let mut bad = monitors::spec("zs", &sha, size, &["nobody-*"], json!({}), None);
        bad["resources"]["memory-mib"] = json!(0);
        let (status, body) = c
            .api
            .post(
                &format!("/api/v1/regions/{REGION}/monitors"),
                "application/json",
                serde_json::to_vec(&bad)?,
            )
            .await?;
        assert_eq!(status, 422, "{body}");
        let fields: Vec<&str> = body["error"]["fields"]
            .as_array()
            .context("fields")?
            .iter()
            .filter_map(|f| f["field"].as_str())
            .collect();
        assert!(fields.contains(&"resources.memory-mib"), "{body}");
        assert!(
            fields.iter().any(|f| f.starts_with("selector")),
            "a selector matching no device is refused: {body}"
        );
        // Unknown tenant, and resources above every node's capacity.
        let mut bad = monitors::spec("zs", &sha, size, &["spk-*"], json!({}), None);
        bad["tenant"] = json!("ghost");
        bad["selector"]["tenant"] = json!("ghost");
        let fields = refused_fields(&c, &bad).await?;
        assert!(fields.contains(&"tenant".to_owned()), "{fields:?}");
        let mut bad = monitors::spec("zs", &sha, size, &["spk-*"], json!({}), None);
        bad["resources"]["memory-mib"] = json!(1_000_000);
        let fields = refused_fields(&c, &bad).await?;
        assert!(
            fields.iter().any(|f| f.starts_with("resources")),
            "{fields:?}"
        );
        // A module that is not a valid monitor is refused at upload.
        let (status, body) = c
            .api
            .post(
                &format!("/api/v1/regions/{REGION}/artifacts"),
                "application/wasm",
                b"\0asm\x01\0\0\0garbage".to_vec(),
            )
            .await?;
        assert_eq!(status, 422, "{body}");
        assert_eq!(inspect(&c.api, REGION, "zs").await?.0, 404);

        let spec = monitors::spec(
            "zs",
            &sha,
            size,
            &["spk-*"],
            json!({"metrics": ["temperature"], "window": 40, "min-samples": 30}),
            None,
        );
        let doc = monitors::submit(&c.api, REGION, &spec).await?;
        let d = doc.get("monitor").unwrap_or(&doc);
        assert_eq!(d["edge"].as_str(), Some("edge-1"), "{doc}");
        let generation = d["spec"]["generation"].as_u64().context("generation")?;
        let t0 = Instant::now();
        wait_running(&c.api, REGION, "zs", generation, Duration::from_secs(30)).await?;
        println!("zscore monitor running {:?} after submit", t0.elapsed());

        // The region sees the edge's measured machine and its instances.
        let edge = wait_until(
            "edge resources reported",
            Duration::from_secs(20),
            || async {
                let (_, body) = c.api.get("/api/v1/edges").await.ok()?;
                let e = body["edges"][0].clone();
                (e["node"]["cpu-total-millicores"].as_u64()? >= 1000
                    && e["node"]["memory-total-bytes"].as_u64()? > 0
                    && e["node"]["process-rss-bytes"].as_u64()? > 0
                    && e["instances"].to_string().contains("\"zs\""))
                .then_some(e)
            },
        )
        .await?;
        assert_eq!(edge["monitor-reserved"]["memory-mib"], 16, "{edge}");

        // The same spec again changes nothing: same generation.
        let again = monitors::submit(&c.api, REGION, &spec).await?;
        let a = again.get("monitor").unwrap_or(&again);
        assert_eq!(a["spec"]["generation"].as_u64(), Some(generation));

        run_fleet(spiked("spk", seed + 1, &c)).await?;
        let alert = wait_until(
            "an anomaly alert for spk-3",
            Duration::from_secs(30),
            || async {
                let a = alerts(&c.api, "&device=spk-3").await.ok()?;
                a.into_iter()
                    .find(|a| a["code"].as_str() == Some("zscore.anomaly"))
            },
        )
        .await?;
        assert_eq!(alert["monitor"].as_str(), Some("zs"), "{alert}");
        assert_eq!(alert["edge"].as_str(), Some("edge-1"), "{alert}");
        assert!(
            matches!(alert["severity"].as_str(), Some("warning" | "critical")),
            "{alert}"
        );
        // No other device spiked, so no other device alerted.
        let all = alerts(&c.api, "&monitor=zs").await?;
        assert!(
            all.iter().all(|a| a["device"].as_str() == Some("spk-3")),
            "alerts on unspiked devices: {all:?}"
        );
        // The severity filter: nothing is above critical, info includes all.
        let crit = alerts(&c.api, "&severity=critical").await?;
        assert!(crit.len() <= all.len());
        let (status, body) = c.api.get("/api/v1/alerts?severity=fatal").await?;
        assert_eq!(status, 400, "{body}");

        // The list shows it with its status; delete removes it everywhere.
        let (status, list) = c
            .api
            .get(&format!("/api/v1/monitors?tenant={}", monitors::TENANT))
            .await?;
        assert_eq!(status, 200, "{list}");
        assert!(list.to_string().contains("\"zs\""), "{list}");
        let (status, body) = c
            .api
            .delete(&format!(
                "/api/v1/regions/{REGION}/monitors/{}/zs",
                monitors::TENANT
            ))
            .await?;
        assert_eq!(status, 200, "{body}");
        assert_eq!(inspect(&c.api, REGION, "zs").await?.0, 404);
        let edge_metrics = c.edge_metrics_addr(0)?;
        wait_until(
            "instance stopped on the edge",
            Duration::from_secs(20),
            || async {
                let v = c
                    .metric(&edge_metrics, "strata_monitor_instances_running")
                    .await
                    .ok()?;
                (v == 0.0).then_some(())
            },
        )
        .await?;
        Ok(())
    }
    .await;
    c.finish(r)
}

/// A module whose every callback burns ~40 M fuel (a few ms; its budget at
/// 1000 millicores is 100 M fuel and 100 ms): with one record per callback
/// it takes at most a few hundred records/s, far below what the devices send.
const SLOW_WAT: &str = r#"(module
  (memory (export "memory") 2)
  (global $top (mut i32) (i32.const 1024))
  (func (export "strata_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $top))
    (global.set $top (i32.add (global.get $top) (local.get $n)))
    (if (i32.gt_u (global.get $top) (i32.const 120000)) (then (global.set $top (i32.const 1024))))
    (local.get $p))
  (func (export "strata_abi_version") (result i32) (i32.const 1))
  (func (export "strata_init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "strata_on_batch") (param i32 i32) (result i32)
    (local $i i32)
    (local.set $i (i32.const 0))
    (block $done (loop $spin
      (br_if $done (i32.ge_u (local.get $i) (i32.const 5000000)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $spin)))
    (i32.const 0)))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_instance_drops_its_own_overflow_and_never_stalls_ingest() -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 32;
    let c = Cluster::start(ClusterOpts {
        edges: 1,
        edge_extra: "[monitors]\nqueue-records = 200\nmax-batch-records = 1\n".into(),
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        warm_up(&c, "slow-w", seed).await?;
        let module = wat::parse_str(SLOW_WAT)?;
        let (sha, size) = monitors::upload(&c.api, REGION, module).await?;
        let mut spec = monitors::spec("slow", &sha, size, &["slow-*"], json!({}), None);
        spec["resources"]["cpu-millicores"] = json!(1000);
        let doc = monitors::submit(&c.api, REGION, &spec).await?;
        let d = doc.get("monitor").unwrap_or(&doc);
        let generation = d["spec"]["generation"].as_u64().context("generation")?;
        wait_running(&c.api, REGION, "slow", generation, Duration::from_secs(30)).await?;

        // 10 devices × 1500 readings as fast as the edge takes them, while
        // the instance handles one record per callback.
        let phase = Phase::new("slow", 10, 1500);
        let f = phase.fleet(c.mqtt_addrs(), seed + 1, 0.0);
        let t0 = Instant::now();
        let s = run_fleet(f).await?;
        println!(
            "ingest with a slow instance: {} readings in {:?} ({:.0}/s)",
            s.acked,
            t0.elapsed(),
            s.acked as f64 / t0.elapsed().as_secs_f64()
        );
        // Every reading was accepted and stored: the slow instance cost
        // ingest nothing it could lose.
        wait_until("all readings stored", Duration::from_secs(60), || async {
            let n = c.api.device_counts(monitors::TENANT).await.ok()?;
            let total: u64 = n
                .iter()
                .filter(|(d, _)| d.starts_with("slow-") && !d.starts_with("slow-w"))
                .map(|(_, v)| *v)
                .sum();
            (total == phase.total()).then_some(())
        })
        .await?;
        // Its overflow is counted, not hidden: what it got plus what it
        // dropped is everything routed to it.
        let st = wait_until("overflow reported", Duration::from_secs(30), || async {
            let (_, doc) = inspect(&c.api, REGION, "slow").await.ok()?;
            let st = status_of(&doc)?.clone();
            let dropped = st["records-dropped"].as_u64()?;
            let got = st["records-in"].as_u64()?;
            // Memory is sampled every 2 s, so it may show up a little later.
            let measured = st["used-memory-bytes"].as_u64()? > 0;
            (dropped > 0 && got + dropped >= phase.total() && measured).then_some(st)
        })
        .await?;
        println!("slow instance: {st}");
        assert_eq!(st["state"].as_str(), Some("running"), "{st}");
        let dropped_metric = c
            .metric(
                &c.edge_metrics_addr(0)?,
                "strata_monitor_records_dropped_total{tenant=\"acme\",monitor=\"slow\"}",
            )
            .await?;
        assert!(dropped_metric > 0.0, "drop counter exported");
        Ok(())
    }
    .await;
    c.finish(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_reboot_with_no_hub_runs_its_monitors_from_disk() -> anyhow::Result<()> {
    let _g = serial().await;
    let seed = 33;
    let mut c = Cluster::start(ClusterOpts {
        edges: 1,
        ..ClusterOpts::default()
    })
    .await?;
    let r = async {
        warm_up(&c, "off-w", seed).await?;
        // Submitted with the CLI, as a user would: it uploads the module and
        // fills in the spec's artifact.
        let http = c.central.ready_field("http").context("central http")?;
        let token = c.operator_token()?;
        let spec_path = c.root().join("zs-off.toml");
        std::fs::write(&spec_path, ZS_OFF_TOML)?;
        let module = monitors::sample_module_path("zscore")?;
        let out = monitors::cli(
            &http,
            &token,
            &[
                "monitor",
                "submit",
                "--region",
                REGION,
                "--module",
                &module.display().to_string(),
                "--json",
                &spec_path.display().to_string(),
            ],
        )
        .await?;
        let doc: serde_json::Value = serde_json::from_str(&out).context(out.clone())?;
        let d = doc.get("monitor").unwrap_or(&doc);
        // The stored spec, as JSON, for the update below.
        let spec = d["spec"].clone();
        let generation = d["spec"]["generation"].as_u64().context("generation")?;
        wait_running(
            &c.api,
            REGION,
            "zs-off",
            generation,
            Duration::from_secs(30),
        )
        .await?;

        // Every hub goes away, then the edge is SIGKILLed and restarted.
        for h in c.hubs.iter_mut() {
            h.kill().await;
        }
        c.edges[0].kill().await;
        let started = Instant::now();
        c.edges[0].start().await?;
        let metrics = c.edge_metrics_addr(0)?;
        wait_until(
            "monitor running again, offline",
            Duration::from_secs(5),
            || async {
                let v = c
                    .metric(&metrics, "strata_monitor_instances_running")
                    .await
                    .ok()?;
                (v >= 1.0).then_some(())
            },
        )
        .await
        .context("workloads must run within 5 s of process start with no hub")?;
        let offline_start = started.elapsed();
        println!("monitor running {offline_start:?} after edge process start, no hub reachable");
        let starts_offline = c.metric(&metrics, "strata_monitor_starts_total").await?;

        // Offline, the devices spike; the alert waits in the spool.
        let mut f = Phase::new("off", 4, 120).fleet(c.mqtt_addrs(), seed + 1, 0.0);
        f.anomalies = vec![
            "spike:devices=2,start=80,duration=1,metric=temperature,magnitude=40"
                .parse()
                .unwrap(),
        ];
        run_fleet(f).await?;
        wait_until("the alert is spooled", Duration::from_secs(10), || async {
            let v = c
                .metric(&metrics, "strata_monitor_alerts_total")
                .await
                .ok()?;
            (v >= 1.0).then_some(())
        })
        .await?;

        // The hubs return; the alert arrives, and reconciling with an
        // unchanged spec does not restart the healthy instance.
        for h in c.hubs.iter_mut() {
            h.start().await?;
        }
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let found = wait_until(
            "offline alert delivered",
            Duration::from_secs(40),
            || async {
                let a = alerts(&c.api, "&device=off-2&monitor=zs-off").await.ok()?;
                (!a.is_empty()).then_some(a)
            },
        )
        .await?;
        println!("offline alert: {}", found[0]);
        let table = monitors::cli(
            &http,
            &token,
            &["alerts", "--tenant", "acme", "--device", "off-2"],
        )
        .await?;
        assert!(table.contains("zs-off"), "strata alerts table:\n{table}");
        let list = monitors::cli(&http, &token, &["monitor", "list", "--tenant", "acme"]).await?;
        assert!(
            list.contains("zs-off") && list.contains("edge-1"),
            "strata monitor list:\n{list}"
        );
        let st = wait_running(
            &c.api,
            REGION,
            "zs-off",
            generation,
            Duration::from_secs(30),
        )
        .await?;
        assert_eq!(st["restarts"].as_u64(), Some(0), "{st}");
        let starts_after = c.metric(&metrics, "strata_monitor_starts_total").await?;
        assert_eq!(
            starts_after, starts_offline,
            "reconcile with the same generation restarted a healthy instance"
        );

        // A changed spec (new generation) is applied: exactly one restart.
        let mut changed = spec.clone();
        changed["params"] =
            json!(r#"{"metrics":["temperature"],"window":40,"min-samples":30,"threshold":5.0}"#);
        let doc = monitors::submit(&c.api, REGION, &changed).await?;
        let d = doc.get("monitor").unwrap_or(&doc);
        let g2 = d["spec"]["generation"].as_u64().context("generation")?;
        assert_eq!(g2, generation + 1, "{doc}");
        wait_running(&c.api, REGION, "zs-off", g2, Duration::from_secs(30)).await?;
        let starts_changed = c.metric(&metrics, "strata_monitor_starts_total").await?;
        assert_eq!(starts_changed, starts_after + 1.0);
        Ok(())
    }
    .await;
    c.finish(r)
}
