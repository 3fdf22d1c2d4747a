//! [`AppError`]: every failed API request answers with a 4xx/5xx status and
//! the body `{"error": {"code": "...", "message": "..."}}` (the shape of
//! axum's `examples/error-handling`), including axum's own extractor
//! rejections, which are converted here. An invalid monitor spec or module
//! (422 `invalid-spec`) adds `"fields": [{"field", "message"}]`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use strata_protocol::workload::{FieldError, SpecErrors};
use strata_protocol::MembershipRefusal;

use crate::region::RegionError;

/// An API error: status, stable machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable kebab-case code clients can match on.
    pub code: &'static str,
    /// What went wrong, naming the parameter / region / device involved.
    pub message: String,
    /// The bad fields of an invalid spec; serialized only when present.
    pub fields: Option<Vec<FieldError>>,
}

impl AppError {
    /// Any error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    /// 422 `invalid-spec`: every bad field of a monitor spec or module;
    /// `context` says whose check found them (`monitor acme/boiler`,
    /// `region west`).
    pub fn invalid_spec(context: &str, errors: SpecErrors) -> AppError {
        AppError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid-spec",
            message: format!("{context}: {errors}"),
            fields: Some(errors.0),
        }
    }

    /// 400: a query or path parameter is invalid.
    pub fn bad_param(param: &str, why: impl std::fmt::Display) -> AppError {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            format!("parameter `{param}`: {why}"),
        )
    }

    /// 400: the request body is invalid.
    pub fn bad_body(why: impl std::fmt::Display) -> AppError {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            format!("request body: {why}"),
        )
    }

    /// 404 for a region not in central's configuration.
    pub fn unknown_region(region: &str, known: &[String]) -> AppError {
        AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-region",
            format!(
                "region {region:?} is not configured (known: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    }
}

/// Status and code of a refused membership change: 409 for what the
/// request asked of the group's current state, 503 when leadership moved
/// (retry).
fn refusal_status(r: &MembershipRefusal) -> (StatusCode, &'static str) {
    match r {
        MembershipRefusal::NoAnswer { .. } => (StatusCode::CONFLICT, "replica-unreachable"),
        MembershipRefusal::Behind { .. } => (StatusCode::CONFLICT, "replica-behind"),
        MembershipRefusal::Busy { .. } => (StatusCode::CONFLICT, "membership-busy"),
        MembershipRefusal::Conflict { .. } => (StatusCode::CONFLICT, "membership-conflict"),
        MembershipRefusal::LeaderChanged { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "leader-changed")
        }
    }
}

impl From<RegionError> for AppError {
    fn from(e: RegionError) -> AppError {
        let (status, code) = match &e {
            RegionError::Invalid { region, errors } => {
                return AppError::invalid_spec(&format!("region {region}"), errors.clone())
            }
            RegionError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            RegionError::Unreachable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "region-unreachable")
            }
            RegionError::NoLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no-leader"),
            RegionError::Timeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "hub-timeout"),
            RegionError::Hub { .. } => (StatusCode::BAD_GATEWAY, "hub-error"),
            RegionError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "hub-protocol"),
            RegionError::Refused { refusal, .. } => refusal_status(refusal),
        };
        AppError::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> AppError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The route's guard answers with the limit in the message.
            return AppError::new(r.status(), "body-too-large", r.body_text());
        }
        AppError::bad_body(r.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, "invalid-parameter", r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, "invalid-parameter", r.body_text())
    }
}

impl AppError {
    /// The JSON body, `{"error": {"code", "message"[, "fields"]}}`. Also
    /// written by the connection layer, for answers it gives before a
    /// request reaches the router (431).
    pub fn body(&self) -> serde_json::Value {
        // The documented shape (`openapi::ErrorBody`), so the two cannot
        // differ.
        let body = super::openapi::ErrorBody {
            error: super::openapi::ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                fields: self.fields.clone(),
            },
        };
        serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "API request failed");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "API request rejected");
        }
        (self.status, Json(self.body())).into_response()
    }
}
