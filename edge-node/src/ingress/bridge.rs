//! Bridge mode: consume telemetry from an existing broker (e.g. Mosquitto)
//! instead of, or next to, serving devices directly.
//!
//! A rumqttc client with a persistent session (`clean_session = false`) and
//! manual acks subscribes to the topic filter. Each publish is decoded and
//! submitted to the sink; `client.ack` is called only after the sink said
//! the record is durable. An unacked message stays with the broker, which
//! redelivers it when the bridge reconnects, also after a restart. A failed
//! submit therefore forces a reconnect (with backoff) so the broker
//! redelivers what we could not store.
//!
//! Readings outside the time bounds (`ingress.max-future-skew`, the past
//! bound tightened by the region's retention) are refused like undecodable
//! ones: counted in `strata_bridge_rejects_total{reason}`, logged, never
//! submitted, and acked to the broker with their batch, since a broker has
//! no way to hear "no" from a subscriber and would redeliver them forever.
//!
//! Two loops run concurrently in one task: the *poller* drives rumqttc's
//! event loop (it must be polled continuously, also to send our acks and
//! pings) and the *processor* batches publishes into submits, keeping up to
//! `max-inflight` records outstanding, and acks in order.

use std::sync::Arc;
use std::time::Duration;

use futures::future::Either;
use futures::stream::{FuturesOrdered, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use strata_protocol::telemetry::{decode_payload, parse_topic};
use strata_protocol::RejectReason;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bounds::{LiveBounds, TIME_BOUND_REASONS};
use super::driver::wall_ms;
use super::metrics::{LogLimiter, ReasonLabel};
use super::{BridgeConfig, IngestSink, IngressError};

/// Bridge metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BridgeMetrics {
    /// 1 while connected to the broker.
    pub connected: Gauge,
    /// 1 once the broker acknowledged our subscription on this connection.
    pub subscribed: Gauge,
    /// Connection attempts that failed or connections that dropped.
    pub reconnects: Counter,
    /// Publishes received from the broker.
    pub received: Counter,
    /// Records accepted and submitted to the sink.
    pub accepted: Counter,
    /// Rejected publishes by reason.
    pub rejects: Family<ReasonLabel, Counter>,
    /// Acks sent to the broker.
    pub acks_sent: Counter,
    /// Seconds from submit to the sink resolving.
    pub submit_latency: Histogram,
    /// Failed submits (each forces a reconnect and redelivery).
    pub submit_failures: Counter,
}

impl BridgeMetrics {
    /// Creates the metrics and registers them under `strata_bridge_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = BridgeMetrics {
            connected: Gauge::default(),
            subscribed: Gauge::default(),
            reconnects: Counter::default(),
            received: Counter::default(),
            accepted: Counter::default(),
            rejects: Family::default(),
            acks_sent: Counter::default(),
            submit_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            submit_failures: Counter::default(),
        };
        for r in RejectReason::ALL {
            let _ = m.rejects.get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        for r in TIME_BOUND_REASONS {
            let _ = m.rejects.get_or_create(&ReasonLabel { reason: r });
        }
        let reg = registry.sub_registry_with_prefix("strata_bridge");
        reg.register(
            "connected",
            "1 while connected to the broker",
            m.connected.clone(),
        );
        reg.register(
            "subscribed",
            "1 once the broker granted the subscription",
            m.subscribed.clone(),
        );
        reg.register(
            "reconnects",
            "Broker connection failures",
            m.reconnects.clone(),
        );
        reg.register(
            "received",
            "Publishes received from the broker",
            m.received.clone(),
        );
        reg.register(
            "accepted",
            "Records submitted to the spool",
            m.accepted.clone(),
        );
        reg.register("rejects", "Rejected publishes by reason", m.rejects.clone());
        reg.register("acks_sent", "Acks sent to the broker", m.acks_sent.clone());
        reg.register(
            "submit_latency_seconds",
            "Time from submit to durable",
            m.submit_latency.clone(),
        );
        reg.register(
            "submit_failures",
            "Failed spool submits",
            m.submit_failures.clone(),
        );
        m
    }

    /// Unregistered metrics (tests, or when metrics are not wanted).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }
}

/// Runs the bridge until `shutdown`; then finishes in-flight submits, sends
/// their acks and disconnects. Only a bad configuration is an error;
/// broker outages are retried forever with exponential backoff. `bounds`
/// are the time bounds on readings (the ingress's).
pub async fn run_bridge<S: IngestSink>(
    cfg: BridgeConfig,
    sink: Arc<S>,
    metrics: BridgeMetrics,
    bounds: LiveBounds,
    shutdown: CancellationToken,
) -> Result<(), IngressError> {
    cfg.validate()?;
    let (host, port) = cfg
        .broker_host_port()
        .ok_or_else(|| IngressError::BrokerAddress {
            broker: cfg.broker.clone(),
        })?;
    let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s))
        .set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    if let Some(user) = &cfg.username {
        opts.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    // The request channel carries our acks; it is drained by the poller,
    // which never blocks on it, so it cannot deadlock.
    let (client, eventloop) = AsyncClient::new(opts, cfg.max_inflight.max(16));
    let (ptx, prx) = mpsc::channel::<Publish>(cfg.max_inflight);
    let (reconnect_tx, reconnect_rx) = mpsc::channel::<()>(1);
    let processor_done = CancellationToken::new();

    let poller = poll_loop(
        &cfg,
        &client,
        eventloop,
        ptx,
        reconnect_rx,
        &metrics,
        &shutdown,
        &processor_done,
    );
    let processor = async {
        process_loop(
            &cfg,
            &client,
            &*sink,
            prx,
            reconnect_tx,
            &metrics,
            &bounds,
            &shutdown,
        )
        .await;
        processor_done.cancel();
    };
    tokio::join!(poller, processor);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn poll_loop(
    cfg: &BridgeConfig,
    client: &AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    ptx: mpsc::Sender<Publish>,
    mut reconnect_rx: mpsc::Receiver<()>,
    metrics: &BridgeMetrics,
    shutdown: &CancellationToken,
    processor_done: &CancellationToken,
) {
    let min = Duration::from_millis(cfg.min_backoff_ms);
    let max = Duration::from_millis(cfg.max_backoff_ms);
    let mut backoff = min;
    let mut disconnect_sent = false;
    let mut disconnect_deadline = None;
    let qos = if cfg.qos >= 2 {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    };
    loop {
        // Once the processor has drained, queue a DISCONNECT behind the
        // last acks and keep polling until it is written (bounded).
        if processor_done.is_cancelled() && !disconnect_sent {
            disconnect_sent = true;
            disconnect_deadline = Some(Instant::now() + Duration::from_secs(5));
            if client.try_disconnect().is_err() {
                break;
            }
        }
        let deadline = disconnect_deadline;
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            _ = processor_done.cancelled(), if !disconnect_sent => continue,
            Some(()) = reconnect_rx.recv(), if !shutdown.is_cancelled() => {
                // A submit failed: drop the connection so the broker
                // redelivers everything we have not acked.
                eventloop.clean();
                metrics.connected.set(0);
                metrics.subscribed.set(0);
                metrics.reconnects.inc();
                sleep_or_cancel(backoff, shutdown).await;
                backoff = (backoff * 2).min(max);
                continue;
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = min;
                metrics.connected.set(1);
                tracing::info!(broker = %cfg.broker, topic = %cfg.topic, "bridge connected");
                if !shutdown.is_cancelled() {
                    if let Err(e) = client.try_subscribe(cfg.topic.clone(), qos) {
                        tracing::warn!(broker = %cfg.broker, "bridge subscribe not queued: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics.received.inc();
                if shutdown.is_cancelled() {
                    // Not processed and not acked: the broker keeps it.
                    continue;
                }
                // Bounded: the broker's in-flight window is far smaller.
                if ptx.send(p).await.is_err() {
                    continue;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                if granted {
                    metrics.subscribed.set(1);
                } else {
                    tracing::error!(broker = %cfg.broker, topic = %cfg.topic, "broker refused the bridge subscription");
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if disconnect_sent => break,
            Ok(_) => {}
            Err(e) => {
                metrics.connected.set(0);
                metrics.subscribed.set(0);
                if disconnect_sent || (shutdown.is_cancelled() && processor_done.is_cancelled()) {
                    break;
                }
                metrics.reconnects.inc();
                tracing::warn!(broker = %cfg.broker, retry_in_ms = backoff.as_millis() as u64, "bridge connection failed: {e}");
                sleep_or_cancel(backoff, processor_done).await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
    metrics.connected.set(0);
    metrics.subscribed.set(0);
}

async fn sleep_or_cancel(d: Duration, token: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = token.cancelled() => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn process_loop<S: IngestSink>(
    cfg: &BridgeConfig,
    client: &AsyncClient,
    sink: &S,
    mut prx: mpsc::Receiver<Publish>,
    reconnect_tx: mpsc::Sender<()>,
    metrics: &BridgeMetrics,
    bounds: &LiveBounds,
    shutdown: &CancellationToken,
) {
    let mut limiter = LogLimiter::new(10, 10_000);
    let epoch = Instant::now();
    let submit = |publishes: Vec<Publish>, records, n: usize| {
        let started = Instant::now();
        // An all-invalid batch has nothing to store; its acks need no wait.
        let fut = if n == 0 {
            Either::Left(std::future::ready(Ok(())))
        } else {
            Either::Right(sink.submit(records))
        };
        let latency = metrics.submit_latency.clone();
        async move {
            let r = fut.await;
            latency.observe(started.elapsed().as_secs_f64());
            (publishes, n, r)
        }
    };
    let mut inflight = FuturesOrdered::new();
    let mut inflight_records = 0usize;
    let mut stopping = false;
    loop {
        if stopping && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((publishes, n, result)) = inflight.next(), if !inflight.is_empty() => {
                inflight_records -= n;
                match result {
                    Ok(()) => {
                        // Spelled out: with wasmtime's dependencies in the crate
                        // graph, inferring `&publishes` as an iterator overflows.
                        let publishes: &Vec<Publish> = &publishes;
                        for p in publishes {
                            // Only fails when the event loop is gone (shutdown).
                            if client.ack(p).await.is_ok() {
                                metrics.acks_sent.inc();
                            }
                        }
                    }
                    Err(e) => {
                        metrics.submit_failures.inc();
                        tracing::error!(broker = %cfg.broker, records = n, "spool submit failed, reconnecting for redelivery: {e}");
                        let _ = reconnect_tx.try_send(());
                    }
                }
            }
            Some(first) = prx.recv(), if !stopping && inflight_records < cfg.max_inflight => {
                // Batch everything already received into one submit.
                let mut publishes = vec![first];
                while publishes.len() < cfg.max_inflight - inflight_records {
                    match prx.try_recv() {
                        Ok(p) => publishes.push(p),
                        Err(_) => break,
                    }
                }
                let mut records = Vec::with_capacity(publishes.len());
                let (window, wall) = (bounds.current(), wall_ms());
                for p in &publishes {
                    let topic = p.topic.as_str();
                    let checked = parse_topic(topic)
                        .and_then(|d| decode_payload(&d, &p.payload))
                        .map_err(|e| (e.reason.as_str(), e.detail))
                        .and_then(|r| match window.check(r.ts_ms, wall) {
                            Ok(()) => Ok(r),
                            Err(oob) => Err((oob.reason(), oob.to_string())),
                        });
                    match checked {
                        Ok(r) => records.push(r),
                        Err((reason, detail)) => {
                            // Acked with the batch: a broker would otherwise
                            // redeliver a publish that can never be valid.
                            metrics.rejects.get_or_create(&ReasonLabel { reason }).inc();
                            let (allow, suppressed) = limiter.allow(epoch.elapsed().as_millis() as u64);
                            if suppressed > 0 {
                                tracing::warn!(suppressed, "suppressed further bridge reject log lines");
                            }
                            if allow {
                                tracing::warn!(topic = %topic, reason, "bridge rejected publish: {detail}");
                            }
                        }
                    }
                }
                let n = records.len();
                metrics.accepted.inc_by(n as u64);
                inflight_records += n;
                inflight.push_back(submit(publishes, records, n));
            }
            _ = shutdown.cancelled(), if !stopping => stopping = true,
        }
    }
}
