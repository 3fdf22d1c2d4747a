//! How the core's decisions are made: moving an edge to a state and
//! proposing the decision ([`decide`], [`emit`]), the transitions with
//! their messages and classification (down, recovered, restarted, back,
//! the flapping hold), repeating a decision that did not commit, and the
//! rate-limited replication of reports. Free functions over one
//! [`Edge`], called by [`super::core::LivenessCore`]'s handlers.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use strata_protocol::liveness::{Classification, EventKind, Evidence, LivenessState};
use strata_protocol::EdgeStatus;

use super::core::{Boot, CloseKind, Command, CoreConfig, Edge, Now, RETRY_MS};
use crate::fsm::EdgeTransition;

/// Replicates `e`'s report when it changed materially (at most every
/// `report_min_interval_ms`) or every `report_interval_ms`, while the edge
/// is heard from.
pub(super) fn report_if_due(e: &mut Edge, cfg: &CoreConfig, now: Now, out: &mut VecDeque<Command>) {
    let (Some(status), Some(heard)) = (&e.status, e.last_heard) else {
        return;
    };
    let due = match e.report_at.map(|t| now.mono_ms.saturating_sub(t)) {
        None => true,
        Some(s) => {
            s >= cfg.report_interval_ms || (e.report_dirty && s >= cfg.report_min_interval_ms)
        }
    };
    if due && e.silent_ms(now) < cfg.suspect_after_ms {
        e.report_at = Some(now.mono_ms);
        e.report_dirty = false;
        out.push_back(Command::ReplicateReport {
            status: status.clone(),
            facts: e.facts.clone(),
            received_ms: heard.wall_ms,
        });
    }
}

/// Records the report, and whether it changed what placement and monitor
/// reads depend on.
pub(super) fn note_report(e: &mut Edge, status: Arc<EdgeStatus>) {
    let fp = fingerprint(&status);
    if fp != e.report_fp {
        e.report_fp = fp;
        e.report_dirty = true;
    }
    e.status = Some(status);
}

/// A hash of the report's material part: capacity, reservations, the
/// assignments version and each instance's identity, generation, state,
/// restarts and budgets (not its measurements, which change every time).
pub(super) fn fingerprint(s: &EdgeStatus) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.edge.hash(&mut h);
    s.capacity.hash(&mut h);
    s.reserved.hash(&mut h);
    s.assignments_version.hash(&mut h);
    for i in &s.instances {
        (&i.tenant, &i.name, i.generation, &i.state, &i.reason).hash(&mut h);
        (i.restarts, i.memory_mib, i.cpu_millicores).hash(&mut h);
    }
    h.finish()
}

pub(super) fn close_words(how: CloseKind) -> &'static str {
    match how {
        CloseKind::Shutdown => "it shut down",
        CloseKind::Closed => "its connection was closed",
        CloseKind::Reset => "its connection was reset (crash)",
        CloseKind::TimedOut => "its connection idled out",
    }
}

pub(super) fn class_words(c: Classification) -> &'static str {
    match c {
        Classification::None | Classification::Undetermined => {
            "undetermined: a crash or a partition"
        }
        Classification::Shutdown => "it shut down",
        Classification::Crash => "crash",
        Classification::EdgeFailure => "edge failure: its devices report through another edge",
        Classification::Partition => "partition",
    }
}

/// Proposes `e`'s current view (entered at `e.since`) as a decision made
/// at `at`, coming `from`.
pub(super) fn emit(
    edge: &str,
    e: &mut Edge,
    kind: EventKind,
    from: LivenessState,
    at: Now,
    message: String,
    out: &mut VecDeque<Command>,
) {
    let mut liveness = e.record();
    liveness.event_seq = 0;
    e.in_flight.push((e.view, e.since.wall_ms));
    out.push_back(Command::Replicate(EdgeTransition {
        edge: edge.to_owned(),
        kind,
        from,
        at_ms: at.wall_ms,
        liveness,
        message,
    }));
}

/// Moves `e` to `to` now and proposes the decision.
pub(super) fn decide(
    edge: &str,
    e: &mut Edge,
    kind: EventKind,
    to: LivenessState,
    now: Now,
    message: String,
    out: &mut VecDeque<Command>,
) {
    let from = e.view;
    e.view = to;
    e.since = now;
    emit(edge, e, kind, from, now, message, out);
}

pub(super) fn down(
    edge: &str,
    e: &mut Edge,
    now: Now,
    message: String,
    out: &mut VecDeque<Command>,
) {
    e.downs.push_back(now.mono_ms);
    decide(
        edge,
        e,
        EventKind::EdgeDown,
        LivenessState::Down,
        now,
        message,
        out,
    );
}

/// A suspect edge was heard from again with the same boot id.
pub(super) fn recovered(edge: &str, e: &mut Edge, now: Now, out: &mut VecDeque<Command>) {
    let after = now.mono_ms.saturating_sub(e.since.mono_ms);
    e.note(Evidence::Heartbeat);
    let msg = format!("{edge} is up again after {after} ms suspect");
    decide(edge, e, EventKind::EdgeUp, LivenessState::Up, now, msg, out);
}

/// An up, suspect or not yet heard edge heartbeats with a new boot id: it
/// restarted faster than it could be declared down.
pub(super) fn restarted(edge: &str, e: &mut Edge, now: Now, out: &mut VecDeque<Command>) {
    if e.view != LivenessState::Suspect {
        e.evidence.clear();
    }
    e.note(Evidence::NewBootId);
    e.class = Classification::Crash;
    let msg = format!(
        "{edge} restarted (new boot id {:016x}) before it was declared down",
        e.boot_id
    );
    decide(
        edge,
        e,
        EventKind::EdgeBack,
        LivenessState::Up,
        now,
        msg,
        out,
    );
}

/// A down edge heartbeats: back now, or, if it is flapping, once it has
/// heartbeated steadily for the hold time.
pub(super) fn back_or_hold(
    edge: &str,
    e: &mut Edge,
    boot: Boot,
    now: Now,
    cfg: &CoreConfig,
    out: &mut VecDeque<Command>,
) {
    while e
        .downs
        .front()
        .is_some_and(|t| now.mono_ms.saturating_sub(*t) > cfg.flap_window_ms)
    {
        e.downs.pop_front();
    }
    if e.downs.len() >= cfg.flap_downs && cfg.flap_hold_ms > 0 {
        let (since, seen) = e.hold.get_or_insert((now.mono_ms, boot));
        // A new boot id seen once during the hold is what counts.
        if boot != Boot::Unknown && *seen != Boot::New {
            *seen = boot;
        }
        if now.mono_ms.saturating_sub(*since) < cfg.flap_hold_ms {
            return; // held down: the tick declares it back once steady
        }
        let boot = *seen;
        e.hold = None;
        return back(edge, e, boot, now, out);
    }
    back(edge, e, boot, now, out);
}

pub(super) fn back(edge: &str, e: &mut Edge, boot: Boot, now: Now, out: &mut VecDeque<Command>) {
    // Back is back: a hold that the flap window outlived must not linger
    // (a held edge grants no leases, so its `replace-after` instances
    // would wait for ever).
    e.hold = None;
    let down_for = now.wall_ms.saturating_sub(e.down_since_ms(now)).max(0);
    match boot {
        Boot::New => e.note(Evidence::NewBootId),
        Boot::Same => e.note(Evidence::SameBootId),
        Boot::Unknown => e.note(Evidence::Heartbeat),
    }
    e.class = match (e.class, boot) {
        (Classification::Shutdown, _) => Classification::Shutdown,
        (_, Boot::New) => Classification::Crash,
        (_, Boot::Same) => Classification::Partition,
        (other, Boot::Unknown) => other,
    };
    let why = match (e.class, boot) {
        (Classification::Shutdown, _) => "restarted after a shutdown",
        (_, Boot::New) => "restarted with a new boot id (crash)",
        (_, Boot::Same) => "same boot id: the process lived through (partition)",
        (_, Boot::Unknown) => "heartbeating again",
    };
    let msg = format!("{edge} is back after {down_for} ms down: {why}");
    decide(
        edge,
        e,
        EventKind::EdgeBack,
        LivenessState::Up,
        now,
        msg,
        out,
    );
}

/// Re-proposes the current view when the replicated decision differs and
/// nothing is in flight (a failed proposal, or a decision of the previous
/// leader applied after this one's).
pub(super) fn reconcile(edge: &str, e: &mut Edge, now: Now, out: &mut VecDeque<Command>) {
    if !e.in_flight.is_empty() || e.view == LivenessState::Unknown || now.mono_ms < e.retry_at {
        return;
    }
    let replicated = e.replicated.as_ref().map(|r| r.state);
    if replicated == Some(e.view) {
        return;
    }
    let kind = match e.view {
        LivenessState::Up => EventKind::EdgeUp,
        LivenessState::Suspect => EventKind::EdgeSuspect,
        _ => EventKind::EdgeDown,
    };
    let msg = format!("{edge} is {} (decision repeated)", e.view.as_str());
    let from = replicated.unwrap_or(LivenessState::Unknown);
    emit(edge, e, kind, from, now, msg, out);
    e.retry_at = now.mono_ms + RETRY_MS;
}
