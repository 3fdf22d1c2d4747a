//! Membership safety on the wire: the leader's view of each member
//! ([`PeerProgress`], in [`crate::HubStatus::peers`]) and why a membership
//! change was refused ([`MembershipRefusal`], answered as
//! [`crate::HubResponse::MembershipRefused`]).
//!
//! Both are response types only: nothing here is stored in the Raft log
//! (that is [`crate::ReplicaInfo`], whose layout never changes).

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// The leader's view of one member of its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "kebab-case")]
pub struct PeerProgress {
    /// Raft id.
    pub id: u64,
    /// True for a voter, false for a learner.
    pub voter: bool,
    /// The leader heard from it within its `unreachable-after` window (the
    /// leader itself always is).
    pub reachable: bool,
    /// Milliseconds since the leader last heard from it, counted from when
    /// this leader took over if it never did; 0 for the leader itself.
    pub silent_ms: u64,
    /// Highest log index known to be replicated to it.
    pub matched: u64,
    /// The leader's last log index minus `matched`.
    pub lag: u64,
    /// More than the leader's `max-lag-entries` behind, or waiting for a
    /// snapshot.
    pub lagging: bool,
    /// A learner that an add in progress will promote once it caught up
    /// (a learner that is not joining is left over and needs an operator).
    pub joining: bool,
}

/// Why a hub refused a membership change (`AddReplica` / `RemoveReplica`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub enum MembershipRefusal {
    /// The new replica never answered the leader before the catch-up
    /// deadline. It was added as a learner only, and removed again.
    NoAnswer {
        /// Raft id of the new replica.
        id: u64,
        /// The peer address the leader tried.
        peer_addr: String,
        /// How long the leader waited, ms.
        waited_ms: u64,
    },
    /// The new replica answered but had not caught up by the deadline (or
    /// went silent). It was a learner only, and was removed again.
    Behind {
        /// Raft id of the new replica.
        id: u64,
        /// Its peer address.
        peer_addr: String,
        /// Highest log index replicated to it.
        matched: u64,
        /// The leader's last log index.
        last_index: u64,
        /// Ms since it last answered.
        silent_ms: u64,
        /// How long the leader waited, ms.
        waited_ms: u64,
    },
    /// Leadership moved while the change was in progress. The replica is
    /// not a voter unless it had caught up; it may be left as a learner.
    /// The same request, retried, finishes or refuses the add.
    LeaderChanged {
        /// Raft id of the replica being changed.
        id: u64,
    },
    /// Another membership change is in progress; retry when it is done.
    Busy {
        /// What is in progress.
        reason: String,
    },
    /// The change contradicts the membership (an id in use at other
    /// addresses, a non-member, the leader removing itself).
    Conflict {
        /// Why, naming the replica.
        reason: String,
    },
}

impl MembershipRefusal {
    /// A stable snake_case name, for metric labels and API error codes.
    pub fn kind(&self) -> &'static str {
        match self {
            MembershipRefusal::NoAnswer { .. } => "no_answer",
            MembershipRefusal::Behind { .. } => "behind",
            MembershipRefusal::LeaderChanged { .. } => "leader_changed",
            MembershipRefusal::Busy { .. } => "busy",
            MembershipRefusal::Conflict { .. } => "conflict",
        }
    }
}

/// Whole seconds with one decimal, for messages ("3.0 s").
fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl fmt::Display for MembershipRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipRefusal::NoAnswer {
                id,
                peer_addr,
                waited_ms,
            } => write!(
                f,
                "replica {id} ({peer_addr}) never answered the leader within {}; it was \
                 removed again and the voters are unchanged",
                secs(*waited_ms)
            ),
            MembershipRefusal::Behind {
                id,
                peer_addr,
                matched,
                last_index,
                silent_ms,
                waited_ms,
            } => write!(
                f,
                "replica {id} ({peer_addr}) answered but did not catch up within {}: matched \
                 {matched} of {last_index} (last answer {} ago); it was removed again and the \
                 voters are unchanged",
                secs(*waited_ms),
                secs(*silent_ms)
            ),
            MembershipRefusal::LeaderChanged { id } => write!(
                f,
                "leadership moved while changing replica {id}; it is a voter only if it had \
                 caught up and may be left as a learner: retry the same request"
            ),
            MembershipRefusal::Busy { reason } | MembershipRefusal::Conflict { reason } => {
                f.write_str(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Encode + Decode<()> + PartialEq + fmt::Debug>(v: T) {
        let bytes = bincode::encode_to_vec(&v, bincode::config::standard()).unwrap();
        let (back, _): (T, _) =
            bincode::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn refusals_round_trip_and_name_the_replica() {
        let behind = MembershipRefusal::Behind {
            id: 4,
            peer_addr: "127.0.0.1:7404".into(),
            matched: 10,
            last_index: 900,
            silent_ms: 200,
            waited_ms: 30_000,
        };
        let msg = behind.to_string();
        assert!(msg.contains("replica 4 (127.0.0.1:7404)"), "{msg}");
        assert!(msg.contains("matched 10 of 900"), "{msg}");
        assert!(msg.contains("within 30.0 s"), "{msg}");
        let none = MembershipRefusal::NoAnswer {
            id: 5,
            peer_addr: "10.0.0.9:1".into(),
            waited_ms: 3000,
        };
        assert!(none.to_string().contains("never answered"), "{none}");
        assert_eq!(none.kind(), "no_answer");
        round_trip(behind);
        round_trip(none);
        round_trip(PeerProgress {
            id: 3,
            voter: true,
            reachable: false,
            silent_ms: 4000,
            matched: 7,
            lag: 3,
            lagging: false,
            joining: false,
        });
    }
}
