//! The agent protocol (`/agent/v1/...`, see `plinth_protocol::agent`): registration,
//! long-polled sync of the desired state, and acknowledged status updates. Every answer
//! is given only after the changes it caused are on disk.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use plinth_protocol::agent::{
    Registered, Registration, StatusAck, StatusBatch, SyncRequest, SyncResponse, TOKEN_HEADER,
};

use super::{Body, ClientAddr};
use crate::error::ApiError;
use crate::shell::Master;

/// Upper bound of a long-poll, whatever the agent asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Refuses agents without the join token when the master requires one. Each offending
/// address is logged once, so a misconfigured agent does not flood the log.
fn check_token(master: &Master, headers: &HeaderMap, client: ClientAddr, who: &str) -> Result<(), ApiError> {
    let Some(expected) = &master.config.token else { return Ok(()) };
    let given = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if given == Some(expected.as_str()) {
        return Ok(());
    }
    let reason = if given.is_none() { "no join token" } else { "a wrong join token" };
    let address = client.ip().unwrap_or_else(|| "unknown".into());
    let first =
        master.token_warned.lock().expect("token warning set is never poisoned").insert(format!("{address}/{who}"));
    if first {
        tracing::warn!(remote_address = %address, node = %who, "agent refused: it presented {reason}");
    }
    Err(ApiError::Unauthorized(format!(
        "agent refused: {reason}; start the agent with the master's token (--token / PLINTH_TOKEN, header {TOKEN_HEADER})"
    )))
}

/// `POST /agent/v1/register`.
pub async fn register(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Registered>, ApiError> {
    let registration: Registration = body.json()?;
    check_token(&master, &headers, client, &registration.hostname)?;
    let hostname = registration.hostname.clone();
    let reported = registration.tasks.len();
    let agent_id = master.command(|core, now| Ok(core.register_agent(registration, now))).await?;
    let heartbeat_interval_ms = master.read().await.core.config().heartbeat_interval_ms;
    tracing::info!(node_id = %agent_id, hostname = %hostname, tasks = reported, "agent registered");
    Ok(Json(Registered { agent_id, heartbeat_interval_ms }))
}

/// `POST /agent/v1/sync`: the heartbeat; long-polls up to `wait_ms` for a new desired state.
pub async fn sync(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SyncResponse>, ApiError> {
    let request: SyncRequest = body.json()?;
    check_token(&master, &headers, client, request.agent_id.as_str())?;
    master.heard_from(&request.agent_id);
    // Subscribe before syncing so a change made in between still wakes us.
    let mut waker = master.agent_waker(&request.agent_id);
    let response = master.command(|core, now| Ok(core.sync_agent(&request, now))).await?;
    if response.desired.is_some() || response.reregister || request.wait_ms == 0 {
        if response.reregister {
            tracing::info!(node_id = %request.agent_id, "unknown agent told to register again");
        }
        return Ok(Json(response));
    }
    // Stay well inside the liveness timeout: the sync itself is the heartbeat.
    let limit = MAX_WAIT.min(master.config.agent_timeout / 2);
    let wait = Duration::from_millis(request.wait_ms).min(limit);
    let _ = tokio::time::timeout(wait, waker.changed()).await;
    let guard = master.read().await;
    let desired = guard.core.desired_state(&request.agent_id).filter(|d| d.generation > request.generation);
    Ok(Json(SyncResponse { desired, reregister: false }))
}

/// `POST /agent/v1/status`: applies updates, makes them durable, then acknowledges.
pub async fn status(
    State(master): State<Arc<Master>>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StatusAck>, ApiError> {
    let batch: StatusBatch = body.json()?;
    check_token(&master, &headers, client, batch.agent_id.as_str())?;
    master.heard_from(&batch.agent_id);
    for update in &batch.updates {
        tracing::debug!(node_id = %batch.agent_id, task_id = %update.task_id, app_id = %update.app_id,
            state = %update.state, "status update");
    }
    let agent = batch.agent_id.clone();
    let acknowledged = master.command(|core, now| Ok(core.apply_status_updates(&agent, batch.updates, now))).await?;
    Ok(Json(StatusAck { acknowledged }))
}
