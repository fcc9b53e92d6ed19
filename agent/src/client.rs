//! The master's agent protocol (`/agent/v1/...`) from the agent's side. Every request
//! carries the join token and, once the agent knows it, its cluster id (the master of
//! another cluster refuses it). With a node identity (a cluster CA's certificate) the
//! client presents that certificate and trusts the cluster CA.
use plinth_dns::DnsRecords;
use plinth_protocol::agent::{
    CertificateRequest, IssuedCertificate, JoinRequest, JoinToken, Joined, Registered, Registration, StatusAck,
    StatusBatch, SyncRequest, SyncResponse, CLUSTER_HEADER, TOKEN_HEADER,
};
use plinth_protocol::{AgentId, ClusterId};
use serde::{de::DeserializeOwned, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::AgentError;
use crate::identity::NodeIdentity;

/// Time for the master to answer beyond a long-poll's own wait.
const ANSWER_SLACK: Duration = Duration::from_secs(10);
const MULTI_MASTER_SLACK: Duration = Duration::from_secs(2);
/// Set by a follower master on what it proxied: the leader's URL.
const LEADER_HEADER: &str = "x-marathon-leader";
/// A master that does not accept the connection by then is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct MasterClient {
    /// Shared by every clone, so a renewed certificate reaches them all.
    http: Arc<RwLock<reqwest::Client>>,
    /// The CAs of `--ca-file`, kept to rebuild `http` with a renewed certificate.
    trusted: Vec<reqwest::Certificate>,
    base: String,
    /// Every master of `--master A,B,C`: a request that finds no one at the current one
    /// (or a 503: no leader there) tries the next; followers proxy to the leader.
    bases: Arc<Vec<String>>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    /// The leader a follower named (`X-Marathon-Leader` on its proxied answers): asked
    /// directly from then on, saving the proxy's hop, until it stops answering.
    leader: Arc<RwLock<Option<String>>>,
    token: Option<JoinToken>,
    /// The cluster this agent follows, shared by every clone (the loops and the outbox).
    cluster: Arc<RwLock<Option<ClusterId>>>,
}

impl MasterClient {
    /// A client of `master` (`http://` or `https://`, trusting the CAs in `ca_file` too, and
    /// with `identity` presenting its certificate and trusting its CA).
    pub fn new(
        master: &str,
        token: Option<JoinToken>,
        ca_file: Option<&Path>,
        identity: Option<&NodeIdentity>,
    ) -> Result<Self, AgentError> {
        let bases: Vec<String> = master.split(',').map(|m| m.trim().trim_end_matches('/').to_string()).collect();
        for base in &bases {
            let url = reqwest::Url::parse(base)
                .map_err(|e| AgentError::MasterUrl { url: base.clone(), reason: e.to_string() })?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(AgentError::MasterUrl { url: base.clone(), reason: "use http:// or https://".into() });
            }
            if url.host_str().is_none() {
                return Err(AgentError::MasterUrl { url: base.clone(), reason: "it has no host".into() });
            }
        }
        let base = bases[0].clone();
        let mut trusted = Vec::new();
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|source| AgentError::ReadFile { path: path.to_path_buf(), source })?;
            trusted = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|source| AgentError::CaFile { path: path.to_path_buf(), source })?;
        }
        let http = Arc::new(RwLock::new(http_client(&trusted, identity)?));
        Ok(MasterClient {
            http,
            trusted,
            base,
            bases: Arc::new(bases),
            current: Arc::default(),
            leader: Arc::default(),
            token,
            cluster: Arc::default(),
        })
    }

    /// Presents `identity`'s certificate from the next request on (after a renewal).
    pub fn use_identity(&self, identity: &NodeIdentity) -> Result<(), AgentError> {
        let http = http_client(&self.trusted, Some(identity))?;
        *self.http.write().unwrap_or_else(std::sync::PoisonError::into_inner) = http;
        Ok(())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// How long past its own wait a sync may take: with several masters, a paused one
    /// (whose connection neither answers nor closes) is left for the next one soon.
    fn slack(&self) -> Duration {
        if self.bases.len() > 1 {
            MULTI_MASTER_SLACK
        } else {
            ANSWER_SLACK
        }
    }

    /// The cluster named in every request from now on (`None`: follow any).
    pub fn set_cluster(&self, cluster: Option<ClusterId>) {
        *self.cluster.write().unwrap_or_else(std::sync::PoisonError::into_inner) = cluster;
    }

    pub fn cluster(&self) -> Option<ClusterId> {
        self.cluster.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, AgentError> {
        self.post_with(operation, path, body, timeout, self.token.as_ref()).await
    }

    async fn post_with<B: Serialize, R: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        body: &B,
        timeout: Duration,
        token: Option<&JoinToken>,
    ) -> Result<R, AgentError> {
        let leader = self.leader.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(leader) = leader {
            match self.post_to(&leader, operation, path, body, timeout, token).await {
                Err(e) if no_leader_there(&e) => {
                    *self.leader.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                answer => return answer,
            }
        }
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.bases.len() {
            let index = (start + step) % self.bases.len();
            match self.post_to(&self.bases[index], operation, path, body, timeout, token).await {
                Err(e) if no_leader_there(&e) && self.bases.len() > 1 => {
                    tracing::debug!(master = %self.bases[index], error = %plinth_protocol::error_chain(&e), "trying the next master");
                    last = Some(e);
                }
                answer => {
                    self.current.store(index, std::sync::atomic::Ordering::Relaxed);
                    return answer;
                }
            }
        }
        self.current.store((start + 1) % self.bases.len(), std::sync::atomic::Ordering::Relaxed);
        Err(last.expect("at least one master was tried"))
    }

    async fn post_to<B: Serialize, R: DeserializeOwned>(
        &self,
        base: &str,
        operation: &'static str,
        path: &str,
        body: &B,
        timeout: Duration,
        token: Option<&JoinToken>,
    ) -> Result<R, AgentError> {
        let url = format!("{base}{path}");
        let http = self.http.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let request = self.admitted(http.post(&url).json(body).timeout(timeout), token);
        self.answer(operation, url, request).await
    }

    /// The join token (when given) and the cluster, as every agent request carries them.
    fn admitted(&self, mut request: reqwest::RequestBuilder, token: Option<&JoinToken>) -> reqwest::RequestBuilder {
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        if let Some(cluster) = self.cluster() {
            request = request.header(CLUSTER_HEADER, cluster.as_str());
        }
        request
    }

    /// Sends `request`; a non-2xx answer is an error carrying (the start of) its body.
    async fn answer<R: DeserializeOwned>(
        &self,
        operation: &'static str,
        url: String,
        request: reqwest::RequestBuilder,
    ) -> Result<R, AgentError> {
        let request_error = |source| AgentError::MasterRequest { operation, url: url.clone(), source };
        let response = request.send().await.map_err(request_error)?;
        if self.bases.len() > 1 {
            if let Some(leader) = response.headers().get(LEADER_HEADER).and_then(|v| v.to_str().ok()) {
                *self.leader.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(leader.to_string());
            }
        }
        let status = response.status();
        if !status.is_success() {
            let mut body = response.text().await.unwrap_or_default();
            body.truncate(500);
            return Err(AgentError::MasterStatus { operation, status: status.as_u16(), body });
        }
        response.json().await.map_err(request_error)
    }

    pub async fn register(&self, registration: &Registration) -> Result<Registered, AgentError> {
        self.post("register", "/agent/v1/register", registration, ANSWER_SLACK).await
    }

    pub async fn sync(&self, request: &SyncRequest) -> Result<SyncResponse, AgentError> {
        let timeout = Duration::from_millis(request.wait_ms) + self.slack();
        self.post("sync", "/agent/v1/sync", request, timeout).await
    }

    /// `GET /agent/v1/dns`: the master's record set, at once when its generation is not
    /// `after`, else when it changes or `wait` ends.
    pub async fn dns(&self, agent: &AgentId, after: u64, wait: Duration) -> Result<DnsRecords, AgentError> {
        // The master the agent protocol last reached (followers proxy to the leader).
        let base = &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()];
        let url = format!("{base}/agent/v1/dns?agent_id={agent}&after={after}&wait_ms={}", wait.as_millis());
        let http = self.http.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let request = self.admitted(http.get(&url).timeout(wait + ANSWER_SLACK), self.token.as_ref());
        self.answer("dns", url, request).await
    }

    pub async fn status(&self, batch: &StatusBatch) -> Result<StatusAck, AgentError> {
        self.post("status", "/agent/v1/status", batch, ANSWER_SLACK).await
    }

    /// Exchanges a bootstrap token (once) for the cluster's join token.
    pub async fn join(&self, bootstrap: &JoinToken, request: &JoinRequest) -> Result<Joined, AgentError> {
        self.post_with("join", "/agent/v1/join", request, ANSWER_SLACK, Some(bootstrap)).await
    }

    /// A certificate for a CSR: with `token` (the join token), or without one by the
    /// certificate this client presents (a renewal).
    pub async fn certificate(
        &self,
        token: Option<&JoinToken>,
        request: &CertificateRequest,
    ) -> Result<IssuedCertificate, AgentError> {
        self.post_with("certificate", "/agent/v1/certificate", request, ANSWER_SLACK, token).await
    }

    /// The local address the kernel would use to reach the master: the one to advertise.
    /// A UDP "connect" sends nothing; it only picks the route.
    pub async fn local_address_towards_master(&self) -> IpAddr {
        let fallback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let Ok(url) = reqwest::Url::parse(&self.base) else { return fallback };
        let Some(host) = url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()) else {
            return fallback;
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let Ok(mut addrs) = tokio::net::lookup_host((host.as_str(), port)).await else { return fallback };
        let Some(target): Option<SocketAddr> = addrs.next() else { return fallback };
        let bind: SocketAddr =
            if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal socket address");
        UdpSocket::bind(bind)
            .and_then(|socket| socket.connect(target).and_then(|()| socket.local_addr()))
            .map(|addr| addr.ip())
            .unwrap_or(fallback)
    }
}

fn http_client(
    trusted: &[reqwest::Certificate],
    identity: Option<&NodeIdentity>,
) -> Result<reqwest::Client, AgentError> {
    plinth_oci::tls::install_provider();
    let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).tls_certs_merge(trusted.to_vec());
    if let Some(identity) = identity {
        builder = builder.identity(identity.client_identity()?).tls_certs_merge([identity.ca_certificate()?]);
    }
    builder.build().map_err(|source| AgentError::HttpClient { source })
}

/// A master that did not answer, or answered that it has no leader: try another.
fn no_leader_there(error: &AgentError) -> bool {
    matches!(error, AgentError::MasterRequest { .. } | AgentError::MasterStatus { status: 503, .. })
}
