//! A whole Strata cluster of real processes in a temp dir.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use strata_net::Pki;

use crate::proc::Proc;
use crate::udp_proxy::UdpProxy;
use crate::wait::wait_until;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Cluster tests take this lock so that only one cluster runs at a time on
/// the 2-core CI machine. (An async mutex: it is held across awaits, works
/// across the tests' separate runtimes and does not poison.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Shape of the cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Hub replicas (1, 3 or 5).
    pub hubs: usize,
    /// Edge nodes.
    pub edges: usize,
    /// Region name.
    pub region: String,
    /// Extra TOML appended to every edge config (top-level keys first).
    pub edge_extra: String,
    /// Extra TOML appended to every hub config, after `[[peers]]`: start
    /// it with a table header (e.g. `[membership]`).
    pub hub_extra: String,
    /// Edges let MQTT clients in without credentials (`[ingress.auth]
    /// allow-anonymous = true`), for tests about something else that say
    /// so. Default false: clients log in with [`login`].
    pub allow_anonymous: bool,
    /// Edges (indices into `Cluster::edges`) whose hub links go through a
    /// [`UdpProxy`] the test can cut ([`Cluster::cut_edge`]). A hub's
    /// leader hint names its real address, so keep `hubs = 1` for a
    /// partition that redirects cannot bypass.
    pub proxied_edges: Vec<usize>,
    /// Extra TOML sections appended to one edge's config: `(index into
    /// Cluster::edges, text)`, e.g. `(0, "[monitors]\nmemory-mib = 16\n")`
    /// to give edge-1 less capacity than the others. Must not repeat a
    /// table that `edge_extra` opens.
    pub edge_sections: Vec<(usize, String)>,
    /// A second region of the same shape (hubs, edges), federated by the
    /// same central: its processes are in [`Cluster::second`]. Default none.
    pub second_region: Option<String>,
    /// Extra TOML appended to central's config, after its `[[regions]]`:
    /// start it with a table header (e.g. `[global.forecast]`). Default
    /// none.
    pub central_extra: String,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            hubs: 3,
            edges: 2,
            region: "local".into(),
            edge_extra: String::new(),
            hub_extra: String::new(),
            allow_anonymous: false,
            proxied_edges: Vec::new(),
            edge_sections: Vec::new(),
            second_region: None,
            central_extra: String::new(),
        }
    }
}

/// The processes of [`ClusterOpts::second_region`].
pub struct RegionProcs {
    /// Region name.
    pub name: String,
    /// Hub processes, index i = Raft id i+1.
    pub hubs: Vec<Proc>,
    /// Hub addresses, same order.
    pub hub_addrs: Vec<HubAddrs>,
    /// Edge processes.
    pub edges: Vec<Proc>,
}

/// Addresses of one hub replica.
#[derive(Debug, Clone, Copy)]
pub struct HubAddrs {
    /// Raft id.
    pub id: u64,
    /// Hub ↔ hub address.
    pub peer: SocketAddr,
    /// Edge / central address.
    pub client: SocketAddr,
}

/// Tenants the harness's credentials file holds a test identity for.
pub const TENANTS: [&str; 4] = ["acme", "metrics", "demo", "other"];

/// The MQTT login (username, password) of `tenant`'s test identity, which
/// may publish as every device of that tenant (see [`TENANTS`]).
pub fn login(tenant: &str) -> (String, String) {
    (format!("test-{tenant}"), format!("pw-{tenant}-harness"))
}

/// Runs `strata device add` (the real CLI) for every test identity into
/// `file`, hashing each password once per cluster.
async fn write_test_credentials(file: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    for tenant in TENANTS {
        let (user, password) = login(tenant);
        let mut child = tokio::process::Command::new(crate::proc::bin_path("strata")?)
            .args(["device", "add", "--file"])
            .arg(file)
            .args(["--username", &user, "--tenant", tenant, "--devices", "*"])
            .arg("--password-stdin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running strata device add")?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(format!("{password}\n").as_bytes()).await?;
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .context("strata device add hung")??;
        anyhow::ensure!(
            out.status.success(),
            "strata device add {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Free TCP ports on 127.0.0.1 (same approach as [`free_udp_ports`]).
pub fn free_tcp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let socks: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(socks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// A running cluster. Dropping it kills every process; if the test is
/// panicking, the tail of every log is printed first.
pub struct Cluster {
    /// Root of all data, configs and logs.
    pub dir: tempfile::TempDir,
    /// Hub processes, index i = Raft id i+1.
    pub hubs: Vec<Proc>,
    /// Hub addresses, same order.
    pub hub_addrs: Vec<HubAddrs>,
    /// Edge processes.
    pub edges: Vec<Proc>,
    /// Central.
    pub central: Proc,
    /// Client for central's API.
    pub api: Api,
    /// QUIC endpoint with a `tool` certificate, for asking hubs directly.
    pub tool: quinn::Endpoint,
    /// The options it was started with.
    pub opts: ClusterOpts,
    /// The proxies of `opts.proxied_edges`, by edge index, one per hub.
    pub proxies: std::collections::BTreeMap<usize, Vec<UdpProxy>>,
    /// The second region, when [`ClusterOpts::second_region`] asked for one.
    pub second: Option<RegionProcs>,
}

/// Free UDP ports on 127.0.0.1, all held until every one is chosen so they
/// are distinct, then released for the hubs to bind.
pub fn free_udp_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(socks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

pub(crate) fn tls_toml(pki: &Pki, name: &str) -> anyhow::Result<String> {
    let f = pki.node(name)?;
    Ok(format!(
        "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
        f.ca.display().to_string(),
        f.cert.display().to_string(),
        f.key.display().to_string()
    ))
}

impl Cluster {
    /// Generates PKI and configs and starts hubs, central and edges.
    pub async fn start(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("strata-test-").tempdir()?;
        let root = dir.path().to_owned();
        eprintln!("cluster dir: {}", root.display());
        let pki = Pki::ensure(&root.join("pki"))?;
        let (hubs, hub_addrs) = start_hubs(&root, &pki, &opts, &opts.region, "hub").await?;
        let second_hubs = match &opts.second_region {
            Some(name) => Some((
                name.clone(),
                start_hubs(&root, &pki, &opts, name, &format!("{name}-hub")).await?,
            )),
            None => None,
        };
        let hub_list: Vec<String> = hub_addrs
            .iter()
            .map(|h| format!("\"{}\"", h.client))
            .collect();
        let mut central_cfg = format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = {:?}\n{}[[regions]]\nname = \"{}\"\nhubs = [{}]\n",
            root.join("central").display().to_string(),
            tls_toml(&pki, "central")?,
            opts.region,
            hub_list.join(", ")
        );
        if let Some((name, (_, addrs))) = &second_hubs {
            let list: Vec<String> = addrs.iter().map(|h| format!("\"{}\"", h.client)).collect();
            central_cfg.push_str(&format!(
                "[[regions]]\nname = \"{name}\"\nhubs = [{}]\n",
                list.join(", ")
            ));
        }
        central_cfg.push_str(&opts.central_extra);
        let central = spawn_with_config(&root, "central", "central", &central_cfg).await?;
        let http = central
            .ready_field("http")
            .context("central ready line has no http address")?;
        let api = Api::new(&http).with_token(&central_token(&central)?);
        let mut edges = Vec::new();
        let mut proxies = std::collections::BTreeMap::new();
        // Fixed per edge, so a restarted edge is found by its devices again.
        let mqtt_ports = free_tcp_ports(opts.edges)?;
        // Each edge reads its own copy at the default <data-dir>/devices.toml.
        let credentials = root.join("devices.toml");
        write_test_credentials(&credentials).await?;
        for i in 1..=opts.edges {
            let name = format!("edge-{i}");
            let data = root.join(&name);
            std::fs::DirBuilder::new().mode(0o700).create(&data)?;
            std::fs::copy(&credentials, data.join("devices.toml"))?;
            let mut hubs = hub_list.clone();
            if opts.proxied_edges.contains(&(i - 1)) {
                let mut ps = Vec::new();
                for h in &hub_addrs {
                    ps.push(UdpProxy::start(h.client).await?);
                }
                hubs = ps.iter().map(|p| format!("\"{}\"", p.addr)).collect();
                proxies.insert(i - 1, ps);
            }
            let mut cfg = edge_config(
                &root,
                &pki,
                &name,
                &opts,
                &opts.region,
                &hubs,
                mqtt_ports[i - 1],
            )?;
            for (_, extra) in opts.edge_sections.iter().filter(|(e, _)| *e == i - 1) {
                cfg.push_str(extra);
                cfg.push('\n');
            }
            edges.push(spawn_with_config(&root, &name, "edge-node", &cfg).await?);
        }
        let second = match second_hubs {
            Some((name, (hubs, hub_addrs))) => {
                let list: Vec<String> = hub_addrs
                    .iter()
                    .map(|h| format!("\"{}\"", h.client))
                    .collect();
                let ports = free_tcp_ports(opts.edges)?;
                let mut edges = Vec::new();
                for i in 1..=opts.edges {
                    let edge = format!("{name}-edge-{i}");
                    let data = root.join(&edge);
                    std::fs::DirBuilder::new().mode(0o700).create(&data)?;
                    std::fs::copy(&credentials, data.join("devices.toml"))?;
                    let cfg = edge_config(&root, &pki, &edge, &opts, &name, &list, ports[i - 1])?;
                    edges.push(spawn_with_config(&root, &edge, "edge-node", &cfg).await?);
                }
                Some(RegionProcs {
                    name,
                    hubs,
                    hub_addrs,
                    edges,
                })
            }
            None => None,
        };
        let tool_tls = strata_net::NodeTls::load(&pki.node("tool")?)?;
        let tool = strata_net::client_endpoint(&tool_tls)?;
        let cluster = Cluster {
            dir,
            hubs,
            hub_addrs,
            edges,
            central,
            api,
            tool,
            opts,
            proxies,
            second,
        };
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        if let Some(second) = &cluster.second {
            let name = second.name.clone();
            wait_until(
                "the second region's leader",
                Duration::from_secs(30),
                || async { cluster.api.leader(&name).await.ok().flatten() },
            )
            .await?;
        }
        Ok(cluster)
    }

    /// Cuts edge `i`'s links to the hubs (it must be in `proxied_edges`):
    /// datagrams are dropped both ways, nothing is closed.
    pub fn cut_edge(&self, i: usize) {
        for p in self.proxies.get(&i).into_iter().flatten() {
            p.cut();
        }
    }

    /// Heals what [`Cluster::cut_edge`] cut.
    pub fn restore_edge(&self, i: usize) {
        for p in self.proxies.get(&i).into_iter().flatten() {
            p.restore();
        }
    }

    /// The edges' MQTT addresses, in edge order.
    pub fn mqtt_addrs(&self) -> Vec<String> {
        self.edges
            .iter()
            .filter_map(|e| e.ready_field("mqtt"))
            .collect()
    }

    /// Waits until central sees a region leader; returns its Raft id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let region = self.opts.region.clone();
        wait_until("a region leader", timeout, || async {
            self.api.leader(&region).await.ok().flatten()
        })
        .await
    }

    /// Asks one hub replica for its status directly over QUIC (no central
    /// in between), giving up after `timeout`.
    pub async fn hub_status(
        &self,
        id: u64,
        timeout: Duration,
    ) -> anyhow::Result<strata_protocol::HubStatus> {
        use strata_protocol::{HubRequest, HubResponse, NodeIdentity, NodeKind};
        let addr = self.hub_addrs[self.hub_index(id)].client;
        let me = NodeIdentity {
            kind: NodeKind::Tool,
            id: "test-harness".into(),
            region: self.opts.region.clone(),
        };
        let call = async {
            let (conn, _) = strata_net::connect(&self.tool, addr, &me).await?;
            let resp: HubResponse = strata_net::rpc::call(&conn, &HubRequest::Status).await?;
            conn.close(0u32.into(), b"done");
            match resp {
                HubResponse::Status(s) => Ok(s),
                other => anyhow::bail!("hub {id}: unexpected status answer {other:?}"),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| anyhow::anyhow!("hub {id}: no status within {timeout:?}"))?
    }

    /// The leader's id and applied index among the running hubs, asked
    /// directly.
    pub async fn leader_applied(&self) -> Option<(u64, u64)> {
        for h in &self.hub_addrs {
            if let Ok(s) = self.hub_status(h.id, Duration::from_millis(300)).await {
                if s.role == strata_protocol::RaftRole::Leader {
                    return Some((s.id, s.stored_records));
                }
            }
        }
        None
    }

    /// Index into `hubs` of Raft id `id`.
    pub fn hub_index(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// The credentials file edge `i` (0-based) reads and hot-reloads.
    pub fn credentials_file(&self, i: usize) -> PathBuf {
        self.root()
            .join(format!("edge-{}", i + 1))
            .join("devices.toml")
    }

    /// Path of the cluster's root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    fn all_procs(&self) -> impl Iterator<Item = &Proc> {
        self.hubs
            .iter()
            .chain(self.edges.iter())
            .chain(std::iter::once(&self.central))
    }
}

impl Cluster {
    /// Ends a test: on error, prints every process's log tail before
    /// returning the error. With `STRATA_TEST_KEEP` set, the cluster
    /// directory (configs, data, logs) is kept for inspection.
    pub fn finish(mut self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        if result.is_err() {
            self.dump_logs();
        }
        if std::env::var_os("STRATA_TEST_KEEP").is_some() {
            if let Ok(spare) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, spare).keep();
                eprintln!("kept cluster dir {}", kept.display());
            }
        }
        result
    }

    fn dump_logs(&self) {
        for p in self.all_procs() {
            eprintln!(
                "----- {} (log {}) -----\n{}",
                p.name,
                p.log.display(),
                p.log_tail(60)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

fn edge_config(
    root: &Path,
    pki: &Pki,
    name: &str,
    opts: &ClusterOpts,
    region: &str,
    hub_list: &[String],
    mqtt_port: u16,
) -> anyhow::Result<String> {
    let (top, sections) = match opts.edge_extra.find('[') {
        Some(i) => opts.edge_extra.split_at(i),
        None => (opts.edge_extra.as_str(), ""),
    };
    let auth = if opts.allow_anonymous {
        "[ingress.auth]\nallow-anonymous = true\n"
    } else {
        ""
    };
    Ok(format!(
        "name = \"{name}\"\nregion = \"{}\"\ndata-dir = {:?}\nhubs = [{}]\nmetrics-listen = \"127.0.0.1:0\"\n{}{top}\n[ingress]\nlisten = \"127.0.0.1:{mqtt_port}\"\n{auth}{sections}\n",
        region,
        root.join(name).display().to_string(),
        hub_list.join(", "),
        tls_toml(pki, name)?,
    ))
}

/// Starts `opts.hubs` hub replicas of `region`, named `<prefix>-<id>`.
async fn start_hubs(
    root: &Path,
    pki: &Pki,
    opts: &ClusterOpts,
    region: &str,
    prefix: &str,
) -> anyhow::Result<(Vec<Proc>, Vec<HubAddrs>)> {
    let ports = free_udp_ports(opts.hubs * 2)?;
    let hub_addrs: Vec<HubAddrs> = (0..opts.hubs)
        .map(|i| HubAddrs {
            id: i as u64 + 1,
            peer: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
            client: SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
        })
        .collect();
    let mut peers = String::new();
    for h in &hub_addrs {
        peers.push_str(&format!(
            "[[peers]]\nid = {}\npeer-addr = \"{}\"\nclient-addr = \"{}\"\n",
            h.id, h.peer, h.client
        ));
    }
    let mut hubs = Vec::new();
    for h in &hub_addrs {
        let name = format!("{prefix}-{}", h.id);
        let cfg = format!(
            "region = \"{}\"\nid = {}\ndata-dir = {:?}\npeer-listen = \"{}\"\nclient-listen = \"{}\"\nmetrics-listen = \"127.0.0.1:0\"\n{}{}",
            region,
            h.id,
            root.join(&name).display().to_string(),
            h.peer,
            h.client,
            tls_toml(pki, &name)?,
            peers
        ) + &opts.hub_extra;
        hubs.push(spawn_with_config(root, &name, "region-hub", &cfg).await?);
    }
    Ok((hubs, hub_addrs))
}

pub(crate) async fn spawn_with_config(
    root: &Path,
    name: &str,
    bin: &str,
    cfg: &str,
) -> anyhow::Result<Proc> {
    let cfg_path: PathBuf = root.join(format!("{name}.toml"));
    std::fs::write(&cfg_path, cfg)?;
    let log = root.join(format!("{name}.log"));
    Proc::spawn(
        name,
        bin,
        &["--config".to_owned(), cfg_path.display().to_string()],
        &log,
    )
    .await
    .with_context(|| format!("starting {name}"))
}

/// A small client for central's HTTP API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// The same without a whole-request deadline, for event streams.
    stream_http: reqwest::Client,
}

/// The operator token in `path` (central's `operator.token`).
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the operator token {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// The operator token of a running central, from the token file its
/// ready line names.
pub fn central_token(central: &Proc) -> anyhow::Result<String> {
    let file = central
        .ready_field("token-file")
        .context("central ready line has no token-file")?;
    read_token(Path::new(&file))
}

fn http_client(token: Option<&str>, timeout: Option<Duration>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .expect("a token is a valid header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut b = reqwest::Client::builder().default_headers(headers);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().expect("reqwest client")
}

impl Api {
    /// Client for `http://addr`, sending no token.
    pub fn new(addr: &str) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: http_client(None, Some(Duration::from_secs(10))),
            stream_http: http_client(None, None),
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(self, token: &str) -> Api {
        Api {
            base: self.base,
            http: http_client(Some(token), Some(Duration::from_secs(10))),
            stream_http: http_client(Some(token), None),
        }
    }

    /// GET `path` as a stream (no whole-request deadline): the response,
    /// whatever its status.
    pub async fn get_stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .stream_http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?)
    }

    /// GET `path`, returning the status and the JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// POST `body` with `content_type` to `path`: status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// PUT a JSON `body` to `path`: status and JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// DELETE `path`: status and JSON body.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The region's leader id, if central sees one.
    pub async fn leader(&self, region: &str) -> anyhow::Result<Option<u64>> {
        let (status, body) = self.get(&format!("/api/v1/regions/{region}")).await?;
        if status != 200 {
            return Ok(None);
        }
        Ok(find_leader(&body))
    }

    /// Raw telemetry records of a device in `[from, to)`.
    pub async fn telemetry(
        &self,
        tenant: &str,
        device: &str,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self
            .get(&format!(
                "/api/v1/telemetry/{tenant}/{device}?from={from}&to={to}&limit=100000"
            ))
            .await?;
        anyhow::ensure!(
            status == 200,
            "telemetry query for {device}: {status} {body}"
        );
        records_of(&body).with_context(|| format!("unexpected telemetry body: {body}"))
    }
}

/// Extracts the leader id from a region document.
fn find_leader(region: &Value) -> Option<u64> {
    // Accept both a bare region document and one wrapped in {"region": ...}.
    let region = region
        .get("region")
        .filter(|r| r.is_object())
        .unwrap_or(region);
    let replicas = region.get("replicas")?.as_array()?;
    replicas.iter().find_map(|r| {
        let role = r.get("role")?.as_str()?;
        if role == "leader" {
            r.get("id")?.as_u64()
        } else {
            None
        }
    })
}

/// Extracts the raw records from a telemetry response.
fn records_of(body: &Value) -> Option<Vec<Value>> {
    if let Some(a) = body.get("records").and_then(Value::as_array) {
        return Some(a.clone());
    }
    let data = body
        .get("data")
        .or_else(|| body.get("result")?.get("data"))?;
    data.as_array().cloned()
}

impl Api {
    /// Records per device of `tenant`, from central's device list.
    pub async fn device_counts(
        &self,
        tenant: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let (status, body) = self
            .get(&format!("/api/v1/devices?tenant={tenant}"))
            .await?;
        anyhow::ensure!(status == 200, "devices: {status} {body}");
        let mut out = std::collections::BTreeMap::new();
        for d in body["devices"].as_array().context("devices array")? {
            out.insert(
                d["device"].as_str().unwrap_or_default().to_owned(),
                d["records"].as_u64().unwrap_or(0),
            );
        }
        Ok(out)
    }

    /// Stored records on the leader (None without a leader).
    pub async fn leader_stored(&self, region: &str) -> anyhow::Result<Option<(u64, u64)>> {
        let (status, body) = self.get(&format!("/api/v1/regions/{region}")).await?;
        if status != 200 {
            return Ok(None);
        }
        let region = body.get("region").unwrap_or(&body);
        Ok(region["replicas"].as_array().and_then(|rs| {
            rs.iter().find_map(|r| {
                (r["role"].as_str() == Some("leader"))
                    .then(|| Some((r["id"].as_u64()?, r["stored-records"].as_u64()?)))
                    .flatten()
            })
        }))
    }
}

// ---------------------------------------------------------------------------
// Metrics scraping and raw HTTP, for tests that check counters and error
// bodies. Added for bad_input.rs, bridge.rs and metrics.rs.

/// GET `http://{addr}{path}`: status, content type and body text.
pub async fn http_get_text(addr: &str, path: &str) -> anyhow::Result<(u16, String, String)> {
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, ctype, r.text().await?))
}

/// The Prometheus text of `http://{addr}/metrics`; fails unless it answers 200.
pub async fn scrape(addr: &str) -> anyhow::Result<String> {
    let (status, _, body) = http_get_text(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "GET {addr}/metrics: {status} {body}");
    Ok(body)
}

/// The value of one sample in Prometheus text. `series` is the sample name
/// with its labels exactly as rendered, e.g.
/// `strata_ingress_rejects_total{reason="invalid_json"}`. `None` when the
/// series is absent (a labelled counter that never fired is absent).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let v = rest.strip_prefix(' ')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

impl Cluster {
    /// `/metrics` address of edge `i` (0-based, as in `edges`).
    pub fn edge_metrics_addr(&self, i: usize) -> anyhow::Result<String> {
        self.edges[i]
            .ready_field("metrics")
            .with_context(|| format!("edge-{} ready line has no metrics address", i + 1))
    }

    /// `/metrics` address of hub replica `id`.
    pub fn hub_metrics_addr(&self, id: u64) -> anyhow::Result<String> {
        self.hubs[self.hub_index(id)]
            .ready_field("metrics")
            .with_context(|| format!("hub-{id} ready line has no metrics address"))
    }

    /// Central's operator token.
    pub fn operator_token(&self) -> anyhow::Result<String> {
        central_token(&self.central)
    }

    /// Central serves `/metrics` and `/health` on its API address.
    pub fn central_metrics_addr(&self) -> anyhow::Result<String> {
        self.central
            .ready_field("http")
            .context("central ready line has no http address")
    }

    /// One sample of a process's `/metrics` (see [`metric_value`]); an absent
    /// series counts as 0, as for a labelled counter that never fired.
    pub async fn metric(&self, addr: &str, series: &str) -> anyhow::Result<f64> {
        Ok(metric_value(&scrape(addr).await?, series).unwrap_or(0.0))
    }
}

impl Api {
    /// Sends `method path` with `body` and `content_type` (none when
    /// `None`); returns the status and the JSON body (`Null` if not JSON).
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}
