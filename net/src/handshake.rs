//! The connection handshake: `Hello` → `HelloReply` on the first stream.
//!
//! TLS has already proven that the peer holds a cluster certificate. The
//! handshake adds what TLS cannot: the protocol version and who the peer is
//! (kind, id, region), checked by a caller-supplied policy. Refusals are sent
//! to the client as a reason it can print, counted and logged here.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use strata_protocol::{Hello, HelloReply, NodeIdentity, RefuseReason, PROTOCOL_VERSION};

use crate::rpc::{read_frame, write_frame};
use crate::{NetError, CLUSTER_SERVER_NAME};

/// How long a peer has to complete TLS and the hello exchange.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Application close code sent with a refusal.
pub const CLOSE_REFUSED: u32 = 1;

/// Label for [`HandshakeMetrics::failures`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    /// `tls` (bad or foreign certificate, wrong ALPN), `timeout`, `frame`
    /// (garbage hello), `version`, `policy` (wrong region or kind).
    pub reason: String,
}

/// Counters for handshakes on a server endpoint.
#[derive(Clone, Default)]
pub struct HandshakeMetrics {
    /// Failed inbound handshakes by reason.
    pub failures: Family<FailureLabel, Counter>,
    /// Completed inbound handshakes.
    pub accepted: Counter,
}

impl HandshakeMetrics {
    /// Creates the counters and registers them under `strata_handshake_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = HandshakeMetrics::default();
        registry.register(
            "strata_handshake_failures",
            "Inbound handshakes that failed, by reason",
            m.failures.clone(),
        );
        registry.register(
            "strata_handshake_accepted",
            "Inbound handshakes completed",
            m.accepted.clone(),
        );
        m
    }

    fn fail(&self, reason: &str) {
        self.failures
            .get_or_create(&FailureLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Dials `addr`, completes TLS and the hello exchange, and returns the
/// connection and the server's identity.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    me: &NodeIdentity,
) -> Result<(quinn::Connection, NodeIdentity), NetError> {
    let peer = addr.to_string();
    let fut = async {
        let connecting =
            endpoint
                .connect(addr, CLUSTER_SERVER_NAME)
                .map_err(|e| NetError::Connect {
                    addr: peer.clone(),
                    reason: e.to_string(),
                })?;
        let conn = connecting.await.map_err(|source| NetError::Connection {
            peer: peer.clone(),
            source,
        })?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|source| NetError::Connection {
                peer: peer.clone(),
                source,
            })?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            node: me.clone(),
            boot: boot_id(),
        };
        write_frame(&mut send, &hello, &peer).await?;
        let _ = send.finish();
        match read_frame::<HelloReply>(&mut recv, &peer).await? {
            Some(HelloReply::Welcome { server }) => Ok((conn, server)),
            Some(HelloReply::Refused(reason)) => Err(NetError::Refused {
                peer: peer.clone(),
                reason,
            }),
            None => Err(NetError::NoResponse { peer: peer.clone() }),
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| NetError::HandshakeTimeout { peer: peer.clone() })?
}

/// This process's boot id, sent in every hello: random per process start
/// (not a secret; it only tells one start of a peer from the next).
pub fn boot_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        // RandomState is seeded from the OS per process; time and pid make
        // a collision between two starts vanishingly unlikely.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    })
}

/// Accepts one incoming connection: TLS, then the hello, checked for the
/// protocol version and by `policy`. On refusal the client gets the reason
/// before the connection closes. Every failure is counted and logged.
pub async fn accept(
    incoming: quinn::Incoming,
    me: &NodeIdentity,
    metrics: &HandshakeMetrics,
    policy: impl Fn(&NodeIdentity) -> Result<(), RefuseReason>,
) -> Result<(quinn::Connection, NodeIdentity), NetError> {
    accept_hello(incoming, me, metrics, policy)
        .await
        .map(|(conn, hello)| (conn, hello.node))
}

/// [`accept`], answering with the whole hello (the peer's boot id too).
pub async fn accept_hello(
    incoming: quinn::Incoming,
    me: &NodeIdentity,
    metrics: &HandshakeMetrics,
    policy: impl Fn(&NodeIdentity) -> Result<(), RefuseReason>,
) -> Result<(quinn::Connection, Hello), NetError> {
    let peer = incoming.remote_address().to_string();
    let fut = async {
        let conn = incoming.await.map_err(|source| {
            metrics.fail("tls");
            tracing::warn!(%peer, error = %source, "inbound TLS handshake failed");
            NetError::Connection {
                peer: peer.clone(),
                source,
            }
        })?;
        let (mut send, mut recv) =
            conn.accept_bi()
                .await
                .map_err(|source| NetError::Connection {
                    peer: peer.clone(),
                    source,
                })?;
        let hello = match read_frame::<Hello>(&mut recv, &peer).await {
            Ok(Some(h)) => h,
            Ok(None) => {
                metrics.fail("frame");
                return Err(NetError::NoResponse { peer: peer.clone() });
            }
            Err(e) => {
                metrics.fail("frame");
                tracing::warn!(%peer, error = %e, "malformed hello");
                conn.close(CLOSE_REFUSED.into(), b"malformed hello");
                return Err(e);
            }
        };
        let verdict = if hello.version != PROTOCOL_VERSION {
            Err((
                "version",
                RefuseReason::VersionMismatch {
                    server: PROTOCOL_VERSION,
                    client: hello.version,
                },
            ))
        } else {
            policy(&hello.node).map_err(|r| ("policy", r))
        };
        match verdict {
            Ok(()) => {
                write_frame(
                    &mut send,
                    &HelloReply::Welcome { server: me.clone() },
                    &peer,
                )
                .await?;
                let _ = send.finish();
                metrics.accepted.inc();
                Ok((conn, hello))
            }
            Err((label, reason)) => {
                metrics.fail(label);
                tracing::warn!(%peer, node = %hello.node.id, %reason, "refused handshake");
                write_frame(&mut send, &HelloReply::Refused(reason.clone()), &peer).await?;
                let _ = send.finish();
                // Give the refusal a moment to reach the client before the
                // close frame overtakes it.
                let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
                conn.close(CLOSE_REFUSED.into(), reason.to_string().as_bytes());
                Err(NetError::Refused {
                    peer: peer.clone(),
                    reason,
                })
            }
        }
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => {
            metrics.fail("timeout");
            tracing::warn!(%peer, "inbound handshake timed out");
            Err(NetError::HandshakeTimeout { peer })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client_endpoint, server_endpoint, NodeTls, Pki};
    use strata_protocol::NodeKind;

    fn ident(kind: NodeKind, id: &str, region: &str) -> NodeIdentity {
        NodeIdentity {
            kind,
            id: id.into(),
            region: region.into(),
        }
    }

    async fn server(
        pki_dir: &std::path::Path,
    ) -> (
        quinn::Endpoint,
        HandshakeMetrics,
        tokio::task::JoinHandle<Vec<String>>,
    ) {
        let pki = Pki::ensure(pki_dir).unwrap();
        let tls = NodeTls::load(&pki.node("hub-1").unwrap()).unwrap();
        let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
        let metrics = HandshakeMetrics::default();
        let (ep2, m2) = (ep.clone(), metrics.clone());
        let task = tokio::spawn(async move {
            let me = ident(NodeKind::Hub, "1", "west");
            let mut results = Vec::new();
            let mut keep = Vec::new();
            for _ in 0..3 {
                let Some(inc) = ep2.accept().await else { break };
                let r = accept(inc, &me, &m2, |n| {
                    if n.region == "west" {
                        Ok(())
                    } else {
                        Err(RefuseReason::WrongRegion {
                            node: n.id.clone(),
                            client_region: n.region.clone(),
                            server_region: "west".into(),
                        })
                    }
                })
                .await;
                results.push(match r {
                    Ok((c, n)) => {
                        // Dropping a Connection closes it: hold it like a server would.
                        keep.push(c);
                        format!("ok {}", n.id)
                    }
                    Err(e) => format!("err {e}"),
                });
            }
            results
        });
        (ep, metrics, task)
    }

    #[tokio::test]
    async fn accepts_refuses_and_rejects_foreign_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (ep, metrics, task) = server(dir.path()).await;
        let addr = ep.local_addr().unwrap();
        let pki = Pki::ensure(dir.path()).unwrap();
        let client_tls = NodeTls::load(&pki.node("edge-1").unwrap()).unwrap();
        let cep = client_endpoint(&client_tls).unwrap();

        let (_c, server_id) = connect(&cep, addr, &ident(NodeKind::Edge, "edge-1", "west"))
            .await
            .unwrap();
        assert_eq!(server_id.id, "1");

        let err = connect(&cep, addr, &ident(NodeKind::Edge, "edge-2", "east"))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Refused { .. }), "{err}");
        assert!(err.to_string().contains("region"), "{err}");

        // A certificate from another CA fails TLS and is counted.
        let other = tempfile::tempdir().unwrap();
        let foreign = Pki::ensure(other.path()).unwrap();
        let mut ftls = (*NodeTls::load(&foreign.node("edge-x").unwrap()).unwrap()).clone();
        ftls.ca = client_tls.ca.clone(); // trusts the server, but is not trusted by it
        let fep = client_endpoint(&ftls).unwrap();
        let err = connect(&fep, addr, &ident(NodeKind::Edge, "edge-x", "west")).await;
        assert!(err.is_err());

        let results = task.await.unwrap();
        assert_eq!(results[0], "ok edge-1");
        assert!(results[1].starts_with("err"), "{results:?}");
        assert!(results[2].starts_with("err"), "{results:?}");
        let tls_failures = metrics
            .failures
            .get_or_create(&FailureLabel {
                reason: "tls".into(),
            })
            .get();
        assert_eq!(tls_failures, 1);
    }
}
