//! The guard every API route passes before its handler: who is calling
//! (the route's [`Action`] under the [`Access`](crate::auth::Access)
//! policy), then what the body claims to be — a state-changing request with
//! a body must say JSON or TOML (a module for the upload route), so a web
//! page cannot post a form or `text/plain` to the API from an operator's
//! browser (CSRF) — and how large it says it is. The route table in
//! [`super::app`] attaches one [`Guard`] per route; refusals answer with
//! the JSON error body and are counted by reason.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::AppState;
use crate::auth::{Action, Refusal};
use crate::metrics::Limit;

/// What a route accepts as a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// JSON or TOML (`application/json`, `*+json`, `application/toml`,
    /// `text/toml`, `application/x-toml`), at most `http.max-body-bytes`.
    Text,
    /// A WebAssembly module (`application/wasm` or
    /// `application/octet-stream`), at most the artifact limit.
    Module,
}

impl Media {
    fn accepts(self, media_type: &str) -> bool {
        match self {
            Media::Text => {
                matches!(
                    media_type,
                    "application/json" | "application/toml" | "text/toml" | "application/x-toml"
                ) || media_type.ends_with("+json")
            }
            Media::Module => matches!(media_type, "application/wasm" | "application/octet-stream"),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Media::Text => "application/json or application/toml",
            Media::Module => "application/wasm or application/octet-stream",
        }
    }
}

/// One route's requirements, the state of its [`guard`] middleware.
#[derive(Clone)]
pub struct Guard {
    /// Shared state: access rules and metrics.
    pub state: AppState,
    /// What the route does.
    pub action: Action,
    /// What body it takes.
    pub media: Media,
    /// Its body limit, bytes.
    pub max_body: usize,
}

/// True when a request carries a body: a non-zero `Content-Length`, or
/// any `Transfer-Encoding` (chunked).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The 415 for a state-changing request whose body is not of `media`, or
/// `None` when it may pass. Pure.
pub fn media_problem(method: &Method, headers: &HeaderMap, media: Media) -> Option<AppError> {
    let changes_state = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !changes_state || !has_body(headers) {
        return None;
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let got = match declared {
        Some(m) if media.accepts(&m) => return None,
        Some(m) if m.is_empty() => "an empty Content-Type".to_owned(),
        Some(m) => format!("{m:?}"),
        None => "no Content-Type".to_owned(),
    };
    Some(AppError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        format!(
            "{method} with a body needs Content-Type {}, got {got}",
            media.expected()
        ),
    ))
}

/// The 413 naming the route's limit.
fn too_large(max_body: usize) -> AppError {
    let unit = match max_body {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!(" ({} MiB)", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!(" ({} KiB)", n >> 10),
        _ => String::new(),
    };
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than this route's limit of {max_body} bytes{unit}"),
    )
}

/// A refusal as a response: the JSON error body, and for 401 the
/// `WWW-Authenticate` challenge (RFC 6750).
fn refused(r: &Refusal) -> Response {
    let mut resp = AppError::new(r.status(), r.code(), r.message()).into_response();
    let challenge = match r {
        Refusal::Missing { .. } => Some(r#"Bearer realm="strata""#),
        Refusal::Malformed(_) => Some(r#"Bearer realm="strata", error="invalid_request""#),
        Refusal::BadToken => Some(r#"Bearer realm="strata", error="invalid_token""#),
        Refusal::Forbidden(_) => None,
    };
    if let Some(c) = challenge {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    resp
}

/// The middleware: authenticate and authorize, check the body's type and
/// declared size, run the handler, and answer any 413 (also axum's own,
/// for a chunked body over the limit) with the JSON body.
pub async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let access = g.state.access();
    let principal = match access.check(req.headers(), g.action) {
        Ok(p) => p,
        Err(r) => {
            g.state.auth_metrics().failure(r.reason());
            tracing::debug!(action = g.action.as_str(), reason = r.reason(), uri = %req.uri().path(), "API request refused");
            return refused(&r);
        }
    };
    if let Some(e) = media_problem(req.method(), req.headers(), g.media) {
        return e.into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > g.max_body as u64) {
        g.state.limit_metrics().fired(Limit::MaxBodyBytes);
        return too_large(g.max_body).into_response();
    }
    req.extensions_mut().insert(principal);
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        g.state.limit_metrics().fired(Limit::MaxBodyBytes);
        return too_large(g.max_body).into_response();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn state_changing_bodies_must_be_json_or_toml() {
        let ok = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
            "application/toml",
            "text/toml",
            "application/x-toml",
        ];
        for ct in ok {
            let h = headers(&[("content-type", ct), ("content-length", "10")]);
            assert!(
                media_problem(&Method::POST, &h, Media::Text).is_none(),
                "{ct}"
            );
        }
        let refused = [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "application/wasm",
            "",
        ];
        for ct in refused {
            let h = headers(&[("content-type", ct), ("content-length", "10")]);
            let e = media_problem(&Method::POST, &h, Media::Text).expect(ct);
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(e.code, "unsupported-media-type");
        }
        let none = headers(&[("transfer-encoding", "chunked")]);
        let e = media_problem(&Method::DELETE, &none, Media::Text).unwrap();
        assert!(e.message.contains("got no Content-Type"), "{}", e.message);
    }

    #[test]
    fn bodiless_and_reading_requests_pass_and_modules_have_their_own_types() {
        let text = headers(&[("content-type", "text/plain"), ("content-length", "10")]);
        assert!(media_problem(&Method::GET, &text, Media::Text).is_none());
        let empty = headers(&[("content-type", "text/plain"), ("content-length", "0")]);
        assert!(media_problem(&Method::POST, &empty, Media::Text).is_none());
        assert!(media_problem(&Method::DELETE, &HeaderMap::new(), Media::Text).is_none());
        for ct in ["application/wasm", "application/octet-stream"] {
            let h = headers(&[("content-type", ct), ("content-length", "10")]);
            assert!(
                media_problem(&Method::POST, &h, Media::Module).is_none(),
                "{ct}"
            );
        }
        let json = headers(&[
            ("content-type", "application/json"),
            ("content-length", "2"),
        ]);
        let e = media_problem(&Method::POST, &json, Media::Module).unwrap();
        assert!(e.message.contains("application/wasm"), "{}", e.message);
    }
}
