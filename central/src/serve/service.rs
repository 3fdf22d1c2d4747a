//! The hyper service of one connection: runs the axum router under the
//! whole-request timeout and counts requests in [`Activity`], which the
//! connection's [`super::io::GuardedIo`] reads to know its phase.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use futures::future::BoxFuture;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tower::ServiceExt;

use super::core::Requests;
use crate::http::AppError;
use crate::metrics::{Limit, LimitMetrics};

/// Requests started and finished on one connection. Written only by the
/// service (two counters, each only increasing), read by the connection.
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    bodies_done: AtomicU64,
}

impl Activity {
    /// The counts now.
    pub fn snapshot(&self) -> Requests {
        // Later events first: a request cannot then look finished (or its
        // body done) but not started.
        let bodies_done = self.bodies_done.load(Ordering::Acquire);
        let finished = self.finished.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        Requests {
            started,
            finished,
            bodies_done,
        }
    }
}

/// A request body that tells [`Activity`] when it has been read to its
/// end.
pub struct TrackedBody {
    inner: Incoming,
    activity: Option<Arc<Activity>>,
}

impl TrackedBody {
    fn new(inner: Incoming, activity: &Arc<Activity>) -> TrackedBody {
        let mut body = TrackedBody {
            inner,
            activity: Some(activity.clone()),
        };
        if body.inner.is_end_stream() {
            body.done();
        }
        body
    }

    fn done(&mut self) {
        if let Some(a) = self.activity.take() {
            a.bodies_done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks its request finished when dropped: answered, or abandoned
/// because the connection died.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.started.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// The router as a hyper service for one connection.
#[derive(Clone)]
pub struct RequestService {
    /// The whole API.
    pub router: axum::Router,
    /// This connection's request counts.
    pub activity: Arc<Activity>,
    /// `http.request-timeout`.
    pub request_timeout: Duration,
    /// Counts the timeout when it fires.
    pub metrics: LimitMetrics,
}

/// The 408 answer: JSON error body, and the connection closes (the rest of
/// a slow body may still be on its way).
fn timed_out(after: Duration) -> Response {
    let mut resp = AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        format!(
            "the request was not received and answered within {}",
            humantime::format_duration(after)
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // Counted at dispatch, before the future is first polled, so the
        // connection sees the request as soon as hyper hands it over.
        let in_flight = InFlight::start(&self.activity);
        let req = req.map(|b| TrackedBody::new(b, &self.activity));
        let router = self.router.clone();
        let limit = self.request_timeout;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let _in_flight = in_flight;
            match tokio::time::timeout(limit, router.oneshot(req)).await {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    metrics.fired(Limit::RequestTimeout);
                    Ok(timed_out(limit))
                }
            }
        })
    }
}
