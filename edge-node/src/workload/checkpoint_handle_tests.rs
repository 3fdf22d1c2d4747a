//! State checkpoints through the real workload host: an instance's kv
//! state reaches the spool as a fenced checkpoint, and a new allocation
//! handed that checkpoint on another edge starts from it.

use strata_protocol::monitoring::StateCheckpoint;
use strata_protocol::scheduling::{AllocId, EdgeAllocation};
use strata_protocol::workload::MonitorSpec;
use strata_protocol::SpoolEntry;

use super::handle_tests::{
    apply_allocations, open, readings, running, spec, status, test_cfg, wait, wait_spool, wat,
    COUNTER,
};
use super::*;
use crate::workload::sandbox::sha256_hex;

fn allocation(
    id: u128,
    token: u64,
    spec: MonitorSpec,
    checkpoint: Option<StateCheckpoint>,
) -> EdgeAllocation {
    EdgeAllocation {
        id: AllocId(id),
        fencing_token: token,
        slot: 0,
        spec,
        replace_after_ms: None,
        previous: None,
        checkpoint,
    }
}

async fn apply(host: &WorkloadHost, version: u64, a: EdgeAllocation, module: &[u8]) {
    let artifacts = vec![(sha256_hex(module), module.to_vec())];
    apply_allocations(host, version, vec![a], artifacts).await;
}

/// The counter monitor's batch count in a checkpoint's state.
fn count(c: &StateCheckpoint) -> u64 {
    let kv = super::driver::decode_kv(&c.state).unwrap();
    let mut b = [0u8; 8];
    b.copy_from_slice(&kv["n"]);
    u64::from_le_bytes(b)
}

fn checkpoints(e: &[SpoolEntry]) -> Vec<StateCheckpoint> {
    e.iter()
        .filter_map(|x| match x {
            SpoolEntry::Checkpoint(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

async fn batch(host: &WorkloadHost, name: &str) {
    let n = status(host, "acme", name).records_in + 1;
    host.route(&readings("acme", "dev-1", 1, None));
    wait(host, "a batch", |h| status(h, "acme", name).records_in >= n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_checkpointed_to_the_spool_and_a_replacement_starts_from_it() {
    let module = wat(COUNTER);
    let sp = spec("acme", "c", &module, &["dev-*"], "{}");
    let cfg = WorkloadConfig {
        checkpoint_interval_ms: 1,
        ..test_cfg()
    };

    // Edge A: two batches; the state (n = 2) reaches the spool, fenced.
    let dir_a = tempfile::tempdir().unwrap();
    let (spool_a, host_a) = open(dir_a.path(), cfg.clone()).await;
    apply(&host_a, 1, allocation(11, 4, sp.clone(), None), &module).await;
    wait(&host_a, "running on A", |h| running(h, "acme", "c")).await;
    batch(&host_a, "c").await;
    batch(&host_a, "c").await;
    let e = wait_spool(&spool_a, "a checkpoint with n = 2", |e| {
        checkpoints(e).iter().any(|c| count(c) == 2)
    })
    .await;
    let ckpt = checkpoints(&e).into_iter().find(|c| count(c) == 2).unwrap();
    assert_eq!(
        (ckpt.tenant.as_str(), ckpt.workload.as_str()),
        ("acme", "c")
    );
    assert_eq!(
        (ckpt.fence.allocation.clone(), ckpt.fence.token),
        (AllocId(11).to_string(), 4)
    );
    // A clean stop spools nothing new: the state did not change.
    host_a.shutdown().await;
    let (after, _) = super::handle_tests::entries_and_next(&spool_a);
    assert_eq!(
        checkpoints(&after).iter().filter(|c| count(c) == 2).count(),
        1
    );
    spool_a.close().await;

    // Edge B: the replacement, handed A's checkpoint, counts on from 2.
    let dir_b = tempfile::tempdir().unwrap();
    let (spool_b, host_b) = open(dir_b.path(), cfg.clone()).await;
    let mut repl = allocation(12, 9, sp.clone(), Some(ckpt.clone()));
    repl.previous = Some(AllocId(11));
    apply(&host_b, 1, repl, &module).await;
    wait(&host_b, "running on B", |h| running(h, "acme", "c")).await;
    batch(&host_b, "c").await;
    let e = wait_spool(&spool_b, "the third batch's metric", |e| {
        e.iter()
            .any(|x| x.as_metric().is_some_and(|m| m.value == 3.0))
    })
    .await;
    assert!(
        !e.iter()
            .any(|x| x.as_metric().is_some_and(|m| m.value == 1.0)),
        "started from the checkpoint, not empty: {e:#?}"
    );
    // Its own checkpoints carry its own fence.
    let e = wait_spool(&spool_b, "B's checkpoint", |e| {
        checkpoints(e).iter().any(|c| count(c) == 3)
    })
    .await;
    let mine = checkpoints(&e).into_iter().find(|c| count(c) == 3).unwrap();
    assert_eq!(mine.fence.token, 9);
    host_b.shutdown().await;
    spool_b.close().await;

    // B restarts with its own newer state (n = 3, token 9) and the same
    // allocation still carrying A's older checkpoint: local state wins.
    let (spool_b, host_b) = open(dir_b.path(), cfg).await;
    wait(&host_b, "running on B again", |h| running(h, "acme", "c")).await;
    batch(&host_b, "c").await;
    wait_spool(&spool_b, "the fourth batch's metric", |e| {
        e.iter()
            .any(|x| x.as_metric().is_some_and(|m| m.value == 4.0))
    })
    .await;
    host_b.shutdown().await;
    spool_b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_another_monitor_never_seeds_an_instance() {
    let module = wat(COUNTER);
    let sp = spec("acme", "c", &module, &["dev-*"], "{}");
    let mut kv = super::sandbox::KvState::new();
    kv.insert("n".into(), 41u64.to_le_bytes().to_vec());
    let foreign = StateCheckpoint {
        tenant: "acme".into(),
        workload: "other".into(),
        fence: strata_protocol::monitoring::FenceStamp {
            allocation: AllocId(3).to_string(),
            token: 2,
        },
        taken_ms: 1,
        state: super::driver::encode_kv(&kv),
    };
    let dir = tempfile::tempdir().unwrap();
    let (spool, host) = open(dir.path(), test_cfg()).await;
    apply(&host, 1, allocation(21, 5, sp, Some(foreign)), &module).await;
    wait(&host, "running", |h| running(h, "acme", "c")).await;
    batch(&host, "c").await;
    wait_spool(&spool, "the first batch's metric, counted from 0", |e| {
        e.iter()
            .any(|x| x.as_metric().is_some_and(|m| m.value == 1.0))
    })
    .await;
    host.shutdown().await;
    spool.close().await;
}
