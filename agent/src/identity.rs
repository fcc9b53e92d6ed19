//! This node's identity with a cluster CA: its key (made here, never sent), the
//! certificate the master signed for its CSR and the CA, kept in `WORK_DIR/tls/` (all
//! 0600). With it the agent speaks mutual TLS to the master and serves its own API over
//! HTTPS, asking callers for a certificate of the same CA. `join.rs` decides when to ask
//! for one; this file makes CSRs, stores and loads the files and builds the TLS settings.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use plinth_protocol::agent::{IssuedCertificate, NODE_CA_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NODE_TLS_DIR};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::AgentError;
use crate::fsutil;

/// A certificate of the cluster CA, its key and the CA.
#[derive(Clone)]
pub struct NodeIdentity {
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
    /// Validity, in seconds since the epoch.
    not_before: i64,
    not_after: i64,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// A fresh key and a CSR for `hostname` (the common name) with `names` as its subject
/// alternative names (IP addresses or DNS names).
pub fn new_request(hostname: &str, names: &[String]) -> Result<(String, String), AgentError> {
    let csr_error = |e: rcgen::Error| AgentError::Certificate { reason: format!("cannot make a CSR: {e}") };
    let key = rcgen::KeyPair::generate().map_err(csr_error)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(csr_error)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    let csr = params.serialize_request(&key).and_then(|r| r.pem()).map_err(csr_error)?;
    Ok((key.serialize_pem(), csr))
}

/// The names this node's certificate asks for: its address, and its hostname when that
/// is a DNS name.
pub fn names_for(hostname: &str, advertise_ip: IpAddr) -> Vec<String> {
    let mut names = vec![advertise_ip.to_string()];
    let dns = !hostname.is_empty()
        && hostname.len() <= 253
        && hostname.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if dns && hostname.parse::<IpAddr>().is_err() {
        names.push(hostname.to_string());
    }
    names
}

fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join(NODE_TLS_DIR)
}

impl NodeIdentity {
    /// What the master answered to a CSR made with `key_pem`.
    pub fn from_issued(key_pem: String, issued: IssuedCertificate) -> Result<NodeIdentity, AgentError> {
        NodeIdentity::new(key_pem, issued.certificate, issued.ca)
    }

    fn new(key_pem: String, cert_pem: String, ca_pem: String) -> Result<NodeIdentity, AgentError> {
        let unusable = |reason: String| AgentError::Certificate { reason };
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| unusable(format!("the certificate is not PEM: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| unusable(format!("the certificate cannot be read: {e}")))?;
        let validity = cert.validity();
        let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
        CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| unusable(format!("the CA is not PEM: {e}")))?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| unusable(format!("the key is not PEM: {e}")))?;
        Ok(NodeIdentity { key_pem, cert_pem, ca_pem, not_before, not_after })
    }

    /// The stored identity, if this node has one.
    pub fn load(work_dir: &Path) -> Result<Option<NodeIdentity>, AgentError> {
        let dir = dir(work_dir);
        let read = |name: &str| {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(AgentError::ReadFile { path, source }),
            }
        };
        let (Some(key), Some(cert), Some(ca)) = (read(NODE_KEY_FILE)?, read(NODE_CERT_FILE)?, read(NODE_CA_FILE)?)
        else {
            return Ok(None);
        };
        NodeIdentity::new(key, cert, ca).map(Some)
    }

    /// Keeps the identity in the work dir: the certificate last, so a crash in between
    /// leaves the old certificate with a key that does not fit, which `load` reports.
    pub fn store(&self, work_dir: &Path) -> Result<(), AgentError> {
        let dir = dir(work_dir);
        fsutil::create_dir_all(&dir)?;
        fsutil::write_atomic(&dir.join(NODE_KEY_FILE), self.key_pem.as_bytes())?;
        fsutil::write_atomic(&dir.join(NODE_CA_FILE), self.ca_pem.as_bytes())?;
        fsutil::write_atomic(&dir.join(NODE_CERT_FILE), self.cert_pem.as_bytes())
    }

    /// Past 2/3 of its life: time to ask for the next one.
    pub fn renewal_due(&self, now: i64) -> bool {
        now >= self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    pub fn expired(&self, now: i64) -> bool {
        now >= self.not_after
    }

    /// The moment [`NodeIdentity::renewal_due`] turns true, in seconds since the epoch.
    pub fn renewal_at(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The client identity for requests to the master.
    pub fn client_identity(&self) -> Result<reqwest::Identity, AgentError> {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes())
            .map_err(|e| AgentError::Certificate { reason: format!("cannot use the certificate: {e}") })
    }

    /// The cluster CA, trusted for the master's HTTPS.
    pub fn ca_certificate(&self) -> Result<reqwest::Certificate, AgentError> {
        reqwest::Certificate::from_pem(self.ca_pem.as_bytes())
            .map_err(|e| AgentError::Certificate { reason: format!("cannot use the cluster CA: {e}") })
    }

    /// The certificate and key as rustls serves them.
    fn certified_key(&self) -> Result<CertifiedKey, AgentError> {
        let unusable = |reason: String| AgentError::Certificate { reason };
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| unusable(e.to_string()))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| unusable(format!("the key cannot sign: {e}")))?;
        Ok(CertifiedKey::new(chain, key))
    }

    /// The agent API's TLS: this certificate (replaceable through the returned
    /// [`ServedCertificate`] when it is renewed), and callers must show one of the cluster
    /// CA (the master's log proxy does).
    pub fn server_config(&self) -> Result<(Arc<rustls::ServerConfig>, Arc<ServedCertificate>), AgentError> {
        plinth_oci::tls::install_provider();
        let unusable = |reason: String| AgentError::Certificate { reason };
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).map_err(|e| unusable(e.to_string()))?;
        roots.add(ca).map_err(|e| unusable(format!("the cluster CA is no trust anchor: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| unusable(format!("cannot verify clients with the cluster CA: {e}")))?;
        let served = Arc::new(ServedCertificate(RwLock::new(Arc::new(self.certified_key()?))));
        let mut config =
            rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_cert_resolver(served.clone());
        // HTTP/1.1 only: axum is built without HTTP/2, and a client that was offered h2
        // (curl) would speak it to a server that cannot.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Arc::new(config), served))
    }
}

/// The certificate the agent API presents; a renewal replaces it for new connections.
#[derive(Debug)]
pub struct ServedCertificate(RwLock<Arc<CertifiedKey>>);

impl ServedCertificate {
    pub fn replace(&self, identity: &NodeIdentity) -> Result<(), AgentError> {
        let key = Arc::new(identity.certified_key()?);
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
        Ok(())
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A CA and a certificate from it for the CSR, valid from `not_before` for `days`.
    fn issue(csr: &str, not_before: time::OffsetDateTime, days: i64) -> IssuedCertificate {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
        request.params.not_before = not_before;
        request.params.not_after = not_before + time::Duration::days(days);
        let cert = request.signed_by(&ca, &ca_key).unwrap();
        IssuedCertificate { certificate: cert.pem(), ca: ca.pem(), cluster_id: plinth_protocol::ClusterId::new("c1") }
    }

    #[test]
    fn an_identity_is_stored_privately_read_back_and_renewed_past_two_thirds_of_its_life() {
        let dir = tempfile::tempdir().unwrap();
        assert!(NodeIdentity::load(dir.path()).unwrap().is_none());
        let names = names_for("agent-1", "10.0.0.7".parse().unwrap());
        assert_eq!(names, ["10.0.0.7", "agent-1"]);
        let (key, csr) = new_request("agent-1", &names).unwrap();
        let start = time::OffsetDateTime::from_unix_timestamp(1_000_000_000).unwrap();
        let identity = NodeIdentity::from_issued(key, issue(&csr, start, 30)).unwrap();
        identity.store(dir.path()).unwrap();
        for name in [NODE_KEY_FILE, NODE_CERT_FILE, NODE_CA_FILE] {
            let mode = std::fs::metadata(dir.path().join(NODE_TLS_DIR).join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let loaded = NodeIdentity::load(dir.path()).unwrap().unwrap();
        let begin = 1_000_000_000;
        let day = 86_400;
        assert!(!loaded.renewal_due(begin + 19 * day));
        assert!(loaded.renewal_due(begin + 20 * day));
        assert!(!loaded.expired(begin + 29 * day) && loaded.expired(begin + 30 * day));
        loaded.server_config().unwrap();
        loaded.client_identity().unwrap();
    }

    #[test]
    fn a_hostname_that_is_no_dns_name_stays_out_of_the_names() {
        assert_eq!(names_for("my_host", "10.0.0.7".parse().unwrap()), ["10.0.0.7"]);
        assert_eq!(names_for("10.0.0.8", "10.0.0.7".parse().unwrap()), ["10.0.0.7"]);
    }
}
