//! Is a region healthy, degraded or unavailable, and why: a pure function
//! of one status fan-out ([`RegionStatus`]).
//!
//! - **unavailable**: no replica leads; the region takes no writes.
//! - **degraded**: a leader exists, but a member is unreachable (by the
//!   leader's view: not heard from within its `unreachable-after`, or by
//!   central's: it does not answer central), lags the leader, or is a
//!   learner (an add in progress, or one left over).
//! - **healthy**: none of that.
//!
//! Each problem is one sentence naming the replica by id and address.

use std::collections::BTreeMap;

use serde::Serialize;
use strata_protocol::{HubStatus, ReplicaInfo};

use super::RegionStatus;

/// A region's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Every member is a reachable, caught-up voter.
    Healthy,
    /// A leader exists, but some member is not as it should be.
    Degraded,
    /// No leader: the region takes no writes.
    Unavailable,
}

/// The state and every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Overall state.
    pub health: Health,
    /// One sentence per problem, naming the replica.
    pub problems: Vec<String>,
}

/// "4 s", "0.5 s".
fn secs(ms: u64) -> String {
    if ms >= 10_000 || ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The leader's own status, if a leader answered.
pub fn leader_status(s: &RegionStatus) -> Option<&HubStatus> {
    let id = s.leader?;
    s.replicas
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .find(|st| st.id == id)
}

/// Assesses one region.
pub fn assess(s: &RegionStatus) -> Assessment {
    let leader = leader_status(s);
    let members: &[ReplicaInfo] = leader.map_or(&[], |l| l.replicas.as_slice());
    let mut problems = Vec::new();
    if leader.is_none() {
        problems.push("no leader (an election is in progress, or no quorum)".to_owned());
    }
    // Issues by member id, so one replica gets one sentence.
    let mut issues: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    if let Some(l) = leader {
        for p in l.peers.iter().filter(|p| p.id != l.id) {
            let mut add = |what: String| issues.entry(p.id).or_default().push(what);
            if !p.reachable {
                add(format!(
                    "unreachable for {} (the leader has not heard from it)",
                    secs(p.silent_ms)
                ));
            }
            if !p.voter && p.joining {
                add(format!(
                    "is a learner being added ({} entries behind)",
                    p.lag
                ));
            } else if !p.voter {
                add(
                    "is a learner, not a voter: an add did not finish; retry the add or \
                     remove it"
                        .to_owned(),
                );
            } else if p.lagging {
                add(format!("lags the leader by {} entries", p.lag));
            }
        }
    }
    for r in &s.replicas {
        let Err(e) = &r.status else { continue };
        match members.iter().find(|m| m.client_addr == r.addr) {
            Some(m) => issues
                .entry(m.id)
                .or_default()
                .push(format!("does not answer central: {e}")),
            // Without a leader there is no membership to match against:
            // every silent address is worth naming.
            None if leader.is_none() => {
                problems.push(format!("hub {} does not answer: {e}", r.addr))
            }
            // An address that is not a member (a configured hub that was
            // removed) does not make the region less healthy.
            None => {}
        }
    }
    for (id, what) in issues {
        let addr = members
            .iter()
            .find(|m| m.id == id)
            .map_or_else(|| "address unknown".to_owned(), |m| m.client_addr.clone());
        problems.push(format!("replica {id} ({addr}) {}", what.join("; ")));
    }
    let health = match (leader.is_some(), problems.is_empty()) {
        (false, _) => Health::Unavailable,
        (true, false) => Health::Degraded,
        (true, true) => Health::Healthy,
    };
    Assessment { health, problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::ReplicaStatus;
    use strata_protocol::{PeerProgress, RaftRole};

    fn member(id: u64, voter: bool) -> ReplicaInfo {
        ReplicaInfo {
            id,
            peer_addr: format!("127.0.0.1:720{id}"),
            client_addr: format!("127.0.0.1:710{id}"),
            voter,
        }
    }

    fn peer(id: u64) -> PeerProgress {
        PeerProgress {
            id,
            voter: true,
            reachable: true,
            silent_ms: 100,
            matched: 50,
            lag: 0,
            lagging: false,
            joining: false,
        }
    }

    fn status(id: u64, role: RaftRole, peers: Vec<PeerProgress>) -> HubStatus {
        HubStatus {
            region: "west".into(),
            id,
            role,
            term: 2,
            leader: Some(1),
            commit_index: 50,
            applied_index: 50,
            last_index: 50,
            replicas: (1..=3).map(|i| member(i, true)).collect(),
            stored_records: 0,
            peers,
            cert_expires_ms: None,
        }
    }

    fn region(leader_peers: Vec<PeerProgress>, third: Result<HubStatus, String>) -> RegionStatus {
        let r = |id: u64, status| ReplicaStatus {
            addr: format!("127.0.0.1:710{id}"),
            status,
        };
        RegionStatus::from_replicas(
            "west".into(),
            vec![
                r(1, Ok(status(1, RaftRole::Leader, leader_peers))),
                r(2, Ok(status(2, RaftRole::Follower, vec![]))),
                r(3, third),
            ],
        )
    }

    #[test]
    fn all_answering_and_caught_up_is_healthy() {
        let s = region(
            vec![peer(1), peer(2), peer(3)],
            Ok(status(3, RaftRole::Follower, vec![])),
        );
        assert_eq!(
            assess(&s),
            Assessment {
                health: Health::Healthy,
                problems: vec![]
            }
        );
    }

    #[test]
    fn a_dead_voter_is_named_once_from_both_views() {
        let dead = PeerProgress {
            reachable: false,
            silent_ms: 4200,
            ..peer(3)
        };
        let s = region(
            vec![peer(1), peer(2), dead],
            Err("127.0.0.1:7103: no answer within 2000 ms".into()),
        );
        let a = assess(&s);
        assert_eq!(a.health, Health::Degraded);
        assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
        let p = &a.problems[0];
        assert!(
            p.starts_with("replica 3 (127.0.0.1:7103) unreachable for 4.2 s"),
            "{p}"
        );
        assert!(p.contains("does not answer central"), "{p}");
    }

    #[test]
    fn central_alone_not_reaching_a_voter_degrades() {
        let s = region(
            vec![peer(1), peer(2), peer(3)],
            Err("127.0.0.1:7103: connection refused".into()),
        );
        let a = assess(&s);
        assert_eq!(a.health, Health::Degraded);
        assert_eq!(
            a.problems,
            vec![
                "replica 3 (127.0.0.1:7103) does not answer central: 127.0.0.1:7103: \
                 connection refused"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn lagging_voters_and_learners_degrade() {
        let lagging = PeerProgress {
            lag: 5000,
            lagging: true,
            ..peer(2)
        };
        let stuck = PeerProgress {
            voter: false,
            ..peer(3)
        };
        let s = region(
            vec![peer(1), lagging, stuck],
            Ok(status(3, RaftRole::Follower, vec![])),
        );
        let a = assess(&s);
        assert_eq!(a.health, Health::Degraded);
        assert!(a.problems[0].contains("replica 2") && a.problems[0].contains("5000 entries"));
        assert!(a.problems[1].contains("replica 3") && a.problems[1].contains("not a voter"));
        let joining = PeerProgress {
            voter: false,
            joining: true,
            lag: 12,
            ..peer(3)
        };
        let s = region(
            vec![peer(1), peer(2), joining],
            Ok(status(3, RaftRole::Follower, vec![])),
        );
        assert!(assess(&s).problems[0].contains("learner being added (12 entries behind)"));
    }

    #[test]
    fn no_leader_is_unavailable_and_names_silent_hubs() {
        let s = RegionStatus::from_replicas(
            "west".into(),
            vec![
                ReplicaStatus {
                    addr: "127.0.0.1:7101".into(),
                    status: Ok(status(1, RaftRole::Candidate, vec![])),
                },
                ReplicaStatus {
                    addr: "127.0.0.1:7102".into(),
                    status: Err("refused".into()),
                },
            ],
        );
        let a = assess(&s);
        assert_eq!(a.health, Health::Unavailable);
        assert_eq!(
            a.problems[0],
            "no leader (an election is in progress, or no quorum)"
        );
        assert_eq!(a.problems[1], "hub 127.0.0.1:7102 does not answer: refused");
    }
}
