//! `/v2/tasks`: every task as JSON or as the `text/plain` endpoint list HAProxy bridges
//! read, and `POST /v2/tasks/delete`.
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use plinth_protocol::views::{DeploymentResult, TaskList};
use plinth_protocol::{NetworkMode, TaskId, TaskState};

use super::{views, Body, Params};
use crate::error::ApiError;
use crate::shell::Master;
use plinth_scheduler::{AppRecord, Core, KillTarget, Killed};

/// True when the client asks for the text form (`Accept: text/plain` without JSON).
pub fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/plain") && !accept.contains("application/json"))
}

pub fn text_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Marathon's endpoint text: per app and service port,
/// `app_id<TAB>servicePort<TAB>host:port<TAB>host:port...`. The app id is Marathon's
/// "safe path" (`/group/app` → `group_app`); only running tasks are listed.
pub fn endpoints_text<'a>(core: &Core, apps: impl Iterator<Item = &'a AppRecord>) -> String {
    let mut out = String::new();
    for app in apps {
        let name = app.id.task_prefix();
        let tasks: Vec<_> = core.app_tasks(&app.id).into_iter().filter(|t| t.is_running()).collect();
        let service_ports = core.service_ports(&app.id);
        if service_ports.is_empty() {
            let _ = write!(out, "{name}\t \t");
            for task in &tasks {
                let _ = write!(out, "{}\t", task.host);
            }
            out.push('\n');
            continue;
        }
        // On a bridge, a task has host ports only for the mappings with a `hostPort`.
        let bridge = match app.definition.network_mode() {
            NetworkMode::Bridge => app.definition.container_port_mappings(),
            _ => None,
        };
        for (index, service_port) in service_ports.iter().enumerate() {
            let _ = write!(out, "{name}\t{service_port}\t");
            let host_index = match bridge {
                Some(mappings) if mappings.get(index).is_some_and(|m| m.host_port.is_none()) => None,
                Some(mappings) => Some(mappings.iter().take(index).filter(|m| m.host_port.is_some()).count()),
                None => Some(index),
            };
            for task in &tasks {
                if let Some(port) = host_index.and_then(|i| task.ports.get(i)) {
                    let _ = write!(out, "{}:{port}\t", task.host);
                }
            }
            out.push('\n');
        }
    }
    out
}

/// `GET /v2/tasks[?status=running|staging]`.
pub async fn list(State(master): State<Arc<Master>>, params: Params, headers: HeaderMap) -> Result<Response, ApiError> {
    let text = wants_text(&headers);
    let statuses = params.all("status");
    let key = format!("tasks {text} {statuses:?}");
    master.render_shared(key, move |core| render_list(core, text, &statuses)).await
}

fn render_list(core: &Core, text: bool, statuses: &[String]) -> Result<Response, ApiError> {
    if text {
        return Ok(text_response(endpoints_text(core, core.apps())));
    }
    let wanted = |state: TaskState| {
        statuses.is_empty()
            || statuses.iter().any(|s| match s.to_ascii_lowercase().as_str() {
                "running" => state == TaskState::TaskRunning,
                "staging" => matches!(state, TaskState::TaskStaging | TaskState::TaskStarting),
                "killing" => state == TaskState::TaskKilling,
                other => state.as_str().eq_ignore_ascii_case(other),
            })
    };
    let mut tasks = Vec::new();
    for app in core.apps() {
        let ports = core.service_ports(&app.id);
        for task in core.app_tasks(&app.id) {
            if wanted(task.visible_state()) {
                tasks.push(views::task(task, &ports));
            }
        }
    }
    Ok(Json(TaskList { tasks }).into_response())
}

#[derive(Deserialize)]
struct DeleteRequest {
    ids: Vec<String>,
}

/// `POST /v2/tasks/delete` with `{"ids":[...]}` (`scale`, `force`).
pub async fn delete_many(State(master): State<Arc<Master>>, params: Params, body: Body) -> Result<Response, ApiError> {
    let request: DeleteRequest = body.json()?;
    let scale = params.flag("scale")?;
    let force = params.flag("force")?;
    let ids: Vec<TaskId> = request.ids.iter().map(|s| TaskId::new(s.as_str())).collect();
    let killed = master.command(|core, now| core.kill_tasks(KillTarget::Tasks(ids), scale, now, force)).await?;
    tracing::info!(killed = killed.tasks.len(), scale, "tasks killed");
    if scale {
        return Ok(Json(scaled(&killed)).into_response());
    }
    let guard = master.read().await;
    let tasks = killed.tasks.iter().map(|t| views::task(t, &guard.core.service_ports(&t.app_id))).collect();
    Ok(Json(TaskList { tasks }).into_response())
}

/// The deployment a `scale=true` kill started (a finished one when none was needed).
fn scaled(killed: &Killed) -> DeploymentResult {
    match &killed.deployment {
        Some((deployment, version)) => views::deployment_result(deployment, version),
        None => views::no_change_result(),
    }
}

/// Marathon answers a kill with the killed tasks, or with `scale=true` the deployment.
pub fn killed_response(killed: Killed, service_ports: &[u16], scale: bool) -> Response {
    if scale {
        return Json(scaled(&killed)).into_response();
    }
    let tasks = killed.tasks.iter().map(|t| views::task(t, service_ports)).collect();
    Json(TaskList { tasks }).into_response()
}
