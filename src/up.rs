//! `strata up`: a whole cluster in one process tree, with every default
//! built in — one region of hub replicas, edge nodes, central and a
//! simulated fleet. Everything lives under one data directory, so a second
//! `strata up` resumes where the first stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use strata_net::Pki;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Data directory (configs are generated, state persists here).
    pub data_dir: PathBuf,
    /// Region name.
    pub region: String,
    /// Hub replicas: 1, 3 or 5.
    pub hubs: u64,
    /// Edge nodes.
    pub edges: u16,
    /// Simulated devices (0 = no simulator).
    pub devices: u32,
    /// Readings per device per second.
    pub rate: f64,
    /// Central's HTTP address.
    pub http: SocketAddr,
    /// First MQTT port; edge i listens on `mqtt_port + i - 1`.
    pub mqtt_port: u16,
    /// Base of the hubs' QUIC ports: hub i uses `base + i` (peers) and
    /// `base + 100 + i` (edges and central).
    pub quic_base: u16,
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The hub configs of the local region.
fn hub_configs(o: &UpOptions, pki: &Pki) -> anyhow::Result<Vec<region_hub::HubConfig>> {
    let peers: Vec<region_hub::config::PeerConfig> = (1..=o.hubs)
        .map(|id| region_hub::config::PeerConfig {
            id,
            peer_addr: localhost(o.quic_base + id as u16).to_string(),
            client_addr: localhost(o.quic_base + 100 + id as u16).to_string(),
        })
        .collect();
    (1..=o.hubs)
        .map(|id| {
            Ok(region_hub::HubConfig {
                region: o.region.clone(),
                id,
                data_dir: o.data_dir.join(format!("hub-{id}")),
                peer_listen: localhost(o.quic_base + id as u16),
                client_listen: localhost(o.quic_base + 100 + id as u16),
                metrics_listen: Some(localhost(o.quic_base + 200 + id as u16)),
                peers: peers.clone(),
                tls: pki.node(&format!("hub-{id}"))?,
                ..Default::default()
            })
        })
        .collect()
}

/// Starts everything and runs until `shutdown`.
pub async fn up(o: UpOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&o.data_dir)
        .with_context(|| format!("creating data dir {}", o.data_dir.display()))?;
    let pki = Pki::ensure(&o.data_dir.join("pki")).context("cluster PKI")?;
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();

    let hubs = hub_configs(&o, &pki)?;
    let hub_clients: Vec<String> = hubs.iter().map(|h| h.client_listen.to_string()).collect();
    for cfg in hubs {
        let id = cfg.id;
        let listeners = region_hub::Listeners::bind(&cfg)
            .with_context(|| format!("hub {id}: binding its ports (is another Strata running?)"))?;
        let hub = region_hub::start(cfg, listeners, shutdown.clone())
            .await
            .with_context(|| format!("starting hub {id}"))?;
        tasks.spawn(async move { hub.wait().await.with_context(|| format!("hub {id}")) });
    }

    let central_cfg = central::CentralConfig {
        listen: o.http,
        tls: pki.node("central")?,
        regions: vec![central::RegionConfig {
            name: o.region.clone(),
            hubs: hub_clients.clone(),
        }],
        ..Default::default()
    };
    let server = central::bind(central_cfg)
        .await
        .with_context(|| format!("starting central on {} (port in use? try --http)", o.http))?;
    let api = server.local_addr();
    let s = shutdown.clone();
    tasks.spawn(async move { server.run(s).await.context("central") });

    let mut mqtt = Vec::new();
    for i in 1..=o.edges {
        let name = format!("edge-{i}");
        let mut cfg = edge_node::EdgeConfig {
            name: name.clone(),
            region: o.region.clone(),
            data_dir: o.data_dir.join(&name),
            hubs: hub_clients.clone(),
            tls: pki.node(&name)?,
            metrics_listen: Some(localhost(o.quic_base + 300 + i)),
            ..Default::default()
        };
        cfg.ingress.listen = localhost(o.mqtt_port + i - 1);
        let node = edge_node::EdgeNode::start(cfg).await.with_context(|| {
            format!(
                "starting {name} (MQTT port {} in use? try --mqtt-port)",
                o.mqtt_port + i - 1
            )
        })?;
        if let Some(a) = node.mqtt_addr() {
            mqtt.push(a.to_string());
        }
        let s = shutdown.clone();
        tasks.spawn(async move { node.run(s).await.with_context(|| format!("edge {name}")) });
    }

    println!(
        "Strata is up ({} hubs in region {:?}, {} edges).",
        o.hubs, o.region, o.edges
    );
    println!("  HTTP API : http://{api}/api/v1/regions   (metrics at /metrics)");
    println!(
        "  MQTT     : {}   (topic strata/<tenant>/<device>/telemetry)",
        mqtt.join(", ")
    );
    println!("  Data     : {}", o.data_dir.display());
    if o.devices > 0 {
        println!(
            "  Devices  : {} simulated (tenant \"demo\"), {} reading/s each; try\n             curl 'http://{api}/api/v1/telemetry/demo/dev-0?step=10000'",
            o.devices, o.rate
        );
        let fleet = firmware_sim::FleetConfig {
            tenant: "demo".into(),
            devices: o.devices,
            endpoints: mqtt.clone(),
            rate_per_device: o.rate,
            seed: 1,
            ..Default::default()
        };
        let s = shutdown.clone();
        tasks.spawn(async move {
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
    let mut failure = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        Some(r) = tasks.join_next() => {
            if let Ok(Err(e)) = r {
                failure = Some(e);
            }
            shutdown.cancel();
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %format!("{e:#}"), "stopped with an error");
        }
    }
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
/// its own machine.
pub fn pki(dir: &Path, nodes: &[String]) -> anyhow::Result<()> {
    let pki = Pki::ensure(dir)?;
    for n in nodes {
        let f = pki.node(n)?;
        println!("{n}: cert {} key {}", f.cert.display(), f.key.display());
    }
    println!("CA: {}", pki.ca_path().display());
    Ok(())
}
