//! Codec tests: version detection, framing limits, round trips through
//! rumqttc, and never panicking on garbage.

use super::*;
use proptest::prelude::*;

fn connect_bytes(level: u8) -> BytesMut {
    let mut b = BytesMut::new();
    match level {
        5 => {
            let c = v5::Connect {
                keep_alive: 30,
                client_id: "c1".into(),
                clean_start: true,
                properties: None,
            };
            v5::Packet::Connect(c, None, None)
                .write(&mut b, None)
                .unwrap();
        }
        _ => {
            let mut c = v4::Connect::new("c1");
            c.keep_alive = 30;
            v4::Packet::Connect(c).write(&mut b, usize::MAX).unwrap();
            if level != 4 {
                // Patch the protocol level byte (after 2-byte header + "\0\4MQTT").
                b[8] = level;
            }
        }
    }
    b
}

#[test]
fn detects_levels() {
    assert_eq!(
        detect_version(&connect_bytes(4), 1024),
        Ok(Some(Version::V4))
    );
    assert_eq!(
        detect_version(&connect_bytes(5), 1024),
        Ok(Some(Version::V5))
    );
    assert_eq!(
        detect_version(&connect_bytes(3), 1024),
        Err(DecodeError::UnsupportedLevel(3))
    );
    let full = connect_bytes(4);
    for n in 0..9 {
        assert_eq!(detect_version(&full[..n], 1024), Ok(None), "prefix {n}");
    }
    assert!(matches!(
        detect_version(&[0x30, 0], 1024),
        Err(DecodeError::Malformed(_))
    ));
    // A complete CONNECT too short to hold its protocol name and level is
    // malformed at once, not "incomplete" (which waited for the connect
    // timeout, or read the level out of the next packet).
    for short in [
        &[0x10, 0x00][..],
        &[0x10, 0x01, 0x00],
        &[0x10, 0x03, 0x00, 0x04, b'M'],
        &[0x10, 0x03, 0x00, 0x04, b'M', 0x30, 0x00, 0x00, 0x00, 0x00],
    ] {
        assert!(
            matches!(detect_version(short, 1024), Err(DecodeError::Malformed(_))),
            "{short:?}"
        );
    }
    // Oversize remaining length is refused from the header alone.
    assert!(matches!(
        detect_version(&[0x10, 0xff, 0xff, 0x7f], 1024),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn decodes_connect_both_versions() {
    for (level, v) in [(4, Version::V4), (5, Version::V5)] {
        let mut b = connect_bytes(level);
        match decode(v, &mut b, 1024).unwrap() {
            Some(Inbound::Connect(c)) => {
                assert_eq!(c.client_id, "c1");
                assert_eq!(c.keep_alive_s, 30);
            }
            other => panic!("{other:?}"),
        }
        assert!(b.is_empty());
    }
}

#[test]
fn v5_empty_disconnect_is_normal() {
    let mut b = BytesMut::from(&[0xe0u8, 0x00][..]);
    assert_eq!(
        decode(Version::V5, &mut b, 1024),
        Ok(Some(Inbound::Disconnect(0)))
    );
}

#[test]
fn frame_limits() {
    assert_eq!(frame_len(&[0x30], 100), Ok(None));
    assert_eq!(frame_len(&[0x30, 0x80], 100), Ok(None));
    assert_eq!(frame_len(&[0xc0, 0x00], 100), Ok(Some((0xc0, 2))));
    assert!(matches!(
        frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 100),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        frame_len(&[0x30, 0x80, 0x01], 100),
        Err(DecodeError::TooLarge {
            size: 131,
            max: 100
        })
    ));
}

#[test]
fn acks_round_trip_through_rumqttc() {
    let mut b = BytesMut::new();
    encode(
        Version::V5,
        &Outbound::PubAck {
            pid: 7,
            code: AckCode::PayloadFormatInvalid,
            reason: Some("invalid_json".into()),
        },
        &mut b,
    );
    match v5::Packet::read(&mut b, None).unwrap() {
        v5::Packet::PubAck(a) => {
            assert_eq!(a.pkid, 7);
            assert_eq!(a.reason, v5::PubAckReason::PayloadFormatInvalid);
        }
        other => panic!("{other:?}"),
    }
    encode(
        Version::V4,
        &Outbound::PubAck {
            pid: 9,
            code: AckCode::Success,
            reason: None,
        },
        &mut b,
    );
    assert_eq!(&b[..], &[0x40, 2, 0, 9]);
    b.clear();
    encode(
        Version::V5,
        &Outbound::Disconnect(CloseReason::SessionTakenOver),
        &mut b,
    );
    assert_eq!(&b[..], &[0xe0, 0x01, 0x8e]);
    b.clear();
    encode(
        Version::V4,
        &Outbound::Disconnect(CloseReason::ProtocolError),
        &mut b,
    );
    assert!(b.is_empty(), "no DISCONNECT exists for v3.1.1 servers");
    encode(
        Version::V5,
        &Outbound::ConnAck {
            code: ConnAckCode::UnsupportedVersion,
            assigned_client_id: None,
            max_packet_size: 1000,
            receive_maximum: 10,
            server_keep_alive: None,
        },
        &mut b,
    );
    assert!(matches!(
        v5::Packet::read(&mut b, None).unwrap(),
        v5::Packet::ConnAck(_)
    ));
}

#[test]
fn server_keep_alive_and_refusal_code_reach_a_v5_client() {
    let mut b = BytesMut::new();
    encode(
        Version::V5,
        &Outbound::ConnAck {
            code: ConnAckCode::Accepted,
            assigned_client_id: None,
            max_packet_size: 1000,
            receive_maximum: 10,
            server_keep_alive: Some(1200),
        },
        &mut b,
    );
    match v5::Packet::read(&mut b, None).unwrap() {
        v5::Packet::ConnAck(a) => {
            assert_eq!(a.properties.unwrap().server_keep_alive, Some(1200))
        }
        other => panic!("{other:?}"),
    }
    encode(
        Version::V5,
        &Outbound::PubAck {
            pid: 7,
            code: AckCode::ImplementationSpecificError,
            reason: Some("too old".into()),
        },
        &mut b,
    );
    assert_eq!(b[2..5], [0, 7, 0x83]);
    match v5::Packet::read(&mut b, None).unwrap() {
        v5::Packet::PubAck(a) => {
            assert_eq!(a.reason, v5::PubAckReason::ImplementationSpecificError);
            assert_eq!(
                a.properties.unwrap().reason_string.as_deref(),
                Some("too old")
            );
        }
        other => panic!("{other:?}"),
    }
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), v5: bool) {
        let version = if v5 { Version::V5 } else { Version::V4 };
        let mut b = BytesMut::from(&bytes[..]);
        let _ = detect_version(&bytes, 1 << 20);
        // Decode until error or starvation; each step must consume or stop.
        for _ in 0..300 {
            match decode(version, &mut b, 1 << 20) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn valid_header_garbage_body_never_panics(kind in 1u8..16, flags in 0u8..16,
                                              body in proptest::collection::vec(any::<u8>(), 0..120),
                                              v5: bool) {
        let version = if v5 { Version::V5 } else { Version::V4 };
        let mut b = BytesMut::new();
        b.extend_from_slice(&[(kind << 4) | flags, body.len() as u8]);
        b.extend_from_slice(&body);
        let _ = decode(version, &mut b, 1 << 20);
    }
}
