//! The master's API over HTTPS: with `--tls-cert`/`--tls-key` the operator's PEM chain and
//! key, with `--cluster-ca` (and no `--tls-cert`) a certificate from the cluster CA
//! (`ca.rs`) for this master's names. With the cluster CA, clients may present a
//! certificate, which is verified against it; [`TlsPeer`] carries the verified one to the
//! handlers ([`PeerCertificate`]), and the agent protocol requires it (`api/agents.rs`).
//! The listener is `plinth_oci::tls::TlsListener` (handshakes in their own tasks).
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::serve::IncomingStream;
use plinth_oci::tls::TlsListener;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ca::{CaError, ClusterCa, KeyedCertificate};

/// Where the API's certificate chain and private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path} (PEM)")]
    Certificates { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("the certificate file {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key {path} (PEM: PKCS#8, PKCS#1 or SEC1)")]
    Key { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("the certificate {cert} and the key {key} do not make a TLS server")]
    Config { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("the cluster CA's certificate does not make a TLS server")]
    ClusterConfig { source: rustls::Error },
    #[error("the cluster CA cannot verify client certificates")]
    ClientVerifier { source: rustls::server::VerifierBuilderError },
    #[error("HTTPS needs --tls-cert/--tls-key or --cluster-ca")]
    NoServerCertificate,
}

/// `--cluster-ca`: names the master's own certificate carries besides its hostname and
/// addresses (`--tls-san`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterCaSettings {
    pub extra_names: Vec<String>,
}

/// The cluster CA and the master's own certificate from it, made at start.
pub struct ClusterIdentity {
    pub ca: ClusterCa,
    pub master: KeyedCertificate,
    /// The client of agents' APIs (`https://`, which require a certificate of the cluster):
    /// presents the master's certificate and trusts the cluster CA only.
    pub agent_client: reqwest::Client,
}

impl ClusterIdentity {
    /// Loads (or, the first time, makes) the CA in `data_dir` and issues this master's
    /// certificate for `hostname`, the listen address (every local address when it is a
    /// wildcard), loopback and the extra names.
    pub fn open(
        data_dir: &Path,
        hostname: &str,
        listen: SocketAddr,
        settings: &ClusterCaSettings,
    ) -> Result<ClusterIdentity, CaError> {
        let (ca, created) = ClusterCa::load_or_create(data_dir)?;
        let path = data_dir.join(crate::ca::CA_DIR).join(crate::ca::CA_CERT_FILE);
        if created {
            tracing::info!(path = %path.display(), ca_fingerprint = %ca.fingerprint(), "cluster CA created");
        }
        let names = master_names(hostname, listen, &settings.extra_names);
        let master = ca.issue_master(&names, time::OffsetDateTime::now_utc())?;
        tracing::info!(path = %path.display(), ca_fingerprint = %ca.fingerprint(), names = %names.join(","),
            "cluster CA: agents join once with the token, then speak mutual TLS");
        // Printed too: the operator compares it when copying ca.pem to agents and clients.
        println!("plinth: cluster CA {} fingerprint {}", path.display(), ca.fingerprint());
        let agent_client = agent_client(&ca, &master).map_err(|e| CaError::Client { reason: e.to_string() })?;
        Ok(ClusterIdentity { ca, master, agent_client })
    }

    /// The roots client certificates must chain to: the cluster CA only.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // The CA was parsed when loaded; a failure here would be a rustls bug, and leaves
        // an empty store that verifies no one.
        if let Err(e) = roots.add(self.ca.der().clone()) {
            tracing::error!(error = %e, "the cluster CA is not a usable trust anchor");
        }
        roots
    }
}

fn agent_client(ca: &ClusterCa, master: &KeyedCertificate) -> Result<reqwest::Client, reqwest::Error> {
    plinth_oci::tls::install_provider();
    let identity = reqwest::Identity::from_pem(master.pem.as_bytes())?;
    let ca = reqwest::Certificate::from_der(ca.der())?;
    // No overall timeout: a followed log streams for as long as the task runs.
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .identity(identity)
        .tls_certs_only([ca])
        .build()
}

/// The names of the master's own certificate, each once.
fn master_names(hostname: &str, listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !hostname.is_empty() && hostname.parse::<IpAddr>().is_err() {
        names.push(hostname.to_string());
    }
    if listen.ip().is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            let ips = addrs.filter_map(|a| a.address).filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            // Link-local v6 addresses need a scope no URL names.
            names.extend(
                ips.filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
                    .map(|ip| ip.to_string()),
            );
        }
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The rustls server configuration (HTTP/1.1): the operator's `files`,
/// else the cluster's certificate; with the cluster CA, client certificates are asked for
/// and verified against it, but not required (users and the CSR endpoint have none).
pub fn server_config(
    files: Option<&TlsFiles>,
    identity: Option<&ClusterIdentity>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    plinth_oci::tls::install_provider();
    let builder = rustls::ServerConfig::builder();
    let builder = match identity {
        Some(identity) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(identity.roots()))
                .allow_unauthenticated()
                .build()
                .map_err(|source| TlsError::ClientVerifier { source })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = match (files, identity) {
        (Some(files), _) => {
            let certs = certificates(&files.cert)?;
            let key = PrivateKeyDer::from_pem_file(&files.key)
                .map_err(|source| TlsError::Key { path: files.key.clone(), source })?;
            builder.with_single_cert(certs, key).map_err(|source| TlsError::Config {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            })?
        }
        (None, Some(identity)) => builder
            .with_single_cert(identity.master.chain.clone(), identity.master.key.clone_key())
            .map_err(|source| TlsError::ClusterConfig { source })?,
        (None, None) => return Err(TlsError::NoServerCertificate),
    };
    // HTTP/1.1 only: axum is built without HTTP/2, and a client that was offered h2
    // (curl) would speak it to a server that cannot.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The connect info of an HTTPS connection: the peer's address and the client
/// certificate it presented, already verified against the cluster CA by the handshake.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    pub addr: SocketAddr,
    pub certificate: Option<CertificateDer<'static>>,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        let certificate = session.peer_certificates().and_then(|chain| chain.first()).map(|c| c.clone().into_owned());
        TlsPeer { addr: *stream.remote_addr(), certificate }
    }
}

/// The verified client certificate of the request's connection (a request extension).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub CertificateDer<'static>);

/// Gives every request the plain connect info the handlers read (`ConnectInfo<SocketAddr>`)
/// and, when its connection presented one, its [`PeerCertificate`].
pub async fn peer_extensions(mut request: Request) -> Request {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<TlsPeer>>().cloned() {
        request.extensions_mut().insert(ConnectInfo(peer.addr));
        if let Some(certificate) = peer.certificate {
            request.extensions_mut().insert(PeerCertificate(certificate));
        }
    }
    request
}
