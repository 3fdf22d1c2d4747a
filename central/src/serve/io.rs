//! [`GuardedIo`]: the connection's socket as hyper sees it, driving
//! [`ConnCore`]: bytes read and written go through the core, its deadline
//! is a tokio timer, and when it says a head is too large this wrapper
//! answers 431 itself (JSON error body), since hyper's own answer has no
//! body. Only this file reads the clock for a connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::core::{ConnCore, Verdict, MAX_HEADER_LINES};
use super::service::Activity;
use crate::http::AppError;
use crate::metrics::{Limit, LimitMetrics};

/// How long a refused connection keeps reading (and discarding) what the
/// client still sends after the 431, so that closing with unread data does
/// not reset the connection before the client reads the answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_MAX_BYTES: usize = 1 << 20;

/// The 431 answer as bytes on the wire.
pub fn head_too_large_response(max_header_bytes: usize) -> Vec<u8> {
    let err = AppError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header-too-large",
        format!(
            "the request head is larger than {max_header_bytes} bytes or has more than \
             {MAX_HEADER_LINES} header lines"
        ),
    );
    let body = err.body().to_string();
    let mut out = format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Answering 431 instead of serving.
struct Refusal {
    response: Vec<u8>,
    written: usize,
    shut_down: bool,
    drained: usize,
}

/// A connection's socket with its limits.
pub struct GuardedIo {
    inner: TcpStream,
    core: ConnCore,
    activity: Arc<Activity>,
    metrics: LimitMetrics,
    max_header_bytes: usize,
    timer: Pin<Box<Sleep>>,
    refusal: Option<Refusal>,
    /// Set once a limit closed the connection: later polls fail the same
    /// way without counting again.
    closed_by: Option<Limit>,
}

impl GuardedIo {
    /// Wraps a socket accepted now.
    pub fn new(
        inner: TcpStream,
        core: ConnCore,
        activity: Arc<Activity>,
        metrics: LimitMetrics,
        max_header_bytes: usize,
    ) -> GuardedIo {
        let first = core.deadline().map_or_else(Instant::now, |(at, _)| at);
        GuardedIo {
            inner,
            core,
            activity,
            metrics,
            max_header_bytes,
            timer: Box::pin(tokio::time::sleep_until(first)),
            refusal: None,
            closed_by: None,
        }
    }

    fn closed(limit: Limit) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{} reached", limit.as_str()),
        )
    }

    /// Closes the connection by `limit`, counting it once.
    fn fire(&mut self, limit: Limit) -> io::Error {
        if self.closed_by.is_none() {
            self.closed_by = Some(limit);
            self.metrics.fired(limit);
            tracing::debug!(limit = limit.as_str(), "HTTP connection closed by a limit");
        }
        GuardedIo::closed(limit)
    }

    /// Catches up with the service and checks the deadline.
    fn check(&mut self, now: Instant) -> io::Result<()> {
        if let Some(limit) = self.closed_by {
            return Err(GuardedIo::closed(limit));
        }
        self.core.sync(now, self.activity.snapshot());
        match self.core.expired(now) {
            Some(limit) => Err(self.fire(limit)),
            None => Ok(()),
        }
    }

    /// Arms the timer at the core's deadline and registers this task with
    /// it, after every operation: the phase may have changed (a response
    /// finished while hyper waited on the service, so that no read is
    /// pending with a timer), and the task must wake up for the new
    /// deadline. Returns the limit if it has passed.
    fn arm(&mut self, cx: &mut Context<'_>) -> Option<Limit> {
        let (at, limit) = self.core.deadline()?;
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        self.timer.as_mut().poll(cx).is_ready().then_some(limit)
    }

    /// After an operation returned `Pending`: closes the connection if its
    /// deadline has passed, else waits for the socket or the timer.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.arm(cx) {
            Some(limit) => Poll::Ready(Err(self.fire(limit))),
            None => Poll::Pending,
        }
    }

    /// Writes the 431, shuts the write side, lingers, then fails the read
    /// so that hyper drops the connection.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let refused = || io::Error::other("request head too large: answered 431");
        let Some(r) = self.refusal.as_mut() else {
            return Poll::Ready(Err(refused()));
        };
        while r.written < r.response.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &r.response[r.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => r.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return self.poll_linger_timer(cx),
            }
        }
        if !r.shut_down {
            ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            r.shut_down = true;
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    r.drained += buf.filled().len();
                    if r.drained > LINGER_MAX_BYTES {
                        return Poll::Ready(Err(refused()));
                    }
                }
                Poll::Ready(_) => return Poll::Ready(Err(refused())),
                Poll::Pending => return self.poll_linger_timer(cx),
            }
        }
    }

    fn poll_linger_timer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::other(
                "request head too large: answered 431",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusal.is_some() {
            return this.poll_refusal(cx);
        }
        let now = Instant::now();
        this.check(now)?;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let verdict =
                    this.core
                        .on_read(now, &buf.filled()[before..], this.activity.snapshot());
                match verdict {
                    Verdict::Pass => {
                        this.arm(cx);
                        Poll::Ready(Ok(()))
                    }
                    Verdict::HeadTooLarge => {
                        // Hyper never sees these bytes.
                        buf.set_filled(before);
                        this.metrics.fired(Limit::MaxHeaderBytes);
                        this.closed_by = Some(Limit::MaxHeaderBytes);
                        this.refusal = Some(Refusal {
                            response: head_too_large_response(this.max_header_bytes),
                            written: 0,
                            shut_down: false,
                            drained: 0,
                        });
                        this.timer.as_mut().reset(now + LINGER);
                        this.poll_refusal(cx)
                    }
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending(cx),
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let now = Instant::now();
        this.check(now)?;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.core.on_write(now, n);
                this.arm(cx);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(Instant::now())?;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            done => {
                this.arm(cx);
                done
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_431_is_a_complete_json_response() {
        let bytes = head_too_large_response(1024);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "header-too-large");
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"));
    }
}
