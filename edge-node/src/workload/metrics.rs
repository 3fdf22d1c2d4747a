//! Prometheus counters of the workload layer. The names keep the
//! `strata_monitor_` prefix operators already scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels naming one instance.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// Tenant.
    pub tenant: String,
    /// Monitor name.
    pub monitor: String,
}

/// Labels naming a reason (a fault label, a cache result).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason.
    pub reason: String,
}

/// The counters. Cheap to clone (counters are shared handles).
#[derive(Debug, Clone, Default)]
pub struct WorkloadMetrics {
    /// Records queued for instances.
    pub routed: Counter,
    /// Records dropped per instance because its queue was full.
    pub dropped: Family<InstanceLabels, Counter>,
    /// Records handed to `on_batch`.
    pub processed: Counter,
    /// Instance faults and failed starts, by reason.
    pub faults: Family<ReasonLabel, Counter>,
    /// Instances started (first starts and restarts).
    pub starts: Counter,
    /// Instances running now.
    pub running: Gauge,
    /// Alerts raised.
    pub alerts: Counter,
    /// Derived metrics emitted.
    pub metrics: Counter,
    /// Alerts and metrics made durable in the spool.
    pub outputs_spooled: Counter,
    /// Alerts and metrics lost because the spool refused them.
    pub outputs_lost: Counter,
    /// Guest log lines dropped or cut by the runtime.
    pub logs_dropped: Counter,
    /// Persisted files found corrupt (assignments, modules, state).
    pub corrupt_files: Counter,
    /// Modules made ready, by how: `memory`, `disk` (compiled-module
    /// cache), `compiled` (cache miss), `discarded` (a cache file failed
    /// its checks and the module was compiled again).
    pub module_loads: Family<ReasonLabel, Counter>,
    /// `replace-after` leases that ran out (their instances were stopped).
    pub lease_expiries: Counter,
    /// Alerts and metrics of an instance whose lease had run out, dropped
    /// on the edge.
    pub outputs_fenced: Counter,
    /// Instances stopped by the lifecycle core, by reason.
    pub stops: Family<ReasonLabel, Counter>,
    /// State checkpoints made durable in the spool (on their way to the
    /// region).
    pub checkpoints_spooled: Counter,
    /// State checkpoints not spooled, by reason: `too-large` (above
    /// `checkpoint-max-bytes`), `queue-full` (the spool writer was behind;
    /// retried at the next sample), `spool-refused` (the spool failed).
    pub checkpoints_skipped: Family<ReasonLabel, Counter>,
    /// Checkpoints the region handed to new instances, by outcome:
    /// `seeded` (the instance started from it), `kept-local` (its own
    /// state was newer), `unusable` (it did not decode).
    pub checkpoint_seeds: Family<ReasonLabel, Counter>,
    /// Shard hand-overs: a sharded monitor's instances on this edge changed
    /// and device state moved between them.
    pub shard_handovers: Counter,
    /// Devices whose kv state moved to another instance in a hand-over.
    pub shard_devices_moved: Counter,
    /// Kv keys moved to another instance in a hand-over.
    pub shard_keys_moved: Counter,
    /// Records dropped because an instance's queue filled while it was
    /// paused for a hand-over (also in `records_dropped`).
    pub handover_dropped: Counter,
}

impl WorkloadMetrics {
    /// Registers every counter under `strata_monitor_`.
    pub fn register(reg: &mut Registry) -> Self {
        let m = WorkloadMetrics::default();
        let r = reg.sub_registry_with_prefix("strata_monitor");
        r.register(
            "shard_handovers",
            "Shard hand-overs between a sharded monitor's instances",
            m.shard_handovers.clone(),
        );
        r.register(
            "shard_devices_moved",
            "Devices whose kv state moved to another instance in a shard hand-over",
            m.shard_devices_moved.clone(),
        );
        r.register(
            "shard_keys_moved",
            "Kv keys moved to another instance in a shard hand-over",
            m.shard_keys_moved.clone(),
        );
        r.register(
            "records_dropped_handover",
            "Records dropped because a queue filled while paused for a shard hand-over",
            m.handover_dropped.clone(),
        );
        r.register(
            "routed",
            "Records queued for monitor instances",
            m.routed.clone(),
        );
        r.register(
            "records_dropped",
            "Records dropped because an instance's queue was full",
            m.dropped.clone(),
        );
        r.register(
            "processed",
            "Records handed to monitor callbacks",
            m.processed.clone(),
        );
        r.register(
            "faults",
            "Instance faults and failed starts by reason",
            m.faults.clone(),
        );
        r.register("starts", "Instances started", m.starts.clone());
        r.register(
            "instances_running",
            "Monitor instances running now",
            m.running.clone(),
        );
        r.register("alerts", "Alerts raised by monitors", m.alerts.clone());
        r.register(
            "derived_metrics",
            "Derived metrics emitted by monitors",
            m.metrics.clone(),
        );
        r.register(
            "outputs_spooled",
            "Alerts and metrics made durable in the spool",
            m.outputs_spooled.clone(),
        );
        r.register(
            "outputs_lost",
            "Alerts and metrics the spool refused",
            m.outputs_lost.clone(),
        );
        r.register(
            "guest_logs_dropped",
            "Guest log lines dropped or cut",
            m.logs_dropped.clone(),
        );
        r.register(
            "corrupt_files",
            "Persisted monitor files found corrupt",
            m.corrupt_files.clone(),
        );
        r.register(
            "module_loads",
            "Modules made ready, by how (memory, disk cache, compiled, cache file discarded)",
            m.module_loads.clone(),
        );
        r.register(
            "lease_expired",
            "Replace-after leases that ran out; their instances were stopped",
            m.lease_expiries.clone(),
        );
        r.register(
            "outputs_fenced",
            "Alerts and metrics of an instance whose lease ran out, dropped on the edge",
            m.outputs_fenced.clone(),
        );
        r.register("stops", "Instances stopped, by reason", m.stops.clone());
        r.register(
            "checkpoints_spooled",
            "Instance state checkpoints made durable in the spool",
            m.checkpoints_spooled.clone(),
        );
        r.register(
            "checkpoints_skipped",
            "Instance state checkpoints not spooled, by reason",
            m.checkpoints_skipped.clone(),
        );
        r.register(
            "checkpoint_seeds",
            "Region checkpoints handed to new instances, by outcome (seeded, kept-local, unusable)",
            m.checkpoint_seeds.clone(),
        );
        m
    }

    /// Counts one checkpoint not spooled, by reason.
    pub fn checkpoint_skipped(&self, reason: &str) {
        bump(&self.checkpoints_skipped, reason);
    }

    /// Counts one seed decision, by outcome.
    pub fn checkpoint_seed(&self, outcome: &str) {
        bump(&self.checkpoint_seeds, outcome);
    }

    /// Counts one fault or failed start.
    pub fn fault(&self, reason: &str) {
        bump(&self.faults, reason);
    }

    /// Counts one module made ready, by how.
    pub fn module_load(&self, how: &str) {
        bump(&self.module_loads, how);
    }

    /// Counts one stop, by reason.
    pub fn stop(&self, reason: &str) {
        bump(&self.stops, reason);
    }
}

fn bump(f: &Family<ReasonLabel, Counter>, reason: &str) {
    f.get_or_create(&ReasonLabel {
        reason: reason.to_owned(),
    })
    .inc();
}
