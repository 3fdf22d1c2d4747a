//! The hub's machine on the shared in-memory harness
//! (`strata_consensus::harness`): a model telemetry store whose "disk"
//! survives crashes only at checkpoints, and hub-shaped helpers (status
//! with stored records, the records a replica holds).

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_consensus::harness::Cluster as Raw;
use strata_protocol::{
    DeviceInfo, HubStatus, Metric, QueryResult, SpoolEntry, TelemetryBatch, TelemetryQuery,
    TelemetryRecord,
};

pub use strata_consensus::harness::{member, MEMBERSHIP};

use super::driver::hub_status;
use super::machine::HubMachine;
use super::store::{read, HubStore, SharedStore};
use crate::fsm::{self, Command};
use crate::metrics::HubMetrics;

/// Error of the model store.
#[derive(Debug, thiserror::Error)]
#[error("model store: {0}")]
pub struct ModelError(String);

/// What survives a crash of the model store.
#[derive(Debug, Default, Clone)]
pub struct Disk {
    applied: u64,
    fsm: Vec<u8>,
    records: Vec<TelemetryRecord>,
}

/// The model store: records in a Vec, durable only at checkpoints.
pub struct ModelStore {
    disk: Arc<Mutex<Disk>>,
    records: Vec<TelemetryRecord>,
}

impl HubStore for ModelStore {
    type Error = ModelError;
    fn insert_owned(&mut self, records: Vec<TelemetryRecord>) {
        self.records.extend(records);
    }
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, ModelError> {
        Ok(QueryResult::Raw(
            self.records
                .iter()
                .filter(|r| r.device == q.device && r.ts_ms >= q.from_ms && r.ts_ms < q.to_ms)
                .cloned()
                .collect(),
        ))
    }
    fn devices(&self, _tenant: Option<&str>) -> Vec<DeviceInfo> {
        Vec::new()
    }
    fn stored_records(&self) -> u64 {
        self.records.len() as u64
    }
    fn needs_checkpoint(&self) -> bool {
        false
    }
    fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), ModelError> {
        let mut d = self.disk.lock().map_err(|e| ModelError(e.to_string()))?;
        *d = Disk {
            applied: applied_index,
            fsm: fsm_state.to_vec(),
            records: self.records.clone(),
        };
        Ok(())
    }
    fn snapshot(&self) -> Result<Vec<u8>, ModelError> {
        bincode::encode_to_vec(&self.records, bincode::config::standard())
            .map_err(|e| ModelError(e.to_string()))
    }
    fn restore(
        &mut self,
        data: &[u8],
        applied_index: u64,
        fsm_state: &[u8],
    ) -> Result<(), ModelError> {
        let (records, _): (Vec<TelemetryRecord>, _) =
            bincode::decode_from_slice(data, bincode::config::standard())
                .map_err(|e| ModelError(e.to_string()))?;
        self.records = records;
        self.checkpoint(applied_index, fsm_state)
    }
    fn enforce_retention(&mut self, _now_ms: i64) -> Result<(), ModelError> {
        Ok(())
    }
}

/// A StoreBatch command of `n` records from edge `e1`, starting at `first_seq`.
pub fn batch_cmd(first_seq: u64, n: u64) -> Vec<u8> {
    let entries = (0..n)
        .map(|i| {
            SpoolEntry::Telemetry(TelemetryRecord {
                tenant: "t".into(),
                device: "d".into(),
                ts_ms: (first_seq + i) as i64,
                seq: None,
                metrics: vec![Metric {
                    name: "v".into(),
                    value: (first_seq + i) as f64,
                }],
                tags: vec![],
            })
        })
        .collect();
    fsm::encode_command(&Command::StoreBatch {
        batch: TelemetryBatch {
            edge: "e1".into(),
            epoch: 1,
            first_seq,
            entries,
        },
        received_ms: 1,
    })
}

/// The hub's machine over the model store.
pub type Machine = HubMachine<ModelStore>;

/// A cluster of hub replicas, driven one call at a time.
pub struct Cluster {
    raw: Raw<Machine>,
    /// Each node's hub metrics (kept across restarts); the Raft metrics
    /// are the raw cluster's `metrics`.
    hub_metrics: Arc<Mutex<BTreeMap<u64, HubMetrics>>>,
}

impl Deref for Cluster {
    type Target = Raw<Machine>;
    fn deref(&self) -> &Raw<Machine> {
        &self.raw
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Raw<Machine> {
        &mut self.raw
    }
}

impl Cluster {
    /// `n` nodes, ids 1..=n, all started. `retain` is the Raft log tail
    /// kept behind a checkpoint.
    pub fn new(n: u64, retain: u64) -> Cluster {
        let disks: Arc<Mutex<BTreeMap<u64, Arc<Mutex<Disk>>>>> = Arc::default();
        let metrics: Arc<Mutex<BTreeMap<u64, HubMetrics>>> = Arc::default();
        let m = metrics.clone();
        let factory = Arc::new(move |id: u64| {
            let disk = disks.lock().unwrap().entry(id).or_default().clone();
            let snapshot = disk.lock().unwrap().clone();
            let store = ModelStore {
                disk,
                records: snapshot.records,
            };
            let metrics = m.lock().unwrap().entry(id).or_default().clone();
            HubMachine::open(
                "r1".into(),
                store,
                snapshot.applied,
                &snapshot.fsm,
                Duration::from_secs(3600),
                metrics,
            )
            .unwrap()
        });
        Cluster {
            raw: Raw::new(n, retain, factory),
            hub_metrics: metrics,
        }
    }

    /// Hub status of node `id` at the harness's time.
    pub fn status(&self, id: u64) -> HubStatus {
        let now = self.now();
        self.nodes[&id].with(move |n| hub_status(n, now))
    }

    /// Node `id`'s store.
    pub fn store(&self, id: u64) -> SharedStore<ModelStore> {
        self.nodes[&id].with(|n| n.machine().store())
    }

    /// Node `id`'s hub metrics.
    pub fn hub_metrics(&self, id: u64) -> HubMetrics {
        self.hub_metrics
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .clone()
    }

    /// Sequence numbers stored by node `id`, sorted.
    pub fn stored(&self, id: u64) -> Vec<i64> {
        let store = self.store(id);
        let mut v: Vec<i64> = read(&store).records.iter().map(|r| r.ts_ms).collect();
        v.sort_unstable();
        v
    }
}

/// Records held by a model store.
pub fn records(store: &ModelStore) -> usize {
    store.records.len()
}
