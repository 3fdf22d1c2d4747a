//! [`WorkloadHost`]: the handle the node, the uplink and tests hold. It
//! starts the driver and the workers, routes ingest to instances (without
//! waiting for the driver), sends the driver requests, and reads what the
//! driver published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_protocol::monitoring::{InstanceStatus, MonitorCapacity};
use strata_protocol::TelemetryRecord;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::config::WorkloadConfig;
use super::driver::{Boot, NodeSampleFn, Parts, Request, WorkloadDriver};
use super::executor::{Executor, WorkerCtx};
use super::metrics::WorkloadMetrics;
use super::model::InstanceKey;
use super::output::spool_outputs;
use super::router::{RouteStats, Router};
use super::sandbox::{RuntimeError, SandboxDriver, WasmDriver};
use super::slot::lock;
use super::snapshot::Snapshot;
use super::status::{instance_status, to_capacity, Published, WorkloadStatus};
use super::store::{Assignments, StoreError, WorkloadStore};
use crate::spool::Spool;
use crate::uplink::{ApplyError, AssignmentTarget, AssignmentUpdate};

/// Why the workload host could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The store directory could not be created.
    #[error("edge {edge}: workload host: {source}")]
    Store {
        /// This edge.
        edge: String,
        /// Cause.
        source: StoreError,
    },
    /// The sandbox runtime could not be set up.
    #[error("edge {edge}: workload host: {source}")]
    Runtime {
        /// This edge.
        edge: String,
        /// Cause.
        source: RuntimeError,
    },
    /// Worker threads could not be started.
    #[error("edge {edge}: workload host: starting worker threads: {source}")]
    Threads {
        /// This edge.
        edge: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Everything [`WorkloadHost::start`] needs.
pub struct HostOptions {
    /// This edge's name: the node name and the alerts' `edge`.
    pub edge: String,
    /// The store directory (`<data-dir>/monitors`).
    pub dir: PathBuf,
    /// `[monitors]`.
    pub cfg: WorkloadConfig,
    /// Where alerts and derived metrics go.
    pub spool: Spool,
    /// Node resource sampler.
    pub sampler: NodeSampleFn,
    /// Counters (registered by the caller, or `WorkloadMetrics::default()`).
    pub metrics: WorkloadMetrics,
}

/// The driver task and the output task, until shutdown takes them.
type Tasks = Option<(JoinHandle<()>, JoinHandle<()>)>;

struct Inner {
    edge: String,
    capacity: MonitorCapacity,
    router: Arc<Router>,
    executor: Arc<Executor>,
    metrics: WorkloadMetrics,
    changed: Arc<watch::Sender<u64>>,
    published: Arc<Snapshot<Published>>,
    requests: mpsc::UnboundedSender<Request>,
    /// Taken once, by the first shutdown.
    tasks: Mutex<Tasks>,
}

/// The workload host. Cheap to clone.
#[derive(Clone)]
pub struct WorkloadHost {
    inner: Arc<Inner>,
}

impl WorkloadHost {
    /// Opens the store, reloads the persisted assignments and starts the
    /// workers and the driver: persisted `keep` instances start right away,
    /// with no hub (their compiled modules come from the disk cache). Must
    /// be called inside a tokio runtime.
    pub async fn start(opts: HostOptions) -> Result<WorkloadHost, WorkloadError> {
        let HostOptions {
            edge,
            dir,
            cfg,
            spool,
            sampler,
            metrics,
        } = opts;
        let store = WorkloadStore::open(&dir).map_err(|source| WorkloadError::Store {
            edge: edge.clone(),
            source,
        })?;
        let runtime = |source| WorkloadError::Runtime {
            edge: edge.clone(),
            source,
        };
        let mut wasm = WasmDriver::new(cfg.wasm.clone()).map_err(runtime)?;
        if cfg.wasm.disk_cache {
            wasm = wasm.with_disk_cache(&dir.join("cache")).map_err(runtime)?;
        }
        let sandbox: Arc<dyn SandboxDriver> = Arc::new(wasm);
        let (out_tx, out_rx) = mpsc::channel(cfg.output_queue);
        let ckpt_tx = out_tx.clone();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let changed = Arc::new(watch::channel(0u64).0);
        let executor = Arc::new(
            Executor::start(
                cfg.workers(),
                WorkerCtx {
                    edge: edge.clone(),
                    max_batch: cfg.max_batch_records,
                    outputs: out_tx,
                    reports: report_tx,
                    metrics: metrics.clone(),
                    changed: changed.clone(),
                },
            )
            .map_err(|source| WorkloadError::Threads {
                edge: edge.clone(),
                source,
            })?,
        );
        let outputs = tokio::spawn(spool_outputs(
            spool,
            out_rx,
            cfg.max_output_batch,
            metrics.clone(),
        ));

        // Reading and hashing the persisted files is blocking work.
        let (st, m, e) = (store.clone(), metrics.clone(), edge.clone());
        let boot = tokio::task::spawn_blocking(move || boot(&st, &e, &m))
            .await
            .unwrap_or_else(|_| Boot {
                assignments: Assignments::default(),
                verified: BTreeSet::new(),
                stored: BTreeSet::new(),
                missing: BTreeMap::new(),
            });
        let router = Arc::new(Router::new(cfg.route_cache_entries));
        let published = Arc::new(Snapshot::new(Published::default()));
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let capacity = MonitorCapacity {
            memory_mib: cfg.memory_mib,
            cpu_millicores: cfg.cpu_millicores,
        };
        let mut driver = WorkloadDriver::new(Parts {
            edge: edge.clone(),
            cfg,
            store,
            sandbox,
            router: router.clone(),
            executor: executor.clone(),
            metrics: metrics.clone(),
            changed: changed.clone(),
            published: published.clone(),
            sampler,
            requests: req_rx,
            reports: report_rx,
            boot,
            outputs: ckpt_tx,
        });
        // What the uplink reads (applied version, missing modules) is
        // known before this returns.
        driver.settle().await;
        let task = tokio::spawn(driver.run());
        Ok(WorkloadHost {
            inner: Arc::new(Inner {
                edge,
                capacity,
                router,
                executor,
                metrics,
                changed,
                published,
                requests: req_tx,
                tasks: Mutex::new(Some((task, outputs))),
            }),
        })
    }

    /// Hands durable records to the instances that select them. Never
    /// blocks on a callback and never awaits.
    /// A selected record is copied once, however many instances watch it.
    pub fn route(&self, records: &[TelemetryRecord]) -> RouteStats {
        let mut wake = Vec::new();
        let stats =
            self.inner
                .router
                .route(records, &mut |i| Arc::new(records[i].clone()), &mut |s| {
                    wake.push(s)
                });
        self.inner.metrics.routed.inc_by(stats.queued);
        self.inner.executor.schedule(wake);
        stats
    }

    /// [`WorkloadHost::route`] for records the caller is done with (ingest,
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

    /// The heartbeat view.
    pub fn status(&self) -> WorkloadStatus {
        let p = self.inner.published.load();
        WorkloadStatus {
            capacity: self.inner.capacity,
            reserved: to_capacity(p.reserved),
            node: p.node,
            instances: p.instances.iter().map(instance_status).collect(),
            assignments_version: p.version_for_uplink(),
        }
    }

    /// One instance's status, if it is desired here.
    pub fn instance(&self, key: &InstanceKey) -> Option<InstanceStatus> {
        let p = self.inner.published.load();
        p.instances
            .iter()
            .find(|v| &v.report.key == key)
            .map(instance_status)
    }

    /// One instance's lifecycle report (phase, fence, lease), if desired.
    pub fn report(&self, key: &InstanceKey) -> Option<super::lifecycle::InstanceReport> {
        let p = self.inner.published.load();
        p.instances
            .iter()
            .find(|v| &v.report.key == key)
            .map(|v| v.report.clone())
    }

    /// Successful starts of an instance in this process (0 if never).
    pub fn starts(&self, key: &InstanceKey) -> u64 {
        let p = self.inner.published.load();
        p.instances
            .iter()
            .find(|v| &v.report.key == key)
            .and_then(|v| v.stats.as_ref())
            .map_or(0, |s| s.starts.load(Ordering::Relaxed))
    }

    /// The assignments version the core has reconciled to (after
    /// [`AssignmentTarget::apply`] returns, this is the applied version).
    pub fn reconciled_version(&self) -> u64 {
        self.inner.published.load().reconciled_version
    }

    /// The region acknowledged a heartbeat this edge sent at `sent_at`:
    /// renews the leases of `replace-after` instances (counted from the
    /// send, so the edge's lease never outlives the region's).
    pub fn lease_renewed(&self, sent_at: Instant) {
        let _ = self.inner.requests.send(Request::LeaseRenewed { sent_at });
    }

    /// The host's counters.
    pub fn metrics(&self) -> &WorkloadMetrics {
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
        mut cond: impl FnMut(&WorkloadHost) -> bool,
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
        let Some((task, outputs)) = lock(&self.inner.tasks).take() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if self.inner.requests.send(Request::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Err(e) = task.await {
            tracing::error!(edge = %self.inner.edge, error = %e, "workload driver task failed");
        }
        // The workers and the driver are gone, and with them every output
        // sender.
        if let Err(e) = outputs.await {
            tracing::error!(edge = %self.inner.edge, error = %e, "monitor output task failed");
        }
        tracing::info!(edge = %self.inner.edge, "workload host stopped");
    }
}

/// Loads the persisted assignments and checks their modules. Corrupt files
/// are logged, counted and skipped (a corrupt module is deleted so the hub
/// sends it again).
fn boot(store: &WorkloadStore, edge: &str, metrics: &WorkloadMetrics) -> Boot {
    let assignments = match store.load_assignments() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => {
            metrics.corrupt_files.inc();
            tracing::error!(%edge, error = %e, "persisted monitor assignments unusable; waiting for the hub");
            Assignments::default()
        }
    };
    let mut verified = BTreeSet::new();
    let mut missing = BTreeMap::new();
    for sha in assignments.modules() {
        let sha = sha.as_str();
        match store.load_artifact(sha) {
            Ok(_) => {
                verified.insert(sha.to_owned());
            }
            Err(e) => {
                if matches!(e, StoreError::Corrupt { .. }) {
                    metrics.corrupt_files.inc();
                    let _ = store.remove_artifact(sha);
                }
                tracing::error!(%edge, error = %e, "persisted monitor module unusable; fetching it again");
                missing.insert(sha.to_owned(), e.to_string());
            }
        }
    }
    let stored = store.artifacts().unwrap_or_default();
    Boot {
        assignments,
        verified,
        stored,
        missing,
    }
}

impl AssignmentTarget for WorkloadHost {
    /// 0 while a module of the applied set is missing or a `replace-after`
    /// instance waits for a lease, so the uplink fetches the set (and the
    /// module) again.
    fn applied_version(&self) -> u64 {
        self.inner.published.load().version_for_uplink()
    }

    fn has_artifact(&self, sha256: &str) -> bool {
        let p = self.inner.published.load();
        p.stored_modules.contains(sha256) && !p.missing_modules.contains(sha256)
    }

    /// Blocks until the driver persisted and applied the update: call it
    /// from a blocking thread.
    fn apply(&self, update: AssignmentUpdate) -> Result<u64, ApplyError> {
        let shut = || ApplyError::ShutDown {
            edge: self.inner.edge.clone(),
        };
        let (reply, rx) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Apply { update, reply })
            .map_err(|_| shut())?;
        rx.blocking_recv().map_err(|_| shut())?
    }

    fn lease_renewed(&self, sent_at: Instant) {
        WorkloadHost::lease_renewed(self, sent_at);
    }
}
