//! [`PlacementIntent::validate`]: every bad field at once, each named by its
//! kebab-case path relative to the intent (`constraints[1].op`); a caller
//! that embeds the intent in a spec prefixes its own path (`placement.`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::rules::{satisfiable, LabelPredicate};
use super::{
    LabelAffinity, LabelRule, OnDisconnect, Operator, PlacementIntent, DEFAULT_MIN_REPLACE_AFTER,
    MAX_COUNT, MAX_REPLACE_AFTER, MAX_RULES,
};

/// Longest label key, label value, pool or workload name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// One bad field: the same shape as the protocol's spec `FieldError`, so a
/// caller maps one onto the other field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct FieldError {
    /// Kebab-case path, e.g. `spread[0].targets`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Every bad field of one intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, thiserror::Error)]
pub struct IntentErrors(pub Vec<FieldError>);

/// Renders `title:` and one line per bad field: the shape every validator
/// of this crate reports in (intents, global intents, scale specs).
pub(crate) fn write_field_errors(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    errors: &[FieldError],
) -> fmt::Result {
    write!(f, "{title}:")?;
    for e in errors {
        write!(f, "\n  - {}: {}", e.field, e.message)?;
    }
    Ok(())
}

impl fmt::Display for IntentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_field_errors(f, "invalid placement intent", &self.0)
    }
}

impl IntentErrors {
    /// The fields at fault, in report order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

/// Facts validation needs from outside the intent.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext<'a> {
    /// The workload's own name, to refuse co-locating with itself.
    /// `None` skips that check.
    pub workload_name: Option<&'a str>,
    /// The region's lease minimum (lease duration plus safety margin):
    /// the smallest `replace-after` accepted.
    pub min_replace_after: Duration,
}

impl Default for ValidationContext<'_> {
    fn default() -> Self {
        ValidationContext {
            workload_name: None,
            min_replace_after: DEFAULT_MIN_REPLACE_AFTER,
        }
    }
}

pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':'))
}

/// Collects bad fields while a validator walks its input.
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    /// Records one bad field.
    pub(crate) fn bad(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Operand shape of one label rule.
fn check_rule(
    errs: &mut Errors,
    path: &str,
    label: &str,
    op: &Operator,
    value: &Option<String>,
    values: &[String],
) {
    if !is_name(label) {
        errs.bad(
            format!("{path}.label"),
            format!("{label:?} must be 1-{MAX_NAME_LEN} chars of [A-Za-z0-9_.-/:]"),
        );
    }
    let value_ok = |v: &str| v.len() <= MAX_NAME_LEN;
    match op {
        Operator::Eq | Operator::Ne => {
            match value {
                None => errs.bad(
                    format!("{path}.value"),
                    format!("operator {:?} needs a value", op.as_str()),
                ),
                Some(v) if !value_ok(v) => errs.bad(
                    format!("{path}.value"),
                    format!("at most {MAX_NAME_LEN} bytes"),
                ),
                Some(_) => {}
            }
            if !values.is_empty() {
                errs.bad(
                    format!("{path}.values"),
                    format!("operator {:?} takes one `value`, not `values`", op.as_str()),
                );
            }
        }
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errs.bad(
                    format!("{path}.values"),
                    format!("operator {:?} needs at least one value", op.as_str()),
                );
            }
            if values.len() > MAX_RULES {
                errs.bad(
                    format!("{path}.values"),
                    format!("{} values, at most {MAX_RULES}", values.len()),
                );
            }
            if values.iter().any(|v| !value_ok(v)) {
                errs.bad(
                    format!("{path}.values"),
                    format!("each value at most {MAX_NAME_LEN} bytes"),
                );
            }
            if value.is_some() {
                errs.bad(
                    format!("{path}.value"),
                    format!("operator {:?} takes `values`, not `value`", op.as_str()),
                );
            }
        }
        Operator::Exists | Operator::NotExists => {
            if value.is_some() || !values.is_empty() {
                errs.bad(
                    format!("{path}.value"),
                    format!("operator {:?} takes no value", op.as_str()),
                );
            }
        }
        Operator::Unknown(s) => errs.bad(
            format!("{path}.op"),
            format!("unknown operator {s:?}; use one of =, !=, in, not-in, exists, not-exists"),
        ),
    }
}

fn check_len(errs: &mut Errors, path: &str, len: usize) {
    if len > MAX_RULES {
        errs.bad(path, format!("{len} entries, at most {MAX_RULES}"));
    }
}

fn check_weight(errs: &mut Errors, path: &str, weight: u8) {
    if !(1..=100).contains(&weight) {
        errs.bad(format!("{path}.weight"), format!("{weight} must be 1-100"));
    }
}

impl PlacementIntent {
    /// Checks every field and returns all problems at once: shapes, ranges,
    /// unknown operators, contradictory rules, spread percentages, and the
    /// disconnect policy against the region's lease minimum.
    pub fn validate(&self, ctx: &ValidationContext<'_>) -> Result<(), IntentErrors> {
        let mut errs = Errors(Vec::new());
        self.check_cardinality(&mut errs);
        self.check_pools(&mut errs);
        for (path, len) in [
            ("constraints", self.constraints.len()),
            ("affinity", self.affinity.len()),
            ("anti-affinity", self.anti_affinity.len()),
            ("co-locate-with", self.co_locate_with.len()),
            ("keep-apart-from", self.keep_apart_from.len()),
            ("spread", self.spread.len()),
        ] {
            check_len(&mut errs, path, len);
        }
        for (i, c) in self.constraints.iter().enumerate() {
            check_rule(
                &mut errs,
                &format!("constraints[{i}]"),
                &c.label,
                &c.op,
                &c.value,
                &c.values,
            );
        }
        for (list, name) in [
            (&self.affinity, "affinity"),
            (&self.anti_affinity, "anti-affinity"),
        ] {
            for (i, a) in list.iter().enumerate() {
                let path = format!("{name}[{i}]");
                check_rule(&mut errs, &path, &a.label, &a.op, &a.value, &a.values);
                if !a.hard {
                    check_weight(&mut errs, &path, a.weight);
                }
            }
        }
        self.check_workload_affinity(&mut errs, ctx);
        self.check_spread(&mut errs);
        self.check_disconnect(&mut errs, ctx);
        // Contradictions only make sense once each rule is well formed.
        if errs.0.is_empty() {
            self.check_contradictions(&mut errs);
        }
        if errs.0.is_empty() {
            Ok(())
        } else {
            Err(IntentErrors(errs.0))
        }
    }

    fn check_cardinality(&self, errs: &mut Errors) {
        if let Some(n) = self.count {
            if self.per_node {
                errs.bad(
                    "count",
                    "count and per-node are exclusive: per-node runs one instance on each node carrying the devices",
                );
            } else if n == 0 || n > MAX_COUNT {
                errs.bad("count", format!("{n} must be 1-{MAX_COUNT}"));
            }
        }
        if self.shard && self.per_node {
            errs.bad(
                "shard",
                "shard applies to count: per-edge already gives each instance its own edge's devices",
            );
        }
    }

    fn check_pools(&self, errs: &mut Errors) {
        check_len(errs, "pools", self.pools.len());
        let mut seen = BTreeSet::new();
        for (i, p) in self.pools.iter().enumerate() {
            if !is_name(p) {
                errs.bad(
                    format!("pools[{i}]"),
                    format!("{p:?} must be 1-{MAX_NAME_LEN} chars of [A-Za-z0-9_.-/:]"),
                );
            } else if !seen.insert(p) {
                errs.bad(format!("pools[{i}]"), format!("pool {p:?} is listed twice"));
            }
        }
    }

    fn check_workload_affinity(&self, errs: &mut Errors, ctx: &ValidationContext<'_>) {
        let mut apart: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, a) in self.keep_apart_from.iter().enumerate() {
            let path = format!("keep-apart-from[{i}]");
            if !is_name(&a.workload) {
                errs.bad(
                    format!("{path}.workload"),
                    format!("{:?} is not a workload name", a.workload),
                );
            }
            if !a.hard {
                check_weight(errs, &path, a.weight);
            }
            apart.insert(&a.workload, i);
        }
        for (i, a) in self.co_locate_with.iter().enumerate() {
            let path = format!("co-locate-with[{i}]");
            if !is_name(&a.workload) {
                errs.bad(
                    format!("{path}.workload"),
                    format!("{:?} is not a workload name", a.workload),
                );
            }
            if !a.hard {
                check_weight(errs, &path, a.weight);
            }
            if ctx.workload_name == Some(a.workload.as_str()) {
                errs.bad(
                    format!("{path}.workload"),
                    "a workload cannot be co-located with itself",
                );
            }
            if let Some(j) = apart.get(a.workload.as_str()) {
                errs.bad(
                    format!("{path}.workload"),
                    format!(
                        "contradicts keep-apart-from[{j}]: {:?} cannot be both co-located with and kept apart from",
                        a.workload
                    ),
                );
            }
        }
    }

    fn check_spread(&self, errs: &mut Errors) {
        let mut labels = BTreeMap::new();
        for (i, s) in self.spread.iter().enumerate() {
            let path = format!("spread[{i}]");
            if self.per_node {
                errs.bad(
                    &path,
                    "spread applies to count: per-node already runs one instance on each carrying node",
                );
            }
            if !is_name(&s.label) {
                errs.bad(
                    format!("{path}.label"),
                    format!("{:?} is not a label key", s.label),
                );
            } else if let Some(j) = labels.insert(&s.label, i) {
                errs.bad(
                    format!("{path}.label"),
                    format!("label {:?} is already spread by spread[{j}]", s.label),
                );
            }
            check_weight(errs, &path, s.weight);
            let mut sum = 0u32;
            for (v, pct) in &s.targets {
                if v.is_empty() || v.len() > MAX_NAME_LEN {
                    errs.bad(
                        format!("{path}.targets"),
                        format!("target value {v:?} must be 1-{MAX_NAME_LEN} bytes"),
                    );
                }
                if *pct > 100 {
                    errs.bad(
                        format!("{path}.targets.{v}"),
                        format!("{pct} % is over 100"),
                    );
                }
                sum += u32::from(*pct);
            }
            if sum > 100 {
                errs.bad(
                    format!("{path}.targets"),
                    format!("percentages sum to {sum}, more than 100"),
                );
            } else if !s.targets.is_empty() && sum == 0 {
                errs.bad(
                    format!("{path}.targets"),
                    "every target is 0 %: leave targets out for an even spread",
                );
            }
        }
    }

    fn check_disconnect(&self, errs: &mut Errors, ctx: &ValidationContext<'_>) {
        match (self.on_disconnect, self.replace_after) {
            (Some(OnDisconnect::Keep), Some(_)) => errs.bad(
                "replace-after",
                "contradicts on-disconnect = \"keep\": keep never replaces; drop one of them",
            ),
            (Some(OnDisconnect::Replace), None) => errs.bad(
                "on-disconnect",
                "\"replace\" needs replace-after = \"<duration>\"",
            ),
            (_, Some(d)) if d < ctx.min_replace_after => errs.bad(
                "replace-after",
                format!(
                    "{} is below the region's lease minimum of {}: an instance must have stopped itself before it is replaced",
                    humantime::format_duration(d),
                    humantime::format_duration(ctx.min_replace_after)
                ),
            ),
            (_, Some(d)) if d > MAX_REPLACE_AFTER => errs.bad(
                "replace-after",
                format!(
                    "{} is over the maximum of {}; use on-disconnect = \"keep\"",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_REPLACE_AFTER)
                ),
            ),
            _ => {}
        }
    }

    /// Hard label rules that no node can meet together, a rule that is both
    /// preferred and avoided, and a soft affinity the hard rules rule out.
    fn check_contradictions(&self, errs: &mut Errors) {
        // (path, predicate) of every hard rule, by label.
        let mut hard: BTreeMap<&str, Vec<(String, LabelPredicate<'_>)>> = BTreeMap::new();
        for (i, c) in self.constraints.iter().enumerate() {
            hard.entry(&c.label)
                .or_default()
                .push((format!("constraints[{i}]"), c.predicate()));
        }
        for (i, a) in self.affinity.iter().enumerate().filter(|(_, a)| a.hard) {
            hard.entry(&a.label)
                .or_default()
                .push((format!("affinity[{i}]"), a.predicate()));
        }
        for (i, a) in self
            .anti_affinity
            .iter()
            .enumerate()
            .filter(|(_, a)| a.hard)
        {
            hard.entry(&a.label)
                .or_default()
                .push((format!("anti-affinity[{i}]"), a.predicate().negate()));
        }
        for rules in hard.values() {
            for k in 1..rules.len() {
                let upto: Vec<_> = rules[..=k].iter().map(|(_, p)| *p).collect();
                if satisfiable(&upto) {
                    continue;
                }
                let (path, pk) = &rules[k];
                let culprit = rules[..k].iter().find(|(_, pj)| !satisfiable(&[*pj, *pk]));
                let msg = match culprit {
                    Some((pj_path, pj)) => {
                        format!("{pk} contradicts {pj_path} ({pj}): no node can satisfy both")
                    }
                    None => format!("{pk} contradicts the hard rules before it on this label"),
                };
                errs.bad(path.clone(), msg);
                break;
            }
        }
        // The same rule both preferred and avoided.
        for (i, a) in self.affinity.iter().enumerate() {
            if let Some(j) = self.anti_affinity.iter().position(|b| same_rule(a, b)) {
                errs.bad(
                    format!("affinity[{i}]"),
                    format!("{a} is also in anti-affinity[{j}]: a node cannot be both preferred and avoided for it"),
                );
            }
        }
        // A soft affinity that no node allowed by the hard rules can match.
        for (i, a) in self.affinity.iter().enumerate().filter(|(_, a)| !a.hard) {
            if let Some(rules) = hard.get(a.label.as_str()) {
                let mut all: Vec<_> = rules.iter().map(|(_, p)| *p).collect();
                all.push(a.predicate());
                if !satisfiable(&all) {
                    errs.bad(
                        format!("affinity[{i}]"),
                        format!(
                            "{a} can never match a node the hard rules on {:?} allow",
                            a.label
                        ),
                    );
                }
            }
        }
    }
}

fn same_rule(a: &LabelAffinity, b: &LabelAffinity) -> bool {
    let key = |x: &LabelAffinity| LabelRule {
        label: x.label.clone(),
        op: x.op.clone(),
        value: x.value.clone(),
        values: x
            .values
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    key(a) == key(b)
}
