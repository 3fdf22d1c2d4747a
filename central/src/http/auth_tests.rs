//! The guard of every API route through `app(..).oneshot(req)`: 401 for
//! missing, malformed and wrong tokens on reads and writes alike (with the
//! JSON error body and a `WWW-Authenticate` challenge, counted by reason),
//! what stays open, the lab switch, 415 and 413 before the handler runs.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

use super::test_support::*;
use super::{app, AppOptions, AppState};
use crate::auth::Policy;
use crate::region::RegionApi;

/// Method, path, and (Content-Type, body).
type Route = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

/// Every API route, with a request that would succeed with the token.
const ROUTES: &[Route] = &[
    ("GET", "/api/v1/regions", None),
    ("GET", "/api/v1/regions/west", None),
    (
        "POST",
        "/api/v1/regions/west/replicas",
        Some((
            "application/json",
            r#"{"id":9,"peer-addr":"127.0.0.1:1","client-addr":"127.0.0.1:2"}"#,
        )),
    ),
    ("DELETE", "/api/v1/regions/west/replicas/9", None),
    ("GET", "/api/v1/edges", None),
    ("GET", "/api/v1/devices", None),
    ("GET", "/api/v1/telemetry/acme/d1", None),
    (
        "POST",
        "/api/v1/regions/west/artifacts",
        Some(("application/wasm", "\0asm\x01\0\0\0")),
    ),
    (
        "POST",
        "/api/v1/regions/west/monitors",
        Some(("application/json", "{}")),
    ),
    ("GET", "/api/v1/monitors", None),
    ("GET", "/api/v1/regions/west/monitors/acme/m", None),
    ("DELETE", "/api/v1/regions/west/monitors/acme/m", None),
    ("GET", "/api/v1/alerts", None),
];

fn state_with(options: AppOptions) -> (AppState, Arc<Fake>) {
    let west = Arc::new(Fake::new("west", &[("acme", "d1")]));
    let regions: Vec<Arc<dyn RegionApi>> = vec![west.clone()];
    let state = AppState::with_options(regions, Registry::default(), Arc::new(|| NOW), options);
    (state, west)
}

async fn call(
    state: &AppState,
    route: &Route,
    auth: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (method, uri, body) = *route;
    let (ct, bytes) = match body {
        Some((ct, b)) => (Some(ct), b.as_bytes().to_vec()),
        None => (None, Vec::new()),
    };
    send_as(state, method, uri, auth, ct, bytes).await
}

/// Asserts a 401 with the JSON error body and the challenge.
fn unauthorized(got: &(StatusCode, axum::http::HeaderMap, Value), what: &str) -> String {
    let (status, headers, body) = got;
    let msg = error(*status, body, StatusCode::UNAUTHORIZED, "unauthorized");
    let challenge = headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"))
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
    assert!(!msg.contains(TOKEN), "{what}: {msg}");
    msg
}

#[tokio::test]
async fn every_api_route_needs_the_token_and_nothing_reaches_a_region_without_it() {
    let h = healthy();
    let wrong_len = format!("Bearer {}x", TOKEN);
    let cases: [(Option<&str>, &str, &str); 5] = [
        (None, "missing", "needs central's operator token"),
        (Some("Bearer not-the-token"), "bad-token", "not valid"),
        (Some(&wrong_len), "bad-token", "not valid"),
        (
            Some("Basic b3BlcmF0b3I6cHc="),
            "malformed",
            "must be `Bearer <token>`",
        ),
        (Some("Bearer"), "malformed", "must be `Bearer <token>`"),
    ];
    for route in ROUTES {
        for (auth, _, needle) in &cases {
            let got = call(&h.state, route, *auth).await;
            let msg = unauthorized(&got, &format!("{} {} with {auth:?}", route.0, route.1));
            assert!(msg.contains(needle), "{msg}");
        }
    }
    assert!(h.west.writes.lock().unwrap().is_empty());
    assert!(h.west.changes.lock().unwrap().is_empty());
    assert!(h.west.queries.lock().unwrap().is_empty());
    let (_, metrics) = get(&h.state, "/metrics").await;
    let text = metrics.as_str().unwrap();
    let n = ROUTES.len();
    for (reason, count) in [("missing", n), ("bad-token", 2 * n), ("malformed", 2 * n)] {
        let line = format!("strata_central_auth_failures_total{{reason=\"{reason}\"}} {count}");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn with_the_token_every_route_reaches_its_handler() {
    let h = healthy();
    let auth = bearer();
    for route in ROUTES {
        let (status, _, body) = call(&h.state, route, Some(&auth)).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{} {}: {status} {body}",
            route.0,
            route.1
        );
    }
    // The scheme is case-insensitive.
    let lower = format!("bearer {TOKEN}");
    let (status, _, body) = call(&h.state, &ROUTES[0], Some(&lower)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Two Authorization headers are refused, even if both are right.
    let req = Request::get("/api/v1/regions")
        .header("authorization", &auth)
        .header("authorization", &auth)
        .body(Body::empty())
        .unwrap();
    let resp = app(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("one Authorization header"));
}

#[tokio::test]
async fn health_and_by_default_metrics_are_open() {
    let h = healthy();
    let (status, _, _) = send_as(&h.state, "GET", "/health", None, None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send_as(&h.state, "GET", "/metrics", None, None, vec![]).await;
    assert_eq!(status, StatusCode::OK);

    let (closed, _) = state_with(options(Policy::new(false, false)));
    let (status, _, _) = send_as(&closed, "GET", "/health", None, None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let got = send_as(&closed, "GET", "/metrics", None, None, vec![]).await;
    let msg = unauthorized(&got, "closed /metrics");
    assert!(msg.contains("read-metrics"), "{msg}");
    let auth = bearer();
    let (status, _, _) = send_as(&closed, "GET", "/metrics", Some(&auth), None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn allow_anonymous_opens_the_api_but_a_wrong_token_is_still_refused() {
    let (lab, west) = state_with(options(Policy::new(true, true)));
    let (status, _, body) = send_as(&lab, "GET", "/api/v1/regions", None, None, vec![]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A write reaches the region (which has no such monitor).
    let (status, _, body) = send_as(
        &lab,
        "DELETE",
        "/api/v1/regions/west/monitors/acme/m",
        None,
        None,
        vec![],
    )
    .await;
    error(status, &body, StatusCode::NOT_FOUND, "unknown-monitor");
    assert_eq!(*west.writes.lock().unwrap(), vec!["delete acme/m"]);
    let got = send_as(
        &lab,
        "GET",
        "/api/v1/regions",
        Some("Bearer wrong"),
        None,
        vec![],
    )
    .await;
    unauthorized(&got, "lab with a wrong token");
}

#[tokio::test]
async fn the_default_state_knows_no_token() {
    let west = Arc::new(Fake::new("west", &[]));
    let state = AppState::new(vec![west as Arc<dyn RegionApi>], Registry::default());
    let auth = bearer();
    let got = send_as(&state, "GET", "/api/v1/regions", Some(&auth), None, vec![]).await;
    unauthorized(&got, "default state");
}

#[tokio::test]
async fn a_form_or_text_body_is_415_after_authentication() {
    let h = healthy();
    let spec = br#"{"name":"m"}"#.to_vec();
    let uri = "/api/v1/regions/west/monitors";
    // Anonymous: the 401 comes first and says nothing about the body.
    let got = send_as(
        &h.state,
        "POST",
        uri,
        None,
        Some("text/plain"),
        spec.clone(),
    )
    .await;
    unauthorized(&got, "anonymous text/plain");
    let auth = bearer();
    let (status, _, body) = send_as(
        &h.state,
        "POST",
        uri,
        Some(&auth),
        Some("text/plain"),
        spec.clone(),
    )
    .await;
    let msg = error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
    assert!(msg.contains("got \"text/plain\""), "{msg}");
    // A module upload takes module types only.
    let (status, _, body) = send_as(
        &h.state,
        "POST",
        "/api/v1/regions/west/artifacts",
        Some(&auth),
        Some("application/json"),
        spec,
    )
    .await;
    error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
    );
    assert!(h.west.writes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_with_the_json_body_declared_or_streamed() {
    let (state, west) = state_with(AppOptions {
        max_body_bytes: 1024,
        ..options(Policy::new(false, true))
    });
    let auth = bearer();
    let big = vec![b' '; 2000];
    let uri = "/api/v1/regions/west/monitors";
    // Declared: refused before the body is read.
    let (status, _, body) = send_as(
        &state,
        "POST",
        uri,
        Some(&auth),
        Some("application/json"),
        big.clone(),
    )
    .await;
    let msg = error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
    );
    assert!(msg.contains("limit of 1024 bytes (1 KiB)"), "{msg}");
    // Streamed without a length (chunked): axum's limit, answered the same.
    for (uri, ct) in [
        (uri, "application/json"),
        ("/api/v1/regions/west/replicas", "application/json"),
    ] {
        let chunks = futures::stream::iter(
            big.chunks(500)
                .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let req = Request::post(uri)
            .header("authorization", &auth)
            .header("content-type", ct)
            .header("transfer-encoding", "chunked")
            .body(Body::from_stream(chunks))
            .unwrap();
        let resp = app(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
        let msg = error(
            status,
            &body,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        );
        assert!(msg.contains("limit of 1024 bytes"), "{uri}: {msg}");
    }
    assert!(west.writes.lock().unwrap().is_empty());
    let (_, metrics) = get(&state, "/metrics").await;
    let line = r#"strata_central_http_limits_total{limit="max-body-bytes"} 3"#;
    assert!(metrics.as_str().unwrap().contains(line), "{metrics}");
}
