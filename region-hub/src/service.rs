//! The client-facing QUIC server: edges and central (or tools) connect to
//! any replica.
//!
//! After the handshake (wrong region or version refused), every
//! bidirectional stream carries one request and one response: an
//! [`EdgeRequest`] from an edge, a [`HubRequest`] from anyone else. Streams
//! are served concurrently; thousands of batches in flight become a few
//! Raft Readies on the node.
//!
//! Writes (batches, membership, artifacts, monitor submits and deletes) go
//! through the leader; a follower answers `NotLeader` with the leader's
//! client address. Heartbeats too, but the leader keeps them as soft state
//! in its failure detector (`crate::liveness`) instead of replicating
//! them. Reads (`ListEdges`, `ListDevices`, `Query`, `Status`, monitors,
//! alerts, events, artifacts) are answered by whichever replica is asked,
//! from its applied state (the leader lays its
//! soft edge state over it): a follower may lag the leader by the
//! replication delay (usually milliseconds), and its edge reports by up to
//! `liveness.report-interval`. Central should ask the leader when it needs
//! read-your-writes freshness. An edge's allocations are the exception:
//! only the leader serves them, since fetching them grants leases. So is
//! the region's capacity summary (`RegionSummary`): central's global
//! scheduler wants it as fresh as the region has it.
//!
//! The monitor and artifact handlers live in [`workloads`]; heartbeats,
//! edge connections, the edge list and the event log in [`edges`]; the
//! capacity summary for central's global scheduler (leader only) in
//! [`summary`].

mod edges;
mod summary;
#[cfg(test)]
mod tests;
mod workloads;

use std::sync::Arc;
use std::time::Duration;

use strata_net::handshake::HandshakeMetrics;
use strata_net::rpc::{read_frame_bytes, write_frame};
use strata_protocol::{
    frame, EdgeRequest, EdgeResponse, HubRequest, HubResponse, NodeIdentity, NodeKind,
    RefuseReason, MAX_FRAME_LEN,
};
use tokio_util::sync::CancellationToken;

use crate::fsm::{self, Command, Outcome};
use crate::liveness::LivenessHandle;
use crate::metrics::HubMetrics;
use crate::raft::driver::{now_ms, NodeHandle};
use crate::raft::{MemberChange, NodeView, ProposeError, ReadRequest};

/// Longest a write waits for its commit before answering `Unavailable`
/// (the edge retries; the FSM deduplicates).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The scheduler settings submissions are checked with.
#[derive(Debug, Clone, Copy)]
pub struct SchedSettings {
    /// Ranking and sampling, as the leader's scheduler uses them.
    pub config: strata_sched::SchedulerConfig,
    /// The smallest `placement.replace-after` accepted.
    pub min_replace_after: Duration,
    /// How long a submit waits for the workload's first evaluation, so its
    /// answer shows where it went (it answers without once this passed).
    pub submit_wait: Duration,
}

impl Default for SchedSettings {
    fn default() -> Self {
        SchedSettings {
            config: strata_sched::SchedulerConfig {
                one_per_node: true,
                ..Default::default()
            },
            min_replace_after: Duration::from_secs(1),
            submit_wait: Duration::from_secs(2),
        }
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
    /// submits of one name are admitted against each other's result.
    submit_lock: Arc<tokio::sync::Mutex<()>>,
    /// What admission needs to know of the scheduler.
    sched: SchedSettings,
    /// The node's latest view: leadership, the leader's address, the
    /// applied assignments version and event log end.
    view: tokio::sync::watch::Receiver<NodeView>,
    /// The edge failure detector.
    liveness: LivenessHandle,
    /// This replica's store retention, ms (0: for ever), told to edges in
    /// every heartbeat ack so they refuse readings it would drop at once.
    store_retention_ms: u64,
    /// Checkpoint bounds stamped into batches that carry checkpoints.
    checkpoint_limits: fsm::CheckpointLimits,
    /// When this replica's certificate expires (ms since the epoch), for
    /// status reports.
    cert_expires_ms: Option<i64>,
}

impl Service {
    /// A service for this replica, answering edges from the node's `view`
    /// and feeding their heartbeats and connections to `liveness`.
    pub fn new(
        me: NodeIdentity,
        node: NodeHandle,
        view: tokio::sync::watch::Receiver<NodeView>,
        liveness: LivenessHandle,
        metrics: HubMetrics,
        handshakes: HandshakeMetrics,
    ) -> Self {
        Service {
            me,
            node,
            metrics,
            handshakes,
            submit_lock: Arc::new(tokio::sync::Mutex::new(())),
            sched: SchedSettings::default(),
            view,
            liveness,
            store_retention_ms: 0,
            checkpoint_limits: fsm::CheckpointLimits::default(),
            cert_expires_ms: None,
        }
    }

    /// Reports `expires_ms` as this replica's certificate expiry.
    pub fn with_cert_expiry(mut self, expires_ms: Option<i64>) -> Self {
        self.cert_expires_ms = expires_ms;
        self
    }

    /// Checks submissions with these scheduler settings.
    pub fn with_sched(mut self, sched: SchedSettings) -> Self {
        self.sched = sched;
        self
    }

    /// Holds state checkpoints to these bounds (`[checkpoints]`).
    pub fn with_checkpoint_limits(mut self, limits: fsm::CheckpointLimits) -> Self {
        self.checkpoint_limits = limits;
        self
    }

    /// Announces `retention_ms` (the store's `retention-ms`) to edges.
    pub fn with_store_retention(mut self, retention_ms: u64) -> Self {
        self.store_retention_ms = retention_ms;
        self
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
        // An edge's connections are evidence for the failure detector:
        // how the last one ended says much about why the edge went quiet.
        let edge_conn = match peer.kind {
            NodeKind::Edge => Some(self.liveness.opened(&peer.id).await),
            _ => None,
        };
        loop {
            let (send, recv) = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(e) => {
                        if let Some(id) = edge_conn {
                            self.edge_connection_ended(&peer.id, id, &e).await;
                        }
                        return;
                    }
                },
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
                Ok(req) => self.edge_from(&peer.id, req).await,
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
                group: self.me.region.clone(),
                reason: "timed out waiting for commit".into(),
            }),
        }
    }

    /// Serves one edge request (from an edge named by its request).
    pub async fn edge(&self, req: EdgeRequest) -> EdgeResponse {
        let name = match &req {
            EdgeRequest::Batch(b) => b.edge.clone(),
            EdgeRequest::Heartbeat(s) => s.edge.clone(),
            EdgeRequest::Pulse(h) => h.status.edge.clone(),
            EdgeRequest::FetchAssignments { edge } => edge.clone(),
            EdgeRequest::FetchAllocations { edge } => edge.clone(),
            EdgeRequest::FetchArtifact { .. } => String::new(),
        };
        self.edge_from(&name, req).await
    }

    /// Serves one request of the edge `peer` (its handshake identity).
    pub async fn edge_from(&self, peer: &str, req: EdgeRequest) -> EdgeResponse {
        let (kind, first_seq, count, cmd) = match req {
            EdgeRequest::Batch(batch) => {
                self.liveness.activity(peer);
                (
                    "batch",
                    batch.first_seq,
                    batch.entries.len() as u32,
                    // Only a batch with checkpoints needs the newer kind (and
                    // the limits); others stay readable by older replicas.
                    if batch
                        .entries
                        .iter()
                        .any(|e| matches!(e, strata_protocol::SpoolEntry::Checkpoint(_)))
                    {
                        Command::StoreEntries {
                            batch,
                            received_ms: now_ms(),
                            limits: self.checkpoint_limits,
                        }
                    } else {
                        Command::StoreBatch {
                            batch,
                            received_ms: now_ms(),
                        }
                    },
                )
            }
            EdgeRequest::Heartbeat(status) => return self.heartbeat(peer, status, 0, None).await,
            EdgeRequest::Pulse(h) => {
                return self
                    .heartbeat(peer, h.status, h.boot_id, Some(h.facts))
                    .await
            }
            EdgeRequest::FetchAssignments { edge } => return self.fetch_assignments(edge).await,
            EdgeRequest::FetchAllocations { edge } => {
                return self.fetch_allocations(peer, edge).await
            }
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
            HubRequest::ListEdges => ("list_edges", self.list_edges().await),
            HubRequest::Events {
                from_seq,
                limit,
                wait_ms,
            } => ("events", self.events(from_seq, limit, wait_ms).await),
            HubRequest::RegionSummary { global } => {
                ("region_summary", self.region_summary(global).await)
            }
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
            HubRequest::Status => (
                "status",
                self.node.status().await.map(|mut s| {
                    s.cert_expires_ms = self.cert_expires_ms;
                    HubResponse::Status(s)
                }),
            ),
            HubRequest::ListDevices { tenant } => (
                "list_devices",
                self.node.read(ReadRequest::ListDevices { tenant }).await,
            ),
            HubRequest::SearchDevices(search) => (
                "search_devices",
                self.node.read(ReadRequest::SearchDevices(search)).await,
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
                        group: self.me.region.clone(),
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
            | HubRequest::QueryAlerts(_)
            | HubRequest::ListEdges
            | HubRequest::Events { .. }
            | HubRequest::RegionSummary { .. } => (
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
