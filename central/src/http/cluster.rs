//! Routes over central's own replicated state (`crate::replica`): the
//! answering replica's Raft status, the region registry and tenants.
//!
//! Reads are linearizable unless `?stale=true` (answered from the local
//! replica at once, possibly behind the leader). Writes go through the
//! leader from any replica.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use strata_protocol::{PeerProgress, RaftRole, ReplicaInfo};

use super::error::AppError;
use super::handlers::Pairs;
use super::AppState;
use crate::replica::ClusterError;
use crate::state::{CentralState, Command, Outcome, RegionRecord, TenantRecord};
use strata_sched::global::{RegionHealth, RegionSummary};
use strata_sched::Timestamp;

type ApiResult<T> = Result<Json<T>, AppError>;

impl From<ClusterError> for AppError {
    fn from(e: ClusterError) -> AppError {
        match e {
            ClusterError::Unavailable { .. } => {
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "no-leader", e.to_string())
            }
            ClusterError::Rejected { .. } => {
                AppError::new(StatusCode::BAD_REQUEST, "rejected", e.to_string())
            }
        }
    }
}

/// The answer to a write: what it did.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct WriteView {
    /// `applied` (the state changed) or `unchanged` (it already was so).
    pub result: String,
}

/// Maps a state outcome to the API's answer: 200 with what happened, 404
/// or 400 with the reason.
fn outcome(o: Outcome) -> ApiResult<WriteView> {
    match o {
        Outcome::Applied => Ok(Json(WriteView {
            result: "applied".into(),
        })),
        Outcome::Unchanged => Ok(Json(WriteView {
            result: "unchanged".into(),
        })),
        Outcome::NotFound { what } => Err(AppError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} does not exist"),
        )),
        Outcome::Refused { reason } => Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            reason,
        )),
    }
}

/// `?stale=true|false` (default false); any other parameter is refused.
fn stale(pairs: Pairs) -> Result<bool, AppError> {
    let axum::extract::Query(pairs) = pairs?;
    let mut stale = false;
    for (k, v) in pairs {
        match (k.as_str(), v.as_str()) {
            ("stale", "true") => stale = true,
            ("stale", "false") => stale = false,
            ("stale", other) => {
                return Err(AppError::bad_param(
                    "stale",
                    format!("{other:?} is not true or false"),
                ))
            }
            (other, _) => {
                return Err(AppError::bad_param(
                    other,
                    "unknown parameter (known: stale)",
                ))
            }
        }
    }
    Ok(stale)
}

/// `GET /api/v1/central`: the answering replica's view of central's group.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct CentralView {
    /// The replica that answered.
    pub replica: u64,
    /// Its Raft role.
    #[schema(value_type = String)]
    pub role: RaftRole,
    /// Current term.
    pub term: u64,
    /// The leader's id, when known.
    pub leader: Option<u64>,
    /// The leader's HTTP address, when known.
    pub leader_http: Option<String>,
    /// Highest committed index.
    pub commit_index: u64,
    /// Highest applied index here.
    pub applied_index: u64,
    /// Members (`client-addr` is each one's HTTP address).
    #[schema(value_type = Vec<Object>)]
    pub replicas: Vec<ReplicaInfo>,
    /// The leader's view of each member (empty on followers).
    #[schema(value_type = Vec<Object>)]
    pub peers: Vec<PeerProgress>,
}

/// `GET /api/v1/central`.
#[utoipa::path(
    get,
    path = "/api/v1/central",
    tag = "central",
    responses((status = 200, description = "The answering replica's view of central's group", body = CentralView), super::openapi::ApiErrors)
)]
pub async fn status(State(state): State<AppState>) -> ApiResult<CentralView> {
    let s = state.cluster()?.status().await?;
    let leader_http = s.leader.and_then(|l| {
        s.replicas
            .iter()
            .find(|r| r.id == l)
            .map(|r| r.client_addr.clone())
    });
    Ok(Json(CentralView {
        replica: s.id,
        role: s.role,
        term: s.term,
        leader: s.leader,
        leader_http,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        replicas: s.replicas,
        peers: s.peers,
    }))
}

/// `GET /api/v1/central/regions`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryView {
    /// Whether this answer may lag the leader (`?stale=true`).
    pub stale: bool,
    /// Registered regions, by name.
    pub regions: Vec<RegionRecordView>,
}

/// One registered region.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct RegionRecordView {
    /// Region name.
    pub name: String,
    /// Hub addresses.
    pub hubs: Vec<String>,
    /// Registered at, ms since the epoch.
    pub registered_ms: i64,
    /// Last changed at, ms since the epoch.
    pub updated_ms: i64,
    /// Its health as central judges it now: `ok`, `degraded`, `down` or
    /// `unknown` (no summary for longer than 30 s).
    #[schema(value_type = String)]
    pub health: RegionHealth,
    /// Its last summary: capacity per pool (instances of standard sizes
    /// that fit, summed per edge), device locality per tenant, and what it
    /// runs of each global workload.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<RegionSummary>,
}

impl RegionRecordView {
    fn new(r: &RegionRecord, s: &CentralState, now_ms: i64) -> Self {
        let summary = s.reports().get(&r.name).cloned();
        let health = summary.as_ref().map_or(RegionHealth::Unknown, |x| {
            x.health_at(
                Timestamp::from_millis(now_ms),
                s.snapshot().config().stale_after,
            )
        });
        RegionRecordView {
            name: r.name.clone(),
            hubs: r.hubs.clone(),
            registered_ms: r.registered_ms,
            updated_ms: r.updated_ms,
            health,
            summary,
        }
    }
}

/// `GET /api/v1/central/regions[?stale=true]`: the region registry.
#[utoipa::path(
    get,
    path = "/api/v1/central/regions",
    tag = "central",
    params(("stale" = Option<bool>, Query, description = "true: answer from this replica without asking the leader (may lag)")),
    responses((status = 200, description = "Registered regions with their summaries", body = RegistryView), super::openapi::ApiErrors)
)]
pub async fn registry(State(state): State<AppState>, q: Pairs) -> ApiResult<RegistryView> {
    let stale = stale(q)?;
    let now = state.now_ms();
    let regions = state
        .cluster()?
        .read(stale, move |s| {
            s.regions()
                .values()
                .map(|r| RegionRecordView::new(r, s, now))
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(RegistryView { stale, regions }))
}

/// `GET /api/v1/tenants`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TenantsView {
    /// Whether this answer may lag the leader (`?stale=true`).
    pub stale: bool,
    /// Tenants, by name.
    pub tenants: Vec<TenantView>,
}

/// One tenant.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TenantView {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Created at, ms since the epoch.
    pub created_ms: i64,
}

impl From<&TenantRecord> for TenantView {
    fn from(t: &TenantRecord) -> Self {
        TenantView {
            name: t.name.clone(),
            description: t.description.clone(),
            created_ms: t.created_ms,
        }
    }
}

/// `GET /api/v1/tenants[?stale=true]`.
#[utoipa::path(
    get,
    path = "/api/v1/tenants",
    tag = "central",
    params(("stale" = Option<bool>, Query, description = "true: answer from this replica without asking the leader (may lag)")),
    responses((status = 200, description = "Tenants", body = TenantsView), super::openapi::ApiErrors)
)]
pub async fn tenants(State(state): State<AppState>, q: Pairs) -> ApiResult<TenantsView> {
    let stale = stale(q)?;
    let tenants = state
        .cluster()?
        .read(stale, |s| {
            s.tenants()
                .values()
                .map(TenantView::from)
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(TenantsView { stale, tenants }))
}

/// Body of `PUT /api/v1/tenants/{tenant}`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TenantBody {
    /// Free text, at most 1024 bytes. Default empty.
    #[schema(max_length = 1024)]
    pub description: String,
}

/// `PUT /api/v1/tenants/{tenant}`: create a tenant or change its
/// description (idempotent).
#[utoipa::path(
    put,
    path = "/api/v1/tenants/{tenant}",
    tag = "central",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Tenant")),
    request_body = TenantBody,
    responses((status = 200, description = "Stored", body = WriteView), super::openapi::ApiErrors)
)]
pub async fn put_tenant(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<TenantBody>, JsonRejection>,
) -> ApiResult<WriteView> {
    let Path(name) = path?;
    let Json(body) = body?;
    let cmd = Command::PutTenant {
        name,
        description: body.description,
        now_ms: state.now_ms(),
    };
    outcome(state.cluster()?.propose(&cmd).await?)
}

/// `DELETE /api/v1/tenants/{tenant}`.
#[utoipa::path(
    delete,
    path = "/api/v1/tenants/{tenant}",
    tag = "central",
    params(("tenant" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "Tenant")),
    responses((status = 200, description = "Deleted", body = WriteView), super::openapi::ApiErrors)
)]
pub async fn delete_tenant(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<WriteView> {
    let Path(name) = path?;
    outcome(
        state
            .cluster()?
            .propose(&Command::DeleteTenant { name })
            .await?,
    )
}
