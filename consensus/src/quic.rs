//! Raft peer links over QUIC with mutual TLS (strata-net).
//!
//! Outbound: one connection per peer, one long-lived unidirectional stream
//! carrying [`PeerFrame::Raft`] frames, one frame per peer per Ready (more
//! are coalesced into one write when queued). A link reconnects with
//! exponential backoff; while it is down, messages are dropped and the peer
//! reported unreachable so raft probes gently.
//!
//! Frames are cut at [`FrameLimits::frame_target`] bytes. A message larger than that
//! (a snapshot, or an append carrying one huge entry) goes on its own
//! unidirectional stream: a first `PeerFrame::Raft(vec![])` (never sent
//! otherwise) marks the stream as chunked, each following frame holds one
//! chunk of the encoded message, and the end of the stream ends it. It runs
//! beside the message stream, so heartbeats are not stuck behind it, and a
//! snapshot's delivery status is reported back to raft.
//!
//! Inbound: [`serve_peers`] accepts connections its peer policy allows (a
//! region's hubs: [`hub_peer_policy`]; central's replicas: the caller's) and
//! feeds every decoded message to the node as [`PeerEvent::Step`].
//!
//! Generic in the node's inbox type `T` (anything a [`PeerEvent`] converts
//! into), so this file does not depend on the machine.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use strata_net::handshake::HandshakeMetrics;
use strata_net::rpc::{read_frame, write_raw};
use strata_protocol::{frame, NodeIdentity, NodeKind, PeerFrame, RefuseReason, ReplicaInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::node::PeerEvent;
use crate::transport::Transport;

/// Frames queued per peer before messages are dropped (raft retries).
const LINK_QUEUE: usize = 256;
/// Coalesce queued frames into one write up to this many bytes.
const COALESCE_BYTES: usize = 1024 * 1024;
/// Largest [`FrameLimits::frame_target`]: half the 16 MiB frame limit
/// leaves room for the framing overhead.
pub const MAX_FRAME_TARGET: usize = 8 * 1024 * 1024;

/// How the sender cuts messages into frames (the receiver needs no
/// settings: it reassembles whatever arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// A frame of ordinary messages is cut at this size, and a single
    /// message above it goes on a chunked stream. At most
    /// [`MAX_FRAME_TARGET`].
    pub frame_target: usize,
    /// Bytes of a large message per frame on a chunked stream.
    pub chunk: usize,
}

impl FrameLimits {
    /// Limits cutting frames at `frame_target` bytes (clamped to
    /// 1 KiB..=[`MAX_FRAME_TARGET`]), with chunks of half that.
    pub fn with_frame_target(frame_target: usize) -> Self {
        let frame_target = frame_target.clamp(1024, MAX_FRAME_TARGET);
        FrameLimits {
            frame_target,
            chunk: frame_target / 2,
        }
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits::with_frame_target(MAX_FRAME_TARGET)
    }
}
/// Largest message reassembled from a chunked stream (4 GiB).
const MAX_CHUNKED_MESSAGE: usize = 4 << 30;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

enum Outgoing {
    /// A frame of ordinary messages.
    Frame(Vec<u8>),
    /// One encoded message too large for a frame (a snapshot, or an append
    /// with one huge entry), sent on its own chunked stream.
    Large {
        /// The encoded `eraftpb::Message`.
        bytes: Vec<u8>,
        /// Whether it is a `MsgSnapshot` (its status is reported to raft).
        snapshot: bool,
    },
}

/// Encoded messages of one frame, and their total size.
type FrameFill = (Vec<Vec<u8>>, usize);

struct Link {
    peer_addr: String,
    tx: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
}

/// The QUIC [`Transport`].
pub struct QuicTransport<T> {
    me: u64,
    endpoint: quinn::Endpoint,
    identity: NodeIdentity,
    inbox: mpsc::Sender<T>,
    rt: tokio::runtime::Handle,
    links: HashMap<u64, Link>,
    shutdown: CancellationToken,
    limits: FrameLimits,
}

impl<T: From<PeerEvent> + Send + 'static> QuicTransport<T> {
    /// A transport dialing from `endpoint` as `identity`; reports go to
    /// `inbox`; link tasks run on `rt` until `shutdown`.
    pub fn new(
        me: u64,
        endpoint: quinn::Endpoint,
        identity: NodeIdentity,
        inbox: mpsc::Sender<T>,
        rt: tokio::runtime::Handle,
        shutdown: CancellationToken,
    ) -> Self {
        QuicTransport {
            me,
            endpoint,
            identity,
            inbox,
            rt,
            links: HashMap::new(),
            shutdown,
            limits: FrameLimits::default(),
        }
    }

    /// Cuts frames with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    fn report(&self, to: u64, snapshot: bool) {
        report(&self.inbox, &self.rt, to, snapshot);
    }
}

fn report<T: From<PeerEvent> + Send + 'static>(
    inbox: &mpsc::Sender<T>,
    rt: &tokio::runtime::Handle,
    to: u64,
    snapshot: bool,
) {
    // Best effort: a full inbox means the node is busy, and raft copes
    // with a lost unreachable report by probing again.
    let _ = inbox.try_send(PeerEvent::Unreachable(to).into());
    if snapshot {
        // A lost snapshot failure would leave the peer waiting for that
        // snapshot for ever: deliver it even if the inbox is full.
        let inbox = inbox.clone();
        rt.spawn(async move {
            let _ = inbox
                .send(
                    PeerEvent::SnapshotStatus {
                        to,
                        delivered: false,
                    }
                    .into(),
                )
                .await;
        });
    }
}

impl<T: From<PeerEvent> + Send + 'static> Transport for QuicTransport<T> {
    fn send(&mut self, msgs: Vec<Message>) {
        // Per peer: frames being filled, each with its payload size.
        let mut per_peer: BTreeMap<u64, Vec<FrameFill>> = BTreeMap::new();
        for m in msgs {
            let bytes = match m.write_to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(to = m.to, error = %e, "cannot encode raft message");
                    continue;
                }
            };
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            if snapshot || bytes.len() > self.limits.frame_target {
                let queued = self
                    .links
                    .get(&m.to)
                    .is_some_and(|l| l.tx.try_send(Outgoing::Large { bytes, snapshot }).is_ok());
                if !queued {
                    self.report(m.to, snapshot);
                }
                continue;
            }
            let frames = per_peer.entry(m.to).or_default();
            match frames.last_mut() {
                Some((msgs, size)) if *size + bytes.len() <= self.limits.frame_target => {
                    *size += bytes.len();
                    msgs.push(bytes);
                }
                _ => {
                    let len = bytes.len();
                    frames.push((vec![bytes], len));
                }
            }
        }
        for (to, frames) in per_peer {
            let Some(link) = self.links.get(&to) else {
                self.report(to, false);
                continue;
            };
            for (msgs, _) in frames {
                // At most `frame_target` of payload: within the frame limit.
                let Ok(frame) = frame::frame_to_vec(&PeerFrame::Raft(msgs)) else {
                    continue;
                };
                if link.tx.try_send(Outgoing::Frame(frame)).is_err() {
                    self.report(to, false);
                    break;
                }
            }
        }
    }

    fn reconnect(&mut self, peer: u64) {
        // Dropping the link cancels its task (and with it the dead
        // connection); the next update dials a fresh one.
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        link.cancel.cancel();
        self.spawn_link(peer, link.peer_addr);
    }

    fn update_peers(&mut self, members: &[ReplicaInfo]) {
        let wanted: HashMap<u64, &ReplicaInfo> = members
            .iter()
            .filter(|m| m.id != self.me && !m.peer_addr.is_empty())
            .map(|m| (m.id, m))
            .collect();
        self.links.retain(|id, link| {
            let keep = wanted
                .get(id)
                .is_some_and(|m| m.peer_addr == link.peer_addr);
            if !keep {
                link.cancel.cancel();
            }
            keep
        });
        for (id, m) in wanted {
            if !self.links.contains_key(&id) {
                self.spawn_link(id, m.peer_addr.clone());
            }
        }
    }
}

impl<T: From<PeerEvent> + Send + 'static> QuicTransport<T> {
    /// Starts the link task to peer `id` at `addr` and records it.
    fn spawn_link(&mut self, id: u64, addr: String) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let cancel = self.shutdown.child_token();
        let task = LinkTask {
            to: id,
            addr: addr.clone(),
            endpoint: self.endpoint.clone(),
            identity: self.identity.clone(),
            inbox: self.inbox.clone(),
            cancel: cancel.clone(),
            chunk: self.limits.chunk,
        };
        self.rt.spawn(task.run(rx));
        self.links.insert(
            id,
            Link {
                peer_addr: addr,
                tx,
                cancel,
            },
        );
    }
}

impl<T> Drop for QuicTransport<T> {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.cancel.cancel();
        }
    }
}

struct LinkTask<T> {
    to: u64,
    addr: String,
    endpoint: quinn::Endpoint,
    identity: NodeIdentity,
    inbox: mpsc::Sender<T>,
    cancel: CancellationToken,
    chunk: usize,
}

impl<T: From<PeerEvent> + Send + 'static> LinkTask<T> {
    async fn connect(&self) -> Result<(quinn::Connection, quinn::SendStream), String> {
        let sock = tokio::net::lookup_host(&self.addr)
            .await
            .map_err(|e| format!("resolve {}: {e}", self.addr))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.addr))?;
        let (conn, _) = strata_net::connect(&self.endpoint, sock, &self.identity)
            .await
            .map_err(|e| e.to_string())?;
        let send = conn.open_uni().await.map_err(|e| e.to_string())?;
        Ok((conn, send))
    }

    /// Drops whatever is queued while the link is down.
    fn discard_queued(&self, rx: &mut mpsc::Receiver<Outgoing>) {
        let mut snapshot = false;
        while let Ok(o) = rx.try_recv() {
            snapshot |= matches!(o, Outgoing::Large { snapshot: true, .. });
        }
        report(
            &self.inbox,
            &tokio::runtime::Handle::current(),
            self.to,
            snapshot,
        );
    }

    async fn run(self, mut rx: mpsc::Receiver<Outgoing>) {
        let mut backoff = BACKOFF_MIN;
        'connect: loop {
            let (conn, mut send) = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = self.connect() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(peer = self.to, addr = %self.addr, error = %e, "peer link down");
                        self.discard_queued(&mut rx);
                        tokio::select! {
                            _ = self.cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue 'connect;
                    }
                }
            };
            backoff = BACKOFF_MIN;
            tracing::debug!(peer = self.to, addr = %self.addr, "peer link up");
            loop {
                let first = tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    o = rx.recv() => match o { Some(o) => o, None => return },
                };
                let mut buf = Vec::new();
                let mut next = Some(first);
                while let Some(o) = next.take() {
                    match o {
                        Outgoing::Frame(f) => buf.extend_from_slice(&f),
                        Outgoing::Large { bytes, snapshot } => {
                            self.spawn_large(conn.clone(), bytes, snapshot)
                        }
                    }
                    if buf.len() < COALESCE_BYTES {
                        next = rx.try_recv().ok();
                    }
                }
                if buf.is_empty() {
                    continue;
                }
                if let Err(e) = write_raw(&mut send, &buf, &self.addr).await {
                    tracing::debug!(peer = self.to, error = %e, "peer stream failed; reconnecting");
                    report(
                        &self.inbox,
                        &tokio::runtime::Handle::current(),
                        self.to,
                        false,
                    );
                    continue 'connect;
                }
            }
        }
    }
}

impl<T: From<PeerEvent> + Send + 'static> LinkTask<T> {
    /// Sends one large message on its own chunked stream, beside the
    /// message stream; a snapshot's outcome is reported to raft.
    fn spawn_large(&self, conn: quinn::Connection, bytes: Vec<u8>, snapshot: bool) {
        let (to, addr, inbox, chunk) = (self.to, self.addr.clone(), self.inbox.clone(), self.chunk);
        tokio::spawn(async move {
            let r = send_chunked(&conn, &bytes, chunk, &addr).await;
            if let Err(e) = &r {
                tracing::warn!(peer = to, error = %e, snapshot, "large raft message not delivered");
                let _ = inbox.try_send(PeerEvent::Unreachable(to).into());
            }
            if snapshot {
                let _ = inbox
                    .send(
                        PeerEvent::SnapshotStatus {
                            to,
                            delivered: r.is_ok(),
                        }
                        .into(),
                    )
                    .await;
            }
        });
    }
}

async fn send_chunked(
    conn: &quinn::Connection,
    bytes: &[u8],
    chunk: usize,
    addr: &str,
) -> Result<(), String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    let marker = frame::frame_to_vec(&PeerFrame::Raft(Vec::new())).map_err(|e| e.to_string())?;
    write_raw(&mut send, &marker, addr)
        .await
        .map_err(|e| e.to_string())?;
    for chunk in bytes.chunks(chunk.max(1)) {
        let f = frame::frame_to_vec(&PeerFrame::Raft(vec![chunk.to_vec()]))
            .map_err(|e| e.to_string())?;
        write_raw(&mut send, &f, addr)
            .await
            .map_err(|e| e.to_string())?;
    }
    send.finish().map_err(|e| e.to_string())?;
    // Delivered means the peer has read everything we wrote.
    send.stopped().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Who may open a peer link: `(peer, me)`.
pub type PeerPolicy = fn(&NodeIdentity, &NodeIdentity) -> Result<(), RefuseReason>;

/// Accepts peer connections on `endpoint` that `policy` allows, and steps
/// their messages into the node until `shutdown`.
///
/// With `forward`, a peer may also open a bidirectional stream carrying one
/// [`PeerFrame::Forward`] (a follower handing a proposal to the leader),
/// answered by one [`PeerFrame::Forwarded`] (see `forward.rs`).
pub async fn serve_peers<T: From<PeerEvent> + Send + 'static>(
    endpoint: quinn::Endpoint,
    me: NodeIdentity,
    handshakes: HandshakeMetrics,
    policy: PeerPolicy,
    inbox: mpsc::Sender<T>,
    forward: Option<crate::forward::ForwardFn>,
    shutdown: CancellationToken,
) {
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => return,
            i = endpoint.accept() => match i { Some(i) => i, None => return },
        };
        let (me, handshakes, inbox, forward, shutdown) = (
            me.clone(),
            handshakes.clone(),
            inbox.clone(),
            forward.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let allow = |n: &NodeIdentity| policy(n, &me);
            let (conn, hello) = match strata_net::handshake::accept_hello(
                incoming,
                &me,
                &handshakes,
                allow,
            )
            .await
            {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "peer handshake failed");
                    return;
                }
            };
            let peer = hello.node;
            if let Some(from) = raft_id(&peer.id) {
                // Best effort, like every report: a lost one only delays
                // the redial until the old link times out.
                let _ = inbox.try_send(
                    PeerEvent::Connected {
                        from,
                        boot: hello.boot,
                    }
                    .into(),
                );
            }
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = conn.accept_uni() => match r {
                        Ok(recv) => {
                            tokio::spawn(read_peer_stream(recv, peer.id.clone(), inbox.clone()));
                        }
                        Err(_) => return,
                    },
                    r = conn.accept_bi(), if forward.is_some() => match (r, &forward) {
                        (Ok((send, recv)), Some(f)) => {
                            tokio::spawn(crate::forward::serve_one(send, recv, peer.id.clone(), f.clone()));
                        }
                        _ => return,
                    },
                }
            }
        });
    }
}

/// The Raft id in a peer's node id: a hub says `3`, a central replica
/// `central-3`.
fn raft_id(id: &str) -> Option<u64> {
    id.rsplit('-').next()?.parse().ok()
}

/// Only hubs of this region may open a hub's peer links.
pub fn hub_peer_policy(n: &NodeIdentity, me: &NodeIdentity) -> Result<(), RefuseReason> {
    same_kind_and_region(n, me, NodeKind::Hub)
}

/// Only central replicas may open central's peer links.
pub fn central_peer_policy(n: &NodeIdentity, me: &NodeIdentity) -> Result<(), RefuseReason> {
    same_kind_and_region(n, me, NodeKind::Central)
}

fn same_kind_and_region(
    n: &NodeIdentity,
    me: &NodeIdentity,
    kind: NodeKind,
) -> Result<(), RefuseReason> {
    let region = &me.region;
    if n.kind != kind {
        return Err(RefuseReason::KindNotAllowed { kind: n.kind });
    }
    if &n.region != region {
        return Err(RefuseReason::WrongRegion {
            node: n.id.clone(),
            client_region: n.region.clone(),
            server_region: region.to_owned(),
        });
    }
    Ok(())
}

async fn read_peer_stream<T: From<PeerEvent> + Send + 'static>(
    mut recv: quinn::RecvStream,
    peer: String,
    inbox: mpsc::Sender<T>,
) {
    loop {
        match read_frame::<PeerFrame>(&mut recv, &peer).await {
            Ok(Some(PeerFrame::Raft(msgs))) if msgs.is_empty() => {
                // The chunked-stream marker.
                read_chunked_stream(recv, &peer, &inbox).await;
                return;
            }
            Ok(Some(PeerFrame::Forward(_) | PeerFrame::Forwarded(_))) => {
                tracing::warn!(%peer, "forward frame on a raft stream; stream dropped");
                return;
            }
            Ok(Some(PeerFrame::Raft(msgs))) => {
                for b in msgs {
                    match Message::parse_from_bytes(&b) {
                        Ok(m) => {
                            if inbox.send(PeerEvent::Step(m).into()).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "undecodable raft message dropped")
                        }
                    }
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "peer stream ended");
                return;
            }
        }
    }
}

/// Reassembles the one message of a chunked stream.
async fn read_chunked_stream<T: From<PeerEvent> + Send + 'static>(
    mut recv: quinn::RecvStream,
    peer: &str,
    inbox: &mpsc::Sender<T>,
) {
    let mut bytes = Vec::new();
    loop {
        match read_frame::<PeerFrame>(&mut recv, peer).await {
            Ok(Some(PeerFrame::Forward(_) | PeerFrame::Forwarded(_))) => {
                tracing::warn!(%peer, "forward frame on a chunked stream; dropped");
                return;
            }
            Ok(Some(PeerFrame::Raft(chunks))) => {
                for c in chunks {
                    bytes.extend_from_slice(&c);
                }
                if bytes.len() > MAX_CHUNKED_MESSAGE {
                    tracing::warn!(%peer, "message exceeds {MAX_CHUNKED_MESSAGE} bytes; dropped");
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "chunked stream broken");
                return;
            }
        }
    }
    match Message::parse_from_bytes(&bytes) {
        Ok(m) => {
            tracing::info!(%peer, bytes = bytes.len(), "received chunked message");
            let _ = inbox.send(PeerEvent::Step(m).into()).await;
        }
        Err(e) => tracing::warn!(%peer, error = %e, "undecodable chunked message dropped"),
    }
}

#[cfg(test)]
mod raft_id_tests {
    use super::raft_id;

    #[test]
    fn hub_and_central_peer_ids_name_their_raft_id() {
        assert_eq!(raft_id("3"), Some(3));
        assert_eq!(raft_id("central-12"), Some(12));
        assert_eq!(raft_id("edge-a"), None);
        assert_eq!(raft_id(""), None);
    }
}
