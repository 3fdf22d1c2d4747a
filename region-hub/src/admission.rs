//! Admission of a submitted monitor on the leader: validation against the
//! region's facts, then placement. Pure (state, edges and rng are inputs);
//! the service runs it on the Raft thread over the applied state, with the
//! leader's soft edge state laid over it (`crate::liveness::views`), and
//! proposes the resulting `PutMonitor`.
//!
//! Facts for [`MonitorSpec::validate`] come from the replicated state:
//! - known tenants: tenants with at least one device in the region;
//! - known devices: the tenant's devices with their last tags;
//! - node capacity: the target edge's reported capacity, or for
//!   `least-loaded` the largest live edge's (memory and CPU each at their
//!   maximum over live edges; placement then checks a real fit);
//! - artifact known: the module is stored in the region.
//!
//! Beyond the spec's own checks: the runtime must have a driver (only
//! `wasm` today), the declared module size must match the stored module,
//! and the chosen edge's assignment list must still fit in one frame
//! ([`MAX_ASSIGNMENT_BYTES`]), since an edge fetches it in one response.

use rand::Rng;
use strata_protocol::workload::{
    FieldError, MonitorSpec, NodeCapacity, Placement, RuntimeKind, SpecErrors, ValidationContext,
};

use crate::fsm::{EdgeView, RegionState};

/// Most spec bytes (estimated) one edge's assignment list may hold: half a
/// frame, so the `Assignments` answer always fits.
pub const MAX_ASSIGNMENT_BYTES: usize = strata_protocol::MAX_FRAME_LEN / 2;

/// A generous estimate of a spec's encoded size: its variable-length parts
/// plus a fixed allowance for the rest.
pub fn spec_size_estimate(spec: &MonitorSpec) -> usize {
    let globs: usize = spec.selector.device_globs.iter().map(|g| g.len() + 2).sum();
    let tags: usize = spec
        .selector
        .tags
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let target = match &spec.target {
        Placement::Node(n) => n.len(),
        Placement::LeastLoaded => 0,
    };
    spec.name.len() + spec.tenant.len() * 2 + spec.params.len() + globs + tags + target + 256
}
use crate::placement::{self, PlacementSnapshot, Plan};

/// The capacity validation checks `spec` against; `None` skips the check
/// (no such edge, or no live edge: placement reports that precisely).
pub fn max_node_capacity(edges: &[EdgeView<'_>], spec: &MonitorSpec) -> Option<NodeCapacity> {
    let cap = |c: strata_protocol::monitoring::MonitorCapacity| NodeCapacity {
        memory_mib: c.memory_mib,
        cpu_millicores: c.cpu_millicores,
    };
    match &spec.target {
        Placement::Node(node) => edges
            .iter()
            .find(|e| e.edge == node)
            .map(|e| cap(e.status.capacity)),
        Placement::LeastLoaded => edges
            .iter()
            .filter(|e| e.live)
            .map(|e| cap(e.status.capacity))
            .reduce(|a, b| NodeCapacity {
                memory_mib: a.memory_mib.max(b.memory_mib),
                cpu_millicores: a.cpu_millicores.max(b.cpu_millicores),
            }),
    }
}

/// Validates `spec` against the region and its `edges` and places it.
/// Every validation problem is reported at once; placement runs only on a
/// valid spec.
pub fn admit(
    state: &RegionState,
    edges: &[EdgeView<'_>],
    spec: &MonitorSpec,
    rng: &mut impl Rng,
) -> Result<Plan, SpecErrors> {
    let tenants = state.tenants();
    let devices = state.known_devices(&spec.tenant);
    let ctx = ValidationContext {
        known_tenants: Some(&tenants),
        max_node_capacity: max_node_capacity(edges, spec),
        known_devices: Some(&devices),
        artifact_known: Some(state.workloads().has_artifact(&spec.artifact.sha256)),
    };
    let mut errs = spec.validate(&ctx).err().map(|e| e.0).unwrap_or_default();
    if spec.runtime != RuntimeKind::Wasm {
        errs.push(FieldError {
            field: "runtime".to_owned(),
            message: format!(
                "runtime {} has no driver on edge nodes yet; use wasm",
                spec.runtime
            ),
        });
    }
    if let Some(bytes) = state.workloads().artifact(&spec.artifact.sha256) {
        if bytes.len() as u64 != spec.artifact.size_bytes {
            errs.push(FieldError {
                field: "artifact.size-bytes".to_owned(),
                message: format!(
                    "{} does not match the stored module's {} bytes",
                    spec.artifact.size_bytes,
                    bytes.len()
                ),
            });
        }
    }
    if !errs.is_empty() {
        return Err(SpecErrors(errs));
    }
    let plan = placement::place(
        &PlacementSnapshot::from_state(state, edges, spec),
        spec,
        rng,
    )?;
    let others: usize = state
        .workloads()
        .monitors(None)
        .filter(|m| {
            m.edge == plan.edge && !(m.spec.tenant == spec.tenant && m.spec.name == spec.name)
        })
        .map(|m| spec_size_estimate(&m.spec))
        .sum();
    if others + spec_size_estimate(spec) > MAX_ASSIGNMENT_BYTES {
        return Err(SpecErrors(vec![FieldError {
            field: "target".to_owned(),
            message: format!(
                "edge node {} already carries about {others} bytes of monitor specs; with this \
                 one its assignment list would exceed {MAX_ASSIGNMENT_BYTES} bytes (use smaller \
                 params or another edge)",
                plan.edge
            ),
        }]));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use strata_protocol::monitoring::MonitorCapacity;
    use strata_protocol::{EdgeStatus, Metric, SpoolEntry, Tag, TelemetryBatch, TelemetryRecord};

    use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, LivenessState};

    use crate::fsm::{apply, encode_command, Command};

    fn views(s: &RegionState) -> Vec<EdgeView<'_>> {
        s.edge_views().collect()
    }

    const NOW: i64 = 1_000_000;

    fn region() -> (RegionState, String) {
        let mut s = RegionState::default();
        let reading = TelemetryRecord {
            tenant: "acme".into(),
            device: "boiler-1".into(),
            ts_ms: 1,
            seq: None,
            metrics: vec![Metric {
                name: "t".into(),
                value: 1.0,
            }],
            tags: vec![Tag {
                key: "site".into(),
                value: "plant-1".into(),
            }],
        };
        let sha = crate::artifact::sha256_hex(b"mod");
        let cmds = [
            Command::StoreBatch {
                batch: TelemetryBatch {
                    edge: "e-small".into(),
                    epoch: 1,
                    first_seq: 0,
                    entries: vec![SpoolEntry::Telemetry(reading)],
                },
                received_ms: NOW,
            },
            heartbeat("e-small", 64, 500, NOW),
            heartbeat("e-big", 512, 2000, NOW - 1_000),
            heartbeat("e-dead", 4096, 8000, NOW - 60_000),
            Command::EdgeTransition(crate::fsm::EdgeTransition {
                edge: "e-dead".into(),
                kind: EventKind::EdgeDown,
                from: LivenessState::Suspect,
                at_ms: NOW - 50_000,
                liveness: EdgeLiveness {
                    state: LivenessState::Down,
                    classification: Classification::Undetermined,
                    evidence: vec![],
                    boot_id: 1,
                    since_ms: NOW - 50_000,
                    last_heartbeat_ms: NOW - 60_000,
                    detection_ms: None,
                    event_seq: 0,
                },
                message: "down".into(),
            }),
            Command::PutArtifact {
                sha256: sha.clone(),
                bytes: b"mod".to_vec(),
            },
        ];
        for (i, c) in cmds.iter().enumerate() {
            apply(&mut s, i as u64 + 1, &encode_command(c)).unwrap();
        }
        (s, sha)
    }

    fn heartbeat(edge: &str, memory_mib: u32, cpu_millicores: u32, at: i64) -> Command {
        Command::EdgeHeartbeat {
            status: EdgeStatus {
                edge: edge.into(),
                capacity: MonitorCapacity {
                    memory_mib,
                    cpu_millicores,
                },
                ..EdgeStatus::default()
            },
            received_ms: at,
        }
    }

    fn spec(sha: &str) -> MonitorSpec {
        MonitorSpec::from_json_str(&format!(
            r#"{{"name":"m","tenant":"acme","artifact":{{"sha256":"{sha}","size-bytes":3}},
            "selector":{{"tenant":"acme","tags":{{"site":"plant-1"}}}},
            "resources":{{"memory-mib":100,"cpu-millicores":100}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn capacity_is_the_target_edge_or_the_largest_live_one() {
        let (s, sha) = region();
        let mut m = spec(&sha);
        let got = max_node_capacity(&views(&s), &m).unwrap();
        assert_eq!(
            (got.memory_mib, got.cpu_millicores),
            (512, 2000),
            "dead edge ignored"
        );
        m.target = Placement::Node("e-small".into());
        assert_eq!(max_node_capacity(&views(&s), &m).unwrap().memory_mib, 64);
        m.target = Placement::Node("nope".into());
        assert!(max_node_capacity(&views(&s), &m).is_none());
    }

    #[test]
    fn admit_checks_region_facts_then_places() {
        let (s, sha) = region();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ok = spec(&sha);
        assert_eq!(admit(&s, &views(&s), &ok, &mut rng).unwrap().edge, "e-big");

        let mut bad = ok.clone();
        bad.selector.tags.insert("site".into(), "plant-9".into());
        bad.artifact.size_bytes = 4;
        let e = admit(&s, &views(&s), &bad, &mut rng).unwrap_err();
        assert_eq!(e.fields(), vec!["selector", "artifact.size-bytes"], "{e}");

        let mut vm = ok.clone();
        vm.runtime = RuntimeKind::MicroVm;
        assert_eq!(
            admit(&s, &views(&s), &vm, &mut rng).unwrap_err().fields(),
            vec!["runtime"]
        );

        let mut unknown = ok.clone();
        unknown.artifact.sha256 = "ab".repeat(32);
        unknown.target = Placement::Node("e-small".into());
        let e = admit(&s, &views(&s), &unknown, &mut rng).unwrap_err();
        assert_eq!(
            e.fields(),
            vec!["artifact.sha256", "resources.memory-mib"],
            "{e}"
        );
    }

    #[test]
    fn an_edge_assignment_list_stays_within_one_frame() {
        let (mut s, sha) = region();
        let big_params = format!(r#"{{"p":"{}"}}"#, "x".repeat(60_000));
        let n = MAX_ASSIGNMENT_BYTES / 60_000;
        for i in 0..n {
            let mut m = spec(&sha);
            m.name = format!("m{i}");
            m.params = big_params.clone();
            let cmd = Command::PutMonitor {
                spec: Box::new(m),
                edge: "e-big".into(),
                now_ms: NOW,
            };
            let index = s.applied_index() + 1;
            apply(&mut s, index, &encode_command(&cmd)).unwrap();
        }
        let mut m = spec(&sha);
        m.target = Placement::Node("e-big".into());
        m.params = big_params;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let e = admit(&s, &views(&s), &m, &mut rng).unwrap_err();
        assert_eq!(e.fields(), vec!["target"], "{e}");
        // A small spec still fits.
        m.params = "{}".into();
        admit(&s, &views(&s), &m, &mut rng).unwrap();
    }
}
