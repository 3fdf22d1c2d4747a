//! What each region must be told so that its monitors match the splits.

use std::collections::BTreeMap;

use strata_protocol::workload::MonitorSpec;
use strata_sched::WorkloadId;

use crate::state::CentralState;

/// A region's monitors of global workloads, as its leader answered:
/// `None` when the region could not be asked (then nothing is decided for
/// it this round).
pub type RegionMonitors = BTreeMap<String, Option<BTreeMap<WorkloadId, MonitorSpec>>>;

/// One step towards the splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create or update the region's monitor to this spec.
    Submit {
        /// The region.
        region: String,
        /// The spec (its count is the region's share).
        spec: Box<MonitorSpec>,
    },
    /// Remove the workload's monitor from the region.
    Delete {
        /// The region.
        region: String,
        /// The workload.
        id: WorkloadId,
    },
    /// A deleted workload is gone from every region: forget it.
    Forget {
        /// The workload.
        id: WorkloadId,
    },
}

/// Compares each workload's regional monitors with what the regions run.
/// Only regions that had a share are touched (a region's own monitors of
/// other names are never), and an unreachable region is left for a later
/// round. Pure.
pub fn reconcile(state: &CentralState, actual: &RegionMonitors) -> Vec<Action> {
    let mut out = Vec::new();
    for (id, record) in state.global() {
        let mut all_gone = true;
        for region in &record.regions_ever {
            let Some(Some(running)) = actual.get(region) else {
                // Unknown or unreachable: cannot tell, so cannot forget yet.
                all_gone = false;
                continue;
            };
            let have = running.get(id).map(normalized);
            match record.regional_monitor(region) {
                Some(want) => {
                    all_gone = false;
                    if have.as_ref() != Some(&want) {
                        out.push(Action::Submit {
                            region: region.clone(),
                            spec: Box::new(want),
                        });
                    }
                }
                None if have.is_some() => {
                    all_gone = false;
                    out.push(Action::Delete {
                        region: region.clone(),
                        id: id.clone(),
                    });
                }
                None => {}
            }
        }
        if record.deleting && all_gone {
            out.push(Action::Forget { id: id.clone() });
        }
    }
    out
}

/// A region's copy as central compares it: the region's generation is its
/// own business.
fn normalized(spec: &MonitorSpec) -> MonitorSpec {
    let mut s = spec.clone();
    s.generation = 0;
    s
}
