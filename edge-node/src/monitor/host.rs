//! [`MonitorHost`]: the handle the node, the uplink and tests hold.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_protocol::monitoring::{InstanceStatus, MonitorCapacity, NodeResources};
use strata_protocol::TelemetryRecord;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::config::MonitorsConfig;
use super::driver::SchedTask;
use super::executor::{spool_outputs, Executor, WorkerCtx};
use super::metrics::HostMetrics;
use super::router::{RouteStats, Router};
use super::slot::{lock, InstanceStats};
use super::store::{Assignments, MonitorStore, StoreError};
use super::HostEvent;
use crate::runtime::{RuntimeError, SandboxDriver, WasmDriver};
use crate::sched::{Budget, Health, InstanceKey, InstanceReport};
use crate::spool::Spool;
use crate::uplink::{AssignmentTarget, AssignmentUpdate};

/// Samples the node's resources (`sysinfo::NodeSampler::sample` in the
/// node; a fake in tests).
pub type NodeSampleFn = Box<dyn FnMut(Instant) -> NodeResources + Send>;

/// Why the monitor host could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The store directory could not be created.
    #[error("edge {edge}: monitor host: {source}")]
    Store {
        /// This edge.
        edge: String,
        /// Cause.
        source: StoreError,
    },
    /// The sandbox runtime could not be set up.
    #[error("edge {edge}: monitor host: {source}")]
    Runtime {
        /// This edge.
        edge: String,
        /// Cause.
        source: RuntimeError,
    },
    /// Worker threads could not be started.
    #[error("edge {edge}: monitor host: starting worker threads: {source}")]
    Threads {
        /// This edge.
        edge: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Everything [`MonitorHost::start`] needs.
pub struct HostOptions {
    /// This edge's name: the scheduler's node name and the alerts' `edge`.
    pub edge: String,
    /// The store directory (`<data-dir>/monitors`).
    pub dir: PathBuf,
    /// `[monitors]`.
    pub cfg: MonitorsConfig,
    /// Where alerts and derived metrics go.
    pub spool: Spool,
    /// Node resource sampler.
    pub sampler: NodeSampleFn,
    /// Counters (registered by the caller, or `HostMetrics::default()`).
    pub metrics: HostMetrics,
}

/// What the host reports for heartbeats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorStatus {
    /// Capacity for monitors.
    pub capacity: MonitorCapacity,
    /// Budgets of instances holding capacity.
    pub reserved: MonitorCapacity,
    /// Last node sample.
    pub node: NodeResources,
    /// Every desired instance.
    pub instances: Vec<InstanceStatus>,
    /// Assignments version applied.
    pub assignments_version: u64,
}

/// Published by the scheduler driver after each step.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub reports: Vec<InstanceReport>,
    pub reserved: Budget,
    pub node: NodeResources,
    /// Assignments version the scheduler last reconciled to.
    pub reconciled_version: u64,
    /// Desired monitors waiting for their module: key, generation, why.
    pub waiting: Vec<(InstanceKey, u64, String)>,
}

pub(crate) struct Inner {
    pub edge: String,
    pub cfg: MonitorsConfig,
    pub store: MonitorStore,
    pub driver: Arc<dyn SandboxDriver>,
    pub router: Router,
    pub executor: Executor,
    pub events: mpsc::UnboundedSender<HostEvent>,
    pub stats: Mutex<HashMap<InstanceKey, Arc<InstanceStats>>>,
    pub snapshot: Mutex<Snapshot>,
    applied_version: AtomicU64,
    /// Modules referenced by the assignments but missing or corrupt.
    pub missing: Mutex<HashSet<String>>,
    pub metrics: HostMetrics,
    pub changed: Arc<watch::Sender<u64>>,
    apply_lock: Mutex<()>,
}

impl Inner {
    pub fn stats_for(&self, key: &InstanceKey) -> Arc<InstanceStats> {
        lock(&self.stats).entry(key.clone()).or_default().clone()
    }
}

/// The scheduler task and the output task, until shutdown takes them.
type Tasks = Option<(JoinHandle<()>, JoinHandle<()>)>;

/// The device-monitor host. Cheap to clone.
#[derive(Clone)]
pub struct MonitorHost {
    inner: Arc<Inner>,
    tasks: Arc<Mutex<Tasks>>,
}

fn to_capacity(b: Budget) -> MonitorCapacity {
    MonitorCapacity {
        memory_mib: b.memory_mib,
        cpu_millicores: b.cpu_millicores,
    }
}

impl MonitorHost {
    /// Opens the store, reloads the persisted assignments and starts the
    /// workers and the scheduler driver: persisted instances start right
    /// away, with no hub. Must be called inside a tokio runtime.
    pub async fn start(opts: HostOptions) -> Result<MonitorHost, MonitorError> {
        let HostOptions {
            edge,
            dir,
            cfg,
            spool,
            sampler,
            metrics,
        } = opts;
        let store = MonitorStore::open(&dir).map_err(|source| MonitorError::Store {
            edge: edge.clone(),
            source,
        })?;
        let driver: Arc<dyn SandboxDriver> =
            Arc::new(WasmDriver::new(cfg.wasm.clone()).map_err(|source| {
                MonitorError::Runtime {
                    edge: edge.clone(),
                    source,
                }
            })?);
        let (out_tx, out_rx) = mpsc::channel(cfg.output_queue);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let changed = Arc::new(watch::channel(0u64).0);
        let executor = Executor::start(
            cfg.workers(),
            WorkerCtx {
                edge: edge.clone(),
                max_batch: cfg.max_batch_records,
                outputs: out_tx,
                events: ev_tx.clone(),
                metrics: metrics.clone(),
                changed: changed.clone(),
            },
        )
        .map_err(|source| MonitorError::Threads {
            edge: edge.clone(),
            source,
        })?;
        let outputs = tokio::spawn(spool_outputs(
            spool,
            out_rx,
            cfg.max_output_batch,
            metrics.clone(),
        ));

        // Reading and hashing the persisted files is blocking work.
        let st = store.clone();
        let m = metrics.clone();
        let e = edge.clone();
        let (assignments, missing) = tokio::task::spawn_blocking(move || load(&st, &e, &m))
            .await
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            router: Router::new(cfg.route_cache_entries),
            edge,
            store,
            driver,
            executor,
            events: ev_tx,
            stats: Mutex::default(),
            snapshot: Mutex::default(),
            applied_version: AtomicU64::new(assignments.version),
            missing: Mutex::new(missing),
            metrics,
            changed,
            apply_lock: Mutex::new(()),
            cfg,
        });
        tracing::info!(
            edge = %inner.edge,
            version = assignments.version,
            monitors = assignments.monitors.len(),
            "monitor host starting persisted assignments"
        );
        let _ = inner.events.send(HostEvent::Desired {
            version: assignments.version,
            monitors: assignments.monitors,
        });
        let task = tokio::spawn(SchedTask::new(inner.clone(), ev_rx, sampler).run());
        Ok(MonitorHost {
            inner,
            tasks: Arc::new(Mutex::new(Some((task, outputs)))),
        })
    }

    /// Hands durable records to the instances that select them. Never
    /// blocks on a callback and never awaits.
    /// A selected record is copied once, however many instances watch it.
    pub fn route(&self, records: &[TelemetryRecord]) -> RouteStats {
        self.route_with(records, &mut |i| Arc::new(records[i].clone()))
    }

    /// [`MonitorHost::route`] for records the caller is done with (ingest,
    /// after the spool append): selected records are moved, not copied.
    pub fn route_owned(&self, records: Vec<TelemetryRecord>) -> RouteStats {
        let plan = self.inner.router.plan(&records);
        if plan.is_empty() {
            return RouteStats::default();
        }
        let len = records.len();
        let mut owned: Vec<Option<TelemetryRecord>> = records.into_iter().map(Some).collect();
        let mut wake = Vec::new();
        let stats = self.inner.router.deliver(
            &plan,
            len,
            &mut |i| {
                // The router asks for each index at most once (it keeps the
                // Arc), so the record is still here.
                Arc::new(owned[i].take().expect("each record is shared once"))
            },
            &mut |s| wake.push(s),
        );
        self.inner.metrics.routed.inc_by(stats.queued);
        self.inner.executor.schedule(wake);
        stats
    }

    fn route_with(
        &self,
        records: &[TelemetryRecord],
        share: &mut dyn FnMut(usize) -> Arc<TelemetryRecord>,
    ) -> RouteStats {
        let mut wake = Vec::new();
        let stats = self
            .inner
            .router
            .route(records, share, &mut |s| wake.push(s));
        self.inner.metrics.routed.inc_by(stats.queued);
        self.inner.executor.schedule(wake);
        stats
    }

    /// The heartbeat view.
    pub fn status(&self) -> MonitorStatus {
        let snap = lock(&self.inner.snapshot);
        let stats = lock(&self.inner.stats);
        let mut instances: Vec<InstanceStatus> = snap
            .reports
            .iter()
            .map(|r| instance_status(r, stats.get(&r.key).map(|s| &**s)))
            .collect();
        instances.extend(
            snap.waiting
                .iter()
                .map(|(k, generation, why)| InstanceStatus {
                    tenant: k.tenant.clone(),
                    name: k.name.clone(),
                    generation: *generation,
                    state: "pending".to_owned(),
                    reason: Some(why.clone()),
                    ..InstanceStatus::default()
                }),
        );
        MonitorStatus {
            capacity: MonitorCapacity {
                memory_mib: self.inner.cfg.memory_mib,
                cpu_millicores: self.inner.cfg.cpu_millicores,
            },
            reserved: to_capacity(snap.reserved),
            node: snap.node,
            instances,
            assignments_version: self.applied_version(),
        }
    }

    /// One instance's status, if it is desired here.
    pub fn instance(&self, key: &InstanceKey) -> Option<InstanceStatus> {
        self.status()
            .instances
            .into_iter()
            .find(|i| i.tenant == key.tenant && i.name == key.name)
    }

    /// Successful starts of an instance in this process (0 if never).
    pub fn starts(&self, key: &InstanceKey) -> u64 {
        lock(&self.inner.stats)
            .get(key)
            .map_or(0, |s| s.starts.load(Ordering::Relaxed))
    }

    /// The assignments version the scheduler has reconciled to (after
    /// [`AssignmentTarget::apply`] returns, this catches up shortly).
    pub fn reconciled_version(&self) -> u64 {
        lock(&self.inner.snapshot).reconciled_version
    }

    /// The host's counters.
    pub fn metrics(&self) -> &HostMetrics {
        &self.inner.metrics
    }

    /// Changes whenever an instance's state or counters may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Waits until `cond` holds (checked on every change), at most
    /// `timeout`. Returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&MonitorHost) -> bool,
    ) -> bool {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return cond(self),
            }
        }
    }

    /// Drains: queued records are processed (up to `drain-timeout-ms`),
    /// workers stop, every instance's state is persisted, and pending
    /// alerts and metrics are appended to the spool. Call it after ingress
    /// stopped and before the spool closes. Idempotent.
    pub async fn shutdown(&self) {
        let Some((task, outputs)) = lock(&self.tasks).take() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if self.inner.events.send(HostEvent::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Err(e) = task.await {
            tracing::error!(edge = %self.inner.edge, error = %e, "monitor scheduler task failed");
        }
        // The workers are gone, and with them every output sender.
        if let Err(e) = outputs.await {
            tracing::error!(edge = %self.inner.edge, error = %e, "monitor output task failed");
        }
        tracing::info!(edge = %self.inner.edge, "monitor host stopped");
    }
}

fn instance_status(r: &InstanceReport, s: Option<&InstanceStats>) -> InstanceStatus {
    let (state, reason) = match &r.health {
        Health::Pending => ("pending", None),
        Health::Running => ("running", None),
        Health::Backoff {
            until_ms,
            attempt,
            last_exit,
        } => (
            "backoff",
            Some(format!(
                "restart {attempt} at {until_ms} ms after: {last_exit}"
            )),
        ),
        Health::CrashLooping { reason } => ("crash-looping", Some(reason.clone())),
        Health::Stopped { reason } => ("stopped", Some(reason.clone())),
        Health::Preempted { by } => ("preempted", Some(format!("preempted by {by}"))),
        Health::Refused(refusal) => ("refused", Some(refusal.to_string())),
    };
    let load = |a: Option<&AtomicU64>| a.map_or(0, |a| a.load(Ordering::Relaxed));
    let reason = reason.or_else(|| s.and_then(|s| lock(&s.last_fault).clone()));
    InstanceStatus {
        tenant: r.key.tenant.clone(),
        name: r.key.name.clone(),
        generation: r.generation,
        state: state.to_owned(),
        reason,
        restarts: r.restarts,
        memory_mib: r.budget.memory_mib,
        cpu_millicores: r.budget.cpu_millicores,
        used_memory_bytes: r.usage.map_or(0, |u| u.memory_bytes),
        used_cpu_millicores: r.usage.map_or(0, |u| u.cpu_millicores),
        records_in: load(s.map(|s| &s.records_in)),
        records_dropped: load(s.map(|s| &s.records_dropped)),
        alerts: load(s.map(|s| &s.alerts)),
        metrics: load(s.map(|s| &s.metrics)),
        last_event: s.and_then(|s| lock(&s.last_event).clone()),
    }
}

/// Loads the persisted assignments and checks their modules. Corrupt files
/// are logged, counted and skipped (a corrupt module is deleted so the hub
/// sends it again).
fn load(store: &MonitorStore, edge: &str, metrics: &HostMetrics) -> (Assignments, HashSet<String>) {
    let assignments = match store.load_assignments() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => {
            metrics.corrupt_files.inc();
            tracing::error!(%edge, error = %e, "persisted monitor assignments unusable; waiting for the hub");
            Assignments::default()
        }
    };
    let mut missing = HashSet::new();
    let wanted: HashSet<&str> = assignments
        .monitors
        .iter()
        .map(|m| m.artifact.sha256.as_str())
        .collect();
    for sha in wanted {
        match store.load_artifact(sha) {
            Ok(_) => {}
            Err(e) => {
                if matches!(e, StoreError::Corrupt { .. }) {
                    metrics.corrupt_files.inc();
                    let _ = store.remove_artifact(sha);
                }
                tracing::error!(%edge, error = %e, "persisted monitor module unusable; fetching it again");
                missing.insert(sha.to_owned());
            }
        }
    }
    (assignments, missing)
}

impl AssignmentTarget for MonitorHost {
    /// 0 while a module of the applied set is missing, so the uplink
    /// fetches the set (and the module) again.
    fn applied_version(&self) -> u64 {
        if lock(&self.inner.missing).is_empty() {
            self.inner.applied_version.load(Ordering::Acquire)
        } else {
            0
        }
    }

    fn has_artifact(&self, sha256: &str) -> bool {
        !lock(&self.inner.missing).contains(sha256) && self.inner.store.has_artifact(sha256)
    }

    fn apply(&self, update: AssignmentUpdate) -> Result<u64, String> {
        let inner = &self.inner;
        let _serial = lock(&inner.apply_lock);
        for (sha, bytes) in &update.artifacts {
            inner
                .store
                .put_artifact(sha, bytes)
                .map_err(|e| e.to_string())?;
            lock(&inner.missing).remove(sha);
        }
        let a = Assignments {
            version: update.version,
            monitors: update.monitors,
        };
        inner
            .store
            .save_assignments(&a)
            .map_err(|e| e.to_string())?;
        {
            let mut missing = lock(&inner.missing);
            missing.retain(|sha| a.monitors.iter().any(|m| &m.artifact.sha256 == sha));
            for m in &a.monitors {
                if !inner.store.has_artifact(&m.artifact.sha256) {
                    missing.insert(m.artifact.sha256.clone());
                }
            }
        }
        let keep: HashSet<&str> = a
            .monitors
            .iter()
            .map(|m| m.artifact.sha256.as_str())
            .collect();
        if let Err(e) = inner.store.retain_artifacts(&|sha| keep.contains(sha)) {
            tracing::warn!(edge = %inner.edge, error = %e, "removing unused monitor modules");
        }
        inner.applied_version.store(a.version, Ordering::Release);
        tracing::info!(
            edge = %inner.edge,
            version = a.version,
            monitors = a.monitors.len(),
            "monitor assignments applied"
        );
        inner
            .events
            .send(HostEvent::Desired {
                version: a.version,
                monitors: a.monitors,
            })
            .map_err(|_| "the monitor host is shut down".to_owned())?;
        Ok(a.version)
    }
}
