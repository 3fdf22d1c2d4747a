//! What central knows of one region: its health, what it can still take,
//! whose devices report through it, and how much of each global workload it
//! already runs. A region sends everything but the health (central judges
//! that from its own fan-out, as `central/src/region/health.rs` does) over
//! the wire, so every type here is bincode as well as serde.

use std::fmt;
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::estimate::{estimate_region, RegionCapacity};
use crate::ids::{Timestamp, WorkloadId};
use crate::resources::Resources;
use crate::snapshot::ClusterSnapshot;

/// A region's state as the global scheduler uses it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum RegionHealth {
    /// A leader, every replica well: takes new instances.
    Ok,
    /// A leader, some replica unwell: still takes new instances (the
    /// region can commit), which is what matters to placement.
    Degraded,
    /// No leader: takes nothing new; what it runs keeps running.
    Down,
    /// Central has not heard from it recently (partitioned, or never
    /// reported): treated as down, since its instances may well be running.
    Unknown,
}

impl RegionHealth {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionHealth::Ok => "ok",
            RegionHealth::Degraded => "degraded",
            RegionHealth::Down => "down",
            RegionHealth::Unknown => "unknown",
        }
    }

    /// Whether central can hand it new instances (and reach it to stop some).
    pub fn is_reachable(self) -> bool {
        matches!(self, RegionHealth::Ok | RegionHealth::Degraded)
    }
}

impl fmt::Display for RegionHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A health verdict and when central reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct HealthAsOf {
    /// The verdict.
    pub state: RegionHealth,
    /// When central last assessed it (ms since the epoch, central's clock).
    pub as_of: Timestamp,
}

/// Live instances of one global workload a region runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct Placed {
    /// The global workload (its region workload has the same id).
    pub workload: WorkloadId,
    /// Live instances of it in the region at `reported-at`.
    pub instances: u32,
}

/// One region as central sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct RegionSummary {
    /// The region's name.
    pub region: String,
    /// Its health, as central last judged it.
    pub health: HealthAsOf,
    /// What it can still take, as of `reported-at`.
    pub capacity: RegionCapacity,
    /// Per tenant, how many of its devices last reported through this
    /// region (device-locality placement splits by these).
    pub device_locality: std::collections::BTreeMap<String, u32>,
    /// Live instances of each global workload it runs, sorted by workload:
    /// says how much of each share `capacity` already accounts for, so
    /// central neither counts a running share twice nor forgets one that
    /// is assigned but not placed yet.
    pub placed: Vec<Placed>,
    /// When the region took this summary (ms, the region's clock).
    pub reported_at: Timestamp,
}

impl RegionSummary {
    /// Summarises region `region` from its scheduler snapshot at
    /// `reported_at`: capacity for `ladder` (see
    /// [`super::estimate_region`]), the device locality the region counted,
    /// and the live instances of each of the `global` workloads. Health
    /// starts `unknown` until central judges it.
    pub fn from_snapshot(
        region: &str,
        snap: &ClusterSnapshot,
        ladder: &[Resources],
        device_locality: std::collections::BTreeMap<String, u32>,
        global: &[WorkloadId],
        reported_at: Timestamp,
    ) -> Self {
        let mut placed: Vec<Placed> = global
            .iter()
            .map(|w| Placed {
                workload: w.clone(),
                instances: u32::try_from(snap.allocs_of(w).filter(|a| a.is_live()).count())
                    .unwrap_or(u32::MAX),
            })
            .filter(|p| p.instances > 0)
            .collect();
        placed.sort_by(|a, b| a.workload.cmp(&b.workload));
        placed.dedup_by(|a, b| a.workload == b.workload);
        RegionSummary {
            region: region.to_owned(),
            health: HealthAsOf {
                state: RegionHealth::Unknown,
                as_of: reported_at,
            },
            capacity: estimate_region(snap, ladder),
            device_locality,
            placed,
            reported_at,
        }
    }

    /// Live instances of `w` the region reported.
    pub fn placed_of(&self, w: &WorkloadId) -> u32 {
        self.placed
            .binary_search_by(|p| p.workload.cmp(w))
            .map_or(0, |i| self.placed[i].instances)
    }

    /// Devices of `tenant` that report through the region.
    pub fn devices_of(&self, tenant: &str) -> u32 {
        self.device_locality.get(tenant).copied().unwrap_or(0)
    }

    /// The health to schedule by at `now`: `unknown` when the summary is
    /// older than `stale_after` (central has lost touch: partitioned), else
    /// the last verdict. A stale `down` stays `down`.
    pub fn health_at(&self, now: Timestamp, stale_after: Duration) -> RegionHealth {
        let stale = now.since(self.reported_at) > stale_after;
        match self.health.state {
            RegionHealth::Ok | RegionHealth::Degraded if stale => RegionHealth::Unknown,
            h => h,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::global::STANDARD_SIZES;
    use crate::ids::{AllocId, EvalId, NodeId};
    use crate::model::{Allocation, ClientState, Desired, Node, PlaceReason, PlacementMeta};
    use crate::SchedulerConfig;

    fn alloc(id: u128, w: &WorkloadId, client: ClientState) -> Allocation {
        Allocation {
            id: AllocId(id),
            workload: w.clone(),
            slot: u32::try_from(id).unwrap_or(0),
            node: NodeId::from("e1"),
            generation: 1,
            resources: Resources::new(100, 1 << 20),
            fencing_token: 1,
            desired: Desired::Run,
            client,
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
    fn a_summary_counts_live_global_instances_and_round_trips() {
        let w = WorkloadId::new("acme", "watch");
        let other = WorkloadId::new("acme", "other");
        let snap = ClusterSnapshot::from_parts(
            3,
            SchedulerConfig::default(),
            vec![Node::new("e1", Resources::new(4000, 4 << 30))],
            vec![],
            vec![
                alloc(1, &w, ClientState::Running),
                alloc(2, &w, ClientState::Pending),
                alloc(3, &w, ClientState::Failed),
            ],
        );
        let locality = BTreeMap::from([("acme".to_owned(), 12)]);
        let s = RegionSummary::from_snapshot(
            "eu-west",
            &snap,
            &STANDARD_SIZES,
            locality,
            &[w.clone(), other.clone()],
            Timestamp(1000),
        );
        assert_eq!(s.placed_of(&w), 2, "the failed one is not live");
        assert_eq!(s.placed_of(&other), 0);
        assert_eq!(s.devices_of("acme"), 12);
        assert_eq!(s.devices_of("globex"), 0);
        assert_eq!(s.health.state, RegionHealth::Unknown);
        assert_eq!(s.capacity.all.nodes_ready, 1);
        let cfg = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&s, cfg).unwrap();
        let (back, _): (RegionSummary, _) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, s);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"device-locality\""), "{json}");
        assert_eq!(serde_json::from_str::<RegionSummary>(&json).unwrap(), s);
    }

    #[test]
    fn a_stale_summary_makes_a_reachable_region_unknown() {
        let mut s = RegionSummary::from_snapshot(
            "r",
            &ClusterSnapshot::default(),
            &[],
            BTreeMap::new(),
            &[],
            Timestamp(10_000),
        );
        let stale = Duration::from_secs(30);
        s.health.state = RegionHealth::Ok;
        assert_eq!(s.health_at(Timestamp(40_000), stale), RegionHealth::Ok);
        assert_eq!(s.health_at(Timestamp(40_001), stale), RegionHealth::Unknown);
        s.health.state = RegionHealth::Degraded;
        assert_eq!(s.health_at(Timestamp(40_001), stale), RegionHealth::Unknown);
        s.health.state = RegionHealth::Down;
        assert_eq!(s.health_at(Timestamp(99_000), stale), RegionHealth::Down);
        assert!(!RegionHealth::Unknown.is_reachable());
        assert!(RegionHealth::Degraded.is_reachable());
    }
}
