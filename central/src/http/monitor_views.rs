//! JSON shapes of the monitor, artifact and alert API (kebab-case keys, like
//! [`views`](super::views)). The spec itself is served as
//! [`MonitorSpec`] serializes it, which is exactly the JSON a user submits,
//! so an inspected spec can be edited and submitted again.

use serde::Serialize;
use strata_protocol::monitoring::{InstanceStatus, MonitorInfo};
use strata_protocol::scheduling::{AllocationInfo, EvaluationInfo};
use strata_protocol::workload::MonitorSpec;
use strata_protocol::{AlertRecord, Severity};

use super::views::RegionFailure;
use crate::region::ArtifactStored;

/// Answer to `POST /api/v1/regions/{region}/artifacts`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ArtifactView {
    /// Region that stored it.
    pub region: String,
    /// SHA-256 of the module, 64 lowercase hex digits: put it in the spec's
    /// `artifact.sha256`.
    pub sha256: String,
    /// Module size, bytes: the spec's `artifact.size-bytes`.
    pub size_bytes: u64,
    /// False when the region already had it.
    pub created: bool,
}

impl ArtifactView {
    /// View of `a` stored in `region`.
    pub fn new(region: &str, a: ArtifactStored) -> ArtifactView {
        ArtifactView {
            region: region.to_owned(),
            sha256: a.sha256,
            size_bytes: a.size_bytes,
            created: a.created,
        }
    }
}

/// One monitor (inspect, submit answer, list entry).
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct MonitorView {
    /// Region holding it.
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// Monitor name.
    pub name: String,
    /// Edge node it is assigned to.
    pub edge: String,
    /// Spec generation (bumped by the hub on every change).
    pub generation: u64,
    /// First submitted, ms since the epoch.
    pub created_ms: i64,
    /// Last changed, ms since the epoch.
    pub updated_ms: i64,
    /// The spec as stored.
    #[schema(value_type = Object)]
    pub spec: MonitorSpec,
    /// The instance on `edge` as its edge last reported it; `null` before
    /// it has.
    #[schema(value_type = Option<Object>)]
    pub status: Option<InstanceStatus>,
    /// Instances wanted: the count, or for `per-edge` the edges carrying
    /// selected devices.
    pub wanted: u32,
    /// Instances placed (desired to run, not failed).
    pub placed: u32,
    /// Its allocations, live ones first: where each runs, its fencing
    /// token, and why it is there (reason, score and its parts).
    #[schema(value_type = Vec<Object>)]
    pub allocations: Vec<AllocationInfo>,
    /// Its most recent evaluations, newest first: trigger, outcome, and for
    /// instances that could not be placed, how many edges each rule ruled
    /// out.
    #[schema(value_type = Vec<Object>)]
    pub evaluations: Vec<EvaluationInfo>,
}

impl MonitorView {
    /// View of `m` read from `region`.
    pub fn new(region: &str, m: MonitorInfo) -> MonitorView {
        MonitorView {
            region: region.to_owned(),
            tenant: m.spec.tenant.clone(),
            name: m.spec.name.clone(),
            edge: m.edge,
            generation: m.spec.generation,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            spec: m.spec,
            status: m.status,
            wanted: m.wanted,
            placed: m.placed,
            allocations: m.allocations,
            evaluations: m.evaluations,
        }
    }
}

/// `GET /api/v1/monitors`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct MonitorsView {
    /// Monitors, region by region, then by tenant and name.
    pub monitors: Vec<MonitorView>,
    /// True when some region answered from a follower without a leader.
    pub stale: bool,
    /// Regions that could not answer; their monitors are missing.
    pub errors: Vec<RegionFailure>,
}

/// Answer to `DELETE /api/v1/regions/{region}/monitors/{tenant}/{name}`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct DeletedView {
    /// Always true.
    pub deleted: bool,
    /// Region.
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// Monitor name.
    pub name: String,
}

/// One alert in `GET /api/v1/alerts`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct AlertView {
    /// Region that stored it.
    pub region: String,
    /// When the edge received it from the monitor, ms since the epoch.
    pub ts_ms: i64,
    /// `info`, `warning` or `critical`.
    #[schema(value_type = String)]
    pub severity: Severity,
    /// Tenant.
    pub tenant: String,
    /// Device the alert is about.
    pub device: String,
    /// Monitor that raised it.
    pub monitor: String,
    /// Edge node whose instance raised it.
    pub edge: String,
    /// Machine-readable code.
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

impl AlertView {
    /// View of `a` read from `region`.
    pub fn new(region: &str, a: AlertRecord) -> AlertView {
        AlertView {
            region: region.to_owned(),
            ts_ms: a.ts_ms,
            severity: a.severity,
            tenant: a.tenant,
            device: a.device,
            monitor: a.monitor,
            edge: a.edge,
            code: a.code,
            message: a.message,
        }
    }
}

/// `GET /api/v1/alerts`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct AlertsView {
    /// Alerts of every selected region, newest first.
    pub alerts: Vec<AlertView>,
    /// Number of alerts returned.
    pub count: usize,
    /// True when the limit cut the answer: older matching alerts exist.
    pub truncated: bool,
    /// Inclusive start of the window, ms.
    pub from_ms: i64,
    /// Exclusive end of the window, ms.
    pub to_ms: i64,
    /// True when some region answered from a follower without a leader.
    pub stale: bool,
    /// Regions that could not answer; their alerts are missing.
    pub errors: Vec<RegionFailure>,
}
