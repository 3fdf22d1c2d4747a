//! Global workload intent: how many instances of a workload run over the
//! regions and where. Written as TOML or JSON (kebab-case keys, unknown keys
//! refused); [`GlobalIntent::validate`] names every bad field at once, in
//! the region intent's [`FieldError`] shape.
//!
//! ```toml
//! count = 12                       # total over regions; or per-region = 2
//! size = { cpu-millicores = 250, memory-bytes = 134217728 }
//! pools = ["gpu"]                  # node pools inside each region
//! regions = [{ region = "eu-west", hard = true }, { region = "eu-north", hard = true }]
//! spread = { targets = { eu-west = 70, eu-north = 30 } }   # or spread = {}: even
//! # locality = "devices"           # instead of spread: follow the tenant's devices
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::intent::{
    is_name, write_field_errors, Errors, FieldError, DEFAULT_WEIGHT, MAX_COUNT, MAX_RULES,
};
use crate::resources::Resources;

/// Largest total `count`: a hundred regions' worth of the region maximum
/// would be 1M; 100k keeps one split's arithmetic and plan small.
pub const MAX_GLOBAL_COUNT: u32 = 100_000;
/// Most entries in `regions`.
pub const MAX_REGION_RULES: usize = 256;
/// Longest region name, as central's configuration allows.
pub const MAX_REGION_NAME_LEN: usize = 64;
/// Longest pool name: the region intent's (pools pass down to it).
const MAX_POOL_LEN: usize = crate::intent::MAX_NAME_LEN;

/// Where a global workload's instances run, over regions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GlobalIntent {
    /// Instances over all regions, split by the rules below. Exclusive
    /// with `per-region`. Default 1 when neither is given; at most
    /// [`MAX_GLOBAL_COUNT`].
    pub count: Option<u32>,
    /// Instances in every eligible region (1 to the region maximum, 10000).
    /// Exclusive with `count` and `spread`. Default unset.
    pub per_region: Option<u32>,
    /// Each instance's budget in its region (cpu millicores, memory bytes);
    /// capacity estimates are counted in instances of this size. Must ask
    /// for something. Default zero, which validation refuses.
    pub size: Resources,
    /// Node pools the instances must run in inside each region, passed down
    /// to the region intent. Default empty: any pool.
    pub pools: Vec<String>,
    /// Region affinity: with any `hard` entry, only the hard-listed regions
    /// are used; soft entries prefer their region by `weight`. Default
    /// empty: every region.
    pub regions: Vec<RegionAffinity>,
    /// Spread `count` over the eligible regions: evenly, or by `targets`.
    /// Exclusive with `locality` and `per-region`. Default unset.
    pub spread: Option<GlobalSpread>,
    /// `devices`: only regions through which the tenant's devices report,
    /// `count` split in proportion to their device counts. Default unset.
    pub locality: Option<Locality>,
}

/// One region named in a global intent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionAffinity {
    /// The region's name.
    pub region: String,
    /// 1-100: how much a soft preference counts. Default 50; ignored when
    /// `hard`.
    #[serde(default = "default_weight")]
    pub weight: u8,
    /// Use only hard-listed regions. Default false.
    #[serde(default)]
    pub hard: bool,
}

fn default_weight() -> u8 {
    DEFAULT_WEIGHT
}

/// Spread over regions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GlobalSpread {
    /// Region → percent of `count` (1-100 each, summing to exactly 100).
    /// Default empty: an even spread over every eligible region.
    pub targets: BTreeMap<String, u8>,
}

/// Where instances follow the workload's data from.
///
/// Parsed from any string so that validation, not the parser, names an
/// unknown value together with every other bad field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
#[serde(from = "String", into = "String")]
pub enum Locality {
    /// Where the tenant's devices report.
    Devices,
    /// Anything else; refused by validation.
    Unknown(String),
}

impl From<String> for Locality {
    fn from(s: String) -> Self {
        match s.as_str() {
            "devices" => Locality::Devices,
            _ => Locality::Unknown(s),
        }
    }
}

impl From<Locality> for String {
    fn from(l: Locality) -> String {
        match l {
            Locality::Devices => "devices".to_owned(),
            Locality::Unknown(s) => s,
        }
    }
}

/// How many instances, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalCardinality {
    /// This many in total.
    Count(u32),
    /// This many in each eligible region.
    PerRegion(u32),
}

/// Every bad field of one global intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, thiserror::Error)]
pub struct GlobalIntentErrors(pub Vec<FieldError>);

impl fmt::Display for GlobalIntentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_field_errors(f, "invalid global intent", &self.0)
    }
}

impl GlobalIntentErrors {
    /// The fields at fault, in report order.
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

fn is_region_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REGION_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl GlobalIntent {
    /// Count or per-region, defaults applied.
    pub fn cardinality(&self) -> GlobalCardinality {
        match (self.per_region, self.count) {
            (Some(n), _) => GlobalCardinality::PerRegion(n),
            (None, n) => GlobalCardinality::Count(n.unwrap_or(1)),
        }
    }

    /// The regions hard affinity allows, `None` when it names none (all).
    pub fn hard_regions(&self) -> Option<BTreeSet<&str>> {
        let hard: BTreeSet<&str> = self
            .regions
            .iter()
            .filter(|r| r.hard)
            .map(|r| r.region.as_str())
            .collect();
        (!hard.is_empty()).then_some(hard)
    }

    /// The soft preference weight for `region` (0: none).
    pub fn soft_weight(&self, region: &str) -> u8 {
        self.regions
            .iter()
            .filter(|r| !r.hard && r.region == region)
            .map(|r| r.weight)
            .max()
            .unwrap_or(0)
    }

    /// Whether instances follow the tenant's devices.
    pub fn follows_devices(&self) -> bool {
        self.locality == Some(Locality::Devices)
    }

    /// Checks every field against the regions central knows and returns
    /// all problems at once: ranges, exclusive fields, unknown or
    /// duplicated regions, spread targets that do not sum to 100 or name a
    /// region hard affinity excludes.
    pub fn validate(&self, known_regions: &BTreeSet<String>) -> Result<(), GlobalIntentErrors> {
        self.check(Some(known_regions))
    }

    /// [`GlobalIntent::validate`] without the known-region checks: what the
    /// scheduler re-checks on a stored intent, since a region that has left
    /// since the submission must not make the workload unschedulable.
    pub fn validate_shape(&self) -> Result<(), GlobalIntentErrors> {
        self.check(None)
    }

    fn check(&self, known: Option<&BTreeSet<String>>) -> Result<(), GlobalIntentErrors> {
        let mut errs = Errors(Vec::new());
        let region_ok = |errs: &mut Errors, path: &str, r: &str| {
            if !is_region_name(r) {
                errs.bad(
                    path,
                    format!("{r:?} must be 1-{MAX_REGION_NAME_LEN} chars of [A-Za-z0-9_.-]"),
                );
                false
            } else if known.is_some_and(|k| !k.contains(r)) {
                let list = known
                    .map(|k| k.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                errs.bad(path, format!("no region {r:?} (regions: {list})"));
                false
            } else {
                true
            }
        };
        // Cardinality.
        match (self.count, self.per_region) {
            (Some(_), Some(_)) => errs.bad(
                "count",
                "count and per-region are exclusive: count is a total split over regions, per-region the same number in each",
            ),
            (Some(n), None) if n == 0 || n > MAX_GLOBAL_COUNT => {
                errs.bad("count", format!("{n} must be 1-{MAX_GLOBAL_COUNT}"))
            }
            (None, Some(n)) if n == 0 || n > MAX_COUNT => {
                errs.bad("per-region", format!("{n} must be 1-{MAX_COUNT}"))
            }
            _ => {}
        }
        if self.size.is_zero() {
            errs.bad(
                "size",
                "an instance must ask for cpu-millicores or memory-bytes: capacity is counted in instances of this size",
            );
        }
        // Pools.
        if self.pools.len() > MAX_RULES {
            errs.bad(
                "pools",
                format!("{} entries, at most {MAX_RULES}", self.pools.len()),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.pools.iter().enumerate() {
            if !is_name(p) {
                errs.bad(
                    format!("pools[{i}]"),
                    format!("{p:?} must be 1-{MAX_POOL_LEN} chars of [A-Za-z0-9_.-/:]"),
                );
            } else if !seen.insert(p) {
                errs.bad(format!("pools[{i}]"), format!("pool {p:?} is listed twice"));
            }
        }
        // Region affinity.
        if self.regions.len() > MAX_REGION_RULES {
            errs.bad(
                "regions",
                format!("{} entries, at most {MAX_REGION_RULES}", self.regions.len()),
            );
        }
        let hard = self.hard_regions();
        let mut named: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in self.regions.iter().enumerate() {
            let path = format!("regions[{i}]");
            let ok = region_ok(&mut errs, &format!("{path}.region"), &r.region);
            if let Some(j) = named.insert(&r.region, i) {
                errs.bad(
                    format!("{path}.region"),
                    format!("region {:?} is already in regions[{j}]", r.region),
                );
            }
            if !r.hard {
                if !(1..=100).contains(&r.weight) {
                    errs.bad(
                        format!("{path}.weight"),
                        format!("{} must be 1-100", r.weight),
                    );
                }
                if ok
                    && hard
                        .as_ref()
                        .is_some_and(|h| !h.contains(r.region.as_str()))
                {
                    errs.bad(
                        format!("{path}.region"),
                        format!(
                            "the hard entries exclude {:?}: a soft preference for it never applies",
                            r.region
                        ),
                    );
                }
            }
        }
        // Spread.
        if let Some(s) = &self.spread {
            if self.per_region.is_some() {
                errs.bad(
                    "spread",
                    "spread splits a count: per-region already runs the same number in each region",
                );
            }
            if self.locality.is_some() {
                errs.bad(
                    "spread",
                    "spread and locality are exclusive: both decide each region's share",
                );
            }
            let mut sum = 0u32;
            for (r, pct) in &s.targets {
                let path = format!("spread.targets.{r}");
                if region_ok(&mut errs, &path, r)
                    && hard.as_ref().is_some_and(|h| !h.contains(r.as_str()))
                {
                    errs.bad(
                        &path,
                        format!("hard region affinity excludes {r:?}: its target can never be met"),
                    );
                }
                if *pct == 0 || *pct > 100 {
                    errs.bad(
                        &path,
                        format!("{pct} % must be 1-100 (leave a region out instead of 0)"),
                    );
                }
                sum += u32::from(*pct);
            }
            if !s.targets.is_empty() && sum != 100 {
                errs.bad(
                    "spread.targets",
                    format!("percentages sum to {sum}, not 100"),
                );
            }
        }
        if let Some(Locality::Unknown(l)) = &self.locality {
            errs.bad(
                "locality",
                format!("unknown locality {l:?}; the only one is \"devices\""),
            );
        }
        if errs.0.is_empty() {
            Ok(())
        } else {
            Err(GlobalIntentErrors(errs.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
count = 12
size = { cpu-millicores = 250, memory-bytes = 134217728 }
pools = ["gpu"]
regions = [
  { region = "eu-west", hard = true },
  { region = "eu-north", hard = true },
]
spread = { targets = { eu-west = 70, eu-north = 30 } }
"#;

    fn known() -> BTreeSet<String> {
        ["eu-west", "eu-north", "us-east"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn parses_from_toml_and_json_and_round_trips_through_bincode() {
        let i: GlobalIntent = toml::from_str(FULL).unwrap();
        assert_eq!(i.cardinality(), GlobalCardinality::Count(12));
        assert_eq!(i.size, Resources::new(250, 128 << 20));
        assert_eq!(
            i.hard_regions(),
            Some(BTreeSet::from(["eu-west", "eu-north"]))
        );
        i.validate(&known()).unwrap();
        let json = serde_json::to_string(&i).unwrap();
        assert!(json.contains("\"per-region\":null"), "{json}");
        assert_eq!(serde_json::from_str::<GlobalIntent>(&json).unwrap(), i);
        let cfg = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&i, cfg).unwrap();
        let (back, _): (GlobalIntent, _) = bincode::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, i);
        // Locality and per-region parse too; defaults: count 1, weight 50.
        let full = "per-region = 2\nlocality = \"devices\"\nsize = { cpu-millicores = 1 }\nregions = [{ region = \"eu-west\" }]";
        let p: GlobalIntent = toml::from_str(full).unwrap();
        assert_eq!(p.cardinality(), GlobalCardinality::PerRegion(2));
        assert!(p.follows_devices());
        assert_eq!(p.soft_weight("eu-west"), DEFAULT_WEIGHT);
        assert_eq!(p.soft_weight("us-east"), 0);
        p.validate(&known()).unwrap();
        let d: GlobalIntent = toml::from_str("size = { memory-bytes = 1 }").unwrap();
        assert_eq!(d.cardinality(), GlobalCardinality::Count(1));
        assert_eq!(d.hard_regions(), None);
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        assert!(toml::from_str::<GlobalIntent>("cuont = 3").is_err());
        assert!(toml::from_str::<GlobalIntent>("regions = [{ regoin = \"a\" }]").is_err());
        assert!(toml::from_str::<GlobalIntent>("spread = { target = {} }").is_err());
        assert!(toml::from_str::<GlobalIntent>("size = { cpu = 1 }").is_err());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let bad = r#"
count = 0
per-region = 3
pools = ["gpu", "gpu", ""]
regions = [
  { region = "eu-west", hard = true },
  { region = "mars", weight = 0 },
  { region = "eu-west" },
  { region = "us-east", weight = 20 },
]
spread = { targets = { eu-west = 60, atlantis = 30, us-east = 0 } }
locality = "edges"
"#;
        let i: GlobalIntent = toml::from_str(bad).unwrap();
        let e = i.validate(&known()).unwrap_err();
        assert_eq!(
            e.fields(),
            vec![
                "count",
                "size",
                "pools[1]",
                "pools[2]",
                "regions[1].region",
                "regions[1].weight",
                "regions[2].region",
                "regions[3].region",
                "spread",
                "spread",
                "spread.targets.atlantis",
                "spread.targets.us-east",
                "spread.targets.us-east",
                "spread.targets",
                "locality",
            ],
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains("no region \"mars\""), "{text}");
        assert!(text.contains("already in regions[0]"), "{text}");
        assert!(text.contains("hard entries exclude \"us-east\""), "{text}");
        assert!(text.contains("sum to 90, not 100"), "{text}");
        assert!(text.contains("unknown locality \"edges\""), "{text}");
        // Without the known regions only the shape is checked: mars and
        // atlantis are not unknown then, merely excluded by the hard entry.
        let shape = i.validate_shape().unwrap_err().to_string();
        assert!(!shape.contains("no region"), "{shape}");
        assert!(shape.contains("hard entries exclude \"mars\""), "{shape}");
        assert!(shape.contains("excludes \"atlantis\""), "{shape}");
    }

    #[test]
    fn counts_are_bounded() {
        let mut i: GlobalIntent = toml::from_str("size = { cpu-millicores = 1 }").unwrap();
        i.count = Some(MAX_GLOBAL_COUNT);
        i.validate_shape().unwrap();
        i.count = Some(MAX_GLOBAL_COUNT + 1);
        assert_eq!(i.validate_shape().unwrap_err().fields(), vec!["count"]);
        i.count = None;
        i.per_region = Some(MAX_COUNT + 1);
        assert_eq!(i.validate_shape().unwrap_err().fields(), vec!["per-region"]);
        i.per_region = Some(0);
        assert_eq!(i.validate_shape().unwrap_err().fields(), vec!["per-region"]);
    }
}
