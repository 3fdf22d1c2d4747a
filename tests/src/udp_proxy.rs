//! A UDP proxy a test can cut: a network partition between one edge and a
//! hub without root, network namespaces or iptables. The edge dials the
//! proxy's address; every client address gets its own upstream socket to
//! the target, so the hub sees one peer per client. While cut, datagrams in
//! both directions are dropped (and counted), as on a dead link: nothing is
//! refused, closed or reset.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// A running proxy; dropping it stops it.
pub struct UdpProxy {
    /// Where clients send.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl UdpProxy {
    /// A proxy on a free 127.0.0.1 port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<UdpProxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (c, d, s) = (cut.clone(), dropped.clone(), stop.clone());
        tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, client) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = front.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        // ICMP errors surface here on Linux; keep going.
                        Err(_) => continue,
                    },
                };
                if c.load(Ordering::Relaxed) {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let up = match upstreams.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let Ok(u) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if u.connect(target).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        upstreams.insert(client, u.clone());
                        tokio::spawn(back(
                            u.clone(),
                            front.clone(),
                            client,
                            c.clone(),
                            d.clone(),
                            s.clone(),
                        ));
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        });
        Ok(UdpProxy {
            addr,
            cut,
            dropped,
            stop,
        })
    }

    /// Drops everything from now on, both ways.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }

    /// Datagrams dropped while cut.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Target → client for one client.
async fn back(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    cut: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = up.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if cut.load(Ordering::Relaxed) {
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let _ = front.send_to(&buf[..n], client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn forwards_both_ways_until_cut() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let proxy = UdpProxy::start(target).await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.addr).await.unwrap();
        let mut buf = [0u8; 64];
        client.send(b"ping").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        proxy.cut();
        client.send(b"lost").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await;
        assert!(r.is_err(), "nothing comes back while cut");
        assert_eq!(proxy.dropped(), 1);
        proxy.restore();
        client.send(b"again").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"again");
    }
}
