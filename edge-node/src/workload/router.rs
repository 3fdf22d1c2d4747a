//! Routing durable telemetry to the instances that selected it.
//!
//! The hot path is one hash lookup per record: the set of matching slots is
//! cached per (tenant, device, tags), looked up by `&str` without
//! allocating, and the whole cache is thrown away whenever the set of slots
//! changes (a new table replaces the old one). Records are grouped per slot
//! first and each slot's queue is locked once per batch.
//!
//! # Why something is shared here
//! Ingest routes each durable batch from its own task and must never wait
//! for the workload driver (which may be busy compiling or stopping an
//! instance). So the slot set is not asked for through a message: the
//! driver, its only writer, *publishes* an immutable [`Table`] whenever
//! instances come and go, and ingest reads the latest one from a
//! [`Snapshot`] cell. Each table carries its own match cache, so a new
//! table starts with an empty one.
//!
//! A sharded monitor's instances split its devices: of the instances of
//! one sharded monitor in the table (this edge's *local slots*, running or
//! starting), a record goes to exactly one, `shard_among(device, local
//! slots)` ([`super::handover`]). That is decided on a cache miss like the
//! selector match, so the hot path stays one lookup; the table changes, and
//! its cache with it, exactly when the local slots do.
//!
//! Tenant isolation is checked twice: a slot is only considered for records
//! of its instance's tenant (the table is indexed by tenant), and its
//! selector must match too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_protocol::{Tag, TelemetryRecord};
use strata_sched::scale::{shard_among, ShardKey};

use super::slot::{lock, Slot};
use super::snapshot::Snapshot;

/// Cached matches of one tenant: device → [(tags, slot indices)].
type DeviceCache = HashMap<String, Vec<(Vec<Tag>, Arc<[u32]>)>>;

#[derive(Default)]
struct Cache {
    tenants: HashMap<String, DeviceCache>,
    entries: usize,
}

/// An immutable set of slots plus its match cache.
#[derive(Default)]
struct Table {
    slots: Vec<Arc<Slot>>,
    /// Slot indices by the instance's tenant.
    by_tenant: HashMap<String, Vec<u32>>,
    /// Per slot index: for an instance of a sharded monitor, its shard key
    /// and the region slots of every instance of that monitor in this
    /// table.
    shards: Vec<Option<(ShardKey, Arc<[u32]>)>>,
    cache: Mutex<Cache>,
}

impl Table {
    fn new(slots: Vec<Arc<Slot>>) -> Self {
        let mut by_tenant: HashMap<String, Vec<u32>> = HashMap::new();
        let mut local: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            by_tenant
                .entry(s.key.tenant.clone())
                .or_default()
                .push(i as u32);
            if let (Some(_), Some(slot)) = (s.shard, s.key.shard) {
                local
                    .entry((s.key.tenant.as_str(), s.key.name.as_str()))
                    .or_default()
                    .push(slot);
            }
        }
        let local: HashMap<(&str, &str), Arc<[u32]>> =
            local.into_iter().map(|(k, v)| (k, v.into())).collect();
        let shards = slots
            .iter()
            .map(|s| match (s.shard, s.key.shard) {
                (Some(key), Some(_)) => local
                    .get(&(s.key.tenant.as_str(), s.key.name.as_str()))
                    .map(|l| (key, l.clone())),
                _ => None,
            })
            .collect();
        Table {
            slots,
            by_tenant,
            shards,
            cache: Mutex::default(),
        }
    }

    fn compute(&self, candidates: &[u32], r: &TelemetryRecord) -> Arc<[u32]> {
        candidates
            .iter()
            .copied()
            .filter(|&i| {
                let s = &self.slots[i as usize];
                s.key.tenant == r.tenant
                    && s.selector.matches(&r.tenant, &r.device, &r.tags)
                    && match &self.shards[i as usize] {
                        Some((key, local)) => shard_among(&r.device, local, *key) == s.key.shard,
                        None => true,
                    }
            })
            .collect()
    }
}

/// A table replaced by a newer one, kept to learn when no ingest task
/// routes with it any more.
pub(crate) struct Retired(Arc<Table>);

impl Retired {
    /// Whether an ingest task may still queue records with it.
    pub fn in_use(&self) -> bool {
        // Ingest holds the table only between `plan` and `deliver` (the
        // `Plan` keeps it); ours is the one other reference.
        Arc::strong_count(&self.0) > 1
    }
}

/// What one [`Router::route`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Deliveries queued (a record matching two instances counts twice).
    pub queued: u64,
    /// Deliveries dropped because a queue was full.
    pub dropped: u64,
}

/// What [`Router::plan`] decided: per slot of `table`, the indices of the
/// records it selected.
pub(crate) struct Plan {
    table: Arc<Table>,
    picks: Vec<Vec<u32>>,
}

impl Plan {
    /// Whether no slot selected anything.
    pub fn is_empty(&self) -> bool {
        self.picks.iter().all(Vec::is_empty)
    }
}

/// The routing table, swapped as a whole when instances come and go: one
/// writer (the workload driver) publishes, ingest reads.
pub(crate) struct Router {
    table: Snapshot<Table>,
    cache_limit: usize,
}

impl Router {
    pub fn new(cache_limit: usize) -> Self {
        Router {
            table: Snapshot::new(Table::default()),
            cache_limit: cache_limit.max(1),
        }
    }

    /// The latest published table.
    fn current(&self) -> Arc<Table> {
        self.table.load()
    }

    /// Publishes a new slot set (and so drops the match cache). Called by
    /// the workload driver only.
    pub fn publish(&self, slots: Vec<Arc<Slot>>) {
        self.table.publish(Table::new(slots));
    }

    /// [`Router::publish`], returning the table it replaced so the caller
    /// can wait until no record is still being routed with it.
    pub fn replace(&self, slots: Vec<Arc<Slot>>) -> Retired {
        Retired(self.table.replace(Table::new(slots)))
    }

    /// Cached match sets.
    #[cfg(test)]
    pub fn cache_entries(&self) -> usize {
        lock(&self.current().cache).entries
    }

    /// Queues each record on every slot that selects it. Never blocks on a
    /// callback and never awaits: full queues drop and count. Slots that
    /// need a worker are passed to `wake`.
    ///
    /// `share(i)` turns record `i` into the `Arc` the queues hold; it is
    /// called at most once per record, and only for records some slot
    /// selected, so a record watched by N instances is shared, not copied
    /// N times, and an unwatched one costs nothing.
    pub fn route(
        &self,
        records: &[TelemetryRecord],
        share: &mut dyn FnMut(usize) -> Arc<TelemetryRecord>,
        wake: &mut dyn FnMut(Arc<Slot>),
    ) -> RouteStats {
        let plan = self.plan(records);
        self.deliver(&plan, records.len(), share, wake)
    }

    /// Second half of [`Router::route`], for callers that must release their
    /// borrow of the records between matching and queueing (to move them).
    pub fn deliver(
        &self,
        plan: &Plan,
        len: usize,
        share: &mut dyn FnMut(usize) -> Arc<TelemetryRecord>,
        wake: &mut dyn FnMut(Arc<Slot>),
    ) -> RouteStats {
        let mut stats = RouteStats::default();
        let mut shared: Vec<Option<Arc<TelemetryRecord>>> = vec![None; len];
        let mut get = |i: u32| {
            shared[i as usize]
                .get_or_insert_with(|| share(i as usize))
                .clone()
        };
        for (si, p) in plan.picks.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            let slot = &plan.table.slots[si];
            let e = slot.enqueue(p, &mut get);
            stats.queued += e.accepted as u64;
            stats.dropped += e.dropped as u64;
            if e.wake {
                wake(slot.clone());
            }
        }
        stats
    }

    /// Which records each slot selects (indices per slot), so each queue is
    /// then locked once per batch.
    pub fn plan(&self, records: &[TelemetryRecord]) -> Plan {
        let table = self.current();
        if table.slots.is_empty() || records.is_empty() {
            return Plan {
                table,
                picks: Vec::new(),
            };
        }
        // Record indices per slot, so each queue is locked once.
        let mut picks: Vec<Vec<u32>> = vec![Vec::new(); table.slots.len()];
        {
            let mut cache = lock(&table.cache);
            for (ri, r) in records.iter().enumerate() {
                let Some(candidates) = table.by_tenant.get(r.tenant.as_str()) else {
                    continue;
                };
                let hit = cache
                    .tenants
                    .get(r.tenant.as_str())
                    .and_then(|d| d.get(r.device.as_str()))
                    .and_then(|v| v.iter().find(|(tags, _)| *tags == r.tags))
                    .map(|(_, m)| m.clone());
                let matched = match hit {
                    Some(m) => m,
                    None => {
                        let m = table.compute(candidates, r);
                        if cache.entries >= self.cache_limit {
                            cache.tenants.clear();
                            cache.entries = 0;
                        }
                        cache
                            .tenants
                            .entry(r.tenant.clone())
                            .or_default()
                            .entry(r.device.clone())
                            .or_default()
                            .push((r.tags.clone(), m.clone()));
                        cache.entries += 1;
                        m
                    }
                };
                for &si in matched.iter() {
                    picks[si as usize].push(ri as u32);
                }
            }
        }
        Plan { table, picks }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// Routes with a copying `share`, as `WorkloadHost::route` does.
    fn route(r: &Router, recs: &[TelemetryRecord], wake: &mut dyn FnMut(Arc<Slot>)) -> RouteStats {
        r.route(recs, &mut |i| Arc::new(recs[i].clone()), wake)
    }
    use crate::workload::model::{Fence, InstanceKey};
    use crate::workload::slot::InstanceStats;
    use prometheus_client::metrics::counter::Counter;
    use rand::{Rng, SeedableRng};
    use strata_protocol::workload::DeviceSelector;
    use strata_protocol::Metric;

    fn slot(tenant: &str, name: &str, sel_tenant: &str, globs: &[&str], cap: usize) -> Arc<Slot> {
        Arc::new(Slot::new(
            InstanceKey::new(tenant, name),
            1,
            DeviceSelector {
                tenant: sel_tenant.into(),
                device_globs: globs.iter().map(|g| g.to_string()).collect(),
                tags: Default::default(),
            },
            Fence {
                allocation: format!("{tenant}/{name}"),
                token: 1,
            },
            cap,
            Arc::new(InstanceStats::default()),
            Counter::default(),
        ))
    }

    fn rec(tenant: &str, device: &str, tags: &[(&str, &str)]) -> TelemetryRecord {
        TelemetryRecord {
            tenant: tenant.into(),
            device: device.into(),
            ts_ms: 1,
            seq: None,
            metrics: vec![Metric {
                name: "t".into(),
                value: 1.0,
            }],
            tags: tags
                .iter()
                .map(|(k, v)| Tag {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    fn drain(s: &Slot) -> Vec<(String, String)> {
        s.take_batch(usize::MAX)
            .into_iter()
            .map(|r| (r.tenant.clone(), r.device.clone()))
            .collect()
    }

    #[test]
    fn an_instance_sees_only_its_own_tenant() {
        let r = Router::new(100);
        let a = slot("a", "m", "a", &["*"], 100);
        // A selector claiming another tenant (the hub should refuse it)
        // still gets nothing of that tenant: the instance's tenant rules.
        let sneaky = slot("a", "sneaky", "b", &["*"], 100);
        let b = slot("b", "m", "b", &["dev-*"], 100);
        r.publish(vec![a.clone(), sneaky.clone(), b.clone()]);
        let recs = vec![
            rec("a", "dev-1", &[]),
            rec("b", "dev-1", &[]),
            rec("b", "other", &[]),
            rec("c", "dev-1", &[]),
        ];
        let stats = route(&r, &recs, &mut |_| {});
        assert_eq!(
            stats,
            RouteStats {
                queued: 2,
                dropped: 0
            }
        );
        assert_eq!(drain(&a), vec![("a".into(), "dev-1".into())]);
        assert_eq!(drain(&b), vec![("b".into(), "dev-1".into())]);
        assert!(drain(&sneaky).is_empty());
    }

    #[test]
    fn tags_are_part_of_the_match_and_of_the_cache_key() {
        let r = Router::new(100);
        let mut sel = slot("a", "m", "a", &[], 100);
        Arc::get_mut(&mut sel)
            .unwrap()
            .selector
            .tags
            .insert("site".into(), "p1".into());
        r.publish(vec![sel.clone()]);
        let recs = vec![
            rec("a", "d", &[("site", "p1")]),
            rec("a", "d", &[("site", "p2")]),
            rec("a", "d", &[("site", "p1"), ("x", "y")]),
            rec("a", "d", &[("site", "p1")]),
        ];
        assert_eq!(route(&r, &recs, &mut |_| {}).queued, 3);
        assert_eq!(r.cache_entries(), 3);
    }

    /// Random batches against a random capacity: the queue holds exactly
    /// `min(capacity, offered)` and every other delivery is counted dropped.
    #[test]
    fn overflow_is_counted_exactly() {
        let seed: u64 = rand::random();
        eprintln!("overflow_is_counted_exactly seed = {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let cap = rng.gen_range(1..50);
        let r = Router::new(100);
        let s = slot("a", "m", "a", &["dev-?"], cap);
        let other = slot("a", "all", "a", &["*"], 1_000_000);
        r.publish(vec![s.clone(), other.clone()]);
        let mut offered = 0u64;
        let mut queued = 0u64;
        let mut dropped = 0u64;
        let mut taken = 0u64;
        for _ in 0..rng.gen_range(1..40) {
            let n = rng.gen_range(0..30);
            let recs: Vec<_> = (0..n)
                .map(|i| {
                    let dev = if rng.gen_bool(0.7) {
                        format!("dev-{}", i % 10)
                    } else {
                        format!("x-{i}")
                    };
                    rec("a", &dev, &[])
                })
                .collect();
            offered += recs.iter().filter(|r| r.device.len() == 5).count() as u64;
            let st = route(&r, &recs, &mut |_| {});
            queued += st.queued;
            dropped += st.dropped;
            if rng.gen_bool(0.3) {
                taken += s.take_batch(rng.gen_range(0..cap + 1)).len() as u64;
            }
        }
        let all = other.queued() as u64;
        let mine_queued = queued - all;
        assert_eq!(mine_queued, taken + s.queued() as u64, "seed {seed}");
        assert_eq!(mine_queued + dropped, offered, "seed {seed}");
        assert_eq!(
            s.stats.records_dropped.load(Ordering::Relaxed),
            dropped,
            "seed {seed}"
        );
        assert_eq!(s.dropped_counter.get(), dropped, "seed {seed}");
        assert!(s.queued() <= cap, "seed {seed}");
    }

    #[test]
    fn reassignment_invalidates_the_cache() {
        let r = Router::new(100);
        let old = slot("a", "m", "a", &["dev-1"], 100);
        r.publish(vec![old.clone()]);
        let recs = vec![rec("a", "dev-1", &[]), rec("a", "dev-2", &[])];
        assert_eq!(route(&r, &recs, &mut |_| {}).queued, 1);
        assert_eq!(r.cache_entries(), 2);
        // Generation 2 of the monitor selects dev-2 only.
        let new = slot("a", "m", "a", &["dev-2"], 100);
        r.publish(vec![new.clone()]);
        assert_eq!(r.cache_entries(), 0);
        assert_eq!(route(&r, &recs, &mut |_| {}).queued, 1);
        assert_eq!(drain(&new), vec![("a".into(), "dev-2".into())]);
        assert_eq!(drain(&old), vec![("a".into(), "dev-1".into())]);
        r.publish(Vec::new());
        assert_eq!(route(&r, &recs, &mut |_| {}), RouteStats::default());
    }

    #[test]
    fn cache_is_bounded() {
        let r = Router::new(4);
        r.publish(vec![slot("a", "m", "a", &["*"], 1000)]);
        let recs: Vec<_> = (0..10).map(|i| rec("a", &format!("d{i}"), &[])).collect();
        assert_eq!(route(&r, &recs, &mut |_| {}).queued, 10);
        assert!(r.cache_entries() <= 4, "{}", r.cache_entries());
    }

    #[test]
    fn wakes_a_runnable_slot_once() {
        let r = Router::new(10);
        let s = slot("a", "m", "a", &["*"], 10);
        r.publish(vec![s.clone()]);
        let mut woken = 0;
        route(&r, &[rec("a", "d", &[])], &mut |_| woken += 1);
        assert_eq!(woken, 0, "no sandbox yet: nothing to wake");
        assert!(s.set_runnable(true), "queued records wake it once it runs");
        route(&r, &[rec("a", "d", &[])], &mut |_| woken += 1);
        assert_eq!(woken, 0, "already scheduled");
        assert!(s.finish_turn(), "records left: it stays on the run queue");
        assert_eq!(s.take_batch(10).len(), 2);
        assert!(!s.finish_turn(), "nothing left: it leaves the run queue");
        route(&r, &[rec("a", "d", &[])], &mut |_| woken += 1);
        assert_eq!(woken, 1, "idle and runnable: woken by new records");
    }

    #[test]
    fn a_record_two_instances_select_is_shared_not_copied() {
        let r = Router::new(100);
        let (a, b) = (
            slot("acme", "a", "acme", &["d*"], 10),
            slot("acme", "b", "acme", &["*"], 10),
        );
        r.publish(vec![a.clone(), b.clone()]);
        let recs = vec![
            rec("acme", "d1", &[]),
            rec("acme", "x", &[]),
            rec("other", "d1", &[]),
        ];
        let mut asked = Vec::new();
        let st = r.route(
            &recs,
            &mut |i| {
                asked.push(i);
                Arc::new(recs[i].clone())
            },
            &mut |_| {},
        );
        assert_eq!(st.queued, 3);
        // Only selected records are materialised, each once.
        assert_eq!(asked, vec![0, 1]);
        let (qa, qb) = (a.take_batch(10), b.take_batch(10));
        assert_eq!((qa.len(), qb.len()), (1, 2));
        assert!(Arc::ptr_eq(&qa[0], &qb[0]), "d1 is one shared record");
    }

    fn sharded(name: &str, slot: u32, key: ShardKey, cap: usize) -> Arc<Slot> {
        let s = Slot::new(
            InstanceKey::sharded("a", name, slot),
            1,
            DeviceSelector {
                tenant: "a".into(),
                device_globs: vec!["*".into()],
                tags: Default::default(),
            },
            Fence {
                allocation: format!("a/{name}#{slot}"),
                token: 1,
            },
            cap,
            Arc::new(InstanceStats::default()),
            Counter::default(),
        )
        .with_shard(Some(key), Counter::default());
        Arc::new(s)
    }

    /// Each record of a sharded monitor goes to exactly one of its local
    /// instances, the one `shard_among` names over the local slots (which
    /// need not be `0..n`); an unsharded monitor next to it still sees
    /// everything; a new table (a slot added) re-shards.
    #[test]
    fn a_sharded_monitor_gets_each_record_once_on_its_shard() {
        let seed: u64 = rand::random();
        eprintln!("a_sharded_monitor_gets_each_record_once_on_its_shard seed = {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let key = ShardKey(rng.gen());
        let r = Router::new(10_000);
        let (s1, s4) = (sharded("m", 1, key, 10_000), sharded("m", 4, key, 10_000));
        let other = sharded("n", 0, ShardKey(rng.gen()), 10_000);
        let all = slot("a", "plain", "a", &["*"], 10_000);
        r.publish(vec![s1.clone(), all.clone(), s4.clone(), other.clone()]);
        let recs: Vec<_> = (0..500)
            .map(|i| rec("a", &format!("dev-{}", rng.gen_range(0..200) + i % 3), &[]))
            .collect();
        for _ in 0..2 {
            // Twice: the second pass is served from the cache.
            let st = route(&r, &recs, &mut |_| {});
            assert_eq!(st.queued, 3 * recs.len() as u64, "seed {seed}");
            let (a, b) = (drain(&s1), drain(&s4));
            assert_eq!(a.len() + b.len(), recs.len(), "seed {seed}: each once");
            for (_, d) in &a {
                assert_eq!(shard_among(d, &[1, 4], key), Some(1), "seed {seed}: {d}");
            }
            for (_, d) in &b {
                assert_eq!(shard_among(d, &[1, 4], key), Some(4), "seed {seed}: {d}");
            }
            assert!(!a.is_empty() && !b.is_empty(), "seed {seed}: both get some");
            assert_eq!(drain(&other).len(), recs.len(), "alone: everything");
            assert_eq!(drain(&all).len(), recs.len());
        }
        // A third instance: the devices it takes and only those move.
        let s0 = sharded("m", 0, key, 10_000);
        r.publish(vec![s1.clone(), s4.clone(), s0.clone()]);
        route(&r, &recs, &mut |_| {});
        let (a, b, c) = (drain(&s1), drain(&s4), drain(&s0));
        assert_eq!(a.len() + b.len() + c.len(), recs.len(), "seed {seed}");
        for (_, d) in &c {
            assert_eq!(shard_among(d, &[0, 1, 4], key), Some(0), "seed {seed}");
        }
        for (_, d) in a.iter().chain(&b) {
            assert_ne!(shard_among(d, &[0, 1, 4], key), Some(0), "seed {seed}");
        }
    }
}
