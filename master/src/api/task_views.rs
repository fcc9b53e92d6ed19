//! `GET /v1/tasks/{id}/{logs|inspect|top|stats}` (Plinth's own): a task's views read
//! through the master from the agent that runs (or ran) it, for clients that cannot reach
//! the agents' `:5051` themselves (the web UI, whose page may only talk to its own origin;
//! the CLI of an operator who has credentials for the master but no certificate of the
//! cluster). The query is the agent's (for logs: `stream=stdout|stderr`, `offset`,
//! `follow=true`) and so is the answer: its status, body (streamed while following) and
//! `x-plinth-log-offset` header; `inspect`'s `timeline` gets the master's phases of the
//! task merged in (`timeline.rs`). With the
//! cluster CA agents serve HTTPS for callers of the cluster only, and the proxy presents
//! the master's own certificate (`tls::ClusterIdentity::agent_client`).
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use plinth_protocol::TaskId;

use crate::error::ApiError;
use crate::shell::Master;
use crate::timeline::{merge, Mark};
use plinth_scheduler::AgentState;

/// The agent's header saying where the next read starts.
const OFFSET_HEADER: &str = "x-plinth-log-offset";

/// The plain-HTTP client of the proxies to agents and nodes (one pool for all of them).
pub(crate) fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // No overall timeout: a followed log streams for as long as the task runs.
        reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).no_proxy().build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot configure the log proxy's HTTP client; using defaults");
            reqwest::Client::new()
        })
    })
}

/// With the cluster CA, agents serve their API over mutual TLS: the master shows them
/// its own certificate.
fn agent_base(agent: &AgentState, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}:{}", agent.record.advertise_ip, agent.record.http_port)
}

/// The views of a task that agents serve and the master passes through.
const VIEWS: [&str; 4] = ["logs", "inspect", "top", "stats"];

/// `GET /v1/tasks/{id}/{view}[?query]`: the agent's answer for that view.
pub async fn task_view(
    State(master): State<Arc<Master>>,
    Path((id, view)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
) -> Result<Response, ApiError> {
    if !VIEWS.contains(&view.as_str()) {
        return Err(ApiError::NotFound(format!("no such view of a task: '{view}' (one of {})", VIEWS.join(", "))));
    }
    // The agent that runs the task; a finished task has left the master's records but its
    // log stays on its agent, so then every agent is asked in turn.
    let (http, tls) = match &master.identity {
        Some(identity) => (&identity.agent_client, true),
        None => (client(), false),
    };
    let (agents, marks): (Vec<String>, Vec<Mark>) = {
        let guard = master.read().await;
        let core = &guard.core;
        let task = core.task(&TaskId::new(id.as_str()));
        let marks = task.map(|t| master.timelines.of(t)).unwrap_or_default();
        let agents = match task.and_then(|t| core.agent(&t.agent_id)) {
            Some(agent) => vec![agent_base(agent, tls)],
            None => core.agents().map(|a| agent_base(a, tls)).collect(),
        };
        (agents, marks)
    };
    let mut unreachable = Vec::new();
    for (index, base) in agents.iter().enumerate() {
        let mut url = reqwest::Url::parse(base).map_err(|e| ApiError::Internal(format!("agent URL {base}: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| ApiError::Internal(format!("agent URL {base} cannot have a path")))?
            .extend(["v1", "tasks", id.as_str(), view.as_str()]);
        url.set_query(uri.query());
        let answer = match http.get(url).send().await {
            Ok(answer) => answer,
            Err(e) => {
                unreachable.push(format!("{base}: {e}"));
                continue;
            }
        };
        if answer.status() == reqwest::StatusCode::NOT_FOUND && index + 1 < agents.len() {
            continue;
        }
        if view == "inspect" && answer.status().is_success() {
            return Ok(with_timeline(answer, marks).await);
        }
        return Ok(pass_through(answer));
    }
    if unreachable.is_empty() {
        return Err(ApiError::NotFound(format!("task '{id}' is not known to the master or to any of its agents")));
    }
    Ok(bad_gateway(format!("cannot reach the agent for task '{id}': {}", unreachable.join("; "))))
}

/// The agent's inspect view with the whole timeline: the master's phases merged into the
/// agent's own (`timeline.rs`).
async fn with_timeline(answer: reqwest::Response, marks: Vec<Mark>) -> Response {
    let url = answer.url().to_string();
    let mut body = match answer.json::<serde_json::Value>().await {
        Ok(serde_json::Value::Object(body)) => body,
        Ok(_) => return bad_gateway(format!("{url} answered no JSON object")),
        Err(e) => return bad_gateway(format!("cannot read the answer of {url}: {e}")),
    };
    let timeline = merge(marks, body.get("timeline"));
    body.insert("timeline".into(), json!(timeline));
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn bad_gateway(message: String) -> Response {
    (StatusCode::BAD_GATEWAY, Json(json!({"message": message}))).into_response()
}

/// The agent's answer as ours: status, type, offset header and the body as it streams.
fn pass_through(answer: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = answer.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let offset = answer.headers().get(OFFSET_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut response = (status, Body::from_stream(answer.bytes_stream())).into_response();
    let headers = response.headers_mut();
    if let Some(kind) = kind.and_then(|k| HeaderValue::from_str(&k).ok()) {
        headers.insert(header::CONTENT_TYPE, kind);
    }
    if let Some(offset) = offset.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(OFFSET_HEADER, offset);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
