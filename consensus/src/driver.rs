//! The node driver: runs a [`RaftNode`] on its own OS thread (raft-engine
//! fsyncs block; a machine's slow checkpoints run on its own background
//! thread and are only started and installed here), with a single-threaded
//! tokio runtime for the inbox and the tick interval. The only place the
//! Raft side reads the clock.
//!
//! Each loop iteration takes one event, then drains whatever else is
//! queued (bounded) before one `on_ready`: under load many proposals and
//! peer messages become one Ready, one log write and one fsync.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_protocol::ReplicaInfo;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::machine::Machine;
use crate::node::{Inbox, MemberChange, NodeError, NodeFn, ProposeError, RaftNode, RaftStatus};

/// Inbox capacity: senders wait (backpressure) when the node falls behind.
pub const INBOX_CAPACITY: usize = 8192;
/// Most messages handled before a Ready is processed.
const MAX_DRAIN: usize = 4096;

/// Wall clock in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A cheap, cloneable handle to a running node.
pub struct Handle<M: Machine> {
    tx: mpsc::Sender<Inbox<M>>,
    group: String,
}

impl<M: Machine> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            group: self.group.clone(),
        }
    }
}

impl<M: Machine> Handle<M> {
    /// Wraps the sending side of a node's inbox.
    pub fn new(tx: mpsc::Sender<Inbox<M>>, group: String) -> Self {
        Handle { tx, group }
    }

    /// The raw inbox sender (for the peer transport).
    pub fn sender(&self) -> mpsc::Sender<Inbox<M>> {
        self.tx.clone()
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn stopped(&self) -> ProposeError {
        ProposeError::Unavailable {
            group: self.group.clone(),
            reason: "replica stopped".into(),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Inbox<M>,
    ) -> Result<T, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())
    }

    /// Proposes an encoded command; resolves after it is applied.
    pub async fn propose(&self, data: Vec<u8>) -> Result<M::Outcome, ProposeError> {
        self.ask(|reply| Inbox::Propose { data, reply }).await?
    }

    /// Proposes a membership change; resolves after it is applied.
    pub async fn change(&self, change: MemberChange) -> Result<Vec<ReplicaInfo>, ProposeError> {
        self.ask(|reply| Inbox::ConfChange { change, reply })
            .await?
    }

    /// The replica's Raft status.
    pub async fn status(&self) -> Result<RaftStatus, ProposeError> {
        self.with(|n, now| n.status(now)).await
    }

    /// Runs `f` on the Raft thread over this replica's applied state, now
    /// (a stale read: a follower may lag). `f` must be quick: the Raft loop
    /// waits for it.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&RaftNode<M>, Instant) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        self.ask(|reply: oneshot::Sender<R>| {
            Inbox::With(NodeFn(Box::new(move |node, now| {
                let _ = reply.send(f(node, now));
            })))
        })
        .await
    }

    /// Runs `f` once this replica has applied everything committed when
    /// the read was asked (ReadIndex, confirmed by a quorum): a
    /// linearizable read, on any replica. Fails with `Unavailable` when no
    /// leader confirms it within an election timeout.
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&RaftNode<M>) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let (failed, failure) = oneshot::channel();
        let msg = Inbox::ReadIndex {
            f: NodeFn(Box::new(move |node, _| {
                let _ = reply.send(f(node));
            })),
            failed,
        };
        self.tx.send(msg).await.map_err(|_| self.stopped())?;
        tokio::select! {
            r = answer => r.map_err(|_| self.stopped()),
            e = failure => Err(e.unwrap_or_else(|_| self.stopped())),
        }
    }
}

/// What [`spawn`] returns: whether opening worked, then the node's final
/// outcome when its thread ends.
pub struct Spawned<O> {
    /// Resolves once the node is open, with what `on_open` took from it.
    pub opened: oneshot::Receiver<Result<O, NodeError>>,
    /// Resolves when the node stops.
    pub done: oneshot::Receiver<Result<(), NodeError>>,
}

/// Opens a node with `open` on a new thread and runs it there until
/// `shutdown` or a fatal error; `on_open` takes what the caller needs from
/// the opened node (a shared store, a view receiver).
///
/// Opening happens on the node's own thread because raft-engine keeps a
/// thread-local block cache keyed by file position only: two engines read
/// from one thread (several replicas in a test process) could be served
/// each other's blocks. One engine per thread rules that out.
pub fn spawn<M: Machine, O: Send + 'static>(
    id: u64,
    open: impl FnOnce() -> Result<RaftNode<M>, NodeError> + Send + 'static,
    on_open: impl FnOnce(&mut RaftNode<M>) -> O + Send + 'static,
    mut rx: mpsc::Receiver<Inbox<M>>,
    tick: Duration,
    shutdown: CancellationToken,
) -> Result<Spawned<O>, std::io::Error> {
    let (done_tx, done_rx) = oneshot::channel();
    let (opened_tx, opened_rx) = oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || {
            let mut node = match open() {
                Ok(mut node) => {
                    let _ = opened_tx.send(Ok(on_open(&mut node)));
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
                tracing::error!(replica = id, error = %e, "raft node stopped on a fatal error");
            }
            // Closed (raft-engine's directory lock released) before anyone
            // hears it stopped: a restart in the same process may follow.
            drop(node);
            let _ = done_tx.send(result);
        })?;
    Ok(Spawned {
        opened: opened_rx,
        done: done_rx,
    })
}
