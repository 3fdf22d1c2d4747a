//! Validation of an intent against the region it is submitted to: every
//! label, label value, pool and workload it names must exist there, so a
//! typo is refused with a clear message instead of becoming a workload that
//! never places.

use std::collections::BTreeSet;

use super::validate::{FieldError, IntentErrors};
use super::{Operator, PlacementIntent};
use crate::ids::WorkloadId;
use crate::snapshot::ClusterSnapshot;

fn list<'a>(it: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.into_iter().collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// Checks the names in `intent` against `snap`, for a workload of `tenant`:
/// labels no node has, label values no node has in an `=` / `in` hard rule
/// or a spread target, pools no node is in, and hard co-location with a
/// workload that does not exist. Soft rules may name absent values (they
/// only prefer). Reports every problem at once.
pub fn validate_in_region(
    intent: &PlacementIntent,
    tenant: &str,
    snap: &ClusterSnapshot,
) -> Result<(), IntentErrors> {
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(FieldError { field, message });
    let known_pools = snap.pools();
    for (i, p) in intent.pools.iter().enumerate() {
        if !known_pools.contains(p.as_str()) {
            bad(
                format!("pools[{i}]"),
                format!(
                    "no node is in pool {p:?} (pools: {})",
                    list(known_pools.iter().copied())
                ),
            );
        }
    }
    let mut check_label = |path: String,
                           label: &str,
                           op: &Operator,
                           value: &Option<String>,
                           values: &[String],
                           hard: bool| {
        let known = snap.label_values(label);
        if known.is_empty() {
            // `!=`, `not-in` and `not-exists` are met by every node then;
            // still almost certainly a typo, so refuse it too.
            bad(
                format!("{path}.label"),
                format!("no node has label {label:?}"),
            );
            return;
        }
        if !hard {
            return;
        }
        let named: Vec<&String> = match op {
            Operator::Eq => value.iter().collect(),
            Operator::In => values.iter().collect(),
            _ => Vec::new(),
        };
        let missing: Vec<&str> = named
            .into_iter()
            .filter(|v| !known.contains_key(v.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() && missing.len() == values.len().max(usize::from(value.is_some())) {
            bad(
                path,
                format!(
                    "no node has {label} = {} (values: {})",
                    missing.join(" or "),
                    list(known.keys().copied())
                ),
            );
        }
    };
    for (i, c) in intent.constraints.iter().enumerate() {
        check_label(
            format!("constraints[{i}]"),
            &c.label,
            &c.op,
            &c.value,
            &c.values,
            true,
        );
    }
    for (i, a) in intent.affinity.iter().enumerate() {
        check_label(
            format!("affinity[{i}]"),
            &a.label,
            &a.op,
            &a.value,
            &a.values,
            a.hard,
        );
    }
    for (i, a) in intent.anti_affinity.iter().enumerate() {
        check_label(
            format!("anti-affinity[{i}]"),
            &a.label,
            &a.op,
            &a.value,
            &a.values,
            false,
        );
    }
    for (i, s) in intent.spread.iter().enumerate() {
        let known = snap.label_values(&s.label);
        if known.is_empty() {
            bad(
                format!("spread[{i}].label"),
                format!("no node has label {:?}", s.label),
            );
            continue;
        }
        let unknown: BTreeSet<&str> = s
            .targets
            .keys()
            .map(String::as_str)
            .filter(|v| !known.contains_key(v))
            .collect();
        if !unknown.is_empty() {
            bad(
                format!("spread[{i}].targets"),
                format!(
                    "no node has {} = {} (values: {})",
                    s.label,
                    list(unknown.iter().copied()),
                    list(known.keys().copied())
                ),
            );
        }
    }
    for (i, a) in intent
        .co_locate_with
        .iter()
        .enumerate()
        .filter(|(_, a)| a.hard)
    {
        if snap
            .workload(&WorkloadId::new(tenant, &a.workload))
            .is_none()
        {
            bad(
                format!("co-locate-with[{i}].workload"),
                format!(
                    "no workload {tenant}/{} in this region to co-locate with",
                    a.workload
                ),
            );
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(IntentErrors(errs))
    }
}
