//! The region's side of the lease arithmetic: until when the leader must
//! assume a `replace-after` instance may still run on a cut-off edge.
//!
//! See the module docs of [`crate::scheduler`] for why these bounds hold.

use strata_sched::{Allocation, DisconnectPolicy, Node, Timestamp, Workload};

/// The lease tunables (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Added to every lease the region counts: covers the edge stopping the
    /// instance after its lease ran out (a callback in progress, timers),
    /// the time between a heartbeat's arrival and the decision that
    /// records it, and clock drift over a lease. `[scheduler] lease-margin`.
    pub margin_ms: u64,
    /// How long after a new leader took over a deposed leader may still
    /// renew leases without knowing it lost: raft-rs's `check_quorum`
    /// steps a leader down within two election timeouts of its last
    /// contact with a quorum, and the new leader was elected after that
    /// contact. `2 × raft.election-ticks × raft.tick-ms`.
    pub leader_bound_ms: u64,
}

/// What the leader knows that bounds an edge's leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    /// The last renewal the region may have granted the edge, as far as
    /// this leader knows: its last heartbeat (or fetch) before the edge was
    /// declared suspect or down, or when it was declared up again.
    pub heard_ms: i64,
    /// This leader's floor: a previous leader may have renewed until then.
    pub floor_ms: i64,
}

/// The lease duration of an allocation of `w`: its `replace-after`
/// (`None` for `keep`, which holds no lease).
pub fn lease_of(w: &Workload) -> Option<std::time::Duration> {
    match w.intent.disconnect_policy() {
        DisconnectPolicy::Keep => None,
        DisconnectPolicy::ReplaceAfter(d) => Some(d),
    }
}

/// The lease deadline the region counts for `a` of `w` on `node`: for a
/// `replace-after` allocation on a disconnected node, no earlier than the
/// last possible renewal (`basis`) plus the lease plus the margin; never
/// earlier than what is recorded. Anything else keeps what it has.
pub fn effective(
    a: &Allocation,
    w: Option<&Workload>,
    node: Option<&Node>,
    basis: Basis,
    cfg: &LeaseConfig,
) -> Option<Timestamp> {
    let Some(lease) = w.and_then(lease_of) else {
        return a.lease_expires_at;
    };
    if !node.is_some_and(|n| n.status.is_disconnected()) {
        return a.lease_expires_at;
    }
    let from = Timestamp::from_millis(basis.heard_ms.max(basis.floor_ms));
    let until = from
        .plus(lease)
        .plus(std::time::Duration::from_millis(cfg.margin_ms));
    Some(a.lease_expires_at.map_or(until, |t| t.max(until)))
}

/// The deadline recorded on a new placement of `w` at `now` (before its
/// edge can hold a lease at all). It is a floor, not the bound: the edge
/// counts its lease from the fetch that brings it the allocation, and that
/// fetch counts as hearing from the edge, so [`effective`] is later.
pub fn at_placement(w: &Workload, now: Timestamp, cfg: &LeaseConfig) -> Option<Timestamp> {
    lease_of(w).map(|l| {
        now.plus(l)
            .plus(std::time::Duration::from_millis(cfg.margin_ms))
    })
}
