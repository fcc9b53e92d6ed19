//! Exact-decision tests of the scheduler core: inputs in, records and events out.
use serde_json::json;

use plinth_protocol::agent::{Registration, StatusUpdate, SyncRequest, TaskReport};
use plinth_protocol::{AgentId, AppDefinition, AppId, Resources, TaskId, TaskState, Timestamp};

use super::*;

fn core() -> Core {
    let mut n: u128 = 0;
    Core::new(
        CoreConfig { agent_timeout_ms: 10_000, ..CoreConfig::default() },
        Box::new(move || {
            n += 1;
            uuid::Uuid::from_u128(n)
        }),
    )
}

fn app(value: serde_json::Value) -> AppDefinition {
    let mut def = AppDefinition::from_value(value).expect("valid json");
    def.normalize();
    def.validate().expect("valid app");
    def
}

/// An agent with room for every test app.
const ROOMY: &str = "cpus:4;mem:4096;disk:0;ports:[31000-31010]";
/// An agent with 2 cpus and 1 GB.
const SMALL: &str = "cpus:2;mem:1024;disk:0;ports:[31000-31010]";

fn t(ms: i64) -> Timestamp {
    Timestamp(1_700_000_000_000 + ms)
}

fn register(core: &mut Core, name: &str, resources: &str, attributes: &str, now: Timestamp) -> AgentId {
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

fn report(core: &mut Core, task: &TaskId, state: TaskState, now: Timestamp) -> Vec<uuid::Uuid> {
    let record = core.task(task).cloned().expect("task exists");
    core.apply_status_updates(
        &record.agent_id,
        vec![StatusUpdate::new(uuid::Uuid::new_v4(), task.clone(), record.app_id.clone(), state, now.to_iso())],
        now,
    )
}

fn run_all(core: &mut Core, app: &str, now: Timestamp) {
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

fn kill_confirm(core: &mut Core, now: Timestamp) {
    let ids: Vec<TaskId> = core.tasks().filter(|t| t.kill_requested).map(|t| t.id.clone()).collect();
    for id in ids {
        report(core, &id, TaskState::TaskKilled, now);
    }
}

/// A core with one roomy agent on which the app's tasks were launched and reported running.
fn running(def: serde_json::Value) -> (Core, AppId) {
    let mut c = core();
    register(&mut c, "a", ROOMY, "", t(0));
    let id = AppId::parse(def["id"].as_str().expect("test apps have an id")).unwrap();
    c.create_app(app(def), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, id.as_str(), t(3));
    (c, id)
}

fn event_types(core: &mut Core) -> Vec<String> {
    core.take_changes().events.into_iter().map(|e| e.event_type).collect()
}

#[test]
fn a_new_app_is_placed_across_agents_and_its_deployment_succeeds_when_running() {
    let mut c = core();
    let a = register(&mut c, "a", SMALL, "", t(0));
    let b = register(&mut c, "bb", SMALL, "", t(0));
    let (record, deployment) =
        c.create_app(app(json!({"id": "web", "cmd": "serve", "instances": 2, "cpus": 0.5})), t(1)).unwrap();
    assert_eq!(record.definition.port_definitions.as_ref().unwrap()[0].port, 10_000, "service port assigned");
    c.tick(t(2));
    let tasks = c.app_tasks(&AppId::parse("/web").unwrap());
    assert_eq!(tasks.len(), 2);
    let agents: std::collections::HashSet<_> = tasks.iter().map(|t| t.agent_id.clone()).collect();
    assert_eq!(agents.len(), 2, "spread over both agents");
    assert!(tasks.iter().all(|t| t.state == TaskState::TaskStaging && t.ports == vec![31000]));
    let desired = c.desired_state(&a).unwrap();
    assert_eq!(desired.tasks.len(), 1);
    assert!(desired.generation >= 2);
    assert_eq!(c.desired_state(&b).unwrap().tasks.len(), 1);
    assert!(c.deployment(&deployment).is_some());
    run_all(&mut c, "/web", t(3));
    c.tick(t(4));
    c.tick(t(5));
    assert!(c.deployment(&deployment).is_none(), "deployment finished");
    let events = event_types(&mut c);
    assert!(events.contains(&"deployment_success".to_string()), "{events:?}");
    assert!(events.contains(&"status_update_event".to_string()));
}

#[test]
fn an_app_too_big_for_any_agent_waits_and_the_queue_says_why() {
    let mut c = core();
    register(&mut c, "a", SMALL, "", t(0));
    c.create_app(app(json!({"id": "big", "cmd": "x", "mem": 100000})), t(1)).unwrap();
    c.tick(t(2));
    assert!(c.app_tasks(&AppId::parse("/big").unwrap()).is_empty());
    let queue = c.queue(t(3));
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].count, 1);
    let (declined, message) = queue[0].stats.last_round.get("InsufficientMemory").cloned().unwrap();
    assert_eq!(declined, 1);
    assert!(message.contains("insufficient mem: needs 100000 MB, agent has 1024 MB free"), "{message}");
    let d = c.deployments().next().unwrap();
    assert!(d.blocked_reason.as_deref().unwrap().contains("insufficient mem"));
}

#[test]
fn scaling_down_kills_the_youngest_tasks_first() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31010]", "", t(0));
    c.create_app(app(json!({"id": "s", "cmd": "x", "instances": 1, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/s", t(3));
    c.tick(t(3));
    let oldest = c.app_tasks(&AppId::parse("/s").unwrap())[0].id.clone();
    let mut def = c.app(&AppId::parse("/s").unwrap()).unwrap().definition.clone();
    def.instances = 3;
    let outcome = c.put_app(def.clone(), t(4), false).unwrap();
    assert!(!outcome.created);
    c.tick(t(5));
    assert_eq!(c.app_tasks(&AppId::parse("/s").unwrap()).len(), 3);
    run_all(&mut c, "/s", t(6));
    c.tick(t(7));
    def.instances = 1;
    c.put_app(def, t(8), false).unwrap();
    c.tick(t(9));
    let live: Vec<_> = c.app_tasks(&AppId::parse("/s").unwrap()).into_iter().filter(|t| !t.kill_requested).collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, oldest, "the oldest task survives a scale down");
    // A scale-only change does not change the config version: no replacement.
    assert_eq!(live[0].version, c.app(&AppId::parse("/s").unwrap()).unwrap().config_version);
}

#[test]
fn a_new_version_rolls_without_dropping_below_capacity() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31100]", "", t(0));
    let id = AppId::parse("/r").unwrap();
    c.create_app(app(json!({"id": "r", "cmd": "v1", "instances": 2, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/r", t(3));
    c.tick(t(4));
    assert!(c.deployments().next().is_none());
    let old: Vec<TaskId> = c.app_tasks(&id).iter().map(|t| t.id.clone()).collect();
    let mut def = c.app(&id).unwrap().definition.clone();
    def.cmd = Some("v2".into());
    c.put_app(def, t(5), false).unwrap();
    c.tick(t(6));
    // Default strategy (1.0/1.0): two new tasks start, the old ones keep serving.
    let tasks = c.app_tasks(&id);
    assert_eq!(tasks.len(), 4);
    assert!(old.iter().all(|o| c.task(o).is_some_and(|t| !t.kill_requested)));
    run_all(&mut c, "/r", t(7));
    c.tick(t(8));
    assert!(old.iter().all(|o| c.task(o).is_some_and(|t| t.kill_requested)), "old killed once new are ready");
    kill_confirm(&mut c, t(9));
    c.tick(t(10));
    assert_eq!(c.app_tasks(&id).len(), 2);
    assert!(c.deployments().next().is_none());
}

#[test]
fn min_health_half_and_no_over_capacity_replaces_in_halves() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31100]", "", t(0));
    let id = AppId::parse("/h").unwrap();
    c.create_app(
        app(json!({"id": "h", "cmd": "v1", "instances": 4, "cpus": 0.1,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}})),
        t(1),
    )
    .unwrap();
    c.tick(t(2));
    run_all(&mut c, "/h", t(3));
    c.tick(t(4));
    let mut def = c.app(&id).unwrap().definition.clone();
    def.cmd = Some("v2".into());
    c.put_app(def, t(5), false).unwrap();
    for step in 0..20 {
        c.tick(t(10 + step * 10));
        let tasks = c.app_tasks(&id);
        let running = tasks.iter().filter(|t| t.is_running()).count();
        assert!(tasks.len() <= 4, "never above instances x (1 + 0)");
        assert!(running >= 2, "never below 2 healthy (step {step})");
        run_all(&mut c, "/h", t(11 + step * 10));
        kill_confirm(&mut c, t(12 + step * 10));
    }
    let version = c.app(&id).unwrap().config_version.clone();
    assert!(c.app_tasks(&id).iter().all(|t| t.version == version && t.is_running()));
    assert_eq!(c.app_tasks(&id).len(), 4);
}

#[test]
fn a_lost_agents_tasks_are_replaced_and_its_survivors_are_not_adopted_on_return() {
    let mut c = core();
    let a = register(&mut c, "a", SMALL, "", t(0));
    let b = register(&mut c, "bb", SMALL, "", t(0));
    let id = AppId::parse("/l").unwrap();
    c.create_app(app(json!({"id": "l", "cmd": "x", "instances": 2, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/l", t(3));
    let on_a: Vec<TaskId> = c.app_tasks(&id).iter().filter(|x| x.agent_id == a).map(|x| x.id.clone()).collect();
    assert_eq!(on_a.len(), 1);
    // b keeps syncing, a goes silent.
    let gen_b = c.desired_state(&b).unwrap().generation;
    c.sync_agent(&SyncRequest { agent_id: b.clone(), generation: gen_b, tasks: vec![], wait_ms: 0 }, t(9_000));
    c.take_changes();
    c.tick(t(10_500));
    assert!(!c.agent(&a).unwrap().record.active);
    assert!(c.task(&on_a[0]).is_none(), "lost task removed");
    let changes = c.take_changes();
    assert!(changes.events.iter().any(|e| e.payload["taskStatus"] == "TASK_LOST"));
    c.tick(t(10_600));
    let tasks = c.app_tasks(&id);
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|x| x.agent_id == b), "replacement placed on the surviving agent");
    // a comes back: its sync is refused until it re-registers, and its old task is not
    // adopted (not in its desired state, so the agent kills it).
    let resp = c.sync_agent(&SyncRequest { agent_id: a.clone(), generation: 5, tasks: vec![], wait_ms: 0 }, t(11_000));
    assert!(resp.reregister);
    c.register_agent(
        Registration {
            agent_id: Some(a.clone()),
            hostname: "a".into(),
            advertise_ip: "10.0.0.1".into(),
            http_port: 5051,
            resources: Resources::parse(SMALL).unwrap(),
            attributes: Default::default(),
            last_generation: 5,
            tasks: vec![TaskReport {
                task_id: on_a[0].clone(),
                app_id: id.clone(),
                version: "v".into(),
                state: TaskState::TaskRunning,
                host_ports: vec![31000],
                resources: None,
                started_at: None,
            }],
            version: String::new(),
        },
        t(11_001),
    );
    let desired = c.desired_state(&a).unwrap();
    assert!(desired.generation > 5, "generation continues above the agent's");
    assert!(desired.tasks.is_empty(), "the surplus task is not adopted");
    c.tick(t(11_100));
    assert_eq!(c.app_tasks(&id).len(), 2, "never above the target");
}

#[test]
fn a_restarted_master_adopts_running_tasks() {
    let mut c = core();
    let a = register(&mut c, "a", SMALL, "", t(0));
    let id = AppId::parse("/p").unwrap();
    c.create_app(app(json!({"id": "p", "cmd": "x", "instances": 1, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/p", t(3));
    let task = c.app_tasks(&id)[0].clone();
    let snapshot = Snapshot {
        apps: c.apps().cloned().collect(),
        app_versions: c
            .apps()
            .flat_map(|x| c.app_versions(&x.id).unwrap().into_iter().map(move |v| (x.id.clone(), v)))
            .map(|(app, v)| (app.clone(), v.clone(), c.app_version(&app, &v).unwrap().clone()))
            .collect(),
        tasks: c.tasks().cloned().collect(),
        agents: c.agents().map(|x| x.record.clone()).collect(),
        deployments: c.deployments().cloned().collect(),
    };
    let mut restored = Core::restore(CoreConfig::default(), Box::new(uuid::Uuid::new_v4), snapshot, t(100));
    let resp =
        restored.sync_agent(&SyncRequest { agent_id: a.clone(), generation: 3, tasks: vec![], wait_ms: 0 }, t(101));
    assert!(resp.reregister, "an agent unknown to this process must re-register");
    restored.register_agent(
        Registration {
            agent_id: Some(a.clone()),
            hostname: "a".into(),
            advertise_ip: "10.0.0.1".into(),
            http_port: 5051,
            resources: Resources::parse(SMALL).unwrap(),
            attributes: Default::default(),
            last_generation: 3,
            tasks: vec![TaskReport {
                task_id: task.id.clone(),
                app_id: id.clone(),
                version: task.version.clone(),
                state: TaskState::TaskRunning,
                host_ports: task.ports.clone(),
                resources: None,
                started_at: None,
            }],
            version: String::new(),
        },
        t(102),
    );
    restored.tick(t(103));
    let tasks = restored.app_tasks(&id);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, task.id, "same task adopted, none launched");
    assert!(!tasks[0].kill_requested);
    let free = restored.agent(&a).unwrap().free();
    assert!((free.cpus - 1.9).abs() < 1e-9, "resources of the adopted task are charged");
}

#[test]
fn locked_apps_answer_409_unless_forced_and_delete_always_wins() {
    let mut c = core();
    c.create_app(app(json!({"id": "k", "cmd": "x", "mem": 100000})), t(1)).unwrap();
    let mut def = c.app(&AppId::parse("/k").unwrap()).unwrap().definition.clone();
    def.instances = 2;
    assert!(matches!(c.put_app(def.clone(), t(2), false), Err(CoreError::AppLocked { .. })));
    assert!(c.put_app(def, t(3), true).is_ok());
    assert_eq!(c.deployments().count(), 1, "the forced update superseded the old deployment");
    c.delete_app(&AppId::parse("/k").unwrap(), t(4)).unwrap();
    assert!(c.app(&AppId::parse("/k").unwrap()).is_none());
    c.tick(t(5));
    assert_eq!(c.deployments().count(), 0, "stop deployment done: no tasks were running");
    assert!(matches!(c.delete_app(&AppId::parse("/k").unwrap(), t(6)), Err(CoreError::AppNotFound(_))));
    assert!(matches!(
        c.create_app(app(json!({"id": "k2", "cmd": "x"})), t(7))
            .and_then(|_| c.create_app(app(json!({"id": "k2", "cmd": "y"})), t(8))),
        Err(CoreError::AppExists(_))
    ));
}

#[test]
fn failed_tasks_are_replaced_after_backoff_and_duplicate_updates_apply_once() {
    let mut c = core();
    register(&mut c, "a", SMALL, "", t(0));
    let id = AppId::parse("/f").unwrap();
    c.create_app(app(json!({"id": "f", "cmd": "x", "cpus": 0.1, "backoffSeconds": 2, "backoffFactor": 2})), t(1))
        .unwrap();
    c.tick(t(2));
    let task = c.app_tasks(&id)[0].clone();
    let update = StatusUpdate {
        message: Some("Command exited with status 3".into()),
        exit_code: Some(3),
        ..StatusUpdate::new(
            uuid::Uuid::from_u128(777),
            task.id.clone(),
            id.clone(),
            TaskState::TaskFailed,
            t(3).to_iso(),
        )
    };
    let acks = c.apply_status_updates(&task.agent_id, vec![update.clone()], t(3));
    assert_eq!(acks, vec![update.update_id]);
    assert_eq!(c.apply_status_updates(&task.agent_id, vec![update.clone()], t(4)), vec![update.update_id]);
    assert_eq!(c.app(&id).unwrap().backoff.failures, 1, "applied once");
    c.tick(t(1_000));
    assert!(c.app_tasks(&id).is_empty(), "still in backoff (2 s)");
    assert!(c.queue(t(1_000))[0].delay_left_ms > 0);
    c.tick(t(2_100));
    assert_eq!(c.app_tasks(&id).len(), 1, "replaced after the delay");
    assert!(c.app(&id).unwrap().last_task_failure.is_some());
}

#[test]
fn unique_hostname_places_one_per_agent_and_the_queue_names_the_constraint() {
    let mut c = core();
    for name in ["a", "bb", "ccc"] {
        register(&mut c, name, ROOMY, "", t(0));
    }
    let id = AppId::parse("/u").unwrap();
    c.create_app(
        app(json!({"id": "u", "cmd": "x", "instances": 6, "cpus": 0.1, "constraints": [["hostname", "UNIQUE"]]})),
        t(1),
    )
    .unwrap();
    c.tick(t(2));
    assert_eq!(c.app_tasks(&id).len(), 3);
    let queue = c.queue(t(3));
    assert_eq!(queue[0].count, 3);
    let (_, message) = queue[0].stats.last_round.get("UnfulfilledConstraint").cloned().unwrap();
    assert_eq!(message, "constraint hostname UNIQUE");
    register(&mut c, "dddd", ROOMY, "", t(4));
    c.tick(t(5));
    assert_eq!(c.app_tasks(&id).len(), 4, "one more runs on the new agent");
}

#[test]
fn like_constraint_waits_for_a_matching_agent() {
    let mut c = core();
    register(&mut c, "a", ROOMY, "rack:r1", t(0));
    let id = AppId::parse("/rack2").unwrap();
    c.create_app(app(json!({"id": "rack2", "cmd": "x", "cpus": 0.1, "constraints": [["rack", "LIKE", "r2"]]})), t(1))
        .unwrap();
    c.tick(t(2));
    assert!(c.app_tasks(&id).is_empty());
    let r2 = register(&mut c, "bb", ROOMY, "rack:r2", t(3));
    c.tick(t(4));
    assert_eq!(c.app_tasks(&id)[0].agent_id, r2);
}

#[test]
fn kill_with_scale_lowers_instances_and_plain_kill_is_replaced() {
    let (mut c, id) = running(json!({"id": "k", "cmd": "x", "instances": 2, "cpus": 0.1}));
    c.tick(t(4));
    let victim = c.app_tasks(&id)[0].id.clone();
    let killed = c.kill_tasks(KillTarget::Tasks(vec![victim.clone()]), false, t(5), false).unwrap();
    assert_eq!(killed.tasks.len(), 1);
    c.tick(t(6));
    assert_eq!(c.app_tasks(&id).iter().filter(|t| !t.kill_requested).count(), 2, "replacement launched");
    kill_confirm(&mut c, t(7));
    run_all(&mut c, "/k", t(8));
    c.tick(t(9));
    let victim = c.app_tasks(&id)[0].id.clone();
    let killed = c.kill_tasks(KillTarget::Tasks(vec![victim]), true, t(10), false).unwrap();
    assert!(killed.deployment.is_some());
    assert_eq!(c.app(&id).unwrap().definition.instances, 1);
    c.tick(t(11));
    assert_eq!(c.app_tasks(&id).iter().filter(|t| !t.kill_requested).count(), 1);
    assert!(matches!(
        c.kill_tasks(KillTarget::Tasks(vec![TaskId::new("nope")]), false, t(12), false),
        Err(CoreError::TaskNotFound(_))
    ));
}

#[test]
fn cancelling_an_upgrade_rolls_back_and_keeps_the_old_tasks() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31100]", "", t(0));
    let id = AppId::parse("/c").unwrap();
    c.create_app(app(json!({"id": "c", "cmd": "v1", "instances": 2, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/c", t(3));
    c.tick(t(4));
    let old: Vec<TaskId> = c.app_tasks(&id).iter().map(|t| t.id.clone()).collect();
    let mut def = c.app(&id).unwrap().definition.clone();
    def.cmd = Some("v2-never-healthy".into());
    let outcome = c.put_app(def, t(5), false).unwrap();
    c.tick(t(6));
    assert_eq!(c.app_tasks(&id).len(), 4);
    let rollback = c.cancel_deployment(&outcome.deployment, false, t(7)).unwrap();
    assert!(rollback.is_some());
    c.tick(t(8));
    assert_eq!(c.app(&id).unwrap().definition.cmd.as_deref(), Some("v1"));
    kill_confirm(&mut c, t(9));
    c.tick(t(10));
    let left: Vec<TaskId> = c.app_tasks(&id).iter().map(|t| t.id.clone()).collect();
    assert_eq!(left.len(), 2);
    assert!(old.iter().all(|o| left.contains(o)), "the old tasks kept serving");
}

fn health_update(core: &mut Core, task: &TaskId, healthy: bool, failures: u64, now: Timestamp) {
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

#[test]
fn a_task_failing_its_health_check_max_times_is_killed_and_replaced() {
    let (mut c, id) = running(json!({"id": "hc", "cmd": "x", "cpus": 0.1, "instances": 1,
        "healthChecks": [{"protocol": "HTTP", "path": "/", "maxConsecutiveFailures": 2}]}));
    let task = c.app_tasks(&id)[0].id.clone();
    c.tick(t(4));
    assert_eq!(c.deployments().count(), 1, "not done until healthy");
    health_update(&mut c, &task, true, 0, t(5));
    c.tick(t(6));
    assert_eq!(c.deployments().count(), 0, "healthy: deployment done");
    c.take_changes();
    health_update(&mut c, &task, false, 1, t(7));
    assert!(!c.task(&task).unwrap().kill_requested, "one failure of two allowed");
    health_update(&mut c, &task, false, 2, t(8));
    assert!(c.task(&task).unwrap().kill_requested, "killed at maxConsecutiveFailures");
    let events = event_types(&mut c);
    assert_eq!(events.iter().filter(|e| *e == "failed_health_check_event").count(), 2);
    assert!(events.contains(&"unhealthy_task_kill_event".to_string()));
    assert!(events.contains(&"health_status_changed_event".to_string()));
    c.tick(t(9));
    assert_eq!(c.app_tasks(&id).iter().filter(|t| !t.kill_requested).count(), 1, "replacement launched");
}

#[test]
fn zero_max_failures_never_kills() {
    let (mut c, id) = running(json!({"id": "hc0", "cmd": "x", "cpus": 0.1,
        "healthChecks": [{"protocol": "TCP", "maxConsecutiveFailures": 0}]}));
    let task = c.app_tasks(&id)[0].id.clone();
    health_update(&mut c, &task, false, 50, t(4));
    assert!(!c.task(&task).unwrap().kill_requested);
}

#[test]
fn deployments_wait_for_readiness_checks() {
    let (mut c, id) = running(json!({"id": "ready", "cmd": "x", "cpus": 0.1,
        "readinessChecks": [{"name": "r", "path": "/ready"}]}));
    c.tick(t(4));
    assert_eq!(c.deployments().count(), 1, "running but not ready");
    let task = c.app_tasks(&id)[0].clone();
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("ready".to_string(), json!(true));
    c.apply_status_updates(
        &task.agent_id,
        vec![StatusUpdate {
            extra,
            ..StatusUpdate::new(
                uuid::Uuid::new_v4(),
                task.id.clone(),
                id.clone(),
                TaskState::TaskRunning,
                t(5).to_iso(),
            )
        }],
        t(5),
    );
    c.tick(t(6));
    assert_eq!(c.deployments().count(), 0);
}

#[test]
fn unreachable_tasks_are_replaced_after_inactive_and_expunged_later() {
    let mut c = core();
    let a = register(&mut c, "a", ROOMY, "", t(0));
    let b = register(&mut c, "bb", ROOMY, "", t(0));
    let id = AppId::parse("/un").unwrap();
    c.create_app(
        app(json!({"id": "un", "cmd": "x", "cpus": 0.1, "instances": 1,
        "unreachableStrategy": {"inactiveAfterSeconds": 5, "expungeAfterSeconds": 20}})),
        t(1),
    )
    .unwrap();
    c.tick(t(2));
    run_all(&mut c, "/un", t(3));
    c.tick(t(4));
    let task = c.app_tasks(&id)[0].clone();
    // The task's agent goes silent; the other keeps syncing.
    let alive = if task.agent_id == a { b.clone() } else { a.clone() };
    let heartbeat = |c: &mut Core, now| {
        let g = c.desired_state(&alive).unwrap().generation;
        c.sync_agent(&SyncRequest { agent_id: alive.clone(), generation: g, tasks: vec![], wait_ms: 0 }, now);
    };
    heartbeat(&mut c, t(9_000));
    c.tick(t(10_500));
    assert_eq!(c.task(&task.id).unwrap().state, TaskState::TaskUnreachable);
    assert_eq!(c.app_tasks(&id).len(), 1, "no replacement before inactiveAfterSeconds");
    heartbeat(&mut c, t(15_000));
    c.tick(t(15_600));
    let tasks = c.app_tasks(&id);
    assert_eq!(tasks.len(), 2, "replacement after inactiveAfterSeconds");
    assert!(tasks.iter().any(|t| t.agent_id == alive));
    heartbeat(&mut c, t(30_000));
    c.tick(t(30_600));
    assert!(c.task(&task.id).is_none(), "expunged after expungeAfterSeconds");
    assert_eq!(c.app_tasks(&id).len(), 1);
}

#[test]
fn disabled_unreachable_strategy_never_replaces() {
    let mut c = core();
    let a = register(&mut c, "a", ROOMY, "", t(0));
    let b = register(&mut c, "bb", ROOMY, "", t(0));
    let id = AppId::parse("/dis").unwrap();
    c.create_app(
        app(json!({"id": "dis", "cmd": "x", "cpus": 0.1, "constraints": [["hostname", "IS", "a"]],
        "unreachableStrategy": "disabled"})),
        t(1),
    )
    .unwrap();
    c.tick(t(2));
    run_all(&mut c, "/dis", t(3));
    let task = c.app_tasks(&id)[0].id.clone();
    assert_eq!(c.task(&task).unwrap().agent_id, a);
    for step in 1..5 {
        let now = t(step * 20_000);
        let g = c.desired_state(&b).unwrap().generation;
        c.sync_agent(&SyncRequest { agent_id: b.clone(), generation: g, tasks: vec![], wait_ms: 0 }, now);
        c.tick(now);
    }
    assert_eq!(c.task(&task).unwrap().state, TaskState::TaskUnreachable);
    assert_eq!(c.app_tasks(&id).len(), 1);
}

#[test]
fn a_deployment_that_never_gets_healthy_says_why_and_can_be_cancelled() {
    let (mut c, id) = running(json!({"id": "never", "cmd": "v1", "cpus": 0.1,
        "healthChecks": [{"protocol": "HTTP", "maxConsecutiveFailures": 5}]}));
    let old = c.app_tasks(&id)[0].id.clone();
    health_update(&mut c, &old, true, 0, t(4));
    c.tick(t(5));
    let mut def = c.app(&id).unwrap().definition.clone();
    def.cmd = Some("v2".into());
    c.put_app(def, t(6), false).unwrap();
    c.tick(t(7));
    run_all(&mut c, "/never", t(8));
    let new_task = c.app_tasks(&id).into_iter().find(|x| x.id != old).unwrap().id.clone();
    health_update(&mut c, &new_task, false, 1, t(9));
    c.tick(t(10));
    assert!(!c.task(&old).unwrap().kill_requested, "the old task keeps serving");
    let reason = c.deployments().next().unwrap().blocked_reason.clone().unwrap();
    assert_eq!(reason, "waiting for 1 of 1 new tasks to become healthy (last failure: HTTP 500)");
    let d = c.deployments().next().unwrap().id.clone();
    c.take_changes();
    c.cancel_deployment(&d, false, t(11)).unwrap();
    let events = event_types(&mut c);
    assert!(events.contains(&"deployment_step_failure".to_string()));
    assert!(events.contains(&"deployment_failed".to_string()));
    c.tick(t(12));
    assert!(c.task(&new_task).unwrap().kill_requested, "rollback kills the new version");
    assert!(!c.task(&old).unwrap().kill_requested);
}

#[test]
fn draining_an_agent_moves_its_tasks_without_a_gap() {
    let mut c = core();
    let a = register(&mut c, "a", ROOMY, "", t(0));
    let b = register(&mut c, "bb", ROOMY, "", t(0));
    let id = AppId::parse("/d").unwrap();
    c.create_app(
        app(json!({"id": "d", "cmd": "x", "cpus": 0.1, "instances": 2, "constraints": [["hostname", "IS", "a"]]})),
        t(1),
    )
    .unwrap();
    c.tick(t(2));
    run_all(&mut c, "/d", t(3));
    c.tick(t(4));
    let mut def = c.app(&id).unwrap().definition.clone();
    def.constraints.clear();
    c.put_app(def, t(5), false).unwrap();
    c.tick(t(6));
    run_all(&mut c, "/d", t(7));
    c.tick(t(8));
    kill_confirm(&mut c, t(9));
    c.tick(t(10));
    assert!(c.deployments().next().is_none());
    // Put every task on a by draining b first, then drain a.
    let on = |c: &Core, agent: &AgentId| {
        c.app_tasks(&id).iter().filter(|t| &t.agent_id == agent && !t.kill_requested).count()
    };
    c.set_draining(&b, true).unwrap();
    for step in 0..10 {
        c.tick(t(20 + step));
        run_all(&mut c, "/d", t(20 + step));
        kill_confirm(&mut c, t(20 + step));
    }
    assert_eq!(on(&c, &a), 2);
    assert!(c.is_drained(&b));
    c.set_draining(&b, false).unwrap();
    c.set_draining(&a, true).unwrap();
    for step in 0..10 {
        c.tick(t(40 + step * 2));
        let running = c.app_tasks(&id).iter().filter(|t| t.is_running()).count();
        assert!(running >= 2, "never fewer than 2 running while draining (step {step})");
        run_all(&mut c, "/d", t(41 + step * 2));
        kill_confirm(&mut c, t(41 + step * 2));
    }
    assert_eq!(on(&c, &b), 2, "tasks moved to b");
    assert!(c.is_drained(&a));
}

#[test]
fn dependents_launch_only_once_their_dependencies_serve() {
    let mut c = core();
    register(&mut c, "a", ROOMY, "", t(0));
    let db = AppId::parse("/shop/db").unwrap();
    let web = AppId::parse("/shop/web").unwrap();
    c.create_app(
        app(json!({"id": "/shop/db", "cmd": "db", "cpus": 0.1,
        "healthChecks": [{"protocol": "TCP"}]})),
        t(1),
    )
    .unwrap();
    c.create_app(app(json!({"id": "/shop/web", "cmd": "web", "cpus": 0.1, "dependencies": ["/shop/db"]})), t(1))
        .unwrap();
    c.tick(t(2));
    assert_eq!(c.app_tasks(&db).len(), 1);
    assert!(c.app_tasks(&web).is_empty(), "web waits for db");
    let queue = c.queue(t(2));
    let entry = queue.iter().find(|q| q.app_id == web).unwrap();
    assert_eq!(
        entry.stats.last_round.get("Dependency").map(|(_, m)| m.as_str()),
        Some("waiting for dependency /shop/db to be running and healthy")
    );
    run_all(&mut c, "/shop/db", t(3));
    c.tick(t(4));
    assert!(c.app_tasks(&web).is_empty(), "running but not yet healthy");
    let db_task = c.app_tasks(&db)[0].id.clone();
    health_update(&mut c, &db_task, true, 0, t(5));
    c.tick(t(6));
    c.tick(t(7));
    assert_eq!(c.app_tasks(&web).len(), 1, "web starts once db serves");
}
