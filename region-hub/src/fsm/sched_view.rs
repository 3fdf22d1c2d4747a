//! The scheduler's view of the replicated state: the `strata_sched` nodes,
//! workloads and allocations a [`ClusterSnapshot`](strata_sched::ClusterSnapshot)
//! is built from, and the [`SchedChange`]s an applied entry makes to them,
//! so the leader's snapshot follows the log without being rebuilt.
//!
//! - An edge is a node: capacity for monitors and measured use (the sum of
//!   its instances' measurements) from its last replicated report, labels
//!   and pools from its facts plus the built-in `node = <edge>` label,
//!   status from the last replicated liveness decision (up or undecided:
//!   ready; suspect; down).
//! - A monitor is a workload: budget from `resources`, intent from
//!   `MonitorSpec::intent` (`[placement]` plus `target`), and its device
//!   group, named `tenant/name`: the edges carrying it are those through
//!   which a selected device last reported ([`RegionState::carriers`]).

use std::collections::{BTreeMap, BTreeSet};

use strata_protocol::liveness::{EdgeLiveness, LivenessState};
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::workload::NODE_LABEL;
use strata_protocol::EdgeStatus;
use strata_sched::{
    AllocId, Allocation, Node, NodeId, NodeStatus, Resources, Timestamp, Workload, WorkloadId,
};

use super::state::RegionState;
use super::workloads::MonitorEntry;

/// Bytes per MiB.
pub const MIB: u64 = 1 << 20;

/// What an applied entry changed in the scheduler's view, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedChange {
    /// A workload was created or its spec changed.
    Workload(Box<Workload>),
    /// A workload was deleted (its allocations stay until a plan stops them).
    WorkloadRemoved(WorkloadId),
    /// Allocations created or changed, as they are now.
    Allocs(Vec<Allocation>),
    /// Allocations garbage-collected.
    AllocsRemoved(Vec<AllocId>),
    /// An edge's report or facts changed: the node as it is now.
    Node(Box<Node>),
    /// A liveness decision was applied: the node as it is now, and the
    /// decision (its last heartbeat bounds the edge's leases).
    Transition {
        /// The node.
        node: Box<Node>,
        /// The decision as stored.
        liveness: EdgeLiveness,
    },
    /// A plan was applied.
    Plan {
        /// Its workload.
        workload: WorkloadId,
        /// Its evaluation.
        eval: strata_sched::EvalId,
        /// Node plans the state machine refused.
        refused: u32,
    },
}

/// A device group's name: the workload's own (`tenant/name`).
pub fn group_of(w: &WorkloadId) -> String {
    w.to_string()
}

/// The scheduler's workload for a stored monitor.
pub fn workload_of(m: &MonitorEntry) -> Workload {
    let s = &m.spec;
    let id = WorkloadId::new(&s.tenant, &s.name);
    Workload {
        device_group: Some(group_of(&id)),
        id,
        priority: s.priority,
        resources: Resources::new(
            u64::from(s.resources.cpu_millicores),
            u64::from(s.resources.memory_mib) * MIB,
        ),
        intent: s.intent(),
        generation: s.generation,
    }
}

/// An edge's measured use, as the scheduler counts it: the sum of what its
/// instances report using (the capacity it is compared with is what the
/// edge offers monitors, not the whole machine).
pub fn measured(status: &EdgeStatus) -> Resources {
    status.instances.iter().fold(Resources::ZERO, |acc, i| {
        acc.saturating_add(Resources::new(
            u64::from(i.used_cpu_millicores),
            i.used_memory_bytes,
        ))
    })
}

/// The scheduler's node for an edge.
pub fn node_of(
    edge: &str,
    status: Option<&EdgeStatus>,
    facts: Option<&NodeFacts>,
    liveness: Option<&EdgeLiveness>,
) -> Node {
    let capacity = status.map_or(Resources::ZERO, |s| {
        Resources::new(
            u64::from(s.capacity.cpu_millicores),
            u64::from(s.capacity.memory_mib) * MIB,
        )
    });
    let usage = status.map_or(Resources::ZERO, measured);
    let (status, since) = match liveness {
        Some(l) => (
            match l.state {
                LivenessState::Up | LivenessState::Unknown => NodeStatus::Ready,
                LivenessState::Suspect => NodeStatus::Suspect,
                LivenessState::Down => NodeStatus::Down,
            },
            Timestamp::from_millis(l.since_ms),
        ),
        None => (NodeStatus::Ready, Timestamp::from_millis(0)),
    };
    let mut labels = facts.map(|f| f.labels.clone()).unwrap_or_default();
    labels.insert(NODE_LABEL.to_owned(), edge.to_owned());
    Node {
        id: NodeId::from(edge),
        status,
        status_since: since,
        labels,
        pools: facts.map(|f| f.pools.clone()).unwrap_or_default(),
        capacity,
        usage,
        device_groups: BTreeSet::new(),
    }
}

impl RegionState {
    /// Every edge the region knows (a report, a batch, a liveness decision
    /// or facts), sorted.
    pub fn edge_names(&self) -> BTreeSet<&str> {
        self.edge_views()
            .map(|e| e.edge)
            .chain(self.liveness_table().keys().map(String::as_str))
            .collect()
    }

    /// One edge as a scheduler node (device groups left empty).
    pub fn sched_node(&self, edge: &str) -> Node {
        node_of(
            edge,
            self.edge_view(edge).map(|e| e.status),
            self.sched().facts(edge),
            self.liveness(edge),
        )
    }

    /// Every edge as a scheduler node, with the device groups it carries.
    pub fn sched_nodes(&self) -> Vec<Node> {
        let carriers = self.carriers();
        self.edge_names()
            .into_iter()
            .map(|e| {
                let mut n = self.sched_node(e);
                if let Some(g) = carriers.get(e) {
                    n.device_groups = g.clone();
                }
                n
            })
            .collect()
    }

    /// Every monitor as a scheduler workload.
    pub fn sched_workloads(&self) -> Vec<Workload> {
        self.workloads().monitors(None).map(workload_of).collect()
    }

    /// Every allocation held (any state).
    pub fn sched_allocs(&self) -> Vec<Allocation> {
        self.sched().all().map(|r| r.alloc.clone()).collect()
    }

    /// Per edge, the device groups (workloads) it carries: a device a
    /// workload selects last reported through it.
    pub fn carriers(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in self.workloads().monitors(None) {
            let group = group_of(&WorkloadId::new(&m.spec.tenant, &m.spec.name));
            for edge in self.carriers_of(m).into_keys() {
                out.entry(edge).or_default().insert(group.clone());
            }
        }
        out
    }

    /// Per edge, how many of a monitor's selected devices last reported
    /// through it.
    pub fn carriers_of(&self, m: &MonitorEntry) -> BTreeMap<String, usize> {
        let sel = &m.spec.selector;
        let tenant = &m.spec.tenant;
        self.device_edges(tenant, |device, tags| sel.matches(tenant, device, tags))
    }
}
