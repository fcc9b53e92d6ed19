//! The Mesos-DNS record set of a cluster (pure: the master's view in, records out).
//!
//! Mesos-DNS's names, under the domain (`mesos` by default), for Marathon's tasks:
//! - `leader`, `master`, `marathon`: the leading master (one master: the same address);
//!   `_leader._tcp` SRV: its API port.
//! - `<host>.slave`: each agent; `slave`: all agents.
//! - `<app>.marathon`: the running tasks' addresses (the container's own address when it
//!   has one on a routed network, else its agent's); `<app>.marathon.slave`: their agents.
//! - `<app>-<task>.marathon` and `<app>-<task>.marathon.slave`: one task;
//!   `_<app>._tcp.marathon` and `_<app>._udp.marathon` SRV: each running task's host
//!   ports of that protocol, pointing at `<app>-<task>.marathon.slave` (the agent, where
//!   host ports answer).
//!
//! An app id `/group/app` is named as Marathon names its tasks, path reversed (`app.group`),
//! with the dots made hyphens: `app-group`. Labels are lowercase letters, digits and
//! hyphens, at most 63 characters (RFC 1123), as Mesos-DNS makes them.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
use std::net::Ipv4Addr;

use crate::records::RecordSet;

/// The framework label of Marathon's tasks.
pub const FRAMEWORK: &str = "marathon";
/// The label under which agents are named.
pub const AGENTS: &str = "slave";
const MAX_LABEL: usize = 63;

/// What the records are built from: the leading master and the cluster's agents and
/// running tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The leading master's address and API port.
    pub leader: Option<(Ipv4Addr, u16)>,
    pub agents: Vec<AgentNode>,
    /// Tasks that are running (others have no records).
    pub tasks: Vec<TaskNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentNode {
    pub hostname: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNode {
    /// Marathon's app id, e.g. `/shop/web`.
    pub app_id: String,
    pub task_id: String,
    /// The address of the task's agent.
    pub agent_ip: Ipv4Addr,
    /// The task's own address on a routed network, when it has one.
    pub container_ip: Option<Ipv4Addr>,
    /// Host ports in the app's port order.
    pub ports: Vec<TaskPort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPort {
    pub host_port: u16,
    /// `tcp`, `udp` or both (Marathon's `udp,tcp`).
    pub protocols: Vec<PortProtocol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    /// Marathon's `protocol` field (`tcp`, `udp`, `udp,tcp`); unknown parts are left out.
    pub fn parse_list(text: &str) -> Vec<PortProtocol> {
        text.split(',')
            .filter_map(|p| match p.trim().to_ascii_lowercase().as_str() {
                "tcp" => Some(PortProtocol::Tcp),
                "udp" => Some(PortProtocol::Udp),
                _ => None,
            })
            .collect()
    }

    fn label(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "_tcp",
            PortProtocol::Udp => "_udp",
        }
    }
}

/// The Mesos-DNS records of `view` (see the module comment for the names).
pub fn build(view: &ClusterView) -> RecordSet {
    let mut set = RecordSet::default();
    if let Some((ip, port)) = view.leader {
        for name in ["leader", "master", FRAMEWORK] {
            set.add_a(name, ip);
        }
        set.add_srv("_leader._tcp", "leader", port);
    }
    for agent in &view.agents {
        let host = hostname_labels(&agent.hostname);
        if !host.is_empty() {
            set.add_a(&format!("{host}.{AGENTS}"), agent.ip);
        }
        set.add_a(AGENTS, agent.ip);
    }
    for task in &view.tasks {
        let app = app_label(&task.app_id);
        if app.is_empty() {
            continue;
        }
        let own = task.container_ip.unwrap_or(task.agent_ip);
        let instance = instance_label(&app, &task.task_id);
        let instance_on_agent = format!("{instance}.{FRAMEWORK}.{AGENTS}");
        set.add_a(&format!("{app}.{FRAMEWORK}"), own);
        set.add_a(&format!("{app}.{FRAMEWORK}.{AGENTS}"), task.agent_ip);
        set.add_a(&format!("{instance}.{FRAMEWORK}"), own);
        set.add_a(&instance_on_agent, task.agent_ip);
        // `_` + the app's label must fit one label too.
        let service: String = app.chars().take(MAX_LABEL - 1).collect();
        let service = service.trim_end_matches('-');
        for port in &task.ports {
            for protocol in &port.protocols {
                set.add_srv(
                    &format!("_{service}.{}.{FRAMEWORK}", protocol.label()),
                    &instance_on_agent,
                    port.host_port,
                );
            }
        }
    }
    set
}

/// `/group/app` → `app-group`: Marathon's task name (path reversed, dotted) as one label.
pub fn app_label(app_id: &str) -> String {
    let reversed: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).rev().collect();
    sanitize(&reversed.join("-"))
}

/// `<app>-<first 8 characters of the task's unique part>`, within one label.
fn instance_label(app: &str, task_id: &str) -> String {
    let unique = task_id.rsplit(['.', '_']).next().unwrap_or(task_id);
    let suffix: String = sanitize(unique).chars().take(8).collect();
    let room = MAX_LABEL.saturating_sub(suffix.len() + 1);
    let head: String = app.chars().take(room).collect();
    sanitize(&format!("{head}-{suffix}"))
}

/// A hostname as labels: each dot-separated part sanitized, empty parts dropped.
fn hostname_labels(hostname: &str) -> String {
    hostname.split('.').map(sanitize).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(".")
}

/// One RFC 1123 label: lowercase; anything but letters, digits and hyphens becomes a
/// hyphen; no hyphen at either end; at most 63 characters.
fn sanitize(text: &str) -> String {
    let mapped: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let cut: String = mapped.trim_matches('-').chars().take(MAX_LABEL).collect();
    cut.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::SrvTarget;

    const AGENT_1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
    const AGENT_2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);

    fn task(app: &str, id: &str, agent_ip: Ipv4Addr, ports: &[(u16, &str)]) -> TaskNode {
        TaskNode {
            app_id: app.into(),
            task_id: id.into(),
            agent_ip,
            container_ip: None,
            ports: ports
                .iter()
                .map(|(port, protocol)| TaskPort { host_port: *port, protocols: PortProtocol::parse_list(protocol) })
                .collect(),
        }
    }

    fn view(tasks: Vec<TaskNode>) -> ClusterView {
        ClusterView {
            leader: Some((Ipv4Addr::new(10, 0, 0, 2), 8080)),
            agents: vec![
                AgentNode { hostname: "agent-1".into(), ip: AGENT_1 },
                AgentNode { hostname: "Agent_2.rack.example".into(), ip: AGENT_2 },
            ],
            tasks,
        }
    }

    #[test]
    fn masters_and_agents_are_named() {
        let set = build(&view(vec![]));
        let master = [Ipv4Addr::new(10, 0, 0, 2)];
        assert_eq!(set.a_of("leader"), master);
        assert_eq!(set.a_of("master"), master);
        assert_eq!(set.a_of("marathon"), master);
        assert_eq!(set.srv_of("_leader._tcp"), [SrvTarget { target: "leader".into(), port: 8080 }]);
        assert_eq!(set.a_of("agent-1.slave"), [AGENT_1]);
        assert_eq!(set.a_of("agent-2.rack.example.slave"), [AGENT_2], "labels sanitized, dots kept");
        assert_eq!(set.a_of("slave"), [AGENT_1, AGENT_2]);
    }

    #[test]
    fn running_tasks_give_a_and_srv_records_by_protocol() {
        let set = build(&view(vec![
            task("/hello", "hello.0f8b2c1d-aaaa", AGENT_1, &[(31001, "tcp"), (31002, "udp,tcp")]),
            task("/hello", "hello.77e5a9c0-bbbb", AGENT_2, &[(31005, "tcp"), (31006, "udp")]),
        ]));
        assert_eq!(set.a_of("hello.marathon"), [AGENT_1, AGENT_2]);
        assert_eq!(set.a_of("hello.marathon.slave"), [AGENT_1, AGENT_2]);
        assert_eq!(set.a_of("hello-0f8b2c1d.marathon.slave"), [AGENT_1]);
        assert_eq!(set.a_of("hello-77e5a9c0.marathon"), [AGENT_2]);
        let srv = |target: &str, port| SrvTarget { target: target.into(), port };
        assert_eq!(
            set.srv_of("_hello._tcp.marathon"),
            [
                srv("hello-0f8b2c1d.marathon.slave", 31001),
                srv("hello-0f8b2c1d.marathon.slave", 31002),
                srv("hello-77e5a9c0.marathon.slave", 31005),
            ]
        );
        assert_eq!(
            set.srv_of("_hello._udp.marathon"),
            [srv("hello-0f8b2c1d.marathon.slave", 31002), srv("hello-77e5a9c0.marathon.slave", 31006)]
        );
        for SrvTarget { target, .. } in set.srv_of("_hello._tcp.marathon") {
            assert!(!set.a_of(target).is_empty(), "every SRV target resolves: {target}");
        }
    }

    #[test]
    fn nested_ids_are_reversed_and_hyphenated() {
        let set = build(&view(vec![task("/shop/backend/Web_API", "shop_backend_web.1234abcd", AGENT_1, &[])]));
        assert_eq!(set.a_of("web-api-backend-shop.marathon"), [AGENT_1]);
        assert_eq!(set.srv.keys().collect::<Vec<_>>(), ["_leader._tcp"], "no ports, no SRV");
    }

    #[test]
    fn a_container_address_names_the_task_but_srv_targets_its_agent() {
        let mut routed = task("/db", "db.c0ffee00", AGENT_1, &[(31010, "tcp")]);
        routed.container_ip = Some(Ipv4Addr::new(172, 31, 0, 5));
        let set = build(&view(vec![routed]));
        assert_eq!(set.a_of("db.marathon"), [Ipv4Addr::new(172, 31, 0, 5)]);
        assert_eq!(set.a_of("db.marathon.slave"), [AGENT_1]);
        assert_eq!(set.a_of("db-c0ffee00.marathon.slave"), [AGENT_1], "the host port answers on the agent");
    }

    #[test]
    fn labels_stay_within_63_characters() {
        let long = format!("/{}", "x".repeat(100));
        let set = build(&view(vec![task(&long, "t.abcdef0123", AGENT_1, &[(31000, "tcp")])]));
        for name in set.a.keys().chain(set.srv.keys()) {
            assert!(name.split('.').all(|l| !l.is_empty() && l.len() <= 63), "{name}");
        }
        assert!(set.a.contains_key(&format!("{}-abcdef01.marathon", "x".repeat(54))));
    }

    #[test]
    fn no_leader_no_tasks_no_records_but_agents() {
        let set = build(&ClusterView { leader: None, agents: vec![], tasks: vec![] });
        assert_eq!(set, RecordSet::default());
    }
}
