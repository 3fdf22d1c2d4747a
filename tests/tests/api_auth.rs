//! Central's API against the real `central` binary: without the operator
//! token, or with a wrong one, every read and write is refused with 401 and
//! the JSON error body, and nothing happens; a monitor spec sent as
//! `text/plain` (what a web page can post cross-site) is refused with 415;
//! `/health` and `/metrics` stay open; the token file is 0600 in a 0700
//! directory; refusals are counted by reason.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::Value;
use strata_tests::cluster::{http_get_text, metric_value, scrape, serial};
use strata_tests::{Cluster, ClusterOpts};

/// Method, path and (Content-Type, body).
type Request<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);

/// Sends a request with an optional `Authorization` value and JSON or
/// other body; returns status, `WWW-Authenticate` and the JSON body.
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<(&str, &str)>,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let mut req = http.request(method.parse()?, format!("{base}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b.to_owned());
    }
    let r = req
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, challenge, r.json().await.unwrap_or(Value::Null)))
}

fn mode(p: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(p)
        .with_context(|| p.display().to_string())?
        .permissions()
        .mode()
        & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_operator_token() -> anyhow::Result<()> {
    let _g = serial().await;
    let c = Cluster::start(ClusterOpts {
        hubs: 1,
        edges: 1,
        ..Default::default()
    })
    .await?;
    let r = api_auth(&c).await;
    c.finish(r)
}

async fn api_auth(c: &Cluster) -> anyhow::Result<()> {
    let addr = c.central_metrics_addr()?;
    let base = format!("http://{addr}");
    let region = c.opts.region.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let token = c.operator_token()?;
    let good = format!("Bearer {token}");

    // The token file: 0600, in central's 0700 data dir.
    let file = c
        .central
        .ready_field("token-file")
        .context("ready line names the token file")?;
    let file = Path::new(&file);
    ensure!(mode(file)? == 0o600, "token file mode {:o}", mode(file)?);
    let dir = file.parent().context("token file has a directory")?;
    ensure!(mode(dir)? == 0o700, "data dir mode {:o}", mode(dir)?);
    ensure!(
        token.len() >= 64,
        "a 256-bit token, hex: {} chars",
        token.len()
    );

    let replica = r#"{"id":9,"peer-addr":"127.0.0.1:1","client-addr":"127.0.0.1:2"}"#;
    let spec = r#"{"name":"m","tenant":"acme"}"#;
    let regions = format!("/api/v1/regions/{region}");
    let replicas = format!("/api/v1/regions/{region}/replicas");
    let monitors = format!("/api/v1/regions/{region}/monitors");
    let monitor = format!("/api/v1/regions/{region}/monitors/acme/m");
    let replica_1 = format!("/api/v1/regions/{region}/replicas/1");
    let json = Some(("application/json", replica));
    let requests: Vec<Request> = vec![
        ("GET", "/api/v1/regions", None),
        ("GET", &regions, None),
        ("GET", "/api/v1/edges", None),
        ("GET", "/api/v1/devices", None),
        ("GET", "/api/v1/telemetry/acme/dev-0", None),
        ("GET", "/api/v1/monitors", None),
        ("GET", "/api/v1/alerts", None),
        ("GET", &monitor, None),
        ("POST", &replicas, json),
        ("DELETE", &replica_1, None),
        ("POST", &monitors, Some(("application/json", spec))),
        ("DELETE", &monitor, None),
    ];
    let before = scrape(&addr).await?;
    let count = |text: &str, reason: &str| {
        metric_value(
            text,
            &format!("strata_central_auth_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    for (method, path, body) in &requests {
        for auth in [None, Some("Bearer wrong-token"), Some("Basic b3A6cHc=")] {
            let (status, challenge, resp) = call(&http, &base, method, path, auth, *body).await?;
            let what = format!("{method} {path} with {auth:?}");
            ensure!(status == 401, "{what}: {status} {resp}");
            ensure!(
                resp["error"]["code"] == "unauthorized"
                    && resp["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                "{what}: body {resp}"
            );
            ensure!(
                challenge
                    .as_deref()
                    .is_some_and(|c| c.starts_with("Bearer")),
                "{what}: WWW-Authenticate {challenge:?}"
            );
        }
    }
    let after = scrape(&addr).await?;
    let n = requests.len() as f64;
    for reason in ["missing", "bad-token", "malformed"] {
        let counted = count(&after, reason) - count(&before, reason);
        ensure!(counted == n, "{reason}: counted {counted}, want {n}");
    }
    // Nothing happened: still one voter, and no monitor.
    let (status, _, body) = call(&http, &base, "GET", &regions, Some(&good), None).await?;
    ensure!(
        status == 200,
        "GET {regions} with the token: {status} {body}"
    );
    let voters = body["replicas"]
        .as_array()
        .context("replicas")?
        .iter()
        .filter(|r| r["reachable"] == true)
        .count();
    ensure!(voters == 1, "one replica, got {body}");

    // A spec as text/plain, with the token: 415 before the handler.
    let text = Some(("text/plain", spec));
    let (status, _, body) = call(&http, &base, "POST", &monitors, Some(&good), text).await?;
    ensure!(
        status == 415 && body["error"]["code"] == "unsupported-media-type",
        "text/plain spec: {status} {body}"
    );
    let form = Some(("application/x-www-form-urlencoded", spec));
    let (status, _, body) = call(&http, &base, "POST", &monitors, Some(&good), form).await?;
    ensure!(status == 415, "form spec: {status} {body}");
    let (status, _, body) =
        call(&http, &base, "GET", "/api/v1/monitors", Some(&good), None).await?;
    ensure!(
        status == 200 && body["monitors"].as_array().is_some_and(Vec::is_empty),
        "no monitor was created: {status} {body}"
    );

    // Open without a token.
    let (status, _, body) = http_get_text(&addr, "/health").await?;
    ensure!(status == 200, "/health: {status} {body}");
    let (status, _, _) = http_get_text(&addr, "/metrics").await?;
    ensure!(status == 200, "/metrics: {status}");
    Ok(())
}
