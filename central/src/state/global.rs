//! Global workloads in central's replicated state: each one a monitor spec
//! (the template every region runs) with a [`GlobalIntent`] (how many, in
//! which regions), its current split over regions, and the plans that made
//! it. The state machine is the global scheduler's single plan applier: an
//! `ApplyGlobalPlan` is verified against the state as applied
//! ([`verify_global_plan`]), so plans made on an older snapshot are trimmed
//! or refused on every replica alike.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bincode::{Decode, Encode};
use serde::Serialize;
use strata_protocol::workload::MonitorSpec;
use strata_sched::global::{
    GlobalFailure, GlobalIntent, GlobalRejection, GlobalWorkload, RegionShare, RegionSummary,
};
use strata_sched::scale::ScaleSpec;
use strata_sched::WorkloadId;

pub use super::history::LoadHistory;

/// Plans kept per workload (newest last).
pub const PLAN_HISTORY: usize = 32;
/// Scale decisions kept per workload (newest last).
pub const SCALE_HISTORY: usize = 64;

/// One applied scale decision, with what it was decided from.
#[derive(Debug, Clone, PartialEq, Encode, Decode, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScaleRecord {
    /// Log index it was applied at.
    pub index: u64,
    /// When it was decided, ms since the epoch (the leader's clock).
    pub at_ms: i64,
    /// The spec generation it was decided for.
    pub generation: u64,
    /// Instances before.
    pub current: u32,
    /// Instances after.
    pub desired: u32,
    /// Why (`surge`, `scale-down`, `clamped-max`, …).
    pub reason: String,
    /// The measured metric over all instances (records/s, …).
    pub total: Option<f64>,
    /// Per instance.
    pub per_instance: Option<f64>,
    /// The target per instance.
    pub target: f64,
    /// What the reactive rule alone asked for.
    pub recommended: u32,
    /// The metric `total` and `target` are in (`records-per-second`,
    /// `cpu`, `queue-depth`).
    #[serde(default)]
    pub metric: String,
    /// The forecast peak the decision was given, in the metric's unit;
    /// `None` when there was none (forecasting off, or too little history).
    #[serde(default)]
    pub forecast: Option<f64>,
    /// How far ahead `forecast` looked, ms.
    #[serde(default)]
    pub forecast_horizon_ms: Option<u64>,
    /// What the forecast alone asked for.
    #[serde(default)]
    pub forecast_recommended: Option<u32>,
}
/// Most global workloads.
pub const MAX_GLOBAL_WORKLOADS: usize = 10_000;

/// One applied (or refused) plan, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlanRecord {
    /// Log index it was applied at.
    pub index: u64,
    /// When, ms since the epoch (the proposer's clock).
    pub at_ms: i64,
    /// Spec generation it was made for.
    pub generation: u64,
    /// Every region's share with its reasons.
    pub shares: BTreeMap<String, RegionShare>,
    /// Instances unreachable regions keep.
    pub held_by_unreachable: u32,
    /// What could not be placed, and why, region by region.
    pub failed: Option<GlobalFailure>,
    /// Regions the applier refused or trimmed (a newer state), with why.
    pub rejected: BTreeMap<String, GlobalRejection>,
}

/// A global workload as stored.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct GlobalRecord {
    /// The monitor every region runs (its `placement.count` is set per
    /// region from the split; its generation is the region's business).
    pub monitor: MonitorSpec,
    /// Where and how many, over regions.
    pub intent: GlobalIntent,
    /// Bumped on every change of `monitor` or `intent`.
    pub generation: u64,
    /// Created at, ms since the epoch.
    pub created_ms: i64,
    /// Last changed at, ms since the epoch.
    pub updated_ms: i64,
    /// Region → instances, as the last accepted plan left it.
    pub split: BTreeMap<String, u32>,
    /// Recent plans, newest last.
    pub plans: VecDeque<PlanRecord>,
    /// Every region that ever had a share: where a regional monitor may
    /// exist and must be removed when its share drops to 0 or the workload
    /// is deleted.
    pub regions_ever: BTreeSet<String>,
    /// Deleted: no share anywhere; forgotten once every region dropped it.
    pub deleting: bool,
    /// Autoscaling, when the spec asks for it.
    pub scale: Option<ScaleSpec>,
    /// The autoscaler's current count (replaces `intent.count` while
    /// `scale` is set), always within `scale.min..=scale.max`.
    pub scaled: Option<u32>,
    /// Recent scale decisions, newest last.
    pub scale_history: VecDeque<ScaleRecord>,
    /// The measured load, one point per forecast step, while it autoscales
    /// (what the leader's forecaster fits; see [`LoadHistory`]).
    pub load_history: Option<LoadHistory>,
}

impl GlobalRecord {
    /// The workload's id.
    pub fn id(&self) -> WorkloadId {
        WorkloadId::new(&self.monitor.tenant, &self.monitor.name)
    }

    /// What the global scheduler sees of it: with autoscaling, the
    /// autoscaler's count in place of the spec's.
    pub fn workload(&self) -> GlobalWorkload {
        let mut intent = self.intent.clone();
        if let (Some(_), Some(n)) = (&self.scale, self.scaled) {
            intent.count = Some(n);
        }
        GlobalWorkload {
            id: self.id(),
            generation: self.generation,
            intent,
            // Autoscaled workloads run sharded (see `regional_monitor`).
            stacks: self.scale.is_some(),
        }
    }

    /// The monitor region `region` should run: the template with the
    /// region's share as its count; `None` when it should run none. An
    /// autoscaled workload's regional monitor is sharded: its instances
    /// split the devices (so scaling out divides the load) and a region
    /// with fewer edges than its share still places them all.
    pub fn regional_monitor(&self, region: &str) -> Option<MonitorSpec> {
        let n = *self.split.get(region).filter(|n| **n > 0)?;
        if self.deleting {
            return None;
        }
        let mut spec = self.monitor.clone();
        spec.placement.count = Some(n);
        spec.placement.per_node = false;
        spec.placement.shard |= self.scale.is_some();
        spec.generation = 0;
        Some(spec)
    }
}

/// The persisted global part of central's state.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct GlobalData {
    /// Global workloads by id.
    pub workloads: BTreeMap<WorkloadId, GlobalRecord>,
    /// Each region's last summary.
    pub reports: BTreeMap<String, RegionSummary>,
}
