//! The web console's static assets, embedded in the binary (`console/` at
//! the repository root): `GET /` answers `index.html`, `GET /console/{path}`
//! the scripts, styles and vendored uPlot.
//!
//! The assets are public: they hold no data. Every API call the console
//! makes carries the operator token the user typed in, and goes through the
//! API's own guard, so serving these routes without a guard weakens nothing.
//!
//! A static table rather than a crate such as rust-embed: a dozen files,
//! known at compile time, so `include_bytes!` keeps the build free of
//! another proc-macro dependency and a missing file is a compile error.
//! Each answer carries a strict Content-Security-Policy (only this origin:
//! no inline script, no CDN), `X-Content-Type-Options: nosniff`, and a
//! strong ETag (a SHA-256 prefix of the bytes), so a browser revalidates
//! with `If-None-Match` and gets a 304 until the binary changes.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Only this origin, for everything; no inline script or style elements
/// (uPlot sizes its elements through the CSSOM, which CSP allows), no
/// framing, no plugins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Path under `/console/` (`index.html` is also `/`).
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../console/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("util.js", JS),
    asset!("views/topology.js", JS),
    asset!("views/device.js", JS),
    asset!("views/alerts.js", JS),
    asset!("views/workloads.js", JS),
    asset!("views/events.js", JS),
    asset!("vendor/uPlot.esm.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
];

/// ETags, computed once per process from the embedded bytes.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let d = ring::digest::digest(&ring::digest::SHA256, a.bytes);
                let hex: String = d.as_ref()[..12]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The console's routes (no state, no guard: see the module docs).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, req: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        // Plain text: a browser shows it as is; the console's own router
        // handles unknown views (they live after `#`).
        return (
            StatusCode::NOT_FOUND,
            security_headers(),
            "no such console file\n",
        )
            .into_response();
    };
    let a = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            )],
            a.bytes,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.extend(security_headers());
    // Revalidate every time (cheap: a 304), so a new binary's console is
    // picked up at once and never mixed with old modules.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

fn security_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: unwrapping is the assertion

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::http::{app, AppState};

    fn console_app() -> Router {
        app(AppState::new(
            Vec::new(),
            prometheus_client::registry::Registry::default(),
        ))
    }

    async fn get(path: &str, etag: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        console_app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn index_is_served_with_a_strict_policy() {
        let r = get("/", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("/console/app.js"), "{text}");
        // Nothing is loaded from another origin.
        assert!(!text.contains("http://") && !text.contains("https://"));
    }

    #[tokio::test]
    async fn assets_revalidate_with_their_etag() {
        let r = get("/console/app.js", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/console/app.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = get("/console/app.js", Some("\"something-else\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
        let css = get("/console/vendor/uPlot.min.css", None).await;
        assert_eq!(css.headers()[header::CONTENT_TYPE], CSS);
    }

    #[tokio::test]
    async fn unknown_files_are_404_and_the_api_stays_guarded() {
        assert_eq!(
            get("/console/../Cargo.toml", None).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("/console/nope.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
        // The console's routes add no way around the API's token check.
        assert_eq!(
            get("/api/v1/regions", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get("/api/v1/stream", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn every_script_import_is_embedded() {
        // A module imported by a relative path that is not in the table
        // would 404 in the browser: check the imports against the table.
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(spec) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let base = a.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    ASSETS.iter().any(|x| x.path == target),
                    "{} imports {spec} ({target}), which is not embedded",
                    a.path
                );
            }
        }
    }
}
