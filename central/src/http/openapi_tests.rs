use axum::http::StatusCode;
use serde_json::Value;

use super::*;
use crate::http::test_support::{healthy, send_as};

fn doc() -> Value {
    serde_json::from_str(document()).expect("the document is JSON")
}

/// `(method, path)` of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// `path` with each `{param}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{region}" => "west",
            "{tenant}" => "acme",
            "{id}" => "4",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Open routes (`/metrics` by default: `auth.open-metrics`).
const OPEN: [&str; 3] = ["/health", "/api/v1/docs", "/metrics"];

#[test]
fn the_document_is_openapi_3_1_and_every_guarded_operation_needs_the_token() {
    let d = doc();
    assert_eq!(d["openapi"], "3.1.0");
    assert_eq!(d["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        d["components"]["securitySchemes"]["operator-token"]["scheme"],
        "bearer"
    );
    for (method, path) in operations(&d) {
        let op = &d["paths"][&path][method.to_lowercase()];
        let open = OPEN.contains(&path.as_str());
        // An empty requirement (`{}`) among the alternatives is "no
        // token needed".
        let needs_token = op.get("security").is_none_or(|s| {
            !s.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
            })
        });
        assert_eq!(
            needs_token, !open,
            "{method} {path}: security {}",
            op["security"]
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|c| c.starts_with('2')),
            "{method} {path} documents no success"
        );
        if !open || path == "/metrics" {
            for code in ["400", "401", "404", "503"] {
                assert!(responses.contains_key(code), "{method} {path} lacks {code}");
            }
            assert_eq!(
                responses["401"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
        }
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path} has no summary (the handler's doc comment)"
        );
    }
}

/// The document and the route table cannot drift: every documented
/// operation is routed (a guarded one answers 401 without a token, an open
/// one 200; never "no route" or "method not allowed"), and every routed
/// path is documented.
#[tokio::test]
async fn every_documented_operation_is_routed_and_every_route_documented() {
    let h = healthy();
    let d = doc();
    let ops = operations(&d);
    assert!(ops.len() >= 30, "only {} operations", ops.len());
    for (method, path) in &ops {
        let uri = concrete(path);
        let (status, _, body) = send_as(&h.state, method, &uri, None, None, vec![]).await;
        let want = if OPEN.contains(&path.as_str()) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, want, "{method} {uri}: {body}");
    }
    let documented: Vec<&str> = ops.iter().map(|(_, p)| p.as_str()).collect();
    for path in crate::http::route_paths(h.state.clone()) {
        assert!(
            documented.contains(&path),
            "route {path} is not in the document"
        );
    }
}

#[tokio::test]
async fn the_document_needs_the_token_and_its_reference_page_does_not() {
    let h = healthy();
    let (status, _, _) = send_as(&h.state, "GET", "/api/v1/openapi.json", None, None, vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = crate::http::test_support::bearer();
    let (status, _, body) = send_as(
        &h.state,
        "GET",
        "/api/v1/openapi.json",
        Some(&auth),
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, doc());
    let app = crate::http::app(h.state.clone());
    let resp = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::get("/api/v1/docs")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let html = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        html.contains(
            "fetch(\"openapi.json\", { headers: { Authorization: \"Bearer \" + token } })"
        ),
        "the page loads the document"
    );
}

#[test]
fn an_error_answer_has_the_documented_shape() {
    let e = crate::http::AppError::new(StatusCode::NOT_FOUND, "not-found", "no region x");
    let body = e.body();
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": "not-found", "message": "no region x"}})
    );
    let schema = &doc()["components"]["schemas"]["ErrorDetail"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["code", "message"]);
}
