//! Framed messages on QUIC streams.
//!
//! A frame is `[u32 BE length][bincode body]` (see `strata_protocol::frame`).
//! The length is checked against the limit before the body buffer is
//! allocated, so a peer cannot make us allocate by lying about it.

use bincode::{Decode, Encode};
use strata_protocol::frame::{self, FrameError, HEADER_LEN};

use crate::NetError;

/// Writes one frame holding `msg`.
pub async fn write_frame<T: Encode>(
    send: &mut quinn::SendStream,
    msg: &T,
    peer: &str,
) -> Result<(), NetError> {
    let buf = frame::frame_to_vec(msg).map_err(|source| NetError::Frame {
        peer: peer.to_owned(),
        source,
    })?;
    write_raw(send, &buf, peer).await
}

/// Writes pre-encoded frame bytes.
pub async fn write_raw(
    send: &mut quinn::SendStream,
    buf: &[u8],
    peer: &str,
) -> Result<(), NetError> {
    send.write_all(buf).await.map_err(|e| NetError::Stream {
        peer: peer.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads one frame body of at most `max` bytes. `Ok(None)` when the stream
/// ended cleanly before a new frame began.
pub async fn read_frame_bytes(
    recv: &mut quinn::RecvStream,
    max: usize,
    peer: &str,
) -> Result<Option<Vec<u8>>, NetError> {
    let mut hdr = [0u8; HEADER_LEN];
    match recv.read_exact(&mut hdr).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => {
            return Err(NetError::Stream {
                peer: peer.to_owned(),
                reason: e.to_string(),
            })
        }
    }
    let len = frame::body_len(hdr);
    if len > max {
        return Err(NetError::Frame {
            peer: peer.to_owned(),
            source: FrameError::TooLarge { len, max },
        });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| NetError::Stream {
            peer: peer.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Some(body))
}

/// Reads and decodes one frame. `Ok(None)` on a clean end of stream.
pub async fn read_frame<T: Decode<()>>(
    recv: &mut quinn::RecvStream,
    peer: &str,
) -> Result<Option<T>, NetError> {
    match read_frame_bytes(recv, frame::MAX_FRAME_LEN, peer).await? {
        None => Ok(None),
        Some(body) => frame::decode_body(&body)
            .map(Some)
            .map_err(|source| NetError::Frame {
                peer: peer.to_owned(),
                source,
            }),
    }
}

/// One request, one response, on a fresh bidirectional stream.
pub async fn call<Req: Encode, Resp: Decode<()>>(
    conn: &quinn::Connection,
    req: &Req,
) -> Result<Resp, NetError> {
    let buf = frame::frame_to_vec(req).map_err(|source| NetError::Frame {
        peer: conn.remote_address().to_string(),
        source,
    })?;
    call_raw(conn, &buf).await
}

/// Like [`call`] with a request that is already framed (the edge uplink
/// builds batch frames straight from spool bytes).
pub async fn call_raw<Resp: Decode<()>>(
    conn: &quinn::Connection,
    framed_request: &[u8],
) -> Result<Resp, NetError> {
    call_raw_with_priority(conn, framed_request, 0).await
}

/// [`call_raw`] on a stream with the given send priority: quinn sends data of
/// higher-priority streams first, so a heartbeat is not queued behind
/// megabytes of telemetry batches on the same connection.
pub async fn call_raw_with_priority<Resp: Decode<()>>(
    conn: &quinn::Connection,
    framed_request: &[u8],
    priority: i32,
) -> Result<Resp, NetError> {
    let peer = conn.remote_address().to_string();
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|source| NetError::Connection {
            peer: peer.clone(),
            source,
        })?;
    if priority != 0 {
        // Only fails on a closed stream, which the write below reports.
        let _ = send.set_priority(priority);
    }
    write_raw(&mut send, framed_request, &peer).await?;
    // Finishing tells the server the request is complete; it cannot fail
    // except on a stream already reset, which the read below reports.
    let _ = send.finish();
    read_frame(&mut recv, &peer)
        .await?
        .ok_or(NetError::NoResponse { peer })
}
