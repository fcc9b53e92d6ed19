//! Deployments: rolling upgrades within the strategy, readiness, cancel and rollback.
use serde_json::json;

use plinth_protocol::agent::StatusUpdate;
use plinth_protocol::{AppId, TaskId, TaskState};

use super::*;

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
    let mut def = c.app(&id).unwrap().definition.as_ref().clone();
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
    let mut def = c.app(&id).unwrap().definition.as_ref().clone();
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
fn cancelling_an_upgrade_rolls_back_and_keeps_the_old_tasks() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31100]", "", t(0));
    let id = AppId::parse("/c").unwrap();
    c.create_app(app(json!({"id": "c", "cmd": "v1", "instances": 2, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/c", t(3));
    c.tick(t(4));
    let old: Vec<TaskId> = c.app_tasks(&id).iter().map(|t| t.id.clone()).collect();
    let mut def = c.app(&id).unwrap().definition.as_ref().clone();
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
fn a_deployment_that_never_gets_healthy_says_why_and_can_be_cancelled() {
    let (mut c, id) = running(json!({"id": "never", "cmd": "v1", "cpus": 0.1,
        "healthChecks": [{"protocol": "HTTP", "maxConsecutiveFailures": 5}]}));
    let old = c.app_tasks(&id)[0].id.clone();
    health_update(&mut c, &old, true, 0, t(4));
    c.tick(t(5));
    let mut def = c.app(&id).unwrap().definition.as_ref().clone();
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
fn deployment_events_carry_marathons_plan_with_the_app_before_and_after() {
    let mut c = core();
    register(&mut c, "a", "cpus:8;mem:4096;disk:0;ports:[31000-31100]", "", t(0));
    let id = AppId::parse("/p").unwrap();
    c.create_app(app(json!({"id": "p", "cmd": "v1", "instances": 1, "cpus": 0.1})), t(1)).unwrap();
    let mut def = c.app(&id).unwrap().definition.as_ref().clone();
    def.cmd = Some("v2".into());
    c.take_changes();
    c.put_app(def, t(2), true).unwrap();
    let changes = c.take_changes();
    let info = changes.events.iter().find(|e| e.event_type == "deployment_info").expect("deployment_info");
    let plan = &info.payload["plan"];
    for key in ["id", "original", "target", "steps", "version"] {
        assert!(plan.get(key).is_some(), "{key} in {plan}");
    }
    assert_eq!(plan.as_object().map(|o| o.len()), Some(5), "only Marathon's fields: {plan}");
    assert_eq!(plan["original"]["apps"][0]["cmd"], "v1", "{plan}");
    assert_eq!(plan["target"]["apps"][0]["cmd"], "v2", "{plan}");
    assert_eq!(info.payload["currentStep"]["actions"][0]["app"], "/p");
    // The first deployment, superseded by the forced update, failed with the same plan shape.
    let failed = changes.events.iter().find(|e| e.event_type == "deployment_failed").expect("deployment_failed");
    assert!(failed.payload["plan"]["original"]["apps"].as_array().is_some_and(Vec::is_empty), "{}", failed.payload);
    assert!(failed.payload["reason"].is_string());
}
