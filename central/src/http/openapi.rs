//! The OpenAPI 3.1 document of central's HTTP API, served at
//! `GET /api/v1/openapi.json`, and the reference page that renders it at
//! `GET /api/v1/docs`.
//!
//! The document is compiled from the code it describes: each operation is
//! the `#[utoipa::path]` attribute on its handler, each body the
//! `ToSchema` derive on the response type the handler returns, and the
//! error body is the one [`ErrorBody`] every handler's `AppError` writes.
//! What could still drift is the route table itself (`app()` in `mod.rs`):
//! `openapi_tests.rs` routes every documented operation through the real
//! router (it must not answer "no route" or "method not allowed") and
//! checks every route in the table is documented; CI's schemathesis run
//! then checks a live cluster answers as documented.
//!
//! The document needs the token like every `/api/v1` read. The reference
//! page is open like the console's files (static, no data; it must load
//! before anyone logs in) and reads the document with the token the
//! console keeps for the tab, or asks for one.
//! Foreign types (protocol and scheduler vocabulary inside the views) are
//! documented as plain objects or strings; their fields are described in
//! the README and the crates' docs.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::{cluster, events, handlers, monitors, stream, workloads};

/// Every error answer: `{"error": {"code", "message"[, "fields"]}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable kebab-case code clients can match on (`invalid-parameter`,
    /// `unauthorized`, `not-found`, `invalid-spec`, `no-leader`, …).
    pub code: String,
    /// What went wrong, naming the parameter, region or device involved.
    pub message: String,
    /// The bad fields of an invalid spec, each `{field, message}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub fields: Option<Vec<strata_protocol::workload::FieldError>>,
}

/// The error answers any operation may give. Documented once for all:
/// which one a request meets depends on the token, the body and the state
/// of the regions behind central, not on the operation.
#[derive(IntoResponses)]
#[allow(dead_code)] // A description for the document, never constructed.
pub enum ApiErrors {
    /// A bad parameter, path segment or body (`invalid-parameter`,
    /// `invalid-body`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No token, or not a valid one (`unauthorized`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token may not do this (`forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such region, tenant, device, monitor or workload (`not-found`,
    /// `unknown-region`, `unknown-device`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The request took longer than `http.request-timeout`
    /// (`request-timeout`).
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The state does not allow it now (`conflict`, `replica-behind`, …).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over the route's limit (`body-too-large`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body's Content-Type is not one the operation reads
    /// (`unsupported-media-type`).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// A spec with bad fields (`invalid-spec`, listing each in `fields`) or
    /// a workload that fits no region (`fits-no-region`).
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// A region answered with an error or something unreadable
    /// (`hub-error`, `hub-protocol`).
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// A region, or central's own group, cannot answer now (`no-leader`,
    /// `region-unreachable`, `hub-timeout`, `unavailable`); retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Adds the bearer scheme every `/api/v1` operation requires.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "operator-token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Central's operator token (`<data-dir>/central/operator.token` under \
                         `strata up`), as `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata central API",
        description = "Central federates Strata's regions: topology, telemetry, alerts, region \
                       monitors, global workloads and central's own replicated state. Every \
                       `/api/v1` operation needs the operator token; reads of replicated state \
                       are linearizable unless `stale=true`."
    ),
    paths(
        super::health,
        super::metrics,
        openapi_json,
        reference_page,
        handlers::regions,
        handlers::region,
        handlers::add_replica,
        handlers::remove_replica,
        handlers::edges,
        handlers::devices,
        handlers::telemetry,
        handlers::retention,
        cluster::status,
        cluster::registry,
        cluster::tenants,
        cluster::put_tenant,
        cluster::delete_tenant,
        workloads::submit,
        workloads::list,
        workloads::get,
        workloads::delete,
        workloads::upload_everywhere,
        monitors::upload_artifact,
        monitors::submit_monitor,
        monitors::list_monitors,
        monitors::get_monitor,
        monitors::delete_monitor,
        monitors::alerts,
        events::events,
        events::stream,
        stream::stream,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("operator-token" = [])),
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        // Invariant: the document is plain data (strings, numbers, maps).
        doc.to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
        ApiErrors
    )
)]
pub async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

/// `GET /api/v1/docs`: a reference page rendering the document in the
/// browser (no script from elsewhere).
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The API reference page", content_type = "text/html", body = String))
)]
pub async fn reference_page() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        REFERENCE_PAGE,
    )
        .into_response()
}

/// The reference page: fetches the document from this server and lists
/// every operation with its parameters, body and answers.
const REFERENCE_PAGE: &str = include_str!("openapi_reference.html");

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
