//! Global workloads: a monitor spec plus a `[global]` table (how many
//! instances, in which regions), split over regions by central's global
//! scheduler and run by each region's own scheduler.
//!
//! ```toml
//! name = "temperature-anomaly"
//! tenant = "demo"
//! # … the rest of a monitor spec, without placement.count …
//! [global]
//! count = 4
//! size = { cpu-millicores = 50, memory-bytes = 16777216 }
//! locality = "devices"        # or spread = {}, regions = [{ region = "north" }]
//! ```
//!
//! A submission is checked before anything is stored: every bad field is
//! named (422 `invalid-spec`), and a workload that fits no region is
//! refused with each region's reason (422 `fits-no-region`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use strata_protocol::workload::{FieldError, MonitorSpec, SpecErrors};
use strata_sched::global::{
    split, GlobalEval, GlobalIntent, GlobalRejection, RegionHealth, RegionShare, ShareReason,
};
use strata_sched::scale::ScaleSpec;
use strata_sched::{EvalId, Timestamp, WorkloadId};

use super::error::AppError;
use super::handlers::Pairs;
use super::monitors::{spec_format, SpecFormat};
use super::AppState;
use crate::state::{CentralState, Command, GlobalRecord, Outcome, PlanRecord};

type ApiResult<T> = Result<Json<T>, AppError>;

/// One region's share in a workload view.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ShareView {
    /// The region.
    pub region: String,
    /// Instances it runs (its monitor's count).
    pub instances: u32,
    /// The region's health as central judges it now (`ok`, `degraded`,
    /// `down`, `unknown`: silent for longer than 30 s). A share in a region
    /// that is not ok or degraded is held there, not moved.
    #[schema(value_type = String)]
    pub health: RegionHealth,
    /// Why, most important first (from the last plan).
    #[schema(value_type = Vec<Object>)]
    pub reasons: Vec<ShareReason>,
}

/// A global workload as the API shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct WorkloadView {
    /// Owning tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Spec version.
    pub generation: u64,
    /// Where and how many.
    #[schema(value_type = Object)]
    pub global: GlobalIntent,
    /// Instances over all regions now.
    pub placed: u32,
    /// The split over regions, with the reasons of the last plan.
    pub split: Vec<ShareView>,
    /// Instances held by regions central cannot reach now (kept there, not
    /// doubled elsewhere).
    pub held_by_unreachable: u32,
    /// What the last plan could not place, region by region.
    pub short: Option<ShortView>,
    /// Deleted; waiting for the regions to drop it.
    pub deleting: bool,
    /// Autoscaling, when asked for.
    #[schema(value_type = Option<Object>)]
    pub scale: Option<ScaleSpec>,
    /// The autoscaler's current count (what the split divides).
    pub scaled: Option<u32>,
    /// Recent scale decisions, newest first, with their inputs (detail
    /// view only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    #[schema(value_type = Vec<Object>)]
    pub scale_history: Vec<crate::state::ScaleRecord>,
    /// Created at, ms since the epoch.
    pub created_ms: i64,
    /// Last changed at, ms since the epoch.
    pub updated_ms: i64,
    /// The monitor spec every region runs (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub monitor: Option<MonitorSpec>,
    /// Recent plans, newest first (detail view only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub plans: Vec<PlanView>,
    /// The measured load the autoscaler forecasts from, one point per
    /// forecast step (detail view of an autoscaled workload only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub load: Option<LoadView>,
}

/// An autoscaled workload's measured load history, as replicated in
/// central's state (the forecaster's input).
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct LoadView {
    /// The scale metric the points measure (`records-per-second`, `cpu`,
    /// `queue-depth`), summed over the workload's instances.
    pub metric: String,
    /// Milliseconds between points.
    pub step_ms: u64,
    /// Time of the first point, ms since the epoch.
    pub first_ms: i64,
    /// Points, oldest first (at most 4096).
    pub values: Vec<f64>,
}

/// Instances that fit nowhere, and why.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ShortView {
    /// Instances not placed.
    pub unplaced: u32,
    /// Instances the plan wanted to place.
    pub wanted: u32,
    /// Each region that took none or no more, with why.
    pub regions: BTreeMap<String, String>,
}

/// One plan in a workload's history.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct PlanView {
    /// Log index it was applied at.
    pub index: u64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Spec generation it was made for.
    pub generation: u64,
    /// Every region's share and reasons.
    #[schema(value_type = Object)]
    pub shares: BTreeMap<String, RegionShare>,
    /// What it could not place.
    pub short: Option<ShortView>,
    /// Regions the applier refused or trimmed (the state had moved on).
    #[schema(value_type = Object)]
    pub rejected: BTreeMap<String, GlobalRejection>,
}

fn short_view(p: &PlanRecord) -> Option<ShortView> {
    p.failed.as_ref().map(|f| ShortView {
        unplaced: f.unplaced,
        wanted: f.wanted,
        regions: f.regions.clone(),
    })
}

/// The health of `region` at `now_ms` as the state knows it.
fn health(s: &CentralState, region: &str, now_ms: i64) -> RegionHealth {
    s.reports().get(region).map_or(RegionHealth::Unknown, |r| {
        r.health_at(
            Timestamp::from_millis(now_ms),
            s.snapshot().config().stale_after,
        )
    })
}

fn view(s: &CentralState, r: &GlobalRecord, detail: bool, now_ms: i64) -> WorkloadView {
    let last = r.plans.back();
    let split: Vec<ShareView> = r
        .split
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(region, n)| ShareView {
            region: region.clone(),
            instances: *n,
            health: health(s, region, now_ms),
            reasons: last
                .and_then(|p| p.shares.get(region))
                .map(|s| s.reasons.clone())
                .unwrap_or_default(),
        })
        .collect();
    let held = split
        .iter()
        .filter(|v| !matches!(v.health, RegionHealth::Ok | RegionHealth::Degraded))
        .map(|v| v.instances)
        .sum();
    WorkloadView {
        tenant: r.monitor.tenant.clone(),
        name: r.monitor.name.clone(),
        generation: r.generation,
        global: r.intent.clone(),
        placed: r.split.values().sum(),
        split,
        held_by_unreachable: held,
        short: last.and_then(short_view),
        deleting: r.deleting,
        scale: r.scale.clone(),
        scaled: r.scaled,
        scale_history: if detail {
            r.scale_history.iter().rev().cloned().collect()
        } else {
            Vec::new()
        },
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        monitor: detail.then(|| r.monitor.clone()),
        plans: if detail {
            r.plans
                .iter()
                .rev()
                .map(|p| PlanView {
                    index: p.index,
                    at_ms: p.at_ms,
                    generation: p.generation,
                    shares: p.shares.clone(),
                    short: short_view(p),
                    rejected: p.rejected.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        load: r
            .load_history
            .as_ref()
            .filter(|_| detail)
            .map(|h| LoadView {
                metric: h.metric.clone(),
                step_ms: h.step_ms,
                first_ms: h.first_step.saturating_mul(h.step_ms as i64),
                values: h.to_vec(),
            }),
    }
}

/// `GET /api/v1/workloads`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct WorkloadsView {
    /// Whether this answer may lag the leader (`?stale=true`).
    pub stale: bool,
    /// Global workloads, by tenant and name.
    pub workloads: Vec<WorkloadView>,
}

/// `?tenant=&stale=`.
fn list_params(pairs: Pairs) -> Result<(Option<String>, bool), AppError> {
    let axum::extract::Query(pairs) = pairs?;
    let (mut tenant, mut stale) = (None, false);
    for (k, v) in pairs {
        match k.as_str() {
            "tenant" => tenant = Some(v),
            "stale" => {
                stale = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(AppError::bad_param(
                            "stale",
                            format!("{other:?} is not true or false"),
                        ))
                    }
                }
            }
            other => {
                return Err(AppError::bad_param(
                    other,
                    "unknown parameter (known: tenant, stale)",
                ))
            }
        }
    }
    Ok((tenant, stale))
}

/// `GET /api/v1/workloads[?tenant=&stale=true]`.
#[utoipa::path(
    get,
    path = "/api/v1/workloads",
    tag = "workloads",
    params(("tenant" = Option<String>, Query, description = "Only this tenant"), ("stale" = Option<bool>, Query, description = "true: answer from this replica without asking the leader (may lag)")),
    responses((status = 200, description = "Global workloads and their split", body = WorkloadsView), super::openapi::ApiErrors)
)]
pub async fn list(State(state): State<AppState>, q: Pairs) -> ApiResult<WorkloadsView> {
    let (tenant, stale) = list_params(q)?;
    let now = state.now_ms();
    let workloads = state
        .cluster()?
        .read(stale, move |s| {
            s.global()
                .values()
                .filter(|r| tenant.as_deref().is_none_or(|t| r.monitor.tenant == t))
                .map(|r| view(s, r, false, now))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(WorkloadsView { stale, workloads }))
}

/// `GET /api/v1/workloads/{tenant}/{name}`: the workload with its spec and
/// plan history.
#[utoipa::path(
    get,
    path = "/api/v1/workloads/{tenant}/{name}",
    tag = "workloads",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Tenant"), ("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Workload name"), ("stale" = Option<bool>, Query, description = "true: answer from this replica without asking the leader (may lag)")),
    responses((status = 200, description = "The workload with its spec, split, plans and scale decisions", body = WorkloadView), super::openapi::ApiErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    q: Pairs,
) -> ApiResult<WorkloadView> {
    let Path((tenant, name)) = path?;
    let (_, stale) = list_params(q)?;
    let id = WorkloadId::new(&tenant, &name);
    let now = state.now_ms();
    let found = state
        .cluster()?
        .read(stale, move |s| {
            s.global().get(&id).map(|r| view(s, r, true, now))
        })
        .await?;
    found.map(Json).ok_or_else(|| {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("global workload {tenant}/{name} does not exist"),
        )
    })
}

/// Parses a submission: a monitor spec with a `global` table, as JSON or
/// TOML (by `Content-Type`). Shape errors are 400 with the parser's words.
/// Without `global.size`, an instance's size is the monitor's own
/// `resources` (what each region reserves for it).
pub fn parse_submission(content_type: Option<&str>, body: &[u8]) -> Result<Submission, AppError> {
    let (monitor, mut intent, scale) = parse_parts(content_type, body)?;
    if intent.size == strata_sched::Resources::ZERO {
        intent.size = strata_sched::Resources::new(
            u64::from(monitor.resources.cpu_millicores),
            u64::from(monitor.resources.memory_mib) << 20,
        );
    }
    Ok((monitor, intent, scale))
}

/// A parsed submission: the monitor, where and how many, and autoscaling.
pub type Submission = (MonitorSpec, GlobalIntent, Option<ScaleSpec>);

fn parse_parts(content_type: Option<&str>, body: &[u8]) -> Result<Submission, AppError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| AppError::bad_body(format!("workload spec is not UTF-8 text ({e})")))?;
    let missing = || {
        AppError::bad_body("has no `global` table: say how many instances and where (global.count)")
    };
    match spec_format(content_type)? {
        SpecFormat::Json => {
            let mut v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| AppError::bad_body(format!("workload spec (JSON): {e}")))?;
            let global = v
                .as_object_mut()
                .and_then(|o| o.remove("global"))
                .ok_or_else(missing)?;
            let intent: GlobalIntent = serde_json::from_value(global)
                .map_err(|e| AppError::bad_body(format!("global (JSON): {e}")))?;
            let scale = match v.as_object_mut().and_then(|o| o.remove("scale")) {
                Some(s) => Some(
                    serde_json::from_value::<ScaleSpec>(s)
                        .map_err(|e| AppError::bad_body(format!("scale (JSON): {e}")))?,
                ),
                None => None,
            };
            let monitor = MonitorSpec::from_json_str(&v.to_string())
                .map_err(|e| AppError::bad_body(format!("workload spec (JSON): {e}")))?;
            Ok((monitor, intent, scale))
        }
        SpecFormat::Toml => {
            let mut v: toml::Table = toml::from_str(text).map_err(|e| {
                AppError::bad_body(format!(
                    "workload spec (TOML): {}",
                    e.to_string().trim_end()
                ))
            })?;
            let global = v.remove("global").ok_or_else(missing)?;
            let intent: GlobalIntent = global.try_into().map_err(|e: toml::de::Error| {
                AppError::bad_body(format!("global (TOML): {}", e.to_string().trim_end()))
            })?;
            let scale = match v.remove("scale") {
                Some(s) => Some(s.try_into::<ScaleSpec>().map_err(|e: toml::de::Error| {
                    AppError::bad_body(format!("scale (TOML): {}", e.to_string().trim_end()))
                })?),
                None => None,
            };
            let monitor: MonitorSpec =
                toml::Value::Table(v)
                    .try_into()
                    .map_err(|e: toml::de::Error| {
                        AppError::bad_body(format!(
                            "workload spec (TOML): {}",
                            e.to_string().trim_end()
                        ))
                    })?;
            Ok((monitor, intent, scale))
        }
    }
}

/// What checking a submission against the state found.
enum Check {
    Ok { exists: bool },
    Invalid(Vec<FieldError>),
    FitsNowhere(BTreeMap<String, String>),
}

/// `POST /api/v1/workloads`: creates (201) or updates (200) a global
/// workload. Nothing is stored unless it is valid and fits some region.
#[utoipa::path(
    post,
    path = "/api/v1/workloads",
    tag = "workloads",
    request_body(description = "A monitor spec with a `[global]` block (and optionally `scale`), as JSON or TOML", content((Object = "application/json"), (String = "application/toml"))),
    responses((status = 201, description = "Created", body = WorkloadView), (status = 200, description = "Updated", body = WorkloadView), super::openapi::ApiErrors)
)]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<WorkloadView>), AppError> {
    let body = body.map_err(|r| AppError::bad_body(r.body_text()))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (monitor, intent, scale) = parse_submission(content_type, &body)?;
    let who = format!("global workload {}/{}", monitor.tenant, monitor.name);
    let now = state.now_ms();
    let cluster = state.cluster()?;
    let (m, i, sc) = (monitor.clone(), intent.clone(), scale.clone());
    let check = cluster
        .read(false, move |s| {
            let problems = s.global_problems(&m, &i, sc.as_ref());
            if !problems.is_empty() {
                return Check::Invalid(problems);
            }
            let id = WorkloadId::new(&m.tenant, &m.name);
            let exists = s.global().get(&id).is_some_and(|r| !r.deleting);
            // A dry run of the split on a copy of the snapshot.
            let mut snap = s.snapshot().clone();
            let generation = s.global().get(&id).map_or(1, |r| r.generation + 1);
            // With autoscaling, the first split is of its minimum.
            let mut dry = i.clone();
            if let Some(sc) = &sc {
                dry.count = Some(
                    dry.count
                        .unwrap_or(sc.min)
                        .clamp(sc.min, sc.max.max(sc.min)),
                );
            }
            let w = strata_sched::global::GlobalWorkload {
                id: id.clone(),
                generation,
                intent: dry,
                stacks: sc.is_some(),
            };
            snap.upsert_workload(w.clone());
            let eval = GlobalEval {
                id: EvalId(0),
                workload: id,
                snapshot_index: 0,
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            match split(&snap, &w, &eval, Timestamp::from_millis(now), &mut rng) {
                Ok(p) if p.failed.as_ref().is_some_and(|f| f.fits_no_region()) => {
                    Check::FitsNowhere(p.failed.map(|f| f.regions).unwrap_or_default())
                }
                _ => Check::Ok { exists },
            }
        })
        .await?;
    let exists = match check {
        Check::Ok { exists } => exists,
        Check::Invalid(fields) => return Err(AppError::invalid_spec(&who, SpecErrors(fields))),
        Check::FitsNowhere(regions) => {
            let why = if regions.is_empty() {
                "no region has reported its capacity yet".to_owned()
            } else {
                regions
                    .iter()
                    .map(|(r, w)| format!("{r}: {w}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let mut e = AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "fits-no-region",
                format!("{who} fits no region: {why}"),
            );
            e.fields = Some(
                regions
                    .into_iter()
                    .map(|(r, w)| FieldError {
                        field: format!("global (region {r})"),
                        message: w,
                    })
                    .collect(),
            );
            return Err(e);
        }
    };
    let id = WorkloadId::new(&monitor.tenant, &monitor.name);
    let cmd = Command::PutGlobal {
        monitor: Box::new(monitor),
        intent,
        scale,
        now_ms: now,
    };
    match cluster.propose(&cmd).await? {
        Outcome::Applied | Outcome::Unchanged => {}
        Outcome::Refused { reason } => {
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-spec",
                format!("{who}: {reason}"),
            ))
        }
        Outcome::NotFound { what } => {
            return Err(AppError::new(StatusCode::NOT_FOUND, "not-found", what))
        }
    }
    let stored = cluster
        .read(false, move |s| {
            s.global().get(&id).map(|r| view(s, r, true, now))
        })
        .await?
        .ok_or_else(|| {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-leader",
                format!("{who} was stored but is not readable yet; retry"),
            )
        })?;
    let status = if exists {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(stored)))
}

/// `DELETE /api/v1/workloads/{tenant}/{name}`: every region's share goes
/// to 0; the workload is forgotten once the regions dropped it.
#[utoipa::path(
    delete,
    path = "/api/v1/workloads/{tenant}/{name}",
    tag = "workloads",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Tenant"), ("name" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Workload name")),
    responses((status = 200, description = "Deleted (regions drop their shares)", body = super::cluster::WriteView), super::openapi::ApiErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<super::cluster::WriteView> {
    let Path((tenant, name)) = path?;
    let id = WorkloadId::new(&tenant, &name);
    match state
        .cluster()?
        .propose(&Command::DeleteGlobal { id })
        .await?
    {
        Outcome::Applied => Ok(Json(super::cluster::WriteView {
            result: "applied".into(),
        })),
        Outcome::Unchanged => Ok(Json(super::cluster::WriteView {
            result: "unchanged".into(),
        })),
        Outcome::NotFound { what } => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} does not exist"),
        )),
        Outcome::Refused { reason } => Err(AppError::new(StatusCode::CONFLICT, "conflict", reason)),
    }
}

/// `POST /api/v1/artifacts`: one module stored in every region, so that a
/// global workload can run anywhere.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ArtifactsView {
    /// The module's content hash.
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
    /// Regions that stored it (or already had it).
    pub stored: Vec<String>,
    /// Regions that could not be reached or refused it, with why.
    pub failed: BTreeMap<String, String>,
}

/// `POST /api/v1/artifacts`: uploads the module to every region. 201 when
/// every region has it, 207-like partial answers as 502 `partial` naming
/// the regions that failed (retrying is safe: content-addressed).
#[utoipa::path(
    post,
    path = "/api/v1/artifacts",
    tag = "workloads",
    request_body(description = "A WebAssembly module", content((Vec<u8> = "application/wasm"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "Stored in every region", body = ArtifactsView), super::openapi::ApiErrors)
)]
pub async fn upload_everywhere(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ArtifactsView>), AppError> {
    let body = body.map_err(|r| AppError::bad_body(r.body_text()))?;
    if body.is_empty() {
        return Err(AppError::bad_body(
            "is empty: send the module's bytes (Content-Type: application/wasm)",
        ));
    }
    let uploads = futures::future::join_all(
        state
            .regions()
            .iter()
            .map(|r| async { (r.name().to_owned(), r.put_artifact(body.to_vec()).await) }),
    )
    .await;
    let mut view = ArtifactsView {
        sha256: String::new(),
        size_bytes: body.len() as u64,
        stored: Vec::new(),
        failed: BTreeMap::new(),
    };
    let mut invalid = None;
    for (region, r) in uploads {
        match r {
            Ok(stored) => {
                view.sha256 = stored.sha256.clone();
                view.stored.push(region);
            }
            Err(e @ crate::region::RegionError::Invalid { .. }) => invalid = Some(e),
            Err(e) => {
                view.failed.insert(region, e.to_string());
            }
        }
    }
    if let Some(e) = invalid {
        // Not a module: every region says so; nothing to retry.
        return Err(e.into());
    }
    let status = if view.failed.is_empty() {
        StatusCode::CREATED
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((status, Json(view)))
}
