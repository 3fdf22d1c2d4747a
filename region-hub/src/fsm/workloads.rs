//! [`Workloads`]: the region's monitors (workload specs), their artifacts
//! (wasm modules) and the assignments version edges poll. Where each
//! monitor runs is not here: its allocations are in
//! [`Scheduling`](super::allocs::Scheduling).
//!
//! # Rules applied here (deterministically, on every replica)
//! - A put of a monitor whose spec (ignoring `generation`) is unchanged is
//!   a no-op: same generation, no version bump.
//! - Any other put bumps [`Workloads::assignments_version`]; an update gets
//!   `generation = previous + 1`, a new monitor gets the new assignments
//!   version as its generation. Generations never exceed the version, so a
//!   deleted and re-created name never reuses a generation an edge that
//!   missed the delete may still run.
//! - A delete of an existing monitor bumps the version.
//! - A monitor may only reference a stored artifact, and a referenced
//!   artifact is never evicted. Unreferenced artifacts are kept (a user may
//!   upload first and submit later, or roll back) until the artifact store
//!   exceeds [`MAX_ARTIFACT_STORE_BYTES`]; then the least recently stored
//!   unreferenced ones go first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bincode::{Decode, Encode};
use strata_protocol::workload::MonitorSpec;
use strata_protocol::workload::MAX_ARTIFACT_BYTES;

use super::{Outcome, Refusal};

/// Most artifact bytes a region stores (64 MiB). The region state (and so
/// every checkpoint and snapshot) carries them; sample monitors are ~130 KiB.
pub const MAX_ARTIFACT_STORE_BYTES: u64 = 64 << 20;

/// A monitor as stored.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MonitorEntry {
    /// The spec, with the generation assigned here.
    pub spec: MonitorSpec,
    /// First put, ms since the Unix epoch (leader clock).
    pub created_ms: i64,
    /// Last change, ms since the Unix epoch (leader clock).
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct ArtifactEntry {
    /// Shared, so serving a fetch does not copy megabytes on the Raft thread.
    pub(super) bytes: Arc<Vec<u8>>,
    /// Raft index of the last put: the eviction order.
    pub(super) stored_index: u64,
}

/// Monitors, artifacts and the assignments version. See the module docs.
#[derive(Debug, Default, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Workloads {
    /// tenant → name → monitor.
    monitors: BTreeMap<String, BTreeMap<String, MonitorEntry>>,
    /// sha256 (hex) → module.
    artifacts: BTreeMap<String, ArtifactEntry>,
    artifact_bytes: u64,
    artifacts_evicted: u64,
    assignments_version: u64,
}

impl Workloads {
    /// From the parts of an older state format.
    pub(super) fn from_parts(
        monitors: BTreeMap<String, BTreeMap<String, MonitorEntry>>,
        artifacts: BTreeMap<String, ArtifactEntry>,
        artifact_bytes: u64,
        artifacts_evicted: u64,
        assignments_version: u64,
    ) -> Self {
        Workloads {
            monitors,
            artifacts,
            artifact_bytes,
            artifacts_evicted,
            assignments_version,
        }
    }

    /// Bumps the assignments version (an allocation changed): edges fetch
    /// their allocations again.
    pub(super) fn bump_version(&mut self) {
        self.assignments_version += 1;
    }

    /// Bumped by every applied monitor or allocation change; edges compare
    /// it with what they applied.
    pub fn assignments_version(&self) -> u64 {
        self.assignments_version
    }

    /// One monitor.
    pub fn monitor(&self, tenant: &str, name: &str) -> Option<&MonitorEntry> {
        self.monitors.get(tenant)?.get(name)
    }

    /// Monitors, optionally of one tenant, sorted by tenant then name.
    pub fn monitors<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> impl Iterator<Item = &'a MonitorEntry> + 'a {
        self.monitors
            .iter()
            .filter(move |(t, _)| tenant.is_none_or(|want| want == t.as_str()))
            .flat_map(|(_, m)| m.values())
    }

    /// Number of monitors.
    pub fn monitor_count(&self) -> usize {
        self.monitors.values().map(BTreeMap::len).sum()
    }

    /// A stored module.
    pub fn artifact(&self, sha256: &str) -> Option<Arc<Vec<u8>>> {
        self.artifacts.get(sha256).map(|a| a.bytes.clone())
    }

    /// Whether a module is stored.
    pub fn has_artifact(&self, sha256: &str) -> bool {
        self.artifacts.contains_key(sha256)
    }

    /// Stored artifacts and their total bytes.
    pub fn artifact_usage(&self) -> (usize, u64) {
        (self.artifacts.len(), self.artifact_bytes)
    }

    /// Unreferenced artifacts evicted to respect [`MAX_ARTIFACT_STORE_BYTES`].
    pub fn artifacts_evicted(&self) -> u64 {
        self.artifacts_evicted
    }

    fn referenced(&self) -> BTreeSet<&str> {
        self.monitors(None)
            .map(|m| m.spec.artifact.sha256.as_str())
            .collect()
    }

    pub(super) fn put_artifact(&mut self, sha256: String, bytes: Vec<u8>, index: u64) -> Outcome {
        if let Some(a) = self.artifacts.get_mut(&sha256) {
            a.stored_index = index;
            return Outcome::ArtifactStored { created: false };
        }
        let size = bytes.len() as u64;
        if size == 0 || size > MAX_ARTIFACT_BYTES {
            return Outcome::Refused(Refusal::ArtifactSize);
        }
        let over = (self.artifact_bytes + size).saturating_sub(MAX_ARTIFACT_STORE_BYTES);
        if over > 0 {
            let referenced = self.referenced();
            let mut victims: Vec<(u64, &String, u64)> = self
                .artifacts
                .iter()
                .filter(|(sha, _)| !referenced.contains(sha.as_str()))
                .map(|(sha, a)| (a.stored_index, sha, a.bytes.len() as u64))
                .collect();
            victims.sort_unstable();
            let mut freed = 0;
            let mut drop = Vec::new();
            for (_, sha, len) in victims {
                if freed >= over {
                    break;
                }
                freed += len;
                drop.push(sha.clone());
            }
            if freed < over {
                // Refuse without evicting anything: the put cannot succeed.
                return Outcome::Refused(Refusal::ArtifactStoreFull);
            }
            for sha in drop {
                if let Some(a) = self.artifacts.remove(&sha) {
                    self.artifact_bytes -= a.bytes.len() as u64;
                    self.artifacts_evicted += 1;
                }
            }
        }
        self.artifact_bytes += size;
        self.artifacts.insert(
            sha256,
            ArtifactEntry {
                bytes: Arc::new(bytes),
                stored_index: index,
            },
        );
        Outcome::ArtifactStored { created: true }
    }

    pub(super) fn put_monitor(&mut self, mut spec: MonitorSpec, now_ms: i64) -> Outcome {
        if !self.artifacts.contains_key(&spec.artifact.sha256) {
            return Outcome::Refused(Refusal::ArtifactMissing);
        }
        // (generation, created_ms) of the monitor being replaced.
        let mut old = None;
        if let Some(prev) = self.monitor(&spec.tenant, &spec.name) {
            spec.generation = prev.spec.generation;
            if prev.spec == spec {
                return Outcome::MonitorPut {
                    generation: prev.spec.generation,
                    changed: false,
                    created: false,
                    created_ms: prev.created_ms,
                    updated_ms: prev.updated_ms,
                };
            }
            old = Some((prev.spec.generation, prev.created_ms));
        }
        self.assignments_version += 1;
        let (generation, created_ms) = match old {
            Some((generation, created_ms)) => (generation + 1, created_ms),
            None => (self.assignments_version, now_ms),
        };
        let created = old.is_none();
        spec.generation = generation;
        let entry = MonitorEntry {
            spec,
            created_ms,
            updated_ms: now_ms,
        };
        self.monitors
            .entry(entry.spec.tenant.clone())
            .or_default()
            .insert(entry.spec.name.clone(), entry);
        Outcome::MonitorPut {
            generation,
            changed: true,
            created,
            created_ms,
            updated_ms: now_ms,
        }
    }

    pub(super) fn delete_monitor(&mut self, tenant: &str, name: &str) -> Outcome {
        let Some(by_name) = self.monitors.get_mut(tenant) else {
            return Outcome::MonitorDeleted { existed: false };
        };
        let existed = by_name.remove(name).is_some();
        if by_name.is_empty() {
            self.monitors.remove(tenant);
        }
        if existed {
            self.assignments_version += 1;
        }
        Outcome::MonitorDeleted { existed }
    }
}
