//! The agent protocol (`/agent/v1/...`, see `plinth_protocol::agent`): registration,
//! long-polled sync of the desired state, and acknowledged status updates. Every answer
//! is given only after the changes it caused are on disk. Every request must carry the
//! join token (when the master has one) and, when it names a cluster, this master's: an
//! agent of another cluster is refused with 409 before anything changes, so a master that
//! lost its store cannot take over (and empty) the agents of the cluster it served.
//!
//! With the cluster CA (`--cluster-ca`) the token only buys a certificate: an agent sends
//! a CSR with it to `POST /agent/v1/certificate` (or renews with its certificate), and
//! registration, sync and status updates then need the connection's verified client
//! certificate instead, named for the agent's hostname; the token alone is refused.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use plinth_protocol::agent::{
    CertificateRequest, ClusterMismatch, IssuedCertificate, Registered, Registration, StatusAck, StatusBatch,
    SyncRequest, SyncResponse, CLUSTER_HEADER, TOKEN_HEADER,
};
use plinth_protocol::{AgentId, ClusterId};
use plinth_scheduler::Core;

use super::{Body, ClientAddr};
use crate::ca::certificate_common_name;
use crate::error::ApiError;
use crate::shell::Master;
use crate::tls::PeerCertificate;

/// The connection's verified client certificate, when it showed one.
type Peer = Option<Extension<PeerCertificate>>;

/// Upper bound of a long-poll, whatever the agent asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Refuses agents without the join token when the master requires one. Each offending
/// address is logged once, so a misconfigured agent does not flood the log.
fn check_token(master: &Master, headers: &HeaderMap, client: &ClientAddr, who: &str) -> Result<(), ApiError> {
    let Some(expected) = &master.config.token else { return Ok(()) };
    let given = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if given.is_some_and(|given| expected.matches(given)) {
        return Ok(());
    }
    let reason = if given.is_none() { "no join token" } else { "a wrong join token" };
    if first_warning(master, client, "token", who) {
        let address = client.ip().unwrap_or_else(|| "unknown".into());
        tracing::warn!(remote_address = %address, node = %who, "agent refused: it presented {reason}");
    }
    Err(ApiError::Unauthorized(format!(
        "agent refused: {reason}; start the agent with the master's token (--token-file PATH or PLINTH_TOKEN, \
         header {TOKEN_HEADER})"
    )))
}

/// True the first time this address and node are warned about `what`.
fn first_warning(master: &Master, client: &ClientAddr, what: &str, who: &str) -> bool {
    let address = client.ip().unwrap_or_else(|| "unknown".into());
    master.token_warned.lock().expect("token warning set is never poisoned").insert(format!("{what}/{address}/{who}"))
}

/// This cluster's id: the framework id, made once with the store.
pub fn cluster_id(master: &Master) -> ClusterId {
    ClusterId::new(master.framework_id.clone())
}

/// Why an agent request is refused: the API's errors, or 409 with [`ClusterMismatch`].
pub enum Refusal {
    Api(ApiError),
    OtherCluster(ClusterMismatch),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(e) => e.into_response(),
            Refusal::OtherCluster(body) => (StatusCode::CONFLICT, Json(body)).into_response(),
        }
    }
}

/// Refuses an agent whose checkpoint names another cluster.
fn check_cluster(master: &Master, headers: &HeaderMap, client: &ClientAddr, who: &str) -> Result<(), Refusal> {
    let ours = cluster_id(master);
    let Some(theirs) = headers.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    if theirs == ours.as_str() {
        return Ok(());
    }
    if first_warning(master, client, "cluster", who) {
        tracing::warn!(node = %who, agent_cluster_id = %theirs, cluster_id = %ours,
            "agent of another cluster refused (it keeps its tasks)");
    }
    let message = format!(
        "agent {who} belongs to cluster {theirs}, this master runs cluster {ours}: the agent follows no master of \
         another cluster (start it once with --rejoin-cluster to join this one)"
    );
    Err(Refusal::OtherCluster(ClusterMismatch { message, cluster_id: ours }))
}

/// The join token (or, with the cluster CA, the client certificate) and the cluster,
/// checked for every agent request. With the CA, the certificate's name is returned: the
/// agent must be the node it names.
pub(super) fn admit(
    master: &Master,
    headers: &HeaderMap,
    client: &ClientAddr,
    peer: &Peer,
    who: &str,
) -> Result<Option<String>, Refusal> {
    let certified = match &master.identity {
        Some(_) => Some(check_certificate(master, peer, client, who)?),
        None => {
            check_token(master, headers, client, who)?;
            None
        }
    };
    check_cluster(master, headers, client, who)?;
    Ok(certified)
}

/// The common name of the connection's certificate (verified against the cluster CA by the
/// handshake); refused without one, however good the token.
fn check_certificate(master: &Master, peer: &Peer, client: &ClientAddr, who: &str) -> Result<String, ApiError> {
    if let Some(name) = peer.as_ref().and_then(|Extension(PeerCertificate(der))| certificate_common_name(der)) {
        return Ok(name);
    }
    if first_warning(master, client, "certificate", who) {
        let address = client.ip().unwrap_or_else(|| "unknown".into());
        tracing::warn!(remote_address = %address, node = %who, "agent refused: it presented no client certificate");
    }
    Err(ApiError::Unauthorized(
        "agent refused: this master requires mutual TLS with a certificate from its cluster CA; the agent gets one \
         at POST /agent/v1/certificate with the join token (an agent does this by itself when it reaches the master \
         over https://)"
            .into(),
    ))
}

/// A certified agent may only speak for the node its certificate names.
fn check_name(certified: Option<&str>, hostname: &str) -> Result<(), ApiError> {
    match certified {
        Some(name) if name != hostname => {
            Err(ApiError::Forbidden(format!("agent refused: its certificate is for node {name}, not for {hostname}")))
        }
        _ => Ok(()),
    }
}

/// [`check_name`] for a registered agent (an unknown one is told to register again).
pub(super) fn check_agent_name(core: &Core, agent: &AgentId, certified: Option<&str>) -> Result<(), ApiError> {
    match core.agent(agent) {
        Some(state) => check_name(certified, &state.record.hostname),
        None => Ok(()),
    }
}

/// `POST /agent/v1/register`.
pub async fn register(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    peer: Peer,
    body: Body,
) -> Result<Json<Registered>, Refusal> {
    let registration: Registration = body.json()?;
    let certified = admit(&master, &headers, &client, &peer, &registration.hostname)?;
    check_name(certified.as_deref(), &registration.hostname)?;
    let hostname = registration.hostname.clone();
    let reported = registration.tasks.len();
    let agent_id = master.command(|core, now| Ok(core.register_agent(registration, now))).await?;
    let heartbeat_interval_ms = master.read().await.core.config().heartbeat_interval_ms;
    tracing::info!(node_id = %agent_id, hostname = %hostname, tasks = reported, "agent registered");
    Ok(Json(Registered { agent_id, heartbeat_interval_ms, cluster_id: Some(cluster_id(&master)) }))
}

/// `POST /agent/v1/sync`: the heartbeat; long-polls up to `wait_ms` for a new desired state
/// or service table.
pub async fn sync(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    peer: Peer,
    body: Body,
) -> Result<Json<SyncResponse>, Refusal> {
    let request: SyncRequest = body.json()?;
    let certified = admit(&master, &headers, &client, &peer, request.agent_id.as_str())?;
    master.heard_from(&request.agent_id);
    // Subscribe before syncing so a change made in between still wakes us.
    let mut waker = master.agent_waker(&request.agent_id);
    let mut response = master
        .command_with(|core, now| {
            check_agent_name(core, &request.agent_id, certified.as_deref())?;
            Ok(core.sync_agent(&request, now))
        })
        .await?;
    response.cluster_id = Some(cluster_id(&master));
    if response.desired.is_some() || response.services.is_some() || response.reregister || request.wait_ms == 0 {
        if response.reregister {
            tracing::info!(node_id = %request.agent_id, "unknown agent told to register again");
        }
        master.timelines.sent(response.desired.as_ref(), plinth_protocol::Timestamp::now());
        return Ok(Json(response));
    }
    // Stay well inside the liveness timeout: the sync itself is the heartbeat.
    let limit = MAX_WAIT.min(master.config.agent_timeout / 2);
    let wait = Duration::from_millis(request.wait_ms).min(limit);
    let _ = tokio::time::timeout(wait, waker.changed()).await;
    let guard = master.read().await;
    let desired = guard.core.desired_state(&request.agent_id).filter(|d| d.generation > request.generation);
    // The table of a woken poll is fresh: every command refreshes it before waking anyone.
    let services = guard.core.services_update(request.services_generation);
    drop(guard);
    // An agent acts on what it gets: only what is durable.
    master.settled().await;
    master.timelines.sent(desired.as_ref(), plinth_protocol::Timestamp::now());
    Ok(Json(SyncResponse { desired, reregister: false, cluster_id: Some(cluster_id(&master)), services }))
}

/// `POST /agent/v1/status`: applies updates, makes them durable, then acknowledges.
pub async fn status(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    peer: Peer,
    body: Body,
) -> Result<Json<StatusAck>, Refusal> {
    let batch: StatusBatch = body.json()?;
    let certified = admit(&master, &headers, &client, &peer, batch.agent_id.as_str())?;
    master.heard_from(&batch.agent_id);
    for update in &batch.updates {
        tracing::debug!(node_id = %batch.agent_id, task_id = %update.task_id, app_id = %update.app_id,
            state = %update.state, "status update");
    }
    let agent = batch.agent_id.clone();
    let acknowledged = master
        .command_with(|core, now| {
            check_agent_name(core, &agent, certified.as_deref())?;
            Ok(core.apply_status_updates(&agent, batch.updates, now))
        })
        .await?;
    Ok(Json(StatusAck { acknowledged }))
}

/// `POST /agent/v1/certificate`: signs an agent's CSR with the cluster CA. Authorized by
/// the join token, or, to renew, by the agent's current certificate (then only for the
/// node it names). Every certificate issued is logged.
pub async fn certificate(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    peer: Peer,
    body: Body,
) -> Result<Json<IssuedCertificate>, Refusal> {
    let Some(identity) = &master.identity else {
        return Err(ApiError::NotFound(
            "this master has no cluster CA (start it with --cluster-ca): agents join with the token alone".into(),
        )
        .into());
    };
    let request: CertificateRequest = body.json()?;
    let renewing = match peer.as_ref().and_then(|Extension(PeerCertificate(der))| certificate_common_name(der)) {
        Some(name) if headers.get(TOKEN_HEADER).is_none() => Some(name),
        _ => None,
    };
    if renewing.is_none() {
        check_token(&master, &headers, &client, "a new node")?;
    }
    let issued = identity
        .ca
        .sign_node_csr(&request.csr, time::OffsetDateTime::now_utc())
        .map_err(|e| ApiError::BadRequest(format!("certificate refused: {e}")))?;
    check_cluster(&master, &headers, &client, &issued.common_name)?;
    if let Some(name) = &renewing {
        check_name(Some(name), &issued.common_name)?;
    }
    tracing::info!(node = %issued.common_name, names = %issued.names.join(","), serial = %issued.serial,
        not_after = %issued.not_after, renewal = renewing.is_some(),
        remote_address = %client.ip().unwrap_or_else(|| "unknown".into()), "client certificate issued");
    Ok(Json(IssuedCertificate {
        certificate: issued.pem,
        ca: identity.ca.pem().to_string(),
        cluster_id: cluster_id(&master),
    }))
}

/// `GET /v1/ca.pem`: the cluster CA's certificate, for clients to trust (compare its
/// fingerprint with the one the master printed at start).
pub async fn ca_pem(State(master): State<Arc<Master>>) -> Result<Response, ApiError> {
    let Some(identity) = &master.identity else {
        return Err(ApiError::NotFound("this master has no cluster CA (start it with --cluster-ca)".into()));
    };
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], identity.ca.pem().to_string()).into_response())
}
