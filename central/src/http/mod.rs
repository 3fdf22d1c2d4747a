//! The HTTP JSON API (axum): routes, shared state and request metrics.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it
//! with `tower::ServiceExt::oneshot` and an in-memory [`RegionApi`].
//!
//! - [`error`]: the JSON error body and rejection conversions.
//! - [`params`]: query-string parsing (pure).
//! - [`views`]: response and request bodies.
//! - [`handlers`]: one async fn per route (cluster, devices, telemetry).
//! - [`monitors`]: artifact, monitor and alert routes; [`monitor_views`]
//!   their bodies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;

use crate::metrics::{HttpLabel, HttpMetrics};
use crate::region::RegionApi;

pub mod error;
pub mod handlers;
pub mod monitor_views;
pub mod monitors;
pub mod params;
pub mod views;

#[cfg(test)]
mod monitor_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use error::AppError;

/// Wall clock in ms since the Unix epoch; a parameter so tests can fix it.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Device → region lookups cached at most this many entries; beyond that the
/// cache is cleared (devices are looked up again, which is only slower).
const DEVICE_CACHE_MAX: usize = 100_000;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    regions: Vec<Arc<dyn RegionApi>>,
    registry: Registry,
    http: HttpMetrics,
    clock: Clock,
    /// (tenant, device) → index into `regions`.
    device_regions: Mutex<HashMap<(String, String), usize>>,
}

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

impl AppState {
    /// State over `regions`, serving `registry` (plus the HTTP metrics
    /// registered into it here) on `/metrics`.
    pub fn new(regions: Vec<Arc<dyn RegionApi>>, registry: Registry) -> AppState {
        AppState::with_clock(regions, registry, system_clock())
    }

    /// Like [`AppState::new`] with a given clock.
    pub fn with_clock(
        regions: Vec<Arc<dyn RegionApi>>,
        mut registry: Registry,
        clock: Clock,
    ) -> AppState {
        let http = HttpMetrics::register(&mut registry);
        AppState {
            inner: Arc::new(Inner {
                regions,
                registry,
                http,
                clock,
                device_regions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Every region, in configuration order.
    pub fn regions(&self) -> &[Arc<dyn RegionApi>] {
        &self.inner.regions
    }

    /// The region called `name`, or a 404 listing the known ones.
    pub fn region(&self, name: &str) -> Result<&Arc<dyn RegionApi>, AppError> {
        let i = self.region_index(name)?;
        Ok(&self.inner.regions[i])
    }

    /// Position of the region called `name` in [`Self::regions`].
    pub fn region_index(&self, name: &str) -> Result<usize, AppError> {
        self.inner
            .regions
            .iter()
            .position(|r| r.name() == name)
            .ok_or_else(|| AppError::unknown_region(name, &self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.inner
            .regions
            .iter()
            .map(|r| r.name().to_owned())
            .collect()
    }

    /// Now, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        (self.inner.clock)()
    }

    fn device_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), usize>> {
        // A plain map: consistent after every operation, so poisoning is
        // harmless.
        self.inner
            .device_regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The region index remembered for a device.
    pub(crate) fn cached_device_region(&self, tenant: &str, device: &str) -> Option<usize> {
        self.device_cache()
            .get(&(tenant.to_owned(), device.to_owned()))
            .copied()
    }

    /// Remembers where a device lives.
    pub(crate) fn remember_device_region(&self, tenant: &str, device: &str, region: usize) {
        let mut cache = self.device_cache();
        if cache.len() >= DEVICE_CACHE_MAX {
            cache.clear();
        }
        cache.insert((tenant.to_owned(), device.to_owned()), region);
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/regions", get(handlers::regions))
        .route("/api/v1/regions/{region}", get(handlers::region))
        .route(
            "/api/v1/regions/{region}/replicas",
            post(handlers::add_replica),
        )
        .route(
            "/api/v1/regions/{region}/replicas/{id}",
            delete(handlers::remove_replica),
        )
        .route("/api/v1/edges", get(handlers::edges))
        .route("/api/v1/devices", get(handlers::devices))
        .route(
            "/api/v1/telemetry/{tenant}/{device}",
            get(handlers::telemetry),
        )
        .route(
            "/api/v1/regions/{region}/artifacts",
            // axum's default 2 MiB would refuse most real modules.
            post(monitors::upload_artifact).layer(DefaultBodyLimit::max(
                strata_protocol::workload::MAX_ARTIFACT_BYTES as usize,
            )),
        )
        .route(
            "/api/v1/regions/{region}/monitors",
            post(monitors::submit_monitor),
        )
        .route(
            "/api/v1/regions/{region}/monitors/{tenant}/{name}",
            get(monitors::get_monitor).delete(monitors::delete_monitor),
        )
        .route("/api/v1/monitors", get(monitors::list_monitors))
        .route("/api/v1/alerts", get(monitors::alerts))
        .route(
            "/api/v1/regions/{region}/retention",
            get(handlers::retention),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        strata_net::metrics::render(&state.inner.registry),
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Counts every request by method, route template and status.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only standard methods become label values: a client must not be able
    // to create label sets at will.
    let method = match *req.method() {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD => {
            req.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let resp = next.run(req).await;
    state
        .inner
        .http
        .requests
        .get_or_create(&HttpLabel {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
