//! Shared state between connections: live fan-out to subscribers and the
//! client-id registry for session takeover.
//!
//! Fan-out never blocks a publisher: each subscriber has a bounded queue and
//! a full queue drops that subscriber's copy (counted). Telemetry
//! durability is unaffected: the spool already has the record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::SubRequest;
use super::topic::matches;

/// One message queued for a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// Delivery QoS: min(publish QoS, granted QoS).
    pub qos: u8,
}

/// An accepted publish to offer to subscribers.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// Publish QoS.
    pub qos: u8,
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Delivery>,
    filters: Vec<SubRequest>,
}

#[derive(Debug)]
struct ClientEntry {
    conn: u64,
    owner: Owner,
    takeover: CancellationToken,
}

/// Who holds a client id: the identity's username, `None` for an anonymous
/// client (allow-anonymous).
pub type Owner = Option<Arc<str>>;

/// A client id is held by another identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client id {client_id:?} is in use by another identity")]
pub struct ClientIdInUse {
    /// The contested client id.
    pub client_id: String,
}

/// Whether a CONNECT by `new` may take over a client id held by `held`:
/// only the same identity (MQTT §3.1.4-2 takeover), never another one, so
/// a device cannot be kicked off by whoever learns its client id.
pub fn may_take_over(held: &Owner, new: &Owner) -> bool {
    held == new
}

/// Subscriptions and connected client ids.
#[derive(Debug)]
pub struct Router {
    subs: RwLock<HashMap<u64, Subscriber>>,
    /// Lets publishers skip the lock entirely when nobody subscribes (the
    /// usual case on an edge: devices only publish).
    sub_count: AtomicUsize,
    clients: Mutex<HashMap<String, ClientEntry>>,
    drops: Counter,
    subscribers: Gauge,
}

impl Router {
    /// An empty router counting dropped deliveries in `drops` and
    /// subscribed connections in `subscribers`.
    pub fn new(drops: Counter, subscribers: Gauge) -> Self {
        Router {
            subs: RwLock::new(HashMap::new()),
            sub_count: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
            drops,
            subscribers,
        }
    }

    fn set_count(&self, n: usize) {
        self.sub_count.store(n, Ordering::Release);
        self.subscribers.set(n as i64);
    }

    /// Adds (or replaces, per filter) subscriptions of connection `conn`.
    pub fn subscribe(&self, conn: u64, tx: &mpsc::Sender<Delivery>, filters: Vec<SubRequest>) {
        let mut subs = self.subs.write().unwrap_or_else(|e| e.into_inner());
        let entry = subs.entry(conn).or_insert_with(|| Subscriber {
            tx: tx.clone(),
            filters: Vec::new(),
        });
        for f in filters {
            entry.filters.retain(|old| old.filter != f.filter);
            entry.filters.push(f);
        }
        self.set_count(subs.len());
    }

    /// Removes filters of connection `conn`.
    pub fn unsubscribe(&self, conn: u64, filters: &[String]) {
        let mut subs = self.subs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = subs.get_mut(&conn) {
            s.filters.retain(|f| !filters.contains(&f.filter));
            if s.filters.is_empty() {
                subs.remove(&conn);
            }
        }
        self.set_count(subs.len());
    }

    /// Forgets every subscription of connection `conn`.
    pub fn remove(&self, conn: u64) {
        let mut subs = self.subs.write().unwrap_or_else(|e| e.into_inner());
        subs.remove(&conn);
        self.set_count(subs.len());
    }

    /// Whether any connection subscribes (lock-free).
    pub fn has_subscribers(&self) -> bool {
        self.sub_count.load(Ordering::Acquire) > 0
    }

    /// Offers accepted publishes from connection `from` to every matching
    /// subscriber (once each, at the highest matching grant). One lock per
    /// batch, never blocking.
    pub fn fan_out(&self, from: u64, offers: &[Offer]) {
        if offers.is_empty() || self.sub_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        for (&conn, sub) in subs.iter() {
            for o in offers {
                let granted = sub
                    .filters
                    .iter()
                    .filter(|f| !(f.no_local && conn == from) && matches(&o.topic, &f.filter))
                    .map(|f| f.qos)
                    .max();
                let Some(granted) = granted else { continue };
                let d = Delivery {
                    topic: o.topic.clone(),
                    payload: o.payload.clone(),
                    qos: o.qos.min(granted),
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(d) {
                    self.drops.inc();
                }
            }
        }
    }

    /// Registers `client_id` for connection `conn` of `owner`; a previous
    /// connection of the same owner with that id is told to close
    /// (takeover, MQTT §3.1.4-2). Refused if another owner holds it.
    pub fn register_client(
        &self,
        client_id: &str,
        conn: u64,
        owner: Owner,
        takeover: CancellationToken,
    ) -> Result<(), ClientIdInUse> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients
            .get(client_id)
            .is_some_and(|held| !may_take_over(&held.owner, &owner))
        {
            return Err(ClientIdInUse {
                client_id: client_id.to_owned(),
            });
        }
        let entry = ClientEntry {
            conn,
            owner,
            takeover,
        };
        if let Some(old) = clients.insert(client_id.to_owned(), entry) {
            old.takeover.cancel();
        }
        Ok(())
    }

    /// Unregisters `client_id` if it still belongs to `conn` (a takeover
    /// may already have replaced it).
    pub fn unregister_client(&self, client_id: &str, conn: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.get(client_id).is_some_and(|e| e.conn == conn) {
            clients.remove(client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(filter: &str, qos: u8, no_local: bool) -> SubRequest {
        SubRequest {
            filter: filter.into(),
            qos,
            no_local,
        }
    }

    fn offer(topic: &str, qos: u8) -> Offer {
        Offer {
            topic: Arc::from(topic),
            payload: Bytes::from_static(b"p"),
            qos,
        }
    }

    #[test]
    fn fans_out_once_at_highest_grant_and_counts_overflow() {
        let drops = Counter::default();
        let r = Router::new(drops.clone(), Gauge::default());
        let (tx, mut rx) = mpsc::channel(2);
        r.subscribe(
            1,
            &tx,
            vec![
                sub("strata/#", 0, false),
                sub("strata/+/+/telemetry", 1, false),
            ],
        );
        r.fan_out(2, &[offer("strata/a/b/telemetry", 1), offer("other", 1)]);
        assert_eq!(rx.try_recv().unwrap().qos, 1);
        assert!(
            rx.try_recv().is_err(),
            "exactly one copy, none for unmatched"
        );
        r.fan_out(
            2,
            &[
                offer("strata/x", 1),
                offer("strata/y", 0),
                offer("strata/z", 1),
            ],
        );
        assert_eq!(drops.get(), 1);
        assert_eq!(
            rx.try_recv().unwrap().qos,
            0,
            "capped by the strata/# grant"
        );
    }

    #[test]
    fn no_local_and_unsubscribe() {
        let r = Router::new(Counter::default(), Gauge::default());
        let (tx, mut rx) = mpsc::channel(8);
        r.subscribe(1, &tx, vec![sub("#", 1, true)]);
        r.fan_out(1, &[offer("a", 1)]);
        assert!(rx.try_recv().is_err());
        r.fan_out(2, &[offer("a", 1)]);
        assert!(rx.try_recv().is_ok());
        r.unsubscribe(1, &["#".to_string()]);
        r.fan_out(2, &[offer("a", 1)]);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn takeover_cancels_the_old_connection_only() {
        let r = Router::new(Counter::default(), Gauge::default());
        let old = CancellationToken::new();
        let new = CancellationToken::new();
        let me: Owner = Some(Arc::from("fleet"));
        r.register_client("dev", 1, me.clone(), old.clone())
            .unwrap();
        r.register_client("dev", 2, me.clone(), new.clone())
            .unwrap();
        assert!(old.is_cancelled());
        // The old connection's late unregister must not remove the new one.
        r.unregister_client("dev", 1);
        let third = CancellationToken::new();
        r.register_client("dev", 3, me, third).unwrap();
        assert!(new.is_cancelled());
    }

    #[test]
    fn another_identity_cannot_take_a_client_id_over() {
        let r = Router::new(Counter::default(), Gauge::default());
        let held = CancellationToken::new();
        r.register_client("dev-7", 1, Some(Arc::from("demo-fleet")), held.clone())
            .unwrap();
        for intruder in [Some(Arc::from("other-fleet")), None] {
            let err = r
                .register_client("dev-7", 2, intruder, CancellationToken::new())
                .unwrap_err();
            assert_eq!(err.client_id, "dev-7");
            assert!(!held.is_cancelled(), "the holder stays connected");
        }
        // Anonymous clients (allow-anonymous) may take over each other.
        let a = CancellationToken::new();
        r.register_client("lab", 3, None, a.clone()).unwrap();
        r.register_client("lab", 4, None, CancellationToken::new())
            .unwrap();
        assert!(a.is_cancelled());
        // Once the holder is gone, anyone may use the id.
        r.unregister_client("dev-7", 1);
        r.register_client(
            "dev-7",
            5,
            Some(Arc::from("other-fleet")),
            CancellationToken::new(),
        )
        .unwrap();
    }
}
