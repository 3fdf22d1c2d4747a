//! Device sharding: which of a scaled workload's instances monitors which
//! device, by rendezvous (highest random weight) hashing.
//!
//! Instance slots are `0..n` (count workloads reconcile by slot, and a
//! scale-down stops the highest). Device `d` goes to the slot `s` with the
//! highest weight `w(key, s, d)`, so
//! - `n → n+1` moves exactly the devices whose new slot `n` outweighs their
//!   old one, about `1/(n+1)` of them, and each to slot `n`;
//! - `n+1 → n` moves exactly slot `n`'s devices, each to its second choice;
//! - any slot set works ([`shard_among`]): removing one slot moves only its
//!   devices, whichever slot it is.
//!
//! A shard is computed from the key, the slot and the device name alone, by
//! every replica and every instance, so nothing but the slot count needs to
//! be agreed on. That is why the hash is frozen and published rather than
//! std's (whose algorithm is unspecified and may change between Rust
//! releases): a device's shard must be the same on every node, in every
//! version, forever.
//!
//! The hash, in full: `h = FNV-1a-64(key as 8 bytes little-endian ‖ device
//! as UTF-8)`; `w(s) = SplitMix64-mix(h + (s + 1) × 0x9e3779b97f4a7c15)`,
//! i.e. the `(s+1)`-th output of a SplitMix64 generator seeded with `h`
//! (FNV-1a: Fowler, Noll, Vo; SplitMix64: Steele, Lea and Flood 2014, as in
//! Vigna's `splitmix64.c`). FNV-1a alone mixes its last bytes poorly; the
//! SplitMix64 finalizer is a bijection with full avalanche, which is what
//! makes the argmax uniform. Ties (one in 2⁶⁴) go to the lower slot.
//!
//! Cost: `n` weights per device, so `assign` over `d` devices is `d × n`
//! mixes — a millisecond for 10k devices over 50 instances. Jump
//! consistent hashing would be `O(log n)` but only for the contiguous range
//! `0..n`, and rendezvous states its guarantees directly in terms of the
//! slots it hashes.

use crate::ids::WorkloadId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// SplitMix64's increment, 2⁶⁴/φ.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64's output function.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What makes one workload's sharding independent of another's: two
/// workloads over the same devices spread them differently, so their
/// instance 0s are not all loaded alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardKey(pub u64);

impl ShardKey {
    /// The key of `workload`: FNV-1a-64 over its tenant and name, each
    /// preceded by its length as 8 bytes little-endian (so `("a/b", "c")`
    /// and `("a", "b/c")` differ).
    pub fn of(workload: &WorkloadId) -> Self {
        let mut h = FNV_OFFSET;
        for part in [&workload.tenant, &workload.name] {
            h = fnv1a64(h, &(part.len() as u64).to_le_bytes());
            h = fnv1a64(h, part.as_bytes());
        }
        ShardKey(h)
    }

    fn device(self, device: &str) -> u64 {
        fnv1a64(
            fnv1a64(FNV_OFFSET, &self.0.to_le_bytes()),
            device.as_bytes(),
        )
    }
}

fn weight(device_hash: u64, slot: u32) -> u64 {
    mix64(device_hash.wrapping_add((u64::from(slot) + 1).wrapping_mul(GAMMA)))
}

/// The highest-weight slot of `slots`, ties to the lowest.
fn best(device_hash: u64, slots: impl IntoIterator<Item = u32>) -> Option<u32> {
    slots
        .into_iter()
        .map(|s| (weight(device_hash, s), s))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, s)| s)
}

/// The slot (`0..instances`) that monitors `device`; `None` with no
/// instances.
pub fn shard_of(device: &str, instances: u32, key: ShardKey) -> Option<u32> {
    best(key.device(device), 0..instances)
}

/// The slot of `slots` that monitors `device` (for a slot set that is not
/// `0..n`); `None` when `slots` is empty. Agrees with [`shard_of`] on
/// `0..n`.
pub fn shard_among(device: &str, slots: &[u32], key: ShardKey) -> Option<u32> {
    best(key.device(device), slots.iter().copied())
}

/// Every device's slot: entry `s` lists slot `s`'s devices in input order.
/// Empty with no instances.
pub fn assign<S: AsRef<str>>(devices: &[S], instances: u32, key: ShardKey) -> Vec<Vec<&str>> {
    let mut out = vec![Vec::new(); instances as usize];
    for d in devices {
        let d = d.as_ref();
        if let Some(s) = shard_of(d, instances, key) {
            // `s < instances == out.len()`.
            out[s as usize].push(d);
        }
    }
    out
}

/// One device changing slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Move<'a> {
    /// The device.
    pub device: &'a str,
    /// Its slot before; `None` when there were no instances.
    pub from: Option<u32>,
    /// Its slot after; `None` when there are no instances.
    pub to: Option<u32>,
}

/// The devices whose slot differs between `from` and `to` instances, in
/// input order.
pub fn moves<S: AsRef<str>>(devices: &[S], from: u32, to: u32, key: ShardKey) -> Vec<Move<'_>> {
    devices
        .iter()
        .filter_map(|d| {
            let device = d.as_ref();
            let h = key.device(device);
            let (a, b) = (best(h, 0..from), best(h, 0..to));
            (a != b).then_some(Move {
                device,
                from: a,
                to: b,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn the_primitives_match_their_published_test_vectors() {
        // FNV-1a 64 (draft-eastlake-fnv, test vectors).
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64 seeded with 1234567 (Vigna's splitmix64.c): the first
        // five outputs, which are `weight(1234567, 0..5)`.
        let first: Vec<u64> = (0..5).map(|s| weight(1_234_567, s)).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    /// Golden values: if this fails, the hash changed and every device in
    /// every region would move on upgrade. Do not update it; restore the
    /// hash.
    #[test]
    fn golden_shards_never_change() {
        let key = ShardKey::of(&WorkloadId::new("acme", "vibration"));
        assert_eq!(key, ShardKey(GOLDEN_KEY));
        assert_ne!(key, ShardKey::of(&WorkloadId::new("acme/vibration", "")));
        assert_ne!(key, ShardKey::of(&WorkloadId::new("acmevibration", "")));
        let devices: Vec<String> = (0..16).map(|i| format!("pump-{i:02}")).collect();
        let shards: Vec<u32> = devices
            .iter()
            .map(|d| shard_of(d, 5, key).unwrap())
            .collect();
        assert_eq!(shards, GOLDEN_SHARDS_OF_5);
        assert_eq!(key.device("pump-00"), GOLDEN_PUMP_00);
    }

    // Computed independently (a Python transcription of the module docs'
    // formula) and frozen.
    const GOLDEN_KEY: u64 = 0xdeb2_b870_7ed8_2f74;
    const GOLDEN_PUMP_00: u64 = 0x3b69_0224_1504_c927;
    const GOLDEN_SHARDS_OF_5: [u32; 16] = [1, 3, 2, 2, 1, 0, 4, 1, 1, 0, 0, 1, 2, 1, 3, 1];

    #[test]
    fn no_instances_no_shards_and_moves_from_or_to_nothing() {
        let key = ShardKey(7);
        assert_eq!(shard_of("d", 0, key), None);
        assert_eq!(shard_among("d", &[], key), None);
        assert!(assign(&["a", "b"], 0, key).is_empty());
        let m = moves(&["a", "b"], 0, 2, key);
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.from.is_none() && m.to.is_some()));
        let m = moves(&["a", "b"], 3, 0, key);
        assert!(m.iter().all(|m| m.from.is_some() && m.to.is_none()));
        assert!(moves(&["a", "b"], 3, 3, key).is_empty());
        assert_eq!(assign(&["a", "b", "c"], 1, key), vec![vec!["a", "b", "c"]]);
    }

    const DEVICES: usize = 10_000;

    /// 10k distinct device names and a key, all from `seed`.
    fn fleet(seed: u64) -> (ShardKey, Vec<String>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let key = ShardKey(rng.gen());
        let edges = rng.gen_range(1..200);
        let devices = (0..DEVICES)
            .map(|i| {
                format!(
                    "edge-{}/dev-{i}-{:x}",
                    rng.gen_range(0..edges),
                    rng.gen::<u16>()
                )
            })
            .collect();
        (key, devices)
    }

    /// `|x - mean| ≤ 5σ` of a binomial(`DEVICES`, `p`): fails by chance
    /// about once in 1.7 million checks.
    fn within_5_sigma(x: usize, p: f64) -> bool {
        let n = DEVICES as f64;
        let sd = (n * p * (1.0 - p)).sqrt();
        (x as f64 - n * p).abs() <= 5.0 * sd
    }

    proptest! {
        #![proptest_config(Config {
            cases: 48,
            rng_seed: RngSeed::Fixed(0x005a_a2d5_eed0),
            failure_persistence: None,
            ..Config::default()
        })]

        /// n → n+1 moves about 1/(n+1) of the devices, all to the new slot;
        /// n+1 → n moves exactly the removed slot's devices.
        #[test]
        fn a_scale_step_moves_only_what_it_must(seed in any::<u64>(), n in 1u32..24) {
            let (key, devices) = fleet(seed);
            let up = moves(&devices, n, n + 1, key);
            prop_assert!(
                up.iter().all(|m| m.from.is_some_and(|f| f < n) && m.to == Some(n)),
                "seed {}: a device moved elsewhere than the new slot {}", seed, n
            );
            prop_assert!(
                within_5_sigma(up.len(), 1.0 / f64::from(n + 1)),
                "seed {}: {} of {} moved for {} → {}, expected ~{}", seed, up.len(), DEVICES, n, n + 1, DEVICES as u32 / (n + 1)
            );
            let down = moves(&devices, n + 1, n, key);
            let last = &assign(&devices, n + 1, key)[n as usize];
            prop_assert!(down.iter().all(|m| m.from == Some(n) && m.to.is_some_and(|t| t < n)), "seed {}", seed);
            prop_assert_eq!(
                down.iter().map(|m| m.device).collect::<Vec<_>>(),
                last.clone(),
                "seed {}: n+1 → n must move exactly slot n's devices", seed
            );
            // The step there and back is symmetric.
            prop_assert_eq!(up.len(), down.len(), "seed {}", seed);
        }

        /// Every slot holds its share ±20 % of 10k devices (that is at
        /// least 5σ for up to 16 slots), and assign agrees with shard_of.
        #[test]
        fn devices_spread_evenly(seed in any::<u64>(), n in 1u32..=16) {
            let (key, devices) = fleet(seed);
            let shards = assign(&devices, n, key);
            prop_assert_eq!(shards.len(), n as usize);
            prop_assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), DEVICES);
            let mean = DEVICES as f64 / f64::from(n);
            for (s, list) in shards.iter().enumerate() {
                prop_assert!(
                    (list.len() as f64 - mean).abs() <= 0.2 * mean,
                    "seed {}: slot {} of {} has {} devices, mean {}", seed, s, n, list.len(), mean
                );
                for d in list.iter().take(50) {
                    prop_assert_eq!(shard_of(d, n, key), Some(s as u32));
                }
            }
        }

        /// Removing any one slot from a set moves only that slot's devices,
        /// and the set 0..n agrees with shard_of.
        #[test]
        fn removing_any_slot_moves_only_its_devices(seed in any::<u64>(), n in 2u32..12) {
            let (key, devices) = fleet(seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 1);
            let all: Vec<u32> = (0..n).collect();
            let gone = rng.gen_range(0..n);
            let rest: Vec<u32> = all.iter().copied().filter(|&s| s != gone).collect();
            for d in devices.iter().take(2000) {
                let before = shard_among(d, &all, key);
                prop_assert_eq!(before, shard_of(d, n, key), "seed {}", seed);
                let after = shard_among(d, &rest, key);
                if before != Some(gone) {
                    prop_assert_eq!(after, before, "seed {}: {} moved off a kept slot", seed, d);
                }
            }
        }
    }
}
