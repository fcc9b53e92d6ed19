//! Liveness: lost agents, unreachable tasks.
use serde_json::json;

use plinth_protocol::agent::{Registration, SyncRequest, TaskReport};
use plinth_protocol::{AppId, Resources, TaskId, TaskState};

use super::*;

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
    c.sync_agent(&SyncRequest::new(b.clone(), gen_b), t(9_000));
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
    let resp = c.sync_agent(&SyncRequest::new(a.clone(), 5), t(11_000));
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
        c.sync_agent(&SyncRequest::new(alive.clone(), g), now);
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
        c.sync_agent(&SyncRequest::new(b.clone(), g), now);
        c.tick(now);
    }
    assert_eq!(c.task(&task).unwrap().state, TaskState::TaskUnreachable);
    assert_eq!(c.app_tasks(&id).len(), 1);
}
