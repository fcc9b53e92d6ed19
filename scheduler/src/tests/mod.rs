//! Exact-decision tests of the scheduler core, one file per concern: inputs in, records and
//! events out. The helpers here play the shell (ids, clock, agents).
use serde_json::json;

use plinth_protocol::agent::{Registration, StatusUpdate};
use plinth_protocol::{AgentId, AppDefinition, AppId, Resources, TaskId, TaskState, Timestamp};

use crate::*;

mod agents;
mod commands;
mod deployments;
mod groups;
mod health;
mod liveness;
mod placement;
mod ports;
mod queries;
mod services;
mod supervision;

pub(crate) fn core() -> Core {
    let mut n: u128 = 0;
    Core::new(
        CoreConfig { agent_timeout_ms: 10_000, ..CoreConfig::default() },
        Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        }),
    )
}

pub(crate) fn app(value: serde_json::Value) -> AppDefinition {
    let mut def = AppDefinition::from_value(value).expect("valid json");
    def.normalize();
    def.validate().expect("valid app");
    def
}

/// An agent with room for every test app.
pub(crate) const ROOMY: &str = "cpus:4;mem:4096;disk:0;ports:[31000-31010]";

/// An agent with 2 cpus and 1 GB.
pub(crate) const SMALL: &str = "cpus:2;mem:1024;disk:0;ports:[31000-31010]";

pub(crate) fn t(ms: i64) -> Timestamp {
    Timestamp(1_700_000_000_000 + ms)
}

pub(crate) fn register(core: &mut Core, name: &str, resources: &str, attributes: &str, now: Timestamp) -> AgentId {
    core.register_agent(
        Registration {
            agent_id: None,
            hostname: name.into(),
            advertise_ip: format!("10.0.0.{}", name.len()),
            http_port: 5051,
            resources: Resources::parse(resources).unwrap(),
            attributes: plinth_protocol::parse_attributes(attributes).unwrap(),
            last_generation: 0,
            tasks: vec![],
            version: "test".into(),
        },
        now,
    )
}

pub(crate) fn report(core: &mut Core, task: &TaskId, state: TaskState, now: Timestamp) -> Vec<uuid::Uuid> {
    let record = core.task(task).cloned().expect("task exists");
    core.apply_status_updates(
        &record.agent_id,
        vec![StatusUpdate::new(uuid::Uuid::new_v4(), task.clone(), record.app_id.clone(), state, now.to_iso())],
        now,
    )
}

pub(crate) fn run_all(core: &mut Core, app: &str, now: Timestamp) {
    let ids: Vec<TaskId> = core
        .app_tasks(&AppId::parse(app).unwrap())
        .iter()
        .filter(|t| t.state != TaskState::TaskRunning && !t.kill_requested)
        .map(|t| t.id.clone())
        .collect();
    for id in ids {
        report(core, &id, TaskState::TaskRunning, now);
    }
}

pub(crate) fn kill_confirm(core: &mut Core, now: Timestamp) {
    let ids: Vec<TaskId> = core.tasks().filter(|t| t.kill_requested).map(|t| t.id.clone()).collect();
    for id in ids {
        report(core, &id, TaskState::TaskKilled, now);
    }
}

/// A core with one roomy agent on which the app's tasks were launched and reported running.
pub(crate) fn running(def: serde_json::Value) -> (Core, AppId) {
    let mut c = core();
    register(&mut c, "a", ROOMY, "", t(0));
    let id = AppId::parse(def["id"].as_str().expect("test apps have an id")).unwrap();
    c.create_app(app(def), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, id.as_str(), t(3));
    (c, id)
}

pub(crate) fn event_types(core: &mut Core) -> Vec<String> {
    core.take_changes().events.into_iter().map(|e| e.event_type).collect()
}

pub(crate) fn health_update(core: &mut Core, task: &TaskId, healthy: bool, failures: u64, now: Timestamp) {
    let record = core.task(task).cloned().expect("task exists");
    let mut extra = std::collections::BTreeMap::new();
    extra.insert(
        "healthCheckResults".to_string(),
        json!([{"alive": healthy, "consecutiveFailures": failures, "lastFailureCause": if healthy { None } else { Some("HTTP 500") }, "taskId": task}]),
    );
    core.apply_status_updates(
        &record.agent_id,
        vec![StatusUpdate {
            healthy: Some(healthy),
            extra,
            ..StatusUpdate::new(
                uuid::Uuid::new_v4(),
                task.clone(),
                record.app_id.clone(),
                TaskState::TaskRunning,
                now.to_iso(),
            )
        }],
        now,
    );
}

/// What the store would hold of the core (apps, versions, tasks, agents, deployments), for
/// restart tests.
pub(crate) fn snapshot_of(c: &Core) -> Snapshot {
    Snapshot {
        apps: c.apps().cloned().collect(),
        app_versions: c
            .apps()
            .flat_map(|x| c.app_versions(&x.id).unwrap().into_iter().map(move |v| (x.id.clone(), v)))
            .map(|(app, v)| (app.clone(), v.clone(), c.app_version(&app, &v).unwrap().clone()))
            .collect(),
        tasks: c.tasks().cloned().collect(),
        agents: c.agents().map(|x| x.record.clone()).collect(),
        deployments: c.deployments().cloned().collect(),
        groups: Vec::new(),
    }
}
