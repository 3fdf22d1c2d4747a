//! The sans-IO MQTT session: what to send for each packet received.
//!
//! Events in (`handle_packet`, `handle_submit_done`, `handle_timeout`,
//! `deliver`), commands and packets out (`take_commands`,
//! `take_transmit`). No sockets, no clock: `now` is milliseconds passed in
//! by the driver (monotonic, for deadlines), and so is `wall_ms` (the wall
//! clock, for the time bounds on readings), so every rule below is
//! unit-tested deterministically.
//!
//! Rules:
//! - Valid publishes join the *open batch*; the driver calls
//!   [`Session::end_of_read`] after decoding everything buffered, which
//!   emits one [`Command::Submit`] for the whole batch.
//! - PUBACK/PUBREC go out strictly in PUBLISH order (MQTT §4.6) and only
//!   once the submit holding that record resolved Ok. An ack for a
//!   rejected publish has no dependency but still waits its turn.
//! - QoS 2: a packet id stays in `qos2` from PUBLISH until PUBREL, so a
//!   retransmitted PUBLISH is acked again but never stored twice.
//! - Backpressure: [`Session::can_read`] is false while `max_inflight`
//!   records (or queued acks) are outstanding.
//! - Closing drains: submits already made finish and their acks are sent
//!   before the (v5) DISCONNECT.
//! - Time bounds: a reading whose `ts` is outside [`TimeBounds`] at
//!   `wall_ms` is refused before it joins a batch: v5 gets 0x83 with a reason
//!   string, v3.1.1 follows [`V3Refusal`].
//! - Keep-alive: the client's, capped at `max_keep_alive_s` (a client asking
//!   for 0 gets the cap too), so no session can idle for ever.
//! - An authenticated session ([`Session::with_principal`]) applies the
//!   topic ACLs of [`super::auth::acl`] before anything else looks at a
//!   publish or filter, and closes (v5 DISCONNECT 0x87) when
//!   [`Session::handle_credentials`] shows its identity revoked.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::telemetry::{decode_payload, parse_topic};
use strata_protocol::{RejectReason, TelemetryRecord};

use super::auth::{acl, Credentials, Principal};
use super::bounds::{OutOfBounds, TimeBounds};
use super::codec::{
    AckCode, CloseReason, ConnAckCode, ConnectInfo, DecodeError, InPublish, Inbound, Outbound,
    SubRefusal, SubRequest, Version,
};
use super::config::V3Refusal;
use super::topic::valid_filter;

/// Limits a session enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Records (or queued acks) outstanding before reading stops.
    pub max_inflight: usize,
    /// Largest packet we accept, bytes (advertised to v5 clients).
    pub max_packet_bytes: usize,
    /// Unacked QoS 1 deliveries to this client before copies are dropped.
    pub subscriber_queue: usize,
    /// Time bounds on readings when the session starts (the driver updates
    /// them with [`Session::set_time_bounds`]).
    pub time_bounds: TimeBounds,
    /// What a v3.1.1 client gets for a reading outside the time bounds.
    pub v3_refusal: V3Refusal,
    /// Longest keep-alive granted, seconds (≥ 1).
    pub max_keep_alive_s: u16,
}

/// The keep-alive the server grants for a requested one: the request, or
/// `max` when the client asked for none (0) or for more.
pub fn granted_keep_alive(asked_s: u16, max_s: u16) -> u16 {
    if asked_s == 0 || asked_s > max_s {
        max_s
    } else {
        asked_s
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Hand these records to the sink; report with `handle_submit_done(id)`.
    Submit {
        /// Submit id, increasing per session.
        id: u64,
        /// The batch.
        records: Vec<TelemetryRecord>,
    },
    /// Offer an accepted publish to live subscribers (the driver skips it
    /// cheaply when nobody subscribes).
    FanOut {
        /// Topic name.
        topic: String,
        /// Payload.
        payload: Bytes,
        /// The publish's QoS (delivery is capped by each grant).
        qos: u8,
    },
    /// Register these granted filters (qos = granted QoS).
    Subscribe(Vec<SubRequest>),
    /// Remove these filters.
    Unsubscribe(Vec<String>),
    /// Count and log a rejected publish or packet.
    Reject {
        /// Counter label.
        reason: &'static str,
        /// Human-readable detail for the log line.
        detail: String,
    },
}

#[derive(Debug)]
struct PendingAck {
    /// Submit that must be durable first, if any.
    after: Option<u64>,
    pkt: Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Closing; send this v5 DISCONNECT once drained (None: client closed).
    Draining(Option<CloseReason>),
    Done,
}

/// Result of a CONNECT: the client id to register and the CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Client id (assigned when the client sent none).
    pub client_id: String,
    /// The CONNACK to send.
    pub connack: Outbound,
}

/// Decides the CONNACK for a CONNECT. `Err` carries a refusing CONNACK
/// after which the connection is closed. `conn_seq` makes assigned ids
/// unique.
pub fn accept_connect(
    version: Version,
    info: &ConnectInfo,
    cfg: &SessionConfig,
    conn_seq: u64,
) -> Result<Accepted, Outbound> {
    let refuse = |code| Outbound::ConnAck {
        code,
        assigned_client_id: None,
        max_packet_size: 0,
        receive_maximum: 0,
        server_keep_alive: None,
    };
    let mut assigned = None;
    let client_id = if info.client_id.is_empty() {
        // v3.1.1 §3.1.3-8: an empty id requires clean session. v5 lets the
        // server assign one and tell the client.
        if version == Version::V4 && !info.clean_start {
            return Err(refuse(ConnAckCode::BadClientId));
        }
        let id = format!("strata-auto-{conn_seq}");
        if version == Version::V5 {
            assigned = Some(id.clone());
        }
        id
    } else {
        info.client_id.clone()
    };
    // A v5 client must use the Server Keep Alive when one is sent (§3.2.2.3.14).
    let granted = granted_keep_alive(info.keep_alive_s, cfg.max_keep_alive_s);
    Ok(Accepted {
        client_id,
        connack: Outbound::ConnAck {
            code: ConnAckCode::Accepted,
            assigned_client_id: assigned,
            max_packet_size: u32::try_from(cfg.max_packet_bytes).unwrap_or(u32::MAX),
            receive_maximum: u16::try_from(cfg.max_inflight).unwrap_or(u16::MAX).max(1),
            server_keep_alive: (version == Version::V5 && granted != info.keep_alive_s)
                .then_some(granted),
        },
    })
}

/// Longest reason string put into a v5 ack.
const MAX_REASON_STRING: usize = 200;

/// Counter label of a session closed by the server's keep-alive cap.
pub const IDLE_TIMEOUT: &str = "idle_timeout";

/// One connected client's protocol state.
#[derive(Debug)]
pub struct Session {
    version: Version,
    cfg: SessionConfig,
    keep_alive_ms: u64,
    /// The server's cap replaced what the client asked for.
    keep_alive_capped: bool,
    bounds: TimeBounds,
    last_activity_ms: u64,
    problem_info: bool,
    client_max_packet: usize,
    out_window: usize,
    state: State,
    acks: VecDeque<PendingAck>,
    open: Vec<TelemetryRecord>,
    open_id: u64,
    /// Submits not yet resolved (including the open batch): id → records.
    inflight: BTreeMap<u64, usize>,
    inflight_records: usize,
    failed_from: Option<u64>,
    /// QoS 2 packet ids between PUBLISH and PUBREL → submit holding it.
    qos2: HashMap<u16, Option<u64>>,
    out_pids: HashSet<u16>,
    next_out_pid: u16,
    transmit: Vec<Outbound>,
    commands: Vec<Command>,
    /// Who logged in; `None` = anonymous (allow-anonymous), no ACLs.
    principal: Option<Principal>,
}

impl Session {
    /// A session for an accepted CONNECT at time `now_ms`.
    pub fn new(version: Version, info: &ConnectInfo, cfg: SessionConfig, now_ms: u64) -> Self {
        let keep_alive_s = granted_keep_alive(info.keep_alive_s, cfg.max_keep_alive_s);
        Session {
            version,
            cfg,
            keep_alive_ms: u64::from(keep_alive_s) * 1000,
            keep_alive_capped: keep_alive_s != info.keep_alive_s,
            bounds: cfg.time_bounds,
            last_activity_ms: now_ms,
            problem_info: version == Version::V5 && info.request_problem_info,
            client_max_packet: info.max_packet_size.map_or(usize::MAX, |m| m as usize),
            out_window: (info.receive_maximum.max(1) as usize).min(cfg.subscriber_queue.max(1)),
            state: State::Open,
            acks: VecDeque::new(),
            open: Vec::new(),
            open_id: 0,
            inflight: BTreeMap::new(),
            inflight_records: 0,
            failed_from: None,
            qos2: HashMap::new(),
            out_pids: HashSet::new(),
            next_out_pid: 1,
            transmit: Vec::new(),
            commands: Vec::new(),
            principal: None,
        }
    }

    /// Binds the session to an authenticated identity: its ACLs apply.
    pub fn with_principal(mut self, principal: Option<Principal>) -> Self {
        self.principal = principal;
        self
    }

    /// The identity this session logged in as (`None`: anonymous).
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    /// New credentials are in force: close if they no longer grant this
    /// session's identity exactly as it logged in (removed, or its
    /// password, tenant, devices or certificate login changed).
    pub fn handle_credentials(&mut self, creds: &Credentials) {
        let Some(p) = &self.principal else {
            return;
        };
        if self.state == State::Open && !creds.still_grants(&p.identity) {
            self.commands.push(Command::Reject {
                reason: "revoked",
                detail: format!(
                    "identity {:?} was removed or changed in the credentials file",
                    p.identity.username
                ),
            });
            self.begin_close(Some(CloseReason::NotAuthorized));
        }
    }

    /// The publish ACL. `Err` carries the refusal already applied: v5
    /// gets a 0x87 ack (QoS 1/2), v3.1.1 cannot be told no and is closed.
    fn check_publish_acl(&mut self, p: &InPublish) -> Result<(), ()> {
        let Some(principal) = &self.principal else {
            return Ok(());
        };
        let Err(denied) = acl::may_publish(&principal.identity, &p.topic) else {
            return Ok(());
        };
        self.commands.push(Command::Reject {
            reason: "publish_not_authorized",
            detail: denied.clone(),
        });
        match self.version {
            Version::V5 => {
                let reason = self.reason_string(denied);
                self.push_ack(p.qos, p.pid, None, AckCode::NotAuthorized, reason);
            }
            Version::V4 => self.begin_close(Some(CloseReason::NotAuthorized)),
        }
        Err(())
    }

    /// `detail` as a v5 reason string, if the client accepts one and it
    /// cannot push the ack past the client's Maximum Packet Size.
    fn reason_string(&self, mut s: String) -> Option<String> {
        let fits = self.client_max_packet >= MAX_REASON_STRING + 16;
        (self.problem_info && fits).then(|| {
            if s.len() > MAX_REASON_STRING {
                let mut cut = MAX_REASON_STRING;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
            }
            s
        })
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the driver may decode and read more input.
    pub fn can_read(&self) -> bool {
        self.state == State::Open
            && self.inflight_records.max(self.acks.len()) < self.cfg.max_inflight
    }

    /// Whether the session is still accepting packets.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the session has drained and the socket can be closed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Submits not yet resolved.
    pub fn inflight_submits(&self) -> usize {
        self.inflight.len()
    }

    /// The time bounds now in force (the region's retention may tighten
    /// them while the session lives).
    pub fn set_time_bounds(&mut self, bounds: TimeBounds) {
        self.bounds = bounds;
    }

    /// Drains the commands produced so far.
    pub fn take_commands(&mut self) -> std::vec::Drain<'_, Command> {
        self.commands.drain(..)
    }

    /// Drains the packets ready to be written, in order.
    pub fn take_transmit(&mut self) -> std::vec::Drain<'_, Outbound> {
        self.transmit.drain(..)
    }

    /// Keep-alive deadline (ms), if one applies: 1.5 × keep-alive after the
    /// last packet or completed submit.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.state == State::Open && self.keep_alive_ms > 0)
            .then(|| self.last_activity_ms + self.keep_alive_ms * 3 / 2)
    }

    /// Closes the session if the keep-alive deadline passed. Not while a
    /// submit is in flight: then *we* are the slow side (backpressure), not
    /// the client.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if let Some(deadline) = self.poll_timeout() {
            if now_ms >= deadline && self.inflight.is_empty() {
                let idle = now_ms - self.last_activity_ms;
                // Count which limit fired: the client's own keep-alive, or
                // the server's cap on it (`ingress.max-keep-alive`).
                let (reason, detail) = if self.keep_alive_capped {
                    (
                        IDLE_TIMEOUT,
                        format!(
                            "no packet for {idle} ms; max-keep-alive is {} s",
                            self.keep_alive_ms / 1000
                        ),
                    )
                } else {
                    (
                        CloseReason::KeepAliveTimeout.as_str(),
                        format!("no packet for {idle} ms"),
                    )
                };
                self.commands.push(Command::Reject { reason, detail });
                self.begin_close(Some(CloseReason::KeepAliveTimeout));
            }
        }
    }

    /// Ends a read pass: the open batch becomes one submit.
    pub fn end_of_read(&mut self) {
        if !self.open.is_empty() {
            self.commands.push(Command::Submit {
                id: self.open_id,
                records: std::mem::take(&mut self.open),
            });
            self.open_id += 1;
        }
    }

    /// Starts closing: flush the open batch, let submits finish, send acks,
    /// then (v5, when `send` is Some) a DISCONNECT with that reason.
    pub fn begin_close(&mut self, send: Option<CloseReason>) {
        if self.state == State::Open {
            self.end_of_read();
            self.state = State::Draining(send);
        }
        self.pump();
    }

    /// A submit resolved.
    pub fn handle_submit_done(&mut self, id: u64, ok: bool, now_ms: u64) {
        if let Some(n) = self.inflight.remove(&id) {
            self.inflight_records -= n;
        }
        self.last_activity_ms = self.last_activity_ms.max(now_ms);
        if !ok {
            self.failed_from = Some(self.failed_from.map_or(id, |f| f.min(id)));
            // The client must resend what we could not store: close so it
            // reconnects and retransmits its unacked publishes.
            self.begin_close(Some(CloseReason::UnspecifiedError));
        }
        self.pump();
    }

    /// A bad frame from the client: count it and close.
    pub fn handle_decode_error(&mut self, err: &DecodeError) {
        let (reason, close) = match err {
            DecodeError::TooLarge { .. } => ("packet_too_large", CloseReason::PacketTooLarge),
            DecodeError::Malformed(_) | DecodeError::UnsupportedLevel(_) => {
                ("malformed_packet", CloseReason::MalformedPacket)
            }
        };
        self.commands.push(Command::Reject {
            reason,
            detail: err.to_string(),
        });
        self.begin_close(Some(close));
    }

    /// One packet from the client, at monotonic `now_ms` and wall-clock
    /// `wall_ms` (ms since the Unix epoch).
    pub fn handle_packet(&mut self, pkt: Inbound, now_ms: u64, wall_ms: i64) {
        if self.state != State::Open {
            return;
        }
        self.last_activity_ms = self.last_activity_ms.max(now_ms);
        match pkt {
            Inbound::Publish(p) => self.handle_publish(p, wall_ms),
            Inbound::PubRel(pid) => {
                let (after, found) = match self.qos2.remove(&pid) {
                    Some(after) => (after, true),
                    None => (None, false),
                };
                self.acks.push_back(PendingAck {
                    after,
                    pkt: Outbound::PubComp { pid, found },
                });
            }
            Inbound::PubAck(pid) => {
                self.out_pids.remove(&pid);
            }
            // We never send QoS 2, so these cannot refer to anything.
            Inbound::PubRec(_) | Inbound::PubComp(_) => {}
            Inbound::Subscribe { pid, filters } => self.handle_subscribe(pid, filters),
            Inbound::Unsubscribe { pid, filters } => {
                self.transmit.push(Outbound::UnsubAck {
                    pid,
                    count: filters.len(),
                });
                self.commands.push(Command::Unsubscribe(filters));
            }
            Inbound::PingReq => self.transmit.push(Outbound::PingResp),
            Inbound::Disconnect(_) => self.begin_close(None),
            Inbound::Connect(_) => self.protocol_error("second CONNECT on one connection".into()),
            Inbound::Unexpected(kind) => {
                self.protocol_error(format!("client sent {kind}, which only a server may send"))
            }
        }
        self.pump();
    }

    fn protocol_error(&mut self, detail: String) {
        self.commands.push(Command::Reject {
            reason: "protocol_error",
            detail,
        });
        self.begin_close(Some(CloseReason::ProtocolError));
    }

    fn handle_publish(&mut self, p: InPublish, wall_ms: i64) {
        if p.topic_alias.is_some() {
            // We advertise Topic Alias Maximum 0 (§3.3.2.3.4).
            self.commands.push(Command::Reject {
                reason: CloseReason::TopicAliasInvalid.as_str(),
                detail: "topic alias used but none allowed".into(),
            });
            self.begin_close(Some(CloseReason::TopicAliasInvalid));
            return;
        }
        if self.check_publish_acl(&p).is_err() {
            return;
        }
        if p.qos == 2 {
            if let Some(after) = self.qos2.get(&p.pid).copied() {
                // Retransmission before PUBREL: ack again, never store again.
                self.acks.push_back(PendingAck {
                    after,
                    pkt: Outbound::PubRec {
                        pid: p.pid,
                        code: AckCode::Success,
                        reason: None,
                    },
                });
                return;
            }
        }
        let decoded = parse_topic(&p.topic).and_then(|dev| decode_payload(&dev, &p.payload));
        if let Ok(record) = &decoded {
            if let Err(oob) = self.bounds.check(record.ts_ms, wall_ms) {
                self.refuse_out_of_bounds(p, &oob);
                return;
            }
        }
        match decoded {
            Ok(record) => {
                let id = self.open_id;
                self.open.push(record);
                *self.inflight.entry(id).or_insert(0) += 1;
                self.inflight_records += 1;
                self.commands.push(Command::FanOut {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                });
                self.push_ack(p.qos, p.pid, Some(id), AckCode::Success, None);
            }
            Err(e) => {
                let code = match e.reason {
                    RejectReason::UnknownTopic | RejectReason::BadName => AckCode::TopicNameInvalid,
                    _ => AckCode::PayloadFormatInvalid,
                };
                let reason = self.reason_string(e.to_string());
                self.commands.push(Command::Reject {
                    reason: e.reason.as_str(),
                    detail: format!("topic {:?}: {}", p.topic, e.detail),
                });
                // v5 can say no (a refused QoS 2 ends the exchange: no
                // PUBREL follows). v3.1.1 cannot: ack as success so the
                // device stops retransmitting a publish that will never be
                // valid; it was counted and logged above.
                let (code, reason) = match self.version {
                    Version::V5 => (code, reason),
                    Version::V4 => (AckCode::Success, None),
                };
                self.push_ack(p.qos, p.pid, None, code, reason);
            }
        }
    }

    /// A decoded reading outside the time bounds: counted, never stored.
    /// v5 hears 0x83 (Implementation specific error: "the PUBLISH is valid
    /// but the receiver is not willing to accept it", which is exactly this;
    /// 0x99 would claim the payload is malformed, and it is not). v3.1.1
    /// follows the configured policy (see the module docs of `ingress`).
    fn refuse_out_of_bounds(&mut self, p: InPublish, oob: &OutOfBounds) {
        self.commands.push(Command::Reject {
            reason: oob.reason(),
            detail: format!("topic {:?}: {oob}", p.topic),
        });
        match (self.version, self.cfg.v3_refusal) {
            (Version::V5, _) => {
                let reason = self.reason_string(oob.to_string());
                self.push_ack(
                    p.qos,
                    p.pid,
                    None,
                    AckCode::ImplementationSpecificError,
                    reason,
                );
            }
            (Version::V4, V3Refusal::Drop) => {
                self.push_ack(p.qos, p.pid, None, AckCode::Success, None)
            }
            // No ack for it and none for anything after it; what came
            // before is still stored and acked while the session drains.
            (Version::V4, V3Refusal::Disconnect) => self.begin_close(None),
        }
    }

    /// Queues the ack for a QoS 1/2 publish. A QoS 2 acked with success
    /// enters `qos2` until its PUBREL.
    fn push_ack(
        &mut self,
        qos: u8,
        pid: u16,
        after: Option<u64>,
        code: AckCode,
        reason: Option<String>,
    ) {
        let pkt = match qos {
            1 => Outbound::PubAck { pid, code, reason },
            2 => {
                if code == AckCode::Success {
                    self.qos2.insert(pid, after);
                }
                Outbound::PubRec { pid, code, reason }
            }
            _ => return,
        };
        self.acks.push_back(PendingAck { after, pkt });
    }

    fn handle_subscribe(&mut self, pid: u16, filters: Vec<SubRequest>) {
        let mut granted = Vec::with_capacity(filters.len());
        let mut accepted = Vec::with_capacity(filters.len());
        for f in filters {
            // Shared subscriptions are not supported; say so truthfully.
            let denied = self
                .principal
                .as_ref()
                .and_then(|p| acl::may_subscribe(&p.identity, &f.filter).err());
            if let Some(detail) = denied {
                granted.push(Err(SubRefusal::NotAuthorized));
                self.commands.push(Command::Reject {
                    reason: "subscribe_not_authorized",
                    detail,
                });
            } else if valid_filter(&f.filter) && !f.filter.starts_with("$share/") && f.qos <= 2 {
                // We deliver at most QoS 1: grant exactly that.
                let qos = f.qos.min(1);
                granted.push(Ok(qos));
                accepted.push(SubRequest { qos, ..f });
            } else {
                granted.push(Err(SubRefusal::InvalidFilter));
                self.commands.push(Command::Reject {
                    reason: "bad_filter",
                    detail: format!("subscription filter {:?} refused", f.filter),
                });
            }
        }
        if !accepted.is_empty() {
            self.commands.push(Command::Subscribe(accepted));
        }
        self.transmit.push(Outbound::SubAck { pid, granted });
    }

    /// Offers a live delivery at `qos` (already capped by the grant).
    /// Returns false when it must be dropped: session closing, the client's
    /// unacked window is full, or it exceeds the client's packet limit.
    pub fn deliver(&mut self, topic: Arc<str>, payload: Bytes, qos: u8) -> bool {
        if self.state != State::Open {
            return false;
        }
        // Fixed header (≤5) + topic (2+len) + pid (2) + v5 props (1).
        if 10 + topic.len() + payload.len() > self.client_max_packet {
            return false;
        }
        let qos = qos.min(1);
        let mut pid = 0;
        if qos == 1 {
            if self.out_pids.len() >= self.out_window {
                return false;
            }
            // The window is < 65535, so a free id always exists.
            while self.out_pids.contains(&self.next_out_pid) || self.next_out_pid == 0 {
                self.next_out_pid = self.next_out_pid.wrapping_add(1);
            }
            pid = self.next_out_pid;
            self.next_out_pid = self.next_out_pid.wrapping_add(1);
            self.out_pids.insert(pid);
        }
        self.transmit.push(Outbound::Publish {
            topic,
            payload,
            qos,
            pid,
        });
        true
    }

    /// Moves ready acks (in order) to the transmit queue; finishes a drain.
    fn pump(&mut self) {
        while let Some(head) = self.acks.front() {
            match head.after {
                Some(id) if self.failed_from.is_some_and(|f| id >= f) => {
                    // Not durable: no ack for it nor (order!) anything after.
                    self.acks.clear();
                    break;
                }
                Some(id) if self.inflight.contains_key(&id) => break,
                _ => {
                    if let Some(a) = self.acks.pop_front() {
                        self.transmit.push(a.pkt);
                    }
                }
            }
        }
        if let State::Draining(send) = self.state {
            if self.inflight.is_empty() && self.acks.is_empty() {
                if let (Some(reason), Version::V5) = (send, self.version) {
                    self.transmit.push(Outbound::Disconnect(reason));
                }
                self.state = State::Done;
            }
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
