//! A group of central replicas as real processes, with one shared operator
//! token file (as `strata up` writes it) and no hubs behind them: for tests
//! of central's own replicated state.

use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_net::Pki;

use crate::cluster::{free_tcp_ports, free_udp_ports, read_token, spawn_with_config, tls_toml};
use crate::{Api, Proc};

/// Running central replicas.
pub struct CentralGroup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The replicas, ids 1..=n in order.
    pub replicas: Vec<Proc>,
    token: String,
}

impl CentralGroup {
    /// Starts `n` replicas with Raft ticks of `tick_ms`.
    pub async fn start(n: usize, tick_ms: u64) -> anyhow::Result<CentralGroup> {
        let dir = tempfile::Builder::new()
            .prefix("strata-central-")
            .tempdir()?;
        let root = dir.path().to_owned();
        eprintln!("central group dir: {}", root.display());
        let pki = Pki::ensure(&root.join("pki"))?;
        let (peers, https) = (free_udp_ports(n)?, free_tcp_ports(n)?);
        let mut replicas_toml = String::new();
        for i in 0..n {
            replicas_toml.push_str(&format!(
                "[[cluster.replicas]]\nid = {}\npeer-addr = \"127.0.0.1:{}\"\nhttp-addr = \"127.0.0.1:{}\"\n",
                i + 1,
                peers[i],
                https[i]
            ));
        }
        let token_file = root.join("operator.token");
        let mut replicas = Vec::new();
        for i in 0..n {
            let name = format!("central-{}", i + 1);
            let cfg = format!(
                "listen = \"127.0.0.1:{http}\"\ndata-dir = {data:?}\n{tls}\
                 [auth]\ntoken-file = {token:?}\n\
                 [[regions]]\nname = \"west\"\nhubs = [\"127.0.0.1:9\"]\n\
                 [cluster]\nid = {id}\npeer-listen = \"127.0.0.1:{peer}\"\ntick-ms = {tick_ms}\n{replicas_toml}",
                http = https[i],
                data = root.join(&name).display().to_string(),
                tls = tls_toml(&pki, &name)?,
                token = token_file.display().to_string(),
                id = i + 1,
                peer = peers[i],
            );
            replicas.push(spawn_with_config(&root, &name, "central", &cfg).await?);
        }
        let token = read_token(&token_file).context("the shared operator token")?;
        Ok(CentralGroup {
            _dir: dir,
            root,
            replicas,
            token,
        })
    }

    /// The group's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An API client for replica `i` (0-based).
    pub fn api(&self, i: usize) -> anyhow::Result<Api> {
        let http = self.replicas[i]
            .ready_field("http")
            .context("central ready line has no http address")?;
        Ok(Api::new(&http).with_token(&self.token))
    }

    /// The leader's index (0-based) as the running replicas report it.
    pub async fn leader(&mut self) -> Option<usize> {
        for i in 0..self.replicas.len() {
            if !self.replicas[i].is_running() {
                continue;
            }
            let Ok(api) = self.api(i) else { continue };
            if let Ok((200, v)) = api.get("/api/v1/central").await {
                if v["role"] == "leader" {
                    return v["replica"].as_u64().map(|id| id as usize - 1);
                }
            }
        }
        None
    }
}
