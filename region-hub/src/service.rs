//! The client-facing QUIC server: edges and central (or tools) connect to
//! any replica.
//!
//! After the handshake (wrong region or version refused), every
//! bidirectional stream carries one request and one response: an
//! [`EdgeRequest`] from an edge, a [`HubRequest`] from anyone else. Streams
//! are served concurrently; thousands of batches in flight become a few
//! Raft Readies on the node.
//!
//! Writes (batches, heartbeats, membership, artifacts, monitor submits and
//! deletes) go through the leader; a follower answers `NotLeader` with the
//! leader's client address. Reads (`ListEdges`, `ListDevices`, `Query`,
//! `Status`, monitors, alerts, an edge's assignments and artifacts) are
//! answered by whichever replica is asked, from its applied state: a
//! follower may lag the leader by the replication delay (usually
//! milliseconds). Central should ask the leader when it needs
//! read-your-writes freshness.
//!
//! The monitor and artifact handlers live in [`workloads`].

#[cfg(test)]
mod tests;
mod workloads;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata_net::handshake::HandshakeMetrics;
use strata_net::rpc::{read_frame_bytes, write_frame};
use strata_protocol::{
    frame, EdgeRequest, EdgeResponse, EdgeStatus, HubRequest, HubResponse, NodeIdentity, NodeKind,
    RefuseReason, MAX_FRAME_LEN,
};
use tokio_util::sync::CancellationToken;

use crate::fsm::{self, Command, Outcome};
use crate::metrics::HubMetrics;
use crate::raft::driver::{now_ms, NodeHandle};
use crate::raft::{MemberChange, ProposeError, ReadRequest};

/// Longest a write waits for its commit before answering `Unavailable`
/// (the edge retries; the FSM deduplicates).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a heartbeat waits for its Raft commit before it is answered
/// anyway. A heartbeat proves the link and the process alive; making it wait
/// for a busy Raft loop made edges drop healthy connections and resend.
pub const HEARTBEAT_ANSWER: Duration = Duration::from_millis(250);

/// Who may connect to the client port: edges of this region, central and
/// tools (any region). Other hubs use the peer port.
pub fn client_policy(n: &NodeIdentity, region: &str) -> Result<(), RefuseReason> {
    match n.kind {
        NodeKind::Edge if n.region != region => Err(RefuseReason::WrongRegion {
            node: n.id.clone(),
            client_region: n.region.clone(),
            server_region: region.to_owned(),
        }),
        NodeKind::Edge | NodeKind::Central | NodeKind::Tool => Ok(()),
        kind => Err(RefuseReason::KindNotAllowed { kind }),
    }
}

/// State shared by every connection.
#[derive(Clone)]
pub struct Service {
    /// This replica's identity.
    pub me: NodeIdentity,
    /// The Raft node.
    pub node: NodeHandle,
    /// Metrics.
    pub metrics: HubMetrics,
    /// Handshake counters.
    pub handshakes: HandshakeMetrics,
    /// Serialises monitor submits and deletes on this replica, so two
    /// concurrent submits cannot both place into the same free room.
    submit_lock: Arc<tokio::sync::Mutex<()>>,
    /// The last assignments version seen in an applied entry, for
    /// heartbeats answered before their own commit.
    assignments_version: Arc<AtomicU64>,
    /// This replica's store retention, ms (0: for ever), told to edges in
    /// every heartbeat ack so they refuse readings it would drop at once.
    store_retention_ms: u64,
}

impl Service {
    /// A service for this replica.
    pub fn new(
        me: NodeIdentity,
        node: NodeHandle,
        metrics: HubMetrics,
        handshakes: HandshakeMetrics,
    ) -> Self {
        Service {
            me,
            node,
            metrics,
            handshakes,
            submit_lock: Arc::new(tokio::sync::Mutex::new(())),
            assignments_version: Arc::new(AtomicU64::new(0)),
            store_retention_ms: 0,
        }
    }

    /// Announces `retention_ms` (the store's `retention-ms`) to edges.
    pub fn with_store_retention(mut self, retention_ms: u64) -> Self {
        self.store_retention_ms = retention_ms;
        self
    }

    fn note_version(&self, version: u64) {
        self.assignments_version.store(version, Ordering::Relaxed);
    }

    fn ack(&self) -> EdgeResponse {
        EdgeResponse::HeartbeatAck {
            assignments_version: self.assignments_version.load(Ordering::Relaxed),
            store_retention_ms: self.store_retention_ms,
        }
    }

    /// Accepts client connections on `endpoint` until `shutdown`.
    pub async fn serve(self, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => return,
                i = endpoint.accept() => match i { Some(i) => i, None => return },
            };
            let svc = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { svc.connection(incoming, shutdown).await });
        }
    }

    async fn connection(self, incoming: quinn::Incoming, shutdown: CancellationToken) {
        let region = self.me.region.clone();
        let policy = |n: &NodeIdentity| client_policy(n, &region);
        let (conn, peer) =
            match strata_net::accept(incoming, &self.me, &self.handshakes, policy).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "client handshake failed");
                    return;
                }
            };
        loop {
            let (send, recv) = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = conn.accept_bi() => match s { Ok(s) => s, Err(_) => return },
            };
            let svc = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move { svc.stream(peer, send, recv).await });
        }
    }

    async fn stream(
        self,
        peer: NodeIdentity,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let body = match read_frame_bytes(&mut recv, MAX_FRAME_LEN, &peer.id).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                self.metrics.request_error("decode");
                tracing::warn!(peer = %peer.id, error = %e, "unreadable request");
                return;
            }
        };
        let written = if peer.kind == NodeKind::Edge {
            let resp = match frame::decode_body::<EdgeRequest>(&body) {
                Ok(req) => self.edge(req).await,
                Err(e) => {
                    self.metrics.request_error("decode");
                    tracing::warn!(edge = %peer.id, error = %e, "malformed edge request");
                    EdgeResponse::Rejected {
                        reason: format!("malformed request: {e}"),
                    }
                }
            };
            write_frame(&mut send, &resp, &peer.id).await
        } else {
            let resp = match frame::decode_body::<HubRequest>(&body) {
                Ok(req) => self.hub(req).await,
                Err(e) => {
                    self.metrics.request_error("decode");
                    HubResponse::Error {
                        message: format!("malformed request: {e}"),
                    }
                }
            };
            write_frame(&mut send, &resp, &peer.id).await
        };
        match written {
            Ok(()) => {
                let _ = send.finish();
            }
            Err(e) => tracing::debug!(peer = %peer.id, error = %e, "response not delivered"),
        }
    }

    async fn propose(&self, cmd: &Command) -> Result<Outcome, ProposeError> {
        let data = fsm::encode_command(cmd);
        match tokio::time::timeout(COMMIT_TIMEOUT, self.node.propose(data)).await {
            Ok(r) => r,
            Err(_) => Err(ProposeError::Unavailable {
                region: self.me.region.clone(),
                reason: "timed out waiting for commit".into(),
            }),
        }
    }

    /// A heartbeat: recorded through Raft, answered within
    /// [`HEARTBEAT_ANSWER`]. A follower's `NotLeader` comes back at once so
    /// an idle edge still finds the leader; a slow commit is left to finish
    /// in the background and the heartbeat is acknowledged.
    async fn heartbeat(&self, status: EdgeStatus) -> EdgeResponse {
        self.metrics.request("heartbeat");
        let data = fsm::encode_command(&Command::EdgeHeartbeat {
            status,
            received_ms: now_ms(),
        });
        let node = self.node.clone();
        let mut commit =
            Box::pin(async move { tokio::time::timeout(COMMIT_TIMEOUT, node.propose(data)).await });
        match tokio::time::timeout(HEARTBEAT_ANSWER, &mut commit).await {
            Ok(Ok(Ok(Outcome::HeartbeatRecorded {
                assignments_version,
            }))) => {
                self.note_version(assignments_version);
                EdgeResponse::HeartbeatAck {
                    assignments_version,
                    store_retention_ms: self.store_retention_ms,
                }
            }
            Ok(Ok(Ok(_))) => self.ack(),
            Ok(Ok(Err(ProposeError::NotLeader { leader, .. }))) => {
                EdgeResponse::NotLeader { leader }
            }
            Ok(Ok(Err(e))) => {
                self.metrics.request_error("heartbeat");
                EdgeResponse::Unavailable {
                    reason: e.to_string(),
                }
            }
            Ok(Err(_)) => {
                self.metrics.request_error("heartbeat");
                EdgeResponse::Unavailable {
                    reason: "timed out waiting for commit".into(),
                }
            }
            Err(_) => {
                // The commit is slow but this replica is serving: keep the
                // edge's link, let the record land when Raft catches up.
                tokio::spawn(commit);
                self.ack()
            }
        }
    }

    /// Serves one edge request.
    pub async fn edge(&self, req: EdgeRequest) -> EdgeResponse {
        let (kind, first_seq, count, cmd) = match req {
            EdgeRequest::Batch(batch) => (
                "batch",
                batch.first_seq,
                batch.entries.len() as u32,
                Command::StoreBatch {
                    batch,
                    received_ms: now_ms(),
                },
            ),
            EdgeRequest::Heartbeat(status) => return self.heartbeat(status).await,
            EdgeRequest::FetchAssignments { edge } => return self.fetch_assignments(edge).await,
            EdgeRequest::FetchArtifact { sha256 } => return self.fetch_artifact(sha256).await,
        };
        self.metrics.request(kind);
        match self.propose(&cmd).await {
            Ok(Outcome::Committed {
                first_seq, count, ..
            }) => EdgeResponse::Committed { first_seq, count },
            // Skipped cannot happen for a fresh entry; answer for what was
            // sent. (Other outcomes belong to other commands.)
            Ok(_) => EdgeResponse::Committed { first_seq, count },
            Err(e) => {
                self.metrics.request_error(kind);
                match e {
                    ProposeError::NotLeader { leader, .. } => EdgeResponse::NotLeader { leader },
                    ProposeError::Unavailable { reason, .. } => {
                        EdgeResponse::Unavailable { reason }
                    }
                    ProposeError::Rejected { reason, .. } => EdgeResponse::Rejected { reason },
                    e @ ProposeError::Refused { .. } => EdgeResponse::Rejected {
                        reason: e.to_string(),
                    },
                }
            }
        }
    }

    /// Serves one central / tool request.
    pub async fn hub(&self, req: HubRequest) -> HubResponse {
        let (kind, resp) = match req {
            HubRequest::PutArtifact { bytes } => ("put_artifact", self.put_artifact(bytes).await),
            HubRequest::SubmitMonitor(spec) => ("submit_monitor", self.submit_monitor(spec).await),
            HubRequest::ListMonitors { tenant } => {
                ("list_monitors", self.list_monitors(tenant).await)
            }
            HubRequest::GetMonitor { tenant, name } => {
                ("get_monitor", self.get_monitor(tenant, name).await)
            }
            HubRequest::DeleteMonitor { tenant, name } => {
                ("delete_monitor", self.delete_monitor(tenant, name).await)
            }
            HubRequest::QueryAlerts(q) => ("query_alerts", self.query_alerts(q).await),
            other => return self.hub_core(other).await,
        };
        self.metrics.request(kind);
        match &resp {
            HubResponse::Invalid(e) => {
                self.metrics.request_error(kind);
                tracing::info!(kind, error = %e, "invalid request refused");
            }
            HubResponse::Error { message } => {
                self.metrics.request_error(kind);
                tracing::warn!(kind, %message, "request failed");
            }
            HubResponse::NotLeader { .. } => self.metrics.request_error(kind),
            _ => {}
        }
        resp
    }

    /// Status, reads of edges, devices and telemetry, and membership.
    async fn hub_core(&self, req: HubRequest) -> HubResponse {
        let (kind, result) = match req {
            HubRequest::Status => ("status", self.node.status().await.map(HubResponse::Status)),
            HubRequest::ListEdges => ("list_edges", self.node.read(ReadRequest::ListEdges).await),
            HubRequest::ListDevices { tenant } => (
                "list_devices",
                self.node.read(ReadRequest::ListDevices { tenant }).await,
            ),
            HubRequest::Query(q) => ("query", self.node.read(ReadRequest::Query(q)).await),
            HubRequest::Retention { tenant } => (
                "retention",
                self.node
                    .retention(tenant)
                    .await
                    .map(HubResponse::Retention),
            ),
            HubRequest::AddReplica(info) => {
                let r = if info.id == 0 || info.peer_addr.is_empty() || info.client_addr.is_empty()
                {
                    Err(ProposeError::Rejected {
                        region: self.me.region.clone(),
                        reason: "a replica needs an id ≥ 1, a peer-addr and a client-addr".into(),
                    })
                } else {
                    self.node.change(MemberChange::Add(info)).await
                };
                (
                    "add_replica",
                    r.map(|replicas| HubResponse::ConfChanged { replicas }),
                )
            }
            HubRequest::RemoveReplica { id } => (
                "remove_replica",
                self.node
                    .change(MemberChange::Remove(id))
                    .await
                    .map(|replicas| HubResponse::ConfChanged { replicas }),
            ),
            // Served by `hub`.
            HubRequest::PutArtifact { .. }
            | HubRequest::SubmitMonitor(_)
            | HubRequest::ListMonitors { .. }
            | HubRequest::GetMonitor { .. }
            | HubRequest::DeleteMonitor { .. }
            | HubRequest::QueryAlerts(_) => (
                "decode",
                Ok(HubResponse::Error {
                    message: "internal: request routed to the wrong handler".into(),
                }),
            ),
        };
        self.metrics.request(kind);
        match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.request_error(kind);
                match e {
                    ProposeError::NotLeader { leader, .. } => HubResponse::NotLeader { leader },
                    ProposeError::Refused { refusal, .. } => {
                        HubResponse::MembershipRefused(refusal)
                    }
                    e => HubResponse::Error {
                        message: e.to_string(),
                    },
                }
            }
        }
    }
}
