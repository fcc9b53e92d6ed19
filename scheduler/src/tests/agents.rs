//! The agent protocol: re-registration adopts running tasks after a master restart.
use serde_json::json;

use plinth_protocol::agent::{Registration, SyncRequest, TaskReport};
use plinth_protocol::{AppId, Resources, TaskState};

use super::*;

#[test]
fn a_restarted_master_adopts_running_tasks() {
    let mut c = core();
    let a = register(&mut c, "a", SMALL, "", t(0));
    let id = AppId::parse("/p").unwrap();
    c.create_app(app(json!({"id": "p", "cmd": "x", "instances": 1, "cpus": 0.1})), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/p", t(3));
    let task = c.app_tasks(&id)[0].clone();
    let snapshot = snapshot_of(&c);
    let mut restored = Core::restore(CoreConfig::default(), Box::new(uuid::Uuid::new_v4), snapshot, t(100));
    let resp = restored.sync_agent(&SyncRequest::new(a.clone(), 3), t(101));
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
