//! The scheduler's vocabulary: capacity, requests, measurements, health and
//! the commands it emits. Plain values, so tests compare them directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use strata_protocol::workload::{MonitorSpec, Placement, RestartPolicy, RuntimeKind};

/// Bytes per MiB.
pub const MIB: u64 = 1024 * 1024;

/// Identifies one instance on this node: a monitor runs at most once per node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// Owning tenant.
    pub tenant: String,
    /// Monitor name within the tenant.
    pub name: String,
}

impl InstanceKey {
    /// Builds a key.
    pub fn new(tenant: impl Into<String>, name: impl Into<String>) -> Self {
        InstanceKey {
            tenant: tenant.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)
    }
}

/// A memory + CPU amount: a node's capacity or an instance's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Memory, MiB.
    pub memory_mib: u32,
    /// CPU, millicores (1000 = one core).
    pub cpu_millicores: u32,
}

impl Budget {
    /// Builds a budget.
    pub const fn new(memory_mib: u32, cpu_millicores: u32) -> Self {
        Budget {
            memory_mib,
            cpu_millicores,
        }
    }

    /// Component-wise sum, saturating.
    pub fn plus(self, o: Budget) -> Budget {
        Budget::new(
            self.memory_mib.saturating_add(o.memory_mib),
            self.cpu_millicores.saturating_add(o.cpu_millicores),
        )
    }

    /// Component-wise difference, saturating at zero.
    pub fn minus(self, o: Budget) -> Budget {
        Budget::new(
            self.memory_mib.saturating_sub(o.memory_mib),
            self.cpu_millicores.saturating_sub(o.cpu_millicores),
        )
    }

    /// Whether `self` fits inside `room` in both dimensions.
    pub fn fits_in(self, room: Budget) -> bool {
        self.memory_mib <= room.memory_mib && self.cpu_millicores <= room.cpu_millicores
    }
}

/// What this node offers to monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name, matched against `target = { node = … }`.
    pub name: String,
    /// CPU and memory set aside for monitor instances (not the whole machine:
    /// ingest and the spool keep their share).
    pub capacity: Budget,
    /// Operator labels (`arch = "arm64"`, …) that requests may require.
    pub labels: BTreeMap<String, String>,
    /// Pools this node belongs to; a request may name one.
    pub pools: BTreeSet<String>,
    /// Runtimes with a driver on this node.
    pub runtimes: BTreeSet<RuntimeKind>,
}

/// Placement constraints beyond resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Constraints {
    /// Must run on this node.
    pub node: Option<String>,
    /// Must run on a node of this pool.
    pub pool: Option<String>,
    /// Node labels that must be present with these values.
    pub labels: BTreeMap<String, String>,
}

/// One desired instance, as the scheduler sees it (derived from a
/// [`MonitorSpec`] by [`WorkloadRequest::from_spec`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadRequest {
    /// Which instance.
    pub key: InstanceKey,
    /// Spec generation; with `artifact_sha256` decides "changed".
    pub generation: u64,
    /// Module hash (hex).
    pub artifact_sha256: String,
    /// Sandbox kind.
    pub runtime: RuntimeKind,
    /// 0-100, higher wins.
    pub priority: u8,
    /// Budget to start with.
    pub initial: Budget,
    /// Resize floor.
    pub min: Budget,
    /// Resize ceiling.
    pub max: Budget,
    /// What to do on exit.
    pub restart: RestartPolicy,
    /// Where it may run.
    pub constraints: Constraints,
}

impl WorkloadRequest {
    /// The request a (validated) spec makes.
    pub fn from_spec(spec: &MonitorSpec) -> Self {
        let r = &spec.resources;
        let (min_mem, max_mem) = r.memory_range();
        let (min_cpu, max_cpu) = r.cpu_range();
        WorkloadRequest {
            key: InstanceKey::new(&spec.tenant, &spec.name),
            generation: spec.generation,
            artifact_sha256: spec.artifact.sha256.clone(),
            runtime: spec.runtime,
            priority: spec.priority,
            initial: Budget::new(r.memory_mib, r.cpu_millicores),
            min: Budget::new(min_mem, min_cpu),
            max: Budget::new(max_mem, max_cpu),
            restart: spec.restart,
            constraints: Constraints {
                node: match &spec.target {
                    Placement::Node(n) => Some(n.clone()),
                    Placement::LeastLoaded => None,
                },
                ..Constraints::default()
            },
        }
    }

    /// Same generation and artifact: the running instance is kept as is.
    pub fn same_version(&self, other: &WorkloadRequest) -> bool {
        self.generation == other.generation && self.artifact_sha256 == other.artifact_sha256
    }
}

/// Measured usage of one instance over the last sample period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceUsage {
    /// CPU in millicores, derived from fuel per second
    /// ([`millicores_from_fuel`]).
    pub cpu_millicores: u32,
    /// Linear memory plus host-side state, bytes.
    pub memory_bytes: u64,
}

/// Converts fuel burnt per second into millicores, given how much fuel one
/// fully busy core burns per second (calibrated by the runtime driver).
pub fn millicores_from_fuel(fuel_per_s: u64, fuel_per_core_s: u64) -> u32 {
    if fuel_per_core_s == 0 {
        return 0;
    }
    let m = u128::from(fuel_per_s) * 1000 / u128::from(fuel_per_core_s);
    u32::try_from(m).unwrap_or(u32::MAX)
}

/// Node-wide usage from /proc, sampled by the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// CPU busy across all cores, millicores (from /proc/stat).
    pub cpu_used_millicores: u32,
    /// CPU of the whole machine, millicores.
    pub cpu_total_millicores: u32,
    /// Memory in use, bytes (MemTotal - MemAvailable from /proc/meminfo).
    pub memory_used_bytes: u64,
    /// Memory of the whole machine, bytes.
    pub memory_total_bytes: u64,
    /// Data-dir filesystem used, bytes (statvfs).
    pub disk_used_bytes: u64,
    /// Data-dir filesystem size, bytes.
    pub disk_total_bytes: u64,
    /// Received, bytes per second (/proc/net/dev).
    pub net_rx_bytes_per_s: u64,
    /// Sent, bytes per second.
    pub net_tx_bytes_per_s: u64,
}

/// Why an instance exited on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// Returned normally.
    Completed,
    /// The guest trapped (unreachable, bad memory access, panic).
    Trap(String),
    /// A callback ran past its time budget (fuel or epoch interruption).
    Timeout,
    /// The guest hit its memory limit.
    OutOfMemory,
    /// The runtime failed to instantiate or run it.
    Crashed(String),
}

impl ExitKind {
    /// Whether the exit counts as a failure for restart policy and
    /// crash-loop detection.
    pub fn is_failure(&self) -> bool {
        !matches!(self, ExitKind::Completed)
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Completed => f.write_str("completed"),
            ExitKind::Trap(d) => write!(f, "trap: {d}"),
            ExitKind::Timeout => f.write_str("callback time budget exceeded"),
            ExitKind::OutOfMemory => f.write_str("memory limit reached"),
            ExitKind::Crashed(d) => write!(f, "crashed: {d}"),
        }
    }
}

/// Why a workload was not admitted on this node. It names the node; the
/// instance is the one whose [`Health::Refused`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not enough memory even after preempting every lower-priority instance.
    #[error("needs {need_mib} MiB memory, {free_mib} MiB free of {capacity_mib} MiB (after preempting lower priorities)")]
    InsufficientMemory {
        /// Requested, MiB.
        need_mib: u32,
        /// Free, counting what preemption could free, MiB.
        free_mib: u32,
        /// Node capacity for monitors, MiB.
        capacity_mib: u32,
    },
    /// Not enough CPU even after preempting every lower-priority instance.
    #[error("needs {need_millicores} millicores, {free_millicores} free of {capacity_millicores} (after preempting lower priorities)")]
    InsufficientCpu {
        /// Requested, millicores.
        need_millicores: u32,
        /// Free, counting what preemption could free, millicores.
        free_millicores: u32,
        /// Node capacity for monitors, millicores.
        capacity_millicores: u32,
    },
    /// No driver for the requested runtime on this node.
    #[error("runtime {runtime} has no driver on node {node}")]
    UnknownRuntime {
        /// Requested runtime.
        runtime: RuntimeKind,
        /// This node.
        node: String,
    },
    /// The spec targets another node.
    #[error("targets node {want}, this is node {node}")]
    NodeMismatch {
        /// Targeted node.
        want: String,
        /// This node.
        node: String,
    },
    /// The request names a pool this node is not in.
    #[error("needs pool {pool}, node {node} is not in it")]
    PoolMismatch {
        /// Requested pool.
        pool: String,
        /// This node.
        node: String,
    },
    /// A required node label is missing or different.
    #[error("needs label {label}={want}, node {node} has {have:?}")]
    LabelMismatch {
        /// Label key.
        label: String,
        /// Required value.
        want: String,
        /// This node's value, if any.
        have: Option<String>,
        /// This node.
        node: String,
    },
}

impl Refusal {
    /// Whether freeing capacity could change the answer (so the instance
    /// waits) or it can never run here.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Refusal::InsufficientMemory { .. } | Refusal::InsufficientCpu { .. }
        )
    }
}

/// Lifecycle state of one desired instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Start commanded; waiting for the driver to report it running.
    Pending,
    /// Running.
    Running,
    /// Exited; restarts at `until_ms` (its budget stays reserved meanwhile).
    Backoff {
        /// Restart time, ms.
        until_ms: u64,
        /// Consecutive restart number (1 = first).
        attempt: u32,
        /// Why it exited.
        last_exit: ExitKind,
    },
    /// Failed too often within the window; not restarted until the spec changes.
    CrashLooping {
        /// Failure count, window and last exit.
        reason: String,
    },
    /// Exited and its restart policy says not to restart.
    Stopped {
        /// The exit and the policy.
        reason: String,
    },
    /// Stopped to make room for a higher priority; waits for room.
    Preempted {
        /// The instance that took its place.
        by: InstanceKey,
    },
    /// Not admitted; waits for room if the refusal is transient.
    Refused(Refusal),
}

impl Health {
    /// Whether the instance holds its budget (counts against capacity).
    pub fn holds_budget(&self) -> bool {
        matches!(
            self,
            Health::Pending | Health::Running | Health::Backoff { .. }
        )
    }
}

/// Why an instance is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Its spec is no longer desired here.
    Removed,
    /// A new generation or artifact replaces it.
    Replaced {
        /// Generation being stopped.
        old_generation: u64,
        /// Generation that replaces it.
        new_generation: u64,
    },
    /// A higher-priority instance needs its resources.
    Preempted {
        /// The newcomer.
        by: InstanceKey,
        /// Newcomer's priority.
        by_priority: u8,
        /// Victim's priority.
        priority: u8,
        /// What the newcomer needed beyond the free room.
        shortfall: Budget,
    },
}

/// Which resource a resize touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Memory budget (MiB).
    Memory,
    /// CPU budget (millicores).
    Cpu,
}

/// The measurements behind a resize, for the event log and heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeReason {
    /// Resource resized.
    pub dimension: Dimension,
    /// Measured use (MiB or millicores).
    pub used: u32,
    /// Budget before (MiB or millicores).
    pub from: u32,
    /// Budget after.
    pub to: u32,
    /// Use / budget in percent at decision time.
    pub utilization_pct: u32,
    /// How long the condition held, ms.
    pub sustained_ms: u64,
    /// Human-readable explanation.
    pub text: String,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Instantiate (or restart) an instance with this budget.
    Start {
        /// Which instance.
        key: InstanceKey,
        /// Spec generation.
        generation: u64,
        /// Module hash.
        artifact_sha256: String,
        /// Memory limit and CPU (fuel) budget.
        budget: Budget,
        /// 0 for a first start, n for the n-th consecutive restart.
        attempt: u32,
    },
    /// Stop an instance and release its resources.
    Stop {
        /// Which instance.
        key: InstanceKey,
        /// Why.
        reason: StopReason,
    },
    /// Change a running instance's budget in place.
    Resize {
        /// Which instance.
        key: InstanceKey,
        /// New budget.
        budget: Budget,
        /// Why, with the numbers.
        reason: ResizeReason,
    },
}
