//! The client-facing QUIC server: edges and central (or tools) connect to
//! any replica.
//!
//! After the handshake (wrong region or version refused), every
//! bidirectional stream carries one request and one response: an
//! [`EdgeRequest`] from an edge, a [`HubRequest`] from anyone else. Streams
//! are served concurrently; thousands of batches in flight become a few
//! Raft Readies on the node.
//!
//! Writes (batches, heartbeats, membership) go through the leader; a
//! follower answers `NotLeader` with the leader's client address. Reads
//! (`ListEdges`, `ListDevices`, `Query`, `Status`) are answered by whichever
//! replica is asked, from its applied state: a follower may lag the leader
//! by the replication delay (usually milliseconds). Central should ask the
//! leader when it needs read-your-writes freshness.

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
}

impl Service {
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
            Ok(Ok(Ok(_))) => EdgeResponse::HeartbeatAck,
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
                EdgeResponse::HeartbeatAck
            }
        }
    }

    /// Serves one edge request.
    pub async fn edge(&self, req: EdgeRequest) -> EdgeResponse {
        let (kind, first_seq, count, cmd) = match req {
            EdgeRequest::Batch(batch) => (
                "batch",
                batch.first_seq,
                batch.records.len() as u32,
                Command::StoreBatch {
                    batch,
                    received_ms: now_ms(),
                },
            ),
            EdgeRequest::Heartbeat(status) => return self.heartbeat(status).await,
        };
        self.metrics.request(kind);
        match self.propose(&cmd).await {
            Ok(Outcome::Committed {
                first_seq, count, ..
            }) => EdgeResponse::Committed { first_seq, count },
            // Skipped cannot happen for a fresh entry; answer for what was
            // sent. (A heartbeat never reaches here.)
            Ok(Outcome::Skipped | Outcome::HeartbeatRecorded) => {
                EdgeResponse::Committed { first_seq, count }
            }
            Err(e) => {
                self.metrics.request_error(kind);
                match e {
                    ProposeError::NotLeader { leader, .. } => EdgeResponse::NotLeader { leader },
                    ProposeError::Unavailable { reason, .. } => {
                        EdgeResponse::Unavailable { reason }
                    }
                    ProposeError::Rejected { reason, .. } => EdgeResponse::Rejected { reason },
                }
            }
        }
    }

    /// Serves one central / tool request.
    pub async fn hub(&self, req: HubRequest) -> HubResponse {
        let (kind, result) = match req {
            HubRequest::Status => ("status", self.node.status().await.map(HubResponse::Status)),
            HubRequest::ListEdges => ("list_edges", self.node.read(ReadRequest::ListEdges).await),
            HubRequest::ListDevices { tenant } => (
                "list_devices",
                self.node.read(ReadRequest::ListDevices { tenant }).await,
            ),
            HubRequest::Query(q) => ("query", self.node.read(ReadRequest::Query(q)).await),
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
        };
        self.metrics.request(kind);
        match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.request_error(kind);
                match e {
                    ProposeError::NotLeader { leader, .. } => HubResponse::NotLeader { leader },
                    e => HubResponse::Error {
                        message: e.to_string(),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(kind: NodeKind, region: &str) -> NodeIdentity {
        NodeIdentity {
            kind,
            id: "x".into(),
            region: region.into(),
        }
    }

    #[test]
    fn client_policy_checks_kind_and_region() {
        assert!(client_policy(&ident(NodeKind::Edge, "r1"), "r1").is_ok());
        assert!(matches!(
            client_policy(&ident(NodeKind::Edge, "r2"), "r1"),
            Err(RefuseReason::WrongRegion { .. })
        ));
        assert!(client_policy(&ident(NodeKind::Central, ""), "r1").is_ok());
        assert!(matches!(
            client_policy(&ident(NodeKind::Hub, "r1"), "r1"),
            Err(RefuseReason::KindNotAllowed { .. })
        ));
    }
}
