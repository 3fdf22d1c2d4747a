//! The device-monitor workload spec: what a user submits, what the hub
//! replicates and what an edge node's scheduler runs.
//!
//! A [`MonitorSpec`] is written as TOML or JSON (serde, kebab-case keys,
//! unknown keys refused) and travels between tiers as bincode. Parsing only
//! checks shape; [`MonitorSpec::validate`] checks values and reports every bad
//! field at once as [`SpecErrors`], each naming the field by its kebab-case
//! path (`resources.memory-mib`, `selector.device-globs[1]`).
//!
//! ```toml
//! name = "boiler-temp"
//! tenant = "acme"
//! runtime = "wasm"
//! priority = 60
//! target = "least-loaded"          # or target = { node = "edge-1" }
//! params = '{"threshold": 80.0}'   # JSON text; an inline table works too
//! [artifact]
//! sha256 = "<64 lowercase hex digits>"
//! size-bytes = 48213
//! [selector]
//! tenant = "acme"
//! device-globs = ["boiler-*"]
//! tags = { site = "plant-1" }
//! [resources]
//! memory-mib = 16
//! cpu-millicores = 50
//! max-memory-mib = 64
//! [restart]
//! mode = "on-failure"
//! [placement]                      # where instances run (strata_sched::PlacementIntent)
//! count = 2                        # or per-edge = true
//! shard = true                     # count only: the instances split the devices
//! constraints = [{ label = "zone", op = "in", values = ["a", "b"] }]
//! replace-after = "10s"            # or on-disconnect = "keep" (the default)
//! ```
//!
//! `target` predates `[placement]` and still works: `target = { node =
//! "edge-1" }` is the hard constraint `node = "edge-1"` on the built-in
//! label [`NODE_LABEL`] every edge carries (its own name), added to the
//! placement's constraints by [`MonitorSpec::intent`]; `"least-loaded"`
//! adds nothing (ranking already prefers room).
//!
//! `shard = true` (default false) makes the `count` instances share the
//! selected devices instead of each seeing all of them: a device's records
//! go to one instance, chosen by consistent (rendezvous) hashing over the
//! instance slots, so a scale step moves about `1/n` of the devices, and
//! their kv state (keys `<prefix>/<device>/...`, the SDK's series keys)
//! moves with them. Several instances may then run on one edge. Central
//! sets it on the regional specs of an autoscaled global workload.
//!
//! Checks that need cluster state (known tenants, node capacity, known
//! devices, whether the artifact was uploaded) take their facts from a
//! [`ValidationContext`]; a fact left `None` skips its check, so the same
//! function serves the CLI (offline) and the hub (authoritative).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize};
use strata_sched::{Cardinality, LabelRule, Operator, PlacementIntent};

use crate::telemetry::Tag;

/// Longest monitor name, in bytes.
pub const MAX_MONITOR_NAME_LEN: usize = 64;
/// Longest tenant name, in bytes (the telemetry topic's limit).
pub const MAX_TENANT_LEN: usize = crate::telemetry::MAX_NAME_LEN;
/// Largest `params` JSON text, in bytes.
pub const MAX_PARAMS_LEN: usize = 64 * 1024;
/// Largest accepted artifact (module), in bytes (8 MiB): it travels in one
/// frame ([`crate::MAX_FRAME_LEN`]) and one Raft entry.
pub const MAX_ARTIFACT_BYTES: u64 = 8 * 1024 * 1024;
/// Most device globs in one selector.
pub const MAX_GLOBS: usize = 64;
/// Most tags in one selector.
pub const MAX_SELECTOR_TAGS: usize = 32;
/// Highest priority; higher numbers win admission and preempt lower ones.
pub const MAX_PRIORITY: u8 = 100;
/// Longest restart backoff a spec may ask for, in milliseconds (one hour).
pub const MAX_BACKOFF_MS: u64 = 3_600_000;
/// The label every edge carries with its own name as value, so placement
/// rules (and the older `target = { node = … }`) can name an edge.
pub const NODE_LABEL: &str = "node";

/// A device-monitoring workload as submitted by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MonitorSpec {
    /// Monitor name, unique within its tenant: 1-64 chars of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Owning tenant: 1-128 chars of `[A-Za-z0-9_.-]`, as in telemetry topics.
    pub tenant: String,
    /// Sandbox kind. Default `wasm`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The module to run, identified by content hash.
    pub artifact: ArtifactRef,
    /// Which devices' telemetry the instance receives.
    pub selector: DeviceSelector,
    /// Parameters handed to the guest's `init`, as JSON text (at most
    /// [`MAX_PARAMS_LEN`] bytes). In the file either a string holding JSON or
    /// an inline table/object, which is stored as compact JSON text. Default `{}`.
    #[serde(default = "default_params", deserialize_with = "params_from_any")]
    pub params: String,
    /// Requested resources and resize bounds.
    pub resources: Resources,
    /// 0-100; higher is more important. Default 50.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// What happens when an instance exits. Default: on-failure, 1 s to 60 s.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Where to run it. Default `least-loaded`. Older than `[placement]`:
    /// `{ node = "edge-1" }` adds the constraint `node = "edge-1"` (see the
    /// module docs).
    #[serde(default)]
    pub target: Placement,
    /// Spec version, bumped by the hub on every change; edges restart an
    /// instance only when this or the artifact hash changes. Default 0.
    #[serde(default)]
    pub generation: u64,
    /// How many instances run and where: count or per-edge, pools,
    /// constraints, affinities, spread and the disconnect policy.
    /// Default: one instance, anywhere it fits, kept on disconnect.
    #[serde(default, skip_serializing_if = "is_default_intent")]
    pub placement: PlacementIntent,
}

fn is_default_intent(p: &PlacementIntent) -> bool {
    *p == PlacementIntent::default()
}

fn default_params() -> String {
    "{}".to_owned()
}

fn default_priority() -> u8 {
    50
}

/// Accepts a string (kept verbatim, validated later so the error names the
/// field) or any structured value (stored as compact JSON text).
fn params_from_any<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

/// Which sandbox runs the module.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// A WebAssembly module in a wasmtime store.
    #[default]
    Wasm,
    /// A QEMU microVM image. Reserved: no driver exists yet, so schedulers
    /// refuse it as an unknown runtime.
    MicroVm,
}

impl RuntimeKind {
    /// Stable kebab-case label, as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Wasm => "wasm",
            RuntimeKind::MicroVm => "micro-vm",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A module identified by its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArtifactRef {
    /// SHA-256 of the module bytes: 64 lowercase hex digits. Hex rather than
    /// bytes so TOML and JSON stay readable.
    pub sha256: String,
    /// Module size in bytes, 1 to [`MAX_ARTIFACT_BYTES`].
    pub size_bytes: u64,
}

impl ArtifactRef {
    /// The digest as bytes, or `None` when `sha256` is not 64 hex digits.
    pub fn digest(&self) -> Option<[u8; 32]> {
        let s = self.sha256.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(out)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Which devices an instance watches: devices of `tenant` whose id matches
/// any of `device-globs` (or any id when there are none) and that carry every
/// tag in `tags`. At least one glob or tag is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceSelector {
    /// Must equal the spec's tenant: an instance sees only its own tenant.
    pub tenant: String,
    /// Device-id globs: `*` matches any run of characters, `?` exactly one;
    /// every other character is literal. Default empty (any device id).
    #[serde(default)]
    pub device_globs: Vec<String>,
    /// Required tags (key → exact value), all of which must match. A map, not
    /// a list of pairs, so a key cannot be given twice. Default empty.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl DeviceSelector {
    /// Whether a device with these tags is selected. Pure; callers on hot
    /// paths should cache the answer per device.
    pub fn matches(&self, tenant: &str, device: &str, tags: &[Tag]) -> bool {
        if tenant != self.tenant {
            return false;
        }
        let id_ok =
            self.device_globs.is_empty() || self.device_globs.iter().any(|g| glob_match(g, device));
        id_ok
            && self
                .tags
                .iter()
                .all(|(k, v)| tags.iter().any(|t| &t.key == k && &t.value == v))
    }
}

/// Matches `text` against a glob where `*` is any run (possibly empty) and `?`
/// is exactly one character. Linear backtracking over the last `*`, so no
/// pattern can make it exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    // (pattern index after the last `*`, text index that `*` resumes from)
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(b'?') => {
                pi += 1;
                ti += utf8_len(t[ti]);
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    // Let the last `*` swallow one more character and retry.
                    let next = st + utf8_len(t[st]);
                    star = Some((sp, next));
                    pi = sp;
                    ti = next;
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Length of the UTF-8 sequence starting with `lead` (1 for stray bytes, so
/// the matcher always advances).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Requested resources. The instance starts at `memory-mib` / `cpu-millicores`;
/// the edge scheduler may resize it within the optional min/max bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Resources {
    /// Initial memory budget, MiB (> 0).
    pub memory_mib: u32,
    /// Initial CPU budget, millicores (1000 = one core, > 0).
    pub cpu_millicores: u32,
    /// Smallest memory budget a resize may set, MiB. Default: `memory-mib`.
    #[serde(default)]
    pub min_memory_mib: Option<u32>,
    /// Largest memory budget a resize may set, MiB. Default: `memory-mib`.
    #[serde(default)]
    pub max_memory_mib: Option<u32>,
    /// Smallest CPU budget a resize may set, millicores. Default: `cpu-millicores`.
    #[serde(default)]
    pub min_cpu_millicores: Option<u32>,
    /// Largest CPU budget a resize may set, millicores. Default: `cpu-millicores`.
    #[serde(default)]
    pub max_cpu_millicores: Option<u32>,
}

impl Resources {
    /// `(min, max)` memory budget in MiB, defaults applied.
    pub fn memory_range(&self) -> (u32, u32) {
        (
            self.min_memory_mib.unwrap_or(self.memory_mib),
            self.max_memory_mib.unwrap_or(self.memory_mib),
        )
    }

    /// `(min, max)` CPU budget in millicores, defaults applied.
    pub fn cpu_range(&self) -> (u32, u32) {
        (
            self.min_cpu_millicores.unwrap_or(self.cpu_millicores),
            self.max_cpu_millicores.unwrap_or(self.cpu_millicores),
        )
    }
}

/// When an exited instance is started again.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// After any exit, including a clean one.
    Always,
    /// After a crash, trap, timeout or memory-limit kill, not after a clean exit.
    #[default]
    OnFailure,
    /// Never; the instance stays stopped with the exit as its reason.
    Never,
}

/// Restart policy with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartPolicy {
    /// When to restart. Default `on-failure`.
    pub mode: RestartMode,
    /// Delay before the first restart, ms (> 0). Default 1000.
    pub initial_backoff_ms: u64,
    /// Cap on the doubling delay, ms (≥ initial, ≤ one hour). Default 60000.
    pub max_backoff_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::OnFailure,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        }
    }
}

/// Where a monitor runs within its region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// On this edge node only (`{ node = "edge-1" }`).
    Node(String),
    /// On the region's least-loaded edge node that fits (`"least-loaded"`).
    #[default]
    LeastLoaded,
}

/// CPU and memory of one node, for the capacity check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCapacity {
    /// Memory available to monitors, MiB.
    pub memory_mib: u32,
    /// CPU available to monitors, millicores.
    pub cpu_millicores: u32,
}

/// A device the validator may check the selector against.
#[derive(Debug, Clone, Copy)]
pub struct KnownDevice<'a> {
    /// Owning tenant.
    pub tenant: &'a str,
    /// Device id.
    pub device: &'a str,
    /// Last known tags.
    pub tags: &'a [Tag],
}

/// Cluster facts for [`MonitorSpec::validate`]. Each `None` skips its check.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationContext<'a> {
    /// Tenants that exist.
    pub known_tenants: Option<&'a [String]>,
    /// The largest node that could run the monitor (its target node, or the
    /// largest in the region for `least-loaded`).
    pub max_node_capacity: Option<NodeCapacity>,
    /// Devices the selector must match at least one of.
    pub known_devices: Option<&'a [KnownDevice<'a>]>,
    /// Whether the artifact's hash is stored; filled in by the hub.
    pub artifact_known: Option<bool>,
    /// The region's lease minimum: the smallest `placement.replace-after`
    /// accepted. `None` (offline) checks only its shape.
    pub min_replace_after: Option<Duration>,
}

/// One bad field. Serde and bincode, so the hub can return it to central
/// and central to the user as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct FieldError {
    /// Kebab-case path of the field, e.g. `resources.memory-mib`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every bad field of one spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, thiserror::Error)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid monitor spec:")?;
        for e in &self.0 {
            write!(f, "\n  - {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl SpecErrors {
    /// The fields at fault, in report order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

/// Why a spec could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The text is not a spec: bad syntax, an unknown or missing key, or a
    /// value of the wrong type.
    #[error("monitor spec is not valid JSON of the expected shape: {detail}")]
    Parse {
        /// The parser's message, with line and column.
        detail: String,
    },
    /// The spec parsed but some fields have bad values.
    #[error(transparent)]
    Invalid(#[from] SpecErrors),
}

/// Whether `s` is 1..=max chars of `[A-Za-z0-9_.-]`.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl MonitorSpec {
    /// The placement intent the scheduler uses: `[placement]` plus the
    /// constraint `node = <edge>` of a `target = { node = … }`.
    pub fn intent(&self) -> PlacementIntent {
        let mut i = self.placement.clone();
        if let Placement::Node(n) = &self.target {
            i.constraints.push(LabelRule {
                label: NODE_LABEL.to_owned(),
                op: Operator::Eq,
                value: Some(n.clone()),
                values: Vec::new(),
            });
        }
        i
    }

    /// Parses a JSON spec (shape only; call [`MonitorSpec::validate`] next).
    /// TOML specs parse with `toml::from_str::<MonitorSpec>` in the crates
    /// that read files; the serde attributes are the same.
    pub fn from_json_str(text: &str) -> Result<Self, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError::Parse {
            detail: e.to_string(),
        })
    }

    /// Checks every field and returns all problems at once.
    pub fn validate(&self, ctx: &ValidationContext<'_>) -> Result<(), SpecErrors> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, message: String| {
            errs.push(FieldError {
                field: field.to_owned(),
                message,
            })
        };
        if !is_name(&self.name, MAX_MONITOR_NAME_LEN) {
            bad(
                "name",
                format!(
                    "{:?} must be 1-{MAX_MONITOR_NAME_LEN} chars of [A-Za-z0-9_.-]",
                    self.name
                ),
            );
        }
        if !is_name(&self.tenant, MAX_TENANT_LEN) {
            bad(
                "tenant",
                format!(
                    "{:?} must be 1-{MAX_TENANT_LEN} chars of [A-Za-z0-9_.-]",
                    self.tenant
                ),
            );
        } else if let Some(known) = ctx.known_tenants {
            if !known.iter().any(|t| t == &self.tenant) {
                bad("tenant", format!("unknown tenant {:?}", self.tenant));
            }
        }
        // Artifact.
        if self.artifact.digest().is_none() {
            bad(
                "artifact.sha256",
                format!("{:?} must be 64 lowercase hex digits", self.artifact.sha256),
            );
        } else if ctx.artifact_known == Some(false) {
            bad(
                "artifact.sha256",
                format!("no artifact {} has been uploaded", self.artifact.sha256),
            );
        }
        if self.artifact.size_bytes == 0 || self.artifact.size_bytes > MAX_ARTIFACT_BYTES {
            bad(
                "artifact.size-bytes",
                format!(
                    "{} must be between 1 and {MAX_ARTIFACT_BYTES}",
                    self.artifact.size_bytes
                ),
            );
        }
        // Selector.
        let sel = &self.selector;
        if sel.tenant != self.tenant {
            bad("selector.tenant", format!("{:?} must equal the spec's tenant {:?}: a monitor sees only its own tenant's devices", sel.tenant, self.tenant));
        }
        if sel.device_globs.is_empty() && sel.tags.is_empty() {
            bad(
                "selector",
                "needs at least one device glob or tag".to_owned(),
            );
        }
        if sel.device_globs.len() > MAX_GLOBS {
            bad(
                "selector.device-globs",
                format!("{} globs, at most {MAX_GLOBS}", sel.device_globs.len()),
            );
        }
        for (i, g) in sel.device_globs.iter().enumerate() {
            let ok = !g.is_empty()
                && g.len() <= crate::telemetry::MAX_NAME_LEN
                && g.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*' | b'?')
                });
            if !ok {
                bad(
                    &format!("selector.device-globs[{i}]"),
                    format!(
                        "{g:?} must be 1-{} chars of [A-Za-z0-9_.-] plus the wildcards * and ?",
                        crate::telemetry::MAX_NAME_LEN
                    ),
                );
            }
        }
        if sel.tags.len() > MAX_SELECTOR_TAGS {
            bad(
                "selector.tags",
                format!("{} tags, at most {MAX_SELECTOR_TAGS}", sel.tags.len()),
            );
        }
        for (k, v) in &sel.tags {
            if k.is_empty()
                || k.len() > crate::telemetry::MAX_NAME_LEN
                || v.len() > crate::telemetry::MAX_NAME_LEN
            {
                bad(
                    &format!("selector.tags.{k}"),
                    "key must be 1-128 bytes and value at most 128".to_owned(),
                );
            }
        }
        if let Some(devices) = ctx.known_devices {
            if sel.tenant == self.tenant
                && !devices
                    .iter()
                    .any(|d| sel.matches(d.tenant, d.device, d.tags))
            {
                bad(
                    "selector",
                    format!(
                        "matches none of the {} known devices of tenant {:?}",
                        devices.iter().filter(|d| d.tenant == self.tenant).count(),
                        self.tenant
                    ),
                );
            }
        }
        // Params.
        if self.params.len() > MAX_PARAMS_LEN {
            bad(
                "params",
                format!("{} bytes, at most {MAX_PARAMS_LEN}", self.params.len()),
            );
        } else if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&self.params) {
            bad("params", format!("not valid JSON: {e}"));
        }
        // Resources.
        let r = &self.resources;
        let dims = [
            (
                "memory-mib",
                "MiB",
                r.memory_mib,
                r.min_memory_mib,
                r.max_memory_mib,
                ctx.max_node_capacity.map(|c| c.memory_mib),
            ),
            (
                "cpu-millicores",
                "millicores",
                r.cpu_millicores,
                r.min_cpu_millicores,
                r.max_cpu_millicores,
                ctx.max_node_capacity.map(|c| c.cpu_millicores),
            ),
        ];
        for (key, unit, value, min, max, cap) in dims {
            if value == 0 {
                bad(
                    &format!("resources.{key}"),
                    "must be greater than 0".to_owned(),
                );
                // The bounds are judged against the value; a zero value is
                // already reported and would only add noise.
                continue;
            }
            if let Some(min) = min {
                if min == 0 || min > value {
                    bad(
                        &format!("resources.min-{key}"),
                        format!("{min} must be between 1 and {key} ({value})"),
                    );
                }
            }
            if let Some(max) = max {
                if max < value {
                    bad(
                        &format!("resources.max-{key}"),
                        format!("{max} must be at least {key} ({value})"),
                    );
                }
            }
            if let Some(cap) = cap {
                let (field, top) = match max {
                    Some(m) if m >= value => (format!("resources.max-{key}"), m),
                    _ => (format!("resources.{key}"), value),
                };
                if top > cap {
                    bad(
                        &field,
                        format!("{top} {unit} is above the largest node's {cap} {unit}"),
                    );
                }
            }
        }
        if self.priority > MAX_PRIORITY {
            bad(
                "priority",
                format!("{} must be between 0 and {MAX_PRIORITY}", self.priority),
            );
        }
        let rp = &self.restart;
        if rp.initial_backoff_ms == 0 || rp.initial_backoff_ms > MAX_BACKOFF_MS {
            bad(
                "restart.initial-backoff-ms",
                format!(
                    "{} must be between 1 and {MAX_BACKOFF_MS}",
                    rp.initial_backoff_ms
                ),
            );
        }
        if rp.max_backoff_ms < rp.initial_backoff_ms || rp.max_backoff_ms > MAX_BACKOFF_MS {
            bad(
                "restart.max-backoff-ms",
                format!(
                    "{} must be between initial-backoff-ms ({}) and {MAX_BACKOFF_MS}",
                    rp.max_backoff_ms, rp.initial_backoff_ms
                ),
            );
        }
        if let Placement::Node(node) = &self.target {
            if !is_name(node, MAX_MONITOR_NAME_LEN) {
                bad(
                    "target.node",
                    format!("{node:?} must be 1-{MAX_MONITOR_NAME_LEN} chars of [A-Za-z0-9_.-]"),
                );
            }
            match self.placement.cardinality() {
                Cardinality::Count(n) if n > 1 => bad(
                    "placement.count",
                    format!(
                        "{n} instances cannot all run on edge {node:?} (target): an edge runs a \
                         monitor once; drop target or use a constraint matching several edges"
                    ),
                ),
                Cardinality::PerNode => bad(
                    "placement.per-edge",
                    format!(
                        "per-edge runs on every edge carrying the devices; target pins the \
                         monitor to edge {node:?}: drop one of them"
                    ),
                ),
                Cardinality::Count(_) => {}
            }
        }
        // The intent's own checks, every bad field at once, under `placement.`.
        let ictx = strata_sched::ValidationContext {
            workload_name: Some(&self.name),
            min_replace_after: ctx.min_replace_after.unwrap_or(Duration::ZERO),
        };
        if let Err(e) = self.placement.validate(&ictx) {
            for fe in e.0 {
                bad(&format!("placement.{}", fe.field), fe.message);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    const GOLDEN_JSON: &str = r#"{
        "name": "boiler-temp",
        "tenant": "acme",
        "runtime": "wasm",
        "artifact": {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size-bytes": 48213},
        "selector": {"tenant": "acme", "device-globs": ["boiler-*"], "tags": {"site": "plant-1"}},
        "params": {"threshold": 80.0},
        "resources": {"memory-mib": 16, "cpu-millicores": 50, "max-memory-mib": 64, "min-cpu-millicores": 20, "max-cpu-millicores": 200},
        "priority": 60,
        "restart": {"mode": "always", "max-backoff-ms": 30000},
        "target": {"node": "edge-1"},
        "generation": 3
    }"#;

    fn golden() -> MonitorSpec {
        MonitorSpec::from_json_str(GOLDEN_JSON).unwrap()
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
        pairs
            .iter()
            .map(|(k, v)| Tag {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect()
    }

    #[test]
    fn golden_spec_parses_with_defaults_and_validates() {
        let s = golden();
        assert_eq!(s.params, r#"{"threshold":80.0}"#);
        assert_eq!(
            s.restart,
            RestartPolicy {
                mode: RestartMode::Always,
                initial_backoff_ms: 1_000,
                max_backoff_ms: 30_000
            }
        );
        assert_eq!(s.target, Placement::Node("edge-1".into()));
        assert_eq!(s.resources.memory_range(), (16, 64));
        assert_eq!(s.resources.cpu_range(), (20, 200));
        assert_eq!(s.artifact.digest().unwrap()[0], 0x9f);
        s.validate(&ValidationContext::default()).unwrap();

        let minimal = r#"{"name":"m","tenant":"t","artifact":{"sha256":"HASH","size-bytes":1},
            "selector":{"tenant":"t","tags":{"k":"v"}},"resources":{"memory-mib":1,"cpu-millicores":1}}"#
            .replace("HASH", HASH);
        let m = MonitorSpec::from_json_str(&minimal).unwrap();
        assert_eq!(
            (m.runtime, m.priority, m.target.clone(), m.generation),
            (RuntimeKind::Wasm, 50, Placement::LeastLoaded, 0)
        );
        assert_eq!(
            (m.params.as_str(), m.restart),
            ("{}", RestartPolicy::default())
        );
        m.validate(&ValidationContext::default()).unwrap();
    }

    #[test]
    fn parse_errors_name_the_key() {
        let unknown = GOLDEN_JSON.replace("\"priority\"", "\"priorty\"");
        let e = MonitorSpec::from_json_str(&unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `priorty`"), "{e}");
        let e = MonitorSpec::from_json_str(r#"{"name":"m"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field"), "{e}");
        let e =
            MonitorSpec::from_json_str(&GOLDEN_JSON.replace("\"wasm\"", "\"docker\"")).unwrap_err();
        assert!(e.to_string().contains("unknown variant `docker`"), "{e}");
    }

    /// One golden invalid example per field: (mutation, field reported).
    #[test]
    fn each_invalid_field_is_reported_by_name() {
        type Mutation = fn(&mut MonitorSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.name = "bad name".into(), "name"),
            (|s| s.name = "x".repeat(65), "name"),
            (|s| s.name.clear(), "name"),
            (
                |s| {
                    s.tenant = "ac/me".into();
                    s.selector.tenant = "ac/me".into()
                },
                "tenant",
            ),
            (|s| s.artifact.sha256 = "ABC".into(), "artifact.sha256"),
            (
                |s| s.artifact.sha256 = HASH.to_uppercase(),
                "artifact.sha256",
            ),
            (|s| s.artifact.size_bytes = 0, "artifact.size-bytes"),
            (
                |s| s.artifact.size_bytes = MAX_ARTIFACT_BYTES + 1,
                "artifact.size-bytes",
            ),
            (|s| s.selector.tenant = "other".into(), "selector.tenant"),
            (
                |s| {
                    s.selector.device_globs.clear();
                    s.selector.tags.clear()
                },
                "selector",
            ),
            (
                |s| s.selector.device_globs.push("boiler[12]".into()),
                "selector.device-globs[1]",
            ),
            (
                |s| s.selector.device_globs.push(String::new()),
                "selector.device-globs[1]",
            ),
            (
                |s| s.selector.device_globs = vec!["a*".into(); MAX_GLOBS + 1],
                "selector.device-globs",
            ),
            (
                |s| {
                    s.selector.tags.insert(String::new(), "v".into());
                },
                "selector.tags.",
            ),
            (|s| s.params = "{not json".into(), "params"),
            (
                |s| s.params = format!("\"{}\"", "a".repeat(MAX_PARAMS_LEN)),
                "params",
            ),
            (|s| s.resources.memory_mib = 0, "resources.memory-mib"),
            (
                |s| s.resources.cpu_millicores = 0,
                "resources.cpu-millicores",
            ),
            (
                |s| s.resources.min_memory_mib = Some(17),
                "resources.min-memory-mib",
            ),
            (
                |s| s.resources.min_memory_mib = Some(0),
                "resources.min-memory-mib",
            ),
            (
                |s| s.resources.max_memory_mib = Some(15),
                "resources.max-memory-mib",
            ),
            (
                |s| s.resources.min_cpu_millicores = Some(51),
                "resources.min-cpu-millicores",
            ),
            (
                |s| s.resources.max_cpu_millicores = Some(49),
                "resources.max-cpu-millicores",
            ),
            (|s| s.priority = 101, "priority"),
            (
                |s| s.restart.initial_backoff_ms = 0,
                "restart.initial-backoff-ms",
            ),
            (|s| s.restart.max_backoff_ms = 10, "restart.max-backoff-ms"),
            (
                |s| s.restart.max_backoff_ms = MAX_BACKOFF_MS + 1,
                "restart.max-backoff-ms",
            ),
            (
                |s| s.target = Placement::Node("edge 1".into()),
                "target.node",
            ),
        ];
        for (i, (mutate, field)) in cases.into_iter().enumerate() {
            let mut s = golden();
            mutate(&mut s);
            let errs = s.validate(&ValidationContext::default()).unwrap_err();
            assert_eq!(errs.fields(), vec![field], "case {i}: {errs}");
            assert!(!errs.0[0].message.is_empty());
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut s = golden();
        s.name = "".into();
        s.selector.tenant = "globex".into();
        s.resources.memory_mib = 0;
        s.params = "nope".into();
        let errs = s.validate(&ValidationContext::default()).unwrap_err();
        assert_eq!(
            errs.fields(),
            vec!["name", "selector.tenant", "params", "resources.memory-mib"]
        );
        let text = SpecError::from(errs).to_string();
        assert!(
            text.contains("  - resources.memory-mib: must be greater than 0"),
            "{text}"
        );
    }

    #[test]
    fn context_checks_tenants_capacity_devices_and_artifact() {
        let s = golden();
        let tenants = vec!["globex".to_owned()];
        let dev_tags = tags(&[("site", "plant-2")]);
        let devices = [KnownDevice {
            tenant: "acme",
            device: "boiler-1",
            tags: &dev_tags,
        }];
        let ctx = ValidationContext {
            known_tenants: Some(&tenants),
            max_node_capacity: Some(NodeCapacity {
                memory_mib: 32,
                cpu_millicores: 100,
            }),
            known_devices: Some(&devices),
            artifact_known: Some(false),
            min_replace_after: None,
        };
        let errs = s.validate(&ctx).unwrap_err();
        assert_eq!(
            errs.fields(),
            vec![
                "tenant",
                "artifact.sha256",
                "selector",
                "resources.max-memory-mib",
                "resources.max-cpu-millicores"
            ],
            "{errs}"
        );
        assert!(
            errs.to_string()
                .contains("64 MiB is above the largest node's 32 MiB"),
            "{errs}"
        );

        let tenants = vec!["acme".to_owned()];
        let ok_tags = tags(&[("site", "plant-1"), ("fw", "2")]);
        let devices = [KnownDevice {
            tenant: "acme",
            device: "boiler-7",
            tags: &ok_tags,
        }];
        let ctx = ValidationContext {
            known_tenants: Some(&tenants),
            max_node_capacity: Some(NodeCapacity {
                memory_mib: 64,
                cpu_millicores: 200,
            }),
            known_devices: Some(&devices),
            artifact_known: Some(true),
            min_replace_after: None,
        };
        s.validate(&ctx).unwrap();
    }

    #[test]
    fn placement_parses_validates_under_its_prefix_and_absorbs_target() {
        let s = placed_spec();
        assert_eq!(s.placement.count, Some(2));
        assert_eq!(
            s.placement.replace_after,
            Some(std::time::Duration::from_secs(3))
        );
        s.validate(&ValidationContext::default()).unwrap();
        // The region's lease minimum applies when given.
        let ctx = ValidationContext {
            min_replace_after: Some(std::time::Duration::from_secs(5)),
            ..ValidationContext::default()
        };
        let e = s.validate(&ctx).unwrap_err();
        assert_eq!(e.fields(), vec!["placement.replace-after"], "{e}");
        assert!(e.to_string().contains("lease minimum of 5s"), "{e}");

        // Every bad placement field at once, prefixed, next to the others.
        let mut bad = s.clone();
        bad.priority = 200;
        bad.placement.count = Some(0);
        bad.placement.constraints[0].op = strata_sched::Operator::Unknown("~".into());
        bad.placement.on_disconnect = Some(strata_sched::OnDisconnect::Keep);
        let e = bad.validate(&ValidationContext::default()).unwrap_err();
        assert_eq!(
            e.fields(),
            vec![
                "priority",
                "placement.count",
                "placement.constraints[0].op",
                "placement.replace-after"
            ],
            "{e}"
        );

        // target = { node } is a constraint on the built-in node label, and
        // cannot pin several instances to one edge.
        let mut pinned = s.clone();
        pinned.target = Placement::Node("edge-1".into());
        let e = pinned.validate(&ValidationContext::default()).unwrap_err();
        assert_eq!(e.fields(), vec!["placement.count"], "{e}");
        pinned.placement.count = None;
        pinned.validate(&ValidationContext::default()).unwrap();
        let intent = pinned.intent();
        assert_eq!(intent.constraints.len(), 2);
        assert_eq!(intent.constraints[1].label, NODE_LABEL);
        assert_eq!(intent.constraints[1].value.as_deref(), Some("edge-1"));
        // A spec without [placement] serializes without it (older readers
        // of the JSON see no new key).
        let json = serde_json::to_value(golden()).unwrap();
        assert!(json.get("placement").is_none(), "{json}");
    }

    fn placed_spec() -> MonitorSpec {
        let v = serde_json::json!({
            "name": "zs", "tenant": "acme",
            "artifact": {"sha256": HASH, "size-bytes": 1},
            "selector": {"tenant": "acme", "device-globs": ["b-*"]},
            "resources": {"memory-mib": 1, "cpu-millicores": 1},
            "placement": {"count": 2,
                "constraints": [{"label": "zone", "op": "in", "values": ["a", "b"]}],
                "replace-after": "3s"}
        });
        MonitorSpec::from_json_str(&v.to_string()).unwrap()
    }

    #[test]
    fn selector_matches_tenant_globs_and_tags() {
        let s = golden().selector;
        let site = tags(&[("fw", "1"), ("site", "plant-1")]);
        assert!(s.matches("acme", "boiler-3", &site));
        assert!(!s.matches("globex", "boiler-3", &site), "other tenant");
        assert!(!s.matches("acme", "pump-3", &site), "glob");
        assert!(
            !s.matches("acme", "boiler-3", &tags(&[("site", "plant-2")])),
            "tag value"
        );
        assert!(!s.matches("acme", "boiler-3", &[]), "tag missing");
        let any = DeviceSelector {
            tenant: "acme".into(),
            device_globs: vec![],
            tags: [("site".to_owned(), "plant-1".to_owned())].into(),
        };
        assert!(any.matches("acme", "anything", &site));
    }

    #[test]
    fn glob_cases() {
        for (p, t, want) in [
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*", "a", true),
            ("*b*", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("??", "é", false),
            ("?", "é", true),
            ("*é", "café", true),
            ("s-*-?", "s-12-x", true),
            (
                "a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ] {
            assert_eq!(glob_match(p, t), want, "{p:?} vs {t:?}");
        }
    }

    /// Obviously-correct exponential reference.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    fn arb_spec() -> impl Strategy<Value = MonitorSpec> {
        (
            (
                "[a-z0-9-]{1,12}",
                "[a-z]{1,8}",
                any::<bool>(),
                any::<[u8; 32]>(),
                1u64..1 << 40,
            ),
            (
                proptest::collection::vec("[a-z*?]{1,8}", 0..4),
                proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..3),
            ),
            (
                1u32..4096,
                1u32..4000,
                proptest::option::of(1u32..100),
                proptest::option::of(1u32..100_000),
            ),
            (
                any::<u8>(),
                0u8..3,
                1u64..1000,
                any::<u64>(),
                proptest::option::of("[a-z0-9-]{1,10}"),
                "[ -~]{0,20}",
            ),
        )
            .prop_map(
                |(
                    (name, tenant, micro, digest, size),
                    (globs, tags),
                    (mem, cpu, min_mem, max_cpu),
                    (priority, mode, backoff, generation, node, params),
                )| MonitorSpec {
                    name,
                    selector: DeviceSelector {
                        tenant: tenant.clone(),
                        device_globs: globs,
                        tags,
                    },
                    tenant,
                    runtime: if micro {
                        RuntimeKind::MicroVm
                    } else {
                        RuntimeKind::Wasm
                    },
                    artifact: ArtifactRef {
                        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
                        size_bytes: size,
                    },
                    params: serde_json::Value::String(params).to_string(),
                    resources: Resources {
                        memory_mib: mem,
                        cpu_millicores: cpu,
                        min_memory_mib: min_mem,
                        max_memory_mib: None,
                        min_cpu_millicores: None,
                        max_cpu_millicores: max_cpu,
                    },
                    priority,
                    restart: RestartPolicy {
                        mode: [
                            RestartMode::Always,
                            RestartMode::OnFailure,
                            RestartMode::Never,
                        ][mode as usize],
                        initial_backoff_ms: backoff,
                        max_backoff_ms: backoff * 10,
                    },
                    target: node.map_or(Placement::LeastLoaded, Placement::Node),
                    generation,
                    placement: PlacementIntent {
                        count: (generation % 3 != 0).then_some((generation % 5) as u32),
                        replace_after: (generation % 2 == 0)
                            .then(|| Duration::from_millis(generation % 100_000)),
                        pools: if generation % 7 == 0 {
                            vec!["gpu".into()]
                        } else {
                            vec![]
                        },
                        ..PlacementIntent::default()
                    },
                },
            )
    }

    proptest! {
        #[test]
        fn glob_matches_reference(p in "[ab*?é]{0,8}", t in "[abé]{0,10}") {
            let (pc, tc): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
            prop_assert_eq!(glob_match(&p, &t), reference(&pc, &tc), "pattern {:?} text {:?}", p, t);
        }

        #[test]
        fn json_and_bincode_round_trip(spec in arb_spec()) {
            let json = serde_json::to_string(&spec).unwrap();
            prop_assert_eq!(&MonitorSpec::from_json_str(&json).unwrap(), &spec);
            let cfg = bincode::config::standard();
            let bytes = bincode::encode_to_vec(&spec, cfg).unwrap();
            let (back, used): (MonitorSpec, usize) = bincode::decode_from_slice(&bytes, cfg).unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, spec);
        }

        #[test]
        fn validate_never_panics(spec in arb_spec()) {
            let _ = spec.validate(&ValidationContext::default());
        }
    }
}
