use std::time::Duration;

use super::*;
use crate::{ClusterSnapshot, Node, Resources, SchedulerConfig};

const FULL: &str = r#"
count = 3
pools = ["gpu"]
constraints = [{ label = "arch", op = "in", values = ["arm64", "x86_64"] }]
affinity = [{ label = "zone", value = "a", weight = 40 }]
anti-affinity = [{ label = "tier", value = "spot", hard = true }]
co-locate-with = [{ workload = "cache", weight = 60 }]
keep-apart-from = [{ workload = "noisy", hard = true }]
spread = [{ label = "zone", targets = { a = 50, b = 50 } }]
replace-after = "30s"
"#;

fn ctx() -> ValidationContext<'static> {
    ValidationContext {
        workload_name: Some("me"),
        min_replace_after: Duration::from_secs(10),
    }
}

#[test]
fn parses_from_toml_and_json_and_round_trips_through_bincode() {
    let i: PlacementIntent = toml::from_str(FULL).unwrap();
    assert_eq!(i.count, Some(3));
    assert_eq!(i.replace_after, Some(Duration::from_secs(30)));
    assert_eq!(
        i.disconnect_policy(),
        DisconnectPolicy::ReplaceAfter(Duration::from_secs(30))
    );
    assert_eq!(i.constraints[0].op, Operator::In);
    assert_eq!(i.affinity[0].op, Operator::Eq, "op defaults to =");
    i.validate(&ctx()).unwrap();
    let json = serde_json::to_string(&i).unwrap();
    assert!(json.contains("\"replace-after\":\"30s\""), "{json}");
    assert_eq!(serde_json::from_str::<PlacementIntent>(&json).unwrap(), i);
    let cfg = bincode::config::standard();
    let bytes = bincode::encode_to_vec(&i, cfg).unwrap();
    let (back, _): (PlacementIntent, _) = bincode::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(back, i);
    // Defaults: count 1, keep.
    let d: PlacementIntent = toml::from_str("").unwrap();
    assert_eq!(d.cardinality(), Cardinality::Count(1));
    assert_eq!(d.disconnect_policy(), DisconnectPolicy::Keep);
    // per-edge is per-node.
    let p: PlacementIntent = toml::from_str("per-edge = true").unwrap();
    assert_eq!(p.cardinality(), Cardinality::PerNode);
}

#[test]
fn unknown_keys_are_refused_by_the_parser() {
    assert!(toml::from_str::<PlacementIntent>("cuont = 3").is_err());
    assert!(toml::from_str::<PlacementIntent>("constraints = [{ lable = \"zone\" }]").is_err());
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let text = r#"
count = 2
per-node = true
pools = ["gpu", "gpu"]
constraints = [{ label = "zone", op = "~=", value = "a" }, { label = "arch", op = "in" }]
affinity = [{ label = "zone", value = "a", weight = 0 }]
co-locate-with = [{ workload = "me" }]
spread = [{ label = "zone", targets = { a = 70, b = 40 } }]
on-disconnect = "keep"
replace-after = "1s"
"#;
    let i: PlacementIntent = toml::from_str(text).unwrap();
    let e = i.validate(&ctx()).unwrap_err();
    assert_eq!(
        e.fields(),
        vec![
            "count",
            "pools[1]",
            "constraints[0].op",
            "constraints[1].values",
            "affinity[0].weight",
            "co-locate-with[0].workload",
            "spread[0]",
            "spread[0].targets",
            "replace-after",
        ],
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains("unknown operator \"~=\""), "{text}");
    assert!(text.contains("sum to 110"), "{text}");
}

#[test]
fn replace_after_below_the_lease_minimum_is_refused() {
    let i: PlacementIntent = toml::from_str("replace-after = \"5s\"").unwrap();
    let e = i.validate(&ctx()).unwrap_err();
    assert_eq!(e.fields(), vec!["replace-after"]);
    assert!(e.0[0].message.contains("lease minimum of 10s"), "{e}");
    let ok: PlacementIntent = toml::from_str("replace-after = \"10s\"").unwrap();
    ok.validate(&ctx()).unwrap();
    let missing: PlacementIntent = toml::from_str("on-disconnect = \"replace\"").unwrap();
    assert_eq!(
        missing.validate(&ctx()).unwrap_err().fields(),
        vec!["on-disconnect"]
    );
}

#[test]
fn contradictory_rules_are_refused() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            r#"constraints = [{ label = "zone", value = "a" }, { label = "zone", value = "b" }]"#,
            &["constraints[1]"],
            "contradicts constraints[0] (zone = a)",
        ),
        (
            r#"constraints = [{ label = "zone", value = "a" }]
               anti-affinity = [{ label = "zone", op = "in", values = ["a", "b"], hard = true }]"#,
            &["anti-affinity[0]"],
            "no node can satisfy both",
        ),
        (
            r#"affinity = [{ label = "gpu", op = "exists", hard = true }]
               anti-affinity = [{ label = "gpu", op = "exists", hard = true }]"#,
            &["anti-affinity[0]", "affinity[0]"],
            "contradicts",
        ),
        (
            r#"affinity = [{ label = "zone", value = "a" }]
               anti-affinity = [{ label = "zone", value = "a" }]"#,
            &["affinity[0]"],
            "both preferred and avoided",
        ),
        (
            r#"constraints = [{ label = "zone", value = "a" }]
               affinity = [{ label = "zone", value = "b" }]"#,
            &["affinity[0]"],
            "can never match",
        ),
        (
            r#"co-locate-with = [{ workload = "db" }]
               keep-apart-from = [{ workload = "db" }]"#,
            &["co-locate-with[0].workload"],
            "both co-located with and kept apart",
        ),
    ];
    for (text, fields, needle) in cases {
        let i: PlacementIntent = toml::from_str(text).unwrap();
        let e = i.validate(&ctx()).unwrap_err();
        assert_eq!(&e.fields(), fields, "{text}: {e}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
    // Compatible rules on one label pass.
    let ok: PlacementIntent = toml::from_str(
        r#"constraints = [{ label = "zone", op = "in", values = ["a", "b"] }, { label = "zone", op = "!=", value = "a" }]
           affinity = [{ label = "zone", value = "b" }]"#,
    )
    .unwrap();
    ok.validate(&ctx()).unwrap();
}

#[test]
fn region_validation_names_unknown_labels_values_pools_and_workloads() {
    let snap = ClusterSnapshot::from_parts(
        1,
        SchedulerConfig::default(),
        vec![
            Node::new("e1", Resources::new(1000, 1 << 30))
                .label("zone", "a")
                .pool("cpu"),
            Node::new("e2", Resources::new(1000, 1 << 30))
                .label("zone", "b")
                .pool("cpu"),
        ],
        vec![],
        vec![],
    );
    let i: PlacementIntent = toml::from_str(
        r#"pools = ["gpu"]
           constraints = [{ label = "zone", value = "c" }, { label = "rack", op = "exists" }]
           affinity = [{ label = "zone", op = "in", values = ["c", "z"] }]
           spread = [{ label = "zone", targets = { a = 50, q = 50 } }]
           co-locate-with = [{ workload = "db", hard = true }]"#,
    )
    .unwrap();
    i.validate(&ctx()).unwrap();
    let e = validate_in_region(&i, "acme", &snap).unwrap_err();
    assert_eq!(
        e.fields(),
        vec![
            "pools[0]",
            "constraints[0]",
            "constraints[1].label",
            "spread[0].targets",
            "co-locate-with[0].workload",
        ],
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("no node is in pool \"gpu\" (pools: cpu)"),
        "{text}"
    );
    assert!(
        text.contains("no node has zone = c (values: a, b)"),
        "{text}"
    );
    assert!(text.contains("no node has label \"rack\""), "{text}");
    assert!(text.contains("no workload acme/db"), "{text}");
    let fine: PlacementIntent =
        toml::from_str(r#"constraints = [{ label = "zone", op = "in", values = ["a", "c"] }]"#)
            .unwrap();
    validate_in_region(&fine, "acme", &snap).unwrap();
}

#[test]
fn shard_is_opt_in_count_only_and_absent_when_false() {
    let i: PlacementIntent = toml::from_str("count = 4\nshard = true").unwrap();
    assert!(i.shard);
    i.validate(&ctx()).unwrap();
    let json = serde_json::to_string(&i).unwrap();
    assert!(json.contains("\"shard\":true"), "{json}");
    let plain: PlacementIntent = toml::from_str("count = 4").unwrap();
    assert!(!plain.shard);
    let json = serde_json::to_string(&plain).unwrap();
    assert!(!json.contains("shard"), "skipped when false: {json}");
    let e = toml::from_str::<PlacementIntent>("per-edge = true\nshard = true")
        .unwrap()
        .validate(&ctx())
        .unwrap_err();
    assert_eq!(e.fields(), vec!["shard"], "{e}");
}
