//! The HTTP limits on a real socket, against a bound [`crate::Central`]
//! (its region's hub is unreachable; these routes need none): a slowloris
//! head is closed at the header timeout, an idle keep-alive connection at
//! the idle timeout, connections beyond the cap at once, an oversized head
//! gets a JSON 431, an oversized body a JSON 413, a trickled body a JSON
//! 408, and shutdown finishes a request in flight. Each limit shows in
//! `/metrics`.
//!
//! No test asserts how fast a limit fires: each waits with a generous
//! deadline only so that a broken limit fails instead of hanging.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::{bind, CentralConfig, RegionConfig};

/// Long enough for any limit under test to have fired.
const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    addr: std::net::SocketAddr,
    token: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::CentralError>>,
    _dir: tempfile::TempDir,
}

async fn start(http: HttpConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let pki = strata_net::Pki::ensure(&dir.path().join("pki")).unwrap();
    let cfg = CentralConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("central"),
        tls: pki.node("central").unwrap(),
        regions: vec![RegionConfig {
            name: "west".into(),
            hubs: vec!["127.0.0.1:9".into()],
        }],
        request_timeout_ms: 100,
        membership_timeout: Duration::from_millis(200),
        http,
        ..CentralConfig::default()
    };
    let central = bind(cfg).await.unwrap();
    let addr = central.local_addr();
    let token = std::fs::read_to_string(central.token_file())
        .unwrap()
        .trim()
        .to_owned();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(central.run(shutdown.clone()));
    Server {
        addr,
        token,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("central stops")
            .unwrap()
            .unwrap();
    }

    /// A value of `strata_central_http_limits_total`, 0 when absent.
    async fn limit(&self, limit: &str) -> u64 {
        let (status, body) = request(self.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(status, 200);
        let series = format!("strata_central_http_limits_total{{limit=\"{limit}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// Reads one response: status and body (by Content-Length).
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return (status, body);
            }
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `raw` on a new connection and reads one response.
async fn request(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    read_response(&mut s).await
}

/// Waits until the server closes `s` (EOF or reset), discarding input.
async fn closed_by_server(s: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
}

fn fast_limits() -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        ..HttpConfig::default()
    }
}

#[tokio::test]
async fn a_slowloris_head_is_closed_however_it_trickles() {
    let server = start(fast_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    // One more byte every 100 ms: each is progress, none completes the
    // head. The connection must end anyway.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(PATIENCE, trickle)
        .await
        .expect("the server stops taking bytes");
    assert_eq!(server.limit("header-read-timeout").await, 1);

    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut silent).await;
    assert_eq!(server.limit("header-read-timeout").await, 2);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_answers() {
    let server = start(fast_limits()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = read_response(&mut s).await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    }
    closed_by_server(&mut s).await;
    assert_eq!(server.limit("idle-timeout").await, 1);
    assert_eq!(server.limit("header-read-timeout").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_slots_come_back() {
    let server = start(HttpConfig {
        max_connections: 2,
        ..HttpConfig::default()
    })
    .await;
    // Two keep-alive connections, each served once so that they are
    // certainly accepted and holding their slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    closed_by_server(&mut third).await;
    // Closing one frees its slot (once the server has seen the close).
    drop(held.pop());
    let answered = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            let raw = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            if s.write_all(raw).await.is_ok() {
                let mut all = Vec::new();
                if s.read_to_end(&mut all).await.is_ok() && all.starts_with(b"HTTP/1.1 200") {
                    return String::from_utf8_lossy(&all).into_owned();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed slot serves again");
    let refused = answered
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"strata_central_http_limits_total{limit="max-connections"} "#)
        })
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(refused >= 1, "{answered}");
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_head_gets_a_json_431() {
    let server = start(HttpConfig {
        max_header_bytes: 1024,
        ..HttpConfig::default()
    })
    .await;
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    );
    let (status, body) = request(server.addr, &big).await;
    assert_eq!(status, 431, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "header-too-large", "{json}");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1024 bytes"));
    // Too many header lines, each small, likewise.
    let mut many = String::from("GET /health HTTP/1.1\r\n");
    for i in 0..120 {
        many.push_str(&format!("h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (status, body) = request(server.addr, &many).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(server.limit("max-header-bytes").await, 2);
    // A head within the limit is served.
    let ok = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Ok: {}\r\n\r\n",
        "b".repeat(500)
    );
    assert_eq!(request(server.addr, &ok).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_a_json_413_and_a_trickled_one_a_json_408() {
    let server = start(HttpConfig {
        max_body_bytes: 1024,
        ..fast_limits()
    })
    .await;
    let auth = format!("Bearer {}", server.token);
    let body = "x".repeat(2000);
    let raw = format!(
        "POST /api/v1/regions/west/monitors HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = request(server.addr, &raw).await;
    assert_eq!(status, 413, "{answer}");
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(json["error"]["code"], "body-too-large", "{json}");

    // Half of a declared body, then nothing: 408, and the connection ends.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/regions/west/monitors HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, answer) = read_response(&mut s).await;
    assert_eq!(status, 408, "{answer}");
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(json["error"]["code"], "request-timeout", "{json}");
    closed_by_server(&mut s).await;
    assert_eq!(server.limit("max-body-bytes").await, 1);
    assert_eq!(server.limit("request-timeout").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let server = start(HttpConfig::default()).await;
    let auth = format!("Bearer {}", server.token);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // A request whose body is still to come when shutdown starts.
    let head = format!(
        "POST /api/v1/regions/west/monitors HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Served once the head is in: the server holds the connection.
    let (status, _) = request(server.addr, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, 200);
    server.shutdown.cancel();
    s.write_all(b"{}").await.unwrap();
    // `{}` is not a spec: the handler answers 400, after shutdown began.
    let (status, answer) = read_response(&mut s).await;
    assert_eq!(status, 400, "{answer}");
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("central stops once the request is answered")
        .unwrap()
        .unwrap();
}
