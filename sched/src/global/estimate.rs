//! How many instances of a given size a region can still take, counted the
//! way Karmada's accurate scheduler estimator counts replicas: node by node,
//! then summed. Never from aggregates: 10 nodes with 300 millicores free
//! each have 3 cores free in total and room for zero 1-core instances.
//!
//! A region sends central a [`RegionCapacity`], which answers two kinds of
//! question without the node list:
//!
//! - **exactly**, for each size of the ladder it was asked for (the
//!   standard sizes, [`STANDARD_SIZES`]);
//! - **conservatively**, for any other size, from a [`FreeHistogram`]: every
//!   node's free (cpu, memory), rounded *down* and counted per distinct
//!   value. Rounding down means central may under-count a region (its
//!   workload then goes elsewhere, or the region's own scheduler is asked
//!   for slightly less than it could take) but never over-counts it.
//!
//! Why a histogram of per-node free vectors rather than, say, fit counts for
//! a finer ladder: a fit count answers for one size only, and a workload's
//! size is free-form; the per-node free vectors answer for every size with
//! the same per-node arithmetic the region's own scheduler uses. A plain
//! list would grow with the region (16 bytes a node: 1.6 MB at 100k
//! nodes); bucketing identical vectors keeps a homogeneous fleet exact in a
//! few entries, and when a region has more than [`MAX_FREE_BUCKETS`]
//! distinct values the precision is halved until it fits (keep the 8, 6, 4,
//! … most significant bits of each amount: always within a fixed fraction
//! below the true value), so the summary is bounded whatever the region.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::model::NodeStatus;
use crate::resources::{Dimension, Resources};
use crate::snapshot::ClusterSnapshot;

const MIB: u64 = 1 << 20;

/// Sizes every region summary answers for exactly: the usual instance
/// budgets of edge monitors, from a sliver to a whole small core.
pub const STANDARD_SIZES: [Resources; 5] = [
    Resources::new(50, 32 * MIB),
    Resources::new(100, 64 * MIB),
    Resources::new(250, 128 * MIB),
    Resources::new(500, 256 * MIB),
    Resources::new(1000, 512 * MIB),
];

/// Most entries in one pool's [`FreeHistogram`]: bounds a summary at a few
/// KiB per pool whatever the region's size.
pub const MAX_FREE_BUCKETS: usize = 256;

/// Precisions tried in turn (significant bits kept per amount) until the
/// histogram has at most [`MAX_FREE_BUCKETS`] entries. 64: exact.
const PRECISIONS: [u8; 7] = [64, 8, 6, 4, 3, 2, 1];

/// How many instances of `size` fit in `free` on one node: the smallest
/// per-dimension quotient. A dimension `size` does not ask for does not
/// limit; a size that asks for nothing fits without limit (`u64::MAX`;
/// global intent validation refuses such a size).
pub fn fit_on_node(free: Resources, size: Resources) -> u64 {
    Dimension::ALL
        .into_iter()
        .filter(|&d| size.get(d) > 0)
        .map(|d| free.get(d) / size.get(d))
        .min()
        .unwrap_or(u64::MAX)
}

fn capped(n: u64, max_per_node: Option<u32>) -> u64 {
    match max_per_node {
        Some(m) => n.min(u64::from(m)),
        None => n,
    }
}

/// A node's room: its capacity minus its reservations, floored at zero.
fn ready_free(snap: &ClusterSnapshot) -> impl Iterator<Item = (&crate::Node, Resources)> {
    snap.nodes
        .iter()
        .flatten()
        .filter(|e| e.node.status == NodeStatus::Ready)
        .map(|e| (&e.node, e.node.capacity.saturating_sub(e.reserved)))
}

/// The region's most instances per node of one workload: 1 when the
/// region runs each workload at most once per node (`one-per-node`, as an
/// edge does), else unlimited.
fn max_per_node(snap: &ClusterSnapshot) -> Option<u32> {
    snap.config().one_per_node.then_some(1)
}

/// Exactly how many instances of `size` the ready nodes of `snap` (those in
/// `pool`, when given) can still take: [`fit_on_node`] on each node's
/// capacity minus reservations, capped per node by `one-per-node`, summed
/// (saturating). The reference [`RegionCapacity::fit`] approximates.
pub fn count_fit(snap: &ClusterSnapshot, size: Resources, pool: Option<&str>) -> u64 {
    let cap = max_per_node(snap);
    ready_free(snap)
        .filter(|(n, _)| pool.is_none_or(|p| n.pools.contains(p)))
        .fold(0u64, |acc, (_, free)| {
            acc.saturating_add(capped(fit_on_node(free, size), cap))
        })
}

/// Exact fit count of one ladder size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct LadderFit {
    /// The instance size.
    pub size: Resources,
    /// Instances of it the pool can still take, summed per node.
    pub fits: u64,
}

/// Ready nodes with the same free vector (after rounding down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct FreeBucket {
    /// Free cpu (millicores) and memory (bytes) of each, rounded down.
    pub free: Resources,
    /// How many nodes.
    pub nodes: u32,
}

/// Every ready node's free vector, rounded down and bucketed (see the
/// module docs for why). Nodes with nothing free are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct FreeHistogram {
    /// Significant bits kept of each amount: 64 is exact; `b` means each
    /// amount is at most 2^(1-b) of itself below the truth (b = 4: 1/8).
    pub precision_bits: u8,
    /// Whether neighbouring buckets were also merged into their
    /// per-dimension minimum to stay within [`MAX_FREE_BUCKETS`] (only
    /// for regions with wildly varied nodes; still never over-counts).
    pub merged: bool,
    /// Buckets, sorted by free (cpu, then memory).
    pub buckets: Vec<FreeBucket>,
}

/// Keeps the `bits` most significant bits of `v` (rounds down).
fn round_down(v: u64, bits: u8) -> u64 {
    let len = 64 - v.leading_zeros();
    let bits = u32::from(bits);
    if len <= bits {
        v
    } else {
        v & !((1u64 << (len - bits)) - 1)
    }
}

impl FreeHistogram {
    /// Buckets `frees` at the finest precision that fits
    /// [`MAX_FREE_BUCKETS`].
    pub fn build(frees: &[Resources]) -> Self {
        let mut cells = BTreeMap::new();
        for bits in PRECISIONS {
            cells.clear();
            for f in frees.iter().filter(|f| !f.is_zero()) {
                let r = Resources::new(
                    round_down(f.cpu_millicores, bits),
                    round_down(f.memory_bytes, bits),
                );
                *cells
                    .entry((r.cpu_millicores, r.memory_bytes))
                    .or_insert(0u32) += 1;
            }
            if cells.len() <= MAX_FREE_BUCKETS {
                return FreeHistogram {
                    precision_bits: bits,
                    merged: false,
                    buckets: to_buckets(&cells),
                };
            }
        }
        // Still too many at one significant bit (amounts spread over more
        // than ~16 binary orders of magnitude in both dimensions): merge
        // neighbours into their minimum until it fits. Each pass halves.
        let mut v: Vec<((u64, u64), u32)> = cells.into_iter().collect();
        while v.len() > MAX_FREE_BUCKETS {
            let mut merged: BTreeMap<(u64, u64), u32> = BTreeMap::new();
            for pair in v.chunks(2) {
                let key = pair
                    .iter()
                    .map(|(k, _)| *k)
                    .reduce(|a, b| (a.0.min(b.0), a.1.min(b.1)))
                    .unwrap_or_default();
                let n: u32 = pair.iter().map(|(_, n)| *n).sum();
                *merged.entry(key).or_insert(0) += n;
            }
            v = merged.into_iter().collect();
        }
        FreeHistogram {
            precision_bits: 1,
            merged: true,
            buckets: v
                .into_iter()
                .map(|((c, m), nodes)| FreeBucket {
                    free: Resources::new(c, m),
                    nodes,
                })
                .collect(),
        }
    }

    /// Instances of `size` the bucketed nodes take, at most `max_per_node`
    /// each: never more than the exact count.
    pub fn fit(&self, size: Resources, max_per_node: Option<u32>) -> u64 {
        self.buckets.iter().fold(0u64, |acc, b| {
            acc.saturating_add(
                capped(fit_on_node(b.free, size), max_per_node).saturating_mul(u64::from(b.nodes)),
            )
        })
    }
}

fn to_buckets(cells: &BTreeMap<(u64, u64), u32>) -> Vec<FreeBucket> {
    cells
        .iter()
        .map(|(&(c, m), &nodes)| FreeBucket {
            free: Resources::new(c, m),
            nodes,
        })
        .collect()
}

/// The capacity of one pool (or of the whole region) of ready nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct PoolCapacity {
    /// Ready nodes.
    pub nodes_ready: u32,
    /// Their summed capacity. For display: never used to count fits.
    pub total: Resources,
    /// Their summed free (capacity minus reservations). For display only,
    /// for the reason in the module docs.
    pub free: Resources,
    /// The most free on any one node, per dimension (not necessarily the
    /// same node for both): says which dimension a too-large size lacks.
    pub largest_free: Resources,
    /// Exact fit counts of the ladder sizes the summary was asked for.
    pub ladder: Vec<LadderFit>,
    /// Per-node free vectors, for any other size.
    pub free_nodes: FreeHistogram,
}

impl PoolCapacity {
    fn build(frees: &[(Resources, Resources)], ladder: &[Resources], cap: Option<u32>) -> Self {
        let mut p = PoolCapacity {
            nodes_ready: u32::try_from(frees.len()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        for (capacity, free) in frees {
            p.total = p.total.saturating_add(*capacity);
            p.free = p.free.saturating_add(*free);
            p.largest_free = p.largest_free.max(*free);
        }
        p.ladder = ladder
            .iter()
            .map(|&size| LadderFit {
                size,
                fits: frees.iter().fold(0u64, |acc, (_, free)| {
                    acc.saturating_add(capped(fit_on_node(*free, size), cap))
                }),
            })
            .collect();
        let only_free: Vec<Resources> = frees.iter().map(|(_, f)| *f).collect();
        p.free_nodes = FreeHistogram::build(&only_free);
        p
    }

    /// Instances of `size` this pool can still take: exact for a ladder
    /// size, else from the histogram (never more than exact).
    pub fn fit(&self, size: Resources, max_per_node: Option<u32>) -> u64 {
        if let Some(l) = self.ladder.iter().find(|l| l.size == size) {
            return l.fits;
        }
        if size.is_zero() {
            // The histogram leaves out nodes with nothing free, which still
            // take a zero-size instance.
            return capped(u64::MAX, max_per_node).saturating_mul(u64::from(self.nodes_ready));
        }
        self.free_nodes.fit(size, max_per_node)
    }

    /// Why nothing of `size` fits, for failure reports: `None` when
    /// something does; otherwise "no ready nodes", the first dimension no
    /// single node has enough of, or "fragmented" (each dimension is there
    /// on some node, never both together).
    pub fn shortfall(&self, size: Resources, max_per_node: Option<u32>) -> Option<String> {
        if self.fit(size, max_per_node) > 0 {
            return None;
        }
        if self.nodes_ready == 0 {
            return Some("no ready nodes".to_owned());
        }
        Some(match size.exceeds(&self.largest_free) {
            Some(d) => d.as_str().to_owned(),
            None => "fragmented".to_owned(),
        })
    }
}

/// What a region can still take, as it sends it to central.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct RegionCapacity {
    /// Most instances of one workload per node: `Some(1)` when the region
    /// runs each workload once per node (`one-per-node`, an edge region),
    /// `None`: no limit.
    pub max_per_node: Option<u32>,
    /// Every ready node.
    pub all: PoolCapacity,
    /// Per pool, the ready nodes in it (a node in two pools counts in both).
    pub pools: BTreeMap<String, PoolCapacity>,
}

impl RegionCapacity {
    /// The capacity a workload restricted to `pools` (empty: any node) can
    /// use: the whole region, or the named pool with the most room for
    /// `size`. With several pools this is a lower bound, since the
    /// summary cannot tell which nodes are in more than one; an unknown
    /// pool has none.
    pub fn pool_for(&self, size: Resources, pools: &[String]) -> Option<&PoolCapacity> {
        if pools.is_empty() {
            return Some(&self.all);
        }
        pools
            .iter()
            .filter_map(|p| self.pools.get(p))
            .max_by_key(|p| p.fit(size, self.max_per_node))
    }

    /// Instances of `size`, on nodes in one of `pools` (empty: any), the
    /// region can still take; see [`RegionCapacity::pool_for`].
    pub fn fit(&self, size: Resources, pools: &[String]) -> u64 {
        self.pool_for(size, pools)
            .map_or(0, |p| p.fit(size, self.max_per_node))
    }

    /// [`RegionCapacity::fit`] for a workload whose instances may share a
    /// node (sharded), which the per-node limit does not bound.
    pub fn fit_stacked(&self, size: Resources, pools: &[String]) -> u64 {
        self.pool_for(size, pools).map_or(0, |p| p.fit(size, None))
    }

    /// Why nothing of `size` fits in `pools`, or `None` when something does.
    pub fn shortfall(&self, size: Resources, pools: &[String]) -> Option<String> {
        match self.pool_for(size, pools) {
            Some(p) => p.shortfall(size, self.max_per_node),
            None => Some(format!("no ready node in pool {}", pools.join(" or "))),
        }
    }
}

/// Summarises `snap`'s ready nodes for central: per pool and overall, node
/// counts, summed capacity and free, exact fits for each `ladder` size
/// (give [`STANDARD_SIZES`] unless asked otherwise), and the free-vector
/// histogram for any other size. O(nodes × (ladder + pools)).
pub fn estimate_region(snap: &ClusterSnapshot, ladder: &[Resources]) -> RegionCapacity {
    let cap = max_per_node(snap);
    let mut all = Vec::new();
    let mut by_pool: BTreeMap<&str, Vec<(Resources, Resources)>> = BTreeMap::new();
    for (n, free) in ready_free(snap) {
        all.push((n.capacity, free));
        for p in &n.pools {
            by_pool.entry(p).or_default().push((n.capacity, free));
        }
    }
    // Sorted so the summary does not depend on the snapshot's slot order.
    all.sort_unstable_by_key(|(c, f)| {
        (
            c.cpu_millicores,
            c.memory_bytes,
            f.cpu_millicores,
            f.memory_bytes,
        )
    });
    RegionCapacity {
        max_per_node: cap,
        all: PoolCapacity::build(&all, ladder, cap),
        pools: by_pool
            .into_iter()
            .map(|(p, frees)| (p.to_owned(), PoolCapacity::build(&frees, ladder, cap)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AllocId, EvalId, NodeId, Timestamp, WorkloadId};
    use crate::model::{Allocation, ClientState, Desired, Node, PlaceReason, PlacementMeta};
    use crate::SchedulerConfig;

    const GIB: u64 = 1 << 30;

    fn region(nodes: Vec<Node>, allocs: Vec<Allocation>) -> ClusterSnapshot {
        ClusterSnapshot::from_parts(1, SchedulerConfig::default(), nodes, vec![], allocs)
    }

    fn reserve(id: u128, node: &str, r: Resources) -> Allocation {
        Allocation {
            id: AllocId(id),
            workload: WorkloadId::new("t", "w"),
            slot: u32::try_from(id).unwrap_or(0),
            node: NodeId::from(node),
            generation: 1,
            resources: r,
            fencing_token: 1,
            desired: Desired::Run,
            client: ClientState::Running,
            created_index: 1,
            modified_index: 1,
            lease_expires_at: None,
            previous: None,
            placement: PlacementMeta {
                eval: EvalId(1),
                reason: PlaceReason::Missing,
                score: 0.0,
                score_parts: vec![],
                nodes_evaluated: 1,
                nodes_feasible: 1,
            },
        }
    }

    #[test]
    fn fits_are_summed_per_node_not_computed_from_aggregates() {
        // Ten nodes with 300 millicores free each: 3 cores free in total,
        // and no room for a single 1-core instance.
        let nodes = (0..10)
            .map(|i| Node::new(&format!("n{i}"), Resources::new(1000, GIB)))
            .collect();
        let allocs = (0..10)
            .map(|i| reserve(i, &format!("n{i}"), Resources::new(700, 0)))
            .collect();
        let snap = region(nodes, allocs);
        let one_core = Resources::new(1000, MIB);
        assert_eq!(count_fit(&snap, one_core, None), 0);
        let cap = estimate_region(&snap, &[one_core]);
        assert_eq!(cap.all.free, Resources::new(3000, 10 * GIB));
        assert_eq!(cap.fit(one_core, &[]), 0, "aggregate free must not count");
        assert_eq!(cap.shortfall(one_core, &[]).as_deref(), Some("cpu"));
        // 300 millicores: one per node, ten in all.
        assert_eq!(count_fit(&snap, Resources::new(300, MIB), None), 10);
        assert_eq!(cap.fit(Resources::new(300, MIB), &[]), 10);
    }

    #[test]
    fn per_node_fit_is_the_smallest_quotient_and_zero_dimensions_do_not_limit() {
        let free = Resources::new(1000, 4 * GIB);
        assert_eq!(fit_on_node(free, Resources::new(250, GIB)), 4);
        assert_eq!(
            fit_on_node(free, Resources::new(100, GIB)),
            4,
            "memory limits"
        );
        assert_eq!(
            fit_on_node(free, Resources::new(300, 0)),
            3,
            "no memory asked"
        );
        assert_eq!(
            fit_on_node(free, Resources::new(0, 3 * GIB)),
            1,
            "no cpu asked"
        );
        assert_eq!(fit_on_node(free, Resources::ZERO), u64::MAX);
        assert_eq!(fit_on_node(Resources::ZERO, Resources::new(0, 1)), 0);
    }

    #[test]
    fn a_node_with_nothing_free_and_an_unready_node_take_nothing() {
        let nodes = vec![
            Node::new("full", Resources::new(1000, GIB)),
            Node::new("down", Resources::new(8000, 8 * GIB)).status(NodeStatus::Down, Timestamp(1)),
            Node::new("draining", Resources::new(8000, 8 * GIB))
                .status(NodeStatus::Draining, Timestamp(1)),
            Node::new("ok", Resources::new(1000, GIB)),
        ];
        let snap = region(nodes, vec![reserve(1, "full", Resources::new(1000, GIB))]);
        let size = Resources::new(500, MIB);
        assert_eq!(count_fit(&snap, size, None), 2, "only `ok`, twice");
        let cap = estimate_region(&snap, &[]);
        assert_eq!(cap.all.nodes_ready, 2);
        assert_eq!(cap.fit(size, &[]), 2);
        assert_eq!(
            cap.all.free_nodes.buckets.len(),
            1,
            "the full node is left out"
        );
        // A size of one dimension: the full node has none of it either.
        assert_eq!(cap.fit(Resources::new(0, MIB), &[]), 1024);
        // A zero size fits every ready node without limit, even a full one.
        assert_eq!(cap.fit(Resources::ZERO, &[]), u64::MAX);
    }

    #[test]
    fn a_size_larger_than_any_node_fits_nowhere_and_names_the_dimension() {
        let snap = region(
            vec![
                Node::new("cpu-rich", Resources::new(16_000, GIB)),
                Node::new("mem-rich", Resources::new(1000, 64 * GIB)),
            ],
            vec![],
        );
        let cap = estimate_region(&snap, &STANDARD_SIZES);
        let huge = Resources::new(32_000, GIB);
        assert_eq!(cap.fit(huge, &[]), 0);
        assert_eq!(cap.shortfall(huge, &[]).as_deref(), Some("cpu"));
        // Each dimension alone is somewhere; together nowhere.
        let both = Resources::new(8000, 32 * GIB);
        assert_eq!(count_fit(&snap, both, None), 0);
        assert_eq!(cap.fit(both, &[]), 0);
        assert_eq!(cap.shortfall(both, &[]).as_deref(), Some("fragmented"));
        assert_eq!(cap.shortfall(Resources::new(500, MIB), &[]), None);
    }

    #[test]
    fn many_small_fragments_bound_the_summary_and_never_over_count() {
        // 5000 nodes, each with a different free amount: more distinct
        // vectors than the histogram keeps, so it rounds down.
        let nodes: Vec<Node> = (0..5000u64)
            .map(|i| {
                Node::new(
                    &format!("n{i:04}"),
                    Resources::new(100 + i * 7, (64 + i) * MIB),
                )
            })
            .collect();
        let snap = region(nodes, vec![]);
        let cap = estimate_region(&snap, &STANDARD_SIZES);
        let h = &cap.all.free_nodes;
        assert!(
            h.buckets.len() <= MAX_FREE_BUCKETS,
            "{} buckets",
            h.buckets.len()
        );
        assert!(
            (4..64).contains(&h.precision_bits),
            "coarsened to {}",
            h.precision_bits
        );
        assert_eq!(
            h.buckets.iter().map(|b| u64::from(b.nodes)).sum::<u64>(),
            5000
        );
        for size in [
            Resources::new(130, 70 * MIB),
            Resources::new(777, 100 * MIB),
            Resources::new(3000, 3000 * MIB),
            Resources::new(10, MIB),
        ] {
            let exact = count_fit(&snap, size, None);
            let est = cap.fit(size, &[]);
            assert!(est <= exact, "{size}: estimate {est} over exact {exact}");
            // Four significant bits or better: each amount within 1/8
            // below the truth, so each node loses at most 1/8 of its fit
            // plus one to flooring.
            assert!(
                (est + 5000) * 8 >= exact * 7,
                "{size}: estimate {est} too far below {exact}"
            );
        }
        // Ladder sizes stay exact.
        for l in &cap.all.ladder {
            assert_eq!(l.fits, count_fit(&snap, l.size, None));
        }
        // And the whole thing stays small on the wire.
        let bytes = bincode::encode_to_vec(&cap, bincode::config::standard()).unwrap();
        assert!(bytes.len() < 8 * 1024, "{} bytes", bytes.len());
    }

    #[test]
    fn wildly_varied_nodes_are_merged_into_their_minimum_within_the_bound() {
        // 20 x 20 powers of two: 400 distinct vectors even at one bit.
        let frees: Vec<Resources> = (0..20)
            .flat_map(|i| (0..20).map(move |j| Resources::new(1 << i, 1 << (j + 10))))
            .collect();
        let h = FreeHistogram::build(&frees);
        assert!(h.merged);
        assert!(h.buckets.len() <= MAX_FREE_BUCKETS);
        assert_eq!(h.buckets.iter().map(|b| b.nodes).sum::<u32>(), 400);
        for size in [Resources::new(1, 1024), Resources::new(1000, 1 << 20)] {
            let exact: u64 = frees.iter().map(|f| fit_on_node(*f, size)).sum();
            assert!(h.fit(size, None) <= exact, "{size}");
        }
    }

    #[test]
    fn a_homogeneous_fleet_is_summarised_exactly_in_one_bucket() {
        let nodes = (0..1000)
            .map(|i| Node::new(&format!("e{i:04}"), Resources::new(4000, 8 * GIB)))
            .collect();
        let cap = estimate_region(&region(nodes, vec![]), &[]);
        assert_eq!(cap.all.free_nodes.precision_bits, 64);
        assert_eq!(
            cap.all.free_nodes.buckets,
            vec![FreeBucket {
                free: Resources::new(4000, 8 * GIB),
                nodes: 1000
            }]
        );
        // A size exactly a node's free fits once per node: no rounding loss.
        assert_eq!(cap.fit(Resources::new(4000, 8 * GIB), &[]), 1000);
    }

    #[test]
    fn rounding_down_keeps_the_leading_bits() {
        assert_eq!(round_down(0, 4), 0);
        assert_eq!(round_down(15, 4), 15);
        assert_eq!(round_down(1000, 4), 960);
        assert_eq!(round_down(1000, 1), 512);
        assert_eq!(round_down(u64::MAX, 64), u64::MAX);
    }

    #[test]
    fn pools_are_summarised_apart_and_a_workload_uses_its_best_pool() {
        let nodes = vec![
            Node::new("g1", Resources::new(4000, 4 * GIB)).pool("gpu"),
            Node::new("g2", Resources::new(4000, 4 * GIB))
                .pool("gpu")
                .pool("cpu"),
            Node::new("c1", Resources::new(2000, 2 * GIB)).pool("cpu"),
            Node::new("none", Resources::new(2000, 2 * GIB)),
        ];
        let snap = region(nodes, vec![]);
        let size = Resources::new(1000, GIB);
        assert_eq!(count_fit(&snap, size, Some("gpu")), 8);
        assert_eq!(count_fit(&snap, size, Some("cpu")), 6);
        assert_eq!(count_fit(&snap, size, None), 12);
        let cap = estimate_region(&snap, &[size]);
        assert_eq!(cap.pools["gpu"].nodes_ready, 2);
        assert_eq!(cap.pools["cpu"].nodes_ready, 2);
        assert_eq!(cap.fit(size, &["gpu".into()]), 8);
        assert_eq!(cap.fit(size, &["cpu".into()]), 6);
        // Two pools sharing g2: the larger pool, a lower bound of the union.
        assert_eq!(cap.fit(size, &["cpu".into(), "gpu".into()]), 8);
        assert_eq!(cap.fit(size, &["tpu".into()]), 0);
        assert_eq!(
            cap.shortfall(size, &["tpu".into()]).as_deref(),
            Some("no ready node in pool tpu")
        );
        assert_eq!(cap.fit(size, &[]), 12);
    }

    #[test]
    fn one_per_node_regions_count_nodes_not_instances() {
        let cfg = SchedulerConfig {
            one_per_node: true,
            ..SchedulerConfig::default()
        };
        let nodes = vec![
            Node::new("a", Resources::new(4000, 4 * GIB)),
            Node::new("b", Resources::new(4000, 4 * GIB)),
            Node::new("tiny", Resources::new(100, GIB)),
        ];
        let snap = ClusterSnapshot::from_parts(1, cfg, nodes, vec![], vec![]);
        let size = Resources::new(500, MIB);
        assert_eq!(count_fit(&snap, size, None), 2);
        let cap = estimate_region(&snap, &[size]);
        assert_eq!(cap.max_per_node, Some(1));
        assert_eq!(cap.fit(size, &[]), 2, "ladder");
        assert_eq!(cap.fit(Resources::new(400, MIB), &[]), 2, "histogram");
        assert_eq!(cap.fit(Resources::ZERO, &[]), 3);
    }

    #[test]
    fn the_summary_round_trips_through_bincode_and_json() {
        let snap = region(
            vec![Node::new("a", Resources::new(4000, 4 * GIB)).pool("gpu")],
            vec![],
        );
        let cap = estimate_region(&snap, &STANDARD_SIZES);
        let cfg = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&cap, cfg).unwrap();
        let (back, _): (RegionCapacity, _) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, cap);
        let json = serde_json::to_string(&cap).unwrap();
        assert!(json.contains("\"max-per-node\""), "{json}");
        assert_eq!(serde_json::from_str::<RegionCapacity>(&json).unwrap(), cap);
    }
}
