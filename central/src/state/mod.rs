//! Central's replicated state and its pure `apply`: what the three central
//! replicas agree on through Raft (`strata-consensus`).
//!
//! - the operator token's digest (never the token), so every replica
//!   authenticates alike;
//! - the registry of regions (name, hub addresses) and each one's last
//!   summary (capacity, device locality, health);
//! - tenants;
//! - global workloads, their splits over regions and the plans that made
//!   them ([`global`]); the state machine is the global scheduler's single
//!   plan applier.
//!
//! `apply(state, index, bytes)` is deterministic and does no IO: every
//! replica applies the same commands in the same order. A command that is
//! invalid against the state is answered [`Outcome::Refused`] with the
//! reason and changes nothing; one that changes nothing (a retried PUT)
//! answers [`Outcome::Unchanged`], so retrying a write after a leader
//! change is safe.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use serde::Serialize;
use strata_protocol::workload::{FieldError, MonitorSpec, ValidationContext};
use strata_sched::global::{
    verify_global_plan, GlobalConfig, GlobalIntent, GlobalPlan, GlobalSnapshot, RegionSummary,
};
use strata_sched::scale::ScaleSpec;
use strata_sched::WorkloadId;

use crate::config::{check_host_port, valid_name};

pub mod global;
pub mod history;

pub use global::{GlobalData, GlobalRecord, PlanRecord, ScaleRecord};
pub use history::{LoadHistory, Recorded, HISTORY_POINTS};

#[cfg(test)]
mod global_tests;
#[cfg(test)]
mod tests;

/// Version byte in front of every encoded command and state.
const FORMAT: u8 = 1;
/// Most regions in the registry.
pub const MAX_REGIONS: usize = 1000;
/// Most tenants.
pub const MAX_TENANTS: usize = 100_000;
/// Most global workloads.
pub use global::MAX_GLOBAL_WORKLOADS;
/// Most hub addresses per region.
pub const MAX_HUBS: usize = 16;
/// Longest tenant description, bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// One region in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegionRecord {
    /// Region name (as its hubs know it).
    pub name: String,
    /// Client-facing QUIC addresses of its hubs (`host:port`).
    pub hubs: Vec<String>,
    /// When it was registered, ms since the epoch (the proposer's clock).
    pub registered_ms: i64,
    /// When its record last changed, ms since the epoch.
    pub updated_ms: i64,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantRecord {
    /// Tenant name (as devices' certificates and monitors name it).
    pub name: String,
    /// Free text for operators.
    pub description: String,
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
}

/// What central's replicas persist and agree on.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
struct Data {
    /// SHA-256 of the operator token, once a replica has set it.
    operator: Option<[u8; 32]>,
    regions: BTreeMap<String, RegionRecord>,
    tenants: BTreeMap<String, TenantRecord>,
    global: GlobalData,
    /// Commands that changed the state (for status and tests).
    changes: u64,
    /// The index of the last applied command.
    index: u64,
}

/// Everything central's replicas agree on, and the global scheduler's
/// snapshot derived from it (kept current by `apply`, rebuilt on decode).
#[derive(Debug, Clone, Default)]
pub struct CentralState {
    data: Data,
    snapshot: GlobalSnapshot,
}

impl PartialEq for CentralState {
    fn eq(&self, other: &Self) -> bool {
        // The snapshot is a function of the data.
        self.data == other.data
    }
}

/// A write to central's state.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Command {
    /// Set the operator token's digest. Without `replace`, only when none
    /// is set (the first replica to lead bootstraps it; others keep it).
    SetOperator {
        /// SHA-256 of the token.
        digest: [u8; 32],
        /// Replace a digest already set (token rotation).
        replace: bool,
    },
    /// Register a region or change its hub addresses.
    PutRegion {
        /// Region name.
        name: String,
        /// Hub addresses.
        hubs: Vec<String>,
        /// The proposer's clock, ms since the epoch.
        now_ms: i64,
    },
    /// Remove a region from the registry.
    DeleteRegion {
        /// Region name.
        name: String,
    },
    /// Create a tenant or change its description.
    PutTenant {
        /// Tenant name.
        name: String,
        /// Free text.
        description: String,
        /// The proposer's clock, ms since the epoch.
        now_ms: i64,
    },
    /// Remove a tenant.
    DeleteTenant {
        /// Tenant name.
        name: String,
    },
    /// Create or change a global workload.
    PutGlobal {
        /// The monitor every region runs.
        monitor: Box<MonitorSpec>,
        /// Where and how many.
        intent: GlobalIntent,
        /// Autoscaling (its count then starts at `intent.count` clamped
        /// into `min..=max`).
        scale: Option<ScaleSpec>,
        /// The proposer's clock, ms since the epoch.
        now_ms: i64,
    },
    /// The leader's autoscaler changed a workload's count.
    ScaleGlobal {
        /// The workload.
        id: WorkloadId,
        /// The decision (its generation must be the workload's).
        record: ScaleRecord,
    },
    /// One forecast step's measured load of an autoscaled workload, for
    /// its [`LoadHistory`] (at most one per step: a step already held is
    /// `Unchanged`).
    RecordLoad {
        /// The workload.
        id: WorkloadId,
        /// The metric measured; must be the spec's (else refused: the
        /// spec changed since).
        metric: String,
        /// The step, ms; a history at another step starts afresh.
        step_ms: u64,
        /// Step number, `at_ms / step_ms`.
        step: i64,
        /// The step's mean, in the metric's unit; finite, ≥ 0.
        value: f64,
    },
    /// Delete a global workload: its shares go to 0; it is forgotten once
    /// every region removed its monitor ([`Command::ForgetGlobal`]).
    DeleteGlobal {
        /// The workload.
        id: WorkloadId,
    },
    /// Every region dropped a deleted workload's monitor.
    ForgetGlobal {
        /// The workload.
        id: WorkloadId,
    },
    /// A region's summary, as central's leader fetched it (with the health
    /// central judged).
    ReportRegion {
        /// The summary.
        summary: Box<RegionSummary>,
    },
    /// The global scheduler's plan for one workload, verified here against
    /// the state as applied.
    ApplyGlobalPlan {
        /// The plan.
        plan: Box<GlobalPlan>,
        /// The proposer's clock, ms since the epoch.
        now_ms: i64,
    },
}

/// What applying a command did, for its proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed.
    Applied,
    /// The state already was what the command asks (a retry): nothing changed.
    Unchanged,
    /// The command names something that does not exist.
    NotFound {
        /// What was looked for, e.g. `region north`.
        what: String,
    },
    /// The command is invalid against the state; nothing changed.
    Refused {
        /// Why, naming the field.
        reason: String,
    },
}

/// Why bytes are not a command or a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Unknown format byte (written by a newer central).
    #[error("unknown format {0}")]
    Format(u8),
    /// Empty input.
    #[error("empty")]
    Empty,
    /// bincode failed.
    #[error("{0}")]
    Bincode(String),
}

fn encode_versioned<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Encoding owned values into a Vec cannot fail.
    out.extend(bincode::encode_to_vec(value, bincode::config::standard()).unwrap_or_default());
    out
}

fn decode_versioned<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&FORMAT, rest)) => bincode::decode_from_slice(rest, bincode::config::standard())
            .map(|(v, _)| v)
            .map_err(|e| DecodeError::Bincode(e.to_string())),
        Some((&f, _)) => Err(DecodeError::Format(f)),
    }
}

impl Command {
    /// Encodes for a Raft entry (never empty).
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    /// Decodes a Raft entry.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        decode_versioned(bytes)
    }
}

impl CentralState {
    /// Encodes for checkpoints and snapshots.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(&self.data)
    }

    /// Decodes a checkpoint or snapshot.
    pub fn decode(bytes: &[u8]) -> Result<CentralState, DecodeError> {
        let data: Data = decode_versioned(bytes)?;
        Ok(CentralState::from_data(data))
    }

    fn from_data(data: Data) -> CentralState {
        let mut snapshot = GlobalSnapshot::new(data.index, GlobalConfig::default());
        for summary in data.global.reports.values() {
            snapshot.upsert_region(summary.clone());
        }
        for (id, r) in &data.global.workloads {
            if !r.deleting {
                snapshot.upsert_workload(r.workload());
            }
            snapshot.set_split(id, r.split.clone());
        }
        CentralState { data, snapshot }
    }

    /// The operator token's digest, once set.
    pub fn operator(&self) -> Option<[u8; 32]> {
        self.data.operator
    }

    /// Registered regions, by name.
    pub fn regions(&self) -> &BTreeMap<String, RegionRecord> {
        &self.data.regions
    }

    /// Tenants, by name.
    pub fn tenants(&self) -> &BTreeMap<String, TenantRecord> {
        &self.data.tenants
    }

    /// Global workloads, by id.
    pub fn global(&self) -> &BTreeMap<WorkloadId, GlobalRecord> {
        &self.data.global.workloads
    }

    /// Each region's last summary.
    pub fn reports(&self) -> &BTreeMap<String, RegionSummary> {
        &self.data.global.reports
    }

    /// The global scheduler's view of this state.
    pub fn snapshot(&self) -> &GlobalSnapshot {
        &self.snapshot
    }

    /// Commands that changed the state so far.
    pub fn changes(&self) -> u64 {
        self.data.changes
    }

    /// Index of the last applied command.
    pub fn index(&self) -> u64 {
        self.data.index
    }

    /// Applies the command at log `index`. Pure: the same state and
    /// command give the same result on every replica.
    pub fn apply(&mut self, index: u64, cmd: Command) -> Outcome {
        self.data.index = self.data.index.max(index);
        self.snapshot.set_index(self.data.index);
        let outcome = match cmd {
            Command::SetOperator { digest, replace } => match self.data.operator {
                Some(d) if d == digest => Outcome::Unchanged,
                Some(_) if !replace => Outcome::Unchanged,
                _ => {
                    self.data.operator = Some(digest);
                    Outcome::Applied
                }
            },
            Command::PutRegion { name, hubs, now_ms } => self.put_region(name, hubs, now_ms),
            Command::DeleteRegion { name } => self.delete_region(&name),
            Command::PutTenant {
                name,
                description,
                now_ms,
            } => self.put_tenant(name, description, now_ms),
            Command::DeleteTenant { name } => self.delete_tenant(&name),
            Command::PutGlobal {
                monitor,
                intent,
                scale,
                now_ms,
            } => self.put_global(*monitor, intent, scale, now_ms),
            Command::ScaleGlobal { id, record } => self.scale_global(index, &id, record),
            Command::RecordLoad {
                id,
                metric,
                step_ms,
                step,
                value,
            } => self.record_load(&id, &metric, step_ms, step, value),
            Command::DeleteGlobal { id } => self.delete_global(&id),
            Command::ForgetGlobal { id } => self.forget_global(&id),
            Command::ReportRegion { summary } => self.report_region(*summary),
            Command::ApplyGlobalPlan { plan, now_ms } => self.apply_plan(index, *plan, now_ms),
        };
        if outcome == Outcome::Applied {
            self.data.changes += 1;
        }
        outcome
    }

    fn delete_region(&mut self, name: &str) -> Outcome {
        if let Some(w) = self
            .data
            .global
            .workloads
            .values()
            .find(|w| w.split.get(name).is_some_and(|n| *n > 0))
        {
            return Outcome::Refused {
                reason: format!(
                    "region {name} runs a share of global workload {}; move it first",
                    w.id()
                ),
            };
        }
        match self.data.regions.remove(name) {
            Some(_) => {
                self.data.global.reports.remove(name);
                self.snapshot.remove_region(name);
                Outcome::Applied
            }
            None => Outcome::NotFound {
                what: format!("region {name}"),
            },
        }
    }

    fn delete_tenant(&mut self, name: &str) -> Outcome {
        if let Some(w) = self.data.global.workloads.keys().find(|w| w.tenant == name) {
            return Outcome::Refused {
                reason: format!("tenant {name} owns global workload {w}; delete it first"),
            };
        }
        match self.data.tenants.remove(name) {
            Some(_) => Outcome::Applied,
            None => Outcome::NotFound {
                what: format!("tenant {name}"),
            },
        }
    }

    /// Every problem of a global workload against this state, each naming
    /// its field (`global.regions[0].name`, `artifact.sha256`, …).
    pub fn global_problems(
        &self,
        monitor: &MonitorSpec,
        intent: &GlobalIntent,
        scale: Option<&ScaleSpec>,
    ) -> Vec<FieldError> {
        let mut problems = Vec::new();
        if let Err(errs) = monitor.validate(&ValidationContext::default()) {
            problems.extend(errs.0);
        }
        let known: std::collections::BTreeSet<String> = self.data.regions.keys().cloned().collect();
        if let Err(errs) = intent.validate(&known) {
            problems.extend(errs.0.into_iter().map(|e| FieldError {
                field: format!("global.{}", e.field),
                message: e.message,
            }));
        }
        if monitor.placement.count.is_some() || monitor.placement.per_node {
            problems.push(FieldError {
                field: "placement.count".into(),
                message: "set by central from each region's share; give the total as global.count"
                    .into(),
            });
        }
        if let Some(scale) = scale {
            if let Err(errs) = scale.validate() {
                problems.extend(errs.0.into_iter().map(|e| FieldError {
                    field: e.field,
                    message: e.message,
                }));
            }
            if intent.per_region.is_some() {
                problems.push(FieldError {
                    field: "scale".into(),
                    message: "scales a total: use global.count, not global.per-region".into(),
                });
            }
        }
        problems
    }

    fn put_global(
        &mut self,
        mut monitor: MonitorSpec,
        intent: GlobalIntent,
        scale: Option<ScaleSpec>,
        now_ms: i64,
    ) -> Outcome {
        let problems = self.global_problems(&monitor, &intent, scale.as_ref());
        if !problems.is_empty() {
            return Outcome::Refused {
                reason: problems
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
        }
        monitor.generation = 0;
        let id = WorkloadId::new(&monitor.tenant, &monitor.name);
        let full = self.data.global.workloads.len() >= MAX_GLOBAL_WORKLOADS;
        // The autoscaler's count starts from the spec's and keeps what it
        // has when the spec changes, always inside the new bounds.
        let start = |from: Option<u32>| {
            scale.as_ref().map(|s| {
                from.or(intent.count)
                    .unwrap_or(s.min)
                    .clamp(s.min, s.max.max(s.min))
            })
        };
        let record = match self.data.global.workloads.get_mut(&id) {
            Some(r)
                if !r.deleting
                    && r.monitor == monitor
                    && r.intent == intent
                    && r.scale == scale =>
            {
                return Outcome::Unchanged
            }
            Some(r) => {
                r.scaled = start(r.scaled.filter(|_| !r.deleting));
                r.monitor = monitor;
                r.intent = intent;
                r.scale = scale;
                // Load measured by another metric (or none now) means
                // nothing to the new spec's forecasts.
                let metric = r.scale.as_ref().map(|s| s.metric.as_str().to_owned());
                if r.load_history.as_ref().map(|h| &h.metric) != metric.as_ref() {
                    r.load_history = None;
                }
                r.generation += 1;
                r.updated_ms = now_ms;
                r.deleting = false;
                r.clone()
            }
            None if full => {
                return Outcome::Refused {
                    reason: format!(
                    "workloads: central holds its limit of {MAX_GLOBAL_WORKLOADS} global workloads"
                ),
                }
            }
            None => {
                let r = GlobalRecord {
                    scaled: start(None),
                    monitor,
                    intent,
                    scale,
                    generation: 1,
                    created_ms: now_ms,
                    updated_ms: now_ms,
                    split: BTreeMap::new(),
                    plans: Default::default(),
                    regions_ever: Default::default(),
                    deleting: false,
                    scale_history: Default::default(),
                    load_history: None,
                };
                self.data.global.workloads.insert(id.clone(), r.clone());
                r
            }
        };
        self.snapshot.upsert_workload(record.workload());
        Outcome::Applied
    }

    fn delete_global(&mut self, id: &WorkloadId) -> Outcome {
        match self.data.global.workloads.get_mut(id) {
            Some(r) if r.deleting => Outcome::Unchanged,
            Some(r) => {
                r.deleting = true;
                r.split.clear();
                r.load_history = None;
                self.snapshot.remove_workload(id);
                Outcome::Applied
            }
            None => Outcome::NotFound {
                what: format!("global workload {id}"),
            },
        }
    }

    /// The live global workload `id` with its scale spec, or the answer to
    /// a scale write for one that is gone, deleting or not autoscaled.
    fn autoscaled(
        &mut self,
        id: &WorkloadId,
    ) -> Result<(&mut global::GlobalRecord, strata_sched::scale::ScaleSpec), Outcome> {
        let Some(r) = self.data.global.workloads.get_mut(id) else {
            return Err(Outcome::NotFound {
                what: format!("global workload {id}"),
            });
        };
        match r.scale.clone().filter(|_| !r.deleting) {
            Some(scale) => Ok((r, scale)),
            None => Err(Outcome::Refused {
                reason: format!("global workload {id} does not autoscale"),
            }),
        }
    }

    fn scale_global(&mut self, index: u64, id: &WorkloadId, mut record: ScaleRecord) -> Outcome {
        let (r, scale) = match self.autoscaled(id) {
            Ok(x) => x,
            Err(refused) => return refused,
        };
        if record.generation != r.generation {
            return Outcome::Refused {
                reason: format!(
                    "scale decision for generation {} of {id}, which is at {}",
                    record.generation, r.generation
                ),
            };
        }
        let desired = record.desired.clamp(scale.min, scale.max.max(scale.min));
        if r.scaled == Some(desired) {
            return Outcome::Unchanged;
        }
        record.index = index;
        record.current = r.scaled.unwrap_or(desired);
        record.desired = desired;
        r.scaled = Some(desired);
        r.scale_history.push_back(record);
        while r.scale_history.len() > global::SCALE_HISTORY {
            r.scale_history.pop_front();
        }
        let w = r.workload();
        self.snapshot.upsert_workload(w);
        Outcome::Applied
    }

    fn record_load(
        &mut self,
        id: &WorkloadId,
        metric: &str,
        step_ms: u64,
        step: i64,
        value: f64,
    ) -> Outcome {
        let (r, scale) = match self.autoscaled(id) {
            Ok(x) => x,
            Err(refused) => return refused,
        };
        if scale.metric.as_str() != metric {
            return Outcome::Refused {
                reason: format!(
                    "load of {id} measured as {metric}, which now scales on {}",
                    scale.metric.as_str()
                ),
            };
        }
        if step_ms == 0 || !value.is_finite() || value < 0.0 {
            return Outcome::Refused {
                reason: format!(
                    "load of {id}: step {step_ms} ms, value {value}: want a step ≥ 1 ms and a finite value ≥ 0"
                ),
            };
        }
        match LoadHistory::record(&mut r.load_history, metric, step_ms, step, value) {
            Recorded::AlreadyHeld => Outcome::Unchanged,
            Recorded::Appended { .. } | Recorded::Restarted => Outcome::Applied,
        }
    }

    fn forget_global(&mut self, id: &WorkloadId) -> Outcome {
        match self.data.global.workloads.get(id) {
            Some(r) if r.deleting => {
                self.data.global.workloads.remove(id);
                Outcome::Applied
            }
            Some(_) => Outcome::Refused {
                reason: format!("global workload {id} is not deleted"),
            },
            None => Outcome::Unchanged,
        }
    }

    fn report_region(&mut self, summary: RegionSummary) -> Outcome {
        if !self.data.regions.contains_key(&summary.region) {
            return Outcome::NotFound {
                what: format!("region {}", summary.region),
            };
        }
        if self.data.global.reports.get(&summary.region) == Some(&summary) {
            return Outcome::Unchanged;
        }
        self.snapshot.upsert_region(summary.clone());
        self.data
            .global
            .reports
            .insert(summary.region.clone(), summary);
        Outcome::Applied
    }

    fn apply_plan(&mut self, index: u64, plan: GlobalPlan, now_ms: i64) -> Outcome {
        let Some(record) = self.data.global.workloads.get(&plan.workload) else {
            return Outcome::NotFound {
                what: format!("global workload {}", plan.workload),
            };
        };
        if record.deleting {
            return Outcome::Refused {
                reason: format!("global workload {} is being deleted", plan.workload),
            };
        }
        let verdict = verify_global_plan(&self.snapshot, &plan);
        self.snapshot.apply_verdict(&verdict, index);
        let split = self.snapshot.split_of(&plan.workload).clone();
        let Some(record) = self.data.global.workloads.get_mut(&plan.workload) else {
            return Outcome::NotFound {
                what: format!("global workload {}", plan.workload),
            };
        };
        let changed = record.split != split;
        record.regions_ever.extend(split.keys().cloned());
        record.split = split;
        let entry = PlanRecord {
            index,
            at_ms: now_ms,
            generation: plan.generation,
            shares: plan.shares,
            held_by_unreachable: plan.held_by_unreachable,
            failed: plan.failed,
            rejected: verdict.rejected.clone(),
        };
        record.plans.push_back(entry);
        while record.plans.len() > global::PLAN_HISTORY {
            record.plans.pop_front();
        }
        if changed || verdict.is_full() {
            Outcome::Applied
        } else {
            Outcome::Refused {
                reason: format!("plan for {} refused: {:?}", plan.workload, verdict.rejected),
            }
        }
    }

    fn put_region(&mut self, name: String, hubs: Vec<String>, now_ms: i64) -> Outcome {
        let problems = region_problems(&name, &hubs);
        if !problems.is_empty() {
            return Outcome::Refused {
                reason: problems.join("; "),
            };
        }
        let full = self.data.regions.len() >= MAX_REGIONS;
        match self.data.regions.get_mut(&name) {
            Some(r) if r.hubs == hubs => Outcome::Unchanged,
            Some(r) => {
                r.hubs = hubs;
                r.updated_ms = now_ms;
                Outcome::Applied
            }
            None if full => Outcome::Refused {
                reason: format!("regions: the registry holds its limit of {MAX_REGIONS}"),
            },
            None => {
                self.data.regions.insert(
                    name.clone(),
                    RegionRecord {
                        name,
                        hubs,
                        registered_ms: now_ms,
                        updated_ms: now_ms,
                    },
                );
                Outcome::Applied
            }
        }
    }

    fn put_tenant(&mut self, name: String, description: String, now_ms: i64) -> Outcome {
        let mut problems = Vec::new();
        if !valid_name(&name) {
            problems.push(format!(
                "name: {name:?} may only contain letters, digits, '-', '_' and '.' (1 to 64)"
            ));
        }
        if description.len() > MAX_DESCRIPTION {
            problems.push(format!(
                "description: {} bytes, at most {MAX_DESCRIPTION}",
                description.len()
            ));
        }
        if !problems.is_empty() {
            return Outcome::Refused {
                reason: problems.join("; "),
            };
        }
        let full = self.data.tenants.len() >= MAX_TENANTS;
        match self.data.tenants.get_mut(&name) {
            Some(t) if t.description == description => Outcome::Unchanged,
            Some(t) => {
                t.description = description;
                Outcome::Applied
            }
            None if full => Outcome::Refused {
                reason: format!("tenants: central holds its limit of {MAX_TENANTS}"),
            },
            None => {
                self.data.tenants.insert(
                    name.clone(),
                    TenantRecord {
                        name,
                        description,
                        created_ms: now_ms,
                    },
                );
                Outcome::Applied
            }
        }
    }
}

/// Every problem of a region registration, each naming its field.
pub fn region_problems(name: &str, hubs: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if !valid_name(name) {
        problems.push(format!(
            "name: {name:?} may only contain letters, digits, '-', '_' and '.' (1 to 64)"
        ));
    }
    if hubs.is_empty() {
        problems.push("hubs: at least one hub address is required".into());
    }
    if hubs.len() > MAX_HUBS {
        problems.push(format!(
            "hubs: {} addresses, at most {MAX_HUBS}",
            hubs.len()
        ));
    }
    for (i, h) in hubs.iter().enumerate() {
        if let Err(why) = check_host_port(h) {
            problems.push(format!("hubs[{i}]: {h:?}: {why}"));
        } else if hubs[..i].contains(h) {
            problems.push(format!("hubs[{i}]: {h:?} is listed twice"));
        }
    }
    problems
}
