//! Health judgement: kills at maxConsecutiveFailures, never with 0.
use serde_json::json;

use super::*;

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
    assert!(events.contains(&"unhealthy_instance_kill_event".to_string()));
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
