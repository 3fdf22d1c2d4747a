//! Central's replicated state and its pure `apply`: what the three central
//! replicas agree on through Raft (`strata-consensus`).
//!
//! - the operator token's digest (never the token), so every replica
//!   authenticates alike;
//! - the registry of regions (name, hub addresses, last report);
//! - tenants.
//!
//! Global workloads and the global scheduler's state join it as they are
//! built (issue 9).
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

use crate::config::{check_host_port, valid_name};

#[cfg(test)]
mod tests;

/// Version byte in front of every encoded command and state.
const FORMAT: u8 = 1;
/// Most regions in the registry.
pub const MAX_REGIONS: usize = 1000;
/// Most tenants.
pub const MAX_TENANTS: usize = 100_000;
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

/// Everything central's replicas agree on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct CentralState {
    /// SHA-256 of the operator token, once a replica has set it.
    operator: Option<[u8; 32]>,
    regions: BTreeMap<String, RegionRecord>,
    tenants: BTreeMap<String, TenantRecord>,
    /// Commands that changed the state (for status and tests).
    changes: u64,
}

/// A write to central's state.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
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
        encode_versioned(self)
    }

    /// Decodes a checkpoint or snapshot.
    pub fn decode(bytes: &[u8]) -> Result<CentralState, DecodeError> {
        decode_versioned(bytes)
    }

    /// The operator token's digest, once set.
    pub fn operator(&self) -> Option<[u8; 32]> {
        self.operator
    }

    /// Registered regions, by name.
    pub fn regions(&self) -> &BTreeMap<String, RegionRecord> {
        &self.regions
    }

    /// Tenants, by name.
    pub fn tenants(&self) -> &BTreeMap<String, TenantRecord> {
        &self.tenants
    }

    /// Commands that changed the state so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Applies one command. Pure: the same state and command give the same
    /// result on every replica.
    pub fn apply(&mut self, cmd: Command) -> Outcome {
        let outcome = match cmd {
            Command::SetOperator { digest, replace } => match self.operator {
                Some(d) if d == digest => Outcome::Unchanged,
                Some(_) if !replace => Outcome::Unchanged,
                _ => {
                    self.operator = Some(digest);
                    Outcome::Applied
                }
            },
            Command::PutRegion { name, hubs, now_ms } => self.put_region(name, hubs, now_ms),
            Command::DeleteRegion { name } => match self.regions.remove(&name) {
                Some(_) => Outcome::Applied,
                None => Outcome::NotFound {
                    what: format!("region {name}"),
                },
            },
            Command::PutTenant {
                name,
                description,
                now_ms,
            } => self.put_tenant(name, description, now_ms),
            Command::DeleteTenant { name } => match self.tenants.remove(&name) {
                Some(_) => Outcome::Applied,
                None => Outcome::NotFound {
                    what: format!("tenant {name}"),
                },
            },
        };
        if outcome == Outcome::Applied {
            self.changes += 1;
        }
        outcome
    }

    fn put_region(&mut self, name: String, hubs: Vec<String>, now_ms: i64) -> Outcome {
        let problems = region_problems(&name, &hubs);
        if !problems.is_empty() {
            return Outcome::Refused {
                reason: problems.join("; "),
            };
        }
        let full = self.regions.len() >= MAX_REGIONS;
        match self.regions.get_mut(&name) {
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
                self.regions.insert(
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
        let full = self.tenants.len() >= MAX_TENANTS;
        match self.tenants.get_mut(&name) {
            Some(t) if t.description == description => Outcome::Unchanged,
            Some(t) => {
                t.description = description;
                Outcome::Applied
            }
            None if full => Outcome::Refused {
                reason: format!("tenants: central holds its limit of {MAX_TENANTS}"),
            },
            None => {
                self.tenants.insert(
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
