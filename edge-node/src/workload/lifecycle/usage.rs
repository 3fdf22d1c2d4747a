//! Measurements, node pressure and in-place resizes: each sample round
//! updates the running instances' measured use and resizes those that stay
//! hot (when the node has room) or cold (when the node is under pressure),
//! within their spec's min/max ([`decide`]).

use super::{Lifecycle, Phase};
use crate::workload::command::Command;
use crate::workload::model::{InstanceKey, InstanceUsage, NodeUsage, MIB};
use crate::workload::resize::{decide, Dimension, ResizeInput};

impl Lifecycle {
    /// Takes one round of measurements: the node's /proc sample and each
    /// running instance's use. Emits resizes; a shrink may let a waiting
    /// instance in.
    pub fn handle_usage(
        &mut self,
        now_ms: u64,
        node: &NodeUsage,
        samples: &[(InstanceKey, InstanceUsage)],
    ) {
        for (key, usage) in samples {
            if let Some(i) = self.instances.get_mut(key) {
                if i.phase == Phase::Running {
                    i.usage = Some(*usage);
                }
            }
        }
        // Pressure is judged once per round, at sample time; the free room is
        // tracked as resizes are decided so one round cannot over-commit.
        let pressure = [
            self.pressure(Dimension::Memory, node),
            self.pressure(Dimension::Cpu, node),
        ];
        let mut reserved = self.reserved();
        let mut shrunk = false;
        let cfg = &self.cfg;
        for (key, i) in self.instances.iter_mut() {
            if i.phase != Phase::Running {
                continue;
            }
            let Some(usage) = i.usage else { continue };
            for (dim, pressure) in [Dimension::Memory, Dimension::Cpu]
                .into_iter()
                .zip(&pressure)
            {
                let free = self.node.capacity.minus(reserved);
                let (used, budget, min, max, free, trend) = match dim {
                    Dimension::Memory => (
                        u32::try_from(usage.memory_bytes.div_ceil(MIB)).unwrap_or(u32::MAX),
                        i.budget.memory_mib,
                        i.want.min.memory_mib,
                        i.want.max.memory_mib,
                        free.memory_mib,
                        &mut i.mem_trend,
                    ),
                    Dimension::Cpu => (
                        usage.cpu_millicores,
                        i.budget.cpu_millicores,
                        i.want.min.cpu_millicores,
                        i.want.max.cpu_millicores,
                        free.cpu_millicores,
                        &mut i.cpu_trend,
                    ),
                };
                let input = ResizeInput {
                    dimension: dim,
                    used,
                    budget,
                    min,
                    max,
                    free,
                    pressure: pressure.as_deref(),
                };
                if let Some(reason) = decide(cfg, input, trend, now_ms) {
                    reserved = reserved.minus(i.budget);
                    match dim {
                        Dimension::Memory => i.budget.memory_mib = reason.to,
                        Dimension::Cpu => i.budget.cpu_millicores = reason.to,
                    }
                    reserved = reserved.plus(i.budget);
                    shrunk |= reason.to < reason.from;
                    self.commands.push_back(Command::Resize {
                        key: key.clone(),
                        budget: i.budget,
                        reason,
                    });
                }
            }
        }
        if shrunk {
            self.retry_waiting(now_ms);
        }
    }

    /// Why the node is under pressure in `dim`, if it is: measured use or
    /// reservations at or above `pressure-pct`, or instances waiting for room.
    fn pressure(&self, dim: Dimension, node: &NodeUsage) -> Option<String> {
        let pct = |used: u64, total: u64| (total > 0).then(|| used.saturating_mul(100) / total);
        let limit = u64::from(self.cfg.pressure_pct);
        let reserved = self.reserved();
        let (what, measured, reserved_pct) = match dim {
            Dimension::Memory => (
                "memory",
                pct(node.memory_used_bytes, node.memory_total_bytes),
                pct(
                    u64::from(reserved.memory_mib),
                    u64::from(self.node.capacity.memory_mib),
                ),
            ),
            Dimension::Cpu => (
                "cpu",
                pct(
                    u64::from(node.cpu_used_millicores),
                    u64::from(node.cpu_total_millicores),
                ),
                pct(
                    u64::from(reserved.cpu_millicores),
                    u64::from(self.node.capacity.cpu_millicores),
                ),
            ),
        };
        if let Some(p) = measured.filter(|&p| p >= limit) {
            return Some(format!("node {what} {p}% used"));
        }
        if let Some(p) = reserved_pct.filter(|&p| p >= limit) {
            return Some(format!("{p}% of monitor {what} reserved"));
        }
        let waiting = self
            .instances
            .values()
            .filter(|i| waits_for_room(&i.phase))
            .count();
        (waiting > 0).then(|| format!("{waiting} instance(s) waiting for room"))
    }
}

/// Waits for capacity to free up.
fn waits_for_room(p: &Phase) -> bool {
    match p {
        Phase::Preempted { .. } => true,
        Phase::Refused(r) => r.is_transient(),
        _ => false,
    }
}
