//! A TCP proxy a test can cut: what a browser sees when the network to
//! central drops. [`TcpProxy::cut`] resets every open connection and
//! refuses new ones (accepted and closed at once) until
//! [`TcpProxy::restore`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy; dropping it stops it.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Cancelled to end the connections of the current generation; `None`
    /// while cut.
    generation: Arc<Mutex<Option<CancellationToken>>>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// A proxy on a free 127.0.0.1 port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let generation = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let stop = CancellationToken::new();
        let (g, s) = (generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let Some(gen) = g.lock().unwrap().clone() else {
                    drop(client); // cut: closed at once
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut a, mut b) = (client, upstream);
                    tokio::select! {
                        _ = gen.cancelled() => {
                            // A reset, as a dropped link surfaces.
                            let _ = a.set_zero_linger();
                        }
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                    }
                });
            }
        });
        Ok(TcpProxy {
            addr,
            generation,
            stop,
        })
    }

    /// Resets every open connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(gen) = self.generation.lock().unwrap().take() {
            gen.cancel();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        let mut g = self.generation.lock().unwrap();
        if g.is_none() {
            *g = Some(CancellationToken::new());
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
