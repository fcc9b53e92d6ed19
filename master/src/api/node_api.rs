//! The node API of a node's PID 1 (`:5052`) through the master (Plinth's own), so an
//! operator needs credentials for the master only, never a certificate of the cluster:
//!
//! - `GET /v1/nodes/{id}/{status|logs|dmesg|mounts|network|processes}`: the node's answer;
//! - `POST /v1/nodes/{id}/{poweroff|reboot}[?force=true]`: the master asks the node to
//!   shut down; a node must be drained first (every task moved away) unless `force=true`.
//!
//! With the cluster CA the node API is mutual TLS and only the master's certificate may
//! power a node off; without it, the request carries the cluster's join token, which the
//! node checks.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use plinth_protocol::AgentId;

use super::Params;
use crate::error::ApiError;
use crate::shell::Master;

/// The port PID 1 serves the node API on.
pub const NODE_API_PORT: u16 = 5052;

/// The node's read-only views.
const VIEWS: [&str; 6] = ["status", "logs", "dmesg", "mounts", "network", "processes"];

/// `GET /v1/nodes/{id}/{view}`.
pub async fn view(
    State(master): State<Arc<Master>>,
    Path((id, view)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !VIEWS.contains(&view.as_str()) {
        return Err(ApiError::NotFound(format!("no such view of a node: '{view}' (one of {})", VIEWS.join(", "))));
    }
    let address = node_address(&master, &id, None).await?;
    let answer = match send(&master, reqwest::Method::GET, &address, &view).await {
        Ok(answer) => answer,
        Err(reason) => return Ok(unreachable(&id, &reason)),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = answer.headers().get(reqwest::header::CONTENT_TYPE).map(|k| k.as_bytes().to_vec());
    let body = answer.bytes().await.map_err(|e| ApiError::Internal(format!("reading the node's answer: {e}")))?;
    let mut response = (status, body).into_response();
    if let Some(kind) = kind.and_then(|k| HeaderValue::from_bytes(&k).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, kind);
    }
    Ok(response)
}

/// The node's address. `Some(force)`: a power request, refused unless the node is
/// drained or `force`.
async fn node_address(master: &Master, id: &str, power_forced: Option<bool>) -> Result<String, ApiError> {
    let agent = AgentId::new(id);
    let guard = master.read().await;
    let core = &guard.core;
    let state = core.agent(&agent).ok_or_else(|| ApiError::NotFound(format!("node '{id}' is not known")))?;
    if power_forced == Some(false) && !core.is_drained(&agent) {
        return Err(ApiError::Conflict(format!(
            "node '{id}' is not drained; drain it first (POST /master/slaves/{id}/drain) or pass force=true \
             to cut its tasks off"
        )));
    }
    Ok(state.record.advertise_ip.clone())
}

/// Sends one request to the node API; `Err` with a readable reason when unreachable.
async fn send(
    master: &Master,
    method: reqwest::Method,
    address: &str,
    what: &str,
) -> Result<reqwest::Response, String> {
    let (client, scheme) = match &master.identity {
        Some(identity) => (identity.agent_client.clone(), "https"),
        None => (super::task_views::client().clone(), "http"),
    };
    let url = format!("{scheme}://{address}:{NODE_API_PORT}/node/v1/{what}");
    let mut request = client.request(method, &url).timeout(Duration::from_secs(10));
    if let (None, Some(token)) = (&master.identity, &master.config.token) {
        request = request.bearer_auth(token.expose());
    }
    request.send().await.map_err(|e| format!("{url}: {}", plinth_protocol::error_chain(&e)))
}

fn unreachable(id: &str, reason: &str) -> Response {
    let message =
        format!("cannot reach the node API of '{id}' (only nodes booted from the Plinth image have one): {reason}");
    (StatusCode::BAD_GATEWAY, Json(json!({"message": message}))).into_response()
}

/// `POST /v1/nodes/{id}/{poweroff|reboot}[?force=true]`.
pub async fn power(
    State(master): State<Arc<Master>>,
    Path((id, action)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    if !matches!(action.as_str(), "poweroff" | "reboot") {
        return Err(ApiError::NotFound(format!("no such node action: '{action}' (poweroff or reboot)")));
    }
    let force = params.get("force") == Some("true");
    let address = node_address(&master, &id, Some(force)).await?;
    let answer = match send(&master, reqwest::Method::POST, &address, &action).await {
        Ok(answer) => answer,
        Err(reason) => return Ok(unreachable(&id, &reason)),
    };
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = format!("the node API of '{id}' answered {status}: {}", body.trim());
        return Ok((StatusCode::BAD_GATEWAY, Json(json!({"message": message}))).into_response());
    }
    tracing::info!(node_id = %id, action = %action, force, "node power request sent");
    let message = if action == "poweroff" { "powering off" } else { "rebooting" };
    Ok((StatusCode::ACCEPTED, Json(json!({"message": format!("node '{id}' is {message}")}))).into_response())
}
