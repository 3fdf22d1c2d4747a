//! What the lifecycle tests share: a node, desired instances, and a driver
//! stand-in that answers module commands at once, so tests about admission,
//! restarts and leases read as the commands that matter to them.

use strata_protocol::workload::{RestartPolicy, RuntimeKind};

use super::{Lifecycle, Phase};
use crate::workload::command::Command;
use crate::workload::config::LifecycleConfig;
use crate::workload::model::{
    Budget, Constraints, DesiredInstance, DesiredSet, DisconnectPolicy, Fence, InstanceKey,
    NodeInfo,
};

/// A node with 256 MiB and 1000 millicores for instances, wasm only.
pub fn node() -> NodeInfo {
    NodeInfo {
        name: "edge-1".into(),
        capacity: Budget::new(256, 1000),
        labels: Default::default(),
        pools: Default::default(),
        runtimes: [RuntimeKind::Wasm].into(),
    }
}

/// Instance `name` of tenant `acme`.
pub fn key(name: &str) -> InstanceKey {
    InstanceKey::new("acme", name)
}

/// A `keep` instance of generation 1 with a fixed budget (min = max =
/// initial) and module `ab…ab`.
pub fn want(name: &str, prio: u8, mem: u32, cpu: u32) -> DesiredInstance {
    let b = Budget::new(mem, cpu);
    DesiredInstance {
        key: key(name),
        generation: 1,
        artifact_sha256: "ab".repeat(32),
        runtime: RuntimeKind::Wasm,
        priority: prio,
        initial: b,
        min: b,
        max: b,
        restart: RestartPolicy::default(),
        constraints: Constraints::default(),
        fence: Fence {
            allocation: format!("alloc-{name}"),
            token: 1,
        },
        disconnect: DisconnectPolicy::Keep,
    }
}

/// A desired set read from disk (it grants no lease).
pub fn set(instances: &[DesiredInstance]) -> DesiredSet {
    DesiredSet {
        instances: instances.to_vec(),
        granted_at_ms: None,
    }
}

/// A core with default tuning and no periodic checkpoints.
pub fn core() -> Lifecycle {
    Lifecycle::new(node(), LifecycleConfig::default(), 0)
}

/// Every command as emitted.
pub fn raw(s: &mut Lifecycle) -> Vec<Command> {
    std::iter::from_fn(|| s.poll_command()).collect()
}

/// Drains the commands at `now`, answering module commands as a driver
/// whose modules all fetch and compile at once would; returns the rest.
pub fn drain_at(s: &mut Lifecycle, now: u64) -> Vec<Command> {
    let mut out = Vec::new();
    while let Some(c) = s.poll_command() {
        match c {
            Command::FetchModule { sha256 } => s.handle_module_fetched(&sha256),
            Command::CompileModule { sha256 } => s.handle_module_ready(&sha256, now),
            Command::DropModule { .. } => {}
            other => out.push(other),
        }
    }
    out
}

/// [`drain_at`] at time 0.
pub fn drain(s: &mut Lifecycle) -> Vec<Command> {
    drain_at(s, 0)
}

/// The first start of `r` (attempt 0) or its `attempt`-th restart.
pub fn start(r: &DesiredInstance, attempt: u32) -> Command {
    Command::Start {
        key: r.key.clone(),
        generation: r.generation,
        artifact_sha256: r.artifact_sha256.clone(),
        budget: r.initial,
        attempt,
        fence: r.fence.clone(),
    }
}

/// The phase of instance `name`.
pub fn phase(s: &Lifecycle, name: &str) -> Phase {
    s.instance(&key(name))
        .unwrap_or_else(|| panic!("{name} is not desired"))
        .phase
}

/// Reports every `Start` in `cmds` as running at `now`.
pub fn started(s: &mut Lifecycle, cmds: &[Command], now: u64) {
    for c in cmds {
        if let Command::Start {
            key, generation, ..
        } = c
        {
            s.handle_started(key, *generation, now);
        }
    }
}

/// A core running `wants` (all admitted and started at t=0).
pub fn running(wants: &[DesiredInstance]) -> Lifecycle {
    let mut s = core();
    s.handle_desired(set(wants), 0);
    let cmds = drain(&mut s);
    started(&mut s, &cmds, 0);
    s
}
