//! The service table (who takes traffic on each service port) and the drain before a
//! planned kill: exact tables, generations, wake-ups and kill timing.
use serde_json::json;

use plinth_protocol::agent::{Balance, LbMode, ServiceProtocol, SyncRequest, SyncResponse};
use plinth_protocol::{AgentId, AppId, TaskState};

use super::*;

fn sinatra(instances: i64, labels: serde_json::Value) -> AppDefinition {
    app(json!({"id": "/hello-sinatra", "instances": instances, "cpus": 0.1, "mem": 16, "labels": labels,
        "container": {"type": "DOCKER", "docker": {"image": "greeter", "network": "BRIDGE"},
        "portMappings": [{"containerPort": 3000, "hostPort": 0, "servicePort": 9000, "protocol": "tcp"}]}}))
}

/// A sync from an agent whose balancer applied `services` (and every desired state).
fn sync(c: &mut Core, agent: &AgentId, services: u64, now: Timestamp) -> SyncResponse {
    let generation = c.agents().find(|a| &a.record.id == agent).map_or(0, |a| a.record.generation);
    let request = SyncRequest { services_generation: Some(services), ..SyncRequest::new(agent.clone(), generation) };
    c.sync_agent(&request, now)
}

fn kill_flag(c: &Core, agent: &AgentId, task: &TaskId) -> Option<bool> {
    c.desired_state(agent)?.tasks.into_iter().find(|s| &s.task_id == task).map(|s| s.kill)
}

/// Two balancing agents, the app running `instances` tasks, and the table they confirmed.
fn cluster(instances: i64, labels: serde_json::Value) -> (Core, AgentId, AgentId, u64) {
    let mut c = core();
    let a = register(&mut c, "a", ROOMY, "", t(0));
    let b = register(&mut c, "bb", ROOMY, "", t(0));
    sync(&mut c, &a, 0, t(0));
    sync(&mut c, &b, 0, t(0));
    c.create_app(sinatra(instances, labels), t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/hello-sinatra", t(3));
    c.tick(t(4));
    c.take_changes();
    let generation = c.service_table().generation;
    sync(&mut c, &a, generation, t(5));
    sync(&mut c, &b, generation, t(5));
    (c, a, b, generation)
}

#[test]
fn running_tasks_are_the_backends_of_their_service_port_on_every_agent() {
    let (mut c, a, b, generation) = cluster(
        2,
        json!({"HAPROXY_GROUP": "external", "HAPROXY_0_BALANCE": "leastconn", "HAPROXY_0_VHOST": "Hello.example, www.hello.example",
            "HAPROXY_0_MODE": "HTTP"}),
    );
    let table = c.service_table();
    assert_eq!(table.services.len(), 1);
    let service = &table.services[0];
    assert_eq!(service.app_id, AppId::parse("/hello-sinatra").unwrap());
    assert_eq!((service.service_port, service.protocol), (9000, ServiceProtocol::Tcp));
    assert_eq!((service.group.as_deref(), service.balance), (Some("external"), Balance::LeastConn));
    assert_eq!(service.vhosts, ["hello.example", "www.hello.example"]);
    assert_eq!(service.mode, LbMode::Http);
    let mut backends: Vec<(String, u16)> = service.backends.iter().map(|x| (x.host.clone(), x.port)).collect();
    backends.sort();
    assert_eq!(backends, vec![("10.0.0.1".to_string(), 31000), ("10.0.0.2".to_string(), 31000)]);
    // Both agents get the whole table once, then nothing until it changes.
    let first = sync(&mut c, &a, generation - 1, t(6)).services.expect("an older table is answered");
    assert_eq!(first, table);
    assert!(sync(&mut c, &b, generation, t(6)).services.is_none(), "an applied table is not resent");
}

#[test]
fn a_udp_tcp_port_is_served_over_both_transports_and_each_port_reads_its_own_labels() {
    let mut c = core();
    let a = register(&mut c, "a", ROOMY, "", t(0));
    sync(&mut c, &a, 0, t(0));
    let def = app(json!({"id": "/dns", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16,
        "labels": {"HAPROXY_1_MODE": "http", "HAPROXY_0_BALANCE": "leastconn"},
        "portDefinitions": [{"port": 9053, "protocol": "udp,tcp"}, {"port": 9080, "protocol": "tcp"}]}));
    c.create_app(def, t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/dns", t(3));
    c.tick(t(4));
    c.take_changes();
    let table = c.service_table();
    let seen: Vec<(u16, ServiceProtocol, Balance, LbMode, Vec<u16>)> = table
        .services
        .iter()
        .map(|s| (s.service_port, s.protocol, s.balance, s.mode, s.backends.iter().map(|b| b.port).collect()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (9053, ServiceProtocol::Tcp, Balance::LeastConn, LbMode::Tcp, vec![31000]),
            (9053, ServiceProtocol::Udp, Balance::LeastConn, LbMode::Tcp, vec![31000]),
            (9080, ServiceProtocol::Tcp, Balance::RoundRobin, LbMode::Http, vec![31001]),
        ]
    );
}

#[test]
fn a_task_joins_the_table_only_once_healthy_and_every_agent_is_woken() {
    let mut c = core();
    let a = register(&mut c, "a", ROOMY, "", t(0));
    let b = register(&mut c, "bb", ROOMY, "", t(0));
    let mut def = sinatra(1, json!({}));
    def.health_checks =
        app(json!({"id": "x", "cmd": "x", "healthChecks": [{"protocol": "TCP", "portIndex": 0}]})).health_checks;
    c.create_app(def, t(1)).unwrap();
    c.tick(t(2));
    run_all(&mut c, "/hello-sinatra", t(3));
    c.take_changes();
    assert!(c.service_table().services[0].backends.is_empty(), "running but not yet healthy: no traffic");
    let before = c.service_table().generation;
    let task = c.app_tasks(&AppId::parse("/hello-sinatra").unwrap())[0].id.clone();
    health_update(&mut c, &task, true, 0, t(4));
    let changes = c.take_changes();
    assert!(changes.notify_agents.contains(&a) && changes.notify_agents.contains(&b), "every balancer is woken");
    let joined: Vec<(bool, String)> =
        changes.lb_backends.iter().map(|(added, x)| (*added, x.task_id.clone())).collect();
    assert_eq!(joined, vec![(true, task.to_string())], "lb_backend_added for it");
    let table = c.service_table();
    assert!(table.generation > before);
    assert_eq!(table.services[0].backends.len(), 1);
    health_update(&mut c, &task, false, 1, t(5));
    let left = c.take_changes().lb_backends;
    assert_eq!(left.len(), 1);
    assert!(!left[0].0 && left[0].1.service_port == 9000, "lb_backend_removed: {left:?}");
    assert!(c.service_table().services[0].backends.is_empty(), "a failing check leaves the table before any kill");
}

#[test]
fn a_scaled_down_task_is_killed_only_after_every_agent_confirmed_a_table_without_it() {
    let (mut c, a, b, generation) = cluster(2, json!({}));
    let mut def = sinatra(1, json!({}));
    def.instances = 1;
    c.put_app(def, t(10), true).unwrap();
    c.tick(t(11));
    c.take_changes();
    let killing: Vec<TaskRecord> = c.tasks().filter(|t| t.kill_requested).cloned().collect();
    assert_eq!(killing.len(), 1);
    let task = &killing[0];
    assert_eq!(task.visible_state(), TaskState::TaskKilling);
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(false), "still serving its open connections");
    let table = c.service_table();
    assert!(table.generation > generation);
    assert_eq!(table.services[0].backends.len(), 1, "out of the table at once");
    assert!(table.services[0].backends.iter().all(|x| x.task_id != task.id));
    sync(&mut c, &a, table.generation, t(12));
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(false), "one agent still balances to it");
    // b applied the table but still carries a connection to the task: not yet.
    let generation = c.agents().find(|x| x.record.id == b).unwrap().record.generation;
    let request = SyncRequest {
        services_generation: Some(table.generation),
        services_drained: Some(table.generation - 1),
        ..SyncRequest::new(b.clone(), generation)
    };
    assert!(c.sync_agent(&request, t(13)).services.is_none(), "an applied table is not resent while draining");
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(false), "a connection is still open through b");
    sync(&mut c, &b, table.generation, t(14));
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(true), "every agent confirmed: killed");
}

#[test]
fn the_drain_timeout_bounds_the_wait_and_the_label_overrides_it() {
    let (mut c, _a, _b, _) = cluster(2, json!({}));
    c.kill_tasks(KillTarget::App { app: AppId::parse("/hello-sinatra").unwrap(), host: None }, false, t(10), false)
        .unwrap();
    c.take_changes();
    let task = c.tasks().find(|t| t.kill_requested).cloned().unwrap();
    c.tick(t(10 + 4_999));
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(false));
    c.tick(t(10 + 5_000));
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(true), "no confirmation: the default 5 s pass");

    let (mut c, _a, _b, _) = cluster(1, json!({"PLINTH_DRAIN_SECONDS": "0.5"}));
    c.delete_app(&AppId::parse("/hello-sinatra").unwrap(), t(10)).unwrap();
    c.take_changes();
    let task = c.tasks().find(|t| t.kill_requested).cloned().unwrap();
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(false), "a deleted app's task drains too");
    assert!(c.service_table().services.is_empty());
    c.tick(t(10 + 499));
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(false));
    c.tick(t(10 + 500));
    // Released: a deleted app's task leaves the desired state, which kills it.
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), None, "PLINTH_DRAIN_SECONDS=0.5");
}

#[test]
fn a_task_that_serves_nothing_is_killed_at_once() {
    let (mut c, _a, _b, _) = cluster(1, json!({}));
    let mut def = sinatra(2, json!({}));
    def.instances = 2;
    c.put_app(def, t(10), true).unwrap();
    c.tick(t(11));
    let staging = c.tasks().find(|t| t.state == TaskState::TaskStaging).cloned().unwrap();
    c.kill_tasks(KillTarget::Tasks(vec![staging.id.clone()]), false, t(12), false).unwrap();
    assert_eq!(kill_flag(&c, &staging.agent_id, &staging.id), Some(true), "not in the table: no drain");
    // Agents that run no balancer are not waited for.
    let (mut c, a, b, _) = cluster(1, json!({}));
    for agent in [&a, &b] {
        let generation = c.agents().find(|x| &x.record.id == agent).unwrap().record.generation;
        let request = SyncRequest::new(agent.clone(), generation);
        c.sync_agent(&request, t(20));
    }
    let task = c.tasks().next().cloned().unwrap();
    c.kill_tasks(KillTarget::Tasks(vec![task.id.clone()]), false, t(21), false).unwrap();
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(true));
}

#[test]
fn a_master_that_restarted_continues_above_the_table_an_agent_has() {
    let (c, a, _b, generation) = cluster(1, json!({}));
    let snapshot = snapshot_of(&c);
    let table = c.service_table();
    let mut restored = Core::restore(CoreConfig::default(), Box::new(uuid::Uuid::new_v4), snapshot, t(100));
    let record = c.agents().find(|x| x.record.id == a).unwrap().record.clone();
    restored.register_agent(
        plinth_protocol::agent::Registration {
            agent_id: Some(a.clone()),
            hostname: record.hostname,
            advertise_ip: record.advertise_ip,
            http_port: 5051,
            resources: record.resources,
            attributes: record.attributes,
            last_generation: record.generation,
            tasks: c
                .tasks()
                .filter(|t| t.agent_id == a)
                .map(|t| plinth_protocol::agent::TaskReport {
                    task_id: t.id.clone(),
                    app_id: t.app_id.clone(),
                    version: t.version.clone(),
                    state: TaskState::TaskRunning,
                    host_ports: t.ports.clone(),
                    resources: None,
                    started_at: None,
                })
                .collect(),
            version: "test".into(),
        },
        t(101),
    );
    let answer = sync(&mut restored, &a, generation, t(102)).services.expect("a table above the agent's");
    assert!(answer.generation > generation);
    assert_eq!(answer.services, table.services, "the same backends, rebuilt from the store");
}

#[test]
fn an_agent_claiming_the_largest_table_generation_does_not_overflow_the_core() {
    let (mut c, a, _b, _) = cluster(1, json!({}));
    let answer = sync(&mut c, &a, u64::MAX, t(10));
    assert!(answer.services.is_none(), "nothing is newer than u64::MAX");
    assert_eq!(c.service_table().generation, u64::MAX);
    let task = c.tasks().next().cloned().unwrap();
    c.kill_tasks(KillTarget::Tasks(vec![task.id.clone()]), false, t(11), false).unwrap();
    c.take_changes();
    c.tick(t(11 + 5_000));
    assert_eq!(kill_flag(&c, &task.agent_id, &task.id), Some(true), "the drain timeout still ends it");
}
