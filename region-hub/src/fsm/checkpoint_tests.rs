//! Tests of state checkpoints in the state machine: stored per instance,
//! refused when stale, older or beyond the stamped bounds, handed to a
//! replacement (and to a per-edge instance following its devices), gone
//! with their workload, and kept across the state format change.

use std::collections::BTreeMap;

use strata_protocol::monitoring::{FenceStamp, StateCheckpoint};
use strata_protocol::{Metric, SpoolEntry, TelemetryRecord};
use strata_sched::{AllocId, AllocStop, NodeId, NodePlan, StopReason};

use super::sched_tests::{plan, put, region, run, spec, w, NOW};
use super::*;

const LIMITS: CheckpointLimits = CheckpointLimits {
    max_bytes: 8,
    max_region_bytes: 12,
};

fn ckpt(name: &str, alloc: AllocId, token: u64, taken_ms: i64, state: &[u8]) -> SpoolEntry {
    SpoolEntry::Checkpoint(StateCheckpoint {
        tenant: "acme".into(),
        workload: name.into(),
        fence: FenceStamp {
            allocation: alloc.to_string(),
            token,
        },
        taken_ms,
        state: state.to_vec(),
    })
}

/// A batch with checkpoints, as the leader proposes it (with its limits).
fn batch(edge: &str, seq: u64, entries: Vec<SpoolEntry>) -> Command {
    Command::StoreEntries {
        batch: TelemetryBatch {
            edge: edge.into(),
            epoch: 3,
            first_seq: seq,
            entries,
        },
        received_ms: NOW,
        limits: LIMITS,
    }
}

fn apply_plan(s: &mut RegionState, name: &str, seed: u64) {
    let c = plan(s, name, seed);
    run(s, &[Command::ApplyPlan(Box::new(c))]);
}

fn counts(a: &Applied) -> (u32, u32, CheckpointCounts) {
    match a.outcome {
        Outcome::Committed {
            stale_fences,
            edge_resends,
            checkpoints,
            ..
        } => (stale_fences, edge_resends, checkpoints),
        ref o => panic!("not committed: {o:?}"),
    }
}

#[test]
fn checkpoints_are_fenced_bounded_and_handed_to_the_replacement() {
    let mut s = region();
    run(&mut s, &[put(spec("zs", "count=1"))]);
    apply_plan(&mut s, "zs", 1);
    let a = s.sched().allocs_of(&w("zs")).next().unwrap().alloc.clone();
    let edge = a.node.0.clone();
    let other = if edge == "e1" { "e2" } else { "e1" };
    let t = a.fencing_token;

    // Stored; its own allocation is not handed its own checkpoint.
    let out = run(
        &mut s,
        &[batch(&edge, 0, vec![ckpt("zs", a.id, t, 10, b"abc")])],
    );
    let (stale, resends, c) = counts(&out[0]);
    assert_eq!((stale, resends, c.stored, c.refused()), (0, 0, 1, 0));
    assert_eq!(s.checkpoints().total_bytes(), 3);
    assert_eq!(s.edge_allocations(&edge)[0].checkpoint, None);

    // Older than the stored one (a reordered entry): stale. Too large,
    // naming no allocation, or another workload's allocation: refused.
    let out = run(
        &mut s,
        &[batch(
            &edge,
            1,
            vec![
                ckpt("zs", a.id, t, 9, b"old"),
                ckpt("zs", a.id, t, 11, b"123456789"),
                ckpt("zs", AllocId(77), 1, 11, b"x"),
                ckpt("other", a.id, t, 11, b"x"),
            ],
        )],
    );
    let (stale, resends, c) = counts(&out[0]);
    assert_eq!((stale, resends), (1, 0));
    assert_eq!(
        (c.stored, c.too_large, c.unknown, c.region_full),
        (0, 1, 2, 0)
    );
    assert_eq!(s.checkpoints().total_bytes(), 3);
    // A resent batch is a resend, not a second refusal.
    let out = run(
        &mut s,
        &[batch(&edge, 0, vec![ckpt("zs", a.id, t, 10, b"abc")])],
    );
    assert_eq!(counts(&out[0]), (0, 1, CheckpointCounts::default()));

    // Replace it on the other edge (as a plan after the edge was lost).
    let mut new = a.clone();
    new.id = AllocId(500);
    new.node = NodeId(other.to_owned());
    new.previous = Some(a.id);
    let mut nodes = BTreeMap::new();
    nodes.insert(
        a.node.clone(),
        NodePlan {
            stop: vec![AllocStop {
                alloc: a.id,
                reason: StopReason::Replaced { by: new.id },
            }],
            ..NodePlan::default()
        },
    );
    nodes.insert(
        new.node.clone(),
        NodePlan {
            place: vec![new],
            ..NodePlan::default()
        },
    );
    run(
        &mut s,
        &[Command::ApplyPlan(Box::new(PlanCommit {
            eval: strata_sched::EvalId(2),
            trigger: "node-down".into(),
            workload: w("zs"),
            generation: Some(1),
            nodes,
            refused: Vec::new(),
            failure: None,
            now_ms: NOW,
        }))],
    );
    let placed = s.edge_allocations(other);
    assert_eq!(placed.len(), 1, "{placed:?}");
    let handed = placed[0].checkpoint.clone().expect("the last checkpoint");
    assert_eq!(
        (handed.state.as_slice(), handed.fence.token, handed.taken_ms),
        (&b"abc"[..], t, 10)
    );
    let t2 = placed[0].fencing_token;
    assert!(t2 > t);

    // The cut-off original's late checkpoint is stale; the replacement's
    // is stored and no longer handed to it.
    let out = run(
        &mut s,
        &[
            batch(&edge, 10, vec![ckpt("zs", a.id, t, 99, b"late")]),
            batch(other, 0, vec![ckpt("zs", placed[0].id, t2, 1, b"abcd")]),
        ],
    );
    assert_eq!(counts(&out[0]).0, 1);
    assert_eq!(counts(&out[1]).2.stored, 1);
    assert_eq!(s.checkpoints().total_bytes(), 4);
    assert_eq!(s.edge_allocations(other)[0].checkpoint, None);

    // The region's bound: another workload's 9 bytes do not fit next to 4.
    run(&mut s, &[put(spec("zz", "count=1"))]);
    apply_plan(&mut s, "zz", 3);
    let z = s.sched().allocs_of(&w("zz")).next().unwrap().alloc.clone();
    let big = CheckpointLimits {
        max_bytes: 9,
        ..LIMITS
    };
    let out = run(
        &mut s,
        &[Command::StoreEntries {
            batch: TelemetryBatch {
                edge: z.node.0.clone(),
                epoch: 9,
                first_seq: 0,
                entries: vec![ckpt("zz", z.id, z.fencing_token, 1, b"123456789")],
            },
            received_ms: NOW,
            limits: big,
        }],
    );
    assert_eq!(counts(&out[0]).2.region_full, 1);
    assert_eq!(s.checkpoints().len(), 1);

    // A deleted workload's checkpoints go with it.
    run(
        &mut s,
        &[Command::DeleteWorkload {
            tenant: "acme".into(),
            name: "zs".into(),
            now_ms: NOW,
        }],
    );
    assert!(s.checkpoints().is_empty());
    assert_eq!(s.checkpoints().total_bytes(), 0);
}

#[test]
fn a_per_edge_instance_following_its_devices_starts_from_their_old_edge() {
    let mut s = region();
    let mut sp = spec("pe", "per-edge=true");
    sp.selector.device_globs = vec!["d1".into()];
    run(&mut s, &[put(sp)]);
    apply_plan(&mut s, "pe", 1);
    let on_e1 = s.edge_allocations("e1");
    assert_eq!((on_e1.len(), s.edge_allocations("e2").len()), (1, 0));
    let a = &on_e1[0];
    run(
        &mut s,
        &[batch(
            "e1",
            0,
            vec![ckpt("pe", a.id, a.fencing_token, 5, b"e1")],
        )],
    );
    assert_eq!(
        s.checkpoints()
            .get(&w("pe"), &CheckpointKey::Edge("e1".into()))
            .map(|c| c.state.clone()),
        Some(b"e1".to_vec())
    );

    // d1 now reports through e2: the new carrier's instance follows it.
    run(
        &mut s,
        &[Command::StoreBatch {
            batch: TelemetryBatch {
                edge: "e2".into(),
                epoch: 1,
                first_seq: 1,
                entries: vec![SpoolEntry::Telemetry(TelemetryRecord {
                    tenant: "acme".into(),
                    device: "d1".into(),
                    ts_ms: 2,
                    seq: None,
                    metrics: vec![Metric {
                        name: "t".into(),
                        value: 1.0,
                    }],
                    tags: vec![],
                })],
            },
            received_ms: NOW,
        }],
    );
    apply_plan(&mut s, "pe", 2);
    let on_e2 = s.edge_allocations("e2");
    assert_eq!(on_e2.len(), 1, "{on_e2:?}");
    assert_eq!(on_e2[0].previous, Some(a.id));
    assert_eq!(
        on_e2[0].checkpoint.as_ref().map(|c| c.state.clone()),
        Some(b"e1".to_vec())
    );

    // e1's checkpoint is an orphan now (nothing runs there): when the
    // region is full, it makes room for e2's, which runs.
    let big = CheckpointLimits {
        max_bytes: 11,
        ..LIMITS
    };
    let out = run(
        &mut s,
        &[Command::StoreEntries {
            batch: TelemetryBatch {
                edge: "e2".into(),
                epoch: 4,
                first_seq: 0,
                entries: vec![ckpt(
                    "pe",
                    on_e2[0].id,
                    on_e2[0].fencing_token,
                    9,
                    b"eleven-byte",
                )],
            },
            received_ms: NOW,
            limits: big,
        }],
    );
    let c = counts(&out[0]).2;
    assert_eq!((c.stored, c.evicted, c.region_full), (1, 1, 0));
    assert_eq!(s.checkpoints().total_bytes(), 11);
    assert_eq!(
        s.checkpoints()
            .get(&w("pe"), &CheckpointKey::Edge("e1".into())),
        None
    );
    // A checkpoint something runs under is never evicted: 2 bytes of a
    // second workload do not fit next to those 11.
    let mut sp = spec("pz", "count=1");
    sp.selector.device_globs = vec!["d2".into()];
    run(&mut s, &[put(sp)]);
    apply_plan(&mut s, "pz", 5);
    let z = s.sched().allocs_of(&w("pz")).next().unwrap().alloc.clone();
    let out = run(
        &mut s,
        &[Command::StoreEntries {
            batch: TelemetryBatch {
                edge: z.node.0.clone(),
                epoch: 5,
                first_seq: 0,
                entries: vec![ckpt("pz", z.id, z.fencing_token, 1, b"xy")],
            },
            received_ms: NOW,
            limits: big,
        }],
    );
    let c = counts(&out[0]).2;
    assert_eq!((c.stored, c.evicted, c.region_full), (0, 0, 1));
}

#[test]
fn state_format_6_keeps_checkpoints_and_format_5_still_decodes() {
    let mut s = region();
    run(&mut s, &[put(spec("zs", "count=1"))]);
    apply_plan(&mut s, "zs", 1);
    // Format 5 is format 6 without the trailing (here empty) checkpoints:
    // an empty map and a zero total, one byte each.
    let bytes = s.encode();
    assert_eq!(bytes[0], 6);
    let mut v5 = vec![5u8];
    v5.extend_from_slice(&bytes[1..bytes.len() - 2]);
    assert_eq!(RegionState::decode(&v5).unwrap(), s);

    let a = s.sched().allocs_of(&w("zs")).next().unwrap().alloc.clone();
    run(
        &mut s,
        &[batch(
            &a.node.0,
            0,
            vec![ckpt("zs", a.id, a.fencing_token, 1, b"kv")],
        )],
    );
    let back = RegionState::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.checkpoints().total_bytes(), 2);
}

#[test]
fn a_batch_with_checkpoints_is_its_own_entry_kind_with_the_limits() {
    let cmd = batch("e1", 0, vec![]);
    let bytes = encode_command(&cmd);
    let env: CommandEnvelope = bincode::decode_from_slice(&bytes, bincode::config::standard())
        .unwrap()
        .0;
    assert_eq!(
        (env.kind, env.ignorable),
        (KIND_STORE_ENTRIES_LIMITED, false)
    );
    assert_eq!(decode_command(&bytes).unwrap(), Decoded::Command(cmd));
}
