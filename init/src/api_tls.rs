//! Mutual TLS for the node API once the node belongs to a cluster with a CA. The agent
//! keeps the certificate the master signed for it in its work dir (`tls/`); from the
//! moment that certificate exists, PID 1 serves `:5052` over TLS with it and answers only
//! callers with a certificate of the same cluster CA, never plain HTTP again. Before the
//! first join (and on nodes of clusters without a CA) the API stays plain HTTP with the
//! token on its power endpoints. The files are read again when they change, so a
//! renewed certificate is served without a reboot.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use plinth_protocol::agent::{MASTER_COMMON_NAME, NODE_CA_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NODE_TLS_DIR};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// Who is calling, as far as the node API can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Plain HTTP: the node has no certificate (yet); the token guards power requests.
    Plain,
    /// A caller with a certificate of the cluster CA; `master` when it is the master's.
    Cluster { master: bool },
}

/// The node's TLS settings, from the agent's identity files.
pub struct NodeTls {
    dir: Option<PathBuf>,
    loaded: Mutex<Option<Loaded>>,
}

struct Loaded {
    stamp: Stamp,
    config: Arc<ServerConfig>,
}

/// Modification times of the certificate, key and CA files: a change means a reload.
type Stamp = [Option<SystemTime>; 3];

impl NodeTls {
    /// TLS from `WORK_DIR/tls/` of the agent on this node; `None`: a master or
    /// standalone node, whose API stays plain.
    pub fn of_agent(work_dir: Option<&Path>) -> NodeTls {
        NodeTls { dir: work_dir.map(|d| d.join(NODE_TLS_DIR)), loaded: Mutex::new(None) }
    }

    /// The server configuration when the node has its certificate, `Ok(None)` when it
    /// has none. `Err` when the files are there but unusable: the caller then refuses
    /// the connection rather than fall back to plain HTTP.
    pub fn config(&self) -> Result<Option<Arc<ServerConfig>>, String> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let files = [dir.join(NODE_CERT_FILE), dir.join(NODE_KEY_FILE), dir.join(NODE_CA_FILE)];
        if !files[0].exists() {
            return Ok(None);
        }
        let stamp: Stamp = files.clone().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = loaded.as_ref().filter(|l| l.stamp == stamp) {
            return Ok(Some(current.config.clone()));
        }
        let config = Arc::new(server_config(&files[0], &files[1], &files[2])?);
        *loaded = Some(Loaded { stamp, config: config.clone() });
        Ok(Some(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves `cert`/`key` and requires client certificates that chain to `ca`.
pub fn server_config(cert: &Path, key_path: &Path, ca: &Path) -> Result<ServerConfig, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?)
        .map_err(|e| format!("{} is not a PEM key: {e}", key_path.display()))?;
    let mut roots = RootCertStore::empty();
    for anchor in CertificateDer::pem_slice_iter(&read(ca)?) {
        let anchor = anchor.map_err(|e| format!("{} is not a PEM certificate: {e}", ca.display()))?;
        roots.add(anchor).map_err(|e| format!("{} is not a usable CA: {e}", ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("cannot verify clients with {}: {e}", ca.display()))?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} does not go with {}: {e}", cert.display(), key_path.display()))
}

/// The caller of an established TLS connection (its certificate was verified).
pub fn caller_of(connection: &ServerConnection) -> Caller {
    let common_name = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .and_then(|(_, cert)| {
            cert.subject().iter_common_name().next().and_then(|n| n.as_str().ok()).map(str::to_string)
        });
    Caller::Cluster { master: common_name.as_deref() == Some(MASTER_COMMON_NAME) }
}
