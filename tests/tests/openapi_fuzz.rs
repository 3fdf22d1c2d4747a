//! Central's API answers as its OpenAPI document says, on a live cluster:
//! schemathesis (from PyPI) generates requests from `/api/v1/openapi.json`
//! (fetched with the operator token)
//! — valid ones and, per parameter, invalid ones — sends them to a running
//! central over two regions with devices and a monitor, and checks every
//! answer: no 5xx, a documented status, the documented content type and
//! body schema, invalid input refused (see
//! `tests/schemathesis/schemathesis.toml` for the few exclusions and why).
//!
//! Needs `schemathesis` on PATH. Without it the test says so and passes,
//! unless `STRATA_REQUIRE_SCHEMATHESIS` is set (CI sets it: `.ci/run`
//! installs schemathesis), where a missing fuzzer fails the run.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use strata_tests::cluster::serial;
use strata_tests::fleet::{run_fleet, Phase};
use strata_tests::{wait_until, Cluster, ClusterOpts};

/// The fuzzer's own seed: fixed, so a failure replays (schemathesis prints
/// it, and `st replay <id>` reproduces a case).
const SEED: &str = "20261206";

fn schemathesis() -> Option<String> {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then(|| "schemathesis".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_answers_as_its_openapi_document_says_under_a_fuzzer() -> anyhow::Result<()> {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("STRATA_REQUIRE_SCHEMATHESIS").is_none(),
            "STRATA_REQUIRE_SCHEMATHESIS is set but `schemathesis` is not on PATH \
             (pip install schemathesis)"
        );
        println!("SKIPPED: `schemathesis` is not on PATH (pip install schemathesis)");
        return Ok(());
    };
    let _serial = serial().await;
    let mut c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 2,
        region: "north".into(),
        second_region: Some("south".into()),
        ..ClusterOpts::default()
    })
    .await?;
    let result = run(&mut c, &st).await;
    c.finish(result)
}

async fn run(c: &mut Cluster, st: &str) -> anyhow::Result<()> {
    // Something to read: devices with telemetry in north.
    run_fleet(Phase::new("fz", 4, 5).fleet(c.mqtt_addrs(), 1, 0.0)).await?;
    wait_until("telemetry stored", Duration::from_secs(30), || async {
        let (status, body) = c.api.get("/api/v1/devices").await.ok()?;
        (status == 200 && body["devices"].as_array().is_some_and(|d| !d.is_empty())).then_some(())
    })
    .await?;
    let http = c.central_metrics_addr()?;
    let token = c.operator_token()?;
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemathesis/schemathesis.toml"
    );
    let report = c.root().join("schemathesis");
    // The document needs the token like every /api/v1 read: fetch it as a
    // client would and hand schemathesis the file and the base URL.
    let (status, document) = c.api.get("/api/v1/openapi.json").await?;
    anyhow::ensure!(status == 200, "GET /api/v1/openapi.json answered {status}");
    let doc_file = c.root().join("openapi.json");
    std::fs::write(&doc_file, serde_json::to_vec(&document)?)?;
    let out = tokio::process::Command::new(st)
        .args(["--no-color", "--config-file", config, "run"])
        .arg(&doc_file)
        .args(["--url", &format!("http://{http}")])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--seed", SEED, "--max-examples", "40", "--workers", "2"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "40"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        // Its caches (.hypothesis) go to the cluster's scratch directory.
        .current_dir(c.root())
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(
        out.status.success(),
        "schemathesis found answers that break the document (exit {}); see above",
        out.status
    );
    // It tested the operations, not nothing (a document it could not load
    // exits 0 with no tests on some versions).
    anyhow::ensure!(
        text.contains("passed") && !text.contains("Tested: 0"),
        "schemathesis ran no tests:\n{text}"
    );
    Ok(())
}
