//! Command-list tests of the module table: one fetch and one compile per
//! module however many instances use it, instances waiting (holding no
//! capacity) for a missing module and retried by the next desired set, an
//! invalid module stopping its instances, unused modules dropped, and the
//! periodic state checkpoint.

use super::test_harness::{core, drain, key, phase, raw, set, start, started, want};
use super::*;
use crate::workload::command::{Command, Event, ModuleFailure, StopReason};

fn fetch(sha: &str) -> Command {
    Command::FetchModule {
        sha256: sha.to_owned(),
    }
}

fn compile(sha: &str) -> Command {
    Command::CompileModule {
        sha256: sha.to_owned(),
    }
}

#[test]
fn one_fetch_and_one_compile_per_module_then_starts_by_priority() {
    let (a, b) = (want("a", 10, 16, 100), want("b", 90, 16, 100));
    let sha = a.artifact_sha256.clone();
    let mut s = core();
    s.handle_desired(set(&[a.clone(), b.clone()]), 0);
    assert_eq!(raw(&mut s), vec![fetch(&sha)]);
    assert_eq!(phase(&s, "a"), Phase::WaitingForModule);
    assert_eq!(s.reserved(), Budget::default(), "waiting holds no capacity");
    s.handle_module_fetched(&sha);
    assert_eq!(raw(&mut s), vec![compile(&sha)]);
    assert_eq!(s.module(&sha), Some(&ModuleState::Compiling));
    s.handle_module_ready(&sha, 7);
    assert_eq!(raw(&mut s), vec![start(&b, 0), start(&a, 0)]);
    assert_eq!(s.instance(&key("a")).unwrap().admitted_at_ms, Some(7));
    // Answers for a module in another state are ignored.
    s.handle_module_ready(&sha, 8);
    s.handle_module_fetched(&sha);
    assert_eq!(raw(&mut s), vec![]);
}

#[test]
fn a_missing_module_waits_without_crash_looping_and_the_next_set_retries() {
    let a = want("a", 50, 16, 100);
    let sha = a.artifact_sha256.clone();
    let mut s = core();
    s.handle_desired(set(std::slice::from_ref(&a)), 0);
    assert_eq!(raw(&mut s), vec![fetch(&sha)]);
    s.handle_module_failed(
        &sha,
        ModuleFailure::Missing {
            reason: "corrupt: content hashes to 00…".into(),
        },
        1,
    );
    assert_eq!(raw(&mut s), vec![]);
    assert_eq!(phase(&s, "a"), Phase::WaitingForModule);
    assert_eq!(s.missing_modules(), vec![sha.clone()]);
    let r = s.instance(&key("a")).unwrap();
    assert!(
        matches!(&r.module.1, ModuleState::Missing { reason } if reason.starts_with("corrupt")),
        "{r:?}"
    );
    // Time passing does not turn waiting into failures.
    s.handle_timeout(600_000);
    assert_eq!(raw(&mut s), vec![]);
    assert_eq!(s.instance(&key("a")).unwrap().restarts, 0);
    // The region delivers it with the next set: fetched again, then runs.
    s.handle_desired(set(std::slice::from_ref(&a)), 600_001);
    assert_eq!(raw(&mut s), vec![fetch(&sha)]);
    assert!(s.missing_modules().is_empty());
    s.handle_module_fetched(&sha);
    s.handle_module_ready(&sha, 600_002);
    assert_eq!(raw(&mut s), vec![compile(&sha), start(&a, 0)]);
}

#[test]
fn an_invalid_module_stops_its_instances_until_the_spec_changes() {
    let (a, b) = (want("a", 50, 16, 100), want("b", 50, 16, 100));
    let sha = a.artifact_sha256.clone();
    let mut s = core();
    s.handle_desired(set(&[a.clone(), b.clone()]), 0);
    raw(&mut s);
    s.handle_module_fetched(&sha);
    raw(&mut s);
    let reason = "does not validate: unknown opcode".to_owned();
    s.handle_module_failed(
        &sha,
        ModuleFailure::Invalid {
            reason: reason.clone(),
        },
        1,
    );
    let report = |k: &str| Command::Report {
        key: key(k),
        generation: 1,
        event: Event::ModuleInvalid {
            sha256: sha.clone(),
            reason: reason.clone(),
        },
    };
    assert_eq!(raw(&mut s), vec![report("a"), report("b")]);
    assert_eq!(
        phase(&s, "a"),
        Phase::Stopped {
            reason: format!("module {sha} is invalid: {reason}")
        }
    );
    // The same set again changes nothing; a fixed module runs.
    s.handle_desired(set(&[a.clone(), b.clone()]), 2);
    assert_eq!(raw(&mut s), vec![]);
    let fixed = DesiredInstance {
        generation: 2,
        artifact_sha256: "cd".repeat(32),
        ..a.clone()
    };
    s.handle_desired(set(&[fixed.clone(), b.clone()]), 3);
    assert_eq!(drain(&mut s), vec![start(&fixed, 0)]);
}

#[test]
fn a_new_module_stops_the_old_generation_and_drops_the_old_module() {
    let a = want("a", 50, 16, 100);
    let mut s = core();
    s.handle_desired(set(std::slice::from_ref(&a)), 0);
    let cmds = drain(&mut s);
    started(&mut s, &cmds, 0);
    let next = DesiredInstance {
        generation: 2,
        artifact_sha256: "cd".repeat(32),
        ..a.clone()
    };
    s.handle_desired(set(std::slice::from_ref(&next)), 10);
    assert_eq!(
        raw(&mut s),
        vec![
            Command::Stop {
                key: key("a"),
                reason: StopReason::Replaced {
                    old_generation: 1,
                    new_generation: 2
                }
            },
            Command::DropModule {
                sha256: a.artifact_sha256.clone()
            },
            fetch(&next.artifact_sha256),
        ]
    );
    assert_eq!(phase(&s, "a"), Phase::WaitingForModule);
    assert_eq!(s.reserved(), Budget::default());
    s.handle_module_fetched(&next.artifact_sha256);
    s.handle_module_ready(&next.artifact_sha256, 11);
    assert_eq!(
        raw(&mut s),
        vec![compile(&next.artifact_sha256), start(&next, 0)]
    );
}

#[test]
fn running_instances_are_checkpointed_every_period() {
    let (a, b) = (want("a", 50, 16, 100), want("b", 50, 16, 100));
    let mut s = Lifecycle::new(
        super::test_harness::node(),
        LifecycleConfig::default(),
        5_000,
    );
    s.handle_desired(set(&[a.clone(), b.clone()]), 0);
    let cmds = drain(&mut s);
    // Only `a` reports running.
    started(&mut s, &cmds[..1], 0);
    assert_eq!(s.poll_timeout(), Some(5_000));
    s.handle_timeout(4_999);
    assert_eq!(raw(&mut s), vec![]);
    s.handle_timeout(5_000);
    assert_eq!(raw(&mut s), vec![Command::PersistState { key: key("a") }]);
    assert_eq!(s.poll_timeout(), Some(10_000));
    // A late wake-up does not replay the missed periods.
    s.handle_timeout(31_000);
    assert_eq!(raw(&mut s), vec![Command::PersistState { key: key("a") }]);
    assert_eq!(s.poll_timeout(), Some(35_000));
}
