//! Which global plans the leader proposes for a state.

use rand::Rng;
use strata_sched::global::{split, GlobalEval, GlobalPlan};
use strata_sched::{EvalId, Timestamp};

use crate::state::CentralState;

/// Splits every live global workload of `state` at `now` and returns the
/// plans worth proposing: those that change the workload's split, or whose
/// placement failure differs from the one last recorded (so the API shows
/// why a workload is short, and when it no longer is). Pure; evaluation
/// ids start at `first_eval`.
pub fn evaluate(
    state: &CentralState,
    now_ms: i64,
    first_eval: u64,
    rng: &mut impl Rng,
) -> Vec<GlobalPlan> {
    let snap = state.snapshot();
    let mut out = Vec::new();
    let mut next = first_eval;
    for (id, record) in state.global() {
        if record.deleting {
            continue;
        }
        let eval = GlobalEval {
            id: EvalId(next),
            workload: id.clone(),
            snapshot_index: snap.index(),
        };
        next += 1;
        let plan = match split(
            snap,
            &record.workload(),
            &eval,
            Timestamp::from_millis(now_ms),
            rng,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(workload = %id, error = %e, "global split failed");
                continue;
            }
        };
        let last = record.plans.back();
        let same_failure = match (last, &plan.failed) {
            (Some(l), f) => l.failed == *f && l.generation == plan.generation,
            (None, None) => true,
            (None, Some(_)) => false,
        };
        if plan.split() != record.split || !same_failure {
            out.push(plan);
        }
    }
    out
}
