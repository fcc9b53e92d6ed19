//! Placement: offers spread tasks, declines carry reasons, constraints hold.
use serde_json::json;

use plinth_protocol::{AppId, TaskState};

use super::*;

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
