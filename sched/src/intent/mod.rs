//! Placement intent: where a workload's instances may and should run.
//!
//! Written in a workload spec as TOML or JSON (serde, kebab-case keys,
//! unknown keys refused) and stored as bincode. Parsing checks only shape:
//! an unknown operator parses (as [`Operator::Unknown`]) so that
//! [`PlacementIntent::validate`] can name it together with every other bad
//! field. Checks that need the region (does any node have label `zone`?)
//! are [`validate_in_region`], a separate pure function over a snapshot.
//!
//! ```toml
//! count = 3                      # or per-node = true (alias per-edge)
//! shard = true                   # count only: the instances share the devices
//! pools = ["gpu"]                # node must be in one of these
//! constraints = [{ label = "arch", op = "in", values = ["arm64", "x86_64"] }]
//! affinity = [{ label = "zone", value = "a", weight = 40 }]
//! anti-affinity = [{ label = "tier", value = "spot", hard = true }]
//! co-locate-with = [{ workload = "cache", weight = 60 }]
//! keep-apart-from = [{ workload = "noisy", hard = true }]
//! spread = [{ label = "zone", targets = { a = 50, b = 50 } }]
//! replace-after = "30s"          # or on-disconnect = "keep" (the default)
//! ```

mod encode;
mod region;
mod rules;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

pub use region::validate_in_region;
pub use rules::LabelPredicate;
pub(crate) use validate::{is_name, write_field_errors, Errors, MAX_NAME_LEN};
pub use validate::{FieldError, IntentErrors, ValidationContext};

/// Largest `count`.
pub const MAX_COUNT: u32 = 10_000;
/// Most entries in any one rule list (constraints, affinity, spread, …).
pub const MAX_RULES: usize = 32;
/// Smallest `replace-after` when the caller gives no lease minimum.
pub const DEFAULT_MIN_REPLACE_AFTER: Duration = Duration::from_secs(5);
/// Largest `replace-after`: a week. Longer is `keep` in disguise.
pub const MAX_REPLACE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Weight of a soft rule when the spec gives none.
pub const DEFAULT_WEIGHT: u8 = 50;

/// Where a workload's instances may (hard rules) and should (soft rules) run.
///
/// Bincode: as derived, except that `count` and `shard` share one leading
/// tag byte (see [`encode`]), so an unsharded intent encodes exactly as it
/// did before `shard` existed and stored intents still decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlacementIntent {
    /// How many instances run. Exclusive with `per-node`. Default 1.
    pub count: Option<u32>,
    /// Count only: the `count` instances share the selected devices by
    /// consistent hashing (`scale::shard`), each device monitored by exactly
    /// one of them, and several of them may run on one node. Default false:
    /// every instance sees every selected device, one per node.
    #[serde(skip_serializing_if = "is_false")]
    pub shard: bool,
    /// One instance on every ready node that carries the workload's devices
    /// (its device group), each seeing that node's devices. Written
    /// `per-edge` in a region's specs as well. Default false.
    #[serde(alias = "per-edge")]
    pub per_node: bool,
    /// The node must be in at least one of these pools (e.g. `cpu`, `gpu`).
    /// Default empty: any pool.
    pub pools: Vec<String>,
    /// Hard rules on node labels; a node failing any is never used.
    /// Default none.
    pub constraints: Vec<LabelRule>,
    /// Prefer (or with `hard`, require) nodes matching each rule. Default none.
    pub affinity: Vec<LabelAffinity>,
    /// Avoid (or with `hard`, refuse) nodes matching each rule. Default none.
    pub anti_affinity: Vec<LabelAffinity>,
    /// Prefer (or with `hard`, require) nodes already running an instance of
    /// this tenant's named workload. Default none.
    pub co_locate_with: Vec<WorkloadAffinity>,
    /// Avoid (or with `hard`, refuse) nodes running an instance of the named
    /// workload; naming the workload itself spreads its own instances over
    /// distinct nodes. Default none.
    pub keep_apart_from: Vec<WorkloadAffinity>,
    /// Spread instances over the values of a node label. Count only.
    /// Default none.
    pub spread: Vec<Spread>,
    /// `keep` (the default): instances on a cut-off node keep running there
    /// and are never replaced. `replace`: see `replace-after`.
    pub on_disconnect: Option<OnDisconnect>,
    /// Replace an instance whose node has been disconnected this long *and*
    /// whose lease has expired (so it has stopped itself), e.g. `"30s"`.
    /// Setting it implies `on-disconnect = "replace"`; at least the region's
    /// lease minimum. Default unset (keep).
    #[serde(with = "humantime_serde")]
    pub replace_after: Option<Duration>,
}

/// What happens to instances on a node that stops answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub enum OnDisconnect {
    /// Keep running there; never replaced while the node is cut off.
    Keep,
    /// Replaced after `replace-after` once the lease has expired.
    Replace,
}

/// The resolved disconnect policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectPolicy {
    /// Never replaced while disconnected.
    Keep,
    /// Replaced once disconnected this long and the lease has expired.
    ReplaceAfter(Duration),
}

/// How many instances a workload wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cardinality {
    /// Exactly this many, anywhere feasible.
    Count(u32),
    /// One per ready node carrying the workload's device group.
    PerNode,
}

impl PlacementIntent {
    /// The resolved disconnect policy (an invalid combination resolves to
    /// `keep`, the safe side; validation refuses it anyway).
    pub fn disconnect_policy(&self) -> DisconnectPolicy {
        match (self.on_disconnect, self.replace_after) {
            (Some(OnDisconnect::Keep), _) | (_, None) => DisconnectPolicy::Keep,
            (_, Some(d)) => DisconnectPolicy::ReplaceAfter(d),
        }
    }

    /// Count or per-node, defaults applied.
    pub fn cardinality(&self) -> Cardinality {
        if self.per_node {
            Cardinality::PerNode
        } else {
            Cardinality::Count(self.count.unwrap_or(1))
        }
    }

    /// Whether any soft (weighted) rule is present, which makes ranking
    /// look at more candidates.
    pub fn has_soft_rules(&self) -> bool {
        self.affinity.iter().any(|a| !a.hard)
            || self.anti_affinity.iter().any(|a| !a.hard)
            || self.co_locate_with.iter().any(|a| !a.hard)
            || self.keep_apart_from.iter().any(|a| !a.hard)
            || !self.spread.is_empty()
    }
}

/// A comparison on a node label.
///
/// Parsed from any string so that validation, not the parser, reports an
/// unknown operator with its field path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(from = "String", into = "String")]
pub enum Operator {
    /// `=` (or `==`): the label is set to `value`. The default.
    #[default]
    Eq,
    /// `!=`: the label is unset or set to something other than `value`.
    Ne,
    /// `in`: the label is set to one of `values`.
    In,
    /// `not-in`: the label is unset or set to none of `values`.
    NotIn,
    /// `exists`: the label is set.
    Exists,
    /// `not-exists`: the label is unset.
    NotExists,
    /// Anything else; refused by validation, never matches.
    Unknown(String),
}

impl Operator {
    /// The operator as written in specs.
    pub fn as_str(&self) -> &str {
        match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::In => "in",
            Operator::NotIn => "not-in",
            Operator::Exists => "exists",
            Operator::NotExists => "not-exists",
            Operator::Unknown(s) => s,
        }
    }
}

impl From<String> for Operator {
    fn from(s: String) -> Self {
        match s.as_str() {
            "=" | "==" => Operator::Eq,
            "!=" => Operator::Ne,
            "in" => Operator::In,
            "not-in" => Operator::NotIn,
            "exists" => Operator::Exists,
            "not-exists" => Operator::NotExists,
            _ => Operator::Unknown(s),
        }
    }
}

impl From<Operator> for String {
    fn from(o: Operator) -> String {
        o.as_str().to_owned()
    }
}

/// A hard rule on one node label: `{ label = "zone", op = "=", value = "a" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabelRule {
    /// Label key, e.g. `zone`.
    pub label: String,
    /// Comparison. Default `=`.
    #[serde(default)]
    pub op: Operator,
    /// Operand of `=` and `!=`.
    #[serde(default)]
    pub value: Option<String>,
    /// Operands of `in` and `not-in`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A label rule with a weight, soft unless `hard`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabelAffinity {
    /// Label key.
    pub label: String,
    /// Comparison. Default `=`.
    #[serde(default)]
    pub op: Operator,
    /// Operand of `=` and `!=`.
    #[serde(default)]
    pub value: Option<String>,
    /// Operands of `in` and `not-in`.
    #[serde(default)]
    pub values: Vec<String>,
    /// 1-100: how much a match counts against the other soft rules.
    /// Default 50; ignored when `hard`.
    #[serde(default = "default_weight")]
    pub weight: u8,
    /// A filter instead of a preference. Default false.
    #[serde(default)]
    pub hard: bool,
}

/// An affinity to another workload of the same tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkloadAffinity {
    /// The other workload's name (same tenant).
    pub workload: String,
    /// 1-100. Default 50; ignored when `hard`.
    #[serde(default = "default_weight")]
    pub weight: u8,
    /// A filter instead of a preference. Default false.
    #[serde(default)]
    pub hard: bool,
}

/// Spread instances over the values of `label`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spread {
    /// Label key, e.g. `zone`.
    pub label: String,
    /// 1-100, relative to other spreads. Default 50.
    #[serde(default = "default_weight")]
    pub weight: u8,
    /// Value → percent of instances (0-100, summing to at most 100; the
    /// rest may go to other values). Default empty: even spread.
    #[serde(default)]
    pub targets: BTreeMap<String, u8>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_weight() -> u8 {
    DEFAULT_WEIGHT
}

impl LabelRule {
    /// The rule as a predicate.
    pub fn predicate(&self) -> LabelPredicate<'_> {
        LabelPredicate::new(&self.label, &self.op, self.value.as_deref(), &self.values)
    }
}

impl LabelAffinity {
    /// The rule as a predicate.
    pub fn predicate(&self) -> LabelPredicate<'_> {
        LabelPredicate::new(&self.label, &self.op, self.value.as_deref(), &self.values)
    }
}

impl fmt::Display for LabelRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.predicate().fmt(f)
    }
}

impl fmt::Display for LabelAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.predicate().fmt(f)
    }
}

#[cfg(test)]
mod tests;
