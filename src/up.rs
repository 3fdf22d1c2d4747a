//! `strata up`: a whole cluster in one process tree, with every default
//! built in — one region of hub replicas, edge nodes, central and a
//! simulated fleet. Everything lives under one data directory, so a second
//! `strata up` resumes where the first stopped.
//!
//! [`LocalCluster`] is the start-up shared with `strata bench`: hubs,
//! optionally central, and edges, on fixed ports (`up`) or ephemeral ones
//! (`bench`, which must not collide with anything).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use region_hub::raft::driver::NodeHandle;
use strata_net::Pki;
use strata_protocol::{HubStatus, RaftRole};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to start: `strata up`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    /// Where state, configs and certificates live.
    #[arg(long, default_value = "strata-data")]
    pub data_dir: PathBuf,
    /// Region name.
    #[arg(long, default_value = "local")]
    pub region: String,
    /// Hub replicas (1, 3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub hubs: u64,
    /// Edge nodes, each its own process, alternating between zones `a` and
    /// `b` (the `zone` label monitors can constrain or spread over).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub edges: u16,
    /// How long after an edge process dies on its own (`kill -9`, a crash)
    /// it is started again; `0s` leaves it down.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub restart_edges_after: Duration,
    /// Simulated devices (0 disables the simulator).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub devices: u32,
    /// Readings per second per simulated device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Central's HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// MQTT port of the first edge; edge i listens on `mqtt-port + i - 1`.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// Base port of the hubs' QUIC listeners: hub i uses `base + i` (peers)
    /// and `base + 100 + i` (edges and central).
    #[arg(long, default_value_t = 7100)]
    pub quic_base: u16,
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
        Ok(())
    }
}

/// Where a [`LocalCluster`] listens.
#[derive(Debug, Clone)]
pub enum Ports {
    /// `strata up`'s documented ports: hub i on `quic_base + i` (peers),
    /// `quic_base + 100 + i` (clients) and `quic_base + 200 + i` (metrics),
    /// edge i on `mqtt_port + i - 1` (MQTT) and `quic_base + 300 + i`
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

/// The shape of a [`LocalCluster`].
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

/// How `strata up` restarts an edge process that died on its own.
#[derive(Debug, Clone, Copy)]
pub struct EdgeRestart {
    /// Delay before the restart; `None`: leave it down.
    pub after: Option<Duration>,
}

/// Zone label of edge `i` (1-based): `a`, `b`, `a`, …
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
    /// The edges' MQTT addresses, edge 1 first.
    pub mqtt: Vec<SocketAddr>,
    /// Central's HTTP address, when started.
    pub api: Option<SocketAddr>,
    /// Central's operator token file, when started.
    pub token_file: Option<PathBuf>,
    /// One handle per hub replica, hub 1 first.
    pub hubs: Vec<NodeHandle>,
    /// Each hub replica's metrics, hub 1 first.
    pub hub_metrics: Vec<region_hub::metrics::HubMetrics>,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Each hub's (peer, client, metrics) addresses, and for ephemeral ports
/// the sockets already bound to learn them.
type HubAddrs = (SocketAddr, SocketAddr, Option<SocketAddr>);

fn hub_addrs(o: &ClusterOptions) -> anyhow::Result<(Vec<HubAddrs>, Vec<region_hub::Listeners>)> {
    match o.ports {
        Ports::Fixed { quic_base, .. } => Ok((
            (1..=o.hubs as u16)
                .map(|id| {
                    (
                        localhost(quic_base + id),
                        localhost(quic_base + 100 + id),
                        Some(localhost(quic_base + 200 + id)),
                    )
                })
                .collect(),
            Vec::new(),
        )),
        Ports::Ephemeral => {
            let bind = || UdpSocket::bind(localhost(0)).context("binding a hub UDP socket");
            let mut addrs = Vec::new();
            let mut listeners = Vec::new();
            for _ in 0..o.hubs {
                let (peer, client) = (bind()?, bind()?);
                addrs.push((peer.local_addr()?, client.local_addr()?, None));
                listeners.push(region_hub::Listeners { peer, client });
            }
            Ok((addrs, listeners))
        }
    }
}

/// The hub configs of the local region.
fn hub_configs(
    o: &ClusterOptions,
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
                region: o.region.clone(),
                id,
                data_dir: o.data_dir.join(format!("hub-{id}")),
                peer_listen: *peer,
                client_listen: *client,
                metrics_listen: *metrics,
                peers: peers.clone(),
                tls: pki.node(&format!("hub-{id}"))?,
                ..Default::default()
            })
        })
        .collect()
}

impl LocalCluster {
    /// Creates the data dir and PKI, then starts the hubs, central (if
    /// asked) and the edges. Everything stops when `shutdown` is cancelled.
    pub async fn start(o: &ClusterOptions, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // 0700, or refused with the fix when others can access it: it holds
        // every tier's data and the cluster's keys.
        strata_net::files::ensure_private_dir(&o.data_dir).context("strata data dir")?;
        let pki = Pki::ensure(&o.data_dir.join("pki")).context("cluster PKI")?;
        let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

        let (addrs, mut bound) = hub_addrs(o)?;
        let configs = hub_configs(o, &addrs, &pki)?;
        let hub_clients: Vec<String> = configs
            .iter()
            .map(|h| h.client_listen.to_string())
            .collect();
        let mut bound = bound.drain(..);
        let (mut hubs, mut hub_metrics) = (Vec::new(), Vec::new());
        for cfg in configs {
            let id = cfg.id;
            let listeners = match bound.next() {
                Some(l) => l,
                None => region_hub::Listeners::bind(&cfg).with_context(|| {
                    format!("hub {id}: binding its ports (is another Strata running?)")
                })?,
            };
            let hub = region_hub::start(cfg, listeners, shutdown.clone())
                .await
                .with_context(|| format!("starting hub {id}"))?;
            hubs.push(hub.node.clone());
            hub_metrics.push(hub.metrics.clone());
            tasks.spawn(async move { hub.wait().await.with_context(|| format!("hub {id}")) });
        }

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
                    regions: vec![central::RegionConfig {
                        name: o.region.clone(),
                        hubs: hub_clients.clone(),
                    }],
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
        for i in 1..=o.edges {
            let name = format!("edge-{i}");
            let (listen, metrics) = match o.ports {
                Ports::Fixed {
                    mqtt_port,
                    quic_base,
                    ..
                } => (
                    localhost(mqtt_port + i - 1),
                    Some(localhost(quic_base + 300 + i)),
                ),
                Ports::Ephemeral => (localhost(0), None),
            };
            let mut cfg = edge_node::EdgeConfig {
                name: name.clone(),
                region: o.region.clone(),
                data_dir: o.data_dir.join(&name),
                hubs: hub_clients.clone(),
                tls: pki.node(&name)?,
                metrics_listen: metrics,
                ..Default::default()
            };
            cfg.ingress.listen = listen;
            // Every client of a local cluster (the simulator, the benchmark's
            // load generator) connects from 127.0.0.1: one source, so its cap
            // is the global one.
            cfg.ingress.max_connections_per_ip = cfg.ingress.max_connections;
            cfg.ingress.auth.credentials = o.credentials.clone();
            cfg.ingress.auth.allow_anonymous = o.allow_anonymous;
            cfg.monitors
                .labels
                .insert("zone".to_owned(), edge_zone(i).to_owned());
            if let (Some(restart), Ports::Fixed { .. }) = (o.edge_processes, &o.ports) {
                let edge = crate::edge_proc::EdgeProcess {
                    name: name.clone(),
                    config: o.data_dir.join(&name).join("edge.toml"),
                    pid_file: crate::edge_proc::pid_file(&o.data_dir, &name),
                    mqtt: listen,
                };
                edge.write_config(&cfg)?;
                let child = crate::edge_proc::start(&edge).await.with_context(|| {
                    format!(
                        "starting {name} (MQTT port {} in use? try --mqtt-port)",
                        listen.port()
                    )
                })?;
                mqtt.push(listen);
                let s = shutdown.clone();
                tasks.spawn(crate::edge_proc::supervise(edge, child, restart.after, s));
                continue;
            }
            let node = edge_node::EdgeNode::start(cfg).await.with_context(|| {
                format!(
                    "starting {name} (MQTT port {} in use? try --mqtt-port)",
                    listen.port()
                )
            })?;
            if let Some(a) = node.mqtt_addr() {
                mqtt.push(a);
            }
            let s = shutdown.clone();
            tasks.spawn(async move { node.run(s).await.with_context(|| format!("edge {name}")) });
        }
        Ok(LocalCluster {
            mqtt,
            api,
            token_file,
            hubs,
            hub_metrics,
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

    /// Records stored by the current leader, `None` while there is none.
    pub async fn leader_stored(&self) -> Option<u64> {
        leader_stored(&self.hubs).await
    }

    /// Waits until a hub is leader, for at most `timeout`.
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

/// How the banner names the `strata` CLI: this very binary, relative to
/// the working directory when it lies below it (`target/release/strata`
/// after `cargo run --release -- up`), else by its path.
fn cli_command() -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("strata"));
    let cwd = std::env::current_dir().unwrap_or_default();
    exe.strip_prefix(&cwd)
        .map(Path::to_path_buf)
        .unwrap_or(exe)
        .display()
        .to_string()
}

/// Starts everything and runs until `shutdown`.
pub async fn up(o: UpOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Devices authenticate: every edge reads one credentials file, which
    // holds the simulated fleet's login from the first start on.
    let demo = crate::device_cli::ensure_demo_identity(&o.data_dir, "demo")
        .context("creating the demo device credentials")?;
    let copts = ClusterOptions {
        credentials: Some(demo.file.clone()),
        allow_anonymous: false,
        edge_processes: Some(EdgeRestart {
            after: (!o.restart_edges_after.is_zero()).then_some(o.restart_edges_after),
        }),
        data_dir: o.data_dir.clone(),
        region: o.region.clone(),
        hubs: o.hubs,
        edges: o.edges,
        central: true,
        ports: Ports::Fixed {
            http: o.http,
            mqtt_port: o.mqtt_port,
            quic_base: o.quic_base,
        },
    };
    let mut cluster = LocalCluster::start(&copts, shutdown.clone()).await?;
    let api = cluster.api.unwrap_or(o.http);
    let mqtt = cluster.mqtt_endpoints();

    println!(
        "Strata is up ({} hubs in region {:?}, {} edges).",
        o.hubs, o.region, o.edges
    );
    println!("  HTTP API : http://{api}/api/v1/regions   (metrics at /metrics)");
    let token_file = cluster.token_file.clone().unwrap_or_default();
    // The CLI finds the token under its own --data-dir, `strata-data` by
    // default: name ours when it differs.
    let dd = if o.data_dir == Path::new("strata-data") {
        String::new()
    } else {
        format!(" --data-dir {}", o.data_dir.display())
    };
    let bearer = format!(
        "-H \"Authorization: Bearer $(cat {})\"",
        token_file.display()
    );
    println!(
        "  API token: {}   (send it as `Authorization: Bearer <token>`; `strata` reads it there)",
        token_file.display()
    );
    println!(
        "  MQTT     : {}   (topic strata/<tenant>/<device>/telemetry)",
        mqtt.join(", ")
    );
    println!("  Data     : {}", o.data_dir.display());
    let cli = cli_command();
    let edges: Vec<String> = (1..=o.edges)
        .map(|i| format!("edge-{i} (zone {})", edge_zone(i)))
        .collect();
    println!(
        "  Edges    : {}, one process each; watch them with\n             {cli} edges{dd}   and   {cli} events{dd} --follow",
        edges.join(", ")
    );
    if o.edges > 1 {
        let restart = if o.restart_edges_after.is_zero() {
            "it stays down (--restart-edges-after 0s)".to_owned()
        } else {
            format!(
                "`up` restarts it after {}",
                humantime::format_duration(o.restart_edges_after)
            )
        };
        println!(
            "             see healing: kill -9 $(cat {})   (marked down within a second; {restart})",
            crate::edge_proc::pid_file(&o.data_dir, "edge-2").display()
        );
    }
    let first_mqtt = mqtt.first().cloned().unwrap_or_default();
    let (host, port) = first_mqtt.rsplit_once(':').unwrap_or(("127.0.0.1", "1883"));
    println!(
        "  Login    : MQTT username {} password {}   (tenant \"demo\", every device)",
        demo.username, demo.password
    );
    println!(
        "             stored hashed in {f}; more: strata device add --file {f} --username <name> --tenant <tenant> --devices '<glob>'",
        f = demo.file.display()
    );
    println!(
        "             mosquitto_pub -h {host} -p {port} -u {} -P {} -t strata/demo/my-sensor/telemetry -m \"{{\\\"ts\\\":$(date +%s%3N),\\\"metrics\\\":{{\\\"temperature\\\":21.5}}}}\"",
        demo.username, demo.password
    );
    if o.devices > 0 {
        println!(
            "  Devices  : {} simulated (tenant \"demo\"), {} reading/s each; try\n             curl {bearer} 'http://{api}/api/v1/telemetry/demo/dev-0?step=10000'",
            o.devices, o.rate
        );
        println!(
            "  Monitors : temperature spikes hit 0.5% of devices at readings 120, 300 and 600; catch them on every edge\n             that carries devices with one instance each (they follow the devices when an edge dies):\n             ./monitors/build.sh && {cli} monitor submit --api {api}{dd} --region {r} \\\n               --module target/monitors/wasm/zscore.wasm docs/monitors/zscore-per-edge.toml\n             {cli} monitor inspect --api {api}{dd} {r} demo temperature-anomaly-per-edge   (where each runs, and why)\n             {cli} alerts --api {api}{dd} --tenant demo\n             docs/monitors/threshold-replace.toml: 2 instances in 2 zones, replaced 2 s after their edge is lost",
            r = o.region
        );
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
        let fleet = firmware_sim::FleetConfig {
            tenant: "demo".into(),
            devices: o.devices,
            endpoints: mqtt,
            rate_per_device: o.rate,
            seed: 1,
            anomalies,
            // On Ctrl-C the edges stop together with the fleet, so a publish
            // in flight then can never be acknowledged: give up on it
            // quickly instead of holding the exit for the default 30 s.
            ack_deadline: Duration::from_secs(2),
            username: Some(demo.username.clone()),
            password: Some(demo.password.clone()),
            // Devices roam to another edge when theirs is killed, as in a
            // mesh of gateways: their monitors can follow them.
            failover: true,
            ..Default::default()
        };
        let s = shutdown.clone();
        cluster.spawn(async move {
            let mut last = std::time::Instant::now();
            let progress: firmware_sim::ProgressFn = Box::new(move |p| {
                if last.elapsed() >= Duration::from_secs(10) {
                    last = std::time::Instant::now();
                    eprintln!("sim: {p}");
                }
            });
            firmware_sim::run(fleet, s, Some(progress))
                .await
                .map(|_| ())
                .context("firmware-sim")
        });
    }
    println!("Press Ctrl-C to stop.");

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
        let o = ClusterOptions {
            data_dir: "d".into(),
            region: "local".into(),
            hubs: 3,
            edges: 2,
            central: true,
            ports: Ports::Fixed {
                http: localhost(8080),
                mqtt_port: 1883,
                quic_base: 7100,
            },
            credentials: None,
            allow_anonymous: false,
            edge_processes: None,
        };
        let (addrs, bound) = hub_addrs(&o).unwrap();
        assert!(bound.is_empty(), "fixed ports are bound by the hubs");
        assert_eq!(
            addrs[2],
            (localhost(7103), localhost(7203), Some(localhost(7303)))
        );
        let eph = ClusterOptions {
            ports: Ports::Ephemeral,
            ..o
        };
        let (addrs, bound) = hub_addrs(&eph).unwrap();
        assert_eq!(bound.len(), 3);
        assert!(addrs
            .iter()
            .all(|(p, c, m)| p.port() != 0 && c.port() != 0 && m.is_none()));
    }
}
