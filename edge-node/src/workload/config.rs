//! `[monitors]`: the workload layer's section of the edge config, with the
//! sandbox limits, the wasm driver and the lifecycle tuning as nested
//! sections. The section keeps its user-facing name (`[monitors]`, and
//! `[monitors.sched]` for the lifecycle tuning) whatever the Rust types are
//! called.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::sandbox::{RuntimeLimits, WasmDriverConfig};

/// Most `monitors.checkpoint-max-bytes`: what a region keeps at most.
pub const MAX_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// The workload layer (device-monitor instances).
///
/// ```toml
/// [monitors]
/// memory-mib = 256
/// cpu-millicores = 1000
/// labels = { arch = "arm64" }
/// [monitors.limits]
/// callback-budget-ms = 100
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkloadConfig {
    /// Memory set aside for monitor instances (sum of their budgets), MiB.
    /// Default 256.
    pub memory_mib: u32,
    /// CPU set aside for monitor instances, millicores (1000 = one core).
    /// Default 1000.
    pub cpu_millicores: u32,
    /// Node labels that monitor specs may require. Default none.
    pub labels: BTreeMap<String, String>,
    /// Pools this node belongs to. Default none.
    pub pools: BTreeSet<String>,
    /// Worker threads running monitor callbacks; 0 = one per available
    /// core. Default 0.
    pub worker_threads: usize,
    /// Records queued per instance; beyond it new records are dropped for
    /// that instance and counted (a slow monitor never slows ingest).
    /// Default 10000.
    pub queue_records: usize,
    /// Most records handed to one `on_batch` call. Default 1000.
    pub max_batch_records: usize,
    /// Period of the usage sample fed to the scheduler (instances and the
    /// node's /proc figures), ms. Default 2000.
    pub sample_interval_ms: u64,
    /// Changed key-value state is persisted at most this often (and always
    /// on stop and shutdown), ms. Default 5000.
    pub state_flush_interval_ms: u64,
    /// A changed key-value state is checkpointed to the region (a fenced
    /// spool entry, so a replacement starts from it) at most this often per
    /// instance, and on a clean stop, ms. 0 turns checkpoints off.
    /// Default 30000.
    pub checkpoint_interval_ms: u64,
    /// Largest encoded state checkpointed, bytes; a larger one is skipped
    /// and counted (`strata_monitor_checkpoints_skipped_total{reason="too-large"}`).
    /// 1 to 4194304 (the most a region keeps); keep it within the hub's
    /// `checkpoints.max-bytes`. Default 65536.
    pub checkpoint_max_bytes: u64,
    /// Callback outputs (alerts + metrics of one batch) waiting for the
    /// spool; when full, workers wait, never drop. Default 1024.
    pub output_queue: usize,
    /// Most alerts and metrics written to the spool in one append.
    /// Default 4096.
    pub max_output_batch: usize,
    /// On shutdown, time allowed for queued records to be processed before
    /// the workers stop, ms. Default 2000.
    pub drain_timeout_ms: u64,
    /// Cached routing decisions (tenant, device, tags); the cache is
    /// cleared when it grows beyond this. Default 100000.
    pub route_cache_entries: usize,
    /// Per-callback limits enforced on every instance.
    pub limits: RuntimeLimits,
    /// The wasmtime driver.
    pub wasm: WasmDriverConfig,
    /// Lifecycle tuning (crash loops, resizing).
    pub sched: LifecycleConfig,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            memory_mib: 256,
            cpu_millicores: 1000,
            labels: BTreeMap::new(),
            pools: BTreeSet::new(),
            worker_threads: 0,
            queue_records: 10_000,
            max_batch_records: 1000,
            sample_interval_ms: 2000,
            state_flush_interval_ms: 5000,
            checkpoint_interval_ms: 30_000,
            checkpoint_max_bytes: 64 * 1024,
            output_queue: 1024,
            max_output_batch: 4096,
            drain_timeout_ms: 2000,
            route_cache_entries: 100_000,
            limits: RuntimeLimits::default(),
            wasm: WasmDriverConfig::default(),
            sched: LifecycleConfig::default(),
        }
    }
}

impl WorkloadConfig {
    /// Every problem, one line each, prefixed with `monitors.` paths.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let positive: [(&str, u64); 9] = [
            ("memory-mib", self.memory_mib.into()),
            ("cpu-millicores", self.cpu_millicores.into()),
            ("queue-records", self.queue_records as u64),
            ("max-batch-records", self.max_batch_records as u64),
            ("sample-interval-ms", self.sample_interval_ms),
            ("state-flush-interval-ms", self.state_flush_interval_ms),
            ("output-queue", self.output_queue as u64),
            ("max-output-batch", self.max_output_batch as u64),
            ("route-cache-entries", self.route_cache_entries as u64),
        ];
        for (field, v) in positive {
            if v == 0 {
                p.push(format!("monitors.{field}: must be greater than 0"));
            }
        }
        if !(1..=MAX_CHECKPOINT_BYTES).contains(&self.checkpoint_max_bytes) {
            p.push(format!(
                "monitors.checkpoint-max-bytes: {} must be between 1 and {MAX_CHECKPOINT_BYTES}",
                self.checkpoint_max_bytes
            ));
        }
        if self.worker_threads > 1024 {
            p.push(format!(
                "monitors.worker-threads: {} is more than 1024",
                self.worker_threads
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || v.is_empty() {
                p.push(format!(
                    "monitors.labels: {k:?} = {v:?}: keys and values must not be empty"
                ));
            }
        }
        if self.pools.iter().any(String::is_empty) {
            p.push("monitors.pools: pool names must not be empty".into());
        }
        let nested = [
            ("limits", self.limits.validate()),
            ("wasm", self.wasm.validate()),
            ("sched", self.sched.validate()),
        ];
        for (section, r) in nested {
            if let Err(errs) = r {
                p.extend(errs.into_iter().map(|e| format!("monitors.{section}.{e}")));
            }
        }
        p
    }

    /// Worker threads to start: the configured count, or one per core.
    pub fn workers(&self) -> usize {
        if self.worker_threads > 0 {
            self.worker_threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// Lifecycle tuning (`[monitors.sched]`): crash loops, backoff reset,
/// resizing. A node-level policy, not per spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LifecycleConfig {
    /// Failures within `crash-loop-window-ms` that mark an instance
    /// crash-looping (it is then not restarted until its spec changes). Default 5.
    pub crash_loop_failures: u32,
    /// Sliding window for crash-loop detection, ms. Default 60000.
    pub crash_loop_window_ms: u64,
    /// An instance that ran this long before exiting restarts its backoff
    /// from the first step, ms. Default 60000.
    pub stable_after_ms: u64,
    /// Grow a budget when use is at or above this percentage of it. Default 90.
    pub grow_above_pct: u32,
    /// Shrink a budget (under node pressure) when use is below this
    /// percentage of it. Default 30.
    pub shrink_below_pct: u32,
    /// How long a grow or shrink condition must hold, ms. Default 30000.
    pub resize_sustain_ms: u64,
    /// A grow multiplies the budget by this percentage. Default 150.
    pub grow_factor_pct: u32,
    /// A shrink aims for this use percentage of the new budget. Default 60.
    pub shrink_target_pct: u32,
    /// The node is under pressure in a dimension when its measured use or
    /// the reserved budgets reach this percentage. Default 85.
    pub pressure_pct: u32,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            crash_loop_failures: 5,
            crash_loop_window_ms: 60_000,
            stable_after_ms: 60_000,
            grow_above_pct: 90,
            shrink_below_pct: 30,
            resize_sustain_ms: 30_000,
            grow_factor_pct: 150,
            shrink_target_pct: 60,
            pressure_pct: 85,
        }
    }
}

impl LifecycleConfig {
    /// Every problem at once, as `field: message` lines.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.crash_loop_failures == 0 {
            errs.push("crash-loop-failures: must be at least 1".to_owned());
        }
        if self.crash_loop_window_ms == 0 {
            errs.push("crash-loop-window-ms: must be greater than 0".to_owned());
        }
        if !(1..=100).contains(&self.shrink_below_pct)
            || self.shrink_below_pct >= self.grow_above_pct
            || self.grow_above_pct > 100
        {
            errs.push(format!(
                "shrink-below-pct ({}) and grow-above-pct ({}): need 1 <= shrink < grow <= 100",
                self.shrink_below_pct, self.grow_above_pct
            ));
        }
        if self.grow_factor_pct <= 100 {
            errs.push(format!(
                "grow-factor-pct: {} must be above 100",
                self.grow_factor_pct
            ));
        }
        if self.shrink_target_pct <= self.shrink_below_pct
            || self.shrink_target_pct >= self.grow_above_pct
        {
            errs.push(format!(
                "shrink-target-pct: {} must lie between shrink-below-pct and grow-above-pct",
                self.shrink_target_pct
            ));
        }
        if !(1..=100).contains(&self.pressure_pct) {
            errs.push(format!("pressure-pct: {} must be 1-100", self.pressure_pct));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_are_all_reported() {
        assert_eq!(WorkloadConfig::default().problems(), Vec::<String>::new());
        assert!(WorkloadConfig::default().workers() >= 1);
        let cfg: WorkloadConfig = toml::from_str(
            "memory-mib = 0\nqueue-records = 0\ncheckpoint-max-bytes = 0\n\
             [limits]\ncallback-budget-ms = 0\n\
             [sched]\ncrash-loop-failures = 0\n[wasm]\nepoch-tick-ms = 0\n",
        )
        .unwrap();
        let p = cfg.problems();
        assert_eq!(p.len(), 6, "{p:?}");
        assert!(p
            .iter()
            .any(|l| l.starts_with("monitors.checkpoint-max-bytes")));
        assert!(p[0].starts_with("monitors.memory-mib"), "{p:?}");
        assert!(p
            .iter()
            .any(|l| l.starts_with("monitors.limits.callback-budget-ms")));
        assert!(p
            .iter()
            .any(|l| l.starts_with("monitors.sched.crash-loop-failures")));
        assert!(p
            .iter()
            .any(|l| l.starts_with("monitors.wasm.epoch-tick-ms")));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<WorkloadConfig>("memory-mb = 5").unwrap_err();
        assert!(e.to_string().contains("memory-mb"), "{e}");
    }
}
