//! Device client certificates for MQTT over TLS, from a *device CA* kept
//! beside the cluster CA (`devices-ca.pem` / `devices-ca.key`).
//!
//! A separate CA on purpose: the hubs accept any certificate of the cluster
//! CA on their QUIC links, so a device certificate signed by it would open
//! those links to a device. Edges trust the device CA only on their MQTT-TLS
//! listener (`[ingress.tls] client-ca`), where the certificate's subject CN
//! is the username looked up in the credentials file.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::{gen_err, read_pem, Pki, TlsFiles};
use crate::files::write_private;
use crate::NetError;

fn io_err(path: &Path, e: impl std::fmt::Display) -> NetError {
    NetError::TlsFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A device name usable as a file name and a certificate CN.
fn valid_device_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn device_ca_params() -> Result<CertificateParams, NetError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| gen_err("devices-ca", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "Strata device CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl Pki {
    /// Path of the device CA certificate (what edges put in
    /// `[ingress.tls] client-ca`); created by [`Pki::device`].
    pub fn device_ca_path(&self) -> PathBuf {
        self.dir.join("devices-ca.pem")
    }

    fn device_ca(&self) -> Result<(KeyPair, rcgen::Certificate), NetError> {
        let key_path = self.dir.join("devices-ca.key");
        let cert_path = self.device_ca_path();
        let key = if key_path.exists() {
            let pem = String::from_utf8_lossy(&read_pem(&key_path)?).into_owned();
            KeyPair::from_pem(&pem).map_err(|e| io_err(&key_path, e))?
        } else {
            let key = KeyPair::generate().map_err(|e| gen_err("devices-ca", e))?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            key
        };
        // Same key and subject → the same issuer for certificates already out.
        let cert = device_ca_params()?
            .self_signed(&key)
            .map_err(|e| gen_err("devices-ca", e))?;
        if !cert_path.exists() {
            std::fs::write(&cert_path, cert.pem()).map_err(|e| io_err(&cert_path, e))?;
        }
        Ok((key, cert))
    }

    /// Returns device `name`'s client certificate files
    /// (`devices/<name>.pem`, `.key`), issuing them from the device CA on
    /// first use. `ca` is the cluster CA: what the device needs to verify
    /// the edge's server certificate.
    pub fn device(&self, name: &str) -> Result<TlsFiles, NetError> {
        if !valid_device_name(name) {
            return Err(NetError::CertGen {
                name: name.to_owned(),
                reason: "a device name is 1-128 chars of [A-Za-z0-9_.-], not starting with '.'"
                    .into(),
            });
        }
        let dir = self.dir.join("devices");
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        if !cert.exists() || !key.exists() {
            let (ca_key, ca_cert) = self.device_ca()?;
            std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            let kp = KeyPair::generate().map_err(|e| gen_err(name, e))?;
            let mut p =
                CertificateParams::new(Vec::<String>::new()).map_err(|e| gen_err(name, e))?;
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let c = p
                .signed_by(&kp, &ca_cert, &ca_key)
                .map_err(|e| gen_err(name, e))?;
            write_private(&key, kp.serialize_pem().as_bytes())?;
            std::fs::write(&cert, c.pem()).map_err(|e| io_err(&cert, e))?;
        } else {
            // Make sure the CA file exists for edges to trust.
            self.device_ca()?;
        }
        Ok(TlsFiles {
            ca: self.ca_path(),
            cert,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_certificates_come_from_their_own_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path()).unwrap();
        let f = pki.device("pump-7").unwrap();
        assert_eq!(f.ca, pki.ca_path());
        assert!(f.cert.ends_with("devices/pump-7.pem"));
        let again = Pki::ensure(dir.path()).unwrap().device("pump-7").unwrap();
        assert_eq!(again, f);
        let device_ca = std::fs::read(pki.device_ca_path()).unwrap();
        assert_ne!(device_ca, std::fs::read(pki.ca_path()).unwrap());
        for bad in ["", "../x", ".hidden", "a/b", "sp ace"] {
            assert!(pki.device(bad).is_err(), "{bad:?}");
        }
    }
}
