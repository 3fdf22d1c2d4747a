//! Edge liveness on the service side: heartbeats (into the leader's failure
//! detector, answered at once), how each edge connection ended, the edge
//! list (replicated state with the leader's soft state laid over it) and
//! the region's event log with its long poll.

use std::time::Duration;

use strata_protocol::liveness::CLOSE_EDGE_SHUTDOWN;
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::{EdgeResponse, EdgeStatus, HubResponse};

use super::Service;
use crate::liveness::{self, CloseKind};
use crate::raft::ProposeError;

/// Longest an `Events` request waits for a new event (its `wait_ms` is
/// capped to this).
pub const MAX_EVENTS_WAIT: Duration = Duration::from_secs(60);

/// How a connection error reads as evidence; `None` when this hub closed
/// it (it is stopping), which says nothing about the edge.
pub fn close_kind(e: &quinn::ConnectionError) -> Option<CloseKind> {
    use quinn::ConnectionError as E;
    match e {
        E::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(CLOSE_EDGE_SHUTDOWN) => {
            Some(CloseKind::Shutdown)
        }
        E::Reset => Some(CloseKind::Reset),
        E::TimedOut => Some(CloseKind::TimedOut),
        E::LocallyClosed => None,
        _ => Some(CloseKind::Closed),
    }
}

impl Service {
    /// A heartbeat of `edge` (boot id 0 from an edge older than protocol
    /// 4; `facts` from protocol 5's `Pulse`): the leader records it in its
    /// failure detector and acknowledges with the region's assignments
    /// version and retention, and for a `Pulse` whether it renewed the
    /// edge's leases; a follower redirects, so an idle edge still finds the
    /// leader (and a follower never renews). Never waits for Raft: a
    /// heartbeat proves the link and the process alive.
    pub(super) async fn heartbeat(
        &self,
        edge: &str,
        status: EdgeStatus,
        boot_id: u64,
        facts: Option<NodeFacts>,
    ) -> EdgeResponse {
        self.metrics.request("heartbeat");
        if status.edge != edge {
            self.metrics.request_error("heartbeat");
            return EdgeResponse::Rejected {
                reason: format!(
                    "a heartbeat of edge {:?} on a connection of edge {edge:?}",
                    status.edge
                ),
            };
        }
        let view = self.view.borrow().clone();
        if !view.is_leader {
            return EdgeResponse::NotLeader {
                leader: view.leader,
            };
        }
        let pulse = facts.is_some();
        let renewed = self
            .liveness
            .heartbeat(edge.to_owned(), boot_id, status, facts)
            .await;
        let assignments_version = self.view.borrow().assignments_version;
        if pulse {
            EdgeResponse::PulseAck {
                assignments_version,
                store_retention_ms: self.store_retention_ms,
                lease_renewed: renewed,
            }
        } else {
            EdgeResponse::HeartbeatAck {
                assignments_version,
                store_retention_ms: self.store_retention_ms,
            }
        }
    }

    /// The edge connection `conn` of `edge` ended with `e`.
    pub(super) async fn edge_connection_ended(
        &self,
        edge: &str,
        conn: u64,
        e: &quinn::ConnectionError,
    ) {
        match close_kind(e) {
            Some(how) => {
                tracing::debug!(%edge, conn, error = %e, ?how, "edge connection ended");
                self.liveness.closed(edge, conn, how).await;
            }
            // This hub is stopping: forget the connection, no evidence.
            None => self.liveness.closed(edge, conn, CloseKind::Closed).await,
        }
    }

    /// `ListEdges`: the replicated edges with the leader's soft state.
    pub(super) async fn list_edges(&self) -> HubResponse {
        let soft = self.liveness.view().await;
        match self
            .node
            .with_state(move |v| liveness::view::edge_infos(v.state, &soft))
            .await
        {
            Ok(edges) => HubResponse::Edges(edges),
            Err(e) => failure(e),
        }
    }

    /// `Events`: a page of the event log from `from_seq`, waiting up to
    /// `wait_ms` (capped) for one when there is none yet.
    pub(super) async fn events(&self, from_seq: u64, limit: u32, wait_ms: u32) -> HubResponse {
        let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_EVENTS_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut view = self.view.clone();
        loop {
            let page = self
                .node
                .with_state(move |v| v.state.events().page(from_seq, limit as usize))
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => return failure(e),
            };
            if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
                return HubResponse::Events(page);
            }
            // Nothing at or after from_seq yet: wait until the applied log
            // reaches past it (the node publishes its end on every apply).
            let want = from_seq.max(1);
            let reached =
                tokio::time::timeout_at(deadline, view.wait_for(|v| v.events_end > want)).await;
            match reached {
                Ok(Ok(_)) => {}
                // Deadline passed, or the node stopped: answer what there is.
                Ok(Err(_)) | Err(_) => return HubResponse::Events(page),
            }
        }
    }
}

/// A failed state read as an answer.
pub(super) fn failure(e: ProposeError) -> HubResponse {
    match e {
        ProposeError::NotLeader { leader, .. } => HubResponse::NotLeader { leader },
        e => HubResponse::Error {
            message: e.to_string(),
        },
    }
}
