//! `split`: how many instances of one global workload each region runs.
//!
//! Shaped like the region scheduler, one level up: regions are the nodes,
//! a region's share is what it places with its own scheduler.
//!
//! 1. **Classify** every region, first rule first: unreachable (`down`,
//!    `unknown`, or a summary older than `stale-after`), outside hard
//!    region affinity, without the tenant's devices (`locality = "devices"`),
//!    else eligible with a capacity for the workload's size
//!    ([`GlobalSnapshot::region_cap`]: what it runs of the workload, plus
//!    what still fits, less other workloads' assigned-but-unplaced shares).
//! 2. **Unreachable regions keep their share**, untouched: nothing is
//!    re-placed and nothing is added, so a partition never doubles a
//!    workload. The one exception: with device locality, the part of the
//!    share above the devices still reporting there (`min(share,
//!    devices)`) is released and re-placed, since its data now flows
//!    through another region.
//! 3. **Split the rest** over the eligible regions: in proportion to spread
//!    targets (or evenly) or device counts, with capacity caps
//!    (water-filling: a capped region's excess goes to the others in
//!    proportion); beyond every target region's room, a spread overflows
//!    to other eligible regions. Without spread or locality, instances go
//!    to the most preferred region (soft affinity weight), then the one
//!    with the most room.
//! 4. **Stability.** Each region's share starts from its current one,
//!    clamped into what the rules allow (`[floor, ceil]` of its exact
//!    proportional share, or `[0, room]`); only then are instances added
//!    or removed, one at a time, where the rules want them most. A current
//!    split the rules still allow is therefore kept as is, and splitting
//!    a plan's own result again changes nothing.
//!
//! Ties are broken by a random key per region drawn from `rng`, so the same
//! snapshot, workload, time and seed give the same plan.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::intent::{GlobalCardinality, GlobalIntentErrors};
use super::snapshot::{GlobalEval, GlobalSnapshot, GlobalWorkload, RegionCap};
use super::summary::RegionHealth;
use crate::ids::{EvalId, Timestamp, WorkloadId};
use crate::plan::AllocMetric;

/// Why [`split`] made no plan at all. A workload that fits nowhere is not
/// an error: its plan says why in `failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobalSplitError {
    /// The snapshot is older than the evaluation needs; retry once caught up.
    #[error("{eval} for {workload} needs global snapshot index {need}, have {have}")]
    SnapshotBehind {
        /// The evaluation.
        eval: EvalId,
        /// Its workload.
        workload: WorkloadId,
        /// The index it needs.
        need: u64,
        /// The snapshot's index.
        have: u64,
    },
    /// The evaluation is for another workload than the one given.
    #[error("{eval} is for {asked}, not {given}")]
    WrongWorkload {
        /// The evaluation.
        eval: EvalId,
        /// Its workload.
        asked: WorkloadId,
        /// The workload passed in.
        given: WorkloadId,
    },
    /// The stored intent is malformed (it should have been refused on
    /// submit); nothing changes.
    #[error("{eval}: global workload {workload} has an invalid intent: {errors}")]
    InvalidIntent {
        /// The evaluation.
        eval: EvalId,
        /// Its workload.
        workload: WorkloadId,
        /// What is wrong.
        errors: GlobalIntentErrors,
    },
}

/// Why a region's share is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum ShareReason {
    /// The current share, unchanged: the rules still allow it.
    Kept,
    /// "region-unreachable, kept": the region is down or out of touch; its
    /// share is left alone, neither moved nor duplicated elsewhere.
    RegionUnreachable {
        /// Its health at decision time.
        health: RegionHealth,
    },
    /// Part of an unreachable region's share was released because the
    /// tenant's devices now report elsewhere.
    DevicesMoved {
        /// Devices still reporting through it.
        devices: u32,
        /// Instances released (re-placed in reachable regions).
        released: u32,
    },
    /// The region is in the intent's hard region list.
    HardAffinity,
    /// The region is preferred with this weight.
    Affinity {
        /// 1-100.
        weight: u8,
    },
    /// Its spread target.
    SpreadTarget {
        /// Percent of the count.
        percent: u8,
    },
    /// An even spread over the eligible regions.
    SpreadEven,
    /// Not a spread target: took what the full target regions could not.
    SpreadOverflow,
    /// Its proportion of the tenant's devices.
    DeviceLocality {
        /// Devices reporting through it.
        devices: u32,
        /// Devices over all eligible regions.
        of: u32,
    },
    /// No spread or locality: placed where preferred and roomiest.
    Room,
    /// `per-region`: the same number in every eligible region.
    PerRegion {
        /// Instances wanted in each region.
        wanted: u32,
    },
    /// It holds all it can of this size: less than the rules wanted.
    CapacityLimited {
        /// Instances it can hold (what it runs plus what fits).
        cap: u32,
    },
    /// Fewer than before: the count was lowered, or the split rebalanced
    /// toward its targets.
    Reduced,
    /// It takes none any more (or never did): the rule that excludes it.
    NotEligible {
        /// E.g. `region affinity (hard)`, `no devices of tenant acme`,
        /// `region removed`.
        rule: String,
    },
}

/// One region's part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct RegionShare {
    /// Instances it should run.
    pub instances: u32,
    /// Instances it was assigned in the snapshot the plan was made on.
    pub previous: u32,
    /// Why, most important first.
    pub reasons: Vec<ShareReason>,
}

/// Instances that could not be placed, and why, region by region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct GlobalFailure {
    /// Instances not placed.
    pub unplaced: u32,
    /// Instances wanted from reachable regions in this evaluation.
    pub wanted: u32,
    /// The nomad-shaped counts, with regions as the nodes: `filtered` by
    /// rule (`health down`, `region affinity (hard)`, …), `exhausted` by
    /// what a region lacks (`cpu`, `memory`, `fragmented`, `full`, …).
    pub metric: AllocMetric,
    /// Each region that took none or no more, with why.
    pub regions: BTreeMap<String, String>,
}

impl GlobalFailure {
    /// Whether nothing could be placed anywhere.
    pub fn fits_no_region(&self) -> bool {
        self.unplaced == self.wanted
    }
}

/// A global workload's new split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct GlobalPlan {
    /// The evaluation that made it.
    pub eval: EvalId,
    /// The workload.
    pub workload: WorkloadId,
    /// The generation it was made for.
    pub generation: u64,
    /// Index of the snapshot it was made on.
    pub snapshot_index: u64,
    /// Every region that has or had a share.
    pub shares: BTreeMap<String, RegionShare>,
    /// Instances unreachable regions keep (part of the total; more than
    /// `count` only if the count was lowered below what they hold, which
    /// then waits for them to come back).
    pub held_by_unreachable: u32,
    /// What could not be placed. When nothing could be placed at all, the
    /// plan changes nothing.
    pub failed: Option<GlobalFailure>,
}

impl GlobalPlan {
    /// Region → instances, regions with none left out.
    pub fn split(&self) -> BTreeMap<String, u32> {
        self.shares
            .iter()
            .filter(|(_, s)| s.instances > 0)
            .map(|(r, s)| (r.clone(), s.instances))
            .collect()
    }

    /// Instances over every region.
    pub fn total(&self) -> u64 {
        self.shares.values().map(|s| u64::from(s.instances)).sum()
    }

    /// Instances added over all regions (each a placement somewhere).
    pub fn moves(&self) -> u64 {
        self.shares
            .values()
            .map(|s| u64::from(s.instances.saturating_sub(s.previous)))
            .sum()
    }

    /// Whether it changes no share.
    pub fn is_noop(&self) -> bool {
        self.shares.values().all(|s| s.instances == s.previous)
    }
}

/// How a region stands for this workload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Eligible,
    Unreachable(RegionHealth),
    Filtered(String),
}

struct Region<'a> {
    name: &'a str,
    state: State,
    prev: u32,
    devices: u32,
    room: RegionCap,
    /// Its summary (`None`: it left the federation).
    summary: Option<&'a super::summary::RegionSummary>,
    soft: u8,
    hard_listed: bool,
    key: u64,
    /// Proportional weight (0: none).
    weight: u64,
    /// Bounds of its share after water-filling; `frac` orders who gets
    /// the remainder (larger first), compared over one denominator.
    lo: u32,
    hi: u32,
    frac: u128,
    /// Share decided.
    a: u32,
    capped: bool,
}

/// How the eligible regions divide the instances.
enum Mode {
    /// In proportion to each region's `weight`; `overflow`: beyond the
    /// weighted regions' room, others may take the rest.
    Proportional { overflow: bool },
    /// Preferred, then roomiest, first.
    Room,
}

/// Splits `workload` over the regions of `snap` (see the module docs).
/// Pure: the same inputs and rng seed give the same plan.
pub fn split(
    snap: &GlobalSnapshot,
    workload: &GlobalWorkload,
    eval: &GlobalEval,
    now: Timestamp,
    rng: &mut impl Rng,
) -> Result<GlobalPlan, GlobalSplitError> {
    if eval.workload != workload.id {
        return Err(GlobalSplitError::WrongWorkload {
            eval: eval.id,
            asked: eval.workload.clone(),
            given: workload.id.clone(),
        });
    }
    if snap.index() < eval.snapshot_index {
        return Err(GlobalSplitError::SnapshotBehind {
            eval: eval.id,
            workload: workload.id.clone(),
            need: eval.snapshot_index,
            have: snap.index(),
        });
    }
    let intent = &workload.intent;
    intent
        .validate_shape()
        .map_err(|errors| GlobalSplitError::InvalidIntent {
            eval: eval.id,
            workload: workload.id.clone(),
            errors,
        })?;
    let existing = snap.split_of(&workload.id);
    let hard = intent.hard_regions();
    let tenant = workload.id.tenant.as_str();
    let follows = intent.follows_devices();
    let mut regions: Vec<Region<'_>> = Vec::new();
    for s in snap.regions() {
        let health = s.health_at(now, snap.config().stale_after);
        let devices = s.devices_of(tenant);
        let hard_listed = hard.as_ref().is_some_and(|h| h.contains(s.region.as_str()));
        let state = if !health.is_reachable() {
            State::Unreachable(health)
        } else if hard.is_some() && !hard_listed {
            State::Filtered("region affinity (hard)".to_owned())
        } else if follows && devices == 0 {
            State::Filtered(format!("no devices of tenant {tenant}"))
        } else {
            State::Eligible
        };
        regions.push(Region {
            name: &s.region,
            state,
            prev: existing.get(&s.region).copied().unwrap_or(0),
            devices,
            room: snap.region_cap(s, &workload.id, intent.size, &intent.pools),
            summary: Some(s),
            soft: intent.soft_weight(&s.region),
            hard_listed,
            key: rng.gen(),
            weight: 0,
            lo: 0,
            hi: 0,
            frac: 0,
            a: 0,
            capped: false,
        });
    }
    // Shares in regions that left the federation are re-placed.
    for (r, &prev) in existing {
        if snap.region(r).is_none() {
            regions.push(Region {
                name: r,
                state: State::Filtered("region removed".to_owned()),
                prev,
                devices: 0,
                room: RegionCap {
                    cap: 0,
                    fit: 0,
                    pending: 0,
                },
                summary: None,
                soft: 0,
                hard_listed: false,
                key: rng.gen(),
                weight: 0,
                lo: 0,
                hi: 0,
                frac: 0,
                a: 0,
                capped: false,
            });
        }
    }

    // Unreachable regions keep their share (less devices that moved away).
    let mut held = 0u32;
    for r in &mut regions {
        if let State::Unreachable(_) = r.state {
            r.a = if follows {
                r.prev.min(r.devices)
            } else {
                r.prev
            };
            held = held.saturating_add(r.a);
        }
    }
    let elig: Vec<usize> = (0..regions.len())
        .filter(|&i| regions[i].state == State::Eligible)
        .collect();
    let room_total: u64 = elig.iter().map(|&i| u64::from(regions[i].room.cap)).sum();

    let (wanted, placed, mode_reason): (u32, u32, Option<Mode>) = match intent.cardinality() {
        GlobalCardinality::Count(n) => {
            let want = n.saturating_sub(held);
            let mode = if let Some(sp) = &intent.spread {
                for &i in &elig {
                    let r = &mut regions[i];
                    r.weight = if sp.targets.is_empty() {
                        1
                    } else {
                        sp.targets.get(r.name).map_or(0, |p| u64::from(*p))
                    };
                }
                Mode::Proportional { overflow: true }
            } else if follows {
                for &i in &elig {
                    regions[i].weight = u64::from(regions[i].devices);
                }
                Mode::Proportional { overflow: false }
            } else {
                Mode::Room
            };
            let placed = match mode {
                Mode::Proportional { overflow } => {
                    let weighted: Vec<usize> = elig
                        .iter()
                        .copied()
                        .filter(|&i| regions[i].weight > 0)
                        .collect();
                    let got = proportional(&mut regions, &weighted, want);
                    let others: Vec<usize> = elig
                        .iter()
                        .copied()
                        .filter(|&i| regions[i].weight == 0)
                        .collect();
                    let spill = if overflow { want - got } else { 0 };
                    got + fill(&mut regions, &others, spill)
                }
                Mode::Room => fill(&mut regions, &elig, want),
            };
            (want, placed, Some(mode))
        }
        GlobalCardinality::PerRegion(n) => {
            let mut placed = 0u32;
            for &i in &elig {
                let r = &mut regions[i];
                r.a = n.min(r.room.cap);
                r.capped = r.a < n;
                placed = placed.saturating_add(r.a);
            }
            let wanted = n.saturating_mul(u32::try_from(elig.len().max(1)).unwrap_or(u32::MAX));
            (wanted, placed, None)
        }
    };

    let mut plan = GlobalPlan {
        eval: eval.id,
        workload: workload.id.clone(),
        generation: workload.generation,
        snapshot_index: snap.index(),
        shares: BTreeMap::new(),
        held_by_unreachable: held,
        failed: None,
    };
    let unplaced = wanted.saturating_sub(placed);
    if unplaced > 0 {
        plan.failed = Some(failure(snap, intent, &regions, unplaced, wanted));
    }
    // Fits no region: change nothing (not even releasing moved devices'
    // shares), so a full federation does not shuffle what already runs.
    if wanted > 0 && room_total == 0 {
        for r in regions.iter().filter(|r| r.prev > 0) {
            plan.shares.insert(
                r.name.to_owned(),
                RegionShare {
                    instances: r.prev,
                    previous: r.prev,
                    reasons: vec![ShareReason::Kept],
                },
            );
        }
        plan.held_by_unreachable = regions
            .iter()
            .filter(|r| matches!(r.state, State::Unreachable(_)))
            .map(|r| r.prev)
            .sum();
        return Ok(plan);
    }
    let devices_total: u32 = elig.iter().map(|&i| regions[i].devices).sum();
    for r in regions.iter().filter(|r| r.a > 0 || r.prev > 0) {
        let reasons = reasons(r, intent, mode_reason.as_ref(), devices_total);
        plan.shares.insert(
            r.name.to_owned(),
            RegionShare {
                instances: r.a,
                previous: r.prev,
                reasons,
            },
        );
    }
    Ok(plan)
}

/// Divides up to `want` over `idx` in proportion to their weights, capped
/// by their room; returns how many it placed (less than `want` only when
/// every weighted region is full).
fn proportional(regions: &mut [Region<'_>], idx: &[usize], want: u32) -> u32 {
    // Water-filling, exactly: the regions left in `active` share `rem` in
    // proportion over one denominator, those capped hold their room.
    let mut active: Vec<usize> = idx.to_vec();
    let mut rem = u128::from(want);
    loop {
        let den: u128 = active.iter().map(|&i| u128::from(regions[i].weight)).sum();
        if den == 0 {
            break;
        }
        let over: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| {
                rem * u128::from(regions[i].weight) > u128::from(regions[i].room.cap) * den
            })
            .collect();
        if over.is_empty() {
            break;
        }
        for &i in &over {
            let r = &mut regions[i];
            r.capped = true;
            r.lo = r.room.cap;
            r.hi = r.room.cap;
            // Each is below its proportional share, so `rem` stays ≥ 0.
            rem = rem.saturating_sub(u128::from(r.room.cap));
        }
        active.retain(|i| !over.contains(i));
    }
    let den: u128 = active.iter().map(|&i| u128::from(regions[i].weight)).sum();
    let mut target: u64 = idx
        .iter()
        .filter(|&&i| regions[i].capped)
        .map(|&i| u64::from(regions[i].room.cap))
        .sum();
    if !active.is_empty() {
        target += u64::try_from(rem).unwrap_or(u64::MAX);
    }
    for &i in &active {
        let r = &mut regions[i];
        let num = rem * u128::from(r.weight);
        // `den` > 0 with any region active (weights are ≥ 1). The floor is
        // at most the room (else the region would have been capped), so it
        // fits in u32.
        r.lo = u32::try_from(num.checked_div(den).unwrap_or(0)).unwrap_or(u32::MAX);
        r.frac = num.checked_rem(den).unwrap_or(0);
        r.hi = r.lo + u32::from(r.frac > 0);
    }
    // Start from the current shares, clamped into the bounds, then move
    // single instances where the remainders say.
    let mut sum = 0u64;
    for &i in idx {
        let r = &mut regions[i];
        r.a = r.prev.clamp(r.lo, r.hi);
        sum += u64::from(r.a);
    }
    while sum > target {
        let Some(&i) = idx
            .iter()
            .filter(|&&i| regions[i].a > regions[i].lo)
            .min_by_key(|&&i| (regions[i].frac, regions[i].key))
        else {
            break;
        };
        regions[i].a -= 1;
        sum -= 1;
    }
    while sum < target {
        let Some(&i) = idx
            .iter()
            .filter(|&&i| regions[i].a < regions[i].hi)
            .max_by_key(|&&i| (regions[i].frac, regions[i].key))
        else {
            break;
        };
        regions[i].a += 1;
        sum += 1;
    }
    u32::try_from(sum).unwrap_or(u32::MAX)
}

/// Places `want` over `idx`: current shares (within room) first, then
/// single instances to the most preferred region with room, the roomiest
/// among equals; removes from the least preferred, largest share first.
/// Returns how many it placed.
fn fill(regions: &mut [Region<'_>], idx: &[usize], want: u32) -> u32 {
    let mut sum = 0u64;
    for &i in idx {
        let r = &mut regions[i];
        r.a = r.prev.min(r.room.cap);
        sum += u64::from(r.a);
    }
    let want64 = u64::from(want);
    while sum > want64 {
        let Some(&i) = idx
            .iter()
            .filter(|&&i| regions[i].a > 0)
            .min_by_key(|&&i| (regions[i].soft, Reverse(regions[i].a), regions[i].key))
        else {
            break;
        };
        regions[i].a -= 1;
        sum -= 1;
    }
    while sum < want64 {
        let Some(&i) = idx
            .iter()
            .filter(|&&i| regions[i].a < regions[i].room.cap)
            .max_by_key(|&&i| {
                let r = &regions[i];
                (r.soft, r.room.cap - r.a, r.key)
            })
        else {
            break;
        };
        regions[i].a += 1;
        sum += 1;
    }
    for &i in idx {
        let r = &mut regions[i];
        r.capped = r.a == r.room.cap && r.a < want;
    }
    u32::try_from(sum).unwrap_or(u32::MAX)
}

fn reasons(
    r: &Region<'_>,
    intent: &super::intent::GlobalIntent,
    mode: Option<&Mode>,
    devices_total: u32,
) -> Vec<ShareReason> {
    let mut v = Vec::new();
    match &r.state {
        State::Unreachable(health) => {
            v.push(ShareReason::RegionUnreachable { health: *health });
            if r.a < r.prev {
                v.push(ShareReason::DevicesMoved {
                    devices: r.devices,
                    released: r.prev - r.a,
                });
            }
        }
        State::Filtered(rule) => v.push(ShareReason::NotEligible { rule: rule.clone() }),
        State::Eligible => {
            if r.a == r.prev {
                v.push(ShareReason::Kept);
            }
            if r.hard_listed {
                v.push(ShareReason::HardAffinity);
            }
            if r.soft > 0 {
                v.push(ShareReason::Affinity { weight: r.soft });
            }
            v.push(match (mode, &intent.spread) {
                (None, _) => ShareReason::PerRegion {
                    wanted: intent.per_region.unwrap_or(0),
                },
                (Some(Mode::Room), _) => ShareReason::Room,
                (Some(Mode::Proportional { .. }), Some(sp)) if sp.targets.is_empty() => {
                    ShareReason::SpreadEven
                }
                (Some(Mode::Proportional { .. }), Some(sp)) => match sp.targets.get(r.name) {
                    Some(&percent) => ShareReason::SpreadTarget { percent },
                    None => ShareReason::SpreadOverflow,
                },
                (Some(Mode::Proportional { .. }), None) => ShareReason::DeviceLocality {
                    devices: r.devices,
                    of: devices_total,
                },
            });
            if r.capped {
                v.push(ShareReason::CapacityLimited { cap: r.room.cap });
            }
            if r.a < r.prev {
                v.push(ShareReason::Reduced);
            }
        }
    }
    v
}

fn failure(
    snap: &GlobalSnapshot,
    intent: &super::intent::GlobalIntent,
    regions: &[Region<'_>],
    unplaced: u32,
    wanted: u32,
) -> GlobalFailure {
    let mut metric = AllocMetric {
        nodes_in_region: u32::try_from(snap.regions().count()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let mut why = BTreeMap::new();
    for r in regions {
        let (filtered, reason) = match &r.state {
            State::Unreachable(h) => (true, format!("health {h}")),
            State::Filtered(rule) if rule == "region removed" => continue,
            State::Filtered(rule) => (true, rule.clone()),
            State::Eligible if r.a >= r.room.cap => {
                let key = if r.room.cap > 0 {
                    "full".to_owned()
                } else if r.room.fit > 0 {
                    "taken by other workloads' pending shares".to_owned()
                } else {
                    r.summary
                        .and_then(|s| s.capacity.shortfall(intent.size, &intent.pools))
                        .unwrap_or_else(|| "full".to_owned())
                };
                (false, key)
            }
            // It had room: the rules gave it no more (its proportion).
            State::Eligible => continue,
        };
        metric.nodes_evaluated += 1;
        if filtered {
            *metric.filtered.entry(reason.clone()).or_default() += 1;
            why.insert(r.name.to_owned(), reason);
        } else {
            *metric.exhausted.entry(reason.clone()).or_default() += 1;
            why.insert(
                r.name.to_owned(),
                format!(
                    "{reason}: holds {} (fits {} more, {} of them pending for others)",
                    r.room.cap, r.room.fit, r.room.pending
                ),
            );
        }
    }
    GlobalFailure {
        unplaced,
        wanted,
        metric,
        regions: why,
    }
}
