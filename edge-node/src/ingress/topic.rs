//! Topic filter validation and matching (MQTT 3.1.1 §4.7 / v5 §4.7).
//!
//! Pure functions, shared by the server's fan-out and the bridge config.

/// Whether `filter` is a valid subscription filter: non-empty, `#` only as
/// the whole last level, `+` only as a whole level, no NUL.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65_535 || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether a topic *name* (what a publish carries) matches `filter`.
///
/// Topics starting with `$` are not matched by filters starting with a
/// wildcard (§4.7.2). `a/#` also matches `a` (the parent level).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    let mut f = filter.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn filter_validation() {
        for ok in ["#", "+", "a/b", "a/+/c", "a/#", "+/+/#", "/", "a//b"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "a/b+", "##", "a/\0"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("strata/acme/d1/telemetry", "strata/+/+/telemetry", true),
            ("strata/acme/d1/telemetry", "strata/#", true),
            ("strata/acme/d1/telemetry", "#", true),
            ("strata/acme/d1/telemetry", "strata/+/telemetry", false),
            ("strata/acme/d1/telemetry", "strata/acme/d1/telemetry", true),
            (
                "strata/acme/d1/telemetry",
                "strata/acme/d1/telemetry/#",
                true,
            ),
            ("strata/acme", "strata/acme/+", false),
            ("a", "a/#", true),
            ("a/b", "a/+/#", true),
            ("/x", "+/x", true),
            ("$SYS/x", "#", false),
            ("$SYS/x", "+/x", false),
            ("$SYS/x", "$SYS/#", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (topic, filter, want) in cases {
            assert_eq!(matches(topic, filter), want, "{topic} vs {filter}");
        }
    }

    proptest! {
        /// A topic always matches itself and `#`, and a filter made by
        /// replacing any levels with `+` still matches.
        #[test]
        fn plus_substitution_matches(levels in proptest::collection::vec("[a-z0-9]{1,4}", 1..6),
                                     mask in proptest::collection::vec(any::<bool>(), 6)) {
            let topic = levels.join("/");
            prop_assert!(matches(&topic, &topic));
            prop_assert!(matches(&topic, "#"));
            let filter: Vec<&str> = levels.iter().zip(&mask)
                .map(|(l, m)| if *m { "+" } else { l.as_str() }).collect();
            let filter = filter.join("/");
            prop_assert!(valid_filter(&filter));
            prop_assert!(matches(&topic, &filter));
            let longer = format!("{filter}/x");
            prop_assert!(!matches(&topic, &longer));
        }
    }
}
