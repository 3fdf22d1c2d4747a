//! The node driver: runs a [`RaftNode`] on its own OS thread (raft-engine
//! fsyncs block; store checkpoints run on the store's own background
//! thread and are only started and installed here), with a single-threaded tokio
//! runtime for the inbox and the tick interval. The only place the Raft
//! side reads the clock.
//!
//! Each loop iteration takes one event, then drains whatever else is
//! queued (bounded) before one `on_ready`: under load many proposals and
//! peer messages become one Ready, one log write and one fsync.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_protocol::{HubResponse, HubStatus, ReplicaInfo, RetentionReport};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::apply::{HubStore, SharedStore, StoreReader};
use super::node::{
    Inbox, MemberChange, NodeError, ProposeError, RaftNode, ReadRequest, StateFn, StateView,
};
use crate::fsm::{add_device_dedup, Outcome};

/// Inbox capacity: senders wait (backpressure) when the node falls behind.
pub const INBOX_CAPACITY: usize = 8192;
/// Most messages handled before a Ready is processed.
const MAX_DRAIN: usize = 4096;

/// Wall clock in ms since the Unix epoch (for `received_ms` and retention).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Inbox>,
    reader: Arc<dyn StoreReader>,
    region: String,
}

impl NodeHandle {
    /// Wraps the sending side of a node's inbox and its store (for reads
    /// that must not run on the Raft thread).
    pub fn new(tx: mpsc::Sender<Inbox>, reader: Arc<dyn StoreReader>, region: String) -> Self {
        NodeHandle { tx, reader, region }
    }

    /// The raw inbox sender (for the peer transport).
    pub fn sender(&self) -> mpsc::Sender<Inbox> {
        self.tx.clone()
    }

    fn stopped(&self) -> ProposeError {
        ProposeError::Unavailable {
            region: self.region.clone(),
            reason: "hub node stopped".into(),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Inbox,
    ) -> Result<T, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Proposes an encoded command; resolves after it is applied.
    pub async fn propose(&self, data: Vec<u8>) -> Result<Outcome, ProposeError> {
        self.ask(|reply| Inbox::Propose { data, reply }).await?
    }

    /// Proposes a membership change; resolves after it is applied.
    pub async fn change(&self, change: MemberChange) -> Result<Vec<ReplicaInfo>, ProposeError> {
        self.ask(|reply| Inbox::ConfChange { change, reply })
            .await?
    }

    /// The replica's status.
    pub async fn status(&self) -> Result<HubStatus, ProposeError> {
        self.ask(Inbox::Status).await
    }

    /// Runs `f` on the Raft thread over the applied region state and
    /// returns its result. `f` must be quick: the Raft loop waits for it.
    pub async fn with_state<R: Send + 'static>(
        &self,
        f: impl FnOnce(StateView<'_>) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        self.ask(|reply: oneshot::Sender<R>| {
            Inbox::WithState(StateFn(Box::new(move |view| {
                let _ = reply.send(f(view));
            })))
        })
        .await
    }

    /// A read from the replica's local state. Store reads run on the
    /// blocking pool, beside the Raft thread, never on it.
    pub async fn read(&self, req: ReadRequest) -> Result<HubResponse, ProposeError> {
        let reader = self.reader.clone();
        let job = match req {
            ReadRequest::ListEdges => return self.ask(|reply| Inbox::Query(req, reply)).await,
            ReadRequest::ListDevices { tenant } => {
                // The store knows what is stored; the region state what
                // dedup dropped (replicated): merge them.
                let filter = tenant.clone();
                let counts = self
                    .with_state(move |v| v.state.device_dedup_nonzero(filter.as_deref()))
                    .await?;
                tokio::task::spawn_blocking(move || {
                    let mut devices = reader.devices(tenant.as_deref());
                    add_device_dedup(&mut devices, &counts);
                    HubResponse::Devices(devices)
                })
            }
            ReadRequest::Query(q) => tokio::task::spawn_blocking(move || match reader.query(&q) {
                Ok(r) => HubResponse::Telemetry(r),
                Err(message) => HubResponse::Error { message },
            }),
        };
        job.await.map_err(|e| ProposeError::Unavailable {
            region: self.region.clone(),
            reason: format!("read failed: {e}"),
        })
    }
}

impl NodeHandle {
    /// What this replica's retention dropped, per tenant (optionally one).
    /// A store read: on the blocking pool, not the Raft thread.
    pub async fn retention(&self, tenant: Option<String>) -> Result<RetentionReport, ProposeError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.retention(tenant.as_deref()))
            .await
            .map_err(|e| ProposeError::Unavailable {
                region: self.region.clone(),
                reason: format!("read failed: {e}"),
            })
    }
}

/// What [`spawn`] returns: the opened node's store (or why opening
/// failed), then the node's final outcome when its thread ends.
pub struct Spawned<S> {
    /// Resolves once the node is open.
    pub opened: oneshot::Receiver<Result<SharedStore<S>, NodeError>>,
    /// Resolves when the node stops.
    pub done: oneshot::Receiver<Result<(), NodeError>>,
}

/// Opens a node with `open` on a new thread and runs it there until
/// `shutdown` or a fatal error.
///
/// Opening happens on the node's own thread because raft-engine keeps a
/// thread-local block cache keyed by file position only: two engines read
/// from one thread (several hubs in a test process) could be served each
/// other's blocks. One engine per thread rules that out.
pub fn spawn<S: HubStore>(
    id: u64,
    open: impl FnOnce() -> Result<RaftNode<S>, NodeError> + Send + 'static,
    mut rx: mpsc::Receiver<Inbox>,
    tick: Duration,
    shutdown: CancellationToken,
) -> Result<Spawned<S>, std::io::Error> {
    let (done_tx, done_rx) = oneshot::channel();
    let (opened_tx, opened_rx) = oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || {
            let mut node = match open() {
                Ok(node) => {
                    let _ = opened_tx.send(Ok(node.store()));
                    node
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let result = rt.block_on(async {
                let mut ticker = tokio::time::interval(tick);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = ticker.tick() => node.tick(),
                        msg = rx.recv() => {
                            let Some(msg) = msg else { break };
                            let now = Instant::now();
                            node.handle(msg, now);
                            for _ in 0..MAX_DRAIN {
                                match rx.try_recv() {
                                    Ok(m) => node.handle(m, now),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    let now = Instant::now();
                    node.on_ready(now)?;
                    // Cheap: starts or installs a background checkpoint.
                    node.maybe_checkpoint(now, now_ms())?;
                }
                node.shutdown(Instant::now(), now_ms())
            });
            if let Err(e) = &result {
                tracing::error!(hub = id, error = %e, "raft node stopped on a fatal error");
            }
            let _ = done_tx.send(result);
        })?;
    Ok(Spawned {
        opened: opened_rx,
        done: done_rx,
    })
}
