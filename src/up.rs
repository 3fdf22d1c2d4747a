//! `strata up`: a whole cluster in one process tree, with every default
//! built in — two regions, `north` and `south`, of hub replicas and edge
//! nodes, central federating both, and a simulated fleet spread over every
//! edge; `--single-region` keeps the older one-region layout. Everything
//! lives under one data directory, so a second `strata up` resumes where
//! the first stopped.
//!
//! [`LocalCluster`] is the start-up shared with `strata bench`: the hubs of
//! one or more regions, optionally central, and edges, on fixed ports
//! (`up`) or ephemeral ones (`bench`, one region, which must not collide
//! with anything).
//!
//! On disk: `<data-dir>/pki/`, `<data-dir>/central/`, the edges in
//! `<data-dir>/edge-N/` numbered across regions (north's first), and the
//! hubs in `<data-dir>/<region>/hub-i/`, or `<data-dir>/hub-i/` for a
//! single region.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use region_hub::raft::driver::NodeHandle;
use strata_net::Pki;
use strata_protocol::{HubStatus, RaftRole};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The regions `strata up` runs by default, in port and edge-number order.
pub const REGIONS: [&str; 2] = ["north", "south"];

/// Ports between one region's hub block and the next one's (a region has at
/// most 5 hubs).
pub const REGION_PORT_STRIDE: u16 = 10;

/// `strata up --help`'s port and directory plan.
const LAYOUT_HELP: &str = "\
Layout (the defaults; every port is on 127.0.0.1):
  regions        north and south, each 3 hubs (--hubs) and 2 edges (--edges), and central federating both
  central        HTTP API on 8080 (--http), data in <data-dir>/central
  edge N         numbered across regions, north's first: north edge-1, edge-2; south edge-3, edge-4;
                 zones a, b, a, … within each region; MQTT on mqtt-port + N - 1 (1883-1886),
                 metrics on quic-base + 300 + N (7401-7404); data and edge.pid in <data-dir>/edge-N
  north hub i    QUIC quic-base + i (Raft peers, 7101-7103) and quic-base + 100 + i (edges and
                 central, 7201-7203), metrics on quic-base + 200 + i (7301-7303); data in <data-dir>/north/hub-i
  south hub i    the same 10 ports up: 7111-7113, 7211-7213, 7311-7313; data in <data-dir>/south/hub-i
  devices        --devices split evenly: dev-north-<n> publish through north's edges, dev-south-<n>
                 through south's, each moving to the next edge of its region when its own is down

With --single-region: one region named by --region (default local), 3 edges by default, with north's ports
(hubs 7101-7103, 7201-7203, edges from 1883) and the hubs in <data-dir>/hub-i; devices are dev-<n>.
A data dir keeps its layout: resume a single-region one with --single-region.";

/// What to start: `strata up`'s flags.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = LAYOUT_HELP)]
pub struct UpOptions {
    /// Where state, configs and certificates live.
    #[arg(long, default_value = "strata-data")]
    pub data_dir: PathBuf,
    /// Run one region (named by --region) instead of `north` and `south`:
    /// the layout `strata up` had before it ran two regions.
    #[arg(long)]
    pub single_region: bool,
    /// The region's name, with --single-region.
    #[arg(long, default_value = "local", requires = "single_region")]
    pub region: String,
    /// Hub replicas per region (1, 3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub hubs: u64,
    /// Edge nodes per region, each its own process, alternating between
    /// zones `a` and `b` within its region (the `zone` label monitors can
    /// constrain or spread over) [default: 2, or 3 with --single-region]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub edges: Option<u16>,
    /// How long after an edge process dies on its own (`kill -9`, a crash)
    /// it is started again; `0s` leaves it down.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub restart_edges_after: Duration,
    /// Simulated devices in all (0 disables the simulator), split evenly
    /// between the regions.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub devices: u32,
    /// Readings per second per simulated device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Central's HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// MQTT port of the first edge; edge N (numbered across regions)
    /// listens on `mqtt-port + N - 1`.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// Base port of the hubs' QUIC listeners: hub i of the r-th region
    /// (r = 0 for north or the single region, 1 for south) uses
    /// `base + 10r + i` (peers) and `base + 100 + 10r + i` (edges and
    /// central); the plan is below.
    #[arg(long, default_value_t = 7100)]
    pub quic_base: u16,
    /// Print every component's log here instead of only the banner and a
    /// live summary line (the logs then go to <data-dir>/logs/).
    #[arg(long, short)]
    pub verbose: bool,
}

impl UpOptions {
    /// Checks what clap's ranges cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.hubs % 2 == 1,
            "--hubs must be 1, 3 or 5, got {}",
            self.hubs
        );
        anyhow::ensure!(
            self.rate > 0.0 && self.rate <= 1000.0,
            "--rate must be in (0, 1000], got {}",
            self.rate
        );
        let edges = u32::from(self.edges_per_region()) * self.regions().len() as u32;
        anyhow::ensure!(
            u32::from(self.mqtt_port) + edges - 1 <= u32::from(u16::MAX),
            "--mqtt-port {} leaves no room for {edges} edges' MQTT ports",
            self.mqtt_port
        );
        anyhow::ensure!(
            u32::from(self.quic_base) + 300 + edges <= u32::from(u16::MAX),
            "--quic-base {} leaves no room for the ports above it (up to quic-base + {})",
            self.quic_base,
            300 + edges
        );
        Ok(())
    }

    /// Edge nodes per region, the default filled in.
    pub fn edges_per_region(&self) -> u16 {
        self.edges.unwrap_or(if self.single_region { 3 } else { 2 })
    }

    /// The regions to run, in port and edge-number order.
    pub fn regions(&self) -> Vec<RegionPlan> {
        let edges = self.edges_per_region();
        if self.single_region {
            return vec![RegionPlan {
                name: self.region.clone(),
                hubs: self.hubs,
                edges,
                dir: self.data_dir.clone(),
                hub_prefix: String::new(),
            }];
        }
        REGIONS
            .iter()
            .map(|r| RegionPlan {
                name: (*r).to_owned(),
                hubs: self.hubs,
                edges,
                dir: self.data_dir.join(r),
                hub_prefix: format!("{r}-"),
            })
            .collect()
    }
}

/// Refuses to start one layout over a data dir that holds the other: the
/// edges (`edge-N`) would change region under their own spools.
fn check_layout(data_dir: &Path, single_region: bool) -> anyhow::Result<()> {
    let single = data_dir.join("hub-1").exists();
    let regional = REGIONS
        .iter()
        .any(|r| data_dir.join(r).join("hub-1").exists());
    let dir = data_dir.display();
    anyhow::ensure!(
        single_region || !single,
        "{dir} holds a single-region cluster (its hubs in {dir}/hub-N): resume it with \
         `strata up --single-region` (add --region if it was not `local`), or start the \
         two regions in a new --data-dir"
    );
    anyhow::ensure!(
        !single_region || !regional,
        "{dir} holds the two-region cluster (its hubs in {dir}/north and {dir}/south): resume it \
         without --single-region, or use a new --data-dir"
    );
    Ok(())
}

/// Where a [`LocalCluster`] listens.
#[derive(Debug, Clone)]
pub enum Ports {
    /// `strata up`'s documented ports: hub i of the r-th region (from 0) on
    /// `quic_base + 10r + i` (peers), `quic_base + 100 + 10r + i` (clients)
    /// and `quic_base + 200 + 10r + i` (metrics), edge N (numbered across
    /// regions) on `mqtt_port + N - 1` (MQTT) and `quic_base + 300 + N`
    /// (metrics), central on `http`.
    Fixed {
        /// Central's HTTP address.
        http: SocketAddr,
        /// MQTT port of the first edge.
        mqtt_port: u16,
        /// Base of the QUIC and metrics ports.
        quic_base: u16,
    },
    /// Every listener on `127.0.0.1:0`, no metrics endpoints.
    Ephemeral,
}

/// The shape of a [`LocalCluster`] of one region ([`LocalCluster::start`]);
/// [`LocalCluster::start_regions`] takes the regions apart.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Data directory (hub-i/, edge-i/, pki/).
    pub data_dir: PathBuf,
    /// Region name.
    pub region: String,
    /// Hub replicas: 1, 3 or 5.
    pub hubs: u64,
    /// Edge nodes.
    pub edges: u16,
    /// Whether to start central (its HTTP API).
    pub central: bool,
    /// Listen addresses.
    pub ports: Ports,
    /// Device credentials file every edge reads (hot-reloaded); `None`:
    /// each edge's default `<edge data-dir>/devices.toml`.
    pub credentials: Option<PathBuf>,
    /// Let MQTT clients in without credentials (`strata bench --anonymous`).
    pub allow_anonymous: bool,
    /// Run each edge as its own `strata edge-node` process (so it can be
    /// killed alone), restarted this long after dying on its own (`None`:
    /// never); `None` here runs edges in this process (the benchmark).
    pub edge_processes: Option<EdgeRestart>,
}

/// One region of a [`LocalCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPlan {
    /// Region name.
    pub name: String,
    /// Hub replicas: 1, 3 or 5.
    pub hubs: u64,
    /// Edge nodes.
    pub edges: u16,
    /// Where its hubs keep their data: `hub-i/` below it.
    pub dir: PathBuf,
    /// Put before `hub-i` in its hubs' certificate names (`north-hub-1`),
    /// so each region's hubs have certificates of their own.
    pub hub_prefix: String,
}

impl RegionPlan {
    /// `o`'s one region, its hubs in `<data-dir>/hub-i`.
    pub fn single(o: &ClusterOptions) -> RegionPlan {
        RegionPlan {
            name: o.region.clone(),
            hubs: o.hubs,
            edges: o.edges,
            dir: o.data_dir.clone(),
            hub_prefix: String::new(),
        }
    }
}

/// How `strata up` restarts an edge process that died on its own.
#[derive(Debug, Clone)]
pub struct EdgeRestart {
    /// Delay before the restart; `None`: leave it down.
    pub after: Option<Duration>,
    /// Directory the edges' output goes to (`edge-N.log`); `None`: this
    /// process's stdout and stderr.
    pub log_dir: Option<PathBuf>,
}

/// Zone label of a region's edge `i` (1-based, counted within the region):
/// `a`, `b`, `a`, …
pub fn edge_zone(i: u16) -> &'static str {
    if i % 2 == 1 {
        "a"
    } else {
        "b"
    }
}

/// A running in-process cluster: every component is a task in one
/// `JoinSet`, stopped by one token.
pub struct LocalCluster {
    /// Every edge's MQTT address, edge 1 first (regions in order).
    pub mqtt: Vec<SocketAddr>,
    /// Central's HTTP address, when started.
    pub api: Option<SocketAddr>,
    /// Central's operator token file, when started.
    pub token_file: Option<PathBuf>,
    /// One handle per hub replica of the first region (the only one for
    /// [`Self::start`]), hub 1 first.
    pub hubs: Vec<NodeHandle>,
    /// The metrics of each of those hub replicas, hub 1 first.
    pub hub_metrics: Vec<region_hub::metrics::HubMetrics>,
    /// Every region with its hubs' and edges' addresses, in order.
    pub regions: Vec<LocalRegion>,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

/// One running region of a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalRegion {
    /// Region name.
    pub name: String,
    /// Each hub's (peer, client) QUIC address, hub 1 first.
    pub hubs: Vec<(SocketAddr, SocketAddr)>,
    /// Its edges, in order.
    pub edges: Vec<LocalEdge>,
}

/// One running edge of a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalEdge {
    /// Edge name (`edge-3`), numbered across regions.
    pub name: String,
    /// Its `zone` label.
    pub zone: &'static str,
    /// Its MQTT address.
    pub mqtt: SocketAddr,
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Each hub's (peer, client, metrics) addresses, and for ephemeral ports
/// the sockets already bound to learn them.
type HubAddrs = (SocketAddr, SocketAddr, Option<SocketAddr>);

/// The addresses of the `hubs` hubs of the `region`-th region (from 0).
fn hub_addrs(
    ports: &Ports,
    region: u16,
    hubs: u64,
) -> anyhow::Result<(Vec<HubAddrs>, Vec<region_hub::Listeners>)> {
    match ports {
        Ports::Fixed { quic_base, .. } => {
            let base = quic_base + REGION_PORT_STRIDE * region;
            Ok((
                (1..=hubs as u16)
                    .map(|id| {
                        (
                            localhost(base + id),
                            localhost(base + 100 + id),
                            Some(localhost(base + 200 + id)),
                        )
                    })
                    .collect(),
                Vec::new(),
            ))
        }
        Ports::Ephemeral => {
            let bind = || UdpSocket::bind(localhost(0)).context("binding a hub UDP socket");
            let mut addrs = Vec::new();
            let mut listeners = Vec::new();
            for _ in 0..hubs {
                let (peer, client) = (bind()?, bind()?);
                addrs.push((peer.local_addr()?, client.local_addr()?, None));
                listeners.push(region_hub::Listeners { peer, client });
            }
            Ok((addrs, listeners))
        }
    }
}

/// The hub configs of one region.
fn hub_configs(
    plan: &RegionPlan,
    addrs: &[HubAddrs],
    pki: &Pki,
) -> anyhow::Result<Vec<region_hub::HubConfig>> {
    let peers: Vec<region_hub::config::PeerConfig> = (1..)
        .zip(addrs)
        .map(|(id, (peer, client, _))| region_hub::config::PeerConfig {
            id,
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
        })
        .collect();
    (1..)
        .zip(addrs)
        .map(|(id, (peer, client, metrics))| {
            Ok(region_hub::HubConfig {
                region: plan.name.clone(),
                id,
                data_dir: plan.dir.join(format!("hub-{id}")),
                peer_listen: *peer,
                client_listen: *client,
                metrics_listen: *metrics,
                peers: peers.clone(),
                tls: pki.node(&format!("{}hub-{id}", plan.hub_prefix))?,
                ..Default::default()
            })
        })
        .collect()
}

impl LocalCluster {
    /// Creates the data dir and PKI, then starts `o`'s region's hubs,
    /// central (if asked) and the edges. Everything stops when `shutdown`
    /// is cancelled.
    pub async fn start(o: &ClusterOptions, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Self::start_regions(o, &[RegionPlan::single(o)], shutdown).await
    }

    /// [`Self::start`] with `regions` in place of `o`'s one region
    /// (`o.region`, `o.hubs` and `o.edges` are not used): every region's
    /// hubs, then central federating them all, then the edges, numbered
    /// across the regions in order.
    pub async fn start_regions(
        o: &ClusterOptions,
        regions: &[RegionPlan],
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!regions.is_empty(), "a cluster needs a region");
        // 0700, or refused with the fix when others can access it: it holds
        // every tier's data and the cluster's keys.
        strata_net::files::ensure_private_dir(&o.data_dir).context("strata data dir")?;
        let pki = Pki::ensure(&o.data_dir.join("pki")).context("cluster PKI")?;
        let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

        let (mut first_hubs, mut first_metrics) = (Vec::new(), Vec::new());
        let mut running = Vec::new();
        for (r, plan) in (0u16..).zip(regions) {
            strata_net::files::ensure_private_dir(&plan.dir)
                .with_context(|| format!("region {}'s data dir", plan.name))?;
            let (addrs, mut bound) = hub_addrs(&o.ports, r, plan.hubs)?;
            let configs = hub_configs(plan, &addrs, &pki)?;
            let mut bound = bound.drain(..);
            let (mut hubs, mut hub_metrics) = (Vec::new(), Vec::new());
            for cfg in configs {
                let id = cfg.id;
                let name = format!("region {} hub {id}", plan.name);
                let listeners = match bound.next() {
                    Some(l) => l,
                    None => region_hub::Listeners::bind(&cfg).with_context(|| {
                        format!("{name}: binding its ports (is another Strata running?)")
                    })?,
                };
                let hub = region_hub::start(cfg, listeners, shutdown.clone())
                    .await
                    .with_context(|| format!("starting {name}"))?;
                hubs.push(hub.node.clone());
                hub_metrics.push(hub.metrics.clone());
                tasks.spawn(async move { hub.wait().await.context(name) });
            }
            if r == 0 {
                (first_hubs, first_metrics) = (hubs, hub_metrics);
            }
            running.push(LocalRegion {
                name: plan.name.clone(),
                hubs: addrs.iter().map(|(p, c, _)| (*p, *c)).collect(),
                edges: Vec::new(),
            });
        }
        let hub_clients = |region: &LocalRegion| -> Vec<String> {
            region.hubs.iter().map(|(_, c)| c.to_string()).collect()
        };

        let api = match (&o.ports, o.central) {
            (_, false) => None,
            (ports, true) => {
                let listen = match ports {
                    Ports::Fixed { http, .. } => *http,
                    Ports::Ephemeral => localhost(0),
                };
                let central_cfg = central::CentralConfig {
                    listen,
                    data_dir: o.data_dir.join("central"),
                    tls: pki.node("central")?,
                    regions: running
                        .iter()
                        .map(|r| central::RegionConfig {
                            name: r.name.clone(),
                            hubs: hub_clients(r),
                        })
                        .collect(),
                    ..Default::default()
                };
                let server = central::bind(central_cfg).await.with_context(|| {
                    format!("starting central on {listen} (port in use? try --http)")
                })?;
                let api = (server.local_addr(), server.token_file().to_owned());
                let s = shutdown.clone();
                tasks.spawn(async move { server.run(s).await.context("central") });
                Some(api)
            }
        };
        let (api, token_file) = api.unzip();

        let mut mqtt = Vec::new();
        let mut n: u16 = 0;
        for (plan, region) in regions.iter().zip(&mut running) {
            let hubs = hub_clients(region);
            for i in 1..=plan.edges {
                n += 1;
                let edge = EdgeSlot {
                    name: format!("edge-{n}"),
                    number: n,
                    zone: edge_zone(i),
                    region: &plan.name,
                    hubs: &hubs,
                };
                let addr = start_edge(o, &pki, &edge, &mut tasks, &shutdown).await?;
                mqtt.push(addr);
                region.edges.push(LocalEdge {
                    name: edge.name,
                    zone: edge.zone,
                    mqtt: addr,
                });
            }
        }
        Ok(LocalCluster {
            mqtt,
            api,
            token_file,
            hubs: first_hubs,
            hub_metrics: first_metrics,
            regions: running,
            tasks,
            shutdown,
        })
    }

    /// The edges' MQTT addresses as `host:port` strings.
    pub fn mqtt_endpoints(&self) -> Vec<String> {
        self.mqtt.iter().map(ToString::to_string).collect()
    }

    /// Runs `task` beside the cluster: its failure stops [`Self::run`].
    pub fn spawn(
        &mut self,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.spawn(task);
    }

    /// Records stored by the current leader of the first region, `None`
    /// while there is none.
    pub async fn leader_stored(&self) -> Option<u64> {
        leader_stored(&self.hubs).await
    }

    /// Waits until a hub of the first region is leader, for at most
    /// `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.leader_stored().await.is_none() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no hub leader after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until the first component (or spawned task) ends: `Err` if it
    /// failed. Only returns once something ended or the token is cancelled.
    pub async fn first_exit(&mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Ok(()),
            Some(r) = self.tasks.join_next() => match r {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("a cluster task panicked: {e}")),
            },
        }
    }

    /// Cancels everything and waits for every component to stop, logging
    /// errors of components that stopped badly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %format!("{e:#}"), "stopped with an error");
            }
        }
    }
}

/// One edge to start: where it sits in the cluster.
struct EdgeSlot<'a> {
    /// `edge-N`.
    name: String,
    /// N, counted across regions from 1.
    number: u16,
    /// Its `zone` label.
    zone: &'static str,
    /// Its region.
    region: &'a str,
    /// Its region's hubs' client addresses.
    hubs: &'a [String],
}

/// Starts one edge, as its own supervised process or in this one, and
/// returns its MQTT address.
async fn start_edge(
    o: &ClusterOptions,
    pki: &Pki,
    edge: &EdgeSlot<'_>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let name = edge.name.clone();
    let (listen, metrics) = match o.ports {
        Ports::Fixed {
            mqtt_port,
            quic_base,
            ..
        } => (
            localhost(mqtt_port + edge.number - 1),
            Some(localhost(quic_base + 300 + edge.number)),
        ),
        Ports::Ephemeral => (localhost(0), None),
    };
    let mut cfg = edge_node::EdgeConfig {
        name: name.clone(),
        region: edge.region.to_owned(),
        data_dir: o.data_dir.join(&name),
        hubs: edge.hubs.to_vec(),
        tls: pki.node(&name)?,
        metrics_listen: metrics,
        ..Default::default()
    };
    cfg.ingress.listen = listen;
    // Every client of a local cluster (the simulator, the benchmark's load
    // generator) connects from 127.0.0.1: one source, so its cap is the
    // global one.
    cfg.ingress.max_connections_per_ip = cfg.ingress.max_connections;
    cfg.ingress.auth.credentials = o.credentials.clone();
    cfg.ingress.auth.allow_anonymous = o.allow_anonymous;
    cfg.monitors
        .labels
        .insert("zone".to_owned(), edge.zone.to_owned());
    let in_use = || {
        format!(
            "starting {name} (MQTT port {} in use? try --mqtt-port)",
            listen.port()
        )
    };
    if let (Some(restart), Ports::Fixed { .. }) = (&o.edge_processes, &o.ports) {
        let process = crate::edge_proc::EdgeProcess {
            name: name.clone(),
            config: o.data_dir.join(&name).join("edge.toml"),
            pid_file: crate::edge_proc::pid_file(&o.data_dir, &name),
            mqtt: listen,
            log: restart
                .log_dir
                .as_ref()
                .map(|d| d.join(format!("{name}.log"))),
        };
        process.write_config(&cfg)?;
        let child = crate::edge_proc::start(&process)
            .await
            .with_context(in_use)?;
        tasks.spawn(crate::edge_proc::supervise(
            process,
            child,
            restart.after,
            shutdown.clone(),
        ));
        return Ok(listen);
    }
    let node = edge_node::EdgeNode::start(cfg).await.with_context(in_use)?;
    let addr = node
        .mqtt_addr()
        .with_context(|| format!("{name} has no MQTT listener"))?;
    let s = shutdown.clone();
    tasks.spawn(async move { node.run(s).await.with_context(|| format!("edge {name}")) });
    Ok(addr)
}

/// Records stored by the leader among `hubs`, `None` while there is none.
pub async fn leader_stored(hubs: &[NodeHandle]) -> Option<u64> {
    let mut statuses = Vec::with_capacity(hubs.len());
    for h in hubs {
        statuses.extend(h.status().await.ok());
    }
    pick_leader_stored(&statuses)
}

/// The stored count of the replica that claims leadership, the highest
/// term winning if an old leader has not stepped down yet.
pub fn pick_leader_stored(statuses: &[HubStatus]) -> Option<u64> {
    statuses
        .iter()
        .filter(|s| s.role == RaftRole::Leader)
        .max_by_key(|s| s.term)
        .map(|s| s.stored_records)
}

/// One region's share of the simulated fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetShare {
    /// The region whose edges its devices publish through.
    pub region: String,
    /// Device names are `<prefix>-<n>`: `dev` for a single region, else
    /// `dev-<region>`.
    pub prefix: String,
    /// How many devices.
    pub devices: u32,
    /// The region's edges' MQTT addresses: device `d` starts on
    /// `endpoints[d % len]` and moves on to the next when that is down.
    pub endpoints: Vec<String>,
}

/// `devices` spread evenly over `regions` (the first ones get one more
/// when it does not divide), each share through its own region's edges so
/// a device stays in its region when it moves to another edge. Regions
/// left without a device get no share.
pub fn fleet_shares(devices: u32, regions: &[LocalRegion]) -> Vec<FleetShare> {
    // Uneven on purpose (weights n, n-1, …, 1: 2:1 with two regions), so
    // that device locality differs between regions and a global workload
    // with `locality = "devices"` visibly follows it.
    let n = u64::try_from(regions.len()).unwrap_or(u64::MAX).max(1);
    let total_weight = n * (n + 1) / 2;
    let mut given = 0u64;
    let counts: Vec<u32> = (0..n)
        .map(|k| {
            let share = if k + 1 == n {
                u64::from(devices) - given
            } else {
                u64::from(devices) * (n - k) / total_weight
            };
            given += share;
            u32::try_from(share).unwrap_or(u32::MAX)
        })
        .collect();
    (0usize..)
        .zip(regions)
        .map(|(k, r)| FleetShare {
            region: r.name.clone(),
            prefix: if regions.len() == 1 {
                "dev".to_owned()
            } else {
                format!("dev-{}", r.name)
            },
            devices: counts[k],
            endpoints: r.edges.iter().map(|e| e.mqtt.to_string()).collect(),
        })
        .filter(|s| s.devices > 0 && !s.endpoints.is_empty())
        .collect()
}

/// How the banner names the `strata` CLI: this very binary, relative to
/// the working directory when it lies below it (`target/release/strata`
/// after `cargo run --release -- up`), else by its path.
pub(crate) fn cli_command() -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("strata"));
    let cwd = std::env::current_dir().unwrap_or_default();
    exe.strip_prefix(&cwd)
        .map(Path::to_path_buf)
        .unwrap_or(exe)
        .display()
        .to_string()
}

/// Where `strata up` writes logs unless `--verbose`.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs")
}

/// Tracing for `strata up`: to stderr with `--verbose`, else appended to
/// `<data-dir>/logs/strata.log` (0600 in a 0700 directory), so the
/// terminal shows only the banner and the summary line.
pub fn init_logs(o: &UpOptions) -> anyhow::Result<()> {
    if o.verbose {
        strata_net::process::init_tracing();
        return Ok(());
    }
    strata_net::files::create_private_dir(&o.data_dir)?;
    let dir = log_dir(&o.data_dir);
    strata_net::files::create_private_dir(&dir)?;
    let path = dir.join("strata.log");
    let file = strata_net::files::private_options()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

/// Starts everything and runs until `shutdown`.
pub async fn up(o: UpOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    check_layout(&o.data_dir, o.single_region)?;
    let regions = o.regions();
    // Devices authenticate: every edge reads one credentials file, which
    // holds the simulated fleet's login from the first start on.
    let demo = crate::device_cli::ensure_demo_identity(&o.data_dir, "demo")
        .context("creating the demo device credentials")?;
    let copts = ClusterOptions {
        credentials: Some(demo.file.clone()),
        allow_anonymous: false,
        edge_processes: Some(EdgeRestart {
            after: (!o.restart_edges_after.is_zero()).then_some(o.restart_edges_after),
            log_dir: (!o.verbose).then(|| log_dir(&o.data_dir)),
        }),
        data_dir: o.data_dir.clone(),
        region: regions[0].name.clone(),
        hubs: o.hubs,
        edges: o.edges_per_region(),
        central: true,
        ports: Ports::Fixed {
            http: o.http,
            mqtt_port: o.mqtt_port,
            quic_base: o.quic_base,
        },
    };
    let started = std::time::Instant::now();
    let mut cluster = LocalCluster::start_regions(&copts, &regions, shutdown.clone()).await?;
    let fleets = fleet_shares(o.devices, &cluster.regions);
    crate::up_banner::print(&crate::up_banner::Banner {
        o: &o,
        regions: &cluster.regions,
        api: cluster.api.unwrap_or(o.http),
        token_file: cluster.token_file.clone().unwrap_or_default(),
        demo: &demo,
        fleets: &fleets,
        took: started.elapsed(),
        cli: cli_command(),
    });

    if !fleets.is_empty() {
        // A demo fleet with something for monitors to find.
        let anomalies = [120, 300, 600]
            .iter()
            .map(|at| {
                format!(
                    "spike:fraction=0.005,start={at},duration=1,metric=temperature,magnitude=40"
                )
                .parse()
                .map_err(|e| anyhow::anyhow!("demo anomaly: {e}"))
            })
            .collect::<anyhow::Result<Vec<firmware_sim::AnomalySpec>>>()?;
        let label = |share: &FleetShare| {
            if fleets.len() == 1 {
                "sim".to_owned()
            } else {
                format!("sim {}", share.region)
            }
        };
        for (seed, share) in (1..).zip(&fleets) {
            let fleet = firmware_sim::FleetConfig {
                tenant: "demo".into(),
                devices: share.devices,
                device_prefix: share.prefix.clone(),
                endpoints: share.endpoints.clone(),
                rate_per_device: o.rate,
                seed,
                anomalies: anomalies.clone(),
                // On Ctrl-C the edges stop together with the fleet, so a
                // publish in flight then can never be acknowledged: give up
                // on it quickly instead of holding the exit for the default
                // 30 s.
                ack_deadline: Duration::from_secs(2),
                username: Some(demo.username.clone()),
                password: Some(demo.password.clone()),
                // Devices roam to another edge of their region when theirs
                // is killed, as in a mesh of gateways: their monitors can
                // follow them.
                failover: true,
                ..Default::default()
            };
            let (s, label, verbose) = (shutdown.clone(), label(share), o.verbose);
            cluster.spawn(async move {
                let mut last = std::time::Instant::now();
                let progress: firmware_sim::ProgressFn = {
                    let label = label.clone();
                    Box::new(move |p| {
                        if last.elapsed() >= Duration::from_secs(10) {
                            last = std::time::Instant::now();
                            if verbose {
                                eprintln!("{label}: {p}");
                            } else {
                                tracing::info!(fleet = %label, "{p}");
                            }
                        }
                    })
                };
                firmware_sim::run(fleet, s, Some(progress))
                    .await
                    .map(|_| ())
                    .context(format!("firmware-{label}"))
            });
        }
    }
    if o.verbose {
        println!("Press Ctrl-C to stop.");
    } else {
        println!(
            "Press Ctrl-C to stop. Logs: {} (--verbose prints them here).",
            log_dir(&o.data_dir).display()
        );
        if let (Some(api), Some(token)) = (cluster.api, cluster.token_file.clone()) {
            let s = shutdown.clone();
            cluster.spawn(async move {
                crate::up_summary::run(api, token, s).await;
                Ok(())
            });
        }
    }

    // Run until Ctrl-C, or until a component fails.
    let failure = cluster.first_exit().await.err();
    cluster.stop().await;
    match failure {
        Some(e) => Err(e),
        None => {
            println!(
                "Strata stopped cleanly; state kept in {}.",
                o.data_dir.display()
            );
            Ok(())
        }
    }
}

/// `strata pki`: issue certificates for a deployment where each tier runs on
/// its own machine, and device client certificates for MQTT over TLS.
pub fn pki(dir: &Path, nodes: &[String], devices: &[String]) -> anyhow::Result<()> {
    let pki = Pki::ensure(dir)?;
    for n in nodes {
        let f = pki.node(n)?;
        println!("{n}: cert {} key {}", f.cert.display(), f.key.display());
    }
    println!("CA: {}", pki.ca_path().display());
    for d in devices {
        let f = pki.device(d)?;
        println!(
            "device {d}: cert {} key {}",
            f.cert.display(),
            f.key.display()
        );
    }
    if let Some(d) = devices.first() {
        let f = pki.device(d)?;
        let ca = pki.device_ca_path();
        println!(
            "Device CA: {}   (edges: [ingress.tls] client-ca, with ingress.tls-listen = \"0.0.0.0:8883\")",
            ca.display()
        );
        println!("Add the identity (CN = name) to the edge's credentials file:");
        println!(
            "  strata device add --username {d} --tenant <tenant> --devices {d} --client-cert --no-password"
        );
        println!("Then, e.g. (the edge's certificate names the edge and {}; --insecure skips the host-name check):", strata_net::CLUSTER_SERVER_NAME);
        println!(
            "  mosquitto_pub -h <edge host> -p 8883 --cafile {} --cert {} --key {} -t strata/<tenant>/{d}/telemetry -m \"{{\\\"ts\\\":$(date +%s%3N),\\\"metrics\\\":{{\\\"t\\\":1}}}}\"",
            f.ca.display(),
            f.cert.display(),
            f.key.display(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: RaftRole, term: u64, stored: u64) -> HubStatus {
        HubStatus {
            region: "r".into(),
            id,
            role,
            term,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            replicas: Vec::new(),
            stored_records: stored,
            peers: vec![],
            cert_expires_ms: None,
        }
    }

    #[test]
    fn the_newest_leader_counts() {
        assert_eq!(pick_leader_stored(&[]), None);
        let followers = [
            status(1, RaftRole::Follower, 3, 10),
            status(2, RaftRole::Candidate, 4, 20),
        ];
        assert_eq!(pick_leader_stored(&followers), None);
        let two_leaders = [
            status(1, RaftRole::Leader, 3, 10),
            status(2, RaftRole::Leader, 5, 7),
            status(3, RaftRole::Follower, 5, 99),
        ];
        assert_eq!(pick_leader_stored(&two_leaders), Some(7));
    }

    #[test]
    fn fixed_ports_follow_the_documented_plan() {
        let fixed = Ports::Fixed {
            http: localhost(8080),
            mqtt_port: 1883,
            quic_base: 7100,
        };
        let (addrs, bound) = hub_addrs(&fixed, 0, 3).unwrap();
        assert!(bound.is_empty(), "fixed ports are bound by the hubs");
        assert_eq!(
            addrs[2],
            (localhost(7103), localhost(7203), Some(localhost(7303)))
        );
        // The second region: the same ports 10 up.
        let (addrs, _) = hub_addrs(&fixed, 1, 5).unwrap();
        assert_eq!(
            addrs[0],
            (localhost(7111), localhost(7211), Some(localhost(7311)))
        );
        assert_eq!(
            addrs[4],
            (localhost(7115), localhost(7215), Some(localhost(7315)))
        );
        let (addrs, bound) = hub_addrs(&Ports::Ephemeral, 1, 3).unwrap();
        assert_eq!(bound.len(), 3);
        assert!(addrs
            .iter()
            .all(|(p, c, m)| p.port() != 0 && c.port() != 0 && m.is_none()));
    }

    fn region(name: &str, edges: u16) -> LocalRegion {
        LocalRegion {
            name: name.into(),
            hubs: Vec::new(),
            edges: (1..=edges)
                .map(|i| LocalEdge {
                    name: format!("edge-{i}"),
                    zone: edge_zone(i),
                    mqtt: localhost(1882 + i),
                })
                .collect(),
        }
    }

    #[test]
    fn the_fleet_splits_two_to_one_and_stays_in_its_region() {
        let two = [region("north", 2), region("south", 2)];
        let shares = fleet_shares(1001, &two);
        assert_eq!(
            shares
                .iter()
                .map(|s| (s.region.as_str(), s.prefix.as_str(), s.devices))
                .collect::<Vec<_>>(),
            [("north", "dev-north", 667), ("south", "dev-south", 334)]
        );
        assert_eq!(shares[1].endpoints, ["127.0.0.1:1883", "127.0.0.1:1884"]);
        // One device: one region gets it, the other nothing to run.
        assert_eq!(fleet_shares(1, &two).len(), 1);
        assert_eq!(
            fleet_shares(1000, &two)
                .iter()
                .map(|s| s.devices)
                .sum::<u32>(),
            1000
        );
        assert!(fleet_shares(0, &two).is_empty());
        // One region keeps the old names.
        let one = fleet_shares(1000, &[region("local", 3)]);
        assert_eq!((one[0].prefix.as_str(), one[0].devices), ("dev", 1000));
        assert_eq!(one[0].endpoints.len(), 3);
    }

    #[test]
    fn a_data_dir_keeps_its_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        check_layout(d, false).unwrap();
        check_layout(d, true).unwrap();
        std::fs::create_dir_all(d.join("north/hub-1")).unwrap();
        check_layout(d, false).unwrap();
        let e = check_layout(d, true).unwrap_err().to_string();
        assert!(e.contains("without --single-region"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("hub-1")).unwrap();
        check_layout(tmp.path(), true).unwrap();
        let e = check_layout(tmp.path(), false).unwrap_err().to_string();
        assert!(e.contains("--single-region"), "{e}");
    }
}
