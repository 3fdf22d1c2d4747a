//! [`ConnectionDriver`]: one gateway-style MQTT connection publishing on
//! behalf of its devices. It owns the socket, the clock and the buffers and
//! executes what its [`Session`] core decides.
//!
//! The MQTT client is hand-rolled on rumqttc's v4 codec because a load
//! generator needs pipelining (up to `inflight` unacked QoS 1 publishes, many
//! packets per socket write) and the exact send time of every packet id for
//! PUBACK latency. Hot-path buffers are reused: a publish borrows its topic
//! from the device table (swapped in and out of one `Publish`), and its
//! payload is encoded into a recycled `BytesMut`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::FleetConfig;
use crate::fleet::{new_histogram, Shared, SimError};
use crate::model;
use crate::payload;
use crate::session::{backoff_delay, Counters, Next, Outgoing, Session};

/// Stop filling the write buffer beyond this; one socket write carries it.
const BATCH_BYTES: usize = 64 * 1024;
/// Read buffer growth per read call.
const READ_CHUNK: usize = 16 * 1024;
/// Largest packet accepted from the broker.
const MAX_INCOMING: usize = 1024 * 1024;
/// How often counters and latencies are published to the shared stats.
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Why a connection attempt or an established connection failed.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The broker closed the connection.
    #[error("closed by the broker")]
    Closed,
    /// Nothing heard in time (connect, CONNACK or keep-alive).
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The broker sent bytes that are not valid MQTT 3.1.1.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// CONNACK with a code worth retrying (server unavailable).
    #[error("broker unavailable")]
    Unavailable,
    /// CONNACK refusing us for good (bad credentials, not authorised, ...).
    #[error("connection refused: {0:?}")]
    Refused(ConnectReturnCode),
    /// A reading could not be encoded; fatal, retrying would repeat it.
    #[error("cannot encode reading {seq} of device {device}: {detail}")]
    Encode {
        device: u32,
        seq: u64,
        detail: String,
    },
}

/// Drives one MQTT connection; see the module docs.
pub(crate) struct ConnectionDriver {
    index: u32,
    /// Index into `cfg.endpoints` of the endpoint in use.
    endpoint: usize,
    client_id: String,
    cfg: Arc<FleetConfig>,
    session: Session,
    /// Topic per session slot; temporarily swapped into `publish`.
    topics: Vec<String>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    abort: CancellationToken,
    rng: ChaCha8Rng,
    hist: Histogram<u64>,
    flushed: Counters,
    drain_deadline: Option<Instant>,
    wbuf: BytesMut,
    rbuf: BytesMut,
    payload: BytesMut,
    publish: Publish,
}

impl ConnectionDriver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: u32,
        endpoint: usize,
        client_id: String,
        devices: Vec<u32>,
        cfg: Arc<FleetConfig>,
        shared: Arc<Shared>,
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> Self {
        let topics = devices
            .iter()
            .map(|d| {
                strata_protocol::telemetry::telemetry_topic(
                    &cfg.tenant,
                    &model::device_name(&cfg.device_prefix, *d),
                )
            })
            .collect();
        let qos = if cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        ConnectionDriver {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6a09_e667_f3bc_c908 ^ u64::from(index)),
            session: Session::new(devices, &cfg, Instant::now().into_std()),
            topics,
            index,
            endpoint,
            client_id,
            shared,
            stop,
            abort,
            hist: new_histogram(),
            flushed: Counters::default(),
            drain_deadline: None,
            wbuf: BytesMut::with_capacity(BATCH_BYTES + 4096),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            payload: BytesMut::with_capacity(BATCH_BYTES),
            publish: Publish::from_bytes(String::new(), qos, Bytes::new()),
            cfg,
        }
    }

    /// Runs until nothing is left to send and acknowledge, the drain
    /// deadline passes or the run is aborted; `Ok(complete)` says whether
    /// the connection ever came up, everything it published was acked and,
    /// with `count`, every reading was generated. `Err` when the broker
    /// refuses us for good.
    pub(crate) async fn run(mut self) -> Result<bool, SimError> {
        let mut attempt = 0u32;
        let mut ever_connected = false;
        // Endpoints tried in a row without getting in (`failover`).
        let mut tried_since_up = 0usize;
        loop {
            self.check_drain(Instant::now());
            let done = self.session.finished();
            if done || self.abort.is_cancelled() || self.drain_expired(Instant::now()) {
                let counted = self.cfg.count.is_none() || self.session.count_reached();
                return Ok(done && counted && ever_connected);
            }
            let (e, was_up) = match self.connect().await {
                Ok(stream) => {
                    if ever_connected {
                        self.shared.reconnects.fetch_add(1, Relaxed);
                    }
                    ever_connected = true;
                    tried_since_up = 0;
                    self.shared.connected.fetch_add(1, Relaxed);
                    let up_since = Instant::now();
                    let r = self.drive(stream).await;
                    self.shared.connected.fetch_sub(1, Relaxed);
                    self.flush_stats();
                    // A connection that lived longer than the largest delay
                    // was healthy: start backing off from scratch. One that
                    // dies right after CONNACK keeps growing the delay.
                    if up_since.elapsed() > self.cfg.backoff_max {
                        attempt = 0;
                    }
                    match r {
                        // Loop once more to decide completeness.
                        Ok(()) => continue,
                        Err(e) => (e, true),
                    }
                }
                Err(e) => (e, false),
            };
            let e = self.fatal(e)?;
            if !was_up && self.cfg.failover && self.cfg.endpoints.len() > 1 {
                // This gateway is gone for now: roam to the next one at once
                // (its unacked publishes go along and are retransmitted).
                // Once every gateway failed in a row, back off as usual.
                let from = self.endpoint().to_owned();
                self.endpoint = (self.endpoint + 1) % self.cfg.endpoints.len();
                self.shared.failovers.fetch_add(1, Relaxed);
                tracing::info!(connection = self.index, %from, to = %self.endpoint(), error = %e,
                    "cannot reach endpoint; failing over");
                tried_since_up += 1;
                if tried_since_up < self.cfg.endpoints.len() {
                    continue;
                }
                tried_since_up = 0;
            }
            let queued = self.session.handle_disconnect();
            let delay = backoff_delay(
                attempt,
                self.cfg.backoff_initial,
                self.cfg.backoff_max,
                &mut self.rng,
            );
            if was_up {
                tracing::warn!(endpoint = %self.endpoint(), connection = self.index, unacked = queued,
                    retry_in = ?delay, error = %e, "connection lost; will retransmit unacked publishes");
            } else {
                self.shared.connect_failures.fetch_add(1, Relaxed);
                // Rate-limited: an edge that is down would flood the log.
                if attempt % 10 == 0 {
                    tracing::warn!(endpoint = %self.endpoint(), connection = self.index, attempt,
                        retry_in = ?delay, error = %e, "cannot connect");
                }
            }
            attempt = attempt.saturating_add(1);
            self.backoff(delay).await;
        }
    }

    /// The `host:port` in use.
    fn endpoint(&self) -> &str {
        &self.cfg.endpoints[self.endpoint]
    }

    /// Passes retryable errors through; turns permanent ones into the run's
    /// error.
    fn fatal(&self, e: LinkError) -> Result<LinkError, SimError> {
        match e {
            LinkError::Refused(code) => Err(SimError::Refused {
                endpoint: self.endpoint().to_owned(),
                connection: self.index,
                client_id: self.client_id.clone(),
                code: format!("{code:?}"),
            }),
            LinkError::Encode {
                device,
                seq,
                detail,
            } => Err(SimError::Encode {
                device: model::device_name(&self.cfg.device_prefix, device),
                seq,
                detail,
            }),
            e => Ok(e),
        }
    }

    async fn backoff(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        let until = self.drain_deadline.map_or(until, |d| d.min(until));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = self.abort.cancelled() => {}
            _ = self.stop.cancelled(), if self.drain_deadline.is_none() => {}
        }
    }

    /// Starts the drain clock once nothing new will be generated.
    fn check_drain(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        if self.stop.is_cancelled() {
            self.session.stop();
        }
        if self.session.generation_done() {
            self.drain_deadline = Some(now + self.cfg.ack_deadline);
        }
    }

    fn drain_expired(&self, now: Instant) -> bool {
        self.drain_deadline.is_some_and(|d| now >= d)
    }

    /// TCP connect + CONNECT/CONNACK, within `connect_timeout`.
    async fn connect(&mut self) -> Result<TcpStream, LinkError> {
        let handshake = async {
            let mut stream = TcpStream::connect(self.cfg.endpoints[self.endpoint].as_str()).await?;
            stream.set_nodelay(true)?;
            let mut connect = rumqttc::mqttbytes::v4::Connect::new(self.client_id.as_str());
            connect.keep_alive = self.cfg.keep_alive_secs;
            connect.clean_session = true;
            if let Some(user) = &self.cfg.username {
                connect.set_login(user.as_str(), self.cfg.password.as_deref().unwrap_or(""));
            }
            // Leftovers of a dead connection: unacked publishes among them
            // are resent from the session's window, QoS 0 ones are lost.
            self.wbuf.clear();
            self.rbuf.clear();
            Packet::Connect(connect)
                .write(&mut self.wbuf, usize::MAX)
                .map_err(|e| LinkError::Protocol(e.to_string()))?;
            stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            loop {
                match Packet::read(&mut self.rbuf, MAX_INCOMING) {
                    Ok(Packet::ConnAck(ack)) => {
                        return match ack.code {
                            ConnectReturnCode::Success => Ok(stream),
                            ConnectReturnCode::ServiceUnavailable => Err(LinkError::Unavailable),
                            code => Err(LinkError::Refused(code)),
                        }
                    }
                    Ok(other) => {
                        return Err(LinkError::Protocol(format!(
                            "expected CONNACK, got {other:?}"
                        )))
                    }
                    Err(CodecError::InsufficientBytes(_)) => {
                        self.rbuf.reserve(READ_CHUNK);
                        if stream.read_buf(&mut self.rbuf).await? == 0 {
                            return Err(LinkError::Closed);
                        }
                    }
                    Err(e) => return Err(LinkError::Protocol(e.to_string())),
                }
            }
        };
        tokio::time::timeout(self.cfg.connect_timeout, handshake)
            .await
            .map_err(|_| LinkError::Timeout("TCP connect and CONNACK"))?
    }

    /// The connected loop: generate → write batches → read acks, with
    /// pacing, keep-alive and the drain deadline on one reusable timer.
    async fn drive(&mut self, mut stream: TcpStream) -> Result<(), LinkError> {
        let (mut rd, mut wr) = stream.split();
        let stop = self.stop.clone();
        let abort = self.abort.clone();
        let keep_alive = Duration::from_secs(u64::from(self.cfg.keep_alive_secs));
        let mut last_tx = Instant::now();
        let mut last_flush = last_tx;
        let mut ping_sent: Option<Instant> = None;
        let mut write_blocked_since: Option<Instant> = None;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let now = Instant::now();
            self.check_drain(now);
            let mut wake = now + FLUSH_EVERY;
            while self.wbuf.len() < BATCH_BYTES {
                match self.session.poll_publish(now.into_std(), &self.cfg) {
                    Next::Send(o) => self.encode(o)?,
                    Next::Wait(t) => {
                        wake = wake.min(t.into());
                        break;
                    }
                    Next::WindowFull | Next::Idle => break,
                }
            }
            if now >= last_flush + FLUSH_EVERY {
                self.flush_stats();
                last_flush = now;
            }
            let expired = self.drain_expired(now);
            if expired || (self.wbuf.is_empty() && self.session.finished()) {
                // Best effort and bounded: the broker may be gone or stalled.
                let _ = Packet::Disconnect.write(&mut self.wbuf, usize::MAX);
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), wr.write_all(&self.wbuf)).await;
                self.wbuf.clear();
                return Ok(());
            }
            // A peer that stops reading (crashed host, no RST) shows up as
            // writes making no progress: give up after a keep-alive period.
            match (self.wbuf.is_empty(), write_blocked_since) {
                (true, _) => write_blocked_since = None,
                (false, None) => write_blocked_since = Some(now),
                (false, Some(at)) if now >= at + keep_alive => {
                    return Err(LinkError::Timeout("socket write progress"))
                }
                (false, Some(at)) => wake = wake.min(at + keep_alive),
            }
            match ping_sent {
                Some(at) if now >= at + keep_alive => return Err(LinkError::Timeout("PINGRESP")),
                Some(at) => wake = wake.min(at + keep_alive),
                None if self.wbuf.is_empty() && now >= last_tx + keep_alive / 2 => {
                    Packet::PingReq
                        .write(&mut self.wbuf, usize::MAX)
                        .map_err(|e| LinkError::Protocol(e.to_string()))?;
                    ping_sent = Some(now);
                }
                // With data queued the ping waits for the write; no timer.
                None if !self.wbuf.is_empty() => {}
                None => wake = wake.min(last_tx + keep_alive / 2),
            }
            if let Some(d) = self.drain_deadline {
                wake = wake.min(d);
            }
            timer.as_mut().reset(wake);
            self.rbuf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                _ = abort.cancelled() => return Ok(()),
                _ = stop.cancelled(), if self.drain_deadline.is_none() => {}
                r = rd.read_buf(&mut self.rbuf) => {
                    if r? == 0 {
                        return Err(LinkError::Closed);
                    }
                    // Any packet proves the broker alive.
                    ping_sent = None;
                    self.handle_incoming(Instant::now())?;
                }
                r = wr.write(&self.wbuf), if !self.wbuf.is_empty() => {
                    let n = r?;
                    if n == 0 {
                        return Err(LinkError::Closed);
                    }
                    self.wbuf.advance(n);
                    last_tx = Instant::now();
                    write_blocked_since = Some(last_tx); // progress restarts the clock
                }
                _ = &mut timer => {}
            }
        }
    }

    fn handle_incoming(&mut self, now: Instant) -> Result<(), LinkError> {
        loop {
            match Packet::read(&mut self.rbuf, MAX_INCOMING) {
                Ok(Packet::PubAck(ack)) => {
                    if let Some(lat) = self.session.handle_puback(ack.pkid, now.into_std()) {
                        self.hist
                            .saturating_record(u64::try_from(lat.as_micros()).unwrap_or(u64::MAX));
                    } else {
                        tracing::debug!(
                            connection = self.index,
                            pkid = ack.pkid,
                            "PUBACK for unknown packet id"
                        );
                    }
                }
                Ok(Packet::PingResp) => {}
                Ok(Packet::Disconnect) => return Err(LinkError::Closed),
                Ok(other) => {
                    tracing::debug!(connection = self.index, packet = ?other, "ignoring unexpected packet")
                }
                Err(CodecError::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(LinkError::Protocol(e.to_string())),
            }
        }
    }

    /// Appends one PUBLISH to the write buffer, allocation-free in steady
    /// state (see the module docs).
    fn encode(&mut self, o: Outgoing) -> Result<(), LinkError> {
        let device = self.session.device(o.slot);
        let bad = |detail: String| LinkError::Encode {
            device,
            seq: o.seq,
            detail,
        };
        // Dropped readings are never handed out by the session.
        let values = model::values(&self.cfg, device, o.seq)
            .ok_or_else(|| bad("reading is dropped by an anomaly".into()))?;
        // Trace mode stamps when the reading was due (see crate::trace).
        let ts = match o.due_ms {
            Some(due) => self
                .cfg
                .start_ts_ms
                .unwrap_or(0)
                .saturating_add(i64::try_from(due).unwrap_or(i64::MAX)),
            None => model::ts_ms(&self.cfg, o.seq),
        };
        payload::encode_reading(&mut self.payload, &self.cfg, ts, o.seq, &values)
            .map_err(|e| bad(e.to_string()))?;
        self.publish.payload = self.payload.split().freeze();
        self.publish.pkid = o.pkid;
        self.publish.dup = o.dup;
        let topic = &mut self.topics[o.slot as usize];
        std::mem::swap(&mut self.publish.topic, topic);
        let written = self.publish.write(&mut self.wbuf);
        std::mem::swap(&mut self.publish.topic, topic);
        // Release the payload so `self.payload` can reclaim its space.
        self.publish.payload = Bytes::new();
        written.map(drop).map_err(|e| bad(e.to_string()))
    }

    /// Publishes counter deltas and recorded latencies to the shared stats.
    fn flush_stats(&mut self) {
        let now = self.session.counters();
        let was = std::mem::replace(&mut self.flushed, now);
        let s = &self.shared;
        s.sent.fetch_add(now.sent - was.sent, Relaxed);
        s.acked.fetch_add(now.acked - was.acked, Relaxed);
        s.retransmits
            .fetch_add(now.retransmits - was.retransmits, Relaxed);
        s.dropped.fetch_add(now.dropped - was.dropped, Relaxed);
        s.unknown_acks
            .fetch_add(now.unknown_acks - was.unknown_acks, Relaxed);
        if !self.hist.is_empty() {
            s.record_latencies(&self.hist);
            self.hist.reset();
        }
    }
}

impl Drop for ConnectionDriver {
    fn drop(&mut self) {
        // Counts since the last flush still belong in the summary.
        self.flush_stats();
    }
}
