//! The agent protocol (master `:8080/agent/v1/...`), JSON over HTTP.
//!
//! - `POST /agent/v1/register` [`Registration`] → [`Registered`]: first contact and every
//!   reconnect; carries the tasks the agent still runs, so a restarted master adopts them.
//! - `POST /agent/v1/sync` [`SyncRequest`] → [`SyncResponse`]: the heartbeat. The master
//!   answers with the agent's whole desired task set when its generation is newer than the
//!   one the agent applied (long-polls up to `wait_ms` for a change), and the
//!   [`ServiceTable`] when it is newer than the one the agent's balancer applied.
//! - `POST /agent/v1/status` [`StatusBatch`] → [`StatusAck`]: task state changes. The agent
//!   keeps each update in its checkpointed outbox and resends it until acknowledged.
//! - `POST /agent/v1/join` [`JoinRequest`] → [`Joined`]: a PXE-booted agent's one exchange
//!   of its single-use bootstrap token (header [`TOKEN_HEADER`]) for the cluster's join
//!   token, which it keeps in [`JOIN_TOKEN_FILE`] in its work dir.
//! - `POST /agent/v1/certificate` [`CertificateRequest`] → [`IssuedCertificate`]: with a
//!   cluster CA, an agent's CSR (with the join token, or to renew, its current certificate)
//!   for a client certificate; from then on it speaks mutual TLS with it (files in
//!   [`NODE_TLS_DIR`]).
//!
//! Registration and sync answers name the master's [`ClusterId`]; an agent whose
//! checkpoint names another cluster follows no such master: its requests name its cluster
//! (header [`CLUSTER_HEADER`]) and a master of another one refuses them with 409 and
//! [`ClusterMismatch`].
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::{AgentId, AppDefinition, AppId, Attributes, ClusterId, Resources, TaskId, TaskState};

/// Header that carries the join token (or, to `/agent/v1/join`, the bootstrap token).
pub const TOKEN_HEADER: &str = "x-plinth-token";

/// Header naming the cluster an agent belongs to (absent for a new agent, or one told to
/// join whatever cluster the master runs: `--rejoin-cluster`).
pub const CLUSTER_HEADER: &str = "x-plinth-cluster-id";

/// Every bootstrap token starts with this, so an agent knows to exchange it.
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "plinth-bootstrap.";

/// Where an agent keeps the join token it got for its bootstrap token (mode 0600, in its
/// work dir); PID 1 reads it too, to guard the node API's power endpoints.
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// Where an agent keeps its identity under its work dir: [`NODE_KEY_FILE`] (0600),
/// [`NODE_CERT_FILE`] and the cluster CA's [`NODE_CA_FILE`] (PEM).
pub const NODE_TLS_DIR: &str = "tls";
pub const NODE_KEY_FILE: &str = "node.key";
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_CA_FILE: &str = "ca.pem";
/// Exists on a booted node while PID 1 still loads the kernel modules containers need
/// (overlay, veth, bridge, netfilter) in the background; the executor waits for it to go
/// before it starts a container.
pub const CONTAINER_MODULES_LOADING: &str = "/run/plinth/container-modules.loading";
/// The common name of the master's own certificate from the cluster CA; the CA never
/// signs it for a node, so it marks the master among callers with cluster certificates.
pub const MASTER_COMMON_NAME: &str = "plinth-master";

/// `POST /agent/v1/certificate`: a PEM certificate signing request. Its subject's common
/// name is the agent's hostname; its subject alternative names are the DNS names and IP
/// addresses the agent's API answers at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateRequest {
    pub csr: String,
}

/// The answer to a [`CertificateRequest`]: the signed certificate and the CA that signed
/// it (PEM), which the agent trusts from then on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    pub certificate: String,
    pub ca: String,
    pub cluster_id: ClusterId,
}

/// A secret token (the cluster's join token or a bootstrap token). Its `Debug` shows no
/// secret, so a config struct that holds one can be logged; compare with [`JoinToken::matches`].
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    /// `None` for an empty (or all-blank) token: that is no token at all.
    pub fn new(token: impl Into<String>) -> Option<JoinToken> {
        let token = token.into().trim().to_string();
        (!token.is_empty()).then_some(JoinToken(token))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A single-use token from PXE boot, to exchange at `/agent/v1/join`.
    pub fn is_bootstrap(&self) -> bool {
        self.0.starts_with(BOOTSTRAP_TOKEN_PREFIX)
    }

    /// Constant-time comparison, so response times tell nothing about the token.
    pub fn matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// `POST /agent/v1/join`: who exchanges a bootstrap token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub hostname: String,
    /// MAC addresses of the agent's interfaces (`aa:bb:cc:dd:ee:ff`); the token was issued
    /// to one machine and is refused to any other.
    #[serde(default)]
    pub macs: Vec<String>,
}

/// The answer to a bootstrap token: the join token to present from now on.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    pub token: String,
    pub cluster_id: ClusterId,
}

impl fmt::Debug for Joined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Joined").field("token", &"<redacted>").field("cluster_id", &self.cluster_id).finish()
    }
}

/// The 409 body of a registration refused because the agent belongs to another cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMismatch {
    pub message: String,
    /// The master's cluster.
    #[serde(rename = "clusterId")]
    pub cluster_id: ClusterId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// `None` on the very first registration; afterwards the id the master gave.
    pub agent_id: Option<AgentId>,
    pub hostname: String,
    /// Address other hosts reach this agent's tasks (and its HTTP API) at.
    pub advertise_ip: String,
    pub http_port: u16,
    pub resources: Resources,
    #[serde(default)]
    pub attributes: Attributes,
    /// The last generation this agent applied; a restarted master continues above it.
    #[serde(default)]
    pub last_generation: u64,
    /// Every non-terminal task the agent runs.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub agent_id: AgentId,
    pub heartbeat_interval_ms: u64,
    /// The master's cluster (absent from masters before cluster ids).
    #[serde(default)]
    pub cluster_id: Option<ClusterId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub agent_id: AgentId,
    /// Generation of the desired state the agent last applied.
    pub generation: u64,
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
    /// Long-poll: hold the answer up to this long while nothing changes.
    #[serde(default)]
    pub wait_ms: u64,
    /// Generation of the [`ServiceTable`] the agent's balancer applied; `None` from an
    /// agent that runs no balancer (the master then waits for no confirmation from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_generation: Option<u64>,
    /// The newest table generation whose removed backends have no connection left through
    /// this agent's balancer (at most `services_generation`); the master kills a drained
    /// task once every agent reports a generation without it. Absent: `services_generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_drained: Option<u64>,
}

impl SyncRequest {
    /// A heartbeat reporting no tasks, waiting for nothing, from an agent with no balancer;
    /// callers add the rest with struct update syntax.
    pub fn new(agent_id: AgentId, generation: u64) -> Self {
        SyncRequest {
            agent_id,
            generation,
            tasks: Vec::new(),
            wait_ms: 0,
            services_generation: None,
            services_drained: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Present when the master's generation for this agent is newer than the agent's.
    pub desired: Option<DesiredState>,
    /// The master does not know this agent (e.g. it was expunged): register again.
    #[serde(default)]
    pub reregister: bool,
    /// The master's cluster; the agent applies no desired state of another cluster.
    #[serde(default)]
    pub cluster_id: Option<ClusterId>,
    /// Present when the service table is newer than the one the agent's balancer applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceTable>,
}

/// Every app's service ports and the backends that take their traffic, the same for every
/// agent (each agent balances every app). A task leaves it before the master kills it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTable {
    pub generation: u64,
    pub services: Vec<Service>,
}

/// One service port of one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub app_id: AppId,
    pub service_port: u16,
    pub protocol: ServiceProtocol,
    /// marathon-lb's `HAPROXY_GROUP` label; agents started with `--lb-group` serve only theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `HAPROXY_{n}_BALANCE` (`roundrobin`, `leastconn`).
    #[serde(default)]
    pub balance: Balance,
    /// `HAPROXY_{n}_VHOST`: host names routed to this port by the HTTP frontend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vhosts: Vec<String>,
    /// `HAPROXY_{n}_MODE`: a TCP proxy per connection, or an HTTP proxy per request.
    #[serde(default)]
    pub mode: LbMode,
    /// Tasks that are running, healthy (when checked), ready and not draining.
    pub backends: Vec<Backend>,
}

/// Transport of a service port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for ServiceProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceProtocol::Tcp => "tcp",
            ServiceProtocol::Udp => "udp",
        })
    }
}

/// How a balancer picks a backend for a new connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
}

/// What a TCP service port proxies (marathon-lb's `HAPROXY_{n}_MODE`; UDP ports ignore it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// Each client connection to one backend, bytes copied both ways.
    #[default]
    Tcp,
    /// An HTTP/1.1 reverse proxy: each request of a kept-open client connection picks a
    /// backend and travels on a pooled keep-alive connection to it.
    Http,
}

impl LbMode {
    /// The label's value, case-insensitive (`None`: neither `tcp` nor `http`).
    pub fn parse(value: &str) -> Option<LbMode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "tcp" => Some(LbMode::Tcp),
            "http" => Some(LbMode::Http),
            _ => None,
        }
    }
}

impl fmt::Display for LbMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LbMode::Tcp => "tcp",
            LbMode::Http => "http",
        })
    }
}

/// One task's address for a service port: its agent's address and the task's host port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backend {
    pub task_id: TaskId,
    pub host: String,
    pub port: u16,
}

/// The whole set of tasks an agent should run. Tasks absent from it are killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub generation: u64,
    pub tasks: Vec<TaskSpec>,
}

/// One task to run: the app version's definition plus what the offer gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub app_id: AppId,
    /// The app version (an ISO timestamp, as Marathon's `version`).
    pub version: String,
    pub app: AppDefinition,
    /// Host ports given by the offer, in port-definition order.
    pub host_ports: Vec<u16>,
    /// True once the master wants the task stopped (scale down, kill, new version):
    /// the agent kills it gracefully and reports `TASK_KILLED`.
    #[serde(default)]
    pub kill: bool,
}

/// What the agent observes of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: TaskId,
    pub app_id: AppId,
    pub version: String,
    pub state: TaskState,
    #[serde(default)]
    pub host_ports: Vec<u16>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub started_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// Unique per update, so a resent update is applied once.
    pub update_id: uuid::Uuid,
    pub task_id: TaskId,
    pub app_id: AppId,
    pub state: TaskState,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Mesos-style reason, e.g. `REASON_CONTAINER_LIMITATION_MEMORY` for an OOM kill.
    #[serde(default)]
    pub reason: Option<String>,
    pub timestamp: String,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl StatusUpdate {
    /// An update of a task's state with nothing else to say (no message, exit code,
    /// health); callers add those with struct update syntax.
    pub fn new(update_id: uuid::Uuid, task_id: TaskId, app_id: AppId, state: TaskState, timestamp: String) -> Self {
        StatusUpdate {
            update_id,
            task_id,
            app_id,
            state,
            message: None,
            exit_code: None,
            reason: None,
            timestamp,
            healthy: None,
            extra: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusBatch {
    pub agent_id: AgentId,
    pub updates: Vec<StatusUpdate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAck {
    pub acknowledged: Vec<uuid::Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug_output_and_blank_ones_are_none() {
        let token = JoinToken::new(" s3cret\n").unwrap();
        assert_eq!(token.expose(), "s3cret");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(token.matches("s3cret") && !token.matches("s3cre") && !token.matches("s3cret2"));
        assert_eq!(JoinToken::new("  \n"), None);
        let joined = Joined { token: "s3cret".into(), cluster_id: ClusterId::new("c1") };
        assert!(!format!("{joined:?}").contains("s3cret"));
        assert!(JoinToken::new(format!("{BOOTSTRAP_TOKEN_PREFIX}abc")).unwrap().is_bootstrap());
        assert!(!token.is_bootstrap());
    }
}
