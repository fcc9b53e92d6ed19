//! Plinth's own endpoints, `/v1/...`: what Plinth knows beyond Marathon's fields, where
//! strict Marathon clients do not look (`plinth_protocol::views::plinth`).
//! - `GET /v1/info`: the store, the registry, the agent timeout, the Marathon API version;
//! - `GET /v1/tasks[?app=/id]`: tasks with their agent, last message, health, readiness;
//! - `GET /v1/deployments`: deployments with why they wait (`blockedReason`);
//! - `GET /v1/queue`: waiting apps with readable reasons and their image pull;
//! - `GET /v1/apps/{id}`: an app's full last failure (the agent's reason, exit code);
//! - `GET /v1/events`: every event, Plinth's own (`image_pull_*`, `agent_lost_event`) too.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use plinth_protocol::views::plinth::{Info, PlinthApp, PlinthDeployment, PlinthQueue, PlinthTaskList};
use plinth_protocol::Timestamp;
use plinth_scheduler::CoreError;

use super::{events, parse_app_id, views, Params};
use crate::error::ApiError;
use crate::shell::Master;

pub fn routes() -> Router<Arc<Master>> {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/tasks", get(tasks))
        .route("/v1/deployments", get(deployments))
        .route("/v1/queue", get(queue))
        .route("/v1/apps/{*id}", get(app))
        .route("/v1/events", get(events::stream_all))
}

async fn info(State(master): State<Arc<Master>>) -> Json<Info> {
    Json(views::plinth_info(&master))
}

async fn tasks(State(master): State<Arc<Master>>, params: Params) -> Result<Response, ApiError> {
    let only = params.get("app").map(parse_app_id).transpose()?;
    master
        .render(move |core| {
            let mut tasks = Vec::new();
            for app in core.apps().filter(|a| only.as_ref().is_none_or(|id| &a.id == id)) {
                let ports = core.service_ports(&app.id);
                tasks.extend(core.app_tasks(&app.id).into_iter().map(|t| views::plinth_task(t, &ports)));
            }
            Ok(Json(PlinthTaskList { tasks }).into_response())
        })
        .await
}

async fn deployments(State(master): State<Arc<Master>>) -> Json<Vec<PlinthDeployment>> {
    let guard = master.read().await;
    Json(guard.core.deployments().map(|d| views::plinth_deployment(&guard.core, d)).collect())
}

async fn queue(State(master): State<Arc<Master>>) -> Json<PlinthQueue> {
    let guard = master.read().await;
    let core = &guard.core;
    let queue = core.queue(Timestamp::now()).iter().map(|e| views::plinth_queue_item(&master, core, e)).collect();
    Json(PlinthQueue { queue })
}

async fn app(State(master): State<Arc<Master>>, Path(raw): Path<String>) -> Result<Json<PlinthApp>, ApiError> {
    let id = parse_app_id(&raw)?;
    let guard = master.read().await;
    let app = guard.core.app(&id).ok_or_else(|| CoreError::AppNotFound(id.clone()))?;
    Ok(Json(PlinthApp { id: id.to_string(), last_task_failure: app.last_task_failure.clone() }))
}
