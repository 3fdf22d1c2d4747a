//! Admission of a submitted monitor on the leader: every check that can
//! refuse it before anything is stored, each bad field reported at once.
//! Pure (state and settings are inputs); the service runs it on the Raft
//! thread over the applied state and proposes the resulting `PutWorkload`.
//! Where the monitor runs is the scheduler's business (`crate::scheduler`),
//! after the put commits.
//!
//! Checks:
//! - the spec's own fields ([`MonitorSpec::validate`]) with the region's
//!   facts: known tenants (a device in the region), known devices (the
//!   selector must match one), the largest edge's capacity (the target
//!   edge's for `target = { node }`), whether the module is stored, and the
//!   lease minimum for `placement.replace-after`;
//! - the runtime has a driver (only `wasm`), the declared module size
//!   matches the stored module, and `target.node` names a known edge;
//! - the placement intent's names exist in the region
//!   (`strata_sched::validate_in_region`: labels, label values, pools,
//!   hard co-location targets), under `placement.`;
//! - some edge could ever run it (`strata_sched::check_feasible`: the hard
//!   rules and each edge's total capacity, whatever its state): if none,
//!   it is refused with, per rule, how many edges it filtered out;
//! - the region's specs stay within what one edge can fetch in a frame
//!   ([`MAX_ASSIGNMENT_BYTES`], counted over the whole region, since any
//!   edge may end up running any workload).
//!
//! A count above what the region can hold is *not* refused: the scheduler
//! places what fits and its evaluation says why the rest did not.

use std::time::Duration;

use strata_protocol::workload::{
    FieldError, MonitorSpec, NodeCapacity, Placement, RuntimeKind, SpecErrors, ValidationContext,
};
use strata_sched::{
    check_feasible, validate_in_region, ClusterSnapshot, SchedulerConfig, Workload,
};

use crate::fsm::sched_view::MIB;
use crate::fsm::{workload_of, MonitorEntry, RegionState};

/// Most spec bytes (estimated) the region's monitors may hold: half a
/// frame, so any edge's `Allocations` answer always fits.
pub const MAX_ASSIGNMENT_BYTES: usize = strata_protocol::MAX_FRAME_LEN / 2;

/// A generous estimate of a spec's encoded size: its variable-length parts
/// plus a fixed allowance for the rest.
pub fn spec_size_estimate(spec: &MonitorSpec) -> usize {
    let globs: usize = spec.selector.device_globs.iter().map(|g| g.len() + 2).sum();
    let tags: usize = spec
        .selector
        .tags
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let target = match &spec.target {
        Placement::Node(n) => n.len(),
        Placement::LeastLoaded => 0,
    };
    let placement =
        bincode::encode_to_vec(&spec.placement, bincode::config::standard()).map_or(0, |b| b.len());
    spec.name.len()
        + spec.tenant.len() * 2
        + spec.params.len()
        + globs
        + tags
        + target
        + placement
        + 256
}

/// The region's scheduling view for admission: every edge (with facts,
/// capacity and liveness) and every workload, no allocations.
pub fn snapshot(state: &RegionState, cfg: SchedulerConfig) -> ClusterSnapshot {
    let nodes = state
        .edge_names()
        .into_iter()
        .map(|e| state.sched_node(e))
        .collect();
    ClusterSnapshot::from_parts(
        state.applied_index(),
        cfg,
        nodes,
        state.sched_workloads(),
        Vec::new(),
    )
}

/// The capacity validation checks `spec` against: the target edge's, or
/// the largest of any edge's (memory and CPU each at their maximum; the
/// scheduler checks a real fit). `None` skips the check (no such edge, or
/// no edge: feasibility reports that precisely).
pub fn max_node_capacity(snap: &ClusterSnapshot, spec: &MonitorSpec) -> Option<NodeCapacity> {
    let cap = |n: &strata_sched::Node| NodeCapacity {
        memory_mib: u32::try_from(n.capacity.memory_bytes / MIB).unwrap_or(u32::MAX),
        cpu_millicores: u32::try_from(n.capacity.cpu_millicores).unwrap_or(u32::MAX),
    };
    match &spec.target {
        Placement::Node(node) => snap
            .nodes()
            .find(|n| n.id.as_str() == node.as_str())
            .map(cap),
        Placement::LeastLoaded => snap.nodes().map(cap).reduce(|a, b| NodeCapacity {
            memory_mib: a.memory_mib.max(b.memory_mib),
            cpu_millicores: a.cpu_millicores.max(b.cpu_millicores),
        }),
    }
}

/// Validates `spec` against the region (see the module docs). Returns the
/// workload it becomes, or every problem at once.
pub fn admit(
    state: &RegionState,
    snap: &ClusterSnapshot,
    spec: &MonitorSpec,
    min_replace_after: Duration,
) -> Result<Workload, SpecErrors> {
    let tenants = state.tenants();
    let devices = state.known_devices(&spec.tenant);
    let ctx = ValidationContext {
        known_tenants: Some(&tenants),
        max_node_capacity: max_node_capacity(snap, spec),
        known_devices: Some(&devices),
        artifact_known: Some(state.workloads().has_artifact(&spec.artifact.sha256)),
        min_replace_after: Some(min_replace_after),
    };
    let mut errs = spec.validate(&ctx).err().map(|e| e.0).unwrap_or_default();
    let mut bad = |field: &str, message: String| {
        errs.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };
    if spec.runtime != RuntimeKind::Wasm {
        bad(
            "runtime",
            format!(
                "runtime {} has no driver on edge nodes yet; use wasm",
                spec.runtime
            ),
        );
    }
    if let Some(bytes) = state.workloads().artifact(&spec.artifact.sha256) {
        if bytes.len() as u64 != spec.artifact.size_bytes {
            bad(
                "artifact.size-bytes",
                format!(
                    "{} does not match the stored module's {} bytes",
                    spec.artifact.size_bytes,
                    bytes.len()
                ),
            );
        }
    }
    if let Placement::Node(node) = &spec.target {
        if !snap.nodes().any(|n| n.id.as_str() == node.as_str()) {
            bad(
                "target.node",
                format!("no edge {node:?} in this region (an edge is known once it has reported)"),
            );
        }
    }
    let others: usize = state
        .workloads()
        .monitors(None)
        .filter(|m| !(m.spec.tenant == spec.tenant && m.spec.name == spec.name))
        .map(|m| spec_size_estimate(&m.spec))
        .sum();
    if others + spec_size_estimate(spec) > MAX_ASSIGNMENT_BYTES {
        bad(
            "params",
            format!(
                "the region's monitor specs already take about {others} bytes; with this one an \
                 edge's allocation list could exceed {MAX_ASSIGNMENT_BYTES} bytes (use smaller \
                 params, or delete monitors)"
            ),
        );
    }
    if !errs.is_empty() {
        return Err(SpecErrors(errs));
    }
    // The intent is well formed: do the names it uses exist here?
    if let Err(e) = validate_in_region(&spec.placement, &spec.tenant, snap) {
        return Err(SpecErrors(
            e.0.into_iter()
                .map(|f| FieldError {
                    field: format!("placement.{}", f.field),
                    message: f.message,
                })
                .collect(),
        ));
    }
    let mut workload = workload_of(&MonitorEntry {
        spec: spec.clone(),
        created_ms: 0,
        updated_ms: 0,
    });
    // Checked as the generation does not matter here.
    workload.generation = 0;
    if let Err(f) = check_feasible(snap, &workload) {
        return Err(SpecErrors(vec![FieldError {
            field: "placement".to_owned(),
            message: format!("no edge in the region can ever run it: {}", f.metric),
        }]));
    }
    Ok(workload)
}

#[cfg(test)]
mod tests;
