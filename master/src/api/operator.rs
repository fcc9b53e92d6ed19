//! Operator views in Mesos' JSON shapes: `/master/slaves`, `/master/state`, and node
//! drain (`POST|DELETE /master/slaves/{id}/drain`).
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use plinth_protocol::{AgentId, Resources};

use crate::error::ApiError;
use crate::shell::Master;
use plinth_scheduler::{AgentState, Core, TaskRecord};

fn resources_json(r: &Resources) -> Value {
    json!({"cpus": r.cpus, "mem": r.mem, "disk": r.disk, "gpus": 0.0, "ports": r.ports.to_string()})
}

fn free(agent: &AgentState) -> Resources {
    let mut free = agent.record.resources.clone();
    free.subtract_scalars(&agent.used);
    for (begin, end) in agent.used.ports.ranges() {
        for port in *begin..=*end {
            free.ports.remove(port);
        }
    }
    free
}

/// One agent as Mesos' `/master/slaves` shows it, plus `agent_url` for `plinth logs`.
pub fn slave_json(core: &Core, agent: &AgentState) -> Value {
    let r = &agent.record;
    json!({
        "id": r.id,
        "hostname": r.hostname,
        "pid": format!("slave(1)@{}:{}", r.advertise_ip, r.http_port),
        "port": r.http_port,
        "resources": resources_json(&r.resources),
        "used_resources": resources_json(&agent.used),
        // Offers live for one allocation round inside the core, so nothing stays offered.
        "offered_resources": resources_json(&Resources::default()),
        "reserved_resources": {},
        "unreserved_resources": resources_json(&r.resources),
        "free_resources": resources_json(&free(agent)),
        "attributes": r.attributes,
        "active": r.active,
        "deactivated": !r.active,
        "draining": r.draining,
        // Draining and every task moved away: safe to power off.
        "drained": core.is_drained(&r.id),
        "registered_time": r.registered_at.millis() as f64 / 1000.0,
        "last_seen_time": r.last_seen.millis() as f64 / 1000.0,
        "version": r.version,
        "capabilities": [],
        "agent_url": format!("http://{}:{}", r.advertise_ip, r.http_port),
    })
}

/// A task as Mesos' state endpoint shows it.
fn mesos_task_json(task: &TaskRecord, framework_id: &str) -> Value {
    let state = task.visible_state();
    json!({
        "id": task.id,
        "name": task.app_id.as_str().trim_start_matches('/').split('/').rev().collect::<Vec<_>>().join("."),
        "framework_id": framework_id,
        "executor_id": "",
        "slave_id": task.agent_id,
        "agent_id": task.agent_id,
        "state": state,
        "resources": resources_json(&task.resources),
        "statuses": [{"state": state, "timestamp": task.updated_at.millis() as f64 / 1000.0}],
        "labels": [],
        "discovery": {"ports": {"ports": task.ports.iter().map(|p| json!({"number": p, "protocol": "tcp"})).collect::<Vec<_>>()}},
        "app_id": task.app_id,
        "version": task.version,
    })
}

/// `GET /master/slaves`.
pub async fn slaves(State(master): State<Arc<Master>>) -> Result<Response, ApiError> {
    master
        .render(|core| {
            let slaves: Vec<Value> = core.agents().map(|a| slave_json(core, a)).collect();
            Ok(Json(json!({"slaves": slaves, "recovered_slaves": []})).into_response())
        })
        .await
}

fn state_json(master: &Master, core: &Core) -> Value {
    let slaves: Vec<Value> = core.agents().map(|a| slave_json(core, a)).collect();
    let active = core.agents().filter(|a| a.record.active).count();
    let (tasks, completed): (Vec<&TaskRecord>, Vec<&TaskRecord>) = core.tasks().partition(|t| !t.state.is_terminal());
    let pid = format!("master@{}", master.leader);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "build_version": concat!("plinth ", env!("CARGO_PKG_VERSION")),
        "id": master.framework_id,
        "pid": pid,
        "hostname": master.config.hostname,
        "leader": pid,
        "leader_info": {"hostname": master.config.hostname, "port": master.leader.rsplit(':').next().and_then(|p| p.parse::<u16>().ok())},
        "start_time": master.started_at.millis() as f64 / 1000.0,
        "elected_time": master.started_at.millis() as f64 / 1000.0,
        "activated_slaves": active,
        "deactivated_slaves": slaves.len() - active,
        "slaves": slaves,
        "frameworks": [{
            "id": master.framework_id,
            "name": "marathon",
            "hostname": master.config.hostname,
            "active": true,
            "connected": true,
            "webui_url": format!("http://{}", master.leader),
            "tasks": tasks.iter().map(|t| mesos_task_json(t, &master.framework_id)).collect::<Vec<_>>(),
            "completed_tasks": completed.iter().map(|t| mesos_task_json(t, &master.framework_id)).collect::<Vec<_>>(),
        }],
        "completed_frameworks": [],
        "unregistered_frameworks": [],
    })
}

/// `GET /master/state`.
pub async fn state(State(master): State<Arc<Master>>) -> Result<Response, ApiError> {
    let shared = master.clone();
    master.render(move |core| Ok(Json(state_json(&shared, core)).into_response())).await
}

async fn set_draining(master: &Master, id: String, draining: bool) -> Result<Response, ApiError> {
    let agent = AgentId::new(id);
    master.command(|core, _| core.set_draining(&agent, draining)).await?;
    tracing::info!(node_id = %agent, draining, "agent drain changed");
    let guard = master.read().await;
    let body = guard.core.agent(&agent).map(|a| slave_json(&guard.core, a)).unwrap_or(Value::Null);
    Ok(Json(body).into_response())
}

/// `POST /master/slaves/{id}/drain`: place no new tasks on the agent.
pub async fn drain(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_draining(&master, id, true).await
}

/// `DELETE /master/slaves/{id}/drain`: accept new tasks again.
pub async fn undrain(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_draining(&master, id, false).await
}
