//! The cluster state the scheduler reads, with the indexes that keep one
//! placement from scanning every node or every allocation.
//!
//! It is built once and then kept current by small mutations
//! (`upsert_*` / `remove_*` / [`ClusterSnapshot::apply_verdict`]) as
//! replicated changes commit, rather than rebuilt per evaluation: a rebuild
//! is O(nodes + allocations), which at 100k nodes costs more than the whole
//! decision budget. The one scheduler worker and the one plan applier on the
//! leader read it between mutations, so no copy is needed.
//!
//! Indexes (all maintained on mutation):
//! - nodes in a slab (`Vec<Option<_>>`) addressed by a dense `u32`, with the
//!   node id → slot map; a list of every slot, per pool, per label value and
//!   per device group, so feasibility can start from the smallest list a hard
//!   rule allows;
//! - per node, the sum of its live allocations' budgets (reservations);
//! - per workload its allocations, per node its allocations, and per
//!   workload the live-instance count on each node (workload affinity,
//!   distinct nodes) — O(1) lookups instead of scans.
//!
//! Iteration order depends only on the sequence of mutations, never on a
//! hash seed, so the same history gives the same plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::SchedulerConfig;
use crate::ids::{AllocId, NodeId, WorkloadId};
use crate::model::{Allocation, Desired, Node, Workload};
use crate::resources::Resources;
use crate::verify::PlanVerdict;

/// Dense slot of a node in the snapshot.
pub(crate) type Slot = u32;

#[derive(Debug, Clone)]
pub(crate) struct NodeEntry {
    pub(crate) node: Node,
    pub(crate) reserved: Resources,
}

/// A list of node slots with O(1) removal (swap-remove through a position
/// map).
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotList {
    pub(crate) slots: Vec<Slot>,
    pos: HashMap<Slot, usize>,
}

impl SlotList {
    fn insert(&mut self, s: Slot) {
        if !self.pos.contains_key(&s) {
            self.pos.insert(s, self.slots.len());
            self.slots.push(s);
        }
    }

    fn remove(&mut self, s: Slot) {
        if let Some(i) = self.pos.remove(&s) {
            self.slots.swap_remove(i);
            if let Some(&moved) = self.slots.get(i) {
                self.pos.insert(moved, i);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// The region as the scheduler sees it at one Raft index.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    index: u64,
    config: SchedulerConfig,
    pub(crate) nodes: Vec<Option<NodeEntry>>,
    free_slots: Vec<Slot>,
    by_id: HashMap<NodeId, Slot>,
    pub(crate) all: SlotList,
    pub(crate) by_pool: HashMap<String, SlotList>,
    pub(crate) by_label: HashMap<String, HashMap<String, SlotList>>,
    pub(crate) by_group: HashMap<String, SlotList>,
    workloads: BTreeMap<WorkloadId, Workload>,
    allocs: HashMap<AllocId, Allocation>,
    by_workload: HashMap<WorkloadId, BTreeSet<AllocId>>,
    by_node: HashMap<NodeId, BTreeSet<AllocId>>,
    live_on: HashMap<WorkloadId, HashMap<NodeId, u32>>,
}

impl ClusterSnapshot {
    /// An empty region at `index`.
    pub fn new(index: u64, config: SchedulerConfig) -> Self {
        ClusterSnapshot {
            index,
            config,
            ..Default::default()
        }
    }

    /// A region from its parts; nodes are added in id order so the result
    /// does not depend on the order given.
    pub fn from_parts(
        index: u64,
        config: SchedulerConfig,
        mut nodes: Vec<Node>,
        workloads: Vec<Workload>,
        allocs: Vec<Allocation>,
    ) -> Self {
        let mut s = ClusterSnapshot::new(index, config);
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        for n in nodes {
            s.upsert_node(n);
        }
        for w in workloads {
            s.upsert_workload(w);
        }
        for a in allocs {
            s.upsert_alloc(a);
        }
        s
    }

    /// The Raft index this state reflects.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Moves the snapshot to `index` (after applying that entry's changes).
    pub fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    /// The region's scheduler settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Replaces the scheduler settings.
    pub fn set_config(&mut self, config: SchedulerConfig) {
        self.config = config;
    }

    // ---- nodes -------------------------------------------------------------

    /// Adds or replaces a node (status, labels, capacity, usage, devices).
    pub fn upsert_node(&mut self, node: Node) {
        let slot = match self.by_id.get(&node.id) {
            Some(&s) => {
                self.unindex_node(s);
                s
            }
            None => {
                let s = match self.free_slots.pop() {
                    Some(s) => s,
                    None => {
                        self.nodes.push(None);
                        Slot::try_from(self.nodes.len() - 1).unwrap_or(Slot::MAX)
                    }
                };
                self.by_id.insert(node.id.clone(), s);
                s
            }
        };
        let reserved = self.sum_live_on(&node.id);
        self.nodes[slot as usize] = Some(NodeEntry { node, reserved });
        self.index_node(slot);
    }

    /// Removes a node; its allocations stay (and are then lost to the
    /// scheduler, which replaces them).
    pub fn remove_node(&mut self, id: &NodeId) {
        if let Some(s) = self.by_id.remove(id) {
            self.unindex_node(s);
            self.nodes[s as usize] = None;
            self.free_slots.push(s);
        }
    }

    fn index_node(&mut self, s: Slot) {
        let Some(e) = self.nodes[s as usize].as_ref() else {
            return;
        };
        let n = &e.node;
        self.all.insert(s);
        for p in &n.pools {
            self.by_pool.entry(p.clone()).or_default().insert(s);
        }
        for (k, v) in &n.labels {
            self.by_label
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(s);
        }
        for g in &n.device_groups {
            self.by_group.entry(g.clone()).or_default().insert(s);
        }
    }

    fn unindex_node(&mut self, s: Slot) {
        let Some(e) = self.nodes[s as usize].as_ref() else {
            return;
        };
        let n = &e.node;
        self.all.remove(s);
        for p in &n.pools {
            if let Some(l) = self.by_pool.get_mut(p) {
                l.remove(s);
                if l.is_empty() {
                    self.by_pool.remove(p);
                }
            }
        }
        for (k, v) in &n.labels {
            if let Some(values) = self.by_label.get_mut(k) {
                if let Some(l) = values.get_mut(v) {
                    l.remove(s);
                    if l.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.by_label.remove(k);
                }
            }
        }
        for g in &n.device_groups {
            if let Some(l) = self.by_group.get_mut(g) {
                l.remove(s);
                if l.is_empty() {
                    self.by_group.remove(g);
                }
            }
        }
    }

    /// A node by id.
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.entry_by_id(id).map(|e| &e.node)
    }

    pub(crate) fn slot_of(&self, id: &NodeId) -> Option<Slot> {
        self.by_id.get(id).copied()
    }

    pub(crate) fn entry(&self, s: Slot) -> Option<&NodeEntry> {
        self.nodes.get(s as usize).and_then(Option::as_ref)
    }

    fn entry_by_id(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.slot_of(id).and_then(|s| self.entry(s))
    }

    /// Every node, in slot order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten().map(|e| &e.node)
    }

    /// How many nodes.
    pub fn node_count(&self) -> usize {
        self.all.len()
    }

    /// Sum of the budgets of the live allocations on `node`.
    pub fn reserved(&self, node: &NodeId) -> Resources {
        match self.entry_by_id(node) {
            Some(e) => e.reserved,
            None => self.sum_live_on(node),
        }
    }

    fn sum_live_on(&self, node: &NodeId) -> Resources {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.allocs.get(id))
            .filter(|a| a.is_live())
            .fold(Resources::ZERO, |acc, a| acc.saturating_add(a.resources))
    }

    /// The values label `key` takes across nodes, sorted, with node counts.
    pub fn label_values(&self, key: &str) -> BTreeMap<&str, usize> {
        self.by_label
            .get(key)
            .map(|m| m.iter().map(|(v, l)| (v.as_str(), l.len())).collect())
            .unwrap_or_default()
    }

    /// Every pool some node is in, sorted.
    pub fn pools(&self) -> BTreeSet<&str> {
        self.by_pool.keys().map(String::as_str).collect()
    }

    // ---- workloads -----------------------------------------------------------

    /// Adds or replaces a workload.
    pub fn upsert_workload(&mut self, w: Workload) {
        self.workloads.insert(w.id.clone(), w);
    }

    /// Removes a workload; its allocations stay until a plan stops them.
    pub fn remove_workload(&mut self, id: &WorkloadId) {
        self.workloads.remove(id);
    }

    /// A workload by id.
    pub fn workload(&self, id: &WorkloadId) -> Option<&Workload> {
        self.workloads.get(id)
    }

    /// Every workload, in id order.
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workloads.values()
    }

    // ---- allocations ---------------------------------------------------------

    /// Adds or replaces an allocation, keeping reservations and indexes.
    pub fn upsert_alloc(&mut self, a: Allocation) {
        if let Some(old) = self.allocs.remove(&a.id) {
            self.unaccount(&old);
        }
        self.account(&a);
        self.allocs.insert(a.id, a);
    }

    /// Forgets an allocation (garbage collection of stopped ones).
    pub fn remove_alloc(&mut self, id: AllocId) {
        if let Some(old) = self.allocs.remove(&id) {
            self.unaccount(&old);
            if let Some(set) = self.by_workload.get_mut(&old.workload) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_workload.remove(&old.workload);
                }
            }
            if let Some(set) = self.by_node.get_mut(&old.node) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_node.remove(&old.node);
                }
            }
        }
    }

    fn account(&mut self, a: &Allocation) {
        self.by_workload
            .entry(a.workload.clone())
            .or_default()
            .insert(a.id);
        self.by_node.entry(a.node.clone()).or_default().insert(a.id);
        if a.is_live() {
            if let Some(s) = self.slot_of(&a.node) {
                if let Some(Some(e)) = self.nodes.get_mut(s as usize) {
                    e.reserved = e.reserved.saturating_add(a.resources);
                }
            }
            *self
                .live_on
                .entry(a.workload.clone())
                .or_default()
                .entry(a.node.clone())
                .or_default() += 1;
        }
    }

    fn unaccount(&mut self, a: &Allocation) {
        if a.is_live() {
            if let Some(s) = self.slot_of(&a.node) {
                if let Some(Some(e)) = self.nodes.get_mut(s as usize) {
                    e.reserved = e.reserved.saturating_sub(a.resources);
                }
            }
            if let Some(m) = self.live_on.get_mut(&a.workload) {
                if let Some(c) = m.get_mut(&a.node) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        m.remove(&a.node);
                    }
                }
                if m.is_empty() {
                    self.live_on.remove(&a.workload);
                }
            }
        }
    }

    /// An allocation by id.
    pub fn alloc(&self, id: AllocId) -> Option<&Allocation> {
        self.allocs.get(&id)
    }

    /// How many allocations (any state).
    pub fn alloc_count(&self) -> usize {
        self.allocs.len()
    }

    /// A workload's allocations (any state), in id order.
    pub fn allocs_of<'a>(&'a self, w: &WorkloadId) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.by_workload
            .get(w)
            .into_iter()
            .flatten()
            .filter_map(|id| self.allocs.get(id))
    }

    /// A node's allocations (any state), in id order.
    pub fn allocs_on<'a>(&'a self, node: &NodeId) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.allocs.get(id))
    }

    /// Live instances of `w` on each node.
    pub(crate) fn live_nodes_of(&self, w: &WorkloadId) -> Option<&HashMap<NodeId, u32>> {
        self.live_on.get(w)
    }

    /// Live instances of `w` on `node`.
    pub fn live_count(&self, w: &WorkloadId, node: &NodeId) -> u32 {
        self.live_on
            .get(w)
            .and_then(|m| m.get(node))
            .copied()
            .unwrap_or(0)
    }

    /// Applies the accepted part of a verified plan at `index`: new
    /// allocations (with the tokens the verdict assigned), stops and in-place
    /// updates. The leader's scheduler state follows its commits this way.
    pub fn apply_verdict(&mut self, verdict: &PlanVerdict, index: u64) {
        for np in verdict.accepted.values() {
            for s in &np.stop {
                if let Some(mut a) = self.allocs.get(&s.alloc).cloned() {
                    a.desired = Desired::Stop;
                    a.modified_index = index;
                    self.upsert_alloc(a);
                }
            }
            for u in &np.update {
                if let Some(mut a) = self.allocs.get(&u.alloc).cloned() {
                    a.generation = u.generation;
                    a.resources = u.resources;
                    a.modified_index = index;
                    self.upsert_alloc(a);
                }
            }
            for p in &np.place {
                let mut a = p.clone();
                a.created_index = index;
                a.modified_index = index;
                self.upsert_alloc(a);
            }
        }
        self.index = self.index.max(index);
    }
}
