//! Supervision: scale down, backoff, drain, dependencies.
use serde_json::json;

use plinth_protocol::agent::StatusUpdate;
use plinth_protocol::{AgentId, AppId, TaskState};

use super::*;

#[test]
fn scaling_down_kills_the_youngest_tasks_first() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31010]", "", t(0));
    c.create_app(app(json!({"id": "s", "cmd": "x", "instances": 1, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/s", t(3));
    c.tick(t(3));
    let oldest = c.app_tasks(&AppId::parse("/s").unwrap())[0].id.clone();
    let mut def = c.app(&AppId::parse("/s").unwrap()).unwrap().definition.as_ref().clone();
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
    let mut def = c.app(&id).unwrap().definition.as_ref().clone();
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
