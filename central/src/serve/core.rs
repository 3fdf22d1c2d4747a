//! The sans-IO core of one HTTP connection's limits: which phase the
//! connection is in, when its current deadline is, and whether the request
//! head being read is too large. [`super::io::GuardedIo`] feeds it the
//! bytes it reads and writes and the request counts of
//! [`super::service::Activity`], with the time; it reads no clock.
//!
//! Phases:
//! - **Head**: a request head is being read. It must be complete within
//!   `header-read-timeout` of its first byte (of the accept, for a new
//!   connection's first request) however slowly it trickles in (slowloris),
//!   and stay within `max-header-bytes` and [`MAX_HEADER_LINES`].
//! - **Busy**: the head is complete; the request belongs to hyper and the
//!   service, whose `request-timeout` bounds it.
//! - **Idle**: the response is done and no new head has started. Closed
//!   after `idle-timeout` without progress (a new byte in, or response
//!   bytes out to a slow reader).
//! - **Draining**: like Idle, but a request body was left unread (the
//!   handler answered without it), so hyper may still read what is left of
//!   it: those bytes are not a head, and heads are no longer scanned on
//!   this connection (hyper drains a small remainder or closes).
//!
//! Limitation: the head of a pipelined request that arrived while the
//! previous one was served is not scanned here (its bytes went to hyper
//! in the Busy phase); hyper's own `max_header_size`, set to the same
//! limit, bounds it, with hyper's plain 431.

use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::Limit;

/// Most header lines in a request head (hyper's default limit, so that
/// hyper never refuses first with a body-less 431).
pub const MAX_HEADER_LINES: usize = 100;

/// The limits the core enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time for a whole request head.
    pub header_read_timeout: Duration,
    /// Time without progress between requests.
    pub idle_timeout: Duration,
    /// Largest request head, bytes (request line, headers, blank line).
    pub max_header_bytes: usize,
}

/// Requests the service started and finished on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requests {
    /// Handed to the service.
    pub started: u64,
    /// Answered (or abandoned).
    pub finished: u64,
    /// Whose body was read to its end (or who had none).
    pub bodies_done: u64,
}

impl Requests {
    fn in_flight(self) -> bool {
        self.started > self.finished
    }
}

/// Whether bytes just read may go to hyper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Yes.
    Pass,
    /// No: the head is over a limit; answer 431 and close.
    HeadTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head { since: Instant, scan: HeadScan },
    Busy { finished_before: u64 },
    Idle { since: Instant },
    Draining { since: Instant },
}

/// The connection's limit state.
#[derive(Debug, Clone)]
pub struct ConnCore {
    limits: ConnLimits,
    phase: Phase,
}

impl ConnCore {
    /// A connection accepted at `now`: its first head is due within the
    /// header timeout.
    pub fn new(limits: ConnLimits, now: Instant) -> ConnCore {
        ConnCore {
            limits,
            phase: Phase::Head {
                since: now,
                scan: HeadScan::default(),
            },
        }
    }

    /// Follows the service: a request in flight makes the connection Busy;
    /// once the request whose head was read is answered and nothing else is
    /// in flight, it is Idle from `now`.
    pub fn sync(&mut self, now: Instant, requests: Requests) {
        match self.phase {
            Phase::Busy { .. } if requests.in_flight() => {}
            _ if requests.in_flight() => {
                self.phase = Phase::Busy {
                    finished_before: requests.finished,
                };
            }
            Phase::Busy { finished_before } if requests.finished > finished_before => {
                self.phase = if requests.bodies_done >= requests.started {
                    Phase::Idle { since: now }
                } else {
                    Phase::Draining { since: now }
                };
            }
            _ => {}
        }
    }

    /// `bytes` were read at `now`.
    pub fn on_read(&mut self, now: Instant, bytes: &[u8], requests: Requests) -> Verdict {
        if bytes.is_empty() {
            return Verdict::Pass;
        }
        if let Phase::Idle { .. } = self.phase {
            self.phase = Phase::Head {
                since: now,
                scan: HeadScan::default(),
            };
        }
        if let Phase::Head { scan, .. } = &mut self.phase {
            match scan.feed(bytes, self.limits.max_header_bytes) {
                Scan::Partial => {}
                Scan::Complete => {
                    self.phase = Phase::Busy {
                        finished_before: requests.finished,
                    }
                }
                Scan::TooLarge => return Verdict::HeadTooLarge,
            }
        }
        Verdict::Pass
    }

    /// `n` bytes were written at `now`: progress for an idle connection
    /// whose response is still going out.
    pub fn on_write(&mut self, now: Instant, n: usize) {
        if let Phase::Idle { since } | Phase::Draining { since } = &mut self.phase {
            if n > 0 {
                *since = now;
            }
        }
    }

    /// When the connection is closed unless something happens, and by
    /// which limit. `None` while a request is served.
    pub fn deadline(&self) -> Option<(Instant, Limit)> {
        match self.phase {
            Phase::Head { since, .. } => Some((
                since + self.limits.header_read_timeout,
                Limit::HeaderReadTimeout,
            )),
            Phase::Idle { since } | Phase::Draining { since } => {
                Some((since + self.limits.idle_timeout, Limit::IdleTimeout))
            }
            Phase::Busy { .. } => None,
        }
    }

    /// The limit that has fired at `now`, if any.
    pub fn expired(&self, now: Instant) -> Option<Limit> {
        self.deadline()
            .filter(|(at, _)| now >= *at)
            .map(|(_, limit)| limit)
    }
}

/// Progress through one request head: HTTP/1 lines end with LF (CR before
/// it optional, as httparse accepts), and the head ends with an empty line.
/// Empty lines before the request line are skipped, as httparse does, but
/// still count as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct HeadScan {
    bytes: usize,
    lines: usize,
    line_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Partial,
    Complete,
    TooLarge,
}

impl HeadScan {
    fn feed(&mut self, data: &[u8], max_bytes: usize) -> Scan {
        for &b in data {
            self.bytes += 1;
            if self.bytes > max_bytes {
                return Scan::TooLarge;
            }
            match b {
                b'\n' if self.line_len == 0 => {
                    if self.lines > 0 {
                        return Scan::Complete;
                    }
                }
                b'\n' => {
                    self.lines += 1;
                    self.line_len = 0;
                    // The request line plus the header lines.
                    if self.lines > 1 + MAX_HEADER_LINES {
                        return Scan::TooLarge;
                    }
                }
                b'\r' => {}
                _ => self.line_len += 1,
            }
        }
        Scan::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnLimits = ConnLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_header_bytes: 200,
    };

    fn req(started: u64, finished: u64) -> Requests {
        Requests {
            started,
            finished,
            bodies_done: started,
        }
    }

    fn scan(chunks: &[&[u8]], max: usize) -> Vec<Scan> {
        let mut s = HeadScan::default();
        chunks.iter().map(|c| s.feed(c, max)).collect()
    }

    #[test]
    fn heads_end_at_the_first_empty_line_in_any_chunking() {
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..head.len() {
            let got = scan(&[&head[..cut], &head[cut..]], 1000);
            assert_eq!(got[1], Scan::Complete, "cut at {cut}");
        }
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\nA: b\n\n"], 1000),
            vec![Scan::Complete]
        );
        // Leading empty lines are skipped, not taken for the end.
        assert_eq!(
            scan(&[b"\r\n\r\nGET / HTTP/1.1\r\n", b"\r\n"], 1000),
            vec![Scan::Partial, Scan::Complete]
        );
    }

    #[test]
    fn heads_over_the_byte_or_line_limit_are_too_large() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', 200));
        assert_eq!(scan(&[&head], 200), vec![Scan::TooLarge]);
        // Exactly at the limit is fine.
        let exact = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan(&[exact], exact.len()), vec![Scan::Complete]);
        assert_eq!(scan(&[exact], exact.len() - 1), vec![Scan::TooLarge]);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..MAX_HEADER_LINES {
            many.extend(b"a:b\r\n");
        }
        let mut ok = many.clone();
        ok.extend(b"\r\n");
        assert_eq!(scan(&[&ok], 10_000), vec![Scan::Complete]);
        many.extend(b"a:b\r\n");
        assert_eq!(scan(&[&many], 10_000), vec![Scan::TooLarge]);
    }

    #[test]
    fn a_slow_head_expires_from_its_first_byte_not_its_last() {
        let t0 = Instant::now();
        let mut c = ConnCore::new(LIMITS, t0);
        // A new connection: the header timeout runs from the accept.
        assert_eq!(
            c.deadline(),
            Some((t0 + LIMITS.header_read_timeout, Limit::HeaderReadTimeout))
        );
        for s in 1..10 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(c.on_read(now, b"X", req(0, 0)), Verdict::Pass);
            assert_eq!(c.expired(now), None);
        }
        assert_eq!(
            c.expired(t0 + Duration::from_secs(10)),
            Some(Limit::HeaderReadTimeout)
        );
    }

    #[test]
    fn phases_follow_requests_and_idle_counts_from_the_answer() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = ConnCore::new(LIMITS, t0);
        assert_eq!(
            c.on_read(t0, b"GET / HTTP/1.1\r\n\r\n", req(0, 0)),
            Verdict::Pass
        );
        // Head done, not yet dispatched, then dispatched: no deadline.
        assert_eq!(c.deadline(), None);
        c.sync(t0 + s(1), req(0, 0));
        assert_eq!(c.deadline(), None);
        c.sync(t0 + s(1), req(1, 0));
        assert_eq!(c.deadline(), None);
        assert_eq!(c.expired(t0 + s(3600)), None);
        // Answered at t0+100: idle from then.
        c.sync(t0 + s(100), req(1, 1));
        assert_eq!(c.deadline(), Some((t0 + s(160), Limit::IdleTimeout)));
        // Response bytes going out are progress.
        c.on_write(t0 + s(130), 512);
        assert_eq!(c.expired(t0 + s(160)), None);
        assert_eq!(c.expired(t0 + s(190)), Some(Limit::IdleTimeout));
        // A new head starts the header timeout from its first byte.
        assert_eq!(c.on_read(t0 + s(150), b"GE", req(1, 1)), Verdict::Pass);
        assert_eq!(c.deadline(), Some((t0 + s(160), Limit::HeaderReadTimeout)));
        // A pipelined request dispatched from hyper's buffer: Busy again.
        c.sync(t0 + s(151), req(2, 1));
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn a_too_large_head_is_refused_and_later_heads_are_scanned_afresh() {
        let t0 = Instant::now();
        let mut c = ConnCore::new(LIMITS, t0);
        assert_eq!(
            c.on_read(t0, b"GET / HTTP/1.1\r\nA: b\r\n\r\n", req(0, 0)),
            Verdict::Pass
        );
        c.sync(t0, req(1, 0));
        c.sync(t0, req(1, 1));
        // A second head of 150 bytes: within 200 although the connection
        // has read more than 200 in all.
        let mut second = b"GET / HTTP/1.1\r\nX: ".to_vec();
        second.extend(std::iter::repeat_n(b'y', 120));
        assert_eq!(c.on_read(t0, &second, req(1, 1)), Verdict::Pass);
        assert_eq!(
            c.on_read(t0, &[b'y'; 100], req(1, 1)),
            Verdict::HeadTooLarge
        );
        // Body bytes of a request being served are not head bytes.
        let mut busy = ConnCore::new(LIMITS, t0);
        busy.on_read(t0, b"POST / HTTP/1.1\r\n\r\n", req(0, 0));
        busy.sync(t0, req(1, 0));
        assert_eq!(busy.on_read(t0, &[b'z'; 10_000], req(1, 0)), Verdict::Pass);
    }

    #[test]
    fn an_unread_body_is_not_taken_for_the_next_head() {
        let t0 = Instant::now();
        let mut c = ConnCore::new(LIMITS, t0);
        c.on_read(
            t0,
            b"POST / HTTP/1.1
Content-Length: 5000

",
            req(0, 0),
        );
        // Answered (401, say) without reading the body.
        let abandoned = Requests {
            started: 1,
            finished: 1,
            bodies_done: 0,
        };
        c.sync(t0, abandoned);
        assert_eq!(c.on_read(t0, &[b'z'; 4000], abandoned), Verdict::Pass);
        assert_eq!(
            c.deadline(),
            Some((t0 + LIMITS.idle_timeout, Limit::IdleTimeout))
        );
    }
}
