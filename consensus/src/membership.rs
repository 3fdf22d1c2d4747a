//! Membership changes on the leader, and its view of each member.
//!
//! **Adding a voter is safe only once the new replica can vote usefully.**
//! A voter that cannot be reached still counts in the quorum: a 3-voter
//! group with one unreachable addition needs 3 of 4 answers, and three such
//! additions lose the quorum. So [`MemberChange::Add`] runs as a small
//! state machine ([`Join`]) in the node core, advanced on every `on_ready`
//! with the time passed in:
//!
//! 1. `Learner`: propose `AddLearnerNode`. A learner receives the log (and a
//!    snapshot when it is far behind, through the usual path) but does not
//!    vote, so it cannot hurt the quorum.
//! 2. `CatchUp`: wait until it has **caught up**: the leader heard from it
//!    since the add began and within `unreachable_after`, its matched index
//!    covers the entry that made it a learner, and it is within
//!    `max_lag_entries` of the leader's last index.
//! 3. `Promote`: propose `AddNode` for the learner (raft-rs promotes it);
//!    the callers are answered with the new membership once it is applied.
//! 4. Past `catch_up_timeout` without catching up, `Remove`: propose
//!    `RemoveNode` for the learner, and answer with a
//!    [`MembershipRefusal`] that names the replica and says whether it never
//!    answered or answered but was too far behind (matched X of Y).
//!
//! One add runs at a time; a second identical request waits with the first
//! (a retried call), anything else is refused as busy. If leadership moves,
//! the callers get [`MembershipRefusal::LeaderChanged`]: the replica is a
//! voter only if its promotion was committed (then it had caught up), or a
//! learner at most, never a half-added voter. Retrying the same request on
//! the new leader resumes from the learner.
//!
//! Reachability is this file's own bookkeeping, not raft-rs's
//! `recent_active`: that flag is cleared at every election timeout by the
//! quorum check and says nothing about a peer that never answered.

use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChange, ConfChangeType};
use raft::ProgressState;
use strata_protocol::{MembershipRefusal, PeerProgress, ReplicaInfo};

use crate::apply::encode_member;
use crate::machine::Machine;
use crate::node::{ConfChangeReply, MemberChange, PendingReply, ProposeError, RaftNode};

/// Membership settings of the node core (from `[membership]` in hub.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Longest a new replica may take to answer and catch up as a learner
    /// before its add is refused and the learner removed.
    pub catch_up_timeout: Duration,
    /// Caught up: matched index within this many entries of the leader's
    /// last index. A member further behind is reported as lagging.
    pub max_lag_entries: u64,
    /// A member the leader has not heard from for this long is unreachable
    /// (and a learner not heard from this recently is not caught up).
    pub unreachable_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            catch_up_timeout: Duration::from_secs(30),
            max_lag_entries: 1000,
            unreachable_after: Duration::from_secs(2),
        }
    }
}

/// An add in progress on the leader.
pub(crate) struct Join {
    /// The replica being added.
    pub(crate) info: ReplicaInfo,
    /// Everyone waiting for the answer (the request and its retries).
    waiters: Vec<ConfChangeReply>,
    /// When the add began; the catch-up deadline counts from here.
    started: Instant,
    /// The leader's term when it began: a new term means leadership moved.
    term: u64,
    step: JoinStep,
}

#[derive(Clone)]
enum JoinStep {
    /// `AddLearnerNode` proposed at `index`, not yet applied.
    Learner { index: u64 },
    /// A learner, waiting to catch up; `floor` is the index that made it
    /// one (its matched index must reach it).
    CatchUp { floor: u64 },
    /// `AddNode` proposed at `index`, not yet applied.
    Promote { index: u64, floor: u64 },
    /// Refused: `RemoveNode` proposed at `index` (`None`: not yet, or
    /// dropped and to be proposed again), then `refusal` is answered.
    Remove {
        index: Option<u64>,
        refusal: MembershipRefusal,
    },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<M: Machine> RaftNode<M> {
    /// Handles [`crate::Inbox::ConfChange`] (see the module docs).
    pub(crate) fn propose_conf_change(
        &mut self,
        change: MemberChange,
        reply: ConfChangeReply,
        now: Instant,
    ) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if let Err(reason) = self.check_change(&change) {
            self.refuse(reply, MembershipRefusal::Conflict { reason });
            return;
        }
        match change {
            MemberChange::Add(info) => self.start_join(info, reply, now),
            MemberChange::Remove(id) => self.propose_remove(id, reply, now),
        }
    }

    fn start_join(&mut self, info: ReplicaInfo, reply: ConfChangeReply, now: Instant) {
        if self.is_voter_at(&info) {
            // Already a voter at these addresses: a retried request (its
            // first answer was lost) succeeds without a new entry.
            let _ = reply.send(Ok(self.members().to_vec()));
            return;
        }
        if let Some(j) = &mut self.join {
            if j.info.id == info.id
                && j.info.peer_addr == info.peer_addr
                && j.info.client_addr == info.client_addr
            {
                // The same add, retried while it runs: same answer.
                j.waiters.push(reply);
            } else {
                let reason = format!(
                    "replica {} is being added to {}; retry when that finishes \
                     (within {} s)",
                    j.info.id,
                    self.cfg.group,
                    self.cfg.membership.catch_up_timeout.as_secs()
                );
                self.refuse(reply, MembershipRefusal::Busy { reason });
            }
            return;
        }
        if self.raw.raft.has_pending_conf() {
            let reason = format!(
                "another membership change of {} is being applied; retry",
                self.cfg.group
            );
            self.refuse(reply, MembershipRefusal::Busy { reason });
            return;
        }
        let learner = self.raw.store().conf_state().learners.contains(&info.id);
        let step = if learner {
            // Left over from an add whose leader lost office (check_change
            // made sure it is at these addresses): resume from catch-up.
            JoinStep::CatchUp {
                floor: self.applied,
            }
        } else {
            match self.propose_member(ConfChangeType::AddLearnerNode, &info) {
                Ok(index) => JoinStep::Learner { index },
                Err(e) => {
                    let _ = reply.send(Err(self.unavailable(format!("conf change dropped: {e}"))));
                    return;
                }
            }
        };
        tracing::info!(replica = self.cfg.id, group = %self.cfg.group, added = info.id,
            peer_addr = %info.peer_addr, resumed = learner, "adding replica as a learner");
        self.join = Some(Join {
            info,
            waiters: vec![reply],
            started: now,
            term: self.raw.raft.term,
            step,
        });
    }

    fn propose_remove(&mut self, id: u64, reply: ConfChangeReply, now: Instant) {
        if let Some(j) = &self.join {
            let reason = format!(
                "replica {} is being added to {}; retry when that finishes (within {} s)",
                j.info.id,
                self.cfg.group,
                self.cfg.membership.catch_up_timeout.as_secs()
            );
            self.refuse(reply, MembershipRefusal::Busy { reason });
            return;
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) => self.track(PendingReply::ConfChange(reply), now),
            Err(e) => {
                let _ = reply.send(Err(self.unavailable(format!("conf change dropped: {e}"))));
            }
        }
    }

    /// Proposes a change of `info`'s membership; returns its log index.
    fn propose_member(
        &mut self,
        ty: ConfChangeType,
        info: &ReplicaInfo,
    ) -> Result<u64, raft::Error> {
        let mut cc = ConfChange::default();
        cc.set_change_type(ty);
        cc.node_id = info.id;
        if ty != ConfChangeType::RemoveNode {
            cc.context = encode_member(info).into();
        }
        self.raw.propose_conf_change(vec![], cc)?;
        self.metrics.proposals.inc();
        Ok(self.raw.raft.raft_log.last_index())
    }

    /// Advances the add in progress and refreshes the unreachable-members
    /// gauge (called at every `on_ready`, so kept cheap).
    pub(crate) fn poll_join(&mut self, now: Instant) {
        let unreachable = if self.is_leader() {
            let limit = self.cfg.membership.unreachable_after;
            let prs = self.raw.raft.prs();
            prs.iter()
                .filter(|(id, _)| **id != self.cfg.id && self.silence(**id, now) > limit)
                .count()
        } else {
            0
        };
        self.metrics.peers_unreachable.set(unreachable as i64);
        if self.join.is_some() {
            self.advance_join(now);
        }
    }

    /// How long the leader has not heard from `id`: since this leader took
    /// over if it never did.
    fn silence(&self, id: u64, now: Instant) -> Duration {
        let since = self.leader_since.unwrap_or(now);
        let heard = self.last_heard.get(&id).map_or(since, |t| (*t).max(since));
        now.saturating_duration_since(heard)
    }

    fn advance_join(&mut self, now: Instant) {
        let Some(mut j) = self.join.take() else {
            return;
        };
        if !self.is_leader() || self.raw.raft.term != j.term {
            self.join = Some(j);
            self.abort_join();
            return;
        }
        let id = j.info.id;
        let cs = self.raw.store().conf_state().clone();
        match j.step.clone() {
            JoinStep::Learner { index } | JoinStep::Promote { index, .. }
                if self.applied < index => {}
            JoinStep::Learner { index } if cs.learners.contains(&id) => {
                j.step = JoinStep::CatchUp { floor: index };
                self.join = Some(j);
                // It may already be caught up (a tiny log): look now.
                return self.advance_join(now);
            }
            JoinStep::Learner { .. } => {
                // raft turned the entry into a no-op: another change was
                // still unapplied when it was proposed.
                let reason = format!(
                    "another membership change of {} was in progress; retry",
                    self.cfg.group
                );
                return self.finish_refused(j, MembershipRefusal::Busy { reason });
            }
            JoinStep::CatchUp { floor } => {
                let last = self.raw.raft.raft_log.last_index();
                let matched = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
                let heard = self
                    .last_heard
                    .get(&id)
                    .copied()
                    .filter(|t| *t >= j.started);
                let silent = heard.map(|t| now.saturating_duration_since(t));
                let m = self.cfg.membership;
                let caught_up = silent.is_some_and(|s| s <= m.unreachable_after)
                    && matched >= floor
                    && matched.saturating_add(m.max_lag_entries) >= last;
                let waited = now.saturating_duration_since(j.started);
                if caught_up {
                    match self.propose_member(ConfChangeType::AddNode, &j.info) {
                        Ok(index) => {
                            tracing::info!(
                                replica = self.cfg.id,
                                learner = id,
                                matched,
                                last,
                                "learner caught up; promoting to voter"
                            );
                            j.step = JoinStep::Promote { index, floor };
                        }
                        // Retried on the next poll, deadline permitting.
                        Err(e) => {
                            tracing::debug!(replica = self.cfg.id, error = %e, "promotion dropped")
                        }
                    }
                } else if waited >= m.catch_up_timeout {
                    let (peer_addr, waited_ms) = (j.info.peer_addr.clone(), ms(waited));
                    let refusal = match silent {
                        None => MembershipRefusal::NoAnswer {
                            id,
                            peer_addr,
                            waited_ms,
                        },
                        Some(s) => MembershipRefusal::Behind {
                            id,
                            peer_addr,
                            matched,
                            last_index: last,
                            silent_ms: ms(s),
                            waited_ms,
                        },
                    };
                    tracing::warn!(replica = self.cfg.id, learner = id, %refusal, "removing the learner");
                    j.step = JoinStep::Remove {
                        index: None,
                        refusal,
                    };
                    self.join = Some(j);
                    return self.advance_join(now);
                }
            }
            JoinStep::Promote { floor, .. } => {
                if cs.voters.contains(&id) {
                    self.metrics.learners_promoted.inc();
                    tracing::info!(
                        replica = self.cfg.id,
                        promoted = id,
                        "replica promoted to voter"
                    );
                    let members = self.members().to_vec();
                    return self.finish_join(j, Ok(members));
                }
                // Not applied as a promotion (cannot happen while this is
                // the only change in flight): try again, deadline permitting.
                j.step = JoinStep::CatchUp { floor };
            }
            JoinStep::Remove {
                index: None,
                refusal,
            } => match self.propose_member(ConfChangeType::RemoveNode, &j.info) {
                Ok(index) => {
                    j.step = JoinStep::Remove {
                        index: Some(index),
                        refusal,
                    }
                }
                Err(e) => {
                    tracing::debug!(replica = self.cfg.id, error = %e, "learner removal dropped")
                }
            },
            JoinStep::Remove {
                index: Some(index), ..
            } if self.applied < index => {}
            JoinStep::Remove { refusal, .. } => {
                if !cs.learners.contains(&id) && !cs.voters.contains(&id) {
                    return self.finish_refused(j, refusal);
                }
                // The removal was dropped; propose it again.
                j.step = JoinStep::Remove {
                    index: None,
                    refusal,
                };
            }
        }
        self.join = Some(j);
    }

    /// Leadership moved: the callers of an add in progress learn it now.
    pub(crate) fn abort_join(&mut self) {
        if let Some(j) = self.join.take() {
            let id = j.info.id;
            tracing::warn!(
                replica = self.cfg.id,
                adding = id,
                "leadership moved during an add"
            );
            self.finish_refused(j, MembershipRefusal::LeaderChanged { id });
        }
    }

    fn finish_refused(&mut self, j: Join, refusal: MembershipRefusal) {
        self.metrics.membership_refused(refusal.kind());
        let err = ProposeError::Refused {
            group: self.cfg.group.clone(),
            refusal,
        };
        self.finish_join(j, Err(err));
    }

    /// Answers everyone waiting for `j`.
    pub(crate) fn finish_join(&mut self, j: Join, result: Result<Vec<ReplicaInfo>, ProposeError>) {
        for w in j.waiters {
            let _ = w.send(result.clone());
        }
    }

    fn refuse(&self, reply: ConfChangeReply, refusal: MembershipRefusal) {
        self.metrics.membership_refused(refusal.kind());
        let _ = reply.send(Err(ProposeError::Refused {
            group: self.cfg.group.clone(),
            refusal,
        }));
    }

    /// True when `info` is already a voter with exactly these addresses.
    fn is_voter_at(&self, info: &ReplicaInfo) -> bool {
        let voters = &self.raw.store().conf_state().voters;
        self.members().iter().any(|m| {
            m.id == info.id
                && voters.contains(&m.id)
                && m.peer_addr == info.peer_addr
                && m.client_addr == info.client_addr
        })
    }

    /// Refuses changes that cannot be what the operator meant: an id below
    /// 1, adding an id that is already a member at other addresses (that
    /// would silently re-address a live replica: its messages would go to
    /// the newcomer), removing an id that is not a member (raft would
    /// commit a no-op), and the leader removing itself.
    fn check_change(&self, change: &MemberChange) -> Result<(), String> {
        let group = &self.cfg.group;
        let id = match change {
            MemberChange::Add(info) => info.id,
            MemberChange::Remove(id) => *id,
        };
        if id == 0 {
            return Err("replica id must be at least 1".into());
        }
        match change {
            MemberChange::Add(info) => match self.members().iter().find(|m| m.id == info.id) {
                Some(m) if m.peer_addr != info.peer_addr || m.client_addr != info.client_addr => {
                    Err(format!(
                        "replica {} is already a member of {group} (peer-addr {}, \
                         client-addr {}); remove it first to give its id to another replica",
                        m.id, m.peer_addr, m.client_addr
                    ))
                }
                _ => Ok(()),
            },
            MemberChange::Remove(id) if !self.members().iter().any(|m| m.id == *id) => {
                Err(format!("replica {id} is not a member of {group}"))
            }
            MemberChange::Remove(id) if *id == self.cfg.id => Err(format!(
                "replica {id} is the leader and cannot remove itself; retry once another \
                 replica leads (stopping hub {id} moves the leadership)"
            )),
            MemberChange::Remove(_) => Ok(()),
        }
    }

    /// Records that a Raft message from `from` arrived (members only, so a
    /// stray id cannot grow the map).
    pub(crate) fn note_heard(&mut self, from: u64, now: Instant) {
        if from != self.cfg.id && self.raw.raft.prs().get(from).is_some() {
            self.last_heard.insert(from, now);
        }
    }

    /// The leader's view of every member at `now`; empty on followers.
    pub(crate) fn peer_view(&self, now: Instant) -> Vec<PeerProgress> {
        if !self.is_leader() {
            return Vec::new();
        }
        let r = &self.raw.raft;
        let last = r.raft_log.last_index();
        let cs = self.raw.store().conf_state();
        let m = self.cfg.membership;
        let mut out: Vec<PeerProgress> = r
            .prs()
            .iter()
            .map(|(&id, pr)| {
                let me = id == self.cfg.id;
                let silent = if me {
                    Duration::ZERO
                } else {
                    self.silence(id, now)
                };
                let matched = if me { last } else { pr.matched };
                let lag = last.saturating_sub(matched);
                PeerProgress {
                    id,
                    voter: cs.voters.contains(&id),
                    reachable: silent <= m.unreachable_after,
                    silent_ms: ms(silent),
                    matched,
                    lag,
                    lagging: !me
                        && (lag > m.max_lag_entries || pr.state == ProgressState::Snapshot),
                    joining: self.join.as_ref().is_some_and(|j| j.info.id == id),
                }
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }
}
