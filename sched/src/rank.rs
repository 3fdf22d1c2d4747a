//! Ranking: a score per feasible node, as in nomad's rank iterators: each
//! scorer that applies yields a part, about -1 to 1, and the final score is
//! their mean.
//!
//! - `binpack` / `spread` fit (always): BestFit v3 / worst fit over CPU and
//!   memory, `(20 - (10^free_cpu + 10^free_mem)) / 18` and its mirror. The
//!   load is the larger of reservations and *measured usage* per dimension,
//!   plus what this plan already put there, plus the ask: a node whose
//!   instances use more than they reserved (or that runs other things) looks
//!   as full as it is.
//! - `job-anti-affinity` (count > 1, on collision): `-(n + 1) / count` for
//!   `n` instances of the workload already there (nomad's), so replicas
//!   spread over nodes unless the ranking says otherwise.
//! - `reschedule-penalty`: -1 on the node a failed instance ran on.
//! - `affinity` (soft rules present): the signed weights of the matching
//!   label and workload rules over the sum of all their weights.
//! - `spread` (when not 0): per spread, `(desired - (used + 1)) / desired`
//!   times its weight share; an even spread's desired count is the total
//!   over the label's known values; a value with no target gets -1.
//! - `devices` (count workloads with a device group): +1 on a node that
//!   carries the group, which sees the devices the instance watches.

use std::collections::HashMap;

use crate::config::Algorithm;
use crate::feasible::Rules;
use crate::resources::{Dimension, Resources};
use crate::snapshot::{NodeEntry, Slot};

/// Most score parts one node can have.
const MAX_PARTS: usize = 6;

/// Per-evaluation state of the plan so far, which ranking and room checks
/// count on top of the snapshot.
#[derive(Default)]
pub(crate) struct PlanState<'a> {
    /// Live instances of this workload per node (staying + placed).
    pub(crate) own: HashMap<Slot, u32>,
    /// Per spread: instances per label value (staying + placed).
    pub(crate) spread_used: Vec<HashMap<&'a str, u32>>,
    /// Budgets this plan adds to each node.
    pub(crate) added: HashMap<Slot, Resources>,
    /// Budgets this plan frees on each node.
    pub(crate) freed: HashMap<Slot, Resources>,
}

impl<'a> PlanState<'a> {
    /// Reservations on the node counting this plan.
    pub(crate) fn reserved(&self, s: Slot, e: &NodeEntry) -> Resources {
        let mut r = e.reserved;
        if let Some(a) = self.added.get(&s) {
            r = r.saturating_add(*a);
        }
        if let Some(f) = self.freed.get(&s) {
            r = r.saturating_sub(*f);
        }
        r
    }

    /// Records one instance of this workload on the node.
    pub(crate) fn record(&mut self, rules: &Rules<'a>, s: Slot, e: &'a NodeEntry) {
        *self.own.entry(s).or_default() += 1;
        for (i, sp) in rules.spreads.iter().enumerate() {
            if let Some(v) = e.node.labels.get(sp.label) {
                *self.spread_used[i].entry(v.as_str()).or_default() += 1;
            }
        }
    }
}

/// A node's score and its parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub(crate) total: f64,
    parts: [(&'static str, f64); MAX_PARTS],
    len: usize,
}

impl Scored {
    fn push(&mut self, name: &'static str, v: f64) {
        if self.len < MAX_PARTS {
            self.parts[self.len] = (name, v);
            self.len += 1;
        }
    }

    pub(crate) fn parts(&self) -> Vec<(String, f64)> {
        self.parts[..self.len]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), *v))
            .collect()
    }
}

fn fit(algorithm: Algorithm, capacity: &Resources, load: &Resources) -> f64 {
    let mut total = 0.0;
    for d in Dimension::ALL {
        let cap = capacity.get(d) as f64;
        let free = if cap > 0.0 {
            1.0 - load.get(d) as f64 / cap
        } else {
            0.0
        };
        total += 10f64.powf(free);
    }
    let raw = match algorithm {
        Algorithm::Binpack => 20.0 - total,
        Algorithm::Spread => total - 2.0,
    };
    raw.clamp(0.0, 18.0) / 18.0
}

/// Scores node `s` for one more instance asking `ask`.
pub(crate) fn score(
    rules: &Rules<'_>,
    algorithm: Algorithm,
    state: &PlanState<'_>,
    s: Slot,
    e: &NodeEntry,
    ask: Resources,
    penalty: Option<Slot>,
) -> Scored {
    let mut out = Scored {
        total: 0.0,
        parts: [("", 0.0); MAX_PARTS],
        len: 0,
    };
    let added = state.added.get(&s).copied().unwrap_or(Resources::ZERO);
    let load = state
        .reserved(s, e)
        .max(e.node.usage.saturating_add(added))
        .saturating_add(ask);
    let name = match algorithm {
        Algorithm::Binpack => "binpack",
        Algorithm::Spread => "spread-fit",
    };
    out.push(name, fit(algorithm, &e.node.capacity, &load));
    let own = state.own.get(&s).copied().unwrap_or(0);
    if let Some(count) = rules.count {
        if count > 1 && own > 0 {
            out.push("job-anti-affinity", -f64::from(own + 1) / f64::from(count));
        }
    }
    if penalty == Some(s) {
        out.push("reschedule-penalty", -1.0);
    }
    if rules.soft_sum > 0.0 {
        let mut total = 0.0;
        for (p, w) in &rules.soft_labels {
            if p.matches(&e.node.labels) {
                total += w;
            }
        }
        for sw in &rules.soft_wl {
            let there = if sw.is_self {
                own > 0
            } else {
                sw.counts
                    .and_then(|m| m.get(&e.node.id))
                    .copied()
                    .unwrap_or(0)
                    > 0
            };
            if there {
                total += sw.weight;
            }
        }
        out.push("affinity", total / rules.soft_sum);
    }
    if !rules.spreads.is_empty() {
        let total = spread_score(rules, state, e);
        if total != 0.0 {
            out.push("spread", total);
        }
    }
    if let (Some(_), Some(g)) = (rules.count, rules.workload.device_group.as_ref()) {
        if e.node.device_groups.contains(g) {
            out.push("devices", 1.0);
        }
    }
    out.total = out.parts[..out.len].iter().map(|(_, v)| v).sum::<f64>() / out.len as f64;
    out
}

fn spread_score(rules: &Rules<'_>, state: &PlanState<'_>, e: &NodeEntry) -> f64 {
    let total_count = f64::from(rules.count.unwrap_or(1));
    let mut total = 0.0;
    for (i, sp) in rules.spreads.iter().enumerate() {
        let Some(v) = e.node.labels.get(sp.label) else {
            total -= sp.weight;
            continue;
        };
        let used = f64::from(state.spread_used[i].get(v.as_str()).copied().unwrap_or(0)) + 1.0;
        let desired = if sp.desired.is_empty() {
            Some(total_count / sp.even_values.max(1) as f64)
        } else {
            sp.desired.get(v.as_str()).copied().or(sp.implicit)
        };
        match desired {
            Some(d) if d > 0.0 => total += ((d - used) / d).clamp(-1.0, 1.0) * sp.weight,
            _ => total -= sp.weight,
        }
    }
    total
}
