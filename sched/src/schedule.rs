//! `schedule`: reconcile → feasible → rank → plan for one evaluation.
//!
//! # Sampling
//! A placement does not rank every feasible node. As nomad's LimitIterator
//! does, it visits nodes in a random order and stops once it has found
//! `limit` feasible ones, then takes the best of those:
//! `limit = max(min-candidates, ceil(log2(candidates)))` (14 at 10k nodes,
//! 17 at 100k), or `soft-rule-candidates` (default 100) when the workload
//! has soft rules, whose preferences a small sample would mostly miss.
//! Up to `max-skip` penalised (negative) nodes are passed over without
//! counting. Nodes the workload is known to prefer — those carrying its
//! device group, those running a workload it wants to co-locate with —
//! are looked at first, so a sample cannot miss them.
//!
//! The random order is a random start and a random stride coprime with the
//! list length: a full permutation of the candidate list in O(1) setup,
//! where a shuffle would cost O(nodes) per placement. Ties are broken by
//! the rng too, so the same snapshot, evaluation, time and seed give the
//! same plan.
//!
//! A placement therefore costs O(limit) node checks when the region has
//! room, and O(candidates) only when it is nearly full or the rules filter
//! almost everything — where the failure report needs the full count
//! anyway. After one instance of a workload fails, the rest of that
//! evaluation's free-floating instances are counted as failed without
//! another scan (nomad coalesces them the same way): the plan only gets
//! fuller.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::Rng;

use crate::error::SchedError;
use crate::feasible::{fits, Base, Filter, Rules, Tally};
use crate::ids::{AllocId, Timestamp};
use crate::intent::ValidationContext;
use crate::model::{
    Allocation, ClientState, Desired, Evaluation, Headroom, PlaceReason, PlacementMeta,
};
use crate::plan::{AllocMetric, AllocStop, PlacementFailure, Plan, StopReason};
use crate::rank::{score, PlanState, Scored};
use crate::reconcile::{reconcile, PlaceRequest};
use crate::snapshot::{ClusterSnapshot, Slot};

/// Produces the plan that brings `eval`'s workload in line with its spec on
/// `snap` (see the module docs). Pure: the same inputs and rng seed give the
/// same plan. A workload that cannot be (fully) placed is not an error: the
/// plan places what fits and says why the rest did not.
pub fn schedule(
    snap: &ClusterSnapshot,
    eval: &Evaluation,
    now: Timestamp,
    rng: &mut impl Rng,
) -> Result<Plan, SchedError> {
    if snap.index() < eval.snapshot_index {
        return Err(SchedError::SnapshotBehind {
            eval: eval.id,
            workload: eval.workload.clone(),
            need: eval.snapshot_index,
            have: snap.index(),
        });
    }
    let Some(w) = snap.workload(&eval.workload) else {
        return Ok(stop_all(snap, eval));
    };
    // The lease minimum was enforced on submit; here only the shape matters.
    let ctx = ValidationContext {
        workload_name: Some(&w.id.name),
        min_replace_after: Duration::ZERO,
    };
    w.intent
        .validate(&ctx)
        .map_err(|errors| SchedError::InvalidIntent {
            eval: eval.id,
            workload: w.id.clone(),
            errors,
        })?;
    let rules = Rules::compile(snap, w);
    let rec = reconcile(snap, &rules, eval, now);
    let mut plan = Plan::new(eval.id, w.id.clone(), Some(w.generation), snap.index());
    plan.follow_up_at = rec.follow_up_at;

    let mut state = PlanState {
        spread_used: vec![HashMap::new(); rules.spreads.len()],
        ..Default::default()
    };
    for a in &rec.staying {
        if let Some(s) = snap.slot_of(&a.node) {
            if let Some(e) = snap.entry(s) {
                if a.is_live() {
                    state.record(&rules, s, e);
                }
            }
        }
    }
    for (node, stop) in rec.stops {
        free(snap, &mut state, stop.alloc);
        plan.node_mut(&node).stop.push(stop);
    }
    for (node, upd, growth) in rec.updates {
        if let Some(s) = snap.slot_of(&node) {
            let a = state.added.entry(s).or_default();
            *a = a.saturating_add(growth);
        }
        plan.node_mut(&node).update.push(upd);
    }

    let mut placer = Placer::new(snap, &rules, eval.headroom.as_ref());
    let wanted = u32::try_from(rec.place.len()).unwrap_or(u32::MAX);
    let mut failure: Option<PlacementFailure> = None;
    for req in rec.place {
        let floating = req.pinned.is_none();
        // A pressure migration that finds no target leaves the instance
        // where it is: not a failure of the workload.
        let migration = req.reason == PlaceReason::MigratePressure;
        if migration && (placer.floating_failed || placer.migration_failed) {
            plan.not_migrated
                .extend(req.previous.map(|p| (p, AllocMetric::default())));
            continue;
        }
        if floating && placer.floating_failed {
            if let Some(f) = failure.as_mut() {
                f.unplaced += 1;
            }
            continue;
        }
        match placer.select(&state, &req, rng) {
            Ok((s, scored, tally)) => {
                let Some(e) = snap.entry(s) else { continue };
                let alloc = Allocation {
                    id: AllocId::random(rng),
                    workload: w.id.clone(),
                    slot: req.slot,
                    node: e.node.id.clone(),
                    generation: w.generation,
                    resources: w.resources,
                    fencing_token: 0,
                    desired: Desired::Run,
                    client: ClientState::Pending,
                    created_index: 0,
                    modified_index: 0,
                    lease_expires_at: None,
                    previous: req.previous,
                    placement: PlacementMeta {
                        eval: eval.id,
                        reason: req.reason.clone(),
                        score: scored.total,
                        score_parts: scored.parts(),
                        nodes_evaluated: tally.evaluated,
                        nodes_feasible: tally.feasible,
                    },
                };
                let added = state.added.entry(s).or_default();
                *added = added.saturating_add(w.resources);
                state.record(&rules, s, e);
                if let (Some(prev), Some(prev_node)) = (req.previous, req.stop_previous.as_ref()) {
                    free(snap, &mut state, prev);
                    plan.node_mut(prev_node).stop.push(AllocStop {
                        alloc: prev,
                        reason: StopReason::Replaced { by: alloc.id },
                    });
                }
                plan.node_mut(&e.node.id).place.push(alloc);
            }
            Err(tally) if migration => {
                placer.migration_failed = true;
                let metric = tally.into_metric(&rules, snap.node_count());
                plan.not_migrated.extend(req.previous.map(|p| (p, metric)));
            }
            Err(tally) => {
                if floating {
                    placer.floating_failed = true;
                }
                let metric = tally.into_metric(&rules, snap.node_count());
                match failure.as_mut() {
                    Some(f) => {
                        f.unplaced += 1;
                        merge(&mut f.metric, metric);
                    }
                    None => {
                        failure = Some(PlacementFailure {
                            unplaced: 1,
                            wanted,
                            metric,
                        })
                    }
                }
            }
        }
    }
    plan.failed = failure;
    Ok(plan)
}

/// Counts the budget of a live allocation this plan stops as free.
fn free(snap: &ClusterSnapshot, state: &mut PlanState<'_>, id: AllocId) {
    if let Some(a) = snap.alloc(id).filter(|a| a.is_live()) {
        if let Some(s) = snap.slot_of(&a.node) {
            let f = state.freed.entry(s).or_default();
            *f = f.saturating_add(a.resources);
            if let Some(c) = state.own.get_mut(&s) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

fn merge(into: &mut AllocMetric, m: AllocMetric) {
    into.nodes_evaluated += m.nodes_evaluated;
    for (k, v) in m.filtered {
        *into.filtered.entry(k).or_default() += v;
    }
    for (k, v) in m.exhausted {
        *into.exhausted.entry(k).or_default() += v;
    }
}

/// The deleted workload's plan: stop everything still desired to run.
fn stop_all(snap: &ClusterSnapshot, eval: &Evaluation) -> Plan {
    let mut plan = Plan::new(eval.id, eval.workload.clone(), None, snap.index());
    for a in snap
        .allocs_of(&eval.workload)
        .filter(|a| a.desired == Desired::Run)
    {
        plan.node_mut(&a.node).stop.push(AllocStop {
            alloc: a.id,
            reason: StopReason::WorkloadDeleted,
        });
    }
    plan
}

/// Candidate selection for one evaluation.
struct Placer<'s, 'r> {
    snap: &'s ClusterSnapshot,
    rules: &'r Rules<'s>,
    base: Base<'s>,
    preferred: Vec<Slot>,
    preferred_set: HashSet<Slot>,
    limit: u32,
    floating_failed: bool,
    /// A pressure migration found no target (stricter than other
    /// placements, so those still look).
    migration_failed: bool,
    /// Limits on pressure migrations' targets.
    headroom: Option<&'s Headroom>,
}

/// Best node so far, with how many tied for it.
struct Best {
    slot: Slot,
    scored: Scored,
    ties: u32,
}

impl<'s, 'r> Placer<'s, 'r> {
    fn new(
        snap: &'s ClusterSnapshot,
        rules: &'r Rules<'s>,
        headroom: Option<&'s Headroom>,
    ) -> Self {
        let base = Base::choose(snap, rules);
        let cfg = snap.config();
        let limit = if rules.has_soft {
            cfg.soft_rule_candidates
        } else {
            let n = base.slots.len().max(1) as f64;
            cfg.min_candidates.max(n.log2().ceil() as u32)
        }
        .max(1);
        let mut preferred = Vec::new();
        let mut preferred_set = HashSet::new();
        let mut prefer = |s: Slot, preferred: &mut Vec<Slot>| {
            if preferred.len() < limit as usize && preferred_set.insert(s) {
                preferred.push(s);
            }
        };
        if let (Some(_), Some(g)) = (rules.count, rules.workload.device_group.as_ref()) {
            if let Some(list) = snap.by_group.get(g) {
                for &s in &list.slots {
                    prefer(s, &mut preferred);
                }
            }
        }
        for sw in rules.soft_wl.iter().filter(|s| s.weight > 0.0) {
            let mut slots: Vec<Slot> = sw
                .counts
                .into_iter()
                .flat_map(|m| m.keys())
                .filter_map(|n| snap.slot_of(n))
                .collect();
            slots.sort_unstable();
            for s in slots {
                prefer(s, &mut preferred);
            }
        }
        Placer {
            snap,
            rules,
            base,
            preferred,
            preferred_set,
            limit,
            floating_failed: false,
            migration_failed: false,
            headroom,
        }
    }

    /// Picks a node for `req`, or says why none would do.
    fn select<R: Rng>(
        &self,
        state: &PlanState<'_>,
        req: &PlaceRequest,
        rng: &mut R,
    ) -> Result<(Slot, Scored, Tally), Tally> {
        let mut tally = Tally::default();
        let mut best: Option<Best> = None;
        let max_skip = self.snap.config().max_skip;
        if let Some(s) = req.pinned {
            self.consider(s, state, req, &mut tally, &mut best, rng, true);
            return finish(best, tally);
        }
        // (counted toward the limit, penalised nodes passed over)
        let mut seen = (0u32, 0u32);
        let visit = |s: Slot,
                     tally: &mut Tally,
                     best: &mut Option<Best>,
                     seen: &mut (u32, u32),
                     rng: &mut R,
                     preferred| {
            if let Some(sc) = self.consider(s, state, req, tally, best, rng, preferred) {
                if sc < 0.0 && seen.1 < max_skip {
                    seen.1 += 1;
                } else {
                    seen.0 += 1;
                }
            }
        };
        for &s in &self.preferred {
            visit(s, &mut tally, &mut best, &mut seen, rng, true);
        }
        let n = self.base.slots.len();
        if n > 0 {
            let start = rng.gen_range(0..n);
            let stride = coprime_stride(n, rng);
            let mut i = start;
            for _ in 0..n {
                if seen.0 >= self.limit {
                    break;
                }
                let s = self.base.slots[i];
                i = (i + stride) % n;
                if !self.preferred_set.is_empty() && self.preferred_set.contains(&s) {
                    continue;
                }
                visit(s, &mut tally, &mut best, &mut seen, rng, false);
            }
        }
        if best.is_none() {
            if let Some(f) = self.base.filter {
                let outside = self.snap.node_count().saturating_sub(n);
                tally.filter(f, u32::try_from(outside).unwrap_or(u32::MAX));
            }
        }
        finish(best, tally)
    }

    /// Checks and scores one node; `Some(score)` when it is feasible.
    #[allow(clippy::too_many_arguments)]
    fn consider(
        &self,
        s: Slot,
        state: &PlanState<'_>,
        req: &PlaceRequest,
        tally: &mut Tally,
        best: &mut Option<Best>,
        rng: &mut impl Rng,
        preferred: bool,
    ) -> Option<f64> {
        let e = self.snap.entry(s)?;
        let own = state.own.get(&s).copied().unwrap_or(0);
        let hot = || {
            req.reason == PlaceReason::MigratePressure
                && self.headroom.is_some_and(|h| {
                    let added = state.added.get(&s).copied().unwrap_or_default();
                    !h.admits(&e.node, added, self.rules.workload.resources)
                })
        };
        let check = if req.avoid == Some(s) {
            Err(Filter::Avoid)
        } else if req.pinned.is_some() {
            self.rules.eligible_ignoring_self(e, own)
        } else {
            self.rules.eligible(e, own)
        }
        .and_then(|()| if hot() { Err(Filter::Pressure) } else { Ok(()) });
        if let Err(f) = check {
            // A preferred node outside the base list is already counted
            // under the base's rule.
            if !(preferred && req.pinned.is_none() && Some(f) == self.base.filter) {
                tally.evaluated += 1;
                tally.filter(f, 1);
            }
            return None;
        }
        tally.evaluated += 1;
        if let Err(d) = fits(
            &e.node.capacity,
            state.reserved(s, e),
            self.rules.workload.resources,
        ) {
            tally.exhaust(d);
            return None;
        }
        tally.feasible += 1;
        let sc = score(
            self.rules,
            self.snap.config().algorithm,
            state,
            s,
            e,
            self.rules.workload.resources,
            req.penalty,
        );
        match best {
            Some(b) if sc.total < b.scored.total => {}
            Some(b) if sc.total == b.scored.total => {
                b.ties += 1;
                if rng.gen_range(0..b.ties) == 0 {
                    b.slot = s;
                    b.scored = sc;
                }
            }
            _ => {
                *best = Some(Best {
                    slot: s,
                    scored: sc,
                    ties: 1,
                })
            }
        }
        Some(sc.total)
    }
}

fn finish(best: Option<Best>, tally: Tally) -> Result<(Slot, Scored, Tally), Tally> {
    match best {
        Some(b) => Ok((b.slot, b.scored, tally)),
        None => Err(tally),
    }
}

/// A random stride in `1..n` coprime with `n` (1 when `n` ≤ 2), so that
/// `start + k * stride (mod n)` visits every index once.
fn coprime_stride(n: usize, rng: &mut impl Rng) -> usize {
    if n <= 2 {
        return 1;
    }
    let mut s = rng.gen_range(1..n);
    while gcd(s, n) != 1 {
        s = s % (n - 1) + 1;
    }
    s
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Whether any node could ever take the workload: the hard rules and each
/// node's total capacity, ignoring status and current reservations (a
/// down node may come back; reservations change). For refusing, on
/// submit, a spec no node satisfies: `Err` carries the per-rule counts.
/// O(nodes); meant for submissions, not the scheduling loop.
pub fn check_feasible(
    snap: &ClusterSnapshot,
    workload: &crate::model::Workload,
) -> Result<u32, PlacementFailure> {
    let rules = Rules::compile(snap, workload);
    let mut tally = Tally::default();
    let mut ok = 0u32;
    for &s in &snap.all.slots {
        let Some(e) = snap.entry(s) else { continue };
        tally.evaluated += 1;
        if let Err(f) = rules.rules_only(e) {
            tally.filter(f, 1);
        } else if let Err(d) = fits(&e.node.capacity, crate::Resources::ZERO, workload.resources) {
            tally.exhaust(d);
        } else {
            ok += 1;
        }
    }
    if ok > 0 {
        Ok(ok)
    } else {
        let wanted = match workload.intent.cardinality() {
            crate::intent::Cardinality::Count(n) => n,
            crate::intent::Cardinality::PerNode => 1,
        };
        Err(PlacementFailure {
            unplaced: wanted,
            wanted,
            metric: tally.into_metric(&rules, snap.node_count()),
        })
    }
}
