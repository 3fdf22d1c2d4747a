//! MQTT over TLS: the rustls server config of the optional TLS listener,
//! and the identity of a verified client certificate (its subject CN).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::config::{ClientCerts, TlsConfig};
use super::connect::CertIdentity;
use crate::ingress::driver::{serve, Shared};
use crate::ingress::{IngestSink, IngressError};

fn tls_err(what: &str, path: Option<&Path>, e: impl std::fmt::Display) -> IngressError {
    IngressError::Tls {
        detail: match path {
            Some(p) => format!("{what} {}: {e}", p.display()),
            None => format!("{what}: {e}"),
        },
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IngressError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            tls_err(
                "cannot read certificates from",
                Some(path),
                format!("{e:?}"),
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("bad certificate PEM in", Some(path), format!("{e:?}")))?;
    if certs.is_empty() {
        return Err(tls_err("no certificate in", Some(path), "empty"));
    }
    Ok(certs)
}

/// Builds the acceptor. `cfg` must be resolved (cert and key set).
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, IngressError> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Err(tls_err("tls", None, "cert and key are required"));
    };
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err("bad private key PEM in", Some(key), format!("{e:?}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("tls", None, e))?;
    let builder = match (&cfg.client_ca, cfg.client_certs) {
        (Some(ca), ClientCerts::Optional | ClientCerts::Required) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err("bad client CA in", Some(ca), e))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if cfg.client_certs == ClientCerts::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build().map_err(|e| tls_err("client CA", Some(ca), e))?,
            )
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("server certificate", Some(cert), e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The identity of the verified client certificate, if the client sent one:
/// `Some(Some(cn))`, or `Some(None)` when it has no subject CN.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<CertIdentity> {
    let leaf = conn.peer_certificates()?.first()?;
    Some(common_name(leaf))
}

/// The first subject CN of a DER certificate.
pub fn common_name(der: &[u8]) -> CertIdentity {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Serves one accepted TCP connection of the TLS listener: the handshake
/// (bounded by `connect-timeout-ms`, failures counted as
/// `tls_handshake_failed`), then the same connection driver as plain TCP.
/// `open_conns` and the connections gauge were already incremented.
pub async fn run_tls_connection<S: IngestSink>(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    sink: Arc<S>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let limit = std::time::Duration::from_millis(shared.cfg.connect_timeout_ms);
    let handshake = tokio::select! {
        r = tokio::time::timeout(limit, acceptor.accept(stream)) => Some(r),
        _ = shutdown.cancelled() => None,
    };
    let failure = match handshake {
        Some(Ok(Ok(tls))) => {
            let cert = peer_identity(tls.get_ref().1);
            return serve(tls, peer, cert, shared, sink, shutdown).await;
        }
        Some(Ok(Err(e))) => Some(e.to_string()),
        Some(Err(_)) => Some(format!("no TLS handshake within {} ms", limit.as_millis())),
        None => None,
    };
    if let Some(detail) = failure {
        let now = shared.epoch.elapsed().as_millis() as u64;
        shared
            .auth
            .refused(peer, "", "tls_handshake_failed", &detail, now);
    }
    shared
        .open_conns
        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    shared.metrics.connections.dec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_issued_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = strata_net::Pki::ensure(dir.path()).unwrap();
        let (pem, _) = pki.issue("edge-7").unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der), Some("edge-7".into()));
        assert_eq!(common_name(b"not a certificate"), None);
    }
}
