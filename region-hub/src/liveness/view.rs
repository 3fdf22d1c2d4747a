//! What reads see: a snapshot of the leader's soft state ([`SoftEdges`],
//! taken from the core by the driver) overlaid on the replicated region
//! state. On a follower the snapshot is empty and reads show the last
//! replicated reports and decisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_protocol::liveness::{EdgeLiveness, LivenessState};
use strata_protocol::{EdgeInfo, EdgeStatus};

use super::core::LivenessCore;
use crate::fsm::{EdgeView, RegionState};

/// One edge in the leader's soft state.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftEdge {
    /// The leader's current view (decided or not yet replicated).
    pub liveness: EdgeLiveness,
    /// Its last report, when heard under this leader.
    pub status: Option<Arc<EdgeStatus>>,
    /// When it was last heard (heartbeat or batch), ms since the epoch.
    pub last_seen_ms: Option<i64>,
    /// Whether the leader renews its leases now.
    pub renewing_leases: bool,
}

/// A snapshot of the leader's soft state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoftEdges {
    /// True when taken from a leading core (otherwise `edges` is empty).
    pub leader: bool,
    /// Edges by name.
    pub edges: BTreeMap<String, SoftEdge>,
}

impl SoftEdges {
    /// The snapshot of `core`.
    pub fn of(core: &LivenessCore) -> SoftEdges {
        SoftEdges {
            leader: core.is_leader(),
            edges: core
                .edges
                .iter()
                .map(|(name, e)| {
                    (
                        name.clone(),
                        SoftEdge {
                            liveness: e.record(),
                            status: e.status.clone(),
                            last_seen_ms: e.last_heard.map(|h| h.wall_ms),
                            renewing_leases: core.lease_renewable(name),
                        },
                    )
                })
                .collect(),
        }
    }

    /// `edge`'s last report under this leader.
    pub fn status(&self, edge: &str) -> Option<&EdgeStatus> {
        self.edges.get(edge)?.status.as_deref()
    }
}

/// Every edge for placement and validation, sorted by name: the
/// replicated views with the leader's reports, last-seen times and
/// liveness laid over them, plus edges only the leader knows yet.
pub fn views<'a>(state: &'a RegionState, soft: &'a SoftEdges) -> Vec<EdgeView<'a>> {
    let mut out: Vec<EdgeView<'a>> = state
        .edge_views()
        .map(|v| match soft.edges.get(v.edge) {
            None => v,
            Some(s) => EdgeView {
                edge: v.edge,
                last_seen_ms: v.last_seen_ms.max(s.last_seen_ms.unwrap_or(i64::MIN)),
                status: s.status.as_deref().unwrap_or(v.status),
                live: EdgeView::placeable(s.liveness.state),
            },
        })
        .collect();
    for (name, s) in &soft.edges {
        if state.edge_view(name).is_some() {
            continue;
        }
        if let Some(status) = s.status.as_deref() {
            out.push(EdgeView {
                edge: name,
                last_seen_ms: s.last_seen_ms.unwrap_or(i64::MIN),
                status,
                live: EdgeView::placeable(s.liveness.state),
            });
        }
    }
    out.sort_by(|a, b| a.edge.cmp(b.edge));
    out
}

/// One edge of `views` by name.
pub fn view<'a>(state: &'a RegionState, soft: &'a SoftEdges, edge: &str) -> Option<EdgeView<'a>> {
    views(state, soft).into_iter().find(|v| v.edge == edge)
}

/// The edge list as answered to `ListEdges`: the replicated list with the
/// leader's reports, last-seen times and liveness laid over it.
pub fn edge_infos(state: &RegionState, soft: &SoftEdges) -> Vec<EdgeInfo> {
    let mut out = state.edges();
    for info in &mut out {
        if let Some(s) = soft.edges.get(&info.edge) {
            overlay(info, s);
        }
    }
    for (name, s) in &soft.edges {
        if out.iter().any(|i| &i.edge == name) {
            continue;
        }
        let mut info = EdgeInfo {
            edge: name.clone(),
            last_seen_ms: 0,
            status: EdgeStatus {
                edge: name.clone(),
                ..EdgeStatus::default()
            },
            records_stored: 0,
            resends_dropped: 0,
            liveness: None,
            leases: Vec::new(),
            renewing_leases: None,
        };
        overlay(&mut info, s);
        out.push(info);
    }
    out.sort_by(|a, b| a.edge.cmp(&b.edge));
    out
}

fn overlay(info: &mut EdgeInfo, s: &SoftEdge) {
    if let Some(status) = &s.status {
        info.status = status.as_ref().clone();
    }
    if let Some(t) = s.last_seen_ms {
        info.last_seen_ms = info.last_seen_ms.max(t);
    }
    // A leader that has not heard from an edge yet shows "unknown" with
    // the replicated decision's classification and boot id.
    info.liveness = Some(s.liveness.clone());
    info.renewing_leases = Some(s.renewing_leases);
}

/// Soft-state size estimate, bytes (the `strata_hub_liveness_soft_bytes`
/// gauge): each edge's record and report, strings counted by length.
pub fn approx_bytes(core: &LivenessCore) -> usize {
    core.edges
        .iter()
        .map(|(name, e)| {
            let report = e.status.as_deref().map_or(0, |s| {
                256 + s
                    .instances
                    .iter()
                    .map(|i| {
                        160 + i.tenant.len()
                            + i.name.len()
                            + i.state.len()
                            + i.reason.as_ref().map_or(0, String::len)
                            + i.last_event.as_ref().map_or(0, String::len)
                    })
                    .sum::<usize>()
            });
            256 + name.len() + e.evidence.len() + report
        })
        .sum()
}

/// Edges per liveness state in `core` (for the gauges).
pub fn counts(core: &LivenessCore) -> BTreeMap<LivenessState, usize> {
    let mut out = BTreeMap::new();
    for e in core.edges.values() {
        *out.entry(e.view).or_insert(0) += 1;
    }
    out
}
