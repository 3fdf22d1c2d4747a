//! Sans-IO leader tracking and request routing for one region.
//!
//! [`LeaderTracker`] remembers what central has learned about a region's
//! Raft group (members, who leads, who answered lately) from the events the
//! driver feeds it. [`Route`] plans one request over that knowledge: the
//! known leader first, a status fan-out ([`Step::Discover`]) when the leader
//! is unknown or failed, and, for reads, any reachable follower as a last
//! resort (the answer is then marked stale). Neither touches a socket or
//! the clock, so every decision is unit-tested below.

use std::collections::{BTreeMap, BTreeSet};

use strata_protocol::{HubStatus, LeaderHint, RaftRole};

/// Most hub calls one request may make: bounds the walk when hints point
/// around in circles or a hostile hub invents addresses.
pub const MAX_CALLS: u32 = 8;

/// What central knows about one region's Raft group.
#[derive(Debug, Clone, Default)]
pub struct LeaderTracker {
    /// Configured hub addresses, in config order.
    seeds: Vec<String>,
    /// Raft id → client address, from the latest membership seen.
    members: BTreeMap<u64, String>,
    /// Replica id found at each address we reached.
    addr_ids: BTreeMap<String, u64>,
    /// Current leader, if known.
    leader: Option<LeaderHint>,
    /// Term in which `leader` was learned; an older term cannot override it.
    leader_term: u64,
    /// Addresses whose last call succeeded.
    reachable: BTreeSet<String>,
}

impl LeaderTracker {
    /// A tracker that knows only the configured addresses.
    pub fn new(seeds: Vec<String>) -> LeaderTracker {
        LeaderTracker {
            seeds,
            ..LeaderTracker::default()
        }
    }

    /// The leader, if known.
    pub fn leader(&self) -> Option<&LeaderHint> {
        self.leader.as_ref()
    }

    /// Every address a status fan-out should ask: the seeds, then learned
    /// members whose replica was not already reached under another address.
    pub fn targets(&self) -> Vec<String> {
        let mut out = self.seeds.clone();
        let known_ids: BTreeSet<u64> = self.addr_ids.values().copied().collect();
        for (id, addr) in &self.members {
            let reached_elsewhere =
                known_ids.contains(id) && self.addr_ids.get(addr).is_none_or(|i| i != id);
            if !reached_elsewhere && !out.contains(addr) {
                out.push(addr.clone());
            }
        }
        out
    }

    /// Targets whose last call succeeded, in [`Self::targets`] order.
    pub fn reachable(&self) -> Vec<String> {
        self.targets()
            .into_iter()
            .filter(|a| self.reachable.contains(a))
            .collect()
    }

    fn set_leader(&mut self, hint: LeaderHint, term: u64) {
        if self.leader.is_none() || term >= self.leader_term {
            self.leader = Some(hint);
            self.leader_term = term;
        }
    }

    fn clear_leader_at(&mut self, addr: &str) {
        if self.leader.as_ref().is_some_and(|l| l.addr == addr) {
            self.leader = None;
        }
    }

    /// `addr` answered a status request.
    pub fn handle_status(&mut self, addr: &str, status: &HubStatus) {
        self.reachable.insert(addr.to_owned());
        self.addr_ids.insert(addr.to_owned(), status.id);
        // A leader of an older term than the one we know has been deposed
        // and has not noticed yet: ignore its claim and its membership.
        let is_leader = status.role == RaftRole::Leader
            && (self.leader.is_none() || status.term >= self.leader_term);
        if (is_leader || self.members.is_empty()) && !status.replicas.is_empty() {
            self.members = status
                .replicas
                .iter()
                .map(|r| (r.id, r.client_addr.clone()))
                .collect();
        }
        if is_leader {
            // The address we dialed is known to work; prefer it over the
            // advertised one.
            self.set_leader(
                LeaderHint {
                    hub_id: status.id,
                    addr: addr.to_owned(),
                },
                status.term,
            );
            return;
        }
        self.clear_leader_at(addr);
        if let Some(lid) = status.leader.filter(|l| *l != status.id) {
            let at = self
                .addr_ids
                .iter()
                .find(|(_, id)| **id == lid)
                .map(|(a, _)| a.clone())
                .or_else(|| self.members.get(&lid).cloned());
            if let Some(addr) = at {
                if self.leader.is_none() {
                    self.set_leader(LeaderHint { hub_id: lid, addr }, status.term);
                }
            }
        }
    }

    /// `addr` answered `NotLeader`, maybe with a hint.
    pub fn handle_not_leader(&mut self, addr: &str, hint: Option<&LeaderHint>) {
        self.reachable.insert(addr.to_owned());
        self.clear_leader_at(addr);
        if let Some(h) = hint.filter(|h| h.addr != addr) {
            // A hint carries no term; it is the freshest news we have.
            self.leader = Some(h.clone());
        }
    }

    /// `addr` answered a request with data (or a hub error).
    pub fn handle_answer(&mut self, addr: &str) {
        self.reachable.insert(addr.to_owned());
    }

    /// `addr` could not be reached or its connection failed.
    pub fn handle_failure(&mut self, addr: &str) {
        self.reachable.remove(addr);
        self.clear_leader_at(addr);
    }
}

/// Which replicas may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A read: the leader, or any reachable replica (stale) without one.
    Read,
    /// A write or conf change: the leader only.
    LeaderOnly,
}

/// What the driver should do next for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the request to `addr`; `stale` when it is not the known leader.
    Call {
        /// Hub address.
        addr: String,
        /// The answer may be stale.
        stale: bool,
    },
    /// Fan a status request out to every target, feed the answers to the
    /// tracker, then ask again.
    Discover,
    /// Nothing left to try.
    GiveUp,
}

/// The plan of one request.
#[derive(Debug, Clone)]
pub struct Route {
    mode: Mode,
    tried: BTreeSet<String>,
    discovered: bool,
    calls: u32,
}

impl Route {
    /// A fresh plan.
    pub fn new(mode: Mode) -> Route {
        Route {
            mode,
            tried: BTreeSet::new(),
            discovered: false,
            calls: 0,
        }
    }

    /// The next step, given what the tracker knows now. Each address is
    /// called at most once per request.
    pub fn next(&mut self, t: &LeaderTracker) -> Step {
        if self.calls >= MAX_CALLS {
            return Step::GiveUp;
        }
        if let Some(l) = t.leader() {
            if self.tried.insert(l.addr.clone()) {
                self.calls += 1;
                return Step::Call {
                    addr: l.addr.clone(),
                    stale: false,
                };
            }
        }
        if !self.discovered {
            self.discovered = true;
            return Step::Discover;
        }
        if self.mode == Mode::Read {
            if let Some(addr) = t.reachable().into_iter().find(|a| !self.tried.contains(a)) {
                self.tried.insert(addr.clone());
                self.calls += 1;
                return Step::Call { addr, stale: true };
            }
        }
        Step::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::ReplicaInfo;

    fn status(id: u64, role: RaftRole, term: u64, leader: Option<u64>) -> HubStatus {
        HubStatus {
            region: "west".into(),
            id,
            role,
            term,
            leader,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            replicas: (1..=3)
                .map(|i| ReplicaInfo {
                    id: i,
                    peer_addr: format!("p{i}"),
                    client_addr: format!("c{i}"),
                    voter: true,
                })
                .collect(),
            stored_records: 0,
            peers: vec![],
            cert_expires_ms: None,
        }
    }

    fn hint(id: u64, addr: &str) -> LeaderHint {
        LeaderHint {
            hub_id: id,
            addr: addr.into(),
        }
    }

    fn call(addr: &str, stale: bool) -> Step {
        Step::Call {
            addr: addr.into(),
            stale,
        }
    }

    #[test]
    fn unknown_leader_discovers_then_calls_leader() {
        let mut t = LeaderTracker::new(vec!["a".into(), "b".into()]);
        let mut r = Route::new(Mode::Read);
        assert_eq!(r.next(&t), Step::Discover);
        t.handle_status("a", &status(1, RaftRole::Follower, 3, Some(2)));
        t.handle_status("b", &status(2, RaftRole::Leader, 3, Some(2)));
        assert_eq!(t.leader(), Some(&hint(2, "b")));
        assert_eq!(r.next(&t), call("b", false));
        // Member 3 was never reached under another address: it is a target.
        assert_eq!(t.targets(), vec!["a", "b", "c3"]);
    }

    #[test]
    fn follows_not_leader_hint_once_per_address() {
        let mut t = LeaderTracker::new(vec!["a".into(), "b".into()]);
        t.handle_status("a", &status(1, RaftRole::Leader, 1, Some(1)));
        let mut r = Route::new(Mode::Read);
        assert_eq!(r.next(&t), call("a", false));
        t.handle_not_leader("a", Some(&hint(2, "b")));
        assert_eq!(r.next(&t), call("b", false));
        // b points back at a, already tried: rediscover instead of looping.
        t.handle_not_leader("b", Some(&hint(1, "a")));
        assert_eq!(r.next(&t), Step::Discover);
    }

    #[test]
    fn failed_leader_is_forgotten_and_reads_fall_back_to_followers() {
        let mut t = LeaderTracker::new(vec!["a".into(), "b".into(), "c".into()]);
        t.handle_status("a", &status(1, RaftRole::Leader, 1, Some(1)));
        t.handle_status("b", &status(2, RaftRole::Follower, 1, Some(1)));
        let mut r = Route::new(Mode::Read);
        assert_eq!(r.next(&t), call("a", false));
        t.handle_failure("a");
        assert_eq!(t.leader(), None);
        assert_eq!(r.next(&t), Step::Discover);
        // Discovery: b has lost its leader, c is down.
        t.handle_status("b", &status(2, RaftRole::Candidate, 2, None));
        t.handle_failure("c");
        assert_eq!(r.next(&t), call("b", true));
        assert_eq!(r.next(&t), Step::GiveUp);
    }

    #[test]
    fn writes_never_go_to_followers() {
        let mut t = LeaderTracker::new(vec!["a".into()]);
        let mut r = Route::new(Mode::LeaderOnly);
        assert_eq!(r.next(&t), Step::Discover);
        t.handle_status("a", &status(1, RaftRole::Follower, 1, None));
        assert_eq!(r.next(&t), Step::GiveUp);
    }

    #[test]
    fn older_term_leader_does_not_override_newer() {
        let mut t = LeaderTracker::new(vec!["a".into(), "b".into()]);
        t.handle_status("b", &status(2, RaftRole::Leader, 5, Some(2)));
        t.handle_status("a", &status(1, RaftRole::Leader, 4, Some(1)));
        assert_eq!(t.leader(), Some(&hint(2, "b")));
    }

    #[test]
    fn follower_status_points_at_leader_address_we_reached() {
        let mut t = LeaderTracker::new(vec!["a".into(), "b".into()]);
        t.handle_status("b", &status(2, RaftRole::Follower, 1, None));
        t.handle_status("a", &status(1, RaftRole::Follower, 1, Some(2)));
        // Replica 2 was reached at "b": use that, not its advertised "c2".
        assert_eq!(t.leader(), Some(&hint(2, "b")));
        assert_eq!(t.targets(), vec!["a", "b", "c3"]);
    }

    #[test]
    fn call_budget_is_bounded() {
        let mut t = LeaderTracker::new(vec![]);
        let mut r = Route::new(Mode::Read);
        let mut calls = 0;
        for i in 0..100 {
            match r.next(&t) {
                Step::Call { addr, .. } => {
                    calls += 1;
                    t.handle_not_leader(&addr, Some(&hint(i, &format!("x{i}"))));
                }
                Step::Discover => t.handle_not_leader("seed", Some(&hint(0, "x0"))),
                Step::GiveUp => break,
            }
        }
        assert_eq!(calls, MAX_CALLS);
    }
}
