//! The thin adapter from what the region sends (an [`EdgeAllocation`] per
//! instance placed on this edge: allocation id, fencing token, spec,
//! disconnect policy) to what the lifecycle core takes (plain
//! [`DesiredInstance`]s) and what the driver needs to start one
//! ([`Launch`]: selector and parameters).
//!
//! A `replace-after` allocation becomes [`DisconnectPolicy::ReplaceAfter`]
//! with its lease; a `keep` one [`DisconnectPolicy::Keep`]. Specs persisted
//! by a pre-scheduler edge (no allocation) run as before the upgrade: the
//! allocation is their `tenant/name`, the fencing token their generation,
//! the policy `keep` ([`desired_instance`]), until the region's first
//! allocation set replaces them.
//!
//! A sharded allocation (`placement.shard`) is keyed by its region slot
//! ([`InstanceKey::sharded`]), so several instances of the monitor can run
//! here; its [`Launch`] carries the [`ShardKey`] the router splits the
//! devices by.

use std::collections::HashMap;

use strata_protocol::scheduling::EdgeAllocation;
use strata_protocol::workload::{DeviceSelector, MonitorSpec, Placement};
use strata_sched::scale::ShardKey;
use strata_sched::WorkloadId;

use super::model::{Budget, Constraints, DesiredInstance, DisconnectPolicy, Fence, InstanceKey};
use super::store::Assignments;

/// What the driver needs to start an instance, beyond the core's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Devices whose records it receives.
    pub selector: DeviceSelector,
    /// Parameters for the guest's `init`, JSON text.
    pub params_json: String,
    /// Sharded: the key that splits the devices among the monitor's
    /// instances on this edge. `None`: the instance sees every selected
    /// device.
    pub shard: Option<ShardKey>,
}

/// The instance a (validated) spec asks for.
pub fn desired_instance(spec: &MonitorSpec) -> DesiredInstance {
    let r = &spec.resources;
    let (min_mem, max_mem) = r.memory_range();
    let (min_cpu, max_cpu) = r.cpu_range();
    DesiredInstance {
        key: InstanceKey::new(&spec.tenant, &spec.name),
        generation: spec.generation,
        artifact_sha256: spec.artifact.sha256.clone(),
        runtime: spec.runtime,
        priority: spec.priority,
        initial: Budget::new(r.memory_mib, r.cpu_millicores),
        min: Budget::new(min_mem, min_cpu),
        max: Budget::new(max_mem, max_cpu),
        restart: spec.restart,
        constraints: Constraints {
            node: match &spec.target {
                Placement::Node(n) => Some(n.clone()),
                Placement::LeastLoaded => None,
            },
            ..Constraints::default()
        },
        fence: Fence {
            allocation: format!("{}/{}", spec.tenant, spec.name),
            token: spec.generation,
        },
        disconnect: DisconnectPolicy::Keep,
    }
}

/// The instance an allocation asks for: its spec, with the region's
/// allocation id and fencing token as the fence and its disconnect policy.
/// The region has placed it here, so no node constraint applies.
pub fn allocation_instance(a: &EdgeAllocation) -> DesiredInstance {
    let mut d = desired_instance(&a.spec);
    if a.spec.placement.shard {
        d.key = InstanceKey::sharded(&a.spec.tenant, &a.spec.name, a.slot);
    }
    d.constraints = Constraints::default();
    d.fence = Fence {
        allocation: a.id.to_string(),
        token: a.fencing_token,
    };
    d.disconnect = match a.replace_after_ms {
        Some(lease_ms) => DisconnectPolicy::ReplaceAfter { lease_ms },
        None => DisconnectPolicy::Keep,
    };
    d
}

/// The core's instances and the driver's launch details of a full
/// assignment set: its allocations, and the pre-scheduler specs of a set
/// persisted before the upgrade. If a key appears twice, the last wins
/// (allocations after specs).
pub fn from_assignments(a: &Assignments) -> (Vec<DesiredInstance>, HashMap<InstanceKey, Launch>) {
    let mut launches = HashMap::with_capacity(a.len());
    let mut instances: Vec<DesiredInstance> = Vec::with_capacity(a.len());
    let mut add = |d: DesiredInstance, s: &MonitorSpec| {
        launches.insert(
            d.key.clone(),
            Launch {
                selector: s.selector.clone(),
                params_json: s.params.clone(),
                shard: d
                    .key
                    .shard
                    .map(|_| ShardKey::of(&WorkloadId::new(&s.tenant, &s.name))),
            },
        );
        instances.retain(|i| i.key != d.key);
        instances.push(d);
    };
    for s in &a.monitors {
        add(desired_instance(s), s);
    }
    for al in &a.allocations {
        add(allocation_instance(al), &al.spec);
    }
    (instances, launches)
}

#[cfg(test)]
mod tests {
    use strata_protocol::workload::RestartMode;

    use super::*;

    fn key(name: &str) -> InstanceKey {
        InstanceKey::new("acme", name)
    }

    #[test]
    fn toml_spec_becomes_a_desired_instance() {
        let text = r#"
            name = "boiler-temp"
            tenant = "acme"
            priority = 70
            target = { node = "edge-1" }
            params = { threshold = 80.5, window = 10 }
            generation = 4
            [artifact]
            sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            size-bytes = 48213
            [selector]
            tenant = "acme"
            device-globs = ["boiler-*"]
            tags = { site = "plant-1" }
            [resources]
            memory-mib = 16
            cpu-millicores = 50
            max-memory-mib = 64
            [restart]
            mode = "never"
        "#;
        let spec: MonitorSpec = toml::from_str(text).unwrap();
        spec.validate(&Default::default()).unwrap();
        assert_eq!(spec.params, r#"{"threshold":80.5,"window":10}"#);
        let back: MonitorSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec, "TOML round trip");
        let r = desired_instance(&spec);
        assert_eq!(
            (r.key.clone(), r.priority, r.restart.mode),
            (key("boiler-temp"), 70, RestartMode::Never)
        );
        assert_eq!(
            (r.initial, r.min, r.max),
            (
                Budget::new(16, 50),
                Budget::new(16, 50),
                Budget::new(64, 50)
            )
        );
        assert_eq!(r.constraints.node.as_deref(), Some("edge-1"));
        // Until the region sends allocations: tenant/name, the generation
        // as the token, and keep.
        assert_eq!(
            r.fence,
            Fence {
                allocation: "acme/boiler-temp".into(),
                token: 4
            }
        );
        assert_eq!(r.disconnect, DisconnectPolicy::Keep);
        let (instances, launches) = from_assignments(&Assignments {
            version: 1,
            monitors: vec![spec.clone()],
            allocations: vec![],
        });
        assert_eq!(instances, vec![r]);
        assert_eq!(launches[&key("boiler-temp")].params_json, spec.params);
        assert_eq!(launches[&key("boiler-temp")].selector, spec.selector);

        let err = toml::from_str::<MonitorSpec>(&text.replace("priority", "prio")).unwrap_err();
        assert!(err.to_string().contains("unknown field `prio`"), "{err}");
    }

    #[test]
    fn an_allocation_carries_its_fence_and_policy() {
        let spec: MonitorSpec = serde_json::from_value(serde_json::json!({
            "name": "zs", "tenant": "acme", "generation": 3,
            "target": {"node": "edge-1"},
            "artifact": {"sha256": "ab".repeat(32), "size-bytes": 1},
            "selector": {"tenant": "acme", "device-globs": ["*"]},
            "resources": {"memory-mib": 8, "cpu-millicores": 10},
        }))
        .unwrap();
        let a = EdgeAllocation {
            id: strata_protocol::scheduling::AllocId(0xabc),
            fencing_token: 42,
            slot: 1,
            spec: spec.clone(),
            replace_after_ms: Some(3_000),
            previous: None,
            checkpoint: None,
        };
        let d = allocation_instance(&a);
        assert_eq!(
            d.fence,
            Fence {
                allocation: format!("{:032x}", 0xabc),
                token: 42
            }
        );
        assert_eq!(
            d.disconnect,
            DisconnectPolicy::ReplaceAfter { lease_ms: 3_000 }
        );
        assert_eq!(
            d.constraints,
            Constraints::default(),
            "placed by the region"
        );
        assert_eq!(d.generation, 3);
        let keep = EdgeAllocation {
            replace_after_ms: None,
            ..a.clone()
        };
        assert_eq!(
            allocation_instance(&keep).disconnect,
            DisconnectPolicy::Keep
        );
        // A legacy spec and an allocation of the same key: the allocation.
        let (instances, launches) = from_assignments(&Assignments {
            version: 2,
            monitors: vec![spec],
            allocations: vec![a],
        });
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].fence.token, 42);
        assert_eq!(launches.len(), 1);
    }

    #[test]
    fn sharded_allocations_are_one_instance_per_slot() {
        let mut spec: MonitorSpec = serde_json::from_value(serde_json::json!({
            "name": "zs", "tenant": "acme",
            "artifact": {"sha256": "ab".repeat(32), "size-bytes": 1},
            "selector": {"tenant": "acme", "device-globs": ["*"]},
            "resources": {"memory-mib": 8, "cpu-millicores": 10},
            "placement": {"count": 3, "shard": true},
        }))
        .unwrap();
        let alloc = |id: u128, slot: u32, spec: &MonitorSpec| EdgeAllocation {
            id: strata_protocol::scheduling::AllocId(id),
            fencing_token: 1,
            slot,
            spec: spec.clone(),
            replace_after_ms: None,
            previous: None,
            checkpoint: None,
        };
        let (instances, launches) = from_assignments(&Assignments {
            version: 1,
            monitors: vec![],
            allocations: vec![alloc(1, 0, &spec), alloc(2, 2, &spec)],
        });
        let keys: Vec<_> = instances.iter().map(|i| i.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                InstanceKey::sharded("acme", "zs", 0),
                InstanceKey::sharded("acme", "zs", 2)
            ]
        );
        let want = ShardKey::of(&WorkloadId::new("acme", "zs"));
        assert!(launches.values().all(|l| l.shard == Some(want)));
        assert_eq!(keys[1].to_string(), "acme/zs#2");
        assert_eq!(keys[0].to_string(), "acme/zs", "slot 0 is named as before");
        // Unsharded, two allocations of one monitor are one instance.
        spec.placement.shard = false;
        let (instances, launches) = from_assignments(&Assignments {
            version: 1,
            monitors: vec![],
            allocations: vec![alloc(1, 0, &spec), alloc(2, 2, &spec)],
        });
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].key, key("zs"));
        assert_eq!(launches[&key("zs")].shard, None);
    }
}
