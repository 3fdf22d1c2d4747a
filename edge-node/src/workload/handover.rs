//! Sharded monitors: which of this edge's instances of a monitor sees a
//! device, and what moves where when that set of instances changes. Pure;
//! the driver executes the hand-over (see "Procedure").
//!
//! A sharded monitor (`placement.shard`) runs one instance per region slot;
//! this edge runs some of them, its *local slots*. A device `d` goes to
//! `shard_among(d, local_slots, key)` (the frozen rendezvous hash of
//! `strata_sched::scale::shard`), so adding a slot moves about `1/(n+1)` of
//! the devices, all to the new slot, and removing one moves only its
//! devices.
//!
//! # The kv contract
//! A key `<prefix>/<device>/<rest>` (`prefix` without `/`, `device` a
//! telemetry device name, which never contains `/`) is *device state*: it
//! belongs to `device` and moves with it. The SDK's per-series keys
//! (`SeriesStore`: `<prefix>/<device>/<metric>`) have exactly this shape.
//! Every other key (no two `/`s, or the SDK's hashed form
//! `<prefix>#<hex>` of a series key longer than 256 bytes) is *instance
//! state*: it stays with its instance and is dropped with a removed one, so
//! a device whose series keys are hashed restarts from empty state after a
//! move.
//!
//! # Procedure (the driver, on each change of a monitor's local slots)
//! 1. Pause the gainers ([`Plan::gainers`]) at their queue's current end:
//!    later records wait, queued, until step 5.
//! 2. Publish the new routing table; wait until no ingest task still
//!    routes with the old one (every record it routed is queued).
//! 3. Let each loser ([`Plan::losers`]) process every record queued before
//!    that point, then take its moved keys ([`moved_to`]) out of its kv.
//! 4. Import them into their new owners (a gainer not started yet starts
//!    from them), persist the losers' and gainers' states.
//! 5. Resume the gainers.
//!
//! So a device's records are processed in order, by its old owner up to
//! the switch and by its new owner, holding the old owner's state, after.

use std::collections::{BTreeMap, BTreeSet};

use strata_sched::scale::{shard_among, ShardKey};

use super::sandbox::KvState;

/// The device whose state `key` is, when it is device state (see the
/// module docs): the second `/`-separated component of a key with at least
/// three.
pub fn device_of(key: &str) -> Option<&str> {
    let (_, rest) = key.split_once('/')?;
    let (device, _) = rest.split_once('/')?;
    (!device.is_empty()).then_some(device)
}

/// Which instances a change of local slots involves: those that may lose
/// devices (and hand over their state) and those that may gain devices
/// (and must not process them before the state arrives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Slots before the change that may lose devices.
    pub losers: Vec<u32>,
    /// Slots after the change that may gain devices.
    pub gainers: Vec<u32>,
}

/// The hand-over a change of local slots from `before` to `after` needs;
/// `None` when the sets are equal (nothing moves). Rendezvous hashing moves
/// devices only off removed slots and only onto added ones, so: the losers
/// are the removed slots, plus every kept slot when one was added; the
/// gainers are the added slots, plus every kept slot when one was removed.
pub fn plan(before: &[u32], after: &[u32]) -> Option<Plan> {
    let b: BTreeSet<u32> = before.iter().copied().collect();
    let a: BTreeSet<u32> = after.iter().copied().collect();
    if a == b {
        return None;
    }
    let kept: BTreeSet<u32> = a.intersection(&b).copied().collect();
    let added = a.difference(&b).next().is_some();
    let removed = b.difference(&a).next().is_some();
    let mut losers: BTreeSet<u32> = b.difference(&a).copied().collect();
    let mut gainers: BTreeSet<u32> = a.difference(&b).copied().collect();
    if added {
        losers.extend(&kept);
    }
    if removed {
        gainers.extend(&kept);
    }
    Some(Plan {
        losers: losers.into_iter().collect(),
        gainers: gainers.into_iter().collect(),
    })
}

/// Where device-state key `key` of the instance in slot `from` goes when
/// the local slots become `after`: `Some(slot)` when it moves, `None` when
/// it stays (instance state, a device `from` still owns, or no slot left to
/// take it).
pub fn moved_to(key: &str, from: u32, after: &[u32], shard: ShardKey) -> Option<u32> {
    let device = device_of(key)?;
    shard_among(device, after, shard).filter(|&to| to != from)
}

/// The part of a loser's state that moves, by destination slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Destination slot → the entries it receives.
    pub to: BTreeMap<u32, KvState>,
    /// Distinct devices that moved.
    pub devices: u64,
    /// Keys that moved.
    pub keys: u64,
}

impl Moved {
    /// Splits `taken` (entries [`moved_to`] selected out of slot `from`)
    /// by destination, and counts devices and keys.
    pub fn split(taken: KvState, from: u32, after: &[u32], shard: ShardKey) -> Moved {
        let mut m = Moved::default();
        let mut devices = BTreeSet::new();
        for (k, v) in taken {
            let Some(to) = moved_to(&k, from, after, shard) else {
                // Not selected by `moved_to`: the caller passed more than
                // it took. Such an entry has no destination here.
                continue;
            };
            if let Some(d) = device_of(&k) {
                devices.insert(d.to_owned());
            }
            m.keys += 1;
            m.to.entry(to).or_default().insert(k, v);
        }
        m.devices = devices.len() as u64;
        m
    }

    /// Adds another loser's share.
    pub fn merge(&mut self, other: Moved) {
        for (to, kv) in other.to {
            self.to.entry(to).or_default().extend(kv);
        }
        self.devices += other.devices;
        self.keys += other.keys;
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn device_state_is_the_second_of_three_components() {
        assert_eq!(device_of("r/pump-1/temp"), Some("pump-1"));
        assert_eq!(device_of("r/pump-1/a/b"), Some("pump-1"));
        assert_eq!(device_of("z/dev.2_x/m"), Some("dev.2_x"));
        for instance_state in ["r", "r/pump-1", "r#0123abcd", "r//temp", "", "/"] {
            assert_eq!(device_of(instance_state), None, "{instance_state:?}");
        }
    }

    #[test]
    fn plans_name_only_who_can_lose_or_gain() {
        assert_eq!(plan(&[0, 1], &[1, 0]), None, "same set: nothing moves");
        assert_eq!(
            plan(&[0], &[0, 1]),
            Some(Plan {
                losers: vec![0],
                gainers: vec![1]
            })
        );
        assert_eq!(
            plan(&[0, 1, 2], &[0, 2]),
            Some(Plan {
                losers: vec![1],
                gainers: vec![0, 2]
            })
        );
        assert_eq!(
            plan(&[], &[3]),
            Some(Plan {
                losers: vec![],
                gainers: vec![3]
            })
        );
        assert_eq!(
            plan(&[3], &[]),
            Some(Plan {
                losers: vec![3],
                gainers: vec![]
            })
        );
    }

    fn state(devices: &[String], prefix: &str) -> KvState {
        let mut kv = KvState::new();
        for d in devices {
            kv.insert(format!("{prefix}/{d}/temp"), d.as_bytes().to_vec());
            kv.insert(format!("{prefix}/{d}/hum"), vec![1]);
        }
        kv.insert("config".into(), vec![9]);
        kv.insert(format!("{prefix}#00ff00ff00ff00ff"), vec![7]);
        kv
    }

    /// Scaling n → n+1 on one edge: every loser keeps exactly the devices
    /// it still owns, about 1/(n+1) of all devices move, all to the new
    /// slot, and the key partition is exact (no key lost or duplicated;
    /// instance state stays). Removing a slot moves all its device state
    /// to the owners that remain. Running the step twice moves nothing.
    #[test]
    fn scale_steps_move_each_device_state_to_its_new_owner_once() {
        let seed: u64 = rand::random();
        eprintln!("scale_steps_move_each_device_state_to_its_new_owner_once seed = {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shard = ShardKey(rng.gen());
        let devices: Vec<String> = (0..2000)
            .map(|i| format!("dev-{i}-{}", rng.gen::<u16>()))
            .collect();
        for n in 1u32..6 {
            let before: Vec<u32> = (0..n).collect();
            let after: Vec<u32> = (0..=n).collect();
            let p = plan(&before, &after).unwrap();
            assert_eq!(
                (p.losers.clone(), p.gainers.clone()),
                (before.clone(), vec![n])
            );
            // Each loser holds the state of its devices.
            let mut total = Moved::default();
            let mut kept_keys = 0usize;
            for &s in &before {
                let mine: Vec<String> = devices
                    .iter()
                    .filter(|d| shard_among(d, &before, shard) == Some(s))
                    .cloned()
                    .collect();
                let mut kv = state(&mine, "r");
                let all = kv.len();
                let (taken, keep): (KvState, KvState) = std::mem::take(&mut kv)
                    .into_iter()
                    .partition(|(k, _)| moved_to(k, s, &after, shard).is_some());
                assert!(
                    keep.contains_key("config"),
                    "seed {seed}: instance state stays"
                );
                for k in keep.keys() {
                    if let Some(d) = device_of(k) {
                        assert_eq!(shard_among(d, &after, shard), Some(s), "seed {seed}");
                    }
                }
                let m = Moved::split(taken, s, &after, shard);
                assert_eq!(m.keys as usize + keep.len(), all, "seed {seed}: a key lost");
                assert!(
                    m.to.keys().all(|&t| t == n),
                    "seed {seed}: moved elsewhere than {n}"
                );
                kept_keys += keep.len();
                total.merge(m);
            }
            let moved = total.devices as f64;
            let expect = devices.len() as f64 / f64::from(n + 1);
            let sd =
                (devices.len() as f64 * (1.0 / f64::from(n + 1)) * (1.0 - 1.0 / f64::from(n + 1)))
                    .sqrt();
            assert!(
                (moved - expect).abs() <= 5.0 * sd,
                "seed {seed}: {moved} moved for {n} → {}, expected ~{expect}",
                n + 1
            );
            assert_eq!(
                total.keys,
                total.devices * 2,
                "seed {seed}: both series of a device move together"
            );
            assert_eq!(
                kept_keys + total.keys as usize,
                devices.len() * 2 + 2 * before.len(),
                "seed {seed}"
            );
            // Idempotent: what the new slot received it keeps at n+1 slots.
            for k in total.to[&n].keys() {
                assert_eq!(moved_to(k, n, &after, shard), None, "seed {seed}");
            }
            // Removal, n+1 → n: everything of slot n goes back, to the
            // owners it had before.
            let p = plan(&after, &before).unwrap();
            assert_eq!((p.losers, p.gainers), (vec![n], before.clone()));
            let back = Moved::split(total.to[&n].clone(), n, &before, shard);
            assert_eq!(back.keys, total.keys, "seed {seed}");
            for (to, kv) in &back.to {
                for k in kv.keys() {
                    assert_eq!(
                        shard_among(device_of(k).unwrap(), &before, shard),
                        Some(*to)
                    );
                }
            }
        }
        // The last slot removed: nowhere to go, nothing moves.
        assert_eq!(moved_to("r/d/m", 0, &[], shard), None);
    }
}
