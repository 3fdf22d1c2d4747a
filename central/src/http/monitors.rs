//! Handlers of the device-monitor API: artifact upload, monitor submit /
//! list / inspect / delete, and the federated alert read.
//!
//! Specs are checked here first with the offline
//! [`ValidationContext::default`] (shape and values), so a bad spec is
//! refused without a hub round trip; the region's hub then checks what
//! needs cluster state (tenants, devices, capacity, artifact) and its field
//! errors come back through [`RegionError::Invalid`] as the same 422 body.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures::future::join_all;
use strata_protocol::workload::{MonitorSpec, ValidationContext};

use super::error::AppError;
use super::handlers::{federate, select, Pairs};
use super::monitor_views::{
    AlertView, AlertsView, ArtifactView, DeletedView, MonitorView, MonitorsView,
};
use super::params;
use super::AppState;
use crate::region::RegionError;

type Created<T> = Result<(StatusCode, Json<T>), AppError>;

/// The body, or a JSON error: a 413 when it is over the route's limit
/// (the route's guard rewords it with the limit).
fn body_or_error(body: Result<Bytes, BytesRejection>, what: &str) -> Result<Bytes, AppError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("{what} is too large"),
            )
        } else {
            AppError::bad_body(r.body_text())
        }
    })
}

/// `POST /api/v1/regions/{region}/artifacts`: stores a module (raw body,
/// `application/wasm` or `application/octet-stream`). 201 when new, 200
/// when the region already had it. The route caps the body at
/// [`MAX_ARTIFACT_BYTES`](strata_protocol::workload::MAX_ARTIFACT_BYTES)
/// (see [`super::app`]).
#[utoipa::path(
    post,
    path = "/api/v1/regions/{region}/artifacts",
    tag = "monitors",
    params(("region" = String, Path, description = "Region name")),
    request_body(description = "A WebAssembly module", content((Vec<u8> = "application/wasm"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "Stored", body = ArtifactView), (status = 200, description = "Already stored", body = ArtifactView), super::openapi::ApiErrors)
)]
pub async fn upload_artifact(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Created<ArtifactView> {
    let Path(name) = path?;
    let region = state.region(&name)?;
    let body = body_or_error(body, "the module")?;
    if body.is_empty() {
        return Err(AppError::bad_body(
            "is empty: send the module's bytes (Content-Type: application/wasm)",
        ));
    }
    let stored = region.put_artifact(body.to_vec()).await?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ArtifactView::new(&name, stored))))
}

/// Spec syntax, from the Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// `application/json` (or `*+json`).
    Json,
    /// `application/toml`, `text/toml`, `application/x-toml`.
    Toml,
}

/// The format a Content-Type names: JSON or TOML, as the route's guard
/// ([`super::guard`]) already required of a body; anything else is a 415.
/// Nothing is sniffed: a type that says nothing about the text
/// (`text/plain`, a form) is what a browser page can send cross-site.
pub fn spec_format(content_type: Option<&str>) -> Result<SpecFormat, AppError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "application/json" => Ok(SpecFormat::Json),
        m if m.ends_with("+json") => Ok(SpecFormat::Json),
        "application/toml" | "text/toml" | "application/x-toml" => Ok(SpecFormat::Toml),
        other => Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "Content-Type {other:?} is not a monitor spec format: send application/json \
                 or application/toml"
            ),
        )),
    }
}

/// Parses a spec body (shape only). Errors are 400 and carry the parser's
/// message, which names the key and its line and column.
pub fn parse_spec(content_type: Option<&str>, body: &[u8]) -> Result<MonitorSpec, AppError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| AppError::bad_body(format!("monitor spec is not UTF-8 text ({e})")))?;
    if text.trim().is_empty() {
        return Err(AppError::bad_body(
            "is empty: send a monitor spec as JSON or TOML",
        ));
    }
    match spec_format(content_type)? {
        SpecFormat::Json => MonitorSpec::from_json_str(text).map_err(|e| {
            let detail = match e {
                strata_protocol::workload::SpecError::Parse { detail } => detail,
                other => other.to_string(),
            };
            AppError::bad_body(format!("monitor spec (JSON): {detail}"))
        }),
        SpecFormat::Toml => toml::from_str::<MonitorSpec>(text).map_err(|e| {
            AppError::bad_body(format!("monitor spec (TOML): {}", e.to_string().trim_end()))
        }),
    }
}

/// `POST /api/v1/regions/{region}/monitors`: creates (201) or updates (200)
/// a monitor. Body: the spec as JSON or TOML.
#[utoipa::path(
    post,
    path = "/api/v1/regions/{region}/monitors",
    tag = "monitors",
    params(("region" = String, Path, description = "Region name")),
    request_body(description = "A monitor spec as JSON or TOML", content((Object = "application/json"), (String = "application/toml"))),
    responses((status = 201, description = "Created", body = MonitorView), (status = 200, description = "Updated", body = MonitorView), super::openapi::ApiErrors)
)]
pub async fn submit_monitor(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Created<MonitorView> {
    let Path(name) = path?;
    let region = state.region(&name)?;
    let body = body_or_error(body, "the monitor spec")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let spec = parse_spec(content_type, &body)?;
    let who = format!("monitor {}/{}", spec.tenant, spec.name);
    if let Err(offline) = spec.validate(&ValidationContext::default()) {
        // The region adds what only it knows (unknown tenant, a selector
        // matching no device, capacity, the module), so ask it for the whole
        // list at once; it validates before anything is stored, so an
        // invalid spec is never kept. Offline errors alone when it cannot
        // answer.
        return Err(match region.submit_monitor(spec).await {
            Err(RegionError::Invalid { errors, .. }) => AppError::invalid_spec(&who, errors),
            _ => AppError::invalid_spec(&who, offline),
        });
    }
    // The hub answers a submit with the stored monitor either way; whether
    // it existed before decides 201 or 200. A concurrent submit of the same
    // name can make this read outdated, which only affects the status code.
    let existed = match region.monitor(spec.tenant.clone(), spec.name.clone()).await {
        Ok(_) => true,
        Err(RegionError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let info = region.submit_monitor(spec).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(MonitorView::new(&name, info))))
}

/// `GET /api/v1/monitors[?tenant=&region=]`: monitors of every (or one)
/// region.
#[utoipa::path(
    get,
    path = "/api/v1/monitors",
    tag = "monitors",
    params(("tenant" = Option<String>, Query, description = "Only this tenant"), ("region" = Option<String>, Query, description = "Only this region")),
    responses((status = 200, description = "Monitors of every selected region", body = MonitorsView), super::openapi::ApiErrors)
)]
pub async fn list_monitors(
    State(state): State<AppState>,
    query: Pairs,
) -> Result<Json<MonitorsView>, AppError> {
    let Query(pairs) = query?;
    let get = params::check(&pairs, &["tenant", "region"])?;
    let regions = select(&state, get("region"))?;
    let tenant = get("tenant").map(str::to_owned);
    let names = regions.iter().map(|r| r.name().to_owned()).collect();
    let results = join_all(regions.iter().map(|r| r.monitors(tenant.clone()))).await;
    let (ok, errors) = federate(names, results, get("region").is_some())?;
    let mut view = MonitorsView {
        monitors: Vec::new(),
        stale: false,
        errors,
    };
    for (region, served) in ok {
        view.stale |= served.stale;
        let mut monitors = served.value;
        monitors
            .sort_by(|a, b| (&a.spec.tenant, &a.spec.name).cmp(&(&b.spec.tenant, &b.spec.name)));
        view.monitors
            .extend(monitors.into_iter().map(|m| MonitorView::new(&region, m)));
    }
    Ok(Json(view))
}

/// 404 `unknown-monitor` for a hub's `NotFound`, naming the monitor.
fn unknown_monitor(e: RegionError, region: &str, tenant: &str, name: &str) -> AppError {
    match e {
        RegionError::NotFound { .. } => AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-monitor",
            format!("monitor {tenant}/{name} does not exist in region {region}"),
        ),
        other => other.into(),
    }
}

/// `GET /api/v1/regions/{region}/monitors/{tenant}/{name}`.
#[utoipa::path(
    get,
    path = "/api/v1/regions/{region}/monitors/{tenant}/{name}",
    tag = "monitors",
    params(("region" = String, Path, description = "Region name"), ("tenant" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Tenant"), ("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Monitor name")),
    responses((status = 200, description = "The monitor with its allocations and their reasons", body = MonitorView), super::openapi::ApiErrors)
)]
pub async fn get_monitor(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Json<MonitorView>, AppError> {
    let Path((name, tenant, monitor)) = path?;
    let region = state.region(&name)?;
    let served = region
        .monitor(tenant.clone(), monitor.clone())
        .await
        .map_err(|e| unknown_monitor(e, &name, &tenant, &monitor))?;
    Ok(Json(MonitorView::new(&name, served.value)))
}

/// `DELETE /api/v1/regions/{region}/monitors/{tenant}/{name}`.
#[utoipa::path(
    delete,
    path = "/api/v1/regions/{region}/monitors/{tenant}/{name}",
    tag = "monitors",
    params(("region" = String, Path, description = "Region name"), ("tenant" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Tenant"), ("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Monitor name")),
    responses((status = 200, description = "Deleted", body = DeletedView), super::openapi::ApiErrors)
)]
pub async fn delete_monitor(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Json<DeletedView>, AppError> {
    let Path((name, tenant, monitor)) = path?;
    let region = state.region(&name)?;
    region
        .delete_monitor(tenant.clone(), monitor.clone())
        .await
        .map_err(|e| unknown_monitor(e, &name, &tenant, &monitor))?;
    Ok(Json(DeletedView {
        deleted: true,
        region: name,
        tenant,
        name: monitor,
    }))
}

/// `GET /api/v1/alerts?tenant=&device=&monitor=&severity=&from=&to=&limit=&region=`:
/// alerts of every (or one) region merged newest first.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    params(("tenant" = Option<String>, Query, min_length = 1, description = "Only this tenant"), ("device" = Option<String>, Query, min_length = 1, description = "Only this device"), ("monitor" = Option<String>, Query, min_length = 1, description = "Only this monitor"), ("severity" = Option<String>, Query, pattern = "^(info|warning|critical)$", description = "This severity or worse: info, warning, critical"), ("from" = Option<i64>, Query, description = "Inclusive start, ms since the epoch (an RFC 3339 time is accepted too; default: an hour ago); before `to`"), ("to" = Option<i64>, Query, description = "Exclusive end, ms since the epoch (or RFC 3339; default: a minute ahead)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most alerts (default 1000)"), ("region" = Option<String>, Query, min_length = 1, description = "Only this region")),
    responses((status = 200, description = "Alerts, newest first", body = AlertsView), super::openapi::ApiErrors)
)]
pub async fn alerts(
    State(state): State<AppState>,
    query: Pairs,
) -> Result<Json<AlertsView>, AppError> {
    let Query(pairs) = query?;
    let p = params::alerts(&pairs, state.now_ms())?;
    let regions = select(&state, p.region.as_deref())?;
    let names = regions.iter().map(|r| r.name().to_owned()).collect();
    let results = join_all(regions.iter().map(|r| r.alerts(p.query.clone()))).await;
    let (ok, errors) = federate(names, results, p.region.is_some())?;
    let limit = p.query.limit as usize;
    let mut stale = false;
    // A region that filled the limit may hold older matches.
    let mut truncated = false;
    let mut alerts = Vec::new();
    for (region, served) in ok {
        stale |= served.stale;
        truncated |= served.value.len() >= limit;
        alerts.extend(served.value.into_iter().map(|a| AlertView::new(&region, a)));
    }
    // Stable: equal times keep region order, then each hub's order.
    alerts.sort_by_key(|a| std::cmp::Reverse(a.ts_ms));
    if alerts.len() > limit {
        truncated = true;
        alerts.truncate(limit);
    }
    Ok(Json(AlertsView {
        count: alerts.len(),
        alerts,
        truncated,
        from_ms: p.query.from_ms,
        to_ms: p.query.to_ms,
        stale,
        errors,
    }))
}
