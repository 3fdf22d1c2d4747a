//! Label predicates: matching a node's labels, rendering a rule for
//! placement reports, and deciding whether a set of hard rules on one label
//! can be met by any node at all.

use std::collections::BTreeMap;
use std::fmt;

use super::Operator;

/// A borrowed view of one label rule (constraint or affinity), optionally
/// negated (a hard anti-affinity is a negated constraint).
#[derive(Debug, Clone, Copy)]
pub struct LabelPredicate<'a> {
    /// Label key.
    pub label: &'a str,
    /// Comparison.
    pub op: &'a Operator,
    /// Operand of `=` / `!=`.
    pub value: Option<&'a str>,
    /// Operands of `in` / `not-in`.
    pub values: &'a [String],
    /// Matches exactly when the rule does not.
    pub negated: bool,
}

impl<'a> LabelPredicate<'a> {
    /// A non-negated predicate.
    pub fn new(
        label: &'a str,
        op: &'a Operator,
        value: Option<&'a str>,
        values: &'a [String],
    ) -> Self {
        LabelPredicate {
            label,
            op,
            value,
            values,
            negated: false,
        }
    }

    /// The same rule, negated.
    pub fn negate(self) -> Self {
        LabelPredicate {
            negated: !self.negated,
            ..self
        }
    }

    /// Whether a node with these labels satisfies the predicate.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(self.label).map(String::as_str))
    }

    /// Whether a node whose label is `v` (`None`: unset) satisfies it.
    pub fn matches_value(&self, v: Option<&str>) -> bool {
        let m = match self.op {
            Operator::Eq => v.is_some() && v == self.value,
            Operator::Ne => v.is_none() || v != self.value,
            Operator::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Operator::Exists => v.is_some(),
            Operator::NotExists => v.is_none(),
            Operator::Unknown(_) => false,
        };
        m != self.negated
    }

    /// The literal values the rule mentions.
    fn literals(&self) -> impl Iterator<Item = &'a str> {
        self.value
            .into_iter()
            .chain(self.values.iter().map(String::as_str))
    }
}

impl fmt::Display for LabelPredicate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            f.write_str("not (")?;
        }
        match self.op {
            Operator::Eq | Operator::Ne | Operator::Unknown(_) => write!(
                f,
                "{} {} {}",
                self.label,
                self.op.as_str(),
                self.value.unwrap_or("")
            )?,
            Operator::In | Operator::NotIn => write!(
                f,
                "{} {} [{}]",
                self.label,
                self.op.as_str(),
                self.values.join(", ")
            )?,
            Operator::Exists | Operator::NotExists => {
                write!(f, "{} {}", self.label, self.op.as_str())?
            }
        }
        if self.negated {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Whether some node could satisfy every predicate at once. All predicates
/// must be on the same label. A label's value is either unset, one of the
/// literals the rules mention, or anything else; trying each of those
/// representatives decides it exactly.
pub(crate) fn satisfiable(preds: &[LabelPredicate<'_>]) -> bool {
    let mut candidates: Vec<Option<&str>> = vec![None];
    for p in preds {
        candidates.extend(p.literals().map(Some));
    }
    // A value equal to no literal: longer than all of them.
    let longest = candidates.iter().flatten().map(|s| s.len()).max();
    let fresh = "~".repeat(longest.unwrap_or(0) + 1);
    candidates.push(Some(&fresh));
    candidates
        .iter()
        .any(|c| preds.iter().all(|p| p.matches_value(*c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn operators_match_as_documented() {
        let labels: BTreeMap<String, String> = [("zone".to_owned(), "a".to_owned())].into();
        let ab = strs(&["a", "b"]);
        type Case<'a> = (Operator, Option<&'a str>, &'a [String], &'a str, bool);
        let cases: Vec<Case<'_>> = vec![
            (Operator::Eq, Some("a"), &[], "zone", true),
            (Operator::Eq, Some("b"), &[], "zone", false),
            (Operator::Eq, Some("a"), &[], "rack", false),
            (Operator::Ne, Some("a"), &[], "zone", false),
            (Operator::Ne, Some("a"), &[], "rack", true),
            (Operator::In, None, &ab, "zone", true),
            (Operator::In, None, &ab, "rack", false),
            (Operator::NotIn, None, &ab, "zone", false),
            (Operator::NotIn, None, &ab, "rack", true),
            (Operator::Exists, None, &[], "zone", true),
            (Operator::Exists, None, &[], "rack", false),
            (Operator::NotExists, None, &[], "rack", true),
            (
                Operator::Unknown("~=".into()),
                Some("a"),
                &[],
                "zone",
                false,
            ),
        ];
        for (op, value, values, label, want) in cases {
            let p = LabelPredicate::new(label, &op, value, values);
            assert_eq!(p.matches(&labels), want, "{p}");
            assert_eq!(p.negate().matches(&labels), !want, "{}", p.negate());
        }
    }

    #[test]
    fn satisfiability_is_decided_exactly() {
        let (eq, ne, inn, exists, nx) = (
            Operator::Eq,
            Operator::Ne,
            Operator::In,
            Operator::Exists,
            Operator::NotExists,
        );
        let ab = strs(&["a", "b"]);
        let p = |op, value, values| LabelPredicate::new("zone", op, value, values);
        assert!(satisfiable(&[p(&eq, Some("a"), &[])]));
        assert!(!satisfiable(&[
            p(&eq, Some("a"), &[]),
            p(&eq, Some("b"), &[])
        ]));
        assert!(!satisfiable(&[
            p(&eq, Some("a"), &[]),
            p(&ne, Some("a"), &[])
        ]));
        assert!(satisfiable(&[p(&inn, None, &ab), p(&ne, Some("a"), &[])]));
        assert!(!satisfiable(&[p(&exists, None, &[]), p(&nx, None, &[])]));
        // `!= a` and `!= b` is met by any third value.
        assert!(satisfiable(&[
            p(&ne, Some("a"), &[]),
            p(&ne, Some("b"), &[])
        ]));
        // `= a` and not(`in [a, b]`).
        assert!(!satisfiable(&[
            p(&eq, Some("a"), &[]),
            p(&inn, None, &ab).negate()
        ]));
    }
}
