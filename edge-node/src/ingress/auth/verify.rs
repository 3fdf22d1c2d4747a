//! Password verification off the async runtime, bounded and cached.
//!
//! argon2 is slow on purpose (tens of milliseconds and ~19 MiB per check),
//! so: each check runs in `spawn_blocking`; at most
//! `max-concurrent-verifications` run at once (a flood of bad passwords
//! waits for a slot and gives up at the CONNECT deadline instead of taking
//! every core); and successful checks are remembered under (username,
//! identity fingerprint, HMAC-SHA256 of the password with a per-process
//! random key). A fleet of 1,000 devices reconnecting with one shared
//! credential therefore costs one hash: the first CONNECT verifies, the
//! others wait for that same verification (single flight) or hit the cache.
//! A changed entry has a new fingerprint, so its old cache entries never
//! match again. Only successes are cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ring::hmac;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::connect::Verified;
use super::credentials::Identity;
use super::metrics::AuthMetrics;

type Key = (Arc<str>, u64, [u8; 32]);

/// Verifies passwords for every connection of one server.
#[derive(Debug)]
pub struct PasswordVerifier {
    slots: Arc<Semaphore>,
    key: hmac::Key,
    /// One cell per (username, fingerprint, password digest): initialised
    /// once verified; a failed check removes its cell.
    cache: Mutex<HashMap<Key, Arc<OnceCell<()>>>>,
    max_entries: usize,
    metrics: AuthMetrics,
}

impl PasswordVerifier {
    /// `concurrency` checks at once, at most `max_entries` remembered.
    pub fn new(concurrency: usize, max_entries: usize, metrics: AuthMetrics) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Key generation from the OS RNG only fails if the OS has none.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()));
        PasswordVerifier {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            key,
            cache: Mutex::new(HashMap::new()),
            max_entries,
            metrics,
        }
    }

    /// Checks `password` for `identity`, giving up with `Busy` at
    /// `deadline` if no slot frees up.
    pub async fn verify(
        &self,
        identity: &Arc<Identity>,
        password: Bytes,
        deadline: Instant,
    ) -> Verified {
        let tag = hmac::sign(&self.key, &password);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(tag.as_ref());
        let key: Key = (identity.username.clone(), identity.fingerprint, digest);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&key).is_some_and(|c| c.initialized()) {
                self.metrics.cache_hits.inc();
                return Verified::Ok;
            }
            if cache.len() >= self.max_entries && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.entry(key.clone()).or_default().clone()
        };
        let result = cell
            .get_or_try_init(|| async {
                let permit =
                    match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(p)) => p,
                        _ => return Err(Verified::Busy),
                    };
                self.metrics.hashes.inc();
                let id = identity.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    id.verify_password(&password)
                })
                .await
                .unwrap_or(false);
                if ok {
                    Ok(())
                } else {
                    Err(Verified::Wrong)
                }
            })
            .await;
        match result {
            Ok(()) => Verified::Ok,
            Err(v) => {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache
                    .get(&key)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
                {
                    cache.remove(&key);
                }
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::credentials::{
        hash_password_with, Credentials, CredentialsFile, IdentityEntry,
    };
    use super::*;
    use prometheus_client::registry::Registry;
    use std::time::Duration;

    fn identity(password: &[u8]) -> Arc<Identity> {
        let cheap = argon2::Params::new(64, 1, 1, None).unwrap();
        let f = CredentialsFile {
            identity: vec![IdentityEntry {
                username: "fleet".into(),
                tenant: "demo".into(),
                devices: "*".into(),
                password_hash: Some(hash_password_with(password, cheap).unwrap()),
                client_cert: false,
            }],
        };
        Credentials::from_file(&f, 1).get("fleet").unwrap().clone()
    }

    #[tokio::test]
    async fn a_shared_credential_costs_one_hash_and_wrong_ones_are_never_cached() {
        let metrics = AuthMetrics::register(&mut Registry::default(), None);
        let v = Arc::new(PasswordVerifier::new(2, 100, metrics.clone()));
        let id = identity(b"fleet-pw");
        let deadline = Instant::now() + Duration::from_secs(30);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (v, id) = (v.clone(), id.clone());
                tokio::spawn(async move {
                    v.verify(&id, Bytes::from_static(b"fleet-pw"), deadline)
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Verified::Ok);
        }
        assert_eq!(
            metrics.hashes.get(),
            1,
            "single flight: one hash for 50 logins"
        );
        for _ in 0..3 {
            assert_eq!(
                v.verify(&id, Bytes::from_static(b"nope"), deadline).await,
                Verified::Wrong
            );
        }
        assert_eq!(
            metrics.hashes.get(),
            4,
            "every wrong password is hashed again"
        );
        // A changed entry (new fingerprint) must verify again.
        let changed = identity(b"fleet-pw");
        assert_ne!(changed.fingerprint, id.fingerprint);
        assert_eq!(
            v.verify(&changed, Bytes::from_static(b"fleet-pw"), deadline)
                .await,
            Verified::Ok
        );
        assert_eq!(metrics.hashes.get(), 5);
    }

    #[tokio::test]
    async fn no_slot_before_the_deadline_is_busy() {
        let metrics = AuthMetrics::register(&mut Registry::default(), None);
        let v = PasswordVerifier::new(1, 100, metrics);
        let _held = v.slots.clone().acquire_owned().await.unwrap();
        let id = identity(b"x");
        let r = v
            .verify(
                &id,
                Bytes::from_static(b"x"),
                Instant::now() + Duration::from_millis(20),
            )
            .await;
        assert_eq!(r, Verified::Busy);
    }
}
