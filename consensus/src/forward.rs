//! Writes through the leader from any replica: a follower hands its
//! encoded command to the leader over the Raft peer connection (mutual
//! TLS, the peer policy), one bidirectional stream per proposal, and
//! relays the leader's answer.
//!
//! Only raft's own leader proposes, so the proposer's reply tracking by
//! `(term, index)` stays where the entry is appended. A forwarded command
//! may be applied and its answer lost (the leader dies before replying):
//! the caller sees `Unavailable` and retries, which is why commands must
//! be idempotent (a PUT of the whole record, a set-if-absent).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use strata_net::rpc::{read_frame, write_frame};
use strata_protocol::{ForwardReply, NodeIdentity, PeerFrame};
use tokio::sync::Mutex;

use crate::driver::Handle;
use crate::machine::Machine;
use crate::node::ProposeError;

/// How the leader side turns a forwarded command into an answer.
pub type ForwardFn =
    Arc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = ForwardReply> + Send>> + Send + Sync>;

/// A [`ForwardFn`] that proposes on `handle` and encodes the outcome with
/// `encode`.
pub fn forward_fn<M: Machine>(handle: Handle<M>, encode: fn(&M::Outcome) -> Vec<u8>) -> ForwardFn {
    Arc::new(move |data| {
        let h = handle.clone();
        Box::pin(async move {
            match h.propose(data).await {
                Ok(o) => ForwardReply::Applied(encode(&o)),
                Err(ProposeError::NotLeader { leader, .. }) => ForwardReply::NotLeader { leader },
                Err(ProposeError::Unavailable { reason, .. }) => ForwardReply::Unavailable(reason),
                Err(e @ (ProposeError::Rejected { .. } | ProposeError::Refused { .. })) => {
                    ForwardReply::Rejected(e.to_string())
                }
            }
        })
    })
}

/// Answers one forwarded proposal on its stream.
pub(crate) async fn serve_one(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: String,
    forward: ForwardFn,
) {
    let reply = match read_frame::<PeerFrame>(&mut recv, &peer).await {
        Ok(Some(PeerFrame::Forward(data))) => forward(data).await,
        Ok(_) => ForwardReply::Rejected("expected one forwarded command".into()),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "forwarded command unreadable");
            return;
        }
    };
    if write_frame(&mut send, &PeerFrame::Forwarded(reply), &peer)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// Why a forward got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The leader's peer address could not be dialed or the stream broke.
    #[error("forwarding to replica {to} at {addr}: {reason}")]
    Link {
        /// The replica dialed.
        to: u64,
        /// Its peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("forwarding to replica {to}: no answer within {after:?}")]
    Timeout {
        /// The replica dialed.
        to: u64,
        /// The deadline.
        after: Duration,
    },
}

/// The follower side: one cached connection per peer address.
pub struct Forwarder {
    endpoint: quinn::Endpoint,
    identity: NodeIdentity,
    conns: Mutex<HashMap<String, quinn::Connection>>,
}

impl Forwarder {
    /// Dials peers from `endpoint` as `identity`.
    pub fn new(endpoint: quinn::Endpoint, identity: NodeIdentity) -> Self {
        Forwarder {
            endpoint,
            identity,
            conns: Mutex::new(HashMap::new()),
        }
    }

    async fn connection(&self, to: u64, addr: &str) -> Result<quinn::Connection, ForwardError> {
        let link = |reason: String| ForwardError::Link {
            to,
            addr: addr.to_owned(),
            reason,
        };
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(addr) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let sock: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| link(format!("resolve: {e}")))?
            .next()
            .ok_or_else(|| link("resolves to no address".into()))?;
        let (conn, _) = strata_net::connect(&self.endpoint, sock, &self.identity)
            .await
            .map_err(|e| link(e.to_string()))?;
        conns.insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// Sends `data` to replica `to` at peer address `addr` and waits for
    /// its answer, at most `timeout`.
    pub async fn forward(
        &self,
        to: u64,
        addr: &str,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<ForwardReply, ForwardError> {
        let call = async {
            let conn = self.connection(to, addr).await?;
            let link = |reason: String| ForwardError::Link {
                to,
                addr: addr.to_owned(),
                reason,
            };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| link(e.to_string()))?;
            write_frame(&mut send, &PeerFrame::Forward(data), addr)
                .await
                .map_err(|e| link(e.to_string()))?;
            let _ = send.finish();
            match read_frame::<PeerFrame>(&mut recv, addr).await {
                Ok(Some(PeerFrame::Forwarded(reply))) => Ok(reply),
                Ok(_) => Err(link("no answer on the stream".into())),
                Err(e) => Err(link(e.to_string())),
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => {
                if r.is_err() {
                    // A broken connection is dialed again next time.
                    self.conns.lock().await.remove(addr);
                }
                r
            }
            Err(_) => Err(ForwardError::Timeout { to, after: timeout }),
        }
    }
}
