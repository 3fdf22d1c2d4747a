//! Leases of `replace-after` instances: the edge half of fencing.
//!
//! The region may run a replacement of a `replace-after` instance elsewhere
//! once this edge has been silent for the lease duration plus a margin. So
//! the edge must have stopped it by then, judged on its own monotonic clock
//! and never later than the region's view:
//! - A desired set fetched from the region grants a lease to each
//!   `replace-after` instance it lists, counted from when the fetch request
//!   was *sent* (`DesiredSet::granted_at_ms`): the region answered after
//!   that, so its lease ends no earlier than ours.
//! - [`Lifecycle::handle_lease_renewed`] extends every held lease to
//!   `sent_at + duration`, `sent_at` being when the acknowledged heartbeat
//!   was sent, for the same reason.
//! - At expiry (a `handle_timeout` at or after it, or any input that runs
//!   the expiry check first) the instance is stopped with
//!   [`StopReason::LeaseExpired`] and reported; it then stays in
//!   [`Phase::LeaseLost`]. A renewal that arrives late does not bring it
//!   back: only a new desired set, which the region sends only for
//!   allocations that are still this edge's, grants a lease again.
//! - A set read from disk after a reboot grants nothing: such instances
//!   wait in [`Phase::WaitingForLease`] until the region confirms them.
//! - `keep` instances have no lease ([`Lease::NotNeeded`]) and are never
//!   stopped because the region is unreachable.

use super::{Lifecycle, Phase};
use crate::workload::command::{Command, Event, StopReason};
use crate::workload::model::{DisconnectPolicy, InstanceKey};

/// The lease of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// A `keep` instance: runs without a lease.
    NotNeeded,
    /// A `replace-after` instance that has not been granted a lease since
    /// it became desired here.
    NotGranted,
    /// Held until `expires_at_ms`.
    Held {
        /// End of the lease, ms (core clock).
        expires_at_ms: u64,
        /// Duration a renewal extends it by, ms.
        lease_ms: u64,
    },
    /// Ran out at `at_ms`; only a new grant brings it back.
    Expired {
        /// When it ran out, ms.
        at_ms: u64,
        /// Its duration, ms.
        lease_ms: u64,
    },
}

impl Lease {
    /// The lease an instance of `policy` starts with.
    pub(super) fn initial(policy: DisconnectPolicy) -> Lease {
        match policy {
            DisconnectPolicy::Keep => Lease::NotNeeded,
            DisconnectPolicy::ReplaceAfter { .. } => Lease::NotGranted,
        }
    }

    /// Whether the instance may run at `now_ms`.
    pub fn may_run(&self, now_ms: u64) -> bool {
        match *self {
            Lease::NotNeeded => true,
            Lease::Held { expires_at_ms, .. } => now_ms < expires_at_ms,
            Lease::NotGranted | Lease::Expired { .. } => false,
        }
    }

    /// When a held lease runs out.
    pub fn expires_at(&self) -> Option<u64> {
        match *self {
            Lease::Held { expires_at_ms, .. } => Some(expires_at_ms),
            _ => None,
        }
    }

    /// Applies a desired set's grant (`granted_at_ms`: when its request was
    /// sent; `None`: read from disk, grants nothing). Returns whether the
    /// instance may run now where it could not before.
    pub(super) fn grant(
        &mut self,
        policy: DisconnectPolicy,
        granted_at_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        let DisconnectPolicy::ReplaceAfter { lease_ms } = policy else {
            *self = Lease::NotNeeded;
            return false;
        };
        let Some(from) = granted_at_ms else {
            return false;
        };
        let until = from.saturating_add(lease_ms);
        if until <= now_ms {
            // The grant is older than the lease: worth nothing.
            return false;
        }
        let could = self.may_run(now_ms);
        *self = match *self {
            Lease::Held { expires_at_ms, .. } => Lease::Held {
                expires_at_ms: expires_at_ms.max(until),
                lease_ms,
            },
            _ => Lease::Held {
                expires_at_ms: until,
                lease_ms,
            },
        };
        !could
    }

    /// Extends a held lease to `sent_at_ms + duration`. Nothing else
    /// changes: a lease not held is not renewed.
    fn renew(&mut self, sent_at_ms: u64) {
        if let Lease::Held {
            expires_at_ms,
            lease_ms,
        } = *self
        {
            *self = Lease::Held {
                expires_at_ms: expires_at_ms.max(sent_at_ms.saturating_add(lease_ms)),
                lease_ms,
            };
        }
    }
}

impl Lifecycle {
    /// The region acknowledged a heartbeat this edge sent at `sent_at_ms`:
    /// every held lease now runs at least until `sent_at_ms` plus its
    /// duration. Leases that ran out by `now_ms` stay expired, so a late
    /// acknowledgement never resurrects an instance.
    pub fn handle_lease_renewed(&mut self, sent_at_ms: u64, now_ms: u64) {
        self.expire_leases(now_ms);
        for i in self.instances.values_mut() {
            i.lease.renew(sent_at_ms);
        }
    }

    /// Whether some desired `replace-after` instance waits for the region
    /// to grant it a lease (never granted here, or expired): the host then
    /// asks the region for the desired set again.
    pub fn awaiting_grant(&self) -> bool {
        self.instances
            .values()
            .any(|i| matches!(i.lease, Lease::NotGranted | Lease::Expired { .. }))
    }

    /// Expires every held lease that ran out by `now_ms`: its instance is
    /// stopped (or kept from starting) and the expiry reported.
    pub(super) fn expire_leases(&mut self, now_ms: u64) {
        let due: Vec<InstanceKey> = self
            .instances
            .iter()
            .filter(|(_, i)| i.lease.expires_at().is_some_and(|t| t <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let mut released = false;
        for key in due {
            let Some(i) = self.instances.get_mut(&key) else {
                continue;
            };
            let Lease::Held {
                expires_at_ms,
                lease_ms,
            } = i.lease
            else {
                continue;
            };
            i.lease = Lease::Expired {
                at_ms: expires_at_ms,
                lease_ms,
            };
            let fence = i.want.fence.clone();
            let generation = i.want.generation;
            released |= i.phase.holds_budget();
            match &i.phase {
                Phase::Starting | Phase::Running => {
                    let reason = StopReason::LeaseExpired {
                        fence: fence.clone(),
                        expired_at_ms: expires_at_ms,
                        lease_ms,
                    };
                    i.phase = Phase::Stopping {
                        reason: reason.clone(),
                    };
                    i.started_at_ms = None;
                    i.usage = None;
                    self.commands.push_back(Command::Stop {
                        key: key.clone(),
                        reason,
                    });
                }
                Phase::Backoff { .. }
                | Phase::WaitingForModule
                | Phase::WaitingForLease
                | Phase::Preempted { .. }
                | Phase::Refused(_) => {
                    i.phase = Phase::LeaseLost {
                        fence: fence.clone(),
                        expired_at_ms: expires_at_ms,
                    };
                }
                // Already not running, for another reason that stands.
                Phase::CrashLooping { .. }
                | Phase::Stopped { .. }
                | Phase::Stopping { .. }
                | Phase::LeaseLost { .. } => {}
            }
            self.commands.push_back(Command::Report {
                key,
                generation,
                event: Event::LeaseExpired {
                    fence,
                    expired_at_ms: expires_at_ms,
                    lease_ms,
                },
            });
        }
        if released {
            self.retry_waiting(now_ms);
        }
    }
}
