//! The global tier end to end, with real processes: two regions (north and
//! south, one hub and two edges each) under one central. Devices of tenant
//! acme report through both regions (6 through north, 2 through south); a
//! global workload with `locality = "devices"` is split 3 : 1 by central and
//! each region runs its share as a monitor with that count. Bad global
//! workloads get a 4xx naming the problem and change nothing. Killing every
//! hub of south: its share is held (marked, not doubled in north) while
//! south is unreachable, and south runs it again once its hub is back.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use strata_tests::cluster::serial;
use strata_tests::fleet::{run_fleet, Phase, TENANT};
use strata_tests::monitors::{cli, sample_module};
use strata_tests::{wait_until, Cluster, ClusterOpts};

fn workload(count: u32, extra: Value) -> Value {
    let mut w = json!({
        "name": "overheat-global",
        "tenant": TENANT,
        "runtime": "wasm",
        "selector": { "tenant": TENANT, "device-globs": ["*"] },
        "params": { "metrics": ["v"], "above": 1.0e9 },
        "resources": { "memory-mib": 16, "cpu-millicores": 50 },
        "global": { "count": count, "locality": "devices" },
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            w[k] = v;
        }
    }
    w
}

/// Each region's monitor count of the workload (0 when it has none).
async fn regional_counts(c: &Cluster) -> anyhow::Result<(u64, u64)> {
    let (s, v) = c.api.get("/api/v1/monitors").await?;
    anyhow::ensure!(s == 200, "monitors: {s} {v}");
    let count = |region: &str| {
        v["monitors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["region"] == region && m["spec"]["name"] == "overheat-global")
            .filter_map(|m| m["spec"]["placement"]["count"].as_u64())
            .sum::<u64>()
    };
    Ok((count("north"), count("south")))
}

async fn split(c: &Cluster) -> anyhow::Result<Value> {
    let (s, v) = c
        .api
        .get(&format!("/api/v1/workloads/{TENANT}/overheat-global"))
        .await?;
    anyhow::ensure!(s == 200, "workload: {s} {v}");
    Ok(v)
}

fn share(w: &Value, region: &str) -> u64 {
    w["split"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["region"] == region)
        .and_then(|s| s["instances"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_workloads_split_by_locality_and_a_dead_region_is_not_doubled() -> anyhow::Result<()>
{
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 2,
        region: "north".into(),
        second_region: Some("south".into()),
        ..ClusterOpts::default()
    })
    .await?;
    let result = run(&mut c).await;
    c.finish(result)
}

async fn run(c: &mut Cluster) -> anyhow::Result<()> {
    // Devices report through both regions: 6 through north, 2 through south.
    let north = c.mqtt_addrs();
    let south: Vec<String> = c
        .second
        .as_ref()
        .unwrap()
        .edges
        .iter()
        .filter_map(|e| e.ready_field("mqtt"))
        .collect();
    run_fleet(Phase::new("n", 6, 5).fleet(north, 1, 0.0)).await?;
    run_fleet(Phase::new("s", 2, 5).fleet(south, 2, 0.0)).await?;

    // The module, stored in every region at once.
    let module = sample_module("threshold")?;
    let size = module.len();
    let (s, v) = c
        .api
        .post("/api/v1/artifacts", "application/wasm", module)
        .await?;
    anyhow::ensure!(s == 201, "artifacts: {s} {v}");
    let sha = v["sha256"].as_str().context("sha256")?.to_owned();
    let artifact = json!({ "artifact": { "sha256": sha, "size-bytes": size } });

    // Bad input: a 4xx naming the problem, and nothing stored.
    let post = |w: Value| {
        let api = c.api.clone();
        async move {
            api.post(
                "/api/v1/workloads",
                "application/json",
                serde_json::to_vec(&w).unwrap(),
            )
            .await
        }
    };
    let mut bad = workload(0, artifact.clone());
    bad["global"]["regions"] = json!([{ "region": "east", "hard": true }]);
    let (s, v) = post(bad).await?;
    assert_eq!(s, 422, "{v}");
    let fields: Vec<String> = v["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{} {}", f["field"], f["message"]))
        .collect();
    assert!(
        fields.iter().any(|f| f.contains("global.count")),
        "{fields:?}"
    );
    assert!(fields.iter().any(|f| f.contains("east")), "{fields:?}");
    let mut huge = workload(2, artifact.clone());
    huge["global"]["size"] = json!({ "cpu-millicores": 1_000_000, "memory-bytes": 1 });
    // Summaries take a round to arrive; until then nothing fits either.
    wait_until(
        "a huge workload refused as fitting no region",
        Duration::from_secs(20),
        || {
            let huge = huge.clone();
            async {
                let (s, v) = post(huge).await.ok()?;
                (s == 422 && v["error"]["code"] == "fits-no-region").then_some(())
            }
        },
    )
    .await?;
    let (_, list) = c.api.get("/api/v1/workloads").await?;
    assert_eq!(
        list["workloads"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // Split by where the devices report: 3 in north, 1 in south.
    wait_until(
        "the region summaries to carry device locality",
        Duration::from_secs(20),
        || async {
            let (s, v) = post(workload(4, artifact.clone())).await.ok()?;
            (s == 201 || s == 200).then_some(v)
        },
    )
    .await?;
    wait_until(
        "each region to run its share",
        Duration::from_secs(30),
        || async {
            let counts = regional_counts(c).await.ok()?;
            (counts == (3, 1)).then_some(())
        },
    )
    .await?;
    let w = split(c).await?;
    assert_eq!((share(&w, "north"), share(&w, "south")), (3, 1), "{w}");
    // Once the regions run their shares, the reconciler has nothing left
    // to submit (it does not resubmit every round).
    let metrics = c.central_metrics_addr()?;
    let submits = r#"strata_central_global_actions_total{kind="submit",outcome="ok"}"#;
    // The last submit's region can show its count before the driver's call
    // returns and counts it: let that round finish first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = c.metric(&metrics, submits).await?;
    assert!(before >= 2.0, "{before} submits");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        c.metric(&metrics, submits).await?,
        before,
        "resubmitted while stable"
    );
    // The CLI shows the same, from the typed API.
    let http = c.central.ready_field("http").context("central http")?;
    let token = c.operator_token()?;
    let table = cli(&http, &token, &["workloads"]).await?;
    assert!(table.contains("north:3 south:1"), "{table}");
    let table = cli(&http, &token, &["regions"]).await?;
    assert!(
        table.contains("north") && table.contains("south"),
        "{table}"
    );

    // Every hub of south dies. Its share is held, never doubled in north.
    for h in &mut c.second.as_mut().unwrap().hubs {
        h.kill().await;
    }
    let killed = Instant::now();
    // 30 s without a summary makes south unknown; watch past that.
    while killed.elapsed() < Duration::from_secs(40) {
        let w = split(c).await?;
        assert_eq!(share(&w, "south"), 1, "south's share moved: {w}");
        assert_eq!(share(&w, "north"), 3, "north doubled: {w}");
        if let Ok((n, _)) = regional_counts(c).await {
            assert!(n <= 3, "north runs {n} instances");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let w = split(c).await?;
    assert_eq!(w["held-by-unreachable"].as_u64(), Some(1), "{w}");
    // South is back: it still runs its one.
    for h in &mut c.second.as_mut().unwrap().hubs {
        h.start().await?;
    }
    wait_until(
        "south's share to run again",
        Duration::from_secs(40),
        || async {
            let counts = regional_counts(c).await.ok()?;
            (counts == (3, 1)).then_some(())
        },
    )
    .await?;
    // Delete: both regions drop it, then central forgets it.
    let (s, v) = c
        .api
        .delete(&format!("/api/v1/workloads/{TENANT}/overheat-global"))
        .await?;
    assert_eq!(s, 200, "{v}");
    wait_until(
        "the workload to be gone everywhere",
        Duration::from_secs(30),
        || async {
            let counts = regional_counts(c).await.ok()?;
            let (s, _) = c
                .api
                .get(&format!("/api/v1/workloads/{TENANT}/overheat-global"))
                .await
                .ok()?;
            (counts == (0, 0) && s == 404).then_some(())
        },
    )
    .await?;
    Ok(())
}

/// The autoscaled workload's count, and how many instances its region's
/// monitor asks for.
async fn scaled(c: &Cluster) -> anyhow::Result<(u64, u64)> {
    let w = split(c).await?;
    let (n, _) = regional_counts(c).await?;
    Ok((w["scaled"].as_u64().unwrap_or(0), n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_scales_a_global_workload_up_within_30s_and_the_quiet_scales_it_down(
) -> anyhow::Result<()> {
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 4,
        region: "north".into(),
        ..ClusterOpts::default()
    })
    .await?;
    let result = surge(&mut c).await;
    c.finish(result)
}

async fn surge(c: &mut Cluster) -> anyhow::Result<()> {
    let module = sample_module("threshold")?;
    let size = module.len();
    let (s, v) = c
        .api
        .post("/api/v1/artifacts", "application/wasm", module)
        .await?;
    anyhow::ensure!(s == 201, "artifacts: {s} {v}");
    let sha = v["sha256"].as_str().context("sha256")?.to_owned();
    // A steady 2 readings/s through each of the four edges (8 devices at
    // 1/s) for the whole test: below the target of 4 per instance.
    let steady = tokio::spawn(run_fleet(Phase::new("steady", 8, 150).fleet(
        c.mqtt_addrs(),
        3,
        1.0,
    )));
    let mut w = workload(
        1,
        json!({ "artifact": { "sha256": sha, "size-bytes": size } }),
    );
    w["global"] = json!({ "count": 1 });
    w["scale"] = json!({
        "min": 1, "max": 4, "metric": "records-per-second", "target": 4.0,
        "scale-down-window": "10s"
    });
    wait_until(
        "the autoscaled workload to be accepted",
        Duration::from_secs(20),
        || {
            let w = w.clone();
            let api = c.api.clone();
            async move {
                let (s, _) = api
                    .post(
                        "/api/v1/workloads",
                        "application/json",
                        serde_json::to_vec(&w).unwrap(),
                    )
                    .await
                    .ok()?;
                (s == 201 || s == 200).then_some(())
            }
        },
    )
    .await?;
    wait_until(
        "one instance running steady",
        Duration::from_secs(30),
        || async { (scaled(c).await.ok()? == (1, 1)).then_some(()) },
    )
    .await?;
    // Stays at 1 under the steady load (a few rounds of samples).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(scaled(c).await?.0, 1, "{}", split(c).await?);

    // A 5× surge for 30 s: 8 more devices at 4/s (8/s more per edge).
    let started = Instant::now();
    let surge = tokio::spawn(run_fleet(Phase::new("surge", 8, 120).fleet(
        c.mqtt_addrs(),
        4,
        4.0,
    )));
    let up = wait_until(
        "more instances for the surge",
        Duration::from_secs(30),
        || async {
            let (n, region) = scaled(c).await.ok()?;
            (n >= 2 && region >= 2).then_some(n)
        },
    )
    .await?;
    eprintln!(
        "scaled to {up} instances {:?} after the surge began",
        started.elapsed()
    );
    surge.await??;
    let quiet = Instant::now();
    let peak = scaled(c).await?.0;
    // The quiet scales it down, but only after the 10 s window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(scaled(c).await?.0, peak, "scaled down inside the window");
    let down = wait_until(
        "fewer instances after the quiet",
        Duration::from_secs(40),
        || async {
            let (n, _) = scaled(c).await.ok()?;
            (n < peak).then_some(n)
        },
    )
    .await?;
    eprintln!(
        "scaled down to {down} {:?} after the surge ended",
        quiet.elapsed()
    );
    // The decisions and their inputs, as the API and the CLI show them.
    let w = split(c).await?;
    let history = w["scale-history"].as_array().context("scale-history")?;
    assert!(history.iter().any(|d| d["reason"] == "surge"), "{w}");
    assert!(
        history
            .iter()
            .all(|d| d["total"].as_f64().is_some() && d["target"] == 4.0),
        "{w}"
    );
    let http = c.central.ready_field("http").context("central http")?;
    let table = cli(
        &http,
        &c.operator_token()?,
        &["scale-history", TENANT, "overheat-global"],
    )
    .await?;
    assert!(table.contains("surge"), "{table}");
    steady.abort();
    Ok(())
}
