//! State checkpoints to the region: which instance states go into the
//! spool (and so, exactly once, to the region) and when, and whether a new
//! instance starts from the checkpoint the region handed it.
//!
//! Pure, like the lifecycle core: events in ([`CheckpointPolicy`]'s
//! `handle_*`), commands out ([`CheckpointPolicy::poll_command`]); the
//! driver reads the clocks, encodes the state, and spools what it is told.
//!
//! # When a state is checkpointed
//! - When the driver persisted a *changed* state (at most every
//!   `monitors.state-flush-interval-ms`), and at most every
//!   `monitors.checkpoint-interval-ms` per instance: a change within the
//!   interval waits (the newest state replaces the waiting one) and goes
//!   when the interval has passed ([`CheckpointPolicy::handle_tick`]).
//! - On a clean stop (shutdown, replacement, removal), whatever the
//!   interval, if the state differs from the last one spooled. An instance
//!   stopped because its lease ran out is fenced off: nothing of it is
//!   spooled any more (the region would refuse it as stale).
//! - Never when the encoded state is above `monitors.checkpoint-max-bytes`:
//!   skipped and counted (`too-large`), never an error.
//! - A state equal to the last one spooled is not spooled again.
//!
//! # Seeding a new instance ([`seed_decision`])
//! The region hands a new allocation the last checkpoint it holds of
//! another allocation of the instance. The edge starts from it unless its
//! own state is at least as new: local state of the same allocation wins,
//! and otherwise the higher fencing token (tokens grow with every
//! allocation the region issues). Local state that carries no origin
//! (written before checkpoints existed) is kept unless it is empty.

use std::collections::{BTreeMap, VecDeque};

use strata_protocol::monitoring::StateCheckpoint;

use super::model::{Fence, InstanceKey};
use super::store::StateOrigin;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointCommand {
    /// Put this checkpoint into the spool.
    Spool {
        /// Which instance.
        key: InstanceKey,
        /// Its allocation and fencing token.
        fence: Fence,
        /// When the state was taken, ms since the Unix epoch.
        taken_ms: i64,
        /// The encoded state.
        state: Vec<u8>,
    },
    /// A state was not checkpointed; count it.
    Skip {
        /// Which instance.
        key: InstanceKey,
        /// Why.
        reason: SkipReason,
    },
}

/// Why a state was not checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The encoded state is larger than `checkpoint-max-bytes`.
    TooLarge {
        /// Its size, bytes.
        bytes: usize,
        /// The bound, bytes.
        max: u64,
    },
}

impl SkipReason {
    /// Short stable label, for counters.
    pub fn label(&self) -> &'static str {
        match self {
            SkipReason::TooLarge { .. } => "too-large",
        }
    }
}

/// A state waiting for its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    fence: Fence,
    taken_ms: i64,
    state: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    /// Core clock of the last spool, ms.
    last_spooled_ms: Option<u64>,
    /// Digest (crc32, length) of the last state spooled, and its fence.
    last: Option<(u32, usize, Fence)>,
    waiting: Option<Waiting>,
}

/// The policy; see the module docs.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// 0: checkpoints are off.
    interval_ms: u64,
    max_bytes: u64,
    entries: BTreeMap<InstanceKey, Entry>,
    commands: VecDeque<CheckpointCommand>,
}

fn digest(state: &[u8]) -> (u32, usize) {
    (crc32fast::hash(state), state.len())
}

impl CheckpointPolicy {
    /// A policy spooling at most every `interval_ms` (0: never) states of
    /// at most `max_bytes`.
    pub fn new(interval_ms: u64, max_bytes: u64) -> Self {
        CheckpointPolicy {
            interval_ms,
            max_bytes,
            entries: BTreeMap::new(),
            commands: VecDeque::new(),
        }
    }

    /// The next command, in order.
    pub fn poll_command(&mut self) -> Option<CheckpointCommand> {
        self.commands.pop_front()
    }

    /// Whether this state differs from the last one spooled (under the same
    /// fence), and is small enough (else the skip is emitted).
    fn worth_spooling(&mut self, key: &InstanceKey, fence: &Fence, state: &[u8]) -> bool {
        let (crc, len) = digest(state);
        let e = self.entries.entry(key.clone()).or_default();
        if e.last.as_ref() == Some(&(crc, len, fence.clone())) {
            e.waiting = None;
            return false;
        }
        if len as u64 > self.max_bytes {
            e.waiting = None;
            self.commands.push_back(CheckpointCommand::Skip {
                key: key.clone(),
                reason: SkipReason::TooLarge {
                    bytes: len,
                    max: self.max_bytes,
                },
            });
            return false;
        }
        true
    }

    fn spool(&mut self, key: &InstanceKey, w: Waiting, now_ms: u64) {
        let (crc, len) = digest(&w.state);
        let e = self.entries.entry(key.clone()).or_default();
        e.last_spooled_ms = Some(now_ms);
        e.last = Some((crc, len, w.fence.clone()));
        e.waiting = None;
        self.commands.push_back(CheckpointCommand::Spool {
            key: key.clone(),
            fence: w.fence,
            taken_ms: w.taken_ms,
            state: w.state,
        });
    }

    /// The driver persisted a changed state of a running instance at
    /// `now_ms` (core clock), taken at `taken_ms` (Unix ms).
    pub fn handle_state(
        &mut self,
        key: &InstanceKey,
        fence: &Fence,
        state: Vec<u8>,
        now_ms: u64,
        taken_ms: i64,
    ) {
        if self.interval_ms == 0 || !self.worth_spooling(key, fence, &state) {
            return;
        }
        let w = Waiting {
            fence: fence.clone(),
            taken_ms,
            state,
        };
        let e = self.entries.entry(key.clone()).or_default();
        let due = e
            .last_spooled_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.interval_ms);
        if due {
            self.spool(key, w, now_ms);
        } else {
            e.waiting = Some(w);
        }
    }

    /// Spools every waiting state whose interval has passed.
    pub fn handle_tick(&mut self, now_ms: u64) {
        let due: Vec<InstanceKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.waiting.is_some()
                    && e.last_spooled_ms
                        .is_none_or(|t| now_ms.saturating_sub(t) >= self.interval_ms)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(w) = self.entries.get_mut(&k).and_then(|e| e.waiting.take()) {
                self.spool(&k, w, now_ms);
            }
        }
    }

    /// A clean stop with its final state: spooled now unless equal to the
    /// last one spooled (or too large). The instance is then forgotten.
    pub fn handle_stop(
        &mut self,
        key: &InstanceKey,
        fence: &Fence,
        state: Vec<u8>,
        now_ms: u64,
        taken_ms: i64,
    ) {
        if self.interval_ms != 0 && self.worth_spooling(key, fence, &state) {
            let w = Waiting {
                fence: fence.clone(),
                taken_ms,
                state,
            };
            self.spool(key, w, now_ms);
        }
        self.entries.remove(key);
    }

    /// The instance is fenced off (its lease ran out) or gone: nothing of
    /// it is spooled any more.
    pub fn handle_forget(&mut self, key: &InstanceKey) {
        self.entries.remove(key);
    }

    /// A `Spool` the driver could not carry out (the spool writer's queue
    /// was full): it waits again, due at the next tick.
    pub fn handle_not_spooled(&mut self, cmd: CheckpointCommand) {
        let CheckpointCommand::Spool {
            key,
            fence,
            taken_ms,
            state,
        } = cmd
        else {
            return;
        };
        let e = self.entries.entry(key).or_default();
        e.last_spooled_ms = None;
        e.last = None;
        if e.waiting.is_none() {
            e.waiting = Some(Waiting {
                fence,
                taken_ms,
                state,
            });
        }
    }
}

/// What to start a new instance from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedDecision {
    /// Its local state (see the module docs for why).
    KeepLocal,
    /// The region's checkpoint.
    Seed,
}

/// Whether an instance whose local state is `local_empty` with `origin`
/// starts from the region's checkpoint `seed` (see the module docs).
pub fn seed_decision(
    local_empty: bool,
    origin: Option<&StateOrigin>,
    seed: &StateCheckpoint,
) -> SeedDecision {
    if local_empty {
        return SeedDecision::Seed;
    }
    match origin {
        None => SeedDecision::KeepLocal,
        Some(o) if o.allocation == seed.fence.allocation => SeedDecision::KeepLocal,
        Some(o) if o.token < seed.fence.token => SeedDecision::Seed,
        Some(_) => SeedDecision::KeepLocal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::monitoring::FenceStamp;

    fn key() -> InstanceKey {
        InstanceKey::new("acme", "rate")
    }

    fn fence(token: u64) -> Fence {
        Fence {
            allocation: format!("a{token}"),
            token,
        }
    }

    fn drain(p: &mut CheckpointPolicy) -> Vec<CheckpointCommand> {
        std::iter::from_fn(|| p.poll_command()).collect()
    }

    fn spool(token: u64, taken_ms: i64, state: &[u8]) -> CheckpointCommand {
        CheckpointCommand::Spool {
            key: key(),
            fence: fence(token),
            taken_ms,
            state: state.to_vec(),
        }
    }

    #[test]
    fn changed_state_is_spooled_at_most_every_interval_newest_wins() {
        let mut p = CheckpointPolicy::new(1000, 16);
        p.handle_state(&key(), &fence(1), b"s1".to_vec(), 0, 100);
        assert_eq!(drain(&mut p), vec![spool(1, 100, b"s1")]);
        // Within the interval: waits; a newer state replaces it.
        p.handle_state(&key(), &fence(1), b"s2".to_vec(), 300, 400);
        p.handle_state(&key(), &fence(1), b"s3".to_vec(), 600, 700);
        p.handle_tick(999);
        assert_eq!(drain(&mut p), vec![]);
        p.handle_tick(1000);
        assert_eq!(drain(&mut p), vec![spool(1, 700, b"s3")]);
        p.handle_tick(5000);
        assert_eq!(drain(&mut p), vec![], "nothing waits any more");
        // Due at once after a quiet interval.
        p.handle_state(&key(), &fence(1), b"s4".to_vec(), 5000, 5100);
        assert_eq!(drain(&mut p), vec![spool(1, 5100, b"s4")]);
    }

    #[test]
    fn equal_states_are_not_spooled_again_unless_the_fence_changed() {
        let mut p = CheckpointPolicy::new(1000, 16);
        p.handle_state(&key(), &fence(1), b"s".to_vec(), 0, 1);
        p.handle_state(&key(), &fence(1), b"s".to_vec(), 2000, 2);
        assert_eq!(drain(&mut p), vec![spool(1, 1, b"s")]);
        // The same state under a new allocation is the new one's checkpoint.
        p.handle_state(&key(), &fence(2), b"s".to_vec(), 4000, 3);
        assert_eq!(drain(&mut p), vec![spool(2, 3, b"s")]);
        // A change back to the spooled state cancels what waits.
        p.handle_state(&key(), &fence(2), b"t".to_vec(), 4500, 4);
        p.handle_state(&key(), &fence(2), b"s".to_vec(), 4600, 5);
        p.handle_tick(9000);
        assert_eq!(drain(&mut p), vec![]);
    }

    #[test]
    fn too_large_states_are_skipped_and_counted_never_spooled() {
        let mut p = CheckpointPolicy::new(1000, 4);
        p.handle_state(&key(), &fence(1), b"12345".to_vec(), 0, 1);
        p.handle_stop(&key(), &fence(1), b"123456".to_vec(), 10, 2);
        let skip = |bytes| CheckpointCommand::Skip {
            key: key(),
            reason: SkipReason::TooLarge { bytes, max: 4 },
        };
        assert_eq!(drain(&mut p), vec![skip(5), skip(6)]);
        assert_eq!(
            SkipReason::TooLarge { bytes: 5, max: 4 }.label(),
            "too-large"
        );
    }

    #[test]
    fn a_clean_stop_spools_at_once_a_fenced_off_instance_never() {
        let mut p = CheckpointPolicy::new(1000, 16);
        p.handle_state(&key(), &fence(1), b"s1".to_vec(), 0, 1);
        p.handle_state(&key(), &fence(1), b"s2".to_vec(), 10, 2);
        p.handle_stop(&key(), &fence(1), b"s3".to_vec(), 20, 3);
        assert_eq!(
            drain(&mut p),
            vec![spool(1, 1, b"s1"), spool(1, 3, b"s3")],
            "the final state, not the waiting one, and without waiting"
        );
        p.handle_tick(5000);
        assert_eq!(drain(&mut p), vec![], "forgotten after the stop");
        // Unchanged at stop: nothing.
        p.handle_state(&key(), &fence(1), b"s4".to_vec(), 6000, 4);
        p.handle_stop(&key(), &fence(1), b"s4".to_vec(), 6001, 5);
        assert_eq!(drain(&mut p), vec![spool(1, 4, b"s4")]);
        // Lease ran out: what waits is dropped.
        p.handle_state(&key(), &fence(1), b"s5".to_vec(), 7000, 6);
        p.handle_state(&key(), &fence(1), b"s6".to_vec(), 7001, 7);
        drain(&mut p);
        p.handle_forget(&key());
        p.handle_tick(20_000);
        assert_eq!(drain(&mut p), vec![]);
    }

    #[test]
    fn a_spool_that_could_not_be_sent_is_retried_at_the_next_tick() {
        let mut p = CheckpointPolicy::new(1000, 16);
        p.handle_state(&key(), &fence(1), b"s1".to_vec(), 0, 1);
        let cmd = drain(&mut p).remove(0);
        p.handle_not_spooled(cmd.clone());
        p.handle_tick(1);
        assert_eq!(drain(&mut p), vec![cmd]);
    }

    #[test]
    fn interval_zero_turns_checkpoints_off() {
        let mut p = CheckpointPolicy::new(0, 16);
        p.handle_state(&key(), &fence(1), b"s1".to_vec(), 0, 1);
        p.handle_stop(&key(), &fence(1), b"s2".to_vec(), 0, 1);
        p.handle_tick(10_000);
        assert_eq!(drain(&mut p), vec![]);
    }

    #[test]
    fn a_new_instance_starts_from_the_checkpoint_unless_its_own_state_is_newer() {
        let seed = StateCheckpoint {
            tenant: "acme".into(),
            workload: "rate".into(),
            fence: FenceStamp {
                allocation: "a5".into(),
                token: 5,
            },
            taken_ms: 50,
            state: vec![1],
        };
        let origin = |allocation: &str, token| StateOrigin {
            allocation: allocation.into(),
            token,
            taken_ms: 99,
        };
        use SeedDecision::*;
        assert_eq!(seed_decision(true, None, &seed), Seed, "no local state");
        assert_eq!(
            seed_decision(true, Some(&origin("a9", 9)), &seed),
            Seed,
            "empty local state"
        );
        assert_eq!(seed_decision(false, None, &seed), KeepLocal, "undated");
        assert_eq!(
            seed_decision(false, Some(&origin("a5", 5)), &seed),
            KeepLocal,
            "the same allocation's own state"
        );
        assert_eq!(seed_decision(false, Some(&origin("a3", 3)), &seed), Seed);
        assert_eq!(
            seed_decision(false, Some(&origin("a9", 9)), &seed),
            KeepLocal
        );
    }
}
