//! Monitor placement within a region: a pure function over a snapshot, in
//! the shape of nomad's `Scheduler.Process` (feasible → rank → plan).
//!
//! - `target = { node = "edge-1" }`: that edge, which must be known in the
//!   region (it has heartbeated or sent a batch at least once). Liveness is
//!   not required: an edge that is down picks its assignments up when it
//!   returns (offline autonomy), and the spec's capacity check is done by
//!   validation against that edge's reported capacity.
//! - `least-loaded`: a monitor sees only the telemetry of devices connected
//!   to its edge, so the candidates are the live edges (neither suspect nor
//!   down for the region's failure detector, `crate::liveness`) whose free
//!   room fits the request and through which
//!   at least one selected device last sent telemetry; only when no such
//!   edge fits does any fitting live edge qualify. Among the candidates, the
//!   one with the most room wins, measured
//!   as how many more copies of this request it could take (the smaller of
//!   the memory and CPU ratios), so both dimensions count and no unit wins
//!   by magnitude. Exact ties are broken by the seeded `rng`.
//! - Free room = reported capacity − reported reservations − budgets of
//!   monitors assigned to the edge that its last heartbeat does not report
//!   yet (assigned since, so not yet in its reservations).
//! - A resubmit of an existing monitor keeps its edge unless its target
//!   changed, so an update never moves a running instance by surprise.
//!
//! One known race is closed by the caller, not here: the service serialises
//! submissions on the leader, so two concurrent submits cannot both count
//! the same free room.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use strata_protocol::monitoring::MonitorCapacity;
use strata_protocol::workload::{FieldError, MonitorSpec, Placement, SpecErrors};

use crate::fsm::{EdgeView, RegionState};

/// One edge as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLoad {
    /// Edge name.
    pub edge: String,
    /// Neither suspect nor down ([`EdgeView::live`]).
    pub live: bool,
    /// Capacity it reserves for monitors.
    pub capacity: MonitorCapacity,
    /// Budgets of the instances holding capacity, as it last reported.
    pub reserved: MonitorCapacity,
    /// `(tenant, name)` of every instance its last heartbeat reported.
    pub reported: BTreeSet<(String, String)>,
}

/// One monitor already assigned in the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Tenant.
    pub tenant: String,
    /// Monitor name.
    pub name: String,
    /// Edge it is assigned to.
    pub edge: String,
    /// Its target as last submitted.
    pub target: Placement,
    /// Its initial budget.
    pub budget: MonitorCapacity,
}

/// The region as placement sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementSnapshot {
    /// Known edges, sorted by name.
    pub edges: Vec<EdgeLoad>,
    /// Monitors already assigned.
    pub assigned: Vec<Assigned>,
    /// Per edge, how many devices the spec being placed selects last sent
    /// their telemetry through it.
    pub carriers: BTreeMap<String, usize>,
}

impl PlacementSnapshot {
    /// Extracts the snapshot for placing `spec` from the applied region
    /// state and its `edges` (with the leader's soft state laid over).
    pub fn from_state(state: &RegionState, edges: &[EdgeView<'_>], spec: &MonitorSpec) -> Self {
        let sel = &spec.selector;
        let carriers = state.device_edges(&spec.tenant, |device, tags| {
            sel.matches(&spec.tenant, device, tags)
        });
        let edges = edges
            .iter()
            .map(|e| EdgeLoad {
                edge: e.edge.to_owned(),
                live: e.live,
                capacity: e.status.capacity,
                reserved: e.status.reserved,
                reported: e
                    .status
                    .instances
                    .iter()
                    .map(|i| (i.tenant.clone(), i.name.clone()))
                    .collect(),
            })
            .collect();
        let assigned = state
            .workloads()
            .monitors(None)
            .map(|m| Assigned {
                tenant: m.spec.tenant.clone(),
                name: m.spec.name.clone(),
                edge: m.edge.clone(),
                target: m.spec.target.clone(),
                budget: budget(&m.spec),
            })
            .collect();
        PlacementSnapshot {
            edges,
            assigned,
            carriers,
        }
    }

    /// Live edges.
    pub fn live(&self) -> impl Iterator<Item = &EdgeLoad> {
        self.edges.iter().filter(|e| e.live)
    }

    /// Free room on `edge`, not counting monitor `(tenant, name)` itself.
    pub fn free(&self, edge: &EdgeLoad, tenant: &str, name: &str) -> MonitorCapacity {
        let mut used = edge.reserved;
        for a in &self.assigned {
            let me = a.tenant == tenant && a.name == name;
            if a.edge == edge.edge
                && !me
                && !edge.reported.contains(&(a.tenant.clone(), a.name.clone()))
            {
                used.memory_mib = used.memory_mib.saturating_add(a.budget.memory_mib);
                used.cpu_millicores = used.cpu_millicores.saturating_add(a.budget.cpu_millicores);
            }
        }
        MonitorCapacity {
            memory_mib: edge.capacity.memory_mib.saturating_sub(used.memory_mib),
            cpu_millicores: edge
                .capacity
                .cpu_millicores
                .saturating_sub(used.cpu_millicores),
        }
    }
}

/// The initial budget a spec requests.
pub fn budget(spec: &MonitorSpec) -> MonitorCapacity {
    MonitorCapacity {
        memory_mib: spec.resources.memory_mib,
        cpu_millicores: spec.resources.cpu_millicores,
    }
}

/// Where a monitor goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The chosen edge.
    pub edge: String,
    /// True when an existing monitor kept the edge it had.
    pub kept: bool,
}

fn field(field: &str, message: String) -> SpecErrors {
    SpecErrors(vec![FieldError {
        field: field.to_owned(),
        message,
    }])
}

/// Places `spec` (see the module docs). Pure: the same snapshot and rng
/// seed give the same plan.
pub fn place(
    snap: &PlacementSnapshot,
    spec: &MonitorSpec,
    rng: &mut impl Rng,
) -> Result<Plan, SpecErrors> {
    let existing = snap
        .assigned
        .iter()
        .find(|a| a.tenant == spec.tenant && a.name == spec.name);
    if let Some(a) = existing {
        if a.target == spec.target {
            return Ok(Plan {
                edge: a.edge.clone(),
                kept: true,
            });
        }
    }
    match &spec.target {
        Placement::Node(node) => {
            if snap.edges.iter().any(|e| &e.edge == node) {
                Ok(Plan {
                    edge: node.clone(),
                    kept: false,
                })
            } else {
                let known: Vec<&str> = snap.edges.iter().map(|e| e.edge.as_str()).collect();
                Err(field(
                    "target.node",
                    format!(
                        "edge node {node:?} is not known in this region (known: {})",
                        if known.is_empty() {
                            "none yet".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ))
            }
        }
        Placement::LeastLoaded => least_loaded(snap, spec, rng),
    }
}

fn least_loaded(
    snap: &PlacementSnapshot,
    spec: &MonitorSpec,
    rng: &mut impl Rng,
) -> Result<Plan, SpecErrors> {
    let want = budget(spec);
    let mut best: Vec<&EdgeLoad> = Vec::new();
    let mut best_score = f64::NEG_INFINITY;
    // The roomiest edge overall, for the error message.
    let mut roomiest: Option<(&EdgeLoad, MonitorCapacity)> = None;
    let mut live = 0usize;
    let fits = |e: &EdgeLoad| {
        let free = snap.free(e, &spec.tenant, &spec.name);
        free.memory_mib >= want.memory_mib && free.cpu_millicores >= want.cpu_millicores
    };
    let carries = |e: &EdgeLoad| snap.carriers.get(&e.edge).is_some_and(|n| *n > 0);
    // Prefer edges that see the selected devices; fall back to any.
    let need_carrier = snap.live().any(|e| carries(e) && fits(e));
    for e in snap.live() {
        live += 1;
        let free = snap.free(e, &spec.tenant, &spec.name);
        if roomiest.is_none_or(|(_, r)| {
            (free.memory_mib, free.cpu_millicores) > (r.memory_mib, r.cpu_millicores)
        }) {
            roomiest = Some((e, free));
        }
        if free.memory_mib < want.memory_mib || free.cpu_millicores < want.cpu_millicores {
            continue;
        }
        if need_carrier && !carries(e) {
            continue;
        }
        // Requests are > 0 (validated); max(1) keeps a bad one from dividing by 0.
        let score = (f64::from(free.memory_mib) / f64::from(want.memory_mib.max(1)))
            .min(f64::from(free.cpu_millicores) / f64::from(want.cpu_millicores.max(1)));
        if score > best_score {
            best_score = score;
            best.clear();
            best.push(e);
        } else if score == best_score {
            best.push(e);
        }
    }
    if !best.is_empty() {
        let pick = best[rng.gen_range(0..best.len())];
        return Ok(Plan {
            edge: pick.edge.clone(),
            kept: false,
        });
    }
    let message = match roomiest {
        None => format!(
            "no live edge node in the region (none of the {} known edges is up; see GET /api/v1/edges)",
            snap.edges.len(),
        ),
        Some((e, free)) => format!(
            "no live edge node has room for {} MiB / {} millicores; the most free room is on \
             {} ({} MiB / {} millicores free of {} live edges)",
            want.memory_mib,
            want.cpu_millicores,
            e.edge,
            free.memory_mib,
            free.cpu_millicores,
            live
        ),
    };
    Err(field("resources", message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use strata_protocol::workload::{ArtifactRef, DeviceSelector, Resources, RestartPolicy};

    fn cap(memory_mib: u32, cpu_millicores: u32) -> MonitorCapacity {
        MonitorCapacity {
            memory_mib,
            cpu_millicores,
        }
    }

    /// An edge last heard `age_ms` ago: one silent for more than 10 s has
    /// been declared down by the failure detector.
    fn edge(
        name: &str,
        age_ms: i64,
        capacity: MonitorCapacity,
        reserved: MonitorCapacity,
    ) -> EdgeLoad {
        EdgeLoad {
            edge: name.into(),
            live: age_ms <= 10_000,
            capacity,
            reserved,
            reported: BTreeSet::new(),
        }
    }

    pub(crate) fn spec(name: &str, mem: u32, cpu: u32, target: Placement) -> MonitorSpec {
        MonitorSpec {
            name: name.into(),
            tenant: "acme".into(),
            runtime: Default::default(),
            artifact: ArtifactRef {
                sha256: "0".repeat(64),
                size_bytes: 1,
            },
            selector: DeviceSelector {
                tenant: "acme".into(),
                device_globs: vec!["*".into()],
                tags: Default::default(),
            },
            params: "{}".into(),
            resources: Resources {
                memory_mib: mem,
                cpu_millicores: cpu,
                min_memory_mib: None,
                max_memory_mib: None,
                min_cpu_millicores: None,
                max_cpu_millicores: None,
            },
            priority: 50,
            restart: RestartPolicy::default(),
            target,
            generation: 0,
        }
    }

    fn assigned(name: &str, edge: &str, budget: MonitorCapacity) -> Assigned {
        Assigned {
            tenant: "acme".into(),
            name: name.into(),
            edge: edge.into(),
            target: Placement::LeastLoaded,
            budget,
        }
    }

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    #[test]
    fn least_loaded_picks_most_room_among_live_edges_that_fit() {
        let snap = PlacementSnapshot {
            edges: vec![
                edge("a", 1_000, cap(256, 1000), cap(200, 100)), // 56 MiB free
                edge("b", 1_000, cap(256, 1000), cap(64, 100)),  // 192 MiB free
                edge("c", 60_000, cap(4096, 4000), cap(0, 0)),   // dead
                edge("d", 0, cap(128, 1000), cap(0, 0)),         // 128 MiB free
            ],
            assigned: vec![],
            ..Default::default()
        };
        let s = spec("m", 32, 100, Placement::LeastLoaded);
        let p = place(&snap, &s, &mut rng(1)).unwrap();
        assert_eq!(
            p,
            Plan {
                edge: "b".into(),
                kept: false
            }
        );
    }

    #[test]
    fn unreported_assignments_count_against_free_room() {
        let mut snap = PlacementSnapshot {
            edges: vec![
                edge("a", 0, cap(256, 1000), cap(0, 0)),
                edge("b", 0, cap(200, 1000), cap(0, 0)),
            ],
            assigned: vec![assigned("x", "a", cap(128, 100))],
            ..Default::default()
        };
        let s = spec("m", 32, 100, Placement::LeastLoaded);
        assert_eq!(place(&snap, &s, &mut rng(1)).unwrap().edge, "b");
        // Once `a` reports `x`, its budget is in `reserved` (here 0): not counted twice.
        snap.edges[0].reported.insert(("acme".into(), "x".into()));
        assert_eq!(place(&snap, &s, &mut rng(1)).unwrap().edge, "a");
    }

    #[test]
    fn ties_are_broken_by_the_seeded_rng() {
        let snap = PlacementSnapshot {
            edges: ["a", "b", "c"]
                .iter()
                .map(|n| edge(n, 0, cap(100, 100), cap(0, 0)))
                .collect(),
            assigned: vec![],
            ..Default::default()
        };
        let s = spec("m", 10, 10, Placement::LeastLoaded);
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let a = place(&snap, &s, &mut rng(seed)).unwrap();
            let b = place(&snap, &s, &mut rng(seed)).unwrap();
            assert_eq!(a, b, "seed {seed}: same seed, same plan");
            seen.insert(a.edge);
        }
        assert_eq!(seen.len(), 3, "every tied edge gets picked by some seed");
    }

    #[test]
    fn nothing_fits_names_the_biggest_free_room() {
        let snap = PlacementSnapshot {
            edges: vec![
                edge("a", 0, cap(64, 1000), cap(32, 0)),
                edge("b", 0, cap(48, 1000), cap(0, 0)),
            ],
            assigned: vec![],
            ..Default::default()
        };
        let s = spec("m", 64, 100, Placement::LeastLoaded);
        let e = place(&snap, &s, &mut rng(1)).unwrap_err();
        assert_eq!(e.fields(), vec!["resources"]);
        assert!(
            e.0[0].message.contains("b (48 MiB / 1000 millicores free"),
            "{e}"
        );
        let none = PlacementSnapshot {
            edges: vec![edge("a", 20_000, cap(64, 1000), cap(0, 0))],
            assigned: vec![],
            ..Default::default()
        };
        let e = place(&none, &s, &mut rng(1)).unwrap_err();
        assert!(e.0[0].message.contains("no live edge node"), "{e}");
    }

    #[test]
    fn named_target_must_be_known_but_need_not_be_live() {
        let snap = PlacementSnapshot {
            edges: vec![edge("a", 3_600_000, cap(0, 0), cap(0, 0))],
            assigned: vec![],
            ..Default::default()
        };
        let ok = spec("m", 8, 8, Placement::Node("a".into()));
        assert_eq!(place(&snap, &ok, &mut rng(1)).unwrap().edge, "a");
        let bad = spec("m", 8, 8, Placement::Node("zz".into()));
        let e = place(&snap, &bad, &mut rng(1)).unwrap_err();
        assert_eq!(e.fields(), vec!["target.node"]);
        assert!(e.0[0].message.contains("known: a"), "{e}");
    }

    #[test]
    fn resubmit_keeps_its_edge_unless_the_target_changed() {
        let snap = PlacementSnapshot {
            edges: vec![
                edge("a", 0, cap(64, 100), cap(64, 100)), // full
                edge("b", 0, cap(1024, 1000), cap(0, 0)),
            ],
            assigned: vec![assigned("m", "a", cap(64, 100))],
            ..Default::default()
        };
        let s = spec("m", 64, 100, Placement::LeastLoaded);
        assert_eq!(
            place(&snap, &s, &mut rng(1)).unwrap(),
            Plan {
                edge: "a".into(),
                kept: true
            }
        );
        let moved = spec("m", 64, 100, Placement::Node("b".into()));
        assert_eq!(
            place(&snap, &moved, &mut rng(1)).unwrap(),
            Plan {
                edge: "b".into(),
                kept: false
            }
        );
    }

    #[test]
    fn least_loaded_prefers_edges_that_see_the_selected_devices() {
        let mut snap = PlacementSnapshot {
            edges: vec![
                edge("roomy", 1_000, cap(1024, 4000), cap(0, 0)),
                edge("carrier", 1_000, cap(256, 1000), cap(128, 500)),
                edge("full-carrier", 1_000, cap(64, 100), cap(64, 100)),
            ],
            assigned: vec![],
            carriers: [("carrier".to_owned(), 3), ("full-carrier".to_owned(), 9)]
                .into_iter()
                .collect(),
        };
        let s = spec("m", 32, 100, Placement::LeastLoaded);
        // The roomiest edge sees none of the devices: the one that does and
        // fits wins; the one with the most devices has no room.
        assert_eq!(place(&snap, &s, &mut rng(3)).unwrap().edge, "carrier");
        // No carrier fits: any fitting live edge, the roomiest.
        snap.carriers.remove("carrier");
        assert_eq!(place(&snap, &s, &mut rng(3)).unwrap().edge, "roomy");
        // A dead carrier does not count either.
        snap.carriers.insert("dead".into(), 5);
        snap.edges
            .push(edge("dead", 60_000, cap(4096, 4000), cap(0, 0)));
        assert_eq!(place(&snap, &s, &mut rng(3)).unwrap().edge, "roomy");
    }
}
