//! The HTTP JSON API (axum): routes, shared state and request metrics.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it
//! with `tower::ServiceExt::oneshot` and an in-memory [`RegionApi`]. Its
//! route table is the one place that says which [`Action`] each API route
//! needs and which body it takes.
//!
//! - [`guard`]: the per-route middleware: token, policy, body type and
//!   size, before the handler.
//! - [`error`]: the JSON error body and rejection conversions.
//! - [`params`]: query-string parsing (pure).
//! - [`views`]: response and request bodies.
//! - [`handlers`]: one async fn per route (cluster, devices, telemetry).
//! - [`monitors`]: artifact, monitor and alert routes; [`monitor_views`]
//!   their bodies.
//! - [`events`]: the region event log, paged (long poll) and streamed
//!   (Server-Sent Events).
//! - [`stream`]: the console's live feed (Server-Sent Events); the
//!   console's static files are [`crate::console`], outside the guard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use strata_protocol::workload::MAX_ARTIFACT_BYTES;
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, Action};
use crate::metrics::{AuthMetrics, HttpLabel, HttpMetrics, LimitMetrics};
use crate::region::RegionApi;
use guard::{Guard, Media};

pub mod cluster;
pub mod error;
pub mod events;
pub mod guard;
pub mod handlers;
pub mod monitor_views;
pub mod monitors;
pub mod openapi;
pub mod params;
pub mod stream;
pub mod views;
pub mod workloads;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod events_tests;
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
    auth: AuthMetrics,
    limits: LimitMetrics,
    options: AppOptions,
    clock: Clock,
    /// (tenant, device) → index into `regions`.
    device_regions: Mutex<HashMap<(String, String), usize>>,
    /// The consoles' shared live feed.
    feed: stream::Feed,
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

/// Who may call the API and how large bodies may be.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The operator token and the policy. The default knows no token, so
    /// every API route answers 401 (only `/health` and `/metrics` open).
    pub access: Access,
    /// Largest JSON or TOML body, bytes (`http.max-body-bytes`).
    pub max_body_bytes: usize,
    /// Longest long poll of `GET …/events?wait=`: it must end within
    /// `http.request-timeout` (see [`events`]).
    pub events_max_wait: Duration,
    /// Keep-alive comment period of event streams: under half of
    /// `http.idle-timeout`, which would otherwise close an idle stream.
    pub stream_keep_alive: Duration,
    /// Time between the console feed's snapshots (`stream::TICK`; shorter
    /// in tests).
    pub console_tick: Duration,
    /// Cancelled when central stops: event streams end then (a stream
    /// never ends by itself, and shutdown waits for responses).
    pub streams: CancellationToken,
    /// This replica of central's Raft group; `None` in tests of routes
    /// that do not need it (its routes then answer 503).
    pub cluster: Option<crate::replica::Cluster>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            access: Access::new(None, crate::auth::Policy::new(false, true)),
            max_body_bytes: crate::config::HttpConfig::default().max_body_bytes,
            events_max_wait: Duration::from_secs(30),
            stream_keep_alive: Duration::from_secs(15),
            console_tick: stream::TICK,
            streams: CancellationToken::new(),
            cluster: None,
        }
    }
}

impl AppState {
    /// State over `regions`, serving `registry` (plus the HTTP metrics
    /// registered into it here) on `/metrics`, with default
    /// [`AppOptions`] (no valid token).
    pub fn new(regions: Vec<Arc<dyn RegionApi>>, registry: Registry) -> AppState {
        AppState::with_options(regions, registry, system_clock(), AppOptions::default())
    }

    /// Like [`AppState::new`] with a given clock.
    pub fn with_clock(
        regions: Vec<Arc<dyn RegionApi>>,
        registry: Registry,
        clock: Clock,
    ) -> AppState {
        AppState::with_options(regions, registry, clock, AppOptions::default())
    }

    /// State with a clock and the access rules and limits of `options`.
    pub fn with_options(
        regions: Vec<Arc<dyn RegionApi>>,
        mut registry: Registry,
        clock: Clock,
        options: AppOptions,
    ) -> AppState {
        let http = HttpMetrics::register(&mut registry);
        let auth = AuthMetrics::register(&mut registry);
        let limits = LimitMetrics::register(&mut registry);
        AppState {
            inner: Arc::new(Inner {
                regions,
                registry,
                http,
                auth,
                limits,
                options,
                clock,
                device_regions: Mutex::new(HashMap::new()),
                feed: stream::Feed::default(),
            }),
        }
    }

    /// The consoles' shared live feed.
    pub fn feed(&self) -> &stream::Feed {
        &self.inner.feed
    }

    /// The access rules.
    pub fn access(&self) -> &Access {
        &self.inner.options.access
    }

    /// The options it was built with.
    pub fn options(&self) -> &AppOptions {
        &self.inner.options
    }

    /// This replica of central's group, or 503 when it is not running.
    pub fn cluster(&self) -> Result<&crate::replica::Cluster, AppError> {
        self.inner.options.cluster.as_ref().ok_or_else(|| {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-cluster",
                "central's replicated state is not running on this server",
            )
        })
    }

    /// Refused requests, by reason.
    pub fn auth_metrics(&self) -> &AuthMetrics {
        &self.inner.auth
    }

    /// HTTP limits that fired (also counted by the server's connections).
    pub fn limit_metrics(&self) -> &LimitMetrics {
        &self.inner.limits
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

/// Builds the API routes: each one declares the [`Action`] it needs and
/// the body it takes, and gets a [`Guard`] and a body limit from them.
struct Routes {
    router: Router<AppState>,
    state: AppState,
    /// Every path in the table, for the test that the API document names
    /// them all.
    paths: Vec<&'static str>,
}

impl Routes {
    /// A route with a JSON or TOML body (or none).
    fn route(self, path: &'static str, action: Action, handler: MethodRouter<AppState>) -> Routes {
        let max_body = self.state.inner.options.max_body_bytes;
        self.add(path, action, Media::Text, max_body, handler)
    }

    /// A route that takes a WebAssembly module.
    fn upload(self, path: &'static str, action: Action, handler: MethodRouter<AppState>) -> Routes {
        self.add(
            path,
            action,
            Media::Module,
            MAX_ARTIFACT_BYTES as usize,
            handler,
        )
    }

    fn add(
        mut self,
        path: &'static str,
        action: Action,
        media: Media,
        max_body: usize,
        handler: MethodRouter<AppState>,
    ) -> Routes {
        let guard = Guard {
            state: self.state.clone(),
            action,
            media,
            max_body,
        };
        // route_layer: only the methods given here are guarded, so another
        // method on the same path (declared separately) gets its own guard,
        // and a wrong method still answers 405.
        let handler = handler
            .layer(DefaultBodyLimit::max(max_body))
            .route_layer(axum::middleware::from_fn_with_state(guard, guard::guard));
        self.router = self.router.route(path, handler);
        self.paths.push(path);
        self
    }
}

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let routes = table(state.clone());
    routes
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Every path the API routes (the document must name each one).
#[cfg(test)]
pub(crate) fn route_paths(state: AppState) -> Vec<&'static str> {
    table(state).paths
}

/// The route table.
fn table(state: AppState) -> Routes {
    let routes = Routes {
        // The only routes without a guard: liveness, and static pages
        // compiled into the binary that hold no data and must load before
        // anyone can log in: the console and the API reference page (which
        // then read with the token the console keeps).
        router: Router::new()
            .route("/health", get(health))
            .route("/api/v1/docs", get(openapi::reference_page))
            .merge(crate::console::router()),
        state: state.clone(),
        paths: vec!["/health", "/api/v1/docs"],
    };
    // The route table: path, what it needs, handler. `/health` and the
    // console's static files (above; they hold no data) are the only
    // routes without a guard; `/metrics` is open unless
    // `auth.open-metrics = false` (the policy decides).
    routes
        .route("/metrics", Action::ReadMetrics, get(metrics))
        .route(
            "/api/v1/openapi.json",
            Action::ReadCluster,
            get(openapi::openapi_json),
        )
        .route(
            "/api/v1/regions",
            Action::ReadCluster,
            get(handlers::regions),
        )
        .route(
            "/api/v1/regions/{region}",
            Action::ReadCluster,
            get(handlers::region),
        )
        .route(
            "/api/v1/regions/{region}/replicas",
            Action::ChangeMembership,
            post(handlers::add_replica),
        )
        .route(
            "/api/v1/regions/{region}/replicas/{id}",
            Action::ChangeMembership,
            delete(handlers::remove_replica),
        )
        .route(
            "/api/v1/workloads",
            Action::WriteMonitors,
            post(workloads::submit),
        )
        .route(
            "/api/v1/workloads",
            Action::ReadMonitors,
            get(workloads::list),
        )
        .route(
            "/api/v1/workloads/{tenant}/{name}",
            Action::ReadMonitors,
            get(workloads::get),
        )
        .route(
            "/api/v1/workloads/{tenant}/{name}",
            Action::WriteMonitors,
            delete(workloads::delete),
        )
        .upload(
            "/api/v1/artifacts",
            Action::UploadArtifact,
            post(workloads::upload_everywhere),
        )
        .route("/api/v1/central", Action::ReadCluster, get(cluster::status))
        .route(
            "/api/v1/central/regions",
            Action::ReadCluster,
            get(cluster::registry),
        )
        .route(
            "/api/v1/tenants",
            Action::ReadCluster,
            get(cluster::tenants),
        )
        .route(
            "/api/v1/tenants/{tenant}",
            Action::WriteCluster,
            put(cluster::put_tenant).delete(cluster::delete_tenant),
        )
        .route("/api/v1/edges", Action::ReadEdges, get(handlers::edges))
        .route(
            "/api/v1/devices",
            Action::ReadDevices,
            get(handlers::devices),
        )
        .route(
            "/api/v1/telemetry/{tenant}/{device}",
            Action::ReadTelemetry,
            get(handlers::telemetry),
        )
        .upload(
            "/api/v1/regions/{region}/artifacts",
            Action::UploadArtifact,
            post(monitors::upload_artifact),
        )
        .route(
            "/api/v1/regions/{region}/monitors",
            Action::WriteMonitors,
            post(monitors::submit_monitor),
        )
        .route(
            "/api/v1/regions/{region}/monitors/{tenant}/{name}",
            Action::ReadMonitors,
            get(monitors::get_monitor),
        )
        .route(
            "/api/v1/regions/{region}/monitors/{tenant}/{name}",
            Action::WriteMonitors,
            delete(monitors::delete_monitor),
        )
        .route(
            "/api/v1/monitors",
            Action::ReadMonitors,
            get(monitors::list_monitors),
        )
        .route("/api/v1/alerts", Action::ReadAlerts, get(monitors::alerts))
        .route(
            "/api/v1/regions/{region}/retention",
            Action::ReadDevices,
            get(handlers::retention),
        )
        .route(
            "/api/v1/regions/{region}/events",
            Action::ReadEvents,
            get(events::events),
        )
        .route(
            "/api/v1/regions/{region}/events/stream",
            Action::ReadEvents,
            get(events::stream),
        )
        .route("/api/v1/stream", Action::ReadCluster, get(stream::stream))
}

/// Liveness: answers while the process serves HTTP. Open.
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    security(()),
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object))
)]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Prometheus metrics (OpenMetrics text). Open unless
/// `auth.open-metrics = false`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    security((), ("operator-token" = [])),
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        openapi::ApiErrors
    )
)]
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
