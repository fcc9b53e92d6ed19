//! API commands: locks, delete, kill (with and without scale).
use serde_json::json;

use plinth_protocol::{AppId, TaskId};

use super::*;

#[test]
fn locked_apps_answer_409_unless_forced_and_delete_always_wins() {
    let mut c = core();
    c.create_app(app(json!({"id": "k", "cmd": "x", "mem": 100000})), t(1)).unwrap();
    let mut def = c.app(&AppId::parse("/k").unwrap()).unwrap().definition.as_ref().clone();
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
fn re_creating_a_deleted_app_supersedes_its_stop_deployment() {
    let (mut c, id) = running(json!({"id": "again", "cmd": "old", "cpus": 0.1}));
    c.tick(t(4));
    let old_task = c.app_tasks(&id)[0].id.clone();
    let (stop, _) = c.delete_app(&id, t(5)).unwrap();
    c.take_changes();
    // The old task is still being killed, so the stop deployment has not finished.
    let (record, start) = c.create_app(app(json!({"id": "again", "cmd": "new", "cpus": 0.1})), t(6)).unwrap();
    assert!(c.deployment(&stop).is_none(), "the old app's stop deployment is superseded");
    let deployments: Vec<_> = c.app_deployments(&id).iter().map(|d| d.id.clone()).collect();
    assert_eq!(deployments, vec![start.clone()]);
    assert_eq!(
        event_types(&mut c),
        vec!["deployment_step_failure", "deployment_failed", "deployment_info"],
        "the stop deployment fails as superseded, then the new one starts"
    );
    assert_eq!(c.app_versions(&id).unwrap(), vec![record.version.clone()], "no version of the old app is kept");
    // The new app is not locked by the old deployment, and cancelling the new start removes
    // the app instead of rolling back to the deleted definition.
    c.cancel_deployment(&start, false, t(7)).unwrap();
    assert!(c.app(&id).is_none());
    assert!(c.task(&old_task).is_some_and(|t| t.kill_requested), "the old task is still killed");
}
