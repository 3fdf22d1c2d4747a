//! Prometheus metrics of one Raft replica. The service registers them under
//! its own prefix (`strata_hub_`, `strata_central_`), so the names below are
//! the same in every tier.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of [`RaftMetrics::membership_refusals`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    /// `MembershipRefusal::kind`: `no_answer`, `behind`, `leader_changed`,
    /// `busy`, `conflict`.
    pub reason: &'static str,
}

/// Label of [`RaftMetrics::reads`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabel {
    /// `linearizable` (answered after ReadIndex confirmed the leader) or
    /// `failed` (no leader confirmed it in time; the caller retries).
    pub outcome: &'static str,
}

/// The replica's Raft metrics (cheap to clone: shared handles).
#[derive(Clone, Debug)]
pub struct RaftMetrics {
    /// Current Raft term.
    pub term: Gauge,
    /// Highest committed log index.
    pub commit_index: Gauge,
    /// Highest applied log index.
    pub applied_index: Gauge,
    /// Last log index.
    pub last_index: Gauge,
    /// 1 while this replica leads the group.
    pub leader: Gauge,
    /// Proposals accepted by the local Raft node.
    pub proposals: Counter,
    /// Proposals that failed (not leader, dropped, leadership lost).
    pub proposals_failed: Counter,
    /// Seconds from proposal to apply, on the leader.
    pub commit_latency: Histogram,
    /// Raft snapshots sent to followers.
    pub snapshots_sent: Counter,
    /// Raft snapshots installed from the leader.
    pub snapshots_received: Counter,
    /// Membership changes refused, by reason.
    pub membership_refusals: Family<RefusalLabel, Counter>,
    /// Learners promoted to voter after catching up.
    pub learners_promoted: Counter,
    /// Members the leader has not heard from within `unreachable-after`
    /// (0 on followers).
    pub peers_unreachable: Gauge,
    /// ReadIndex reads, by outcome.
    pub reads: Family<ReadLabel, Counter>,
}

impl Default for RaftMetrics {
    fn default() -> Self {
        RaftMetrics {
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_index: Gauge::default(),
            leader: Gauge::default(),
            proposals: Counter::default(),
            proposals_failed: Counter::default(),
            // 0.5 ms .. ~16 s.
            commit_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            snapshots_sent: Counter::default(),
            snapshots_received: Counter::default(),
            membership_refusals: Family::default(),
            learners_promoted: Counter::default(),
            peers_unreachable: Gauge::default(),
            reads: Family::default(),
        }
    }
}

impl RaftMetrics {
    /// Registers every metric in `r` (already prefixed by the caller).
    pub fn register_in(&self, r: &mut Registry) {
        let m = self;
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register(
            "raft_commit_index",
            "Highest committed log index",
            m.commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Highest applied log index",
            m.applied_index.clone(),
        );
        r.register("raft_last_index", "Last log index", m.last_index.clone());
        r.register(
            "raft_leader",
            "1 while this replica leads",
            m.leader.clone(),
        );
        r.register(
            "proposals",
            "Proposals accepted by Raft",
            m.proposals.clone(),
        );
        r.register(
            "proposals_failed",
            "Proposals that failed",
            m.proposals_failed.clone(),
        );
        r.register(
            "commit_latency_seconds",
            "Proposal to apply latency on the leader",
            m.commit_latency.clone(),
        );
        r.register(
            "snapshots_sent",
            "Raft snapshots sent",
            m.snapshots_sent.clone(),
        );
        r.register(
            "snapshots_received",
            "Raft snapshots installed",
            m.snapshots_received.clone(),
        );
        r.register(
            "membership_refusals",
            "Membership changes refused, by reason",
            m.membership_refusals.clone(),
        );
        r.register(
            "learners_promoted",
            "Learners promoted to voter after catching up",
            m.learners_promoted.clone(),
        );
        r.register(
            "raft_peers_unreachable",
            "Members the leader has not heard from recently",
            m.peers_unreachable.clone(),
        );
        r.register(
            "raft_reads",
            "ReadIndex reads, by outcome (linearizable, failed)",
            m.reads.clone(),
        );
    }

    /// Counts one refused membership change.
    pub fn membership_refused(&self, reason: &'static str) {
        self.membership_refusals
            .get_or_create(&RefusalLabel { reason })
            .inc();
    }

    /// Counts one ReadIndex read by outcome.
    pub fn read(&self, outcome: &'static str) {
        self.reads.get_or_create(&ReadLabel { outcome }).inc();
    }
}
