//! `RegionSummary`: what this region tells central's global scheduler about
//! itself, answered by the leader only.
//!
//! - **Capacity** is estimated by `strata_sched::global` from the snapshot
//!   the leader's scheduler would build from the same applied state
//!   ([`Rebuild::into_snapshot`]): fit counts for the standard sizes, summed
//!   edge by edge and per pool, never from aggregates.
//! - **Device locality** is, per tenant, the devices whose last reading came
//!   through one of this region's edges. Only this region's edges reach its
//!   hubs, so that is every device the state knows an edge for. A device
//!   that has moved to another region still counts here until central sees
//!   it counted there too: the region cannot tell it left.
//! - **Health** is the leader's own view (see [`leader_health`]); central,
//!   which also knows whether it reached each replica, refines it.
//! - **Placed** counts the live instances of the global workloads central
//!   named.
//!
//! Only the state read runs on the Raft thread (one [`Rebuild::of`], the
//! same O(state) copy a new leader makes); the snapshot and the estimate
//! are built on the blocking pool.

use std::collections::BTreeMap;

use strata_protocol::{HubResponse, HubStatus, RaftRole};
use strata_sched::global::{HealthAsOf, RegionHealth, RegionSummary, STANDARD_SIZES};
use strata_sched::{SchedulerConfig, Timestamp, WorkloadId};

use super::edges::failure;
use super::Service;
use crate::fsm::RegionState;
use crate::raft::driver::now_ms;
use crate::scheduler::Rebuild;

/// Per tenant, how many of its devices last reported through an edge of
/// this region (tenants with none are left out).
pub fn device_locality(state: &RegionState) -> BTreeMap<String, u32> {
    state
        .tenants()
        .into_iter()
        .filter_map(|t| {
            let n: usize = state.device_edges(&t, |_, _| true).values().sum();
            (n > 0).then(|| (t, u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .collect()
}

/// The region's health as its leader sees it from `status` (its own):
/// `ok` when every other member is a reachable, caught-up voter, else
/// `degraded` (an unreachable or lagging voter, or a learner: the same
/// leader-side rules as central's `region/health.rs`). Never `down`: a
/// leader answered. `unknown` when `status` is not a leader's (leadership
/// moved between the status and the state read), since it lists no peers.
pub fn leader_health(status: &HubStatus) -> RegionHealth {
    if status.role != RaftRole::Leader {
        return RegionHealth::Unknown;
    }
    let unwell = status
        .peers
        .iter()
        .filter(|p| p.id != status.id)
        .any(|p| !p.reachable || !p.voter || p.lagging);
    if unwell {
        RegionHealth::Degraded
    } else {
        RegionHealth::Ok
    }
}

/// The summary of `region` from `rebuild` (its applied state) scheduled
/// with `cfg`, as of `now`.
pub fn summarize(
    region: &str,
    rebuild: Rebuild,
    cfg: SchedulerConfig,
    locality: BTreeMap<String, u32>,
    global: &[WorkloadId],
    health: RegionHealth,
    now: Timestamp,
) -> RegionSummary {
    let snap = rebuild.into_snapshot(cfg);
    let mut s = RegionSummary::from_snapshot(region, &snap, &STANDARD_SIZES, locality, global, now);
    // `as_of` is this hub's clock here; central restamps it when it judges.
    s.health = HealthAsOf {
        state: health,
        as_of: now,
    };
    s
}

impl Service {
    /// `RegionSummary`, leader only: see the module docs.
    pub(super) async fn region_summary(&self, global: Vec<WorkloadId>) -> HubResponse {
        // Peers first: the state read below is the authoritative leader
        // check, and a leadership change in between only costs the health.
        let health = match self.node.status().await {
            Ok(s) => leader_health(&s),
            Err(e) => return failure(e),
        };
        let read = self
            .node
            .with_state(|v| {
                if !v.is_leader {
                    return Err(v.leader.cloned());
                }
                Ok((Rebuild::of(v.state), device_locality(v.state)))
            })
            .await;
        let (rebuild, locality) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(leader)) => return HubResponse::NotLeader { leader },
            Err(e) => return failure(e),
        };
        let region = self.me.region.clone();
        let cfg = self.sched.config;
        let now = Timestamp(now_ms());
        // O(edges × (sizes + pools)) plus building the snapshot: off the
        // async workers for a large region.
        let built = tokio::task::spawn_blocking(move || {
            summarize(&region, rebuild, cfg, locality, &global, health, now)
        })
        .await;
        match built {
            Ok(s) => HubResponse::RegionSummary(Box::new(s)),
            Err(e) => HubResponse::Error {
                message: format!(
                    "region {}: summarising capacity failed: {e}",
                    self.me.region
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, LivenessState};
    use strata_protocol::monitoring::MonitorCapacity;
    use strata_protocol::scheduling::NodeFacts;
    use strata_protocol::workload::{MonitorSpec, Placement};
    use strata_protocol::{
        EdgeStatus, Metric, PeerProgress, SpoolEntry, TelemetryBatch, TelemetryRecord,
    };
    use strata_sched::global::PoolCapacity;
    use strata_sched::Resources;

    use super::*;
    use crate::fsm::{self, Command as Fsm, EdgeTransition};
    use crate::scheduler::{Command, CoreConfig, SchedulerCore};

    const NOW: i64 = 10_000_000;
    const MIB: u64 = 1 << 20;

    fn apply(s: &mut RegionState, cmd: Fsm) {
        let index = s.applied_index() + 1;
        fsm::apply(s, index, &fsm::encode_command(&cmd)).unwrap();
    }

    fn reading(s: &mut RegionState, edge: &str, seq: u64, tenant: &str, device: &str) {
        apply(
            s,
            Fsm::StoreBatch {
                batch: TelemetryBatch {
                    edge: edge.into(),
                    epoch: 1,
                    first_seq: seq,
                    entries: vec![SpoolEntry::Telemetry(TelemetryRecord {
                        tenant: tenant.into(),
                        device: device.into(),
                        ts_ms: NOW + seq as i64,
                        seq: None,
                        metrics: vec![Metric {
                            name: "t".into(),
                            value: 1.0,
                        }],
                        tags: vec![],
                    })],
                },
                received_ms: NOW,
            },
        );
    }

    /// `edge` reports `cpu` millicores and `mib` MiB for monitors, in `pool`.
    fn report(s: &mut RegionState, edge: &str, cpu: u32, mib: u32, pool: &str) {
        apply(
            s,
            Fsm::EdgeReport {
                status: EdgeStatus {
                    edge: edge.into(),
                    capacity: MonitorCapacity {
                        memory_mib: mib,
                        cpu_millicores: cpu,
                    },
                    ..EdgeStatus::default()
                },
                facts: NodeFacts {
                    labels: Default::default(),
                    pools: [pool.to_owned()].into(),
                },
                received_ms: NOW,
            },
        );
    }

    fn down(s: &mut RegionState, edge: &str) {
        apply(
            s,
            Fsm::EdgeTransition(EdgeTransition {
                edge: edge.into(),
                kind: EventKind::EdgeDown,
                from: LivenessState::Up,
                at_ms: NOW,
                liveness: EdgeLiveness {
                    state: LivenessState::Down,
                    classification: Classification::Undetermined,
                    evidence: vec![],
                    boot_id: 1,
                    since_ms: NOW,
                    last_heartbeat_ms: NOW - 5_000,
                    detection_ms: None,
                    event_seq: 0,
                },
                message: String::new(),
            }),
        );
    }

    /// Places acme/watch (100 millicores, 64 MiB) on e1 through the real
    /// scheduler core, as the leader would.
    fn place_watch_on_e1(s: &mut RegionState) {
        let sha = "ab".repeat(32);
        apply(
            s,
            Fsm::PutArtifact {
                sha256: sha.clone(),
                bytes: vec![1, 2, 3],
            },
        );
        let mut spec = MonitorSpec::from_json_str(
            &serde_json::json!({
                "name": "watch", "tenant": "acme",
                "artifact": {"sha256": sha, "size-bytes": 3},
                "selector": {"tenant": "acme", "device-globs": ["*"]},
                "resources": {"memory-mib": 64, "cpu-millicores": 100},
            })
            .to_string(),
        )
        .unwrap();
        spec.target = Placement::Node("e1".into());
        apply(
            s,
            Fsm::PutWorkload {
                spec: Box::new(spec),
                now_ms: NOW,
            },
        );
        let mut core = SchedulerCore::new(CoreConfig::default());
        core.handle_leadership_gained(Rebuild::of(s), NOW, 7);
        while core.run_next(NOW) {}
        let plans: Vec<_> = core
            .take_commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::Propose(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(plans.len(), 1, "one plan for acme/watch");
        for p in plans {
            apply(s, Fsm::ApplyPlan(p));
        }
    }

    /// e1 (gpu) 1000m / 256 MiB running acme/watch; e2 and e3 (cpu)
    /// 200m / 128 MiB and 100m / 1 GiB; e4 (cpu) large but down.
    fn region() -> RegionState {
        let mut s = RegionState::default();
        reading(&mut s, "e1", 0, "acme", "d1");
        reading(&mut s, "e2", 0, "acme", "d2");
        reading(&mut s, "e3", 0, "acme", "d3");
        // Moved from e1 to e2: one device, counted once.
        reading(&mut s, "e1", 1, "globex", "g1");
        reading(&mut s, "e2", 1, "globex", "g1");
        // Behind an edge that is down: it last reported here, so it counts.
        reading(&mut s, "e4", 0, "initech", "i1");
        report(&mut s, "e1", 1000, 256, "gpu");
        report(&mut s, "e2", 200, 128, "cpu");
        report(&mut s, "e3", 100, 1024, "cpu");
        report(&mut s, "e4", 4000, 4096, "cpu");
        down(&mut s, "e4");
        place_watch_on_e1(&mut s);
        s
    }

    fn fits(p: &PoolCapacity) -> Vec<u64> {
        p.ladder.iter().map(|l| l.fits).collect()
    }

    #[test]
    fn fit_counts_are_summed_per_edge_and_per_pool() {
        let s = region();
        let watch = WorkloadId::new("acme", "watch");
        let other = WorkloadId::new("acme", "other");
        let sum = summarize(
            "west",
            Rebuild::of(&s),
            SchedulerConfig::default(),
            device_locality(&s),
            &[watch.clone(), other.clone()],
            RegionHealth::Ok,
            Timestamp(NOW),
        );
        assert_eq!(sum.region, "west");
        assert_eq!(sum.reported_at, Timestamp(NOW));
        assert_eq!(sum.health.state, RegionHealth::Ok);
        let sizes: Vec<Resources> = sum.capacity.all.ladder.iter().map(|l| l.size).collect();
        assert_eq!(sizes, STANDARD_SIZES.to_vec());
        // One instance of a workload per edge, whatever its room.
        assert_eq!(sum.capacity.max_per_node, Some(1));
        // Sizes 50m/32Mi, 100m/64Mi, 250m/128Mi, 500m/256Mi, 1000m/512Mi.
        // e1 has 900m / 192 MiB left after acme/watch: no 500m/256Mi.
        let gpu = &sum.capacity.pools["gpu"];
        assert_eq!((gpu.nodes_ready, fits(gpu)), (1, vec![1, 1, 1, 0, 0]));
        assert_eq!(gpu.free, Resources::new(900, 192 * MIB));
        // e4 is down: not counted. Together e2 and e3 have 300m and 1.1 GiB
        // free, yet neither alone takes 250m / 128 MiB.
        let cpu = &sum.capacity.pools["cpu"];
        assert_eq!((cpu.nodes_ready, fits(cpu)), (2, vec![2, 2, 0, 0, 0]));
        assert_eq!(cpu.free, Resources::new(300, 1152 * MIB));
        let all = &sum.capacity.all;
        assert_eq!((all.nodes_ready, fits(all)), (3, vec![3, 3, 1, 0, 0]));
        assert_eq!(sum.capacity.pools.len(), 2);

        assert_eq!(
            sum.device_locality,
            BTreeMap::from([
                ("acme".to_owned(), 3),
                ("globex".to_owned(), 1),
                ("initech".to_owned(), 1),
            ])
        );
        assert_eq!((sum.placed_of(&watch), sum.placed_of(&other)), (1, 0));
        assert_eq!(sum.placed.len(), 1, "workloads with none are left out");
    }

    #[test]
    fn an_empty_region_reports_nothing_to_place_on() {
        let s = RegionState::default();
        let sum = summarize(
            "west",
            Rebuild::of(&s),
            SchedulerConfig::default(),
            device_locality(&s),
            &[],
            RegionHealth::Ok,
            Timestamp(NOW),
        );
        assert_eq!(sum.capacity.all.nodes_ready, 0);
        assert!(sum.capacity.all.ladder.iter().all(|l| l.fits == 0));
        assert!(sum.capacity.pools.is_empty());
        assert!(sum.device_locality.is_empty());
    }

    fn peer(id: u64) -> PeerProgress {
        PeerProgress {
            id,
            voter: true,
            reachable: true,
            silent_ms: 50,
            matched: 10,
            lag: 0,
            lagging: false,
            joining: false,
        }
    }

    fn status(role: RaftRole, peers: Vec<PeerProgress>) -> HubStatus {
        HubStatus {
            region: "west".into(),
            id: 1,
            role,
            term: 2,
            leader: Some(1),
            commit_index: 10,
            applied_index: 10,
            last_index: 10,
            replicas: vec![],
            stored_records: 0,
            peers,
            cert_expires_ms: None,
        }
    }

    #[test]
    fn the_leader_reports_degraded_for_an_unwell_member() {
        let well = vec![peer(1), peer(2), peer(3)];
        assert_eq!(
            leader_health(&status(RaftRole::Leader, well.clone())),
            RegionHealth::Ok
        );
        let unwell: [fn(&mut PeerProgress); 3] = [
            |p| p.reachable = false,
            |p| p.lagging = true,
            |p| p.voter = false,
        ];
        for (i, f) in unwell.iter().enumerate() {
            let mut peers = well.clone();
            f(&mut peers[2]);
            assert_eq!(
                leader_health(&status(RaftRole::Leader, peers)),
                RegionHealth::Degraded,
                "case {i}"
            );
        }
        // The leader's own entry is never held against it.
        let mut me_odd = well.clone();
        me_odd[0].lagging = true;
        assert_eq!(
            leader_health(&status(RaftRole::Leader, me_odd)),
            RegionHealth::Ok
        );
        assert_eq!(
            leader_health(&status(RaftRole::Follower, vec![])),
            RegionHealth::Unknown
        );
    }
}
