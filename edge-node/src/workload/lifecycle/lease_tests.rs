//! Command-list tests of leases and fencing on the edge: renewal in time,
//! expiry stopping only `replace-after` instances, a late renewal not
//! resurrecting, a new desired set granting again, `keep` instances
//! untouched while offline, and a reboot that waits for the region.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::test_harness::{core, drain_at, phase, start, started, want};
use super::*;
use crate::workload::command::{Command, Event, StopReason};
use crate::workload::model::{DesiredSet, DisconnectPolicy};

const LEASE: u64 = 10_000;

/// A `replace-after` instance with a 10 s lease.
fn leased(name: &str) -> DesiredInstance {
    DesiredInstance {
        disconnect: DisconnectPolicy::ReplaceAfter { lease_ms: LEASE },
        ..want(name, 50, 16, 100)
    }
}

/// A set fetched from the region by a request sent at `sent_at`.
fn granted(instances: &[DesiredInstance], sent_at: u64) -> DesiredSet {
    DesiredSet {
        instances: instances.to_vec(),
        granted_at_ms: Some(sent_at),
    }
}

fn stop_expired(r: &DesiredInstance, expired_at_ms: u64) -> Command {
    Command::Stop {
        key: r.key.clone(),
        reason: StopReason::LeaseExpired {
            fence: r.fence.clone(),
            expired_at_ms,
            lease_ms: LEASE,
        },
    }
}

fn report_expired(r: &DesiredInstance, expired_at_ms: u64) -> Command {
    Command::Report {
        key: r.key.clone(),
        generation: r.generation,
        event: Event::LeaseExpired {
            fence: r.fence.clone(),
            expired_at_ms,
            lease_ms: LEASE,
        },
    }
}

/// `keep` and `replace-after` running side by side, granted at t=0.
fn both() -> (Lifecycle, DesiredInstance, DesiredInstance) {
    let (k, l) = (want("keep", 50, 16, 100), leased("leased"));
    let mut s = core();
    s.handle_desired(granted(&[k.clone(), l.clone()], 0), 0);
    let cmds = drain_at(&mut s, 0);
    assert_eq!(cmds, vec![start(&k, 0), start(&l, 0)]);
    started(&mut s, &cmds, 5);
    (s, k, l)
}

#[test]
fn renewals_in_time_keep_a_replace_after_instance_running() {
    let (mut s, _, l) = both();
    assert_eq!(
        s.instance(&l.key).unwrap().lease,
        Lease::Held {
            expires_at_ms: LEASE,
            lease_ms: LEASE
        }
    );
    assert_eq!(s.poll_timeout(), Some(LEASE));
    // Heartbeats every 3 s, each acknowledged 1 s after it was sent: the
    // lease is counted from the send, not from the acknowledgement.
    for sent in (3_000..=60_000).step_by(3_000) {
        s.handle_lease_renewed(sent, sent + 1_000);
        assert_eq!(s.poll_timeout(), Some(sent + LEASE));
        s.handle_timeout(sent + 1_000);
        assert_eq!(drain_at(&mut s, sent + 1_000), vec![]);
    }
    assert_eq!(phase(&s, "leased"), Phase::Running);
}

#[test]
fn expiry_stops_only_replace_after_instances_and_reports_it() {
    let (mut s, _, l) = both();
    s.handle_lease_renewed(4_000, 4_100);
    // Cut off from the region: nothing renews. Just before the end, nothing.
    s.handle_timeout(4_000 + LEASE - 1);
    assert_eq!(drain_at(&mut s, 4_000 + LEASE - 1), vec![]);
    let t = 4_000 + LEASE;
    assert_eq!(s.poll_timeout(), Some(t));
    s.handle_timeout(t);
    assert_eq!(
        drain_at(&mut s, t),
        vec![stop_expired(&l, t), report_expired(&l, t)]
    );
    assert!(matches!(
        phase(&s, "leased"),
        Phase::Stopping {
            reason: StopReason::LeaseExpired { .. }
        }
    ));
    assert_eq!(phase(&s, "keep"), Phase::Running, "keep is untouched");
    // Its budget is free at once: the Stop runs before any later Start.
    assert_eq!(s.reserved(), Budget::new(16, 100));
    s.handle_stopped(&l.key, l.generation);
    assert_eq!(
        phase(&s, "leased"),
        Phase::LeaseLost {
            fence: l.fence.clone(),
            expired_at_ms: t
        }
    );
    assert!(s.awaiting_grant(), "the host asks the region again");
    // An exit report of the stopped sandbox changes nothing.
    s.handle_exited(
        &l.key,
        1,
        ExitKind::Completed,
        t + 1,
        &mut ChaCha8Rng::seed_from_u64(7),
    );
    assert!(matches!(phase(&s, "leased"), Phase::LeaseLost { .. }));
}

#[test]
fn a_late_renewal_does_not_resurrect_but_a_new_desired_set_does() {
    let (mut s, k, l) = both();
    let t = LEASE;
    // The timer fired late: the acknowledgement of a heartbeat sent at
    // t-1000 arrives after the expiry. The expiry is applied first.
    s.handle_lease_renewed(t - 1_000, t + 500);
    assert_eq!(
        drain_at(&mut s, t + 500),
        vec![stop_expired(&l, t), report_expired(&l, t)]
    );
    s.handle_stopped(&l.key, 1);
    // More renewals, even fresh ones, do nothing for it.
    for sent in [t + 1_000, t + 2_000] {
        s.handle_lease_renewed(sent, sent);
        s.handle_timeout(sent);
        assert_eq!(drain_at(&mut s, sent), vec![]);
        assert!(matches!(phase(&s, "leased"), Phase::LeaseLost { .. }));
    }
    // A desired set read again without a grant does nothing either.
    s.handle_desired(
        DesiredSet {
            instances: vec![k.clone(), l.clone()],
            granted_at_ms: None,
        },
        t + 3_000,
    );
    assert_eq!(drain_at(&mut s, t + 3_000), vec![]);
    // The region lists it again: it starts afresh; the keep instance is
    // not restarted.
    s.handle_desired(granted(&[k.clone(), l.clone()], t + 4_000), t + 4_100);
    assert_eq!(drain_at(&mut s, t + 4_100), vec![start(&l, 0)]);
    assert_eq!(
        s.instance(&l.key).unwrap().lease,
        Lease::Held {
            expires_at_ms: t + 4_000 + LEASE,
            lease_ms: LEASE
        }
    );
    assert!(!s.awaiting_grant());
}

#[test]
fn keep_instances_run_on_offline_forever() {
    let k = want("keep", 50, 16, 100);
    let mut s = core();
    s.handle_desired(granted(std::slice::from_ref(&k), 0), 0);
    let cmds = drain_at(&mut s, 0);
    started(&mut s, &cmds, 0);
    assert_eq!(s.instance(&k.key).unwrap().lease, Lease::NotNeeded);
    assert_eq!(s.poll_timeout(), None, "no lease to watch");
    // A day with no region at all.
    for h in 1..=24u64 {
        s.handle_timeout(h * 3_600_000);
        assert_eq!(drain_at(&mut s, h * 3_600_000), vec![]);
    }
    assert_eq!(phase(&s, "keep"), Phase::Running);
    assert!(!s.awaiting_grant());
}

#[test]
fn after_a_reboot_replace_after_waits_for_the_region_keep_starts_at_once() {
    let (k, l) = (want("keep", 50, 16, 100), leased("leased"));
    let mut s = core();
    // The persisted set, read from disk: it grants nothing.
    s.handle_desired(
        DesiredSet {
            instances: vec![k.clone(), l.clone()],
            granted_at_ms: None,
        },
        0,
    );
    assert_eq!(drain_at(&mut s, 0), vec![start(&k, 0)]);
    assert_eq!(phase(&s, "leased"), Phase::WaitingForLease);
    assert_eq!(s.reserved(), Budget::new(16, 100), "waiting holds nothing");
    assert!(s.awaiting_grant());
    // A heartbeat acknowledgement renews held leases only; it grants none.
    s.handle_lease_renewed(100, 200);
    assert_eq!(drain_at(&mut s, 200), vec![]);
    // The region's set arrives (fetched by a request sent at 300).
    s.handle_desired(granted(&[k.clone(), l.clone()], 300), 400);
    assert_eq!(drain_at(&mut s, 400), vec![start(&l, 0)]);
    assert_eq!(s.poll_timeout(), Some(300 + LEASE));
}

#[test]
fn a_grant_older_than_the_lease_is_worth_nothing() {
    let l = leased("leased");
    let mut s = core();
    // Fetched by a request sent 11 s ago (a very slow answer).
    s.handle_desired(granted(std::slice::from_ref(&l), 1_000), 1_000 + LEASE + 1);
    assert_eq!(drain_at(&mut s, 1_000 + LEASE + 1), vec![]);
    assert_eq!(phase(&s, "leased"), Phase::WaitingForLease);
}

#[test]
fn an_expiry_while_waiting_or_in_backoff_reports_and_keeps_it_down() {
    let l = leased("flaky");
    let w = DesiredInstance {
        artifact_sha256: "cd".repeat(32),
        ..leased("waiting")
    };
    let mut s = core();
    s.handle_desired(granted(&[l.clone(), w.clone()], 0), 0);
    // `waiting`'s module never arrives: answer only l's.
    let mut cmds = Vec::new();
    while let Some(c) = s.poll_command() {
        match c {
            Command::FetchModule { sha256 } if sha256 == l.artifact_sha256 => {
                s.handle_module_fetched(&sha256)
            }
            Command::CompileModule { sha256 } => s.handle_module_ready(&sha256, 0),
            other => cmds.push(other),
        }
    }
    assert_eq!(
        cmds,
        vec![
            Command::FetchModule {
                sha256: w.artifact_sha256.clone()
            },
            start(&l, 0)
        ]
    );
    s.handle_started(&l.key, 1, 0);
    s.handle_exited(
        &l.key,
        1,
        ExitKind::Trap("x".into()),
        LEASE - 10,
        &mut ChaCha8Rng::seed_from_u64(7),
    );
    assert!(matches!(phase(&s, "flaky"), Phase::Backoff { .. }));
    s.handle_timeout(LEASE);
    assert_eq!(
        drain_at(&mut s, LEASE),
        vec![report_expired(&l, LEASE), report_expired(&w, LEASE)],
        "no sandbox, so no Stop; both are reported"
    );
    assert!(matches!(phase(&s, "flaky"), Phase::LeaseLost { .. }));
    assert!(matches!(phase(&s, "waiting"), Phase::LeaseLost { .. }));
    assert_eq!(
        s.reserved(),
        Budget::default(),
        "the backoff's budget is free"
    );
    // The backoff's restart time passes: still nothing.
    s.handle_timeout(LEASE + 60_000);
    assert_eq!(drain_at(&mut s, LEASE + 60_000), vec![]);
    // The module arriving does not start it either.
    s.handle_module_fetched(&w.artifact_sha256);
    assert_eq!(drain_at(&mut s, LEASE + 60_001), vec![]);
}
