//! What the lifecycle core asks of its driver ([`Command`]), why it stops
//! instances ([`StopReason`]), what it reports on its own ([`Event`]), and
//! the driver's answers about modules ([`ModuleFailure`]). Plain values, so
//! tests compare command lists.

use std::fmt;

use super::model::{Budget, Fence, InstanceKey};
use super::resize::ResizeReason;

/// What the driver must do. Commands are executed in the order they are
/// emitted: a `Stop` before a later `Start` of the same key, so a budget a
/// stop releases is free when the next start uses it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Make the module's bytes available here, verified against their
    /// hash. Answered by `handle_module_fetched`, or by
    /// `handle_module_failed` with [`ModuleFailure::Missing`] (the core
    /// then waits for the region to deliver it; the next desired set
    /// retries).
    FetchModule {
        /// Module hash.
        sha256: String,
    },
    /// Turn the fetched module into a loadable one: from the compiled-module
    /// disk cache, or by compiling it. Answered by `handle_module_ready` or
    /// `handle_module_failed`.
    CompileModule {
        /// Module hash.
        sha256: String,
    },
    /// No desired instance uses this module any more.
    DropModule {
        /// Module hash.
        sha256: String,
    },
    /// Instantiate (or restart) an instance with this budget. Answered by
    /// `handle_started`, or by `handle_exited` when the start fails.
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
        /// The allocation and fencing token its outputs carry.
        fence: Fence,
    },
    /// Stop an instance if it has a sandbox, persist its key-value state
    /// (delete it for [`StopReason::Removed`], which is sent for every
    /// removed instance, running or not) and release its resources.
    /// Answered by `handle_stopped` for instances that stay desired.
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
    /// Persist a running instance's key-value state if it changed (the
    /// periodic checkpoint; stops persist on their own).
    PersistState {
        /// Which instance.
        key: InstanceKey,
    },
    /// Tell the region and the operator about a decision the core took on
    /// its own (nothing else shows it).
    Report {
        /// Which instance.
        key: InstanceKey,
        /// Spec generation.
        generation: u64,
        /// What happened.
        event: Event,
    },
}

/// Why an instance is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Its spec is no longer desired here.
    Removed,
    /// A new generation, artifact or fencing token replaces it.
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
    /// A `replace-after` instance's lease ran out: the region may run a
    /// replacement elsewhere, so this one must not run on.
    LeaseExpired {
        /// The incarnation fenced off.
        fence: Fence,
        /// When the lease ran out, ms (core clock).
        expired_at_ms: u64,
        /// The lease duration, ms.
        lease_ms: u64,
    },
}

impl StopReason {
    /// Short stable label, for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            StopReason::Removed => "removed",
            StopReason::Replaced { .. } => "replaced",
            StopReason::Preempted { .. } => "preempted",
            StopReason::LeaseExpired { .. } => "lease-expired",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Removed => f.write_str("removed from this edge's assignments"),
            StopReason::Replaced {
                old_generation,
                new_generation,
            } => write!(
                f,
                "generation {old_generation} replaced by {new_generation}"
            ),
            StopReason::Preempted {
                by,
                by_priority,
                priority,
                shortfall,
            } => write!(
                f,
                "preempted by {by} (priority {by_priority} > {priority}; short {} MiB / {} millicores)",
                shortfall.memory_mib, shortfall.cpu_millicores
            ),
            StopReason::LeaseExpired {
                fence,
                expired_at_ms,
                lease_ms,
            } => write!(
                f,
                "lease-expired: allocation {fence} not renewed for {lease_ms} ms (expired at {expired_at_ms} ms)"
            ),
        }
    }
}

/// A decision the core reports on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A `replace-after` lease ran out; the instance is stopped or will not
    /// start until a new desired set grants a lease again.
    LeaseExpired {
        /// The incarnation fenced off.
        fence: Fence,
        /// When, ms (core clock).
        expired_at_ms: u64,
        /// The lease duration, ms.
        lease_ms: u64,
    },
    /// Too many failures in the window: not restarted until its spec changes.
    CrashLooping {
        /// Failure count, window and last exit.
        reason: String,
    },
    /// Exited, and its restart policy says not to restart it.
    Stopped {
        /// The exit and the policy.
        reason: String,
    },
    /// Its module does not load: it cannot run until its spec changes.
    ModuleInvalid {
        /// Module hash.
        sha256: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::LeaseExpired {
                fence,
                expired_at_ms,
                lease_ms,
            } => write!(
                f,
                "lease-expired: allocation {fence} not renewed for {lease_ms} ms (expired at {expired_at_ms} ms); stopped by the edge"
            ),
            Event::CrashLooping { reason } => write!(f, "crash-looping: {reason}"),
            Event::Stopped { reason } => write!(f, "stopped: {reason}"),
            Event::ModuleInvalid { sha256, reason } => {
                write!(f, "module {sha256} is invalid: {reason}")
            }
        }
    }
}

/// Why a module could not be made ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleFailure {
    /// Not held here, or held but corrupt (and deleted): the region must
    /// deliver it; instances wait for it and do not crash-loop meanwhile.
    Missing {
        /// What the driver found.
        reason: String,
    },
    /// It does not validate or compile: no instance can run it, so they stop
    /// until their spec names another module.
    Invalid {
        /// The runtime's explanation.
        reason: String,
    },
}

impl fmt::Display for ModuleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleFailure::Missing { reason } => write!(f, "missing: {reason}"),
            ModuleFailure::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}
