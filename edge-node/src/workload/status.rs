//! What the workload driver publishes after each step ([`Published`]) and
//! how it reads for heartbeats and the API ([`WorkloadStatus`],
//! `InstanceStatus`). The driver writes it, everyone else reads it.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use strata_protocol::monitoring::{InstanceStatus, MonitorCapacity, NodeResources};

use super::lifecycle::{InstanceReport, ModuleState, Phase};
use super::model::Budget;
use super::slot::InstanceStats;

/// What the host reports for heartbeats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadStatus {
    /// Capacity for instances.
    pub capacity: MonitorCapacity,
    /// Budgets of instances holding capacity.
    pub reserved: MonitorCapacity,
    /// Last node sample.
    pub node: NodeResources,
    /// Every desired instance.
    pub instances: Vec<InstanceStatus>,
    /// Assignments version applied (0 while the region must send the set
    /// again: a module is missing, or a lease must be granted).
    pub assignments_version: u64,
}

/// One desired instance as published: the core's report, its counters and
/// the driver's notes.
#[derive(Debug, Clone)]
pub(crate) struct InstanceView {
    pub report: InstanceReport,
    pub stats: Option<Arc<InstanceStats>>,
    /// The last lifecycle event, with its reason.
    pub last_event: Option<String>,
    /// The last fault, reported while the instance runs again.
    pub last_fault: Option<String>,
}

/// The driver's published state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    pub instances: Vec<InstanceView>,
    pub reserved: Budget,
    pub node: NodeResources,
    /// Assignments version persisted and handed to the core.
    pub applied_version: u64,
    /// Version the core last reconciled to.
    pub reconciled_version: u64,
    /// Modules the region must deliver again.
    pub missing_modules: BTreeSet<String>,
    /// Module files held here.
    pub stored_modules: BTreeSet<String>,
    /// Some `replace-after` instance waits for the region to grant a lease.
    pub awaiting_grant: bool,
}

impl Published {
    /// The version to tell the uplink: 0 makes it fetch the set again.
    pub fn version_for_uplink(&self) -> u64 {
        if self.missing_modules.is_empty() && !self.awaiting_grant {
            self.applied_version
        } else {
            0
        }
    }
}

pub(crate) fn to_capacity(b: Budget) -> MonitorCapacity {
    MonitorCapacity {
        memory_mib: b.memory_mib,
        cpu_millicores: b.cpu_millicores,
    }
}

/// The state word and reason of a phase, as heartbeats carry them.
fn state_and_reason(r: &InstanceReport) -> (&'static str, Option<String>) {
    match &r.phase {
        Phase::WaitingForModule => {
            let (sha, st) = &r.module;
            let how = match st {
                ModuleState::Fetching => "fetching".to_owned(),
                ModuleState::Compiling => "compiling".to_owned(),
                ModuleState::Missing { reason } => format!("missing here ({reason})"),
                ModuleState::Ready => "ready".to_owned(),
                ModuleState::Invalid { reason } => format!("invalid: {reason}"),
            };
            ("pending", Some(format!("waiting for module {sha}: {how}")))
        }
        Phase::WaitingForLease => (
            "pending",
            Some(format!(
                "waiting for the region to grant a lease to allocation {}",
                r.fence
            )),
        ),
        Phase::Starting => ("pending", None),
        Phase::Running => ("running", None),
        Phase::Backoff {
            until_ms,
            attempt,
            last_exit,
        } => (
            "backoff",
            Some(format!(
                "restart {attempt} at {until_ms} ms after: {last_exit}"
            )),
        ),
        Phase::CrashLooping { reason } => ("crash-looping", Some(reason.clone())),
        Phase::Stopping { reason } => ("stopped", Some(reason.to_string())),
        Phase::Stopped { reason } => ("stopped", Some(reason.clone())),
        Phase::LeaseLost {
            fence,
            expired_at_ms,
        } => (
            "stopped",
            Some(format!(
                "lease-expired: allocation {fence} not renewed (expired at {expired_at_ms} ms); waiting for the region"
            )),
        ),
        Phase::Preempted { by } => ("preempted", Some(format!("preempted by {by}"))),
        Phase::Refused(refusal) => ("refused", Some(refusal.to_string())),
    }
}

/// The heartbeat form of one instance.
pub(crate) fn instance_status(v: &InstanceView) -> InstanceStatus {
    let r = &v.report;
    let (state, reason) = state_and_reason(r);
    let load = |f: fn(&InstanceStats) -> &std::sync::atomic::AtomicU64| {
        v.stats
            .as_deref()
            .map_or(0, |s| f(s).load(Ordering::Relaxed))
    };
    InstanceStatus {
        tenant: r.key.tenant.clone(),
        name: r.key.name.clone(),
        generation: r.generation,
        state: state.to_owned(),
        reason: reason.or_else(|| v.last_fault.clone()),
        restarts: r.restarts,
        memory_mib: r.budget.memory_mib,
        cpu_millicores: r.budget.cpu_millicores,
        used_memory_bytes: r.usage.map_or(0, |u| u.memory_bytes),
        used_cpu_millicores: r.usage.map_or(0, |u| u.cpu_millicores),
        records_in: load(|s| &s.records_in),
        records_dropped: load(|s| &s.records_dropped),
        queue_depth: load(|s| &s.queue_depth),
        alerts: load(|s| &s.alerts),
        metrics: load(|s| &s.metrics),
        last_event: v.last_event.clone(),
        slot: r.key.shard,
    }
}
