//! Test helpers: an in-memory sink that can be gated or made to fail, a
//! server harness, and a raw MQTT client for byte-exact observations.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use prometheus_client::registry::Registry;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use strata_protocol::TelemetryRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::auth::credentials::{hash_password_with, CredentialsFile, IdentityEntry};
use super::{IngestSink, IngressConfig, IngressMetrics, IngressServer, SinkError};

/// The harness's identity: tenant `acme`, every device.
pub const USER: &str = "test-acme";
/// Its password.
pub const PASSWORD: &str = "test-password";

/// An identity entry with a cheap (test-only) argon2id hash of `password`.
pub fn identity(username: &str, tenant: &str, devices: &str, password: &str) -> IdentityEntry {
    let cheap = argon2::Params::new(64, 1, 1, None).unwrap();
    IdentityEntry {
        username: username.into(),
        tenant: tenant.into(),
        devices: devices.into(),
        password_hash: Some(hash_password_with(password.as_bytes(), cheap).unwrap()),
        client_cert: false,
    }
}

/// Writes a credentials file with `entries` (atomically, as `strata device` does).
pub fn write_credentials(path: &std::path::Path, entries: Vec<IdentityEntry>) {
    super::auth::file::save(path, &CredentialsFile { identity: entries }).unwrap();
}

/// A good JSON payload, stamped now (within the ingress time bounds).
pub fn good_payload(seq: u64) -> Vec<u8> {
    reading_at(super::driver::wall_ms(), seq)
}

/// A JSON payload stamped `ts` (ms since the Unix epoch).
pub fn reading_at(ts: i64, seq: u64) -> Vec<u8> {
    format!(r#"{{"ts":{ts},"seq":{seq},"metrics":{{"t":21.5}}}}"#).into_bytes()
}

/// Records what it is given; can hold submits behind a gate or fail them.
#[derive(Debug)]
pub struct TestSink {
    records: Mutex<Vec<TelemetryRecord>>,
    /// Sizes of each submit call, in call order.
    calls: Mutex<Vec<usize>>,
    attempts: AtomicUsize,
    inflight: AtomicUsize,
    max_inflight_seen: AtomicUsize,
    gate: watch::Sender<bool>,
    fail: AtomicBool,
    changed: Notify,
}

impl TestSink {
    /// An open (immediately durable) sink.
    pub fn new() -> Arc<Self> {
        Arc::new(TestSink {
            records: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            max_inflight_seen: AtomicUsize::new(0),
            gate: watch::channel(true).0,
            fail: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// A sink whose submits wait until [`TestSink::open`].
    pub fn gated() -> Arc<Self> {
        let s = Self::new();
        s.gate.send_replace(false);
        s
    }

    /// Lets waiting and future submits complete.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Makes submits fail (true) or succeed (false).
    pub fn set_fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Durable records so far.
    pub fn records(&self) -> Vec<TelemetryRecord> {
        self.records.lock().unwrap().clone()
    }

    /// Sizes of the submits made so far.
    pub fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }

    /// Records handed to submit so far (durable or not).
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Largest number of records in flight at once.
    pub fn max_inflight_seen(&self) -> usize {
        self.max_inflight_seen.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `cond` holds.
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let r = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                let notified = self.changed.notified();
                if cond(self) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "timed out waiting for {what}; records = {}, attempts = {}",
            self.records().len(),
            self.attempts()
        );
    }

    /// Waits until at least `n` records are durable.
    pub async fn wait_records(&self, n: usize) {
        self.wait_until(&format!("{n} durable records"), |s| {
            s.records.lock().unwrap().len() >= n
        })
        .await;
    }
}

impl IngestSink for TestSink {
    async fn submit(&self, records: Vec<TelemetryRecord>) -> Result<(), SinkError> {
        let n = records.len();
        self.calls.lock().unwrap().push(n);
        self.attempts.fetch_add(n, Ordering::SeqCst);
        let now = self.inflight.fetch_add(n, Ordering::SeqCst) + n;
        self.max_inflight_seen.fetch_max(now, Ordering::SeqCst);
        self.changed.notify_waiters();
        let mut rx = self.gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
        self.inflight.fetch_sub(n, Ordering::SeqCst);
        let r = if self.fail.load(Ordering::SeqCst) {
            Err(SinkError::Failed("test sink told to fail".into()))
        } else {
            self.records.lock().unwrap().extend(records);
            Ok(())
        };
        self.changed.notify_waiters();
        r
    }
}

/// A running server on 127.0.0.1:0.
pub struct Harness {
    /// Bound address.
    pub addr: std::net::SocketAddr,
    /// Bound MQTT-over-TLS address, when configured.
    pub tls_addr: Option<std::net::SocketAddr>,
    /// The sink.
    pub sink: Arc<TestSink>,
    /// Metrics of the server.
    pub metrics: IngressMetrics,
    /// Connected-clients counter.
    pub connected: Arc<std::sync::atomic::AtomicU32>,
    /// Cancels the server.
    pub shutdown: CancellationToken,
    /// The server task.
    pub task: tokio::task::JoinHandle<Result<(), super::IngressError>>,
    /// Keeps the credentials file's directory alive.
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts a server with `cfg` (listen forced to 127.0.0.1:0). Unless
    /// `cfg` names a credentials file, one holding [`USER`] is written.
    pub async fn start(mut cfg: IngressConfig, sink: Arc<TestSink>) -> Self {
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        if cfg.auth.credentials.is_none() {
            let p = dir.path().join("devices.toml");
            write_credentials(&p, vec![identity(USER, "acme", "*", PASSWORD)]);
            cfg.auth.credentials = Some(p);
        }
        let mut reg = Registry::default();
        let server = IngressServer::bind(cfg, &mut reg).await.unwrap();
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let metrics = server.metrics();
        let connected = server.connected_clients();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(sink.clone(), shutdown.clone()));
        Harness {
            addr,
            tls_addr,
            sink,
            metrics,
            connected,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Starts a default-config server whose credentials file holds
    /// [`USER`] and `more`.
    pub async fn with_identities(more: Vec<IdentityEntry>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.toml");
        let mut all = vec![identity(USER, "acme", "*", PASSWORD)];
        all.extend(more);
        write_credentials(&path, all);
        let mut cfg = IngressConfig::default();
        cfg.auth.credentials = Some(path);
        let mut h = Self::start(cfg, TestSink::new()).await;
        h._dir = dir;
        h
    }

    /// Starts a default-config server with an open sink.
    pub async fn default_open() -> Self {
        Self::start(IngressConfig::default(), TestSink::new()).await
    }
}

/// Which codec a [`RawClient`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.
    V5,
}

/// A packet received by the raw client, reduced to what tests assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// CONNACK with its return/reason code byte.
    ConnAck(u8),
    /// PUBACK (pid, reason code byte; 0 for v4).
    PubAck(u16, u8),
    /// PUBREC (pid, reason).
    PubRec(u16, u8),
    /// PUBCOMP (pid).
    PubComp(u16),
    /// SUBACK (pid, codes).
    SubAck(u16, Vec<u8>),
    /// PUBLISH (topic, qos, pid).
    Publish(String, u8, u16),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT with reason.
    Disconnect(u8),
    /// Anything else.
    Other(String),
}

/// A byte-level MQTT client built on rumqttc's codecs.
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
    /// Protocol.
    pub proto: Proto,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn tcp(addr: std::net::SocketAddr, proto: Proto) -> Self {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            proto,
        }
    }

    /// Connects as [`USER`] and expects CONNACK success.
    pub async fn connect(
        addr: std::net::SocketAddr,
        proto: Proto,
        id: &str,
        keep_alive: u16,
    ) -> Self {
        let (c, ack) = Self::connect_as(addr, proto, id, keep_alive, Some((USER, PASSWORD))).await;
        assert_eq!(ack, Some(Got::ConnAck(0)));
        c
    }

    /// Connects with `login` (None: anonymous) and returns the CONNACK.
    pub async fn connect_as(
        addr: std::net::SocketAddr,
        proto: Proto,
        id: &str,
        keep_alive: u16,
        login: Option<(&str, &str)>,
    ) -> (Self, Option<Got>) {
        let mut c = Self::tcp(addr, proto).await;
        let mut b = BytesMut::new();
        match proto {
            Proto::V4 => {
                let mut conn = v4::Connect::new(id);
                conn.keep_alive = keep_alive;
                if let Some((u, p)) = login {
                    conn.set_login(u, p);
                }
                v4::Packet::Connect(conn).write(&mut b, usize::MAX).unwrap();
            }
            Proto::V5 => {
                let conn = v5::Connect {
                    keep_alive,
                    client_id: id.into(),
                    clean_start: true,
                    properties: None,
                };
                let login = login.map(|(u, p)| v5::Login::new(u, p));
                v5::Packet::Connect(conn, None, login)
                    .write(&mut b, None)
                    .unwrap();
            }
        }
        c.send_raw(&b).await;
        let ack = c.recv().await;
        (c, ack)
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }

    /// Encodes a publish into `b`.
    pub fn publish_bytes(&self, b: &mut BytesMut, topic: &str, qos: u8, pid: u16, payload: &[u8]) {
        match self.proto {
            Proto::V4 => {
                let q = rumqttc::mqttbytes::qos(qos).unwrap();
                let mut p = v4::Publish::new(topic, q, payload.to_vec());
                p.pkid = pid;
                v4::Packet::Publish(p).write(b, usize::MAX).unwrap();
            }
            Proto::V5 => {
                let q = rumqttc::v5::mqttbytes::qos(qos).unwrap();
                let mut p = v5::Publish::new(topic, q, payload.to_vec(), None);
                p.pkid = pid;
                v5::Packet::Publish(p).write(b, None).unwrap();
            }
        }
    }

    /// Sends one publish.
    pub async fn publish(&mut self, topic: &str, qos: u8, pid: u16, payload: &[u8]) {
        let mut b = BytesMut::new();
        self.publish_bytes(&mut b, topic, qos, pid, payload);
        self.send_raw(&b).await;
    }

    /// Sends a PUBREL.
    pub async fn pubrel(&mut self, pid: u16) {
        let mut b = BytesMut::new();
        match self.proto {
            Proto::V4 => v4::Packet::PubRel(v4::PubRel::new(pid))
                .write(&mut b, usize::MAX)
                .map(|_| ())
                .unwrap(),
            Proto::V5 => v5::Packet::PubRel(v5::PubRel::new(pid, None))
                .write(&mut b, None)
                .map(|_| ())
                .unwrap(),
        }
        self.send_raw(&b).await;
    }

    /// Sends a SUBSCRIBE.
    pub async fn subscribe(&mut self, pid: u16, filter: &str, qos: u8) {
        let mut b = BytesMut::new();
        match self.proto {
            Proto::V4 => {
                let mut s = v4::Subscribe::new(filter, rumqttc::mqttbytes::qos(qos).unwrap());
                s.pkid = pid;
                v4::Packet::Subscribe(s).write(&mut b, usize::MAX).unwrap();
            }
            Proto::V5 => {
                let mut s = v5::Subscribe::new(
                    v5::Filter::new(filter, rumqttc::v5::mqttbytes::qos(qos).unwrap()),
                    None,
                );
                s.pkid = pid;
                v5::Packet::Subscribe(s).write(&mut b, None).unwrap();
            }
        }
        self.send_raw(&b).await;
    }

    /// Next packet, or None when the server closed the connection.
    /// Panics after 8 s of silence (the tests' upper bound).
    pub async fn recv(&mut self) -> Option<Got> {
        match tokio::time::timeout(Duration::from_secs(8), self.recv_inner()).await {
            Ok(r) => r,
            Err(_) => panic!("no packet from server within 8 s"),
        }
    }

    /// Like [`RawClient::recv`] but returns `Err(())` after `ms` of silence.
    pub async fn recv_within(&mut self, ms: u64) -> Result<Option<Got>, ()> {
        tokio::time::timeout(Duration::from_millis(ms), self.recv_inner())
            .await
            .map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Got> {
        loop {
            if let Some(g) = self.try_decode() {
                return Some(g);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn try_decode(&mut self) -> Option<Got> {
        match self.proto {
            Proto::V4 => match v4::Packet::read(&mut self.buf, usize::MAX) {
                Ok(p) => Some(match p {
                    v4::Packet::ConnAck(a) => Got::ConnAck(a.code as u8),
                    v4::Packet::PubAck(a) => Got::PubAck(a.pkid, 0),
                    v4::Packet::PubRec(a) => Got::PubRec(a.pkid, 0),
                    v4::Packet::PubComp(a) => Got::PubComp(a.pkid),
                    v4::Packet::SubAck(a) => Got::SubAck(
                        a.pkid,
                        a.return_codes
                            .iter()
                            .map(|c| match c {
                                v4::SubscribeReasonCode::Success(q) => *q as u8,
                                v4::SubscribeReasonCode::Failure => 0x80,
                            })
                            .collect(),
                    ),
                    v4::Packet::Publish(p) => Got::Publish(p.topic, p.qos as u8, p.pkid),
                    v4::Packet::PingResp => Got::PingResp,
                    other => Got::Other(format!("{other:?}")),
                }),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
                Err(e) => panic!("client could not decode server bytes: {e}"),
            },
            Proto::V5 => {
                // rumqttc 0.25 cannot read the 2-byte DISCONNECT form.
                // (and reads properties even when remaining length is 1).
                if self.buf.len() >= 2 && self.buf[0] == 0xe0 && self.buf[1] == 0 {
                    let _ = self.buf.split_to(2);
                    return Some(Got::Disconnect(0));
                }
                if self.buf.len() >= 3 && self.buf[0] == 0xe0 && self.buf[1] == 1 {
                    let code = self.buf[2];
                    let _ = self.buf.split_to(3);
                    return Some(Got::Disconnect(code));
                }
                match v5::Packet::read(&mut self.buf, None) {
                    Ok(p) => Some(match p {
                        v5::Packet::ConnAck(a) => Got::ConnAck(v5_connack_code(a.code)),
                        v5::Packet::PubAck(a) => Got::PubAck(a.pkid, v5_ack_code(a.reason)),
                        v5::Packet::PubRec(a) => Got::PubRec(
                            a.pkid,
                            if a.reason == v5::PubRecReason::Success {
                                0
                            } else {
                                0x80
                            },
                        ),
                        v5::Packet::PubComp(a) => Got::PubComp(a.pkid),
                        v5::Packet::SubAck(a) => Got::SubAck(
                            a.pkid,
                            a.return_codes
                                .iter()
                                .map(|c| match c {
                                    v5::SubscribeReasonCode::Success(q) => *q as u8,
                                    v5::SubscribeReasonCode::NotAuthorized => 0x87,
                                    v5::SubscribeReasonCode::TopicFilterInvalid => 0x8f,
                                    _ => 0x80,
                                })
                                .collect(),
                        ),
                        v5::Packet::Publish(p) => Got::Publish(
                            String::from_utf8(p.topic.to_vec()).unwrap(),
                            p.qos as u8,
                            p.pkid,
                        ),
                        v5::Packet::PingResp(_) => Got::PingResp,
                        v5::Packet::Disconnect(d) => Got::Disconnect(d.reason_code as u8),
                        other => Got::Other(format!("{other:?}")),
                    }),
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
                    Err(e) => panic!("client could not decode server bytes: {e}"),
                }
            }
        }
    }
}

fn v5_ack_code(r: v5::PubAckReason) -> u8 {
    match r {
        v5::PubAckReason::Success => 0,
        v5::PubAckReason::TopicNameInvalid => 0x90,
        v5::PubAckReason::PayloadFormatInvalid => 0x99,
        v5::PubAckReason::NotAuthorized => 0x87,
        _ => 0x80,
    }
}

fn v5_connack_code(c: v5::ConnectReturnCode) -> u8 {
    use v5::ConnectReturnCode as C;
    match c {
        C::Success => 0,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        _ => 0x80,
    }
}
