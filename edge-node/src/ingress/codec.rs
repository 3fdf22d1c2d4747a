//! One packet vocabulary over rumqttc's MQTT 3.1.1 (v4) and v5 codecs.
//!
//! The session core speaks [`Inbound`] / [`Outbound`]; only this file knows
//! the two wire formats. Framing is checked here first (two-phase, as in
//! mini-redis): [`frame_len`] reads the fixed header and refuses an oversize
//! packet before its body is buffered, then rumqttc decodes the body.
//! [`detect_version`] reads the protocol level out of the first CONNECT so
//! the right codec is chosen before the CONNECT itself is decoded.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{v4, QoS as V4QoS};
use rumqttc::v5::mqttbytes::{v5, QoS as V5QoS};

/// The protocol spoken on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Why bytes from a client could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The fixed header announces a packet above the limit.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced whole-packet size.
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// The bytes are not a valid packet.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The CONNECT names a protocol level we do not speak.
    #[error("unsupported MQTT protocol level {0}")]
    UnsupportedLevel(u8),
}

/// What a client asked for in its CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive_s: u16,
    /// Clean session (v3.1.1) / clean start (v5).
    pub clean_start: bool,
    /// v5 Receive Maximum: QoS 1/2 publishes the client accepts unacked.
    pub receive_maximum: u16,
    /// v5 Maximum Packet Size the client accepts.
    pub max_packet_size: Option<u32>,
    /// v5 Request Problem Information: may we send reason strings.
    pub request_problem_info: bool,
    /// Username and password, if the client sent a username (v5 also
    /// allows a password alone: then the username is empty).
    pub login: Option<Login>,
}

/// The credentials of a CONNECT. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// User name.
    pub username: String,
    /// Password, if sent.
    pub password: Option<Bytes>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn login(l: Option<(String, String)>) -> Option<Login> {
    // rumqttc reads a username-less password as an empty username and a
    // password-less username as an empty password.
    l.map(|(username, password)| Login {
        username,
        password: (!password.is_empty()).then(|| Bytes::from(password.into_bytes())),
    })
}

/// An incoming PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPublish {
    /// Topic name.
    pub topic: String,
    /// Packet id (0 for QoS 0).
    pub pid: u16,
    /// QoS 0, 1 or 2.
    pub qos: u8,
    /// Duplicate flag.
    pub dup: bool,
    /// Payload bytes (zero-copy slice of the read buffer).
    pub payload: Bytes,
    /// v5 topic alias, if the client (illegally: we advertise none) used one.
    pub topic_alias: Option<u16>,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRequest {
    /// Topic filter.
    pub filter: String,
    /// Requested QoS.
    pub qos: u8,
    /// v5 No Local: do not deliver the client's own publishes.
    pub no_local: bool,
}

/// A client → server packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(ConnectInfo),
    /// PUBLISH.
    Publish(InPublish),
    /// PUBACK for a delivery we sent.
    PubAck(u16),
    /// PUBREC (we never send QoS 2, so unexpected but harmless).
    PubRec(u16),
    /// PUBREL for a QoS 2 publish we PUBRECed.
    PubRel(u16),
    /// PUBCOMP (unexpected but harmless).
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        pid: u16,
        /// Requested filters.
        filters: Vec<SubRequest>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pid: u16,
        /// Filters to remove.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT (v5 reason code; 0 for v3.1.1).
    Disconnect(u8),
    /// A packet only a server may send (CONNACK, SUBACK, …) or AUTH.
    Unexpected(&'static str),
}

/// CONNACK result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAckCode {
    /// Connection accepted.
    Accepted,
    /// Protocol level not supported.
    UnsupportedVersion,
    /// Client id refused (empty id without clean session in v3.1.1).
    BadClientId,
    /// The server is shutting down or full.
    ServerUnavailable,
    /// v5 0x86 / v3.1.1 4: unknown username or wrong password.
    BadUsernameOrPassword,
    /// v5 0x87 / v3.1.1 5: no credentials, or not allowed this way.
    NotAuthorized,
}

/// Why a v5 PUBACK/PUBREC refuses a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Accepted.
    Success,
    /// 0x90: the topic is not `strata/<tenant>/<device>/telemetry`.
    TopicNameInvalid,
    /// 0x99: the payload failed decoding.
    PayloadFormatInvalid,
    /// 0x83: valid, but refused (a reading outside the time bounds).
    ImplementationSpecificError,
    /// 0x87: the identity may not publish to this topic.
    NotAuthorized,
}

/// Why the server closes a v5 connection (DISCONNECT reason code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Client said DISCONNECT, or a plain close.
    Normal,
    /// 0x80: the sink failed; records were not made durable.
    UnspecifiedError,
    /// 0x81.
    MalformedPacket,
    /// 0x82.
    ProtocolError,
    /// 0x8B.
    ServerShuttingDown,
    /// 0x8D.
    KeepAliveTimeout,
    /// 0x8E: another connection took over the client id.
    SessionTakenOver,
    /// 0x94.
    TopicAliasInvalid,
    /// 0x95.
    PacketTooLarge,
    /// 0x87: the client's identity was revoked or it broke its ACL.
    NotAuthorized,
}

impl CloseReason {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::UnspecifiedError => "sink_failed",
            CloseReason::MalformedPacket => "malformed_packet",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::ServerShuttingDown => "server_shutting_down",
            CloseReason::KeepAliveTimeout => "keep_alive_timeout",
            CloseReason::SessionTakenOver => "session_taken_over",
            CloseReason::TopicAliasInvalid => "topic_alias_invalid",
            CloseReason::PacketTooLarge => "packet_too_large",
            CloseReason::NotAuthorized => "not_authorized",
        }
    }

    fn v5_code(self) -> v5::DisconnectReasonCode {
        use v5::DisconnectReasonCode as C;
        match self {
            CloseReason::Normal => C::NormalDisconnection,
            CloseReason::UnspecifiedError => C::UnspecifiedError,
            CloseReason::MalformedPacket => C::MalformedPacket,
            CloseReason::ProtocolError => C::ProtocolError,
            CloseReason::ServerShuttingDown => C::ServerShuttingDown,
            CloseReason::KeepAliveTimeout => C::KeepAliveTimeout,
            CloseReason::SessionTakenOver => C::SessionTakenOver,
            CloseReason::TopicAliasInvalid => C::TopicAliasInvalid,
            CloseReason::PacketTooLarge => C::PacketTooLarge,
            CloseReason::NotAuthorized => C::NotAuthorized,
        }
    }
}

/// Why a SUBSCRIBE filter was refused (v3.1.1 says 0x80 for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubRefusal {
    /// v5 0x8F: not a valid (or supported) filter.
    InvalidFilter,
    /// v5 0x87: outside what the identity may read.
    NotAuthorized,
}

/// A server → client packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// CONNACK.
    ConnAck {
        /// Result.
        code: ConnAckCode,
        /// v5: the id we assigned when the client sent an empty one.
        assigned_client_id: Option<String>,
        /// v5: our Maximum Packet Size.
        max_packet_size: u32,
        /// v5: our Receive Maximum (unacked QoS 1/2 publishes per client).
        receive_maximum: u16,
        /// v5: Server Keep Alive, seconds, when it differs from the
        /// client's (capped by `ingress.max-keep-alive`).
        server_keep_alive: Option<u16>,
    },
    /// PUBACK.
    PubAck {
        /// Packet id.
        pid: u16,
        /// v5 reason.
        code: AckCode,
        /// v5 reason string (only when the client allows problem info).
        reason: Option<String>,
    },
    /// PUBREC.
    PubRec {
        /// Packet id.
        pid: u16,
        /// v5 reason.
        code: AckCode,
        /// v5 reason string.
        reason: Option<String>,
    },
    /// PUBCOMP.
    PubComp {
        /// Packet id.
        pid: u16,
        /// v5: false → reason 0x92 packet identifier not found.
        found: bool,
    },
    /// SUBACK: granted QoS per filter, or why it was refused.
    SubAck {
        /// Packet id.
        pid: u16,
        /// One entry per requested filter.
        granted: Vec<Result<u8, SubRefusal>>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        pid: u16,
        /// Number of filters (v5 wants one reason code each).
        count: usize,
    },
    /// PINGRESP.
    PingResp,
    /// v5 DISCONNECT (never sent to a v3.1.1 client).
    Disconnect(CloseReason),
    /// A live delivery to a subscriber.
    Publish {
        /// Topic name.
        topic: Arc<str>,
        /// Payload.
        payload: Bytes,
        /// 0 or 1.
        qos: u8,
        /// Packet id (0 for QoS 0).
        pid: u16,
    },
}

/// Reads the fixed header. `Ok(None)` = need more bytes; `Ok(Some((byte1,
/// total_len)))` = a whole packet of `total_len` bytes is buffered.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining: usize = 0;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else {
            return Ok(None);
        };
        remaining |= ((b & 0x7f) as usize) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(DecodeError::Malformed(
                "remaining length longer than 4 bytes".into(),
            ));
        }
    }
    let total = header + remaining;
    if total > max {
        return Err(DecodeError::TooLarge { size: total, max });
    }
    Ok((buf.len() >= total).then_some((byte1, total)))
}

/// Reads the protocol level of the first packet, which must be CONNECT.
/// `Ok(None)` = need more bytes.
pub fn detect_version(buf: &[u8], max: usize) -> Result<Option<Version>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    if byte1 != 0x10 {
        return Err(DecodeError::Malformed(format!(
            "first packet must be CONNECT, got type {}",
            byte1 >> 4
        )));
    }
    // Refuse an oversize CONNECT before waiting for its body.
    let complete = frame_len(buf, max)?.map(|(_, total)| total);
    let Some(header) = (1..5).find(|&i| buf.get(i).is_some_and(|b| b & 0x80 == 0)) else {
        return Ok(None);
    };
    // Look only inside this packet: once it is complete, missing fields are
    // malformed (not "wait for more", which would read the next packet's
    // bytes or hang until the connect timeout).
    let body = &buf[header + 1..complete.unwrap_or(buf.len())];
    let short = || match complete {
        Some(_) => Err(DecodeError::Malformed(
            "CONNECT ends before its protocol name and level".into(),
        )),
        None => Ok(None),
    };
    if body.len() < 2 {
        return short();
    }
    let name_len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let Some(level) = body.get(2 + name_len) else {
        return short();
    };
    match (&body[2..2 + name_len], *level) {
        (b"MQTT", 4) => Ok(Some(Version::V4)),
        (b"MQTT", 5) => Ok(Some(Version::V5)),
        (b"MQTT" | b"MQIsdp", l) => Err(DecodeError::UnsupportedLevel(l)),
        (name, _) => Err(DecodeError::Malformed(format!(
            "protocol name {:?} is not MQTT",
            String::from_utf8_lossy(name)
        ))),
    }
}

/// Decodes one packet from the front of `buf`. `Ok(None)` = need more bytes.
pub fn decode(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Inbound>, DecodeError> {
    let Some((byte1, total)) = frame_len(buf, max)? else {
        return Ok(None);
    };
    // rumqttc 0.25's v5 reader refuses a DISCONNECT with remaining length 0,
    // which is the normal v5 form (reason 0x00, no properties).
    if byte1 >> 4 == 14 && total == 2 {
        let _ = buf.split_to(2);
        return Ok(Some(Inbound::Disconnect(0)));
    }
    match version {
        Version::V4 => v4::Packet::read(buf, usize::MAX)
            .map(|p| Some(from_v4(p)))
            .map_err(|e| DecodeError::Malformed(e.to_string())),
        Version::V5 => match v5::Packet::read(buf, None) {
            Ok(p) => from_v5(p).map(Some),
            Err(e) => Err(DecodeError::Malformed(e.to_string())),
        },
    }
}

fn from_v4(p: v4::Packet) -> Inbound {
    match p {
        v4::Packet::Connect(c) => Inbound::Connect(ConnectInfo {
            client_id: c.client_id,
            keep_alive_s: c.keep_alive,
            clean_start: c.clean_session,
            receive_maximum: u16::MAX,
            max_packet_size: None,
            request_problem_info: false,
            login: login(c.login.map(|l| (l.username, l.password))),
        }),
        v4::Packet::Publish(p) => Inbound::Publish(InPublish {
            topic: p.topic,
            pid: p.pkid,
            qos: p.qos as u8,
            dup: p.dup,
            payload: p.payload,
            topic_alias: None,
        }),
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubRequest {
                    filter: f.path,
                    qos: f.qos as u8,
                    no_local: false,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect(0),
        v4::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v4::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(p: v5::Packet) -> Result<Inbound, DecodeError> {
    Ok(match p {
        v5::Packet::Connect(c, _will, credentials) => {
            let props = c.properties.unwrap_or_default();
            Inbound::Connect(ConnectInfo {
                client_id: c.client_id,
                keep_alive_s: c.keep_alive,
                clean_start: c.clean_start,
                receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
                max_packet_size: props.max_packet_size,
                request_problem_info: props.request_problem_info != Some(0),
                login: login(credentials.map(|l| (l.username, l.password))),
            })
        }
        v5::Packet::Publish(p) => Inbound::Publish(InPublish {
            topic: String::from_utf8(p.topic.to_vec())
                .map_err(|_| DecodeError::Malformed("topic is not UTF-8".into()))?,
            pid: p.pkid,
            qos: p.qos as u8,
            dup: p.dup,
            payload: p.payload,
            topic_alias: p.properties.and_then(|pr| pr.topic_alias),
        }),
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubRequest {
                    filter: f.path,
                    qos: f.qos as u8,
                    no_local: f.nolocal,
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(d) => Inbound::Disconnect(d.reason_code as u8),
        v5::Packet::Auth(_) => Inbound::Unexpected("AUTH"),
        v5::Packet::ConnAck(_) => Inbound::Unexpected("CONNACK"),
        v5::Packet::SubAck(_) => Inbound::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Inbound::Unexpected("PINGRESP"),
    })
}

fn v4_qos(q: u8) -> V4QoS {
    if q >= 1 {
        V4QoS::AtLeastOnce
    } else {
        V4QoS::AtMostOnce
    }
}

fn v5_qos(q: u8) -> V5QoS {
    match q {
        0 => V5QoS::AtMostOnce,
        1 => V5QoS::AtLeastOnce,
        _ => V5QoS::ExactlyOnce,
    }
}

/// Encoded size of `pkt` for `version`, to respect a client's v5 Maximum
/// Packet Size before queueing a delivery.
pub fn encoded_len(version: Version, pkt: &Outbound) -> usize {
    let mut b = BytesMut::new();
    encode(version, pkt, &mut b);
    b.len()
}

/// Appends `pkt` to `out`. Packets meaningless in `version` (a DISCONNECT
/// to a v3.1.1 client) append nothing. Only packets we build ourselves are
/// encoded, so rumqttc's size errors cannot occur; should one anyway, the
/// packet is skipped rather than corrupting the stream.
pub fn encode(version: Version, pkt: &Outbound, out: &mut BytesMut) {
    let start = out.len();
    let r = match version {
        Version::V4 => encode_v4(pkt, out).map_err(|_| ()),
        Version::V5 => encode_v5(pkt, out).map_err(|_| ()),
    };
    if r.is_err() {
        out.truncate(start);
    }
}

fn encode_v4(pkt: &Outbound, out: &mut BytesMut) -> Result<usize, rumqttc::mqttbytes::Error> {
    match pkt {
        Outbound::ConnAck { code, .. } => v4::ConnAck::new(
            match code {
                ConnAckCode::Accepted => v4::ConnectReturnCode::Success,
                ConnAckCode::UnsupportedVersion => v4::ConnectReturnCode::RefusedProtocolVersion,
                ConnAckCode::BadClientId => v4::ConnectReturnCode::BadClientId,
                ConnAckCode::ServerUnavailable => v4::ConnectReturnCode::ServiceUnavailable,
                ConnAckCode::BadUsernameOrPassword => v4::ConnectReturnCode::BadUserNamePassword,
                ConnAckCode::NotAuthorized => v4::ConnectReturnCode::NotAuthorized,
            },
            false,
        )
        .write(out),
        Outbound::PubAck { pid, .. } => v4::PubAck::new(*pid).write(out),
        Outbound::PubRec { pid, .. } => v4::PubRec::new(*pid).write(out),
        Outbound::PubComp { pid, .. } => v4::PubComp::new(*pid).write(out),
        Outbound::SubAck { pid, granted } => v4::SubAck::new(
            *pid,
            granted
                .iter()
                .map(|g| match g {
                    Ok(q) => v4::SubscribeReasonCode::Success(v4_qos(*q)),
                    Err(_) => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )
        .write(out),
        Outbound::UnsubAck { pid, .. } => v4::UnsubAck::new(*pid).write(out),
        Outbound::PingResp => v4::PingResp.write(out),
        Outbound::Disconnect(_) => Ok(0),
        Outbound::Publish {
            topic,
            payload,
            qos,
            pid,
        } => v4::Publish {
            dup: false,
            qos: v4_qos(*qos),
            retain: false,
            topic: topic.to_string(),
            pkid: *pid,
            payload: payload.clone(),
        }
        .write(out),
    }
}

fn encode_v5(pkt: &Outbound, out: &mut BytesMut) -> Result<usize, rumqttc::v5::mqttbytes::Error> {
    match pkt {
        Outbound::ConnAck {
            code,
            assigned_client_id,
            max_packet_size,
            receive_maximum,
            server_keep_alive,
        } => {
            let props = v5::ConnAckProperties {
                session_expiry_interval: None,
                receive_max: Some(*receive_maximum),
                max_qos: None,
                retain_available: None,
                max_packet_size: Some(*max_packet_size),
                assigned_client_identifier: assigned_client_id.clone(),
                topic_alias_max: None,
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: *server_keep_alive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            };
            v5::ConnAck {
                session_present: false,
                // rumqttc's v5 writer only knows the v5 codes; the v3
                // ones would hit its `unreachable!`.
                code: match code {
                    ConnAckCode::Accepted => v5::ConnectReturnCode::Success,
                    ConnAckCode::UnsupportedVersion => {
                        v5::ConnectReturnCode::UnsupportedProtocolVersion
                    }
                    ConnAckCode::BadClientId => v5::ConnectReturnCode::ClientIdentifierNotValid,
                    ConnAckCode::ServerUnavailable => v5::ConnectReturnCode::ServerUnavailable,
                    ConnAckCode::BadUsernameOrPassword => {
                        v5::ConnectReturnCode::BadUserNamePassword
                    }
                    ConnAckCode::NotAuthorized => v5::ConnectReturnCode::NotAuthorized,
                },
                properties: (*code == ConnAckCode::Accepted).then_some(props),
            }
            .write(out)
        }
        Outbound::PubAck { pid, code, reason } => v5::PubAck {
            pkid: *pid,
            reason: match code {
                AckCode::Success => v5::PubAckReason::Success,
                AckCode::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
                AckCode::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
                AckCode::ImplementationSpecificError => {
                    v5::PubAckReason::ImplementationSpecificError
                }
                AckCode::NotAuthorized => v5::PubAckReason::NotAuthorized,
            },
            properties: reason.as_ref().map(|r| v5::PubAckProperties {
                reason_string: Some(r.clone()),
                user_properties: Vec::new(),
            }),
        }
        .write(out),
        Outbound::PubRec { pid, code, reason } => v5::PubRec {
            pkid: *pid,
            reason: match code {
                AckCode::Success => v5::PubRecReason::Success,
                AckCode::TopicNameInvalid => v5::PubRecReason::TopicNameInvalid,
                AckCode::PayloadFormatInvalid => v5::PubRecReason::PayloadFormatInvalid,
                AckCode::ImplementationSpecificError => {
                    v5::PubRecReason::ImplementationSpecificError
                }
                AckCode::NotAuthorized => v5::PubRecReason::NotAuthorized,
            },
            properties: reason.as_ref().map(|r| v5::PubRecProperties {
                reason_string: Some(r.clone()),
                user_properties: Vec::new(),
            }),
        }
        .write(out),
        Outbound::PubComp { pid, found } => v5::PubComp {
            pkid: *pid,
            reason: if *found {
                v5::PubCompReason::Success
            } else {
                v5::PubCompReason::PacketIdentifierNotFound
            },
            properties: None,
        }
        .write(out),
        Outbound::SubAck { pid, granted } => v5::SubAck {
            pkid: *pid,
            return_codes: granted
                .iter()
                .map(|g| match g {
                    Ok(q) => v5::SubscribeReasonCode::Success(v5_qos(*q)),
                    Err(SubRefusal::InvalidFilter) => v5::SubscribeReasonCode::TopicFilterInvalid,
                    Err(SubRefusal::NotAuthorized) => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
            properties: None,
        }
        .write(out),
        Outbound::UnsubAck { pid, count } => v5::UnsubAck {
            pkid: *pid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }
        .write(out),
        Outbound::PingResp => v5::PingResp::write(out),
        Outbound::Disconnect(reason) => {
            // Hand-encoded: rumqttc 0.25 writes a property-length byte that
            // its remaining length does not count. Remaining length 1 (reason
            // only, properties omitted) is valid per v5 §3.14.2.2.1.
            let code = reason.v5_code() as u8;
            if code == 0 {
                out.extend_from_slice(&[0xe0, 0x00]);
            } else {
                out.extend_from_slice(&[0xe0, 0x01, code]);
            }
            Ok(out.len())
        }
        Outbound::Publish {
            topic,
            payload,
            qos,
            pid,
        } => v5::Publish {
            dup: false,
            qos: v5_qos(*qos),
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            pkid: *pid,
            payload: payload.clone(),
            properties: None,
        }
        .write(out),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
