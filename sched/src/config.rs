//! Per-region scheduler settings. Stored in the snapshot (as nomad keeps its
//! scheduler configuration in the state store), so every evaluation of one
//! snapshot ranks the same way and a change is an ordinary replicated write.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::intent::FieldError;

/// How ranking weighs a node's fullness.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Prefer fuller nodes (best fit): keeps whole nodes free for big asks.
    #[default]
    Binpack,
    /// Prefer emptier nodes (worst fit): spreads load and blast radius.
    Spread,
}

/// Scheduler settings of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchedulerConfig {
    /// Binpack or spread. Default `binpack`.
    pub algorithm: Algorithm,
    /// Fewest feasible nodes ranked per placement; the scheduler ranks
    /// `max(this, ceil(log2(candidate nodes)))` (nomad's power of two
    /// choices grown with the region). Default 2, at least 1.
    pub min_candidates: u32,
    /// Feasible nodes ranked per placement when the workload has soft
    /// rules (affinity, spread), which need a wider look to be honoured.
    /// Default 100, at least 1.
    pub soft_rule_candidates: u32,
    /// Feasible nodes with a negative score (penalised) that may be passed
    /// over per placement before they count against the limit. Default 3.
    pub max_skip: u32,
    /// At most one live instance of a workload per node, whatever its
    /// intent says: for nodes that key instances by workload (an edge runs
    /// each monitor once). Count workloads then need as many distinct
    /// nodes as instances; placements beyond that fail as "distinct nodes
    /// exhausted". Default false.
    pub one_per_node: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            algorithm: Algorithm::Binpack,
            min_candidates: 2,
            soft_rule_candidates: 100,
            max_skip: 3,
            one_per_node: false,
        }
    }
}

impl SchedulerConfig {
    /// Every problem at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if self.min_candidates == 0 {
            errs.push(FieldError {
                field: "min-candidates".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.soft_rule_candidates == 0 {
            errs.push(FieldError {
                field: "soft-rule-candidates".into(),
                message: "must be at least 1".into(),
            });
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}
