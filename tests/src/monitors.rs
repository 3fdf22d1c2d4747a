//! Device-monitor helpers for the multi-process tests: the sample modules
//! built by `monitors/build.sh`, submitting through central's API, and
//! waiting for an instance or an alert.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::cluster::Api;
use crate::wait::wait_until;

/// Tenant the fleets in these tests use (same as [`crate::fleet`]).
pub const TENANT: &str = crate::fleet::TENANT;

/// Where the built sample monitor `name` is.
pub fn sample_module_path(name: &str) -> anyhow::Result<PathBuf> {
    let bin = crate::proc::bin_path("edge-node")?;
    // target/<profile>/edge-node → target/monitors/wasm/<name>.wasm
    Ok(bin
        .parent()
        .and_then(|d| d.parent())
        .context("target dir")?
        .join("monitors/wasm")
        .join(format!("{name}.wasm")))
}

/// The built sample monitor `name` (`zscore`, `threshold`, …).
pub fn sample_module(name: &str) -> anyhow::Result<Vec<u8>> {
    let p = sample_module_path(name)?;
    std::fs::read(&p).with_context(|| {
        format!(
            "sample monitor {} missing: build it with monitors/build.sh (./scripts/test does)",
            p.display()
        )
    })
}

/// Uploads a module to `region`; returns its sha256 and size.
pub async fn upload(api: &Api, region: &str, bytes: Vec<u8>) -> anyhow::Result<(String, u64)> {
    let size = bytes.len() as u64;
    let (status, body) = api
        .post(
            &format!("/api/v1/regions/{region}/artifacts"),
            "application/wasm",
            bytes,
        )
        .await?;
    anyhow::ensure!(
        status == 201 || status == 200,
        "artifact upload: {status} {body}"
    );
    let sha = body["sha256"].as_str().context("sha256 in answer")?;
    Ok((sha.to_owned(), size))
}

/// A monitor spec as JSON.
pub fn spec(
    name: &str,
    sha256: &str,
    size: u64,
    globs: &[&str],
    params: Value,
    target: Option<&str>,
) -> Value {
    let mut s = json!({
        "name": name,
        "tenant": TENANT,
        "runtime": "wasm",
        "artifact": { "sha256": sha256, "size-bytes": size },
        "selector": { "tenant": TENANT, "device-globs": globs },
        "params": params,
        "resources": { "memory-mib": 16, "cpu-millicores": 100 },
        "restart": { "mode": "on-failure", "initial-backoff-ms": 200, "max-backoff-ms": 2000 },
    });
    if let Some(node) = target {
        s["target"] = json!({ "node": node });
    }
    s
}

/// Submits a spec to `region`; returns the stored monitor document.
pub async fn submit(api: &Api, region: &str, spec: &Value) -> anyhow::Result<Value> {
    let (status, body) = api
        .post(
            &format!("/api/v1/regions/{region}/monitors"),
            "application/json",
            serde_json::to_vec(spec)?,
        )
        .await?;
    anyhow::ensure!(
        status == 201 || status == 200,
        "monitor submit: {status} {body}"
    );
    Ok(body)
}

/// The monitor document as central shows it.
pub async fn inspect(api: &Api, region: &str, name: &str) -> anyhow::Result<(u16, Value)> {
    api.get(&format!(
        "/api/v1/regions/{region}/monitors/{TENANT}/{name}"
    ))
    .await
}

/// The instance status object inside a monitor document (wherever the view
/// nests it).
pub fn status_of(doc: &Value) -> Option<&Value> {
    let d = doc.get("monitor").unwrap_or(doc);
    d.get("status").filter(|s| s.is_object())
}

/// Waits until the edge reports the instance `running` at `generation`.
pub async fn wait_running(
    api: &Api,
    region: &str,
    name: &str,
    generation: u64,
    timeout: Duration,
) -> anyhow::Result<Value> {
    wait_until(
        &format!("monitor {name} running at generation {generation}"),
        timeout,
        || async {
            let (status, doc) = inspect(api, region, name).await.ok()?;
            let st = status_of(&doc)?;
            (status == 200
                && st["state"].as_str() == Some("running")
                && st["generation"].as_u64() == Some(generation))
            .then(|| st.clone())
        },
    )
    .await
}

/// Alerts of the test tenant matching `query` (extra query string).
pub async fn alerts(api: &Api, query: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = api
        .get(&format!("/api/v1/alerts?tenant={TENANT}&from=0{query}"))
        .await?;
    anyhow::ensure!(status == 200, "alerts: {status} {body}");
    Ok(body["alerts"].as_array().cloned().unwrap_or_default())
}

/// Runs the `strata` CLI against the cluster's central, with its operator
/// `token` in the child's `$STRATA_TOKEN`; returns stdout, or fails with
/// stderr.
pub async fn cli(central_http: &str, token: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(crate::proc::bin_path("strata")?)
        .args(args)
        .args(["--api", central_http])
        .env("STRATA_TOKEN", token)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "strata {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
