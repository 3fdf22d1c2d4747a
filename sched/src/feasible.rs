//! Feasibility: which nodes may take an instance, and accounting for the
//! ones that may not.
//!
//! A workload's rules are compiled once per evaluation ([`Rules`]): label
//! predicates borrowed from the intent, report keys rendered once, the
//! other workloads' per-node counts looked up once. A node then passes
//! `status → pools → label rules → workload rules → room`; the first check
//! it fails is the one it is counted under, as nomad's AllocMetric does.
//!
//! Candidates come from the smallest index a hard rule allows ([`Base`]):
//! `pools = ["gpu"]` starts from the gpu pool's list, `zone = a` from that
//! label value's list, a hard co-location from the nodes running the other
//! workload. Nodes outside the index are counted as filtered by that rule
//! without being visited.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::ids::NodeId;
use crate::intent::{Cardinality, LabelPredicate, Operator};
use crate::model::{NodeStatus, Workload};
use crate::plan::AllocMetric;
use crate::resources::{Dimension, Resources};
use crate::snapshot::{ClusterSnapshot, NodeEntry, Slot};

/// Why a node was ruled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    Status(NodeStatus),
    Pool,
    Hard(usize),
    HardWorkload(usize),
    DistinctSelf,
    /// The snapshot's `one-per-node` rule (not the intent's).
    OnePerNode,
    Avoid,
    /// A pressure migration's target that is hot or would become so.
    Pressure,
}

pub(crate) struct HardWorkload<'a> {
    key: String,
    counts: Option<&'a HashMap<NodeId, u32>>,
    /// Co-locate (must run there) versus keep apart (must not).
    must: bool,
}

pub(crate) struct SoftWorkload<'a> {
    pub(crate) counts: Option<&'a HashMap<NodeId, u32>>,
    pub(crate) is_self: bool,
    pub(crate) weight: f64,
}

/// One spread, with desired counts resolved against the count.
pub(crate) struct SpreadRule<'a> {
    pub(crate) label: &'a str,
    /// Its weight over the sum of spread weights.
    pub(crate) weight: f64,
    /// Value → desired instances; empty for an even spread.
    pub(crate) desired: HashMap<&'a str, f64>,
    /// Desired instances on values not named (when targets sum below 100).
    pub(crate) implicit: Option<f64>,
    /// Known values of the label in the region (even spread).
    pub(crate) even_values: usize,
}

/// A workload's placement rules, compiled for one evaluation.
pub(crate) struct Rules<'a> {
    pub(crate) workload: &'a Workload,
    pub(crate) count: Option<u32>,
    pool_key: String,
    hard: Vec<(LabelPredicate<'a>, String)>,
    hard_wl: Vec<HardWorkload<'a>>,
    distinct_self: bool,
    /// `one-per-node` from the snapshot's config, for a count workload
    /// that does not already ask for distinct nodes itself and is not
    /// sharded (a sharded workload's instances split the devices, so a node
    /// may run several of them).
    one_per_node: bool,
    pub(crate) soft_labels: Vec<(LabelPredicate<'a>, f64)>,
    pub(crate) soft_wl: Vec<SoftWorkload<'a>>,
    pub(crate) soft_sum: f64,
    pub(crate) spreads: Vec<SpreadRule<'a>>,
    pub(crate) has_soft: bool,
}

impl<'a> Rules<'a> {
    pub(crate) fn compile(snap: &'a ClusterSnapshot, w: &'a Workload) -> Self {
        let i = &w.intent;
        let tenant = &w.id.tenant;
        let other = |name: &str| snap.live_nodes_of(&crate::ids::WorkloadId::new(tenant, name));
        let mut hard = Vec::new();
        for c in &i.constraints {
            let p = c.predicate();
            hard.push((p, format!("constraint {p}")));
        }
        for a in i.affinity.iter().filter(|a| a.hard) {
            let p = a.predicate();
            hard.push((p, format!("affinity {p}")));
        }
        for a in i.anti_affinity.iter().filter(|a| a.hard) {
            let p = a.predicate();
            hard.push((p.negate(), format!("anti-affinity {p}")));
        }
        let mut hard_wl = Vec::new();
        let mut distinct_self = false;
        let mut soft_wl = Vec::new();
        let mut soft_labels = Vec::new();
        for a in &i.co_locate_with {
            if a.hard {
                hard_wl.push(HardWorkload {
                    key: format!("co-locate-with {}", a.workload),
                    counts: other(&a.workload),
                    must: true,
                });
            } else {
                soft_wl.push(SoftWorkload {
                    counts: other(&a.workload),
                    is_self: false,
                    weight: f64::from(a.weight),
                });
            }
        }
        for a in &i.keep_apart_from {
            let is_self = a.workload == w.id.name;
            match (a.hard, is_self) {
                (true, true) => distinct_self = true,
                (true, false) => hard_wl.push(HardWorkload {
                    key: format!("keep-apart-from {}", a.workload),
                    counts: other(&a.workload),
                    must: false,
                }),
                (false, _) => soft_wl.push(SoftWorkload {
                    counts: if is_self { None } else { other(&a.workload) },
                    is_self,
                    weight: -f64::from(a.weight),
                }),
            }
        }
        for a in i.affinity.iter().filter(|a| !a.hard) {
            soft_labels.push((a.predicate(), f64::from(a.weight)));
        }
        for a in i.anti_affinity.iter().filter(|a| !a.hard) {
            soft_labels.push((a.predicate(), -f64::from(a.weight)));
        }
        let soft_sum = soft_labels
            .iter()
            .map(|(_, w)| w.abs())
            .chain(soft_wl.iter().map(|s| s.weight.abs()))
            .sum();
        let count = match i.cardinality() {
            Cardinality::Count(n) => Some(n),
            Cardinality::PerNode => None,
        };
        let weight_sum: f64 = i.spread.iter().map(|s| f64::from(s.weight)).sum();
        let spreads = match count {
            Some(n) => i
                .spread
                .iter()
                .map(|s| {
                    let total = f64::from(n);
                    let desired: HashMap<&str, f64> = s
                        .targets
                        .iter()
                        .map(|(v, pct)| (v.as_str(), f64::from(*pct) / 100.0 * total))
                        .collect();
                    let named: f64 = desired.values().sum();
                    SpreadRule {
                        label: &s.label,
                        weight: f64::from(s.weight) / weight_sum.max(1.0),
                        implicit: (!desired.is_empty() && named < total).then_some(total - named),
                        desired,
                        even_values: snap.by_label.get(&s.label).map_or(0, HashMap::len),
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        let has_soft = !soft_labels.is_empty() || !soft_wl.is_empty() || !spreads.is_empty();
        let one_per_node = snap.config().one_per_node && !distinct_self && !i.shard;
        Rules {
            workload: w,
            count,
            pool_key: format!("pool in [{}]", i.pools.join(", ")),
            hard,
            hard_wl,
            distinct_self,
            one_per_node,
            soft_labels,
            soft_wl,
            soft_sum,
            spreads,
            has_soft,
        }
    }

    /// Every rule but room, with `own` live instances of this workload
    /// already on the node.
    pub(crate) fn eligible(&self, e: &NodeEntry, own: u32) -> Result<(), Filter> {
        self.eligible_ignoring_self(e, own)?;
        if self.distinct_self && own > 0 {
            return Err(Filter::DistinctSelf);
        }
        if self.one_per_node && own > 0 {
            return Err(Filter::OnePerNode);
        }
        Ok(())
    }

    /// [`Rules::eligible`] without the distinct-nodes rule (per-node).
    pub(crate) fn eligible_ignoring_self(&self, e: &NodeEntry, _own: u32) -> Result<(), Filter> {
        if e.node.status != NodeStatus::Ready {
            return Err(Filter::Status(e.node.status));
        }
        self.rules_only(e)
    }

    /// Pools, label rules and workload rules; not status, not room.
    pub(crate) fn rules_only(&self, e: &NodeEntry) -> Result<(), Filter> {
        let n = &e.node;
        let pools = &self.workload.intent.pools;
        if !pools.is_empty() && !pools.iter().any(|p| n.pools.contains(p)) {
            return Err(Filter::Pool);
        }
        for (i, (p, _)) in self.hard.iter().enumerate() {
            if !p.matches(&n.labels) {
                return Err(Filter::Hard(i));
            }
        }
        for (i, h) in self.hard_wl.iter().enumerate() {
            let there = h.counts.and_then(|m| m.get(&n.id)).copied().unwrap_or(0) > 0;
            if there != h.must {
                return Err(Filter::HardWorkload(i));
            }
        }
        Ok(())
    }

    pub(crate) fn key(&self, f: Filter) -> String {
        match f {
            Filter::Status(s) => format!("status {s}"),
            Filter::Pool => self.pool_key.clone(),
            Filter::Hard(i) => self.hard[i].1.clone(),
            Filter::HardWorkload(i) => self.hard_wl[i].key.clone(),
            Filter::DistinctSelf => "keep-apart-from itself (distinct nodes)".to_owned(),
            Filter::OnePerNode => {
                "distinct nodes exhausted (one instance per node already there)".to_owned()
            }
            Filter::Avoid => "moving away from this node".to_owned(),
            Filter::Pressure => "under pressure, or would be with it".to_owned(),
        }
    }
}

/// Whether `reserved + ask` fits `capacity`; the first dimension short if not.
pub(crate) fn fits(capacity: &Resources, used: Resources, ask: Resources) -> Result<(), Dimension> {
    match used.saturating_add(ask).exceeds(capacity) {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// Counts of one placement attempt.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) evaluated: u32,
    pub(crate) feasible: u32,
    filtered: Vec<(Filter, u32)>,
    exhausted: [u32; Dimension::ALL.len()],
}

impl Tally {
    pub(crate) fn filter(&mut self, f: Filter, n: u32) {
        match self.filtered.iter_mut().find(|(g, _)| *g == f) {
            Some((_, c)) => *c += n,
            None => self.filtered.push((f, n)),
        }
    }

    pub(crate) fn exhaust(&mut self, d: Dimension) {
        let i = Dimension::ALL.iter().position(|x| *x == d).unwrap_or(0);
        self.exhausted[i] += 1;
    }

    pub(crate) fn into_metric(self, rules: &Rules<'_>, nodes_in_region: usize) -> AllocMetric {
        let mut m = AllocMetric {
            nodes_in_region: u32::try_from(nodes_in_region).unwrap_or(u32::MAX),
            nodes_evaluated: self.evaluated,
            ..Default::default()
        };
        for (f, n) in self.filtered {
            if n > 0 {
                *m.filtered.entry(rules.key(f)).or_default() += n;
            }
        }
        for (i, d) in Dimension::ALL.iter().enumerate() {
            if self.exhausted[i] > 0 {
                m.exhausted.insert(d.as_str().to_owned(), self.exhausted[i]);
            }
        }
        m
    }
}

/// The node list placements start from, and the rule that chose it.
pub(crate) struct Base<'a> {
    pub(crate) slots: Cow<'a, [Slot]>,
    /// Nodes outside the list are filtered by this.
    pub(crate) filter: Option<Filter>,
}

impl<'a> Base<'a> {
    /// The smallest node list the hard rules allow.
    pub(crate) fn choose(snap: &'a ClusterSnapshot, rules: &Rules<'a>) -> Self {
        let mut best = Base {
            slots: Cow::Borrowed(&snap.all.slots),
            filter: None,
        };
        let mut offer = |slots: Cow<'a, [Slot]>, f: Filter| {
            if slots.len() < best.slots.len() {
                best = Base {
                    slots,
                    filter: Some(f),
                };
            }
        };
        let empty: &'a [Slot] = &[];
        let pools = &rules.workload.intent.pools;
        if let [p] = pools.as_slice() {
            offer(
                snap.by_pool
                    .get(p)
                    .map_or(Cow::Borrowed(empty), |l| Cow::Borrowed(&l.slots)),
                Filter::Pool,
            );
        }
        for (i, (p, _)) in rules.hard.iter().enumerate() {
            let value = match (p.op, p.negated) {
                (Operator::Eq, false) => p.value,
                (Operator::In, false) if p.values.len() == 1 => Some(p.values[0].as_str()),
                _ => None,
            };
            if let Some(v) = value {
                let list = snap
                    .by_label
                    .get(p.label)
                    .and_then(|m| m.get(v))
                    .map_or(Cow::Borrowed(empty), |l| Cow::Borrowed(&l.slots[..]));
                offer(list, Filter::Hard(i));
            }
        }
        for (i, h) in rules.hard_wl.iter().enumerate().filter(|(_, h)| h.must) {
            let mut slots: Vec<Slot> = h
                .counts
                .into_iter()
                .flat_map(|m| m.iter())
                .filter(|(_, c)| **c > 0)
                .filter_map(|(n, _)| snap.slot_of(n))
                .collect();
            // The map's order is a hash order: sort for determinism.
            slots.sort_unstable();
            offer(Cow::Owned(slots), Filter::HardWorkload(i));
        }
        best
    }
}
