//! Monitor, artifact and alert routes through `app(..).oneshot(req)` with
//! in-memory regions: status codes, JSON shapes, field errors (offline and
//! hub), body limits and the newest-first merge of alerts across regions.

use axum::http::StatusCode;
use serde_json::{json, Value};
use strata_protocol::workload::MAX_ARTIFACT_BYTES;
use strata_protocol::{AlertRecord, Severity};

use super::test_support::*;

const WASM: &[u8] = b"\0asm\x01\0\0\0";

/// A valid spec for tenant `acme` (a tenant of `west`) as JSON text.
fn spec_json(name: &str, sha: &str, memory: u32) -> String {
    json!({
        "name": name, "tenant": "acme",
        "artifact": {"sha256": sha, "size-bytes": WASM.len()},
        "selector": {"tenant": "acme", "device-globs": ["d*"]},
        "resources": {"memory-mib": memory, "cpu-millicores": 50},
        "params": {"threshold": 80.0}
    })
    .to_string()
}

fn spec_toml(name: &str, sha: &str) -> String {
    format!(
        r#"name = "{name}"
tenant = "acme"
target = {{ node = "west-edge-1" }}
params = '{{"z": 3.0}}'
[artifact]
sha256 = "{sha}"
size-bytes = {}
[selector]
tenant = "acme"
tags = {{ site = "plant-1" }}
[resources]
memory-mib = 16
cpu-millicores = 50
"#,
        WASM.len()
    )
}

/// Uploads [`WASM`] to `region`; returns its hash.
async fn upload(h: &Harness, region: &str) -> String {
    let (status, body) = send_raw(
        &h.state,
        "POST",
        &format!("/api/v1/regions/{region}/artifacts"),
        Some("application/wasm"),
        WASM.to_vec(),
    )
    .await;
    assert!(status.is_success(), "{body}");
    body["sha256"].as_str().unwrap().to_owned()
}

async fn submit(h: &Harness, region: &str, ct: Option<&str>, spec: &str) -> (StatusCode, Value) {
    send_raw(
        &h.state,
        "POST",
        &format!("/api/v1/regions/{region}/monitors"),
        ct,
        spec.as_bytes().to_vec(),
    )
    .await
}

/// Asserts a 422 `invalid-spec` body; returns its fields.
fn spec_error(status: StatusCode, body: &Value) -> Vec<String> {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid-spec", "{body}");
    body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(!f["message"].as_str().unwrap().is_empty(), "{f}");
            f["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn artifact_upload_created_then_existing() {
    let h = healthy();
    let url = "/api/v1/regions/west/artifacts";
    let (status, body) = send_raw(
        &h.state,
        "POST",
        url,
        Some("application/wasm"),
        WASM.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sha = Fake::fake_sha256(WASM);
    assert_eq!(
        body,
        json!({"region": "west", "sha256": sha, "size-bytes": 8, "created": true})
    );
    let (status, body) = send_raw(
        &h.state,
        "POST",
        url,
        Some("application/octet-stream"),
        WASM.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["created"], false);
    assert!(h.east.artifacts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn artifact_upload_errors() {
    let h = healthy();
    let url = "/api/v1/regions/west/artifacts";
    let (status, body) = send_raw(&h.state, "POST", url, None, vec![]).await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-body");
    assert!(msg.contains("empty"), "{msg}");
    // The hub's module validation: a 422 naming the field `artifact`.
    let (status, body) = send_raw(
        &h.state,
        "POST",
        url,
        Some("application/wasm"),
        b"MZ\x90\0".to_vec(),
    )
    .await;
    assert_eq!(spec_error(status, &body), vec!["artifact"]);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("region west"),
        "{body}"
    );
    let (status, body) = send_raw(
        &h.state,
        "POST",
        "/api/v1/regions/mars/artifacts",
        Some("application/wasm"),
        WASM.to_vec(),
    )
    .await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
    let h = harness(Fake::new("east", &[]).failing(down("east")));
    let (status, body) = send_raw(
        &h.state,
        "POST",
        "/api/v1/regions/east/artifacts",
        Some("application/wasm"),
        WASM.to_vec(),
    )
    .await;
    error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "region-unreachable",
    );
}

#[tokio::test]
async fn artifact_body_limit_is_the_protocol_maximum() {
    let h = healthy();
    let url = "/api/v1/regions/west/artifacts";
    // Exactly the maximum passes (well above axum's 2 MiB default) …
    let mut max = vec![0u8; MAX_ARTIFACT_BYTES as usize];
    max[..4].copy_from_slice(b"\0asm");
    let (status, body) =
        send_raw(&h.state, "POST", url, Some("application/wasm"), max.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["size-bytes"], MAX_ARTIFACT_BYTES);
    // … one byte more is a 413 with the JSON body, and never reaches the hub.
    max.push(0);
    let (status, body) = send_raw(&h.state, "POST", url, Some("application/wasm"), max).await;
    let msg = error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    );
    assert!(msg.contains("limit of 8388608 bytes (8 MiB)"), "{msg}");
    assert_eq!(h.west.writes.lock().unwrap().len(), 1);
    let (_, metrics) = get(&h.state, "/metrics").await;
    let line = r#"strata_central_http_requests_total{method="POST",route="/api/v1/regions/{region}/artifacts",status="413"} 1"#;
    assert!(metrics.as_str().unwrap().contains(line), "{metrics}");
}

#[tokio::test]
async fn submit_json_creates_then_updates_by_generation() {
    let h = healthy();
    let sha = upload(&h, "west").await;
    let (status, body) = submit(
        &h,
        "west",
        Some("application/json"),
        &spec_json("hot", &sha, 16),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (
            &body["region"],
            &body["tenant"],
            &body["name"],
            &body["edge"],
            &body["generation"],
            &body["created-ms"],
            &body["status"],
        ),
        (
            &json!("west"),
            &json!("acme"),
            &json!("hot"),
            &json!("west-edge-1"),
            &json!(1),
            &json!(NOW),
            &Value::Null
        )
    );
    // The spec is served as submitted (kebab-case, params as JSON text).
    assert_eq!(body["spec"]["resources"]["memory-mib"], 16);
    assert_eq!(body["spec"]["params"], r#"{"threshold":80.0}"#);
    assert_eq!(body["spec"]["target"], "least-loaded");

    // The same spec again: 200, generation unchanged.
    let (status, body) = submit(
        &h,
        "west",
        Some("application/json"),
        &spec_json("hot", &sha, 16),
    )
    .await;
    assert_eq!((status, &body["generation"]), (StatusCode::OK, &json!(1)));
    // A change: 200, next generation.
    let (status, body) = submit(
        &h,
        "west",
        Some("application/json"),
        &spec_json("hot", &sha, 32),
    )
    .await;
    assert_eq!((status, &body["generation"]), (StatusCode::OK, &json!(2)));
    assert_eq!(
        *h.west.writes.lock().unwrap(),
        vec![
            "put-artifact",
            "submit acme/hot",
            "submit acme/hot",
            "submit acme/hot"
        ]
    );
}

#[tokio::test]
async fn submit_takes_toml_or_json_by_content_type_and_nothing_else() {
    let h = healthy();
    let sha = upload(&h, "west").await;
    let (status, body) = submit(&h, "west", Some("application/toml"), &spec_toml("t1", &sha)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["target"], json!({"node": "west-edge-1"}));
    assert_eq!(body["spec"]["selector"]["tags"], json!({"site": "plant-1"}));
    let ct = Some("text/toml; charset=utf-8");
    let (status, _) = submit(&h, "west", ct, &spec_toml("t2", &sha)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = submit(
        &h,
        "west",
        Some("application/json"),
        &spec_json("t3", &sha, 16),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // What a web page can send cross-site without a preflight (a form,
    // text/plain, no type), and anything else, is refused before the
    // handler: nothing reaches the region.
    let writes = h.west.writes.lock().unwrap().len();
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("text/html"),
    ] {
        let (status, body) = submit(&h, "west", ct, &spec_json("t4", &sha, 16)).await;
        let msg = error(
            status,
            &body,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        );
        assert!(msg.contains("application/toml"), "{ct:?}: {msg}");
    }
    assert_eq!(h.west.writes.lock().unwrap().len(), writes);
}

#[tokio::test]
async fn submit_parse_errors_carry_line_and_column() {
    let h = healthy();
    let sha = Fake::fake_sha256(WASM);
    let bad_toml =
        spec_toml("t", &sha).replace("tenant = \"acme\"\ntarget", "tenant = acme\ntarget");
    let (status, body) = submit(&h, "west", Some("application/toml"), &bad_toml).await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-body");
    assert!(
        msg.contains("TOML") && msg.contains("line 2, column"),
        "{msg}"
    );

    let unknown = spec_toml("t", &sha).replace("[resources]", "priorty = 3\n[resources]");
    let (status, body) = submit(&h, "west", Some("application/toml"), &unknown).await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-body");
    assert!(msg.contains("unknown field `priorty`"), "{msg}");

    let json = spec_json("j", &sha, 16).replace("\"params\"", "\"parms\"");
    let (status, body) = submit(&h, "west", Some("application/json"), &json).await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-body");
    assert!(
        msg.contains("JSON")
            && msg.contains("unknown field `parms`")
            && msg.contains("line 1 column"),
        "{msg}"
    );
    let (status, body) = submit(&h, "west", Some("application/json"), "  ").await;
    error(status, &body, StatusCode::BAD_REQUEST, "invalid-body");
    let (status, body) = send_raw(
        &h.state,
        "POST",
        "/api/v1/regions/west/monitors",
        Some("application/toml"),
        vec![0xff, 0xfe],
    )
    .await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-body");
    assert!(msg.contains("UTF-8"), "{msg}");
    assert!(h.west.writes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn offline_field_errors_come_with_the_regions_in_one_answer() {
    // `east` knows no tenant `acme`: the answer lists the offline errors and
    // the region's at once, so one round trip shows every problem.
    let h = harness(Fake::new("east", &[("globex", "g1")]));
    let spec = spec_json("bad name", "ABC", 0);
    let (status, body) = submit(&h, "east", Some("application/json"), &spec).await;
    assert_eq!(
        spec_error(status, &body),
        vec![
            "name",
            "artifact.sha256",
            "resources.memory-mib",
            "tenant",
            "artifact.sha256"
        ]
    );
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("monitor acme/bad name: invalid monitor spec"),
        "{msg}"
    );
    assert!(h.east.monitors.lock().unwrap().is_empty(), "nothing stored");
}

#[tokio::test]
async fn offline_field_errors_are_422_when_the_region_is_down() {
    let h = harness(Fake::new("east", &[("acme", "d2")]).failing(down("east")));
    let spec = spec_json("bad name", "ABC", 0);
    let (status, body) = submit(&h, "east", Some("application/json"), &spec).await;
    assert_eq!(
        spec_error(status, &body),
        vec!["name", "artifact.sha256", "resources.memory-mib"]
    );
}

#[tokio::test]
async fn hub_field_errors_are_422() {
    let h = harness(Fake::new("east", &[("globex", "g1")]));
    // `east` knows no tenant `acme` and has no artifacts.
    let spec = spec_json("m", &Fake::fake_sha256(WASM), 16);
    let (status, body) = submit(&h, "east", Some("application/json"), &spec).await;
    assert_eq!(spec_error(status, &body), vec!["tenant", "artifact.sha256"]);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("region east") && msg.contains("unknown tenant"),
        "{msg}"
    );
    let (status, body) = submit(&h, "mars", Some("application/json"), &spec).await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
}

#[tokio::test]
async fn list_inspect_delete() {
    let h = harness(Fake::new("east", &[("acme", "d2"), ("globex", "g")]));
    for region in ["west", "east"] {
        let sha = upload(&h, region).await;
        for name in ["b", "a"] {
            let ct = Some("application/json");
            let (status, body) = submit(&h, region, ct, &spec_json(name, &sha, 16)).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }
    let (status, body) = get(&h.state, "/api/v1/monitors").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<String> = body["monitors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}/{}",
                m["region"].as_str().unwrap(),
                m["tenant"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec!["west:acme/a", "west:acme/b", "east:acme/a", "east:acme/b"]
    );
    assert_eq!(
        (&body["stale"], &body["errors"]),
        (&json!(false), &json!([]))
    );
    let (_, body) = get(&h.state, "/api/v1/monitors?region=east&tenant=acme").await;
    assert_eq!(body["monitors"].as_array().unwrap().len(), 2);
    let (_, body) = get(&h.state, "/api/v1/monitors?tenant=globex").await;
    assert_eq!(body["monitors"], json!([]));
    let (status, body) = get(&h.state, "/api/v1/monitors?region=mars").await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
    let (status, body) = get(&h.state, "/api/v1/monitors?tenant=a&tennant=b").await;
    let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
    assert!(msg.contains("`tennant`"), "{msg}");

    let (status, body) = get(&h.state, "/api/v1/regions/east/monitors/acme/a").await;
    assert_eq!(
        (status, &body["name"], &body["region"]),
        (StatusCode::OK, &json!("a"), &json!("east"))
    );
    let (status, body) = get(&h.state, "/api/v1/regions/east/monitors/acme/zz").await;
    let msg = error(status, &body, StatusCode::NOT_FOUND, "unknown-monitor");
    assert_eq!(msg, "monitor acme/zz does not exist in region east");
    let (status, body) = get(&h.state, "/api/v1/regions/mars/monitors/acme/a").await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");

    let url = "/api/v1/regions/east/monitors/acme/a";
    let (status, body) = send(&h.state, "DELETE", url, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"deleted": true, "region": "east", "tenant": "acme", "name": "a"})
    );
    let (status, body) = send(&h.state, "DELETE", url, None).await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-monitor");
    let (status, body) = send(
        &h.state,
        "DELETE",
        "/api/v1/regions/mars/monitors/acme/a",
        None,
    )
    .await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");
    let (status, body) = send(&h.state, "PUT", url, None).await;
    error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
    );
}

#[tokio::test]
async fn list_with_a_region_down_reports_it() {
    let h = harness(Fake::new("east", &[]).failing(down("east")));
    let (status, body) = get(&h.state, "/api/v1/monitors").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["errors"][0]["region"], "east");
    let (status, body) = get(&h.state, "/api/v1/regions/east/monitors/acme/a").await;
    error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "region-unreachable",
    );
}

fn alert(tenant: &str, ts_ms: i64, severity: Severity) -> AlertRecord {
    AlertRecord {
        tenant: tenant.into(),
        device: "d1".into(),
        monitor: "z".into(),
        edge: "e1".into(),
        severity,
        code: "anomaly".into(),
        message: format!("at {ts_ms}"),
        ts_ms,
    }
}

#[tokio::test]
async fn alerts_merge_newest_first_across_regions() {
    let mut west = Fake::new("west", &[("acme", "d1")]);
    west.alerts = vec![
        alert("acme", NOW - 10, Severity::Critical),
        alert("acme", NOW - 30, Severity::Warning),
        alert("acme", NOW - 50, Severity::Info),
    ];
    let mut east = Fake::new("east", &[("acme", "d2")]);
    east.alerts = vec![
        alert("acme", NOW - 20, Severity::Critical),
        alert("acme", NOW - 30, Severity::Critical),
    ];
    let h = harness2(west, east);
    let (status, body) = get(&h.state, "/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order: Vec<(String, i64)> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["region"].as_str().unwrap().to_owned(),
                NOW - a["ts-ms"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("west", 10),
        ("east", 20),
        ("west", 30),
        ("east", 30),
        ("west", 50),
    ]
    .into_iter()
    .map(|(r, t)| (r.to_owned(), t))
    .collect();
    assert_eq!(order, want);
    assert_eq!(
        body["alerts"][0],
        json!({"region": "west", "ts-ms": NOW - 10, "severity": "critical", "tenant": "acme",
               "device": "d1", "monitor": "z", "edge": "e1", "code": "anomaly",
               "message": format!("at {}", NOW - 10)})
    );
    assert_eq!(
        (
            &body["count"],
            &body["truncated"],
            &body["from-ms"],
            &body["to-ms"]
        ),
        (
            &json!(5),
            &json!(false),
            &json!(NOW - 3_600_000),
            &json!(NOW + 60_000)
        )
    );

    // The limit applies to the merged answer.
    let (_, body) = get(
        &h.state,
        "/api/v1/alerts?limit=2&severity=warning&tenant=acme&device=d1&monitor=z&from=1000&to=2000",
    )
    .await;
    assert_eq!(
        (&body["count"], &body["truncated"]),
        (&json!(2), &json!(true))
    );
    let q = h
        .east
        .alert_queries
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (
            q.tenant.as_deref(),
            q.device.as_deref(),
            q.monitor.as_deref(),
            q.min_severity
        ),
        (Some("acme"), Some("d1"), Some("z"), Some(Severity::Warning))
    );
    assert_eq!((q.from_ms, q.to_ms, q.limit), (1000, 2000, 2));

    let (_, body) = get(&h.state, "/api/v1/alerts?region=east").await;
    assert_eq!(body["count"], 2);
}

#[tokio::test]
async fn alerts_reject_bad_params_and_report_down_regions() {
    let h = healthy();
    for (query, param) in [
        ("severity=fatal", "`severity`"),
        ("from=2000&to=1000", "`from`"),
        ("limit=0", "`limit`"),
        ("limit=10001", "`limit`"),
        ("tenant=", "`tenant`"),
        ("sevrity=info", "`sevrity`"),
    ] {
        let (status, body) = get(&h.state, &format!("/api/v1/alerts?{query}")).await;
        let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
        assert!(msg.contains(param), "{query}: {msg}");
    }
    let (status, body) = get(&h.state, "/api/v1/alerts?region=mars").await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-region");

    let mut west = Fake::new("west", &[]);
    west.alerts = vec![alert("acme", NOW, Severity::Info)];
    let h = harness2(west, Fake::new("east", &[]).failing(down("east")));
    let (status, body) = get(&h.state, "/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["count"], &body["errors"][0]["region"]),
        (&json!(1), &json!("east"))
    );
    let (status, body) = get(&h.state, "/api/v1/alerts?region=east").await;
    error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "region-unreachable",
    );
}
