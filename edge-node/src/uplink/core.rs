//! The uplink session core: a deterministic state machine, no IO.
//!
//! It decides which hub to dial, which spool ranges to send as batches, when
//! to resend, when to trim the spool and when to heartbeat. Inputs are
//! `handle_*` calls carrying the current time (ms) and, where randomness is
//! needed (backoff jitter), a caller-supplied RNG. Outputs are [`Command`]s
//! drained with [`UplinkCore::poll_command`], plus [`UplinkCore::poll_timeout`]
//! for the next deadline. The quinn driver executes the commands; tests
//! assert on them directly (quinn-proto / openraft style).
//!
//! Invariants: a spool record is trimmed only after a hub answered
//! `Committed` for a batch containing it; every record below the durable
//! end is eventually sent again after any connection loss until it is
//! committed; batches never cross an already-committed range.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use rand::Rng;
use strata_protocol::{EdgeResponse, LeaderHint};

/// Tunables for the session core (a subset of the edge's `[uplink]` config).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Hub client addresses to try, in order.
    pub hubs: Vec<SocketAddr>,
    /// Most records in one batch.
    pub max_batch_records: u64,
    /// Most batches awaiting a response at once.
    pub max_inflight: usize,
    /// First reconnect delay, ms.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub backoff_max_ms: u64,
    /// Heartbeat period while connected, ms.
    pub heartbeat_ms: u64,
    /// A heartbeat unanswered for this long means the hub is gone (a
    /// SIGKILLed hub sends nothing, so only silence reveals it), ms.
    pub heartbeat_timeout_ms: u64,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Dial this hub; answer with `handle_connected` or `handle_connect_failed`.
    Connect {
        /// Hub to dial.
        hub: SocketAddr,
    },
    /// Close the current connection (a new `Connect` follows later).
    Disconnect,
    /// Read up to `max_records` records starting at `first_seq` from the
    /// spool, answer at once with `handle_batch_cut`, then send them.
    SendBatch {
        /// Connection this batch belongs to.
        conn: u64,
        /// First spool sequence number.
        first_seq: u64,
        /// Upper bound on records (never crosses a committed range).
        max_records: u64,
    },
    /// Send a heartbeat on the current connection.
    SendHeartbeat {
        /// Connection to use.
        conn: u64,
    },
    /// Every record below `upto` is committed: trim the spool.
    Trim {
        /// Exclusive bound.
        upto: u64,
    },
    /// The region announced a store retention other than the last one
    /// heard: publish it to the ingress, whose past bound on readings
    /// follows it (0: the region keeps data for ever).
    RegionRetention {
        /// Retention, ms.
        retention_ms: u64,
    },
    /// The region's monitor assignments moved to `version`, which this edge
    /// has not applied: fetch them (and any missing modules) on `conn`, hand
    /// them to the workload host, then answer with `handle_sync_done`.
    SyncAssignments {
        /// Connection to use.
        conn: u64,
        /// The version the hub announced.
        version: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// Waiting to redial at `retry_at` ms.
    Down { retry_at: u64 },
    /// A `Connect` is outstanding.
    Dialing { hub: SocketAddr },
    /// Connected; `id` tags commands and responses of this connection.
    Up { hub: SocketAddr, id: u64 },
}

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CoreStats {
    /// Batches sent (including resends).
    pub batches_sent: u64,
    /// Batches committed.
    pub batches_committed: u64,
    /// Records committed by the hub (first acknowledgement only).
    pub records_committed: u64,
    /// Batches sent again after a connection loss or a refusal.
    pub batches_resent: u64,
    /// Successful connections.
    pub connects: u64,
    /// Failed dials and lost connections.
    pub link_failures: u64,
    /// Leader redirects followed.
    pub redirects: u64,
}

/// The uplink session state machine.
#[derive(Debug)]
pub struct UplinkCore {
    cfg: CoreConfig,
    link: Link,
    next_conn_id: u64,
    /// Index into `cfg.hubs` for the next dial without a leader hint.
    next_hub: usize,
    leader_hint: Option<SocketAddr>,
    /// Consecutive failures, for exponential backoff.
    attempt: u32,
    /// Everything below is committed and trimmed (or being trimmed).
    trimmed: u64,
    /// Committed ranges above `trimmed`, start → end (disjoint, not adjacent
    /// to `trimmed`).
    committed: BTreeMap<u64, u64>,
    /// Batches awaiting a response on the current connection, start → end.
    inflight: BTreeMap<u64, u64>,
    /// Next sequence number to cut a batch from on this connection.
    cursor: u64,
    /// One past the last durable record in the spool.
    durable_end: u64,
    /// Highest sequence number ever sent, to count resends.
    sent_high: u64,
    next_heartbeat: u64,
    /// When the oldest unanswered heartbeat of this connection was sent.
    heartbeat_outstanding: Option<u64>,
    /// Assignments version the workload host has applied.
    applied_assignments: u64,
    /// A `SyncAssignments` is outstanding.
    sync_inflight: bool,
    /// The store retention the region announced last.
    region_retention: Option<u64>,
    /// Time before which no new batch is sent (after `Unavailable`).
    pause_until: u64,
    commands: VecDeque<Command>,
    stats: CoreStats,
}

impl UplinkCore {
    /// A core that resumes from spool position `first_unacked` (everything
    /// below was committed before) with records up to `durable_end`.
    pub fn new(cfg: CoreConfig, first_unacked: u64, durable_end: u64, now: u64) -> Self {
        UplinkCore {
            cfg,
            link: Link::Down { retry_at: now },
            next_conn_id: 1,
            next_hub: 0,
            leader_hint: None,
            attempt: 0,
            trimmed: first_unacked,
            committed: BTreeMap::new(),
            inflight: BTreeMap::new(),
            cursor: first_unacked,
            durable_end: durable_end.max(first_unacked),
            sent_high: first_unacked,
            next_heartbeat: now,
            heartbeat_outstanding: None,
            applied_assignments: 0,
            sync_inflight: false,
            region_retention: None,
            pause_until: 0,
            commands: VecDeque::new(),
            stats: CoreStats::default(),
        }
    }

    /// Next command for the driver, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next time `handle_timeout` must be called, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.link {
            Link::Down { retry_at } => Some(retry_at),
            Link::Dialing { .. } => None,
            Link::Up { .. } => {
                let mut t = self.next_heartbeat;
                if self.pause_until > 0 {
                    t = t.min(self.pause_until);
                }
                if let Some(sent) = self.heartbeat_outstanding {
                    t = t.min(sent + self.cfg.heartbeat_timeout_ms);
                }
                Some(t)
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Batches awaiting a response.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// True while connected to a hub.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// The spool grew: records below `durable_end` are durable.
    pub fn handle_records_available(&mut self, durable_end: u64) {
        if durable_end > self.durable_end {
            self.durable_end = durable_end;
            self.fill_window();
        }
    }

    /// Time passed: redial, heartbeat, declare a silent hub dead, or resume
    /// sending when due. Needs an RNG for the backoff after a dead link.
    pub fn handle_timeout(&mut self, now: u64, rng: &mut impl Rng) {
        if let (Link::Up { .. }, Some(sent)) = (&self.link, self.heartbeat_outstanding) {
            if now >= sent + self.cfg.heartbeat_timeout_ms {
                self.commands.push_back(Command::Disconnect);
                self.go_down(now, rng);
                return;
            }
        }
        match self.link {
            Link::Down { retry_at } if now >= retry_at => {
                let hub = self.pick_hub();
                self.link = Link::Dialing { hub };
                self.commands.push_back(Command::Connect { hub });
            }
            Link::Up { id, .. } => {
                if now >= self.next_heartbeat {
                    self.next_heartbeat = now + self.cfg.heartbeat_ms;
                    self.heartbeat_outstanding.get_or_insert(now);
                    self.commands.push_back(Command::SendHeartbeat { conn: id });
                }
                if self.pause_until > 0 && now >= self.pause_until {
                    self.pause_until = 0;
                    self.fill_window();
                }
            }
            _ => {}
        }
    }

    /// The dial succeeded.
    pub fn handle_connected(&mut self, now: u64) -> u64 {
        let hub = match self.link {
            Link::Dialing { hub } => hub,
            // A stale dial result; the driver closes it.
            _ => return 0,
        };
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        self.link = Link::Up { hub, id };
        self.stats.connects += 1;
        self.cursor = self.trimmed;
        self.inflight.clear();
        self.pause_until = 0;
        self.heartbeat_outstanding = Some(now);
        self.commands.push_back(Command::SendHeartbeat { conn: id });
        self.next_heartbeat = now + self.cfg.heartbeat_ms;
        self.fill_window();
        id
    }

    /// The dial failed.
    pub fn handle_connect_failed(&mut self, now: u64, rng: &mut impl Rng) {
        if matches!(self.link, Link::Dialing { .. }) {
            self.leader_hint = None;
            self.go_down(now, rng);
        }
    }

    /// The connection `conn` broke (stream or connection error).
    pub fn handle_connection_lost(&mut self, conn: u64, now: u64, rng: &mut impl Rng) {
        if let Link::Up { id, .. } = self.link {
            if id == conn {
                self.go_down(now, rng);
            }
        }
    }

    /// Any answer to a heartbeat: an ack proves the link; a redirect is
    /// followed (an idle edge learns of a new leader this way); anything
    /// else leaves the heartbeat unanswered, so silence rules apply.
    pub fn handle_heartbeat_response(
        &mut self,
        conn: u64,
        resp: &EdgeResponse,
        now: u64,
        rng: &mut impl Rng,
    ) {
        if !self.is_current(conn) {
            return;
        }
        match resp {
            EdgeResponse::HeartbeatAck {
                assignments_version,
                store_retention_ms,
            }
            | EdgeResponse::PulseAck {
                assignments_version,
                store_retention_ms,
                ..
            } => {
                self.heartbeat_outstanding = None;
                if self.region_retention != Some(*store_retention_ms) {
                    self.region_retention = Some(*store_retention_ms);
                    self.commands.push_back(Command::RegionRetention {
                        retention_ms: *store_retention_ms,
                    });
                }
                // Any difference means "fetch": a rebuilt region may count
                // from a lower version than the one this edge persisted.
                if *assignments_version != self.applied_assignments && !self.sync_inflight {
                    self.sync_inflight = true;
                    self.commands.push_back(Command::SyncAssignments {
                        conn,
                        version: *assignments_version,
                    });
                }
            }
            EdgeResponse::NotLeader { leader } => self.redirect(leader.as_ref(), now, rng),
            _ => {}
        }
    }

    /// The workload host's applied assignments version (at boot, from its
    /// persisted state).
    pub fn set_applied_assignments(&mut self, version: u64) {
        self.applied_assignments = version;
    }

    /// What the workload host says it applied now (0: fetch the set
    /// again). Ignored while a sync is in flight: its end says.
    pub fn refresh_applied_assignments(&mut self, version: u64) {
        if !self.sync_inflight {
            self.applied_assignments = version;
        }
    }

    /// A `SyncAssignments` finished: `applied` is the version now applied
    /// (`None` when the fetch failed; the next heartbeat ack retries).
    pub fn handle_sync_done(&mut self, applied: Option<u64>) {
        self.sync_inflight = false;
        if let Some(v) = applied {
            self.applied_assignments = v;
        }
    }

    /// The driver cut the batch commanded at `first_seq` to `[first_seq, end)`.
    /// An empty cut (`end == first_seq`) means the records are not readable
    /// yet; the core will ask again when more become available.
    pub fn handle_batch_cut(&mut self, conn: u64, first_seq: u64, end: u64) {
        if !self.is_current(conn) {
            return;
        }
        if end <= first_seq {
            self.inflight.remove(&first_seq);
            self.cursor = self.cursor.min(first_seq);
            return;
        }
        self.inflight.insert(first_seq, end);
        self.cursor = end;
        self.stats.batches_sent += 1;
        if first_seq < self.sent_high {
            self.stats.batches_resent += 1;
        }
        self.sent_high = self.sent_high.max(end);
        self.skip_committed();
        self.fill_window();
    }

    /// A hub answered the batch `[first_seq, end)` sent on `conn`.
    pub fn handle_batch_response(
        &mut self,
        conn: u64,
        first_seq: u64,
        resp: &EdgeResponse,
        now: u64,
        rng: &mut impl Rng,
    ) {
        if !self.is_current(conn) {
            // Even a stale Committed is a fact about the hub's state: use it.
            if let EdgeResponse::Committed { count, .. } = resp {
                self.mark_committed(first_seq, first_seq + u64::from(*count));
            }
            return;
        }
        let Some(end) = self.inflight.remove(&first_seq) else {
            // No longer tracked (superseded after an `Unavailable`), but a
            // commit is still a commit.
            if let EdgeResponse::Committed { count, .. } = resp {
                self.mark_committed(first_seq, first_seq + u64::from(*count));
                self.fill_window();
            }
            return;
        };
        match resp {
            EdgeResponse::Committed { .. } => {
                self.attempt = 0;
                self.stats.batches_committed += 1;
                self.mark_committed(first_seq, end);
            }
            EdgeResponse::NotLeader { leader } => self.redirect(leader.as_ref(), now, rng),
            EdgeResponse::Unavailable { .. } | EdgeResponse::Rejected { .. } => {
                // Keep the records and try again shortly: the group may be
                // electing. Never drop: a rejected batch is retried (and
                // alarmed on by the driver) rather than lost.
                self.cursor = self.cursor.min(first_seq);
                self.inflight.retain(|s, _| *s < first_seq);
                self.attempt = self.attempt.saturating_add(1);
                self.pause_until = now + self.backoff(rng);
            }
            EdgeResponse::HeartbeatAck { .. }
            | EdgeResponse::PulseAck { .. }
            | EdgeResponse::Assignments { .. }
            | EdgeResponse::Allocations { .. }
            | EdgeResponse::Artifact { .. } => {}
        }
        self.fill_window();
    }

    /// Leaves the current hub for the leader it named (at once: the hub
    /// told us exactly where to go), or backs off when it named none.
    fn redirect(&mut self, leader: Option<&LeaderHint>, now: u64, rng: &mut impl Rng) {
        self.stats.redirects += 1;
        self.leader_hint = leader.and_then(parse_hint);
        self.commands.push_back(Command::Disconnect);
        if self.leader_hint.is_some() {
            self.reset_for_redial();
            self.link = Link::Down { retry_at: now };
        } else {
            self.go_down(now, rng);
        }
    }

    fn is_current(&self, conn: u64) -> bool {
        matches!(self.link, Link::Up { id, .. } if id == conn)
    }

    fn mark_committed(&mut self, start: u64, end: u64) {
        if end <= self.trimmed {
            return;
        }
        let start = start.max(self.trimmed);
        let newly = end
            - start
            - self
                .committed
                .range(..end)
                .filter(|(s, e)| **e > start && **s < end)
                .map(|(s, e)| (*e).min(end) - (*s).max(start))
                .sum::<u64>();
        self.stats.records_committed += newly;
        // Merge [start, end) into the committed set.
        let mut s = start;
        let mut e = end;
        let overlapping: Vec<(u64, u64)> = self
            .committed
            .range(..=e)
            .filter(|(cs, ce)| **ce >= s && **cs <= e)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (cs, ce) in overlapping {
            self.committed.remove(&cs);
            s = s.min(cs);
            e = e.max(ce);
        }
        self.committed.insert(s, e);
        // Advance the trim point over a contiguous committed prefix.
        if let Some((&cs, &ce)) = self.committed.iter().next() {
            if cs <= self.trimmed {
                self.committed.remove(&cs);
                self.trimmed = ce;
                self.commands.push_back(Command::Trim { upto: ce });
            }
        }
        if self.cursor < self.trimmed {
            self.cursor = self.trimmed;
        }
        self.skip_committed();
    }

    /// Moves the cursor past a committed range it sits at.
    fn skip_committed(&mut self) {
        if let Some(&end) = self.committed.get(&self.cursor) {
            self.cursor = end;
        }
        while let Some((&s, &e)) = self.committed.range(..=self.cursor).next_back() {
            if e > self.cursor && s <= self.cursor {
                self.cursor = e;
            } else {
                break;
            }
        }
    }

    fn fill_window(&mut self) {
        let Link::Up { id, .. } = self.link else {
            return;
        };
        if self.pause_until > 0 {
            return;
        }
        // Only one batch is "being cut" at a time: the driver answers
        // `handle_batch_cut` synchronously, which calls back into here.
        if self.inflight.len() >= self.cfg.max_inflight || self.cursor >= self.durable_end {
            return;
        }
        if self
            .commands
            .iter()
            .any(|c| matches!(c, Command::SendBatch { .. }))
        {
            return;
        }
        let limit = self
            .committed
            .range(self.cursor..)
            .next()
            .map(|(s, _)| *s)
            .unwrap_or(self.durable_end)
            .min(self.durable_end);
        let max_records = (limit - self.cursor).min(self.cfg.max_batch_records);
        if max_records == 0 {
            return;
        }
        self.commands.push_back(Command::SendBatch {
            conn: id,
            first_seq: self.cursor,
            max_records,
        });
    }

    fn pick_hub(&mut self) -> SocketAddr {
        if let Some(h) = self.leader_hint {
            return h;
        }
        let hub = self.cfg.hubs[self.next_hub % self.cfg.hubs.len()];
        self.next_hub = (self.next_hub + 1) % self.cfg.hubs.len();
        hub
    }

    fn reset_for_redial(&mut self) {
        self.inflight.clear();
        self.heartbeat_outstanding = None;
        self.cursor = self.trimmed;
        self.pause_until = 0;
        self.commands
            .retain(|c| !matches!(c, Command::SendBatch { .. } | Command::SendHeartbeat { .. }));
    }

    fn go_down(&mut self, now: u64, rng: &mut impl Rng) {
        // The hub we just lost (or failed to reach) is the worst next
        // choice: forget a hint pointing at it and rotate past it, so a
        // killed leader costs one failure, not one per redial.
        if let Link::Up { hub, .. } | Link::Dialing { hub } = self.link {
            if self.leader_hint == Some(hub) {
                self.leader_hint = None;
            }
            if let Some(i) = self.cfg.hubs.iter().position(|h| *h == hub) {
                self.next_hub = (i + 1) % self.cfg.hubs.len();
            }
        }
        self.stats.link_failures += 1;
        self.reset_for_redial();
        self.attempt = self.attempt.saturating_add(1);
        self.link = Link::Down {
            retry_at: now + self.backoff(rng),
        };
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// edges that lost the same hub do not all redial in lockstep.
    fn backoff(&self, rng: &mut impl Rng) -> u64 {
        let exp = self
            .cfg
            .backoff_min_ms
            .saturating_mul(1u64 << self.attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.cfg.backoff_max_ms).max(1);
        cap / 2 + rng.gen_range(0..=cap / 2)
    }
}

fn parse_hint(h: &LeaderHint) -> Option<SocketAddr> {
    h.addr.parse().ok()
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
