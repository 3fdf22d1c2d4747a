//! The per-connection task: owns the socket and a [`Session`], executes its
//! commands. The only place in the server that reads the clock.
//!
//! Loop: decode everything buffered (while the session allows), turn it into
//! one sink submit, write every ready packet in one `write_all`, then wait
//! for whichever comes first: more bytes (only while under the in-flight
//! limit: backpressure), a submit resolving, a live delivery, the
//! keep-alive deadline, shutdown or takeover. Submits are never dropped
//! mid-flight: a closing connection first waits for them and sends their
//! acks.
//!
//! Between CONNECT and CONNACK the client is authenticated
//! ([`super::auth::AuthState::authenticate`]) and its client id claimed
//! (only the same identity may take it over); an authenticated connection
//! also wakes on every credentials reload to notice revocation. The same
//! code serves plain TCP and TLS: [`serve`] is generic over the stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthState, CertIdentity};
use super::bounds::{RegionRetention, TimeBounds};
use super::codec::{self, CloseReason, ConnAckCode, DecodeError, Inbound, Outbound, Version};
use super::config::IngressConfig;
use super::metrics::{IngressMetrics, LogLimiter};
use super::router::{Delivery, Offer, Router};
use super::session::{accept_connect, Command, Session, SessionConfig};
use super::IngestSink;

/// Read chunk reserved before each socket read. Small on purpose: an idle
/// connection keeps its buffer, and 10k devices × 8 KiB is 80 MiB; one read
/// still carries ~100 small telemetry publishes into one batch.
const READ_CHUNK: usize = 8 * 1024;
/// Log lines per connection per window, and the window.
const LOG_BURST: u32 = 10;
const LOG_WINDOW_MS: u64 = 10_000;

/// State shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Shared {
    /// Server configuration.
    pub cfg: IngressConfig,
    /// Metrics handles.
    pub metrics: IngressMetrics,
    /// Fan-out and client registry.
    pub router: Router,
    /// MQTT sessions past CONNACK (for edge heartbeats).
    pub connected: Arc<AtomicU32>,
    /// Open TCP connections (for `max-connections`).
    pub open_conns: AtomicUsize,
    /// Connection ids.
    pub conn_seq: AtomicU64,
    /// Clock origin for the sans-IO `now_ms`.
    pub epoch: Instant,
    /// The region's retention (written by the uplink), which may tighten
    /// the past bound on readings.
    pub retention: RegionRetention,
    /// Device authentication: credentials in force, verifier, counters.
    pub auth: AuthState,
}

impl Shared {
    fn session_cfg(&self) -> SessionConfig {
        SessionConfig {
            max_inflight: self.cfg.max_inflight,
            max_packet_bytes: self.cfg.max_packet_bytes,
            subscriber_queue: self.cfg.subscriber_queue,
            time_bounds: self.time_bounds(),
            v3_refusal: self.cfg.v3_refusal,
            max_keep_alive_s: self.cfg.max_keep_alive_s(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn time_bounds(&self) -> TimeBounds {
        self.cfg.time_bounds(self.retention.get())
    }
}

/// The wall clock in ms since the Unix epoch, for the time bounds on
/// readings (a clock before 1970 reads as negative).
pub fn wall_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Decrements counters however the connection ends.
struct Guard<'a> {
    shared: &'a Shared,
    connected: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.shared.open_conns.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.connections.dec();
        if self.connected {
            self.shared.connected.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Per-connection logging context.
struct Log {
    peer: SocketAddr,
    client: String,
    limiter: LogLimiter,
}

impl Log {
    fn reject(
        &mut self,
        metrics: &IngressMetrics,
        now_ms: u64,
        reason: &'static str,
        detail: &str,
    ) {
        metrics.reject(reason);
        let (allow, suppressed) = self.limiter.allow(now_ms);
        if suppressed > 0 {
            tracing::warn!(peer = %self.peer, client = %self.client, suppressed, "suppressed further MQTT reject log lines");
        }
        if allow {
            tracing::warn!(peer = %self.peer, client = %self.client, reason, "rejected: {detail}");
        }
    }
}

/// Serves one TCP connection until it closes. `open_conns` and the
/// connections gauge were already incremented by the accept loop.
pub async fn run_connection<S: IngestSink>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    sink: Arc<S>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    serve(stream, peer, None, shared, sink, shutdown).await
}

/// A CONNACK refusing the connection.
fn refusal(code: ConnAckCode) -> Outbound {
    Outbound::ConnAck {
        code,
        assigned_client_id: None,
        max_packet_size: 0,
        receive_maximum: 0,
        server_keep_alive: None,
    }
}

/// Serves one connection over any byte stream (TCP, TLS) until it closes.
/// `cert` is the verified TLS client certificate's identity, if any.
pub async fn serve<S: IngestSink, IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    peer: SocketAddr,
    cert: Option<CertIdentity>,
    shared: Arc<Shared>,
    sink: Arc<S>,
    shutdown: CancellationToken,
) {
    let mut guard = Guard {
        shared: &shared,
        connected: false,
    };
    let conn = shared.conn_seq.fetch_add(1, Ordering::Relaxed);
    let mut log = Log {
        peer,
        client: String::new(),
        limiter: LogLimiter::new(LOG_BURST, LOG_WINDOW_MS),
    };
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let metrics = &shared.metrics;
    let max = shared.cfg.max_packet_bytes;

    // Handshake: the first packet must be a CONNECT; its level picks the codec.
    let connect_deadline = Instant::now() + Duration::from_millis(shared.cfg.connect_timeout_ms);
    let (version, info) = loop {
        let step = codec::detect_version(&rbuf, max).and_then(|v| match v {
            Some(v) => codec::decode(v, &mut rbuf, max).map(|p| p.map(|p| (v, p))),
            None => Ok(None),
        });
        match step {
            Ok(Some((v, Inbound::Connect(info)))) => break (v, info),
            Ok(Some(_)) => return, // unreachable: detect_version checked the type
            Ok(None) => {}
            Err(DecodeError::UnsupportedLevel(level)) => {
                // A v3-format CONNACK is what any older client understands.
                let mut out = BytesMut::new();
                let refuse = Outbound::ConnAck {
                    code: ConnAckCode::UnsupportedVersion,
                    assigned_client_id: None,
                    max_packet_size: 0,
                    receive_maximum: 0,
                    server_keep_alive: None,
                };
                codec::encode(Version::V4, &refuse, &mut out);
                let _ = write_with_timeout(&mut io, &out, &shared.cfg).await;
                log.reject(
                    metrics,
                    shared.now_ms(),
                    "protocol_error",
                    &format!("unsupported protocol level {level}"),
                );
                return;
            }
            Err(e) => {
                let reason = match e {
                    DecodeError::TooLarge { .. } => "packet_too_large",
                    _ => "malformed_packet",
                };
                log.reject(
                    metrics,
                    shared.now_ms(),
                    reason,
                    &format!("before CONNECT: {e}"),
                );
                return;
            }
        }
        rbuf.reserve(READ_CHUNK.min(max));
        let read = tokio::select! {
            r = io.read_buf(&mut rbuf) => r,
            _ = tokio::time::sleep_until(connect_deadline) => {
                // Bytes that never became a whole CONNECT are bad input;
                // a connection that sent nothing held a slot for nothing.
                if rbuf.is_empty() {
                    log.reject(
                        metrics,
                        shared.now_ms(),
                        "connect_timeout",
                        &format!("no CONNECT within {} ms", shared.cfg.connect_timeout_ms),
                    );
                } else {
                    log.reject(
                        metrics,
                        shared.now_ms(),
                        "malformed_packet",
                        &format!(
                            "CONNECT still incomplete after {} ms ({} bytes)",
                            shared.cfg.connect_timeout_ms,
                            rbuf.len()
                        ),
                    );
                }
                return;
            }
            _ = shutdown.cancelled() => return,
        };
        match read {
            Ok(0) | Err(_) => {
                if !rbuf.is_empty() {
                    log.reject(
                        metrics,
                        shared.now_ms(),
                        "malformed_packet",
                        &format!(
                            "connection closed inside its CONNECT ({} bytes)",
                            rbuf.len()
                        ),
                    );
                }
                return;
            }
            Ok(n) => {
                metrics.bytes_in.inc_by(n as u64);
            }
        }
    };

    let scfg = shared.session_cfg();
    let accepted = match accept_connect(version, &info, &scfg, conn) {
        Ok(a) => a,
        Err(refusal) => {
            let mut out = BytesMut::new();
            codec::encode(version, &refusal, &mut out);
            let _ = write_with_timeout(&mut io, &out, &shared.cfg).await;
            return;
        }
    };
    let client_id = accepted.client_id;
    log.client = client_id.clone();
    // Authenticate, then claim the client id, both before any CONNACK.
    let authenticated = shared
        .auth
        .authenticate(info.login.as_ref(), cert.as_ref(), connect_deadline)
        .await;
    let principal = match authenticated {
        Ok(p) => p,
        Err(r) => {
            shared
                .auth
                .refused(peer, &client_id, r.reason, &r.detail, shared.now_ms());
            let mut out = BytesMut::new();
            codec::encode(version, &refusal(r.code), &mut out);
            let _ = write_with_timeout(&mut io, &out, &shared.cfg).await;
            return;
        }
    };
    let takeover = CancellationToken::new();
    let owner = principal.as_ref().map(|p| p.identity.username.clone());
    if let Err(e) = shared
        .router
        .register_client(&client_id, conn, owner, takeover.clone())
    {
        let now = shared.now_ms();
        shared
            .auth
            .refused(peer, &client_id, "client_id_in_use", &e.to_string(), now);
        let mut out = BytesMut::new();
        codec::encode(version, &refusal(ConnAckCode::BadClientId), &mut out);
        let _ = write_with_timeout(&mut io, &out, &shared.cfg).await;
        return;
    }
    let mut creds_rx = shared.auth.store.subscribe();
    let mut session = Session::new(version, &info, scfg, shared.now_ms()).with_principal(principal);
    // Credentials swapped since authenticating count as a reload too.
    session.handle_credentials(&creds_rx.borrow_and_update());
    let mut obuf = BytesMut::new();
    codec::encode(version, &accepted.connack, &mut obuf);
    if write_with_timeout(&mut io, &obuf, &shared.cfg)
        .await
        .is_err()
    {
        shared.router.unregister_client(&client_id, conn);
        return;
    }
    obuf.clear();
    shared.connected.fetch_add(1, Ordering::AcqRel);
    guard.connected = true;
    tracing::debug!(%peer, client = %client_id, ?version, "MQTT client connected");

    let (dtx, mut drx) = mpsc::channel::<Delivery>(shared.cfg.subscriber_queue);
    let sink_ref: &S = &sink;
    let submit = |id: u64, records| {
        let started = Instant::now();
        let fut = sink_ref.submit(records);
        async move {
            let r = fut.await;
            (id, r, started.elapsed())
        }
    };
    let mut submits = FuturesOrdered::new();
    let mut offers: Vec<Offer> = Vec::new();
    let mut eof = false;
    let mut write_broken = false;

    loop {
        // 1. Decode what is buffered, as far as the in-flight limit allows.
        if session.is_open() {
            let now = shared.now_ms();
            let wall = wall_ms();
            session.set_time_bounds(shared.time_bounds());
            while session.can_read() {
                match codec::decode(version, &mut rbuf, max) {
                    Ok(Some(pkt)) => session.handle_packet(pkt, now, wall),
                    Ok(None) => break,
                    Err(e) => {
                        session.handle_decode_error(&e);
                        break;
                    }
                }
            }
            session.end_of_read();
            if eof && session.is_open() {
                // Peer closed without DISCONNECT: finish what it sent.
                session.begin_close(None);
            }
        }

        // 2. Execute commands.
        let now = shared.now_ms();
        for cmd in session.take_commands() {
            match cmd {
                Command::Submit { id, records } => {
                    metrics.publishes_accepted.inc_by(records.len() as u64);
                    submits.push_back(submit(id, records));
                }
                Command::FanOut {
                    topic,
                    payload,
                    qos,
                } => {
                    // Usual edge case: nobody subscribes; skip the copy.
                    if shared.router.has_subscribers() {
                        offers.push(Offer {
                            topic: Arc::from(topic),
                            payload,
                            qos,
                        });
                    }
                }
                Command::Subscribe(filters) => shared.router.subscribe(conn, &dtx, filters),
                Command::Unsubscribe(filters) => shared.router.unsubscribe(conn, &filters),
                Command::Reject { reason, detail } => log.reject(metrics, now, reason, &detail),
            }
        }
        if !offers.is_empty() {
            shared.router.fan_out(conn, &offers);
            offers.clear();
        }

        // 3. Write every ready packet in one go (acks coalesced).
        let mut acks = 0;
        for pkt in session.take_transmit() {
            if matches!(
                pkt,
                Outbound::PubAck { .. } | Outbound::PubRec { .. } | Outbound::PubComp { .. }
            ) {
                acks += 1;
            }
            codec::encode(version, &pkt, &mut obuf);
        }
        if !obuf.is_empty() {
            if !write_broken
                && write_with_timeout(&mut io, &obuf, &shared.cfg)
                    .await
                    .is_ok()
            {
                metrics.acks_sent.inc_by(acks);
            } else if !write_broken {
                write_broken = true;
                session.begin_close(None);
            }
            obuf.clear();
            continue; // closing may have produced more work
        }
        if session.is_done() {
            break;
        }

        // 4. Wait for the next event.
        let deadline = session
            .poll_timeout()
            .map(|ms| shared.epoch + Duration::from_millis(ms));
        let reading = session.can_read() && !eof;
        if reading {
            rbuf.reserve(READ_CHUNK.min(max));
        }
        tokio::select! {
            r = io.read_buf(&mut rbuf), if reading => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    metrics.bytes_in.inc_by(n as u64);
                }
            },
            Some((id, result, took)) = submits.next(), if !submits.is_empty() => {
                metrics.submit_latency.observe(took.as_secs_f64());
                let ok = match result {
                    Ok(()) => true,
                    Err(e) => {
                        metrics.submit_failures.inc();
                        tracing::error!(%peer, client = %client_id, "spool submit failed, closing so the client retransmits: {e}");
                        false
                    }
                };
                session.handle_submit_done(id, ok, shared.now_ms());
                // Drain every submit already finished before writing, so
                // their acks go out in one write.
                while let Some(Some((id, result, took))) = futures::FutureExt::now_or_never(submits.next()) {
                    metrics.submit_latency.observe(took.as_secs_f64());
                    if let Err(e) = &result {
                        metrics.submit_failures.inc();
                        tracing::error!(%peer, client = %client_id, "spool submit failed: {e}");
                    }
                    session.handle_submit_done(id, result.is_ok(), shared.now_ms());
                }
            },
            Some(d) = drx.recv() => {
                if !session.deliver(d.topic, d.payload, d.qos) {
                    metrics.subscriber_drops.inc();
                }
            },
            _ = sleep_until_opt(deadline), if deadline.is_some() => session.handle_timeout(shared.now_ms()),
            _ = shutdown.cancelled(), if session.is_open() => session.begin_close(Some(CloseReason::ServerShuttingDown)),
            _ = takeover.cancelled(), if session.is_open() => session.begin_close(Some(CloseReason::SessionTakenOver)),
            Ok(()) = creds_rx.changed(), if session.is_open() && session.principal().is_some() => {
                let creds = creds_rx.borrow_and_update().clone();
                session.handle_credentials(&creds);
            },
            else => {
                // Nothing can happen any more (peer gone, nothing in flight).
                session.begin_close(None);
            }
        }
    }

    shared.router.remove(conn);
    shared.router.unregister_client(&client_id, conn);
    let _ = io.shutdown().await;
    tracing::debug!(%peer, client = %client_id, "MQTT client disconnected");
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn write_with_timeout<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    cfg: &IngressConfig,
) -> std::io::Result<()> {
    // flush: a TLS stream may hold the last record until flushed.
    let write = async {
        wr.write_all(bytes).await?;
        wr.flush().await
    };
    match tokio::time::timeout(Duration::from_millis(cfg.write_timeout_ms), write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client stopped reading",
        )),
    }
}
