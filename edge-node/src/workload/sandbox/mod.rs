//! Sandboxes for workload instances, behind one driver trait that a QEMU
//! microVM driver will also implement.
//!
//! The workload driver executes the lifecycle core's commands through a
//! [`SandboxDriver`]: `prepare` a module once per hash (or load its compiled
//! form from the disk cache with `prepare_cached`), `instantiate` an instance
//! per start, feed it batches with [`SandboxInstance::on_batch`], `resize` it
//! in place, and carry its [`KvState`] across restarts. A guest that breaks
//! a limit faults ([`InstanceFault`], with its reason); only that instance
//! dies, and the lifecycle core restarts it with backoff.
//!
//! # Layout
//! - this file: the traits, instance config and limits, outputs, faults,
//!   errors.
//! - [`wasm`]: the wasmtime driver (engine, in-memory module cache, epoch
//!   ticker, disk cache use), and the one audited `unsafe` call of the
//!   node's library code: loading a verified compiled module.
//! - `wasm_instance`: one wasm instance (store, budgets, calls, fault
//!   classification).
//! - `abi`: the host side of the monitor ABI (`docs/monitor-abi.md`,
//!   version 1): bounds-checked `strata.*` imports, limiter, kv quota.
//! - [`cache`]: the compiled-module disk cache and the checks that make
//!   loading its files sound.
//! - [`conformance`]: the suite every driver must pass, generic over
//!   `&dyn SandboxDriver` and a driver-supplied [`conformance::Fixtures`].

mod abi;
pub mod cache;
pub mod conformance;
pub mod wasm;
mod wasm_instance;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod samples_tests;
#[cfg(test)]
mod wasm_tests;

pub use wasm::{WasmDriver, WasmDriverConfig};
pub use wasm_instance::{WasmInstance, ABI_VERSION};

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use strata_protocol::workload::RuntimeKind;
use strata_protocol::TelemetryRecord;

use super::model::{Budget, ExitKind, InstanceKey, InstanceUsage};

/// A monitor's key-value state: survives restarts and moves.
pub type KvState = BTreeMap<String, Vec<u8>>;

/// A sandbox runtime. One per kind per node; shared by all instances.
pub trait SandboxDriver: Send + Sync + 'static {
    /// Which runtime this driver implements.
    fn kind(&self) -> RuntimeKind;
    /// Validates and compiles an artifact; cached by its sha256 so N
    /// instances of one module compile once (and, with a disk cache, so a
    /// restarted node does not compile it again). The bytes must hash to
    /// `sha256`.
    fn prepare(&self, sha256: &str, artifact: &[u8]) -> Result<PreparedModule, RuntimeError>;
    /// A module prepared earlier, from memory or from the driver's disk
    /// cache, without its bytes. Drivers without a cache keep the default.
    fn prepare_cached(&self, sha256: &str) -> Cached {
        let _ = sha256;
        Cached::Miss
    }
    /// Forgets cached compiled forms of modules `keep` rejects (no instance
    /// needs them any more).
    fn retain_cached(&self, keep: &dyn Fn(&str) -> bool) {
        let _ = keep;
    }
    /// Creates an instance, restores its state and runs its `init`.
    fn instantiate(
        &self,
        module: &PreparedModule,
        cfg: InstanceConfig,
    ) -> Result<Box<dyn SandboxInstance>, RuntimeError>;
}

/// What [`SandboxDriver::prepare_cached`] found.
#[derive(Debug)]
pub enum Cached {
    /// Ready to instantiate; `from_disk` when it came from the disk cache.
    Hit {
        /// The module.
        module: PreparedModule,
        /// Loaded from the disk cache rather than found in memory.
        from_disk: bool,
    },
    /// Nothing cached: read the artifact and `prepare` it.
    Miss,
    /// A cached file failed verification or loading and was deleted; the
    /// caller compiles afresh.
    Discarded {
        /// Which check failed.
        reason: String,
    },
}

/// One running monitor. Driven by one owner at a time (`Send`, not `Sync`).
pub trait SandboxInstance: Send + fmt::Debug {
    /// Hands a batch of records to the guest. Output of `init` that has not
    /// been returned yet comes with the first batch. After an `Err` the
    /// instance is dead and returns the same fault forever.
    fn on_batch(&mut self, records: &[TelemetryRecord]) -> Result<BatchOutput, InstanceFault>;
    /// [`SandboxInstance::on_batch`] for records shared between instances:
    /// the monitor host queues `Arc`s, so N instances watching one device
    /// do not each copy its readings. The default copies them once here;
    /// drivers that serialise the batch should encode straight from them.
    fn on_shared_batch(
        &mut self,
        records: &[Arc<TelemetryRecord>],
    ) -> Result<BatchOutput, InstanceFault> {
        let owned: Vec<TelemetryRecord> = records.iter().map(|r| (**r).clone()).collect();
        self.on_batch(&owned)
    }
    /// Changes memory and CPU budget in place (the caller keeps it within
    /// the spec's min/max).
    fn resize(&mut self, budget: Budget) -> Result<(), RuntimeError>;
    /// The key-value state, to pass to the next instantiation. A faulted
    /// callback's writes are rolled back, so this is the state as of the
    /// last successful callback.
    fn state(&self) -> KvState;
    /// Removes and returns the entries whose key `moves` selects: the state
    /// of devices handed over to another instance of a sharded monitor.
    /// Called between callbacks only.
    fn take_state(&mut self, moves: &dyn Fn(&str) -> bool) -> KvState;
    /// Adds entries handed over from another instance of the monitor
    /// (replacing equal keys), in key order while they fit the kv quota;
    /// returns how many did not fit and were dropped. Called between
    /// callbacks only.
    fn import_state(&mut self, entries: KvState) -> usize;
    /// Memory in use now, and CPU (millicores) since the previous `usage`
    /// call (or since instantiation). Call it from one sampler only.
    fn usage(&self) -> InstanceUsage;
    /// Fuel (abstract CPU work units) consumed since instantiation.
    fn fuel_consumed(&self) -> u64;
    /// Fuel one callback may burn at the current budget, so the caller can
    /// size batches to fit it. Drivers without fuel accounting keep the
    /// default (no limit).
    fn fuel_per_callback(&self) -> u64 {
        u64::MAX
    }
}

/// A validated, compiled artifact. Cheap to clone; opaque to callers.
#[derive(Clone)]
pub struct PreparedModule {
    /// Content hash (64 lowercase hex digits).
    pub sha256: String,
    /// Runtime that prepared it; instantiating with another driver fails.
    pub kind: RuntimeKind,
    /// Size of what it was prepared from (the artifact, or the compiled
    /// form loaded from the disk cache), bytes.
    pub size_bytes: u64,
    /// The driver's compiled form, downcast by the driver that made it.
    pub(crate) inner: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for PreparedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedModule")
            .field("sha256", &self.sha256)
            .field("kind", &self.kind)
            .field("size_bytes", &self.size_bytes)
            .finish_non_exhaustive()
    }
}

impl PreparedModule {
    /// Builds a prepared module around a driver-specific compiled form.
    pub fn new(
        sha256: String,
        kind: RuntimeKind,
        size_bytes: u64,
        inner: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        PreparedModule {
            sha256,
            kind,
            size_bytes,
            inner,
        }
    }

    /// The driver-specific compiled form, if it is a `T`.
    pub fn inner<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.inner.downcast_ref::<T>()
    }

    /// Whether two handles share one compiled form (the cache worked).
    pub fn same_compiled(&self, other: &PreparedModule) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Everything an instance starts from.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// Which instance (tenant/name); names it in errors and logs.
    pub key: InstanceKey,
    /// Parameters for the guest's `init`, JSON text.
    pub params_json: String,
    /// Memory limit and CPU share.
    pub budget: Budget,
    /// State exported by a previous instance (empty on first start).
    pub state: KvState,
    /// Host-enforced per-callback limits.
    pub limits: RuntimeLimits,
}

/// Host-enforced limits (docs/monitor-abi.md, "Limits enforced by the host").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeLimits {
    /// CPU time one callback may use at 1000 millicores, ms; fuel per
    /// callback scales with the budget's millicores. Default 100.
    pub callback_budget_ms: u64,
    /// Cap of the wall-clock deadline per callback, ms. The deadline is
    /// `callback-budget-ms x 1000 / millicores`, at most this. Default 1000.
    pub max_deadline_ms: u64,
    /// Fuel one fully busy core burns per ms (calibration; also converts
    /// fuel back into millicores for usage). Default 1000000.
    pub fuel_per_core_ms: u64,
    /// Alerts plus metrics per callback; beyond it the callback is stopped
    /// with `AlertFlood`. Default 1000.
    pub max_emits_per_callback: u32,
    /// Key-value state quota (sum of key and value bytes), bytes. Default 65536.
    pub kv_quota_bytes: u32,
    /// Longest kv key, bytes. Default 256.
    pub kv_max_key_bytes: u32,
    /// Log lines kept per callback; more are dropped and counted. Default 100.
    pub max_log_lines: u32,
    /// Longest log line, bytes; longer lines are cut and counted. Default 1024.
    pub max_log_line_bytes: u32,
    /// Longest alert device / code / metric name / device kept, bytes;
    /// longer strings are cut. Default 256.
    pub max_label_bytes: u32,
    /// Longest alert message kept, bytes; longer ones are cut. Default 4096.
    pub max_message_bytes: u32,
    /// Most elements in any guest table. Default 10000.
    pub max_table_elements: u32,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            callback_budget_ms: 100,
            max_deadline_ms: 1000,
            fuel_per_core_ms: 1_000_000,
            max_emits_per_callback: 1000,
            kv_quota_bytes: 64 * 1024,
            kv_max_key_bytes: 256,
            max_log_lines: 100,
            max_log_line_bytes: 1024,
            max_label_bytes: 256,
            max_message_bytes: 4096,
            max_table_elements: 10_000,
        }
    }
}

impl RuntimeLimits {
    /// Every problem at once, as `field: message` lines.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let positive: [(&str, u64); 10] = [
            ("callback-budget-ms", self.callback_budget_ms),
            ("max-deadline-ms", self.max_deadline_ms),
            ("fuel-per-core-ms", self.fuel_per_core_ms),
            ("max-emits-per-callback", self.max_emits_per_callback.into()),
            ("kv-max-key-bytes", self.kv_max_key_bytes.into()),
            ("max-log-line-bytes", self.max_log_line_bytes.into()),
            ("max-label-bytes", self.max_label_bytes.into()),
            ("max-message-bytes", self.max_message_bytes.into()),
            ("max-table-elements", self.max_table_elements.into()),
            ("kv-quota-bytes", self.kv_quota_bytes.into()),
        ];
        for (field, v) in positive {
            if v == 0 {
                errs.push(format!("{field}: must be greater than 0"));
            }
        }
        if self.kv_max_key_bytes > self.kv_quota_bytes {
            errs.push(format!(
                "kv-max-key-bytes: {} exceeds kv-quota-bytes {}",
                self.kv_max_key_bytes, self.kv_quota_bytes
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Fuel for one callback at `millicores`, at least 1.
    pub fn fuel_per_callback(&self, millicores: u32) -> u64 {
        let f = u128::from(self.fuel_per_core_ms)
            * u128::from(self.callback_budget_ms)
            * u128::from(millicores)
            / 1000;
        u64::try_from(f).unwrap_or(u64::MAX).max(1)
    }

    /// Wall-clock deadline of one callback at `millicores`, ms.
    pub fn deadline_ms(&self, millicores: u32) -> u64 {
        let m = u64::from(millicores.max(1));
        (self.callback_budget_ms.saturating_mul(1000) / m).clamp(1, self.max_deadline_ms)
    }
}

/// Alert severity (ABI: 0 info, 1 warning, 2 critical): the protocol's
/// type, so an alert crosses from the guest to the spool without mapping.
pub use strata_protocol::monitoring::Severity;

/// Guest log level (ABI: 0 debug … 3 error; others are clamped to error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

impl LogLevel {
    /// From the ABI code; unknown codes (not a violation) count as `Error`.
    pub fn from_abi(code: i32) -> LogLevel {
        match code {
            0 => LogLevel::Debug,
            1 => LogLevel::Info,
            2 => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }
}

/// An alert raised by a monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// How bad.
    pub severity: Severity,
    /// Device the alert is about.
    pub device: String,
    /// Machine-readable code (`"over-threshold"`).
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

/// A metric derived by a monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedMetric {
    /// Device the metric is about.
    pub device: String,
    /// Metric name.
    pub name: String,
    /// Finite value.
    pub value: f64,
}

/// One guest log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLog {
    /// Level.
    pub level: LogLevel,
    /// Text (cut to the line limit).
    pub message: String,
}

/// What one callback produced, and what it cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutput {
    /// Alerts, in emission order.
    pub alerts: Vec<Alert>,
    /// Derived metrics, in emission order.
    pub metrics: Vec<DerivedMetric>,
    /// Log lines kept.
    pub logs: Vec<GuestLog>,
    /// Log lines dropped (over the per-callback count) or cut (too long).
    pub logs_dropped: u32,
    /// Fuel the callback burnt.
    pub fuel_used: u64,
    /// Wall time of the callback, host side included.
    pub wall_time: Duration,
}

/// Why an instance died. Each carries its reason; the scheduler maps it to
/// an exit kind with [`InstanceFault::exit_kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceFault {
    /// The callback used its whole CPU (fuel) budget.
    #[error("CPU budget of {fuel} fuel exhausted in one callback")]
    FuelExhausted {
        /// Fuel the callback had.
        fuel: u64,
    },
    /// The callback ran past its wall-clock deadline (epoch interruption).
    #[error("callback ran past its {deadline_ms} ms wall-clock deadline")]
    Timeout {
        /// The deadline, ms.
        deadline_ms: u64,
    },
    /// The guest needed more memory than its budget.
    #[error("memory limit of {limit_bytes} bytes reached: {detail}")]
    MemoryLimit {
        /// The budget, bytes.
        limit_bytes: u64,
        /// What failed after the growth was refused.
        detail: String,
    },
    /// The guest trapped (unreachable, bad access, stack overflow, panic).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest broke the host ABI (bad pointer, bad severity, …).
    #[error("host ABI violation: {0}")]
    AbiViolation(String),
    /// The guest emitted more alerts plus metrics than allowed per callback.
    #[error("more than {limit} alerts and metrics in one callback")]
    AlertFlood {
        /// The per-callback cap.
        limit: u32,
    },
    /// `strata_init` returned non-zero.
    #[error("strata_init returned {0}")]
    InitFailed(i32),
    /// `strata_on_batch` returned non-zero.
    #[error("strata_on_batch returned {0}")]
    BatchFailed(i32),
}

impl InstanceFault {
    /// Short stable label, for counters and event logs.
    pub fn label(&self) -> &'static str {
        match self {
            InstanceFault::FuelExhausted { .. } => "fuel-exhausted",
            InstanceFault::Timeout { .. } => "timeout",
            InstanceFault::MemoryLimit { .. } => "memory-limit",
            InstanceFault::Trap(_) => "trap",
            InstanceFault::AbiViolation(_) => "abi-violation",
            InstanceFault::AlertFlood { .. } => "alert-flood",
            InstanceFault::InitFailed(_) => "init-failed",
            InstanceFault::BatchFailed(_) => "batch-failed",
        }
    }

    /// The lifecycle core's view of this fault.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            InstanceFault::FuelExhausted { .. } | InstanceFault::Timeout { .. } => {
                ExitKind::Timeout
            }
            InstanceFault::MemoryLimit { .. } => ExitKind::OutOfMemory,
            InstanceFault::Trap(d) => ExitKind::Trap(d.clone()),
            other => ExitKind::Crashed(other.to_string()),
        }
    }
}

/// Driver errors. Each names the module (hash) or instance concerned.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The artifact's bytes do not hash to the claimed sha256.
    #[error("artifact {sha256}: content hashes to {actual}")]
    HashMismatch {
        /// Claimed hash.
        sha256: String,
        /// Hash of the bytes received.
        actual: String,
    },
    /// The artifact is not a valid module for this runtime (not wasm,
    /// invalid, missing or mistyped exports, unknown imports).
    #[error("artifact {sha256}: {reason}")]
    InvalidArtifact {
        /// Module hash.
        sha256: String,
        /// What is wrong.
        reason: String,
    },
    /// The module reports an ABI version this host does not speak.
    #[error(
        "instance {instance} (module {sha256}): guest ABI version {found}, host speaks {expected}"
    )]
    AbiVersion {
        /// Instance.
        instance: InstanceKey,
        /// Module hash.
        sha256: String,
        /// Version the guest returned.
        found: i32,
        /// Version the host implements.
        expected: i32,
    },
    /// A module prepared by another driver was passed in.
    #[error("module {sha256} was prepared by the {kind} driver, not this one")]
    ForeignModule {
        /// Module hash.
        sha256: String,
        /// Runtime that prepared it.
        kind: RuntimeKind,
    },
    /// The instance config is unusable.
    #[error("instance {instance}: invalid config: {}", problems.join("; "))]
    InvalidConfig {
        /// Instance.
        instance: InstanceKey,
        /// Every problem.
        problems: Vec<String>,
    },
    /// Creating the sandbox failed (e.g. its initial memory exceeds the budget).
    #[error("instance {instance} (module {sha256}): instantiation failed: {reason}")]
    Instantiate {
        /// Instance.
        instance: InstanceKey,
        /// Module hash.
        sha256: String,
        /// Runtime's explanation.
        reason: String,
    },
    /// The guest faulted during instantiation (`init` or ABI handshake).
    #[error("instance {instance} (module {sha256}): {fault}")]
    Fault {
        /// Instance.
        instance: InstanceKey,
        /// Module hash.
        sha256: String,
        /// The fault.
        fault: InstanceFault,
    },
    /// A resize was refused.
    #[error("instance {instance}: resize refused: {reason}")]
    Resize {
        /// Instance.
        instance: InstanceKey,
        /// Why.
        reason: String,
    },
    /// The instance has faulted and can only be restarted.
    #[error("instance {instance} is dead after: {fault}")]
    Dead {
        /// Instance.
        instance: InstanceKey,
        /// The fault that killed it.
        fault: InstanceFault,
    },
    /// The runtime itself could not be set up.
    #[error("runtime setup: {0}")]
    Setup(String),
}

/// SHA-256 of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn limits_validate_reports_every_problem() {
        assert_eq!(RuntimeLimits::default().validate(), Ok(()));
        let bad = RuntimeLimits {
            callback_budget_ms: 0,
            kv_quota_bytes: 10,
            kv_max_key_bytes: 20,
            ..RuntimeLimits::default()
        };
        let errs = bad.validate().unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("callback-budget-ms"));
        assert!(errs[1].starts_with("kv-max-key-bytes"));
    }

    #[test]
    fn limits_parse_from_kebab_case_toml() {
        let l: RuntimeLimits = toml::from_str("callback-budget-ms = 50").unwrap();
        assert_eq!(l.callback_budget_ms, 50);
        assert_eq!(l.kv_quota_bytes, 64 * 1024);
        assert!(toml::from_str::<RuntimeLimits>("no-such-field = 1").is_err());
    }

    #[test]
    fn faults_map_to_scheduler_exit_kinds() {
        assert_eq!(
            InstanceFault::FuelExhausted { fuel: 1 }.exit_kind(),
            ExitKind::Timeout
        );
        assert_eq!(
            InstanceFault::MemoryLimit {
                limit_bytes: 1,
                detail: String::new()
            }
            .exit_kind(),
            ExitKind::OutOfMemory
        );
        assert_eq!(
            InstanceFault::Trap("x".into()).exit_kind(),
            ExitKind::Trap("x".into())
        );
        let flood = InstanceFault::AlertFlood { limit: 1000 };
        assert!(matches!(flood.exit_kind(), ExitKind::Crashed(m) if m.contains("1000")));
        assert_eq!(flood.label(), "alert-flood");
    }
}
