//! The lifecycle core's vocabulary: instances and what is desired of them
//! (budgets, constraints, allocation, fencing token, disconnect policy),
//! node capacity, measurements, exits and refusals. Plain values, so tests
//! compare them directly. The core's outputs are in `command`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use strata_protocol::workload::{RestartPolicy, RuntimeKind};

/// Bytes per MiB.
pub const MIB: u64 = 1024 * 1024;

/// Identifies one instance on this node. An unsharded monitor runs at
/// most once per node (`shard: None`); a sharded one (`placement.shard`)
/// may run several instances here, one per region slot, which split its
/// devices between them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    /// Owning tenant.
    pub tenant: String,
    /// Monitor name within the tenant.
    pub name: String,
    /// The instance's region slot (`0..count`) when the monitor is sharded.
    pub shard: Option<u32>,
}

impl InstanceKey {
    /// The key of an unsharded monitor's one instance.
    pub fn new(tenant: impl Into<String>, name: impl Into<String>) -> Self {
        InstanceKey {
            tenant: tenant.into(),
            name: name.into(),
            shard: None,
        }
    }

    /// The key of a sharded monitor's instance in region slot `slot`.
    pub fn sharded(tenant: impl Into<String>, name: impl Into<String>, slot: u32) -> Self {
        InstanceKey {
            shard: Some(slot),
            ..InstanceKey::new(tenant, name)
        }
    }

    /// Whether `other` is an instance of the same monitor.
    pub fn same_monitor(&self, other: &InstanceKey) -> bool {
        self.tenant == other.tenant && self.name == other.name
    }

    /// The slot suffix of names and paths: none for an unsharded instance
    /// and for slot 0, so a monitor that becomes sharded keeps its state
    /// (and its log name) in slot 0.
    pub fn slot_suffix(&self) -> Option<u32> {
        self.shard.filter(|&s| s > 0)
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)?;
        match self.slot_suffix() {
            Some(s) => write!(f, "#{s}"),
            None => Ok(()),
        }
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

/// Which allocation an instance is, and its fencing token: a number the
/// region increases each time it (re)issues the allocation, so writes of an
/// older incarnation can be told apart and refused. The edge stamps every
/// output of the instance with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fence {
    /// Allocation id, unique in the region.
    pub allocation: String,
    /// Fencing token of this incarnation.
    pub token: u64,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.allocation, self.token)
    }
}

/// What an instance does when this edge loses the region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DisconnectPolicy {
    /// Keeps running, however long the edge is cut off; the region does not
    /// replace it (offline autonomy). The default.
    #[default]
    Keep,
    /// Runs only under a lease the region renews; when the edge cannot renew
    /// it for `lease_ms` (on its monotonic clock) it stops the instance
    /// itself, and the region may run a replacement elsewhere after the lease
    /// plus a margin. So two copies never run at once.
    ReplaceAfter {
        /// Lease duration, ms.
        lease_ms: u64,
    },
}

/// One instance this node should run, as the lifecycle core sees it
/// (`desired` builds it from a hub's `MonitorSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DesiredInstance {
    /// Which instance.
    pub key: InstanceKey,
    /// Spec generation; with `artifact_sha256` and the fence decides "changed".
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
    /// Its allocation and fencing token.
    pub fence: Fence,
    /// Keep or replace-after when the region is unreachable.
    pub disconnect: DisconnectPolicy,
}

impl DesiredInstance {
    /// Same generation, artifact and fence: a running instance is kept as
    /// is. A new fencing token means the region re-issued the allocation,
    /// so the old incarnation is fenced off and replaced.
    pub fn same_version(&self, other: &DesiredInstance) -> bool {
        self.generation == other.generation
            && self.artifact_sha256 == other.artifact_sha256
            && self.fence == other.fence
    }
}

/// A full desired set for this node, and whether it grants leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredSet {
    /// Every instance this node should run.
    pub instances: Vec<DesiredInstance>,
    /// When the request that fetched this set from the region was sent, ms
    /// (the core's clock): the set grants a lease, from then, to each
    /// `replace-after` instance it lists. `None` for a set read from disk,
    /// which grants nothing: after a reboot those instances wait for the
    /// region.
    pub granted_at_ms: Option<u64>,
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
