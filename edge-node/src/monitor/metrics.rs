//! Prometheus counters of the monitor host (`strata_monitor_*`).

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

/// Labels naming a fault reason ([`crate::runtime::InstanceFault::label`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason.
    pub reason: String,
}

/// The host's counters. Cheap to clone (counters are shared handles).
#[derive(Debug, Clone, Default)]
pub struct HostMetrics {
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
}

impl HostMetrics {
    /// Registers every counter under `strata_monitor_`.
    pub fn register(reg: &mut Registry) -> Self {
        let m = HostMetrics::default();
        let r = reg.sub_registry_with_prefix("strata_monitor");
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
        m
    }

    /// Counts one fault or failed start.
    pub fn fault(&self, reason: &str) {
        self.faults
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
