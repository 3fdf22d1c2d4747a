//! The sans-IO publishing core of one MQTT connection.
//!
//! A [`Session`] decides what goes out next for the devices multiplexed on
//! its connection: retransmissions first, then new readings in round-robin
//! order (reading `i` of every device before reading `i + 1`), paced by the
//! per-device rate (or, in trace mode, by a [`TracePacer`]) and bounded by
//! the in-flight window. It tracks packet id →
//! (device, seq, send time) for QoS 1 until the PUBACK arrives. It never
//! touches the clock or a socket: `now` is passed in and the driver executes
//! the returned [`Next`] steps.
//!
//! At-least-once: a publish leaves the window only on its PUBACK. When the
//! connection drops, every unacked publish is queued for retransmission with
//! the DUP flag, in original send order, before anything new.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::FleetConfig;
use crate::model;
use crate::trace::TracePacer;

/// One unacknowledged QoS 1 publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inflight {
    slot: u32,
    seq: u64,
    sent_at: Instant,
    order: u64,
    due_ms: Option<u64>,
}

/// A publish the driver must write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// MQTT packet id (0 for QoS 0).
    pub pkid: u16,
    /// Index of the device in this session's device list.
    pub slot: u32,
    /// Reading index, also the payload's `seq`.
    pub seq: u64,
    /// A retransmission (DUP flag set).
    pub dup: bool,
    /// Trace mode: when the reading was due, in ms after the session's
    /// start; its timestamp is `start-ts-ms` plus this. `None` in constant
    /// rate mode, where the timestamp is [`model::ts_ms`].
    pub due_ms: Option<u64>,
}

/// How new readings are spaced.
#[derive(Debug, Clone)]
enum Pacing {
    /// As fast as the window allows.
    Unlimited,
    /// Seconds between two publishes of this connection.
    Constant(f64),
    /// Following the trace; `next` is when the reading at `cursor` is due,
    /// in seconds after `start`.
    Trace { pacer: TracePacer, next: f64 },
}

/// What the connection should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Write this publish.
    Send(Outgoing),
    /// The next reading is due at this instant (rate pacing).
    Wait(Instant),
    /// The in-flight window is full: wait for PUBACKs.
    WindowFull,
    /// Nothing more to generate (count reached or stopped); PUBACKs may
    /// still be outstanding, see [`Session::finished`].
    Idle,
}

/// Cumulative per-session counts, read by the driver for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Readings published for the first time.
    pub sent: u64,
    /// PUBACKs matched to an outstanding publish.
    pub acked: u64,
    /// Publishes sent again (DUP) after a reconnect.
    pub retransmits: u64,
    /// Readings skipped by a dropout anomaly (their seq is never sent).
    pub dropped: u64,
    /// PUBACKs for no outstanding packet id (ignored).
    pub unknown_acks: u64,
}

/// The publishing state of one connection; see the module docs.
#[derive(Debug)]
pub struct Session {
    devices: Vec<u32>,
    qos1: bool,
    /// Next (slot, seq) is `(cursor % m, cursor / m)`.
    cursor: u64,
    /// `count * m`, when bounded.
    end: Option<u64>,
    pacing: Pacing,
    start: Instant,
    /// Indexed by packet id; id 0 is never used.
    slots: Vec<Option<Inflight>>,
    free: Vec<u16>,
    in_flight: usize,
    retransmit: VecDeque<u16>,
    order: u64,
    stopped: bool,
    counters: Counters,
}

impl Session {
    /// A session publishing for the given global device indices (non-empty),
    /// with reading 0 of the first device due at `start`.
    pub fn new(devices: Vec<u32>, cfg: &FleetConfig, start: Instant) -> Session {
        let m = devices.len().max(1) as u64;
        let window = cfg.inflight.clamp(1, u32::from(u16::MAX)) as u16;
        Session {
            qos1: cfg.qos >= 1,
            cursor: 0,
            end: cfg.count.map(|k| k.saturating_mul(m)),
            pacing: match &cfg.trace {
                Some(spec) => Pacing::Trace {
                    pacer: TracePacer::new(spec.clone(), m as f64 / f64::from(cfg.devices.max(1))),
                    next: 0.0,
                },
                None if cfg.rate_per_device > 0.0 => {
                    Pacing::Constant(1.0 / (cfg.rate_per_device * m as f64))
                }
                None => Pacing::Unlimited,
            },
            start,
            slots: vec![None; usize::from(window) + 1],
            free: (1..=window).rev().collect(),
            in_flight: 0,
            retransmit: VecDeque::new(),
            order: 0,
            stopped: false,
            counters: Counters::default(),
            devices,
        }
    }

    /// The global device index of a slot.
    pub fn device(&self, slot: u32) -> u32 {
        self.devices[slot as usize]
    }

    /// The devices of this session, by slot.
    pub fn devices(&self) -> &[u32] {
        &self.devices
    }

    /// Cumulative counts.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Unacknowledged QoS 1 publishes (including those awaiting resend).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// No new readings will be generated.
    pub fn generation_done(&self) -> bool {
        self.stopped || self.count_reached()
    }

    /// All `count` readings of every device have been generated (false for
    /// unbounded sessions).
    pub fn count_reached(&self) -> bool {
        self.end.is_some_and(|e| self.cursor >= e)
    }

    /// Everything generated has been acknowledged and nothing more will be.
    pub fn finished(&self) -> bool {
        self.generation_done() && self.in_flight == 0
    }

    /// Stop generating new readings (shutdown or duration over); in-flight
    /// publishes are still retransmitted and awaited.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// The next step at time `now`.
    pub fn poll_publish(&mut self, now: Instant, cfg: &FleetConfig) -> Next {
        while let Some(pkid) = self.retransmit.pop_front() {
            // An entry may have been acked meanwhile (a misbehaving broker);
            // then there is nothing to resend.
            if let Some(e) = self.slots[usize::from(pkid)].as_mut() {
                e.sent_at = now;
                self.counters.retransmits += 1;
                return Next::Send(Outgoing {
                    pkid,
                    slot: e.slot,
                    seq: e.seq,
                    dup: true,
                    due_ms: e.due_ms,
                });
            }
        }
        loop {
            if self.generation_done() {
                return Next::Idle;
            }
            if self.qos1 && self.free.is_empty() {
                return Next::WindowFull;
            }
            let (due, due_ms) = match &mut self.pacing {
                Pacing::Unlimited => (None, None),
                Pacing::Constant(pace) => (Some(self.cursor as f64 * *pace), None),
                Pacing::Trace { next, .. } => (Some(*next), Some((*next * 1000.0).round() as u64)),
            };
            if let Some(due) = due {
                // A due beyond what Instant can hold is centuries away: wait.
                let Some(due) = Duration::try_from_secs_f64(due)
                    .ok()
                    .and_then(|d| self.start.checked_add(d))
                else {
                    return Next::Wait(now + Duration::from_secs(3600));
                };
                if due > now {
                    return Next::Wait(due);
                }
            }
            let m = self.devices.len() as u64;
            let (slot, seq) = ((self.cursor % m) as u32, self.cursor / m);
            self.cursor += 1;
            if let Pacing::Trace { pacer, next } = &mut self.pacing {
                *next = pacer.next_due(*next);
            }
            if model::is_dropped(cfg, self.device(slot), seq) {
                self.counters.dropped += 1;
                continue;
            }
            if !self.qos1 {
                self.counters.sent += 1;
                return Next::Send(Outgoing {
                    pkid: 0,
                    slot,
                    seq,
                    dup: false,
                    due_ms,
                });
            }
            let Some(pkid) = self.free.pop() else {
                // Unreachable: the window was checked at the top of the loop
                // and nothing took an id since.
                return Next::WindowFull;
            };
            self.counters.sent += 1;
            self.slots[usize::from(pkid)] = Some(Inflight {
                slot,
                seq,
                sent_at: now,
                order: self.order,
                due_ms,
            });
            self.order += 1;
            self.in_flight += 1;
            return Next::Send(Outgoing {
                pkid,
                slot,
                seq,
                dup: false,
                due_ms,
            });
        }
    }

    /// A PUBACK arrived at `now`; returns the ack latency since the last
    /// transmission, or `None` for an unknown packet id.
    pub fn handle_puback(&mut self, pkid: u16, now: Instant) -> Option<Duration> {
        let Some(e) = self.slots.get_mut(usize::from(pkid)).and_then(Option::take) else {
            self.counters.unknown_acks += 1;
            return None;
        };
        self.free.push(pkid);
        self.in_flight -= 1;
        self.counters.acked += 1;
        Some(now.saturating_duration_since(e.sent_at))
    }

    /// The connection is gone: queue every unacked publish for resend, in
    /// original send order. Returns how many were queued.
    pub fn handle_disconnect(&mut self) -> usize {
        self.retransmit.clear();
        self.retransmit.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_some())
                .map(|(pkid, _)| pkid as u16),
        );
        let slots = &self.slots;
        self.retransmit
            .make_contiguous()
            .sort_unstable_by_key(|p| slots[usize::from(*p)].map_or(0, |e| e.order));
        self.retransmit.len()
    }
}

/// Reconnect delay after `attempt` consecutive failures: exponential from
/// `initial`, capped at `max`, with "equal jitter" (half fixed, half drawn
/// from the seeded `rng`) so a fleet of connections does not reconnect in
/// lockstep after an edge restart.
pub fn backoff_delay(
    attempt: u32,
    initial: Duration,
    max: Duration,
    rng: &mut impl rand::Rng,
) -> Duration {
    let cap = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = cap / 2;
    half + half.mul_f64(rng.gen::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..30 {
            let cap = (i * 2u32.pow(attempt.min(20))).min(m);
            let d = backoff_delay(attempt, i, m, &mut rng);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d:?} vs cap {cap:?}"
            );
        }
        let a: Vec<_> = (0..5).map(|_| backoff_delay(9, i, m, &mut rng)).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]), "jitter varies: {a:?}");
    }

    fn cfg(inflight: u32, rate: f64, count: Option<u64>) -> FleetConfig {
        FleetConfig {
            inflight,
            rate_per_device: rate,
            count,
            endpoints: vec!["127.0.0.1:1".into()],
            ..FleetConfig::default()
        }
    }

    fn send(n: Next) -> Outgoing {
        match n {
            Next::Send(o) => o,
            other => panic!("expected Send, got {other:?}"),
        }
    }

    #[test]
    fn round_robin_window_and_acks() {
        let c = cfg(3, 0.0, Some(2));
        let t = Instant::now();
        let mut s = Session::new(vec![10, 20], &c, t);
        let a = send(s.poll_publish(t, &c));
        let b = send(s.poll_publish(t, &c));
        let d = send(s.poll_publish(t, &c));
        assert_eq!(
            (a.slot, a.seq, b.slot, b.seq, d.slot, d.seq),
            (0, 0, 1, 0, 0, 1)
        );
        assert_eq!((a.pkid, b.pkid, d.pkid), (1, 2, 3));
        assert_eq!(s.poll_publish(t, &c), Next::WindowFull);
        let later = t + Duration::from_millis(7);
        assert_eq!(s.handle_puback(2, later), Some(Duration::from_millis(7)));
        assert_eq!(s.handle_puback(2, later), None, "duplicate ack is ignored");
        let e = send(s.poll_publish(t, &c));
        assert_eq!((e.slot, e.seq, e.pkid), (1, 1, 2));
        assert_eq!(s.poll_publish(t, &c), Next::Idle);
        assert!(s.generation_done() && !s.finished());
        for p in [1, 2, 3] {
            s.handle_puback(p, later).unwrap();
        }
        assert!(s.finished());
        let k = s.counters();
        assert_eq!((k.sent, k.acked, k.unknown_acks), (4, 4, 1));
    }

    #[test]
    fn disconnect_resends_unacked_in_order_before_new() {
        let c = cfg(8, 0.0, None);
        let t = Instant::now();
        let mut s = Session::new(vec![0], &c, t);
        let sent: Vec<Outgoing> = (0..5).map(|_| send(s.poll_publish(t, &c))).collect();
        s.handle_puback(sent[1].pkid, t).unwrap();
        s.handle_puback(sent[3].pkid, t).unwrap();
        // Seq 5 reuses seq 3's packet id, so send order differs from id order.
        let fifth = send(s.poll_publish(t, &c));
        assert_eq!(s.handle_disconnect(), 4);
        let resent: Vec<(u64, bool)> = (0..4)
            .map(|_| send(s.poll_publish(t, &c)))
            .map(|o| (o.seq, o.dup))
            .collect();
        assert_eq!(
            resent,
            vec![(0, true), (2, true), (4, true), (fifth.seq, true)]
        );
        let new = send(s.poll_publish(t, &c));
        assert_eq!((new.seq, new.dup), (6, false));
        assert_eq!(s.counters().retransmits, 4);
        assert_eq!(s.in_flight(), 5);
    }

    #[test]
    fn pacing_spreads_devices_over_time() {
        let c = cfg(100, 10.0, None); // 10/s per device, 2 devices: every 50 ms
        let t = Instant::now();
        let mut s = Session::new(vec![0, 1], &c, t);
        send(s.poll_publish(t, &c));
        assert_eq!(
            s.poll_publish(t, &c),
            Next::Wait(t + Duration::from_millis(50))
        );
        send(s.poll_publish(t + Duration::from_millis(50), &c));
        // Behind schedule: catch up without skipping readings.
        let late = t + Duration::from_millis(500);
        let seqs: Vec<u64> = (0..4).map(|_| send(s.poll_publish(late, &c)).seq).collect();
        assert_eq!(seqs, vec![1, 1, 2, 2]);
    }

    #[test]
    fn trace_mode_paces_by_the_trace_and_stamps_due_times() {
        let mut c = cfg(100, 1.0, None);
        c.devices = 4;
        // Flat 40 msgs/s for the fleet: this 2-device connection gets 20/s.
        c.trace = Some(crate::trace::TraceSpec {
            base_rate: 40.0,
            daily_amplitude: 0.0,
            weekly_amplitude: 0.0,
            noise: 0.0,
            ..Default::default()
        });
        let t = Instant::now();
        let mut s = Session::new(vec![0, 1], &c, t);
        let first = send(s.poll_publish(t, &c));
        assert_eq!((first.seq, first.due_ms), (0, Some(0)));
        assert_eq!(
            s.poll_publish(t, &c),
            Next::Wait(t + Duration::from_millis(50))
        );
        // Behind schedule: catch up, each reading stamped with its own due.
        let late = t + Duration::from_millis(200);
        let due: Vec<Option<u64>> = (0..4)
            .map(|_| send(s.poll_publish(late, &c)).due_ms)
            .collect();
        assert_eq!(due, vec![Some(50), Some(100), Some(150), Some(200)]);
        // A retransmission keeps the original due time.
        assert_eq!(s.handle_disconnect(), 5);
        let again = send(s.poll_publish(late, &c));
        assert_eq!((again.seq, again.dup, again.due_ms), (0, true, Some(0)));
    }

    #[test]
    fn dropout_skips_but_seq_advances_and_qos0_has_no_window() {
        let mut c = cfg(1, 0.0, Some(4));
        c.qos = 0;
        c.anomalies = vec!["dropout:devices=0,start=1,duration=2".parse().unwrap()];
        let t = Instant::now();
        let mut s = Session::new(vec![0], &c, t);
        let seqs: Vec<(u64, u16)> = (0..2)
            .map(|_| send(s.poll_publish(t, &c)))
            .map(|o| (o.seq, o.pkid))
            .collect();
        assert_eq!(seqs, vec![(0, 0), (3, 0)]);
        assert_eq!(s.poll_publish(t, &c), Next::Idle);
        assert!(s.finished());
        assert_eq!((s.counters().sent, s.counters().dropped), (2, 2));
    }
}
