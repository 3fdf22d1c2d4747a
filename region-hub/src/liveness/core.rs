//! The failure detector's core: events in, commands out, no IO, no clock.
//!
//! Inputs are `handle_*` calls carrying [`Now`] (a monotonic time for the
//! timers, a wall-clock time for what is recorded); outputs are
//! [`Command`]s drained with [`LivenessCore::poll_command`], and
//! [`LivenessCore::poll_timeout`] says when [`LivenessCore::handle_tick`]
//! must run next. Tests assert on command lists (`core_tests.rs`).
//!
//! Per edge the core keeps its view (unknown → up → suspect → down, and
//! back), the evidence of the current failure episode, the last report,
//! the open connections and the last replicated decision. Only the leader
//! decides: a follower's core holds nothing but connections.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use strata_protocol::liveness::{Classification, EdgeLiveness, EventKind, Evidence, LivenessState};
use strata_protocol::scheduling::NodeFacts;
use strata_protocol::EdgeStatus;

use super::transitions::{
    back, back_or_hold, class_words, close_words, decide, down, emit, note_report, reconcile,
    recovered, report_if_due, restarted,
};
use crate::fsm::EdgeTransition;

/// The core's tunables (ms), from `[liveness]` in `hub.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// No heartbeat (nor batch) for this long makes an up edge suspect.
    pub suspect_after_ms: u64,
    /// A suspect edge not heard from for this long more is down.
    pub grace_ms: u64,
    /// A new leader declares nothing down before this much of its own
    /// leadership has passed.
    pub leader_grace_ms: u64,
    /// An edge's report is replicated at least this often while it
    /// heartbeats.
    pub report_interval_ms: u64,
    /// ...and on a material change, at most this often.
    pub report_min_interval_ms: u64,
    /// An edge declared down this many times within `flap_window_ms` is
    /// flapping: it is declared back only after heartbeating steadily for
    /// `flap_hold_ms`.
    pub flap_downs: usize,
    /// See `flap_downs`.
    pub flap_window_ms: u64,
    /// See `flap_downs`.
    pub flap_hold_ms: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            suspect_after_ms: 600,
            grace_ms: 300,
            leader_grace_ms: 5_000,
            report_interval_ms: 30_000,
            report_min_interval_ms: 1_000,
            flap_downs: 3,
            flap_window_ms: 60_000,
            flap_hold_ms: 10_000,
        }
    }
}

/// A replicated decision that failed is proposed again after this long.
pub const RETRY_MS: u64 = 1_000;

/// The time of an input: monotonic ms for timers, wall-clock ms since the
/// Unix epoch for what is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin).
    pub mono_ms: u64,
    /// Wall clock, ms since the Unix epoch.
    pub wall_ms: i64,
}

/// How an edge's QUIC connection to this hub ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// The edge closed it with the shutdown code (it is stopping).
    Shutdown,
    /// The edge closed it otherwise (it will redial), or a transport error.
    Closed,
    /// A stateless reset: the edge's endpoint lost the connection.
    Reset,
    /// No packet for the idle timeout.
    TimedOut,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Propose this decision through Raft. Its application comes back as
    /// [`LivenessCore::handle_applied`]; a failed proposal as
    /// [`LivenessCore::handle_replicate_failed`].
    Replicate(EdgeTransition),
    /// Propose the edge's latest report (an `EdgeReport` command, with
    /// its facts when it sent any; an `EdgeHeartbeat` otherwise).
    ReplicateReport {
        /// The report.
        status: Arc<EdgeStatus>,
        /// Its labels and pools, as last sent.
        facts: Option<Arc<NodeFacts>>,
        /// When it arrived, ms since the Unix epoch.
        received_ms: i64,
    },
}

/// Whether a returning edge's boot id differs from the one known before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Boot {
    /// A new process: it restarted.
    New,
    /// The same process: it lived through.
    Same,
    /// Not known (no boot id before, or none sent).
    Unknown,
}

/// One edge as the core tracks it.
#[derive(Debug, Clone)]
pub(super) struct Edge {
    pub(super) view: LivenessState,
    pub(super) class: Classification,
    /// Evidence of the current (or last) failure episode.
    pub(super) evidence: Vec<Evidence>,
    pub(super) boot_id: u64,
    /// When `view` was entered.
    pub(super) since: Now,
    pub(super) last_heard: Option<Now>,
    pub(super) status: Option<Arc<EdgeStatus>>,
    /// Its labels and pools, as last sent.
    pub(super) facts: Option<Arc<NodeFacts>>,
    /// The last decision applied.
    pub(super) replicated: Option<EdgeLiveness>,
    /// Decisions proposed and not applied yet: (state, since_ms).
    pub(super) in_flight: Vec<(LivenessState, i64)>,
    pub(super) retry_at: u64,
    pub(super) report_at: Option<u64>,
    pub(super) report_fp: u64,
    pub(super) report_dirty: bool,
    /// When recent down decisions were made (flap detection).
    pub(super) downs: VecDeque<u64>,
    /// A flapping down edge heartbeating steadily since then, and what
    /// its boot id said.
    pub(super) hold: Option<(u64, Boot)>,
    /// Devices seen moving away during this episode.
    pub(super) moved: u32,
}

impl Edge {
    fn new(prior: Option<EdgeLiveness>, now: Now) -> Edge {
        let (class, evidence, boot_id) = match &prior {
            Some(p) => (p.classification, p.evidence.clone(), p.boot_id),
            None => (Classification::None, Vec::new(), 0),
        };
        Edge {
            view: LivenessState::Unknown,
            class,
            evidence,
            boot_id,
            since: now,
            last_heard: None,
            status: None,
            facts: None,
            replicated: prior,
            in_flight: Vec::new(),
            retry_at: 0,
            report_at: None,
            report_fp: 0,
            report_dirty: false,
            downs: VecDeque::new(),
            hold: None,
            moved: 0,
        }
    }

    pub(super) fn silent_ms(&self, now: Now) -> u64 {
        self.last_heard
            .map_or(u64::MAX, |h| now.mono_ms.saturating_sub(h.mono_ms))
    }

    pub(super) fn note(&mut self, e: Evidence) {
        if !self.evidence.contains(&e) {
            self.evidence.push(e);
        }
    }

    /// Starts a failure episode (an up edge turning suspect or down).
    pub(super) fn new_episode(&mut self, first: Evidence, class: Classification) {
        self.evidence = vec![first];
        self.class = class;
        self.moved = 0;
    }

    /// Since when the edge is down, ms since the Unix epoch: this leader's
    /// decision, or the replicated one it started from.
    pub(super) fn down_since_ms(&self, now: Now) -> i64 {
        match (self.view, &self.replicated) {
            (LivenessState::Down, _) => self.since.wall_ms,
            (_, Some(r)) if r.state == LivenessState::Down => r.since_ms,
            _ => now.wall_ms,
        }
    }

    /// The edge's current view as a liveness record (for reads, and the
    /// body of a decision).
    pub(super) fn record(&self) -> EdgeLiveness {
        let down = self.view == LivenessState::Down;
        EdgeLiveness {
            state: self.view,
            classification: self.class,
            evidence: self.evidence.clone(),
            boot_id: self.boot_id,
            since_ms: self.since.wall_ms,
            last_heartbeat_ms: self.last_heard.map_or_else(
                || self.replicated.as_ref().map_or(0, |r| r.last_heartbeat_ms),
                |h| h.wall_ms,
            ),
            detection_ms: match self.last_heard {
                Some(h) if down && h.mono_ms <= self.since.mono_ms => {
                    Some(self.since.mono_ms - h.mono_ms)
                }
                _ => self
                    .replicated
                    .as_ref()
                    .filter(|r| down && r.state == LivenessState::Down)
                    .and_then(|r| r.detection_ms),
            },
            event_seq: self.replicated.as_ref().map_or(0, |r| r.event_seq),
        }
    }
}

/// The failure detector. See the module docs.
#[derive(Debug)]
pub struct LivenessCore {
    cfg: CoreConfig,
    /// When this replica became leader (monotonic ms); `None` on followers.
    leader_since: Option<u64>,
    pub(super) edges: BTreeMap<String, Edge>,
    /// Open connections per edge (kept on followers too).
    conns: BTreeMap<String, BTreeSet<u64>>,
    commands: VecDeque<Command>,
}

impl LivenessCore {
    /// A core that is not leading.
    pub fn new(cfg: CoreConfig) -> Self {
        LivenessCore {
            cfg,
            leader_since: None,
            edges: BTreeMap::new(),
            conns: BTreeMap::new(),
            commands: VecDeque::new(),
        }
    }

    /// Next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader_since.is_some()
    }

    /// Edges tracked.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// True when no edge is tracked.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// This replica started leading, knowing `edges` (with their last
    /// replicated decision, if any): every edge starts unknown.
    pub fn handle_leadership_gained(
        &mut self,
        edges: Vec<(String, Option<EdgeLiveness>)>,
        now: Now,
    ) {
        self.leader_since = Some(now.mono_ms);
        self.commands.clear();
        self.edges = edges
            .into_iter()
            .map(|(name, prior)| (name, Edge::new(prior, now)))
            .collect();
    }

    /// This replica stopped leading: the soft state goes (the next leader
    /// rebuilds its own).
    pub fn handle_leadership_lost(&mut self) {
        self.leader_since = None;
        self.commands.clear();
        self.edges.clear();
    }

    /// A heartbeat from `edge` with its boot id (0: an older edge that
    /// sends none) and report.
    pub fn handle_heartbeat(
        &mut self,
        edge: &str,
        boot_id: u64,
        status: Arc<EdgeStatus>,
        now: Now,
    ) {
        if !self.is_leader() {
            return;
        }
        let cfg = self.cfg.clone();
        let e = self
            .edges
            .entry(edge.to_owned())
            .or_insert_with(|| Edge::new(None, now));
        let boot = match (e.boot_id, boot_id) {
            (0, _) | (_, 0) => Boot::Unknown,
            (a, b) if a == b => Boot::Same,
            _ => Boot::New,
        };
        if boot_id != 0 {
            e.boot_id = boot_id;
        }
        if e.silent_ms(now) >= cfg.suspect_after_ms {
            e.hold = None; // a flapping edge's steady run was broken
        }
        e.last_heard = Some(now);
        note_report(e, status);
        let out = &mut self.commands;
        match e.view {
            LivenessState::Unknown => match e.replicated.as_ref().map(|r| r.state) {
                Some(LivenessState::Down) => back_or_hold(edge, e, boot, now, &cfg, out),
                _ if boot == Boot::New => restarted(edge, e, now, out),
                Some(LivenessState::Up) => {
                    // Replicated up already: the new leader agrees, quietly.
                    e.view = LivenessState::Up;
                    e.since = now;
                }
                _ => {
                    let msg = format!("{edge} is up (boot id {:016x})", e.boot_id);
                    decide(edge, e, EventKind::EdgeUp, LivenessState::Up, now, msg, out);
                }
            },
            LivenessState::Up | LivenessState::Suspect if boot == Boot::New => {
                restarted(edge, e, now, out)
            }
            LivenessState::Up => {}
            LivenessState::Suspect => recovered(edge, e, now, out),
            LivenessState::Down => back_or_hold(edge, e, boot, now, &cfg, out),
        }
        self.maybe_report(edge, now);
    }

    /// The labels and pools `edge` sent with its next heartbeat (call
    /// before [`LivenessCore::handle_heartbeat`]): a change is material,
    /// so the report is replicated soon.
    pub fn handle_facts(&mut self, edge: &str, facts: Arc<NodeFacts>, now: Now) {
        if !self.is_leader() {
            return;
        }
        let e = self
            .edges
            .entry(edge.to_owned())
            .or_insert_with(|| Edge::new(None, now));
        if e.facts.as_deref() != Some(&facts) {
            e.facts = Some(facts);
            e.report_dirty = true;
        }
    }

    /// Whether this leader may renew (or grant) `edge`'s leases now: it
    /// leads, it has decided the edge is up (not suspect, down or held down
    /// for flapping), and that decision is in the applied log. See
    /// `crate::scheduler` for why each condition is needed.
    pub fn lease_renewable(&self, edge: &str) -> bool {
        if !self.is_leader() {
            return false;
        }
        self.edges.get(edge).is_some_and(|e| {
            e.view == LivenessState::Up
                && e.hold.is_none()
                && e.replicated
                    .as_ref()
                    .is_some_and(|r| r.state == LivenessState::Up)
        })
    }

    /// Why [`LivenessCore::lease_renewable`] says no for `edge` (for logs).
    pub fn lease_refusal(&self, edge: &str) -> String {
        if !self.is_leader() {
            return "not the leader".to_owned();
        }
        match self.edges.get(edge) {
            None => "edge unknown to the failure detector".to_owned(),
            Some(e) => format!(
                "view {:?}, held {}, replicated {:?}",
                e.view,
                e.hold.is_some(),
                e.replicated.as_ref().map(|r| (r.state, r.event_seq))
            ),
        }
    }

    /// A batch from `edge`: alive and connected, though without a report.
    pub fn handle_activity(&mut self, edge: &str, now: Now) {
        if !self.is_leader() {
            return;
        }
        let Some(e) = self.edges.get_mut(edge) else {
            return;
        };
        e.last_heard = Some(now);
        if e.view == LivenessState::Suspect {
            recovered(edge, e, now, &mut self.commands);
        }
    }

    /// `edge` opened connection `conn` to this hub.
    pub fn handle_connection_opened(&mut self, edge: &str, conn: u64) {
        self.conns.entry(edge.to_owned()).or_default().insert(conn);
    }

    /// `edge`'s connection `conn` ended, as `how`. Evidence only when it
    /// was the edge's last open connection to this hub.
    pub fn handle_connection_closed(&mut self, edge: &str, conn: u64, how: CloseKind, now: Now) {
        if let Some(set) = self.conns.get_mut(edge) {
            set.remove(&conn);
            if !set.is_empty() {
                return;
            }
            self.conns.remove(edge);
        }
        if !self.is_leader() {
            return;
        }
        let Some(e) = self.edges.get_mut(edge) else {
            return;
        };
        let out = &mut self.commands;
        let (evidence, class) = match how {
            CloseKind::Shutdown => (Evidence::ShutdownClose, Classification::Shutdown),
            CloseKind::Reset => (Evidence::ConnectionReset, Classification::Crash),
            CloseKind::Closed => (Evidence::ConnectionClosed, Classification::Undetermined),
            CloseKind::TimedOut => (Evidence::IdleTimeout, Classification::Undetermined),
        };
        let shutdown = how == CloseKind::Shutdown;
        match e.view {
            LivenessState::Up | LivenessState::Unknown => {
                if e.view == LivenessState::Unknown && !shutdown {
                    // Not heard under this leader yet: only evidence.
                    e.note(evidence);
                    return;
                }
                e.new_episode(evidence, class);
                let msg = format!(
                    "{edge} is {}: {}",
                    if shutdown { "down" } else { "suspect" },
                    close_words(how)
                );
                if shutdown {
                    down(edge, e, now, msg, out);
                } else {
                    decide(
                        edge,
                        e,
                        EventKind::EdgeSuspect,
                        LivenessState::Suspect,
                        now,
                        msg,
                        out,
                    );
                }
            }
            LivenessState::Suspect => {
                e.note(evidence);
                if class != Classification::Undetermined {
                    e.class = class;
                }
                if shutdown {
                    let msg = format!("{edge} is down: {}", close_words(how));
                    down(edge, e, now, msg, out);
                }
            }
            LivenessState::Down => {
                e.note(evidence);
                let stronger =
                    matches!(e.class, Classification::None | Classification::Undetermined)
                        && class != Classification::Undetermined;
                if stronger {
                    e.class = class;
                    let msg = format!(
                        "{edge} reclassified {}: {}",
                        class.as_str(),
                        close_words(how)
                    );
                    emit(
                        edge,
                        e,
                        EventKind::EdgeReclassified,
                        LivenessState::Down,
                        now,
                        msg,
                        out,
                    );
                }
            }
        }
    }

    /// `devices` of `from` now report through `to`. While `from` is silent
    /// this says its devices are fine and the edge (or its own network)
    /// is not: an edge failure.
    pub fn handle_devices_moved(&mut self, from: &str, to: &str, devices: u32, now: Now) {
        if !self.is_leader() {
            return;
        }
        let Some(e) = self.edges.get_mut(from) else {
            return;
        };
        let silent = matches!(e.view, LivenessState::Suspect | LivenessState::Down)
            || (e.view == LivenessState::Unknown
                && e.replicated.as_ref().map(|r| r.state) == Some(LivenessState::Down));
        if !silent {
            return; // devices roam between live edges all the time
        }
        e.note(Evidence::DevicesMoved);
        e.moved = e.moved.saturating_add(devices);
        if matches!(e.class, Classification::None | Classification::Undetermined) {
            e.class = Classification::EdgeFailure;
            if e.view == LivenessState::Down {
                let msg = format!(
                    "{from} reclassified edge-failure: {} of its devices now report through {to}",
                    e.moved
                );
                emit(
                    from,
                    e,
                    EventKind::EdgeReclassified,
                    LivenessState::Down,
                    now,
                    msg,
                    &mut self.commands,
                );
            }
        }
    }

    /// A decision for `edge` was applied (in apply order; also the
    /// previous leader's late ones).
    pub fn handle_applied(&mut self, edge: &str, liveness: EdgeLiveness, now: Now) {
        if !self.is_leader() {
            return;
        }
        let e = self
            .edges
            .entry(edge.to_owned())
            .or_insert_with(|| Edge::new(None, now));
        e.in_flight
            .retain(|(s, at)| !(*s == liveness.state && *at == liveness.since_ms));
        if e.replicated
            .as_ref()
            .is_none_or(|r| r.event_seq < liveness.event_seq)
        {
            e.replicated = Some(liveness);
        }
    }

    /// Proposing the decision (`state` since `since_ms`) for `edge` failed:
    /// the view is proposed again (as it then stands) after [`RETRY_MS`].
    pub fn handle_replicate_failed(
        &mut self,
        edge: &str,
        state: LivenessState,
        since_ms: i64,
        now: Now,
    ) {
        if let Some(e) = self.edges.get_mut(edge) {
            e.in_flight
                .retain(|(s, at)| !(*s == state && *at == since_ms));
            e.retry_at = now.mono_ms + RETRY_MS;
        }
    }

    /// Time passed: suspect the silent, declare the suspect down, declare
    /// down the edges this leader never heard from once its grace is over,
    /// release held flapping edges, retry failed decisions and replicate
    /// due reports.
    pub fn handle_tick(&mut self, now: Now) {
        let Some(leader_since) = self.leader_since else {
            return;
        };
        let cfg = self.cfg.clone();
        let in_grace = now.mono_ms < leader_since + cfg.leader_grace_ms;
        let out = &mut self.commands;
        for (name, e) in self.edges.iter_mut() {
            let silent = e.silent_ms(now);
            match e.view {
                LivenessState::Up if silent >= cfg.suspect_after_ms => {
                    e.new_episode(Evidence::MissedHeartbeats, Classification::Undetermined);
                    let msg = format!("{name} is suspect: no heartbeat for {silent} ms");
                    decide(
                        name,
                        e,
                        EventKind::EdgeSuspect,
                        LivenessState::Suspect,
                        now,
                        msg,
                        out,
                    );
                }
                // A suspect edge was heard under this leader (only those
                // become suspect): losing it is no artifact of the leader
                // change, so the leader grace does not hold it back.
                LivenessState::Suspect
                    if now.mono_ms.saturating_sub(e.since.mono_ms) >= cfg.grace_ms
                        && silent >= cfg.grace_ms =>
                {
                    e.note(Evidence::MissedHeartbeats);
                    let msg = format!(
                        "{name} is down: no heartbeat for {silent} ms ({})",
                        class_words(e.class)
                    );
                    down(name, e, now, msg, out);
                }
                LivenessState::Unknown if !in_grace && e.last_heard.is_none() => {
                    if e.replicated.as_ref().map(|r| r.state) == Some(LivenessState::Down) {
                        // Down already: this leader agrees, quietly.
                        e.view = LivenessState::Down;
                        if let Some(r) = &e.replicated {
                            e.since.wall_ms = r.since_ms;
                        }
                    } else {
                        e.new_episode(Evidence::LeaderChange, Classification::Undetermined);
                        let msg = format!(
                            "{name} is down: not heard from in the {} ms since this hub became leader",
                            now.mono_ms.saturating_sub(leader_since)
                        );
                        down(name, e, now, msg, out);
                    }
                }
                LivenessState::Down => {
                    if e.hold.is_some() && silent >= cfg.suspect_after_ms {
                        e.hold = None;
                    }
                    if let Some((since, boot)) = e.hold {
                        if now.mono_ms.saturating_sub(since) >= cfg.flap_hold_ms {
                            e.hold = None;
                            back(name, e, boot, now, out);
                        }
                    }
                }
                _ => {}
            }
            reconcile(name, e, now, out);
            report_if_due(e, &cfg, now, out);
        }
    }

    /// When [`LivenessCore::handle_tick`] must run next (monotonic ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        let leader_since = self.leader_since?;
        let grace_end = leader_since + self.cfg.leader_grace_ms;
        let c = &self.cfg;
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for e in self.edges.values() {
            let heard = e.last_heard.map(|h| h.mono_ms);
            match (e.view, heard) {
                (LivenessState::Up, Some(h)) => at(h + c.suspect_after_ms),
                (LivenessState::Suspect, h) => {
                    at((e.since.mono_ms + c.grace_ms).max(h.map_or(0, |h| h + c.grace_ms)))
                }
                (LivenessState::Unknown, None) => at(grace_end),
                _ => {}
            }
            if let Some((h, _)) = e.hold {
                at(h + c.flap_hold_ms);
            }
            if e.in_flight.is_empty()
                && e.view != LivenessState::Unknown
                && e.replicated.as_ref().map(|r| r.state) != Some(e.view)
            {
                at(e.retry_at);
            }
            if let (Some(_), Some(last)) = (&e.status, e.report_at) {
                at(last + c.report_interval_ms);
                if e.report_dirty {
                    at(last + c.report_min_interval_ms);
                }
            }
        }
        next
    }

    fn maybe_report(&mut self, edge: &str, now: Now) {
        if let Some(e) = self.edges.get_mut(edge) {
            report_if_due(e, &self.cfg, now, &mut self.commands);
        }
    }
}
