//! The telemetry store as the hub's Raft machine sees it ([`HubStore`]),
//! and the lock that shares it with readers.
//!
//! The store sits behind a [`SharedStore`] lock so that reads (queries,
//! device lists) run on other threads and never stall the Raft loop. The
//! machine is the only writer and never waits for readers on the hot path:
//! if a long query holds the lock, applied records are buffered and
//! inserted on a later loop; checkpoints are postponed likewise.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use strata_protocol::{
    DeviceInfo, QueryResult, RetentionReport, TelemetryQuery, TelemetryRecord, TenantRetention,
};

use crate::store::{StoreError, TelemetryStore};

/// The telemetry store as the node sees it. Implemented by
/// [`TelemetryStore`]; tests use an in-memory model.
pub trait HubStore: Send + Sync + 'static {
    /// Error type of the store.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Adds deduplicated records (memtable only; the Raft log is the WAL).
    fn insert_owned(&mut self, records: Vec<TelemetryRecord>);
    /// Answers a telemetry read.
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, Self::Error>;
    /// Devices with stored data.
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo>;
    /// Records stored.
    fn stored_records(&self) -> u64;
    /// The memtable is big enough to checkpoint now.
    fn needs_checkpoint(&self) -> bool;
    /// Makes everything up to `applied_index` durable with the FSM state,
    /// before returning (finishing a background checkpoint first).
    fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), Self::Error>;
    /// Starts making everything up to `applied_index` durable; called only
    /// while [`HubStore::checkpoint_in_flight`] is false. Must be cheap: the
    /// slow part runs in the background. The default checkpoints in place.
    fn begin_checkpoint(
        &mut self,
        applied_index: u64,
        fsm_state: Vec<u8>,
    ) -> Result<CheckpointStart, Self::Error> {
        self.checkpoint(applied_index, &fsm_state)
            .map(|()| CheckpointStart::Durable)
    }
    /// A background checkpoint is running or awaits `finish_checkpoint`.
    fn checkpoint_in_flight(&self) -> bool {
        false
    }
    /// The background checkpoint is done: `finish_checkpoint` will not block.
    fn checkpoint_finished(&self) -> bool {
        false
    }
    /// Installs a finished background checkpoint (waiting for it if
    /// `wait`); returns the applied index that is now durable.
    fn finish_checkpoint(&mut self, _wait: bool) -> Result<Option<u64>, Self::Error> {
        Ok(None)
    }
    /// Serializes all data for a Raft snapshot.
    fn snapshot(&self) -> Result<Vec<u8>, Self::Error>;
    /// Replaces all contents by a snapshot's, durably.
    fn restore(
        &mut self,
        data: &[u8],
        applied_index: u64,
        fsm_state: &[u8],
    ) -> Result<(), Self::Error>;
    /// Drops data past retention.
    fn enforce_retention(&mut self, now_ms: i64) -> Result<(), Self::Error>;
    /// What retention dropped and was not reported yet, per tenant (for
    /// metrics and the log); rate-limited by the store. None by default.
    fn take_retention_drops(&mut self, _now_ms: i64) -> Vec<TenantRetention> {
        Vec::new()
    }
    /// What retention dropped, per tenant. Nothing by default.
    fn retention_report(&self, _tenant: Option<&str>) -> RetentionReport {
        RetentionReport {
            retention_ms: 0,
            retained_from_ms: None,
            tenants: Vec::new(),
        }
    }
}

/// How [`HubStore::begin_checkpoint`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStart {
    /// Already durable (the store checkpointed in place).
    Durable,
    /// Running in the background; `finish_checkpoint` reports it durable.
    Background,
}

impl HubStore for TelemetryStore {
    type Error = StoreError;
    fn insert_owned(&mut self, records: Vec<TelemetryRecord>) {
        TelemetryStore::insert_owned(self, records)
    }
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, StoreError> {
        TelemetryStore::query(self, q)
    }
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        TelemetryStore::devices(self, tenant)
    }
    fn stored_records(&self) -> u64 {
        TelemetryStore::stored_records(self)
    }
    fn needs_checkpoint(&self) -> bool {
        TelemetryStore::needs_checkpoint(self)
    }
    fn checkpoint(&mut self, applied_index: u64, fsm_state: &[u8]) -> Result<(), StoreError> {
        TelemetryStore::checkpoint(self, applied_index, fsm_state)
    }
    fn begin_checkpoint(
        &mut self,
        applied_index: u64,
        fsm_state: Vec<u8>,
    ) -> Result<CheckpointStart, StoreError> {
        // `false` (one already in flight) cannot happen: callers check first.
        TelemetryStore::begin_checkpoint(self, applied_index, fsm_state)
            .map(|_| CheckpointStart::Background)
    }
    fn checkpoint_in_flight(&self) -> bool {
        TelemetryStore::checkpoint_in_flight(self)
    }
    fn checkpoint_finished(&self) -> bool {
        TelemetryStore::checkpoint_finished(self)
    }
    fn finish_checkpoint(&mut self, wait: bool) -> Result<Option<u64>, StoreError> {
        TelemetryStore::finish_checkpoint(self, wait)
    }
    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        TelemetryStore::snapshot(self)
    }
    fn restore(
        &mut self,
        data: &[u8],
        applied_index: u64,
        fsm_state: &[u8],
    ) -> Result<(), StoreError> {
        TelemetryStore::restore(self, data, applied_index, fsm_state)
    }
    fn enforce_retention(&mut self, now_ms: i64) -> Result<(), StoreError> {
        TelemetryStore::enforce_retention(self, now_ms).map(|_| ())
    }
    fn take_retention_drops(&mut self, now_ms: i64) -> Vec<TenantRetention> {
        TelemetryStore::take_retention_drops(self, now_ms)
    }
    fn retention_report(&self, tenant: Option<&str>) -> RetentionReport {
        TelemetryStore::retention_report(self, tenant)
    }
}

/// The store shared between the node (sole writer) and readers.
pub type SharedStore<S> = Arc<RwLock<S>>;

/// Read access to the store from any thread, without knowing its type.
pub trait StoreReader: Send + Sync {
    /// Answers a telemetry read.
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, String>;
    /// Devices with stored data.
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo>;
    /// What retention dropped, per tenant.
    fn retention(&self, tenant: Option<&str>) -> RetentionReport;
}

/// Read lock; a poisoned lock still holds consistent data (the node only
/// mutates through the store's own methods) so reads carry on.
pub fn read<S>(lock: &RwLock<S>) -> RwLockReadGuard<'_, S> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<S>(lock: &RwLock<S>) -> RwLockWriteGuard<'_, S> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl<S: HubStore> StoreReader for RwLock<S> {
    fn query(&self, q: &TelemetryQuery) -> Result<QueryResult, String> {
        read(self).query(q).map_err(|e| e.to_string())
    }
    fn devices(&self, tenant: Option<&str>) -> Vec<DeviceInfo> {
        read(self).devices(tenant)
    }
    fn retention(&self, tenant: Option<&str>) -> RetentionReport {
        read(self).retention_report(tenant)
    }
}
