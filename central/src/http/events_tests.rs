//! The event routes: pages and their parameters through the router, and
//! the SSE stream both through the router and on a real socket whose
//! request and idle timeouts are far shorter than the stream stays open.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use strata_protocol::liveness::{
    Classification, EdgeEventDetail, EdgeLiveness, EventKind, Evidence, LivenessState, RegionEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use super::test_support::*;
use super::{app, AppOptions, AppState};
use crate::auth::Policy;
use crate::region::RegionApi;

fn event(seq: u64, kind: EventKind, state: LivenessState) -> RegionEvent {
    RegionEvent {
        seq,
        at_ms: NOW + seq as i64,
        kind,
        subject: "edge-1".into(),
        message: format!("edge-1 is {}", state.as_str()),
        edge: Some(EdgeEventDetail {
            from: LivenessState::Up,
            liveness: EdgeLiveness {
                state,
                classification: Classification::Undetermined,
                evidence: vec![Evidence::MissedHeartbeats],
                boot_id: 42,
                since_ms: NOW + seq as i64,
                last_heartbeat_ms: NOW,
                detection_ms: Some(900),
                event_seq: seq,
            },
        }),
        attrs: vec![],
    }
}

fn with_events(events: Vec<RegionEvent>) -> Harness {
    let east = Fake::new("east", &[("acme", "d2")]);
    *east.events.lock().unwrap() = events;
    harness(east)
}

#[tokio::test]
async fn a_page_holds_the_events_after_since() {
    let h = with_events(vec![
        event(4, EventKind::EdgeSuspect, LivenessState::Suspect),
        event(5, EventKind::EdgeDown, LivenessState::Down),
        event(6, EventKind::EdgeBack, LivenessState::Up),
    ]);
    let (status, body) = get(&h.state, "/api/v1/regions/east/events?since=4&limit=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e["seq"].as_u64(), e["kind"].as_str()),
        (Some(5), Some("edge-down"))
    );
    assert_eq!(e["edge"]["liveness"]["detection-ms"], 900);
    assert_eq!(e["edge"]["liveness"]["classification"], "undetermined");
    assert_eq!(body["last-seq"], 5);
    assert_eq!(
        (body["oldest-seq"].as_u64(), body["missed"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(body["served-by"], "east-hub-1:7000");
    // The hub was asked from seq 5, with no wait.
    assert_eq!(
        h.east.event_reads.lock().unwrap().last().copied(),
        Some((5, 1, Duration::ZERO))
    );
    // From the start: what the log still holds, with what it dropped.
    let (_, body) = get(&h.state, "/api/v1/regions/east/events").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
    assert_eq!(body["missed"], 3);
    // Caught up: empty, and the cursor stays.
    let (_, body) = get(&h.state, "/api/v1/regions/east/events?since=6").await;
    assert!(body["events"].as_array().unwrap().is_empty());
    assert_eq!(body["last-seq"], 6);
}

#[tokio::test]
async fn a_long_poll_waits_at_most_the_cap_and_bad_parameters_are_named() {
    let east = Arc::new(Fake::new("east", &[("acme", "d2")]));
    let regions: Vec<Arc<dyn RegionApi>> = vec![east.clone()];
    let cap = Duration::from_millis(200);
    let options = AppOptions {
        events_max_wait: cap,
        ..options(Policy::new(false, true))
    };
    let state = AppState::with_options(regions, Registry::default(), Arc::new(|| NOW), options);
    let (status, _) = get(&state, "/api/v1/regions/east/events?wait=50ms").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        east.event_reads.lock().unwrap().last().map(|r| r.2),
        Some(Duration::from_millis(50))
    );
    // In ms too; longer than the cap: capped.
    for wait in ["100", "1h"] {
        let (status, _) = get(&state, &format!("/api/v1/regions/east/events?wait={wait}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let waits: Vec<Duration> = east
        .event_reads
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(waits[1..], [Duration::from_millis(100), cap]);
    // An event that appears during the wait is answered at once.
    let pusher = east.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        pusher
            .events
            .lock()
            .unwrap()
            .push(event(1, EventKind::EdgeUp, LivenessState::Up));
    });
    let (_, body) = get(&state, "/api/v1/regions/east/events?wait=150ms").await;
    assert_eq!(body["events"][0]["seq"], 1, "{body}");
    let h = with_events(vec![]);
    for (query, param) in [
        ("since=x", "since"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("wait=soon", "wait"),
        ("from=1", "from"),
    ] {
        let (status, body) = get(&h.state, &format!("/api/v1/regions/east/events?{query}")).await;
        let msg = error(status, &body, StatusCode::BAD_REQUEST, "invalid-parameter");
        assert!(msg.contains(param), "{query}: {msg}");
    }
    let (status, body) = get(&h.state, "/api/v1/regions/nowhere/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn the_event_routes_need_the_operator_token() {
    let h = with_events(vec![event(1, EventKind::EdgeUp, LivenessState::Up)]);
    for uri in [
        "/api/v1/regions/east/events",
        "/api/v1/regions/east/events/stream",
    ] {
        for auth in [None, Some("Bearer wrong-token-0123456789abcdef0123")] {
            let (status, headers, body) = send_as(&h.state, "GET", uri, auth, None, vec![]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {auth:?}: {body}");
            assert!(headers.contains_key("www-authenticate"));
        }
    }
}

/// Reads SSE frames from `body` until `n` events (not comments) arrived.
async fn sse_frames(body: &mut Body, n: usize) -> Vec<String> {
    let mut text = String::new();
    loop {
        let frames: Vec<String> = text
            .split("\n\n")
            .filter(|f| f.lines().any(|l| l.starts_with("data:")))
            .map(str::to_owned)
            .collect();
        if frames.len() >= n && text.ends_with("\n\n") {
            return frames;
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an SSE frame in time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

#[tokio::test]
async fn the_stream_sends_each_event_with_its_id_and_kind_and_resumes() {
    let h = with_events(vec![
        event(7, EventKind::EdgeSuspect, LivenessState::Suspect),
        event(8, EventKind::EdgeDown, LivenessState::Down),
    ]);
    let req = Request::get("/api/v1/regions/east/events/stream?since=6")
        .header("authorization", bearer())
        .body(Body::empty())
        .unwrap();
    let resp = app(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = resp.into_body();
    let frames = sse_frames(&mut body, 2).await;
    assert!(
        frames[0].contains("id: 7") && frames[0].contains("event: edge-suspect"),
        "{frames:?}"
    );
    assert!(
        frames[1].contains("id: 8") && frames[1].contains("event: edge-down"),
        "{frames:?}"
    );
    let data: serde_json::Value = serde_json::from_str(
        frames[1]
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(data["edge"]["liveness"]["state"], "down");
    // A new event is sent as it appears.
    h.east
        .events
        .lock()
        .unwrap()
        .push(event(9, EventKind::EdgeBack, LivenessState::Up));
    let frames = sse_frames(&mut body, 1).await;
    assert!(frames[0].contains("id: 9"), "{frames:?}");
    // Reconnecting with Last-Event-ID resumes after it; a gap is told.
    let req = Request::get("/api/v1/regions/east/events/stream?since=0")
        .header("authorization", bearer())
        .header("last-event-id", "8")
        .body(Body::empty())
        .unwrap();
    let mut body = app(h.state.clone()).oneshot(req).await.unwrap().into_body();
    let frames = sse_frames(&mut body, 1).await;
    assert!(frames[0].contains("id: 9"), "{frames:?}");
    let req = Request::get("/api/v1/regions/east/events/stream?since=2")
        .header("authorization", bearer())
        .body(Body::empty())
        .unwrap();
    let mut body = app(h.state.clone()).oneshot(req).await.unwrap().into_body();
    let frames = sse_frames(&mut body, 2).await;
    assert!(
        frames[0].contains("event: gap") && frames[0].contains("\"missed\":4"),
        "{frames:?}"
    );
    assert!(frames[1].contains("id: 7"), "{frames:?}");
}

/// On a real socket with a 1 s request timeout and a 1 s idle timeout, a
/// stream stays open for several seconds (keep-alive comments count as
/// progress), delivers an event that appears late, and ends when central
/// shuts down so that shutdown completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_the_request_and_idle_timeouts_and_ends_at_shutdown() {
    let east = Arc::new(Fake::new("east", &[("acme", "d2")]));
    let regions: Vec<Arc<dyn RegionApi>> = vec![east.clone()];
    let stop = tokio_util::sync::CancellationToken::new();
    let options = AppOptions {
        stream_keep_alive: Duration::from_millis(300),
        streams: stop.child_token(),
        ..options(Policy::new(false, true))
    };
    let state = AppState::with_options(regions, Registry::default(), Arc::new(|| NOW), options);
    let limits = crate::serve::ServeLimits {
        conn: crate::serve::core::ConnLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
        },
        request_timeout: Duration::from_secs(1),
        max_connections: 8,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = state.limit_metrics().clone();
    let server = tokio::spawn(crate::serve::serve(
        listener,
        app(state),
        limits,
        metrics,
        stop.clone(),
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!(
            "GET /api/v1/regions/east/events/stream HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
            bearer()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // Three seconds of silence on the region's side: three times both
    // timeouts. Only keep-alive comments arrive meanwhile.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < quiet_until {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("keep-alive comments arrive")
            .unwrap();
        assert!(n > 0, "the stream was closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(!seen.contains("408"), "{seen}");
    east.events
        .lock()
        .unwrap()
        .push(event(1, EventKind::EdgeDown, LivenessState::Down));
    while !seen.contains("event: edge-down") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("the event arrives")
            .unwrap();
        assert!(n > 0, "the stream was closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Shutdown ends the stream, so the server finishes.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("central stops although a stream was open")
        .unwrap();
}
