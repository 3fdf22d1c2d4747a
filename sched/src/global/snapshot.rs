//! What the global scheduler reads: every region's summary, every global
//! workload, and the split each workload currently has (region → instances
//! assigned), at one index of central's state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::estimate::RegionCapacity;
use super::intent::GlobalIntent;
use super::summary::RegionSummary;
use super::verify::GlobalVerdict;
use crate::ids::{EvalId, WorkloadId};
use crate::resources::{Dimension, Resources};

/// Global scheduler settings, kept in the snapshot so every evaluation of
/// one snapshot judges regions the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GlobalConfig {
    /// A region whose last summary is older than this is `unknown`
    /// (central has lost touch with it): it keeps its shares and gets no
    /// new ones. Default 30 s (several summary periods).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            stale_after: Duration::from_secs(30),
        }
    }
}

/// A workload central splits over regions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct GlobalWorkload {
    /// `(tenant, name)`; each region's share runs as a region workload of
    /// the same id.
    pub id: WorkloadId,
    /// Spec version; a plan made for another generation is refused.
    pub generation: u64,
    /// Where and how many.
    pub intent: GlobalIntent,
    /// Several of its instances may run on one node (a sharded monitor:
    /// its instances split the devices), so a region's per-node limit
    /// does not bound its share. Default false.
    #[serde(default)]
    pub stacks: bool,
}

/// Asks the global scheduler to (re)split one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct GlobalEval {
    /// Id, assigned by whoever queues evaluations (central's leader).
    pub id: EvalId,
    /// The workload.
    pub workload: WorkloadId,
    /// The snapshot must be at least this new (the index of the change
    /// that caused the evaluation).
    pub snapshot_index: u64,
}

/// Central's state as the global scheduler sees it at one index.
#[derive(Debug, Clone, Default)]
pub struct GlobalSnapshot {
    index: u64,
    config: GlobalConfig,
    regions: BTreeMap<String, RegionSummary>,
    workloads: BTreeMap<WorkloadId, GlobalWorkload>,
    splits: BTreeMap<WorkloadId, BTreeMap<String, u32>>,
    /// The same splits by region.
    by_region: BTreeMap<String, BTreeMap<WorkloadId, u32>>,
    /// Per region, instances assigned but not yet placed (share minus what
    /// the region reports running), by instance size: what the region's
    /// summary does not show yet. Kept current by every mutation, so a
    /// split reads a few sizes per region instead of every workload's
    /// share there.
    unplaced: BTreeMap<String, BTreeMap<Size, u64>>,
}

/// An instance size as a map key.
type Size = (u64, u64);

fn key(r: Resources) -> Size {
    (r.cpu_millicores, r.memory_bytes)
}

/// An empty split, for workloads that have none.
static NO_SPLIT: BTreeMap<String, u32> = BTreeMap::new();

impl GlobalSnapshot {
    /// An empty state at `index`.
    pub fn new(index: u64, config: GlobalConfig) -> Self {
        GlobalSnapshot {
            index,
            config,
            ..Default::default()
        }
    }

    /// The index this state reflects.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Moves the snapshot to `index`.
    pub fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    /// The settings.
    pub fn config(&self) -> &GlobalConfig {
        &self.config
    }

    /// Adds or replaces a region's summary.
    pub fn upsert_region(&mut self, summary: RegionSummary) {
        let r = summary.region.clone();
        self.account_region(&r, false);
        self.regions.insert(r.clone(), summary);
        self.account_region(&r, true);
    }

    /// Forgets a region (it left the federation). Shares it held are
    /// re-placed by the next evaluation of each workload.
    pub fn remove_region(&mut self, region: &str) {
        self.account_region(region, false);
        self.regions.remove(region);
        self.account_region(region, true);
    }

    /// A region's summary.
    pub fn region(&self, region: &str) -> Option<&RegionSummary> {
        self.regions.get(region)
    }

    /// Every region, in name order.
    pub fn regions(&self) -> impl Iterator<Item = &RegionSummary> {
        self.regions.values()
    }

    /// The names of every region, for [`GlobalIntent::validate`].
    pub fn region_names(&self) -> BTreeSet<String> {
        self.regions.keys().cloned().collect()
    }

    /// Adds or replaces a workload.
    pub fn upsert_workload(&mut self, w: GlobalWorkload) {
        let id = w.id.clone();
        self.account_workload(&id, false);
        self.workloads.insert(id.clone(), w);
        self.account_workload(&id, true);
    }

    /// Removes a workload and its split.
    pub fn remove_workload(&mut self, id: &WorkloadId) {
        self.set_split(id, BTreeMap::new());
        self.workloads.remove(id);
    }

    /// A workload by id.
    pub fn workload(&self, id: &WorkloadId) -> Option<&GlobalWorkload> {
        self.workloads.get(id)
    }

    /// The current split of `w`: region → instances (regions with none
    /// are absent).
    pub fn split_of(&self, w: &WorkloadId) -> &BTreeMap<String, u32> {
        self.splits.get(w).unwrap_or(&NO_SPLIT)
    }

    /// Replaces the split of `w` (zero shares are dropped).
    pub fn set_split(&mut self, w: &WorkloadId, split: BTreeMap<String, u32>) {
        self.account_workload(w, false);
        if let Some(old) = self.splits.remove(w) {
            for r in old.keys() {
                if let Some(m) = self.by_region.get_mut(r) {
                    m.remove(w);
                    if m.is_empty() {
                        self.by_region.remove(r);
                    }
                }
            }
        }
        let split: BTreeMap<String, u32> = split.into_iter().filter(|(_, n)| *n > 0).collect();
        for (r, n) in &split {
            self.by_region
                .entry(r.clone())
                .or_default()
                .insert(w.clone(), *n);
        }
        if !split.is_empty() {
            self.splits.insert(w.clone(), split);
        }
        self.account_workload(w, true);
    }

    /// `w`'s unplaced instances in `region` and their size, from the
    /// current state (`None` for an unknown workload or nothing unplaced).
    fn unplaced_of(&self, w: &WorkloadId, region: &str) -> Option<(Size, u64)> {
        let n = self.splits.get(w)?.get(region).copied()?;
        let placed = self.regions.get(region).map_or(0, |s| s.placed_of(w));
        let size = self.workloads.get(w)?.intent.size;
        let out = n.saturating_sub(placed);
        (out > 0).then_some((key(size), u64::from(out)))
    }

    /// Adds (`add`) or takes back what `w` contributes to `unplaced` in
    /// `region`. Callers take back before changing anything it depends on
    /// and add after, so the aggregate always equals a fresh sum.
    fn account(&mut self, w: &WorkloadId, region: &str, add: bool) {
        let Some((size, out)) = self.unplaced_of(w, region) else {
            return;
        };
        let m = self.unplaced.entry(region.to_owned()).or_default();
        let c = m.entry(size).or_default();
        *c = if add { *c + out } else { c.saturating_sub(out) };
        if *c == 0 {
            m.remove(&size);
            if m.is_empty() {
                self.unplaced.remove(region);
            }
        }
    }

    fn account_workload(&mut self, w: &WorkloadId, add: bool) {
        let regions: Vec<String> = self.split_of(w).keys().cloned().collect();
        for r in regions {
            self.account(w, &r, add);
        }
    }

    fn account_region(&mut self, region: &str, add: bool) {
        let ws: Vec<WorkloadId> = self
            .by_region
            .get(region)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for w in ws {
            self.account(&w, region, add);
        }
    }

    /// Commits the accepted part of a verified plan at `index`.
    pub fn apply_verdict(&mut self, verdict: &GlobalVerdict, index: u64) {
        let mut split = self.split_of(&verdict.workload).clone();
        for (r, n) in &verdict.accepted {
            split.insert(r.clone(), *n);
        }
        self.set_split(&verdict.workload, split);
        self.index = self.index.max(index);
    }

    /// How many instances of `w` (of `size`, in `pools`) region `summary`
    /// can hold in all: what it already runs of `w` plus what still fits,
    /// less what other workloads' shares assigned there but not yet placed
    /// will take (their summary does not show them yet).
    pub(crate) fn region_cap(
        &self,
        summary: &RegionSummary,
        w: &WorkloadId,
        size: Resources,
        pools: &[String],
    ) -> RegionCap {
        let cap: &RegionCapacity = &summary.capacity;
        // A sharded workload stacks on a node: the region's one-per-node
        // limit (an edge runs an unsharded monitor once) does not apply.
        let stacks = self.workloads.get(w).is_some_and(|x| x.stacks);
        let fit = if stacks {
            cap.fit_stacked(size, pools)
        } else {
            cap.fit(size, pools)
        };
        // Everyone's unplaced instances there, less `w`'s own (its own
        // share is what is being decided).
        let own = self.unplaced_of(w, &summary.region);
        let mut pending = 0u64;
        for (&other, &n) in self.unplaced.get(&summary.region).into_iter().flatten() {
            let n = match own {
                Some((s, o)) if s == other => n.saturating_sub(o),
                _ => n,
            };
            let per = displacement(Resources::new(other.0, other.1), size, cap.max_per_node);
            pending = pending.saturating_add(n.saturating_mul(per));
        }
        let own = u64::from(summary.placed_of(w));
        let total = own.saturating_add(fit.saturating_sub(pending));
        RegionCap {
            cap: u32::try_from(total).unwrap_or(u32::MAX),
            fit,
            pending,
        }
    }
}

/// A region's room for one workload (see [`GlobalSnapshot::region_cap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionCap {
    /// Most instances of the workload the region can hold.
    pub(crate) cap: u32,
    /// Instances of its size that fit in the summary's free capacity.
    pub(crate) fit: u64,
    /// Of those, how many other workloads' unplaced shares will take.
    pub(crate) pending: u64,
}

/// At most how many instances of `size` one instance of `other` takes
/// the place of on a node: removing `o` from a node's free lowers
/// `floor(free_d / size_d)` by at most `ceil(o_d / size_d)` in each
/// dimension, and never by more than the per-node limit. At least 1, so a
/// pending share always counts.
fn displacement(other: Resources, size: Resources, max_per_node: Option<u32>) -> u64 {
    let per = Dimension::ALL
        .into_iter()
        .filter(|&d| size.get(d) > 0)
        .map(|d| other.get(d).div_ceil(size.get(d)))
        .max()
        .unwrap_or(1)
        .max(1);
    match max_per_node {
        Some(m) => per.min(u64::from(m).max(1)),
        None => per,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displacement_bounds_what_another_instance_takes() {
        let size = Resources::new(100, 100);
        assert_eq!(displacement(Resources::new(250, 10), size, None), 3);
        assert_eq!(displacement(Resources::new(10, 10), size, None), 1);
        assert_eq!(displacement(Resources::ZERO, size, None), 1, "at least one");
        assert_eq!(displacement(Resources::new(250, 10), size, Some(1)), 1);
        assert_eq!(
            displacement(Resources::new(250, 10), Resources::new(0, 5), None),
            2
        );
    }

    /// `unplaced` recomputed from scratch.
    fn fresh(s: &GlobalSnapshot) -> BTreeMap<String, BTreeMap<Size, u64>> {
        let mut m: BTreeMap<String, BTreeMap<Size, u64>> = BTreeMap::new();
        for (w, split) in &s.splits {
            for r in split.keys() {
                if let Some((size, n)) = s.unplaced_of(w, r) {
                    *m.entry(r.clone()).or_default().entry(size).or_default() += n;
                }
            }
        }
        m
    }

    #[test]
    fn the_unplaced_aggregate_equals_a_fresh_sum_after_any_mutations() {
        use rand::{Rng, SeedableRng};

        use crate::global::tests::{region, workload};
        use crate::global::{Placed, RegionHealth};

        for seed in 0..40u64 {
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut s = GlobalSnapshot::new(1, GlobalConfig::default());
            let regions = ["a", "b", "c"];
            let names = ["w0", "w1", "w2", "w3"];
            for _ in 0..60 {
                let w = names[r.gen_range(0..names.len())];
                let reg = regions[r.gen_range(0..regions.len())];
                match r.gen_range(0..5) {
                    0 => {
                        let mut gw = workload(w, "count = 3");
                        gw.intent.size = Resources::new(r.gen_range(1..4) * 100, 1);
                        s.upsert_workload(gw);
                    }
                    1 => s.remove_workload(&WorkloadId::new("acme", w)),
                    2 => {
                        let mut split = BTreeMap::new();
                        for x in regions {
                            if r.gen_bool(0.5) {
                                split.insert(x.to_owned(), r.gen_range(0..5));
                            }
                        }
                        s.set_split(&WorkloadId::new("acme", w), split);
                    }
                    3 => {
                        let mut sum = region(reg, 10, RegionHealth::Ok, 0);
                        sum.placed = vec![Placed {
                            workload: WorkloadId::new("acme", w),
                            instances: r.gen_range(0..4),
                        }];
                        s.upsert_region(sum);
                    }
                    _ => s.remove_region(reg),
                }
                assert_eq!(s.unplaced, fresh(&s), "seed {seed}");
            }
        }
    }

    #[test]
    fn splits_are_indexed_by_region_and_zero_shares_dropped() {
        let mut s = GlobalSnapshot::new(1, GlobalConfig::default());
        let w = WorkloadId::new("t", "w");
        s.set_split(&w, BTreeMap::from([("a".into(), 2), ("b".into(), 0)]));
        assert_eq!(s.split_of(&w), &BTreeMap::from([("a".to_owned(), 2)]));
        assert_eq!(s.by_region["a"][&w], 2);
        assert!(!s.by_region.contains_key("b"));
        s.set_split(&w, BTreeMap::from([("b".into(), 1)]));
        assert!(!s.by_region.contains_key("a"));
        s.remove_workload(&w);
        assert!(s.split_of(&w).is_empty());
        assert!(s.by_region.is_empty());
    }
}
