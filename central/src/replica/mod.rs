//! Central as a replicated service: its replicas form one Raft group
//! (`strata-consensus`, the glue the region hubs use) over
//! [`CentralMachine`].
//!
//! - **Writes** go through the leader: a replica proposes locally when it
//!   leads, else forwards the command to the leader over the peer
//!   connection ([`strata_consensus::Forwarder`]); while no leader is known
//!   it retries until the request deadline. Commands are idempotent, so a
//!   retry after an ambiguous failure is safe.
//! - **Reads** are linearizable by default: ReadIndex, served by whichever
//!   replica answers, once it has applied the leader's confirmed commit
//!   index. `stale` reads answer from the local applied state at once.
//! - **Bootstrap**: whenever a replica becomes leader it proposes the
//!   operator digest from its token file (kept if one is already set) and
//!   the configured regions missing from the registry.
//!
//! [`ClusterDriver`] owns the spawned node and the peer listener; the
//! [`Cluster`] handle is what the HTTP layer holds.

pub mod machine;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_consensus::{
    central_peer_policy, forward_fn, serve_peers, Forwarder, Handle, MembershipConfig, NodeConfig,
    NodeError, ProposeError, QuicTransport, RaftMetrics, RaftNode, RaftStatus, INBOX_CAPACITY,
};
use strata_net::handshake::HandshakeMetrics;
use strata_protocol::{ForwardReply, NodeIdentity, NodeKind, ReplicaInfo};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use machine::{CentralMachine, CentralMachineError, Published};

use crate::state::{CentralState, Command, Outcome};

/// The name of central's Raft group (in errors and status).
pub const GROUP: &str = "central";
/// Pause between retries while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a replicated write or read did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No leader answered within the deadline (an election is running or
    /// a majority is down); the write may or may not have been applied.
    #[error("central replica {id}: no leader within {after:?}: {last}")]
    Unavailable {
        /// This replica.
        id: u64,
        /// The deadline.
        after: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The command was refused by Raft itself (not by the state).
    #[error("central replica {id}: {reason}")]
    Rejected {
        /// This replica.
        id: u64,
        /// Why.
        reason: String,
    },
}

/// How a replica reaches its group, from `[cluster]`.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This replica's id.
    pub id: u64,
    /// Every member (this one included).
    pub members: Vec<ReplicaInfo>,
    /// Raft log and state file directory.
    pub dir: PathBuf,
    /// One Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before an election.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Entries between state file writes.
    pub checkpoint_every: u64,
    /// Deadline of one write or read (retries included).
    pub request_timeout: Duration,
}

/// A cheap, cloneable handle on this replica of central's group.
#[derive(Clone)]
pub struct Cluster {
    id: u64,
    handle: Handle<CentralMachine>,
    forwarder: Arc<Forwarder>,
    published: watch::Receiver<Published>,
    timeout: Duration,
    /// One forward attempt's deadline: an election timeout. A leader that
    /// died does not answer; by then the survivors name the next one.
    forward_timeout: Duration,
    /// How often a forward in flight checks that this replica's Raft still
    /// names the same leader (a Raft tick).
    leader_check: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).finish()
    }
}

impl Cluster {
    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the machine published last (operator digest, leadership).
    pub fn published(&self) -> watch::Receiver<Published> {
        self.published.clone()
    }

    fn unavailable(&self, last: String) -> ClusterError {
        ClusterError::Unavailable {
            id: self.id,
            after: self.timeout,
            last,
        }
    }

    /// Applies `cmd` through the leader, wherever it is; retries while no
    /// leader is known, until the request deadline.
    pub async fn propose(&self, cmd: &Command) -> Result<Outcome, ClusterError> {
        let deadline = Instant::now() + self.timeout;
        let data = cmd.encode();
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match self.handle.propose(data.clone()).await {
                Ok(o) => return Ok(o),
                Err(ProposeError::NotLeader {
                    leader: Some(hint), ..
                }) => {
                    let to = hint.hub_id;
                    let addr = self
                        .handle
                        .with(move |n, _| {
                            n.members()
                                .iter()
                                .find(|m| m.id == to)
                                .map(|m| m.peer_addr.clone())
                        })
                        .await
                        .ok()
                        .flatten();
                    let Some(addr) = addr else {
                        last = format!("leader {to} has no known peer address");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    };
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .min(self.forward_timeout);
                    // A forward to a leader that died waits for its whole
                    // deadline; give it up as soon as this replica's own Raft
                    // stops naming that leader (it campaigned, or heard of a
                    // new one), so the write goes to the new leader about an
                    // election timeout after the old one died.
                    let forward = self.forwarder.forward(to, &addr, data.clone(), left);
                    let replaced = self.leader_replaced(to);
                    let reply = tokio::select! {
                        r = forward => r,
                        () = replaced => {
                            last = format!("replica {to} stopped leading during the forward");
                            continue;
                        }
                    };
                    match reply {
                        Ok(ForwardReply::Applied(bytes)) => {
                            return machine::decode_outcome(&bytes).ok_or_else(|| {
                                ClusterError::Rejected {
                                    id: self.id,
                                    reason: "undecodable answer from the leader".into(),
                                }
                            })
                        }
                        Ok(ForwardReply::Rejected(reason)) => {
                            return Err(ClusterError::Rejected {
                                id: self.id,
                                reason,
                            })
                        }
                        Ok(ForwardReply::NotLeader { .. }) => {
                            last = format!("replica {to} no longer leads");
                        }
                        Ok(ForwardReply::Unavailable(r)) => last = r,
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(ProposeError::Rejected { reason, .. }) => {
                    return Err(ClusterError::Rejected {
                        id: self.id,
                        reason,
                    })
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(self.unavailable(last))
    }

    /// Resolves once this replica's Raft names a leader other than `was`
    /// (or none): checked every Raft tick.
    async fn leader_replaced(&self, was: u64) {
        loop {
            tokio::time::sleep(self.leader_check).await;
            match self.handle.status().await {
                Ok(s) if s.leader == Some(was) => {}
                Ok(_) => return,
                // The Raft thread is gone: the forward's own deadline
                // decides.
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }

    /// Runs `f` over the replicated state: linearizable (ReadIndex) unless
    /// `stale`, which answers from this replica's applied state at once.
    pub async fn read<R: Send + 'static>(
        &self,
        stale: bool,
        f: impl Fn(&CentralState) -> R + Send + Sync + Clone + 'static,
    ) -> Result<R, ClusterError> {
        if stale {
            return self
                .handle
                .with(move |n, _| f(n.machine().state()))
                .await
                .map_err(|e| self.unavailable(e.to_string()));
        }
        let deadline = Instant::now() + self.timeout;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            let g = f.clone();
            match self.handle.read(move |n| g(n.machine().state())).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(self.unavailable(last))
    }

    /// This replica's Raft status.
    pub async fn status(&self) -> Result<RaftStatus, ClusterError> {
        self.handle
            .status()
            .await
            .map_err(|e| self.unavailable(e.to_string()))
    }
}

/// Everything a running replica group member needs from central's wiring.
pub struct ClusterParts {
    /// The handle for the HTTP layer.
    pub cluster: Cluster,
    /// Resolves when the node stops (with its fatal error, if any).
    pub done: tokio::sync::oneshot::Receiver<Result<(), NodeError>>,
    /// The bound peer address.
    pub peer_addr: SocketAddr,
}

/// Errors starting the replica.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The node could not open its log or state.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The node thread could not start or died while opening.
    #[error("central replica {id}: raft thread: {reason}")]
    Thread {
        /// Replica id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// The data directory could not be created private.
    #[error("central replica {id}: {source}")]
    Dir {
        /// Replica id.
        id: u64,
        /// Why.
        source: strata_net::files::FilesError,
    },
}

/// Starts this replica: opens the log and state under `settings.dir`,
/// serves peers on `peer_ep` and spawns the node thread.
pub async fn start(
    settings: ClusterSettings,
    peer_ep: quinn::Endpoint,
    handshakes: HandshakeMetrics,
    metrics: RaftMetrics,
    shutdown: CancellationToken,
) -> Result<ClusterParts, StartError> {
    let id = settings.id;
    strata_net::files::create_private_dir(&settings.dir)
        .map_err(|source| StartError::Dir { id, source })?;
    let raft_dir = settings.dir.join("raft");
    strata_net::files::create_private_dir(&raft_dir)
        .map_err(|source| StartError::Dir { id, source })?;
    let me = NodeIdentity {
        kind: NodeKind::Central,
        id: format!("central-{id}"),
        region: String::new(),
    };
    let peer_addr = peer_ep.local_addr().map_err(|e| StartError::Thread {
        id,
        reason: format!("peer endpoint: {e}"),
    })?;
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let transport = QuicTransport::new(
        id,
        peer_ep.clone(),
        me.clone(),
        tx.clone(),
        tokio::runtime::Handle::current(),
        shutdown.clone(),
    );
    let node_cfg = NodeConfig {
        group: GROUP.into(),
        id,
        raft_dir,
        initial_members: settings.members.clone(),
        join: false,
        election_ticks: settings.election_ticks,
        heartbeat_ticks: settings.heartbeat_ticks,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        log_retain_entries: 1024,
        membership: MembershipConfig::default(),
    };
    let (publish_tx, publish_rx) = watch::channel(Published::default());
    let (dir, every) = (settings.dir.clone(), settings.checkpoint_every);
    let open = move || {
        let machine =
            CentralMachine::open(id, dir, every, publish_tx).map_err(|e| NodeError::Machine {
                id,
                index: 0,
                source: Box::new(e),
            })?;
        RaftNode::open(node_cfg, machine, Box::new(transport), metrics)
    };
    let single = settings.members.len() <= 1;
    let on_open = move |node: &mut RaftNode<CentralMachine>| {
        if single {
            // A group of one elects itself at once.
            let _ = node.campaign();
        }
    };
    let spawned = strata_consensus::spawn(id, open, on_open, rx, settings.tick, shutdown.clone())
        .map_err(|e| StartError::Thread {
        id,
        reason: e.to_string(),
    })?;
    spawned.opened.await.map_err(|_| StartError::Thread {
        id,
        reason: "died while opening".into(),
    })??;
    let handle = Handle::new(tx.clone(), GROUP.into());
    tokio::spawn(serve_peers(
        peer_ep.clone(),
        me.clone(),
        handshakes,
        central_peer_policy,
        tx,
        Some(forward_fn(handle.clone(), machine::encode_outcome)),
        shutdown,
    ));
    let cluster = Cluster {
        id,
        handle,
        forwarder: Arc::new(Forwarder::new(peer_ep, me)),
        published: publish_rx,
        timeout: settings.request_timeout,
        forward_timeout: settings.tick * settings.election_ticks as u32,
        leader_check: settings.tick,
    };
    Ok(ClusterParts {
        cluster,
        done: spawned.done,
        peer_addr,
    })
}

/// Proposes the bootstrap commands each time this replica becomes leader:
/// the operator digest (set only if none is) and every configured region
/// the registry lacks. Runs until `shutdown`.
pub async fn bootstrap(
    cluster: Cluster,
    operator: [u8; 32],
    regions: Vec<(String, Vec<String>)>,
    clock: crate::http::Clock,
    shutdown: CancellationToken,
) {
    let mut published = cluster.published();
    loop {
        if published.borrow_and_update().leader {
            let mut cmds = vec![Command::SetOperator {
                digest: operator,
                replace: false,
            }];
            let known = cluster
                .read(true, |s| s.regions().keys().cloned().collect::<Vec<_>>())
                .await
                .unwrap_or_default();
            for (name, hubs) in &regions {
                if !known.contains(name) {
                    cmds.push(Command::PutRegion {
                        name: name.clone(),
                        hubs: hubs.clone(),
                        now_ms: clock(),
                    });
                }
            }
            for cmd in cmds {
                if let Err(e) = cluster.propose(&cmd).await {
                    tracing::warn!(error = %e, "central bootstrap write failed; retried at the next leadership");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = published.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests;
