//! The thin adapter from what the region sends today (a `MonitorSpec` per
//! monitor placed on this edge) to what the lifecycle core takes (plain
//! [`DesiredInstance`]s) and what the driver needs to start one
//! ([`Launch`]: selector and parameters).
//!
//! Today's assignments carry no allocation id, fencing token or disconnect
//! policy. Until the region sends them, an instance's allocation is its
//! `tenant/name`, its fencing token its spec generation (both only grow),
//! and its policy `keep`, which is how every monitor behaved so far. When
//! the wire carries the real values, only [`desired_instance`] changes.

use std::collections::HashMap;

use strata_protocol::workload::{DeviceSelector, MonitorSpec, Placement};

use super::model::{Budget, Constraints, DesiredInstance, DisconnectPolicy, Fence, InstanceKey};

/// What the driver needs to start an instance, beyond the core's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Devices whose records it receives.
    pub selector: DeviceSelector,
    /// Parameters for the guest's `init`, JSON text.
    pub params_json: String,
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

/// The core's instances and the driver's launch details of a full
/// assignment set. If a key appears twice, the last spec wins.
pub fn from_specs(specs: &[MonitorSpec]) -> (Vec<DesiredInstance>, HashMap<InstanceKey, Launch>) {
    let mut launches = HashMap::with_capacity(specs.len());
    let instances = specs
        .iter()
        .map(|s| {
            let d = desired_instance(s);
            launches.insert(
                d.key.clone(),
                Launch {
                    selector: s.selector.clone(),
                    params_json: s.params.clone(),
                },
            );
            d
        })
        .collect();
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
        let (instances, launches) = from_specs(std::slice::from_ref(&spec));
        assert_eq!(instances, vec![r]);
        assert_eq!(launches[&key("boiler-temp")].params_json, spec.params);
        assert_eq!(launches[&key("boiler-temp")].selector, spec.selector);

        let err = toml::from_str::<MonitorSpec>(&text.replace("priority", "prio")).unwrap_err();
        assert!(err.to_string().contains("unknown field `prio`"), "{err}");
    }
}
