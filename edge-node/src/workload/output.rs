//! What instances produce, on its way to the spool: alerts and derived
//! metrics stamped by the edge (tenant and monitor from the instance, never
//! from the guest; this edge; the time) and by the instance's allocation
//! and fencing token, then appended to the spool in batches by one task.
//!
//! Every output is stamped with its instance's allocation and fencing
//! token ([`stamp`]): it goes to the spool (and so the wire) as a
//! `SpoolEntry::FencedAlert` / `FencedMetric`, so the region refuses
//! outputs of an allocation it has replaced.
//! Outputs of an instance whose lease ran out are already refused here, on
//! the edge (see `executor`).

use strata_protocol::monitoring::{AlertRecord, DerivedMetricRecord, FenceStamp, StateCheckpoint};
use strata_protocol::SpoolEntry;
use tokio::sync::mpsc;

use super::metrics::WorkloadMetrics;
use super::model::{Fence, InstanceKey};
use super::sandbox::BatchOutput;

/// One alert or derived metric, with the incarnation that produced it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Output {
    /// The allocation and fencing token of the instance.
    pub fence: Fence,
    /// What goes to the region.
    pub entry: SpoolEntry,
}

/// Stamps one callback's alerts and metrics.
pub(crate) fn stamp(
    key: &InstanceKey,
    fence: &Fence,
    edge: &str,
    out: BatchOutput,
    ts_ms: i64,
) -> Vec<Output> {
    let stamp = || FenceStamp {
        allocation: fence.allocation.clone(),
        token: fence.token,
    };
    let mut v = Vec::with_capacity(out.alerts.len() + out.metrics.len());
    for a in out.alerts {
        v.push(Output {
            fence: fence.clone(),
            entry: SpoolEntry::FencedAlert {
                alert: AlertRecord {
                    tenant: key.tenant.clone(),
                    device: a.device,
                    monitor: key.name.clone(),
                    edge: edge.to_owned(),
                    severity: a.severity,
                    code: a.code,
                    message: a.message,
                    ts_ms,
                },
                fence: stamp(),
            },
        });
    }
    for m in out.metrics {
        v.push(Output {
            fence: fence.clone(),
            entry: SpoolEntry::FencedMetric {
                metric: DerivedMetricRecord {
                    tenant: key.tenant.clone(),
                    device: m.device,
                    monitor: key.name.clone(),
                    name: m.name,
                    value: m.value,
                    ts_ms,
                },
                fence: stamp(),
            },
        });
    }
    v
}

/// An instance's state checkpoint, as the spool carries it to the region.
pub(crate) fn checkpoint(
    key: &InstanceKey,
    fence: &Fence,
    taken_ms: i64,
    state: Vec<u8>,
) -> Output {
    Output {
        fence: fence.clone(),
        entry: SpoolEntry::Checkpoint(StateCheckpoint {
            tenant: key.tenant.clone(),
            workload: key.name.clone(),
            fence: FenceStamp {
                allocation: fence.allocation.clone(),
                token: fence.token,
            },
            taken_ms,
            state,
        }),
    }
}

/// The spool form of an output.
pub(crate) fn spool_payload(o: &Output) -> Vec<u8> {
    // Encoding plain owned data into a Vec cannot fail.
    bincode::encode_to_vec(&o.entry, bincode::config::standard()).unwrap_or_default()
}

/// Appends outputs to the spool in batches until every sender is gone.
/// Runs as a tokio task. What the spool refuses is counted as lost.
pub(crate) async fn spool_outputs(
    spool: crate::spool::Spool,
    mut rx: mpsc::Receiver<Vec<Output>>,
    max_batch: usize,
    metrics: WorkloadMetrics,
) {
    while let Some(first) = rx.recv().await {
        let is_ckpt = |o: &Output| matches!(o.entry, SpoolEntry::Checkpoint(_));
        let mut ckpts = first.iter().filter(|o| is_ckpt(o)).count() as u64;
        let mut batch: Vec<Vec<u8>> = first.iter().map(spool_payload).collect();
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(more) => {
                    ckpts += more.iter().filter(|o| is_ckpt(o)).count() as u64;
                    batch.extend(more.iter().map(spool_payload));
                }
                Err(_) => break,
            }
        }
        let n = batch.len() as u64 - ckpts;
        match spool.append(batch).await {
            Ok(_) => {
                metrics.outputs_spooled.inc_by(n);
                metrics.checkpoints_spooled.inc_by(ckpts);
            }
            Err(e) => {
                metrics.outputs_lost.inc_by(n);
                if ckpts > 0 {
                    metrics
                        .checkpoints_skipped
                        .get_or_create(&super::metrics::ReasonLabel {
                            reason: "spool-refused".into(),
                        })
                        .inc_by(ckpts);
                }
                tracing::error!(lost = n, checkpoints = ckpts, error = %e, "monitor outputs could not be spooled");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::sandbox::{Alert, DerivedMetric, Severity};

    #[test]
    fn outputs_carry_the_instance_not_the_guest_and_the_fence() {
        let key = InstanceKey::new("acme", "z");
        let fence = Fence {
            allocation: "a-1".into(),
            token: 7,
        };
        let out = BatchOutput {
            alerts: vec![Alert {
                severity: Severity::Critical,
                device: "d".into(),
                code: "c".into(),
                message: "m".into(),
            }],
            metrics: vec![DerivedMetric {
                device: "d".into(),
                name: "n".into(),
                value: 1.5,
            }],
            ..BatchOutput::default()
        };
        let v = stamp(&key, &fence, "edge-1", out, 42);
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|o| o.fence == fence));
        let a = v[0].entry.as_alert().expect("an alert");
        assert_eq!(
            (
                a.tenant.as_str(),
                a.monitor.as_str(),
                a.edge.as_str(),
                a.ts_ms
            ),
            ("acme", "z", "edge-1", 42)
        );
        // Both carry the fence to the region.
        for o in &v {
            assert_eq!(
                o.entry.fence(),
                Some(&FenceStamp {
                    allocation: "a-1".into(),
                    token: 7
                })
            );
        }
        let (back, _): (SpoolEntry, usize) =
            bincode::decode_from_slice(&spool_payload(&v[1]), bincode::config::standard()).unwrap();
        assert_eq!(back, v[1].entry);
        assert!(back.as_metric().is_some());
    }
}
