//! One handler per API route. Handlers validate input, fan requests out to
//! the regions through [`RegionApi`](crate::region::RegionApi) and shape the
//! answers into [`views`](super::views). Extractor rejections are taken as
//! `Result`s so that they, too, answer with the JSON error body.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use futures::future::join_all;
use serde::Serialize;
use strata_protocol::{DeviceSearch, ReplicaInfo, TelemetryQuery};

use super::error::AppError;
use super::params;
use super::views::{
    AddReplicaBody, DeviceView, DevicesView, EdgeView, EdgesView, MembershipView, RegionFailure,
    RegionView, TelemetryData, TelemetryView,
};
use super::AppState;
use crate::region::{RegionApi, RegionError};

pub(super) type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;
type ApiResult<T> = Result<Json<T>, AppError>;
/// Per-region answers (region name, value) and the regions that failed.
pub(super) type Federated<T> = (Vec<(String, T)>, Vec<RegionFailure>);

/// `GET /api/v1/regions`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RegionsView {
    /// Every configured region.
    pub regions: Vec<RegionView>,
}

/// `GET /api/v1/regions`: every region with its replicas.
#[utoipa::path(
    get,
    path = "/api/v1/regions",
    tag = "regions",
    responses((status = 200, description = "Every configured region with its replicas", body = RegionsView), super::openapi::ApiErrors)
)]
pub async fn regions(State(state): State<AppState>) -> Json<RegionsView> {
    let all = join_all(state.regions().iter().map(|r| r.status())).await;
    Json(RegionsView {
        regions: all.into_iter().map(RegionView::from).collect(),
    })
}

/// `GET /api/v1/regions/{region}`: one region.
#[utoipa::path(
    get,
    path = "/api/v1/regions/{region}",
    tag = "regions",
    params(("region" = String, Path, description = "Region name")),
    responses((status = 200, description = "The region", body = super::views::RegionView), super::openapi::ApiErrors)
)]
pub async fn region(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<RegionView> {
    let Path(name) = path?;
    let region = state.region(&name)?;
    Ok(Json(region.status().await.into()))
}

/// The regions a `?region=` filter selects (all without one).
pub(super) fn select<'a>(
    state: &'a AppState,
    region: Option<&str>,
) -> Result<Vec<&'a std::sync::Arc<dyn RegionApi>>, AppError> {
    match region {
        Some(name) => Ok(vec![state.region(name)?]),
        None => Ok(state.regions().iter().collect()),
    }
}

/// Splits per-region results into successes and failures. With a region
/// filter, or when every region failed, the request fails with the first
/// error; otherwise failures are reported next to the partial answer.
pub(super) fn federate<T>(
    names: Vec<String>,
    results: Vec<Result<T, RegionError>>,
    filtered: bool,
) -> Result<Federated<T>, AppError> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut first_err = None;
    for (name, r) in names.into_iter().zip(results) {
        match r {
            Ok(v) => ok.push((name, v)),
            Err(e) => {
                let app = AppError::from(e);
                failed.push(RegionFailure {
                    region: name,
                    code: app.code.into(),
                    message: app.message.clone(),
                });
                first_err.get_or_insert(app);
            }
        }
    }
    match first_err {
        Some(e) if filtered || ok.is_empty() => Err(e),
        _ => Ok((ok, failed)),
    }
}

/// `GET /api/v1/edges[?region=]`: edge nodes of every (or one) region.
#[utoipa::path(
    get,
    path = "/api/v1/edges",
    tag = "topology",
    params(("region" = Option<String>, Query, description = "Only this region")),
    responses((status = 200, description = "Edges, region by region", body = super::views::EdgesView), super::openapi::ApiErrors)
)]
pub async fn edges(State(state): State<AppState>, query: Pairs) -> ApiResult<EdgesView> {
    let Query(pairs) = query?;
    let get = params::check(&pairs, &["region"])?;
    let regions = select(&state, get("region"))?;
    let names = regions.iter().map(|r| r.name().to_owned()).collect();
    let results = join_all(regions.iter().map(|r| r.edges())).await;
    let (ok, errors) = federate(names, results, get("region").is_some())?;
    let now = state.now_ms();
    let mut view = EdgesView {
        edges: Vec::new(),
        stale: false,
        errors,
    };
    for (region, served) in ok {
        view.stale |= served.stale;
        let mut edges = served.value;
        edges.sort_by(|a, b| a.edge.cmp(&b.edge));
        view.edges
            .extend(edges.into_iter().map(|e| EdgeView::new(&region, e, now)));
    }
    Ok(Json(view))
}

/// `GET /api/v1/devices[?tenant=&region=&search=&limit=&offset=]`: devices
/// with record counts, searched and paged here so a console never needs
/// the whole list.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "topology",
    params(
        ("tenant" = Option<String>, Query, description = "Only this tenant"),
        ("region" = Option<String>, Query, description = "Only this region"),
        ("search" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only devices whose tenant, id or edge contains this (ignoring case)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Most devices returned (default: every match)"),
        ("offset" = Option<u32>, Query, minimum = 0, maximum = 4294967295u32, description = "Matches skipped before the first returned (default 0)"),
    ),
    responses((status = 200, description = "Devices with stored telemetry, sorted by region, tenant and id", body = super::views::DevicesView), super::openapi::ApiErrors)
)]
pub async fn devices(State(state): State<AppState>, query: Pairs) -> ApiResult<DevicesView> {
    let Query(pairs) = query?;
    let p = params::devices(&pairs)?;
    let regions = select(&state, p.region.as_deref())?;
    let names = regions.iter().map(|r| r.name().to_owned()).collect();
    // Each region sends at most the matches up to the end of the page
    // (regions are listed in order, so a page never needs more of one).
    let want = p.limit.map_or(u32::MAX, |l| l.saturating_add(p.offset));
    let search = DeviceSearch {
        tenant: p.tenant.clone(),
        contains: p.search.clone(),
        limit: want,
    };
    let results = join_all(regions.iter().map(|r| r.search_devices(search.clone()))).await;
    let (ok, errors) = federate(names, results, p.region.is_some())?;
    let mut view = DevicesView {
        devices: Vec::new(),
        total: 0,
        stale: false,
        errors,
    };
    let limit = p.limit.map_or(usize::MAX, |l| l as usize);
    let mut skip = u64::from(p.offset);
    for (region, served) in ok {
        view.stale |= served.stale;
        view.total += served.value.matched;
        for d in served.value.devices {
            if skip > 0 {
                skip -= 1;
            } else if view.devices.len() < limit {
                view.devices.push(DeviceView::new(&region, d));
            }
        }
        // Matches this region counted but did not send are all past the
        // page (it sent the first `want`), so they only count.
    }
    Ok(Json(view))
}

/// One region's device counts ([`device_counts`]).
pub struct RegionDeviceCount {
    /// Region.
    pub region: String,
    /// Devices it holds.
    pub total: u64,
    /// Devices per edge they report through (empty name: not known).
    pub by_edge: Vec<(String, u64)>,
}

/// How many devices each region holds and how many report through each
/// of its edges, without listing them; and what could not be read.
pub async fn device_counts(state: &AppState) -> (Vec<RegionDeviceCount>, Vec<String>) {
    let search = DeviceSearch::default();
    let reads = state
        .regions()
        .iter()
        .map(|r| r.search_devices(search.clone()));
    let mut counts = Vec::new();
    let mut errors = Vec::new();
    for (r, res) in state.regions().iter().zip(join_all(reads).await) {
        match res {
            Ok(s) => counts.push(RegionDeviceCount {
                region: r.name().to_owned(),
                total: s.value.matched,
                by_edge: s.value.by_edge,
            }),
            Err(e) => errors.push(format!("devices of region {}: {e}", r.name())),
        }
    }
    (counts, errors)
}

/// Finds the region holding a device: the cache, else ask every region.
/// A device seen in several regions (it moved) is read where its latest
/// data is.
async fn locate(state: &AppState, tenant: &str, device: &str) -> Result<usize, AppError> {
    if let Some(i) = state.cached_device_region(tenant, device) {
        return Ok(i);
    }
    let lookups = state
        .regions()
        .iter()
        .map(|r| r.devices(Some(tenant.to_owned())));
    let mut best: Option<(usize, i64)> = None;
    let mut failures = Vec::new();
    for (i, res) in join_all(lookups).await.into_iter().enumerate() {
        match res {
            Ok(served) => {
                if let Some(d) = served.value.iter().find(|d| d.device == device) {
                    if best.is_none_or(|(_, ts)| d.last_ts_ms > ts) {
                        best = Some((i, d.last_ts_ms));
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    match best {
        Some((i, _)) => {
            state.remember_device_region(tenant, device, i);
            Ok(i)
        }
        None if failures.is_empty() => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-device",
            format!("device {tenant}/{device} is not known in any region"),
        )),
        None => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "region-unreachable",
            format!(
                "device {tenant}/{device} was not found in the regions that answered; {}",
                failures.join("; ")
            ),
        )),
    }
}

/// `GET /api/v1/telemetry/{tenant}/{device}?from=&to=&step=&limit=&region=`.
#[utoipa::path(
    get,
    path = "/api/v1/telemetry/{tenant}/{device}",
    tag = "telemetry",
    params(("tenant" = String, Path, description = "Tenant (as the device publishes it)"), ("device" = String, Path, description = "Device id"), ("from" = Option<i64>, Query, description = "Inclusive start, ms since the epoch (an RFC 3339 time is accepted too; default: an hour before `to`); before `to`"), ("to" = Option<i64>, Query, description = "Exclusive end, ms since the epoch (or RFC 3339; default: now)"), ("step" = Option<u64>, Query, minimum = 1, description = "Bucket width in ms: downsample into min/avg/max per metric"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "Most records or buckets"), ("region" = Option<String>, Query, min_length = 1, description = "Read from this region, skipping the device lookup")),
    responses((status = 200, description = "Raw records or downsampled buckets", body = super::views::TelemetryView), super::openapi::ApiErrors)
)]
pub async fn telemetry(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Pairs,
) -> ApiResult<TelemetryView> {
    let Path((tenant, device)) = path?;
    let Query(pairs) = query?;
    let p = params::telemetry(&pairs, state.now_ms())?;
    let idx = match &p.region {
        Some(name) => state.region_index(name)?,
        None => locate(&state, &tenant, &device).await?,
    };
    // Indices come from this state's fixed region list.
    let region = &state.regions()[idx];
    let served = region
        .query(TelemetryQuery {
            tenant: tenant.clone(),
            device: device.clone(),
            from_ms: p.from_ms,
            to_ms: p.to_ms,
            step_ms: p.step_ms,
            limit: p.limit,
        })
        .await?;
    let (count, data) = match served.value {
        strata_protocol::QueryResult::Raw(records) => (
            records.len(),
            TelemetryData::Raw {
                records: records.into_iter().map(Into::into).collect(),
            },
        ),
        strata_protocol::QueryResult::Downsampled(buckets) => (
            buckets.len(),
            TelemetryData::Downsampled {
                buckets: buckets.into_iter().map(Into::into).collect(),
            },
        ),
    };
    Ok(Json(TelemetryView {
        region: region.name().to_owned(),
        tenant,
        device,
        from_ms: p.from_ms,
        to_ms: p.to_ms,
        step_ms: p.step_ms,
        limit: p.limit,
        count,
        truncated: count >= p.limit as usize,
        stale: served.stale,
        served_by: served.addr,
        data,
    }))
}

/// `POST /api/v1/regions/{region}/replicas`: add a voter through the leader.
#[utoipa::path(
    post,
    path = "/api/v1/regions/{region}/replicas",
    tag = "regions",
    params(("region" = String, Path, description = "Region name")),
    request_body = super::views::AddReplicaBody,
    responses((status = 200, description = "The new membership", body = super::views::MembershipView), super::openapi::ApiErrors)
)]
pub async fn add_replica(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<AddReplicaBody>, JsonRejection>,
) -> ApiResult<MembershipView> {
    let Path(name) = path?;
    let region = state.region(&name)?;
    let Json(body) = body?;
    if body.id == 0 {
        return Err(AppError::bad_body("`id` must be a non-zero Raft id"));
    }
    for (field, addr) in [
        ("peer-addr", &body.peer_addr),
        ("client-addr", &body.client_addr),
    ] {
        crate::config::check_host_port(addr)
            .map_err(|why| AppError::bad_body(format!("`{field}` {addr:?}: {why}")))?;
    }
    let replica = ReplicaInfo {
        id: body.id,
        peer_addr: body.peer_addr,
        client_addr: body.client_addr,
        voter: true,
    };
    if let Some((_, members)) = region.status().await.leader_members() {
        check_add(&name, members, &replica)?;
    }
    let replicas = region.add_replica(replica).await?;
    Ok(Json(MembershipView {
        region: name,
        replicas: replicas.into_iter().map(Into::into).collect(),
    }))
}

/// `DELETE /api/v1/regions/{region}/replicas/{id}`: remove through the leader.
#[utoipa::path(
    delete,
    path = "/api/v1/regions/{region}/replicas/{id}",
    tag = "regions",
    params(("region" = String, Path, description = "Region name"), ("id" = u64, Path, description = "Raft id of the replica")),
    responses((status = 200, description = "The new membership", body = super::views::MembershipView), super::openapi::ApiErrors)
)]
pub async fn remove_replica(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<MembershipView> {
    let Path((name, id)) = path?;
    let region = state.region(&name)?;
    let id = match id.parse::<u64>() {
        Ok(0) | Err(_) => {
            return Err(AppError::bad_param(
                "id",
                format!("{id:?} is not a non-zero Raft id"),
            ))
        }
        Ok(id) => id,
    };
    if let Some((leader, members)) = region.status().await.leader_members() {
        check_remove(&name, leader, members, id)?;
    }
    let replicas = region.remove_replica(id).await?;
    Ok(Json(MembershipView {
        region: name,
        replicas: replicas.into_iter().map(Into::into).collect(),
    }))
}

/// Refuses an id that is already a member at other addresses: adding it
/// would re-address a live replica. (The same addresses again is a retry
/// and goes through; the leader answers it without a new entry.) The hub
/// refuses it too; checking here first gives a 409 instead of a 502.
fn check_add(region: &str, members: &[ReplicaInfo], new: &ReplicaInfo) -> Result<(), AppError> {
    match members.iter().find(|m| m.id == new.id) {
        Some(m) if m.peer_addr != new.peer_addr || m.client_addr != new.client_addr => {
            Err(AppError::new(
                StatusCode::CONFLICT,
                "replica-exists",
                format!(
                    "replica {} is already a member of region {region} (peer-addr {}, \
                     client-addr {}); remove it first to give its id to another replica",
                    m.id, m.peer_addr, m.client_addr
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses removing the leader (it cannot remove itself) or a non-member,
/// as the leader would, but with a 4xx status.
fn check_remove(
    region: &str,
    leader: u64,
    members: &[ReplicaInfo],
    id: u64,
) -> Result<(), AppError> {
    if id == leader {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "replica-is-leader",
            format!(
                "replica {id} is the leader of region {region} and cannot remove itself; \
                 retry once another replica leads (stopping hub {id} moves the leadership)"
            ),
        ));
    }
    if !members.iter().any(|m| m.id == id) {
        let ids: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown-replica",
            format!(
                "replica {id} is not a member of region {region} (members: {})",
                ids.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `GET /api/v1/regions/{region}/retention[?tenant=]`: what the region's
/// retention dropped, per tenant and reason (acknowledged readings that are
/// gone: older than retention on arrival, or expired with their partition).
#[utoipa::path(
    get,
    path = "/api/v1/regions/{region}/retention",
    tag = "telemetry",
    params(("region" = String, Path, description = "Region name"), ("tenant" = Option<String>, Query, description = "Only this tenant")),
    responses((status = 200, description = "What retention dropped", body = super::views::RetentionView), super::openapi::ApiErrors)
)]
pub async fn retention(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Pairs,
) -> ApiResult<super::views::RetentionView> {
    let Path(name) = path?;
    let Query(pairs) = query?;
    let get = params::check(&pairs, &["tenant"])?;
    let region = state.region(&name)?;
    let served = region.retention(get("tenant").map(str::to_owned)).await?;
    Ok(Json(super::views::RetentionView::new(&name, served)))
}
