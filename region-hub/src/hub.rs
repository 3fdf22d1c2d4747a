//! Wiring of one hub replica: TLS, the two QUIC endpoints (peer and
//! client), the telemetry store, the Raft node thread, the peer transport,
//! the edge failure detector, the scheduler, the client service and the
//! metrics endpoint.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use strata_net::handshake::HandshakeMetrics;
use strata_net::{NetError, NodeTls};
use strata_protocol::{NodeIdentity, NodeKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, HubConfig};
use crate::liveness::LivenessDriver;
use crate::metrics::HubMetrics;
use crate::raft::driver::{NodeHandle, INBOX_CAPACITY};
use crate::raft::{HubMachine, NodeError, NodeView, Observer, RaftNode, StoreReader};
use crate::scheduler::{SchedulerCore, SchedulerDriver};
use crate::service::Service;
use crate::store::TelemetryStore;
use strata_consensus::{hub_peer_policy, serve_peers, FrameLimits, Handle, QuicTransport};

/// Why a hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS or QUIC setup failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A listen socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The telemetry store could not be opened.
    #[error("telemetry store at {dir}: {reason}")]
    Store {
        /// Store directory.
        dir: String,
        /// Why.
        reason: String,
    },
    /// A data directory could not be created private, or others can
    /// access it.
    #[error("hub {id} in region {region}: data directory: {source}")]
    DataDir {
        /// Region.
        region: String,
        /// Replica id.
        id: u64,
        /// Cause; names the path and, for an open directory, the fix.
        source: strata_net::files::FilesError,
    },
    /// The Raft node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The Raft thread died without reporting why (a panic).
    #[error("the raft thread of hub {id} in region {region} panicked")]
    Panicked {
        /// Region.
        region: String,
        /// Replica id.
        id: u64,
    },
    /// The node thread could not be started.
    #[error("cannot start the raft thread: {0}")]
    Thread(std::io::Error),
}

/// The two UDP sockets a hub listens on, bound before start so that tests
/// (and supervisors) can use port 0 and learn the real ports.
pub struct Listeners {
    /// Hub ↔ hub socket.
    pub peer: UdpSocket,
    /// Edge / central socket.
    pub client: UdpSocket,
}

impl Listeners {
    /// Binds `peer-listen` and `client-listen`.
    pub fn bind(cfg: &HubConfig) -> Result<Listeners, HubError> {
        let bind = |addr: SocketAddr| {
            UdpSocket::bind(addr).map_err(|source| HubError::Bind { addr, source })
        };
        Ok(Listeners {
            peer: bind(cfg.peer_listen)?,
            client: bind(cfg.client_listen)?,
        })
    }
}

/// A started hub.
pub struct RunningHub {
    /// Bound peer address.
    pub peer_addr: SocketAddr,
    /// Bound client address.
    pub client_addr: SocketAddr,
    /// Bound metrics address, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// Handle to the Raft node.
    pub node: NodeHandle,
    /// Metrics (also served on `metrics_addr`).
    pub metrics: HubMetrics,
    done: oneshot::Receiver<Result<(), NodeError>>,
    region: String,
    id: u64,
    services: CancellationToken,
    endpoints: [quinn::Endpoint; 2],
}

impl RunningHub {
    /// Waits until the node stops (after shutdown, or on a fatal error).
    pub async fn wait(self) -> Result<(), HubError> {
        let r = self.done.await;
        self.services.cancel();
        for ep in &self.endpoints {
            ep.close(0u32.into(), b"hub stopping");
        }
        // Let peers see the close before the sockets go away.
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ep.wait_idle()).await;
        }
        match r {
            Ok(r) => r.map_err(HubError::from),
            // The thread ended without reporting: it panicked.
            Err(_) => Err(HubError::Panicked {
                region: self.region,
                id: self.id,
            }),
        }
    }
}

/// QUIC endpoint settings that survive a restart of the hub: the stateless
/// reset key, and connection ids that every run recognizes as its own, both
/// derived from the TLS private key (secret, and the same in every run).
/// A replica, edge or central still holding a connection to the previous
/// run of a restarted hub then gets a valid stateless reset for its first
/// packet (RFC 9000 §10.3) and redials at once. With quinn's defaults (a
/// random key per run, and ids of another run dropped unanswered) they
/// write into the dead connection until its 5 s idle timeout: seconds in
/// which a restarted replica hears nothing from its leader.
fn endpoint_config(tls: &NodeTls) -> quinn::EndpointConfig {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(b"strata quic endpoint keys v1\0");
    h.update(tls.key.secret_der());
    let secret = h.finish();
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_ref());
    // The id key is not the reset key: id signatures are seen on the wire.
    let tag = ring::hmac::sign(&reset, b"connection ids");
    let mut id_key = [0u8; 8];
    id_key.copy_from_slice(&tag.as_ref()[..8]);
    let id_key = u64::from_le_bytes(id_key);
    let mut cfg = quinn::EndpointConfig::new(Arc::new(reset));
    cfg.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(id_key)));
    cfg
}

fn endpoint(socket: UdpSocket, tls: &NodeTls) -> Result<quinn::Endpoint, HubError> {
    let addr = socket.local_addr().map_err(|source| HubError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let runtime = quinn::default_runtime().ok_or_else(|| HubError::Bind {
        addr,
        source: std::io::Error::other("no async runtime"),
    })?;
    let server = strata_net::endpoint::server_config(tls)?;
    let mut ep = quinn::Endpoint::new(endpoint_config(tls), Some(server), socket, runtime)
        .map_err(|source| HubError::Bind { addr, source })?;
    ep.set_default_client_config(strata_net::endpoint::client_config(tls)?);
    Ok(ep)
}

/// Validates `cfg`, opens everything and starts serving. Stops when
/// `shutdown` is cancelled; see [`RunningHub::wait`].
pub async fn start(
    cfg: HubConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<RunningHub, HubError> {
    cfg.validate()?;
    let data_dir = |source| HubError::DataDir {
        region: cfg.region.clone(),
        id: cfg.id,
        source,
    };
    for dir in cfg.private_dirs() {
        strata_net::files::ensure_private_dir(&dir).map_err(data_dir)?;
    }
    // raft-engine creates its directory and files with default modes (the
    // umask is the belt); the directory is made 0700 here first.
    strata_net::files::create_private_dir(&cfg.node_config().raft_dir).map_err(data_dir)?;
    let tls = NodeTls::load(&cfg.tls)?;
    let mut registry = Registry::default();
    let metrics = HubMetrics::register(&mut registry);
    let handshakes = HandshakeMetrics::register(&mut registry);
    let peer_ep = endpoint(listeners.peer, &tls)?;
    let client_ep = endpoint(listeners.client, &tls)?;
    let peer_addr = peer_ep.local_addr().map_err(|source| HubError::Bind {
        addr: cfg.peer_listen,
        source,
    })?;
    let client_addr = client_ep.local_addr().map_err(|source| HubError::Bind {
        addr: cfg.client_listen,
        source,
    })?;

    let store_cfg = cfg.store_config();
    let dir = store_cfg.dir.display().to_string();
    let (store, recovered) = tokio::task::spawn_blocking(move || TelemetryStore::open(store_cfg))
        .await
        .map_err(|e| HubError::Store {
            dir: dir.clone(),
            reason: e.to_string(),
        })?
        .map_err(|e| HubError::Store {
            dir,
            reason: e.to_string(),
        })?;

    let me = NodeIdentity {
        kind: NodeKind::Hub,
        id: cfg.id.to_string(),
        region: cfg.region.clone(),
    };
    let services = shutdown.child_token();
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let transport = QuicTransport::new(
        cfg.id,
        peer_ep.clone(),
        me.clone(),
        tx.clone(),
        tokio::runtime::Handle::current(),
        services.clone(),
    )
    .with_limits(FrameLimits::with_frame_target(cfg.raft.peer_frame_bytes));
    let (node_cfg, node_metrics) = (cfg.node_config(), metrics.clone());
    // The node publishes its view (leadership, assignments version, event
    // log end) for the service and signals the failure detector.
    let (view_tx, view_rx) = tokio::sync::watch::channel(NodeView::default());
    let (signals_tx, signals_rx) = mpsc::unbounded_channel();
    let (sched_tx, sched_rx) = mpsc::unbounded_channel();
    let usage_tx = sched_tx.clone();
    let observer = Observer {
        view: view_tx,
        signals: signals_tx,
        sched: Some(sched_tx),
    };
    let (region, interval) = (cfg.region.clone(), cfg.checkpoint_interval());
    let open = move || {
        let id = node_cfg.id;
        let mut machine = HubMachine::open(
            region,
            store,
            recovered.applied_index,
            &recovered.fsm_state,
            interval,
            node_metrics.clone(),
        )
        .map_err(|e| NodeError::Machine {
            id,
            index: recovered.applied_index,
            source: Box::new(e),
        })?;
        machine.set_observer(observer);
        RaftNode::open(
            node_cfg,
            machine,
            Box::new(transport),
            node_metrics.raft.clone(),
        )
    };
    let on_open = |node: &mut RaftNode<HubMachine<TelemetryStore>>| node.machine().store();
    let spawned = strata_consensus::spawn(cfg.id, open, on_open, rx, cfg.tick(), shutdown.clone())
        .map_err(HubError::Thread)?;
    let panicked = || HubError::Panicked {
        region: cfg.region.clone(),
        id: cfg.id,
    };
    let reader: Arc<dyn StoreReader> = spawned.opened.await.map_err(|_| panicked())??;
    let done = spawned.done;
    let handle = NodeHandle::new(
        Handle::new(tx.clone(), cfg.region.clone()),
        reader,
        cfg.region.clone(),
    );

    tokio::spawn(serve_peers(
        peer_ep.clone(),
        me.clone(),
        handshakes.clone(),
        hub_peer_policy,
        tx,
        None,
        services.clone(),
    ));
    let (detector, liveness) = LivenessDriver::new(
        cfg.liveness.core_config(),
        signals_rx,
        handle.clone(),
        metrics.clone(),
    );
    // Measured use from heartbeats goes to the scheduler as soft state.
    let detector = detector.with_usage_sink(usage_tx);
    tokio::spawn(detector.run(services.clone()));
    let scheduler = SchedulerDriver::new(
        SchedulerCore::new(cfg.sched_core_config()),
        sched_rx,
        handle.clone(),
        metrics.clone(),
    );
    tokio::spawn(scheduler.run(services.clone()));
    let svc = Service::new(
        me,
        handle.clone(),
        view_rx,
        liveness,
        metrics.clone(),
        handshakes,
    )
    .with_store_retention(cfg.store.retention_ms)
    .with_cert_expiry(tls.expires_ms())
    .with_checkpoint_limits(cfg.checkpoints.limits())
    .with_sched(cfg.sched_settings());
    tokio::spawn(svc.serve(client_ep.clone(), services.clone()));
    let metrics_addr = match cfg.metrics_listen {
        Some(addr) => {
            Some(strata_net::metrics::serve(addr, Arc::new(registry), services.clone()).await?)
        }
        None => None,
    };
    tracing::info!(region = %cfg.region, hub = cfg.id, %peer_addr, %client_addr, "region hub started");
    Ok(RunningHub {
        peer_addr,
        client_addr,
        metrics_addr,
        node: handle,
        metrics,
        done,
        region: cfg.region.clone(),
        id: cfg.id,
        services,
        endpoints: [peer_ep, client_ep],
    })
}

/// Runs a hub from its configuration until `shutdown` is cancelled.
pub async fn run(cfg: HubConfig, shutdown: CancellationToken) -> Result<(), HubError> {
    cfg.validate()?;
    let listeners = Listeners::bind(&cfg)?;
    start(cfg, listeners, shutdown).await?.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection to a hub endpoint that is replaced on the same port (a
    /// restarted hub) is reset by the new one as soon as it sends, instead
    /// of lingering until the 5 s idle timeout.
    #[tokio::test]
    async fn a_restarted_endpoint_resets_old_connections_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(dir.path()).unwrap();
        let hub = NodeTls::load(&pki.node("hub-1").unwrap()).unwrap();
        let tool = NodeTls::load(&pki.node("tool").unwrap()).unwrap();
        let client = strata_net::client_endpoint(&tool).unwrap();
        // The first run lives on its own runtime, so that it can vanish
        // like a killed process: no CONNECTION_CLOSE is ever sent.
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
        let first = std::thread::spawn({
            let hub = hub.clone();
            move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                let server = rt.block_on(async {
                    endpoint(UdpSocket::bind("127.0.0.1:0").unwrap(), &hub).unwrap()
                });
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                let held = rt.block_on(async { server.accept().await.unwrap().await.unwrap() });
                crash_rx.recv().unwrap();
                // A killed process sends nothing. Stop the runtime completely
                // first: with shutdown_background a worker could still be
                // running the endpoint driver when the handles drop, and send
                // the CONNECTION_CLOSE a crash never sends (seen under load).
                rt.shutdown_timeout(Duration::from_secs(5));
                drop((held, server));
            }
        });
        let addr = addr_rx.await.unwrap();
        let conn = client
            .connect(addr, strata_net::CLUSTER_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        crash_tx.send(()).unwrap();
        first.join().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let socket = loop {
            match UdpSocket::bind(addr) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot rebind {addr}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let _restarted = endpoint(socket, &hub).unwrap();
        // The next packet on the old connection meets the new run.
        let mut send = conn.open_uni().await.unwrap();
        let _ = send.write_all(b"hello").await;
        let reason = tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("the old connection was not reset within 2 s");
        assert!(
            matches!(reason, quinn::ConnectionError::Reset),
            "{reason:?}"
        );
    }

    /// An existing data directory others can enter is refused before
    /// anything is opened, naming it and the fix; a fresh one becomes a
    /// 0700 directory holding a 0700 raft directory.
    #[tokio::test]
    async fn an_open_data_dir_is_refused_and_a_new_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
        let cfg = |data: &str| HubConfig {
            region: "r1".into(),
            id: 1,
            data_dir: dir.path().join(data),
            peers: vec![crate::config::PeerConfig {
                id: 1,
                peer_addr: "127.0.0.1:1".into(),
                client_addr: "127.0.0.1:2".into(),
            }],
            tls: pki.node("hub-1").unwrap(),
            ..HubConfig::default()
        };
        let listeners = || Listeners {
            peer: UdpSocket::bind("127.0.0.1:0").unwrap(),
            client: UdpSocket::bind("127.0.0.1:0").unwrap(),
        };
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o750)).unwrap();
        let stop = CancellationToken::new();
        let err = start(cfg("open"), listeners(), stop.clone())
            .await
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(matches!(err, HubError::DataDir { .. }), "{msg}");
        assert!(
            msg.contains(&open.display().to_string()) && msg.contains("chmod -R go-rwx"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read_dir(&open).unwrap().count(),
            0,
            "nothing created"
        );

        let hub = start(cfg("fresh"), listeners(), stop.clone())
            .await
            .unwrap();
        stop.cancel();
        hub.wait().await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("fresh")), 0o700);
        assert_eq!(mode(&dir.path().join("fresh/raft")), 0o700);
        assert_eq!(mode(&dir.path().join("fresh/store")), 0o700);
    }
}
