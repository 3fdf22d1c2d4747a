//! What device monitors produce and report, and how their specs travel.
//!
//! - [`SpoolEntry`]: one entry of an edge's durable spool. Telemetry, alerts
//!   and derived metrics share the spool, its sequence numbers and its
//!   exactly-once path to the region (spool → QUIC → Raft), so an alert
//!   raised offline is delivered like any reading.
//! - [`AlertRecord`] / [`DerivedMetricRecord`]: a monitor's outputs, stamped
//!   by the edge with tenant, monitor and time. The tenant always comes from
//!   the instance, never from the guest, so a monitor cannot write into
//!   another tenant.
//! - [`AlertQuery`]: the alert read (tenant, device, minimum severity, time).
//! - [`InstanceStatus`], [`NodeResources`], [`MonitorCapacity`]: what an edge
//!   reports about its instances and its machine in every heartbeat, so the
//!   region sees measured use, not only requests. Their JSON (kebab-case) is
//!   what central's API serves as is.
//! - [`MonitorInfo`]: a submitted monitor as stored in the region, with its
//!   allocations and evaluations.
//! - [`FenceStamp`]: the allocation and fencing token monitor outputs carry.
//! - [`StateCheckpoint`]: an instance's key-value state on its way to the
//!   region (a spool entry) and back to a replacement (in its allocation).

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::scheduling::{AllocationInfo, EvaluationInfo};
use crate::telemetry::{Metric, Tag, TelemetryRecord};
use crate::workload::MonitorSpec;

/// Alert severity, ordered: `info < warning < critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// From the guest ABI code (0 info, 1 warning, 2 critical).
    pub fn from_abi(code: i32) -> Option<Severity> {
        match code {
            0 => Some(Severity::Info),
            1 => Some(Severity::Warning),
            2 => Some(Severity::Critical),
            _ => None,
        }
    }

    /// Stable kebab-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity {other:?}: expected info, warning or critical"
            )),
        }
    }
}

/// An alert raised by a monitor instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AlertRecord {
    /// Tenant of the monitor (and so of the device).
    pub tenant: String,
    /// Device the alert is about.
    pub device: String,
    /// Monitor name within the tenant.
    pub monitor: String,
    /// Edge node whose instance raised it.
    pub edge: String,
    /// How bad.
    pub severity: Severity,
    /// Machine-readable code (`"anomaly"`).
    pub code: String,
    /// Human-readable text.
    pub message: String,
    /// When the edge received it from the guest, ms since the Unix epoch.
    pub ts_ms: i64,
}

/// A metric derived by a monitor instance. The region stores it as telemetry
/// of `device`, named `<monitor>/<name>` and tagged `monitor=<monitor>`, so
/// the ordinary telemetry queries (raw and downsampled) read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct DerivedMetricRecord {
    /// Tenant of the monitor.
    pub tenant: String,
    /// Device the metric is about.
    pub device: String,
    /// Monitor name.
    pub monitor: String,
    /// Metric name as the guest gave it.
    pub name: String,
    /// Finite value.
    pub value: f64,
    /// ms since the Unix epoch.
    pub ts_ms: i64,
}

impl DerivedMetricRecord {
    /// The telemetry record the region stores for this metric.
    pub fn to_telemetry(&self) -> TelemetryRecord {
        TelemetryRecord {
            tenant: self.tenant.clone(),
            device: self.device.clone(),
            ts_ms: self.ts_ms,
            seq: None,
            metrics: vec![Metric {
                name: format!("{}/{}", self.monitor, self.name),
                value: self.value,
            }],
            tags: vec![Tag {
                key: "monitor".to_owned(),
                value: self.monitor.clone(),
            }],
        }
    }
}

/// One entry of an edge's spool, and so of a [`crate::TelemetryBatch`].
/// Variants only ever grow at the end (bincode writes the variant index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "data")]
pub enum SpoolEntry {
    /// A device reading.
    Telemetry(TelemetryRecord),
    /// A monitor's alert.
    Alert(AlertRecord),
    /// A monitor's derived metric.
    Metric(DerivedMetricRecord),
    /// A monitor's alert, stamped with its instance's allocation and
    /// fencing token (protocol version 5).
    FencedAlert {
        /// The alert.
        alert: AlertRecord,
        /// Who raised it.
        fence: FenceStamp,
    },
    /// A monitor's derived metric, stamped like [`SpoolEntry::FencedAlert`].
    FencedMetric {
        /// The metric.
        metric: DerivedMetricRecord,
        /// Who derived it.
        fence: FenceStamp,
    },
    /// A checkpoint of a monitor instance's key-value state (protocol
    /// version 6), fenced like the outputs: the region keeps the last one
    /// per instance and hands it to a replacement.
    Checkpoint(StateCheckpoint),
}

/// A monitor instance's key-value state as its edge checkpointed it.
/// Travels in the spool (edge → region) and inline in
/// [`crate::scheduling::EdgeAllocation::checkpoint`] (region → edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct StateCheckpoint {
    /// Tenant of the monitor.
    pub tenant: String,
    /// Monitor (workload) name.
    pub workload: String,
    /// The allocation and fencing token of the instance that took it.
    pub fence: FenceStamp,
    /// When the edge took it, ms since the Unix epoch (edge clock; only
    /// compared between checkpoints of the same allocation).
    pub taken_ms: i64,
    /// The state: the bincode encoding of the instance's key-value map
    /// (`BTreeMap<String, Vec<u8>>`), opaque to the region. Lowercase hex
    /// in JSON (an edge persists it with its allocation).
    #[serde(with = "hex_bytes")]
    pub state: Vec<u8>,
}

/// Bytes as a lowercase hex string in serde formats (JSON), instead of an
/// array of numbers.
mod hex_bytes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(D::Error::custom("hex bytes: odd length"));
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(D::Error::custom("hex bytes: not a lowercase hex digit")),
        };
        text.as_bytes()
            .chunks_exact(2)
            .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }
}

/// The allocation and fencing token of the instance that produced an
/// output. The region refuses outputs of an allocation it has replaced
/// (a stale fence), so a cut-off instance that outlived its lease cannot
/// write next to its replacement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
pub struct FenceStamp {
    /// Allocation id as the region issued it (32 hex digits).
    pub allocation: String,
    /// Fencing token of the allocation.
    pub token: u64,
}

impl SpoolEntry {
    /// The alert, fenced or not.
    pub fn as_alert(&self) -> Option<&AlertRecord> {
        match self {
            SpoolEntry::Alert(a) | SpoolEntry::FencedAlert { alert: a, .. } => Some(a),
            _ => None,
        }
    }

    /// The derived metric, fenced or not.
    pub fn as_metric(&self) -> Option<&DerivedMetricRecord> {
        match self {
            SpoolEntry::Metric(m) | SpoolEntry::FencedMetric { metric: m, .. } => Some(m),
            _ => None,
        }
    }

    /// The fence of a monitor output, if it carries one.
    pub fn fence(&self) -> Option<&FenceStamp> {
        match self {
            SpoolEntry::FencedAlert { fence, .. } | SpoolEntry::FencedMetric { fence, .. } => {
                Some(fence)
            }
            SpoolEntry::Checkpoint(c) => Some(&c.fence),
            _ => None,
        }
    }
}

impl From<TelemetryRecord> for SpoolEntry {
    fn from(r: TelemetryRecord) -> Self {
        SpoolEntry::Telemetry(r)
    }
}

/// An alert read. Every `None` filter matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AlertQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only this monitor.
    pub monitor: Option<String>,
    /// Only this severity or worse.
    pub min_severity: Option<Severity>,
    /// Inclusive start, ms since the Unix epoch.
    pub from_ms: i64,
    /// Exclusive end, ms since the Unix epoch.
    pub to_ms: i64,
    /// Most alerts to return (newest first).
    pub limit: u32,
}

/// CPU and memory set aside for monitors on one node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub struct MonitorCapacity {
    /// Memory, MiB.
    pub memory_mib: u32,
    /// CPU, millicores (1000 = one core).
    pub cpu_millicores: u32,
}

/// A node's measured use of its machine, from /proc and statvfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct NodeResources {
    /// CPU busy across all cores, millicores.
    pub cpu_used_millicores: u32,
    /// CPU of the whole machine, millicores.
    pub cpu_total_millicores: u32,
    /// Memory in use (MemTotal - MemAvailable), bytes.
    pub memory_used_bytes: u64,
    /// Memory of the machine, bytes.
    pub memory_total_bytes: u64,
    /// Used bytes on the data directory's filesystem.
    pub disk_used_bytes: u64,
    /// Size of the data directory's filesystem, bytes.
    pub disk_total_bytes: u64,
    /// Received, bytes per second (all interfaces but loopback).
    pub net_rx_bytes_per_s: u64,
    /// Sent, bytes per second.
    pub net_tx_bytes_per_s: u64,
    /// This edge process's resident memory, bytes.
    pub process_rss_bytes: u64,
}

/// One monitor instance on an edge, as reported in heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct InstanceStatus {
    /// Tenant.
    pub tenant: String,
    /// Monitor name.
    pub name: String,
    /// Spec generation the instance runs (or waits to run).
    pub generation: u64,
    /// `running`, `pending`, `backoff`, `crash-looping`, `stopped`,
    /// `preempted` or `refused`.
    pub state: String,
    /// Why it is not running, or the last fault, when there is one.
    pub reason: Option<String>,
    /// Restarts since this generation was applied.
    pub restarts: u64,
    /// Memory budget, MiB.
    pub memory_mib: u32,
    /// CPU budget, millicores.
    pub cpu_millicores: u32,
    /// Measured memory, bytes.
    pub used_memory_bytes: u64,
    /// Measured CPU, millicores (from fuel per second).
    pub used_cpu_millicores: u32,
    /// Records handed to the instance.
    pub records_in: u64,
    /// Records dropped because its queue was full (it was too slow).
    pub records_dropped: u64,
    /// Records waiting in its queue, at the status's time (a gauge, unlike
    /// the counters around it). Absent from older edges' JSON: 0.
    #[serde(default)]
    pub queue_depth: u64,
    /// Alerts it raised.
    pub alerts: u64,
    /// Derived metrics it emitted.
    pub metrics: u64,
    /// The last lifecycle event (start, fault, resize), with its reason.
    pub last_event: Option<String>,
    /// The instance's region slot when its monitor is sharded (an edge may
    /// then run several instances of it, told apart by slot). Absent
    /// (unsharded) from older edges' JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
}

/// A monitor as stored in the region's replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub struct MonitorInfo {
    /// The spec, with the generation the hub assigned.
    pub spec: MonitorSpec,
    /// Region.
    pub region: String,
    /// Edge of its first running (else first live) allocation; empty when
    /// none is placed.
    pub edge: String,
    /// First submitted, ms since the Unix epoch (leader clock).
    pub created_ms: i64,
    /// Last changed, ms since the Unix epoch.
    pub updated_ms: i64,
    /// The instance on `edge` as that edge last reported it, when it has.
    pub status: Option<InstanceStatus>,
    /// Instances wanted (the count, or for per-edge the carrier edges).
    pub wanted: u32,
    /// Instances placed (allocations desired to run, not failed).
    pub placed: u32,
    /// Its allocations, live ones first, then recently stopped ones.
    pub allocations: Vec<AllocationInfo>,
    /// Its most recent evaluations, newest first.
    pub evaluations: Vec<EvaluationInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_and_parses() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
        assert!("fatal".parse::<Severity>().unwrap_err().contains("fatal"));
        assert_eq!(Severity::from_abi(2), Some(Severity::Critical));
        assert_eq!(Severity::from_abi(3), None);
    }

    #[test]
    fn telemetry_entry_encodes_as_variant_zero_then_the_record() {
        // The uplink frames spool bytes verbatim, so the entry's encoding
        // must be the variant index followed by the record's own encoding.
        let r = TelemetryRecord {
            tenant: "t".into(),
            device: "d".into(),
            ts_ms: 5,
            seq: None,
            metrics: vec![Metric {
                name: "x".into(),
                value: 1.0,
            }],
            tags: vec![],
        };
        let cfg = bincode::config::standard();
        let e = bincode::encode_to_vec(SpoolEntry::Telemetry(r.clone()), cfg).unwrap();
        let mut expect = vec![0u8];
        expect.extend(bincode::encode_to_vec(&r, cfg).unwrap());
        assert_eq!(e, expect);
    }

    #[test]
    fn checkpoint_entry_is_the_last_variant_and_carries_its_fence() {
        let c = StateCheckpoint {
            tenant: "acme".into(),
            workload: "rate".into(),
            fence: FenceStamp {
                allocation: "a1".into(),
                token: 7,
            },
            taken_ms: 9,
            state: vec![1, 2, 3],
        };
        let e = SpoolEntry::Checkpoint(c.clone());
        assert_eq!(e.fence(), Some(&c.fence));
        assert_eq!((e.as_alert(), e.as_metric()), (None, None));
        let cfg = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&e, cfg).unwrap();
        // Variants grow at the end: telemetry 0 … fenced metric 4, checkpoint 5.
        assert_eq!(bytes[0], 5);
        let (back, _): (SpoolEntry, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn checkpoint_state_is_hex_in_json() {
        let c = StateCheckpoint {
            tenant: "t".into(),
            workload: "w".into(),
            fence: FenceStamp {
                allocation: "a".into(),
                token: 1,
            },
            taken_ms: 2,
            state: vec![0, 0x1f, 0xa0, 0xff],
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["state"], "001fa0ff");
        assert_eq!(serde_json::from_value::<StateCheckpoint>(v).unwrap(), c);
        for bad in ["0", "0g", "AB"] {
            let mut v = serde_json::to_value(&c).unwrap();
            v["state"] = bad.into();
            assert!(
                serde_json::from_value::<StateCheckpoint>(v).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_allocation_persisted_before_checkpoints_still_reads() {
        use crate::scheduling::EdgeAllocation;
        let spec: MonitorSpec = serde_json::from_value(serde_json::json!({
            "name": "m", "tenant": "t", "runtime": "wasm",
            "artifact": {"sha256": "a".repeat(64), "size-bytes": 1},
            "selector": {"tenant": "t", "device-globs": ["*"]},
            "resources": {"memory-mib": 8, "cpu-millicores": 10},
            "target": "least-loaded",
        }))
        .unwrap();
        let a = EdgeAllocation {
            id: crate::scheduling::AllocId(5),
            fencing_token: 2,
            slot: 0,
            spec,
            replace_after_ms: None,
            previous: None,
            checkpoint: None,
        };
        let mut v = serde_json::to_value(&a).unwrap();
        assert!(v.get("checkpoint").is_none(), "not written when absent");
        v.as_object_mut().unwrap().remove("checkpoint");
        let back: EdgeAllocation = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn derived_metric_becomes_tagged_telemetry() {
        let m = DerivedMetricRecord {
            tenant: "acme".into(),
            device: "b-1".into(),
            monitor: "z".into(),
            name: "score".into(),
            value: 2.5,
            ts_ms: 9,
        };
        let t = m.to_telemetry();
        assert_eq!(t.metrics[0].name, "z/score");
        assert_eq!(t.tags[0].value, "z");
        assert_eq!(t.seq, None);
    }
}
