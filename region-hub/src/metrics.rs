//! Prometheus metrics of a hub replica, served on `metrics-listen` by
//! `strata_net::metrics::serve`. Names are prefixed `strata_hub_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strata_consensus::RaftMetrics;

/// Label of [`HubMetrics::requests`] and [`HubMetrics::request_errors`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Request kind: `batch`, `heartbeat`, `fetch_assignments`, `fetch_allocations`,
    /// `fetch_artifact`, `status`, `list_edges`, `list_devices`, `query`,
    /// `add_replica`, `remove_replica`, `put_artifact`, `submit_monitor`,
    /// `list_monitors`, `get_monitor`, `delete_monitor`, `query_alerts`,
    /// `retention`, `events`, `region_summary`, `decode`.
    pub kind: &'static str,
}

/// Label of [`HubMetrics::duplicates`]: which dedup layer dropped a record.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DuplicateLabel {
    /// `edge_resend` (layer 1: the same edge, epoch and edge sequence
    /// number already stored) or `device_retransmission` (layer 2: the same
    /// reading of the device already stored).
    pub reason: &'static str,
}

/// [`DuplicateLabel`] of layer 1.
pub const EDGE_RESEND: &str = "edge_resend";
/// [`DuplicateLabel`] of layer 2.
pub const DEVICE_RETRANSMISSION: &str = "device_retransmission";

/// Label of [`HubMetrics::retention_dropped`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetentionLabel {
    /// Tenant of the dropped records.
    pub tenant: String,
    /// `expired_on_arrival` (arrived for a partition retention had
    /// dropped; never stored) or `expired` (dropped with its partition).
    pub reason: &'static str,
}

/// Label of [`HubMetrics::edge_transitions`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    /// The edge's state after the decision: `up`, `suspect`, `down`.
    pub state: &'static str,
    /// Its classification: `none`, `undetermined`, `shutdown`, `crash`,
    /// `edge-failure`, `partition`.
    pub classification: &'static str,
}

/// Label of [`HubMetrics::liveness_edge_states`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `unknown`, `up`, `suspect` or `down`.
    pub state: &'static str,
}

/// Label of [`HubMetrics::sched_evaluations`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// `strata_sched::Trigger::as_str`: `submit`, `update`, `delete`,
    /// `node-up`, `node-suspect`, `node-down`, `node-back`,
    /// `devices-moved`, `capacity-changed`, `follow-up`, `plan-rejected`,
    /// `alloc-failed`, `leader-change`, ….
    pub trigger: &'static str,
}

/// Label of [`HubMetrics::sched_rejected_plans`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabel {
    /// `partial` (some node plans accepted) or `full` (none).
    pub kind: &'static str,
}

/// Label of [`HubMetrics::migrations`], [`HubMetrics::migrations_held`]
/// and [`HubMetrics::checkpoints_refused`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Moves: `cpu-pressure` or `memory-pressure`. Held: `budget`,
    /// `nothing-movable`, `no-target` or `refused`. Checkpoints refused:
    /// `too-large`, `region-full` or `unknown-allocation`.
    pub reason: &'static str,
}

/// Every metric of one replica. Cloning shares the underlying values.
#[derive(Clone)]
pub struct HubMetrics {
    /// The Raft node's metrics (term, indexes, proposals, snapshots,
    /// membership), registered under the same prefix.
    pub raft: RaftMetrics,
    /// Telemetry batches applied.
    pub batches_stored: Counter,
    /// New records stored.
    pub records_stored: Counter,
    /// Records dropped as already stored by the FSM, by reason
    /// ([`DuplicateLabel`]; both reasons are always exported).
    pub duplicates: Family<DuplicateLabel, Counter>,
    /// Readings stored although their device seq was recently used by
    /// another reading of the device (counter restarts, clock jumps,
    /// spoofing).
    pub seq_reuses: Counter,
    /// Records retention dropped on this replica, by tenant and reason.
    pub retention_dropped: Family<RetentionLabel, Counter>,
    /// New alerts stored in the alert index.
    pub alerts_stored: Counter,
    /// New derived metrics stored as telemetry.
    pub derived_metrics_stored: Counter,
    /// Alerts held in the replicated alert index.
    pub alerts_held: Gauge,
    /// Alerts evicted from the full alert index (oldest first).
    pub alerts_evicted: Gauge,
    /// Monitors in the region.
    pub monitors: Gauge,
    /// Artifact bytes stored in the region state.
    pub artifact_bytes: Gauge,
    /// The region's assignments version.
    pub assignments_version: Gauge,
    /// Edge heartbeats received (soft state on the leader; followers
    /// answer them with a redirect).
    pub heartbeats: Counter,
    /// Edge reports replicated through Raft (rate limited) and applied.
    pub reports_replicated: Counter,
    /// Liveness decisions of the leader, by state and classification.
    pub edge_transitions: Family<TransitionLabel, Counter>,
    /// Seconds from an edge's last heartbeat to its down decision.
    pub edge_detection_latency: Histogram,
    /// Edges in the leader's soft state, by liveness state (0 on followers).
    pub liveness_edge_states: Family<StateLabel, Gauge>,
    /// Estimated size of the leader's soft state, bytes.
    pub liveness_soft_bytes: Gauge,
    /// Heartbeats and batch notices the failure detector had no room for.
    pub liveness_inputs_dropped: Counter,
    /// Store checkpoints taken.
    pub checkpoints: Counter,
    /// Client requests served, by kind.
    pub requests: Family<KindLabel, Counter>,
    /// Client requests that failed or were refused, by kind.
    pub request_errors: Family<KindLabel, Counter>,
    /// Evaluations run by the leader's scheduler, by trigger.
    pub sched_evaluations: Family<TriggerLabel, Counter>,
    /// Plans proposed (with changes or a new placement failure).
    pub sched_plans: Counter,
    /// Plans the applier refused in part or in full.
    pub sched_rejected_plans: Family<RejectedLabel, Counter>,
    /// Placements proposed.
    pub sched_placements: Counter,
    /// Instances an evaluation could not place.
    pub sched_placement_failures: Counter,
    /// Seconds one evaluation took (schedule and verify).
    pub sched_decision_latency: Histogram,
    /// Seconds from an edge going down (or an instance failing) to its
    /// replacement reported running.
    pub sched_replacement_latency: Histogram,
    /// Evaluations waiting.
    pub sched_queue: Gauge,
    /// Allocations desired to run in the region.
    pub sched_allocations: Gauge,
    /// Monitor outputs refused because their allocation was replaced.
    pub stale_fence_outputs: Counter,
    /// Instances moved off pressured edges (plans proposed), by reason.
    pub migrations: Family<ReasonLabel, Counter>,
    /// Moves wanted but not made, by reason.
    pub migrations_held: Family<ReasonLabel, Counter>,
    /// Edges under sustained pressure now (leader; 0 on followers).
    pub pressured_edges: Gauge,
    /// Monitor state checkpoints stored.
    pub checkpoints_stored: Counter,
    /// Monitor state checkpoints refused, by reason (`too-large`,
    /// `region-full`, `unknown-allocation`; stale ones are counted in
    /// `stale_fence_outputs`).
    pub checkpoints_refused: Family<ReasonLabel, Counter>,
    /// State bytes of the checkpoints the region holds.
    pub checkpoint_bytes: Gauge,
    /// Orphaned checkpoints (no allocation runs under their key) evicted
    /// to make room for new ones.
    pub checkpoints_evicted: Counter,
}

impl Default for HubMetrics {
    fn default() -> Self {
        HubMetrics {
            raft: RaftMetrics::default(),
            batches_stored: Counter::default(),
            records_stored: Counter::default(),
            duplicates: Family::default(),
            seq_reuses: Counter::default(),
            retention_dropped: Family::default(),
            alerts_stored: Counter::default(),
            derived_metrics_stored: Counter::default(),
            alerts_held: Gauge::default(),
            alerts_evicted: Gauge::default(),
            monitors: Gauge::default(),
            artifact_bytes: Gauge::default(),
            assignments_version: Gauge::default(),
            heartbeats: Counter::default(),
            reports_replicated: Counter::default(),
            edge_transitions: Family::default(),
            // 50 ms .. ~13 s.
            edge_detection_latency: Histogram::new(exponential_buckets(0.05, 1.5, 14)),
            liveness_edge_states: Family::default(),
            liveness_soft_bytes: Gauge::default(),
            liveness_inputs_dropped: Counter::default(),
            checkpoints: Counter::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            sched_evaluations: Family::default(),
            sched_plans: Counter::default(),
            sched_rejected_plans: Family::default(),
            sched_placements: Counter::default(),
            sched_placement_failures: Counter::default(),
            // 10 µs .. ~0.3 s.
            sched_decision_latency: Histogram::new(exponential_buckets(0.000_01, 2.0, 16)),
            // 100 ms .. ~100 s.
            sched_replacement_latency: Histogram::new(exponential_buckets(0.1, 1.6, 16)),
            sched_queue: Gauge::default(),
            sched_allocations: Gauge::default(),
            migrations: Family::default(),
            migrations_held: Family::default(),
            pressured_edges: Gauge::default(),
            stale_fence_outputs: Counter::default(),
            checkpoints_stored: Counter::default(),
            checkpoints_refused: Family::default(),
            checkpoint_bytes: Gauge::default(),
            checkpoints_evicted: Counter::default(),
        }
    }
}

impl HubMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = HubMetrics::default();
        let r = registry.sub_registry_with_prefix("strata_hub");
        m.raft.register_in(r);
        r.register(
            "batches_stored",
            "Telemetry batches applied",
            m.batches_stored.clone(),
        );
        r.register(
            "records_stored",
            "New telemetry records stored",
            m.records_stored.clone(),
        );
        // Pre-created so both series exist (at 0) before the first drop.
        for reason in [EDGE_RESEND, DEVICE_RETRANSMISSION] {
            drop(m.duplicates.get_or_create(&DuplicateLabel { reason }));
        }
        r.register(
            "duplicate_records",
            "Records dropped as already stored, by dedup layer",
            m.duplicates.clone(),
        );
        r.register(
            "device_seq_reuses",
            "Readings stored although their device seq was recently used by another reading",
            m.seq_reuses.clone(),
        );
        r.register(
            "retention_dropped_records",
            "Records retention dropped on this replica, by tenant and reason",
            m.retention_dropped.clone(),
        );
        r.register(
            "alerts_stored",
            "New alerts stored",
            m.alerts_stored.clone(),
        );
        r.register(
            "derived_metrics_stored",
            "New derived metrics stored",
            m.derived_metrics_stored.clone(),
        );
        r.register(
            "alerts_held",
            "Alerts in the replicated alert index",
            m.alerts_held.clone(),
        );
        r.register(
            "alerts_evicted",
            "Alerts evicted from the full alert index",
            m.alerts_evicted.clone(),
        );
        r.register("monitors", "Monitors in the region", m.monitors.clone());
        r.register(
            "artifact_bytes",
            "Artifact bytes in the region state",
            m.artifact_bytes.clone(),
        );
        r.register(
            "assignments_version",
            "The region's monitor assignments version",
            m.assignments_version.clone(),
        );
        r.register(
            "heartbeats",
            "Edge heartbeats received",
            m.heartbeats.clone(),
        );
        r.register(
            "edge_reports_replicated",
            "Edge reports replicated through Raft (on material change or every report-interval)",
            m.reports_replicated.clone(),
        );
        r.register(
            "edge_transitions",
            "Edge liveness decisions of the leader, by state and classification",
            m.edge_transitions.clone(),
        );
        r.register(
            "edge_detection_latency_seconds",
            "From an edge's last heartbeat to its down decision",
            m.edge_detection_latency.clone(),
        );
        for state in ["unknown", "up", "suspect", "down"] {
            drop(m.liveness_edge_states.get_or_create(&StateLabel { state }));
        }
        r.register(
            "liveness_edges",
            "Edges in the leader's failure detector, by state (0 on followers)",
            m.liveness_edge_states.clone(),
        );
        r.register(
            "liveness_soft_bytes",
            "Estimated size of the leader's soft edge state",
            m.liveness_soft_bytes.clone(),
        );
        r.register(
            "liveness_inputs_dropped",
            "Heartbeats and batch notices the failure detector had no room for",
            m.liveness_inputs_dropped.clone(),
        );
        r.register(
            "checkpoints",
            "Store checkpoints taken",
            m.checkpoints.clone(),
        );
        r.register("requests", "Client requests served", m.requests.clone());
        r.register(
            "request_errors",
            "Client requests failed",
            m.request_errors.clone(),
        );
        r.register(
            "sched_evaluations",
            "Evaluations run by the leader's scheduler, by trigger",
            m.sched_evaluations.clone(),
        );
        r.register(
            "sched_plans",
            "Plans proposed by the leader's scheduler",
            m.sched_plans.clone(),
        );
        for kind in ["partial", "full"] {
            drop(
                m.sched_rejected_plans
                    .get_or_create(&RejectedLabel { kind }),
            );
        }
        r.register(
            "sched_rejected_plans",
            "Plans the applier refused in part (partial) or in full (full)",
            m.sched_rejected_plans.clone(),
        );
        r.register(
            "sched_placements",
            "Placements proposed",
            m.sched_placements.clone(),
        );
        r.register(
            "sched_placement_failures",
            "Instances an evaluation could not place",
            m.sched_placement_failures.clone(),
        );
        r.register(
            "sched_decision_latency_seconds",
            "Time one evaluation took (schedule and verify)",
            m.sched_decision_latency.clone(),
        );
        r.register(
            "sched_replacement_latency_seconds",
            "From an edge going down (or an instance failing) to its replacement reported running",
            m.sched_replacement_latency.clone(),
        );
        r.register(
            "sched_queue",
            "Evaluations waiting on the leader",
            m.sched_queue.clone(),
        );
        r.register(
            "sched_allocations",
            "Allocations desired to run in the region",
            m.sched_allocations.clone(),
        );
        r.register(
            "stale_fence_outputs",
            "Monitor outputs refused because their allocation was replaced",
            m.stale_fence_outputs.clone(),
        );
        for reason in ["cpu-pressure", "memory-pressure"] {
            drop(m.migrations.get_or_create(&ReasonLabel { reason }));
        }
        r.register(
            "migrations",
            "Instances moved off edges under sustained pressure, by reason (cpu-pressure, memory-pressure)",
            m.migrations.clone(),
        );
        for reason in ["budget", "nothing-movable", "no-target", "refused"] {
            drop(m.migrations_held.get_or_create(&ReasonLabel { reason }));
        }
        r.register(
            "migrations_held",
            "Pressure moves wanted but not made: over the region's budget (budget), nothing movable on the edge (nothing-movable), no edge could take it without becoming hot (no-target), the plan applier refused it (refused)",
            m.migrations_held.clone(),
        );
        r.register(
            "pressured_edges",
            "Edges under sustained CPU or memory pressure (leader; 0 on followers)",
            m.pressured_edges.clone(),
        );
        r.register(
            "checkpoints_stored",
            "Monitor state checkpoints stored",
            m.checkpoints_stored.clone(),
        );
        r.register(
            "checkpoints_refused",
            "Monitor state checkpoints refused, by reason (stale ones count as stale_fence_outputs)",
            m.checkpoints_refused.clone(),
        );
        r.register(
            "checkpoints_evicted",
            "Orphaned monitor state checkpoints evicted to make room for new ones",
            m.checkpoints_evicted.clone(),
        );
        r.register(
            "checkpoint_bytes",
            "State bytes of the monitor checkpoints the region holds",
            m.checkpoint_bytes.clone(),
        );
        m
    }

    /// Counts a batch's checkpoints.
    pub fn checkpoints(&self, c: &crate::fsm::CheckpointCounts) {
        self.checkpoints_stored.inc_by(u64::from(c.stored));
        self.checkpoints_evicted.inc_by(u64::from(c.evicted));
        for (reason, n) in [
            ("too-large", c.too_large),
            ("region-full", c.region_full),
            ("unknown-allocation", c.unknown),
        ] {
            if n > 0 {
                self.checkpoints_refused
                    .get_or_create(&ReasonLabel { reason })
                    .inc_by(u64::from(n));
            }
        }
    }

    /// Counts an evaluation for `trigger`.
    pub fn sched_evaluation(&self, trigger: &'static str) {
        self.sched_evaluations
            .get_or_create(&TriggerLabel { trigger })
            .inc();
    }

    /// Counts a plan refused in part (`partial`) or whole (`full`).
    pub fn sched_rejected_plan(&self, kind: &'static str) {
        self.sched_rejected_plans
            .get_or_create(&RejectedLabel { kind })
            .inc();
    }

    /// Counts one request of `kind`.
    pub fn request(&self, kind: &'static str) {
        self.requests.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts one liveness decision.
    pub fn transition(
        &self,
        state: strata_protocol::liveness::LivenessState,
        class: strata_protocol::liveness::Classification,
    ) {
        self.edge_transitions
            .get_or_create(&TransitionLabel {
                state: state.as_str(),
                classification: class.as_str(),
            })
            .inc();
    }

    /// The gauge of edges in `state`.
    pub fn liveness_edges(&self, state: strata_protocol::liveness::LivenessState) -> Gauge {
        self.liveness_edge_states
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .clone()
    }

    /// Counts one failed request of `kind`.
    pub fn request_error(&self, kind: &'static str) {
        self.request_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts `n` records dropped as already stored, for `reason`.
    pub fn duplicate(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.duplicates
                .get_or_create(&DuplicateLabel { reason })
                .inc_by(n);
        }
    }

    /// Records dropped as already stored, both reasons together.
    pub fn duplicates_total(&self) -> u64 {
        [EDGE_RESEND, DEVICE_RETRANSMISSION]
            .into_iter()
            .map(|reason| {
                self.duplicates
                    .get_or_create(&DuplicateLabel { reason })
                    .get()
            })
            .sum()
    }

    /// Counts what a retention report says was dropped.
    pub fn retention_drops(&self, drops: &[strata_protocol::TenantRetention]) {
        for d in drops {
            for (reason, n) in [
                ("expired_on_arrival", d.expired_on_arrival),
                ("expired", d.expired),
            ] {
                if n > 0 {
                    let label = RetentionLabel {
                        tenant: d.tenant.clone(),
                        reason,
                    };
                    self.retention_dropped.get_or_create(&label).inc_by(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_render() {
        let mut reg = Registry::default();
        let m = HubMetrics::register(&mut reg);
        m.request("batch");
        m.raft.term.set(3);
        let text = strata_net::metrics::render(&reg);
        assert!(text.contains("strata_hub_raft_term 3"), "{text}");
        assert!(
            text.contains("strata_hub_requests_total{kind=\"batch\"} 1"),
            "{text}"
        );
        // Both dedup reasons exist before anything is dropped.
        for reason in ["edge_resend", "device_retransmission"] {
            let series = format!("strata_hub_duplicate_records_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "{text}");
        }
        m.duplicate(DEVICE_RETRANSMISSION, 2);
        m.duplicate(EDGE_RESEND, 3);
        assert_eq!(m.duplicates_total(), 5);
        m.retention_drops(&[strata_protocol::TenantRetention {
            tenant: "acme".into(),
            expired_on_arrival: 4,
            expired: 0,
        }]);
        let text = strata_net::metrics::render(&reg);
        assert!(
            text.contains(
                "strata_hub_retention_dropped_records_total{tenant=\"acme\",reason=\"expired_on_arrival\"} 4"
            ),
            "{text}"
        );
        assert!(!text.contains("reason=\"expired\""), "{text}");
    }
}
