//! The edge node's TOML configuration.
//!
//! ```toml
//! name = "edge-1"
//! region = "local"
//! data-dir = "strata-data/edge-1"
//! hubs = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
//! tls = { ca = "pki/ca.pem", cert = "pki/edge-1.pem", key = "pki/edge-1.key" }
//! metrics-listen = "127.0.0.1:9101"
//! [ingress]
//! listen = "0.0.0.0:1883"
//! [monitors]
//! memory-mib = 256
//! cpu-millicores = 1000
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_net::TlsFiles;

use crate::ingress::{BridgeConfig, IngressConfig};
use crate::spool::SpoolConfig;
use crate::uplink::UplinkConfig;
use crate::workload::config::WorkloadConfig;

/// Everything an edge node needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EdgeConfig {
    /// Edge node name, unique within its region ([A-Za-z0-9_.-], 1-64
    /// chars). Required.
    pub name: String,
    /// Region this edge belongs to; hubs of other regions refuse it.
    /// Default `local`.
    pub region: String,
    /// Directory for the spool; a relative `spool.dir` is placed inside it.
    /// Default `strata-data/edge`.
    pub data_dir: PathBuf,
    /// The region hubs' client addresses (`host:port`), at least one.
    /// Required.
    pub hubs: Vec<String>,
    /// TLS material (cluster CA, this node's certificate and key). Required.
    pub tls: TlsFiles,
    /// Serve devices with the embedded MQTT server. Default true.
    pub serve_mqtt: bool,
    /// The embedded MQTT server.
    pub ingress: IngressConfig,
    /// Also take telemetry from an existing broker. Default: none.
    pub bridge: Option<BridgeConfig>,
    /// The durable spool.
    pub spool: SpoolConfig,
    /// The QUIC uplink to the hubs.
    pub uplink: UplinkConfig,
    /// Address for `/metrics` and `/health`. Default: none (disabled).
    pub metrics_listen: Option<SocketAddr>,
    /// The device-monitor host (capacity, queues, workers, runtime limits,
    /// scheduler tuning). Its files live in `<data-dir>/monitors`.
    pub monitors: WorkloadConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            name: String::new(),
            region: "local".into(),
            data_dir: "strata-data/edge".into(),
            hubs: Vec::new(),
            tls: TlsFiles::default(),
            serve_mqtt: true,
            ingress: IngressConfig::default(),
            bridge: None,
            spool: SpoolConfig::default(),
            uplink: UplinkConfig::default(),
            metrics_listen: None,
            monitors: WorkloadConfig::default(),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl EdgeConfig {
    /// Every problem with this config, one line each (empty when valid).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_name(&self.name) {
            p.push(format!(
                "name: {:?} must be 1-64 chars of [A-Za-z0-9_.-]",
                self.name
            ));
        }
        if !valid_name(&self.region) {
            p.push(format!(
                "region: {:?} must be 1-64 chars of [A-Za-z0-9_.-]",
                self.region
            ));
        }
        if self.hubs.is_empty() {
            p.push("hubs: at least one hub address is required".into());
        }
        for h in &self.hubs {
            if resolve(h).is_none() {
                p.push(format!("hubs: {h:?} is not a resolvable host:port"));
            }
        }
        p.extend(self.tls.problems("tls"));
        if self.serve_mqtt {
            if let Err(e) = self.ingress_config().validate() {
                p.push(format!("ingress: {e}"));
            }
        } else {
            // The time bounds apply to the bridge path too.
            p.extend(
                self.ingress
                    .time_bound_problems()
                    .into_iter()
                    .map(|e| format!("ingress: {e}")),
            );
        }
        if let Some(b) = &self.bridge {
            if let Err(e) = b.validate() {
                p.push(format!("bridge: {e}"));
            }
        }
        if !self.serve_mqtt && self.bridge.is_none() {
            p.push(
                "serve-mqtt is false and no [bridge] is set: nothing would feed this edge".into(),
            );
        }
        if let Err(e) = self.spool.validate() {
            p.push(format!("spool: {e}"));
        }
        p.extend(self.uplink.problems());
        p.extend(self.monitors.problems());
        p
    }

    /// Where the monitor host keeps assignments, modules and state.
    pub fn monitors_dir(&self) -> PathBuf {
        self.data_dir.join("monitors")
    }

    /// Hub addresses resolved to socket addresses (unresolvable ones are
    /// reported by [`EdgeConfig::problems`]).
    pub fn hub_addrs(&self) -> Vec<SocketAddr> {
        self.hubs.iter().filter_map(|h| resolve(h)).collect()
    }

    /// Directories that must be private and are checked at start: the data
    /// directory, and the spool's when it lies outside it.
    pub fn private_dirs(&self) -> Vec<PathBuf> {
        let spool = self.spool_config().dir;
        let mut dirs = vec![self.data_dir.clone()];
        if !spool.starts_with(&self.data_dir) {
            dirs.push(spool);
        }
        dirs
    }

    /// The ingress config with the edge's defaults filled in: credentials
    /// at `<data-dir>/devices.toml`, and the TLS listener serving the
    /// edge's own cluster certificate.
    pub fn ingress_config(&self) -> IngressConfig {
        let mut i = self.ingress.clone();
        if i.auth.credentials.is_none() {
            i.auth.credentials = Some(self.data_dir.join("devices.toml"));
        }
        if i.tls.cert.is_none() && i.tls.key.is_none() {
            i.tls.cert = Some(self.tls.cert.clone());
            i.tls.key = Some(self.tls.key.clone());
        }
        i
    }

    /// The spool config with its directory placed under `data-dir`.
    pub fn spool_config(&self) -> SpoolConfig {
        let mut s = self.spool.clone();
        if s.dir.is_relative() {
            s.dir = self.data_dir.join(&s.dir);
        }
        s
    }
}

fn resolve(h: &str) -> Option<SocketAddr> {
    h.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_name_hubs_and_tls() {
        let p = EdgeConfig::default().problems();
        assert!(p.iter().any(|l| l.starts_with("name")), "{p:?}");
        assert!(p.iter().any(|l| l.starts_with("hubs")), "{p:?}");
        assert!(p.iter().any(|l| l.starts_with("tls.ca")), "{p:?}");
    }

    #[test]
    fn unknown_keys_and_all_problems_reported() {
        let err = toml::from_str::<EdgeConfig>("name = \"e\"\nhubz = []\n").unwrap_err();
        assert!(err.to_string().contains("hubz"), "{err}");
        let cfg: EdgeConfig = toml::from_str(
            "name = \"bad name\"\nhubs = [\"nowhere\"]\n[uplink]\nmax-inflight = 0\n\
             [monitors]\nqueue-records = 0\n[monitors.limits]\nmax-deadline-ms = 0\n",
        )
        .unwrap();
        let p = cfg.problems();
        assert!(p.len() >= 6, "{p:?}");
        assert!(
            p.iter()
                .any(|l| l == "monitors.queue-records: must be greater than 0"),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("monitors.limits.max-deadline-ms")),
            "{p:?}"
        );
    }

    #[test]
    fn time_bounds_are_validated_for_a_bridge_only_edge() {
        let cfg: EdgeConfig = toml::from_str(
            "name = \"e\"\nhubs = [\"127.0.0.1:1\"]\nserve-mqtt = false\n\
             [ingress]\nmax-future-skew = \"0s\"\nmax-packet-bytes = 1\n\
             [bridge]\nbroker = \"127.0.0.1:1883\"\n",
        )
        .unwrap();
        let p = cfg.problems();
        assert!(
            p.iter().any(|l| l.starts_with("ingress: max-future-skew")),
            "{p:?}"
        );
        // The server's own limits do not matter when it is off.
        assert!(!p.iter().any(|l| l.contains("max-packet-bytes")), "{p:?}");
    }

    #[test]
    fn private_dirs_are_the_data_dir_and_an_outside_spool() {
        let mut c = EdgeConfig {
            data_dir: "/d/edge".into(),
            ..Default::default()
        };
        assert_eq!(c.private_dirs(), vec![PathBuf::from("/d/edge")]);
        c.spool.dir = "/fast/spool".into();
        assert_eq!(
            c.private_dirs(),
            vec![PathBuf::from("/d/edge"), PathBuf::from("/fast/spool")]
        );
    }

    /// docs/config/edge.toml is the reference users copy: it must parse,
    /// and the defaults it shows must be the real ones.
    #[test]
    fn documented_example_parses_with_true_defaults() {
        let doc: EdgeConfig = toml::from_str(include_str!("../../docs/config/edge.toml")).unwrap();
        let d = EdgeConfig::default();
        assert_eq!(doc.ingress.max_packet_bytes, d.ingress.max_packet_bytes);
        assert_eq!(doc.ingress.max_inflight, d.ingress.max_inflight);
        assert_eq!(doc.ingress.max_connections, d.ingress.max_connections);
        assert_eq!(doc.ingress.subscriber_queue, d.ingress.subscriber_queue);
        assert_eq!(doc.ingress.connect_timeout_ms, d.ingress.connect_timeout_ms);
        assert_eq!(doc.ingress.write_timeout_ms, d.ingress.write_timeout_ms);
        assert_eq!(
            doc.ingress.max_connections_per_ip,
            d.ingress.max_connections_per_ip
        );
        assert_eq!(doc.ingress.max_keep_alive, d.ingress.max_keep_alive);
        assert_eq!(doc.ingress.max_future_skew, d.ingress.max_future_skew);
        assert_eq!(doc.ingress.max_past_age, d.ingress.max_past_age);
        assert_eq!(doc.ingress.v3_refusal, d.ingress.v3_refusal);
        assert_eq!(doc.spool, d.spool);
        assert_eq!(doc.uplink, d.uplink);
        assert_eq!(doc.region, d.region);
        assert_eq!(doc.data_dir, d.data_dir);
        assert_eq!(doc.monitors, d.monitors);
        assert!(doc.bridge.is_none());
        assert_eq!(doc.ingress.auth, d.ingress.auth);
        assert_eq!(doc.ingress.tls, d.ingress.tls);
        assert_eq!(doc.ingress.tls_listen, d.ingress.tls_listen);
    }

    #[test]
    fn ingress_defaults_come_from_the_edge() {
        let cfg: EdgeConfig = toml::from_str(
            "data-dir = \"d\"\ntls = { ca = \"ca.pem\", cert = \"e.pem\", key = \"e.key\" }\n",
        )
        .unwrap();
        let i = cfg.ingress_config();
        assert_eq!(i.auth.credentials, Some(PathBuf::from("d/devices.toml")));
        assert_eq!(i.tls.cert, Some(PathBuf::from("e.pem")));
        assert_eq!(i.tls.key, Some(PathBuf::from("e.key")));
        assert!(!i.auth.allow_anonymous, "secure by default");
        let explicit: EdgeConfig = toml::from_str(
            "[ingress.auth]\ncredentials = \"/etc/strata/devices.toml\"\n[ingress.tls]\ncert = \"m.pem\"\nkey = \"m.key\"\n",
        )
        .unwrap();
        let i = explicit.ingress_config();
        assert_eq!(
            i.auth.credentials,
            Some(PathBuf::from("/etc/strata/devices.toml"))
        );
        assert_eq!(i.tls.cert, Some(PathBuf::from("m.pem")));
    }
}
