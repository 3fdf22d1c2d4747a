//! Central's optimistic-concurrency check of a global plan, pure, in the
//! shape of the region applier's [`crate::verify_plan`].
//!
//! A plan was made on a snapshot that may be stale by the time central's
//! single applier gets to it: other plans committed, regions reported new
//! summaries. [`verify_global_plan`] re-checks it region by region against
//! the newest state:
//!
//! - the whole plan is refused when the workload's generation changed (or
//!   it was deleted) since, unless it only shrinks shares;
//! - a region whose current share is no longer the one the plan started
//!   from is refused (another plan for the workload committed first);
//! - a share that shrinks or stays is accepted (releasing is always safe);
//! - a share that grows needs the region to exist and be reachable by its
//!   last health verdict (summary staleness needs a clock; `split`, which
//!   has one, already refused to grow a stale region), and is
//!   **trimmed** to what the region can now hold of the workload (its
//!   newest summary, less other workloads' unplaced shares, including
//!   those committed since), but never below its current share.
//!
//! Anything refused or trimmed sets `refresh_index`: the workload is split
//! again on a snapshot at least that new.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::snapshot::GlobalSnapshot;
use super::split::GlobalPlan;
use super::summary::RegionHealth;
use crate::ids::{EvalId, WorkloadId};

/// Why central's applier refused (part of) one region's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalRejection {
    /// The workload's generation changed or it was deleted since.
    WorkloadChanged {
        /// Generation the plan was made for.
        planned: u64,
        /// Generation now (`None`: deleted).
        now: Option<u64>,
    },
    /// The region's share changed since the plan's snapshot.
    SplitChanged {
        /// The share the plan started from.
        planned_from: u32,
        /// The share now.
        now: u32,
    },
    /// The region is no longer known.
    RegionUnknown,
    /// The region can no longer be given instances.
    RegionUnreachable(RegionHealth),
    /// The region can no longer hold the whole share; `accepted` was kept.
    Trimmed {
        /// The share planned.
        planned: u32,
        /// The share accepted.
        accepted: u32,
        /// What the region can now hold.
        cap: u32,
    },
}

/// The applier's answer to one global plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct GlobalVerdict {
    /// The plan's evaluation.
    pub eval: EvalId,
    /// The plan's workload.
    pub workload: WorkloadId,
    /// New shares to commit (trimmed ones at their trimmed value), for the
    /// regions whose share changes.
    pub accepted: BTreeMap<String, u32>,
    /// Regions refused or trimmed, with why.
    pub rejected: BTreeMap<String, GlobalRejection>,
    /// When anything was refused or trimmed: the index the re-evaluation
    /// must see.
    pub refresh_index: Option<u64>,
}

impl GlobalVerdict {
    /// Whether the whole plan was accepted as made.
    pub fn is_full(&self) -> bool {
        self.rejected.is_empty()
    }
}

/// Re-checks `plan` against the newest state (see the module docs).
pub fn verify_global_plan(latest: &GlobalSnapshot, plan: &GlobalPlan) -> GlobalVerdict {
    let mut v = GlobalVerdict {
        eval: plan.eval,
        workload: plan.workload.clone(),
        accepted: BTreeMap::new(),
        rejected: BTreeMap::new(),
        refresh_index: None,
    };
    let workload = latest.workload(&plan.workload);
    let now_gen = workload.map(|w| w.generation);
    let grows = plan.shares.values().any(|s| s.instances > s.previous);
    if grows && now_gen != Some(plan.generation) {
        for r in plan.shares.keys() {
            v.rejected.insert(
                r.clone(),
                GlobalRejection::WorkloadChanged {
                    planned: plan.generation,
                    now: now_gen,
                },
            );
        }
        v.refresh_index = Some(latest.index());
        return v;
    }
    let current = latest.split_of(&plan.workload);
    for (r, share) in &plan.shares {
        let now = current.get(r).copied().unwrap_or(0);
        if now != share.previous {
            v.rejected.insert(
                r.clone(),
                GlobalRejection::SplitChanged {
                    planned_from: share.previous,
                    now,
                },
            );
            continue;
        }
        if share.instances == now {
            continue;
        }
        if share.instances < now {
            v.accepted.insert(r.clone(), share.instances);
            continue;
        }
        // Grows: `workload` is Some here, as the generation check passed.
        let Some(w) = workload else { continue };
        let Some(summary) = latest.region(r) else {
            v.rejected.insert(r.clone(), GlobalRejection::RegionUnknown);
            continue;
        };
        if !summary.health.state.is_reachable() {
            v.rejected.insert(
                r.clone(),
                GlobalRejection::RegionUnreachable(summary.health.state),
            );
            continue;
        }
        let cap = latest
            .region_cap(summary, &w.id, w.intent.size, &w.intent.pools)
            .cap;
        if share.instances <= cap {
            v.accepted.insert(r.clone(), share.instances);
        } else {
            let accepted = cap.max(now);
            if accepted != now {
                v.accepted.insert(r.clone(), accepted);
            }
            v.rejected.insert(
                r.clone(),
                GlobalRejection::Trimmed {
                    planned: share.instances,
                    accepted,
                    cap,
                },
            );
        }
    }
    if !v.rejected.is_empty() {
        v.refresh_index = Some(latest.index());
    }
    v
}
