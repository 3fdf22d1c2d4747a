//! Admission: does a request fit on this node, and if only by preemption,
//! which instances make room. A pure function over the current holders.
//!
//! Victims are strictly lower priority, taken lowest priority first and,
//! within a priority, newest first (the instance that has run longest keeps
//! its warm state). Once enough room is found, victims that turned out to be
//! unnecessary (possible with two dimensions) are given back, so a plan never
//! preempts more than it needs.

use super::model::{Budget, DesiredInstance, InstanceKey, NodeInfo, Refusal};

/// An instance that currently holds part of the node's capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Which instance.
    pub key: InstanceKey,
    /// Its priority.
    pub priority: u8,
    /// Its current budget.
    pub budget: Budget,
    /// Admission order; higher is newer.
    pub seq: u64,
}

/// A successful admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Instances to stop first, in the order chosen.
    pub preempt: Vec<Holder>,
    /// What the request needed beyond the free room (zero without preemption).
    pub shortfall: Budget,
}

/// Checks constraints and capacity for `req` given the current `holders`
/// (which must not include `req.key` itself).
pub fn admit(
    node: &NodeInfo,
    holders: &[Holder],
    req: &DesiredInstance,
) -> Result<Admission, Refusal> {
    if !node.runtimes.contains(&req.runtime) {
        return Err(Refusal::UnknownRuntime {
            runtime: req.runtime,
            node: node.name.clone(),
        });
    }
    if let Some(want) = &req.constraints.node {
        if want != &node.name {
            return Err(Refusal::NodeMismatch {
                want: want.clone(),
                node: node.name.clone(),
            });
        }
    }
    if let Some(pool) = &req.constraints.pool {
        if !node.pools.contains(pool) {
            return Err(Refusal::PoolMismatch {
                pool: pool.clone(),
                node: node.name.clone(),
            });
        }
    }
    for (label, want) in &req.constraints.labels {
        let have = node.labels.get(label);
        if have != Some(want) {
            return Err(Refusal::LabelMismatch {
                label: label.clone(),
                want: want.clone(),
                have: have.cloned(),
                node: node.name.clone(),
            });
        }
    }

    let used = holders
        .iter()
        .fold(Budget::default(), |a, h| a.plus(h.budget));
    let free = node.capacity.minus(used);
    let need = req.initial;
    if need.fits_in(free) {
        return Ok(Admission {
            preempt: Vec::new(),
            shortfall: Budget::default(),
        });
    }
    let shortfall = need.minus(free);

    let mut candidates: Vec<&Holder> = holders
        .iter()
        .filter(|h| h.priority < req.priority)
        .collect();
    // Lowest priority first, then newest first; key last for determinism.
    candidates.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.seq.cmp(&a.seq))
            .then(a.key.cmp(&b.key))
    });
    let mut room = free;
    let mut chosen: Vec<Holder> = Vec::new();
    for c in candidates {
        if need.fits_in(room) {
            break;
        }
        room = room.plus(c.budget);
        chosen.push(c.clone());
    }
    if !need.fits_in(room) {
        return Err(if need.memory_mib > room.memory_mib {
            Refusal::InsufficientMemory {
                need_mib: need.memory_mib,
                free_mib: room.memory_mib,
                capacity_mib: node.capacity.memory_mib,
            }
        } else {
            Refusal::InsufficientCpu {
                need_millicores: need.cpu_millicores,
                free_millicores: room.cpu_millicores,
                capacity_millicores: node.capacity.cpu_millicores,
            }
        });
    }
    // Give back victims that are not needed, most important first.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        let without = room.minus(chosen[i].budget);
        if need.fits_in(without) {
            room = without;
            chosen.remove(i);
        }
    }
    Ok(Admission {
        preempt: chosen,
        shortfall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::model::{Constraints, DisconnectPolicy, Fence};
    use strata_protocol::workload::{RestartPolicy, RuntimeKind};

    fn node() -> NodeInfo {
        NodeInfo {
            name: "edge-1".into(),
            capacity: Budget::new(1000, 2000),
            labels: [("arch".to_owned(), "arm64".to_owned())].into(),
            pools: ["monitors".to_owned()].into(),
            runtimes: [RuntimeKind::Wasm].into(),
        }
    }

    fn req(name: &str, prio: u8, mem: u32, cpu: u32) -> DesiredInstance {
        let b = Budget::new(mem, cpu);
        DesiredInstance {
            key: InstanceKey::new("t", name),
            generation: 1,
            artifact_sha256: "00".repeat(32),
            runtime: RuntimeKind::Wasm,
            priority: prio,
            initial: b,
            min: b,
            max: b,
            restart: RestartPolicy::default(),
            constraints: Constraints::default(),
            fence: Fence {
                allocation: format!("t/{name}"),
                token: 1,
            },
            disconnect: DisconnectPolicy::Keep,
        }
    }

    fn holder(name: &str, prio: u8, mem: u32, cpu: u32, seq: u64) -> Holder {
        Holder {
            key: InstanceKey::new("t", name),
            priority: prio,
            budget: Budget::new(mem, cpu),
            seq,
        }
    }

    fn names(a: &Admission) -> Vec<&str> {
        a.preempt.iter().map(|h| h.key.name.as_str()).collect()
    }

    #[test]
    fn admission_table() {
        let full = vec![holder("a", 50, 600, 500, 1), holder("b", 50, 300, 500, 2)];
        type Case = (
            &'static str,
            Vec<Holder>,
            DesiredInstance,
            Result<Vec<&'static str>, Refusal>,
        );
        let mut micro = req("new", 50, 10, 10);
        micro.runtime = RuntimeKind::MicroVm;
        let mut elsewhere = req("new", 50, 10, 10);
        elsewhere.constraints.node = Some("edge-2".into());
        let mut here = req("new", 50, 10, 10);
        here.constraints.node = Some("edge-1".into());
        here.constraints.pool = Some("monitors".into());
        here.constraints.labels = [("arch".to_owned(), "arm64".to_owned())].into();
        let mut pool = req("new", 50, 10, 10);
        pool.constraints.pool = Some("gpu".into());
        let mut label = req("new", 50, 10, 10);
        label.constraints.labels = [("arch".to_owned(), "x86_64".to_owned())].into();
        let cases: Vec<Case> = vec![
            (
                "fits on empty node",
                vec![],
                req("new", 50, 1000, 2000),
                Ok(vec![]),
            ),
            (
                "fits beside others",
                full.clone(),
                req("new", 50, 100, 1000),
                Ok(vec![]),
            ),
            (
                "memory short, equal priority cannot preempt",
                full.clone(),
                req("new", 50, 101, 10),
                Err(Refusal::InsufficientMemory {
                    need_mib: 101,
                    free_mib: 100,
                    capacity_mib: 1000,
                }),
            ),
            (
                "cpu short",
                full.clone(),
                req("new", 50, 10, 1001),
                Err(Refusal::InsufficientCpu {
                    need_millicores: 1001,
                    free_millicores: 1000,
                    capacity_millicores: 2000,
                }),
            ),
            (
                "above whole node even after preempting all",
                full.clone(),
                req("new", 90, 1001, 10),
                Err(Refusal::InsufficientMemory {
                    need_mib: 1001,
                    free_mib: 1000,
                    capacity_mib: 1000,
                }),
            ),
            (
                "unknown runtime",
                vec![],
                micro,
                Err(Refusal::UnknownRuntime {
                    runtime: RuntimeKind::MicroVm,
                    node: "edge-1".into(),
                }),
            ),
            (
                "other node",
                vec![],
                elsewhere,
                Err(Refusal::NodeMismatch {
                    want: "edge-2".into(),
                    node: "edge-1".into(),
                }),
            ),
            ("node, pool and label match", vec![], here, Ok(vec![])),
            (
                "pool mismatch",
                vec![],
                pool,
                Err(Refusal::PoolMismatch {
                    pool: "gpu".into(),
                    node: "edge-1".into(),
                }),
            ),
            (
                "label mismatch",
                vec![],
                label,
                Err(Refusal::LabelMismatch {
                    label: "arch".into(),
                    want: "x86_64".into(),
                    have: Some("arm64".into()),
                    node: "edge-1".into(),
                }),
            ),
        ];
        for (name, holders, r, want) in cases {
            let got = admit(&node(), &holders, &r)
                .map(|a| names(&a).into_iter().map(str::to_owned).collect::<Vec<_>>());
            let want = want.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "case {name:?}");
        }
    }

    #[test]
    fn preemption_order_lowest_priority_then_newest() {
        let holders = vec![
            holder("old-low", 10, 200, 100, 1),
            holder("new-low", 10, 200, 100, 5),
            holder("mid", 30, 200, 100, 3),
            holder("high", 80, 200, 100, 2),
            holder("same", 60, 200, 100, 4),
        ];
        // 0 MiB free. Each need below takes victims in order: new-low, old-low, mid; never high or same.
        let cases = [
            (150, vec!["new-low"]),
            (400, vec!["new-low", "old-low"]),
            (600, vec!["new-low", "old-low", "mid"]),
        ];
        for (need, want) in cases {
            let a = admit(&node(), &holders, &req("new", 60, need, 10)).unwrap();
            assert_eq!(names(&a), want, "need {need}");
            assert_eq!(a.shortfall, Budget::new(need, 0));
        }
        let e = admit(&node(), &holders, &req("new", 60, 601, 10)).unwrap_err();
        assert_eq!(
            e,
            Refusal::InsufficientMemory {
                need_mib: 601,
                free_mib: 600,
                capacity_mib: 1000
            }
        );
    }

    #[test]
    fn unnecessary_victims_are_given_back() {
        // "cpu-hog" (newest, lowest) frees only CPU; memory needs "fat", which then suffices alone.
        let holders = vec![
            holder("fat", 20, 900, 1900, 1),
            holder("cpu-hog", 10, 10, 100, 2),
        ];
        let a = admit(&node(), &holders, &req("new", 50, 500, 100)).unwrap();
        assert_eq!(names(&a), vec!["fat"]);
    }
}
